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

use std::cell::{RefCell, RefMut, UnsafeCell};

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

    /// `borrow_mut`, or `None` if a borrow is live (for the collector's `tp_clear`).
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<RefMut<'a, T>> {
        self.0.try_borrow_mut().ok()
    }

    /// A shared view for the collector's `tp_traverse`, or `None` if a borrow is live. The
    /// collector runs with the GIL held and only reads, so nothing can mutate the value
    /// while the reference is used; a live `borrow_mut` (the collector triggered by an
    /// allocation inside one) makes this `None` and the caller visits nothing, which only
    /// keeps objects alive one collection longer.
    pub fn try_borrow_unguarded(&self) -> Option<&T> {
        // SAFETY: see above: no mutable borrow is live (checked), and none can start while
        // the returned reference is used, because only the collector's traversal, which runs
        // no Python code and takes no borrows, uses it.
        unsafe { self.0.try_borrow_unguarded().ok() }
    }
}

/// A process-wide value touched only with the GIL held, by code that runs no Python while it
/// holds the borrow: the handle free lists and the deallocation trashcan in `handles.rs`.
/// Unlike an atomic or a mutex it costs nothing per access, which matters on paths taken once
/// per callback.
pub struct GilStatic<T>(UnsafeCell<T>);

// SAFETY: `with` requires the GIL (module declared `gil_used`), which serialises all threads,
// and its closures run no Python code, so no two accesses overlap.
unsafe impl<T> Sync for GilStatic<T> {}

impl<T> GilStatic<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// Runs `f` on the value.
    ///
    /// # Safety
    /// The GIL must be held, and `f` must not run Python code or re-enter `with` on the same
    /// static.
    #[inline]
    pub unsafe fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: per the caller's contract this is the only live reference to the value.
        f(unsafe { &mut *self.0.get() })
    }
}
