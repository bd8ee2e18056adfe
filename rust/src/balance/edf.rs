//! Earliest-deadline-first scheduler (envoy-semantics §1.2): weighted round robin, and weighted
//! least request when the weight depends on the host's active requests.

use super::deadline_heap::{DeadlineHeap, Entry};
use super::rng::Entropy;
use super::{HostView, Outcome};
use std::sync::{Mutex, MutexGuard};

/// How a host's effective weight follows its active requests:
/// `weight / (active + 1)^bias`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Bias {
    /// bias 0: static weights (weighted round robin).
    None,
    /// bias 1: Envoy's fast path, a plain division.
    Linear,
    Power(f64),
}

impl Bias {
    pub(crate) fn new(bias: f64) -> Bias {
        if bias == 0.0 {
            Bias::None
        } else if bias == 1.0 {
            Bias::Linear
        } else {
            Bias::Power(bias)
        }
    }
}

#[derive(Debug)]
struct Schedule {
    heap: DeadlineHeap,
    next_seq: u32,
}

impl Schedule {
    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }
}

/// Skipped hosts set aside during one pick, then re-queued with their own deadline so that a
/// retry does not cost them their turn.
const PARKED: usize = 8;
/// Pops per pick before giving up to the scan in `Balancer::pick`.
const MAX_POPS: usize = 32;

/// An EDF schedule over the hosts with a non-zero weight.
// NOTE: the heap needs `&mut` and admits no lock-free update. An uncontended
// `std::sync::Mutex` costs one compare-and-swap and one release store per pick (a whole
// 10-host pick measures ~25 ns), and it stays uncontended in the common case: one worker
// thread per balancer, as Envoy keeps one LB per worker. parking_lot would save a few ns
// and is not a dependency.
#[derive(Debug)]
pub(crate) struct Edf {
    inv_weight: Box<[f64]>,
    bias: Bias,
    schedule: Mutex<Schedule>,
}

impl Edf {
    /// Over hosts `0..len`, host `i` of weight `weight(i)`.
    pub(crate) fn new(
        len: usize,
        weight: impl Fn(usize) -> u32,
        bias: Bias,
        entropy: &Entropy,
    ) -> Edf {
        let inv_weight: Box<[f64]> = (0..len)
            .map(|i| match weight(i) {
                0 => 0.0,
                w => 1.0 / f64::from(w),
            })
            .collect();
        // Envoy starts each scheduler with a random number of pre-picks so that workers are
        // not in lock-step; a random phase in (0, 1] of each host's period does the same in O(n).
        let entries = (0..len)
            .filter(|&i| inv_weight[i] > 0.0)
            .map(|i| Entry::new(entropy.unit() * inv_weight[i], i as u32, i as u32))
            .collect();
        let heap = DeadlineHeap::from_entries(entries);
        let schedule = Schedule {
            heap,
            next_seq: len as u32,
        };
        Edf {
            inv_weight,
            bias,
            schedule: Mutex::new(schedule),
        }
    }

    #[inline]
    fn period(&self, host: usize, hosts: &impl HostView) -> f64 {
        // 1 / effective weight = (active + 1)^bias / weight.
        let inv = self.inv_weight[host];
        match self.bias {
            Bias::None => inv,
            Bias::Linear => (f64::from(hosts.active(host)) + 1.0) * inv,
            Bias::Power(b) => (f64::from(hosts.active(host)) + 1.0).powf(b) * inv,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Schedule> {
        // A panic while holding the lock cannot leave the heap invalid; keep serving.
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take entries in deadline order until an eligible candidate. A host that is not a
    /// `candidate` (unhealthy, or weight 0 in `hosts`) has its turn pass, as if Envoy's
    /// healthy-host schedule had not contained it; a skipped candidate keeps its place.
    pub(crate) fn pick(
        &self,
        hosts: &impl HostView,
        candidate: impl Fn(usize) -> bool,
        skip: impl Fn(usize) -> bool,
    ) -> Outcome {
        let mut guard = self.lock();
        let s = &mut *guard;
        let n = hosts.len();
        let mut parked = [Entry::new(1.0, 0, 0); PARKED];
        let mut n_parked = 0;
        let mut outcome = Outcome::GaveUp;
        for _ in 0..MAX_POPS {
            let Some(first) = s.heap.first() else {
                outcome = Outcome::NoneEligible;
                break;
            };
            let h = first.host();
            let picked = h < n && candidate(h);
            if picked && skip(h) {
                if n_parked == PARKED {
                    break;
                }
                parked[n_parked] = first;
                s.heap.pop();
                n_parked += 1;
                continue;
            }
            // Picked, or not a candidate now (unhealthy, weight 0 in the view, or outside a
            // shorter view): either way its turn is used and it is re-queued one period later.
            let period = if h < n {
                self.period(h, hosts)
            } else {
                self.inv_weight[h]
            };
            let seq = s.next_seq();
            // NOTE: re-queued in place with one sift-down: O(log n), cheaper than pop + push.
            s.heap
                .postpone(0, Entry::new(first.deadline() + period, seq, h as u32));
            if picked {
                outcome = Outcome::Picked(h);
                break;
            }
        }
        for &e in &parked[..n_parked] {
            s.heap.push(e);
        }
        outcome
    }

    /// The eligible host with the earliest deadline, found by a scan: O(n), for when `pick`
    /// gave up.
    pub(crate) fn scan(
        &self,
        hosts: &impl HostView,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let n = hosts.len();
        let (i, e) = s
            .heap
            .entries()
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, e)| e.host() < n && eligible(e.host()))
            .min_by_key(|&(_, e)| e)?;
        let host = e.host();
        let period = self.period(host, hosts);
        let seq = s.next_seq();
        s.heap
            .postpone(i, Entry::new(e.deadline() + period, seq, host as u32));
        Some(host)
    }
}
