//! Distributed tracing: a SERVER span per proxied request and a CLIENT span per upstream
//! attempt, made on the request path without a lock (ids and the sampling decision come from
//! the thread's generator), handed to an exporter thread through a bounded queue (`try_send`:
//! a full queue drops the spans and counts them), batched there and POSTed as OTLP/HTTP
//! protobuf (over rustls for an `https://` collector). The exporter also keeps the most recent
//! spans in a ring buffer for the admin API, and gives the records it is done with back for
//! the request path to fill again.
//!
//! Imports `config`, `stats`, `balance` (its thread-local generator) and `tls` (the exporter's
//! client config) only.

pub mod context;
mod export;
pub mod otlp;
mod queue;

use crate::config::{Propagation, TracingSpec};
use crate::stats::Counter;
use context::Parent;
use http::{HeaderValue, Method, Version};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub use export::ExportSettings;

/// Tracing counters and the recent-spans ring buffer: one per runtime, kept across applies.
/// Spans are counted as the collector sees them: a request's SERVER span and each of its
/// CLIENT spans.
#[derive(Default)]
pub struct TraceShared {
    /// Spans recorded and queued for export (sampled, or kept because they failed).
    pub spans_sampled: Counter,
    /// Spans the collector accepted (a 2xx answer to their batch).
    pub spans_exported: Counter,
    /// Spans dropped because the export queue was full (the collector is slow or gone).
    pub spans_dropped: Counter,
    /// Spans dropped because their batch could not be delivered (no connection, an error
    /// answer, a timeout).
    pub spans_export_failed: Counter,
    /// Export requests sent and those that failed.
    pub export_requests: Counter,
    pub export_failures: Counter,
    recent: Mutex<Recent>,
    /// Records the exporter is done with, cleared, for `begin` to fill again (at most
    /// SPARE_RECORDS).
    // NOTE: a record's allocation and its free on the exporter thread (a free across threads,
    // ~200 instructions a recorded request with the allocation) become a pop here and a
    // push there, under a lock taken once per batch on the exporter's side.
    spare: Mutex<Vec<Arc<SpanData>>>,
}

/// The most records kept for reuse (`TraceShared::spare`): what a few drains of a busy
/// exporter give back.
const SPARE_RECORDS: usize = 1024;

#[derive(Default)]
struct Recent {
    capacity: usize,
    spans: VecDeque<Arc<SpanData>>,
}

impl TraceShared {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "spans_sampled": self.spans_sampled.get(),
            "spans_exported": self.spans_exported.get(),
            "spans_dropped": self.spans_dropped.get(),
            "spans_export_failed": self.spans_export_failed.get(),
            "export_requests": self.export_requests.get(),
            "export_failures": self.export_failures.get(),
        })
    }

    /// The most recent spans, newest first (JSON objects, docs/admin.md).
    pub fn recent(&self) -> Vec<serde_json::Value> {
        let spans: Vec<Arc<SpanData>> = {
            let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            r.spans.iter().rev().cloned().collect()
        };
        spans.iter().map(|s| export::record(s)).collect()
    }

    /// Keep `spans` in the ring (one lock for all); the spans they push out are moved to
    /// `evicted`, to be freed outside the lock.
    fn remember_all(&self, spans: &[Arc<SpanData>], evicted: &mut Vec<Arc<SpanData>>) {
        if spans.is_empty() {
            return;
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.capacity == 0 {
            return;
        }
        for span in spans {
            while r.spans.len() >= r.capacity {
                evicted.extend(r.spans.pop_front());
            }
            r.spans.push_back(span.clone());
        }
    }

    /// A record the exporter is done with, cleared (its only reference), if one is kept.
    fn take_spare(&self) -> Option<Arc<SpanData>> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// The exporter is done with `records`: those it holds the only reference to are
    /// cleared and kept for `begin` (up to SPARE_RECORDS), the others are dropped.
    /// `records` is left empty.
    fn give_back(&self, records: &mut Vec<Arc<SpanData>>) {
        // A record also held elsewhere (by a `/traces` reader) is only dropped here.
        records.retain_mut(|r| Arc::get_mut(r).map(SpanData::clear).is_some());
        if !records.is_empty() {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            let n = SPARE_RECORDS.saturating_sub(spare.len()).min(records.len());
            spare.extend(records.drain(..n));
        }
        // Beyond the bound: freed outside the lock.
        records.clear();
    }

    /// Let go of the records kept for reuse (tracing stopped, or its exporter exits).
    fn drop_spare(&self) {
        let spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        drop(spare);
    }

    fn set_capacity(&self, capacity: usize) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.capacity = capacity;
        while r.spans.len() > capacity {
            r.spans.pop_front();
        }
    }
}

/// The running exporter of a runtime: its settings and the sending end of its queue. A new
/// apply with the same settings keeps it; other settings start a new one (the old thread
/// flushes what it holds and exits when its queue's last sender is gone).
#[derive(Default)]
pub struct Exporters {
    pub shared: Arc<TraceShared>,
    running: Mutex<Option<(ExportSettings, queue::Sender<Arc<SpanData>>)>>,
}

impl Exporters {
    /// What the request path of a snapshot with `spec` uses.
    pub fn tracing_for(&self, spec: &TracingSpec) -> std::io::Result<Arc<Tracing>> {
        let settings = ExportSettings::from_spec(spec);
        self.shared
            .set_capacity(spec.recent_spans.unwrap_or(DEFAULT_RECENT_SPANS) as usize);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let queue = match running.as_ref() {
            Some((s, tx)) if *s == settings => tx.clone(),
            _ => {
                let tx = export::start(settings.clone(), self.shared.clone())?;
                *running = Some((settings, tx.clone()));
                tx
            }
        };
        let percent = spec.sampling_percent.clamp(0.0, 100.0);
        Ok(Arc::new(Tracing {
            propagation: spec.propagation,
            threshold: if percent >= 100.0 {
                u64::MAX
            } else {
                (percent / 100.0 * u64::MAX as f64) as u64
            },
            keep_errors: spec.keep_errors,
            queue,
            shared: self.shared.clone(),
        }))
    }

    /// No snapshot traces any more: let the exporter flush and exit.
    pub fn stop(&self) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.drop_spare();
    }
}

pub const DEFAULT_RECENT_SPANS: u32 = 256;

/// A snapshot's tracing: what the request path reads.
pub struct Tracing {
    pub propagation: Propagation,
    /// A new trace is sampled when a draw is below this (u64::MAX: always).
    threshold: u64,
    keep_errors: bool,
    queue: queue::Sender<Arc<SpanData>>,
    shared: Arc<TraceShared>,
}

/// What the request path knows of a request's W3C `traceparent` before `Tracing::begin`.
#[derive(Debug)]
pub enum W3cHeader<'a> {
    /// The request carries one (it may be the caller's context).
    Present,
    /// It carries none; ours goes into the header map.
    Absent,
    /// It carries none; a new context that is not recorded is left in this slot, for the
    /// request path to send without a header-map entry.
    AbsentOutOfMap(&'a mut Option<HeaderValue>),
}

/// Where a request arrived.
pub struct Arrival<'a> {
    pub scheme: &'static str,
    pub peer: IpAddr,
    pub listener: &'a Arc<str>,
}

impl Tracing {
    /// Phase hook (downstream request): continue the caller's trace or start one and decide
    /// sampling (the caller's decision wins). Returns the SERVER span to fill in when it is
    /// recorded; each upstream attempt then gets a CLIENT span of its own, which is what the
    /// next hop sees as its parent (`ActiveSpan::attempt`). A request that is not recorded
    /// carries this span's id to the upstream now, so the decision still travels.
    ///
    /// `w3c` says what the caller knows of the request's `traceparent` (from its pass over
    /// the header names); it matters with W3C propagation only. When it is absent, nothing is
    /// looked up; with `AbsentOutOfMap` a new context that is not recorded is put in the
    /// given slot instead of the header map, for the caller to send.
    pub fn begin<B>(
        self: &Arc<Self>,
        req: &mut http::Request<B>,
        arrival: Arrival<'_>,
        w3c: W3cHeader<'_>,
    ) -> Option<ActiveSpan> {
        let w3c_absent = self.propagation == Propagation::W3c && !matches!(w3c, W3cHeader::Present);
        // NOTE: no lookup of a `traceparent` the request does not carry (~220 instructions).
        let carrier =
            (!w3c_absent).then(|| context::Carrier::new(self.propagation, req.headers_mut()));
        let parent = carrier.as_ref().and_then(|c| c.extract());
        let sampled = match parent.and_then(|p| p.sampled) {
            Some(s) => s,
            None => {
                self.threshold == u64::MAX || crate::balance::thread_random_u64() < self.threshold
            }
        };
        if !(sampled || self.keep_errors) {
            // Not recorded: the ids only travel upstream.
            let new_ids = || (new_trace_id(self.propagation), nonzero_u64().to_be_bytes());
            match (carrier, parent, w3c) {
                (Some(c), Some(p), _) => c.inject(&p.trace_id, &nonzero_u64().to_be_bytes(), false),
                (Some(c), None, _) => c.inject_new_unsampled(new_ids),
                (None, _, W3cHeader::AbsentOutOfMap(slot)) => {
                    *slot = Some(context::unsampled_traceparent());
                }
                (None, _, _) => {
                    context::Carrier::new(self.propagation, req.headers_mut())
                        .inject_new_unsampled(new_ids);
                }
            }
            return None;
        }
        drop(carrier);
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => new_trace_id(self.propagation),
        };
        let span_id = nonzero_u64().to_be_bytes();
        // NOTE: a record the exporter gave back is filled again in place (no allocation, no
        // copy of a record built on the stack); its strings are copied straight into it
        // (`RequestText`).
        let mut data = self
            .shared
            .take_spare()
            .unwrap_or_else(|| Arc::new(SpanData::blank(arrival.listener.clone())));
        let d = Arc::get_mut(&mut data).expect("a spare record is the exporter's last reference");
        d.trace_id = trace_id;
        d.span_id = span_id;
        d.parent = parent.map(|p: Parent| p.span_id);
        d.sampled = sampled;
        d.start_unix_nanos = unix_nanos();
        d.started = Moment::now();
        d.end = None;
        d.method = req.method().clone();
        d.scheme = arrival.scheme;
        d.version = req.version();
        d.peer = arrival.peer;
        if !Arc::ptr_eq(&d.listener, arrival.listener) {
            d.listener = arrival.listener.clone();
        }
        d.retries = 0;
        d.status = 0;
        d.details = "downstream_remote_disconnect";
        d.text.fill(req);
        let span = ActiveSpan {
            tracing: self.clone(),
            data: Some(data),
        };
        Some(span)
    }
}

/// The first value (as `get` has it) of `host`, `user-agent`, `x-request-id` and
/// `tracestate` in `h`, in one pass over the map.
// NOTE: each name is matched by its text (a switch on its length, then one comparison):
// comparing it with each of the four `HeaderName`s was ~40 instructions a header.
fn recorded_headers(h: &http::HeaderMap) -> [Option<&HeaderValue>; 4] {
    let mut out = [None; 4];
    for (name, value) in h {
        let i = match name.as_str() {
            "host" => 0,
            "user-agent" => 1,
            "x-request-id" => 2,
            "tracestate" => 3,
            _ => continue,
        };
        if out[i].is_none() {
            out[i] = Some(value);
        }
    }
    out
}

/// The strings of the request that a span records, copied out of it at `begin`: the path
/// and query, the authority the client addressed, and the `user-agent`, `x-request-id` and
/// `tracestate` values when they are text (as `HeaderValue::to_str` has it: visible ASCII
/// and tab; a value that is not is recorded as absent, as the exporter did when it checked).
// NOTE: copied, not kept as the request's `Uri` and `HeaderValue`s (`Bytes` of hyper's read
// buffer): the buffer is no longer held by a record (hyper reallocated it for the next
// request, ~70 instructions a request), the exporter frees no `Bytes` of it when the ring
// evicts the record (a cross-thread free, ~440) and checks no value as text (~170). Inline
// up to TEXT_INLINE bytes: no allocation of their own for most requests.
#[cfg_attr(test, derive(Clone))]
struct RequestText {
    /// The strings back to back, in `TextField` order, when they fit; valid UTF-8 (only
    /// `&str`s are copied in).
    inline: [u8; TEXT_INLINE],
    /// The strings when they do not fit in `inline`.
    spilled: Option<Box<[u8]>>,
    /// Where each string ends.
    ends: [usize; TEXT_FIELDS],
    /// Which of the optional ones are present, a bit each (`1 << field`).
    present: u8,
}

impl Default for RequestText {
    fn default() -> Self {
        RequestText {
            inline: [0; TEXT_INLINE],
            spilled: None,
            ends: [0; TEXT_FIELDS],
            present: 0,
        }
    }
}

const TEXT_INLINE: usize = 160;
const TEXT_FIELDS: usize = 5;

#[derive(Clone, Copy)]
enum TextField {
    PathAndQuery,
    Authority,
    UserAgent,
    RequestId,
    TraceState,
}

impl RequestText {
    /// Copy the recorded strings of `req`; the four headers are found in one pass (the first
    /// value of each, as `get`).
    // NOTE: their lengths are summed first and each is copied once, to its place (appending
    // to a `SmallVec` was ~60 instructions a string).
    fn fill<B>(&mut self, req: &http::Request<B>) {
        let [host, user_agent, request_id, tracestate] = recorded_headers(req.headers());
        let uri = req.uri();
        let authority = match uri.authority() {
            Some(a) => a.as_str(),
            None => host.and_then(header_text).unwrap_or(""),
        };
        let fields: [Option<&str>; TEXT_FIELDS] = [
            Some(uri.path_and_query().map_or("/", |p| p.as_str())),
            Some(authority),
            user_agent.and_then(header_text),
            request_id.and_then(header_text),
            tracestate.and_then(header_text),
        ];
        let total: usize = fields.iter().map(|f| f.map_or(0, str::len)).sum();
        let buf = if total <= TEXT_INLINE {
            self.spilled = None;
            &mut self.inline[..]
        } else {
            &mut self.spilled.insert(vec![0; total].into_boxed_slice())[..]
        };
        let (mut at, mut present) = (0, 0);
        for (i, f) in fields.iter().enumerate() {
            if let Some(f) = f {
                buf[at..at + f.len()].copy_from_slice(f.as_bytes());
                at += f.len();
                present |= 1 << i;
            }
            self.ends[i] = at;
        }
        self.present = present;
    }

    fn get(&self, field: TextField) -> Option<&str> {
        if self.present & (1 << field as u8) == 0 {
            return None;
        }
        let i = field as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let buf = self.spilled.as_deref().unwrap_or(&self.inline);
        let bytes = &buf[start..self.ends[i]];
        // SAFETY: `fill` copies only whole `&str`s in, and `ends` are the boundaries between
        // them, so every field is valid UTF-8.
        // NOTE: no UTF-8 check each time the exporter reads a field.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    }
}

/// A header value as text when `HeaderValue::to_str` accepts it (visible ASCII and tab).
// NOTE: the bytes are checked without a branch each (`to_str` stops at the first bad byte),
// which the compiler turns into a check of 16 at a time.
fn header_text(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    let ok = b.iter().fold(true, |ok, &c| {
        ok & (((0x20..0x7f).contains(&c)) | (c == b'\t'))
    });
    // SAFETY: the bytes are ASCII (checked above), so valid UTF-8.
    ok.then(|| unsafe { std::str::from_utf8_unchecked(b) })
}

fn nonzero_u64() -> u64 {
    loop {
        let v = crate::balance::thread_random_u64();
        if v != 0 {
            return v;
        }
    }
}

/// A new trace id; X-Ray's start with the epoch second (its `Root=1-<epoch>-<random>`).
fn new_trace_id(format: Propagation) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&nonzero_u64().to_be_bytes());
    id[8..].copy_from_slice(&nonzero_u64().to_be_bytes());
    if format == Propagation::Xray {
        let secs = (unix_nanos() / 1_000_000_000) as u32;
        id[..4].copy_from_slice(&secs.to_be_bytes());
    }
    id
}

/// Now, in nanoseconds since the Unix epoch.
#[cfg(unix)]
fn unix_nanos() -> u64 {
    clock_nanos(libc::CLOCK_REALTIME)
}

#[cfg(not(unix))]
fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A clock's reading in nanoseconds (0 if it cannot be read, as `SystemTime` before 1970 was).
#[cfg(unix)]
#[inline]
fn clock_nanos(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 || ts.tv_sec < 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A reading of the monotonic clock (the one `Instant` reads), in nanoseconds: a span's
/// moments, whose differences the exporter computes several times a span.
// NOTE: a difference of two of these is a subtraction; `Instant`'s (`duration_since`, then
// `as_nanos`) was ~45 instructions, 7 a request at 100% sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Moment {
    #[cfg(unix)]
    #[inline]
    pub fn now() -> Self {
        Moment(clock_nanos(libc::CLOCK_MONOTONIC))
    }

    #[cfg(not(unix))]
    pub fn now() -> Self {
        static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(std::time::Instant::now);
        Moment(base.elapsed().as_nanos() as u64)
    }

    /// Nanoseconds from `earlier` to this (0 if `earlier` is later).
    #[inline]
    pub fn since(self, earlier: Moment) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A moment in the request's life, recorded as a span event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Routed,
    UpstreamConnected,
    FirstByte,
    /// An attempt failed and the request is tried again.
    Retry,
}

impl Mark {
    pub fn name(self) -> &'static str {
        match self {
            Mark::Routed => "routed",
            Mark::UpstreamConnected => "upstream connected",
            Mark::FirstByte => "first byte",
            Mark::Retry => "retry",
        }
    }
}

/// Everything one span records; allocated once per recorded request, as the `Arc` the
/// exporter and the `/traces` ring share (no second allocation when it is queued).
#[cfg_attr(test, derive(Clone))]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    start_unix_nanos: u64,
    started: Moment,
    // NOTE: inline up to a request's usual marks and its one attempt: no allocation each.
    marks: SmallVec<[(Mark, Moment); 4]>,
    end: Option<Moment>,
    method: Method,
    /// The request target as received, the authority, and three header values.
    text: RequestText,
    scheme: &'static str,
    version: Version,
    peer: IpAddr,
    listener: Arc<str>,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream_host: Option<Arc<str>>,
    pub retries: u32,
    /// The response status sent downstream (0: none, the client went away).
    pub status: u16,
    /// Envoy response flags ("UF", "URX"...), empty when none.
    pub flags: String,
    /// Why the response is what it is (`via_upstream`, a local reply's reason).
    pub details: &'static str,
    /// One CLIENT span per upstream attempt, in order (retries and reconnects included).
    attempts: SmallVec<[Attempt; 1]>,
}

/// One upstream attempt: a CLIENT span, child of the request's SERVER span.
#[cfg_attr(test, derive(Clone))]
pub struct Attempt {
    pub span_id: [u8; 8],
    started: Moment,
    /// When its response head arrived or it failed; None: its response went downstream, and
    /// the span ends with the request's.
    end: Option<Moment>,
    host: Arc<str>,
    tls: bool,
    /// The upstream's status (0: no response).
    status: u16,
    /// Why it failed without a response (`connect_failure`, `reset`, `timeout`...).
    error: Option<&'static str>,
}

impl SpanData {
    /// A record of nothing yet, for `begin` to fill.
    fn blank(listener: Arc<str>) -> Self {
        SpanData {
            trace_id: [0; 16],
            span_id: [0; 8],
            parent: None,
            sampled: false,
            start_unix_nanos: 0,
            started: Moment(0),
            marks: SmallVec::new(),
            end: None,
            method: Method::GET,
            text: RequestText::default(),
            scheme: "",
            version: Version::HTTP_11,
            peer: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            listener,
            route: None,
            cluster: None,
            upstream_host: None,
            retries: 0,
            status: 0,
            flags: String::new(),
            details: "",
            attempts: SmallVec::new(),
        }
    }

    /// Back to what `blank` makes, but for what `begin` sets anyway (the ids, times,
    /// request line, strings and listener): the names and attempts it held are let go of,
    /// its buffers kept (a spilled text is let go of by `RequestText::fill`).
    fn clear(&mut self) {
        self.marks.clear();
        self.route = None;
        self.cluster = None;
        self.upstream_host = None;
        self.flags.clear();
        self.attempts.clear();
    }

    fn nanos_at(&self, t: Moment) -> u64 {
        self.start_unix_nanos + t.since(self.started)
    }

    /// The request target as received (its path and query; `/` when it had none).
    fn path_and_query(&self) -> &str {
        self.text.get(TextField::PathAndQuery).unwrap_or("/")
    }

    /// The authority the client addressed: the URI's, else the Host header.
    fn authority(&self) -> &str {
        self.text.get(TextField::Authority).unwrap_or("")
    }

    fn user_agent(&self) -> Option<&str> {
        self.text.get(TextField::UserAgent)
    }

    fn request_id(&self) -> Option<&str> {
        self.text.get(TextField::RequestId)
    }

    /// The caller's `tracestate` ("" when none).
    fn tracestate(&self) -> &str {
        self.text.get(TextField::TraceState).unwrap_or("")
    }

    /// The OTLP spans this record makes: the SERVER span and a CLIENT span per attempt.
    fn span_count(&self) -> u64 {
        1 + self.attempts.len() as u64
    }

    fn is_error(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

/// A recorded request's span while the request lives. It ends when dropped: with the
/// response body (its stream ended or was abandoned), or with the request path's future when
/// the client went away first (status 0, flag DC).
pub struct ActiveSpan {
    tracing: Arc<Tracing>,
    // NOTE: the only reference until the span is queued (`d` relies on it).
    data: Option<Arc<SpanData>>,
}

impl ActiveSpan {
    /// The record, while the request path owns it alone (until `drop` queues it).
    fn d(&mut self) -> Option<&mut SpanData> {
        let data = self.data.as_mut()?;
        debug_assert!(Arc::strong_count(data) == 1 && Arc::weak_count(data) == 0);
        // SAFETY: `data` is the record's only reference (it is made in `begin`, never cloned
        // and no `Weak` of it is made before `drop` hands it to the queue), so this is the
        // exclusive borrow `Arc::get_mut` would return, held no longer than `&mut self`.
        // NOTE: without `get_mut`'s atomic check on every mark and attempt.
        Some(unsafe { &mut *Arc::as_ptr(data).cast_mut() })
    }

    pub fn mark(&mut self, mark: Mark) {
        self.mark_at(mark, Moment::now());
    }

    pub fn mark_at(&mut self, mark: Mark, at: Moment) {
        if let Some(d) = self.d() {
            d.marks.push((mark, at));
        }
    }

    /// Phase hook (upstream attempt): a CLIENT span for the attempt about to be sent to
    /// `host`, and its id in `headers` as the next hop's parent; a W3C `traceparent` goes
    /// into `line` instead when it is given (the request path sends it without a header-map
    /// entry; `headers` then has none).
    pub fn attempt(
        &mut self,
        host: &Arc<str>,
        tls: bool,
        headers: &mut http::HeaderMap,
        line: Option<&mut Option<HeaderValue>>,
    ) {
        let propagation = self.tracing.propagation;
        let Some(d) = self.d() else {
            return;
        };
        let span_id = nonzero_u64().to_be_bytes();
        match line {
            Some(line) if propagation == Propagation::W3c => {
                *line = Some(context::traceparent_value(&d.trace_id, &span_id, d.sampled));
            }
            _ => context::inject(propagation, headers, &d.trace_id, &span_id, d.sampled),
        }
        d.attempts.push(Attempt {
            span_id,
            started: Moment::now(),
            end: None,
            host: host.clone(),
            tls,
            status: 0,
            error: None,
        });
    }

    /// The current attempt's response head: its status; `retried`: the attempt ends here
    /// (its response is dropped and the request tried again).
    pub fn attempt_answered(&mut self, status: u16, retried: bool) {
        if let Some(a) = self.d().and_then(|d| d.attempts.last_mut()) {
            a.status = status;
            if retried {
                a.end = Some(Moment::now());
            }
        }
    }

    /// The current attempt failed without a response.
    pub fn attempt_failed(&mut self, error: &'static str) {
        if let Some(a) = self.d().and_then(|d| d.attempts.last_mut()) {
            a.error = Some(error);
            a.end = Some(Moment::now());
        }
    }

    /// What the request path learned, for the span's attributes.
    pub fn data(&mut self) -> &mut SpanData {
        self.d()
            .expect("an active span has its data, unshared, until dropped")
    }
}

impl Drop for ActiveSpan {
    /// The span ends now: queue it for export unless it is neither sampled nor a kept error.
    /// Never waits: a full queue drops it (counted).
    fn drop(&mut self) {
        let keep_errors = self.tracing.keep_errors;
        let Some(d) = self.d() else {
            return;
        };
        d.end = Some(Moment::now());
        if d.status == 0 && d.flags.is_empty() {
            d.flags.push_str("DC");
        }
        let keep = d.sampled || (keep_errors && d.is_error());
        let Some(data) = self.data.take() else {
            return;
        };
        if !keep {
            return;
        }
        let shared = &self.tracing.shared;
        let spans = data.span_count();
        shared.spans_sampled.add(spans);
        if self.tracing.queue.try_send(data).is_err() {
            shared.spans_dropped.add(spans);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_headers_are_what_get_returns() {
        let names = ["host", "user-agent", "x-request-id", "tracestate"];
        let mut h = http::HeaderMap::new();
        assert_eq!(recorded_headers(&h), [None; 4]);
        h.append("x-request-id", HeaderValue::from_static("a"));
        h.append("host", HeaderValue::from_static("h"));
        h.append("x-request-id", HeaderValue::from_static("b"));
        h.append("x-request-i", HeaderValue::from_static("c"));
        h.append("tracestates", HeaderValue::from_static("d"));
        h.append("user-agents", HeaderValue::from_static("e"));
        h.append("tracestate", HeaderValue::from_static("f"));
        h.append("tracestate", HeaderValue::from_static("g"));
        let got = recorded_headers(&h);
        for (name, value) in names.iter().zip(got) {
            assert_eq!(value, h.get(*name), "{name}");
        }
        assert_eq!(got[2].unwrap(), "a");
        assert_eq!(got[1], None);
        assert_eq!(got[3].unwrap(), "f");
    }

    /// A recorded request's span of `req` (a config that records every request).
    fn recorded(req: &mut http::Request<()>) -> (Exporters, ActiveSpan) {
        let exporters = Exporters::default();
        let spec: TracingSpec = serde_json::from_str(r#"{"serviceName": "t"}"#).unwrap();
        let tracing = exporters.tracing_for(&spec).unwrap();
        let listener: Arc<str> = "l".into();
        let arrival = Arrival {
            scheme: "http",
            peer: "127.0.0.1".parse().unwrap(),
            listener: &listener,
        };
        let span = tracing.begin(req, arrival, W3cHeader::Present).unwrap();
        (exporters, span)
    }

    /// What a record holds but its ids and times.
    fn content(d: &SpanData) -> String {
        let mut json = export::record(d);
        for k in ["trace_id", "span_id", "start_unix_nano", "duration_ms"] {
            json.as_object_mut().unwrap().remove(k);
        }
        format!(
            "{json} {:?} {:?} {:?} {} {:?} {} {:?} {} {} {}",
            d.user_agent(),
            d.request_id(),
            d.tracestate(),
            d.scheme,
            d.version,
            d.peer,
            d.end,
            d.marks.len(),
            d.text.spilled.is_some(),
            Arc::as_ptr(&d.listener).cast::<u8>() as usize,
        )
    }

    #[test]
    fn a_record_given_back_is_filled_again_as_a_new_one_is() {
        let exporters = Exporters::default();
        let spec: TracingSpec = serde_json::from_str(r#"{"serviceName": "t"}"#).unwrap();
        let tracing = exporters.tracing_for(&spec).unwrap();
        let shared = &exporters.shared;
        let spare = || shared.spare.lock().unwrap().len();
        let (listener, other): (Arc<str>, Arc<str>) = ("l".into(), "m".into());
        let begin = |req: &mut http::Request<()>, listener: &Arc<str>, peer: &str| {
            let arrival = Arrival {
                scheme: "http",
                peer: peer.parse().unwrap(),
                listener,
            };
            tracing.begin(req, arrival, W3cHeader::Present).unwrap()
        };
        // A record with everything set: a path spilled out of the inline room, every
        // recorded header, a parent, marks, attempts, names, flags.
        let mut full = http::Request::post(format!("http://svc:81/{}", "a".repeat(TEXT_INLINE)))
            .version(Version::HTTP_2)
            .header("user-agent", "u")
            .header("x-request-id", "r")
            .header("tracestate", "k=v")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let mut span = begin(&mut full, &other, "::1");
        span.mark(Mark::Routed);
        let host: Arc<str> = "h:1".into();
        for _ in 0..3 {
            span.attempt(&host, true, &mut http::HeaderMap::new(), None);
            span.attempt_failed("reset");
        }
        let d = span.data();
        d.route = Some(host.clone());
        d.cluster = Some(host.clone());
        d.upstream_host = Some(host.clone());
        (d.retries, d.status, d.details) = (2, 503, "x");
        d.flags.push_str("URX");
        d.end = Some(Moment::now());
        assert!(d.text.spilled.is_some());
        let texts = (
            d.user_agent(),
            d.request_id(),
            d.tracestate(),
            d.authority(),
        );
        assert_eq!(texts, (Some("u"), Some("r"), "k=v", "svc:81"));
        let mut records = vec![span.data.take().unwrap()];
        shared.give_back(&mut records);
        assert!(records.is_empty());
        assert_eq!(spare(), 1);
        // It lets go of the names it held.
        assert_eq!(Arc::strong_count(&host), 1);
        // The next recorded request takes it and holds what a new record would.
        let plain = || {
            http::Request::get("/p")
                .header("host", "h")
                .body(())
                .unwrap()
        };
        let mut reused = begin(&mut plain(), &listener, "10.0.0.1");
        assert_eq!(spare(), 0);
        let mut new = begin(&mut plain(), &listener, "10.0.0.1");
        assert_eq!(content(reused.data()), content(new.data()));
        assert_ne!(reused.data().trace_id, new.data().trace_id);
        // A record also held elsewhere (a /traces reader's) is not kept; nor are records
        // beyond the bound.
        let held = reused.data.take().unwrap();
        let mut records = vec![held.clone()];
        shared.give_back(&mut records);
        assert_eq!((spare(), Arc::strong_count(&held)), (0, 1));
        let mut records: Vec<_> = (0..SPARE_RECORDS + 3)
            .map(|_| {
                begin(&mut plain(), &listener, "10.0.0.1")
                    .data
                    .take()
                    .unwrap()
            })
            .collect();
        shared.give_back(&mut records);
        assert!(records.is_empty());
        assert_eq!(spare(), SPARE_RECORDS);
        // Stopping lets go of them.
        drop(new.data.take());
        exporters.stop();
        assert_eq!(spare(), 0);
    }

    #[test]
    fn the_exporter_gives_records_back_and_lets_go_of_them_when_it_exits() {
        let exporters = Exporters::default();
        // No ring and no collector: the exporter is done with a record as soon as it takes it.
        let spec: TracingSpec =
            serde_json::from_str(r#"{"serviceName": "t", "recentSpans": 0}"#).unwrap();
        let tracing = exporters.tracing_for(&spec).unwrap();
        let shared = exporters.shared.clone();
        let spare = || shared.spare.lock().unwrap().len();
        let until = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let listener: Arc<str> = "l".into();
        let record = || {
            let arrival = Arrival {
                scheme: "http",
                peer: "127.0.0.1".parse().unwrap(),
                listener: &listener,
            };
            let mut req = http::Request::get("/").body(()).unwrap();
            drop(
                tracing
                    .begin(&mut req, arrival, W3cHeader::Present)
                    .unwrap(),
            );
        };
        record();
        until("the record given back", &|| spare() == 1);
        // Tracing stops: what is kept is let go of; the exporter runs on while a snapshot's
        // tracing still sends to it, and gives back what it is sent.
        exporters.stop();
        assert_eq!(spare(), 0);
        record();
        until("the record given back after the stop", &|| spare() == 1);
        // The last sender gone, the exporter exits and lets go of it.
        drop(tracing);
        until("the records let go of", &|| spare() == 0);
    }

    #[test]
    fn an_attempts_w3c_context_goes_to_the_line_when_given_and_others_to_the_map() {
        for (propagation, name) in [("w3c", "traceparent"), ("b3", "b3")] {
            let exporters = Exporters::default();
            let spec: TracingSpec = serde_json::from_str(&format!(
                r#"{{"serviceName": "t", "propagation": "{propagation}"}}"#
            ))
            .unwrap();
            let tracing = exporters.tracing_for(&spec).unwrap();
            let listener: Arc<str> = "l".into();
            let mut req = http::Request::get("/").body(()).unwrap();
            let arrival = Arrival {
                scheme: "http",
                peer: "127.0.0.1".parse().unwrap(),
                listener: &listener,
            };
            let mut span = tracing.begin(&mut req, arrival, W3cHeader::Absent).unwrap();
            let host: Arc<str> = "h:1".into();
            let mut sent = Vec::new();
            for _ in 0..2 {
                let (mut map, mut line) = (http::HeaderMap::new(), None);
                span.attempt(&host, false, &mut map, Some(&mut line));
                let mut in_map = http::HeaderMap::new();
                span.attempt(&host, false, &mut in_map, None);
                let value = match propagation {
                    "w3c" => {
                        assert!(map.is_empty(), "{map:?}");
                        line.expect("the line")
                    }
                    _ => {
                        assert!(line.is_none());
                        map[name].clone()
                    }
                };
                // The same value as the map path's, for this attempt's span.
                let d = span.data();
                let a = &d.attempts[d.attempts.len() - 2];
                let mut want = http::HeaderMap::new();
                context::inject(
                    d_propagation(propagation),
                    &mut want,
                    &d.trace_id,
                    &a.span_id,
                    true,
                );
                assert_eq!(value, want[name]);
                assert_eq!(in_map.len(), 1);
                sent.push(value);
            }
            assert_ne!(sent[0], sent[1]);
            exporters.stop();
        }
    }

    fn d_propagation(p: &str) -> Propagation {
        serde_json::from_value(serde_json::Value::String(p.into())).unwrap()
    }

    #[test]
    fn recorded_text_is_what_the_request_said_and_headers_are_text_as_to_str_has_it() {
        // Every byte a header value may hold, alone and between others, in each of the
        // recorded headers: recorded exactly when `to_str` accepts the value.
        let mut values: Vec<Vec<u8>> = vec![Vec::new(), b"x".to_vec(), b"a\tb".to_vec()];
        for b in 0..=255u8 {
            values.push(vec![b]);
            values.push([&b"0123456789abcdef-"[..], &[b], b"z"].concat());
        }
        values.push("é".as_bytes().to_vec());
        values.push(vec![0xff; 40]);
        let mut checked = 0;
        for v in &values {
            let Ok(value) = HeaderValue::from_bytes(v) else {
                continue;
            };
            checked += 1;
            let mut req = http::Request::get("/p?q").body(()).unwrap();
            for name in ["host", "user-agent", "x-request-id", "tracestate"] {
                req.headers_mut().insert(name, value.clone());
            }
            let want = value.to_str().ok();
            let (exporters, mut span) = recorded(&mut req);
            let d = span.data();
            assert_eq!(d.user_agent(), want, "{v:?}");
            assert_eq!(d.request_id(), want, "{v:?}");
            assert_eq!(d.tracestate(), want.unwrap_or(""), "{v:?}");
            assert_eq!(d.authority(), want.unwrap_or(""), "{v:?}");
            assert_eq!(d.path_and_query(), "/p?q");
            exporters.stop();
        }
        assert!(checked > 400, "{checked}");
        // The URI's authority wins over Host; absent headers are absent; the first value of
        // each counts; a long request spills out of the inline room intact.
        let long = format!("/{}", "a".repeat(3 * TEXT_INLINE));
        let mut req = http::Request::get(format!("http://svc:81{long}"))
            .header("host", "other")
            .header("user-agent", "u1")
            .header("user-agent", "u2")
            .body(())
            .unwrap();
        let (exporters, mut span) = recorded(&mut req);
        let d = span.data();
        assert_eq!(d.authority(), "svc:81");
        assert_eq!(d.path_and_query(), long);
        assert_eq!(d.user_agent(), Some("u1"));
        assert_eq!((d.request_id(), d.tracestate()), (None, ""));
        exporters.stop();
        // An origin-form request without Host: no authority; `*` as its target.
        let mut req = http::Request::options("*").body(()).unwrap();
        let (exporters, mut span) = recorded(&mut req);
        let d = span.data();
        assert_eq!(d.authority(), "");
        assert_eq!(
            d.path_and_query(),
            req.uri().path_and_query().unwrap().as_str()
        );
        exporters.stop();
    }
}
