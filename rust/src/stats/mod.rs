//! Counters, gauges and latency histograms for listeners, routes, clusters and hosts.
//!
//! Every statistic is a plain atomic updated with `Relaxed` ordering on the request path; Python
//! reads a copy (`*::snapshot`) without stopping traffic. Objects are created when a snapshot is
//! built and kept by name across applies, so counters survive configuration changes.

pub mod pyjson;

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (active requests, open connections).
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Envoy's default histogram bounds, in milliseconds.
pub const BOUNDS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Fixed-bucket latency histogram; the last bucket is +Inf.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS_MS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        let ms = us as f64 / 1000.0;
        // NOTE: 20 bounds: a linear scan beats a binary search at this size.
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn snapshot(&self) -> Value {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        json!({
            "bounds": BOUNDS_MS.to_vec(),
            "counts": counts,
            "count": counts.iter().sum::<u64>(),
            "sum": self.sum_us.load(Relaxed) as f64 / 1000.0,
        })
    }
}

/// Responses by class, as Envoy's `upstream_rq_<N>xx`, and by exact code (`upstream_rq_<code>`).
#[derive(Default, Debug)]
pub struct StatusClasses {
    classes: [Counter; 5],
    // NOTE: one block of 100 counters per class, allocated on the class's first response: a
    // host that only ever answers 2xx costs 800 bytes, not 4 KiB for every possible code.
    codes: [OnceLock<Box<[Counter; 100]>>; 5],
}

impl StatusClasses {
    #[inline]
    pub fn record(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.classes[class].inc();
        if (100..600).contains(&status) {
            let block = self.codes[class]
                .get_or_init(|| Box::new(std::array::from_fn(|_| Counter::default())));
            block[(status % 100) as usize].inc();
        }
    }
    /// Responses of class `class` (1..=5).
    pub fn class(&self, class: usize) -> u64 {
        self.classes[class - 1].get()
    }

    /// (code, count) of every exact code seen, in code order.
    pub fn codes(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.codes.iter().enumerate().flat_map(|(i, block)| {
            block
                .get()
                .into_iter()
                .flat_map(|b| b.iter().enumerate())
                .map(move |(j, c)| (((i + 1) * 100 + j) as u16, c.get()))
                .filter(|(_, n)| *n > 0)
        })
    }

    fn write(&self, m: &mut Map<String, Value>) {
        for (i, c) in self.classes.iter().enumerate() {
            m.insert(format!("rq_{}xx", i + 1), json!(c.get()));
        }
        let mut codes = Map::new();
        for (i, block) in self.codes.iter().enumerate() {
            for (j, c) in block.get().into_iter().flat_map(|b| b.iter().enumerate()) {
                if c.get() > 0 {
                    codes.insert(((i + 1) * 100 + j).to_string(), json!(c.get()));
                }
            }
        }
        m.insert("rq_codes".into(), Value::Object(codes));
    }
}

#[derive(Default, Debug)]
pub struct ListenerStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub downstream_rq: StatusClasses,
    /// Requests refused before routing (malformed, headers too large).
    pub rq_rejected: Counter,
    pub no_route: Counter,
    /// Downstream TLS handshakes that failed (no client certificate, untrusted, SAN refused).
    pub tls_handshake_error: Counter,
    pub tls_handshakes: Counter,
    /// Connections a PERMISSIVE listener served in plaintext.
    pub plaintext_cx: Counter,
    /// Connections closed because no complete request head arrived in time.
    pub rq_header_timeout: Counter,
    /// accept(2) failures (out of file descriptors, ...): the listener backs off and retries.
    pub cx_accept_error: Counter,
    /// Each routed request's time from its head's arrival to its response's last byte (or the
    /// client going away): Envoy's `http.<prefix>.downstream_rq_time`.
    pub rq_time: Histogram,
}

impl ListenerStats {
    pub fn snapshot(&self) -> Value {
        let mut m = Map::new();
        m.insert("cx_total".into(), json!(self.cx_total.get()));
        m.insert("cx_active".into(), json!(self.cx_active.get()));
        m.insert("rq_total".into(), json!(self.rq_total.get()));
        m.insert("rq_active".into(), json!(self.rq_active.get()));
        m.insert("rq_rejected".into(), json!(self.rq_rejected.get()));
        m.insert("no_route".into(), json!(self.no_route.get()));
        m.insert(
            "tls_handshake_error".into(),
            json!(self.tls_handshake_error.get()),
        );
        m.insert("tls_handshakes".into(), json!(self.tls_handshakes.get()));
        m.insert("plaintext_cx".into(), json!(self.plaintext_cx.get()));
        m.insert(
            "rq_header_timeout".into(),
            json!(self.rq_header_timeout.get()),
        );
        m.insert("cx_accept_error".into(), json!(self.cx_accept_error.get()));
        m.insert("rq_time_ms".into(), self.rq_time.snapshot());
        self.downstream_rq.write(&mut m);
        Value::Object(m)
    }
}

#[derive(Default, Debug)]
pub struct RouteStats {
    pub rq_total: Counter,
    pub rq: StatusClasses,
}

impl RouteStats {
    pub fn snapshot(&self) -> Value {
        let mut m = Map::new();
        m.insert("rq_total".into(), json!(self.rq_total.get()));
        self.rq.write(&mut m);
        Value::Object(m)
    }
}

#[derive(Default, Debug)]
pub struct ClusterStats {
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_pending_active: Gauge,
    pub rq: StatusClasses,
    pub rq_timeout: Counter,
    pub rq_retry: Counter,
    pub rq_retry_success: Counter,
    pub rq_retry_overflow: Counter,
    pub rq_retry_limit_exceeded: Counter,
    pub rq_pending_overflow: Counter,
    pub rq_reset: Counter,
    /// Requests sent again on a fresh connection because their pooled one had gone stale
    /// (outside the retry policy and budget).
    pub rq_retry_stale_connection: Counter,
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    /// TLS handshakes with an upstream that failed (untrusted chain, SAN mismatch...).
    pub cx_tls_fail: Counter,
    pub cx_overflow: Counter,
    pub cx_none_healthy: Counter,
    /// Function clusters: requests refused at the concurrency limit (429).
    pub rq_throttled: Counter,
    /// Function clusters: requests waiting for an idle instance now.
    pub rq_waiting: Gauge,
    /// Function clusters: requests that waited `instanceWaitMs` in vain (503).
    pub rq_instance_wait_timeout: Counter,
    pub rq_time: Histogram,
}

impl ClusterStats {
    pub fn snapshot(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in [
            ("rq_total", self.rq_total.get()),
            ("rq_timeout", self.rq_timeout.get()),
            ("rq_retry", self.rq_retry.get()),
            ("rq_retry_success", self.rq_retry_success.get()),
            ("rq_retry_overflow", self.rq_retry_overflow.get()),
            (
                "rq_retry_limit_exceeded",
                self.rq_retry_limit_exceeded.get(),
            ),
            ("rq_pending_overflow", self.rq_pending_overflow.get()),
            ("rq_reset", self.rq_reset.get()),
            (
                "rq_retry_stale_connection",
                self.rq_retry_stale_connection.get(),
            ),
            ("cx_total", self.cx_total.get()),
            ("cx_connect_fail", self.cx_connect_fail.get()),
            ("cx_tls_fail", self.cx_tls_fail.get()),
            ("cx_overflow", self.cx_overflow.get()),
            ("cx_none_healthy", self.cx_none_healthy.get()),
            ("rq_throttled", self.rq_throttled.get()),
            (
                "rq_instance_wait_timeout",
                self.rq_instance_wait_timeout.get(),
            ),
        ] {
            m.insert(k.into(), json!(v));
        }
        m.insert("rq_active".into(), json!(self.rq_active.get()));
        m.insert(
            "rq_pending_active".into(),
            json!(self.rq_pending_active.get()),
        );
        m.insert("cx_active".into(), json!(self.cx_active.get()));
        m.insert("rq_waiting".into(), json!(self.rq_waiting.get()));
        self.rq.write(&mut m);
        m.insert("rq_time_ms".into(), self.rq_time.snapshot());
        m
    }
}

#[derive(Default, Debug)]
pub struct HostStats {
    pub rq_total: Counter,
    pub rq: StatusClasses,
    /// Failures with no response: connect failure, reset, timeout.
    pub rq_error: Counter,
    pub rq_timeout: Counter,
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
}

/// Stats objects by name, so a rebuilt snapshot finds the counters of the previous one.
#[derive(Default)]
pub struct Registry {
    listeners: Mutex<HashMap<String, Arc<ListenerStats>>>,
    routes: Mutex<HashMap<String, Arc<RouteStats>>>,
    clusters: Mutex<HashMap<String, Arc<ClusterStats>>>,
}

fn get_or_make<T: Default>(m: &Mutex<HashMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(name.to_string()).or_default().clone()
}

fn retain<T>(m: &Mutex<HashMap<String, Arc<T>>>, keep: &dyn Fn(&str) -> bool) {
    m.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|k, _| keep(k));
}

impl Registry {
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        get_or_make(&self.listeners, name)
    }
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        get_or_make(&self.routes, name)
    }
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        get_or_make(&self.clusters, name)
    }

    /// Forget stats of objects that no longer exist (after a successful apply).
    pub fn retain(
        &self,
        listeners: &dyn Fn(&str) -> bool,
        routes: &dyn Fn(&str) -> bool,
        clusters: &dyn Fn(&str) -> bool,
    ) {
        retain(&self.listeners, listeners);
        retain(&self.routes, routes);
        retain(&self.clusters, clusters);
    }

    pub fn listeners_snapshot(&self) -> Value {
        let m = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        Value::Object(m.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect())
    }

    pub fn routes_snapshot(&self) -> Value {
        let m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        Value::Object(m.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::default();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(7));
        h.record(Duration::from_secs(7200));
        let s = h.snapshot();
        let counts = s["counts"].as_array().unwrap();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[3], 1);
        assert_eq!(counts[BOUNDS_MS.len()], 1);
        assert_eq!(s["count"], 3);
    }

    #[test]
    fn registry_keeps_objects_by_name() {
        let r = Registry::default();
        r.cluster("a").rq_total.inc();
        assert_eq!(r.cluster("a").rq_total.get(), 1);
        r.retain(&|_| true, &|_| true, &|n| n != "a");
        assert_eq!(r.cluster("a").rq_total.get(), 0);
    }

    #[test]
    fn status_classes() {
        let s = StatusClasses::default();
        s.record(204);
        s.record(503);
        s.record(99);
        let mut m = Map::new();
        s.write(&mut m);
        assert_eq!(m["rq_2xx"], 1);
        assert_eq!(m["rq_5xx"], 1);
        assert_eq!(m["rq_1xx"], 1);
        // Exact codes in 100..=599 only, and only those seen.
        assert_eq!(m["rq_codes"], json!({"204": 1, "503": 1}));
    }
}
