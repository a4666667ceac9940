//! `ferroloop._native`: the PyO3 half of ferroloop.
//!
//! Layering (see docs/design.md): what runs per callback or per packet is native and lives
//! here; what runs once per connection or per loop is Python in `python/ferroloop/`. The
//! engine underneath (queues, timer heap, poller) is the plain-Rust `ferroloop-core` crate.
//!
//! The module is declared `gil_used`: the loop state is guarded by the GIL (see
//! `gil_cell.rs`), so a free-threaded interpreter keeps its GIL enabled while ferroloop is
//! imported.

mod addrinfo;
mod cmethods;
mod datagram;
mod event_loop;
mod fastcall;
mod gil_cell;
mod handles;
mod introspect;
mod sock;
mod syscalls;
mod tls;
mod transport_common;
mod transports;
mod watchers;

use pyo3::prelude::*;

/// Raises a Rust panic inside native code, for the test that checks panics surface as Python
/// exceptions (`pyo3_runtime.PanicException`) instead of aborting the interpreter: through
/// PyO3's own method wrapper, or (`via_guard`) through the guard of ferroloop's hand-written
/// C methods.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, via_guard: bool) -> PyResult<()> {
    if via_guard {
        let r = cmethods::guard(|_py| panic!("ferroloop test panic (guard)"));
        assert!(r.is_null(), "a panicking body returns NULL");
        return Err(PyErr::fetch(py));
    }
    panic!("ferroloop test panic (pyo3)");
}

#[pymodule(gil_used = true)]
fn _native(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    m.add_class::<sock::RecvWait>()?;
    m.add_class::<transports::TransportCore>()?;
    m.add_class::<datagram::DatagramCore>()?;
    m.add_class::<tls::TlsConsts>()?;
    m.add_class::<tls::TlsFastPath>()?;
    m.add_class::<tls::TlsAppWrite>()?;
    tls::init(py)?;
    handles::init(py, m)?;
    fastcall::init(py)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(addrinfo::getaddrinfo_numeric, m)?)?;
    m.add_function(wrap_pyfunction!(tls::uninit_bytearray, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
