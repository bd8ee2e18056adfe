//! Load balancers: pick one host of a cluster for a request. Pure: no I/O, no clock, no tokio;
//! imports only `config` (for [`LbPolicy`]).
//!
//! Semantics follow Envoy (shared/spec/envoy-semantics.md §1.0–1.4) for one priority and one
//! locality:
//! - Candidates are the healthy hosts, unless fewer than 50% of the hosts are healthy (panic,
//!   raw percentage): then every host. A host with weight 0 is never picked.
//! - LEAST_REQUEST: equal weights ⇒ power of two choices; unequal ⇒ EDF over
//!   `weight / (active + 1)^bias`. ROUND_ROBIN: equal ⇒ a counter; unequal ⇒ EDF over the
//!   weights. RANDOM: uniform over the candidates, weights ignored.
//! - Retries: `skip` marks hosts already tried. Hosts are re-drawn instead of returned (Envoy's
//!   `previous_hosts` predicate). When every candidate is skipped, the pick falls back to a
//!   candidate already tried, as Envoy keeps its last pick once the predicate's attempts run
//!   out: a retry goes to a healthy host that failed once rather than fail outright, and never
//!   to an unhealthy host outside panic. So `pick` returns None only when there is no candidate
//!   at all (no hosts, or every host has weight 0).
//!
//! The host count seen through [`HostView`] must equal the number of weights the balancer was
//! built with; the caller builds a new balancer when the host set changes.

mod choice;
mod deadline_heap;
mod edf;
mod host_table;
mod rng;
mod round_robin;

#[cfg(test)]
mod tests;

pub use host_table::HostTable;

use crate::config::LbPolicy;
use edf::{Bias, Edf};
use rng::Entropy;
use std::sync::atomic::AtomicUsize;

/// A draw from the calling thread's generator (no lock, no shared cache line): trace and span
/// ids and sampling decisions use it too.
#[inline]
pub fn thread_random_u64() -> u64 {
    Entropy::Thread.next_u64()
}

/// `out` filled with draws from the calling thread's generator (the same stream as
/// `thread_random_u64`, one thread-local access for all of them).
pub fn thread_random_fill(out: &mut [u64]) {
    rng::fill_from_thread(out);
}

/// What a balancer needs to know about the hosts of one cluster, indexed `0..len`.
pub trait HostView {
    fn len(&self) -> usize;
    fn weight(&self, i: usize) -> u32;
    /// In-flight requests right now (an atomic load in the proxy).
    fn active(&self, i: usize) -> u32;
    /// False when the host failed its health check or is ejected.
    fn healthy(&self, i: usize) -> bool;
    /// How many hosts are healthy. The default scans; a host set that keeps the count as
    /// flags change should override it, since every pick asks.
    fn healthy_count(&self) -> usize {
        (0..self.len()).filter(|&i| self.healthy(i)).count()
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of an algorithm's fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Picked(usize),
    /// Certainly no eligible host.
    NoneEligible,
    /// Bounded attempts ran out; an exact scan decides.
    GaveUp,
}

#[derive(Debug)]
enum Algorithm {
    /// LEAST_REQUEST, equal weights.
    PowerOfTwoChoices,
    /// ROUND_ROBIN, equal weights: the counter.
    Cycle(AtomicUsize),
    /// LEAST_REQUEST or ROUND_ROBIN with unequal weights.
    Edf(Edf),
    /// RANDOM.
    Uniform,
}

/// A load balancer over the hosts `0..weights.len()` of one cluster. `Send + Sync`: one can be
/// shared by worker threads, though one per worker keeps the EDF lock uncontended.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    len: usize,
    algorithm: Algorithm,
    entropy: Entropy,
}

impl Balancer {
    /// `active_request_bias` applies to LEAST_REQUEST with unequal weights; a negative or
    /// non-finite value is replaced by Envoy's default, 1.0 (as Envoy does at runtime).
    pub fn new(policy: LbPolicy, weights: &[u32], active_request_bias: f64) -> Self {
        Self::build_from(policy, weights, active_request_bias, Entropy::new(None))
    }

    /// Like [`Balancer::new`] but with its own random stream from `seed`: the same picks for
    /// the same calls, when used from one thread (tests, benchmarks, the Python binding).
    pub fn with_seed(
        policy: LbPolicy,
        weights: &[u32],
        active_request_bias: f64,
        seed: u64,
    ) -> Self {
        Self::build_from(
            policy,
            weights,
            active_request_bias,
            Entropy::new(Some(seed)),
        )
    }

    /// Like [`Balancer::new`] for a host list that knows its weights without a slice:
    /// `weighted` says whether the non-zero weights differ and `weight(i)` is host `i`'s.
    /// Equal weights and RANDOM build in O(1), whatever `len`; unequal weights build the EDF
    /// schedule, O(len).
    pub fn for_hosts(
        policy: LbPolicy,
        len: usize,
        weighted: bool,
        weight: impl Fn(usize) -> u32,
        active_request_bias: f64,
    ) -> Self {
        Self::build(
            policy,
            len,
            weighted,
            weight,
            active_request_bias,
            Entropy::new(None),
        )
    }

    fn build_from(policy: LbPolicy, weights: &[u32], bias: f64, entropy: Entropy) -> Self {
        // Envoy builds a scheduler only when weights differ; zero weights are never picked,
        // so they do not count as a difference.
        let mut nonzero = weights.iter().filter(|&&w| w > 0);
        let first = nonzero.next();
        let weighted = nonzero.any(|w| Some(w) != first);
        Self::build(
            policy,
            weights.len(),
            weighted,
            |i| weights[i],
            bias,
            entropy,
        )
    }

    fn build(
        policy: LbPolicy,
        len: usize,
        weighted: bool,
        weight: impl Fn(usize) -> u32,
        bias: f64,
        entropy: Entropy,
    ) -> Self {
        let bias = if bias.is_finite() && bias >= 0.0 {
            bias
        } else {
            1.0
        };
        let algorithm = match (policy, weighted) {
            (LbPolicy::LeastRequest, false) => Algorithm::PowerOfTwoChoices,
            (LbPolicy::LeastRequest, true) => {
                Algorithm::Edf(Edf::new(len, weight, Bias::new(bias), &entropy))
            }
            (LbPolicy::RoundRobin, false) => {
                // Envoy starts each list at a random index so that workers are not in step.
                let start = if len == 0 { 0 } else { entropy.below(len) };
                Algorithm::Cycle(AtomicUsize::new(start))
            }
            (LbPolicy::RoundRobin, true) => {
                Algorithm::Edf(Edf::new(len, weight, Bias::None, &entropy))
            }
            (LbPolicy::Random, _) => Algorithm::Uniform,
        };
        Balancer {
            policy,
            len,
            algorithm,
            entropy,
        }
    }

    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// The number of hosts (weights) the balancer was built for.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pick a host; `skip(i)` true ⇒ avoid `i` (a host already tried by a retry) while another
    /// candidate is left. None only if no host can be picked at all (see the module docs).
    #[inline]
    pub fn pick(&self, hosts: &impl HostView, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let n = hosts.len();
        debug_assert_eq!(
            n, self.len,
            "host view and balancer disagree on the host count"
        );
        if n == 0 {
            return None;
        }
        // Panic: 100·healthy/total < 50 (integer percent, as Envoy), i.e. 2·healthy < total.
        // NOTE: O(1) with a view that keeps its healthy count (the proxy's host set,
        // `HostTable`); the trait's default scans, fine for small clusters only.
        let panic = hosts.healthy_count() * 2 < n;
        let candidate = |i: usize| hosts.weight(i) != 0 && (panic || hosts.healthy(i));
        let eligible = |i: usize| candidate(i) && !skip(i);
        let found = match &self.algorithm {
            Algorithm::PowerOfTwoChoices => choice::power_of_two(hosts, eligible, &self.entropy),
            Algorithm::Cycle(counter) => round_robin::next(counter, n, eligible)
                .map_or(Outcome::NoneEligible, Outcome::Picked),
            Algorithm::Edf(edf) => edf.pick(hosts, candidate, &skip),
            Algorithm::Uniform => choice::uniform(n, eligible, &self.entropy),
        };
        match found {
            Outcome::Picked(i) => return Some(i),
            Outcome::GaveUp => {
                if let Some(i) = self.scan(hosts, eligible) {
                    return Some(i);
                }
            }
            Outcome::NoneEligible => {}
        }
        // Every candidate is skipped. As Envoy keeps its last pick once the retry host
        // predicate's attempts run out, a retry goes to a candidate already tried rather than
        // fail; it never widens to a host health checking or ejection took out.
        if let Some(i) = self.scan(hosts, candidate) {
            return Some(i);
        }
        // No candidate at all (the healthy hosts all have weight 0): spread as panic would,
        // again preferring a host not yet tried.
        let weighted = |i: usize| hosts.weight(i) != 0;
        self.scan(hosts, |i| weighted(i) && !skip(i))
            .or_else(|| self.scan(hosts, weighted))
    }

    /// The algorithm's choice among `eligible` hosts by an exact O(n) scan: off the common path.
    #[cold]
    fn scan(&self, hosts: &impl HostView, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match &self.algorithm {
            Algorithm::PowerOfTwoChoices => {
                choice::power_of_two_scan(hosts, eligible, &self.entropy)
            }
            Algorithm::Cycle(counter) => round_robin::next(counter, hosts.len(), eligible),
            Algorithm::Edf(edf) => edf.scan(hosts, eligible),
            Algorithm::Uniform => choice::uniform_scan(hosts.len(), eligible, &self.entropy),
        }
    }
}
