//! The snapshot document: the one versioned description of everything the data plane runs.
//!
//! Python (`meshplane.config.compile`) produces it as JSON; [`Snapshot::parse`] reads it. This
//! module is the schema only (serde types and their checks); it imports nothing else from the
//! crate. It is the one definition of the contract: `docs/snapshot.schema.json` is generated from
//! it ([`json_schema`]) and `docs/snapshot.md` describes it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Schema version this build understands; a document with another `schema` is refused.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// The schema version; this build reads only 1.
    #[schemars(extend("const" = SCHEMA))]
    pub schema: u32,
    /// Opaque label chosen by the control layer (shown in /config_dump and stats).
    pub version: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub route_tables: BTreeMap<String, RouteTableSpec>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Distributed tracing of every HTTP listener's requests (`proxy.tracing`). None = off:
    /// no span, and trace headers pass through untouched.
    #[serde(default)]
    pub tracing: Option<TracingSpec>,
}

/// How trace context travels between hops; one format per mesh.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// W3C Trace Context: `traceparent` (and `tracestate`, passed on unchanged).
    #[default]
    W3c,
    /// Zipkin B3, one `b3` header (a request with `X-B3-*` headers is read too).
    B3,
    /// Zipkin B3, `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` (a `b3` header is read too).
    B3multi,
    /// AWS X-Ray `X-Amzn-Trace-Id: Root=...;Parent=...;Sampled=...`.
    Xray,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSpec {
    /// OTLP/HTTP collector, "http://host:port[/prefix]" or "https://..."; spans are POSTed as
    /// protobuf to `{otlpEndpoint}/v1/traces`. None = spans are kept only in the recent-spans
    /// ring buffer.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// TLS to an `https://` collector. None: the system's CA bundle, no client certificate.
    #[serde(default)]
    pub otlp_tls: Option<CollectorTls>,
    /// Share of new traces recorded, 0 to 100. A caller's decision (sampled flag) wins.
    #[serde(default = "default_sampling_percent")]
    pub sampling_percent: f64,
    #[serde(default)]
    pub propagation: Propagation,
    /// Also record every request that fails (5xx, or the client went away) when unsampled.
    #[serde(default)]
    pub keep_errors: bool,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Spans queued for the exporter; beyond this they are dropped and counted. None = 2048.
    #[serde(default)]
    pub max_queue_spans: Option<u32>,
    /// Spans per export request. None = 512.
    #[serde(default)]
    pub max_batch_spans: Option<u32>,
    /// How long one export request may take. None = 10 000.
    #[serde(default)]
    pub export_timeout_ms: Option<u64>,
    /// Recent spans kept for the admin API. None = 256; 0 = none.
    #[serde(default)]
    pub recent_spans: Option<u32>,
}

/// How the span exporter talks TLS to an `https://` collector.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectorTls {
    /// PEM file of the CAs the collector's certificate must chain to (its name is checked
    /// against the endpoint's host). None: the system's CA bundle.
    #[serde(default)]
    pub trust: Option<String>,
    /// Client certificate for mutual TLS.
    #[serde(default)]
    pub certificate: Option<CertificateSpec>,
}

fn default_sampling_percent() -> f64 {
    100.0
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and cleartext HTTP/2 (prior knowledge), told apart per connection.
    Http,
    Tcp,
}

/// `Listener::request_headers_timeout_ms` when unset.
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT_MS: u64 = 10_000;
/// `Listener::backlog` when unset.
pub const DEFAULT_BACKLOG: u32 = 1024;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Unique; also the stats key. Same name + same address across applies ⇒ socket kept.
    pub name: String,
    /// "IP:PORT"; port 0 binds an ephemeral port (read back through `Core.listeners()`).
    pub address: String,
    pub protocol: ListenerProtocol,
    /// For `http`: the route table (key of `Snapshot::route_tables`) requests are matched in.
    #[serde(default)]
    pub route_table: Option<String>,
    /// For `tcp`: weighted clusters to forward connections to.
    #[serde(default)]
    pub tcp_clusters: Vec<WeightedCluster>,
    /// Downstream connection idle timeout (no active request / no bytes for TCP). None = 1 h.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Largest request head accepted (request line + headers); bigger ⇒ 431. Default 60 KiB.
    #[serde(default)]
    pub max_request_headers_bytes: Option<usize>,
    /// How long a new connection has to deliver its first complete request head (HTTP/1.1
    /// head, or HTTP/2 preface + first HEADERS), from accept; then it is closed (Envoy's
    /// `request_headers_timeout`). None = 10 s.
    #[serde(default)]
    pub request_headers_timeout_ms: Option<u64>,
    /// The listen(2) backlog: connections the kernel queues before they are accepted (capped
    /// by `net.core.somaxconn`). Used when the socket is bound. None = 1024.
    #[serde(default)]
    pub backlog: Option<u32>,
    /// TLS termination (App Mesh listener `tls`). None = plaintext only.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Access log (App Mesh `logging.accessLog.file`). None = no access log.
    #[serde(default)]
    pub access_log: Option<AccessLogSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogSpec {
    /// File appended to; "/dev/stdout" and "/dev/stderr" work.
    pub path: String,
    /// None = Envoy's default line format.
    #[serde(default)]
    pub format: Option<AccessLogFormat>,
}

/// App Mesh's two shapes, with Envoy command operators (`%RESPONSE_CODE%`, `%REQ(:PATH)%`...).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Text(String),
    Json(Vec<JsonLogField>),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonLogField {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS only.
    Strict,
    /// TLS or plaintext on the same port, told apart per connection by the first byte.
    Permissive,
    /// Plaintext only (the TLS block is kept but not used).
    Disabled,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    pub mode: TlsMode,
    /// The first is the default; others are chosen by SNI against their `serverNames`.
    pub certificates: Vec<CertificateSpec>,
    /// Mutual TLS: client certificates required, chained to `trust`, SANs checked if listed.
    #[serde(default)]
    pub validation: Option<ValidationSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSpec {
    /// PEM file: the certificate chain, leaf first.
    pub certificate_chain: String,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: String,
    /// SNI names this certificate serves ("*.example.com" allowed). Empty = default only.
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationSpec {
    /// PEM file of trusted CA certificates.
    pub trust: String,
    /// Exact SANs accepted (DNS names or URIs such as SPIFFE IDs). Empty: for a listener,
    /// any SAN; for an upstream, the certificate must match `UpstreamTls::server_name`.
    #[serde(default)]
    pub subject_alternative_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamTls {
    /// SNI sent, and the name checked when no SANs are listed (App Mesh: the discovery name).
    pub server_name: String,
    /// Client certificate for mutual TLS.
    #[serde(default)]
    pub certificate: Option<CertificateSpec>,
    /// None: the server certificate is not verified (App Mesh, file certificate without a
    /// client policy).
    #[serde(default)]
    pub validation: Option<ValidationSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableSpec {
    pub virtual_hosts: Vec<VirtualHostSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostSpec {
    pub name: String,
    /// Matched against the request authority, lowercased: exact ("svc.local", "svc.local:8080"),
    /// suffix wildcard ("*.example.com"), prefix wildcard ("svc.*") or "*". Envoy's order:
    /// exact, longest suffix wildcard, longest prefix wildcard, "*".
    pub domains: Vec<String>,
    /// In evaluation order: the first route whose match holds wins (the compiler sorts them).
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique within the snapshot; the stats key.
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: RouteMatchSpec,
    pub action: RouteActionSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatchSpec {
    /// None matches every path.
    #[serde(default)]
    pub path: Option<PathMatchSpec>,
    /// Matched against the authority exactly as sent (App Mesh: `host:80` ≠ `host`).
    #[serde(default)]
    pub hostname: Option<HostnameMatchSpec>,
    /// Upper-case method name.
    #[serde(default)]
    pub method: Option<String>,
    /// "http" or "https".
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchSpec>,
    #[serde(default)]
    pub query: Vec<QueryMatchSpec>,
    /// Local port the connection arrived on.
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum PathMatchSpec {
    /// Plain string prefix of the path (query included, as Envoy does).
    Prefix(String),
    /// Equality with the path without its query string.
    Exact(String),
    /// Full match (anchored) of the path without its query string.
    Regex(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum HostnameMatchSpec {
    Exact(String),
    Suffix(String),
}

/// One header condition. On the wire it is one flat object, `{"name", "kind", ...the kind's
/// fields, "invert"?}`, read through [`HeaderMatchWire`].
// NOTE: serde cannot combine `deny_unknown_fields` with `flatten`, so the flat wire shape is a
// tagged enum of its own; that way unknown fields are refused here as everywhere else.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(from = "HeaderMatchWire", into = "HeaderMatchWire")]
pub struct HeaderMatchSpec {
    /// Lower-case header name.
    pub name: String,
    pub rule: HeaderRule,
    pub invert: bool,
}

/// How one header's value is tested. Multi-valued headers are joined with "," first (Envoy).
/// A missing header fails every rule except `present`, even when inverted (Envoy).
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderRule {
    Exact {
        value: String,
    },
    Prefix {
        value: String,
    },
    Suffix {
        value: String,
    },
    Regex {
        value: String,
    },
    /// Half-open [start, end) on the value parsed as a base-10 i64; non-integers never match.
    Range {
        start: i64,
        end: i64,
    },
    /// Header present (with `invert`: absent).
    Present,
}

/// The wire shape of [`HeaderMatchSpec`]: a header condition, tagged by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HeaderMatchWire {
    /// The value equals `value`.
    Exact {
        /// Lower-case header name.
        name: String,
        value: String,
        #[serde(default)]
        invert: bool,
    },
    /// The value starts with `value`.
    Prefix {
        name: String,
        value: String,
        #[serde(default)]
        invert: bool,
    },
    /// The value ends with `value`.
    Suffix {
        name: String,
        value: String,
        #[serde(default)]
        invert: bool,
    },
    /// The whole value matches the regular expression `value` (anchored).
    Regex {
        name: String,
        value: String,
        #[serde(default)]
        invert: bool,
    },
    /// Half-open [start, end) on the value parsed as a base-10 i64; non-integers never match.
    Range {
        name: String,
        start: i64,
        end: i64,
        #[serde(default)]
        invert: bool,
    },
    /// Header present (with `invert`: absent).
    Present {
        name: String,
        #[serde(default)]
        invert: bool,
    },
}

impl From<HeaderMatchWire> for HeaderMatchSpec {
    fn from(wire: HeaderMatchWire) -> Self {
        use HeaderMatchWire as W;
        let (name, rule, invert) = match wire {
            W::Exact {
                name,
                value,
                invert,
            } => (name, HeaderRule::Exact { value }, invert),
            W::Prefix {
                name,
                value,
                invert,
            } => (name, HeaderRule::Prefix { value }, invert),
            W::Suffix {
                name,
                value,
                invert,
            } => (name, HeaderRule::Suffix { value }, invert),
            W::Regex {
                name,
                value,
                invert,
            } => (name, HeaderRule::Regex { value }, invert),
            W::Range {
                name,
                start,
                end,
                invert,
            } => (name, HeaderRule::Range { start, end }, invert),
            W::Present { name, invert } => (name, HeaderRule::Present, invert),
        };
        HeaderMatchSpec { name, rule, invert }
    }
}

impl From<HeaderMatchSpec> for HeaderMatchWire {
    fn from(spec: HeaderMatchSpec) -> Self {
        let HeaderMatchSpec { name, rule, invert } = spec;
        match rule {
            HeaderRule::Exact { value } => HeaderMatchWire::Exact {
                name,
                value,
                invert,
            },
            HeaderRule::Prefix { value } => HeaderMatchWire::Prefix {
                name,
                value,
                invert,
            },
            HeaderRule::Suffix { value } => HeaderMatchWire::Suffix {
                name,
                value,
                invert,
            },
            HeaderRule::Regex { value } => HeaderMatchWire::Regex {
                name,
                value,
                invert,
            },
            HeaderRule::Range { start, end } => HeaderMatchWire::Range {
                name,
                start,
                end,
                invert,
            },
            HeaderRule::Present => HeaderMatchWire::Present { name, invert },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryMatchSpec {
    pub name: String,
    /// None ⇒ the parameter must be present. The first value of a repeated key is used.
    #[serde(default)]
    pub exact: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteActionSpec {
    /// Weighted targets. Exactly one of `clusters` / `route_table` is set.
    #[serde(default)]
    pub clusters: Vec<WeightedCluster>,
    /// Continue routing in another route table (a gateway route targeting a virtual service),
    /// after this route's rewrites.
    #[serde(default)]
    pub route_table: Option<String>,
    #[serde(default)]
    pub rewrite: Option<RewriteSpec>,
    /// Whole-request timeout (response complete), 0 = off. Default 15 000 (App Mesh).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Stream idle timeout; None = 300 000.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry: Option<RetryPolicySpec>,
}

fn default_timeout_ms() -> u64 {
    15_000
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RewriteSpec {
    /// Replace the matched prefix (the route's `path.prefix`) with this value.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Replace the whole path (query kept).
    #[serde(default)]
    pub path: Option<String>,
    /// New Host / :authority.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicySpec {
    pub max_retries: u32,
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy retry_on names: "5xx", "gateway-error", "reset", "connect-failure",
    /// "retriable-4xx", "refused-stream", "retriable-status-codes".
    #[serde(default)]
    pub retry_on: Vec<String>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    /// gRPC status names: "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    /// "unavailable".
    #[serde(default)]
    pub grpc_retry_on: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    Tcp,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Unique; the stats key. Hosts keep their counters across applies by (cluster, address).
    pub name: String,
    pub protocol: UpstreamProtocol,
    #[serde(default)]
    pub lb: LbPolicy,
    /// WLR `active_request_bias` (Envoy default 1.0).
    #[serde(default)]
    pub active_request_bias: Option<f64>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Upstream connections with no request for this long are closed. None = 1 h.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// Concurrent retries allowed, as a share of active requests (Envoy `retry_budget`).
    /// Default: 20% with a floor of 3.
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// Passive health: report consecutive failures as events (the control layer ejects).
    #[serde(default)]
    pub outlier_detection: Option<OutlierSpec>,
    /// Originate TLS to the endpoints (App Mesh client policy).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Makes this a function cluster (Lambda's execution model): each host (a function
    /// instance) serves one request at a time, requests beyond `concurrency` are throttled, and
    /// a request that finds no idle instance waits for one (`docs/snapshot.md`).
    #[serde(default)]
    pub function: Option<FunctionSpec>,
}

/// A function cluster's limits.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    /// Requests in flight plus requests waiting for an instance, at most; one more is
    /// answered 429 at once (Lambda's reserved concurrency; 0 throttles everything).
    pub concurrency: u32,
    /// Clusters naming the same group share `concurrency`: requests in flight plus waiting
    /// across all of them, at most that many (every cluster of a group gives the same value).
    /// The versions and aliases of one function share its reserved concurrency this way, and
    /// functions without a reservation share the account's unreserved pool. None: the
    /// cluster's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_group: Option<String>,
    /// How long a request waits for an idle instance before it is answered 503. Default
    /// 10000, Lambda's limit on an on-demand instance's init phase.
    #[serde(default = "default_instance_wait_ms")]
    pub instance_wait_ms: u64,
}

fn default_instance_wait_ms() -> u64 {
    10_000
}

/// Where an endpoint is: `IP:PORT` over TCP, or `unix:/absolute/path` over a Unix domain
/// socket. Its text form (`Display`) is the host's name in stats, events and the calls that
/// name a host (`set_host_health`, `set_host_ejected`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamAddress {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

/// The longest socket path a `sockaddr_un` holds (108 bytes on Linux, 104 on macOS and the
/// BSDs, less the terminating NUL).
#[cfg(target_os = "linux")]
const MAX_UNIX_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_UNIX_PATH: usize = 103;

impl std::str::FromStr for UpstreamAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: expected unix:/absolute/path (the path must be absolute)"
                ));
            }
            if path.len() > MAX_UNIX_PATH || path.contains('\0') {
                return Err(format!(
                    "{s:?}: a Unix socket path is at most {MAX_UNIX_PATH} bytes, without NUL"
                ));
            }
            return Ok(UpstreamAddress::Unix(path.into()));
        }
        if let Some(addr) = canonical_ipv4(s) {
            return Ok(UpstreamAddress::Tcp(addr));
        }
        s.parse()
            .map(UpstreamAddress::Tcp)
            .map_err(|_| format!("{s:?}: expected IP:PORT or unix:/absolute/path"))
    }
}

/// `a.b.c.d:port` with decimal numbers without leading zeros (what Python's compile writes):
/// parsed directly. Anything else is None and goes to the standard parser, which accepts
/// every string this does, with the same result.
// NOTE: the standard parser's generic reader was a fifth of applying 10,000 endpoints.
fn canonical_ipv4(s: &str) -> Option<std::net::SocketAddr> {
    fn number(part: &[u8], max: u32) -> Option<u32> {
        if part.is_empty() || part.len() > 5 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut n: u32 = 0;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
        }
        (n <= max).then_some(n)
    }
    let (ip, port) = s.split_once(':')?;
    let mut octets = [0u8; 4];
    let mut parts = ip.as_bytes().split(|&c| c == b'.');
    for octet in &mut octets {
        *octet = number(parts.next()?, 255)? as u8;
    }
    if parts.next().is_some() {
        return None;
    }
    let port = number(port.as_bytes(), 65_535)? as u16;
    Some(std::net::SocketAddr::from((octets, port)))
}

impl std::fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddress::Tcp(a) => a.fmt(f),
            UpstreamAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    #[serde(default = "default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
}

fn default_budget_percent() -> f64 {
    20.0
}

fn default_min_retry_concurrency() -> u32 {
    3
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
        }
    }
}

/// Consecutive-failure thresholds; reaching one emits an `outlier` event at once. `None`
/// disables that detector. Envoy's classification (spec §2): a local timeout counts as 504,
/// a connect failure or reset as 503, unless `splitExternalLocalOriginErrors`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierSpec {
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_failure: Option<u32>,
    #[serde(default)]
    pub consecutive_local_origin_failure: Option<u32>,
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// "IP:PORT" (IPv6 as "[::1]:80"), or "unix:/absolute/path" for a Unix domain socket.
    /// Discovery (static, DNS) happens in Python.
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// App Mesh `connectionPool` limits; defaults are App Mesh's "effectively unlimited".
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default = "unlimited")]
    pub max_connections: u32,
    #[serde(default = "unlimited")]
    pub max_pending_requests: u32,
    #[serde(default = "unlimited")]
    pub max_requests: u32,
    #[serde(default = "unlimited")]
    pub max_retries: u32,
}

fn unlimited() -> u32 {
    2_147_483_647
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: unlimited(),
            max_pending_requests: unlimited(),
            max_requests: unlimited(),
            max_retries: unlimited(),
        }
    }
}

/// Where the generated JSON Schema of the document is checked in, relative to the repository.
pub const JSON_SCHEMA_PATH: &str = "docs/snapshot.schema.json";

/// The JSON Schema (draft 2020-12) of the document, generated from the serde types above: it
/// accepts exactly what [`Snapshot::parse`] deserializes (the cross-reference checks of
/// `Snapshot::check` aside). Checked in at [`JSON_SCHEMA_PATH`]; a test keeps the two equal.
pub fn json_schema() -> String {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings
        .transforms
        .push(Box::new(schemars::transform::RecursiveTransform(
            bound_integers,
        )));
    let schema = settings.into_generator().into_root_schema_for::<Snapshot>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

/// schemars names an integer's Rust type in `format` only; serde also refuses values out of the
/// type's range, so the schema states the range.
fn bound_integers(schema: &mut schemars::Schema) {
    let (min, max): (i128, i128) = match schema.get("format").and_then(|f| f.as_str()) {
        Some("uint16") => (0, u16::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64") => (0, u64::MAX.into()),
        Some("uint") => (0, usize::MAX as i128),
        Some("int64") => (i64::MIN.into(), i64::MAX.into()),
        _ => return,
    };
    let number = |n: i128| -> serde_json::Value {
        match u64::try_from(n) {
            Ok(u) => u.into(),
            Err(_) => (n as i64).into(),
        }
    };
    schema.insert("minimum".into(), number(min));
    schema.insert("maximum".into(), number(max));
}

/// A snapshot that could not be parsed or is inconsistent; `path` says where.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for SnapshotError {}

impl Snapshot {
    /// Parse and check references. Never partially succeeds.
    pub fn parse(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        // NOTE: one UTF-8 check of the whole document instead of one per string (10,000
        // endpoint addresses); invalid UTF-8 goes through `from_slice` for its error.
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        };
        let snap: Snapshot = parsed.map_err(|e| SnapshotError {
            path: format!("line {} column {}", e.line(), e.column()),
            message: e.to_string(),
        })?;
        snap.check()?;
        Ok(snap)
    }

    fn check(&self) -> Result<(), SnapshotError> {
        let err = |path: String, message: &str| SnapshotError {
            path,
            message: message.to_string(),
        };
        if self.schema != SCHEMA {
            return Err(err(
                "schema".into(),
                &format!(
                    "unsupported schema {}, this core reads {SCHEMA}",
                    self.schema
                ),
            ));
        }
        if let Some(t) = &self.tracing {
            if !(0.0..=100.0).contains(&t.sampling_percent) {
                return Err(err("tracing.samplingPercent".into(), "expected 0 to 100"));
            }
            let https = match &t.otlp_endpoint {
                Some(e) if e.len() > "https://".len() && e.starts_with("https://") => true,
                Some(e) if e.len() > "http://".len() && e.starts_with("http://") => false,
                Some(_) => {
                    return Err(err(
                        "tracing.otlpEndpoint".into(),
                        "expected http://host:port or https://host:port",
                    ))
                }
                None => false,
            };
            if t.otlp_tls.is_some() && !https {
                return Err(err(
                    "tracing.otlpTls".into(),
                    "applies to an https:// otlpEndpoint only",
                ));
            }
        }
        let clusters: std::collections::HashSet<&str> =
            self.clusters.iter().map(|c| c.name.as_str()).collect();
        if clusters.len() != self.clusters.len() {
            return Err(err("clusters".into(), "duplicate cluster name"));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            for (j, e) in c.endpoints.iter().enumerate() {
                if let Err(m) = e.address.parse::<UpstreamAddress>() {
                    return Err(err(format!("clusters[{i}].endpoints[{j}].address"), &m));
                }
            }
            if c.function.is_some() && c.protocol == UpstreamProtocol::Tcp {
                return Err(err(
                    format!("clusters[{i}].function"),
                    "a function cluster speaks http1 or http2, not tcp",
                ));
            }
        }
        let mut groups: std::collections::HashMap<&str, (usize, u32)> =
            std::collections::HashMap::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let Some(f) = &c.function else { continue };
            let Some(g) = &f.concurrency_group else {
                continue;
            };
            match groups.get(g.as_str()) {
                Some(&(j, limit)) if limit != f.concurrency => {
                    return Err(err(
                        format!("clusters[{i}].function.concurrency"),
                        &format!(
                            "concurrency group {g:?} has concurrency {limit} (clusters[{j}]), got {}",
                            f.concurrency
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    groups.insert(g, (i, f.concurrency));
                }
            }
        }
        let function_clusters: std::collections::HashSet<&str> = self
            .clusters
            .iter()
            .filter(|c| c.function.is_some())
            .map(|c| c.name.as_str())
            .collect();
        let check_targets =
            |path: &str, targets: &[WeightedCluster]| -> Result<(), SnapshotError> {
                for (k, t) in targets.iter().enumerate() {
                    if !clusters.contains(t.cluster.as_str()) {
                        return Err(err(
                            format!("{path}[{k}].cluster"),
                            &format!("unknown cluster {:?}", t.cluster),
                        ));
                    }
                }
                if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
                    return Err(err(path.to_string(), "all weights are 0"));
                }
                Ok(())
            };
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                return Err(err(
                    format!("listeners[{i}].name"),
                    "duplicate listener name",
                ));
            }
            if l.address.parse::<std::net::SocketAddr>().is_err() {
                return Err(err(format!("listeners[{i}].address"), "expected IP:PORT"));
            }
            match l.protocol {
                ListenerProtocol::Http => match &l.route_table {
                    Some(t) if self.route_tables.contains_key(t) => {}
                    _ => {
                        return Err(err(
                            format!("listeners[{i}].routeTable"),
                            "missing or unknown route table",
                        ))
                    }
                },
                ListenerProtocol::Tcp => {
                    if l.tcp_clusters.is_empty() {
                        return Err(err(
                            format!("listeners[{i}].tcpClusters"),
                            "a tcp listener needs a cluster",
                        ));
                    }
                    check_targets(&format!("listeners[{i}].tcpClusters"), &l.tcp_clusters)?;
                    for (k, t) in l.tcp_clusters.iter().enumerate() {
                        if function_clusters.contains(t.cluster.as_str()) {
                            return Err(err(
                                format!("listeners[{i}].tcpClusters[{k}].cluster"),
                                "a function cluster serves HTTP only",
                            ));
                        }
                    }
                }
            }
        }
        let mut route_names = std::collections::HashSet::new();
        for (tname, t) in &self.route_tables {
            for (v, vh) in t.virtual_hosts.iter().enumerate() {
                for (r, route) in vh.routes.iter().enumerate() {
                    let path = format!("routeTables.{tname}.virtualHosts[{v}].routes[{r}]");
                    if !route_names.insert(route.name.as_str()) {
                        return Err(err(format!("{path}.name"), "duplicate route name"));
                    }
                    let a = &route.action;
                    match (&a.route_table, a.clusters.is_empty()) {
                        (Some(rt), true) => {
                            if !self.route_tables.contains_key(rt) {
                                return Err(err(
                                    format!("{path}.action.routeTable"),
                                    "unknown route table",
                                ));
                            }
                        }
                        (None, false) => {
                            check_targets(&format!("{path}.action.clusters"), &a.clusters)?
                        }
                        _ => {
                            return Err(err(
                                format!("{path}.action"),
                                "exactly one of clusters / routeTable",
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
