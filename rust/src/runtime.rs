//! The tokio runtime that carries traffic, and the operations the control layer calls:
//! apply a snapshot, change endpoints or host health, read stats, drain and stop.
//!
//! No method waits on the network or on traffic: draining runs on the runtime and reports
//! completion as an event. Not every method is short, though: `apply` parses and compiles a
//! snapshot and binds sockets, and `apply` and `reload_tls` read certificate and key files, so
//! `py/` releases the GIL around them (not around a TLS reload with no file to read:
//! `reload_tls_at_once`); `join` blocks until the runtime thread has exited (call it after
//! `shutdown`). Reads (`version`, `stats`, `take_outlier_samples`, `tls_info`) copy
//! from the published snapshot without waiting for an apply in progress (`listeners` waits
//! only while one binds and starts its sockets); `set_host_flag` acts on the published version
//! without waiting either (a flag set while an apply builds carries over to the version it
//! publishes); nor do `set_endpoints`, `update_endpoints` and `reload_tls`: during an apply an
//! endpoint change is queued (`Pending`) and made, in order, on the version the apply leaves
//! running before anyone else can change it, and a TLS reload swaps the material of the
//! running version at once and is made again on the apply's version.

use crate::accesslog::Sinks;
use crate::cluster::{self, ClusterSinks, HealthFlag, InstanceSink, OutlierSink};
use crate::config::{ListenerProtocol, Snapshot, SnapshotError, UpstreamAddress};
use crate::http::{Compiled, ListenerSlot, ListenerState};
use crate::listener::{self, Connections, RunningListener};
use crate::notify::{Event, EventQueue};
use crate::stats::Registry;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub struct Runtime {
    handle: tokio::runtime::Handle,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Tells the accept loops and connections to stop (shutdown).
    stop: watch::Sender<bool>,
    /// Tells the runtime thread to exit (after draining).
    exit: watch::Sender<bool>,
    current: Mutex<Option<Arc<Compiled>>>,
    /// The same snapshot, readable without the apply lock: by the idle-connection sweeper and
    /// by the calls that only read (version, stats, outlier samples, certificates), so they
    /// never wait for an apply in progress.
    published: Arc<ArcSwapOption<Compiled>>,
    /// Wakes the sweeper after an apply, so a shorter idle timeout takes effect at once.
    sweeper: Arc<tokio::sync::Notify>,
    listeners: Mutex<HashMap<String, RunningListener>>,
    registry: Registry,
    /// Access-log files and their writer threads, shared by listeners logging to one path.
    log_sinks: Sinks,
    /// The span exporter and the tracing counters, kept across applies.
    exporters: crate::trace::Exporters,
    events: Arc<EventQueue>,
    conns: Arc<Connections>,
    /// What callers asked for while an apply was in progress (taken before `current`).
    pending: Mutex<Pending>,
}

/// Endpoint changes and TLS reloads asked for while an apply is in progress. They do not wait
/// for it (the Trio thread calls them): the apply makes them on the version it leaves running,
/// in the order they came, under the apply lock, so a change made during an apply is neither
/// lost nor undone by it, exactly as if it had waited.
// NOTE: the lock order is `pending`, then `current`. An apply counts itself in `applying`
// (under `pending`) before it takes `current`, and counts itself out (under `pending`, while
// still holding `current`) after it has made the queued changes; so a caller that sees
// `applying == 0` under `pending` finds `current` free or held by another caller only briefly.
#[derive(Default)]
struct Pending {
    /// Applies counted in and not yet out.
    applying: usize,
    changes: Vec<EndpointChange>,
    reload_tls: bool,
}

enum EndpointChange {
    Whole {
        cluster: String,
        endpoints: Vec<(UpstreamAddress, u32)>,
    },
    Delta {
        cluster: String,
        upsert: Vec<(UpstreamAddress, u32)>,
        remove: Vec<UpstreamAddress>,
    },
}

/// Counts an apply out of `Pending::applying` if it unwinds before doing so itself.
struct Applying<'a> {
    pending: &'a Mutex<Pending>,
    counted_out: bool,
}

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        if !self.counted_out {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.applying -= 1;
        }
    }
}

impl Runtime {
    /// Start the runtime: `workers` threads carry traffic (1 = a current-thread runtime).
    pub fn new(workers: usize) -> std::io::Result<Runtime> {
        let rt = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .on_thread_park(crate::http::end_burst)
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("meshplane-worker")
                .on_thread_park(crate::http::end_burst)
                .enable_all()
                .build()?
        };
        let handle = rt.handle().clone();
        let published: Arc<ArcSwapOption<Compiled>> = Arc::new(ArcSwapOption::empty());
        let sweeper = Arc::new(tokio::sync::Notify::new());
        handle.spawn(sweep_idle_connections(published.clone(), sweeper.clone()));
        let (exit, mut exit_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("meshplane-main".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = exit_rx.wait_for(|v| *v).await;
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Runtime {
            handle,
            thread: Mutex::new(Some(thread)),
            stop: watch::channel(false).0,
            exit,
            current: Mutex::new(None),
            published,
            sweeper,
            listeners: Mutex::new(HashMap::new()),
            registry: Registry::default(),
            log_sinks: Sinks::default(),
            exporters: crate::trace::Exporters::default(),
            events: Arc::new(EventQueue::new()?),
            conns: Arc::new(Connections::default()),
            pending: Mutex::new(Pending::default()),
        })
    }

    pub fn events(&self) -> &EventQueue {
        &self.events
    }

    pub fn version(&self) -> Option<String> {
        self.published.load().as_ref().map(|c| c.version.clone())
    }

    /// Parse, build and swap in a snapshot, as one transaction: every listener of the new
    /// version is bound first (a failure, such as an address in use, returns the error with
    /// nothing changed and the running version serving); then new listeners start, unchanged
    /// ones take the new state, a listener whose address is unchanged but whose protocol or
    /// name changed keeps its socket, removed ones drain, and the version is published.
    pub fn apply(&self, bytes: &[u8]) -> Result<String, SnapshotError> {
        let snap = Snapshot::parse(bytes)?;
        self.pending().applying += 1;
        let mut applying = Applying {
            pending: &self.pending,
            counted_out: false,
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.apply_locked(snap, &mut current);
        if result.is_err() {
            // Building registered stats and opened log files for a snapshot that never went
            // live: forget them again.
            match current.as_deref() {
                Some(c) => self.forget_unused(c),
                None => {
                    self.registry.retain(&|_| false, &|_| false, &|_| false);
                    self.log_sinks.retain(&|_| false);
                }
            }
        }
        self.catch_up(&current);
        applying.counted_out = true;
        result
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The end of an apply (`current` still locked): make what was asked for meanwhile on the
    /// version now running (a change to a cluster it lacks has nowhere to go and is dropped;
    /// a TLS reload that fails leaves the material this version read when it was built), and
    /// count the apply out.
    fn catch_up(&self, current: &Option<Arc<Compiled>>) {
        let mut p = self.pending();
        for change in p.changes.drain(..) {
            match change {
                EndpointChange::Whole { cluster, endpoints } => {
                    if let Ok((c, _)) = Self::cluster_of(current, &cluster) {
                        c.set_endpoints(&endpoints, None);
                    }
                }
                EndpointChange::Delta {
                    cluster,
                    upsert,
                    remove,
                } => {
                    if let Ok((c, _)) = Self::cluster_of(current, &cluster) {
                        c.update_endpoints(&upsert, &remove);
                    }
                }
            }
        }
        if std::mem::take(&mut p.reload_tls) {
            if let Some(c) = current {
                let _ = Self::reload_tls_of(c);
            }
        }
        p.applying -= 1;
    }

    /// Drop stats and access-log files that `compiled` (the running snapshot) does not use.
    fn forget_unused(&self, compiled: &Compiled) {
        let routes: std::collections::HashSet<&str> = compiled.route_names().collect();
        self.registry.retain(
            &|n| compiled.listeners.contains_key(n),
            &|n| routes.contains(n),
            &|n| compiled.cluster_index.contains_key(n),
        );
        let paths: std::collections::HashSet<&str> = compiled
            .snapshot
            .listeners
            .iter()
            .filter_map(|l| l.access_log.as_ref().map(|a| a.path.as_str()))
            .collect();
        self.log_sinks.retain(&|p| paths.contains(p));
    }

    fn apply_locked(
        &self,
        snap: Snapshot,
        current: &mut Option<Arc<Compiled>>,
    ) -> Result<String, SnapshotError> {
        let events = self.events.clone();
        let outlier: OutlierSink =
            Arc::new(move |cluster: &str, host: &str, kind: &'static str| {
                events.push(Event::Outlier {
                    cluster: cluster.to_string(),
                    host: host.to_string(),
                    detector: kind,
                });
            });
        let events = self.events.clone();
        let instance_wanted: InstanceSink = Arc::new(move |w| {
            events.push(Event::InstanceWanted {
                cluster: w.cluster.to_string(),
                waiting: w.waiting,
                busy: w.busy,
                hosts: w.hosts,
            });
        });
        let sinks = ClusterSinks {
            outlier: Some(outlier),
            instance_wanted: Some(instance_wanted),
        };
        let tracing = match &snap.tracing {
            Some(spec) => Some(
                self.exporters
                    .tracing_for(spec)
                    .map_err(|e| SnapshotError {
                        path: "tracing".into(),
                        message: format!("cannot start the span exporter: {e}"),
                    })?,
            ),
            None => None,
        };
        let compiled = Arc::new(Compiled::build(
            snap,
            &self.registry,
            current.as_deref(),
            &sinks,
            &self.log_sinks,
            tracing,
        )?);
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let _enter = self.handle.enter();
        // Open every socket the new version needs before anything changes: an error returns
        // here, dropping (closing) what was opened, and the running version is untouched.
        let plans = plan_listeners(&compiled.snapshot.listeners, &listeners)?;

        // Commit: nothing below can fail. Every listener of the new version starts (or takes
        // its new state), listeners it lacks stop, then the new version is published.
        let state_for = |name: &str| {
            Arc::new(ListenerState {
                compiled: compiled.clone(),
                config: compiled.listeners[name].clone(),
            })
        };
        let slot_for = |name: &str| {
            Arc::new(ListenerSlot {
                name: name.into(),
                state: ArcSwap::new(state_for(name)),
            })
        };
        let mut old = std::mem::take(&mut *listeners);
        for (l, plan) in compiled.snapshot.listeners.iter().zip(plans) {
            let running = match plan {
                Plan::Keep => {
                    let r = old.remove(&l.name).expect("planned from the running set");
                    r.slot.state.store(state_for(&l.name));
                    r
                }
                Plan::Retarget(from) => {
                    let mut r = old.remove(&from).expect("planned from the running set");
                    r.retarget(l.address.clone(), l.protocol, slot_for(&l.name));
                    r
                }
                Plan::Open(opened) => listener::start(
                    opened,
                    l.address.clone(),
                    l.protocol,
                    slot_for(&l.name),
                    self.conns.clone(),
                    self.stop.subscribe(),
                ),
            };
            listeners.insert(l.name.clone(), running);
        }
        for r in old.values() {
            r.stop();
        }
        self.forget_unused(&compiled);
        if compiled.tracing.is_none() {
            self.exporters.stop();
        }
        // Hosts the new version dropped retire; waiting function requests get the new
        // version's idle hosts.
        if let Some(old) = current.as_deref() {
            for c in old.clusters.iter() {
                let next = compiled.cluster_index.get(&*c.name);
                c.retire_replaced_hosts(next.map(|&i| &*compiled.clusters[i]));
            }
        }
        for c in compiled.clusters.iter() {
            c.offer_idle_hosts();
        }
        let version = compiled.version.clone();
        self.published.store(Some(compiled.clone()));
        // Host flags are set without the apply lock, on the published version: a flag set on
        // the previous one while this one was built is on the same `Host` (kept by address),
        // but not in the healthy count this one took. Retire the previous clusters (a flag
        // setter that finds one retired retries on this version), then count again.
        for old in current.iter().flat_map(|c| c.clusters.iter()) {
            old.retire();
        }
        for new in &compiled.clusters {
            new.recount_healthy();
        }
        self.sweeper.notify_one();
        *current = Some(compiled);
        Ok(version)
    }

    pub fn listeners(&self) -> Vec<(String, SocketAddr, ListenerProtocol)> {
        let l = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = l
            .iter()
            .map(|(n, r)| (n.clone(), r.bound, r.protocol))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Replace one cluster's hosts; returns the version whose cluster changed, or None if an
    /// apply is in progress: then the change is queued and made on the version the apply
    /// leaves running, before anything else changes it (`Pending`).
    pub fn set_endpoints(
        &self,
        cluster: &str,
        endpoints: &[(String, u32)],
    ) -> Result<Option<String>, String> {
        let mut parsed = Vec::with_capacity(endpoints.len());
        for (a, w) in endpoints {
            parsed.push((
                a.parse::<UpstreamAddress>()
                    .map_err(|m| format!("bad endpoint address {m}"))?,
                *w,
            ));
        }
        let mut pending = self.pending();
        if pending.applying > 0 {
            pending.changes.push(EndpointChange::Whole {
                cluster: cluster.to_string(),
                endpoints: parsed,
            });
            return Ok(None);
        }
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        drop(pending);
        let (c, version) = Self::cluster_of(&cur, cluster)?;
        c.set_endpoints(&parsed, None);
        Ok(Some(version))
    }

    fn cluster_of<'a>(
        cur: &'a Option<Arc<Compiled>>,
        name: &str,
    ) -> Result<(&'a crate::cluster::Cluster, String), String> {
        let c = cur.as_ref().ok_or("no snapshot applied")?;
        let i = c
            .cluster_index
            .get(name)
            .ok_or_else(|| format!("unknown cluster {name:?}"))?;
        Ok((&c.clusters[*i], c.version.clone()))
    }

    /// Add or reweight (`upsert`) and remove hosts of one cluster, keeping the others:
    /// O(changes), not O(hosts) (`Cluster::update_endpoints`). Nothing changes if an address
    /// is malformed.
    ///
    /// With `base`, the change is made only if `base` is the running version (checked under
    /// the apply lock): a delta computed against the hosts of an older version is refused
    /// (`Ok(false)`), since an apply since has set the hosts its snapshot lists; so is one
    /// given while an apply is in progress (it is about to set them). Without `base`, a change
    /// given during an apply is queued and made after it, as `set_endpoints` does.
    pub fn update_endpoints(
        &self,
        cluster: &str,
        upsert: &[(String, u32)],
        remove: &[String],
        base: Option<&str>,
    ) -> Result<bool, String> {
        let parse = |a: &String| {
            a.parse::<UpstreamAddress>()
                .map_err(|m| format!("bad endpoint address {m}"))
        };
        let upsert = upsert
            .iter()
            .map(|(a, w)| Ok((parse(a)?, *w)))
            .collect::<Result<Vec<_>, String>>()?;
        let remove = remove.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        let mut pending = self.pending();
        if pending.applying > 0 {
            if base.is_some() {
                return Ok(false);
            }
            pending.changes.push(EndpointChange::Delta {
                cluster: cluster.to_string(),
                upsert,
                remove,
            });
            return Ok(true);
        }
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        drop(pending);
        let (c, version) = Self::cluster_of(&cur, cluster)?;
        if base.is_some_and(|b| b != version) {
            return Ok(false);
        }
        c.update_endpoints(&upsert, &remove);
        Ok(true)
    }

    /// Set one health flag of a host (active health checking or outlier ejection).
    pub fn set_host_flag(
        &self,
        cluster: &str,
        address: &str,
        flag: HealthFlag,
        on: bool,
    ) -> Result<(), String> {
        let addr: UpstreamAddress = address.parse().map_err(|m| format!("bad address {m}"))?;
        // NOTE: no apply lock: health verdicts come from the Trio thread, which must not wait
        // for an apply (tens of milliseconds with 10,000 hosts). A cluster an apply retired
        // while we looked it up is looked up again, on the version that replaced it.
        let found = loop {
            let published = self.published.load_full().ok_or("no snapshot applied")?;
            let i = *published
                .cluster_index
                .get(cluster)
                .ok_or_else(|| format!("unknown cluster {cluster:?}"))?;
            if let Some(found) = published.clusters[i].set_host_flag(&addr, flag, on) {
                break found;
            }
        };
        if found {
            Ok(())
        } else {
            Err(format!("{address} is not a host of cluster {cluster:?}"))
        }
    }

    /// Per-host outcome totals since the last call, for every cluster with outlier detection.
    pub fn take_outlier_samples(&self) -> serde_json::Value {
        let cur = self.published.load_full();
        let mut out = serde_json::Map::new();
        for c in cur.iter().flat_map(|c| c.clusters.iter()) {
            if c.spec.outlier_detection.is_none() {
                continue;
            }
            let hosts: serde_json::Map<String, serde_json::Value> = c
                .take_samples()
                .into_iter()
                .map(|(h, s)| {
                    let v = serde_json::json!([s.success, s.total, s.local_success, s.local_total]);
                    (h.to_string(), v)
                })
                .collect();
            out.insert(c.name.to_string(), hosts.into());
        }
        out.into()
    }

    /// Re-read every certificate, key and trust file of the running snapshot and swap the
    /// new TLS material in: new handshakes use it, established connections keep theirs. If
    /// any file is bad, nothing changes and the error says which. During an apply this is the
    /// version being replaced; the apply's own version reads the files again when it has
    /// been published (`Pending`), so no change it missed while building stays missed.
    pub fn reload_tls(&self) -> Result<usize, SnapshotError> {
        {
            let mut pending = self.pending();
            if pending.applying > 0 {
                pending.reload_tls = true;
            }
        }
        match self.published.load_full() {
            Some(c) => Self::reload_tls_of(&c),
            None => Ok(0),
        }
    }

    /// `reload_tls` when it is sure to read no file and wait for no one: the running version
    /// has no TLS material (so it reloads nothing and returns 0) and nobody holds the
    /// pending-changes lock. None otherwise: then `reload_tls`, which may do both, is the call
    /// (`py/` makes it with the GIL released, this one with the GIL held).
    pub fn reload_tls_at_once(&self) -> Option<usize> {
        let mut pending = match self.pending.try_lock() {
            Ok(p) => p,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if self.published.load().as_deref().is_some_and(Self::has_tls) {
            return None;
        }
        // As `reload_tls`: an apply in progress reads its own version's files again once it
        // is published (this one has none to read).
        if pending.applying > 0 {
            pending.reload_tls = true;
        }
        Some(0)
    }

    /// Whether `reload_tls_of(c)` has any file to read.
    fn has_tls(c: &Compiled) -> bool {
        c.snapshot.listeners.iter().any(|l| l.tls.is_some())
            || c.clusters.iter().any(|cl| cl.spec.tls.is_some())
    }

    fn reload_tls_of(c: &Compiled) -> Result<usize, SnapshotError> {
        let mut listeners = Vec::new();
        for (i, spec) in c.snapshot.listeners.iter().enumerate() {
            if spec.tls.is_some() {
                listeners.push((
                    &c.listeners[&spec.name],
                    crate::http::listener_tls(i, spec)?,
                ));
            }
        }
        let mut clusters = Vec::new();
        for (i, cl) in c.clusters.iter().enumerate() {
            if cl.spec.tls.is_some() {
                let tls =
                    crate::cluster::Cluster::build_tls(&cl.spec).map_err(|e| SnapshotError {
                        path: format!("clusters[{i}].tls"),
                        message: e.to_string(),
                    })?;
                clusters.push((cl, tls));
            }
        }
        let n = listeners.len() + clusters.len();
        for (l, tls) in listeners {
            l.tls.store(tls);
        }
        for (cl, tls) in clusters {
            cl.tls.store(tls);
            // New connections use the new material; idle ones made with the old go away.
            for m in cl.hosts.load().hosts.iter() {
                m.host.pool.close_idle();
            }
        }
        Ok(n)
    }

    /// Certificates in use: per listener and per cluster, with SANs and expiry.
    pub fn tls_info(&self) -> serde_json::Value {
        let cur = self.published.load_full();
        let mut listeners = serde_json::Map::new();
        let mut clusters = serde_json::Map::new();
        if let Some(c) = cur {
            for (name, l) in &c.listeners {
                if let Some(t) = l.tls.load_full() {
                    let mode = serde_json::to_value(t.mode).unwrap_or_default();
                    listeners.insert(
                        name.clone(),
                        serde_json::json!({"mode": mode, "certificates": t.certs}),
                    );
                }
            }
            for cl in &c.clusters {
                if let Some(t) = cl.tls.load_full() {
                    clusters.insert(
                        cl.name.to_string(),
                        serde_json::json!({"certificates": t.certs}),
                    );
                }
            }
        }
        serde_json::json!({"listeners": listeners, "clusters": clusters})
    }

    /// Every counter, gauge and histogram; per host only with `hosts` (else each cluster's
    /// host count and healthy count, and `host_metrics` writes the hosts' Prometheus text).
    pub fn stats(&self, hosts: bool) -> serde_json::Value {
        let hosts = if hosts {
            cluster::Hosts::Stats
        } else {
            cluster::Hosts::Membership
        };
        self.stats_of(&self.published.load_full(), hosts)
    }

    /// `stats` with each cluster's "hosts" written as `/stats?format=json` text (for a "hosts"
    /// key at nesting `depth`), by cluster name; the document has null in their place. Both
    /// from one published version.
    pub fn stats_hosts_json(
        &self,
        notes: &cluster::Notes,
        depth: usize,
    ) -> (serde_json::Value, Vec<(String, String)>) {
        let cur = self.published.load_full();
        let doc = self.stats_of(&cur, cluster::Hosts::Null);
        let hosts = cur
            .iter()
            .flat_map(|c| c.clusters.iter())
            .map(|cl| (cl.name.to_string(), cluster::hosts_json(cl, notes, depth)))
            .collect();
        (doc, hosts)
    }

    /// `stats` with each cluster's hosts apart (`cluster::HostRows`, each with its part of the
    /// control layer's view in `notes` and `packed`), by cluster name; the document has null in their
    /// place. Both from one published version.
    pub fn stats_host_rows(
        &self,
        mut notes: cluster::Notes,
        packed: Vec<(String, cluster::PackedHealth)>,
    ) -> (serde_json::Value, Vec<(String, cluster::HostRows)>) {
        let mut packed: HashMap<String, cluster::PackedHealth> = packed.into_iter().collect();
        let cur = self.published.load_full();
        let doc = self.stats_of(&cur, cluster::Hosts::Null);
        let hosts = cur
            .iter()
            .flat_map(|c| c.clusters.iter())
            .map(|cl| {
                let health = packed.remove(&*cl.name);
                let rows = cluster::HostRows::of(cl, &mut notes, health);
                (cl.name.to_string(), rows)
            })
            .collect();
        (doc, hosts)
    }

    /// Every host's `/clusters` text lines (`cluster::clusters_text`).
    pub fn clusters_text(&self, notes: &cluster::Notes) -> String {
        match self.published.load_full() {
            Some(c) => cluster::clusters_text(&c.clusters, notes),
            None => String::new(),
        }
    }

    /// Each cluster's `/clusters?format=json` `host_statuses` (for the key at nesting
    /// `depth`), clusters sorted by name.
    pub fn host_statuses_json(
        &self,
        notes: &cluster::Notes,
        depth: usize,
    ) -> Vec<(String, String)> {
        let cur = self.published.load_full();
        let mut out: Vec<(String, String)> = cur
            .iter()
            .flat_map(|c| c.clusters.iter())
            .map(|cl| {
                let text = cluster::host_statuses_json(cl, notes, depth);
                (cl.name.to_string(), text)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn stats_of(&self, cur: &Option<Arc<Compiled>>, hosts: cluster::Hosts) -> serde_json::Value {
        let clusters: serde_json::Map<String, serde_json::Value> = cur
            .as_ref()
            .map(|c| {
                c.clusters
                    .iter()
                    .map(|cl| (cl.name.to_string(), cl.snapshot(hosts)))
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "version": cur.as_ref().map(|c| c.version.clone()),
            "listeners": self.registry.listeners_snapshot(),
            "routes": self.registry.routes_snapshot(),
            "clusters": clusters,
            "downstream_cx_open": self.conns.open(),
            // Events lost because Python stopped draining the queue (a counter).
            "core_events_dropped": self.events().dropped(),
            "access_logs": self.log_sinks.snapshot(),
            "tracing": self.exporters.shared.snapshot(),
        })
    }

    /// The `meshplane_host_*` Prometheus families of every host (`cluster::host_families`).
    pub fn host_metrics(&self) -> String {
        self.host_families().text()
    }

    /// Every host's numbers for `host_metrics`, read now (`cluster::HostFamilies`): to be
    /// measured, then written where the caller wants the text.
    pub fn host_families(&self) -> crate::cluster::HostFamilies {
        match self.published.load_full() {
            Some(c) => crate::cluster::HostFamilies::read(&c.clusters),
            None => crate::cluster::HostFamilies::read(&[]),
        }
    }

    /// The most recent recorded spans, newest first (docs/admin.md `/traces`).
    pub fn recent_spans(&self) -> serde_json::Value {
        self.exporters.shared.recent().into()
    }

    /// Stop accepting, give connections `drain` to finish, then stop the runtime and emit a
    /// `Event::Stopped`. Returns at once.
    pub fn shutdown(&self, drain: Duration) {
        let _ = self.stop.send(true);
        let conns = self.conns.clone();
        let events = self.events.clone();
        let exit = self.exit.clone();
        self.handle.spawn(async move {
            let clean = tokio::time::timeout(drain, conns.closed()).await.is_ok();
            events.push(Event::Stopped {
                clean,
                open: conns.open(),
            });
            let _ = exit.send(true);
        });
    }

    /// Wait for the runtime thread to end (after `shutdown`).
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// How one listener of a new version gets its socket.
enum Plan {
    /// Same name, address and protocol: the running listener takes the new state.
    Keep,
    /// The socket of the running listener of this name serves the new protocol or name
    /// (its address is unchanged); it is not closed, so no connection attempt is refused.
    Retarget(String),
    /// A new socket, already bound.
    Open(listener::Opened),
}

/// Decide, for each listener of `wanted` (in order), how it gets its socket, binding the new
/// ones. A running socket is reused by the listener of the same name and address spec, or else
/// by one whose address resolves to exactly the bound address (not port 0); each socket at
/// most once. On error, the sockets bound so far are closed and nothing else has changed.
fn plan_listeners(
    wanted: &[crate::config::Listener],
    running: &HashMap<String, RunningListener>,
) -> Result<Vec<Plan>, SnapshotError> {
    let mut claimed = std::collections::HashSet::new();
    let mut plans: Vec<Option<Plan>> = wanted
        .iter()
        .map(|l| {
            let r = running.get(&l.name)?;
            if r.address_spec != l.address {
                return None;
            }
            claimed.insert(l.name.as_str());
            Some(if r.protocol == l.protocol {
                Plan::Keep
            } else {
                Plan::Retarget(l.name.clone())
            })
        })
        .collect();
    for (i, (l, plan)) in wanted.iter().zip(plans.iter_mut()).enumerate() {
        if plan.is_some() {
            continue;
        }
        let cannot_bind = |e: std::io::Error| SnapshotError {
            path: format!("listeners[{i}].address"),
            message: format!("cannot bind {}: {e}", l.address),
        };
        let addr = listener::resolve(&l.address).map_err(cannot_bind)?;
        let reused = running.iter().find(|(name, r)| {
            addr.port() != 0 && r.bound == addr && !claimed.contains(name.as_str())
        });
        *plan = Some(match reused {
            Some((name, _)) => {
                claimed.insert(name.as_str());
                Plan::Retarget(name.clone())
            }
            None => Plan::Open(
                listener::open(addr, l.backlog.unwrap_or(crate::config::DEFAULT_BACKLOG))
                    .map_err(cannot_bind)?,
            ),
        });
    }
    Ok(plans
        .into_iter()
        .map(|p| p.expect("every listener planned"))
        .collect())
}

/// Close upstream connections idle longer than their cluster's idle timeout. Runs for the life
/// of the runtime, waking at half the shortest idle timeout (between 100 ms and 5 s).
async fn sweep_idle_connections(
    published: Arc<ArcSwapOption<Compiled>>,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        let period = match published.load_full() {
            Some(c) => {
                for cl in &c.clusters {
                    for m in cl.hosts.load().hosts.iter() {
                        m.host.pool.evict_idle();
                    }
                }
                c.clusters
                    .iter()
                    .map(|cl| cl.idle_timeout / 2)
                    .min()
                    .unwrap_or(Duration::from_secs(5))
            }
            None => Duration::from_secs(5),
        };
        let period = period.clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = wake.notified() => {}
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.exit.send(true);
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_the_events_the_queue_dropped() {
        let rt = Runtime::new(1).expect("runtime");
        assert_eq!(rt.stats(true)["core_events_dropped"], 0);
        for _ in 0..crate::notify::MAX_QUEUED + 3 {
            rt.events().push(crate::notify::Event::Stopped {
                clean: true,
                open: 0,
            });
        }
        assert_eq!(rt.stats(true)["core_events_dropped"], 3);
        rt.shutdown(Duration::ZERO);
    }

    /// A snapshot with listeners `(name, address, protocol)`; http ones route to cluster `c`,
    /// tcp ones forward to it; `c` has the one endpoint `upstream`.
    fn doc(version: &str, listeners: &[(&str, &str, &str)], upstream: SocketAddr) -> Vec<u8> {
        let listeners: Vec<serde_json::Value> = listeners
            .iter()
            .map(|(name, address, protocol)| match *protocol {
                "http" => serde_json::json!({"name": name, "address": address,
                    "protocol": "http", "routeTable": "t"}),
                _ => serde_json::json!({"name": name, "address": address, "protocol": "tcp",
                    "tcpClusters": [{"cluster": "c", "weight": 1}]}),
            })
            .collect();
        serde_json::json!({"schema": 1, "version": version, "listeners": listeners,
            "routeTables": {"t": {"virtualHosts": [{"name": "vh", "domains": ["*"],
                "routes": [{"name": "r", "match": {"path": {"kind": "prefix", "value": "/"}},
                    "action": {"clusters": [{"cluster": "c", "weight": 1}]}}]}]}},
            "clusters": [{"name": "c", "protocol": "tcp",
                "endpoints": [{"address": upstream.to_string()}]}]})
        .to_string()
        .into_bytes()
    }

    fn hosts_of(rt: &Runtime, cluster: &str) -> Vec<String> {
        let published = rt.published.load_full().expect("a version runs");
        let c = &published.clusters[published.cluster_index[cluster]];
        let names = c
            .hosts
            .load()
            .hosts
            .iter()
            .map(|m| m.host.name.to_string())
            .collect();
        names
    }

    #[test]
    fn endpoint_changes_during_an_apply_wait_in_no_caller_and_land_on_its_version() {
        let rt = Runtime::new(1).expect("runtime");
        let one: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let listeners = [("l", "127.0.0.1:0", "tcp")];
        rt.apply(&doc("v1", &listeners, one)).expect("v1");
        let whole = |a: &str| vec![(a.to_string(), 1)];
        // An apply counted in (as `apply` does before it takes the apply lock) and not out.
        rt.pending().applying += 1;
        assert_eq!(rt.set_endpoints("c", &whole("127.0.0.1:2")), Ok(None));
        assert_eq!(rt.set_endpoints("gone", &whole("127.0.0.1:2")), Ok(None));
        let three = whole("127.0.0.1:3");
        // A delta against a version about to be replaced is refused; one without a base waits.
        assert_eq!(rt.update_endpoints("c", &three, &[], Some("v1")), Ok(false));
        assert_eq!(rt.update_endpoints("c", &three, &[], None), Ok(true));
        assert!(rt.set_endpoints("c", &whole("no address")).is_err());
        assert_eq!(hosts_of(&rt, "c"), ["127.0.0.1:1"], "nothing changed yet");
        rt.pending().applying -= 1;
        // The next apply to finish lists 127.0.0.1:1 again; what was asked meanwhile comes after.
        rt.apply(&doc("v2", &listeners, one)).expect("v2");
        assert_eq!(hosts_of(&rt, "c"), ["127.0.0.1:2", "127.0.0.1:3"]);
        assert!(rt.pending().changes.is_empty() && rt.pending().applying == 0);
        // No apply in progress: made at once, on the running version.
        assert_eq!(
            rt.set_endpoints("c", &whole("127.0.0.1:4")),
            Ok(Some("v2".to_string()))
        );
        assert_eq!(hosts_of(&rt, "c"), ["127.0.0.1:4"]);
        assert_eq!(rt.update_endpoints("c", &three, &[], Some("v2")), Ok(true));
        assert_eq!(hosts_of(&rt, "c"), ["127.0.0.1:4", "127.0.0.1:3"]);
        rt.shutdown(Duration::ZERO);
    }

    #[test]
    fn a_tls_reload_without_tls_material_is_made_at_once_and_marked_for_an_apply() {
        let rt = Runtime::new(1).expect("runtime");
        assert_eq!(
            rt.reload_tls_at_once(),
            Some(0),
            "nothing runs: nothing to read"
        );
        let one: SocketAddr = "127.0.0.1:1".parse().expect("address");
        rt.apply(&doc("v1", &[("l", "127.0.0.1:0", "tcp")], one))
            .expect("v1");
        assert_eq!(rt.reload_tls_at_once(), Some(0));
        assert_eq!(rt.reload_tls_at_once(), rt.reload_tls().ok());
        assert!(!rt.pending().reload_tls);
        // During an apply: made at once, and the apply's version is to read its files again.
        rt.pending().applying += 1;
        assert_eq!(rt.reload_tls_at_once(), Some(0));
        assert!(rt.pending().reload_tls);
        rt.pending().applying -= 1;
        rt.pending().reload_tls = false;
        // Someone holds the pending-changes lock: not at once (the caller would wait).
        let held = rt.pending();
        assert_eq!(rt.reload_tls_at_once(), None);
        drop(held);
        rt.shutdown(Duration::ZERO);
    }

    #[test]
    fn a_failed_apply_still_makes_what_was_asked_meanwhile() {
        let rt = Runtime::new(1).expect("runtime");
        let one: SocketAddr = "127.0.0.1:1".parse().expect("address");
        rt.apply(&doc("v1", &[("l", "127.0.0.1:0", "tcp")], one))
            .expect("v1");
        rt.pending().applying += 1;
        let two = vec![("127.0.0.1:2".to_string(), 1)];
        assert_eq!(rt.set_endpoints("c", &two), Ok(None));
        rt.pending().applying -= 1;
        // A listener on an address in use: refused after parsing, and v1 keeps running, with
        // the change made.
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = held.local_addr().expect("address").to_string();
        let bad = doc(
            "v2",
            &[("l", "127.0.0.1:0", "tcp"), ("m", &busy, "tcp")],
            one,
        );
        assert!(rt.apply(&bad).is_err());
        assert_eq!(rt.version().as_deref(), Some("v1"));
        assert_eq!(hosts_of(&rt, "c"), ["127.0.0.1:2"]);
        rt.shutdown(Duration::ZERO);
    }

    /// Connect to `port` and wait until `upstream` accepts the connection the proxy forwards.
    fn forwarded(port: u16, upstream: &std::net::TcpListener) -> std::net::TcpStream {
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        upstream.set_nonblocking(true).unwrap();
        // Bounded: a proxy that never connects fails the test instead of hanging it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match upstream.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the proxy never connected"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        drop(client);
        conn
    }

    #[test]
    fn a_failed_bind_changes_nothing_and_closes_what_it_bound() {
        let rt = Runtime::new(1).expect("runtime");
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = upstream.local_addr().unwrap();
        rt.apply(&doc("v1", &[("a", "127.0.0.1:0", "tcp")], up))
            .unwrap();
        let before = rt.listeners();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = held.local_addr().unwrap().to_string();
        // `b` binds (a free port, found by binding and closing), then `c` fails: `b` must be
        // closed again.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_addr = free.local_addr().unwrap().to_string();
        drop(free);
        let bad = doc(
            "v2",
            &[
                ("a", "127.0.0.1:0", "http"),
                ("b", &free_addr, "tcp"),
                ("c", &busy, "tcp"),
            ],
            up,
        );
        let e = rt.apply(&bad).expect_err("the address is in use");
        assert_eq!(e.path, "listeners[2].address");
        assert_eq!(rt.version().as_deref(), Some("v1"));
        assert_eq!(rt.listeners(), before);
        std::net::TcpListener::bind(&free_addr).expect("the socket bound for `b` is closed");
        // The old version still serves, with its old protocol.
        forwarded(before[0].1.port(), &upstream);
        rt.shutdown(Duration::ZERO);
    }

    #[test]
    fn a_protocol_change_keeps_the_socket() {
        let rt = Runtime::new(1).expect("runtime");
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = upstream.local_addr().unwrap();
        rt.apply(&doc("v1", &[("a", "127.0.0.1:0", "http")], up))
            .unwrap();
        let port = rt.listeners()[0].1.port();
        rt.apply(&doc("v2", &[("a", "127.0.0.1:0", "tcp")], up))
            .unwrap();
        assert_eq!(
            rt.listeners(),
            [(
                "a".into(),
                SocketAddr::from(([127, 0, 0, 1], port)),
                ListenerProtocol::Tcp
            )]
        );
        forwarded(port, &upstream);
        // A fixed address survives a protocol and name change as well.
        let fixed = format!("127.0.0.1:{port}");
        rt.apply(&doc("v3", &[("b", &fixed, "http")], up)).unwrap();
        rt.apply(&doc("v4", &[("c", &fixed, "tcp")], up)).unwrap();
        assert_eq!(rt.listeners()[0].0, "c");
        assert_eq!(rt.listeners()[0].1.port(), port);
        forwarded(port, &upstream);
        rt.shutdown(Duration::ZERO);
    }
}
