//! What the request path knows of a listener and of one downstream connection: the listener's
//! swappable state, the connection's peer and TLS identity, and its activity (for the
//! listener idle timeout).

use super::compiled::{Compiled, ListenerConfig};
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a listener's connections read on every request; swapped whole on apply.
pub struct ListenerState {
    pub compiled: Arc<Compiled>,
    pub config: Arc<ListenerConfig>,
}

pub struct ListenerSlot {
    pub name: Arc<str>,
    pub state: ArcSwap<ListenerState>,
}

/// Per downstream connection.
pub struct ConnCtx {
    pub slot: Arc<ListenerSlot>,
    pub peer: SocketAddr,
    pub local_port: u16,
    pub scheme: &'static str,
    /// The verified client certificate (mutual TLS), as `x-forwarded-client-cert` sends it.
    pub client_cert: Option<HeaderValue>,
    /// The listener's bound address.
    pub local: Option<SocketAddr>,
    /// `peer`'s IP as a header value (for `x-forwarded-for`), made once per connection.
    pub peer_ip: HeaderValue,
    pub activity: ConnActivity,
    /// The route timer kept between this connection's requests.
    pub route_timer: super::timeouts::KeptTimer,
}

impl ConnCtx {
    /// The first URI SAN of the verified client certificate (SPIFFE ID), for access logs.
    pub fn client_uri_san(&self) -> Option<String> {
        let v = self.client_cert.as_ref()?.to_str().ok()?;
        v.split(';')
            .find_map(|p| p.strip_prefix("URI="))
            .map(String::from)
    }
}

/// Requests in flight on one downstream connection and when it last became idle, for the
/// listener idle timeout.
pub struct ConnActivity {
    opened: Instant,
    active: AtomicU32,
    /// Milliseconds after `opened` when the last request finished.
    idle_since_ms: AtomicU64,
}

impl Default for ConnActivity {
    fn default() -> Self {
        ConnActivity {
            opened: Instant::now(),
            active: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }
}

impl ConnActivity {
    pub(super) fn begin(&self) {
        self.active.fetch_add(1, Relaxed);
    }

    pub(super) fn end(&self) {
        self.idle_since_ms
            .store(self.opened.elapsed().as_millis() as u64, Relaxed);
        self.active.fetch_sub(1, Relaxed);
    }

    /// When the connection will have been idle for `idle`, if nothing happens before.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Relaxed)) + idle
    }

    pub fn is_idle_for(&self, idle: Duration) -> bool {
        self.active.load(Relaxed) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}
