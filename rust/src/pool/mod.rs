//! Upstream connection pools, one per host: HTTP/1.1 keep-alive connections reused one request
//! at a time, and one multiplexed HTTP/2 connection. Limits (max connections, pending requests)
//! are the caller's (cluster-wide circuit breakers); the pool only counts through a guard that
//! lives exactly as long as the connection.

mod body;

pub use body::{BodyProgress, BodyState, Replay, UpBody};

use crate::config::{UpstreamAddress, UpstreamProtocol};
use crate::error::{Kind, ProxyError};
use crate::tls::ClientTls;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::{TcpStream, UnixStream};

pub type H2Sender = http2::SendRequest<UpBody>;

/// A connection ready to carry one request (HTTP/1.1) or many (HTTP/2).
pub enum Sender {
    H1(Box<H1>),
    H2(H2Sender),
}

/// The byte stream under an upstream HTTP/1.1 connection: TCP or a Unix socket, with or
/// without TLS.
pub trait UpIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpIo for T {}

/// An upstream HTTP/1.1 connection. It has no task of its own: the request using it drives it
/// (`send`, `poll_response`), then the response body as it is read (`poll_drive`), and the
/// pool checks it when it comes back and before it is reused.
// NOTE: hyper's spawned `Connection` took each request over an mpsc channel and gave the
// response back over a oneshot, waking its task and then the request's: ~2.5k instructions
// per request (vendor/hyper/MESHPLANE.md, `InlineConnection`).
pub struct H1 {
    conn: http1::InlineConnection<TokioIo<Box<dyn UpIo>>, UpBody>,
    /// The caller's connection counters: released when the connection is dropped (closed).
    _guard: Box<dyn Send>,
}

impl H1 {
    /// Queue `req`, with `extra` written as one more header line after its own (hyper patch
    /// `send_with`: the line goes out with this request only); it comes back if the connection
    /// cannot take it.
    #[allow(clippy::result_large_err)]
    pub fn send(
        &mut self,
        req: http::Request<UpBody>,
        extra: Option<(http::HeaderName, http::HeaderValue)>,
    ) -> Result<(), http::Request<UpBody>> {
        self.conn.send_with(req, extra)
    }

    /// The head of the request written last, as it was given to `send` (hyper patch: the
    /// encoder keeps it unchanged), so that another attempt can send it again without a copy.
    pub fn take_sent_head(&mut self) -> Option<http::request::Parts> {
        self.conn.take_sent_head()
    }

    /// The request given to `send` that was never written, if any.
    pub fn take_unsent(&mut self) -> Option<http::Request<UpBody>> {
        self.conn.take_unsent()
    }

    /// Drive the connection until the response head is there (or the request failed).
    pub fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<http::Response<hyper::body::Incoming>, TrySendError<http::Request<UpBody>>>>
    {
        self.conn.poll_response(cx)
    }

    /// Drive the connection while its response body is read; `Ready` once it is closed.
    pub fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.conn.poll_drive(cx)
    }

    /// Whether it can carry the next request: open (a server that closed it is noticed here),
    /// idle, not told to close.
    fn usable(&mut self) -> bool {
        // NOTE: nobody waits on an idle connection: what it reads now is an EOF or an error,
        // and the next poll (by a request) registers that request's waker.
        self.conn.poll_idle(&mut Context::from_waker(Waker::noop()))
    }

    /// `usable` for a connection whose response just ended: it was polled then, so it is
    /// polled again only if it did not look idle.
    fn reusable(&mut self) -> bool {
        if self.conn.is_ready() {
            return true;
        }
        let _ = self
            .conn
            .poll_drive(&mut Context::from_waker(Waker::noop()));
        self.conn.is_ready()
    }
}

struct Idle {
    conn: Box<H1>,
    since: Instant,
}

pub struct Pool {
    addr: UpstreamAddress,
    protocol: UpstreamProtocol,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<H2Sender>>,
    h2_connecting: tokio::sync::Mutex<()>,
}

impl Pool {
    pub fn new(addr: UpstreamAddress, protocol: UpstreamProtocol, idle_timeout: Duration) -> Self {
        Pool {
            addr,
            protocol,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn addr(&self) -> &UpstreamAddress {
        &self.addr
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// A reusable connection, if one is open and idle.
    pub fn take_idle(&self) -> Option<Sender> {
        match self.protocol {
            UpstreamProtocol::Http2 => {
                let h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
                h2.as_ref()
                    .filter(|s| !s.is_closed())
                    .map(|s| Sender::H2(s.clone()))
            }
            _ => loop {
                // NOTE: LIFO keeps the hottest connection busy and lets the others age out.
                let c = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
                if c.since.elapsed() > self.idle_timeout {
                    continue; // dropping it closes the connection
                }
                let mut conn = c.conn;
                if conn.usable() {
                    return Some(Sender::H1(conn));
                }
            },
        }
    }

    /// Give an HTTP/1.1 connection back after its response completed cleanly.
    pub fn put_idle(&self, mut conn: Box<H1>) {
        if !conn.reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Close HTTP/1.1 connections idle longer than the idle timeout.
    pub fn evict_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain_mut(|c| c.since.elapsed() <= self.idle_timeout && c.conn.usable());
    }

    /// Serializes opening the shared HTTP/2 connection, so a burst of requests on a cold host
    /// opens one connection, not one each.
    pub fn h2_connecting(&self) -> &tokio::sync::Mutex<()> {
        &self.h2_connecting
    }

    /// Close the oldest idle HTTP/1.1 connection; false if there was none.
    pub fn close_one_idle(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.is_empty() {
            return false;
        }
        idle.remove(0);
        true
    }

    /// Drop every idle connection (host removed or unhealthy).
    pub fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Open a new connection (TLS when `tls` is given). `guard` is dropped when the connection
    /// closes (it carries the caller's connection counters).
    pub async fn connect<G: Send + 'static>(
        &self,
        timeout: Duration,
        guard: G,
        tls: Option<Arc<ClientTls>>,
    ) -> Result<Sender, ProxyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        match &self.addr {
            UpstreamAddress::Tcp(addr) => {
                let stream = within(deadline, TcpStream::connect(*addr)).await?;
                let _ = stream.set_nodelay(true);
                self.secure(stream, deadline, guard, tls).await
            }
            // A function instance (or any local upstream) on a Unix domain socket: the same
            // pool, timeouts and counters; HTTP/1.1 or HTTP/2 over it as the cluster says.
            UpstreamAddress::Unix(path) => {
                let stream = within(deadline, UnixStream::connect(path)).await?;
                self.secure(stream, deadline, guard, tls).await
            }
        }
    }

    /// TLS (when `tls` is given) over a connected stream, then the HTTP handshake.
    async fn secure<I, G>(
        &self,
        stream: I,
        deadline: tokio::time::Instant,
        guard: G,
        tls: Option<Arc<ClientTls>>,
    ) -> Result<Sender, ProxyError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
        G: Send + 'static,
    {
        match tls {
            None => self.handshake(stream, guard).await,
            Some(tls) => {
                let handshake = tls.connector.connect(tls.server_name.clone(), stream);
                match tokio::time::timeout_at(deadline, handshake).await {
                    Err(_) => Err(ProxyError::upstream(
                        Kind::ConnectTimeout,
                        "TLS handshake timeout",
                    )),
                    Ok(Err(e)) => Err(ProxyError::upstream(
                        Kind::TlsFailure,
                        format!("TLS error: {e}"),
                    )),
                    Ok(Ok(s)) => self.handshake(s, guard).await,
                }
            }
        }
    }

    async fn handshake<I, G>(&self, io: I, guard: G) -> Result<Sender, ProxyError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
        G: Send + 'static,
    {
        match self.protocol {
            UpstreamProtocol::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .initial_stream_window_size(16 * 1024 * 1024)
                    .initial_connection_window_size(24 * 1024 * 1024)
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| {
                        ProxyError::upstream(Kind::ConnectFailure, format!("http2 handshake: {e}"))
                    })?;
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(guard);
                });
                *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
                Ok(Sender::H2(sender))
            }
            _ => {
                let io: Box<dyn UpIo> = Box::new(io);
                // NOTE: one `send` per request, not `writev` (see the listener's builder).
                let conn = http1::Builder::new()
                    .writev(false)
                    .handshake_inline(TokioIo::new(io));
                Ok(Sender::H1(Box::new(H1 {
                    conn,
                    _guard: Box::new(guard),
                })))
            }
        }
    }
}

/// A connect attempt under the connect deadline, its failure classified.
async fn within<S>(
    deadline: tokio::time::Instant,
    connect: impl std::future::Future<Output = std::io::Result<S>>,
) -> Result<S, ProxyError> {
    match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => Err(ProxyError::upstream(
            Kind::ConnectTimeout,
            "connection timeout",
        )),
        Ok(Err(e)) => Err(ProxyError::upstream(
            Kind::ConnectFailure,
            format!("connection failure: {e}"),
        )),
        Ok(Ok(s)) => Ok(s),
    }
}

/// A connected upstream byte stream (the TCP proxy's), over TCP or a Unix domain socket.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Connect to `addr` within `timeout` (TCP with TCP_NODELAY).
pub async fn connect_stream(
    addr: &UpstreamAddress,
    timeout: Duration,
) -> Result<Stream, ProxyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    Ok(match addr {
        UpstreamAddress::Tcp(a) => {
            let s = within(deadline, TcpStream::connect(*a)).await?;
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }
        UpstreamAddress::Unix(p) => Stream::Unix(within(deadline, UnixStream::connect(p)).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue, Method, Request};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An upstream that answers every request on one connection with an empty 200 and
    /// reports each request as it arrived on the wire (head and body).
    async fn upstream() -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // One whole request (head, then its Content-Length body) out of `buf`.
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(buf[..end + 4].to_vec()).unwrap();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() < end + 4 + len {
                        break;
                    }
                    let whole: Vec<u8> = buf.drain(..end + 4 + len).collect();
                    tx.send(String::from_utf8(whole).unwrap()).unwrap();
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        (addr, rx)
    }

    async fn roundtrip(c: &mut H1) {
        let Ok(resp) = std::future::poll_fn(|cx| c.poll_response(cx)).await else {
            panic!("no response");
        };
        assert_eq!(resp.status(), 200);
        // The body is empty: the connection is idle again once it is driven.
        assert!(c.reusable());
    }

    fn request(method: Method, body: Option<&'static [u8]>) -> http::Request<UpBody> {
        let mut req = Request::new(UpBody::Full(body.map(Bytes::from_static)));
        *req.method_mut() = method;
        *req.uri_mut() = "/path?q=1".parse().unwrap();
        let h = req.headers_mut();
        h.insert(http::header::HOST, HeaderValue::from_static("svc.local"));
        h.insert("x-first", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        req
    }

    #[tokio::test]
    async fn the_sent_head_comes_back_unchanged_and_the_extra_line_goes_with_its_request_only() {
        let (addr, mut seen) = upstream().await;
        let io: Box<dyn UpIo> = Box::new(TcpStream::connect(addr).await.unwrap());
        let mut c = H1 {
            conn: http1::Builder::new().handshake_inline(TokioIo::new(io)),
            _guard: Box::new(()),
        };
        let traceparent = (
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-0123456789abcdef0123456789abcdef-0123456789abcdef-00"),
        );

        // A GET with the extra line: written last, after the map's headers.
        let get = request(Method::GET, None);
        let original = get.headers().clone();
        assert!(c.send(get, Some(traceparent.clone())).is_ok());
        roundtrip(&mut c).await;
        assert_eq!(
            seen.recv().await.unwrap(),
            "GET /path?q=1 HTTP/1.1\r\nhost: svc.local\r\nx-first: 1\r\nx-multi: a\r\n\
             x-multi: b\r\ntraceparent: 00-0123456789abcdef0123456789abcdef-0123456789abcdef-00\
             \r\n\r\n"
        );
        let head = c
            .take_sent_head()
            .expect("the head comes back once written");
        assert_eq!(head.headers, original);
        assert_eq!(
            (head.method, head.version),
            (Method::GET, http::Version::HTTP_11)
        );
        assert_eq!(head.uri, "/path?q=1");
        assert!(c.take_sent_head().is_none());

        // A body of known length without Content-Length: hyper adds the header on the wire,
        // the head that comes back is the one given (a retry sends the same head again).
        let post = request(Method::POST, Some(b"hello"));
        let original = post.headers().clone();
        assert!(c.send(post, None).is_ok());
        roundtrip(&mut c).await;
        assert_eq!(
            seen.recv().await.unwrap(),
            "POST /path?q=1 HTTP/1.1\r\nhost: svc.local\r\nx-first: 1\r\nx-multi: a\r\n\
             x-multi: b\r\ncontent-length: 5\r\n\r\nhello"
        );
        let head = c.take_sent_head().unwrap();
        assert_eq!(head.headers, original);
        assert!(!head.headers.contains_key(http::header::CONTENT_LENGTH));

        // A request queued with its line and taken back unsent: the line does not go out with
        // the next request on the connection.
        assert!(c
            .send(request(Method::GET, None), Some(traceparent))
            .is_ok());
        let Some(unsent) = c.take_unsent() else {
            panic!("never written");
        };
        assert!(!unsent.headers().contains_key("traceparent"));
        assert!(c.take_sent_head().is_none());
        assert!(c.send(request(Method::DELETE, None), None).is_ok());
        roundtrip(&mut c).await;
        let wire = seen.recv().await.unwrap();
        assert!(wire.starts_with("DELETE /path?q=1 HTTP/1.1\r\n"), "{wire}");
        assert!(!wire.contains("traceparent"), "{wire}");
    }
}
