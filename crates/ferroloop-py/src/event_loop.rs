//! `LoopCore`: the native half of `ferroloop.Loop` (asyncio's `BaseEventLoop` hot paths).
//!
//! Everything that runs once per callback lives here: `call_soon`, `call_later`, `call_at`,
//! `call_soon_threadsafe`, `time`, and the run loop itself (`_run_once`, one iteration of
//! asyncio's algorithm; `_run_forever_native`, the loop around it). The Python class
//! `ferroloop.Loop` subclasses this type and adds the cold paths: lifecycle, executors,
//! exception handling, debug-mode scheduling.
//!
//! One iteration, as asyncio's `BaseEventLoop._run_once`:
//! 1. drop cancelled timers (lazily; rebuild the heap when they dominate);
//! 2. poll with the GIL released: timeout 0 if callbacks are ready or the loop is stopping,
//!    else until the earliest timer, else forever. With no file descriptor registered (only
//!    the loop's own waker and signal fd), a zero-timeout poll can report nothing a callback
//!    could observe, so it is skipped;
//! 3. run signal handlers (Ctrl+C raises KeyboardInterrupt here);
//! 4. move due timers to the ready queue, earliest first, FIFO among equal deadlines;
//! 5. run exactly the callbacks that were ready when the step began.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyTuple};

use ferroloop_core::timers::Cancellable;
use ferroloop_core::{Events, Interest, Mode, Poller, ReadyQueue, TimerHeap, Token};

use crate::gil_cell::GilCell;
use crate::handles::{self, Queued, RunOutcome};
use crate::introspect::{Counters, Detector, Watch};
use crate::transports::TransportCore;
use crate::watchers::{Direction, Watchers};

/// asyncio's cap on one poll's timeout (`MAXIMUM_SELECT_TIMEOUT`).
const MAX_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;
/// Iterations without a poll between two checks for pending signal handlers.
const SIGNAL_CHECK_INTERVAL: u32 = 16;
/// Token of the signal wake-up socket (internal, like the waker).
const SIGNAL_TOKEN: Token = Token(u64::MAX - 1);
/// `LoopCore::clock` bits: `loop.time` was replaced (call it), or the clock is virtual.
const CLOCK_OVERRIDDEN: u8 = 1;
const CLOCK_VIRTUAL: u8 = 2;

/// A timer handle in the heap. The heap reads the cancel flag straight from the handle.
struct TimerEntry(Queued);

impl Cancellable for TimerEntry {
    #[inline]
    fn is_cancelled(&self) -> bool {
        // SAFETY: entries are `asyncio.TimerHandle` instances, and the heap is only touched
        // with the GIL held (it lives in a `GilCell`).
        unsafe { handles::is_cancelled(self.0.as_ptr()) }
    }
}

pub(crate) struct State {
    pub(crate) ready: ReadyQueue<Queued>,
    timers: TimerHeap<TimerEntry>,
    /// fd watchers (`add_reader` / `add_writer`).
    pub(crate) watchers: Watchers,
    /// Transports with writes queued in this batch, flushed after it (`transports.rs`).
    flush: Vec<Py<TransportCore>>,
    /// The previous batch's list, emptied, kept for its capacity (no allocation per batch).
    flush_spare: Vec<Py<TransportCore>>,
    /// The signal wake-up fd the loop watches while it runs (`signal.set_wakeup_fd`).
    signal_fd: Option<i32>,
    /// `loop.stats()` counters (introspect.rs).
    pub(crate) counters: Counters,
}

#[pyclass(subclass, frozen, module = "ferroloop._native", name = "LoopCore")]
pub struct LoopCore {
    pub(crate) state: GilCell<State>,
    /// Owned by the loop thread; taken out while the GIL is released for the poll.
    events: GilCell<Option<Events>>,
    pub(crate) poller: Poller,
    stopping: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) running: AtomicBool,
    debug: AtomicBool,
    /// Where "now" comes from: 0 = `CLOCK_MONOTONIC`; `CLOCK_OVERRIDDEN` = `loop.time` was
    /// replaced (an instance attribute or a subclass): call it; `CLOCK_VIRTUAL` = the virtual
    /// clock (`virtual_now`), which jumps to the next timer when the loop is idle.
    clock: AtomicU8,
    /// Virtual clock: the current time (`f64` bits).
    virtual_now: AtomicU64,
    /// Virtual clock: real seconds the loop waits for I/O before it jumps (`f64` bits).
    autojump_threshold: AtomicU64,
    /// Virtual clock: jumps are held while this is not zero (executor jobs in flight).
    clock_holds: AtomicU64,
    /// Blocking detector: what the loop thread publishes per callback (introspect.rs).
    watch: Arc<Watch>,
    /// The blocking detector is on (read once per batch).
    detect: AtomicBool,
    /// The blocking detector's watchdog thread, while it is on.
    detector: GilCell<Option<Detector>>,
    /// File descriptors registered by users of the loop (watchers, transports). While there
    /// are none, a zero-timeout poll is skipped.
    pub(crate) io_registrations: AtomicU64,
    /// A task factory is set: `create_task` takes the Python path.
    has_task_factory: AtomicBool,
    /// Iterations that skipped the poll (see `poll_once`), for pacing signal checks.
    skipped_polls: std::sync::atomic::AtomicU32,
    /// `add_signal_handler` handlers exist: the signal numbers read from the wake-up socket
    /// go to `_process_self_data`, and the poll is never skipped (it is what reads them).
    signal_dispatch: AtomicBool,
}

impl LoopCore {
    #[inline]
    pub fn debug_enabled(&self) -> bool {
        self.debug.load(Relaxed)
    }

    pub fn note_timer_cancelled(&self, py: Python<'_>) {
        let mut st = self.state.borrow_mut(py);
        st.counters.timers_cancelled += 1;
        st.timers.note_cancelled();
    }

    #[inline]
    pub(crate) fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            Err(PyRuntimeError::new_err("Event loop is closed"))
        } else {
            Ok(())
        }
    }

    /// `self.time()`, honouring a patched `time`.
    #[inline]
    fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        match slf.get().clock.load(Relaxed) {
            0 => Ok(ferroloop_core::monotonic()),
            CLOCK_VIRTUAL => Ok(slf.get().virtual_time()),
            _ => slf
                .call_method0(pyo3::intern!(slf.py(), "time"))?
                .extract::<f64>(),
        }
    }

    #[inline]
    fn virtual_time(&self) -> f64 {
        f64::from_bits(self.virtual_now.load(Relaxed))
    }

    /// Records the running thread for the blocking detector's stack captures.
    fn note_loop_thread(&self) {
        // SAFETY: PyThread_get_thread_ident has no preconditions (it is pthread_self).
        let ident = unsafe { ffi::PyThread_get_thread_ident() };
        self.watch.set_thread_ident(ident as u64);
    }

    /// Puts a transport on the list flushed after the current batch.
    pub(crate) fn push_flush(&self, py: Python<'_>, transport: Py<TransportCore>) {
        self.state.borrow_mut(py).flush.push(transport);
    }

    /// `call_soon(callback, *args)` from native code (a copy of the current context).
    pub(crate) fn call_soon_native(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        Self::schedule_soon(slf, callback, args, None, "call_soon").map(|_| ())
    }

    /// Step 10: one vectored write per transport that was written to during the batch.
    fn flush_transports(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            let mut batch = {
                let mut st = self.state.borrow_mut(py);
                if st.flush.is_empty() {
                    return Ok(());
                }
                let spare = std::mem::take(&mut st.flush_spare);
                std::mem::replace(&mut st.flush, spare)
            };
            let mut result = Ok(());
            for t in &batch {
                if result.is_ok() {
                    result = TransportCore::flush_after_batch(t.bind(py));
                }
            }
            // Dropping the references may run Python code (a deallocator): no borrow held.
            batch.clear();
            self.state.borrow_mut(py).flush_spare = batch;
            result?;
        }
    }

    /// Queues a handle, unless the loop is closed ("Event loop is closed").
    ///
    /// The scheduling methods check `closed` on entry, but they may run Python code before
    /// the handle is queued (debug mode's checks; a garbage collection set off by an
    /// allocation), during which another thread can switch in and close the loop. `close()`
    /// empties the queues once; a handle queued after that would never run and, hidden from
    /// the cycle collector (§5.6) while it references the loop, would keep the loop alive
    /// forever. `closed` is set with the GIL held before the queues are emptied, and nothing
    /// between this check and the push can release the GIL, so no handle gets past it.
    #[inline]
    fn push_ready(
        &self,
        py: Python<'_>,
        handle: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.check_closed()?;
        self.state
            .borrow_mut(py)
            .ready
            .push(Queued::new(handle, context));
        Ok(())
    }

    /// Schedules a timer handle, unless the loop is closed (see [`Self::push_ready`]).
    #[inline]
    fn push_timer(
        &self,
        py: Python<'_>,
        when: f64,
        handle: &Bound<'_, PyAny>,
        context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.check_closed()?;
        let mut st = self.state.borrow_mut(py);
        st.counters.timers_scheduled += 1;
        st.timers
            .push(when, TimerEntry(Queued::new(handle, context)));
        Ok(())
    }

    /// The context a new handle runs in, and whether the loop made it (a copy of the current
    /// context, for this handle alone).
    #[inline]
    fn context_or_copy<'py>(
        py: Python<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        match context {
            Some(ctx) => Ok((ctx, false)),
            None => {
                // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an
                // exception set; the GIL is held.
                unsafe {
                    let c = ffi::PyContext_CopyCurrent();
                    if c.is_null() {
                        Err(PyErr::fetch(py))
                    } else {
                        Ok((Bound::from_owned_ptr(py, c), true))
                    }
                }
            }
        }
    }

    /// `call_at` once `when` is known as an object and a float.
    fn schedule_timer<'py>(
        slf: &Bound<'py, Self>,
        when_obj: &Bound<'py, PyAny>,
        when: f64,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.debug_enabled() {
            let ctx = context.map(|c| c.unbind()).unwrap_or_else(|| py.None());
            return slf.call_method1(
                pyo3::intern!(py, "_call_at_debug"),
                (when_obj, callback, args, ctx),
            );
        }
        let (ctx, fresh) = Self::context_or_copy(py, context)?;
        let fresh = fresh.then(|| ctx.clone());
        let handle = handles::new_timer_handle(py, when_obj, callback, args, slf.as_any(), ctx)?;
        this.push_timer(py, when, &handle, fresh.as_ref())?;
        Ok(handle)
    }

    // The scheduling methods. Python reaches them through the vectorcall entry points in
    // `fastcall.rs`, installed on the class at import.

    /// `call_soon` and `call_soon_threadsafe` (`method` names the caller for the debug path).
    fn schedule_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
        method: &'static str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.debug_enabled() {
            let ctx = context.map(|c| c.unbind()).unwrap_or_else(|| py.None());
            return slf.call_method1(
                pyo3::intern!(py, "_call_soon_debug"),
                (callback, args, ctx, method),
            );
        }
        let (ctx, fresh) = Self::context_or_copy(py, context)?;
        let fresh = fresh.then(|| ctx.clone());
        let handle = if method == "call_soon_threadsafe" {
            handles::new_threadsafe_handle(py, callback, args, slf.as_any(), ctx)?
        } else {
            handles::new_handle(py, callback, args, slf.as_any(), ctx)?
        };
        this.push_ready(py, &handle, fresh.as_ref())?;
        Ok(handle)
    }

    /// Schedule a coroutine on the loop and return its Task (`create_task`, installed by
    /// `fastcall.rs`, which parses `coro, *, name=None, context=None, **kwargs`).
    ///
    /// Other keyword arguments (`eager_start`, or whatever a task factory takes) are accepted
    /// from CPython 3.13.3 on, as asyncio's `create_task` does; they, a task factory and
    /// debug mode take the Python path (`_create_task_slow`), which has each version's rules.
    pub fn create_task_entry<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        name: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if let Some(kw) = &kwargs {
            if py.version_info() < (3, 13, 3) {
                // asyncio's own signature before 3.13.3 has no **kwargs.
                let key = kw.keys().get_item(0)?;
                let cls = slf.get_type().name()?;
                return Err(PyTypeError::new_err(format!(
                    "{cls}.create_task() got an unexpected keyword argument '{key}'"
                )));
            }
        }
        this.check_closed()?;
        let none = py.None().into_bound(py);
        let name = name.unwrap_or_else(|| none.clone());
        let context = context.unwrap_or(none);
        if kwargs.is_some() || this.debug_enabled() || this.has_task_factory.load(Relaxed) {
            return slf.call_method1(
                pyo3::intern!(py, "_create_task_slow"),
                (coro, name, context, kwargs),
            );
        }
        let cls = tasks_module(py)?.getattr(pyo3::intern!(py, "Task"))?;
        let kwnames = kwnames(py, &TASK_KWNAMES, &["loop", "name", "context"])?;
        let args = [coro.as_ptr(), slf.as_ptr(), name.as_ptr(), context.as_ptr()];
        vectorcall(py, &cls, &args, 1, kwnames)
    }

    /// Arrange for `callback(*args)` to be called soon, in FIFO order.
    pub fn call_soon_entry<'py>(
        slf: &Bound<'py, Self>,
        _prefix: Option<&Bound<'py, PyAny>>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::schedule_soon(slf, callback, args, context, "call_soon")
    }

    /// Like `call_soon`, but callable from any thread: wakes the loop if it is sleeping.
    pub fn call_soon_threadsafe_entry<'py>(
        slf: &Bound<'py, Self>,
        _prefix: Option<&Bound<'py, PyAny>>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let handle = Self::schedule_soon(slf, callback, args, context, "call_soon_threadsafe")?;
        slf.get().poller.waker().wake();
        Ok(handle)
    }

    /// Arrange for `callback(*args)` to be called after `delay` seconds.
    pub fn call_later_entry<'py>(
        slf: &Bound<'py, Self>,
        delay: Option<&Bound<'py, PyAny>>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let delay = delay.expect("parsed by fastcall");
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let this = slf.get();
        let clock = this.clock.load(Relaxed);
        if clock == 0 || clock == CLOCK_VIRTUAL {
            let fast = if let Ok(f) = delay.cast::<PyFloat>() {
                Some(f.value())
            } else if delay.is_exact_instance_of::<pyo3::types::PyInt>() {
                delay.extract::<f64>().ok()
            } else {
                None
            };
            if let Some(d) = fast {
                let now = if clock == 0 {
                    ferroloop_core::monotonic()
                } else {
                    this.virtual_time()
                };
                let when = now + d;
                let when_obj = PyFloat::new(py, when).into_any();
                return Self::schedule_timer(slf, &when_obj, when, callback, args, context);
            }
        }
        // General case: `self.time() + delay` with Python's arithmetic.
        let now = slf.call_method0(pyo3::intern!(py, "time"))?;
        let when_obj = now.add(delay)?;
        let when = when_obj.extract::<f64>()?;
        Self::schedule_timer(slf, &when_obj, when, callback, args, context)
    }

    /// Arrange for `callback(*args)` to be called at loop time `when`.
    pub fn call_at_entry<'py>(
        slf: &Bound<'py, Self>,
        when: Option<&Bound<'py, PyAny>>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let when = when.expect("parsed by fastcall");
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        slf.get().check_closed()?;
        let when_f = when.extract::<f64>()?;
        Self::schedule_timer(slf, when, when_f, callback, args, context)
    }

    /// Checks that `obj` is an `asyncio.Handle` before it enters a native queue.
    fn expect_handle(py: Python<'_>, obj: &Bound<'_, PyAny>, timer: bool) -> PyResult<()> {
        let events = py.import("asyncio.events")?;
        let cls = events.getattr(if timer { "TimerHandle" } else { "Handle" })?;
        if obj.is_instance(&cls)? {
            Ok(())
        } else {
            Err(PyTypeError::new_err(format!(
                "expected an asyncio.{}, got {}",
                if timer { "TimerHandle" } else { "Handle" },
                obj.get_type().name()?
            )))
        }
    }

    /// `_add_reader` / `_add_writer`: a handle for `callback(*args)` in a copy of the
    /// current context (built in Python in debug mode, to record where it was made).
    fn add_io_handle<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        dir: Direction,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let handle = if this.debug_enabled() {
            slf.call_method1(pyo3::intern!(py, "_io_handle_debug"), (callback, args))?
        } else {
            let (ctx, _) = Self::context_or_copy(py, None)?;
            handles::new_handle(py, callback, args, slf.as_any(), ctx)?
        };
        this.add_watcher(py, fd, dir, &handle)?;
        Ok(handle)
    }

    /// Steps 1–2 of an iteration: housekeeping, timeout, poll.
    fn poll_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut removed: Vec<TimerEntry> = Vec::new();
        let (has_ready, next_deadline, signal_fd) = {
            let mut st = this.state.borrow_mut(py);
            st.timers.purge_cancelled(&mut removed);
            (
                !st.ready.is_empty(),
                st.timers.next_deadline(),
                st.signal_fd,
            )
        };
        for entry in &removed {
            // SAFETY: heap entries are timer handles; GIL held.
            unsafe { handles::set_unscheduled(entry.0.as_ptr()) };
        }
        drop(removed);

        let immediate = has_ready || this.stopping.load(Relaxed);
        // Virtual clock: the deadline to jump to if this poll finds nothing to do.
        let mut jump_to = None;
        let timeout = if immediate {
            Some(Duration::ZERO)
        } else {
            match next_deadline {
                Some(deadline) if this.clock.load(Relaxed) == CLOCK_VIRTUAL => {
                    this.virtual_timeout(deadline, &mut jump_to)
                }
                Some(deadline) => {
                    let now = Self::now(slf)?;
                    let secs = (deadline - now).clamp(0.0, MAX_SELECT_TIMEOUT);
                    // NaN cannot reach here (NaN deadlines read as -inf); keep it total anyway.
                    Some(Duration::from_secs_f64(if secs.is_nan() {
                        0.0
                    } else {
                        secs
                    }))
                }
                None => None,
            }
        };

        if timeout == Some(Duration::ZERO)
            && this.io_registrations.load(Relaxed) == 0
            && !this.signal_dispatch.load(Relaxed)
        {
            // Nothing but the loop's own fds is registered: a zero-timeout poll could only
            // drain them. Pending signal handlers run here every few iterations (and at every
            // bytecode boundary of the Python callbacks in between).
            let n = this.skipped_polls.load(Relaxed).wrapping_add(1);
            this.skipped_polls.store(n, Relaxed);
            if let Some(deadline) = jump_to {
                this.jump_if_idle(py, deadline);
            }
            if n % SIGNAL_CHECK_INTERVAL == 0 {
                return py.check_signals();
            }
            return Ok(());
        }

        let mut events = this
            .events
            .borrow_mut(py)
            .take()
            .unwrap_or_else(|| Events::with_capacity(1024));
        let mut timeout = timeout;
        if timeout != Some(Duration::ZERO) {
            this.poller.prepare_sleep();
            // Work queued by another thread between our look at the queue and
            // `prepare_sleep` would be missed; the GIL makes that window empty, and a second
            // look keeps it empty without relying on that.
            if !this.state.borrow_mut(py).ready.is_empty() {
                timeout = Some(Duration::ZERO);
            }
        }
        let poller = &this.poller;
        // Only polls that may sleep are timed, with the coarse clock (two vDSO reads beside a
        // blocking syscall; see `coarse_monotonic_ns`).
        let sleeping = timeout != Some(Duration::ZERO);
        let t0 = if sleeping {
            ferroloop_core::sys::coarse_monotonic_ns()
        } else {
            0
        };
        let res = py.detach(|| poller.poll(&mut events, timeout));

        // Step 2b: readiness to watchers (asyncio's `_process_events`).
        let mut signal_ready = false;
        let mut cancelled = Vec::new();
        {
            let mut st = this.state.borrow_mut(py);
            let State {
                ready,
                watchers,
                counters,
                ..
            } = &mut *st;
            counters.polls += 1;
            if sleeping {
                counters.sleeping_polls += 1;
                counters.poll_ns += ferroloop_core::sys::coarse_monotonic_ns().wrapping_sub(t0);
            }
            for e in events.iter() {
                if e.token == SIGNAL_TOKEN {
                    signal_ready = true;
                } else {
                    counters.io_events += 1;
                    watchers.dispatch(py, &e, ready, &mut cancelled);
                }
            }
        }
        *this.events.borrow_mut(py) = Some(events);
        let mut signums = Vec::new();
        if signal_ready {
            if let Some(fd) = signal_fd {
                drain_fd(
                    fd,
                    this.signal_dispatch.load(Relaxed).then_some(&mut signums),
                );
            }
        }
        for (fd, dir) in cancelled {
            this.remove_watcher_fd(py, fd, dir, None)?;
        }
        if !signums.is_empty() {
            // asyncio's `_process_self_data`: queue the handlers of these signals.
            let data = pyo3::types::PyBytes::new(py, &signums);
            slf.call_method1(pyo3::intern!(py, "_process_self_data"), (data,))?;
        }
        if let (Some(deadline), Ok(())) = (jump_to, &res) {
            this.jump_if_idle(py, deadline);
        }
        Self::after_poll(py, res)
    }

    /// Virtual clock: the poll timeout while timers are pending and nothing is ready. The
    /// clock never moves while the loop waits, so the loop waits (in real time) only for I/O:
    /// `autojump_threshold` seconds, after which the clock jumps to `deadline` if nothing
    /// happened, or indefinitely while jumps are held (an executor job is running) or when the
    /// deadline is infinite.
    fn virtual_timeout(&self, deadline: f64, jump_to: &mut Option<f64>) -> Option<Duration> {
        // NaN deadlines read as -inf: due now.
        if deadline <= self.virtual_time() {
            return Some(Duration::ZERO);
        }
        if deadline == f64::INFINITY || self.clock_holds.load(Relaxed) != 0 {
            return None;
        }
        *jump_to = Some(deadline);
        let wait = f64::from_bits(self.autojump_threshold.load(Relaxed));
        Some(Duration::from_secs_f64(wait.clamp(0.0, MAX_SELECT_TIMEOUT)))
    }

    /// Virtual clock: move to `deadline` unless the poll made something ready.
    fn jump_if_idle(&self, py: Python<'_>, deadline: f64) {
        let mut st = self.state.borrow_mut(py);
        if st.ready.is_empty() && self.clock_holds.load(Relaxed) == 0 {
            if deadline > self.virtual_time() {
                self.virtual_now.store(deadline.to_bits(), Relaxed);
            }
            st.counters.clock_jumps += 1;
        }
    }

    /// Step 9: pops and runs `ntodo` handles. `WATCHED`: publish each callback to the
    /// blocking detector (two variants, so that the loop without it has no per-callback test).
    #[inline(always)]
    fn run_batch<const WATCHED: bool>(slf: &Bound<'_, Self>, ntodo: usize) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let watch = &*this.watch;
        for _ in 0..ntodo {
            let Some(queued) = this.state.borrow_mut(py).ready.pop() else {
                // Only if a callback emptied the queue (close() from a callback).
                break;
            };
            // SAFETY: everything in the ready queue is an asyncio.Handle.
            if unsafe { handles::is_cancelled(queued.as_ptr()) } {
                this.state.borrow_mut(py).counters.skipped += 1;
                queued.finish();
                continue;
            }
            let outcome = if WATCHED {
                let seq = watch.begin(queued.as_ptr());
                let outcome = Self::run_one(slf, &queued);
                if watch.end(seq) {
                    Self::blocked_callback_done(slf, queued.as_ptr(), seq);
                }
                outcome
            } else {
                Self::run_one(slf, &queued)
            };
            queued.finish();
            let err = match outcome {
                Ok(RunOutcome::Done) => continue,
                Ok(RunOutcome::Propagate(err)) | Err(err) => err,
            };
            // The rest of the batch stays queued for the next run; it has not run yet.
            return Err(err);
        }
        Ok(())
    }

    /// Runs one queued handle (in debug mode through `Loop._run_handle_debug`).
    #[inline(always)]
    fn run_one(slf: &Bound<'_, Self>, queued: &Queued) -> PyResult<RunOutcome> {
        let py = slf.py();
        // SAFETY: `queued` keeps the handle alive while this borrow exists; it is dropped
        // before `finish` looks at the reference count.
        let handle = unsafe { Bound::from_borrowed_ptr(py, queued.as_ptr()) };
        if slf.get().debug_enabled() {
            slf.as_any()
                .call_method1(pyo3::intern!(py, "_run_handle_debug"), (&handle,))
                .map(|_| RunOutcome::Done)
        } else {
            handles::run_handle(py, slf.as_any(), &handle)
        }
    }

    /// A callback the blocking detector flagged has returned: report its total duration.
    #[cold]
    #[inline(never)]
    fn blocked_callback_done(slf: &Bound<'_, Self>, handle: *mut ffi::PyObject, seq: u64) {
        let py = slf.py();
        let (total, reported) = slf.get().watch.flagged_outcome(seq);
        // SAFETY: the caller still holds the handle (its `Queued` entry); GIL held.
        let handle = unsafe { Bound::from_borrowed_ptr(py, handle) };
        if let Err(e) = slf.call_method1(
            pyo3::intern!(py, "_blocked_callback_done"),
            (handle, total, reported),
        ) {
            e.write_unraisable(py, Some(slf.as_any()));
        }
    }

    fn after_poll(py: Python<'_>, res: std::io::Result<()>) -> PyResult<()> {
        match res {
            Ok(()) => py.check_signals(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals(),
            Err(e) => Err(e.into()),
        }
    }

    /// Steps 4–5: due timers to the ready queue, then run one batch.
    fn run_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let has_timers = !this.state.borrow_mut(py).timers.is_empty();
            if has_timers {
                let end_time = Self::now(slf)? + ferroloop_core::sys::monotonic_resolution();
                let mut st = this.state.borrow_mut(py);
                let State {
                    ready,
                    timers,
                    counters,
                    ..
                } = &mut *st;
                let mut fired = 0u64;
                timers.pop_due(end_time, |e| {
                    // SAFETY: heap entries are timer handles; GIL held. The store releases
                    // `True`, which never runs code, so it is fine inside the borrow.
                    unsafe { handles::set_unscheduled(e.0.as_ptr()) };
                    ready.push(e.0);
                    fired += 1;
                });
                counters.timers_fired += fired;
            }
        }

        let (ntodo, watched) = {
            let mut st = this.state.borrow_mut(py);
            let n = st.ready.begin_batch();
            // The only counter bumped per batch: callbacks run are counted from the ready
            // queue's own push count (see `_stats`), since every extra store in this loop
            // showed in the `call_soon` chain benchmark (§5.28).
            st.counters.iterations += 1;
            // The blocking detector's switch is read once per batch.
            (n, this.detect.load(Relaxed))
        };
        if watched {
            Self::run_batch::<true>(slf, ntodo)?;
        } else {
            Self::run_batch::<false>(slf, ntodo)?;
        }
        this.flush_transports(py)
    }
}

static FUTURES_MODULE: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();
static TASKS_MODULE: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();

/// `asyncio.futures`; its `Future` is looked up per call, as asyncio does, so a patched
/// class is honoured.
fn futures_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(FUTURES_MODULE
        .get_or_try_init(py, || py.import("asyncio.futures").map(Bound::unbind))?
        .bind(py))
}

/// `asyncio.tasks`, for `Task` (looked up per call like `Future`).
fn tasks_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(TASKS_MODULE
        .get_or_try_init(py, || py.import("asyncio.tasks").map(Bound::unbind))?
        .bind(py))
}

static FUTURE_KWNAMES: pyo3::sync::PyOnceLock<Py<PyTuple>> = pyo3::sync::PyOnceLock::new();
static TASK_KWNAMES: pyo3::sync::PyOnceLock<Py<PyTuple>> = pyo3::sync::PyOnceLock::new();

/// A cached tuple of keyword names for [`vectorcall`].
fn kwnames<'a>(
    py: Python<'a>,
    cell: &'a pyo3::sync::PyOnceLock<Py<PyTuple>>,
    names: &[&str],
) -> PyResult<&'a Bound<'a, PyTuple>> {
    Ok(cell
        .get_or_try_init(py, || {
            let names: Vec<Bound<'_, pyo3::types::PyString>> = names
                .iter()
                .map(|n| pyo3::types::PyString::intern(py, n))
                .collect();
            PyTuple::new(py, names).map(Bound::unbind)
        })?
        .bind(py))
}

/// `callable(*args[..nargs], **dict(zip(kwnames, args[nargs..])))` without building a dict.
/// `args` are borrowed pointers of live objects.
fn vectorcall<'py>(
    py: Python<'py>,
    callable: &Bound<'py, PyAny>,
    args: &[*mut ffi::PyObject],
    nargs: usize,
    kwnames: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    assert_eq!(args.len(), nargs + kwnames.len());
    // SAFETY: `args` holds borrowed pointers to objects the caller keeps alive for the call:
    // `nargs` positionals followed by one value per keyword name, as vectorcall requires.
    unsafe {
        let r = ffi::PyObject_Vectorcall(callable.as_ptr(), args.as_ptr(), nargs, kwnames.as_ptr());
        if r.is_null() {
            Err(PyErr::fetch(py))
        } else {
            Ok(Bound::from_owned_ptr(py, r))
        }
    }
}

/// Empties the signal wake-up socket. Its bytes are signal numbers: they are appended to
/// `keep` when `add_signal_handler` handlers exist, and dropped otherwise (Python-level
/// handlers, such as the one raising KeyboardInterrupt, run through `PyErr_CheckSignals`).
fn drain_fd(fd: i32, mut keep: Option<&mut Vec<u8>>) {
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: `fd` is the read end of the wake-up socket, kept open by the Python side
        // for as long as it is registered; `buf` is a valid writable buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        if let Some(keep) = keep.as_deref_mut() {
            keep.extend_from_slice(&buf[..n as usize]);
        }
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        Ok(Self {
            state: GilCell::new(State {
                ready: ReadyQueue::new(),
                timers: TimerHeap::new(),
                watchers: Watchers::default(),
                flush: Vec::new(),
                flush_spare: Vec::new(),
                signal_fd: None,
                counters: Counters::default(),
            }),
            events: GilCell::new(Some(Events::with_capacity(1024))),
            poller: Poller::new()?,
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            clock: AtomicU8::new(0),
            virtual_now: AtomicU64::new(0),
            autojump_threshold: AtomicU64::new(0),
            clock_holds: AtomicU64::new(0),
            watch: Arc::new(Watch::default()),
            detect: AtomicBool::new(false),
            detector: GilCell::new(None),
            io_registrations: AtomicU64::new(0),
            has_task_factory: AtomicBool::new(false),
            skipped_polls: std::sync::atomic::AtomicU32::new(0),
            signal_dispatch: AtomicBool::new(false),
        })
    }

    /// Return the time according to the event loop's clock (`time.monotonic()`).
    fn time(&self) -> f64 {
        if self.clock.load(Relaxed) & CLOCK_VIRTUAL != 0 {
            self.virtual_time()
        } else {
            ferroloop_core::monotonic()
        }
    }

    /// Switch this loop to a virtual clock starting at `start`, which jumps to the next
    /// timer when the loop has waited `autojump_threshold` real seconds with nothing to do.
    fn _set_virtual_clock(&self, start: f64, autojump_threshold: f64) {
        self.virtual_now.store(start.to_bits(), Relaxed);
        self.autojump_threshold
            .store(autojump_threshold.to_bits(), Relaxed);
        self.clock.fetch_or(CLOCK_VIRTUAL, Relaxed);
    }

    /// Virtual clock: move forward by `seconds` (>= 0); returns the new time.
    fn _advance_clock(&self, seconds: f64) -> PyResult<f64> {
        if self.clock.load(Relaxed) & CLOCK_VIRTUAL == 0 {
            return Err(PyRuntimeError::new_err("the loop's clock is not virtual"));
        }
        if seconds.is_nan() || seconds < 0.0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "time can only move forward",
            ));
        }
        let t = self.virtual_time() + seconds;
        self.virtual_now.store(t.to_bits(), Relaxed);
        Ok(t)
    }

    /// Virtual clock: hold (+1) or release (-1) jumps; the last release wakes the loop.
    fn _hold_clock(&self, delta: i64) {
        if delta >= 0 {
            self.clock_holds.fetch_add(delta as u64, Relaxed);
        } else {
            let d = delta.unsigned_abs();
            let prev = self
                .clock_holds
                .fetch_update(Relaxed, Relaxed, |h| Some(h.saturating_sub(d)))
                .unwrap_or(0);
            if prev <= d {
                self.poller.waker().wake();
            }
        }
    }

    /// Turn the blocking detector on (`threshold` seconds, reports to `reporter`, a weak
    /// method called as `reporter()(handle, seconds, stack)` on the watchdog thread) or off
    /// (`None`: the watchdog thread is stopped and joined).
    #[pyo3(signature = (threshold, reporter=None))]
    fn _set_block_detector(
        &self,
        py: Python<'_>,
        threshold: Option<f64>,
        reporter: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        match (threshold, reporter) {
            (Some(t), Some(r)) => {
                if !(t > 0.0 && t.is_finite()) {
                    return Err(pyo3::exceptions::PyValueError::new_err(
                        "block threshold must be a positive number of seconds",
                    ));
                }
                // Checked here, with the GIL held and no Python code until the watchdog is in
                // its slot: `close()` marks the loop closed *before* it takes the watchdog out
                // and joins it (with the GIL released), so a watchdog started by another
                // thread is either in the slot when close() takes it, or refused here. A
                // check in Python alone left a gap: a start during that join outlived close().
                self.check_closed()?;
                let old = {
                    let mut slot = self.detector.borrow_mut(py);
                    match slot.as_ref() {
                        Some(d) => d.set(t, r),
                        None => {
                            *slot = Some(Detector::start(Arc::clone(&self.watch), t, r));
                            None
                        }
                    }
                };
                self.detect.store(true, Relaxed);
                drop(old);
            }
            (None, _) => {
                self.detect.store(false, Relaxed);
                let detector = self.detector.borrow_mut(py).take();
                if let Some(d) = detector {
                    let (reporter, thread) = d.stop();
                    drop(reporter);
                    match thread {
                        // Turned off by a block handler, on the watchdog thread itself: it
                        // ends when the report returns.
                        Some(t) if t.thread().id() == std::thread::current().id() => drop(t),
                        // The thread may be waiting for the GIL: join with it released.
                        Some(t) => {
                            let _ = py.detach(|| t.join());
                        }
                        None => {}
                    }
                }
            }
            (Some(_), None) => {
                return Err(PyTypeError::new_err("a reporter is required"));
            }
        }
        Ok(())
    }

    /// Whether the blocking detector's watchdog thread is running.
    fn _block_detector_running(&self, py: Python<'_>) -> bool {
        self.detector.borrow_mut(py).is_some()
    }

    /// The counters and gauges behind `loop.stats()`.
    fn _stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let (c, ready, pushed, timers, cancelled) = {
            let st = self.state.borrow_mut(py);
            (
                st.counters,
                st.ready.len(),
                st.ready.pushed(),
                st.timers.len(),
                st.timers.cancelled_count(),
            )
        };
        // Every handle pushed is still queued, was skipped (cancelled, or dropped by close()),
        // or was taken off the queue to run.
        let callbacks = pushed - ready as u64 - c.skipped;
        let d = pyo3::types::PyDict::new(py);
        d.set_item("iterations", c.iterations)?;
        d.set_item("callbacks", callbacks)?;
        d.set_item("polls", c.polls)?;
        d.set_item("sleeping_polls", c.sleeping_polls)?;
        d.set_item("poll_seconds", c.poll_ns as f64 / 1e9)?;
        d.set_item("timers_scheduled", c.timers_scheduled)?;
        d.set_item("timers_cancelled", c.timers_cancelled)?;
        d.set_item("timers_fired", c.timers_fired)?;
        d.set_item("io_events", c.io_events)?;
        d.set_item("clock_jumps", c.clock_jumps)?;
        d.set_item("ready", ready)?;
        d.set_item("timers", timers.saturating_sub(cancelled))?;
        d.set_item("fds", self.io_registrations.load(Relaxed))?;
        Ok(d)
    }

    /// Create a Future attached to the loop (`asyncio.Future(loop=self)`).
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let cls = futures_module(py)?.getattr(pyo3::intern!(py, "Future"))?;
        let kwnames = kwnames(py, &FUTURE_KWNAMES, &["loop"])?;
        vectorcall(py, &cls, &[slf.as_ptr()], 0, kwnames)
    }

    fn _set_has_task_factory(&self, present: bool) {
        self.has_task_factory.store(present, Relaxed);
    }

    /// Queue an already-built `asyncio.Handle` (the debug path builds them in Python).
    fn _push_ready(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        Self::expect_handle(py, handle, false)?;
        slf.get().push_ready(py, handle, None)
    }

    /// Schedule an already-built `asyncio.TimerHandle` and mark it scheduled.
    fn _push_timer(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        Self::expect_handle(py, handle, true)?;
        let when = handle
            .getattr(pyo3::intern!(py, "_when"))?
            .extract::<f64>()?;
        slf.get().check_closed()?;
        handle.setattr(pyo3::intern!(py, "_scheduled"), true)?;
        if let Err(e) = slf.get().push_timer(py, when, handle, None) {
            // Closed by another thread while `_scheduled` was being set.
            handle.setattr(pyo3::intern!(py, "_scheduled"), false)?;
            return Err(e);
        }
        Ok(())
    }

    /// Called by `asyncio.TimerHandle.cancel` for handles built by asyncio's constructor.
    fn _timer_handle_cancelled(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if handle
            .getattr(pyo3::intern!(py, "_scheduled"))?
            .is_truthy()?
        {
            slf.get().note_timer_cancelled(py);
        }
        Ok(())
    }

    /// Run one iteration of the event loop.
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().note_loop_thread();
        Self::poll_once(slf)?;
        Self::run_ready(slf)
    }

    /// Iterate until `stop()`; the Python side sets up the running state around this.
    fn _run_forever_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        this.note_loop_thread();
        let result = (|| loop {
            Self::poll_once(slf)?;
            Self::run_ready(slf)?;
            if this.stopping.load(Relaxed) {
                return Ok(());
            }
        })();
        this.stopping.store(false, Relaxed);
        result
    }

    /// Stop running the event loop after the current batch of callbacks.
    fn stop(&self) {
        self.stopping.store(true, Relaxed);
    }

    fn is_running(&self) -> bool {
        self.running.load(Relaxed)
    }

    fn _set_running(&self, running: bool) {
        self.running.store(running, Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    fn get_debug(&self) -> bool {
        self.debug.load(Relaxed)
    }

    fn _set_debug_flag(&self, enabled: bool) {
        self.debug.store(enabled, Relaxed);
    }

    fn _set_time_overridden(&self, overridden: bool) {
        if overridden {
            self.clock.fetch_or(CLOCK_OVERRIDDEN, Relaxed);
        } else {
            self.clock.fetch_and(!CLOCK_OVERRIDDEN, Relaxed);
        }
    }

    /// Wake the loop if it sleeps in poll (asyncio's private `_write_to_self`).
    fn _write_to_self(&self) {
        self.poller.waker().wake();
    }

    /// Watch (fd >= 0) or stop watching (None) the signal wake-up socket's read end.
    #[pyo3(signature = (fd))]
    fn _set_signal_fd(&self, py: Python<'_>, fd: Option<i32>) -> PyResult<()> {
        let old = std::mem::replace(&mut self.state.borrow_mut(py).signal_fd, fd);
        if let Some(old_fd) = old {
            // SAFETY: the Python side keeps the socket open until after this call.
            let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(old_fd) };
            let _ = self.poller.deregister(bfd);
        }
        if let Some(new_fd) = fd {
            // SAFETY: as above: the socket outlives its registration.
            let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(new_fd) };
            self.poller
                .register(bfd, SIGNAL_TOKEN, Interest::READABLE, Mode::Level)?;
        }
        Ok(())
    }

    /// The last step of `close()`: give back the epoll instance and the waker's eventfd now,
    /// as asyncio's `close()` closes its selector (not when the loop object is collected).
    /// The loop can never poll again, so the waker never writes again (it writes only while
    /// the loop sleeps in a poll), and every later registration call fails with `EBADF`.
    fn _close_poller(&self) -> PyResult<()> {
        if !self.closed.load(Relaxed) {
            return Err(PyRuntimeError::new_err("the loop is not closed"));
        }
        self.poller.close();
        Ok(())
    }

    /// Hand the signal numbers read from the wake-up socket to `_process_self_data` (True,
    /// while `add_signal_handler` handlers exist) or drop them (False).
    fn _set_signal_dispatch(&self, enabled: bool) {
        self.signal_dispatch.store(enabled, Relaxed);
    }

    /// In the child of `os.fork()`: stop sharing the kernel objects of the parent's loop. The
    /// epoll instance and the waker's eventfd are replaced by new ones (so nothing the child
    /// does changes the parent's registrations, and neither wakes the other), and every fd
    /// watcher and the signal fd are forgotten without touching the parent's epoll. Callbacks
    /// and timers stay queued.
    fn _reset_after_fork(&self, py: Python<'_>) -> PyResult<()> {
        self.poller.reset_after_fork()?;
        let watchers = {
            let mut st = self.state.borrow_mut(py);
            st.signal_fd = None;
            st.watchers.drain()
        };
        self.io_registrations.store(0, Relaxed);
        self.signal_dispatch.store(false, Relaxed);
        drop(watchers);
        // The watchdog thread did not survive the fork: forget it (its lock may be held).
        self.detect.store(false, Relaxed);
        if let Some(d) = self.detector.borrow_mut(py).take() {
            d.forget_after_fork();
        }
        self.watch.forget_flag_after_fork();
        // Executor jobs of the parent will never report here.
        self.clock_holds.store(0, Relaxed);
        Ok(())
    }

    /// Mark the loop closed and drop every queued callback and timer.
    fn _close_native(&self, py: Python<'_>) {
        self.closed.store(true, Relaxed);
        let (ready, timers, watchers) = {
            let mut st = self.state.borrow_mut(py);
            let ready = st.ready.drain_all();
            st.counters.skipped += ready.len() as u64; // dropped, never run
            (ready, st.timers.drain_all(), st.watchers.drain())
        };
        self.io_registrations.store(0, Relaxed);
        for t in &timers {
            // SAFETY: heap entries are timer handles; GIL held.
            unsafe { handles::set_unscheduled(t.0.as_ptr()) };
        }
        drop(ready);
        drop(timers);
        drop(watchers);
    }

    /// asyncio's `_add_reader`: watch `fd` (an int or an object with `fileno()`) for
    /// reading; returns the new handle. Replaces (and cancels) a previous reader.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::add_io_handle(slf, fd, callback, args, Direction::Read)
    }

    /// asyncio's `_add_writer`.
    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::add_io_handle(slf, fd, callback, args, Direction::Write)
    }

    /// asyncio's `_remove_reader`: whether a reader was removed.
    fn _remove_reader(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watcher(py, fd, Direction::Read)
    }

    /// `sock_recv`'s native path (see `sock.rs`): the data, a future to await, or None.
    fn _sock_recv_fast<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        n: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Self::sock_recv_fast(slf, sock, n)
    }

    /// `sock_sendall`'s first send (see `sock.rs`): bytes sent, or None.
    fn _sock_send_fast(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Option<usize>> {
        Self::sock_send_fast(slf, sock, data)
    }

    /// asyncio's `_remove_writer`.
    fn _remove_writer(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.remove_watcher(py, fd, Direction::Write)
    }

    /// How many fds have a watcher, as the run loop counts them (for tests: zero lets it skip
    /// zero-timeout polls, §5.7).
    fn _io_registrations(&self) -> u64 {
        self.io_registrations.load(Relaxed)
    }
}
