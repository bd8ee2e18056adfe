//! Weighted target choice for a route action (Envoy `weighted_clusters`).

/// Targets 0..n with relative weights. [`WeightedTargets::pick`] maps a random number to a
/// target exactly as Envoy does: `v = r % Σw`, then the first target whose cumulative interval
/// `[begin, end)` contains `v`. A zero-weight target has an empty interval and is never picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTargets {
    /// Exclusive end of each target's interval: running sums of the weights.
    ends: Box<[u64]>,
}

impl WeightedTargets {
    /// `None` when there is no target or every weight is 0.
    pub fn new(weights: &[u32]) -> Option<Self> {
        let mut sum = 0u64;
        let ends: Box<[u64]> = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        (sum > 0).then_some(WeightedTargets { ends })
    }

    /// Index of the target chosen by the random number `r`.
    pub fn pick(&self, r: u64) -> usize {
        let v = r % self.total();
        // NOTE: a route has at most a handful of targets (App Mesh: 10), where a branch-light
        // binary search over the running sums is as fast as anything.
        self.ends.partition_point(|&end| end <= v)
    }

    /// Pick with a fresh random draw; a single target needs no draw at all.
    pub fn pick_random(&self) -> usize {
        if self.ends.len() == 1 {
            0
        } else {
            self.pick(rand::random())
        }
    }

    /// Σw.
    pub fn total(&self) -> u64 {
        *self.ends.last().expect("WeightedTargets is never empty")
    }

    /// Number of targets, zero-weight ones included.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Always false: a `WeightedTargets` has a positive total weight.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}
