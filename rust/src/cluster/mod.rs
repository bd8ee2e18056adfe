//! Clusters and their hosts: weights, in-flight counts, health, connection pools, and the
//! cluster-wide circuit breakers (App Mesh `connectionPool`).
//!
//! A `Host` is kept across snapshot applies when its cluster, address and protocol are
//! unchanged, so its active count, pooled connections and health survive a config change.
//!
//! Costs: an apply reuses hosts through an address index (O(hosts)); one host added, removed,
//! reweighted or flagged costs O(1) in the host count (`members` copies one chunk of the host
//! list), plus the balancer: O(1) to rebuild for equal weights and RANDOM, O(hosts) for the
//! EDF schedule of unequal weights (Envoy also rebuilds its scheduler on each change).

mod function;
mod members;
mod metrics;
mod outlier;
mod render;
#[cfg(test)]
mod tests;

pub use function::{Claim, Claimed, ConcurrencyGroup, FunctionState, Waiter};
pub use members::{Member, Members};
pub use metrics::{host_families, HostFamilies};
pub use outlier::{Outcome, Outcomes, Sample};
pub use render::{
    clusters_text, host_statuses_json, hosts_json, HostNote, HostRow, HostRows, Notes,
    PackedHealth, PackedKeys, SparseOutliers,
};

use crate::balance::{Balancer, HostView};
use crate::config::{self, CircuitBreakers, UpstreamAddress, UpstreamProtocol};
use crate::error::{Kind, ProxyError};
use crate::pool::Pool;
use crate::stats::{ClusterStats, HostStats};
use crate::tls::ClientTls;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::{HashMap, HashSet};

/// The hasher of the per-cluster address index and host sets built on apply.
type FastHash = foldhash::fast::RandomState;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
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
    pub hosts: Members,
    pub balancer: Balancer,
    healthy: AtomicUsize,
    /// The hosts' places sorted by name (a name listed twice: in its order), made when first
    /// asked for (`by_name`).
    by_name: std::sync::OnceLock<Vec<u32>>,
}

impl HostSet {
    /// A host set of `hosts` with `weights` (same length), as an apply would build it.
    pub fn new(hosts: Vec<Arc<Host>>, weights: Vec<u32>, lb: config::LbPolicy, bias: f64) -> Self {
        let members = Members::from_vec(
            hosts
                .into_iter()
                .zip(weights)
                .map(|(host, weight)| Member { host, weight })
                .collect(),
        );
        let weighted = Membership::of(&members).weighted();
        let healthy = members.iter().filter(|m| m.host.healthy()).count();
        HostSet::build(members, weighted, healthy, lb, bias)
    }

    fn build(
        hosts: Members,
        weighted: bool,
        healthy: usize,
        lb: config::LbPolicy,
        bias: f64,
    ) -> Self {
        let balancer =
            Balancer::for_hosts(lb, hosts.len(), weighted, |i| hosts.get(i).weight, bias);
        HostSet {
            hosts,
            balancer,
            healthy: AtomicUsize::new(healthy),
            by_name: std::sync::OnceLock::new(),
        }
    }

    /// The hosts sorted by name, a name listed twice in its order (the admin API's and the
    /// Prometheus text's order).
    // NOTE: sorted once per host set (a set is immutable: a change publishes a new one), not
    // at every scrape or /clusters: ~1 ms of string comparisons with 10,000 hosts.
    pub fn by_name(&self) -> impl Iterator<Item = &Member> {
        let order = self.by_name.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.hosts.len() as u32).collect();
            order.sort_by(|&a, &b| {
                let name = |i: u32| &self.hosts.get(i as usize).host.name;
                name(a).cmp(name(b)).then(a.cmp(&b))
            });
            order
        });
        order.iter().map(|&i| self.hosts.get(i as usize))
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
        self.hosts.get(i).weight
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

/// What the writers of a cluster's membership keep beside the published host set, under one
/// lock: where each address is, and what the balancer must know without a scan.
#[derive(Clone, Default)]
struct Membership {
    /// Address → index in the published host set (the first, if an address repeats).
    // NOTE: foldhash, not SipHash: hashing 10,000 addresses twice per apply was a fifth of
    // an apply's time. Seeded per process, so hosts cannot be chosen to collide.
    index: HashMap<UpstreamAddress, usize, FastHash>,
    /// Some address appears more than once: deltas then rebuild from the list.
    repeated: bool,
    /// Hosts per non-zero weight: more than one key ⇒ unequal weights.
    weights: HashMap<u32, usize, FastHash>,
    /// A newer version replaced the cluster (`Cluster::retire`).
    retired: bool,
}

impl Membership {
    fn of(hosts: &Members) -> Membership {
        let mut m = Membership::default();
        m.index.reserve(hosts.len());
        // NOTE: weights are counted per run of equal weights (one map entry per run, not per
        // host): with 10,000 hosts of one weight that is one update instead of 10,000.
        let mut run = (0u32, 0usize);
        for (i, member) in hosts.iter().enumerate() {
            // The first occurrence wins, as a linear search would find it.
            match m.index.entry(member.host.addr.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => m.repeated = true,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
            if member.weight != run.0 {
                m.count_weights(run.0, run.1);
                run = (member.weight, 0);
            }
            run.1 += 1;
        }
        m.count_weights(run.0, run.1);
        m
    }

    /// `n` more hosts of `weight`.
    fn count_weights(&mut self, weight: u32, n: usize) {
        if weight != 0 && n != 0 {
            *self.weights.entry(weight).or_default() += n;
        }
    }

    fn count_weight(&mut self, weight: u32, add: bool) {
        if weight == 0 {
            return;
        }
        if add {
            self.count_weights(weight, 1);
        } else if let Some(n) = self.weights.get_mut(&weight) {
            *n -= 1;
            if *n == 0 {
                self.weights.remove(&weight);
            }
        }
    }

    fn weighted(&self) -> bool {
        self.weights.len() > 1
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
    /// The shared limit of the cluster's `function.concurrencyGroup`, set by `Compiled::build`
    /// (the group outlives any one cluster of it).
    pub function_group: Option<Arc<ConcurrencyGroup>>,
    outlier_sink: Option<OutlierSink>,
    instance_sink: Option<InstanceSink>,
    /// Held by whoever changes `hosts` (endpoints, health flags); requests never take it.
    membership: Mutex<Membership>,
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
        let function = spec.function.as_ref().map(|_| {
            previous
                .and_then(|p| p.function.clone())
                .unwrap_or_default()
        });
        let cluster = Cluster {
            name: spec.name.as_str().into(),
            spec: spec.clone(),
            protocol: spec.protocol,
            hosts: ArcSwap::from_pointee(HostSet::build(
                Members::default(),
                false,
                0,
                spec.lb,
                1.0,
            )),
            stats,
            breakers: spec.circuit_breakers.clone(),
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
            idle_timeout,
            cx_open,
            cx_released,
            retries_active: AtomicU32::new(0),
            function,
            function_group: None,
            outlier_sink: sinks.outlier,
            instance_sink: sinks.instance_wanted,
            tls: ArcSwapOption::new(tls),
            membership: Mutex::default(),
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

    fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bias(&self) -> f64 {
        self.spec.active_request_bias.unwrap_or(1.0)
    }

    /// Replace the membership (static config or discovery); hosts that stay keep their state.
    /// O(hosts): each address is looked up in an index of the old membership.
    /// With `previous` (building a new version's cluster) hosts are taken from it; without,
    /// the change is live: removed hosts retire and waiting requests get the idle hosts.
    pub fn set_endpoints(&self, endpoints: &[(UpstreamAddress, u32)], previous: Option<&Cluster>) {
        let mut membership = self.membership();
        let previous_membership = previous.map(|p| p.membership());
        let (old, old_index, old_repeated) = match (previous, &previous_membership) {
            (Some(p), Some(m)) => (p.hosts.load_full(), &m.index, m.repeated),
            _ => (
                self.hosts.load_full(),
                &membership.index,
                membership.repeated,
            ),
        };
        let same_protocol = previous.is_none_or(|p| p.protocol == self.protocol);
        // NOTE: an apply mostly gives each cluster the hosts it had, in the same order with
        // the same weights. Then the host set's chunks and the address index are taken as
        // they are (the index is cloned, not rebuilt: no hashing) and no host leaves, so
        // nothing is looked up, counted or retired per host beyond one comparison. (Not when an
        // address repeats: the general path gives its repeats the first one's host.)
        let unchanged = same_protocol
            && !old_repeated
            && old.hosts.len() == endpoints.len()
            && old
                .hosts
                .iter()
                .zip(endpoints)
                .all(|(m, (addr, weight))| m.weight == *weight && m.host.addr == *addr);
        if unchanged {
            if let Some(m) = &previous_membership {
                *membership = (*m).clone();
            }
            drop(previous_membership);
            membership.retired = false; // as `Membership::of` leaves it
            self.publish(old.hosts.clone(), membership.weighted(), previous.is_none());
            return;
        }
        let members: Vec<Member> = endpoints
            .iter()
            .map(|(addr, weight)| {
                let reused = old_index
                    .get(addr)
                    .filter(|_| same_protocol)
                    .map(|&i| old.hosts[i].clone());
                let host = reused.unwrap_or_else(|| {
                    Arc::new(Host::new(addr.clone(), self.protocol, self.idle_timeout))
                });
                Member {
                    host,
                    weight: *weight,
                }
            })
            .collect();
        let members = Members::from_vec(members);
        let kept: HashSet<*const Host, FastHash> =
            members.iter().map(|m| Arc::as_ptr(&m.host)).collect();
        for m in old.hosts.iter() {
            if !kept.contains(&Arc::as_ptr(&m.host)) {
                m.host.pool.close_idle();
                if previous.is_none() {
                    m.host.retired.store(true, Relaxed);
                }
            }
        }
        drop(previous_membership);
        *membership = Membership::of(&members);
        self.publish(members, membership.weighted(), previous.is_none());
    }

    /// Store `members` as the host set (`weighted`: their weights differ); a live change (not
    /// the build of a new version's cluster) then offers the idle hosts to waiting requests,
    /// after the store (see `FunctionState::claim`).
    fn publish(&self, members: Members, weighted: bool, live: bool) {
        let healthy = members.iter().filter(|m| m.host.healthy()).count();
        self.hosts.store(Arc::new(HostSet::build(
            members,
            weighted,
            healthy,
            self.spec.lb,
            self.bias(),
        )));
        if live {
            self.offer_idle_hosts();
        }
    }

    /// Change some hosts and keep the rest: remove `remove` (an address that is not a member
    /// is ignored), then add each of `upsert` or, if it is a member, set its weight. Costs
    /// O(changes), not O(hosts) (see the module docs); hosts that stay keep their state, a
    /// removed host has its idle connections closed and retires; waiting requests of a
    /// function cluster get the idle hosts.
    pub fn update_endpoints(&self, upsert: &[(UpstreamAddress, u32)], remove: &[UpstreamAddress]) {
        let mut membership = self.membership();
        let set = self.hosts.load_full();
        if membership.repeated {
            // Rare (a config that lists an address twice): the whole-list path keeps the
            // index right.
            drop(membership);
            let gone: HashSet<&UpstreamAddress> = remove.iter().collect();
            let mut list: Vec<(UpstreamAddress, u32)> = set
                .hosts
                .iter()
                .filter(|m| !gone.contains(&m.host.addr))
                .map(|m| (m.host.addr.clone(), m.weight))
                .collect();
            for (addr, weight) in upsert {
                match list.iter_mut().find(|(a, _)| a == addr) {
                    Some(entry) => entry.1 = *weight,
                    None => list.push((addr.clone(), *weight)),
                }
            }
            return self.set_endpoints(&list, None);
        }
        let mut hosts = set.hosts.clone();
        let mut healthy = set.healthy.load(Relaxed);
        for addr in remove {
            let Some(i) = membership.index.remove(addr) else {
                continue;
            };
            let gone = hosts.get(i).clone();
            let last = hosts.len() - 1;
            if i != last {
                membership.index.insert(hosts[last].addr.clone(), i);
            }
            hosts = hosts.with_swap_removed(i);
            membership.count_weight(gone.weight, false);
            if gone.host.healthy() {
                healthy -= 1;
            }
            gone.host.pool.close_idle();
            gone.host.retired.store(true, Relaxed);
        }
        for (addr, weight) in upsert {
            let weight = *weight;
            match membership.index.get(addr) {
                Some(&i) => {
                    let member = hosts.get(i);
                    if member.weight != weight {
                        membership.count_weight(member.weight, false);
                        membership.count_weight(weight, true);
                        let host = member.host.clone();
                        hosts = hosts.with_set(i, Member { host, weight });
                    }
                }
                None => {
                    let host = Arc::new(Host::new(addr.clone(), self.protocol, self.idle_timeout));
                    membership.index.insert(addr.clone(), hosts.len());
                    membership.count_weight(weight, true);
                    healthy += 1;
                    hosts = hosts.with_pushed(Member { host, weight });
                }
            }
        }
        let weighted = membership.weighted();
        self.hosts.store(Arc::new(HostSet::build(
            hosts,
            weighted,
            healthy,
            self.spec.lb,
            self.bias(),
        )));
        // NOTE: after the store (see `FunctionState::claim`).
        self.offer_idle_hosts();
    }

    /// Function clusters: hand idle hosts to waiting requests (after the host set changed).
    pub fn offer_idle_hosts(&self) {
        if let Some(f) = &self.function {
            f.offer(&self.hosts.load());
        }
    }

    /// A new version replaced this cluster (`next`, None when the cluster is gone): hosts it
    /// does not keep retire. Called once the new version is committed. O(hosts).
    pub fn retire_replaced_hosts(&self, next: Option<&Cluster>) {
        let kept: HashSet<*const Host, FastHash> = match next {
            Some(n) => n
                .hosts
                .load()
                .hosts
                .iter()
                .map(|m| Arc::as_ptr(&m.host))
                .collect(),
            None => HashSet::default(),
        };
        for m in self.hosts.load().hosts.iter() {
            if !kept.contains(&Arc::as_ptr(&m.host)) {
                m.host.retired.store(true, Relaxed);
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
        let (waiter, waiting, busy, hosts) = match state.claim(
            &self.hosts,
            spec.concurrency,
            self.function_group.as_ref(),
            |i| tried.contains(&i),
        ) {
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

    /// Set or clear one health flag of a host; Some(false) if the address is not a member,
    /// None if an apply retired this cluster (ask the version that replaced it). A host that
    /// becomes unavailable has its idle connections closed (Envoy); one that becomes
    /// available is offered to waiting requests of a function cluster.
    pub fn set_host_flag(
        &self,
        addr: &UpstreamAddress,
        flag: HealthFlag,
        on: bool,
    ) -> Option<bool> {
        let membership = self.membership();
        if membership.retired {
            return None;
        }
        let Some(&i) = membership.index.get(addr) else {
            return Some(false);
        };
        let set = self.hosts.load();
        let h = &set.hosts[i];
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
        Some(true)
    }

    /// A newer version replaced this cluster: flag setters go there from now on.
    pub fn retire(&self) {
        self.membership().retired = true;
    }

    /// Count the healthy hosts again (after the previous version was retired: flags set on it
    /// while this one was built are on shared hosts, but not in this count).
    pub fn recount_healthy(&self) {
        let _membership = self.membership();
        let set = self.hosts.load();
        let healthy = set.hosts.iter().filter(|m| m.host.healthy()).count();
        set.healthy.store(healthy, Relaxed);
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

    /// Interval totals of every host that had traffic, reset for the next interval (a host
    /// left out had none: the outlier policy reads the two alike).
    pub fn take_samples(&self) -> Vec<(Arc<str>, Sample)> {
        self.hosts
            .load()
            .hosts
            .iter()
            .filter(|m| !m.host.outcomes.is_empty())
            .map(|m| (m.host.name.clone(), m.host.outcomes.take()))
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
        for h in set.hosts.iter().map(|m| &m.host) {
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

    /// One host's stats as `snapshot` lists them under "hosts".
    pub fn host_stats(&self, m: &Member) -> serde_json::Map<String, serde_json::Value> {
        HostRow::of(self, m).map()
    }

    /// The cluster's stats as JSON; with `Hosts::Stats`, every host's under "hosts", with
    /// `Hosts::Membership` only how many hosts there are and how many are healthy, under
    /// "membership"; with `Hosts::Null`, "hosts" is null (the caller writes them: `render`).
    pub fn snapshot(&self, hosts_as: Hosts) -> serde_json::Value {
        let mut m = self.stats.snapshot();
        m.insert(
            "retries_active".into(),
            self.retries_active.load(Relaxed).into(),
        );
        let set = self.hosts.load();
        if hosts_as == Hosts::Null {
            m.insert("hosts".into(), serde_json::Value::Null);
        } else if hosts_as == Hosts::Stats {
            let hosts: serde_json::Map<String, serde_json::Value> = set
                .hosts
                .iter()
                .map(|m| {
                    (
                        m.host.name.to_string(),
                        serde_json::Value::Object(self.host_stats(m)),
                    )
                })
                .collect();
            m.insert("hosts".into(), serde_json::Value::Object(hosts));
        } else {
            let healthy = set.hosts.iter().filter(|m| m.host.healthy()).count();
            m.insert(
                "membership".into(),
                serde_json::json!({"total": set.hosts.len(), "healthy": healthy}),
            );
        }
        if let (Some(f), Some(spec)) = (&self.function, &self.spec.function) {
            let busy = set
                .hosts
                .iter()
                .filter(|m| m.host.claimed.load(Relaxed))
                .count();
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

/// What `Cluster::snapshot` puts where the hosts go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hosts {
    Stats,
    Membership,
    Null,
}
