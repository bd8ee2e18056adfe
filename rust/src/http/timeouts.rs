//! A request's timers, with Envoy's starting points: the route timeout runs from the end of
//! the downstream request until the response is complete, and the per-try timeout from the
//! later of that end and its attempt's start, so an upload slower than the route timeout is not
//! cut short. Until the request's body has ended, the stream idle timeout guards an upload that
//! stalls (no body frame for that long: 408, flag `SI`).

use crate::error::{Kind, ProxyError};
use crate::pool::{BodyProgress, BodyState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::sleep_until;

pub struct Timeouts {
    route: Option<Duration>,
    per_try: Option<Duration>,
    /// The stream idle timeout (route `idleTimeoutMs`, else Envoy's 5 minutes).
    pub idle: Duration,
    /// When the request head arrived: the end of a request without a body.
    head: Instant,
    /// The request body as it streams; None for a request without one.
    body: Option<Arc<BodyProgress>>,
}

impl Timeouts {
    pub fn new(
        route: Option<Duration>,
        per_try: Option<Duration>,
        idle: Duration,
        head: Instant,
        body: Option<Arc<BodyProgress>>,
    ) -> Self {
        Timeouts {
            route,
            per_try,
            idle,
            head,
            body,
        }
    }

    /// When the downstream request ended, once it has.
    fn request_end(&self) -> Option<Instant> {
        match &self.body {
            None => Some(self.head),
            Some(p) => p.ended_at(),
        }
    }

    /// When the route timeout fires; None while the request body is still arriving.
    pub fn route_deadline(&self) -> Option<Instant> {
        Some(self.request_end()? + self.route?)
    }

    pub fn route_expired(&self) -> bool {
        self.route_deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Whether a timer can fire at all (a request without body, route or per-try timeout
    /// needs none).
    pub fn armed(&self) -> bool {
        self.body.is_some() || self.route.is_some() || self.per_try.is_some()
    }

    /// Resolves with the error of the first timer that fires for an attempt started at
    /// `attempt`. Pending forever if none can. A route or per-try timeout is `Kind::Timeout`;
    /// `route_expired` tells them apart afterwards.
    pub async fn expiry(&self, attempt: Instant) -> ProxyError {
        let end = match &self.body {
            None => self.head,
            Some(p) => match self.upload_end(p).await {
                Ok(end) => end,
                Err(e) => return e,
            },
        };
        let route = self.route.map(|t| end + t);
        let per_try = self.per_try.map(|t| end.max(attempt) + t);
        let (at, e) = match (route, per_try) {
            (Some(r), Some(p)) => (r.min(p), route_timeout()),
            (Some(at), None) | (None, Some(at)) => (at, route_timeout()),
            (None, None) => return std::future::pending().await,
        };
        sleep_until(at.into()).await;
        e
    }

    /// Wait for the upload to end; fails if it stalls for the idle timeout. A body the client
    /// broke never ends here: the attempt fails with the client's error instead.
    async fn upload_end(&self, p: &BodyProgress) -> Result<Instant, ProxyError> {
        loop {
            let idle_at = p.last_frame_at() + self.idle;
            tokio::select! {
                biased;
                state = p.settled() => {
                    return match (state, p.ended_at()) {
                        (BodyState::Ended, Some(end)) => Ok(end),
                        _ => std::future::pending().await,
                    };
                }
                () = sleep_until(idle_at.into()) => {
                    let still = p.state() == BodyState::Streaming;
                    if still && Instant::now() >= p.last_frame_at() + self.idle {
                        return Err(ProxyError::downstream(
                            Kind::StreamIdleTimeout,
                            "request body idle",
                        ));
                    }
                }
            }
        }
    }
}

pub fn route_timeout() -> ProxyError {
    ProxyError::upstream(Kind::Timeout, "upstream request timeout")
}
