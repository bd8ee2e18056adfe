//! Whether a failed attempt is tried again, decided in one place (`Attempts::decide`) from what
//! failed: a response the route's retry policy names, or a classified `ProxyError` that says who
//! caused it, whether it is retryable and whether its connection was reused. Also the state a
//! retry needs: the request body kept for a replay, the retry-budget slot, the backoff.

use super::compiled::RetryPolicy;
use crate::accesslog::ResponseFlags;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::pool::{BodyProgress, Replay, UpBody};
use http::Request;
use hyper::body::Incoming;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body kept for a retry (Envoy's default buffer limit, 1 MiB); a larger
/// body is streamed without a copy and the request is not retried.
const RETRY_BUFFER_LIMIT: usize = 1024 * 1024;
const BACKOFF_BASE_MS: u64 = 25;

/// Where the request body is across attempts.
pub struct RequestBody {
    /// Not yet handed to any attempt.
    pending: Option<Incoming>,
    /// The client's body as it streams (None: the request had no body).
    pub progress: Option<Arc<BodyProgress>>,
    /// The copy a teed attempt left.
    replay: Option<Arc<Replay>>,
}

impl RequestBody {
    pub fn new(body: Incoming) -> Self {
        let empty = http_body::Body::is_end_stream(&body);
        RequestBody {
            progress: (!empty).then(BodyProgress::new),
            pending: (!empty).then_some(body),
            replay: None,
        }
    }

    /// The body for the next attempt; tee it when another attempt may need it.
    pub fn next(&mut self, keep_copy: bool) -> UpBody {
        let Some(progress) = &self.progress else {
            return UpBody::empty();
        };
        if let Some(body) = self.pending.take() {
            let replay = keep_copy.then(|| Replay::new(RETRY_BUFFER_LIMIT));
            self.replay.clone_from(&replay);
            return UpBody::Downstream {
                body,
                progress: progress.clone(),
                replay,
            };
        }
        UpBody::Full(self.replay.as_ref().and_then(|r| r.body()))
    }

    /// Whether another attempt can send the same body.
    pub fn replayable(&self) -> bool {
        self.progress.is_none()
            || self.pending.is_some()
            || self.replay.as_ref().is_some_and(|r| r.body().is_some())
    }
}

/// What an attempt ended with.
pub enum Failure<'e> {
    /// A response the route's retry policy may name (status, trailers-only grpc-status).
    Response(u16, Option<u32>),
    Error(&'e ProxyError),
}

/// Another attempt, and why.
pub enum Again {
    /// The pooled connection had gone stale: once per request, send again on a fresh
    /// connection to the same host, outside the retry policy and budget.
    Reconnect,
    /// A retry under the policy (another host where there is one), after a backoff, holding
    /// a slot of the cluster's retry budget.
    Retry(RetrySlot),
}

/// One request's attempts.
pub struct Attempts<'a> {
    policy: &'a RetryPolicy,
    /// Retries made under the policy.
    pub retries: u32,
    /// The one reconnect after a stale pooled connection is spent.
    reconnected: bool,
    backoff_ceiling: u64,
    /// The budget slot of the retry in progress, released when its attempt ends.
    pub slot: Option<RetrySlot>,
    /// Host indices already tried, for the retry host predicate.
    pub tried: Vec<usize>,
    /// A request hyper handed back unsent, for the reconnect.
    pub unsent: Option<Request<UpBody>>,
}

impl<'a> Attempts<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Attempts {
            policy,
            retries: 0,
            reconnected: false,
            backoff_ceiling: BACKOFF_BASE_MS,
            slot: None,
            tried: Vec::new(),
            unsent: None,
        }
    }

    /// Whether the policy allows another retry after this attempt (decides whether its body
    /// is teed).
    pub fn may_retry(&self) -> bool {
        self.retries < self.policy.max_retries
    }

    /// Retry or give up (None): the only place that decides. Counts a retried request's
    /// success (Envoy's `upstream_rq_retry_success`) when its answer is not retried again. Downstream and local failures are never
    /// retried; a stale pooled connection is reconnected once for free; anything else is
    /// retried when the policy names it, retries are left, the route timeout has not passed,
    /// the body can be sent again and the retry budget has room. Sets `URX` in `flags` when
    /// the policy's retries are spent.
    pub fn decide(
        &mut self,
        failure: Failure<'_>,
        cluster: &Arc<Cluster>,
        body: &RequestBody,
        route_timed_out: bool,
        flags: &mut ResponseFlags,
    ) -> Option<Again> {
        let named = match failure {
            Failure::Response(status, grpc) => {
                let named = self.policy.retry_on_response(status, grpc);
                if !named && self.retries > 0 {
                    cluster.stats.rq_retry_success.inc();
                }
                named
            }
            Failure::Error(e) => {
                if e.stale_connection()
                    && !self.reconnected
                    && (self.unsent.is_some() || body.replayable())
                {
                    self.reconnected = true;
                    cluster.stats.rq_retry_stale_connection.inc();
                    return Some(Again::Reconnect);
                }
                e.retryable() && self.policy.retry_on_error(e.kind)
            }
        };
        self.unsent = None;
        if !named {
            return None;
        }
        if self.may_retry() && !route_timed_out && body.replayable() {
            return RetrySlot::take(cluster).map(Again::Retry);
        }
        if !self.may_retry() && self.policy.max_retries > 0 {
            cluster.stats.rq_retry_limit_exceeded.inc();
            flags.insert(ResponseFlags::URX);
        }
        None
    }

    /// Wait out Envoy's jittered exponential backoff before retry number `retries + 1`: wait
    /// `rand % ceiling`, then double the ceiling up to 10 × base.
    pub async fn backoff(&mut self) {
        let wait = rand::random::<u64>() % self.backoff_ceiling;
        self.backoff_ceiling = (self.backoff_ceiling * 2).min(BACKOFF_BASE_MS * 10);
        self.retries += 1;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// A retry counted against the cluster's retry budget while it is scheduled or running.
pub struct RetrySlot(Arc<Cluster>);

impl RetrySlot {
    fn take(cluster: &Arc<Cluster>) -> Option<RetrySlot> {
        if !cluster.retry_allowed() {
            cluster.stats.rq_retry_overflow.inc();
            return None;
        }
        cluster.stats.rq_retry.inc();
        cluster.retries_active.fetch_add(1, Relaxed);
        Some(RetrySlot(cluster.clone()))
    }
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries_active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, RetryPolicySpec};
    use crate::error::{Kind, Source};
    use crate::stats::ClusterStats;

    fn cluster() -> Arc<Cluster> {
        let spec: config::Cluster =
            serde_json::from_value(serde_json::json!({"name": "c", "protocol": "http1"})).unwrap();
        Arc::new(
            Cluster::build(
                &spec,
                Arc::new(ClusterStats::default()),
                None,
                Default::default(),
            )
            .unwrap(),
        )
    }

    fn policy(max: u32, on: &[&str]) -> RetryPolicy {
        let spec: RetryPolicySpec = serde_json::from_value(serde_json::json!({
            "maxRetries": max, "retryOn": on, "retriableStatusCodes": [503]
        }))
        .unwrap();
        RetryPolicy::from_spec(&spec).unwrap()
    }

    /// A body-less request: always replayable.
    fn no_body() -> RequestBody {
        RequestBody {
            pending: None,
            progress: None,
            replay: None,
        }
    }

    fn error(source: Source, kind: Kind) -> ProxyError {
        ProxyError::new(source, kind, "test")
    }

    #[test]
    fn downstream_and_local_failures_are_never_retried() {
        let (c, p, body) = (
            cluster(),
            policy(3, &["5xx", "reset", "connect-failure"]),
            no_body(),
        );
        let mut a = Attempts::new(&p);
        let mut flags = ResponseFlags::NONE;
        for e in [
            error(Source::Downstream, Kind::DownstreamDisconnect),
            error(Source::Downstream, Kind::BadRequest),
            error(Source::Internal, Kind::Overflow),
        ] {
            assert!(a
                .decide(Failure::Error(&e), &c, &body, false, &mut flags)
                .is_none());
        }
        assert_eq!((c.stats.rq_retry.get(), flags), (0, ResponseFlags::NONE));
    }

    #[test]
    fn a_stale_pooled_connection_is_reconnected_once_outside_the_policy() {
        let (c, p, body) = (cluster(), policy(0, &[]), no_body());
        let mut a = Attempts::new(&p);
        let mut flags = ResponseFlags::NONE;
        let mut stale = error(Source::Upstream, Kind::Reset);
        stale.closed_before_response = true;
        // On a fresh connection the same failure is the host's.
        assert!(!stale.stale_connection() && stale.charged_to_upstream());
        stale.reused = true;
        assert!(stale.stale_connection() && !stale.charged_to_upstream());
        let first = a.decide(Failure::Error(&stale), &c, &body, false, &mut flags);
        assert!(matches!(first, Some(Again::Reconnect)));
        let second = a.decide(Failure::Error(&stale), &c, &body, false, &mut flags);
        assert!(second.is_none(), "one reconnect per request");
        assert_eq!(c.stats.rq_retry_stale_connection.get(), 1);
        assert_eq!(c.stats.rq_retry.get(), 0);
    }

    #[test]
    fn policy_retries_until_spent_then_urx() {
        let (c, p, body) = (cluster(), policy(1, &["reset"]), no_body());
        let mut a = Attempts::new(&p);
        let mut flags = ResponseFlags::NONE;
        let reset = error(Source::Upstream, Kind::Reset);
        let again = a.decide(Failure::Error(&reset), &c, &body, false, &mut flags);
        assert!(matches!(again, Some(Again::Retry(_))));
        drop(again);
        a.retries += 1;
        assert!(a
            .decide(Failure::Error(&reset), &c, &body, false, &mut flags)
            .is_none());
        assert_eq!(flags, ResponseFlags::URX);
        assert_eq!(c.stats.rq_retry_limit_exceeded.get(), 1);
        // Not named by the policy: given up without URX.
        let mut flags = ResponseFlags::NONE;
        let refused = error(Source::Upstream, Kind::TlsFailure);
        let p = policy(1, &["retriable-4xx"]);
        let mut a = Attempts::new(&p);
        assert!(a
            .decide(Failure::Error(&refused), &c, &body, false, &mut flags)
            .is_none());
        assert_eq!(flags, ResponseFlags::NONE);
    }

    #[test]
    fn responses_are_retried_when_named_and_a_later_answer_counts_as_success() {
        let (c, p, body) = (cluster(), policy(2, &["retriable-status-codes"]), no_body());
        let mut a = Attempts::new(&p);
        let mut flags = ResponseFlags::NONE;
        let again = a.decide(Failure::Response(503, None), &c, &body, false, &mut flags);
        assert!(matches!(again, Some(Again::Retry(_))));
        a.retries += 1;
        assert!(a
            .decide(Failure::Response(200, None), &c, &body, false, &mut flags)
            .is_none());
        assert_eq!(c.stats.rq_retry_success.get(), 1);
        // The route timeout passed: no retry, whatever the policy says.
        let mut a = Attempts::new(&p);
        assert!(a
            .decide(Failure::Response(503, None), &c, &body, true, &mut flags)
            .is_none());
    }
}
