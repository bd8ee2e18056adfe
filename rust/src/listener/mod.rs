//! Listeners: bind, accept, serve HTTP (HTTP/1.1 and cleartext HTTP/2 told apart per
//! connection by the client preface) or proxy TCP. Stopping a listener stops accepting and
//! asks each of its connections to finish gracefully (HTTP/1.1 `Connection: close` after the
//! in-flight response, HTTP/2 GOAWAY). A running listener's socket can be given a new protocol
//! and slot (`retarget`) without closing it; connections accepted before finish the same way.

mod quiet;
mod tcp;

use crate::config::{ListenerProtocol, TlsMode};
use crate::http::ListenerConfig;
use crate::http::{handle, ConnCtx, ListenerSlot};
use crate::stats::ListenerStats;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use quiet::Quiet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

/// Open downstream connections across all listeners, for draining.
#[derive(Default)]
pub struct Connections {
    open: AtomicUsize,
    zero: Notify,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// Wait until no connection is open.
    pub async fn closed(&self) {
        loop {
            let z = self.zero.notified();
            tokio::pin!(z);
            z.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            z.await;
        }
    }
}

struct ConnToken(Arc<Connections>);

impl ConnToken {
    fn new(c: &Arc<Connections>) -> Self {
        c.open.fetch_add(1, SeqCst);
        ConnToken(c.clone())
    }
}

impl Drop for ConnToken {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// What a listener's accept loop serves new connections as: the protocol, the slot their
/// requests read, and the signal that drains them.
struct Target {
    protocol: ListenerProtocol,
    slot: Arc<ListenerSlot>,
    drain: watch::Sender<bool>,
}

impl Target {
    fn new(protocol: ListenerProtocol, slot: Arc<ListenerSlot>) -> Arc<Target> {
        Arc::new(Target {
            protocol,
            slot,
            drain: watch::channel(false).0,
        })
    }
}

pub struct RunningListener {
    pub address_spec: String,
    pub protocol: ListenerProtocol,
    pub bound: SocketAddr,
    pub slot: Arc<ListenerSlot>,
    /// NOTE: a mutex, not an ArcSwap: the accept loop reads the target and subscribes to its
    /// drain signal under it, so a connection accepted under a target that `retarget` then
    /// replaces is always told to drain.
    target: Arc<Mutex<Arc<Target>>>,
    stop: watch::Sender<bool>,
}

impl RunningListener {
    /// Stop accepting and drain this listener's connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        let _ = lock(&self.target).drain.send(true);
    }

    /// Serve new connections on the same socket as `protocol` through `slot` (a protocol or
    /// name change on an unchanged address); connections accepted before drain gracefully.
    pub fn retarget(
        &mut self,
        address_spec: String,
        protocol: ListenerProtocol,
        slot: Arc<ListenerSlot>,
    ) {
        let old = std::mem::replace(
            &mut *lock(&self.target),
            Target::new(protocol, slot.clone()),
        );
        let _ = old.drain.send(true);
        self.address_spec = address_spec;
        self.protocol = protocol;
        self.slot = slot;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The socket address `address` ("IP:PORT", or "HOST:PORT" resolved to its first address) names.
pub fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind"))
}

/// Bind synchronously (so the caller learns the port, or the error, at once), with a listen
/// queue of `backlog` connections (std's `TcpListener::bind` fixes it at 128).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    // NOTE: socket2 creates the socket close-on-exec; SO_REUSEADDR as std sets it on Unix, so a
    // restarted proxy rebinds a port whose old connections are in TIME_WAIT.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A listening socket registered with the runtime, not yet accepting: everything about
/// starting a listener that can fail, so an apply can open all of them before it starts any.
pub struct Opened {
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
}

impl Opened {
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }
}

/// Bind `addr` and register the socket. Must be called inside the runtime (`Handle::enter`).
/// Dropping the result closes the socket.
pub fn open(addr: SocketAddr, backlog: u32) -> std::io::Result<Opened> {
    let std_listener = bind(addr, backlog)?;
    let bound = std_listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    Ok(Opened { listener, bound })
}

/// Failed accepts of one listener: counted, logged at most once per `LOG_EVERY`, and backed off
/// so that a listener out of file descriptors does not spin on a queued connection it cannot
/// take.
struct AcceptErrors {
    /// Failures since the last successful accept (sets the backoff).
    streak: u32,
    /// Failures not yet logged, and when the last line was written.
    unlogged: u64,
    logged_at: Option<std::time::Instant>,
}

const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl AcceptErrors {
    fn new() -> Self {
        AcceptErrors {
            streak: 0,
            unlogged: 0,
            logged_at: None,
        }
    }

    /// Count and maybe log `e`; returns how long to wait before accepting again: 10 ms,
    /// doubling while failures continue, at most 1 s.
    fn failed(
        &mut self,
        e: &std::io::Error,
        listener: &str,
        stats: &ListenerStats,
    ) -> std::time::Duration {
        stats.cx_accept_error.inc();
        self.unlogged += 1;
        let now = std::time::Instant::now();
        if self
            .logged_at
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            // NOTE: stderr, not the event queue: the Trio layer may be what holds the
            // descriptors, and a line must come out even when Python is not draining.
            eprintln!(
                "meshplane: listener {listener}: accept failed ({} time(s) since the last \
                 report): {e}; retrying",
                self.unlogged
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        self.streak = self.streak.saturating_add(1);
        std::time::Duration::from_millis(10u64 << self.streak.min(8).saturating_sub(1))
            .min(std::time::Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        self.streak = 0;
    }
}

/// Start accepting on an opened socket. Cannot fail. Must be called inside the runtime
/// (`Handle::enter`).
pub fn start(
    opened: Opened,
    address_spec: String,
    protocol: ListenerProtocol,
    slot: Arc<ListenerSlot>,
    conns: Arc<Connections>,
    global_stop: watch::Receiver<bool>,
) -> RunningListener {
    let (stop, stop_rx) = watch::channel(false);
    let target = Arc::new(Mutex::new(Target::new(protocol, slot.clone())));
    let running = RunningListener {
        address_spec,
        protocol,
        bound: opened.bound,
        slot,
        target: target.clone(),
        stop,
    };
    tokio::spawn(accept_loop(
        opened.listener,
        opened.bound,
        target,
        conns,
        stop_rx,
        global_stop,
    ));
    running
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    target: Arc<Mutex<Arc<Target>>>,
    conns: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    mut global_stop: watch::Receiver<bool>,
) {
    let port = bound.port();
    let bound = Some(bound);
    let mut http = auto::Builder::new(TokioExecutor::new());
    // NOTE: no `.max_headers(MAX_REQUEST_HEADERS)`: hyper's default is the same 100, and an
    // explicit limit makes hyper fill two 100-slot arrays element by element for every request
    // head it parses (`smallvec![uninit; n]`, ~1,500 instructions) that the default leaves
    // uninitialised.
    const _: () = assert!(crate::http::MAX_REQUEST_HEADERS == 100);
    // NOTE: writev(false): hyper copies a response's body chunk after its head in one buffer
    // and writes it with `send`, instead of `writev` of the two (the kernel's vectored write
    // path: fdget_pos, vfs_writev, the iovec copy; ~3% of the proxy's CPU under wrk -c50,
    // against 0.8% for HAProxy's `sendto`). benches/README.md, "One send per message".
    http.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .writev(false);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let http = Arc::new(http);
    let mut errors = AcceptErrors::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
            _ = global_stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                errors.succeeded();
                x
            }
            // Out of file descriptors and the like: the listener stays up and backs off (the
            // connection stays queued, so an immediate retry would fail the same way).
            Err(e) => {
                let slot = lock(&target).slot.clone();
                let stats = slot.state.load().config.stats.clone();
                let wait = errors.failed(&e, &slot.name, &stats);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break,
                    _ = global_stop.changed() => break,
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (protocol, slot, stop) = {
            let t = lock(&target);
            (t.protocol, t.slot.clone(), t.drain.subscribe())
        };
        let token = ConnToken::new(&conns);
        let state = slot.state.load();
        let stats = state.config.stats.clone();
        stats.cx_total.inc();
        stats.cx_active.inc();
        let global_stop = global_stop.clone();
        let config = state.config.clone();
        let compiled = state.compiled.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let ctx = |scheme, client_cert| {
                Arc::new(ConnCtx {
                    slot: slot.clone(),
                    peer,
                    local_port: port,
                    scheme,
                    client_cert,
                    local: bound,
                    peer_ip: http::HeaderValue::from_str(&peer.ip().to_string())
                        .unwrap_or(http::HeaderValue::from_static("unknown")),
                    activity: Default::default(),
                    route_timer: Default::default(),
                })
            };
            match accept_tls(stream, &config).await {
                Accepted::Refused => {}
                Accepted::Plain(s) => match protocol {
                    ListenerProtocol::Http => {
                        serve_http(&http, s, ctx("http", None), &config, stop, global_stop).await
                    }
                    ListenerProtocol::Tcp => {
                        tcp::proxy(s, &compiled, &config, (peer, bound), stop, global_stop).await
                    }
                },
                Accepted::Tls(s) => {
                    let sans = crate::tls::peer_identity(s.connection().peer_certificates());
                    let xfcc = client_cert_header(&sans);
                    match protocol {
                        ListenerProtocol::Http => {
                            serve_http(&http, s, ctx("https", xfcc), &config, stop, global_stop)
                                .await
                        }
                        ListenerProtocol::Tcp => {
                            tcp::proxy(s, &compiled, &config, (peer, bound), stop, global_stop)
                                .await
                        }
                    }
                }
            }
            stats.cx_active.dec();
            drop(token);
        });
    }
}

/// Requests hyper refused before they reached the proxy (malformed, head too large): hyper
/// answered them itself (400 / 431) and ended the connection with a parse error.
fn count_rejected(
    r: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    config: &ListenerConfig,
) {
    let Err(e) = r else { return };
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    if e.is_parse_too_large() {
        config.stats.rq_rejected.inc();
        config.stats.downstream_rq.record(431);
    } else if e.is_parse() {
        config.stats.rq_rejected.inc();
        config.stats.downstream_rq.record(400);
    }
}

/// After the first request of an HTTP/1.1 connection: how long the next request head may take,
/// idle keep-alive time included (hyper's default, set explicitly).
const HTTP1_NEXT_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a client has to complete the TLS handshake (or, on a PERMISSIVE listener, to send
/// its first byte).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

enum Accepted {
    Plain(TcpStream),
    Tls(Box<crate::tls::ServerStream>),
    Refused,
}

/// Terminate TLS as the listener's mode says. PERMISSIVE tells TLS from plaintext by the first
/// byte: a TLS handshake record starts with 0x16.
async fn accept_tls(stream: TcpStream, config: &ListenerConfig) -> Accepted {
    let Some(tls) = config.tls.load_full() else {
        return Accepted::Plain(stream);
    };
    if tls.mode == TlsMode::Permissive {
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != 0x16 => {
                config.stats.plaintext_cx.inc();
                return Accepted::Plain(stream);
            }
            Ok(Ok(1)) => {}
            _ => return Accepted::Refused,
        }
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            config.stats.tls_handshakes.inc();
            Accepted::Tls(Box::new(crate::tls::ServerStream::new(s)))
        }
        _ => {
            config.stats.tls_handshake_error.inc();
            Accepted::Refused
        }
    }
}

/// The verified client certificate's SANs in Envoy's `x-forwarded-client-cert` form.
fn client_cert_header(sans: &[String]) -> Option<http::HeaderValue> {
    if sans.is_empty() {
        return None;
    }
    let parts: Vec<String> = sans
        .iter()
        .map(|s| match s.split_once(':') {
            Some((kind, value)) => format!("{kind}={value}"),
            None => s.clone(),
        })
        .collect();
    http::HeaderValue::from_str(&parts.join(";")).ok()
}

/// The branches of `serve_http`'s loop other than the connection itself.
enum Rare {
    HeadersTimeout,
    Stop,
    IdleCheck,
}

async fn serve_http<I>(
    builder: &auto::Builder<TokioExecutor>,
    stream: I,
    ctx: Arc<ConnCtx>,
    config: &ListenerConfig,
    mut stop: watch::Receiver<bool>,
    mut global_stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let max_headers = config.max_request_headers;
    let mut builder = builder.clone();
    // NOTE: hyper answers 431 itself when the request head outgrows this buffer.
    builder.http1().max_buf_size(max_headers.max(8192));
    builder.http2().max_header_list_size(max_headers as u32);
    // NOTE: hyper starts this timer whenever it waits for a request head, idle keep-alive time
    // included, so it is also the keep-alive timeout of HTTP/1.1 connections. It stays at
    // hyper's 30 s rather than following request_headers_timeout, which would close idle
    // keep-alive connections after 10 s; the first head is bounded from accept below.
    builder.http1().header_read_timeout(HTTP1_NEXT_HEAD_TIMEOUT);
    let activity = ctx.clone();
    // Set when the first request head is complete (hyper calls the service).
    let first_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = first_request.clone();
    // NOTE: each request's future is boxed for the request's life: hyper otherwise keeps a
    // box of the future's full size (4.4 KB) for as long as the connection is open, idle
    // keep-alive connections included.
    let service = service_fn(move |req| {
        seen.store(true, SeqCst);
        // NOTE: the box is allocated before the future is made, so the future is written into
        // it in place; `Box::pin(handle(..))` built it on the stack and then copied all of it
        // (its whole size, not only the two arguments) into the box.
        Box::into_pin(Box::write(Box::new_uninit(), handle(ctx.clone(), req)))
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Envoy's request_headers_timeout, from accept: a connection that sends nothing, or
    // trickles the HTTP/2 preface or its first request head, is closed instead of holding a
    // descriptor until the idle timeout.
    let headers_deadline = tokio::time::Instant::now() + config.request_headers_timeout;
    let headers_timeout = async {
        tokio::time::sleep_until(headers_deadline).await;
        if !first_request.load(SeqCst) {
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(headers_timeout);
    // The listener idle timeout: no request in flight for this long ⇒ close (gracefully, so a
    // response still streaming is never cut).
    let idle = config.idle_timeout;
    loop {
        let wake = activity.activity.idle_deadline(idle);
        // NOTE: this task wakes several times per request, and `select!` polls every branch
        // each time: the timers and the stop receivers, which almost never fire, only when
        // they woke (`Quiet`; ~1,000 instructions per request otherwise).
        let rare = Quiet::new(async {
            tokio::select! {
                biased;
                _ = headers_timeout.as_mut() => Rare::HeadersTimeout,
                _ = stop.changed() => Rare::Stop,
                _ = global_stop.changed() => Rare::Stop,
                _ = tokio::time::sleep_until(wake.into()) => Rare::IdleCheck,
            }
        });
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                count_rejected(r, config);
                return;
            }
            rare = rare => match rare {
                Rare::HeadersTimeout => {
                    config.stats.rq_header_timeout.inc();
                    return;
                }
                Rare::Stop => break,
                Rare::IdleCheck => {
                    if activity.activity.is_idle_for(idle) {
                        break;
                    }
                }
            },
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn accept_errors_are_counted_and_backed_off_up_to_a_second() {
        let stats = ListenerStats::default();
        let mut errors = AcceptErrors::new();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<Duration> = (0..10).map(|_| errors.failed(&e, "l", &stats)).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(stats.cx_accept_error.get(), 10);
        errors.succeeded();
        assert_eq!(errors.failed(&e, "l", &stats), Duration::from_millis(10));
    }

    /// The vendored hyper keeps one header-read timer per connection and only moves it
    /// (vendor/hyper/MESHPLANE.md): every wait for a head must still get the whole
    /// `HTTP1_NEXT_HEAD_TIMEOUT`, counted from that wait's start, and no more.
    #[tokio::test(start_paused = true)]
    async fn each_wait_for_the_next_head_gets_the_whole_timeout_and_no_more() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::{sleep, Instant};
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(HTTP1_NEXT_HEAD_TIMEOUT);
        let (mut client, server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("ok")))
            });
            let _ = http.serve_connection(TokioIo::new(server), svc).await;
        });
        let mut buf = vec![0u8; 4096];
        let mut exchange = async |client: &mut tokio::io::DuplexStream| {
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\nok") {
                let n = client.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "closed early: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        };
        let step = HTTP1_NEXT_HEAD_TIMEOUT * 2 / 3;
        // Three requests, each after two thirds of the timeout: the second wait ends past the
        // first wait's deadline, the third past the second's. All are served.
        exchange(&mut client).await;
        for _ in 0..2 {
            sleep(step).await;
            exchange(&mut client).await;
        }
        // Then the connection idles: closed after exactly the timeout (paused clock).
        let idle = Instant::now();
        let mut rest = [0u8; 64];
        assert_eq!(client.read(&mut rest).await.unwrap(), 0);
        let waited = idle.elapsed();
        assert!(
            waited >= HTTP1_NEXT_HEAD_TIMEOUT
                && waited < HTTP1_NEXT_HEAD_TIMEOUT + Duration::from_secs(1),
            "closed after {waited:?}"
        );
    }

    #[test]
    fn bind_uses_the_backlog_and_reads_back_the_port() {
        let l = bind(resolve("127.0.0.1:0").unwrap(), 7).expect("bind");
        assert_ne!(l.local_addr().unwrap().port(), 0);
        assert!(resolve("not an address").is_err());
    }
}
