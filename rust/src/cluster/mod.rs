//! Clusters and their hosts: weights, in-flight counts, health, connection pools, and the
//! cluster-wide circuit breakers (App Mesh `connectionPool`).
//!
//! A `Host` is kept across snapshot applies when its cluster, address and protocol are
//! unchanged, so its active count, pooled connections and health survive a config change.

mod outlier;

pub use outlier::{Outcome, Outcomes, Sample};

use crate::balance::{Balancer, HostView};
use crate::config::{self, CircuitBreakers, UpstreamProtocol};
use crate::pool::Pool;
use crate::stats::{ClusterStats, HostStats};
use crate::tls::ClientTls;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub struct Host {
    pub addr: SocketAddr,
    pub name: Arc<str>,
    pub active: AtomicU32,
    /// Set by the control layer's active health checks.
    pub failed_active_hc: AtomicBool,
    /// Set by the control layer's outlier detector.
    pub ejected: AtomicBool,
    pub stats: HostStats,
    pub outcomes: Outcomes,
    pub pool: Pool,
}

/// Which health flag a control-layer decision sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFlag {
    FailedActiveHealthCheck,
    Ejected,
}

impl Host {
    pub fn new(addr: SocketAddr, protocol: UpstreamProtocol, idle_timeout: Duration) -> Self {
        Host {
            addr,
            name: addr.to_string().into(),
            active: AtomicU32::new(0),
            failed_active_hc: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            stats: HostStats::default(),
            outcomes: Outcomes::default(),
            pool: Pool::new(addr, protocol, idle_timeout),
        }
    }

    /// Healthy = neither failed active health checking nor ejected (Envoy's coarse health).
    #[inline]
    pub fn healthy(&self) -> bool {
        !self.failed_active_hc.load(Relaxed) && !self.ejected.load(Relaxed)
    }
}

/// One immutable membership of a cluster, with the balancer built for it.
pub struct HostSet {
    pub hosts: Vec<Arc<Host>>,
    pub weights: Vec<u32>,
    pub balancer: Balancer,
    healthy: AtomicUsize,
}

impl HostSet {
    pub fn new(hosts: Vec<Arc<Host>>, weights: Vec<u32>, lb: config::LbPolicy, bias: f64) -> Self {
        let healthy = hosts.iter().filter(|h| h.healthy()).count();
        let balancer = Balancer::new(lb, &weights, bias);
        HostSet {
            hosts,
            weights,
            balancer,
            healthy: AtomicUsize::new(healthy),
        }
    }

    pub fn pick(&self, skip: impl Fn(usize) -> bool) -> Option<usize> {
        self.balancer.pick(self, skip)
    }
}

impl HostView for HostSet {
    #[inline]
    fn len(&self) -> usize {
        self.hosts.len()
    }
    #[inline]
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
    #[inline]
    fn active(&self, i: usize) -> u32 {
        self.hosts[i].active.load(Relaxed)
    }
    #[inline]
    fn healthy(&self, i: usize) -> bool {
        self.hosts[i].healthy()
    }
    #[inline]
    fn healthy_count(&self) -> usize {
        self.healthy.load(Relaxed)
    }
}

pub struct Cluster {
    pub name: Arc<str>,
    pub spec: config::Cluster,
    pub protocol: UpstreamProtocol,
    pub hosts: ArcSwap<HostSet>,
    pub stats: Arc<ClusterStats>,
    pub breakers: CircuitBreakers,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Open upstream connections, all hosts together (max_connections).
    pub cx_open: Arc<AtomicU32>,
    /// Signalled when a connection closes or goes idle, for requests waiting on max_connections.
    pub cx_released: Arc<Notify>,
    /// Retries in flight (scheduled or running), for the retry budget.
    pub retries_active: AtomicU32,
    /// TLS origination; swapped in place when certificates are reloaded.
    pub tls: ArcSwapOption<ClientTls>,
    outlier_sink: Option<OutlierSink>,
}

/// Receives (cluster, host, detector) when a consecutive-failure threshold is reached.
pub type OutlierSink = Arc<dyn Fn(&str, &str, &'static str) + Send + Sync>;

/// Lives as long as one upstream connection; keeps the connection counters honest.
pub struct ConnectionGuard {
    host: Arc<Host>,
    stats: Arc<ClusterStats>,
    cx_open: Arc<AtomicU32>,
    released: Arc<Notify>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.host.stats.cx_active.dec();
        self.stats.cx_active.dec();
        self.cx_open.fetch_sub(1, Relaxed);
        self.released.notify_one();
    }
}

impl Cluster {
    /// Build from the spec, reusing `previous` hosts with the same address and protocol.
    pub fn build(
        spec: &config::Cluster,
        stats: Arc<ClusterStats>,
        previous: Option<&Cluster>,
        outlier_sink: Option<OutlierSink>,
    ) -> Result<Cluster, crate::tls::TlsError> {
        let tls = Self::build_tls(spec)?;
        let idle_timeout = Duration::from_millis(spec.idle_timeout_ms.unwrap_or(3_600_000));
        let (cx_open, cx_released) = match previous {
            Some(p) => (p.cx_open.clone(), p.cx_released.clone()),
            None => (Arc::new(AtomicU32::new(0)), Arc::new(Notify::new())),
        };
        let cluster = Cluster {
            name: spec.name.as_str().into(),
            spec: spec.clone(),
            protocol: spec.protocol,
            hosts: ArcSwap::from_pointee(HostSet::new(Vec::new(), Vec::new(), spec.lb, 1.0)),
            stats,
            breakers: spec.circuit_breakers.clone(),
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
            idle_timeout,
            cx_open,
            cx_released,
            retries_active: AtomicU32::new(0),
            outlier_sink,
            tls: ArcSwapOption::new(tls),
        };
        let endpoints: Vec<(SocketAddr, u32)> = spec
            .endpoints
            .iter()
            .filter_map(|e| e.address.parse().ok().map(|a| (a, e.weight)))
            .collect();
        cluster.set_endpoints(&endpoints, previous);
        Ok(cluster)
    }

    /// TLS origination from the spec (files read now).
    pub fn build_tls(
        spec: &config::Cluster,
    ) -> Result<Option<Arc<ClientTls>>, crate::tls::TlsError> {
        match &spec.tls {
            Some(t) => Ok(Some(Arc::new(ClientTls::build(
                t,
                spec.protocol == UpstreamProtocol::Http2,
            )?))),
            None => Ok(None),
        }
    }

    /// Replace the membership (static config or discovery); hosts that stay keep their state.
    pub fn set_endpoints(&self, endpoints: &[(SocketAddr, u32)], previous: Option<&Cluster>) {
        let old = previous
            .map(|p| p.hosts.load_full())
            .unwrap_or_else(|| self.hosts.load_full());
        let same_protocol = previous.is_none_or(|p| p.protocol == self.protocol);
        let mut hosts = Vec::with_capacity(endpoints.len());
        let mut weights = Vec::with_capacity(endpoints.len());
        for (addr, weight) in endpoints {
            let reuse = if same_protocol {
                old.hosts.iter().find(|h| h.addr == *addr).cloned()
            } else {
                None
            };
            hosts.push(
                reuse.unwrap_or_else(|| {
                    Arc::new(Host::new(*addr, self.protocol, self.idle_timeout))
                }),
            );
            weights.push(*weight);
        }
        for h in old.hosts.iter() {
            if !hosts.iter().any(|n| Arc::ptr_eq(n, h)) {
                h.pool.close_idle();
            }
        }
        let bias = self.spec.active_request_bias.unwrap_or(1.0);
        self.hosts
            .store(Arc::new(HostSet::new(hosts, weights, self.spec.lb, bias)));
    }

    /// Set or clear one health flag of a host; returns false if the address is not a member.
    /// A host that becomes unavailable has its idle connections closed (Envoy).
    pub fn set_host_flag(&self, addr: SocketAddr, flag: HealthFlag, on: bool) -> bool {
        let set = self.hosts.load();
        let Some(h) = set.hosts.iter().find(|h| h.addr == addr) else {
            return false;
        };
        let before = h.healthy();
        match flag {
            HealthFlag::FailedActiveHealthCheck => h.failed_active_hc.store(on, Relaxed),
            HealthFlag::Ejected => {
                h.ejected.store(on, Relaxed);
                if !on {
                    h.outcomes.reset_consecutive();
                }
            }
        }
        let after = h.healthy();
        if before && !after {
            set.healthy.fetch_sub(1, Relaxed);
            h.pool.close_idle();
        } else if !before && after {
            set.healthy.fetch_add(1, Relaxed);
        }
        true
    }

    /// Record an attempt's outcome for outlier detection, reporting reached thresholds.
    #[inline]
    pub fn record_outcome(&self, host: &Host, outcome: Outcome) {
        if let Some(spec) = &self.spec.outlier_detection {
            host.outcomes.record(outcome, spec, |kind| {
                if let Some(sink) = &self.outlier_sink {
                    sink(&self.name, &host.name, kind);
                }
            });
        }
    }

    /// Interval totals of every host, reset for the next interval.
    pub fn take_samples(&self) -> Vec<(Arc<str>, Sample)> {
        self.hosts
            .load()
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.outcomes.take()))
            .collect()
    }

    /// Count a new connection to `host`; the guard undoes it when the connection ends.
    pub fn connection_guard(&self, host: &Arc<Host>) -> ConnectionGuard {
        host.stats.cx_total.inc();
        host.stats.cx_active.inc();
        self.stats.cx_total.inc();
        self.stats.cx_active.inc();
        ConnectionGuard {
            host: host.clone(),
            stats: self.stats.clone(),
            cx_open: self.cx_open.clone(),
            released: self.cx_released.clone(),
        }
    }

    /// Reserve a connection slot under max_connections.
    pub fn try_reserve_connection(&self) -> bool {
        let max = self.breakers.max_connections;
        self.cx_open
            .fetch_update(
                Relaxed,
                Relaxed,
                |n| if n < max { Some(n + 1) } else { None },
            )
            .is_ok()
    }

    /// Close one idle connection of a host other than `except`, freeing a max_connections slot.
    pub fn reclaim_idle_connection(&self, except: &Arc<Host>) {
        let set = self.hosts.load();
        for h in set.hosts.iter() {
            if !Arc::ptr_eq(h, except) && h.pool.close_one_idle() {
                return;
            }
        }
    }

    /// Whether one more retry fits the retry budget (Envoy `retry_budget`): at most
    /// `budget_percent` of active plus pending requests, never fewer than the floor; and the
    /// `maxRetries` breaker.
    pub fn retry_allowed(&self) -> bool {
        let b = &self.spec.retry_budget;
        let load = (self.stats.rq_active.get() + self.stats.rq_pending_active.get()).max(0) as f64;
        let limit = ((b.budget_percent / 100.0 * load) as u32).max(b.min_retry_concurrency);
        let limit = limit.min(self.breakers.max_retries);
        self.retries_active.load(Relaxed) < limit
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let mut m = self.stats.snapshot();
        m.insert(
            "retries_active".into(),
            self.retries_active.load(Relaxed).into(),
        );
        let set = self.hosts.load();
        let hosts: serde_json::Map<String, serde_json::Value> = set
            .hosts
            .iter()
            .zip(set.weights.iter())
            .map(|(h, w)| {
                let mut hm = h.stats.snapshot();
                hm.insert("rq_active".into(), h.active.load(Relaxed).into());
                hm.insert("healthy".into(), h.healthy().into());
                hm.insert(
                    "failed_active_hc".into(),
                    h.failed_active_hc.load(Relaxed).into(),
                );
                hm.insert("ejected".into(), h.ejected.load(Relaxed).into());
                hm.insert("weight".into(), (*w).into());
                hm.insert("idle_connections".into(), h.pool.idle_count().into());
                (h.name.to_string(), serde_json::Value::Object(hm))
            })
            .collect();
        m.insert("hosts".into(), serde_json::Value::Object(hosts));
        m.insert(
            "protocol".into(),
            serde_json::to_value(self.protocol).unwrap_or_default(),
        );
        m.insert(
            "circuit_breakers".into(),
            serde_json::to_value(&self.breakers).unwrap_or_default(),
        );
        serde_json::Value::Object(m)
    }
}
