//! Per-host outcome counting for passive health (outlier detection).
//!
//! The request path records each attempt's outcome with a few relaxed atomics; when a
//! consecutive-failure counter reaches its threshold the caller reports it at once (an event
//! to the control layer, which decides whether to eject). Interval totals feed the
//! success-rate and failure-percentage sweeps, taken and reset by the control layer.
//! Classification is Envoy's (spec/envoy-semantics.md §2).

use crate::config::OutlierSpec;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An upstream response with this status.
    Status(u16),
    /// The route or per-try timeout fired before a response.
    LocalTimeout,
    ConnectFailure,
    /// Reset / closed before a complete response head.
    Reset,
    /// A new connection was established (matters only in split mode).
    ConnectSuccess,
}

pub const CONSECUTIVE_5XX: &str = "consecutive_5xx";
pub const CONSECUTIVE_GATEWAY_FAILURE: &str = "consecutive_gateway_failure";
pub const CONSECUTIVE_LOCAL_ORIGIN_FAILURE: &str = "consecutive_local_origin_failure";

#[derive(Default, Debug)]
pub struct Outcomes {
    c5xx: AtomicU32,
    cgw: AtomicU32,
    clocal: AtomicU32,
    ext_success: AtomicU64,
    ext_total: AtomicU64,
    local_success: AtomicU64,
    local_total: AtomicU64,
}

/// Interval totals since the last `take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub success: u64,
    pub total: u64,
    pub local_success: u64,
    pub local_total: u64,
}

/// Increment and report whether the counter just reached `threshold` (then reset it, so the
/// next report needs another full run of failures).
fn bump(c: &AtomicU32, threshold: Option<u32>) -> bool {
    let n = c.fetch_add(1, Relaxed) + 1;
    match threshold {
        Some(t) if t > 0 && n >= t => {
            c.store(0, Relaxed);
            true
        }
        _ => false,
    }
}

impl Outcomes {
    /// Record one outcome; calls `report` with each detector whose threshold was reached.
    pub fn record(
        &self,
        outcome: Outcome,
        spec: &OutlierSpec,
        mut report: impl FnMut(&'static str),
    ) {
        let status = match (outcome, spec.split_external_local_origin_errors) {
            (Outcome::ConnectSuccess, true) => {
                self.clocal.store(0, Relaxed);
                self.local_success.fetch_add(1, Relaxed);
                self.local_total.fetch_add(1, Relaxed);
                return;
            }
            (Outcome::ConnectSuccess, false) => return,
            (Outcome::LocalTimeout | Outcome::ConnectFailure | Outcome::Reset, true) => {
                self.local_total.fetch_add(1, Relaxed);
                if bump(&self.clocal, spec.consecutive_local_origin_failure) {
                    report(CONSECUTIVE_LOCAL_ORIGIN_FAILURE);
                }
                return;
            }
            (Outcome::LocalTimeout, false) => 504,
            (Outcome::ConnectFailure | Outcome::Reset, false) => 503,
            (Outcome::Status(s), _) => s,
        };
        self.ext_total.fetch_add(1, Relaxed);
        if status >= 500 {
            if bump(&self.c5xx, spec.consecutive_5xx) {
                report(CONSECUTIVE_5XX);
            }
            if matches!(status, 502..=504) {
                if bump(&self.cgw, spec.consecutive_gateway_failure) {
                    report(CONSECUTIVE_GATEWAY_FAILURE);
                }
            } else {
                self.cgw.store(0, Relaxed);
            }
        } else {
            self.ext_success.fetch_add(1, Relaxed);
            self.c5xx.store(0, Relaxed);
            self.cgw.store(0, Relaxed);
        }
    }

    /// Take the interval totals and start a new interval.
    /// Whether nothing was recorded since the last `take` (loads only: cheaper than `take`
    /// for the many idle hosts of a big cluster).
    pub fn is_empty(&self) -> bool {
        self.ext_total.load(Relaxed) == 0 && self.local_total.load(Relaxed) == 0
    }

    pub fn take(&self) -> Sample {
        Sample {
            success: self.ext_success.swap(0, Relaxed),
            total: self.ext_total.swap(0, Relaxed),
            local_success: self.local_success.swap(0, Relaxed),
            local_total: self.local_total.swap(0, Relaxed),
        }
    }

    /// Forget consecutive runs (after an ejection ends, Envoy clears them).
    pub fn reset_consecutive(&self) {
        self.c5xx.store(0, Relaxed);
        self.cgw.store(0, Relaxed);
        self.clocal.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c5xx: u32, gw: u32, local: u32, split: bool) -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: Some(c5xx),
            consecutive_gateway_failure: Some(gw),
            consecutive_local_origin_failure: Some(local),
            split_external_local_origin_errors: split,
        }
    }

    fn run(o: &Outcomes, s: &OutlierSpec, outcomes: &[Outcome]) -> Vec<&'static str> {
        let mut out = Vec::new();
        for x in outcomes {
            o.record(*x, s, |k| out.push(k));
        }
        out
    }

    #[test]
    fn consecutive_5xx_reports_at_threshold_and_success_resets() {
        let o = Outcomes::default();
        let s = spec(3, 100, 100, false);
        let st = Outcome::Status;
        assert!(run(&o, &s, &[st(500), st(500), st(200), st(500), st(500)]).is_empty());
        assert_eq!(run(&o, &s, &[st(500)]), vec![CONSECUTIVE_5XX]);
        assert!(run(&o, &s, &[st(500), st(500)]).is_empty());
    }

    #[test]
    fn local_failures_count_as_503_and_504_unless_split() {
        let o = Outcomes::default();
        let s = spec(100, 3, 2, false);
        let got = run(
            &o,
            &s,
            &[
                Outcome::ConnectFailure,
                Outcome::LocalTimeout,
                Outcome::Reset,
            ],
        );
        assert_eq!(got, vec![CONSECUTIVE_GATEWAY_FAILURE]);
        let o = Outcomes::default();
        let s = spec(100, 100, 2, true);
        let got = run(
            &o,
            &s,
            &[
                Outcome::ConnectFailure,
                Outcome::ConnectSuccess,
                Outcome::Reset,
                Outcome::LocalTimeout,
            ],
        );
        assert_eq!(got, vec![CONSECUTIVE_LOCAL_ORIGIN_FAILURE]);
        assert_eq!(
            o.take(),
            Sample {
                success: 0,
                total: 0,
                local_success: 1,
                local_total: 4
            }
        );
    }

    #[test]
    fn non_gateway_5xx_resets_gateway_run() {
        let o = Outcomes::default();
        let s = spec(100, 2, 100, false);
        let st = Outcome::Status;
        assert!(run(&o, &s, &[st(502), st(500), st(503)]).is_empty());
        assert_eq!(run(&o, &s, &[st(504)]), vec![CONSECUTIVE_GATEWAY_FAILURE]);
        let sample = o.take();
        assert_eq!((sample.success, sample.total), (0, 4));
        assert_eq!(o.take(), Sample::default());
    }
}
