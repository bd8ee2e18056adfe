//! The request path: route → pick cluster → pick host → pooled connection → forward →
//! classify → retry → stream the response back. No Python, no locks held across awaits.

use super::body::{BodyTimer, DownBody, InFlight};
use super::compiled::{Action, Compiled, ListenerConfig};
use super::headers;
use crate::accesslog::{AccessLog, Record};
use crate::cluster::{Cluster, Host, Outcome};
use crate::error::{Kind, ProxyError, Source};
use crate::pool::{Replay, Sender, UpBody};
use crate::route;
use crate::stats::ListenerStats;
use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a listener's connections read on every request; swapped whole on apply.
pub struct ListenerState {
    pub compiled: Arc<Compiled>,
    pub config: Arc<ListenerConfig>,
}

pub struct ListenerSlot {
    pub name: Arc<str>,
    pub state: ArcSwap<ListenerState>,
}

/// Per downstream connection.
pub struct ConnCtx {
    pub slot: Arc<ListenerSlot>,
    pub peer: SocketAddr,
    pub local_port: u16,
    pub scheme: &'static str,
    /// The verified client certificate (mutual TLS), as `x-forwarded-client-cert` sends it.
    pub client_cert: Option<HeaderValue>,
    /// The listener's bound address.
    pub local: Option<SocketAddr>,
    /// `peer`'s IP as a header value (for `x-forwarded-for`), made once per connection.
    pub peer_ip: HeaderValue,
    pub activity: ConnActivity,
}

impl ConnCtx {
    /// The first URI SAN of the verified client certificate (SPIFFE ID), for access logs.
    pub fn client_uri_san(&self) -> Option<String> {
        let v = self.client_cert.as_ref()?.to_str().ok()?;
        v.split(';')
            .find_map(|p| p.strip_prefix("URI="))
            .map(String::from)
    }
}

/// Requests in flight on one downstream connection and when it last became idle, for the
/// listener idle timeout.
pub struct ConnActivity {
    opened: Instant,
    active: AtomicU32,
    /// Milliseconds after `opened` when the last request finished.
    idle_since_ms: AtomicU64,
}

impl Default for ConnActivity {
    fn default() -> Self {
        ConnActivity {
            opened: Instant::now(),
            active: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }
}

impl ConnActivity {
    fn begin(&self) {
        self.active.fetch_add(1, Relaxed);
    }

    fn end(&self) {
        self.idle_since_ms
            .store(self.opened.elapsed().as_millis() as u64, Relaxed);
        self.active.fetch_sub(1, Relaxed);
    }

    /// When the connection will have been idle for `idle`, if nothing happens before.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Relaxed)) + idle
    }

    pub fn is_idle_for(&self, idle: Duration) -> bool {
        self.active.load(Relaxed) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}

struct ActiveRequest<'a> {
    ctx: &'a ConnCtx,
    stats: &'a ListenerStats,
}

impl<'a> ActiveRequest<'a> {
    fn begin(ctx: &'a ConnCtx, stats: &'a ListenerStats) -> Self {
        stats.rq_active.inc();
        ctx.activity.begin();
        ActiveRequest { ctx, stats }
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.stats.rq_active.dec();
        self.ctx.activity.end();
    }
}

/// Routing at most this deep (gateway route → service route is 2).
const MAX_ROUTE_DEPTH: usize = 4;
const BACKOFF_BASE_MS: u64 = 25;
/// Envoy's stream idle timeout default, when the route sets none.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<DownBody>, Infallible> {
    let state = ctx.slot.state.load_full();
    let lstats = &state.config.stats;
    lstats.rq_total.inc();
    if let Some(reply) = super::downstream::refuse(&req, lstats) {
        return Ok(reply);
    }
    // Undone on drop: hyper drops this future when the client goes away mid-request.
    let _active = ActiveRequest::begin(&ctx, lstats);
    let mut req = req;
    prepare_request(&ctx, req.headers_mut());
    let log = state.config.access_log.as_ref();
    // A client that goes away before the response still gets its line (flag DC, code 0).
    let mut record = log.map(|l| PendingLog {
        log: l,
        record: Some(l.begin(&req, ctx.peer, ctx.local, ctx.client_uri_san())),
    });
    let mut info = RequestInfo::default();
    let mut resp = match proxy(&ctx, &state, req, &mut info).await {
        Ok(r) => r,
        Err(e) => {
            info.flags = match (e.response_flag(), info.flags) {
                // Retries ran out: Envoy lists both flags.
                ("UF", "URX") => "UF,URX",
                ("UC", "URX") => "UC,URX",
                ("UT", "URX") => "UT,URX",
                ("UPE", "URX") => "UPE,URX",
                (flag, _) => flag,
            };
            info.details = e.details();
            local_reply(&e)
        }
    };
    let status = resp.status().as_u16();
    lstats.downstream_rq.record(status);
    if let Some((log, mut rec)) = record
        .as_mut()
        .and_then(|p| p.record.take().map(|r| (p.log, r)))
    {
        log.response(&mut rec, status, resp.headers());
        rec.flags = info.flags;
        rec.details = info.details;
        rec.route = info.route;
        rec.cluster = info.cluster;
        rec.upstream_host = info.upstream_host;
        resp.body_mut().log_to(log.clone(), rec);
    }
    Ok(resp)
}

/// What the connection manager does to every request before routing (as Envoy's HCM):
/// hop-by-hop headers go, `x-forwarded-for` / `-proto` and `x-request-id` are set, and
/// `x-forwarded-client-cert` carries only the verified client certificate (SANITIZE_SET), so
/// routes and access logs see the request as the upstream will.
fn prepare_request(ctx: &ConnCtx, h: &mut http::HeaderMap) {
    headers::strip_hop_by_hop(h);
    headers::forwarded(h, &ctx.peer_ip, ctx.scheme);
    headers::request_id(h);
    match &ctx.client_cert {
        Some(v) => h.insert(headers::X_FORWARDED_CLIENT_CERT.clone(), v.clone()),
        None => h.remove(&headers::X_FORWARDED_CLIENT_CERT),
    };
}

struct PendingLog<'a> {
    log: &'a Arc<AccessLog>,
    record: Option<Record>,
}

impl Drop for PendingLog<'_> {
    fn drop(&mut self) {
        if let Some(mut rec) = self.record.take() {
            rec.flags = "DC";
            rec.details = "downstream_remote_disconnect";
            self.log.finish(&rec);
        }
    }
}

/// What the request path learned, for the access log.
pub struct RequestInfo {
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream_host: Option<Arc<str>>,
    pub flags: &'static str,
    pub details: &'static str,
}

impl Default for RequestInfo {
    fn default() -> Self {
        RequestInfo {
            route: None,
            cluster: None,
            upstream_host: None,
            flags: "-",
            details: "via_upstream",
        }
    }
}

pub fn local_reply(e: &ProxyError) -> Response<DownBody> {
    let mut r = Response::new(DownBody::local(e.reply_body()));
    *r.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if e.kind == Kind::Overflow {
        r.headers_mut().insert(
            headers::X_ENVOY_OVERLOADED.clone(),
            HeaderValue::from_static("true"),
        );
    }
    r
}

/// Replace the matched prefix; App Mesh's default ("/") turns "/chapter/page" into "/page".
fn rewrite_prefix(path: &str, prefix: &str, with: &str) -> String {
    let rest = &path[prefix.len().min(path.len())..];
    if with.ends_with('/') && rest.starts_with('/') {
        format!("{with}{}", &rest[1..])
    } else {
        format!("{with}{rest}")
    }
}

fn replace_path(path: &str, with: &str) -> String {
    match path.find('?') {
        Some(q) => format!("{with}{}", &path[q..]),
        None => with.to_string(),
    }
}

async fn proxy(
    ctx: &ConnCtx,
    state: &ListenerState,
    req: Request<Incoming>,
    info: &mut RequestInfo,
) -> Result<Response<DownBody>, ProxyError> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let compiled = &state.compiled;
    let Some(mut table) = state.config.route_table else {
        return Err(ProxyError::internal(
            Kind::NoRoute,
            "listener has no route table",
        ));
    };
    // NOTE: HeaderValue and Uri clones share their bytes (a refcount), and free `parts` for
    // the header edits below.
    let host_value = parts.headers.get(header::HOST).cloned();
    let sent_uri = parts.uri.clone();
    let host_header = host_value.as_ref().and_then(|v| v.to_str().ok());
    let sent_authority = sent_uri
        .authority()
        .map(|a| a.as_str())
        .or(host_header)
        .unwrap_or("");
    let sent_path = sent_uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // NOTE: rewrites allocate only when a route asks for one.
    let mut path: Option<String> = None;
    let mut authority: Option<String> = None;
    let mut depth = 0;
    let action: &Action = loop {
        let view = route::Request {
            method: parts.method.as_str(),
            path: path.as_deref().unwrap_or(sent_path),
            authority: authority.as_deref().unwrap_or(sent_authority),
            scheme: ctx.scheme,
            port: ctx.local_port,
            headers: &parts.headers,
        };
        let Some(r) = compiled.tables[table].find(&view) else {
            state.config.stats.no_route.inc();
            return Err(ProxyError::internal(Kind::NoRoute, "no route"));
        };
        let a = &r.action;
        a.stats.rq_total.inc();
        info.route = Some(r.name.clone());
        if let (Some(with), Some(prefix)) = (&a.rewrite_prefix, &r.prefix) {
            path = Some(rewrite_prefix(view.path, prefix, with));
        } else if let Some(with) = &a.rewrite_path {
            path = Some(replace_path(view.path, with));
        }
        if let Some(h) = &a.rewrite_host {
            authority = Some(h.to_string());
        }
        match a.next_table {
            Some(next) if depth < MAX_ROUTE_DEPTH => {
                table = next;
                depth += 1;
            }
            Some(_) => {
                return Err(ProxyError::internal(
                    Kind::NoRoute,
                    "route tables nest too deep",
                ))
            }
            None => break a,
        }
    };
    let Some(weights) = &action.weights else {
        return Err(ProxyError::internal(
            Kind::NoHealthyUpstream,
            "route has no weighted target",
        ));
    };
    let cluster = compiled.clusters[action.clusters[weights.pick_random()]].clone();
    info.cluster = Some(cluster.name.clone());
    cluster.stats.rq_total.inc();

    // The target URI and Host the upstream sees, built once for every attempt.
    let authority: &str = match authority.as_deref() {
        Some(a) => a,
        None if sent_authority.is_empty() => "localhost",
        None => sent_authority,
    };
    let (uri, version) = match cluster.protocol {
        crate::config::UpstreamProtocol::Http2 => {
            parts.headers.remove(header::HOST);
            let p = path.as_deref().unwrap_or(sent_path);
            let uri = format!("http://{authority}{p}")
                .parse()
                .map_err(|_| bad_target())?;
            (uri, Version::HTTP_2)
        }
        _ => {
            let uri = match &path {
                Some(p) => p.parse().map_err(|_| bad_target())?,
                // NOTE: no rewrite: reuse the parsed path (a refcount, no parse, no copy).
                None => Uri::from(parts.uri.path_and_query().cloned().ok_or_else(bad_target)?),
            };
            if host_header != Some(authority) {
                let v = HeaderValue::from_str(authority).map_err(|_| bad_target())?;
                parts.headers.insert(header::HOST, v);
            }
            (uri, Version::HTTP_11)
        }
    };
    // The request body: none, streamed once, or teed so a retry can replay it.
    let mut body = RequestBody::new(body);
    let retry = &action.retry;
    let deadline = action.timeout.map(|t| started + t);
    let mut tried: Vec<usize> = Vec::new();
    let mut backoff_ceiling = BACKOFF_BASE_MS;
    let mut attempt = 0;
    let mut retry_slot: Option<RetrySlot> = None;
    loop {
        let set = cluster.hosts.load_full();
        // A retry avoids hosts already tried; when none is left it re-picks among all (Envoy
        // keeps its last pick once the predicate's attempts run out).
        let pick = set.pick(|i| tried.contains(&i));
        let pick = if pick.is_none() && attempt > 0 {
            set.pick(|_| false)
        } else {
            pick
        };
        let Some(hi) = pick else {
            cluster.stats.cx_none_healthy.inc();
            let e = ProxyError::internal(Kind::NoHealthyUpstream, "no healthy upstream");
            cluster.stats.rq.record(e.status());
            action.stats.rq.record(e.status());
            return Err(e);
        };
        tried.push(hi);
        let host = set.hosts[hi].clone();
        info.upstream_host = Some(host.name.clone());
        let per_try = match (retry.per_try_timeout, deadline) {
            (Some(t), Some(d)) => Some((Instant::now() + t).min(d)),
            (Some(t), None) => Some(Instant::now() + t),
            (None, d) => d,
        };
        let mut in_flight = InFlight::start(host.clone(), cluster.clone(), Instant::now());
        let may_retry = attempt < retry.max_retries;
        let try_once = async {
            let sender = acquire(&cluster, &host).await?;
            let req = upstream_request(&parts, &uri, version, body.next(may_retry));
            send_on(&cluster, sender, req).await
        };
        let outcome = match per_try {
            Some(at) => match tokio::time::timeout_at(at.into(), try_once).await {
                Ok(r) => r,
                Err(_) => Err(ProxyError::upstream(
                    Kind::Timeout,
                    "upstream request timeout",
                )),
            },
            None => try_once.await,
        };
        drop(retry_slot.take());
        let global_timeout = deadline.is_some_and(|d| Instant::now() >= d);
        let can_retry = may_retry && !global_timeout && body.replayable();
        match outcome {
            Ok((resp, h1)) => {
                let status = resp.status().as_u16();
                cluster.record_outcome(&host, Outcome::Status(status));
                let grpc = resp
                    .headers()
                    .get(&headers::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok());
                host.stats.rq.record(status);
                if retry.retry_on_response(status, grpc) {
                    if let Some(slot) = retry_or_give_up(&cluster, can_retry, attempt, retry, info)
                    {
                        // The response is dropped unread; its connection is not reused.
                        drop(resp);
                        drop(in_flight);
                        retry_slot = Some(slot);
                        backoff(&mut backoff_ceiling).await;
                        attempt += 1;
                        continue;
                    }
                } else if attempt > 0 {
                    cluster.stats.rq_retry_success.inc();
                }
                cluster.stats.rq.record(status);
                action.stats.rq.record(status);
                in_flight.h1 = h1;
                let timer =
                    BodyTimer::new(deadline, action.idle_timeout.or(Some(STREAM_IDLE_TIMEOUT)));
                return Ok(downstream_response(resp, in_flight, started, timer));
            }
            Err(mut e) => {
                if let Some(o) = outcome_of(&e) {
                    cluster.record_outcome(&host, o);
                }
                host.stats.rq_error.inc();
                if e.kind == Kind::Timeout {
                    host.stats.rq_timeout.inc();
                    if global_timeout {
                        cluster.stats.rq_timeout.inc();
                    } else {
                        // A per-try timeout is retried like a reset (Envoy).
                        e.kind = Kind::Reset;
                        e.detail = "per-try timeout".into();
                    }
                }
                if matches!(
                    e.kind,
                    Kind::ConnectFailure | Kind::ConnectTimeout | Kind::TlsFailure
                ) {
                    host.stats.cx_connect_fail.inc();
                    cluster.stats.cx_connect_fail.inc();
                }
                if e.kind == Kind::TlsFailure {
                    cluster.stats.cx_tls_fail.inc();
                }
                drop(in_flight);
                if retry.retry_on_error(e.kind) {
                    if let Some(slot) = retry_or_give_up(&cluster, can_retry, attempt, retry, info)
                    {
                        retry_slot = Some(slot);
                        backoff(&mut backoff_ceiling).await;
                        attempt += 1;
                        continue;
                    }
                }
                cluster.stats.rq.record(e.status());
                action.stats.rq.record(e.status());
                return Err(e);
            }
        }
    }
}

/// Largest request body kept for a retry (Envoy's default buffer limit, 1 MiB); a larger
/// body is streamed without a copy and the request is not retried.
const RETRY_BUFFER_LIMIT: usize = 1024 * 1024;

/// Where the request body is across attempts.
struct RequestBody {
    /// Not yet handed to any attempt.
    pending: Option<Incoming>,
    /// The copy a teed attempt left.
    replay: Option<Arc<Replay>>,
    empty: bool,
}

impl RequestBody {
    fn new(body: Incoming) -> Self {
        let empty = http_body::Body::is_end_stream(&body);
        RequestBody {
            pending: (!empty).then_some(body),
            replay: None,
            empty,
        }
    }

    /// The body for the next attempt; tee it when another attempt may follow.
    fn next(&mut self, may_retry: bool) -> UpBody {
        if self.empty {
            return UpBody::empty();
        }
        if let Some(b) = self.pending.take() {
            if may_retry {
                let replay = Replay::new(RETRY_BUFFER_LIMIT);
                self.replay = Some(replay.clone());
                return UpBody::Tee(b, replay);
            }
            return UpBody::Stream(b);
        }
        UpBody::Full(self.replay.as_ref().and_then(|r| r.body()))
    }

    /// Whether another attempt can send the same body.
    fn replayable(&self) -> bool {
        self.empty
            || self.pending.is_some()
            || self.replay.as_ref().is_some_and(|r| r.body().is_some())
    }
}

/// A retriable outcome: a budget slot to retry with, or None to give up (counting a spent
/// `maxRetries`, Envoy's URX).
fn retry_or_give_up(
    cluster: &Arc<Cluster>,
    can_retry: bool,
    attempt: u32,
    retry: &super::RetryPolicy,
    info: &mut RequestInfo,
) -> Option<RetrySlot> {
    if can_retry {
        return RetrySlot::take(cluster);
    }
    if attempt >= retry.max_retries && retry.max_retries > 0 {
        cluster.stats.rq_retry_limit_exceeded.inc();
        info.flags = "URX";
    }
    None
}

/// A retry counted against the cluster's retry budget while it is scheduled or running.
struct RetrySlot(Arc<Cluster>);

impl RetrySlot {
    fn take(cluster: &Arc<Cluster>) -> Option<RetrySlot> {
        if !cluster.retry_allowed() {
            cluster.stats.rq_retry_overflow.inc();
            return None;
        }
        cluster.stats.rq_retry.inc();
        cluster
            .retries_active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(RetrySlot(cluster.clone()))
    }
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0
            .retries_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a failed attempt counts for outlier detection.
fn outcome_of(e: &ProxyError) -> Option<Outcome> {
    match e.kind {
        Kind::ConnectFailure | Kind::ConnectTimeout | Kind::TlsFailure => {
            Some(Outcome::ConnectFailure)
        }
        Kind::Reset | Kind::RefusedStream => Some(Outcome::Reset),
        Kind::Timeout => Some(Outcome::LocalTimeout),
        Kind::BadUpstreamResponse => Some(Outcome::Status(502)),
        _ => None,
    }
}

/// Envoy's jittered exponential backoff: wait `rand % ceiling`, then double the ceiling up to
/// 10 × base.
async fn backoff(ceiling: &mut u64) {
    let wait = rand::random::<u64>() % *ceiling;
    *ceiling = (*ceiling * 2).min(BACKOFF_BASE_MS * 10);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

fn upstream_request(
    parts: &http::request::Parts,
    uri: &Uri,
    version: Version,
    body: UpBody,
) -> Request<UpBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = parts.headers.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = version;
    req
}

fn bad_target() -> ProxyError {
    ProxyError::new(
        Source::Downstream,
        Kind::BadRequest,
        "request target or host cannot be forwarded",
    )
}

fn downstream_response(
    resp: Response<Incoming>,
    in_flight: InFlight,
    started: Instant,
    timer: Option<BodyTimer>,
) -> Response<DownBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::default();
    let ms = started.elapsed().as_millis() as u64;
    parts.headers.insert(
        headers::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
        HeaderValue::from(ms),
    );
    let in_flight = if http_body::Body::is_end_stream(&body) {
        in_flight.settle_clean();
        None
    } else {
        Some(in_flight)
    };
    Response::from_parts(parts, DownBody::upstream(body, in_flight, timer))
}

/// Send on a connection we hold.
async fn send_on(
    cluster: &Cluster,
    sender: Sender,
    req: Request<UpBody>,
) -> Result<(Response<Incoming>, Option<crate::pool::H1Sender>), ProxyError> {
    match sender {
        Sender::H1(mut s) => {
            let resp = s.send_request(req).await.map_err(classify)?;
            Ok((resp, Some(s)))
        }
        Sender::H2(mut s) => {
            let active = cluster.stats.rq_active.get();
            if active > i64::from(cluster.breakers.max_requests) {
                cluster.stats.rq_pending_overflow.inc();
                return Err(ProxyError::internal(Kind::Overflow, "max requests"));
            }
            s.ready().await.map_err(classify)?;
            let resp = s.send_request(req).await.map_err(classify)?;
            Ok((resp, None))
        }
    }
}

/// Get a connection: idle, new, or after waiting under max_connections.
async fn acquire(cluster: &Arc<Cluster>, host: &Arc<Host>) -> Result<Sender, ProxyError> {
    if let Some(s) = host.pool.take_idle() {
        return Ok(s);
    }
    let _h2_connecting = if host.pool.protocol() == crate::config::UpstreamProtocol::Http2 {
        let g = host.pool.h2_connecting().lock().await;
        if let Some(s) = host.pool.take_idle() {
            return Ok(s);
        }
        Some(g)
    } else {
        None
    };
    if cluster.try_reserve_connection() {
        return connect(cluster, host).await;
    }
    cluster.stats.cx_overflow.inc();
    // At max_connections: wait as a pending request, if the pending limit allows.
    let pending = cluster.stats.rq_pending_active.get();
    if pending >= i64::from(cluster.breakers.max_pending_requests) {
        cluster.stats.rq_pending_overflow.inc();
        return Err(ProxyError::internal(Kind::Overflow, "max pending requests"));
    }
    cluster.stats.rq_pending_active.inc();
    let _pending = scopeguard(|| cluster.stats.rq_pending_active.dec());
    loop {
        let released = cluster.cx_released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if let Some(s) = host.pool.take_idle() {
            return Ok(s);
        }
        if cluster.try_reserve_connection() {
            return connect(cluster, host).await;
        }
        // Connections idle on other hosts hold slots this host needs: close one.
        cluster.reclaim_idle_connection(host);
        released.await;
    }
}

async fn connect(cluster: &Arc<Cluster>, host: &Arc<Host>) -> Result<Sender, ProxyError> {
    let s = host
        .pool
        .connect(
            cluster.connect_timeout,
            cluster.connection_guard(host),
            cluster.tls.load_full(),
        )
        .await?;
    cluster.record_outcome(host, Outcome::ConnectSuccess);
    Ok(s)
}

struct ScopeGuard<F: FnMut()>(F);
impl<F: FnMut()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
fn scopeguard<F: FnMut()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(f)
}

fn classify(e: hyper::Error) -> ProxyError {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return ProxyError::upstream(Kind::RefusedStream, "refused stream");
            }
        }
        src = s.source();
    }
    if e.is_parse() || e.is_parse_status() {
        return ProxyError::new(Source::Upstream, Kind::BadUpstreamResponse, e.to_string());
    }
    ProxyError::upstream(
        Kind::Reset,
        if e.is_incomplete_message() {
            "connection termination".into()
        } else {
            e.to_string()
        },
    )
}
