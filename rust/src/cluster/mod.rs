//! Clusters and their hosts: weights, in-flight counts, health, connection pools, and the
//! cluster-wide circuit breakers (App Mesh `connectionPool`).
//!
//! A `Host` is kept across snapshot applies when its cluster, address and protocol are
//! unchanged, so its active count, pooled connections and health survive a config change.

mod function;
mod outlier;

pub use function::{Claim, Claimed, FunctionState, Waiter};
pub use outlier::{Outcome, Outcomes, Sample};

use crate::balance::{Balancer, HostView};
use crate::config::{self, CircuitBreakers, UpstreamAddress, UpstreamProtocol};
use crate::error::{Kind, ProxyError};
use crate::pool::Pool;
use crate::stats::{ClusterStats, HostStats};
use crate::tls::ClientTls;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub struct Host {
    pub addr: UpstreamAddress,
    pub name: Arc<str>,
    pub active: AtomicU32,
    /// Set by the control layer's active health checks.
    pub failed_active_hc: AtomicBool,
    /// Set by the control layer's outlier detector.
    pub ejected: AtomicBool,
    pub stats: HostStats,
    pub outcomes: Outcomes,
    pub pool: Pool,
    /// Function clusters only: the host serves a request now (`function.rs`).
    pub claimed: AtomicBool,
    /// Function clusters only: when the host was last released (a release count).
    pub last_used: AtomicU64,
    /// Removed from its cluster's host set: a release no longer hands it to a waiter.
    pub retired: AtomicBool,
}

/// Which health flag a control-layer decision sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFlag {
    FailedActiveHealthCheck,
    Ejected,
}

impl Host {
    pub fn new(addr: UpstreamAddress, protocol: UpstreamProtocol, idle_timeout: Duration) -> Self {
        Host {
            name: addr.to_string().into(),
            pool: Pool::new(addr.clone(), protocol, idle_timeout),
            addr,
            active: AtomicU32::new(0),
            failed_active_hc: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            stats: HostStats::default(),
            outcomes: Outcomes::default(),
            claimed: AtomicBool::new(false),
            last_used: AtomicU64::new(0),
            retired: AtomicBool::new(false),
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
    /// Function clusters (`spec.function`): claims, waiters and the throttle; shared with
    /// the previous version's cluster of the same name.
    pub function: Option<Arc<FunctionState>>,
    outlier_sink: Option<OutlierSink>,
    instance_sink: Option<InstanceSink>,
}

/// Receives (cluster, host, detector) when a consecutive-failure threshold is reached.
pub type OutlierSink = Arc<dyn Fn(&str, &str, &'static str) + Send + Sync>;

/// A request of a function cluster found no idle instance and is waiting for one: the
/// control layer may start an instance. The counts are taken as the request queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceWanted {
    pub cluster: Arc<str>,
    /// Requests waiting, this one included.
    pub waiting: u32,
    /// Hosts serving a request.
    pub busy: u32,
    /// Hosts in the cluster (busy, idle or unhealthy).
    pub hosts: u32,
}

/// Receives `InstanceWanted` (the core's event queue, in the runtime).
pub type InstanceSink = Arc<dyn Fn(InstanceWanted) + Send + Sync>;

/// Where a cluster reports what the control layer must decide on.
#[derive(Clone, Default)]
pub struct ClusterSinks {
    pub outlier: Option<OutlierSink>,
    pub instance_wanted: Option<InstanceSink>,
}

/// Counts a request in `rq_waiting` while it lives.
struct Waiting<'a>(&'a ClusterStats);

impl<'a> Waiting<'a> {
    fn start(stats: &'a ClusterStats) -> Self {
        stats.rq_waiting.inc();
        Waiting(stats)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.rq_waiting.dec();
    }
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
        sinks: ClusterSinks,
    ) -> Result<Cluster, crate::tls::TlsError> {
        let tls = Self::build_tls(spec)?;
        let idle_timeout = Duration::from_millis(spec.idle_timeout_ms.unwrap_or(3_600_000));
        let (cx_open, cx_released) = match previous {
            Some(p) => (p.cx_open.clone(), p.cx_released.clone()),
            None => (Arc::new(AtomicU32::new(0)), Arc::new(Notify::new())),
        };
        let function = spec.function.map(|_| {
            previous
                .and_then(|p| p.function.clone())
                .unwrap_or_default()
        });
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
            function,
            outlier_sink: sinks.outlier,
            instance_sink: sinks.instance_wanted,
            tls: ArcSwapOption::new(tls),
        };
        let endpoints: Vec<(UpstreamAddress, u32)> = spec
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
    /// With `previous` (building a new version's cluster) hosts are taken from it; without,
    /// the change is live: removed hosts retire and waiting requests get the idle hosts.
    pub fn set_endpoints(&self, endpoints: &[(UpstreamAddress, u32)], previous: Option<&Cluster>) {
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
            hosts.push(reuse.unwrap_or_else(|| {
                Arc::new(Host::new(addr.clone(), self.protocol, self.idle_timeout))
            }));
            weights.push(*weight);
        }
        for h in old.hosts.iter() {
            if !hosts.iter().any(|n| Arc::ptr_eq(n, h)) {
                h.pool.close_idle();
                if previous.is_none() {
                    h.retired.store(true, Relaxed);
                }
            }
        }
        let bias = self.spec.active_request_bias.unwrap_or(1.0);
        self.hosts
            .store(Arc::new(HostSet::new(hosts, weights, self.spec.lb, bias)));
        if previous.is_none() {
            self.offer_idle_hosts();
        }
    }

    /// Function clusters: hand idle hosts to waiting requests (after the host set changed).
    pub fn offer_idle_hosts(&self) {
        if let Some(f) = &self.function {
            f.offer(&self.hosts.load());
        }
    }

    /// A new version replaced this cluster (`next`, None when the cluster is gone): hosts it
    /// does not keep retire. Called once the new version is committed.
    pub fn retire_replaced_hosts(&self, next: Option<&Cluster>) {
        let kept = next.map(|n| n.hosts.load_full());
        for h in self.hosts.load().hosts.iter() {
            if !kept
                .as_ref()
                .is_some_and(|k| k.hosts.iter().any(|n| Arc::ptr_eq(n, h)))
            {
                h.retired.store(true, Relaxed);
            }
        }
    }

    /// Function clusters: claim an idle instance for one attempt (avoiding the hosts `tried`
    /// by index when another is idle), or throttle (429, `rq_throttled`), or wait for one up
    /// to `instanceWaitMs` and give up with 503 (`rq_instance_wait_timeout`). While the
    /// request waits it counts in `rq_waiting`, and the control layer gets `InstanceWanted`.
    /// The index of the host in the current set comes back when the host was picked there.
    pub async fn claim_instance(
        &self,
        tried: &[usize],
    ) -> Result<(Claim, Option<usize>), ProxyError> {
        let (Some(state), Some(spec)) = (&self.function, &self.spec.function) else {
            return Err(ProxyError::internal(
                Kind::NoHealthyUpstream,
                "not a function cluster",
            ));
        };
        let (waiter, waiting, busy, hosts) =
            match state.claim(&self.hosts, spec.concurrency, |i| tried.contains(&i)) {
                Claimed::Host(c, i) => return Ok((c, Some(i))),
                Claimed::Throttled => {
                    self.stats.rq_throttled.inc();
                    return Err(ProxyError::internal(
                        Kind::Throttled,
                        "function concurrency limit reached",
                    ));
                }
                Claimed::Wait {
                    waiter,
                    waiting,
                    busy,
                    hosts,
                } => (waiter, waiting, busy, hosts),
            };
        if let Some(sink) = &self.instance_sink {
            sink(InstanceWanted {
                cluster: self.name.clone(),
                waiting,
                busy,
                hosts,
            });
        }
        let waited = {
            // NOTE: a guard, so a request whose client leaves mid-wait stops counting.
            let _waiting = Waiting::start(&self.stats);
            waiter
                .wait(Duration::from_millis(spec.instance_wait_ms))
                .await
        };
        match waited {
            Some(c) => Ok((c, None)),
            None => {
                self.stats.rq_instance_wait_timeout.inc();
                Err(ProxyError::internal(
                    Kind::NoInstance,
                    format!(
                        "no function instance became idle within {} ms",
                        spec.instance_wait_ms
                    ),
                ))
            }
        }
    }

    /// Set or clear one health flag of a host; returns false if the address is not a member.
    /// A host that becomes unavailable has its idle connections closed (Envoy).
    pub fn set_host_flag(&self, addr: &UpstreamAddress, flag: HealthFlag, on: bool) -> bool {
        let set = self.hosts.load();
        let Some(h) = set.hosts.iter().find(|h| h.addr == *addr) else {
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
            if let Some(f) = &self.function {
                f.offer(&set);
            }
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
                if self.function.is_some() {
                    hm.insert("busy".into(), h.claimed.load(Relaxed).into());
                }
                (h.name.to_string(), serde_json::Value::Object(hm))
            })
            .collect();
        if let (Some(f), Some(spec)) = (&self.function, &self.spec.function) {
            let busy = set.hosts.iter().filter(|h| h.claimed.load(Relaxed)).count();
            m.insert(
                "function".into(),
                serde_json::json!({
                    "concurrency": spec.concurrency,
                    "instance_wait_ms": spec.instance_wait_ms,
                    "busy_hosts": busy,
                    "idle_hosts": set.hosts.len() - busy,
                    "in_flight": f.busy(),
                }),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn function_cluster(
        endpoints: &[&str],
        concurrency: u32,
        wait_ms: u64,
    ) -> (Cluster, Arc<Mutex<Vec<InstanceWanted>>>) {
        let doc = serde_json::json!({
            "name": "fn", "protocol": "http1",
            "function": {"concurrency": concurrency, "instanceWaitMs": wait_ms},
            "endpoints": endpoints.iter().map(|a| serde_json::json!({"address": a})).collect::<Vec<_>>(),
        });
        let spec: config::Cluster = serde_json::from_value(doc).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sinks = ClusterSinks {
            outlier: None,
            instance_wanted: Some(Arc::new(move |w| sink_seen.lock().unwrap().push(w))),
        };
        let c = Cluster::build(&spec, Arc::new(ClusterStats::default()), None, sinks).unwrap();
        (c, seen)
    }

    #[tokio::test]
    async fn claim_instance_throttles_waits_with_an_event_and_gives_up() {
        let (c, seen) = function_cluster(&["unix:/tmp/a.sock"], 2, 20);
        let (held, i) = c.claim_instance(&[]).await.unwrap();
        assert_eq!(i, Some(0));
        assert_eq!(&*held.host().name, "unix:/tmp/a.sock");
        // The one host is busy: this request waits, the control layer hears of it, and no
        // instance comes within instanceWaitMs.
        let e = c.claim_instance(&[]).await.err().unwrap();
        assert_eq!((e.kind, e.status()), (Kind::NoInstance, 503));
        assert_eq!(c.stats.rq_instance_wait_timeout.get(), 1);
        assert_eq!(c.stats.rq_waiting.get(), 0);
        let wanted = seen.lock().unwrap().clone();
        assert_eq!(
            wanted,
            [InstanceWanted {
                cluster: "fn".into(),
                waiting: 1,
                busy: 1,
                hosts: 1
            }]
        );
        // A waiter plus the busy host reach concurrency 2: the next one is throttled; the
        // waiter gets the host once it is released.
        drop(held);
        let (c, _) = function_cluster(&["unix:/tmp/a.sock"], 2, 60_000);
        let c = Arc::new(c);
        let (held, _) = c.claim_instance(&[]).await.unwrap();
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.claim_instance(&[]).await.map(|(claim, _)| claim) }
        });
        while c.stats.rq_waiting.get() == 0 {
            tokio::task::yield_now().await;
        }
        let e = c.claim_instance(&[]).await.err().unwrap();
        assert_eq!((e.kind, e.status()), (Kind::Throttled, 429));
        assert_eq!(c.stats.rq_throttled.get(), 1);
        let host = held.host().clone();
        drop(held);
        let handed = waiting.await.unwrap().unwrap();
        assert!(Arc::ptr_eq(handed.host(), &host));
        assert_eq!(c.stats.rq_waiting.get(), 0);
    }

    #[tokio::test]
    async fn set_endpoints_hands_a_new_host_to_a_waiter_and_retires_removed_ones() {
        let (c, seen) = function_cluster(&[], 5, 60_000);
        let c = Arc::new(c);
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.claim_instance(&[]).await.map(|(claim, _)| claim) }
        });
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let addr: UpstreamAddress = "unix:/tmp/new.sock".parse().unwrap();
        c.set_endpoints(&[(addr.clone(), 1)], None);
        let claim = waiting.await.unwrap().unwrap();
        assert_eq!(claim.host().addr, addr);
        let host = claim.host().clone();
        c.set_endpoints(&[], None);
        assert!(host.retired.load(Relaxed));
        drop(claim);
        assert!(!host.claimed.load(Relaxed));
        assert_eq!(c.function.as_ref().unwrap().busy(), 0);
    }
}
