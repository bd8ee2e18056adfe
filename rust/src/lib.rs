//! meshplane's data plane: the module list and the global allocator. The layering
//! (docs/architecture.md): `config` → `route`, `balance`, `stats` → `trace` → `cluster`, `pool` →
//! `http` → `listener` → `runtime`, `notify` → `py`. Only `py` uses pyo3.

pub mod accesslog;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod listener;
pub mod notify;
pub mod pool;
pub mod route;
pub mod runtime;
pub mod stats;
pub mod tls;
pub mod trace;

#[cfg(feature = "python")]
mod py;

// NOTE: the request path allocates a few small objects per request on one worker thread;
// glibc's per-thread arena showed up in profiles (malloc/free ~5%, mprotect syscalls as the
// arena grows and shrinks). mimalloc's thread-local free lists avoid both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
