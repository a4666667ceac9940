//! Seeing inside the loop (issue #11): the statistics counters and the blocking detector.
//!
//! * [`Counters`] are plain integers in the loop's `State`, bumped inside borrows the run loop
//!   takes anyway; `loop.stats()` reads them (`LoopCore::_stats`).
//! * The blocking detector is a native watchdog thread. The loop thread publishes, per
//!   callback, a sequence number (odd while a callback runs) and a borrowed pointer to the
//!   running handle in [`Watch`]; that is two stores before and one after each callback, and
//!   only while the detector is on (the run loop reads the on/off flag once per batch). The
//!   watchdog wakes every `threshold / 4`; when it sees the same odd number for longer than
//!   the threshold it attaches to the interpreter (a callback blocked in `time.sleep` or in
//!   I/O has released the GIL; one running Python code hands it over at the next switch
//!   interval), checks that the same callback is still running, walks the loop thread's frames
//!   and hands handle, elapsed time and stack to the loop's Python reporter, while the callback
//!   is still blocked. The loop thread, finishing a callback the watchdog flagged, reports the
//!   total duration (`Loop._blocked_callback_done`).
//!
//! The watchdog holds no Python reference between reports except the reporter (a weak method
//! of the loop, dropped with the GIL held when the detector is turned off). It is stopped and
//! joined when the detector is turned off, when the loop closes, and at interpreter exit
//! (`atexit`); dropping the `LoopCore` tells it to stop as well. After `fork()` the child
//! forgets it without touching its lock ([`Detector::forget_after_fork`]).

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// Counters and accumulated times behind `loop.stats()`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// Iterations of the run loop (`run_ready` calls).
    pub(crate) iterations: u64,
    /// Handles taken off the ready queue without running: cancelled ones, and those
    /// `close()` dropped. Callbacks run = the queue's pushes − what is queued − these.
    pub(crate) skipped: u64,
    /// `epoll_wait` calls, and how many of them were allowed to sleep (timeout not zero).
    pub(crate) polls: u64,
    pub(crate) sleeping_polls: u64,
    /// Nanoseconds spent inside polls that were allowed to sleep (coarse clock).
    pub(crate) poll_ns: u64,
    /// Timers scheduled, cancelled while scheduled, and moved to the ready queue when due.
    pub(crate) timers_scheduled: u64,
    pub(crate) timers_cancelled: u64,
    pub(crate) timers_fired: u64,
    /// I/O events dispatched to fd watchers' handles (one per reader or writer queued).
    pub(crate) io_events: u64,
    /// Virtual clock: jumps to the next timer.
    pub(crate) clock_jumps: u64,
}

/// What the loop thread publishes for the watchdog. Lives as long as the `LoopCore`.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Odd while a callback runs, even between callbacks. Written by the loop thread only.
    seq: AtomicU64,
    /// The running handle (a borrowed pointer): valid while `seq` is the odd value published
    /// with it, which the watchdog checks with the GIL held.
    handle: AtomicPtr<ffi::PyObject>,
    /// The sequence number of a callback the watchdog found over the threshold.
    over: AtomicU64,
    /// `f64` bits: monotonic seconds at which the watchdog first saw that callback running.
    over_since: AtomicU64,
    /// The sequence number whose stack the watchdog reported.
    reported: AtomicU64,
    /// `threading.get_ident()` of the thread running the loop (for the stack).
    thread_ident: AtomicU64,
}

impl Watch {
    /// Before a callback: publish the handle, then an odd sequence number. Returns it.
    #[inline(always)]
    pub(crate) fn begin(&self, handle: *mut ffi::PyObject) -> u64 {
        let s = self.seq.load(Ordering::Relaxed) | 1;
        self.handle.store(handle, Ordering::Relaxed);
        self.seq.store(s, Ordering::Release);
        s
    }

    /// After it: an even number again; whether the watchdog flagged this callback.
    ///
    /// `over` is read with `Acquire`: the watchdog stores `over_since` and then `over`
    /// without the GIL, so only an acquiring read of `over` guarantees that
    /// [`Self::flagged_outcome`] then sees this callback's `over_since` rather than an older
    /// one (on x86 both loads are plain moves either way; on weakly ordered CPUs a relaxed
    /// read could pair the new flag with the previous start time).
    #[inline(always)]
    pub(crate) fn end(&self, s: u64) -> bool {
        self.seq.store(s + 1, Ordering::Release);
        self.over.load(Ordering::Acquire) == s
    }

    /// For a flagged callback that just ended: seconds since the watchdog first saw it, and
    /// whether its stack was reported.
    pub(crate) fn flagged_outcome(&self, s: u64) -> (f64, bool) {
        let since = f64::from_bits(self.over_since.load(Ordering::Acquire));
        (
            ferroloop_core::monotonic() - since,
            self.reported.load(Ordering::Acquire) == s,
        )
    }

    /// In a fork child: forget a callback the parent's watchdog flagged. The child has no
    /// watchdog, and the parent reports that callback itself; without this, the callback's
    /// end in the child (a fork from inside it returns there) reported it a second time.
    pub(crate) fn forget_flag_after_fork(&self) {
        self.over.store(0, Ordering::Relaxed);
    }

    pub(crate) fn set_thread_ident(&self, ident: u64) {
        self.thread_ident.store(ident, Ordering::Relaxed);
    }
}

/// The detector's settings, shared with its thread under a mutex (cold path only).
struct Settings {
    stop: bool,
    threshold: f64,
    /// `weakref.WeakMethod(loop._report_blocked)`.
    reporter: Option<Py<PyAny>>,
}

struct Control {
    settings: Mutex<Settings>,
    wake: Condvar,
}

/// A running watchdog thread, owned by the loop (in a `GilCell`).
pub(crate) struct Detector {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl Detector {
    /// Starts a watchdog over `watch` with this threshold (seconds) and reporter.
    pub(crate) fn start(watch: Arc<Watch>, threshold: f64, reporter: Py<PyAny>) -> Self {
        let control = Arc::new(Control {
            settings: Mutex::new(Settings {
                stop: false,
                threshold,
                reporter: Some(reporter),
            }),
            wake: Condvar::new(),
        });
        let c = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("ferroloop-watchdog".into())
            .spawn(move || watchdog(&watch, &c))
            .expect("spawn the watchdog thread");
        Self {
            control,
            thread: Some(thread),
        }
    }

    /// Changes the threshold of a running watchdog.
    pub(crate) fn set(&self, threshold: f64, reporter: Py<PyAny>) -> Option<Py<PyAny>> {
        let mut s = lock(&self.control.settings);
        s.threshold = threshold;
        let old = s.reporter.replace(reporter);
        drop(s);
        self.control.wake.notify_all();
        old
    }

    /// Tells the thread to stop and returns the reporter (to be dropped with the GIL held)
    /// and the thread to join (with the GIL released: the thread may be waiting for it).
    pub(crate) fn stop(mut self) -> (Option<Py<PyAny>>, Option<JoinHandle<()>>) {
        let reporter = {
            let mut s = lock(&self.control.settings);
            s.stop = true;
            s.reporter.take()
        };
        self.control.wake.notify_all();
        (reporter, self.thread.take())
    }

    /// In a fork child: the thread does not exist here and its lock may be held forever.
    /// Leak everything (the reporter reference included) rather than touch it.
    pub(crate) fn forget_after_fork(self) {
        std::mem::forget(self);
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        // Only reached when the loop is dropped with the detector on: ask the thread to end
        // without waiting for it. The reporter is left to the thread, whose `Settings` owns it
        // and is dropped there if the thread exits; a weak method keeps nothing alive.
        if let Ok(mut s) = self.control.settings.lock() {
            s.stop = true;
        }
        self.control.wake.notify_all();
    }
}

fn lock(m: &Mutex<Settings>) -> std::sync::MutexGuard<'_, Settings> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watchdog thread's body.
fn watchdog(watch: &Watch, control: &Control) {
    let mut last_seq = 0u64;
    let mut first_seen = 0.0f64;
    let mut handled = 0u64;
    loop {
        let threshold = {
            let s = lock(&control.settings);
            if s.stop {
                return;
            }
            let period = Duration::from_secs_f64((s.threshold / 4.0).max(0.0005));
            let (s, _) = control
                .wake
                .wait_timeout(s, period)
                .unwrap_or_else(|e| e.into_inner());
            if s.stop {
                return;
            }
            s.threshold
        };
        let seq = watch.seq.load(Ordering::Acquire);
        let now = ferroloop_core::monotonic();
        if seq & 1 == 0 {
            last_seq = seq;
            continue;
        }
        if seq != last_seq {
            last_seq = seq;
            first_seen = now;
            continue;
        }
        if seq == handled || now - first_seen < threshold {
            continue;
        }
        handled = seq;
        watch
            .over_since
            .store(first_seen.to_bits(), Ordering::Release);
        watch.over.store(seq, Ordering::Release);
        let attached = Python::try_attach(|py| report(py, watch, control, seq, first_seen));
        if attached.is_none() {
            return; // the interpreter is shutting down
        }
    }
}

/// With the GIL held: if callback `seq` still runs, capture the loop thread's stack and call
/// the reporter with `(handle, seconds_so_far, stack)`.
fn report(py: Python<'_>, watch: &Watch, control: &Control, seq: u64, first_seen: f64) {
    if watch.seq.load(Ordering::Acquire) != seq {
        return; // it ended while we waited for the GIL; the loop thread reports it
    }
    let Some(weak) = lock(&control.settings)
        .reporter
        .as_ref()
        .map(|r| r.clone_ref(py))
    else {
        return;
    };
    // SAFETY: `seq` is unchanged and we hold the GIL, so the loop thread is still inside this
    // callback (it bumps `seq` with the GIL held before it lets the handle go), and the
    // pointer published with `seq` is the live handle it runs.
    let handle = unsafe { Bound::from_borrowed_ptr(py, watch.handle.load(Ordering::Relaxed)) };
    // Capture the stack first, before any Python code runs: bytecode may hand the GIL back to
    // the loop thread, which would then move on.
    let stack = capture_stack(py, watch.thread_ident.load(Ordering::Relaxed));
    let elapsed = ferroloop_core::monotonic() - first_seen;
    watch.reported.store(seq, Ordering::Release);
    let result = (|| -> PyResult<()> {
        let stack = stack?;
        let method = weak.bind(py).call0()?;
        if !method.is_none() {
            method.call1((handle, elapsed, stack))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        e.write_unraisable(py, None);
    }
}

/// The frames of thread `ident`, innermost last, as `(filename, lineno, name)` tuples. Reads
/// frame attributes only (C getters): no Python code runs.
fn capture_stack<'py>(py: Python<'py>, ident: u64) -> PyResult<Bound<'py, PyList>> {
    let frames = py
        .import(pyo3::intern!(py, "sys"))?
        .call_method0(pyo3::intern!(py, "_current_frames"))?;
    let out = PyList::empty(py);
    let Some(mut frame) = frames.get_item(ident).ok() else {
        return Ok(out);
    };
    let mut entries = Vec::new();
    while !frame.is_none() && entries.len() < 256 {
        let code = frame.getattr(pyo3::intern!(py, "f_code"))?;
        let entry = PyTuple::new(
            py,
            [
                code.getattr(pyo3::intern!(py, "co_filename"))?,
                frame.getattr(pyo3::intern!(py, "f_lineno"))?,
                code.getattr(pyo3::intern!(py, "co_name"))?,
            ],
        )?;
        entries.push(entry);
        frame = frame.getattr(pyo3::intern!(py, "f_back"))?;
    }
    for e in entries.into_iter().rev() {
        out.append(e)?;
    }
    Ok(out)
}
