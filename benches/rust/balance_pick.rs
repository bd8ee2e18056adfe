//! `Balancer::pick` for 10 and 10,000 hosts: least request (power of two choices with equal
//! weights, EDF with unequal ones), round robin (counter / EDF) and random.
//!
//! Run: `cargo bench --bench balance_pick`. Hosts carry 0–7 requests in flight and one in
//! eight is unhealthy, so the picks pay for rejected draws and passed-over EDF entries as in
//! a live cluster; the panic check uses `HostTable`'s O(1) healthy count.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use meshplane::balance::{Balancer, HostTable};
use meshplane::config::LbPolicy;
use std::time::Duration;

fn hosts(n: usize, weighted: bool) -> (Vec<u32>, HostTable) {
    let weights: Vec<u32> = (0..n)
        .map(|i| if weighted { 1 + (i as u32 * 7) % 10 } else { 1 })
        .collect();
    let table = HostTable::new(&weights);
    for i in 0..n {
        table.set_active(i, (i as u32 * 13) % 8);
        if i % 8 == 5 {
            table.set_healthy(i, false);
        }
    }
    (weights, table)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let cases = [
        ("least_request", LbPolicy::LeastRequest),
        ("round_robin", LbPolicy::RoundRobin),
        ("random", LbPolicy::Random),
    ];
    for (name, policy) in cases {
        for weighted in [false, true] {
            for n in [10, 10_000] {
                let (weights, table) = hosts(n, weighted);
                let balancer = Balancer::with_seed(policy, &weights, 1.0, 1);
                let label = format!("{name}/{}", if weighted { "weighted" } else { "equal" });
                group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                    b.iter(|| balancer.pick(black_box(&table), |_| false))
                });
            }
        }
    }
    // A retry: the host the previous pick returned is skipped.
    for n in [10, 10_000] {
        let (weights, table) = hosts(n, true);
        let balancer = Balancer::with_seed(LbPolicy::LeastRequest, &weights, 1.0, 1);
        let mut tried = 0;
        group.bench_with_input(
            BenchmarkId::new("least_request/weighted_retry", n),
            &n,
            |b, _| {
                b.iter(|| {
                    tried = balancer
                        .pick(black_box(&table), |i| i == tried)
                        .unwrap_or(0);
                    tried
                })
            },
        );
    }
    // The thread-local generator used in production (the others are seeded).
    let (weights, table) = hosts(10_000, false);
    let balancer = Balancer::new(LbPolicy::LeastRequest, &weights, 1.0);
    group.bench_function("least_request/equal_thread_rng/10000", |b| {
        b.iter(|| balancer.pick(black_box(&table), |_| false))
    });
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
