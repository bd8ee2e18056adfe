//! A request's timers, with Envoy's starting points: the route timeout runs from the end of
//! the downstream request until the response is complete, and the per-try timeout from the
//! later of that end and its attempt's start, so an upload slower than the route timeout is not
//! cut short. Until the request's body has ended, the stream idle timeout guards an upload that
//! stalls (no body frame for that long: 408, flag `SI`).

use crate::error::{Kind, ProxyError};
use crate::pool::{BodyProgress, BodyState};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::{sleep_until, Sleep};

/// A connection's route timer, kept between its requests (HAProxy's model: a timer is moved,
/// not made, and only when it must fire earlier). NOTE: a timer made, registered and dropped
/// per request cost ~500 instructions; a kept one is registered at an earlier request's
/// deadline and moved to the current one only when it fires first (`Timeouts::expiry`).
/// HTTP/2 streams of one connection share it: one uses it, the others make their own.
#[derive(Default)]
pub struct KeptTimer(Mutex<Option<Pin<Box<Sleep>>>>);

impl KeptTimer {
    pub fn take(&self) -> Option<Pin<Box<Sleep>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Keep `timer` for the next request unless another is kept already.
    pub fn put(&self, timer: Option<Pin<Box<Sleep>>>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.is_none() {
            *kept = timer;
        }
    }
}

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
    /// `route_expired` tells them apart afterwards. `timer` is used (and made if None) for the
    /// deadline (see `KeptTimer`).
    pub async fn expiry(
        &self,
        attempt: Instant,
        timer: &mut Option<Pin<Box<Sleep>>>,
    ) -> ProxyError {
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
        let at = tokio::time::Instant::from_std(at);
        let sleep = timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        // At most twice round: after a reset the deadline is `at`.
        loop {
            if sleep.deadline() > at {
                sleep.as_mut().reset(at);
            }
            sleep.as_mut().await;
            if sleep.deadline() >= at {
                return e;
            }
            // Fired at an earlier request's deadline: move it to this one.
            sleep.as_mut().reset(at);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route_only(route: Duration) -> Timeouts {
        Timeouts::new(
            Some(route),
            None,
            Duration::from_secs(300),
            Instant::now(),
            None,
        )
    }

    #[tokio::test]
    async fn a_kept_timer_that_fires_first_is_moved_to_the_deadline() {
        // Kept from an earlier request: registered before this request's deadline.
        let mut timer = Some(Box::pin(sleep_until(
            tokio::time::Instant::now() + Duration::from_millis(20),
        )));
        let t = route_only(Duration::from_millis(200));
        let deadline = t.route_deadline().unwrap();
        let e = t.expiry(Instant::now(), &mut timer).await;
        assert_eq!(e.kind, Kind::Timeout);
        assert!(
            Instant::now() >= deadline,
            "fired before the route deadline"
        );
        assert!(t.route_expired());
    }

    #[tokio::test]
    async fn a_kept_timer_due_later_is_moved_earlier() {
        let mut timer = Some(Box::pin(sleep_until(
            tokio::time::Instant::now() + Duration::from_secs(3600),
        )));
        let t = route_only(Duration::from_millis(20));
        // Bounded: without the move this would wait an hour.
        let e = tokio::time::timeout(
            Duration::from_secs(60),
            t.expiry(Instant::now(), &mut timer),
        )
        .await
        .expect("the kept timer was not moved to the earlier deadline");
        assert_eq!(e.kind, Kind::Timeout);
        assert!(t.route_expired());
        let mut none = None;
        let e = t.expiry(Instant::now(), &mut none).await;
        assert_eq!(e.kind, Kind::Timeout);
        assert!(none.is_some(), "a timer is made when none is kept");
    }
}
