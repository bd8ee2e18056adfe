//! Earliest-deadline-first scheduler (envoy-semantics §1.2): weighted round robin, and weighted
//! least request when the weight depends on the host's active requests.

use super::rng::Entropy;
use super::{HostView, Outcome};
use std::cmp::Ordering;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
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

#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline: f64,
    /// Insertion order: equal deadlines are served first in, first out (Envoy).
    seq: u64,
    host: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) yields the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .total_cmp(&self.deadline)
            .then(other.seq.cmp(&self.seq))
    }
}

#[derive(Debug)]
struct Schedule {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
}

/// Skipped hosts set aside during one pick, then re-queued with their own deadline so that a
/// retry does not cost them their turn.
const PARKED: usize = 8;
/// Pops per pick before giving up to the scan in `Balancer::pick`.
const MAX_POPS: usize = 32;

/// An EDF schedule over the hosts with a non-zero weight.
// NOTE: the heap needs `&mut`; a `std::sync::Mutex` is one uncontended compare-and-swap per
// pick in the common case (one worker thread per balancer, as Envoy keeps one LB per worker),
// about 20 ns, and a heap admits no lock-free update. A parking_lot mutex would only save
// a few ns uncontended and is not a dependency.
#[derive(Debug)]
pub(crate) struct Edf {
    inv_weight: Box<[f64]>,
    bias: Bias,
    schedule: Mutex<Schedule>,
}

impl Edf {
    pub(crate) fn new(weights: &[u32], bias: Bias, entropy: &Entropy) -> Edf {
        let inv_weight: Box<[f64]> = weights
            .iter()
            .map(|&w| if w == 0 { 0.0 } else { 1.0 / f64::from(w) })
            .collect();
        // Envoy starts each scheduler with a random number of pre-picks so that workers are
        // not in lock-step; a random phase in (0, 1] of each host's period does the same in O(n).
        let mut next_seq = 0;
        let heap = weights
            .iter()
            .enumerate()
            .filter(|&(_, &w)| w > 0)
            .map(|(i, _)| {
                next_seq += 1;
                Entry {
                    deadline: entropy.unit() * inv_weight[i],
                    seq: next_seq,
                    host: i as u32,
                }
            })
            .collect();
        Edf {
            inv_weight,
            bias,
            schedule: Mutex::new(Schedule {
                heap,
                next_seq: next_seq + 1,
            }),
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

    /// Pop in deadline order until an `eligible` candidate. A host that is not a `candidate`
    /// (unhealthy, or weight 0 in `hosts`) has its turn pass, as if Envoy's healthy-host
    /// schedule had not contained it; a skipped candidate keeps its place.
    pub(crate) fn pick(
        &self,
        hosts: &impl HostView,
        candidate: impl Fn(usize) -> bool,
        skip: impl Fn(usize) -> bool,
    ) -> Outcome {
        let mut guard = self.lock();
        let s = &mut *guard;
        let n = hosts.len();
        let mut parked = [Entry {
            deadline: 0.0,
            seq: 0,
            host: 0,
        }; PARKED];
        let mut n_parked = 0;
        let mut outcome = Outcome::GaveUp;
        for _ in 0..MAX_POPS {
            let Some(mut top) = s.heap.peek_mut() else {
                outcome = Outcome::NoneEligible;
                break;
            };
            let h = top.host as usize;
            let picked = h < n && candidate(h);
            if picked && skip(h) {
                if n_parked == PARKED {
                    break;
                }
                parked[n_parked] = PeekMut::pop(top);
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
            top.deadline += period;
            top.seq = s.next_seq;
            s.next_seq += 1;
            // NOTE: dropping `top` sifts it down once: O(log n), cheaper than pop + push.
            drop(top);
            if picked {
                outcome = Outcome::Picked(h);
                break;
            }
        }
        s.heap.extend(parked[..n_parked].iter().copied());
        outcome
    }

    /// The eligible host with the earliest deadline, found by a scan: O(n), for when `pick`
    /// gave up.
    pub(crate) fn scan(
        &self,
        hosts: &impl HostView,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut s = self.lock();
        let n = hosts.len();
        let best = s
            .heap
            .iter()
            .filter(|e| (e.host as usize) < n && eligible(e.host as usize))
            .max()
            .copied()?;
        let h = best.host as usize;
        let period = self.period(h, hosts);
        let next_seq = s.next_seq;
        s.next_seq += 1;
        let mut entries = std::mem::take(&mut s.heap).into_vec();
        for e in entries
            .iter_mut()
            .filter(|e| e.seq == best.seq && e.host == best.host)
        {
            e.deadline += period;
            e.seq = next_seq;
        }
        s.heap = BinaryHeap::from(entries);
        Some(h)
    }
}
