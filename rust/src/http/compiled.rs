//! A snapshot compiled into the immutable tables the request path reads: route tables with
//! resolved actions, clusters, per-listener settings. Built off the request path, swapped whole.

use crate::accesslog::{AccessLog, Sinks};
use crate::cluster::{Cluster, ClusterSinks, ConcurrencyGroup};
use crate::config::{self, ListenerProtocol, RetryPolicySpec, Snapshot};
use crate::route::{RouteTable, WeightedTargets};
use crate::stats::{ListenerStats, Registry, RouteStats};
use crate::tls::ServerTls;
use crate::trace::context::TRACEPARENT;
use crate::trace::Tracing;
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Action {
    /// Cluster indices into `Compiled::clusters`, chosen by `weights`.
    pub clusters: Vec<usize>,
    pub weights: Option<WeightedTargets>,
    /// Continue routing in this table (after rewrites).
    pub next_table: Option<usize>,
    pub rewrite_prefix: Option<Box<str>>,
    pub rewrite_path: Option<Box<str>>,
    pub rewrite_host: Option<Box<str>>,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub stats: Arc<RouteStats>,
}

/// A route's retry policy in the form the request path tests (Envoy `retry_on` semantics).
#[derive(Debug, Default, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub per_try_timeout: Option<Duration>,
    on_5xx: bool,
    on_gateway_error: bool,
    on_reset: bool,
    on_connect_failure: bool,
    on_retriable_4xx: bool,
    on_refused_stream: bool,
    statuses: Vec<u16>,
    grpc_statuses: Vec<u32>,
}

impl RetryPolicy {
    pub fn from_spec(spec: &RetryPolicySpec) -> Result<Self, String> {
        let mut p = RetryPolicy {
            max_retries: spec.max_retries,
            per_try_timeout: spec
                .per_try_timeout_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            ..Default::default()
        };
        for on in &spec.retry_on {
            match on.as_str() {
                "5xx" => p.on_5xx = true,
                "gateway-error" => p.on_gateway_error = true,
                "reset" => p.on_reset = true,
                "connect-failure" => p.on_connect_failure = true,
                "retriable-4xx" => p.on_retriable_4xx = true,
                "refused-stream" => p.on_refused_stream = true,
                "retriable-status-codes" => p.statuses = spec.retriable_status_codes.clone(),
                other => return Err(format!("unknown retryOn {other:?}")),
            }
        }
        for g in &spec.grpc_retry_on {
            p.grpc_statuses.push(match g.as_str() {
                "cancelled" => 1,
                "deadline-exceeded" => 4,
                "resource-exhausted" => 8,
                "internal" => 13,
                "unavailable" => 14,
                other => return Err(format!("unknown grpcRetryOn {other:?}")),
            });
        }
        Ok(p)
    }

    /// Whether a response with this status (and trailers-only grpc-status) is retried.
    pub fn retry_on_response(&self, status: u16, grpc_status: Option<u32>) -> bool {
        (self.on_5xx && status >= 500)
            || (self.on_gateway_error && matches!(status, 502..=504))
            || (self.on_retriable_4xx && status == 409)
            || self.statuses.contains(&status)
            || grpc_status.is_some_and(|g| self.grpc_statuses.contains(&g))
    }

    /// Whether a failure without a response is retried.
    pub fn retry_on_error(&self, kind: crate::error::Kind) -> bool {
        use crate::error::Kind::*;
        let any_reset = self.on_5xx || self.on_gateway_error || self.on_reset;
        match kind {
            ConnectFailure | ConnectTimeout | TlsFailure => any_reset || self.on_connect_failure,
            Reset => any_reset,
            RefusedStream => any_reset || self.on_refused_stream,
            _ => false,
        }
    }
}

pub struct ListenerConfig {
    pub protocol: ListenerProtocol,
    pub route_table: Option<usize>,
    pub tcp_clusters: Vec<usize>,
    pub tcp_weights: Option<WeightedTargets>,
    pub idle_timeout: Duration,
    pub max_request_headers: usize,
    pub request_headers_timeout: Duration,
    pub stats: Arc<ListenerStats>,
    /// TLS termination; swapped in place when certificates are reloaded.
    pub tls: ArcSwapOption<ServerTls>,
    pub access_log: Option<Arc<AccessLog>>,
    /// A W3C `traceparent` this proxy starts goes into the request's header map, where the
    /// snapshot's routes or this listener's access log read it (as before); otherwise it is
    /// written by hyper's HTTP/1.1 encoder after the head's headers, without a map entry
    /// (`proxy::Session::downstream_request`).
    pub traceparent_in_map: bool,
}

/// Build a listener's TLS from its spec (None when absent or DISABLED).
pub fn listener_tls(
    i: usize,
    spec: &config::Listener,
) -> Result<Option<Arc<ServerTls>>, config::SnapshotError> {
    match &spec.tls {
        Some(t) if t.mode != config::TlsMode::Disabled => ServerTls::build(t)
            .map(|t| Some(Arc::new(t)))
            .map_err(|e| config::SnapshotError {
                path: format!("listeners[{i}].tls"),
                message: e.to_string(),
            }),
        _ => Ok(None),
    }
}

pub struct Compiled {
    pub version: String,
    pub tables: Vec<Arc<RouteTable<Action>>>,
    pub clusters: Vec<Arc<Cluster>>,
    pub cluster_index: HashMap<String, usize>,
    pub listeners: HashMap<String, Arc<ListenerConfig>>,
    /// Spans for every HTTP request (`Snapshot::tracing`); None = off.
    pub tracing: Option<Arc<Tracing>>,
    pub snapshot: Snapshot,
}

fn weights_of(targets: &[config::WeightedCluster]) -> Option<WeightedTargets> {
    WeightedTargets::new(&targets.iter().map(|t| t.weight).collect::<Vec<_>>())
}

impl Compiled {
    /// Build every table of `snap`. `previous` lends hosts (pools, counters) to clusters that
    /// keep their name. Never partially succeeds.
    pub fn build(
        snap: Snapshot,
        registry: &Registry,
        previous: Option<&Compiled>,
        cluster_sinks: &ClusterSinks,
        log_sinks: &Sinks,
        tracing: Option<Arc<Tracing>>,
    ) -> Result<Compiled, config::SnapshotError> {
        let mut clusters = Vec::with_capacity(snap.clusters.len());
        let mut cluster_index = HashMap::new();
        // Concurrency groups carry over by name, with the requests they admitted.
        let mut groups: HashMap<&str, Arc<ConcurrencyGroup>> = HashMap::new();
        for c in previous.iter().flat_map(|p| p.clusters.iter()) {
            if let (Some(g), Some(name)) = (
                &c.function_group,
                c.spec
                    .function
                    .as_ref()
                    .and_then(|f| f.concurrency_group.as_deref()),
            ) {
                groups.insert(name, g.clone());
            }
        }
        for (i, spec) in snap.clusters.iter().enumerate() {
            let prev =
                previous.and_then(|p| p.cluster_index.get(&spec.name).map(|&j| &*p.clusters[j]));
            let mut cluster = Cluster::build(
                spec,
                registry.cluster(&spec.name),
                prev,
                cluster_sinks.clone(),
            )
            .map_err(|e| config::SnapshotError {
                path: format!("clusters[{i}].tls"),
                message: e.to_string(),
            })?;
            if let Some(name) = spec
                .function
                .as_ref()
                .and_then(|f| f.concurrency_group.as_deref())
            {
                cluster.function_group = Some(groups.entry(name).or_default().clone());
            }
            clusters.push(Arc::new(cluster));
            cluster_index.insert(spec.name.clone(), i);
        }
        let table_index: HashMap<&str, usize> = snap
            .route_tables
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let mut tables = Vec::with_capacity(snap.route_tables.len());
        for (name, spec) in &snap.route_tables {
            let table = RouteTable::build(spec, |r| {
                let a = &r.action;
                let retry = match &a.retry {
                    Some(s) => RetryPolicy::from_spec(s)?,
                    None => RetryPolicy::default(),
                };
                let rw = a.rewrite.clone().unwrap_or_default();
                Ok(Action {
                    clusters: a
                        .clusters
                        .iter()
                        .map(|t| cluster_index[&t.cluster])
                        .collect(),
                    weights: weights_of(&a.clusters),
                    next_table: a.route_table.as_deref().map(|t| table_index[t]),
                    rewrite_prefix: rw.prefix.map(Into::into),
                    rewrite_path: rw.path.map(Into::into),
                    rewrite_host: rw.host.map(Into::into),
                    timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
                    idle_timeout: a
                        .idle_timeout_ms
                        .filter(|ms| *ms > 0)
                        .map(Duration::from_millis),
                    retry,
                    stats: registry.route(&r.name),
                })
            })
            .map_err(|e| config::SnapshotError {
                path: format!("routeTables.{name}.{}", e.path),
                message: e.message,
            })?;
            tables.push(Arc::new(table));
        }
        let routes_read_traceparent = snap
            .route_tables
            .values()
            .flat_map(|t| &t.virtual_hosts)
            .flat_map(|v| &v.routes)
            .flat_map(|r| &r.matcher.headers)
            .any(|h| h.name.eq_ignore_ascii_case(TRACEPARENT.as_str()));
        let mut listeners = HashMap::new();
        for (i, l) in snap.listeners.iter().enumerate() {
            // Zero would close every connection at once, or queue none.
            for (field, value) in [
                ("requestHeadersTimeoutMs", l.request_headers_timeout_ms),
                ("backlog", l.backlog.map(u64::from)),
            ] {
                if value == Some(0) {
                    return Err(config::SnapshotError {
                        path: format!("listeners[{i}].{field}"),
                        message: "must be at least 1".into(),
                    });
                }
            }
            let tls = listener_tls(i, l)?;
            let access_log = match &l.access_log {
                Some(spec) => Some(Arc::new(AccessLog::build(spec, log_sinks).map_err(
                    |message| config::SnapshotError {
                        path: format!("listeners[{i}].accessLog"),
                        message,
                    },
                )?)),
                None => None,
            };
            listeners.insert(
                l.name.clone(),
                Arc::new(ListenerConfig {
                    protocol: l.protocol,
                    route_table: l.route_table.as_deref().map(|t| table_index[t]),
                    tcp_clusters: l
                        .tcp_clusters
                        .iter()
                        .map(|t| cluster_index[&t.cluster])
                        .collect(),
                    tcp_weights: weights_of(&l.tcp_clusters),
                    idle_timeout: Duration::from_millis(l.idle_timeout_ms.unwrap_or(3_600_000)),
                    max_request_headers: l.max_request_headers_bytes.unwrap_or(60 * 1024),
                    request_headers_timeout: Duration::from_millis(
                        l.request_headers_timeout_ms
                            .unwrap_or(config::DEFAULT_REQUEST_HEADERS_TIMEOUT_MS),
                    ),
                    stats: registry.listener(&l.name),
                    tls: ArcSwapOption::new(tls),
                    traceparent_in_map: routes_read_traceparent
                        || access_log
                            .as_ref()
                            .is_some_and(|a| a.reads_request_header(&TRACEPARENT)),
                    access_log,
                }),
            );
        }
        Ok(Compiled {
            version: snap.version.clone(),
            tables,
            clusters,
            cluster_index,
            listeners,
            tracing,
            snapshot: snap,
        })
    }

    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.snapshot.route_tables.values().flat_map(|t| {
            t.virtual_hosts
                .iter()
                .flat_map(|v| v.routes.iter().map(|r| r.name.as_str()))
        })
    }
}
