//! Uniform sampling among eligible hosts: RANDOM, and the samples of LEAST_REQUEST's power of
//! two choices (envoy-semantics §1.3, §1.4).

use super::rng::Entropy;
use super::{HostView, Outcome};

/// Envoy's `choice_count` default for N_CHOICES.
const CHOICES: usize = 2;

/// Draws per sample before giving up to the scan.
// NOTE: rejection sampling over all indices instead of a list of healthy hosts (Envoy rebuilds
// one per health change; here health is an atomic flag read per pick). Outside panic at least
// half the hosts are candidates, so a sample takes ≤ 2 draws on average and 16 straight misses
// (≤ 2^-16, more with many skipped hosts) fall back to an O(n) scan.
const DRAWS: usize = 16;

#[inline]
fn sample(n: usize, eligible: &impl Fn(usize) -> bool, entropy: &Entropy) -> Option<usize> {
    (0..DRAWS).map(|_| entropy.below(n)).find(|&i| eligible(i))
}

/// RANDOM: one uniform eligible host.
#[inline]
pub(crate) fn uniform(n: usize, eligible: impl Fn(usize) -> bool, entropy: &Entropy) -> Outcome {
    sample(n, &eligible, entropy).map_or(Outcome::GaveUp, Outcome::Picked)
}

/// LEAST_REQUEST with equal weights: `CHOICES` samples with replacement; a later sample replaces
/// the candidate only if it has strictly fewer active requests (ties keep the earlier sample).
#[inline]
pub(crate) fn power_of_two(
    hosts: &impl HostView,
    eligible: impl Fn(usize) -> bool,
    entropy: &Entropy,
) -> Outcome {
    let n = hosts.len();
    let Some(mut best) = sample(n, &eligible, entropy) else {
        return Outcome::GaveUp;
    };
    for _ in 1..CHOICES {
        if let Some(i) = sample(n, &eligible, entropy) {
            if hosts.active(i) < hosts.active(best) {
                best = i;
            }
        }
    }
    Outcome::Picked(best)
}

/// The eligible hosts, read once. The scans below index into this snapshot rather than
/// count and then scan again: the control thread flips health flags between any two reads, so
/// a second scan can find fewer eligible hosts than the first counted.
// NOTE: an allocation, but only on the cold path (sampling gave up: ≤ 2^-16 of picks).
fn eligible_hosts(n: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
    (0..n).filter(|&i| eligible(i)).collect()
}

/// `uniform` by an O(n) scan: exact, for when sampling gave up.
pub(crate) fn uniform_scan(
    n: usize,
    eligible: impl Fn(usize) -> bool,
    entropy: &Entropy,
) -> Option<usize> {
    let found = eligible_hosts(n, eligible);
    (!found.is_empty()).then(|| found[entropy.below(found.len())])
}

/// `power_of_two` by an O(n) scan: exact, for when sampling gave up.
pub(crate) fn power_of_two_scan(
    hosts: &impl HostView,
    eligible: impl Fn(usize) -> bool,
    entropy: &Entropy,
) -> Option<usize> {
    let found = eligible_hosts(hosts.len(), eligible);
    if found.is_empty() {
        return None;
    }
    let mut best = found[entropy.below(found.len())];
    for _ in 1..CHOICES {
        let i = found[entropy.below(found.len())];
        if hosts.active(i) < hosts.active(best) {
            best = i;
        }
    }
    Some(best)
}
