//! The HTTP proxy: compiled snapshot tables, downstream request checks, the request path,
//! header hygiene, bodies.

mod body;
mod compiled;
mod downstream;
mod headers;
mod proxy;

pub use body::DownBody;
pub use compiled::{listener_tls, Action, Compiled, ListenerConfig, RetryPolicy};
pub use downstream::MAX_REQUEST_HEADERS;
pub use proxy::{handle, local_reply, ConnActivity, ConnCtx, ListenerSlot, ListenerState};
