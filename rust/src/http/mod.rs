//! The HTTP proxy: compiled snapshot tables, downstream request checks, the request path,
//! header hygiene, bodies.

mod body;
mod compiled;
mod conn;
mod downstream;
mod headers;
mod proxy;
mod retry;
mod timeouts;
mod upstream;

pub use body::DownBody;
pub use compiled::{listener_tls, Action, Compiled, ListenerConfig, RetryPolicy};
pub use conn::{ConnActivity, ConnCtx, ListenerSlot, ListenerState};
pub use downstream::MAX_REQUEST_HEADERS;
pub use proxy::{handle, local_reply};
pub use upstream::end_burst;
