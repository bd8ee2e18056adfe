//! The exporter thread: drains the span queue, keeps the recent-spans ring buffer, and POSTs
//! batches to the collector as OTLP/HTTP protobuf (`{otlpEndpoint}/v1/traces`). Blocking I/O
//! on its own thread, never on the request path: while it waits on a slow collector the
//! queue fills and the request path drops (and counts) spans instead of waiting.

use super::otlp::{self, kv, Value};
use super::{context, SpanData, TraceShared};
use crate::config::TracingSpec;
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
    pub service_name: String,
    pub queue_spans: usize,
    pub batch_spans: usize,
    pub timeout: Duration,
}

impl ExportSettings {
    pub fn from_spec(spec: &TracingSpec) -> Self {
        ExportSettings {
            endpoint: spec.otlp_endpoint.clone(),
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
                    send(&settings, &shared, &batch);
                    batch.clear();
                }
                if closed {
                    return;
                }
            }
        })?;
    Ok(tx)
}

fn send(settings: &ExportSettings, shared: &TraceShared, batch: &[Box<SpanData>]) {
    let Some(endpoint) = &settings.endpoint else {
        return;
    };
    shared.export_requests.inc();
    let body = || encode(&settings.service_name, batch).encode_to_vec();
    match post(endpoint, body, settings.timeout) {
        Ok(status) if (200..300).contains(&status) => {
            shared.spans_exported.add(batch.len() as u64);
        }
        _ => {
            shared.export_failures.inc();
            shared.spans_export_failed.add(batch.len() as u64);
        }
    }
}

/// POST `body` to `{endpoint}/v1/traces`; the response status. The body is encoded once
/// connected: a collector that is gone costs a refused connection, not an encoding too.
fn post(endpoint: &str, body: impl FnOnce() -> Vec<u8>, timeout: Duration) -> std::io::Result<u16> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad otlpEndpoint");
    let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let deadline = Instant::now() + timeout;
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
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
    let mut stream = stream.ok_or_else(|| last.unwrap_or_else(bad))?;
    let body = body();
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left()))?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {base}/v1/traces HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\nuser-agent: meshplane\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.set_read_timeout(Some(left()))?;
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
    let spans = batch.iter().map(|s| to_otlp(s)).collect();
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
        "status": s.status,
        "response_flags": s.flags,
        "details": s.details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("svc:8080"), ("svc", Some(8080)));
        assert_eq!(split_authority("svc"), ("svc", None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
    }
}
