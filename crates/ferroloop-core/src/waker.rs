//! The waker: how another thread cuts the loop's sleep short (`call_soon_threadsafe`).
//!
//! A wake-up costs a syscall, and a program that hands work to the loop from a thread pool
//! makes many of them, so the waker only writes its eventfd while the loop is actually
//! sleeping (or about to). The protocol, in sequentially consistent atomics:
//!
//! * the loop sets `sleeping` *before* it looks for queued work and decides its timeout;
//! * a producer queues its work *before* it reads `sleeping`.
//!
//! Either the loop sees the work (and does not sleep), or the producer sees `sleeping` (and
//! writes the eventfd, which ends the poll). `signalled` folds a burst of wake-ups into one
//! write per sleep.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use crate::sys::WakeFd;

pub struct Waker {
    fd: WakeFd,
    sleeping: AtomicBool,
    signalled: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            fd: WakeFd::new()?,
            sleeping: AtomicBool::new(false),
            signalled: AtomicBool::new(false),
        })
    }

    /// Wakes the loop if it sleeps, or makes its coming sleep return at once. Callable from
    /// any thread, with or without the GIL.
    #[inline]
    pub fn wake(&self) {
        if self.sleeping.load(SeqCst) && !self.signalled.swap(true, SeqCst) {
            self.fd.signal();
        }
    }

    /// Loop side: about to sleep. Check for queued work *after* this.
    #[inline]
    pub(crate) fn begin_sleep(&self) {
        self.sleeping.store(true, SeqCst);
    }

    /// Loop side: awake again. `saw_event` says the poller reported the eventfd readable.
    ///
    /// The eventfd is drained *before* `signalled` is cleared. The other order loses
    /// wake-ups: a producer that saw `sleeping` just before it was cleared could set
    /// `signalled` again after the clear and write the eventfd just before the drain; the
    /// drain would eat that write, `signalled` would stay set, and every later `wake` would
    /// skip its write while the loop slept. In this order a write the drain misses leaves the
    /// eventfd readable (the next poll returns at once), and a producer that finds
    /// `signalled` still set skips a write the loop does not need: it is awake and looks at
    /// the queue before it sleeps again.
    #[inline]
    pub(crate) fn end_sleep(&self, saw_event: bool) {
        self.sleeping.store(false, SeqCst);
        if saw_event {
            self.fd.drain();
        }
        self.signalled.store(false, SeqCst);
    }

    /// After `fork()`, in the child: a fresh eventfd (not shared with the parent), no sleep
    /// in progress.
    pub(crate) fn reset_after_fork(&self) -> io::Result<()> {
        self.sleeping.store(false, SeqCst);
        self.signalled.store(false, SeqCst);
        self.fd.reset_after_fork()
    }

    /// `f` with the eventfd (`EBADF` once closed).
    pub(crate) fn with_fd<R>(
        &self,
        f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.fd.with_fd(f)
    }

    /// Makes the eventfd readable whether or not the loop sleeps: ends a poll that another
    /// thread may be sleeping in, before the poller is closed under it (see `Poller::close`).
    pub(crate) fn interrupt(&self) {
        self.fd.signal();
    }

    /// Closes the eventfd (the loop is closed: nothing sleeps on it again, so `wake` finds
    /// `sleeping` false and never writes).
    pub(crate) fn close(&self) {
        self.fd.close();
    }
}
