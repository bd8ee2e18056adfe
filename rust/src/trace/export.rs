//! The exporter thread: drains the span queue, keeps the recent-spans ring buffer, and POSTs
//! batches to the collector as OTLP/HTTP protobuf (`{otlpEndpoint}/v1/traces`, over TLS for
//! an `https://` endpoint). Blocking I/O on its own thread, never on the request path: while
//! it waits on a slow collector the queue fills and the request path drops (and counts) spans
//! instead of waiting.

use super::otlp::{self, kv, Value};
use super::{context, Attempt, SpanData, TraceShared};
use crate::config::{CollectorTls, TracingSpec};
use prost::Message;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch is sent when it is this full, or this long after its first span.
const BATCH_DELAY: Duration = Duration::from_millis(500);
pub const DEFAULT_QUEUE_SPANS: u32 = 2048;
pub const DEFAULT_BATCH_SPANS: u32 = 512;
pub const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 10_000;

/// What an exporter thread is started with; an apply that changes any of it starts a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub endpoint: Option<String>,
    /// TLS settings of an `https://` endpoint (the files are read when the exporter starts).
    pub tls: Option<CollectorTls>,
    pub service_name: String,
    pub queue_spans: usize,
    pub batch_spans: usize,
    pub timeout: Duration,
}

impl ExportSettings {
    pub fn from_spec(spec: &TracingSpec) -> Self {
        ExportSettings {
            endpoint: spec.otlp_endpoint.clone(),
            tls: spec.otlp_tls.clone(),
            service_name: spec.service_name.clone(),
            queue_spans: spec.max_queue_spans.unwrap_or(DEFAULT_QUEUE_SPANS).max(1) as usize,
            batch_spans: spec.max_batch_spans.unwrap_or(DEFAULT_BATCH_SPANS).max(1) as usize,
            timeout: Duration::from_millis(
                spec.export_timeout_ms
                    .unwrap_or(DEFAULT_EXPORT_TIMEOUT_MS)
                    .max(1),
            ),
        }
    }
}

pub fn start(
    settings: ExportSettings,
    shared: Arc<TraceShared>,
) -> std::io::Result<SyncSender<Box<SpanData>>> {
    let tls = match &settings.endpoint {
        Some(e) if e.starts_with("https://") => Some(
            crate::tls::collector_config(settings.tls.as_ref()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("tracing.otlpTls: {e}"),
                )
            })?,
        ),
        _ => None,
    };
    let (tx, rx) = sync_channel::<Box<SpanData>>(settings.queue_spans);
    std::thread::Builder::new()
        .name("meshplane-trace".into())
        .spawn(move || {
            let mut batch: Vec<Box<SpanData>> = Vec::new();
            let mut first_at = Instant::now();
            loop {
                let wait = if batch.is_empty() {
                    Duration::from_secs(3600)
                } else {
                    BATCH_DELAY.saturating_sub(first_at.elapsed())
                };
                let closed = match rx.recv_timeout(wait) {
                    Ok(span) => {
                        shared.remember(record(&span));
                        if settings.endpoint.is_some() {
                            if batch.is_empty() {
                                first_at = Instant::now();
                            }
                            batch.push(span);
                        }
                        if batch.len() < settings.batch_spans {
                            continue;
                        }
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                };
                if !batch.is_empty() {
                    send(&settings, tls.as_ref(), &shared, &batch);
                    batch.clear();
                }
                if closed {
                    return;
                }
            }
        })?;
    Ok(tx)
}

fn send(
    settings: &ExportSettings,
    tls: Option<&Arc<rustls::ClientConfig>>,
    shared: &TraceShared,
    batch: &[Box<SpanData>],
) {
    let Some(endpoint) = &settings.endpoint else {
        return;
    };
    shared.export_requests.inc();
    let body = || encode(&settings.service_name, batch).encode_to_vec();
    match post(endpoint, tls, body, settings.timeout) {
        Ok(status) if (200..300).contains(&status) => {
            shared.spans_exported.add(spans(batch));
        }
        _ => {
            shared.export_failures.inc();
            shared.spans_export_failed.add(spans(batch));
        }
    }
}

fn spans(batch: &[Box<SpanData>]) -> u64 {
    batch.iter().map(|s| s.span_count()).sum()
}

/// POST `body` to `{endpoint}/v1/traces` (TLS with `tls` for `https://`); the response
/// status. The body is encoded once connected: a collector that is gone costs a refused
/// connection, not an encoding too.
fn post(
    endpoint: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: impl FnOnce() -> Vec<u8>,
    timeout: Duration,
) -> std::io::Result<u16> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad otlpEndpoint");
    let (rest, default_port) = match endpoint.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (endpoint.strip_prefix("http://").ok_or_else(bad)?, 80),
    };
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let deadline = Instant::now() + timeout;
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let mut last = None;
    let mut stream = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| last.unwrap_or_else(bad))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    // One deadline for the whole exchange, the handshake included: each blocking read and
    // write gets what is left of it.
    stream.set_write_timeout(Some(left()))?;
    stream.set_read_timeout(Some(left()))?;
    stream.set_nodelay(true)?;
    match tls {
        None => exchange(stream, authority, base, body, left),
        Some(config) => {
            let host = host_of(authority);
            let name =
                rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|_| bad())?;
            let conn = rustls::ClientConnection::new(config.clone(), name)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let mut tls = rustls::StreamOwned::new(conn, stream);
            tls.conn.complete_io(&mut tls.sock)?;
            exchange(tls, authority, base, body, left)
        }
    }
}

/// The host of `host[:port]` or `[v6][:port]`, brackets removed.
fn host_of(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && !h.is_empty() => h,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// One request and its status line over a connected stream (plain or TLS).
fn exchange<S: Read + Write + Timeouts>(
    mut stream: S,
    authority: &str,
    base: &str,
    body: impl FnOnce() -> Vec<u8>,
    left: impl Fn() -> Duration,
) -> std::io::Result<u16> {
    let body = body();
    stream.set_timeouts(left())?;
    let head = format!(
        "POST {base}/v1/traces HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\nuser-agent: meshplane\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    stream.set_timeouts(left())?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = stream.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))
}

/// The blocking socket under a stream, whose timeouts bound each read and write.
trait Timeouts {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()>;
}

impl Timeouts for TcpStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(t))?;
        self.set_read_timeout(Some(t))
    }
}

impl Timeouts for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.sock.set_timeouts(t)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    context::hex(&mut s, bytes);
    s
}

fn split_query(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}

/// The span's name: OpenTelemetry's `{method} {route}` (the route's name stands for the
/// template), or just the method when no route matched.
fn span_name(s: &SpanData) -> String {
    match &s.route {
        Some(r) => format!("{} {r}", s.method),
        None => s.method.to_string(),
    }
}

/// The span as OpenTelemetry's HTTP server semantic conventions name things, plus meshplane's
/// own attributes for what the proxy chose.
fn encode(service: &str, batch: &[Box<SpanData>]) -> otlp::ExportTraceServiceRequest {
    let spans = batch
        .iter()
        .flat_map(|s| {
            std::iter::once(to_otlp(s)).chain(
                s.attempts
                    .iter()
                    .enumerate()
                    .map(move |(i, a)| client_to_otlp(s, i, a)),
            )
        })
        .collect();
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![
                    kv("service.name", Value::String(service.to_string())),
                    kv("telemetry.sdk.name", Value::String("meshplane".into())),
                ],
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: "meshplane".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
}

fn to_otlp(s: &SpanData) -> otlp::Span {
    let (path, query) = split_query(&s.path_and_query);
    let str_ = |v: &str| Value::String(v.to_string());
    let mut attrs = vec![
        kv("http.request.method", str_(s.method.as_str())),
        kv("url.path", str_(path)),
        kv("url.scheme", str_(s.scheme)),
        kv("network.protocol.name", str_("http")),
        kv("network.protocol.version", str_(version_str(s.version))),
        kv("client.address", Value::String(s.peer.to_string())),
        kv("meshplane.listener", str_(&s.listener)),
    ];
    if let Some(q) = query {
        attrs.push(kv("url.query", str_(q)));
    }
    let (host, port) = split_authority(&s.authority);
    if !host.is_empty() {
        attrs.push(kv("server.address", str_(host)));
    }
    if let Some(p) = port {
        attrs.push(kv("server.port", Value::Int(p)));
    }
    if s.status != 0 {
        attrs.push(kv("http.response.status_code", Value::Int(s.status.into())));
    }
    if let Some(ua) = s.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
        attrs.push(kv("user_agent.original", str_(ua)));
    }
    if let Some(id) = s.request_id.as_ref().and_then(|v| v.to_str().ok()) {
        attrs.push(kv("meshplane.request_id", str_(id)));
    }
    if let Some(r) = &s.route {
        attrs.push(kv("http.route", str_(r)));
        attrs.push(kv("meshplane.route", str_(r)));
    }
    if let Some(c) = &s.cluster {
        attrs.push(kv("meshplane.cluster", str_(c)));
    }
    if let Some(h) = &s.upstream_host {
        attrs.push(kv("meshplane.upstream_host", str_(h)));
    }
    if s.retries > 0 {
        attrs.push(kv(
            "http.request.resend_count",
            Value::Int(s.retries.into()),
        ));
    }
    if !s.flags.is_empty() {
        attrs.push(kv("meshplane.response_flags", str_(&s.flags)));
    }
    attrs.push(kv("meshplane.response_details", str_(s.details)));
    let error = s.is_error();
    if error {
        let kind = if s.status == 0 {
            "downstream_disconnect".to_string()
        } else {
            s.status.to_string()
        };
        attrs.push(kv("error.type", Value::String(kind)));
    }
    let events = s
        .marks
        .iter()
        .map(|(m, t)| otlp::Event {
            time_unix_nano: s.nanos_at(*t),
            name: m.name().into(),
            attributes: Vec::new(),
        })
        .collect();
    otlp::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: span_name(s),
        kind: otlp::SPAN_KIND_SERVER,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.nanos_at(s.end.unwrap_or(s.started)),
        attributes: attrs,
        events,
        status: error.then(|| otlp::Status {
            message: s.details.to_string(),
            code: otlp::STATUS_ERROR,
        }),
        flags: u32::from(s.sampled),
    }
}

/// An upstream attempt as OpenTelemetry's HTTP client semantic conventions name things: a
/// CLIENT span named by the method, child of the request's SERVER span.
fn client_to_otlp(s: &SpanData, resend: usize, a: &Attempt) -> otlp::Span {
    let str_ = |v: &str| Value::String(v.to_string());
    let (host, port) = split_authority(&a.host);
    let scheme = if a.tls { "https" } else { "http" };
    let mut attrs = vec![
        kv("http.request.method", str_(s.method.as_str())),
        kv("server.address", str_(host)),
        kv("network.peer.address", str_(host)),
        kv(
            "url.full",
            Value::String(format!("{scheme}://{}{}", a.host, s.path_and_query)),
        ),
        kv("meshplane.upstream_host", str_(&a.host)),
    ];
    if let Some(p) = port {
        attrs.push(kv("server.port", Value::Int(p)));
    }
    if let Some(c) = &s.cluster {
        attrs.push(kv("meshplane.cluster", str_(c)));
    }
    if a.status != 0 {
        attrs.push(kv("http.response.status_code", Value::Int(a.status.into())));
    }
    if resend > 0 {
        attrs.push(kv("http.request.resend_count", Value::Int(resend as i64)));
    }
    // An attempt still open when the request ended was abandoned (the client went away).
    let error = match (a.error, a.status) {
        (Some(e), _) => Some(e.to_string()),
        (None, 0) => Some("_OTHER".to_string()),
        (None, st) if st >= 500 => Some(st.to_string()),
        _ => None,
    };
    if let Some(e) = &error {
        attrs.push(kv("error.type", str_(e)));
    }
    otlp::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: a.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.span_id.to_vec(),
        name: s.method.to_string(),
        kind: otlp::SPAN_KIND_CLIENT,
        start_time_unix_nano: s.nanos_at(a.started),
        end_time_unix_nano: s.nanos_at(a.end.or(s.end).unwrap_or(a.started)),
        attributes: attrs,
        events: Vec::new(),
        status: error.map(|e| otlp::Status {
            message: e,
            code: otlp::STATUS_ERROR,
        }),
        flags: u32::from(s.sampled),
    }
}

fn split_authority(a: &str) -> (&str, Option<i64>) {
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (a, None),
        },
        _ => (a, None),
    }
}

/// The ring buffer's view of a span (docs/admin.md `/traces`).
fn record(s: &SpanData) -> serde_json::Value {
    let ms = |t: std::time::Instant| t.saturating_duration_since(s.started).as_secs_f64() * 1e3;
    let marks: serde_json::Map<String, serde_json::Value> = s
        .marks
        .iter()
        .map(|(m, t)| (m.name().to_string(), ms(*t).into()))
        .collect();
    serde_json::json!({
        "trace_id": hex(&s.trace_id),
        "span_id": hex(&s.span_id),
        "parent_span_id": s.parent.map(|p| hex(&p)),
        "sampled": s.sampled,
        "name": span_name(s),
        "start_unix_nano": s.start_unix_nanos,
        "duration_ms": s.end.map_or(0.0, ms),
        "marks_ms": marks,
        "method": s.method.as_str(),
        "path": s.path_and_query,
        "authority": s.authority,
        "listener": &*s.listener,
        "route": s.route.as_deref(),
        "cluster": s.cluster.as_deref(),
        "upstream_host": s.upstream_host.as_deref(),
        "retries": s.retries,
        "attempts": s.attempts.iter().map(|a| serde_json::json!({
            "span_id": hex(&a.span_id),
            "upstream_host": &*a.host,
            "start_ms": ms(a.started),
            "duration_ms": a.end.or(s.end).map_or(0.0, |e| ms(e) - ms(a.started)),
            "status": a.status,
            "error": a.error,
        })).collect::<Vec<_>>(),
        "status": s.status,
        "response_flags": s.flags,
        "details": s.details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Arrival, Exporters};

    fn attr<'a>(span: &'a otlp::Span, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn attempts_are_client_spans_under_the_server_span_and_each_is_sent_upstream() {
        let exporters = Exporters::default();
        let spec: TracingSpec = serde_json::from_str(r#"{"serviceName": "t"}"#).unwrap();
        let tracing = exporters.tracing_for(&spec).unwrap();
        let mut req = http::Request::get("http://svc:8080/p?q=1")
            .body(())
            .unwrap();
        let listener: Arc<str> = "l".into();
        let arrival = Arrival {
            scheme: "http",
            peer: "127.0.0.1".parse().unwrap(),
            listener: &listener,
        };
        let mut span = tracing.begin(&mut req, arrival).unwrap();
        // A recorded request names no parent upstream until an attempt is made.
        assert!(req.headers().get("traceparent").is_none());
        let host: Arc<str> = "10.0.0.1:9080".into();
        let mut sent = Vec::new();
        for (tls, outcome) in [(false, Ok(503)), (true, Err("reset")), (false, Ok(200))] {
            let mut headers = http::HeaderMap::new();
            span.attempt(&host, tls, &mut headers);
            match outcome {
                Ok(status) => span.attempt_answered(status, status != 200),
                Err(e) => span.attempt_failed(e),
            }
            sent.push(headers["traceparent"].to_str().unwrap().to_string());
        }
        span.data().status = 200;
        let mut data = span.data.take().unwrap();
        data.end = Some(Instant::now());
        assert_eq!(data.span_count(), 4);
        let request = encode("t", &[data]);
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 4);
        let server = &spans[0];
        assert_eq!(server.kind, otlp::SPAN_KIND_SERVER);
        let want = [
            (None, Some("503"), "http"),
            (Some(1), Some("reset"), "https"),
            (Some(2), None, "http"),
        ];
        for ((client, header), (resend, error, scheme)) in spans[1..].iter().zip(&sent).zip(want) {
            assert_eq!(client.kind, otlp::SPAN_KIND_CLIENT);
            assert_eq!(client.parent_span_id, server.span_id);
            assert_eq!(client.trace_id, server.trace_id);
            assert!(header.contains(&hex(&client.span_id)), "{header}");
            assert_eq!(client.name, "GET");
            assert_eq!(
                attr(client, "server.address"),
                Some(&Value::String("10.0.0.1".into()))
            );
            assert_eq!(attr(client, "server.port"), Some(&Value::Int(9080)));
            assert_eq!(
                attr(client, "http.request.resend_count"),
                resend.map(Value::Int).as_ref()
            );
            assert_eq!(
                attr(client, "error.type"),
                error.map(|e| Value::String(e.into())).as_ref()
            );
            assert_eq!(client.status.is_some(), error.is_some());
            assert_eq!(
                attr(client, "url.full"),
                Some(&Value::String(format!("{scheme}://10.0.0.1:9080/p?q=1")))
            );
            assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
            assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
        }
        exporters.stop();
    }

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("svc:8080"), ("svc", Some(8080)));
        assert_eq!(split_authority("svc"), ("svc", None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
        assert_eq!(host_of("collector.local:4318"), "collector.local");
        assert_eq!(host_of("[::1]:4318"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
