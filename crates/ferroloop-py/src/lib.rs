//! `ferroloop._native`: the PyO3 half of ferroloop.
//!
//! Layering (see docs/design.md): what runs per callback or per packet is native and lives
//! here; what runs once per connection or per loop is Python in `python/ferroloop/`. The
//! engine underneath (queues, timer heap, poller) is the plain-Rust `ferroloop-core` crate.
//!
//! The module is declared `gil_used`: the loop state is guarded by the GIL (see
//! `gil_cell.rs`), so a free-threaded interpreter keeps its GIL enabled while ferroloop is
//! imported.

mod cmethods;
mod event_loop;
mod fastcall;
mod gil_cell;
mod handles;

use pyo3::prelude::*;

#[pymodule(gil_used = true)]
fn _native(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    handles::init(py, m)?;
    fastcall::init(py)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
