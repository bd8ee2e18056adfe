//! A self-contained [`HostView`]: weights, active counters and health flags kept beside a
//! balancer when there is no proxy cluster (the Python binding, tests, benchmarks).

use super::HostView;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};

/// Hosts `0..len` with fixed weights; all healthy and idle at first.
#[derive(Debug)]
pub struct HostTable {
    weights: Box<[u32]>,
    active: Box<[AtomicU32]>,
    healthy: Box<[AtomicBool]>,
    /// Kept with every flag change so that the panic check is O(1).
    healthy_count: AtomicUsize,
}

impl HostTable {
    pub fn new(weights: &[u32]) -> HostTable {
        HostTable {
            weights: weights.into(),
            active: weights.iter().map(|_| AtomicU32::new(0)).collect(),
            healthy: weights.iter().map(|_| AtomicBool::new(true)).collect(),
            healthy_count: AtomicUsize::new(weights.len()),
        }
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// A request to `host` began. Panics if `host >= len`.
    pub fn start(&self, host: usize) {
        self.active[host].fetch_add(1, Relaxed);
    }

    /// A request to `host` ended; an `end` without a `start` leaves the count at 0.
    pub fn end(&self, host: usize) {
        let _ = self.active[host].fetch_update(Relaxed, Relaxed, |a| a.checked_sub(1));
    }

    pub fn set_active(&self, host: usize, active: u32) {
        self.active[host].store(active, Relaxed);
    }

    pub fn set_healthy(&self, host: usize, healthy: bool) {
        // The swap makes only real transitions move the count, even with concurrent callers.
        if self.healthy[host].swap(healthy, Relaxed) != healthy {
            if healthy {
                self.healthy_count.fetch_add(1, Relaxed);
            } else {
                self.healthy_count.fetch_sub(1, Relaxed);
            }
        }
    }
}

impl HostView for HostTable {
    #[inline]
    fn len(&self) -> usize {
        self.weights.len()
    }
    #[inline]
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
    #[inline]
    fn active(&self, i: usize) -> u32 {
        self.active[i].load(Relaxed)
    }
    #[inline]
    fn healthy(&self, i: usize) -> bool {
        self.healthy[i].load(Relaxed)
    }
    #[inline]
    fn healthy_count(&self) -> usize {
        self.healthy_count.load(Relaxed)
    }
}
