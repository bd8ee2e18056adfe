//! A self-contained [`HostView`]: weights, active counters and health flags kept beside a
//! balancer when there is no proxy cluster (the Python binding, tests, benchmarks).

use super::HostView;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};

/// Hosts `0..len` with fixed weights; all healthy and idle at first.
#[derive(Debug)]
pub struct HostTable {
    // NOTE: one record per host, not one array per field: a pick reads a host's weight,
    // health and load together, from one cache line.
    hosts: Box<[HostState]>,
    /// Kept with every flag change so that the panic check is O(1).
    healthy_count: AtomicUsize,
}

#[derive(Debug)]
struct HostState {
    weight: u32,
    active: AtomicU32,
    healthy: AtomicBool,
}

impl HostTable {
    pub fn new(weights: &[u32]) -> HostTable {
        let hosts = weights
            .iter()
            .map(|&weight| HostState {
                weight,
                active: AtomicU32::new(0),
                healthy: AtomicBool::new(true),
            })
            .collect();
        HostTable {
            hosts,
            healthy_count: AtomicUsize::new(weights.len()),
        }
    }

    /// A request to `host` began. Panics if `host >= len`.
    pub fn start(&self, host: usize) {
        self.hosts[host].active.fetch_add(1, Relaxed);
    }

    /// A request to `host` ended; an `end` without a `start` leaves the count at 0.
    pub fn end(&self, host: usize) {
        let _ = self.hosts[host]
            .active
            .fetch_update(Relaxed, Relaxed, |a| a.checked_sub(1));
    }

    pub fn set_active(&self, host: usize, active: u32) {
        self.hosts[host].active.store(active, Relaxed);
    }

    pub fn set_healthy(&self, host: usize, healthy: bool) {
        // The swap makes only real transitions move the count, even with concurrent callers.
        if self.hosts[host].healthy.swap(healthy, Relaxed) != healthy {
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
        self.hosts.len()
    }
    #[inline]
    fn weight(&self, i: usize) -> u32 {
        self.hosts[i].weight
    }
    #[inline]
    fn active(&self, i: usize) -> u32 {
        self.hosts[i].active.load(Relaxed)
    }
    #[inline]
    fn healthy(&self, i: usize) -> bool {
        self.hosts[i].healthy.load(Relaxed)
    }
    #[inline]
    fn healthy_count(&self) -> usize {
        self.healthy_count.load(Relaxed)
    }
}
