//! `RouteTable::find` with 1, 100 and 10,000 routes: a hit on the last-ranked route (the worst
//! case for Envoy's linear scan) and a miss. Run: `cargo bench --bench route_match`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use meshplane::config::{
    HeaderMatchSpec, HeaderRule, PathMatchSpec, RouteActionSpec, RouteMatchSpec, RouteSpec,
    RouteTableSpec, VirtualHostSpec, WeightedCluster,
};
use meshplane::route::{Request, RouteTable};

/// A table shaped like a compiled mesh: every 10th route an exact path, every 25th a canary
/// guarded by a header, the rest one prefix per service (`/svc{i}/`).
fn table_spec(routes: usize) -> RouteTableSpec {
    let action = RouteActionSpec {
        clusters: vec![WeightedCluster {
            cluster: "c".into(),
            weight: 1,
        }],
        route_table: None,
        rewrite: None,
        timeout_ms: 15_000,
        idle_timeout_ms: None,
        retry: None,
    };
    let routes = (0..routes)
        .map(|i| {
            let mut matcher = RouteMatchSpec::default();
            if i % 10 == 5 {
                matcher.path = Some(PathMatchSpec::Exact(format!("/svc{i}/health")));
            } else {
                matcher.path = Some(PathMatchSpec::Prefix(format!("/svc{i}/")));
            }
            if i % 25 == 3 {
                matcher.headers.push(HeaderMatchSpec {
                    name: "x-canary".into(),
                    rule: HeaderRule::Exact { value: "1".into() },
                    invert: false,
                });
            }
            RouteSpec {
                name: format!("r{i}"),
                matcher,
                action: action.clone(),
            }
        })
        .collect();
    RouteTableSpec {
        virtual_hosts: vec![VirtualHostSpec {
            name: "vh".into(),
            domains: vec!["*.mesh.local".into(), "*".into()],
            routes,
        }],
    }
}

fn find(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    let mut group = c.benchmark_group("route_find");
    for n in [1usize, 100, 10_000] {
        let table = RouteTable::build(&table_spec(n), |_| Ok(())).expect("bench table builds");
        let last = n - 1;
        let hit_path = format!("/svc{last}/items/42?page=2");
        let request = |path| Request {
            method: "GET",
            path,
            authority: "orders.mesh.local:8080",
            scheme: "http",
            port: 15001,
            headers: &headers,
        };
        let hit = request(&hit_path);
        assert_eq!(
            table.find(&hit).map(|r| &*r.name),
            Some(format!("r{last}").as_str())
        );
        let miss = request("/nowhere/items/42?page=2");
        assert!(table.find(&miss).is_none());
        group.bench_with_input(BenchmarkId::new("hit_last", n), &hit, |b, req| {
            b.iter(|| black_box(table.find(black_box(req))))
        });
        group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, req| {
            b.iter(|| black_box(table.find(black_box(req))))
        });
    }
    group.finish();
}

criterion_group!(benches, find);
criterion_main!(benches);
