//! The request path as named phases over one per-request `Session`: downstream request →
//! route → upstream target → (pick upstream → upstream request → upstream response or
//! failure → retry or give up)* → downstream response → log. No Python. The only lock held
//! across an await is the per-host tokio mutex that serializes opening a shared HTTP/2
//! connection (`upstream::acquire`); std mutexes (pools, replay buffers) never are.

use super::body::{BodyTimer, DownBody, InFlight};
use super::compiled::{Action, Compiled};
use super::conn::{ConnCtx, ListenerState};
use super::headers;
use super::retry::{Again, Attempts, Failure, RequestBody};
use super::timeouts::Timeouts;
use super::upstream::{acquire, send_h1, send_h2, Sent};
use crate::accesslog::{AccessLog, Record, ResponseFlags};
use crate::cluster::{Claim, Cluster, Host, Outcome};
use crate::error::{Kind, ProxyError, Source};
use crate::pool::{BodyState, Sender, UpBody, H1};
use crate::route;
use crate::stats::ListenerStats;
use crate::trace::context::TRACEPARENT;
use crate::trace::{ActiveSpan, Arrival, Mark, Moment, W3cHeader};
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// Envoy's stream idle timeout default, when the route sets none.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The client went away mid-request: there is nobody to answer, so hyper closes the
/// connection (HTTP/1.1) or resets the stream (HTTP/2) instead of sending a response.
#[derive(Debug)]
pub struct DownstreamGone;

impl std::fmt::Display for DownstreamGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("downstream went away before its request was complete")
    }
}

impl std::error::Error for DownstreamGone {}

/// Serve one request: its phases, in order, over one `Session`.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<DownBody>, DownstreamGone> {
    let state = ctx.slot.state.load_full();
    // Phase zero: a request the protocol refuses (Host, Transfer-Encoding) is answered here,
    // counted as rejected, and never routed (`downstream.rs`).
    if let Some(reply) = super::downstream::refuse(&req, &state.config.stats) {
        state.config.stats.rq_total.inc();
        return Ok(reply);
    }
    let mut session = Session::downstream_request(&ctx, &state, &mut req);
    let result = session.proxy(req).await;
    session.downstream_response(result)
}

/// One request's life as named phases over one context (pingora's `ProxyHttp` with its
/// `CTX`): `downstream_request` → `route` → `upstream_target` → per attempt `pick_upstream`
/// (`pick_instance` in a function cluster), `upstream_request`, then `upstream_response` or `upstream_failure` (each ends in the one
/// retry decision, `Attempts::decide`) → `downstream_response` → `log`. Tracing, filters and
/// functions hook into these phases.
struct Session<'a> {
    conn: &'a ConnCtx,
    state: &'a ListenerState,
    /// Undone on drop: hyper drops this future when the client goes away mid-request.
    _active: ActiveRequest<'a>,
    log: Option<PendingLog<'a>>,
    /// The request's span when the snapshot traces and the request is recorded.
    span: Option<ActiveSpan>,
    /// The W3C `traceparent` this proxy started for the request, when it is not in the
    /// request's header map: the attempts send it (`Head::traceparent`).
    traceparent: Option<HeaderValue>,
    /// Our `traceparent` may be sent without a header-map entry: the request carries none
    /// and nothing before the upstream reads it in the map (`downstream_request`).
    traceparent_out_of_map: bool,
    info: RequestInfo,
    started: Instant,
}

/// Where routing led: the action, and the path and authority after its rewrites.
struct Routed<'a> {
    action: &'a Action,
    path: Option<String>,
    authority: Option<String>,
}

/// What every attempt sends: the cluster, and the request head as the upstream sees it.
struct Target<'a> {
    action: &'a Action,
    cluster: Arc<Cluster>,
    head: Head,
}

/// The request head every attempt sends.
struct Head {
    /// Method, upstream URI and version, headers; `None` while an HTTP/1.1 attempt has it
    /// (`lend`, `give_back`).
    parts: Option<http::request::Parts>,
    /// Our `traceparent` when it is not an entry in `parts.headers`: hyper's HTTP/1.1 encoder
    /// writes it after the head's headers (see `Session::downstream_request`).
    traceparent: Option<HeaderValue>,
    /// A recorded request's attempts put their `traceparent` in `traceparent`, not in the
    /// map (HTTP/1.1 upstreams, when `Session::traceparent_out_of_map`).
    traceparent_out_of_map: bool,
}

/// The upstream side of one request, across its attempts.
struct Upstream<'a> {
    target: Target<'a>,
    body: RequestBody,
    timeouts: Timeouts,
    attempts: Attempts<'a>,
}

impl<'a> Session<'a> {
    /// Phase: the request head arrived. Count it, prepare its headers as the connection
    /// manager does, start its access-log record.
    fn downstream_request(
        conn: &'a ConnCtx,
        state: &'a ListenerState,
        req: &mut Request<Incoming>,
    ) -> Self {
        let stats = &state.config.stats;
        stats.rq_total.inc();
        let active = ActiveRequest::begin(conn, stats);
        let seen = prepare_request(conn, req.headers_mut());
        // Continue or start the trace; the request carries our span to the upstream. A new
        // W3C context that is not recorded (most requests at a low sampling rate) stays out of
        // the header map when nothing before the upstream reads it there (the routes' header
        // matches, this listener's access log): hyper's HTTP/1.1 encoder writes it after the
        // request's headers (`Head::extra_line`; an HTTP/2 upstream gets it in the map,
        // `upstream_target`). The upstream receives the same header either way.
        // NOTE: one fewer header-map entry: its lookup, insert, copy per attempt and free
        // (~500 instructions a request; benches/README.md, tracing cost "Fifth pass").
        let mut traceparent = None;
        let traceparent_out_of_map = !(seen.traceparent || state.config.traceparent_in_map);
        let span = state.compiled.tracing.as_ref().and_then(|t| {
            let arrival = Arrival {
                scheme: conn.scheme,
                peer: conn.peer.ip(),
                listener: &conn.slot.name,
            };
            let w3c = match (seen.traceparent, state.config.traceparent_in_map) {
                (true, _) => W3cHeader::Present,
                (false, true) => W3cHeader::Absent,
                (false, false) => W3cHeader::AbsentOutOfMap(&mut traceparent),
            };
            t.begin(req, arrival, w3c)
        });
        // A client that goes away before the response still gets its line (flag DC, code 0).
        let log = state.config.access_log.as_ref().map(|l| PendingLog {
            log: l,
            record: Some(l.begin(req, conn.peer, conn.local, conn.client_uri_san())),
        });
        Session {
            conn,
            state,
            _active: active,
            log,
            span,
            traceparent,
            traceparent_out_of_map,
            info: RequestInfo::default(),
            started: Instant::now(),
        }
    }

    /// The phases between the request head and the response head.
    async fn proxy(&mut self, req: Request<Incoming>) -> Result<Response<DownBody>, ProxyError> {
        let (parts, body) = req.into_parts();
        let routed = self.route(&parts)?;
        self.mark(Mark::Routed);
        let target = self.upstream_target(routed, parts)?;
        let action = target.action;
        let body = RequestBody::new(body);
        let timeouts = Timeouts::new(
            action.timeout,
            action.retry.per_try_timeout,
            action.idle_timeout.unwrap_or(STREAM_IDLE_TIMEOUT),
            self.started,
            body.progress.clone(),
        );
        let mut up = Upstream {
            target,
            body,
            timeouts,
            attempts: Attempts::new(&action.retry),
        };
        // NOTE: a reconnect keeps the attempt's claim on a function instance.
        let mut reconnect: Option<(Arc<Host>, Option<Claim>)> = None;
        loop {
            let (host, claim, fresh) = match reconnect.take() {
                Some((h, c)) => (h, c, true),
                None if up.target.cluster.function.is_none() => {
                    (self.pick_upstream(&mut up)?, None, false)
                }
                None => {
                    let claim = self.pick_instance(&mut up).await?;
                    (claim.host().clone(), Some(claim), false)
                }
            };
            let cluster = up.target.cluster.clone();
            // NOTE: one clock read for the attempt's stats and its timers.
            let started = Instant::now();
            let in_flight = InFlight::start(host.clone(), cluster, started, claim);
            let sent = self.upstream_request(&mut up, &host, fresh, started).await;
            // The retry this attempt was (if any) is over.
            up.attempts.slot = None;
            let (again, claim) = match sent {
                Ok((resp, h1)) => match self.upstream_response(&mut up, &host, resp) {
                    Ok(resp) => return Ok(self.forward_response(&up, resp, in_flight, h1)),
                    // The response is dropped unread; its connection is not reused.
                    Err(again) => (again, in_flight.keep_claim()),
                },
                Err(e) => {
                    let claim = in_flight.keep_claim();
                    (self.upstream_failure(&mut up, &host, e)?, claim)
                }
            };
            match again {
                Again::Reconnect => reconnect = Some((host, claim)),
                Again::Retry(slot) => {
                    drop(claim);
                    if let Some(s) = &mut self.span {
                        s.mark(Mark::Retry);
                        s.data().retries += 1;
                    }
                    up.attempts.slot = Some(slot);
                    up.attempts.backoff().await;
                }
            }
        }
    }

    /// Phase: find the route through the listener's table and any tables it continues into,
    /// applying each route's rewrites.
    fn route(&mut self, parts: &http::request::Parts) -> Result<Routed<'a>, ProxyError> {
        let state: &'a ListenerState = self.state;
        let compiled: &'a Compiled = &state.compiled;
        let Some(mut table) = self.state.config.route_table else {
            return Err(ProxyError::internal(
                Kind::NoRoute,
                "listener has no route table",
            ));
        };
        let sent_authority = sent_authority(parts);
        let sent_path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // NOTE: rewrites allocate only when a route asks for one.
        let mut path: Option<String> = None;
        let mut authority: Option<String> = None;
        for depth in 0.. {
            let view = route::Request {
                method: parts.method.as_str(),
                path: path.as_deref().unwrap_or(sent_path),
                authority: authority.as_deref().unwrap_or(sent_authority),
                scheme: self.conn.scheme,
                port: self.conn.local_port,
                headers: &parts.headers,
            };
            let Some(r) = compiled.tables[table].find(&view) else {
                self.state.config.stats.no_route.inc();
                return Err(ProxyError::internal(Kind::NoRoute, "no route"));
            };
            let a = &r.action;
            a.stats.rq_total.inc();
            self.info.route = Some(r.name.clone());
            if let (Some(with), Some(prefix)) = (&a.rewrite_prefix, &r.prefix) {
                path = Some(rewrite_prefix(view.path, prefix, with));
            } else if let Some(with) = &a.rewrite_path {
                path = Some(replace_path(view.path, with));
            }
            if let Some(h) = &a.rewrite_host {
                authority = Some(h.to_string());
            }
            match a.next_table {
                Some(next) if depth < MAX_ROUTE_DEPTH => table = next,
                Some(_) => break,
                None => {
                    return Ok(Routed {
                        action: a,
                        path,
                        authority,
                    })
                }
            }
        }
        Err(ProxyError::internal(
            Kind::NoRoute,
            "route tables nest too deep",
        ))
    }

    /// Phase: pick the cluster among the route's weighted targets and build the request head
    /// the upstream sees, once for every attempt.
    fn upstream_target(
        &mut self,
        routed: Routed<'a>,
        mut parts: http::request::Parts,
    ) -> Result<Target<'a>, ProxyError> {
        let action = routed.action;
        let Some(weights) = &action.weights else {
            return Err(ProxyError::internal(
                Kind::NoHealthyUpstream,
                "route has no weighted target",
            ));
        };
        let compiled = &self.state.compiled;
        let cluster = compiled.clusters[action.clusters[weights.pick_random()]].clone();
        self.info.cluster = Some(cluster.name.clone());
        cluster.stats.rq_total.inc();
        // NOTE: one Host lookup for both uses (`sent_authority` without a second `get`).
        let host_header = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        let sent = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or(host_header)
            .unwrap_or("");
        let authority: &str = match routed.authority.as_deref() {
            Some(a) => a,
            None if sent.is_empty() => "localhost",
            None => sent,
        };
        let (uri, version, host) = match cluster.protocol {
            crate::config::UpstreamProtocol::Http2 => {
                let p = routed.path.as_deref();
                let p = p.unwrap_or(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
                let uri = format!("http://{authority}{p}")
                    .parse()
                    .map_err(|_| bad_target())?;
                (uri, Version::HTTP_2, None)
            }
            _ => {
                let uri = match &routed.path {
                    Some(p) => p.parse().map_err(|_| bad_target())?,
                    // NOTE: no rewrite: reuse the parsed path (a refcount, no parse, no copy).
                    None => Uri::from(parts.uri.path_and_query().cloned().ok_or_else(bad_target)?),
                };
                let host = if host_header != Some(authority) {
                    Some(HeaderValue::from_str(authority).map_err(|_| bad_target())?)
                } else {
                    None
                };
                (uri, Version::HTTP_11, host)
            }
        };
        match (version, host) {
            (Version::HTTP_2, _) => {
                parts.headers.remove(header::HOST);
            }
            (_, Some(v)) => {
                parts.headers.insert(header::HOST, v);
            }
            _ => {}
        }
        let mut traceparent = self.traceparent.take();
        if version == Version::HTTP_2 {
            // hyper's HTTP/2 client writes the map only.
            if let Some(v) = traceparent.take() {
                parts.headers.append(TRACEPARENT.clone(), v);
            }
        }
        // The parts become the upstream's head (no downstream extensions: hyper's client
        // reads some, and the upstream request never had them).
        parts.uri = uri;
        parts.version = version;
        parts.extensions = http::Extensions::new();
        Ok(Target {
            action,
            cluster,
            head: Head {
                parts: Some(parts),
                traceparent,
                traceparent_out_of_map: self.traceparent_out_of_map && version != Version::HTTP_2,
            },
        })
    }

    /// Phase: pick the host for the next attempt. A retry avoids hosts already tried; when
    /// none is left it re-picks among all (Envoy keeps its last pick once the predicate's
    /// attempts run out).
    fn pick_upstream(&mut self, up: &mut Upstream<'_>) -> Result<Arc<Host>, ProxyError> {
        let (target, attempts) = (&up.target, &mut up.attempts);
        let cluster = &target.cluster;
        let set = cluster.hosts.load();
        let pick = set.pick(|i| attempts.tried.contains(&i));
        let pick = if pick.is_none() && attempts.retries > 0 {
            set.pick(|_| false)
        } else {
            pick
        };
        let Some(hi) = pick else {
            cluster.stats.cx_none_healthy.inc();
            let e = ProxyError::internal(Kind::NoHealthyUpstream, "no healthy upstream");
            cluster.stats.rq.record(e.status());
            target.action.stats.rq.record(e.status());
            return Err(e);
        };
        attempts.tried.push(hi);
        let host = set.hosts[hi].clone();
        self.info.upstream_host = Some(host.name.clone());
        Ok(host)
    }

    /// Phase: pick the host of a function cluster: claim an idle instance, or wait for one,
    /// or be throttled (`Cluster::claim_instance`). A retry prefers an instance not tried.
    async fn pick_instance(&mut self, up: &mut Upstream<'_>) -> Result<Claim, ProxyError> {
        let cluster = up.target.cluster.clone();
        let claim = cluster.claim_instance(&up.attempts.tried);
        // The route timeout covers the wait for an instance, as Envoy's covers a request
        // pending in a connection pool (a request whose body is still arriving has no route
        // deadline yet).
        let claimed = match up.timeouts.route_deadline() {
            Some(at) => tokio::select! {
                r = claim => r,
                () = tokio::time::sleep_until(at.into()) => {
                    cluster.stats.rq_timeout.inc();
                    Err(super::timeouts::route_timeout())
                }
            },
            None => claim.await,
        };
        match claimed {
            Ok((claim, index)) => {
                up.attempts.tried.extend(index);
                self.info.upstream_host = Some(claim.host().name.clone());
                Ok(claim)
            }
            Err(e) => {
                if e.kind == Kind::NoInstance {
                    cluster.stats.cx_none_healthy.inc();
                }
                cluster.stats.rq.record(e.status());
                up.target.action.stats.rq.record(e.status());
                Err(e)
            }
        }
    }

    /// Phase: one attempt: a connection (pooled, or `fresh`), the request sent on it, the
    /// response head awaited, all under the request's timers.
    async fn upstream_request(
        &mut self,
        up: &mut Upstream<'_>,
        host: &Arc<Host>,
        fresh: bool,
        started: Instant,
    ) -> Result<Sent, ProxyError> {
        let Upstream {
            target,
            body,
            timeouts,
            attempts,
        } = up;
        let (cluster, head) = (&target.cluster, &mut target.head);
        let mut unsent = attempts.unsent.take();
        if let Some(span) = &mut self.span {
            // This attempt's CLIENT span is the next hop's parent. Its W3C `traceparent` is
            // written as hyper's extra line when an unrecorded request's would be
            // (`downstream_request`).
            // NOTE: no header-map entry: its hash, probe and insert (~500 instructions a
            // recorded request; benches/README.md, tracing cost "Sixth pass").
            let tls = cluster.tls.load().is_some();
            let Head {
                parts,
                traceparent,
                traceparent_out_of_map,
            } = head;
            let headers = match (&mut unsent, parts) {
                (Some(r), _) => Some(r.headers_mut()),
                (None, p) => p.as_mut().map(|p| &mut p.headers),
            };
            if let Some(headers) = headers {
                let line = traceparent_out_of_map.then_some(traceparent);
                span.attempt(&host.name, tls, headers, line);
            }
        }
        let may_retry = attempts.may_retry();
        let returned = &mut attempts.unsent;
        let mut connected: Option<Moment> = None;
        // Only a traced request marks when its connection was ready.
        let traced = self.span.is_some();
        let conn = self.conn;
        // The HTTP/1.1 connection of this attempt, held here rather than in `try_once`: the
        // head lent to it comes back from it below even when a timer ends the attempt.
        let mut h1: Option<Box<H1>> = None;
        let try_once = async {
            let (sender, reused) = acquire(cluster, host, fresh).await?;
            if traced {
                connected = Some(Moment::now());
            }
            // A reused HTTP/1.1 connection may turn out stale after the body went: keep a copy
            // then too. (HTTP/2 hands an unsent request back; its streams may be long.)
            let keep_copy = may_retry || (reused && matches!(sender, Sender::H1(_)));
            let sent = match sender {
                Sender::H1(c) => {
                    let req = match unsent {
                        Some(r) => r,
                        None => head.lend(body.next(keep_copy))?,
                    };
                    let extra = head.extra_line();
                    send_h1(h1.insert(c), req, extra).await
                }
                Sender::H2(s) => {
                    let req = match unsent {
                        Some(r) => r,
                        None => head.request(body.next(keep_copy))?,
                    };
                    send_h2(cluster, s, req).await
                }
            };
            sent.map_err(|(mut e, req)| {
                e.reused = reused;
                *returned = req;
                e
            })
        };
        let sent = if timeouts.armed() {
            let mut timer = conn.route_timer.take();
            let sent = tokio::select! {
                biased;
                r = try_once => r,
                e = timeouts.expiry(started, &mut timer) => Err(e),
            };
            conn.route_timer.put(timer);
            sent
        } else {
            try_once.await
        };
        // The head lent to the HTTP/1.1 connection comes back, unchanged: written (hyper keeps
        // it), or never taken (a timer ended the attempt first); a request hyper handed back
        // unsent is in `attempts.unsent` with its head.
        if let Some(c) = &mut h1 {
            if let Some(sent) = c.take_sent_head() {
                head.give_back(sent);
            } else if let Some(req) = c.take_unsent() {
                head.give_back(req.into_parts().0);
            }
        }
        let sent = sent.map(|resp| (resp, h1));
        if let (Some(s), Some(at)) = (&mut self.span, connected) {
            s.mark_at(Mark::UpstreamConnected, at);
        }
        // A body the client broke makes the attempt fail: that failure is the client's.
        sent.map_err(|e| match body.progress.as_ref().map(|p| p.state()) {
            Some(BodyState::Disconnected) => ProxyError::downstream(
                Kind::DownstreamDisconnect,
                "client closed before the request body was complete",
            ),
            Some(BodyState::Malformed) => {
                ProxyError::downstream(Kind::BadRequest, "malformed request body")
            }
            _ => e,
        })
    }

    /// Phase: the upstream's response head. Count it for the host and for outlier detection;
    /// retry it if the policy names it; else it goes downstream.
    fn upstream_response(
        &mut self,
        up: &mut Upstream<'_>,
        host: &Host,
        resp: Response<Incoming>,
    ) -> Result<Response<Incoming>, Again> {
        self.mark(Mark::FirstByte);
        let cluster = &up.target.cluster;
        let status = resp.status().as_u16();
        cluster.record_outcome(host, Outcome::Status(status));
        host.stats.rq.record(status);
        let grpc = resp
            .headers()
            .get(&headers::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        let expired = up.timeouts.route_expired();
        let failure = Failure::Response(status, grpc);
        let flags = &mut self.info.flags;
        let again = up
            .attempts
            .decide(failure, cluster, &up.body, expired, flags);
        if let Some(s) = &mut self.span {
            s.attempt_answered(status, again.is_some());
        }
        if let Some(again) = again {
            return Err(again);
        }
        cluster.stats.rq.record(status);
        up.target.action.stats.rq.record(status);
        Ok(resp)
    }

    /// Phase: an attempt failed without a response. Only an upstream's failure is charged to
    /// its host (stats, outlier detection); then retry or give up.
    fn upstream_failure(
        &mut self,
        up: &mut Upstream<'_>,
        host: &Host,
        mut e: ProxyError,
    ) -> Result<Again, ProxyError> {
        if let Some(s) = &mut self.span {
            s.attempt_failed(e.kind_name());
        }
        let cluster = &up.target.cluster;
        let expired = up.timeouts.route_expired();
        if e.charged_to_upstream() {
            charge(cluster, host, &e);
        }
        let mut per_try_expired = false;
        if e.kind == Kind::Timeout {
            if expired {
                cluster.stats.rq_timeout.inc();
            } else {
                // A per-try timeout is retried like a reset (Envoy).
                e.kind = Kind::Reset;
                e.detail = "per-try timeout".into();
                per_try_expired = true;
            }
        }
        let flags = &mut self.info.flags;
        if let Some(again) =
            up.attempts
                .decide(Failure::Error(&e), cluster, &up.body, expired, flags)
        {
            return Ok(again);
        }
        if per_try_expired {
            // No retry left: the client gets what Envoy sends for an exhausted per-try timeout,
            // 504 `upstream request timeout` (flag UT), not a reset's 503.
            e.kind = Kind::Timeout;
        }
        if e.source != Source::Downstream {
            cluster.stats.rq.record(e.status());
        }
        up.target.action.stats.rq.record(e.status());
        Err(e)
    }

    /// The response head goes downstream; its body streams under the route timeout (if the
    /// request has ended) and the stream idle timeout.
    fn forward_response(
        &self,
        up: &Upstream<'_>,
        resp: Response<Incoming>,
        mut in_flight: InFlight,
        h1: Option<Box<crate::pool::H1>>,
    ) -> Response<DownBody> {
        in_flight.h1 = h1;
        let timer = BodyTimer::new(up.timeouts.route_deadline(), Some(up.timeouts.idle));
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::default();
        let ms = self.started.elapsed().as_millis() as u64;
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

    /// Phase: what the client gets: the upstream's response, a local reply, or (the client
    /// is gone) nothing.
    fn downstream_response(
        mut self,
        result: Result<Response<DownBody>, ProxyError>,
    ) -> Result<Response<DownBody>, DownstreamGone> {
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                self.info.flags.insert(e.response_flag());
                self.info.details = e.details();
                if e.kind == Kind::DownstreamDisconnect {
                    // Nobody to answer; logged as Envoy does: code 0, flag DC.
                    let stats = &self.state.config.stats;
                    stats.rq_time.record(self.started.elapsed());
                    drop(self.span_with_info());
                    self.log_unanswered();
                    return Err(DownstreamGone);
                }
                local_reply(&e)
            }
        };
        let status = resp.status().as_u16();
        let stats = &self.state.config.stats;
        stats.downstream_rq.record(status);
        resp.body_mut().time_to(stats.clone(), self.started);
        if let Some(mut span) = self.span_with_info() {
            span.data().status = status;
            resp.body_mut().end_span_with(span);
        }
        self.log(&mut resp, status);
        Ok(resp)
    }

    fn mark(&mut self, mark: Mark) {
        if let Some(s) = &mut self.span {
            s.mark(mark);
        }
    }

    /// The span with what the request path learned (route, cluster, host, flags).
    fn span_with_info(&mut self) -> Option<ActiveSpan> {
        let mut span = self.span.take()?;
        let d = span.data();
        d.route = self.info.route.clone();
        d.cluster = self.info.cluster.clone();
        d.upstream_host = self.info.upstream_host.clone();
        d.details = self.info.details;
        if !self.info.flags.is_empty() {
            d.flags = self.info.flags.to_string();
        }
        Some(span)
    }

    /// Phase: complete the access-log record; it is written when the response stream ends.
    fn log(&mut self, resp: &mut Response<DownBody>, status: u16) {
        if let Some((log, mut rec)) = self.take_record() {
            log.response(&mut rec, status, resp.headers());
            resp.body_mut().log_to(log.clone(), rec);
        }
    }

    /// The log phase of a request nobody is left to answer: its line is written now.
    fn log_unanswered(&mut self) {
        if let Some((log, rec)) = self.take_record() {
            log.finish(&rec);
        }
    }

    /// The access-log record with what the request path learned, if the listener logs.
    fn take_record(&mut self) -> Option<(&'a Arc<AccessLog>, Record)> {
        let (log, mut rec) = self
            .log
            .as_mut()
            .and_then(|p| p.record.take().map(|r| (p.log, r)))?;
        let info = std::mem::take(&mut self.info);
        rec.flags = info.flags;
        rec.details = info.details;
        rec.route = info.route;
        rec.cluster = info.cluster;
        rec.upstream_host = info.upstream_host;
        Some((log, rec))
    }
}

impl Head {
    /// The request of an attempt on an HTTP/2 connection: a copy of the head (hyper's HTTP/2
    /// client consumes it).
    fn request(&self, body: UpBody) -> Result<Request<UpBody>, ProxyError> {
        let parts = self.parts.as_ref().ok_or_else(head_lost)?;
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.headers_mut() = parts.headers.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        Ok(req)
    }

    /// The request of an attempt on an HTTP/1.1 connection: the head itself, lent to it; it
    /// comes back unchanged once hyper wrote it, or with the request if hyper never did
    /// (`give_back`; hyper patch: its encoder keeps the head).
    // NOTE: the copy of the head per attempt (`request`: the header map, the URI) was ~1,000
    // instructions a request (benches/README.md, data plane "Fifth pass").
    fn lend(&mut self, body: UpBody) -> Result<Request<UpBody>, ProxyError> {
        let parts = self.parts.take().ok_or_else(head_lost)?;
        Ok(Request::from_parts(parts, body))
    }

    /// The head lent by `lend`, back from hyper.
    fn give_back(&mut self, head: http::request::Parts) {
        self.parts = Some(head);
    }

    /// The header line written after the map's on HTTP/1.1 (hyper patch `send_with`): our
    /// `traceparent` when it was not put in the map (`Session::downstream_request`).
    fn extra_line(&self) -> Option<(HeaderName, HeaderValue)> {
        self.traceparent
            .as_ref()
            .map(|v| (TRACEPARENT.clone(), v.clone()))
    }
}

/// The authority the client addressed: the URI's, else the Host header.
fn sent_authority(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("")
}

/// Count an upstream's failure against its host: stats and outlier detection.
fn charge(cluster: &Cluster, host: &Host, e: &ProxyError) {
    if let Some(o) = outcome_of(e) {
        cluster.record_outcome(host, o);
    }
    host.stats.rq_error.inc();
    if e.kind == Kind::Timeout {
        host.stats.rq_timeout.inc();
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
}

/// What the connection manager does to every request before routing (as Envoy's HCM):
/// hop-by-hop headers go, `x-forwarded-for` / `-proto` and `x-request-id` are set, and
/// `x-forwarded-client-cert` carries only the verified client certificate (SANITIZE_SET), so
/// routes and access logs see the request as the upstream will.
fn prepare_request(ctx: &ConnCtx, h: &mut http::HeaderMap) -> headers::Seen {
    let seen = headers::strip_hop_by_hop(h);
    headers::forwarded(h, &ctx.peer_ip, ctx.scheme);
    headers::request_id(h);
    match &ctx.client_cert {
        Some(v) => h.insert(headers::X_FORWARDED_CLIENT_CERT.clone(), v.clone()),
        None => h.remove(&headers::X_FORWARDED_CLIENT_CERT),
    };
    seen
}

struct PendingLog<'a> {
    log: &'a Arc<AccessLog>,
    record: Option<Record>,
}

impl Drop for PendingLog<'_> {
    fn drop(&mut self) {
        if let Some(mut rec) = self.record.take() {
            rec.flags = ResponseFlags::DC;
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
    pub flags: ResponseFlags,
    pub details: &'static str,
}

impl Default for RequestInfo {
    fn default() -> Self {
        RequestInfo {
            route: None,
            cluster: None,
            upstream_host: None,
            flags: ResponseFlags::NONE,
            details: "via_upstream",
        }
    }
}

pub fn local_reply(e: &ProxyError) -> Response<DownBody> {
    let mut r = Response::new(DownBody::local(e.reply_body()));
    *r.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    if e.kind == Kind::Throttled {
        // Lambda's throttle, as boto3 and the AWS SDKs recognise it.
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            headers::X_AMZN_ERROR_TYPE.clone(),
            HeaderValue::from_static("TooManyRequestsException"),
        );
        return r;
    }
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

/// A head lent to hyper that did not come back: never expected (every way an attempt ends
/// gives it back), answered as an internal error rather than a panic.
fn head_lost() -> ProxyError {
    ProxyError::internal(Kind::Reset, "request head not returned by the connection")
}

fn bad_target() -> ProxyError {
    ProxyError::new(
        Source::Downstream,
        Kind::BadRequest,
        "request target or host cannot be forwarded",
    )
}
