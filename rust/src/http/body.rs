//! The response body sent downstream: a local reply, or the upstream's body streamed through.
//! The upstream variant carries the attempt's bookkeeping, settled when the body ends.

use crate::cluster::{Cluster, Host};
use crate::pool::H1Sender;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// One in-flight request to one host. Counts it active from creation until the response body
/// ends (or the attempt fails), which is what weighted least request balances on.
pub struct InFlight {
    pub host: Arc<Host>,
    pub cluster: Arc<Cluster>,
    pub started: Instant,
    /// The HTTP/1.1 connection, returned to the pool only if the body ended cleanly.
    pub h1: Option<H1Sender>,
    clean: bool,
}

impl InFlight {
    pub fn start(host: Arc<Host>, cluster: Arc<Cluster>, started: Instant) -> Self {
        host.active.fetch_add(1, Relaxed);
        host.stats.rq_total.inc();
        cluster.stats.rq_active.inc();
        InFlight {
            host,
            cluster,
            started,
            h1: None,
            clean: false,
        }
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

pub enum DownBody {
    Local(Option<Bytes>),
    Upstream {
        body: Incoming,
        in_flight: Option<InFlight>,
    },
}

impl DownBody {
    pub fn local(text: impl Into<Bytes>) -> Self {
        DownBody::Local(Some(text.into()))
    }
}

impl Body for DownBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DownBody::Local(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            DownBody::Upstream { body, in_flight } => {
                let r = Pin::new(&mut *body).poll_frame(cx);
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
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        // NOTE: hyper stops polling once `is_end_stream` is true, so settle here
                        // too, or the connection would never go back to the pool.
                        if let Some(mut f) = in_flight.take() {
                            f.clean = true;
                        }
                    }
                    _ => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownBody::Local(b) => b.is_none(),
            DownBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownBody::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
            DownBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
