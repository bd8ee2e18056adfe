//! Clusters and their hosts: weights, in-flight counts, health, connection pools, and the
//! cluster-wide circuit breakers (App Mesh `connectionPool`).
//!
//! A `Host` is kept across snapshot applies when its cluster, address and protocol are
//! unchanged, so its active count, pooled connections and health survive a config change.

use crate::balance::{Balancer, HostView};
use crate::config::{self, CircuitBreakers, UpstreamProtocol};
use crate::pool::Pool;
use crate::stats::{ClusterStats, HostStats};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub struct Host {
    pub addr: SocketAddr,
    pub name: Arc<str>,
    pub active: AtomicU32,
    /// False when the control layer marked it unhealthy (health check or ejection).
    pub healthy: AtomicBool,
    pub stats: HostStats,
    pub pool: Pool,
}

impl Host {
    pub fn new(addr: SocketAddr, protocol: UpstreamProtocol, idle_timeout: Duration) -> Self {
        Host {
            addr,
            name: addr.to_string().into(),
            active: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            stats: HostStats::default(),
            pool: Pool::new(addr, protocol, idle_timeout),
        }
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
        let healthy = hosts.iter().filter(|h| h.healthy.load(Relaxed)).count();
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
        self.hosts[i].healthy.load(Relaxed)
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
}

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
    ) -> Cluster {
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
        };
        let endpoints: Vec<(SocketAddr, u32)> = spec
            .endpoints
            .iter()
            .filter_map(|e| e.address.parse().ok().map(|a| (a, e.weight)))
            .collect();
        cluster.set_endpoints(&endpoints, previous);
        cluster
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

    /// Mark a host healthy or not; returns false if the address is not a member.
    pub fn set_host_health(&self, addr: SocketAddr, healthy: bool) -> bool {
        let set = self.hosts.load();
        let Some(h) = set.hosts.iter().find(|h| h.addr == addr) else {
            return false;
        };
        let was = h.healthy.swap(healthy, Relaxed);
        if was != healthy {
            if healthy {
                set.healthy.fetch_add(1, Relaxed);
            } else {
                set.healthy.fetch_sub(1, Relaxed);
                h.pool.close_idle();
            }
        }
        true
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

    pub fn snapshot(&self) -> serde_json::Value {
        let mut m = self.stats.snapshot();
        let set = self.hosts.load();
        let hosts: serde_json::Map<String, serde_json::Value> = set
            .hosts
            .iter()
            .zip(set.weights.iter())
            .map(|(h, w)| {
                let mut hm = h.stats.snapshot();
                hm.insert("rq_active".into(), h.active.load(Relaxed).into());
                hm.insert("healthy".into(), h.healthy.load(Relaxed).into());
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
