//! `Balancer::pick` for 10 and 10,000 hosts: least request (power of two choices with equal
//! weights, EDF with unequal ones), round robin (counter / EDF) and random.
//!
//! Run: `cargo bench --bench balance_pick` (group `pick`, wall clock), or with
//! `BENCH_CLOCK=cpu` (group `pick_cpu`: the benchmark thread's CPU time, which other processes
//! on a busy 2-core machine do not inflate). Hosts carry 0–7 requests in flight and one in
//! eight is unhealthy, so picks pay for rejected draws and passed-over EDF entries as in a live
//! cluster; the panic check uses `HostTable`'s O(1) healthy count.
//!
//! `function/claim_release`: a function cluster's pick (`cluster::FunctionState::claim`, the
//! most recently released idle instance under the cluster's lock) and its release, with half
//! of 10 or 1,000 instances busy.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput};
use meshplane::balance::{Balancer, HostTable};
use meshplane::cluster::{Claimed, FunctionState, Host, HostSet};
use meshplane::config::{LbPolicy, UpstreamAddress, UpstreamProtocol};
use std::hint::black_box;
use std::sync::Arc;
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

fn pick<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let mut group = c.benchmark_group(group_name);
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
    for n in [10, 1_000] {
        let instances: Vec<Arc<Host>> = (0..n)
            .map(|i| {
                let addr = UpstreamAddress::Unix(format!("/run/fn/{i}.sock").into());
                Arc::new(Host::new(
                    addr,
                    UpstreamProtocol::Http1,
                    Duration::from_secs(60),
                ))
            })
            .collect();
        let set = arc_swap::ArcSwap::from_pointee(HostSet::new(
            instances,
            vec![1; n],
            LbPolicy::LeastRequest,
            1.0,
        ));
        let state = Arc::new(FunctionState::default());
        let busy: Vec<_> = (0..n / 2)
            .map(|_| match state.claim(&set, u32::MAX, None, |_| false) {
                Claimed::Host(c, _) => c,
                _ => unreachable!("half the instances are idle"),
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("function/claim_release", n), &n, |b, _| {
            b.iter(
                || match state.claim(black_box(&set), u32::MAX, None, |_| false) {
                    Claimed::Host(c, i) => {
                        drop(c);
                        i
                    }
                    _ => unreachable!("an instance is idle"),
                },
            )
        });
        drop(busy);
    }
    // The thread-local generator used in production (the others are seeded).
    let (weights, table) = hosts(10_000, false);
    let balancer = Balancer::new(LbPolicy::LeastRequest, &weights, 1.0);
    group.bench_function("least_request/equal_thread_rng/10000", |b| {
        b.iter(|| balancer.pick(black_box(&table), |_| false))
    });
    group.finish();
}

/// CPU time consumed by the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Values stay in ns: every pick here takes nanoseconds.
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns (cpu)"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _throughput: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn main() {
    if std::env::var("BENCH_CLOCK").as_deref() == Ok("cpu") {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args();
        pick(&mut c, "pick_cpu");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        pick(&mut c, "pick");
        c.final_summary();
    }
}
