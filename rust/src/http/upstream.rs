//! The upstream end of an attempt: get a connection (pooled, fresh, or after waiting under
//! `max_connections`), send the request on it, and classify what hyper reports, including
//! whether the connection was gone before any response byte (a stale pooled connection).

use crate::cluster::{Cluster, Host, Outcome};
use crate::error::{Kind, ProxyError, Source};
use crate::pool::{H2Sender, Sender, UpBody};
use http::{Request, Response};
use hyper::body::Incoming;
use std::cell::Cell;
use std::sync::Arc;

pub type Sent = (Response<Incoming>, Option<Box<crate::pool::H1>>);

/// A request that failed, and the request itself when hyper never wrote it.
pub type Failed = (ProxyError, Option<Request<UpBody>>);

thread_local! {
    /// HTTP/1.1 attempts begun on this thread since the runtime last went to poll its sockets
    /// (`on_thread_park`), and whether the batch before had more than one (see `joins_burst`).
    static BURST: Cell<(u32, bool)> = const { Cell::new((0, false)) };
}

/// Whether an attempt that begins now should wait for the rest of its batch: it is not the
/// first attempt of the batch of ready tasks the runtime is running, or the batch before had
/// more than one (the thread is busy: requests arrive faster than it parks).
fn joins_burst() -> bool {
    BURST.with(|b| {
        let (n, busy) = b.get();
        b.set((n.saturating_add(1), busy));
        busy || n > 0
    })
}

/// The runtime's `on_thread_park` hook: the thread has run every ready task (yielded ones run
/// after it has polled its sockets), so the next attempt begins a new batch.
pub fn end_burst() {
    BURST.with(|b| {
        let (n, _) = b.get();
        b.set((0, n > 1));
    });
}

/// Send on an HTTP/1.1 connection we hold, with `extra` as one more header line (see
/// `H1::send`). The connection stays with the caller, who takes the head back from it
/// (`H1::take_sent_head`) whatever happens here.
pub async fn send_h1(
    c: &mut crate::pool::H1,
    req: Request<UpBody>,
    extra: Option<(http::HeaderName, http::HeaderValue)>,
) -> Result<Response<Incoming>, Failed> {
    // NOTE: under load one poll of the runtime's sockets finds many requests ready, and each
    // used to be written upstream as soon as it was read: read, write, read, write. Every write
    // to an upstream that had caught up and gone to sleep woke it again (nginx under wrk -c50:
    // 0.13-0.17 wake-ups per request, 0.03-0.06 behind HAProxy, which reads a batch and then
    // writes it). An attempt that follows another in the same batch of ready tasks (the runtime
    // has not parked since the one before), or any attempt while batches hold more than one,
    // yields once first, so the runtime reads the rest of the batch before these writes go
    // out together; a lone request at low load is written at once (a yield costs ~1,600
    // instructions). No clock is read: the batches are the runtime's own (`end_burst`).
    // benches/README.md, "Writes in batches".
    if joins_burst() {
        tokio::task::yield_now().await;
    }
    if let Err(req) = c.send(req, extra) {
        let mut e = ProxyError::upstream(Kind::Reset, "connection was not ready");
        e.closed_before_response = true;
        return Err((e, Some(req)));
    }
    std::future::poll_fn(|cx| c.poll_response(cx))
        .await
        .map_err(classify_send)
}

/// Send on an HTTP/2 connection. On failure, the request comes back if hyper never wrote it.
pub async fn send_h2(
    cluster: &Cluster,
    mut s: H2Sender,
    req: Request<UpBody>,
) -> Result<Response<Incoming>, Failed> {
    let active = cluster.stats.rq_active.get();
    if active > i64::from(cluster.breakers.max_requests) {
        cluster.stats.rq_pending_overflow.inc();
        let e = ProxyError::internal(Kind::Overflow, "max requests");
        return Err((e, None));
    }
    if let Err(e) = s.ready().await {
        let mut e = classify(e);
        e.closed_before_response = true;
        return Err((e, Some(req)));
    }
    s.try_send_request(req).await.map_err(classify_send)
}

fn classify_send(mut e: hyper::client::conn::TrySendError<Request<UpBody>>) -> Failed {
    let unsent = e.take_message();
    let mut pe = classify(e.into_error());
    pe.closed_before_response |= unsent.is_some();
    (pe, unsent)
}

/// Get a connection: idle (unless `fresh`), new, or after waiting under max_connections.
/// Also says whether it was reused from the pool.
pub async fn acquire(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    fresh: bool,
) -> Result<(Sender, bool), ProxyError> {
    let idle = || (!fresh).then(|| host.pool.take_idle()).flatten();
    if let Some(s) = idle() {
        return Ok((s, true));
    }
    // NOTE: this tokio mutex is held across `connect` on purpose: a burst of requests on a
    // cold HTTP/2 host waits for the one connection being opened instead of opening its own.
    let _h2_connecting = if host.pool.protocol() == crate::config::UpstreamProtocol::Http2 {
        let g = host.pool.h2_connecting().lock().await;
        if let Some(s) = idle() {
            return Ok((s, true));
        }
        Some(g)
    } else {
        None
    };
    // NOTE: connecting is boxed: its future (TCP, TLS and HTTP/2 handshakes) is ~7.9 KB, and
    // unboxed it made every request's future that large, although most requests take an idle
    // connection above; hyper keeps each connection's request future in a box of that size
    // and the request path moved it around (memcpy was 23% of user-space instructions). The
    // box is allocated first and the future written into it in place (`Box::write`), not
    // built on the stack and copied (as `Box::pin(connect(..))` did, ~7.9 KB per connect).
    if cluster.try_reserve_connection() {
        return Ok((
            Box::into_pin(Box::write(Box::new_uninit(), connect(cluster, host))).await?,
            false,
        ));
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
        if let Some(s) = idle() {
            return Ok((s, true));
        }
        if cluster.try_reserve_connection() {
            return Ok((
                Box::into_pin(Box::write(Box::new_uninit(), connect(cluster, host))).await?,
                false,
            ));
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

/// An upstream failure from hyper, by kind. `closed_before_response` when the connection was
/// gone before any response byte: EOF on the first read, or the write found it closed.
fn classify(e: hyper::Error) -> ProxyError {
    use std::error::Error as _;
    let mut closed = e.is_incomplete_message() || e.is_canceled();
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return ProxyError::upstream(Kind::RefusedStream, "refused stream");
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            closed |= io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        src = s.source();
    }
    if e.is_parse() || e.is_parse_status() {
        return ProxyError::new(Source::Upstream, Kind::BadUpstreamResponse, e.to_string());
    }
    let mut pe = ProxyError::upstream(
        Kind::Reset,
        if e.is_incomplete_message() {
            "connection termination".into()
        } else {
            e.to_string()
        },
    );
    pe.closed_before_response = closed;
    pe
}

#[cfg(test)]
mod tests {
    use super::{end_burst, joins_burst};

    /// Which attempts wait for their batch: every one but the first of a batch, and every one
    /// (the first too) after a batch of more than one; a batch of one ends that.
    #[test]
    fn attempts_yield_after_the_first_of_a_batch_and_while_batches_hold_more_than_one() {
        // Its own thread: the state is per thread.
        std::thread::spawn(|| {
            end_burst();
            end_burst();
            assert!(!joins_burst(), "a lone attempt after a quiet batch");
            end_burst();
            assert!(!joins_burst(), "the first of a batch after a batch of one");
            assert!(joins_burst(), "the second of a batch");
            assert!(joins_burst(), "the third of a batch");
            end_burst();
            assert!(joins_burst(), "the first of a batch after a batch of three");
            end_burst();
            assert!(!joins_burst(), "the batch before held one: quiet again");
            assert!(joins_burst(), "the second of that batch");
            end_burst();
            end_burst();
            assert!(
                !joins_burst(),
                "after an empty batch the thread is quiet again"
            );
        })
        .join()
        .unwrap();
    }
}
