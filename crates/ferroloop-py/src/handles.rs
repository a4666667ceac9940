//! Handles: `asyncio.Handle` and `asyncio.TimerHandle`, made natively.
//!
//! Libraries check `isinstance(h, asyncio.Handle)` and read its attributes (`_callback`,
//! `_args`, `_when`, `_cancelled`...), so ferroloop's handles are real instances of asyncio's
//! classes: `ferroloop.Handle` and `ferroloop.TimerHandle` are empty-slotted Python subclasses
//! of them, with one native method, `cancel`.
//!
//! asyncio's handle classes keep their state in `__slots__`, which CPython lays out at fixed
//! offsets inside the object. At import we read those offsets from the classes' member
//! descriptors (and check them against an instance built the ordinary way); after that,
//! creating a handle is one allocation and a few pointer stores instead of running
//! `Handle.__init__` in Python, and the run loop reads `_callback`/`_args`/`_context`
//! straight from memory. Any `asyncio.Handle` works with the run loop, including the ones the
//! debug path builds through the normal constructor (they carry a source traceback).
//!
//! Where asyncio has `events._ThreadSafeHandle` (3.14; the handle `call_soon_threadsafe`
//! returns, with an `RLock` in a `_lock` slot that its `cancel`/`cancelled`/`_run` take),
//! `ferroloop._ThreadSafeHandle` is made the same way, a third class: its slots are a
//! `Handle`'s plus `_lock`, which gets a new `_thread.RLock` as asyncio's `__init__` gives it.
//! As asyncio's, it is run and cancelled holding that lock: the run loop takes it, checks
//! `_cancelled` again and calls the callback, so a `cancel()` (or `cancelled()`) from another
//! thread waits until the callback has returned.

use std::ffi::CStr;
use std::ptr;
use std::ptr::NonNull;
use std::sync::OnceLock;

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::cmethods::{self, guard};
use crate::event_loop::LoopCore;
use crate::gil_cell::GilStatic;

/// Byte offsets of asyncio's handle slots inside a handle object.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub callback: isize,
    pub args: isize,
    pub cancelled: isize,
    pub loop_: isize,
    pub source_traceback: isize,
    pub repr: isize,
    pub context: isize,
    pub scheduled: isize,
    pub when: isize,
}

static LAYOUT: OnceLock<Layout> = OnceLock::new();
static HANDLE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMER_HANDLE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// `ferroloop._ThreadSafeHandle`, where asyncio has `_ThreadSafeHandle`.
static THREADSAFE_HANDLE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// `_thread.RLock`, the lock type asyncio's `_ThreadSafeHandle.__init__` stores.
static RLOCK_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// Offset of `_ThreadSafeHandle`'s `_lock` slot.
static LOCK_OFFSET: OnceLock<isize> = OnceLock::new();

#[inline]
pub fn layout() -> &'static Layout {
    // Set once in `init` before the module object is returned to Python.
    LAYOUT
        .get()
        .expect("ferroloop handles are initialised at import")
}

/// Reads a slot: a borrowed pointer, NULL if the slot was never set.
///
/// # Safety
/// `obj` must be a live `asyncio.Handle` instance (or `TimerHandle` for the timer slots) and
/// the GIL must be held.
#[inline]
pub unsafe fn get_slot(obj: *mut ffi::PyObject, offset: isize) -> *mut ffi::PyObject {
    // SAFETY: the caller guarantees `obj` has asyncio's handle layout, so `offset` (read from
    // the class's own member descriptor) lies inside the object and holds a `PyObject*`.
    unsafe { *(obj as *mut u8).offset(offset).cast::<*mut ffi::PyObject>() }
}

/// Stores a new strong reference in a slot and releases the old value.
///
/// # Safety
/// As [`get_slot`]; `value` must be a strong reference that the slot takes over.
#[inline]
pub unsafe fn set_slot(obj: *mut ffi::PyObject, offset: isize, value: *mut ffi::PyObject) {
    // SAFETY: as in `get_slot`; the old value is released after the store, so the object is
    // consistent if the release runs arbitrary code.
    unsafe {
        let p = (obj as *mut u8).offset(offset).cast::<*mut ffi::PyObject>();
        let old = *p;
        *p = value;
        ffi::Py_XDECREF(old);
    }
}

#[inline]
fn new_ref(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: callers pass live objects under the GIL.
    unsafe { ffi::Py_INCREF(obj) };
    obj
}

#[inline]
fn py_bool(b: bool) -> *mut ffi::PyObject {
    // SAFETY: the bool singletons are immortal-or-static objects; taking a new reference is
    // always valid with the GIL held.
    unsafe { new_ref(if b { ffi::Py_True() } else { ffi::Py_False() }) }
}

/// Whether the handle was cancelled (its `_cancelled` slot holds `True`).
///
/// # Safety
/// `obj` must be a live `asyncio.Handle` and the GIL held.
#[inline]
pub unsafe fn is_cancelled(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { get_slot(obj, layout().cancelled) == ffi::Py_True() }
}

pub fn handle_type(py: Python<'_>) -> &Bound<'_, PyType> {
    HANDLE_TYPE.get(py).expect("initialised at import").bind(py)
}

pub fn timer_handle_type(py: Python<'_>) -> &Bound<'_, PyType> {
    TIMER_HANDLE_TYPE
        .get(py)
        .expect("initialised at import")
        .bind(py)
}

/// Allocates an instance of one of our handle types, `__weakref__` NULL and every other slot
/// left for the caller to store (it must store all of them before the object is seen by
/// anything, including the collector, which cannot see it: the object starts
/// *untracked*). It goes straight into a loop queue, which keeps it untracked anyway (see
/// [`Queued`]), and is tracked when it leaves the queue.
///
/// # Safety
/// `ty` must be one of our handle types (GC-enabled heap types with only object slots and no
/// instance dict); the GIL must be held.
unsafe fn alloc(py: Python<'_>, ty: &Bound<'_, PyType>) -> PyResult<*mut ffi::PyObject> {
    let tp = ty.as_type_ptr();
    // SAFETY: a recycled object is memory of exactly this type, untracked, with every slot
    // NULL (see `free_handle`); `PyObject_Init` sets its type (taking the reference heap
    // types need) and a refcount of 1. Otherwise `PyObject_GC_New` allocates `tp_basicsize`
    // bytes plus the GC header, does the same and leaves the object untracked.
    unsafe {
        let obj = match freelist_for(tp).pop() {
            Some(obj) => ffi::PyObject_Init(obj, tp),
            None => ffi::PyObject_GC_New(tp),
        };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        // Every slot but `__weakref__` is stored by the caller right away; that one must
        // start out NULL.
        *(obj as *mut u8)
            .offset((*tp).tp_weaklistoffset)
            .cast::<*mut ffi::PyObject>() = ptr::null_mut();
        Ok(obj)
    }
}

/// Up to this many freed handles of each class are kept for reuse.
const FREELIST_MAX: usize = 1024;

/// Freed handles kept for the next allocation. A callback that schedules another (a task
/// step, a done callback, a re-armed timer) then reuses memory that is still in cache, and
/// neither side touches the allocator or the collector's allocation count (which paces its
/// collections).
struct FreeList(GilStatic<Vec<*mut ffi::PyObject>>);

impl FreeList {
    const fn new() -> Self {
        Self(GilStatic::new(Vec::new()))
    }

    /// # Safety
    /// GIL held.
    unsafe fn pop(&self) -> Option<*mut ffi::PyObject> {
        // SAFETY: forwarded from the caller; `Vec::pop` runs no Python code.
        unsafe { self.0.with(|v| v.pop()) }
    }

    /// Keeps `obj` unless the list is full; returns whether it was kept.
    ///
    /// # Safety
    /// GIL held.
    unsafe fn push(&self, obj: *mut ffi::PyObject) -> bool {
        // SAFETY: forwarded from the caller; nothing here runs Python code.
        unsafe {
            self.0.with(|v| {
                if v.len() >= FREELIST_MAX {
                    return false;
                }
                if v.capacity() == 0 {
                    v.reserve_exact(FREELIST_MAX);
                }
                v.push(obj);
                true
            })
        }
    }
}

static HANDLE_FREELIST: FreeList = FreeList::new();
static TIMER_FREELIST: FreeList = FreeList::new();
static THREADSAFE_FREELIST: FreeList = FreeList::new();

fn freelist_for(tp: *mut ffi::PyTypeObject) -> &'static FreeList {
    if tp == TIMER_HANDLE_TYPE_PTR.load(std::sync::atomic::Ordering::Relaxed) {
        &TIMER_FREELIST
    } else if tp == THREADSAFE_HANDLE_TYPE_PTR.load(std::sync::atomic::Ordering::Relaxed) {
        &THREADSAFE_FREELIST
    } else {
        &HANDLE_FREELIST
    }
}

/// Stores a new strong reference in a slot that holds no reference yet.
///
/// # Safety
/// As [`set_slot`], and the slot must not hold a reference (fresh from [`alloc`]).
#[inline(always)]
unsafe fn init_slot(obj: *mut ffi::PyObject, offset: isize, value: *mut ffi::PyObject) {
    // SAFETY: forwarded from the caller.
    unsafe { *(obj as *mut u8).offset(offset).cast::<*mut ffi::PyObject>() = value }
}

/// A new `ferroloop.Handle` for `callback(*args)` in `context` (stolen reference), owned by
/// `loop_`. This is asyncio's `Handle.__init__` for a loop that is not in debug mode.
#[inline]
pub fn new_handle<'py>(
    py: Python<'py>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    loop_: &Bound<'py, PyAny>,
    context: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `alloc` returns a fresh instance of our `Handle` subclass, whose layout is
    // asyncio's; `init_handle_slots` stores all of its slots before anything can see it.
    unsafe {
        let obj = alloc(py, handle_type(py))?;
        init_handle_slots(obj, callback, args, loop_, context);
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// The handle `call_soon_threadsafe` returns: a new `ferroloop._ThreadSafeHandle` where asyncio
/// has that class (asyncio's `_ThreadSafeHandle.__init__` outside debug mode), else the same
/// as [`new_handle`].
pub fn new_threadsafe_handle<'py>(
    py: Python<'py>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    loop_: &Bound<'py, PyAny>,
    context: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let (Some(ty), Some(rlock), Some(&lock_offset)) = (
        THREADSAFE_HANDLE_TYPE.get(py),
        RLOCK_TYPE.get(py),
        LOCK_OFFSET.get(),
    ) else {
        return new_handle(py, callback, args, loop_, context);
    };
    // The lock first: once the handle is allocated, nothing may fail before its slots are set.
    let lock = rlock.bind(py).call0()?;
    // SAFETY: as in `new_handle`, for our `_ThreadSafeHandle` subclass, whose layout is a
    // `Handle`'s plus the `_lock` slot at `lock_offset` (read from asyncio's class).
    unsafe {
        let obj = alloc(py, ty.bind(py))?;
        init_handle_slots(obj, callback, args, loop_, context);
        init_slot(obj, lock_offset, lock.into_ptr());
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// Stores the slots every asyncio handle has (`Handle.__init__` outside debug mode).
///
/// # Safety
/// `obj` is fresh from [`alloc`] (its slots hold no references), GIL held.
#[inline(always)]
unsafe fn init_handle_slots(
    obj: *mut ffi::PyObject,
    callback: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    loop_: &Bound<'_, PyAny>,
    context: Bound<'_, PyAny>,
) {
    let l = layout();
    // SAFETY: forwarded from the caller; each store hands a new strong reference to a slot.
    unsafe {
        init_slot(obj, l.callback, new_ref(callback.as_ptr()));
        init_slot(obj, l.args, new_ref(args.as_ptr()));
        init_slot(obj, l.cancelled, py_bool(false));
        init_slot(obj, l.loop_, new_ref(loop_.as_ptr()));
        init_slot(obj, l.source_traceback, new_ref(ffi::Py_None()));
        init_slot(obj, l.repr, new_ref(ffi::Py_None()));
        init_slot(obj, l.context, context.into_ptr());
    }
}

/// A new, scheduled `ferroloop.TimerHandle` (asyncio's `TimerHandle.__init__` plus
/// `_scheduled = True`). `when` is stored as given, as asyncio does.
#[inline]
pub fn new_timer_handle<'py>(
    py: Python<'py>,
    when: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    loop_: &Bound<'py, PyAny>,
    context: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let l = layout();
    // SAFETY: as in `new_handle`, for our `TimerHandle` subclass, which also has the
    // `_scheduled` and `_when` slots.
    unsafe {
        let obj = alloc(py, timer_handle_type(py))?;
        init_handle_slots(obj, callback, args, loop_, context);
        init_slot(obj, l.when, new_ref(when.as_ptr()));
        init_slot(obj, l.scheduled, py_bool(true));
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// Marks a timer handle as no longer in the heap (`_scheduled = False`).
///
/// # Safety
/// `obj` must be a live `asyncio.TimerHandle`, GIL held.
#[inline]
pub unsafe fn set_unscheduled(obj: *mut ffi::PyObject) {
    // SAFETY: forwarded from the caller.
    unsafe { set_slot(obj, layout().scheduled, py_bool(false)) }
}

/// A handle held by one of the loop's queues, hidden from the cycle collector meanwhile.
///
/// A program that keeps many timers pending (timeouts on idle connections, or a benchmark
/// that schedules and cancels in a tight loop) would otherwise make every collection walk
/// every pending handle. While a queue holds a handle it is alive by definition, and the
/// collector treats references from an untracked object as external, so what the handle
/// refers to is never collected early. The handle is tracked again when it leaves the queue,
/// so a cycle through it (a callback that stores its own handle) is still collectable after.
///
/// The references are raw pointers released with `Py_DECREF` directly: queues are only ever
/// touched with the GIL held, and `Py<T>`'s own drop would look up a thread-local GIL count
/// on every release, twice per callback.
pub struct Queued {
    handle: NonNull<ffi::PyObject>,
    /// The context the loop copied for this handle alone (`context=None`), hidden from the
    /// collector with it. Held strongly so it cannot be freed while untracked even if the
    /// handle's `_context` slot is reassigned. (The argument tuple is not hidden: `cancel()`
    /// must be able to free the arguments at once, as asyncio's does.)
    companion: Option<NonNull<ffi::PyObject>>,
}

// SAFETY: a `Queued` is a few owned references to Python objects; like `Py<T>` it may move
// between threads, and it is only dereferenced or released with the GIL held (queues live in
// a `GilCell`, see `gil_cell.rs`).
unsafe impl Send for Queued {}

#[inline]
fn untrack(p: *mut ffi::PyObject) {
    // SAFETY: callers pass live GC-enabled objects with the GIL held; `PyObject_GC_UnTrack`
    // does nothing for an object that is not tracked.
    unsafe { ffi::PyObject_GC_UnTrack(p.cast()) }
}

#[inline]
fn retrack(p: *mut ffi::PyObject) {
    // SAFETY: callers pass live GC-enabled objects with the GIL held; tracking an untracked
    // object is always allowed.
    unsafe {
        if ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
    }
}

impl Queued {
    /// Queues `handle` (a new reference is taken) together with the context the loop made
    /// for it alone, if any (see the field).
    #[inline]
    pub fn new(handle: &Bound<'_, PyAny>, context: Option<&Bound<'_, PyAny>>) -> Self {
        let h = handle.clone().into_ptr();
        untrack(h);
        let hide = |obj: Option<&Bound<'_, PyAny>>| {
            let obj = obj?;
            // SAFETY: a live object, GIL held.
            if unsafe { ffi::PyObject_GC_IsTracked(obj.as_ptr()) } == 0 {
                return None;
            }
            let p = obj.clone().into_ptr();
            untrack(p);
            // SAFETY: `into_ptr` of a live object is never NULL.
            Some(unsafe { NonNull::new_unchecked(p) })
        };
        Self {
            // SAFETY: as above.
            handle: unsafe { NonNull::new_unchecked(h) },
            companion: hide(context),
        }
    }

    #[inline]
    pub fn as_ptr(&self) -> *mut ffi::PyObject {
        self.handle.as_ptr()
    }

    /// Drops the private context: tracked again first, because `Context`'s deallocator (like
    /// those of many built-in types) unlinks the object from the collector unconditionally.
    #[inline]
    fn release_companion(&mut self) {
        if let Some(obj) = self.companion.take() {
            retrack(obj.as_ptr());
            // SAFETY: we owned this reference; GIL held.
            unsafe { ffi::Py_DECREF(obj.as_ptr()) };
        }
    }

    /// The loop is done with this handle (it ran, or was skipped as cancelled). If nobody
    /// else holds the handle, it is freed right here without being tracked again (the common
    /// case: `call_soon`'s return value was discarded); our handle classes deallocate through
    /// `handle_dealloc`, which untracks only what is tracked. Otherwise the handle rejoins
    /// the collector's view.
    #[inline]
    pub fn finish(mut self) {
        let h = self.handle.as_ptr();
        self.release_companion();
        // SAFETY: we own a reference to the handle (so the count is at least 1), GIL held.
        unsafe {
            if ffi::Py_REFCNT(h) != 1 {
                retrack(h);
            }
            std::mem::forget(self);
            ffi::Py_DECREF(h);
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.release_companion();
        let h = self.handle.as_ptr();
        retrack(h);
        // SAFETY: we owned this reference; queues are dropped with the GIL held.
        unsafe { ffi::Py_DECREF(h) };
    }
}

/// What running a handle produced.
pub enum RunOutcome {
    /// The callback returned, or raised an exception that was reported.
    Done,
    /// The callback raised KeyboardInterrupt or SystemExit: it propagates out of the loop.
    Propagate(PyErr),
}

/// Runs `handle` as asyncio's `Handle._run` does: `context.run(callback, *args)`; an
/// exception other than KeyboardInterrupt/SystemExit goes to the loop's exception handler
/// (through `loop._callback_error`, which builds asyncio's context dict).
/// Always inlined into its one caller, the run loop's batch (callgrind: outlined, it costs
/// about 20 instructions more per callback).
#[inline(always)]
pub fn run_handle(
    py: Python<'_>,
    loop_: &Bound<'_, PyAny>,
    handle: &Bound<'_, PyAny>,
) -> PyResult<RunOutcome> {
    // SAFETY: a live object's type pointer is always readable.
    let tp = unsafe { ffi::Py_TYPE(handle.as_ptr()) };
    if tp == THREADSAFE_HANDLE_TYPE_PTR.load(std::sync::atomic::Ordering::Relaxed) {
        return run_threadsafe_handle(py, loop_, handle);
    }
    run_unlocked(py, loop_, handle)
}

/// A `_ThreadSafeHandle`'s `_run`: under its lock, and only if it was not cancelled while the
/// lock was being taken.
#[cold]
#[inline(never)]
fn run_threadsafe_handle(
    py: Python<'_>,
    loop_: &Bound<'_, PyAny>,
    handle: &Bound<'_, PyAny>,
) -> PyResult<RunOutcome> {
    let Some(lock) = threadsafe_lock(py, handle) else {
        return run_unlocked(py, loop_, handle);
    };
    lock.call_method0(pyo3::intern!(py, "acquire"))?;
    // SAFETY: `handle` is one of our `_ThreadSafeHandle`s, a live `asyncio.Handle`.
    let outcome = if unsafe { is_cancelled(handle.as_ptr()) } {
        Ok(RunOutcome::Done)
    } else {
        run_unlocked(py, loop_, handle)
    };
    let released = lock.call_method0(pyo3::intern!(py, "release"));
    match (outcome, released) {
        (Ok(outcome), Ok(_)) => Ok(outcome),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// The `_lock` slot of one of our `_ThreadSafeHandle`s (None if it was never set, as for an
/// instance made with `__new__` alone).
fn threadsafe_lock<'py>(py: Python<'py>, handle: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let offset = *LOCK_OFFSET.get()?;
    // SAFETY: callers pass instances of our `_ThreadSafeHandle` class, which has the `_lock`
    // slot at `offset`; the borrowed value becomes a strong reference at once.
    unsafe {
        let lock = get_slot(handle.as_ptr(), offset);
        (!lock.is_null()).then(|| Bound::from_borrowed_ptr(py, lock))
    }
}

/// The body of [`run_handle`], without the lock of a `_ThreadSafeHandle`.
#[inline(always)]
fn run_unlocked(
    py: Python<'_>,
    loop_: &Bound<'_, PyAny>,
    handle: &Bound<'_, PyAny>,
) -> PyResult<RunOutcome> {
    let l = layout();
    let h = handle.as_ptr();
    // SAFETY: handles in the ready queue are `asyncio.Handle` instances (checked when they are
    // queued). We take strong references to callback, args and context before the call,
    // because the callback may cancel its own handle, which clears those slots.
    let result = unsafe {
        let cb = get_slot(h, l.callback);
        let args = get_slot(h, l.args);
        let ctx = get_slot(h, l.context);
        if cb.is_null() || args.is_null() || ctx.is_null() || ffi::PyTuple_Check(args) == 0 {
            // Not built by asyncio's constructor nor by us: let asyncio's own `_run` decide.
            handle.call_method0("_run")?;
            return Ok(RunOutcome::Done);
        }
        let cb = Bound::from_borrowed_ptr(py, cb);
        let args = Bound::from_borrowed_ptr(py, args);
        let ctx = Bound::from_borrowed_ptr(py, ctx);
        let res = if ffi::PyContext_Enter(ctx.as_ptr()) == 0 {
            // `callback(*args)` through vectorcall, passing the tuple's item array as is.
            let tuple = args.as_ptr() as *mut ffi::PyTupleObject;
            let nargs = ffi::PyTuple_GET_SIZE(args.as_ptr()) as usize;
            let items = (*tuple).ob_item.as_ptr();
            let r = ffi::PyObject_Vectorcall(cb.as_ptr(), items, nargs, ptr::null_mut());
            if ffi::PyContext_Exit(ctx.as_ptr()) != 0 && !r.is_null() {
                ffi::Py_DECREF(r);
                ptr::null_mut()
            } else {
                r
            }
        } else {
            ptr::null_mut()
        };
        if res.is_null() {
            Err(PyErr::fetch(py))
        } else {
            ffi::Py_DECREF(res);
            Ok(())
        }
    };
    match result {
        Ok(()) => Ok(RunOutcome::Done),
        Err(err) => {
            if err.is_instance_of::<PyKeyboardInterrupt>(py)
                || err.is_instance_of::<PySystemExit>(py)
            {
                return Ok(RunOutcome::Propagate(err));
            }
            loop_.call_method1(
                pyo3::intern!(py, "_callback_error"),
                (handle, err.value(py)),
            )?;
            Ok(RunOutcome::Done)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The native `cancel` methods.

/// asyncio's `Handle.cancel` (and `TimerHandle.cancel` when `timer`): mark cancelled, tell
/// the loop if a scheduled timer left its live set, keep a repr in debug mode, and drop the
/// callback and its arguments so they can be freed early.
fn cancel_impl(py: Python<'_>, slf: &Bound<'_, PyAny>, timer: bool) -> PyResult<()> {
    let l = layout();
    let h = slf.as_ptr();
    // SAFETY: `slf` is an instance of our handle subclasses (the method descriptor checks the
    // receiver's type), so it has asyncio's layout.
    unsafe {
        if get_slot(h, l.cancelled) == ffi::Py_True() {
            return Ok(());
        }
        let loop_ptr = get_slot(h, l.loop_);
        let loop_ = if loop_ptr.is_null() {
            None
        } else {
            Some(Bound::from_borrowed_ptr(py, loop_ptr))
        };
        let native = loop_.as_ref().and_then(|lp| lp.cast::<LoopCore>().ok());
        if timer {
            match (&native, &loop_) {
                (Some(core), _) => {
                    if get_slot(h, l.scheduled) == ffi::Py_True() {
                        core.get().note_timer_cancelled(py);
                    }
                }
                (None, Some(lp)) => {
                    lp.call_method1(pyo3::intern!(py, "_timer_handle_cancelled"), (slf,))?;
                }
                (None, None) => {}
            }
        }
        set_slot(h, l.cancelled, py_bool(true));
        let debug = match (&native, &loop_) {
            (Some(core), _) => core.get().debug_enabled(),
            (None, Some(lp)) => lp
                .call_method0(pyo3::intern!(py, "get_debug"))?
                .is_truthy()?,
            (None, None) => false,
        };
        if debug {
            let r = slf.repr()?;
            set_slot(h, l.repr, r.into_ptr());
        }
        set_slot(h, l.callback, new_ref(ffi::Py_None()));
        set_slot(h, l.args, new_ref(ffi::Py_None()));
    }
    Ok(())
}

/// The C body shared by both `cancel` methods.
fn cancel_entry(slf: *mut ffi::PyObject, timer: bool) -> *mut ffi::PyObject {
    guard(move |py| {
        // SAFETY: CPython passes a live receiver.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        cancel_impl(py, &slf, timer)?;
        // SAFETY: `None` is a static object; taking a reference is valid with the GIL held.
        Ok(new_ref(unsafe { ffi::Py_None() }))
    })
}

unsafe extern "C" fn handle_cancel(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    cancel_entry(slf, false)
}

/// `_ThreadSafeHandle.cancel`: under the handle's lock, so it waits for a running callback.
unsafe extern "C" fn threadsafe_handle_cancel(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guard(move |py| {
        // SAFETY: CPython passes a live receiver, an instance of our `_ThreadSafeHandle` (the
        // method descriptor checks its type).
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        match threadsafe_lock(py, &slf) {
            Some(lock) => {
                lock.call_method0(pyo3::intern!(py, "acquire"))?;
                let cancelled = cancel_impl(py, &slf, false);
                lock.call_method0(pyo3::intern!(py, "release"))?;
                cancelled?;
            }
            None => cancel_impl(py, &slf, false)?,
        }
        // SAFETY: `None` is a static object; taking a reference is valid with the GIL held.
        Ok(new_ref(unsafe { ffi::Py_None() }))
    })
}

unsafe extern "C" fn timer_handle_cancel(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    cancel_entry(slf, true)
}

unsafe extern "C" fn handle_get_context(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the method descriptor guarantees `slf` is one of our handle types; the slot
    // holds the context (set at creation, never cleared), returned as a new reference.
    unsafe {
        let ctx = get_slot(slf, layout().context);
        if ctx.is_null() {
            new_ref(ffi::Py_None())
        } else {
            new_ref(ctx)
        }
    }
}

const GET_CONTEXT_DOC: &CStr = c"Return the contextvars.Context the callback runs in.";

const CANCEL_DOC: &CStr =
    c"Cancel the callback. If the callback has already run or been cancelled, do nothing.";

/// Installs a METH_NOARGS method implemented in Rust on one of the handle classes.
fn install_method(
    py: Python<'_>,
    cls: &Bound<'_, PyType>,
    name: &'static CStr,
    func: unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject,
    doc: &'static CStr,
) -> PyResult<()> {
    let meth = ffi::PyMethodDefPointer { PyCFunction: func };
    cmethods::install(py, cls, name, meth, ffi::METH_NOARGS, doc)
}

// ---------------------------------------------------------------------------------------
// Deallocation.
//
// Every callback frees one handle, and CPython's generic deallocator for classes with
// `__slots__` (`subtype_dealloc`) walks the class hierarchy to find the slots, checks for
// finalizers and enters the "trashcan" that bounds recursion: about 300 instructions where
// the work is a few reference drops. Our two classes have a fixed layout and no finalizer, so
// they get a direct deallocator. Recursion stays bounded by a trashcan of our own: past a
// small nesting depth (a handle whose arguments hold the last reference to another handle,
// and so on) an object is parked on a list and freed once the outermost deallocation
// finishes, one level deep.

/// Slot offsets to clear, per class: 7 for `Handle`, 9 for `TimerHandle`, 8 for
/// `_ThreadSafeHandle`.
static HANDLE_SLOTS: OnceLock<Vec<isize>> = OnceLock::new();
static TIMER_SLOTS: OnceLock<Vec<isize>> = OnceLock::new();
static THREADSAFE_SLOTS: OnceLock<Vec<isize>> = OnceLock::new();
/// The deallocator's own trashcan: how deep it is nested right now, and the handles whose
/// deallocation was postponed to bound that depth.
struct DeallocState {
    depth: u32,
    deferred: Vec<*mut ffi::PyObject>,
}
static DEALLOC: GilStatic<DeallocState> = GilStatic::new(DeallocState {
    depth: 0,
    deferred: Vec::new(),
});
const MAX_DEALLOC_DEPTH: u32 = 32;

unsafe extern "C" fn handle_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_dealloc with the GIL held on an object whose refcount reached
    // zero, and only for instances of our (final) handle classes.
    unsafe { dealloc_entry(obj) }
}

unsafe fn slots_of(obj: *mut ffi::PyObject) -> &'static [isize] {
    // SAFETY: `obj` is a live instance of one of our handle classes.
    let tp = unsafe { ffi::Py_TYPE(obj) };
    let slots = if tp == TIMER_HANDLE_TYPE_PTR.load(std::sync::atomic::Ordering::Relaxed) {
        &TIMER_SLOTS
    } else if tp == THREADSAFE_HANDLE_TYPE_PTR.load(std::sync::atomic::Ordering::Relaxed) {
        &THREADSAFE_SLOTS
    } else {
        &HANDLE_SLOTS
    };
    slots
        .get()
        .expect("handle types are initialised before any handle exists")
}

static TIMER_HANDLE_TYPE_PTR: std::sync::atomic::AtomicPtr<ffi::PyTypeObject> =
    std::sync::atomic::AtomicPtr::new(ptr::null_mut());
static THREADSAFE_HANDLE_TYPE_PTR: std::sync::atomic::AtomicPtr<ffi::PyTypeObject> =
    std::sync::atomic::AtomicPtr::new(ptr::null_mut());

/// The handle classes' deallocator body, with a depth limit (deeper frees are deferred).
///
/// # Safety
/// `obj` is an instance of one of our two handle classes whose refcount has dropped to zero;
/// the GIL is held.
unsafe fn dealloc_entry(obj: *mut ffi::PyObject) {
    // SAFETY: see `handle_dealloc`. Each `DEALLOC.with` closure only updates Rust values; the
    // frees, which can run Python code and nest, happen between them.
    unsafe {
        // Untracked first, as CPython requires before the object's memory goes.
        ffi::PyObject_GC_UnTrack(obj.cast());
        let postponed = DEALLOC.with(|s| {
            if s.depth >= MAX_DEALLOC_DEPTH {
                s.deferred.push(obj);
                true
            } else {
                s.depth += 1;
                false
            }
        });
        if postponed {
            return;
        }
        free_handle(obj);
        let outermost = DEALLOC.with(|s| {
            s.depth -= 1;
            s.depth == 0
        });
        if !outermost {
            return;
        }
        while let Some(next) = DEALLOC.with(|s| {
            let next = s.deferred.pop();
            if next.is_some() {
                s.depth += 1;
            }
            next
        }) {
            free_handle(next);
            DEALLOC.with(|s| s.depth -= 1);
        }
    }
}

/// What `subtype_dealloc` does for a class with slots, a weakref slot, no `__dict__` and no
/// finalizer: clear weak references, drop every slot, free the memory (or keep it on the free
/// list), drop the type.
///
/// # Safety
/// `obj` is an instance of one of our handle classes with a zero refcount, already untracked
/// by the collector; the GIL is held.
unsafe fn free_handle(obj: *mut ffi::PyObject) {
    // SAFETY: `obj` has a zero refcount, is untracked and is an instance of our classes.
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        let weaklist = (obj as *mut u8)
            .offset((*tp).tp_weaklistoffset)
            .cast::<*mut ffi::PyObject>();
        if !(*weaklist).is_null() {
            ffi::PyObject_ClearWeakRefs(obj);
        }
        for &off in slots_of(obj) {
            let p = (obj as *mut u8).offset(off).cast::<*mut ffi::PyObject>();
            let old = *p;
            *p = ptr::null_mut();
            ffi::Py_XDECREF(old);
        }
        // Every slot is NULL now: the memory can serve the next handle of this class.
        if !freelist_for(tp).push(obj) {
            let free = (*tp).tp_free.expect("GC types have tp_free");
            free(obj.cast());
        }
        // Instances of heap types own a reference to their type.
        ffi::Py_DECREF(tp.cast());
    }
}

/// Gives the handle classes the direct deallocator and makes them final (a subclass would
/// add slots this deallocator does not know).
fn install_dealloc(
    handle_cls: &Bound<'_, PyType>,
    timer_cls: &Bound<'_, PyType>,
    threadsafe_cls: Option<&Bound<'_, PyType>>,
) {
    let l = layout();
    let common = vec![
        l.callback,
        l.args,
        l.cancelled,
        l.loop_,
        l.source_traceback,
        l.repr,
        l.context,
    ];
    let mut timer = common.clone();
    timer.extend([l.scheduled, l.when]);
    if let (Some(cls), Some(&lock)) = (threadsafe_cls, LOCK_OFFSET.get()) {
        let mut threadsafe = common.clone();
        threadsafe.push(lock);
        let _ = THREADSAFE_SLOTS.set(threadsafe);
        THREADSAFE_HANDLE_TYPE_PTR.store(cls.as_type_ptr(), std::sync::atomic::Ordering::Relaxed);
    }
    let _ = HANDLE_SLOTS.set(common);
    let _ = TIMER_SLOTS.set(timer);
    TIMER_HANDLE_TYPE_PTR.store(
        timer_cls.as_type_ptr(),
        std::sync::atomic::Ordering::Relaxed,
    );
    for cls in [Some(handle_cls), Some(timer_cls), threadsafe_cls]
        .into_iter()
        .flatten()
    {
        let tp = cls.as_type_ptr();
        // SAFETY: the classes were created a moment ago by `type()` and nothing has used
        // them; changing their flags and deallocator before the first instance exists is what
        // a C extension does when it builds a type. Finalizers would need the generic path,
        // so the direct deallocator is only installed when there are none.
        unsafe {
            if (*tp).tp_finalize.is_some() || (*tp).tp_del.is_some() {
                continue;
            }
            (*tp).tp_flags &= !ffi::Py_TPFLAGS_BASETYPE;
            (*tp).tp_dealloc = Some(handle_dealloc);
        }
    }
}

/// Reads the offset of slot `name` from `cls.__dict__[name]`, a member descriptor.
fn slot_offset(py: Python<'_>, cls: &Bound<'_, PyType>, name: &str) -> PyResult<isize> {
    let member_type = py.import("types")?.getattr("MemberDescriptorType")?;
    let dict = cls.getattr("__dict__")?;
    let descr = dict.get_item(name)?;
    if !descr.is_instance(&member_type)? {
        return Err(PyRuntimeError::new_err(format!(
            "asyncio.{}.{name} is not a slot; ferroloop cannot lay out handles",
            cls.name()?
        )));
    }
    // SAFETY: `descr` is a `member_descriptor`, i.e. a `PyMemberDescrObject`, whose
    // `d_member` points at the class's static member table entry.
    let (offset, type_code) = unsafe {
        let m = descr.as_ptr() as *mut ffi::PyMemberDescrObject;
        let def = (*m).d_member;
        ((*def).offset, (*def).type_code)
    };
    if type_code != ffi::Py_T_OBJECT_EX {
        return Err(PyRuntimeError::new_err(format!(
            "asyncio handle slot {name} has an unexpected member type {type_code}"
        )));
    }
    Ok(offset)
}

/// Creates `ferroloop.Handle` / `ferroloop.TimerHandle`, reads asyncio's slot layout and
/// checks it against a handle built by asyncio's own constructor.
pub fn init(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    let events = py.import("asyncio.events")?;
    let base_handle = events.getattr("Handle")?.cast_into::<PyType>()?;
    let base_timer = events.getattr("TimerHandle")?.cast_into::<PyType>()?;

    let layout = Layout {
        callback: slot_offset(py, &base_handle, "_callback")?,
        args: slot_offset(py, &base_handle, "_args")?,
        cancelled: slot_offset(py, &base_handle, "_cancelled")?,
        loop_: slot_offset(py, &base_handle, "_loop")?,
        source_traceback: slot_offset(py, &base_handle, "_source_traceback")?,
        repr: slot_offset(py, &base_handle, "_repr")?,
        context: slot_offset(py, &base_handle, "_context")?,
        scheduled: slot_offset(py, &base_timer, "_scheduled")?,
        when: slot_offset(py, &base_timer, "_when")?,
    };
    let _ = LAYOUT.set(layout);

    fn make<'py>(
        py: Python<'py>,
        name: &str,
        base: &Bound<'py, PyType>,
        doc: &str,
    ) -> PyResult<Bound<'py, PyType>> {
        let ns = PyDict::new(py);
        ns.set_item("__slots__", PyTuple::empty(py))?;
        ns.set_item("__module__", "ferroloop")?;
        ns.set_item("__doc__", doc)?;
        let builtins = py.import("builtins")?;
        let cls = builtins
            .getattr("type")?
            .call1((name, (base,), ns))?
            .cast_into::<PyType>()?;
        Ok(cls)
    }
    let handle_cls = make(
        py,
        "Handle",
        &base_handle,
        "asyncio.Handle as ferroloop makes it: created natively, cancelled natively.",
    )?;
    let timer_cls = make(
        py,
        "TimerHandle",
        &base_timer,
        "asyncio.TimerHandle as ferroloop makes it: created natively, cancelled natively.",
    )?;
    // asyncio 3.14's `call_soon_threadsafe` handle (see the module comment).
    let threadsafe_cls = match events.getattr_opt("_ThreadSafeHandle")? {
        Some(base) => {
            let base = base.cast_into::<PyType>()?;
            let lock = slot_offset(py, &base, "_lock")?;
            let cls = make(
                py,
                "_ThreadSafeHandle",
                &base,
                "asyncio's _ThreadSafeHandle (call_soon_threadsafe's handle) as ferroloop makes \
                 it: created natively, cancelled natively.",
            )?;
            let _ = LOCK_OFFSET.set(lock);
            let _ = RLOCK_TYPE.set(py, py.import("_thread")?.getattr("RLock")?.unbind());
            Some(cls)
        }
        None => None,
    };
    install_method(py, &handle_cls, c"cancel", handle_cancel, CANCEL_DOC)?;
    install_method(py, &timer_cls, c"cancel", timer_handle_cancel, CANCEL_DOC)?;
    if let Some(cls) = &threadsafe_cls {
        install_method(py, cls, c"cancel", threadsafe_handle_cancel, CANCEL_DOC)?;
    }
    // asyncio has Handle.get_context() from 3.12 on; ferroloop's handles have it everywhere.
    for cls in [Some(&handle_cls), Some(&timer_cls), threadsafe_cls.as_ref()]
        .into_iter()
        .flatten()
    {
        install_method(py, cls, c"get_context", handle_get_context, GET_CONTEXT_DOC)?;
    }
    install_dealloc(&handle_cls, &timer_cls, threadsafe_cls.as_ref());
    let _ = HANDLE_TYPE.set(py, handle_cls.clone().unbind());
    let _ = TIMER_HANDLE_TYPE.set(py, timer_cls.clone().unbind());
    m.add("Handle", handle_cls)?;
    m.add("TimerHandle", timer_cls)?;
    if let Some(cls) = threadsafe_cls {
        let _ = THREADSAFE_HANDLE_TYPE.set(py, cls.clone().unbind());
        m.add("_ThreadSafeHandle", cls)?;
    }
    check_layout(py)
}

/// Builds a handle natively and reads it back through asyncio's descriptors: if CPython ever
/// lays the slots out differently, import fails loudly instead of corrupting memory.
fn check_layout(py: Python<'_>) -> PyResult<()> {
    let cb = py.import("builtins")?.getattr("print")?;
    let args = PyTuple::new(py, [1, 2])?;
    let loop_ = py.import("builtins")?.getattr("object")?.call0()?;
    // SAFETY: PyContext_New returns a new reference or NULL with an exception set.
    let ctx = unsafe {
        let c = ffi::PyContext_New();
        if c.is_null() {
            return Err(PyErr::fetch(py));
        }
        Bound::from_owned_ptr(py, c)
    };
    let when = 12.5f64.into_pyobject(py)?.into_any();
    let h = new_timer_handle(py, &when, &cb, &args, &loop_, ctx.clone())?;
    let ok = h.getattr("_callback")?.is(&cb)
        && h.getattr("_args")?.is(&args)
        && h.getattr("_loop")?.is(&loop_)
        && h.getattr("_context")?.is(&ctx)
        && h.getattr("_when")?.is(&when)
        && h.getattr("_cancelled")?
            .is(pyo3::types::PyBool::new(py, false))
        && h.getattr("_scheduled")?
            .is(pyo3::types::PyBool::new(py, true))
        && h.getattr("_repr")?.is_none()
        && h.getattr("_source_traceback")?.is_none();
    if !ok {
        return Err(PyRuntimeError::new_err(
            "asyncio's handle layout is not what ferroloop expects",
        ));
    }
    Ok(())
}
