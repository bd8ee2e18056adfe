//! TCP proxying for `tcp` listeners: pick a cluster by weight, a host by the balancer, connect,
//! then copy both ways until either side closes or the connection is idle too long.

use crate::accesslog::{AccessLog, Record, ResponseFlags};
use crate::http::{Compiled, ListenerConfig};
use crate::pool::{connect_stream, Stream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The access-log line of one TCP connection, written when the connection ends (on every
/// path out of `proxy`, including a connect failure).
struct ConnectionLog<'a> {
    log: &'a AccessLog,
    record: Record,
    received: &'a AtomicU64,
    sent: &'a AtomicU64,
}

impl Drop for ConnectionLog<'_> {
    fn drop(&mut self) {
        self.record.bytes_received = self.received.load(Relaxed);
        self.record.bytes_sent = self.sent.load(Relaxed);
        self.log.finish(&self.record);
    }
}

pub async fn proxy<D>(
    mut down: D,
    compiled: &Compiled,
    config: &ListenerConfig,
    peers: (SocketAddr, Option<SocketAddr>),
    mut stop: watch::Receiver<bool>,
    mut global_stop: watch::Receiver<bool>,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(weights) = &config.tcp_weights else {
        return;
    };
    let cluster = compiled.clusters[config.tcp_clusters[weights.pick_random()]].clone();
    cluster.stats.rq_total.inc();
    let (received, sent) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut log = config.access_log.as_deref().map(|log| ConnectionLog {
        log,
        record: log.begin_connection(peers.0, peers.1),
        received: &received,
        sent: &sent,
    });
    if let Some(l) = log.as_mut() {
        l.record.cluster = Some(cluster.name.clone());
    }
    let mut tried = Vec::new();
    // Connect failures move on to another host, as App Mesh's default connect-failure retry.
    let up = loop {
        let set = cluster.hosts.load_full();
        let Some(i) = set.pick(|i| tried.contains(&i)) else {
            cluster.stats.cx_none_healthy.inc();
            if let Some(l) = log.as_mut() {
                l.record.flags = if tried.is_empty() {
                    ResponseFlags::UH
                } else {
                    ResponseFlags::UF
                };
            }
            let _ = down.shutdown().await;
            return;
        };
        tried.push(i);
        let host = set.hosts[i].clone();
        if let Some(l) = log.as_mut() {
            l.record.upstream_host = Some(host.name.clone());
        }
        if !cluster.try_reserve_connection() {
            cluster.stats.cx_overflow.inc();
            if let Some(l) = log.as_mut() {
                l.record.flags = ResponseFlags::UO;
            }
            return;
        }
        let guard = cluster.connection_guard(&host);
        match connect_stream(&host.addr, cluster.connect_timeout).await {
            Ok(s) => break (s, guard, host),
            _ => {
                host.stats.cx_connect_fail.inc();
                cluster.stats.cx_connect_fail.inc();
                drop(guard);
                if tried.len() > 3 {
                    if let Some(l) = log.as_mut() {
                        l.record.flags = ResponseFlags::UF;
                    }
                    return;
                }
            }
        }
    };
    let (mut up, _guard, host) = up;
    host.active.fetch_add(1, Relaxed);
    let idle = config.idle_timeout;
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (mut dr, mut dw) = tokio::io::split(down);
    let copy = async {
        match &mut up {
            Stream::Tcp(s) => {
                let (mut ur, mut uw) = s.split();
                tokio::join!(
                    pump(&mut dr, &mut uw, &last, epoch, &received),
                    pump(&mut ur, &mut dw, &last, epoch, &sent)
                );
            }
            Stream::Unix(s) => {
                let (mut ur, mut uw) = s.split();
                tokio::join!(
                    pump(&mut dr, &mut uw, &last, epoch, &received),
                    pump(&mut ur, &mut dw, &last, epoch, &sent)
                );
            }
        }
    };
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4 + Duration::from_millis(1)).await;
            let quiet = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Relaxed)));
            if quiet >= idle {
                return;
            }
        }
    };
    tokio::select! {
        _ = copy => {}
        _ = watchdog => {}
        _ = stop.changed() => {}
        _ = global_stop.changed() => {}
    }
    host.active.fetch_sub(1, Relaxed);
}

async fn pump<R, W>(r: &mut R, w: &mut W, last: &AtomicU64, epoch: Instant, count: &AtomicU64)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last.store(epoch.elapsed().as_millis() as u64, Relaxed);
        count.fetch_add(n as u64, Relaxed);
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
