//! The HTTP proxy: compiled snapshot tables, the request path, header hygiene, bodies.

mod body;
mod compiled;
mod conn;
mod headers;
mod proxy;
mod retry;
mod timeouts;
mod upstream;

pub use body::DownBody;
pub use compiled::{listener_tls, Action, Compiled, ListenerConfig, RetryPolicy};
pub use conn::{ConnActivity, ConnCtx, ListenerSlot, ListenerState};
pub use proxy::{handle, local_reply};
