//! What tracing costs a proxied request: requests per second through one `Runtime` (1
//! worker) with tracing off, at 1% and 100% sampling (a collector that answers 200), and at
//! 100% with the collector gone (a closed port), measured in one run, the variants
//! interleaved and repeated; the median of each is reported as a ratio to "off".
//!
//! Everything is in this process on loopback: a hyper upstream (its own thread), the proxy,
//! an OTLP sink (its own thread) and a closed-loop load generator (its own thread, 32
//! keep-alive connections). Run: `cargo bench --bench tracing_cost` (`TRACING_BENCH_SECS`,
//! default 3 s per measurement; `TRACING_BENCH_ROUNDS`, default 3).
//!
//! Counting mode, for a repeatable cost on a noisy machine: `TRACING_BENCH_VARIANT=off|1|100|
//! gone|direct TRACING_BENCH_REQUESTS=N` runs exactly N requests (after 256 to warm up) through
//! that one variant and exits; `benches/rust/tracing_instructions.py` runs it under
//! `valgrind --tool=callgrind` at two values of N and reports instructions per request (the
//! difference, so start-up and warm-up cancel), for the proxy's own threads (callgrind
//! `--separate-threads=yes`; the harness's three threads are created first) and for the whole
//! process. `direct` sends the load to the upstream without the proxy.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meshplane::runtime::Runtime;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;

/// A server answering every request 200 with `body`, on a thread of its own.
fn serve(body: &'static [u8]) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| async move {
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(body),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    addr
}

fn snapshot(upstream: SocketAddr, tracing: Option<String>) -> Vec<u8> {
    let tracing = tracing.map_or(String::new(), |t| format!(", \"tracing\": {t}"));
    format!(
        r#"{{"schema": 1, "version": "bench",
  "listeners": [{{"name": "l", "address": "127.0.0.1:0", "protocol": "http", "routeTable": "t"}}],
  "routeTables": {{"t": {{"virtualHosts": [{{"name": "v", "domains": ["*"], "routes": [
     {{"name": "r", "match": {{"path": {{"kind": "prefix", "value": "/"}}}},
       "action": {{"clusters": [{{"cluster": "c", "weight": 1}}]}}}}]}}]}}}},
  "clusters": [{{"name": "c", "protocol": "http1", "endpoints": [{{"address": "{upstream}"}}]}}]{tracing}}}"#
    )
    .into_bytes()
}

/// How long a load runs: a duration, or an exact number of requests.
#[derive(Clone, Copy)]
enum Until {
    Secs(f64),
    Requests(u64),
}

/// Requests per second of `CONNECTIONS` closed-loop keep-alive clients, until `until`.
fn load(target: SocketAddr, until: Until) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let (done, stop) = (done.clone(), stop.clone());
            // Counting: each connection sends its share, exactly.
            let share = match until {
                Until::Requests(n) => {
                    Some(n / CONNECTIONS as u64 + u64::from((c as u64) < n % CONNECTIONS as u64))
                }
                Until::Secs(_) => None,
            };
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(target).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut sent = 0u64;
                while !stop.load(Relaxed) && share.is_none_or(|n| sent < n) {
                    sent += 1;
                    let req = hyper::Request::get("/bench")
                        .header("host", "bench")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let resp = send.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = resp.into_body().collect().await;
                    done.fetch_add(1, Relaxed);
                }
            }));
        }
        if let Until::Secs(secs) = until {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            stop.store(true, Relaxed);
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    done.load(Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("TRACING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rounds: usize = std::env::var("TRACING_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // NOTE: the harness's threads (this one, the upstream's, the sink's) are created before
    // any `Runtime`: `tracing_instructions.py` counts the threads after them as the proxy's.
    let upstream = serve(b"meshplane-bench-ok\n");
    let collector = serve(b"");
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let spec = |pct: f64, at: SocketAddr| {
        Some(format!(
            r#"{{"serviceName": "bench", "samplingPercent": {pct}, "otlpEndpoint": "http://{at}"}}"#
        ))
    };
    if let Ok(variant) = std::env::var("TRACING_BENCH_VARIANT") {
        let requests: u64 = std::env::var("TRACING_BENCH_REQUESTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("TRACING_BENCH_REQUESTS=N with TRACING_BENCH_VARIANT");
        let tracing = match variant.as_str() {
            "off" | "direct" => None,
            "1" => spec(1.0, collector),
            "100" => spec(100.0, collector),
            "gone" => spec(100.0, gone),
            other => panic!("TRACING_BENCH_VARIANT={other}: expected off, 1, 100, gone or direct"),
        };
        let rt = Runtime::new(1).unwrap();
        rt.apply(&snapshot(upstream, tracing)).unwrap();
        let target = if variant == "direct" {
            upstream
        } else {
            rt.listeners()[0].1
        };
        load(target, Until::Requests(256));
        load(target, Until::Requests(requests));
        eprintln!(
            "{variant}: {requests} requests, tracing {}",
            rt.stats(true)["tracing"]
        );
        rt.shutdown(Duration::from_millis(100));
        rt.join();
        return;
    }
    let variants: Vec<(&str, Option<String>)> = vec![
        ("off", None),
        ("1% sampled", spec(1.0, collector)),
        ("100% sampled", spec(100.0, collector)),
        ("100%, collector gone", spec(100.0, gone)),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let rt = Runtime::new(1).unwrap();
            rt.apply(&snapshot(upstream, variants[i].1.clone()))
                .unwrap();
            let addr = rt.listeners()[0].1;
            load(addr, Until::Secs(0.3)); // warm-up: connections, pools
            let rps = load(addr, Until::Secs(secs));
            let stats = rt.stats(true);
            eprintln!(
                "round {round} {:<22} {rps:>10.0} req/s  tracing {}",
                variants[i].0, stats["tracing"]
            );
            results[i].push(rps);
            rt.shutdown(Duration::from_millis(100));
            rt.join();
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = median(&mut results[0].clone());
    println!("| tracing | req/s (median of {rounds}) | ratio to off |");
    println!("|---|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let m = median(&mut results[i].clone());
        println!("| {name} | {m:.0} | {:.3} |", m / base);
    }
}
