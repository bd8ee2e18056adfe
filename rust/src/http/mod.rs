//! The HTTP proxy: compiled snapshot tables, the request path, header hygiene, bodies.

mod body;
mod compiled;
mod headers;
mod proxy;
mod retry;
mod timeouts;

pub use body::DownBody;
pub use compiled::{listener_tls, Action, Compiled, ListenerConfig, RetryPolicy};
pub use proxy::{handle, local_reply, ConnActivity, ConnCtx, ListenerSlot, ListenerState};
