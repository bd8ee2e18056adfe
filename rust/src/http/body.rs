//! The response body sent downstream: a local reply, or the upstream's body streamed through.
//! The upstream variant carries the attempt's bookkeeping, settled when the body ends.

use crate::accesslog::{AccessLog, Record};
use crate::cluster::{Claim, Cluster, Host};
use crate::pool::H1;
use crate::stats::ListenerStats;
use crate::trace::ActiveSpan;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One in-flight request to one host. Counts it active from creation until the response body
/// ends (or the attempt fails), which is what weighted least request balances on.
pub struct InFlight {
    pub host: Arc<Host>,
    pub cluster: Arc<Cluster>,
    pub started: Instant,
    /// The HTTP/1.1 connection, returned to the pool only if the body ended cleanly.
    pub h1: Option<Box<H1>>,
    clean: bool,
    /// A function cluster's claim on the host, released after the connection went back to
    /// the pool (declared last: dropped after `Drop::drop` ran), so the next request on the
    /// instance finds it idle.
    claim: Option<Claim>,
}

impl InFlight {
    pub fn start(
        host: Arc<Host>,
        cluster: Arc<Cluster>,
        started: Instant,
        claim: Option<Claim>,
    ) -> Self {
        host.active.fetch_add(1, Relaxed);
        host.stats.rq_total.inc();
        cluster.stats.rq_active.inc();
        InFlight {
            host,
            cluster,
            started,
            h1: None,
            clean: false,
            claim,
        }
    }

    /// End the attempt but keep its claim on the host (for a reconnect to the same host).
    pub fn keep_claim(mut self) -> Option<Claim> {
        self.claim.take()
    }

    /// The response is complete: count it done and give its connection back.
    pub fn settle_clean(mut self) {
        self.clean = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.host.active.fetch_sub(1, Relaxed);
        self.cluster.stats.rq_active.dec();
        self.cluster.stats.rq_time.record(self.started.elapsed());
        if let Some(s) = self.h1.take() {
            if self.clean {
                self.host.pool.put_idle(s);
                self.cluster.cx_released.notify_one();
            }
        }
    }
}

pub struct DownBody {
    kind: BodyKind,
    /// The access-log record, written when the stream ends (when this body is dropped).
    log: Option<Box<(Arc<AccessLog>, Record)>>,
    /// The request's span, ended when the stream ends (when this body is dropped).
    span: Option<ActiveSpan>,
    /// The listener's `rq_time` and when the request arrived: recorded when the stream ends.
    timing: Option<(Arc<ListenerStats>, Instant)>,
}

enum BodyKind {
    Local(Option<Bytes>),
    Upstream {
        body: Incoming,
        in_flight: Option<InFlight>,
        timer: Option<BodyTimer>,
    },
}

impl Drop for DownBody {
    fn drop(&mut self) {
        if let Some((stats, started)) = self.timing.take() {
            stats.rq_time.record(started.elapsed());
        }
        if let Some(log) = self.log.take() {
            log.0.finish(&log.1);
        }
    }
}

/// The route timeout (until the response is complete) and the stream idle timeout (no frame
/// for this long), applied while the response body streams. Either ends the stream with an
/// error, which resets it downstream (HTTP/2 RST_STREAM; HTTP/1.1 connection closed).
pub struct BodyTimer {
    deadline: Option<tokio::time::Instant>,
    idle: Option<std::time::Duration>,
    /// Armed the first time the body has to wait: most responses are complete by their first
    /// poll and never need a timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BodyTimer {
    pub fn new(deadline: Option<Instant>, idle: Option<std::time::Duration>) -> Option<Self> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        let deadline = deadline.map(tokio::time::Instant::from_std);
        Some(BodyTimer {
            deadline,
            idle,
            sleep: None,
        })
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let idle_at = self.idle.map(|d| tokio::time::Instant::now() + d);
        match (self.deadline, idle_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A frame arrived: push the idle wake-up back.
    fn activity(&mut self) {
        if self.idle.is_some() {
            if let (Some(at), Some(sleep)) = (self.next_wake(), self.sleep.as_mut()) {
                sleep.as_mut().reset(at);
            }
        }
    }

    /// The body is waiting: arm the timer if needed and report whether it fired.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.sleep.is_none() {
            match self.next_wake() {
                Some(at) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                None => return false,
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

#[derive(Debug)]
pub struct StreamTimeout(&'static str);

impl std::fmt::Display for StreamTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for StreamTimeout {}

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl DownBody {
    pub fn local(text: impl Into<Bytes>) -> Self {
        DownBody {
            kind: BodyKind::Local(Some(text.into())),
            log: None,
            span: None,
            timing: None,
        }
    }

    pub fn upstream(body: Incoming, in_flight: Option<InFlight>, timer: Option<BodyTimer>) -> Self {
        DownBody {
            kind: BodyKind::Upstream {
                body,
                in_flight,
                timer,
            },
            log: None,
            span: None,
            timing: None,
        }
    }

    /// Record the request's time in `stats` (from `started`) when this response's stream ends.
    pub fn time_to(&mut self, stats: Arc<ListenerStats>, started: Instant) {
        self.timing = Some((stats, started));
    }

    /// End `span` when this response's stream ends.
    pub fn end_span_with(&mut self, span: ActiveSpan) {
        self.span = Some(span);
    }

    /// Write `record` to `log` when this response's stream ends.
    pub fn log_to(&mut self, log: Arc<AccessLog>, record: Record) {
        self.log = Some(Box::new((log, record)));
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = this.poll_kind(cx);
        if let (Some(log), Poll::Ready(Some(Ok(f)))) = (&mut this.log, &r) {
            if let Some(d) = f.data_ref() {
                log.1.bytes_sent += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Local(b) => b.is_none(),
            BodyKind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
            BodyKind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl DownBody {
    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            BodyKind::Local(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            BodyKind::Upstream {
                body,
                in_flight,
                timer,
            } => {
                let r = match in_flight.as_mut().and_then(|f| f.h1.as_mut()) {
                    None => Pin::new(&mut *body).poll_frame(cx),
                    // NOTE: an HTTP/1.1 upstream connection has no task of its own: reading
                    // its body drives it (and a slow reader holds it back, as the channel
                    // did). What it read with the head is often the whole body: look first,
                    // without a waker (only the connection, polled below, fills the body), and
                    // drive it only if there was nothing.
                    Some(h1) => match Pin::new(&mut *body)
                        .poll_frame(&mut Context::from_waker(Waker::noop()))
                    {
                        Poll::Pending => {
                            let _ = h1.poll_drive(cx);
                            Pin::new(&mut *body).poll_frame(cx)
                        }
                        r => r,
                    },
                };
                match &r {
                    Poll::Ready(None) => {
                        if let Some(mut f) = in_flight.take() {
                            f.clean = true;
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(f) = in_flight.take() {
                            f.host.stats.rq_error.inc();
                            f.cluster.stats.rq_reset.inc();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) => {
                        if body.is_end_stream() {
                            // NOTE: hyper stops polling once `is_end_stream` is true, so settle
                            // here too, or the connection would never go back to the pool.
                            if let Some(mut f) = in_flight.take() {
                                f.clean = true;
                            }
                        } else if let Some(t) = timer {
                            t.activity();
                        }
                    }
                    Poll::Pending => {
                        if let Some(t) = timer {
                            if t.expired(cx) {
                                let total =
                                    t.deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                                if let Some(f) = in_flight.take() {
                                    f.host.stats.rq_timeout.inc();
                                    f.cluster.stats.rq_timeout.inc();
                                }
                                *timer = None;
                                let why = if total {
                                    "upstream request timeout"
                                } else {
                                    "stream idle timeout"
                                };
                                return Poll::Ready(Some(Err(Box::new(StreamTimeout(why)))));
                            }
                        }
                    }
                }
                r.map(|o| o.map(|x| x.map_err(Into::into)))
            }
        }
    }
}
