//! ROUND_ROBIN with equal weights: one shared counter over the host indices (envoy-semantics
//! §1.3). Unequal weights use the EDF scheduler instead.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The next eligible host in index order from the counter, or None if no host is eligible.
///
/// A host that is not eligible uses up its tick, so the host after it is not picked twice in a
/// row: every eligible host is picked once per cycle, as over Envoy's healthy-host list.
#[inline]
pub(crate) fn next(
    counter: &AtomicUsize,
    n: usize,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    // NOTE: Relaxed: the counter only spreads picks; no other memory hangs on it.
    let start = counter.fetch_add(1, Relaxed) % n;
    if eligible(start) {
        return Some(start);
    }
    let d = (1..n).find(|&d| eligible((start + d) % n))?;
    // Consume the ticks of the hosts passed over: one scan per run of ineligible hosts per cycle.
    counter.fetch_add(d, Relaxed);
    Some((start + d) % n)
}
