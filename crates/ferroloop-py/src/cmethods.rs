//! Methods written against CPython's C calling conventions, outside PyO3's `#[pymethods]`.
//!
//! Two places need them: the handle classes, which are Python subclasses of asyncio's classes
//! (PyO3 cannot define methods on those), and the four scheduling methods of `LoopCore`, whose
//! argument parsing is hand-written for speed (`fastcall.rs`). Both install a method
//! descriptor with [`install`] and run their bodies through [`guard`], which turns a Rust
//! panic into a Python exception: a panic must never unwind into the interpreter.

use std::ffi::{c_char, c_int, CStr};
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Runs the body of a C method. `Ok(obj)` returns the new reference `obj`; an error is
/// raised and NULL returned; a panic becomes `PanicException`.
pub fn guard(f: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls C methods with the GIL held.
    let py = unsafe { Python::assume_attached() };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py))) {
        Ok(Ok(obj)) => obj,
        Ok(Err(err)) => {
            err.restore(py);
            ptr::null_mut()
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in ferroloop".to_string());
            pyo3::panic::PanicException::new_err(msg).restore(py);
            ptr::null_mut()
        }
    }
}

/// Installs a method implemented in Rust as `cls.<name>`: a method descriptor, which checks
/// the receiver's type on every call.
pub fn install(
    py: Python<'_>,
    cls: &Bound<'_, PyType>,
    name: &'static CStr,
    meth: ffi::PyMethodDefPointer,
    flags: c_int,
    doc: &'static CStr,
) -> PyResult<()> {
    // The method table must outlive the class; classes live as long as the interpreter.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr() as *const c_char,
        ml_meth: meth,
        ml_flags: flags,
        ml_doc: doc.as_ptr() as *const c_char,
    }));
    // SAFETY: `cls` is a live type object and `def` is 'static.
    let descr = unsafe {
        let d = ffi::PyDescr_NewMethod(cls.as_type_ptr(), def);
        if d.is_null() {
            return Err(PyErr::fetch(py));
        }
        Bound::from_owned_ptr(py, d)
    };
    cls.setattr(name.to_str().expect("method names are ASCII"), descr)
}
