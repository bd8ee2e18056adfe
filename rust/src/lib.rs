//! meshplane's data plane. Module registration only; see DESIGN.md for the layering:
//! `config` → `route`, `balance`, `stats` → `cluster`, `pool` → `http` → `listener` →
//! `runtime`, `notify` → `py`. Only `py` uses pyo3.

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

#[cfg(feature = "python")]
mod py;
