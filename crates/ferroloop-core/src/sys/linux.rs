//! Linux: epoll for readiness, eventfd for cross-thread wake-ups, CLOCK_MONOTONIC for time.
//!
//! Why not the `polling` or `mio` crates (see docs/design.md, "The poller"): `polling`
//! re-arms a timerfd and its notifier around every wait (five syscalls per loop iteration
//! where asyncio makes one) and retries EINTR itself, which hides Ctrl+C from us; `mio` only
//! registers edge-triggered, while asyncio's `add_reader` is level-triggered. epoll through
//! `rustix` costs one syscall per iteration and lets each registration choose its mode.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{PoisonError, RwLock, TryLockError};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::event::{eventfd, EventfdFlags, Timespec};
use rustix::time::{clock_gettime, ClockId};

use crate::poller::{Event, Interest, Mode, Token};

/// `time.monotonic()`: CPython reads CLOCK_MONOTONIC and divides nanoseconds by 1e9; doing
/// the same arithmetic gives bit-identical floats, so `loop.time()` and `time.monotonic()`
/// can be compared directly.
#[inline]
pub fn monotonic_seconds() -> f64 {
    let ts = clock_gettime(ClockId::Monotonic);
    let ns = (ts.tv_sec as i128) * 1_000_000_000 + ts.tv_nsec as i128;
    let ns = ns as i64;
    if ns % 1_000_000_000 == 0 {
        (ns / 1_000_000_000) as f64
    } else {
        ns as f64 / 1e9
    }
}

/// A cheap reading of the monotonic clock for accounting (`loop.stats()`), in nanoseconds:
/// `CLOCK_MONOTONIC_COARSE`, the time of the last scheduler tick (1–4 ms resolution), read
/// from the vDSO without touching the time-stamp counter. Sums of many differences of it are
/// unbiased (the ticks fall at random points of the intervals measured).
#[inline]
pub fn coarse_monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::MonotonicCoarse);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The clock's resolution in seconds, as `time.get_clock_info('monotonic').resolution`.
pub fn monotonic_resolution() -> f64 {
    1e-9
}

/// A descriptor that `close()` can release while the object that owns it lives on: a closed
/// loop gives its epoll and eventfd back at once, as asyncio's `close()` closes its selector,
/// instead of when the loop object is collected. Every use takes the read lock (uncontended:
/// one atomic operation beside a system call), so the number can never be closed, and reused
/// by another file, while a call is using it; after `close()` every call fails with `EBADF`.
struct ClosableFd(RwLock<Option<OwnedFd>>);

impl ClosableFd {
    fn new(fd: OwnedFd) -> Self {
        Self(RwLock::new(Some(fd)))
    }

    fn with<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>) -> io::Result<R> {
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(fd) => f(fd.as_fd()),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    fn is_closed(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn close(&self) {
        let fd = self
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(fd);
    }

    /// `close()` if no call is using the fd right now; whether it is closed afterwards.
    fn try_close(&self) -> bool {
        let mut guard = match self.0.try_write() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        drop(guard.take());
        true
    }

    /// After `fork()`: `fresh`'s file under the same number (nothing if already closed).
    fn replace_in_place(&self, fresh: OwnedFd) -> io::Result<()> {
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(fd) => replace_in_place(fd, fresh),
            None => Ok(()),
        }
    }
}

pub struct Selector {
    epfd: ClosableFd,
}

pub struct SysEvents {
    buf: Vec<epoll::Event>,
}

// SAFETY: an `epoll::Event` is plain data (flags and a 64-bit user word). rustix lets that word
// be read as a pointer, which makes the type `!Send`, but this crate only ever stores integer
// tokens in it, so moving the buffer to another thread (the poll runs with the GIL released)
// moves nothing that refers to thread-local memory.
unsafe impl Send for SysEvents {}

impl SysEvents {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf.iter().map(|e| {
            let flags = e.flags;
            let data = e.data;
            Event {
                token: Token(data.u64()),
                readable: flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ),
                writable: flags.intersects(epoll::EventFlags::OUT | epoll::EventFlags::ERR),
                error: flags.contains(epoll::EventFlags::ERR),
                hangup: flags.contains(epoll::EventFlags::HUP),
            }
        })
    }
}

fn flags_for(interest: Interest, mode: Mode) -> epoll::EventFlags {
    let mut flags = epoll::EventFlags::empty();
    if interest.readable {
        flags |= epoll::EventFlags::IN;
    }
    if interest.writable {
        flags |= epoll::EventFlags::OUT;
    }
    match mode {
        Mode::Level => {}
        Mode::Edge => flags |= epoll::EventFlags::ET,
        Mode::Oneshot => flags |= epoll::EventFlags::ONESHOT,
    }
    flags
}

impl Selector {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epfd: ClosableFd::new(epoll::create(epoll::CreateFlags::CLOEXEC)?),
        })
    }

    pub fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        self.epfd.with(|epfd| {
            epoll::add(
                epfd,
                fd,
                epoll::EventData::new_u64(token.0),
                flags_for(interest, mode),
            )?;
            Ok(())
        })
    }

    pub fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        self.epfd.with(|epfd| {
            epoll::modify(
                epfd,
                fd,
                epoll::EventData::new_u64(token.0),
                flags_for(interest, mode),
            )?;
            Ok(())
        })
    }

    pub fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epfd.with(|epfd| {
            epoll::delete(epfd, fd)?;
            Ok(())
        })
    }

    /// After `fork()`, in the child: the epoll fd becomes a new, empty epoll instance under
    /// the same number. The inherited instance is shared with the parent, so any change the
    /// child made to it (a registration added or deleted) would change the parent's loop.
    pub fn reset_after_fork(&self) -> io::Result<()> {
        self.epfd
            .replace_in_place(epoll::create(epoll::CreateFlags::CLOEXEC)?)
    }

    /// Closes the epoll instance; every later call fails with `EBADF`.
    pub fn close(&self) {
        self.epfd.close();
    }

    /// Closes the epoll instance if no call (a poll) is using it right now; whether it is
    /// closed afterwards.
    pub fn try_close(&self) -> bool {
        self.epfd.try_close()
    }

    pub fn is_closed(&self) -> bool {
        self.epfd.is_closed()
    }

    /// One `epoll_wait`. `None` waits forever; sub-millisecond timeouts round up to 1 ms.
    /// EINTR comes back as `ErrorKind::Interrupted` so the caller can run signal handlers.
    pub fn select(&self, events: &mut SysEvents, timeout: Option<Duration>) -> io::Result<()> {
        events.buf.clear();
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: t.subsec_nanos() as _,
        });
        self.epfd.with(|epfd| {
            epoll::wait(epfd, spare_capacity(&mut events.buf), ts.as_ref())?;
            Ok(())
        })
    }
}

/// An eventfd: the cheapest file descriptor another thread can make readable.
pub struct WakeFd {
    fd: ClosableFd,
}

impl WakeFd {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            fd: ClosableFd::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?),
        })
    }

    pub fn signal(&self) {
        // EAGAIN means the counter is saturated: the fd is readable already, which is all
        // a wake-up needs. Nothing else can fail on a valid eventfd (EBADF: closed loop).
        let _ = self.fd.with(|fd| {
            rustix::io::write(fd, &1u64.to_ne_bytes())?;
            Ok(())
        });
    }

    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = self.fd.with(|fd| {
            rustix::io::read(fd, &mut buf)?;
            Ok(())
        });
    }

    /// `f` with the eventfd (`EBADF` once closed).
    pub fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>) -> io::Result<R> {
        self.fd.with(f)
    }

    /// After `fork()`, in the child: a new eventfd under the same number, so that the child
    /// and the parent no longer wake each other.
    pub fn reset_after_fork(&self) -> io::Result<()> {
        self.fd
            .replace_in_place(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
    }

    /// Closes the eventfd; later signals do nothing.
    pub fn close(&self) {
        self.fd.close();
    }
}

/// Makes the fd number `target` owns name `fresh`'s file instead (`dup3`, atomic), then
/// closes `fresh`. The number, and its ownership by `target`, do not change.
fn replace_in_place(target: &OwnedFd, fresh: OwnedFd) -> io::Result<()> {
    // SAFETY: `alias` borrows `target`'s number only to hand it to `dup3` as the descriptor
    // to replace; it is never dropped (ManuallyDrop), so the number stays owned by `target`
    // alone and is closed exactly once, when `target` is.
    let mut alias =
        std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(target.as_raw_fd()) });
    rustix::io::dup3(&fresh, &mut alias, rustix::io::DupFlags::CLOEXEC)?;
    Ok(())
}
