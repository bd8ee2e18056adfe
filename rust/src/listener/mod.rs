//! Listeners: bind, accept, serve HTTP (HTTP/1.1 and cleartext HTTP/2 told apart per
//! connection by the client preface) or proxy TCP. Stopping a listener stops accepting and
//! asks each of its connections to finish gracefully (HTTP/1.1 `Connection: close` after the
//! in-flight response, HTTP/2 GOAWAY).

mod tcp;

use crate::config::{ListenerProtocol, TlsMode};
use crate::http::ListenerConfig;
use crate::http::{handle, ConnCtx, ListenerSlot};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
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

pub struct RunningListener {
    pub address_spec: String,
    pub protocol: ListenerProtocol,
    pub bound: SocketAddr,
    pub slot: Arc<ListenerSlot>,
    stop: watch::Sender<bool>,
}

impl RunningListener {
    /// Stop accepting and drain this listener's connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Bind synchronously (so the caller learns the port, or the error, at once).
pub fn bind(address: &str) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(address)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Start serving an already bound socket. Must be called inside the runtime (`Handle::enter`).
pub fn start(
    std_listener: std::net::TcpListener,
    address_spec: String,
    protocol: ListenerProtocol,
    slot: Arc<ListenerSlot>,
    conns: Arc<Connections>,
    global_stop: watch::Receiver<bool>,
) -> std::io::Result<RunningListener> {
    let bound = std_listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let (stop, stop_rx) = watch::channel(false);
    let running = RunningListener {
        address_spec,
        protocol,
        bound,
        slot: slot.clone(),
        stop,
    };
    tokio::spawn(accept_loop(
        listener,
        bound.port(),
        protocol,
        slot,
        conns,
        stop_rx,
        global_stop,
    ));
    Ok(running)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    port: u16,
    protocol: ListenerProtocol,
    slot: Arc<ListenerSlot>,
    conns: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    mut global_stop: watch::Receiver<bool>,
) {
    let bound = listener.local_addr().ok();
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new()).keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let http = Arc::new(http);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
            _ = global_stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            // Out of file descriptors and the like: the listener stays up.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let token = ConnToken::new(&conns);
        let state = slot.state.load();
        let stats = state.config.stats.clone();
        stats.cx_total.inc();
        stats.cx_active.inc();
        let (stop, global_stop) = (stop.clone(), global_stop.clone());
        let config = state.config.clone();
        let compiled = state.compiled.clone();
        let http = http.clone();
        let slot = slot.clone();
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
                    let sans = crate::tls::peer_identity(s.get_ref().1.peer_certificates());
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

/// How long a client has to complete the TLS handshake (or, on a PERMISSIVE listener, to send
/// its first byte).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

enum Accepted {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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
            Accepted::Tls(Box::new(s))
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
    let activity = ctx.clone();
    let service = service_fn(move |req| handle(ctx.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The listener idle timeout: no request in flight for this long ⇒ close (gracefully, so a
    // response still streaming is never cut).
    let idle = config.idle_timeout;
    loop {
        let wake = activity.activity.idle_deadline(idle);
        tokio::select! {
            r = conn.as_mut() => {
                count_rejected(r, config);
                return;
            }
            _ = stop.changed() => break,
            _ = global_stop.changed() => break,
            _ = tokio::time::sleep_until(wake.into()) => {
                if activity.activity.is_idle_for(idle) {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
