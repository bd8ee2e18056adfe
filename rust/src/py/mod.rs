//! The Python module `meshplane._core`: the only code that uses pyo3. Conversions and
//! exceptions live here; everything else in the crate is plain Rust.

mod balance;
mod core;
mod events;
mod route;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    core::register(m)?;
    events::register(m)?;
    route::register(m)?;
    balance::register(m)?;
    Ok(())
}
