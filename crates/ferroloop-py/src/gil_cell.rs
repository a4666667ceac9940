//! `GilCell`: loop state that any thread holding the GIL may touch.
//!
//! The loop's queues are read and written by the loop thread and, through
//! `call_soon_threadsafe`, by other threads. Every such access happens with the GIL held, and
//! the module is declared `gil_used`, so even a free-threaded interpreter keeps a GIL while
//! ferroloop is loaded. The GIL therefore serialises the threads; the inner `RefCell` catches
//! the remaining hazard, re-entrancy (a borrow held while Python code runs), by panicking,
//! which PyO3 turns into a Python exception instead of undefined behaviour. Borrows must be
//! short and must never run Python code, including dropping Python objects (a `__del__` can
//! switch threads).

use std::cell::{RefCell, RefMut};

use pyo3::Python;

pub struct GilCell<T>(RefCell<T>);

// SAFETY: the contents are only reached through `borrow_mut`, which demands a `Python` token,
// i.e. the GIL held by the calling thread. With the module marked `gil_used`, at most one
// thread holds it at any moment, so no two threads can observe the `RefCell` at once.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub fn new(value: T) -> Self {
        Self(RefCell::new(value))
    }

    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }
}
