//! The exporter thread: drains the span queue, keeps the recent-spans ring buffer, and POSTs
//! batches to the collector as OTLP/HTTP protobuf (`{otlpEndpoint}/v1/traces`, over TLS for
//! an `https://` endpoint). Blocking I/O on its own thread, never on the request path: while
//! it waits on a slow collector the queue fills and the request path drops (and counts) spans
//! instead of waiting.

use super::{context, otlp, queue, Attempt, SpanData, TraceShared};
use crate::config::{CollectorTls, TracingSpec};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasherDefault;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch is sent when it is this full, or this long after its first span.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// While spans come fast (at least BUSY_SPANS a drain), the queue is drained this often.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
const BUSY_SPANS: usize = 2;
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
) -> std::io::Result<queue::Sender<Arc<SpanData>>> {
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
    let (tx, rx) = queue::channel::<Arc<SpanData>>(settings.queue_spans);
    std::thread::Builder::new()
        .name("meshplane-trace".into())
        .spawn(move || {
            let mut batch: Vec<Arc<SpanData>> = Vec::new();
            let mut fresh: Vec<Arc<SpanData>> = Vec::new();
            let mut evicted: Vec<Arc<SpanData>> = Vec::new();
            let mut encoder = Encoder::default();
            let mut first_at = Instant::now();
            let mut busy = false;
            loop {
                // NOTE: while spans come slowly, the thread waits until one comes (or the
                // batch is due); while they come fast, it takes the queue every DRAIN_EVERY
                // instead, so that neither the request path (waking a waiting receiver) nor
                // this thread pays a wake-up per span.
                let due = || BATCH_DELAY.saturating_sub(first_at.elapsed());
                if busy {
                    let wait = if batch.is_empty() {
                        DRAIN_EVERY
                    } else {
                        DRAIN_EVERY.min(due())
                    };
                    std::thread::sleep(wait);
                } else {
                    rx.wait(if batch.is_empty() {
                        Duration::from_secs(3600)
                    } else {
                        due()
                    });
                }
                // NOTE: the ring keeps the span itself; /traces renders it when asked.
                let closed = rx.take_all(&mut fresh);
                busy = fresh.len() >= BUSY_SPANS;
                shared.remember_all(&fresh, &mut evicted);
                shared.give_back(&mut evicted);
                if settings.endpoint.is_none() {
                    shared.give_back(&mut fresh);
                }
                for span in fresh.drain(..) {
                    if batch.is_empty() {
                        first_at = Instant::now();
                    }
                    batch.push(span);
                    if batch.len() >= settings.batch_spans {
                        send(&settings, tls.as_ref(), &shared, &mut encoder, &batch);
                        shared.give_back(&mut batch);
                    }
                }
                if !batch.is_empty() && (closed || first_at.elapsed() >= BATCH_DELAY) {
                    send(&settings, tls.as_ref(), &shared, &mut encoder, &batch);
                    shared.give_back(&mut batch);
                }
                if closed {
                    // What it gave back in its last rounds: no request is left to take it.
                    shared.drop_spare();
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
    encoder: &mut Encoder,
    batch: &[Arc<SpanData>],
) {
    let Some(endpoint) = &settings.endpoint else {
        return;
    };
    shared.export_requests.inc();
    let service = &settings.service_name;
    let body = move || {
        let encoder = encoder;
        encoder.encode_parts(service, batch)
    };
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

fn spans(batch: &[Arc<SpanData>]) -> u64 {
    batch.iter().map(|s| s.span_count()).sum()
}

/// POST `body` to `{endpoint}/v1/traces` (TLS with `tls` for `https://`); the response
/// status. The body is encoded once connected: a collector that is gone costs a refused
/// connection, not an encoding too.
fn post<'a>(
    endpoint: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: impl FnOnce() -> (Vec<u8>, &'a [u8]),
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
fn exchange<'a, S: Read + Write + Timeouts>(
    mut stream: S,
    authority: &str,
    base: &str,
    body: impl FnOnce() -> (Vec<u8>, &'a [u8]),
    left: impl Fn() -> Duration,
) -> std::io::Result<u16> {
    // NOTE: the body is its small head and the batch's spans, written as they are (the
    // spans are not copied behind the head).
    let (body_head, spans) = body();
    stream.set_timeouts(left())?;
    let mut head = format!(
        "POST {base}/v1/traces HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\nuser-agent: meshplane\r\n\r\n",
        body_head.len() + spans.len()
    )
    .into_bytes();
    head.extend_from_slice(&body_head);
    stream.write_all(&head)?;
    stream.write_all(spans)?;
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
    // NOTE: a byte search ('?' is ASCII, so the split is on a char boundary): `split_once('?')`
    // went through the char searcher, ~75 instructions a request.
    match pq.bytes().position(|b| b == b'?') {
        Some(i) => (&pq[..i], Some(&pq[i + 1..])),
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

/// Reused buffers of one exporter thread: the batch's spans (each written in place), one
/// formatted attribute value, and the encoded parts of spans that depend only on the configuration.
#[derive(Default)]
pub struct Encoder {
    spans: Vec<u8>,
    peer: PeerText,
    authority: AuthoritySplit,
    constant: ConstantParts,
    server: Template<ServerShape, SERVER_PARTS>,
    client: Template<ClientShape, CLIENT_PARTS>,
}

/// The client's address as text, kept for the next span from the same client.
// NOTE: a sidecar's or gateway's spans come from few clients, mostly in runs: an address
// compared instead of written out (~60 instructions a span).
#[derive(Default)]
struct PeerText {
    last: Option<std::net::IpAddr>,
    text: Vec<u8>,
}

impl PeerText {
    fn get(&mut self, ip: std::net::IpAddr) -> &[u8] {
        if self.last != Some(ip) {
            let (mut v4, mut v6) = ([0; 15], String::new());
            let text = ip_text(ip, &mut v4, &mut v6);
            self.text.clear();
            self.text.extend_from_slice(text);
            self.last = Some(ip);
        }
        &self.text
    }
}

/// `split_authority` of the last authority, kept for the next span with the same one.
// NOTE: a comparison of a few bytes instead of the search and the port's parse (~60
// instructions a span).
#[derive(Default)]
struct AuthoritySplit {
    last: String,
    host_len: usize,
    port: Option<i64>,
}

impl AuthoritySplit {
    fn get<'a>(&mut self, a: &'a str) -> (&'a str, Option<i64>) {
        if self.last != a {
            let (host, port) = split_authority(a);
            self.last.clear();
            self.last.push_str(a);
            self.host_len = host.len();
            self.port = port;
        }
        // The host is a prefix of the authority (`split_authority`).
        (&a[..self.host_len], self.port)
    }
}

/// A span's name, kind and the attributes that are the same for every request of one
/// listener, route, cluster and host (and method, scheme, protocol version, outcome), encoded
/// once and copied thereafter.
// NOTE: keyed by the addresses of the configuration's `Arc<str>` names (and of the `&'static
// str`s); each entry keeps its `Arc`s alive, so an address in a key cannot be reused by
// another name while the entry exists. Bounded: cleared when full.
#[derive(Default)]
struct ConstantParts {
    server: Cache<[usize; 8]>,
    client: Cache<[usize; 3]>,
}

struct Cache<K> {
    map: HashMap<K, Pinned, BuildHasherDefault<WordHasher>>,
    /// The entry found last (its own copy: the map may be cleared).
    last: Option<(K, Pinned)>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            map: HashMap::default(),
            last: None,
        }
    }
}

const CONSTANT_PARTS_MAX: usize = 4096;

#[derive(Clone)]
struct Pinned {
    _names: [Option<Arc<str>>; 4],
    bytes: Arc<[u8]>,
}

fn addr(s: &str) -> usize {
    s.as_ptr() as usize
}

fn opt_addr(s: &Option<Arc<str>>) -> usize {
    s.as_deref().map_or(0, addr)
}

/// Standard methods by number (their names are static); 0: an extension method, not cached.
fn method_number(m: &http::Method) -> usize {
    use http::Method as M;
    [
        M::GET,
        M::POST,
        M::PUT,
        M::DELETE,
        M::HEAD,
        M::OPTIONS,
        M::PATCH,
        M::CONNECT,
        M::TRACE,
    ]
    .iter()
    .position(|x| x == m)
    .map_or(0, |i| i + 1)
}

/// A hasher for keys of machine words (FxHash's mixing): cheap where SipHash's resistance to
/// chosen keys buys nothing (the keys are addresses).
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // NOTE: a word at a time: `[usize; N]` keys arrive here as one slice of their bytes
        // (~90 per-byte rounds a request at 100% sampling).
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.write_u64(u64::from_ne_bytes(w.try_into().expect("8 bytes")));
        }
        for b in words.remainder() {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, w: usize) {
        self.write_u64(w as u64);
    }
}

impl<K: std::hash::Hash + Eq + Copy> Cache<K> {
    /// The parts of `key`, made by `make` if they are not cached.
    fn get(&mut self, key: K, make: impl FnOnce() -> Pinned) -> &[u8] {
        // NOTE: the last key first: the spans of a run of requests to one route, cluster and
        // host are found by comparing a few words, without hashing and probing (~100
        // instructions a request at 100% sampling).
        if !matches!(&self.last, Some((k, _)) if *k == key) {
            if self.map.len() >= CONSTANT_PARTS_MAX && !self.map.contains_key(&key) {
                self.map.clear();
            }
            let parts = self.map.entry(key).or_insert_with(make).clone();
            self.last = Some((key, parts));
        }
        self.last.as_ref().map_or(&[], |(_, p)| &p.bytes)
    }

    /// Parts that are not cached (an extension method's), kept until the next call.
    fn uncached(&mut self, key: K, parts: Pinned) -> &[u8] {
        self.last = Some((key, parts));
        self.last.as_ref().map_or(&[], |(_, p)| &p.bytes)
    }
}

/// The key of a SERVER span's constant parts (None: an extension method, not cached).
fn server_key(s: &SpanData) -> Option<[usize; 8]> {
    let method = method_number(&s.method);
    (method != 0).then(|| {
        [
            addr(&s.listener),
            opt_addr(&s.route),
            opt_addr(&s.cluster),
            opt_addr(&s.upstream_host),
            method,
            addr(s.scheme),
            addr(version_str(s.version)),
            addr(s.details),
        ]
    })
}

/// The key of a CLIENT span's constant parts (None: an extension method, not cached).
fn client_key(s: &SpanData, a: &Attempt) -> Option<[usize; 3]> {
    let method = method_number(&s.method);
    (method != 0).then(|| [addr(&a.host), opt_addr(&s.cluster), method])
}

impl ConstantParts {
    /// The SERVER span's name, kind and constant attributes.
    fn server(&mut self, s: &SpanData) -> &[u8] {
        match server_key(s) {
            Some(key) => self.server.get(key, || server_parts(s)),
            None => self.server.uncached([0; 8], server_parts(s)),
        }
    }

    /// A CLIENT span's name, kind and constant attributes.
    fn client(&mut self, s: &SpanData, a: &Attempt) -> &[u8] {
        match client_key(s, a) {
            Some(key) => self.client.get(key, || client_parts(s, a)),
            None => self.client.uncached([0; 3], client_parts(s, a)),
        }
    }
}

/// The parts found last (those of the span just written), for a `Template` to keep.
impl<K> Cache<K> {
    fn last_parts(&self) -> Option<Pinned> {
        self.last.as_ref().map(|(_, p)| p.clone())
    }
}

/// A span as written last, kept as the pattern of the next span of the same shape: one whose
/// lengths, presences, numbers and constant parts are all the same, so that its bytes are
/// the kept ones with its own ids, times and strings written over them (`at`: where each
/// one is in `bytes`).
// NOTE: the spans of a run of requests to one route from one client differ only in those;
// copying the previous one and writing them over skips every field's tag, lengths, key and
// bounds check. A span of another shape (another route, status or length of a string) is
// written field by field and becomes the pattern.
struct Template<K, const P: usize> {
    /// The shape `bytes` were written for (None: nothing kept yet).
    key: Option<K>,
    bytes: Vec<u8>,
    at: [usize; P],
    /// The constant parts `bytes` were written with: their names, whose addresses are in
    /// `key`, stay alive while kept, so that no other name can take one of those addresses.
    _constant: Option<Pinned>,
    /// Spans written over `bytes` (for the tests to know the pattern served).
    #[cfg(test)]
    reused: usize,
}

impl<K, const P: usize> Default for Template<K, P> {
    fn default() -> Self {
        Template {
            key: None,
            bytes: Vec::new(),
            at: [0; P],
            _constant: None,
            #[cfg(test)]
            reused: 0,
        }
    }
}

impl<K: PartialEq, const P: usize> Template<K, P> {
    /// The kept span appended to `out` when it has the shape `key`: the bytes appended, for
    /// the caller to write the span's own parts over at `self.at`.
    #[inline]
    fn reuse<'o>(&mut self, key: &K, out: &'o mut Vec<u8>) -> Option<&'o mut [u8]> {
        if self.key.as_ref() != Some(key) {
            return None;
        }
        #[cfg(test)]
        {
            self.reused += 1;
        }
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        Some(&mut out[start..])
    }

    /// Keep the span written at `out[start..]` with the shape `key`. Its body began at
    /// `body` from `start` (as `Room::message_start` returned it) and was `body_len` bytes
    /// long; `at` are where its parts were from `start`, as written before `message_end`
    /// (which moves the body when its length takes other than two bytes).
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &mut self,
        key: K,
        constant: Option<Pinned>,
        out: &[u8],
        start: usize,
        body: usize,
        body_len: usize,
        at: [usize; P],
    ) {
        let written = &out[start..];
        let head = written.len() - body_len;
        self.bytes.clear();
        self.bytes.extend_from_slice(written);
        self.at = at.map(|p| p - body + head);
        self.key = Some(key);
        self._constant = constant;
    }
}

/// `src` written over `dst` from `at`.
#[inline]
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    // NOTE: most optional strings are absent or empty: no call to copy nothing.
    if !src.is_empty() {
        dst[at..at + src.len()].copy_from_slice(src);
    }
}

/// The most marks a span may have for its shape to be kept (two bits each in `ServerShape`).
const TEMPLATE_MARKS: usize = 16;

/// What a SERVER span's bytes depend on other than its ids, times and strings (whose lengths
/// are in it): its constant parts' key, the lengths and presences of its strings, its
/// numbers, and which marks it has.
type ServerShape = [u64; 20];

/// Where a SERVER span's varying parts are (indices of `Template::at`); the marks' times
/// from `S_MARKS` on.
const S_TRACE_ID: usize = 0;
const S_SPAN_ID: usize = 1;
const S_STATE: usize = 2;
const S_PARENT: usize = 3;
const S_START: usize = 4;
const S_END: usize = 5;
const S_PATH: usize = 6;
const S_PEER: usize = 7;
const S_QUERY: usize = 8;
const S_HOST: usize = 9;
const S_USER_AGENT: usize = 10;
const S_REQUEST_ID: usize = 11;
const S_FLAGS: usize = 12;
const S_MARKS: usize = 13;
const SERVER_PARTS: usize = S_MARKS + TEMPLATE_MARKS;

/// What a CLIENT span's bytes depend on other than its ids, times, path and error name (whose
/// lengths are in it).
type ClientShape = [u64; 7];

/// Where a CLIENT span's varying parts are.
const C_TRACE_ID: usize = 0;
const C_SPAN_ID: usize = 1;
const C_PARENT: usize = 2;
const C_START: usize = 3;
const C_END: usize = 4;
const C_PATH: usize = 5;
const C_ERROR: usize = 6;
const C_ERROR_STATUS: usize = 7;
const CLIENT_PARTS: usize = 8;

fn len_or_none(s: Option<&str>) -> u64 {
    s.map_or(0, |s| s.len() as u64 + 1)
}

fn server_parts(s: &SpanData) -> Pinned {
    use otlp::{key, span as f};
    const A: u32 = f::ATTRIBUTES;
    let mut out = Vec::with_capacity(512);
    let mut name = String::new();
    span_name_into(&mut name, s);
    otlp::bytes(&mut out, f::NAME, name.as_bytes());
    otlp::int(&mut out, f::KIND, otlp::SPAN_KIND_SERVER.into());
    otlp::attr_str(&mut out, A, key!("http.request.method"), s.method.as_str());
    otlp::attr_str(&mut out, A, key!("url.scheme"), s.scheme);
    otlp::attr_str(&mut out, A, key!("network.protocol.name"), "http");
    let version = version_str(s.version);
    otlp::attr_str(&mut out, A, key!("network.protocol.version"), version);
    otlp::attr_str(&mut out, A, key!("meshplane.listener"), &s.listener);
    if let Some(r) = &s.route {
        otlp::attr_str(&mut out, A, key!("http.route"), r);
        otlp::attr_str(&mut out, A, key!("meshplane.route"), r);
    }
    if let Some(c) = &s.cluster {
        otlp::attr_str(&mut out, A, key!("meshplane.cluster"), c);
    }
    if let Some(h) = &s.upstream_host {
        otlp::attr_str(&mut out, A, key!("meshplane.upstream_host"), h);
    }
    otlp::attr_str(&mut out, A, key!("meshplane.response_details"), s.details);
    Pinned {
        _names: [
            Some(s.listener.clone()),
            s.route.clone(),
            s.cluster.clone(),
            s.upstream_host.clone(),
        ],
        bytes: out.into(),
    }
}

fn client_parts(s: &SpanData, a: &Attempt) -> Pinned {
    use otlp::{key, span as f};
    const A: u32 = f::ATTRIBUTES;
    let mut out = Vec::with_capacity(256);
    otlp::bytes(&mut out, f::NAME, s.method.as_str().as_bytes());
    otlp::int(&mut out, f::KIND, otlp::SPAN_KIND_CLIENT.into());
    let (host, port) = split_authority(&a.host);
    otlp::attr_str(&mut out, A, key!("http.request.method"), s.method.as_str());
    otlp::attr_str(&mut out, A, key!("server.address"), host);
    otlp::attr_str(&mut out, A, key!("network.peer.address"), host);
    otlp::attr_str(&mut out, A, key!("meshplane.upstream_host"), &a.host);
    if let Some(p) = port {
        otlp::attr_int(&mut out, A, key!("server.port"), p);
    }
    if let Some(c) = &s.cluster {
        otlp::attr_str(&mut out, A, key!("meshplane.cluster"), c);
    }
    Pinned {
        _names: [Some(a.host.clone()), s.cluster.clone(), None, None],
        bytes: out.into(),
    }
}

/// An address as text: IPv4 in dotted decimal without `fmt`, in `v4`; IPv6 through
/// `Display`, in `v6`.
// NOTE: written into a stack buffer by index: a `String` push per character was ~10
// instructions each.
fn ip_text<'a>(ip: std::net::IpAddr, v4: &'a mut [u8; 15], v6: &'a mut String) -> &'a [u8] {
    match ip {
        std::net::IpAddr::V4(a) => {
            let mut n = 0;
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    v4[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    v4[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    v4[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                v4[n] = b'0' + o % 10;
                n += 1;
            }
            &v4[..n]
        }
        ip => {
            v6.clear();
            let _ = write!(v6, "{ip}");
            v6.as_bytes()
        }
    }
}

impl Encoder {
    /// The batch as one `ExportTraceServiceRequest`: a SERVER span per request, as
    /// OpenTelemetry's HTTP server semantic conventions name things plus meshplane's own
    /// attributes for what the proxy chose, and a CLIENT span per upstream attempt.
    #[cfg(test)]
    pub fn encode<S: std::ops::Deref<Target = SpanData>>(
        &mut self,
        service: &str,
        batch: &[S],
    ) -> Vec<u8> {
        let (mut head, spans) = self.encode_parts(service, batch);
        head.extend_from_slice(spans);
        head
    }

    /// `encode` as the request's head and its spans, which follow the head on the wire.
    pub fn encode_parts<S: std::ops::Deref<Target = SpanData>>(
        &mut self,
        service: &str,
        batch: &[S],
    ) -> (Vec<u8>, &[u8]) {
        self.spans.clear();
        for s in batch {
            self.server_span(s);
            for (i, a) in s.attempts.iter().enumerate() {
                self.client_span(s, i, a);
            }
        }
        let mut resource = Vec::with_capacity(64 + service.len());
        otlp::attr_str(&mut resource, 1, otlp::key!("service.name"), service);
        otlp::attr_str(
            &mut resource,
            1,
            otlp::key!("telemetry.sdk.name"),
            "meshplane",
        );
        let head = otlp::request_head(
            &resource,
            "meshplane",
            env!("CARGO_PKG_VERSION"),
            self.spans.len(),
        );
        (head, &self.spans)
    }

    fn server_span(&mut self, s: &SpanData) {
        use otlp::{key, span as f, FIELD_MAX};
        const A: u32 = f::ATTRIBUTES;
        let peer = self.peer.get(s.peer);
        let state = s.tracestate();
        let user_agent = s.user_agent();
        let request_id = s.request_id();
        let (path, query) = split_query(s.path_and_query());
        let (host, port) = self.authority.get(s.authority());
        let (start_nanos, end_nanos) = (s.start_unix_nanos, s.nanos_at(s.end.unwrap_or(s.started)));
        let shape = server_key(s)
            .filter(|_| s.marks.len() <= TEMPLATE_MARKS)
            .map(|c| {
                let mut marks = s.marks.len() as u64;
                for (i, (m, _)) in s.marks.iter().enumerate() {
                    marks |= (*m as u64) << (8 + 2 * i);
                }
                let bits = u64::from(s.parent.is_some())
                    | u64::from(s.sampled) << 1
                    | u64::from(start_nanos != 0) << 2
                    | u64::from(end_nanos != 0) << 3
                    | u64::from(port.is_some()) << 4;
                [
                    c[0] as u64,
                    c[1] as u64,
                    c[2] as u64,
                    c[3] as u64,
                    c[4] as u64,
                    c[5] as u64,
                    c[6] as u64,
                    c[7] as u64,
                    state.len() as u64,
                    path.len() as u64,
                    len_or_none(query),
                    peer.len() as u64,
                    host.len() as u64,
                    port.unwrap_or(0) as u64,
                    len_or_none(user_agent),
                    len_or_none(request_id),
                    s.flags.len() as u64,
                    u64::from(s.status) | u64::from(s.retries) << 16,
                    bits,
                    marks,
                ]
            });
        if let Some(dst) = shape
            .as_ref()
            .and_then(|k| self.server.reuse(k, &mut self.spans))
        {
            let at = &self.server.at;
            put(dst, at[S_TRACE_ID], &s.trace_id);
            put(dst, at[S_SPAN_ID], &s.span_id);
            put(dst, at[S_STATE], state.as_bytes());
            if let Some(p) = &s.parent {
                put(dst, at[S_PARENT], p);
            }
            put(dst, at[S_START], &start_nanos.to_le_bytes());
            put(dst, at[S_END], &end_nanos.to_le_bytes());
            put(dst, at[S_PATH], path.as_bytes());
            put(dst, at[S_PEER], peer);
            put(dst, at[S_QUERY], query.unwrap_or("").as_bytes());
            put(dst, at[S_HOST], host.as_bytes());
            put(dst, at[S_USER_AGENT], user_agent.unwrap_or("").as_bytes());
            put(dst, at[S_REQUEST_ID], request_id.unwrap_or("").as_bytes());
            put(dst, at[S_FLAGS], s.flags.as_bytes());
            for ((_, t), at) in s.marks.iter().zip(&at[S_MARKS..]) {
                put(dst, *at, &s.nanos_at(*t).to_le_bytes());
            }
            return;
        }
        // Name, kind, and the method, scheme, protocol, listener, route, cluster, host and
        // details attributes.
        let constant = self.constant.server(s);
        let error = s.is_error();
        let mut digits = [0; 5];
        // NOTE: the error type only for an error: the status in decimal was ~60 instructions
        // a span.
        let kind = match s.status {
            _ if !error => "",
            0 => "downstream_disconnect",
            st => status_text(st, &mut digits),
        };
        // NOTE: room for every field below at its longest (19 and a field per mark), so the
        // span is written after one reservation (`otlp::Room`).
        let room = 3
            + 40
            + constant.len()
            + FIELD_MAX * (19 + s.marks.len())
            + state.len()
            + path.len()
            + peer.len()
            + query.map_or(0, str::len)
            + host.len()
            + user_agent.map_or(0, str::len)
            + request_id.map_or(0, str::len)
            + s.flags.len()
            + kind.len()
            + s.details.len();
        let start = self.spans.len();
        let (body, at) = otlp::write_in(&mut self.spans, room, |o| {
            let body = o.message_start(2);
            // Where each varying part starts: after it is written, its length back.
            let mut at = [body; SERVER_PARTS];
            let mark = |at: &mut usize, o: &otlp::Room<'_>, len: usize| *at = o.at() - len;
            o.bytes(f::TRACE_ID, &s.trace_id);
            mark(&mut at[S_TRACE_ID], o, 16);
            o.bytes(f::SPAN_ID, &s.span_id);
            mark(&mut at[S_SPAN_ID], o, 8);
            o.bytes(f::TRACE_STATE, state.as_bytes());
            mark(&mut at[S_STATE], o, state.len());
            o.bytes(
                f::PARENT_SPAN_ID,
                s.parent.as_ref().map_or(&[][..], |p| &p[..]),
            );
            mark(&mut at[S_PARENT], o, if s.parent.is_some() { 8 } else { 0 });
            o.slice(constant);
            o.fixed64(f::START, start_nanos);
            mark(&mut at[S_START], o, if start_nanos != 0 { 8 } else { 0 });
            o.fixed64(f::END, end_nanos);
            mark(&mut at[S_END], o, if end_nanos != 0 { 8 } else { 0 });
            o.attr_str(A, key!("url.path"), path);
            mark(&mut at[S_PATH], o, path.len());
            o.attr_bytes(A, key!("client.address"), peer);
            mark(&mut at[S_PEER], o, peer.len());
            if let Some(q) = query {
                o.attr_str(A, key!("url.query"), q);
                mark(&mut at[S_QUERY], o, q.len());
            }
            if !host.is_empty() {
                o.attr_str(A, key!("server.address"), host);
                mark(&mut at[S_HOST], o, host.len());
            }
            if let Some(p) = port {
                o.attr_int(A, key!("server.port"), p);
            }
            if s.status != 0 {
                o.attr_int(A, key!("http.response.status_code"), s.status.into());
            }
            if let Some(ua) = user_agent {
                o.attr_str(A, key!("user_agent.original"), ua);
                mark(&mut at[S_USER_AGENT], o, ua.len());
            }
            if let Some(id) = request_id {
                o.attr_str(A, key!("meshplane.request_id"), id);
                mark(&mut at[S_REQUEST_ID], o, id.len());
            }
            if s.retries > 0 {
                o.attr_int(A, key!("http.request.resend_count"), s.retries.into());
            }
            if !s.flags.is_empty() {
                o.attr_str(A, key!("meshplane.response_flags"), &s.flags);
                mark(&mut at[S_FLAGS], o, s.flags.len());
            }
            if error {
                o.attr_str(A, key!("error.type"), kind);
            }
            for (i, (m, t)) in s.marks.iter().enumerate() {
                let name = m.name();
                o.event(f::EVENTS, s.nanos_at(*t), name);
                if let Some(at) = at.get_mut(S_MARKS + i) {
                    // The event's time, then its name's tag and length (a byte each).
                    mark(at, o, 8 + 2 + name.len());
                }
            }
            if error {
                o.error_status(f::STATUS, s.details);
            }
            o.fixed32(f::FLAGS, u32::from(s.sampled));
            (body, at)
        });
        let body_len = self.spans.len() - (start + body);
        otlp::message_end(&mut self.spans, start + body);
        if let Some(shape) = shape {
            let constant = self.constant.server.last_parts();
            self.server
                .keep(shape, constant, &self.spans, start, body, body_len, at);
        }
    }

    /// An upstream attempt as OpenTelemetry's HTTP client semantic conventions name things: a
    /// CLIENT span named by the method, child of the request's SERVER span.
    fn client_span(&mut self, s: &SpanData, resend: usize, a: &Attempt) {
        use otlp::{key, span as f, FIELD_MAX};
        const A: u32 = f::ATTRIBUTES;
        let path = s.path_and_query();
        let (start_nanos, end_nanos) = (
            s.nanos_at(a.started),
            s.nanos_at(a.end.or(s.end).unwrap_or(a.started)),
        );
        let shape = client_key(s, a).map(|c| {
            let bits = u64::from(a.tls)
                | u64::from(s.sampled) << 1
                | u64::from(start_nanos != 0) << 2
                | u64::from(end_nanos != 0) << 3;
            [
                c[0] as u64,
                c[1] as u64,
                c[2] as u64,
                path.len() as u64,
                u64::from(a.status) | bits << 16,
                resend as u64,
                len_or_none(a.error),
            ]
        });
        if let Some(dst) = shape
            .as_ref()
            .and_then(|k| self.client.reuse(k, &mut self.spans))
        {
            let at = &self.client.at;
            put(dst, at[C_TRACE_ID], &s.trace_id);
            put(dst, at[C_SPAN_ID], &a.span_id);
            put(dst, at[C_PARENT], &s.span_id);
            put(dst, at[C_START], &start_nanos.to_le_bytes());
            put(dst, at[C_END], &end_nanos.to_le_bytes());
            put(dst, at[C_PATH], path.as_bytes());
            if let Some(e) = a.error {
                put(dst, at[C_ERROR], e.as_bytes());
                put(dst, at[C_ERROR_STATUS], e.as_bytes());
            }
            return;
        }
        // Name, kind, and the method, address, port, host and cluster attributes.
        let constant = self.constant.client(s, a);
        let scheme = if a.tls { "https://" } else { "http://" };
        // An attempt still open when the request ended was abandoned (the client went away).
        let mut digits = [0; 5];
        let error = match (a.error, a.status) {
            (Some(e), _) => Some(e),
            (None, 0) => Some("_OTHER"),
            (None, st) if st >= 500 => Some(status_text(st, &mut digits)),
            _ => None,
        };
        // NOTE: room for every field below at its longest (11), as in `server_span`.
        let room = 3
            + 40
            + constant.len()
            + FIELD_MAX * 11
            + scheme.len()
            + a.host.len()
            + path.len()
            + 2 * error.map_or(0, str::len);
        let start = self.spans.len();
        let (body, at) = otlp::write_in(&mut self.spans, room, |o| {
            let body = o.message_start(2);
            let mut at = [body; CLIENT_PARTS];
            let mark = |at: &mut usize, o: &otlp::Room<'_>, len: usize| *at = o.at() - len;
            o.bytes(f::TRACE_ID, &s.trace_id);
            mark(&mut at[C_TRACE_ID], o, 16);
            o.bytes(f::SPAN_ID, &a.span_id);
            mark(&mut at[C_SPAN_ID], o, 8);
            o.bytes(f::PARENT_SPAN_ID, &s.span_id);
            mark(&mut at[C_PARENT], o, 8);
            o.slice(constant);
            o.fixed64(f::START, start_nanos);
            mark(&mut at[C_START], o, if start_nanos != 0 { 8 } else { 0 });
            o.fixed64(f::END, end_nanos);
            mark(&mut at[C_END], o, if end_nanos != 0 { 8 } else { 0 });
            o.attr_str_parts(A, key!("url.full"), &[scheme, &a.host, path]);
            mark(&mut at[C_PATH], o, path.len());
            if a.status != 0 {
                o.attr_int(A, key!("http.response.status_code"), a.status.into());
            }
            if resend > 0 {
                o.attr_int(A, key!("http.request.resend_count"), resend as i64);
            }
            if let Some(e) = error {
                o.attr_str(A, key!("error.type"), e);
                mark(&mut at[C_ERROR], o, e.len());
                o.error_status(f::STATUS, e);
                // The message, then the code's tag and value (a byte each).
                mark(&mut at[C_ERROR_STATUS], o, e.len() + 2);
            }
            o.fixed32(f::FLAGS, u32::from(s.sampled));
            (body, at)
        });
        let body_len = self.spans.len() - (start + body);
        otlp::message_end(&mut self.spans, start + body);
        if let Some(shape) = shape {
            let constant = self.constant.client.last_parts();
            self.client
                .keep(shape, constant, &self.spans, start, body, body_len, at);
        }
    }
}

/// A status code in decimal (`{st}`), without `fmt`.
fn status_text(st: u16, buf: &mut [u8; 5]) -> &str {
    let mut at = buf.len();
    let mut v = st;
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).expect("ASCII digits")
}

/// The span's name: OpenTelemetry's `{method} {route}` (the route's name stands for the
/// template), or just the method when no route matched.
fn span_name_into(t: &mut String, s: &SpanData) {
    t.push_str(s.method.as_str());
    if let Some(r) = &s.route {
        t.push(' ');
        t.push_str(r);
    }
}

fn split_authority(a: &str) -> (&str, Option<i64>) {
    // NOTE: a byte search (':' and ']' are ASCII, so the split is on a char boundary);
    // `rsplit_once(':')` and `contains(']')` went through the char searcher, ~100
    // instructions for a short host.
    let split = a
        .bytes()
        .rposition(|c| c == b':')
        .map(|i| (&a[..i], &a[i + 1..]));
    match split {
        Some((h, p)) if !h.is_empty() && !p.as_bytes().contains(&b']') => match parse_i64(p) {
            Some(port) => (h, Some(port)),
            None => (a, None),
        },
        _ => (a, None),
    }
}

/// `s.parse::<i64>().ok()`, with a short path for what a port is: 1 to 18 ASCII digits.
fn parse_i64(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if (1..=18).contains(&b.len()) && b.iter().all(u8::is_ascii_digit) {
        // NOTE: 18 digits cannot overflow an i64.
        return Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')));
    }
    s.parse().ok()
}

/// The ring buffer's view of a span (docs/admin.md `/traces`).
pub fn record(s: &SpanData) -> serde_json::Value {
    let mut name = String::new();
    span_name_into(&mut name, s);
    let ms = |t: super::Moment| t.since(s.started) as f64 / 1e6;
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
        "name": name,
        "start_unix_nano": s.start_unix_nanos,
        "duration_ms": s.end.map_or(0.0, ms),
        "marks_ms": marks,
        "method": s.method.as_str(),
        "path": s.path_and_query(),
        "authority": s.authority(),
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
    use crate::trace::otlp::decode::{self, Value};
    use crate::trace::{Arrival, Exporters};
    use prost::Message;

    fn attr<'a>(span: &'a decode::Span, key: &str) -> Option<&'a Value> {
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
        let mut span = tracing
            .begin(&mut req, arrival, crate::trace::W3cHeader::Present)
            .unwrap();
        // A recorded request names no parent upstream until an attempt is made.
        assert!(req.headers().get("traceparent").is_none());
        let host: Arc<str> = "10.0.0.1:9080".into();
        let mut sent = Vec::new();
        for (tls, outcome) in [(false, Ok(503)), (true, Err("reset")), (false, Ok(200))] {
            let mut headers = http::HeaderMap::new();
            span.attempt(&host, tls, &mut headers, None);
            match outcome {
                Ok(status) => span.attempt_answered(status, status != 200),
                Err(e) => span.attempt_failed(e),
            }
            sent.push(headers["traceparent"].to_str().unwrap().to_string());
        }
        span.data().status = 200;
        span.data().end = Some(crate::trace::Moment::now());
        let data = span.data.take().unwrap();
        assert_eq!(data.span_count(), 4);
        let bytes = Encoder::default().encode("t", &[data]);
        let request = decode::ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let scope = &request.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "meshplane");
        let spans = &scope.spans;
        assert_eq!(spans.len(), 4);
        let server = &spans[0];
        assert_eq!(server.kind, otlp::SPAN_KIND_SERVER);
        assert_eq!(server.name, "GET");
        assert_eq!(attr(server, "url.path"), Some(&Value::String("/p".into())));
        assert_eq!(
            attr(server, "url.query"),
            Some(&Value::String("q=1".into()))
        );
        assert_eq!(attr(server, "server.port"), Some(&Value::Int(8080)));
        assert_eq!(
            attr(server, "http.response.status_code"),
            Some(&Value::Int(200))
        );
        assert_eq!(server.flags, 1);
        assert!(server.status.is_none() && server.parent_span_id.is_empty());
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

    /// The span encoders as they were before `otlp::Room` (appending to a `Vec`), to compare
    /// with byte for byte.
    fn reference_spans(out: &mut Vec<u8>, s: &SpanData) {
        use otlp::{key, span as f};
        const A: u32 = f::ATTRIBUTES;
        let mut constant = ConstantParts::default();
        let body = otlp::message_start(out, 2);
        otlp::bytes(out, f::TRACE_ID, &s.trace_id);
        otlp::bytes(out, f::SPAN_ID, &s.span_id);
        otlp::bytes(out, f::TRACE_STATE, s.tracestate().as_bytes());
        otlp::bytes(
            out,
            f::PARENT_SPAN_ID,
            s.parent.as_ref().map_or(&[][..], |p| &p[..]),
        );
        out.extend_from_slice(constant.server(s));
        otlp::fixed64(out, f::START, s.start_unix_nanos);
        otlp::fixed64(out, f::END, s.nanos_at(s.end.unwrap_or(s.started)));
        let (path, query) = split_query(s.path_and_query());
        otlp::attr_str(out, A, key!("url.path"), path);
        otlp::attr_str(out, A, key!("client.address"), &s.peer.to_string());
        if let Some(q) = query {
            otlp::attr_str(out, A, key!("url.query"), q);
        }
        let (host, port) = split_authority(s.authority());
        if !host.is_empty() {
            otlp::attr_str(out, A, key!("server.address"), host);
        }
        if let Some(p) = port {
            otlp::attr_int(out, A, key!("server.port"), p);
        }
        if s.status != 0 {
            otlp::attr_int(out, A, key!("http.response.status_code"), s.status.into());
        }
        if let Some(ua) = s.user_agent() {
            otlp::attr_str(out, A, key!("user_agent.original"), ua);
        }
        if let Some(id) = s.request_id() {
            otlp::attr_str(out, A, key!("meshplane.request_id"), id);
        }
        if s.retries > 0 {
            otlp::attr_int(out, A, key!("http.request.resend_count"), s.retries.into());
        }
        if !s.flags.is_empty() {
            otlp::attr_str(out, A, key!("meshplane.response_flags"), &s.flags);
        }
        let error = s.is_error();
        if error {
            let kind = match s.status {
                0 => "downstream_disconnect".to_string(),
                st => format!("{st}"),
            };
            otlp::attr_str(out, A, key!("error.type"), &kind);
        }
        for (m, t) in &s.marks {
            otlp::event(out, f::EVENTS, s.nanos_at(*t), m.name());
        }
        if error {
            otlp::error_status(out, f::STATUS, s.details);
        }
        otlp::fixed32(out, f::FLAGS, u32::from(s.sampled));
        otlp::message_end(out, body);
        for (resend, a) in s.attempts.iter().enumerate() {
            let body = otlp::message_start(out, 2);
            otlp::bytes(out, f::TRACE_ID, &s.trace_id);
            otlp::bytes(out, f::SPAN_ID, &a.span_id);
            otlp::bytes(out, f::PARENT_SPAN_ID, &s.span_id);
            out.extend_from_slice(constant.client(s, a));
            otlp::fixed64(out, f::START, s.nanos_at(a.started));
            otlp::fixed64(
                out,
                f::END,
                s.nanos_at(a.end.or(s.end).unwrap_or(a.started)),
            );
            let scheme = if a.tls { "https://" } else { "http://" };
            otlp::attr_str_parts(
                out,
                A,
                key!("url.full"),
                &[scheme, &a.host, s.path_and_query()],
            );
            if a.status != 0 {
                otlp::attr_int(out, A, key!("http.response.status_code"), a.status.into());
            }
            if resend > 0 {
                otlp::attr_int(out, A, key!("http.request.resend_count"), resend as i64);
            }
            let error = match (a.error, a.status) {
                (Some(e), _) => Some(e.to_string()),
                (None, 0) => Some("_OTHER".to_string()),
                (None, st) if st >= 500 => Some(format!("{st}")),
                _ => None,
            };
            if let Some(e) = error {
                otlp::attr_str(out, A, key!("error.type"), &e);
                otlp::error_status(out, f::STATUS, &e);
            }
            otlp::fixed32(out, f::FLAGS, u32::from(s.sampled));
            otlp::message_end(out, body);
        }
    }

    /// A listener's, route's, cluster's and host's names, the same `Arc`s each time.
    fn names() -> [Arc<str>; 4] {
        static NAMES: std::sync::OnceLock<[Arc<str>; 4]> = std::sync::OnceLock::new();
        NAMES
            .get_or_init(|| ["l", "r", "c", "10.0.0.1:9080"].map(Arc::from))
            .clone()
    }

    /// A recorded request of `uri` with `headers` from `peer`, through `attempts` (each an
    /// upstream status or an error), answered `status`.
    fn recorded(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        peer: &str,
        attempts: &[Result<u16, &'static str>],
        status: u16,
    ) -> Arc<SpanData> {
        let exporters = Exporters::default();
        let spec: TracingSpec =
            serde_json::from_str(r#"{"serviceName": "t", "keepErrors": true}"#).unwrap();
        let tracing = exporters.tracing_for(&spec).unwrap();
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        // The configuration's names, shared by every request as they are in a snapshot.
        let [listener, route, cluster, host] = names();
        let arrival = Arrival {
            scheme: "http",
            peer: peer.parse().unwrap(),
            listener: &listener,
        };
        let w3c = if req.headers().contains_key("traceparent") {
            crate::trace::W3cHeader::Present
        } else {
            crate::trace::W3cHeader::Absent
        };
        let mut span = tracing.begin(&mut req, arrival, w3c).unwrap();
        span.mark(crate::trace::Mark::Routed);
        span.data().route = Some(route);
        span.data().cluster = Some(cluster);
        for (i, outcome) in attempts.iter().enumerate() {
            span.attempt(&host, i % 2 == 1, &mut http::HeaderMap::new(), None);
            match outcome {
                Ok(st) => span.attempt_answered(*st, i + 1 < attempts.len()),
                Err(e) => span.attempt_failed(e),
            }
            if i + 1 < attempts.len() {
                span.mark(crate::trace::Mark::Retry);
                span.data().retries += 1;
            }
        }
        span.mark(crate::trace::Mark::FirstByte);
        span.data().status = status;
        if status >= 500 {
            span.data().flags.push_str("URX");
            span.data().details = "upstream_reset_before_response_started";
        }
        span.data().end = Some(crate::trace::Moment::now());
        let data = span.data.take().unwrap();
        exporters.stop();
        data
    }

    #[test]
    fn spans_written_in_reserved_room_are_the_spans_appended_before() {
        let long = "/".to_string() + &"a".repeat(20_000);
        let medium = format!("/{}?q={}", "p".repeat(100), "v".repeat(100));
        let cases = [
            recorded(
                "GET",
                "http://svc:8080/p?q=1",
                &[],
                "127.0.0.1",
                &[Ok(200)],
                200,
            ),
            recorded(
                "POST",
                "/x",
                &[
                    ("host", "svc.local"),
                    ("user-agent", "curl/8"),
                    ("x-request-id", "abc"),
                    ("tracestate", "k=v"),
                    (
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                ],
                "2001:db8::1",
                &[Ok(503), Err("reset"), Ok(502)],
                502,
            ),
            recorded(
                "PURGE",
                &medium,
                &[("host", "[::1]:81")],
                "10.1.2.3",
                &[],
                0,
            ),
            recorded(
                "GET",
                &long,
                &[("user-agent", &"u".repeat(300))],
                "1.2.3.4",
                &[Ok(204)],
                204,
            ),
            recorded(
                "GET",
                "http://h/",
                &[],
                "127.0.0.1",
                &[Err("connect_failure")],
                503,
            ),
        ];
        for (i, s) in cases.iter().enumerate() {
            let mut encoder = Encoder::default();
            let (_, spans) = encoder.encode_parts("t", std::slice::from_ref(s));
            let mut want = Vec::new();
            reference_spans(&mut want, s);
            assert!(spans == &want[..], "case {i}");
        }
        // And one batch of all of them, through one encoder; then again, each twice in a row
        // and alternating (the constant parts cached, and the last of them found again).
        let mut encoder = Encoder::default();
        let mut again: Vec<_> = cases.iter().chain(&cases).cloned().collect();
        again.extend(cases.iter().flat_map(|c| [c.clone(), c.clone()]));
        for batch in [&cases[..], &again] {
            let mut want = Vec::new();
            for s in batch {
                reference_spans(&mut want, s);
            }
            let (_, spans) = encoder.encode_parts("t", batch);
            assert!(spans == &want[..]);
        }
        let request = {
            let (mut head, spans) = encoder.encode_parts("t", &cases);
            head.extend_from_slice(spans);
            decode::ExportTraceServiceRequest::decode(&head[..]).unwrap()
        };
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2 + 4 + 1 + 2 + 2);
        assert_eq!(
            attr(&spans[6], "url.path"),
            Some(&Value::String(medium[..101].into()))
        );
        assert_eq!(attr(&spans[7], "url.path"), Some(&Value::String(long)));
    }

    #[test]
    fn a_span_written_over_the_last_of_its_shape_is_the_span_written_in_full() {
        // Spans that differ from each other in one thing each: in their ids and times only
        // (each is recorded anew), in a string of the same length, or in a length, a
        // presence, a number or a mark. Each written after each other (through one encoder:
        // the one before it kept as the pattern) must be the reference's bytes.
        let plain = |uri: &str| recorded("GET", uri, &[], "127.0.0.1", &[Ok(200)], 200);
        let with = |headers: &[(&str, &str)]| {
            recorded("GET", "/p?q=1", headers, "127.0.0.1", &[Ok(200)], 200)
        };
        let failed = |attempts: &[Result<u16, &'static str>], status| {
            recorded(
                "GET",
                "http://svc:8080/p?q=1",
                &[],
                "127.0.0.1",
                attempts,
                status,
            )
        };
        let parent = |p: &str| {
            with(&[(
                "traceparent",
                &format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{p}-01"),
            )])
        };
        let mut cases = vec![
            plain("http://svc:8080/p?q=1"),
            plain("http://svc:8080/p?q=1"),
            plain("http://abc:8080/x?y=2"),
            plain("http://svc:8081/p?q=1"),
            plain("http://svc:8080/p?q=12"),
            plain("http://svc:8080/p?"),
            plain("http://svc:8080/pq"),
            plain("http://svc/p?q=1"),
            plain("http://svc:0/p?q=1"),
            with(&[]),
            with(&[("host", "svc:8080")]),
            with(&[("user-agent", "curl/8")]),
            with(&[("user-agent", "curl/9")]),
            with(&[("user-agent", "")]),
            with(&[("x-request-id", "abc")]),
            with(&[("x-request-id", "abd")]),
            with(&[("tracestate", "k=v")]),
            with(&[("tracestate", "k=w")]),
            parent("00f067aa0ba902b7"),
            parent("00f067aa0ba902b8"),
            recorded("GET", "/p?q=1", &[], "127.0.0.2", &[Ok(200)], 200),
            recorded("GET", "/p?q=1", &[], "2001:db8::1", &[Ok(200)], 200),
            recorded("POST", "/p?q=1", &[], "127.0.0.1", &[Ok(200)], 200),
            recorded("PURGE", "/p?q=1", &[], "127.0.0.1", &[Ok(200)], 200),
            recorded("PURGE", "/p?q=1", &[], "127.0.0.1", &[Ok(200)], 200),
            failed(&[Ok(204)], 204),
            failed(&[Ok(503), Err("reset"), Ok(502)], 502),
            failed(&[Ok(503), Err("close"), Ok(502)], 502),
            failed(&[Ok(504), Err("reset"), Ok(502)], 502),
            failed(&[Err("connect_failure")], 503),
            failed(&[Err("connect_timeout")], 503),
            failed(&[Ok(503)], 503),
            failed(&[Ok(503), Ok(503), Ok(503)], 503),
            failed(&[Ok(200)], 0),
            failed(&[], 0),
        ];
        // Flags of the same and of another length, retries, details of the same length,
        // marks of other kinds, an attempt without an answer, another host, no end: by hand.
        let mut other_flags = (*failed(&[Ok(503), Err("reset"), Ok(502)], 502)).clone();
        other_flags.flags = "UFX".into();
        let mut fewer_flags = (*failed(&[Ok(503), Err("reset"), Ok(502)], 502)).clone();
        fewer_flags.flags = "UF".into();
        let mut more_retries = (*failed(&[Ok(503), Err("reset"), Ok(502)], 502)).clone();
        more_retries.retries += 1;
        let mut other_details = (*failed(&[Ok(503), Err("reset"), Ok(502)], 502)).clone();
        let details = "upstream_reset_before_response_startex";
        assert_eq!(details.len(), other_details.details.len());
        other_details.details = details;
        let mut other_marks = (*plain("http://svc:8080/p?q=1")).clone();
        other_marks.marks[0].0 = crate::trace::Mark::UpstreamConnected;
        let mut abandoned = (*plain("http://svc:8080/p?q=1")).clone();
        abandoned.attempts[0].status = 0;
        let mut other_host = (*plain("http://svc:8080/p?q=1")).clone();
        other_host.attempts[0].host = "10.0.0.2:9080".into();
        let mut open = (*plain("http://svc:8080/p?q=1")).clone();
        open.end = None;
        open.attempts[0].end = None;
        cases.extend(
            [
                other_flags,
                fewer_flags,
                more_retries,
                other_details,
                other_marks,
                abandoned,
                other_host,
                open,
            ]
            .map(Arc::new),
        );
        let mut reused = [0; 2];
        for (i, before) in cases.iter().enumerate() {
            for (j, s) in cases.iter().enumerate() {
                let mut encoder = Encoder::default();
                encoder.encode_parts("t", std::slice::from_ref(before));
                let (_, spans) = encoder.encode_parts("t", std::slice::from_ref(s));
                let mut want = Vec::new();
                reference_spans(&mut want, s);
                assert!(spans == &want[..], "case {j} after case {i}");
                reused[0] += encoder.server.reused;
                reused[1] += encoder.client.reused;
            }
        }
        // The pattern served: a span after itself, after one with other ids and times, after
        // one with other strings of the same lengths.
        eprintln!("{} cases, {reused:?}", cases.len());
        assert!(
            reused[0] > 2 * cases.len() && reused[1] > 2 * cases.len(),
            "{reused:?}"
        );
    }

    #[test]
    fn ip_text_is_display() {
        let mut v6 = String::new();
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "1.22.133.4",
            "100.9.99.10",
            "::1",
            "2001:db8::ff",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut v4 = [0; 15];
            let text = ip_text(ip, &mut v4, &mut v6);
            assert_eq!(text, ip.to_string().as_bytes());
        }
    }

    #[test]
    fn the_kept_peer_text_and_authority_split_are_those_of_the_current_span() {
        let mut peer = PeerText::default();
        for ip in [
            "10.0.0.1",
            "10.0.0.1",
            "::1",
            "10.0.0.1",
            "10.0.0.12",
            "::1",
            "::2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(peer.get(ip), ip.to_string().as_bytes());
        }
        let mut split = AuthoritySplit::default();
        for a in [
            "svc:80", "svc:80", "svc", "svc:8", "", "[::1]:80", "svc:80", "svc", "h:",
        ] {
            assert_eq!(split.get(a), split_authority(a), "{a:?}");
        }
    }

    #[test]
    fn status_text_is_decimal() {
        for st in [0u16, 1, 9, 10, 99, 100, 200, 503, 999, 1000, 65_535] {
            assert_eq!(status_text(st, &mut [0; 5]), st.to_string());
        }
    }

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("svc:8080"), ("svc", Some(8080)));
        assert_eq!(split_authority("svc"), ("svc", None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
        assert_eq!(split_authority(":80"), (":80", None));
        assert_eq!(split_authority("h:"), ("h:", None));
        assert_eq!(split_authority("é:1"), ("é", Some(1)));
        assert_eq!(split_authority("[::1]:x"), ("[::1]:x", None));
        for p in [
            "0",
            "80",
            "08080",
            "65535",
            "999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "-1",
            "+80",
            "",
            "8a",
            "1 ",
            "١٢",
        ] {
            assert_eq!(parse_i64(p), p.parse().ok(), "{p:?}");
        }
        for pq in ["/", "/p?q=1", "/p?", "?", "/é?ü=1?x", "/a/b"] {
            let want = match pq.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (pq, None),
            };
            assert_eq!(split_query(pq), want, "{pq}");
        }
        assert_eq!(host_of("collector.local:4318"), "collector.local");
        assert_eq!(host_of("[::1]:4318"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
