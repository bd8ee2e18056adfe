use super::*;

const POLICIES: [LbPolicy; 3] = [
    LbPolicy::LeastRequest,
    LbPolicy::RoundRobin,
    LbPolicy::Random,
];

fn seeded(policy: LbPolicy, weights: &[u32]) -> Balancer {
    Balancer::with_seed(policy, weights, 1.0, 42)
}

/// Pick `picks` times with no skip and count per host.
fn histogram(b: &Balancer, hosts: &HostTable, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; hosts.len()];
    for _ in 0..picks {
        counts[b.pick(hosts, |_| false).expect("a host")] += 1;
    }
    counts
}

fn assert_near(actual: usize, expected: f64, tolerance: f64, what: &str) {
    let err = (actual as f64 - expected).abs() / expected;
    assert!(
        err <= tolerance,
        "{what}: {actual} vs expected {expected:.0} (off by {:.1}%)",
        err * 100.0
    );
}

/// A small deterministic generator for test inputs (not the balancer's).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn balancer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Balancer>();
    check::<HostTable>();
}

#[test]
fn empty_set_gives_none() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[], 1.0);
        assert_eq!(b.pick(&HostTable::new(&[]), |_| false), None, "{policy:?}");
        assert!(b.is_empty());
    }
}

#[test]
fn all_zero_weights_give_none() {
    for policy in POLICIES {
        for weights in [&[0, 0, 0][..], &[0][..]] {
            let b = seeded(policy, weights);
            assert_eq!(
                b.pick(&HostTable::new(weights), |_| false),
                None,
                "{policy:?} {weights:?}"
            );
        }
    }
}

/// Envoy keeps its last pick once the retry predicate's attempts run out: when a retry has
/// tried every candidate, it goes to one of them again instead of failing.
#[test]
fn every_host_skipped_falls_back_to_a_tried_candidate() {
    for policy in POLICIES {
        for weights in [&[1, 1, 1, 1][..], &[1, 2, 3, 4][..]] {
            let hosts = HostTable::new(weights);
            let b = seeded(policy, weights);
            assert!(b.pick(&hosts, |_| true).is_some(), "{policy:?} {weights:?}");
            hosts.set_healthy(0, false);
            hosts.set_healthy(1, false);
            hosts.set_healthy(2, false);
            assert!(
                b.pick(&hosts, |_| true).is_some(),
                "{policy:?} {weights:?} in panic"
            );
        }
    }
}

#[test]
fn zero_weight_never_picked() {
    let weights = [0, 3, 0, 1, 0, 2];
    for policy in POLICIES {
        let hosts = HostTable::new(&weights);
        let b = seeded(policy, &weights);
        for _ in 0..2_000 {
            let i = b.pick(&hosts, |_| false).unwrap();
            assert_ne!(weights[i], 0, "{policy:?}");
        }
        // Even when a retry has tried every host with a weight, and in panic.
        let again = b.pick(&hosts, |i| weights[i] != 0).unwrap();
        assert_ne!(weights[again], 0, "{policy:?}");
        for i in [1, 3, 5] {
            hosts.set_healthy(i, false);
        }
        for _ in 0..200 {
            assert_ne!(
                weights[b.pick(&hosts, |_| false).unwrap()],
                0,
                "{policy:?} panic"
            );
        }
    }
}

/// The invariant under random health, load and skip sets: a pick is a candidate, skipped only
/// when every candidate is skipped, and never None (every weight here is non-zero).
#[test]
fn never_picks_a_skipped_or_unhealthy_host_when_a_candidate_exists() {
    let mut rng = Lcg(7);
    for policy in POLICIES {
        for weights in [
            vec![1; 12],
            vec![1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6],
            vec![5; 3],
            vec![1, 9],
        ] {
            let n = weights.len();
            let b = seeded(policy, &weights);
            let hosts = HostTable::new(&weights);
            for round in 0..3_000 {
                for i in 0..n {
                    hosts.set_healthy(i, !rng.next().is_multiple_of(4));
                    hosts.set_active(i, (rng.next() % 5) as u32);
                }
                // From nothing skipped to nearly everything skipped, as retries go.
                let skip_mask = rng.next() & ((1 << (round % (n + 1))) - 1);
                let skip = |i: usize| skip_mask & (1 << i) != 0;
                let panic = hosts.healthy_count() * 2 < n;
                let candidate = |i: usize| panic || hosts.healthy(i);
                let picked = b.pick(&hosts, skip);
                let any_candidate = (0..n).any(|i| candidate(i) && !skip(i));
                let i = picked.unwrap_or_else(|| panic!("{policy:?}: None with candidates"));
                assert!(
                    !skip(i) || !any_candidate,
                    "{policy:?}: picked skipped host {i} with a candidate left"
                );
                assert!(candidate(i), "{policy:?}: picked unhealthy {i}");
            }
        }
    }
}

#[test]
fn retry_never_widens_to_unhealthy_hosts() {
    for policy in POLICIES {
        for weights in [[1, 1, 1, 1], [1, 2, 3, 4]] {
            let hosts = HostTable::new(&weights);
            hosts.set_healthy(3, false);
            let b = seeded(policy, &weights);
            for _ in 0..100 {
                assert_eq!(b.pick(&hosts, |i| i != 1 && i != 3), Some(1), "{policy:?}");
                // Every healthy host tried: a tried healthy one again, never the unhealthy one.
                let again = b.pick(&hosts, |i| i < 3).unwrap();
                assert!(again < 3, "{policy:?} widened");
            }
        }
    }
}

#[test]
fn exactly_half_healthy_is_not_panic() {
    for policy in POLICIES {
        for weights in [[1; 4], [1, 2, 3, 4]] {
            let hosts = HostTable::new(&weights);
            hosts.set_healthy(0, false);
            hosts.set_healthy(2, false);
            let b = seeded(policy, &weights);
            let counts = histogram(&b, &hosts, 1_000);
            assert_eq!(
                counts[0] + counts[2],
                0,
                "{policy:?} {weights:?}: {counts:?}"
            );
        }
    }
}

#[test]
fn panic_mode_spreads_over_all_hosts() {
    // 4 of 10 healthy (< 50%): every host, healthy or not, gets its share.
    for policy in POLICIES {
        let weights = [1; 10];
        let hosts = HostTable::new(&weights);
        for i in 4..10 {
            hosts.set_healthy(i, false);
        }
        let b = seeded(policy, &weights);
        let counts = histogram(&b, &hosts, 20_000);
        for (i, &c) in counts.iter().enumerate() {
            assert_near(c, 2_000.0, 0.1, &format!("{policy:?} host {i}"));
        }
    }
}

#[test]
fn panic_mode_keeps_weights() {
    let weights = [1, 2, 3, 4];
    for policy in [LbPolicy::LeastRequest, LbPolicy::RoundRobin] {
        let hosts = HostTable::new(&weights);
        for i in 0..3 {
            hosts.set_healthy(i, false);
        }
        let counts = histogram(&seeded(policy, &weights), &hosts, 10_000);
        for (i, &c) in counts.iter().enumerate() {
            assert_near(
                c,
                1_000.0 * weights[i] as f64,
                0.01,
                &format!("{policy:?} host {i}"),
            );
        }
    }
}

#[test]
fn p2c_favours_less_loaded_hosts() {
    // Two hosts, one busy: the busy one wins only when both samples land on it (1/4).
    let hosts = HostTable::new(&[1, 1]);
    hosts.set_active(0, 50);
    let counts = histogram(&seeded(LbPolicy::LeastRequest, &[1, 1]), &hosts, 40_000);
    assert_near(counts[0], 10_000.0, 0.05, "busy host");

    // Ten hosts, one busy: picked with probability 1/100 instead of 1/10.
    let hosts = HostTable::new(&[1; 10]);
    hosts.set_active(3, 10);
    let counts = histogram(&seeded(LbPolicy::LeastRequest, &[1; 10]), &hosts, 100_000);
    assert_near(counts[3], 1_000.0, 0.15, "busy host of 10");
}

#[test]
fn p2c_ties_keep_the_first_sample() {
    // Equal load everywhere: the first sample always stands, so the spread is uniform.
    let hosts = HostTable::new(&[1; 5]);
    for i in 0..5 {
        hosts.set_active(i, 3);
    }
    let counts = histogram(&seeded(LbPolicy::LeastRequest, &[1; 5]), &hosts, 50_000);
    for c in counts {
        assert_near(c, 10_000.0, 0.05, "tie");
    }
}

#[test]
fn edf_respects_weights_when_idle() {
    let weights = [1, 2, 3, 4, 10];
    let total: u32 = weights.iter().sum();
    for policy in [LbPolicy::LeastRequest, LbPolicy::RoundRobin] {
        for bias in [0.0, 0.5, 1.0, 2.0] {
            let hosts = HostTable::new(&weights);
            let b = Balancer::with_seed(policy, &weights, bias, 3);
            let rounds = 1_000;
            let counts = histogram(&b, &hosts, rounds * total as usize);
            for (i, &c) in counts.iter().enumerate() {
                // EDF is exact up to the first period of each host.
                let expected = rounds * weights[i] as usize;
                assert!(
                    c.abs_diff(expected) <= 1,
                    "{policy:?} bias {bias} host {i}: {counts:?}"
                );
            }
        }
    }
}

#[test]
fn edf_least_request_divides_weight_by_load() {
    // weights 1 and 2, host 1 with 3 in flight: effective 1 vs 2/4 ⇒ a 2:1 split for host 0.
    let hosts = HostTable::new(&[1, 2]);
    hosts.set_active(1, 3);
    let counts = histogram(&seeded(LbPolicy::LeastRequest, &[1, 2]), &hosts, 30_000);
    assert_near(counts[0], 20_000.0, 0.01, "bias 1");

    // bias 2: 2 / 4^2 = 1/8 ⇒ 8:1.
    let b = Balancer::with_seed(LbPolicy::LeastRequest, &[1, 2], 2.0, 1);
    let counts = histogram(&b, &hosts, 90_000);
    assert_near(counts[0], 80_000.0, 0.01, "bias 2");

    // A busy host is slowed, never drained.
    hosts.set_active(1, 1_000);
    let counts = histogram(&seeded(LbPolicy::LeastRequest, &[1, 2]), &hosts, 10_000);
    assert!(counts[1] > 0, "{counts:?}");
}

#[test]
fn bias_zero_is_weighted_round_robin() {
    let weights = [3, 1, 2, 5];
    let hosts = HostTable::new(&weights);
    hosts.set_active(3, 40);
    hosts.set_active(0, 7);
    let lr = Balancer::with_seed(LbPolicy::LeastRequest, &weights, 0.0, 9);
    let rr = Balancer::with_seed(LbPolicy::RoundRobin, &weights, 0.0, 9);
    for _ in 0..5_000 {
        assert_eq!(lr.pick(&hosts, |_| false), rr.pick(&hosts, |_| false));
    }
    let counts = histogram(&lr, &hosts, 1_100);
    assert_eq!(
        counts
            .iter()
            .zip(weights)
            .map(|(&c, w)| c.abs_diff(100 * w as usize))
            .max(),
        Some(0)
    );
}

#[test]
fn edf_skip_keeps_the_skipped_host_turn() {
    // Weighted RR 1:2. Skipping host 1 on one pick must not cost it its share afterwards.
    let weights = [1, 2];
    let hosts = HostTable::new(&weights);
    let b = seeded(LbPolicy::RoundRobin, &weights);
    assert_eq!(b.pick(&hosts, |i| i == 1), Some(0));
    let counts = histogram(&b, &hosts, 2_999);
    assert!(counts[1].abs_diff(2_000) <= 2, "{counts:?}");
}

#[test]
fn edf_unhealthy_hosts_do_not_distort_healthy_ratios() {
    let weights = [1, 2, 3, 50, 4];
    let hosts = HostTable::new(&weights);
    hosts.set_healthy(3, false);
    let counts = histogram(&seeded(LbPolicy::LeastRequest, &weights), &hosts, 10_000);
    assert_eq!(counts[3], 0);
    for i in [0, 1, 2, 4] {
        assert_near(
            counts[i],
            1_000.0 * weights[i] as f64,
            0.01,
            &format!("host {i}"),
        );
    }
}

#[test]
fn round_robin_equal_weights_cycles_in_order() {
    let hosts = HostTable::new(&[1; 5]);
    let b = seeded(LbPolicy::RoundRobin, &[1; 5]);
    let first = b.pick(&hosts, |_| false).unwrap();
    for k in 1..20 {
        assert_eq!(b.pick(&hosts, |_| false), Some((first + k) % 5));
    }
}

#[test]
fn round_robin_is_fair_around_unhealthy_hosts() {
    // A run of unhealthy hosts does not double the share of the host after it.
    let weights = [1; 8];
    let hosts = HostTable::new(&weights);
    for i in [1, 2, 3] {
        hosts.set_healthy(i, false);
    }
    let counts = histogram(&seeded(LbPolicy::RoundRobin, &weights), &hosts, 5_000);
    for i in [0, 4, 5, 6, 7] {
        assert!(counts[i].abs_diff(1_000) <= 1, "{counts:?}");
    }
}

#[test]
fn random_is_uniform_and_ignores_weights() {
    let weights = [1, 10, 100, 1000];
    let hosts = HostTable::new(&weights);
    let counts = histogram(&seeded(LbPolicy::Random, &weights), &hosts, 40_000);
    for c in counts {
        assert_near(c, 10_000.0, 0.05, "random");
    }
}

#[test]
fn seeded_balancers_repeat_their_picks() {
    for policy in POLICIES {
        for weights in [[1; 6], [1, 2, 3, 1, 2, 3]] {
            let hosts = HostTable::new(&weights);
            hosts.set_active(2, 3);
            let a = Balancer::with_seed(policy, &weights, 1.0, 11);
            let b = Balancer::with_seed(policy, &weights, 1.0, 11);
            let pa: Vec<_> = (0..200).map(|_| a.pick(&hosts, |_| false)).collect();
            let pb: Vec<_> = (0..200).map(|_| b.pick(&hosts, |_| false)).collect();
            assert_eq!(pa, pb, "{policy:?}");
        }
    }
}

#[test]
fn invalid_bias_falls_back_to_one() {
    let hosts = HostTable::new(&[1, 2]);
    hosts.set_active(1, 3);
    for bias in [-1.0, f64::NAN, f64::INFINITY] {
        let b = Balancer::with_seed(LbPolicy::LeastRequest, &[1, 2], bias, 5);
        let counts = histogram(&b, &hosts, 3_000);
        assert_near(counts[0], 2_000.0, 0.01, &format!("bias {bias}"));
    }
}

/// A view with only the required methods: the default `healthy_count` scans.
struct Plain {
    healthy: Vec<bool>,
}
impl HostView for Plain {
    fn len(&self) -> usize {
        self.healthy.len()
    }
    fn weight(&self, _: usize) -> u32 {
        1
    }
    fn active(&self, _: usize) -> u32 {
        0
    }
    fn healthy(&self, i: usize) -> bool {
        self.healthy[i]
    }
}

#[test]
fn default_healthy_count_scans() {
    let view = Plain {
        healthy: vec![true, false, false, false],
    };
    assert_eq!(view.healthy_count(), 1);
    // In panic (1 of 4 healthy) the unhealthy hosts are picked too.
    let b = seeded(LbPolicy::Random, &[1; 4]);
    let picked: std::collections::HashSet<_> = (0..200)
        .map(|_| b.pick(&view, |_| false).unwrap())
        .collect();
    assert_eq!(picked.len(), 4);
}

#[test]
fn concurrent_picks_stay_eligible() {
    let weights: Vec<u32> = (1..=64).collect();
    let hosts = HostTable::new(&weights);
    for i in (0..64).step_by(3) {
        hosts.set_healthy(i, false);
    }
    for policy in POLICIES {
        let b = Balancer::new(policy, &weights, 1.0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let i = b.pick(&hosts, |i| i == 1).unwrap();
                        hosts.start(i);
                        assert!(i != 1 && hosts.healthy(i));
                        hosts.end(i);
                    }
                });
            }
        });
    }
}

/// The control thread flips health flags while workers pick (issue 8, item 4). With most
/// hosts skipped, sampling often gives up and the exact scans run while the flags change under
/// them; a scan that counted the eligible hosts and then looked for the k-th again panicked.
#[test]
fn picks_survive_concurrent_health_flips() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let weights = vec![1u32; 64];
    for policy in POLICIES {
        let hosts = HostTable::new(&weights);
        let b = Balancer::new(policy, &weights, 1.0);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut rng = Lcg(3);
                for _ in 0..5_000_000 {
                    if done.load(Relaxed) {
                        break;
                    }
                    let i = (rng.next() % 4) as usize;
                    hosts.set_healthy(i, rng.next().is_multiple_of(2));
                }
            });
            let pickers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..40_000 {
                            // A retry that tried every host but 0..4; hosts 4.. stay healthy,
                            // so there is always a candidate to fall back to.
                            let i = b.pick(&hosts, |i| i >= 4);
                            assert!(i.is_some_and(|i| i < 64), "{policy:?}: {i:?}");
                        }
                    })
                })
                .collect();
            let results: Vec<_> = pickers.into_iter().map(|p| p.join()).collect();
            done.store(true, Relaxed);
            for r in results {
                if let Err(e) = r {
                    std::panic::resume_unwind(e);
                }
            }
        });
    }
}

#[test]
fn host_table_end_saturates_at_zero() {
    let hosts = HostTable::new(&[1]);
    hosts.end(0);
    assert_eq!(hosts.active(0), 0);
    hosts.start(0);
    hosts.start(0);
    hosts.end(0);
    assert_eq!(hosts.active(0), 1);
    hosts.set_healthy(0, false);
    hosts.set_healthy(0, false);
    assert_eq!(hosts.healthy_count(), 0);
    hosts.set_healthy(0, true);
    assert_eq!(hosts.healthy_count(), 1);
}

#[test]
fn deadline_heap_orders_by_deadline_then_insertion() {
    use super::deadline_heap::{DeadlineHeap, Entry};
    let mut rng = Lcg(3);
    let entry = |rng: &mut Lcg, seq: u32| Entry::new((1 + rng.next() % 50) as f64, seq, seq);
    let mut heap = DeadlineHeap::from_entries((0..300).map(|s| entry(&mut rng, s)).collect());
    for s in 300..600 {
        heap.push(entry(&mut rng, s));
    }
    for k in 0..200 {
        let i = (rng.next() % 600) as usize;
        let e = heap.entries()[i];
        let later = e.deadline() + (rng.next() % 20) as f64;
        heap.postpone(i, Entry::new(later, 600 + k, e.host() as u32));
    }
    let mut popped = Vec::new();
    while let Some(e) = heap.pop() {
        popped.push((e.deadline(), e.seq()));
    }
    assert_eq!(popped.len(), 600);
    assert!(
        popped.windows(2).all(|w| w[0] < w[1]),
        "not in (deadline, seq) order"
    );
}
