//! Listeners: bind, accept, serve HTTP (HTTP/1.1 and cleartext HTTP/2 told apart per
//! connection by the client preface) or proxy TCP. Stopping a listener stops accepting and
//! asks each of its connections to finish gracefully (HTTP/1.1 `Connection: close` after the
//! in-flight response, HTTP/2 GOAWAY).

mod tcp;

use crate::config::ListenerProtocol;
use crate::http::{handle, ConnCtx, ListenerSlot};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
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
        match protocol {
            ListenerProtocol::Http => {
                let max_headers = state.config.max_request_headers;
                let ctx = Arc::new(ConnCtx {
                    slot: slot.clone(),
                    peer,
                    local_port: port,
                    scheme: "http",
                });
                let http = http.clone();
                tokio::spawn(async move {
                    serve_http(&http, stream, ctx, max_headers, stop, global_stop).await;
                    stats.cx_active.dec();
                    drop(token);
                });
            }
            ListenerProtocol::Tcp => {
                let compiled = state.compiled.clone();
                let config = state.config.clone();
                tokio::spawn(async move {
                    tcp::proxy(stream, &compiled, &config, stop, global_stop).await;
                    stats.cx_active.dec();
                    drop(token);
                });
            }
        }
    }
}

async fn serve_http(
    builder: &auto::Builder<TokioExecutor>,
    stream: tokio::net::TcpStream,
    ctx: Arc<ConnCtx>,
    max_headers: usize,
    mut stop: watch::Receiver<bool>,
    mut global_stop: watch::Receiver<bool>,
) {
    let mut builder = builder.clone();
    // NOTE: hyper answers 431 itself when the request head outgrows this buffer.
    builder.http1().max_buf_size(max_headers.max(8192));
    builder.http2().max_header_list_size(max_headers as u32);
    let service = service_fn(move |req| handle(ctx.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.changed() => {}
        _ = global_stop.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
