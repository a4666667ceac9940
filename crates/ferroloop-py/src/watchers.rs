//! File-descriptor watchers: asyncio's `add_reader` / `add_writer` and the selector's key map.
//!
//! A watcher is an `asyncio.Handle` run every time its fd polls readable (or writable), for
//! as long as it stays registered: level-triggered, as asyncio's selectors are, so a reader
//! that leaves data unread runs again on the next iteration.
//!
//! Why each registration carries a generation: epoll identifies a registration by the pair
//! (open file, fd number), but reports it with the 64-bit word we gave it, and a closed fd
//! number is handed out again by the next `socket()` or `open()`. If that word were the fd
//! alone, an event of one file could be taken for the other's. So the word is
//! `generation << 32 | fd`, every fresh registration gets a new generation, and an event
//! whose generation is not the one on record for its fd is dropped. Re-arming always goes
//! through `EPOLL_CTL_MOD`, which the kernel resolves against the file the fd number names
//! *now*: `ENOENT` means the file we registered is gone (closed without `remove_reader`,
//! perhaps replaced by a new one under the same number). Its watchers are then stale: they
//! are cancelled and the fd is registered afresh for the new watcher only, so an old watcher
//! never sees events of a new file. (asyncio's selector keeps the stale key and either raises
//! `FileNotFoundError` or, when the event mask is unchanged, silently never watches the new
//! file at all.)
//!
//! Native waiters stay registered, edge-triggered: the native `sock_recv` always tries
//! `recv` first and waits only after `EAGAIN`, which is exactly the condition under which an
//! edge-triggered registration reports the next arrival. So its registration is made with
//! `EPOLLET` and, when the wait is over, left in place ("parked", no watcher) instead of
//! being deleted; the next wait on the same socket object reuses it without any system call
//! (asyncio's shape costs an `ADD` and a `DEL` per wait). A parked registration reports at
//! most one event per arrival of data, which is dropped, so it can never make the loop spin,
//! even for a socket closed while its file lives on in another process. The parked entry
//! remembers its socket through a weak reference: a different socket object on the same fd
//! number (or none) re-arms through `MOD`, which catches a reused number (`ENOENT`) as above.
//! Any other watcher on the fd turns the registration into an ordinary level-triggered one.
//!
//! Everything else follows asyncio's `BaseSelectorEventLoop`: `fd` may be an int or any
//! object with `fileno()`; the object first registered is remembered, so that
//! `remove_reader(sock)` still finds the registration after `sock.close()`; replacing a
//! watcher cancels the old handle; removing one cancels it and returns whether there was one.

use pyo3::exceptions::{PyAttributeError, PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use ferroloop_core::{Event, Interest, Mode, ReadyQueue, Token};

use crate::event_loop::LoopCore;
use crate::handles::{self, Queued};

/// Which side of an fd a watcher waits for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// One registered fd (asyncio's `SelectorKey`).
pub struct FdWatch {
    /// The object the fd was registered with (`SelectorKey.fileobj`).
    fileobj: Py<PyAny>,
    reader: Option<Py<PyAny>>,
    writer: Option<Py<PyAny>>,
    generation: u32,
    /// Registered with `Mode::Edge` (only ever for a lone native reader).
    edge: bool,
    /// For an edge-triggered entry: the socket object it was registered for (weakly, so a
    /// parked entry never keeps a socket alive).
    owner: Option<Py<PyAny>>,
}

impl FdWatch {
    fn is_watched(&self) -> bool {
        self.reader.is_some() || self.writer.is_some()
    }

    fn interest(&self) -> Option<Interest> {
        match (self.reader.is_some(), self.writer.is_some()) {
            (false, false) => None,
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (true, true) => Some(Interest::BOTH),
        }
    }

    fn slot(&mut self, dir: Direction) -> &mut Option<Py<PyAny>> {
        match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    /// The handles this registration holds, for cancelling or dropping outside a borrow.
    fn into_handles(self) -> impl Iterator<Item = Py<PyAny>> {
        self.reader.into_iter().chain(self.writer)
    }
}

/// The registered fds, indexed by fd number (fds are small and dense).
#[derive(Default)]
pub struct Watchers {
    slots: Vec<Option<FdWatch>>,
    /// Entries in `slots` ...
    present: usize,
    /// ... of which parked (an edge-triggered registration and no watcher).
    parked: usize,
    next_generation: u32,
}

fn token(fd: i32, generation: u32) -> Token {
    Token((u64::from(generation) << 32) | u64::from(fd as u32))
}

fn decode(token: Token) -> (i32, u32) {
    (
        (token.0 & 0xffff_ffff) as u32 as i32,
        (token.0 >> 32) as u32,
    )
}

impl Watchers {
    /// How many fds have a watcher.
    pub fn len(&self) -> usize {
        self.present - self.parked
    }

    fn get_mut(&mut self, fd: i32) -> Option<&mut FdWatch> {
        self.slots.get_mut(fd as usize)?.as_mut()
    }

    fn insert(&mut self, fd: i32, watch: FdWatch) {
        let i = fd as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        debug_assert!(watch.is_watched());
        if let Some(old) = self.slots[i].replace(watch) {
            if !old.is_watched() {
                self.parked -= 1;
            }
        } else {
            self.present += 1;
        }
    }

    fn take(&mut self, fd: i32) -> Option<FdWatch> {
        let w = self.slots.get_mut(fd as usize)?.take()?;
        self.present -= 1;
        if !w.is_watched() {
            self.parked -= 1;
        }
        Some(w)
    }

    /// `take` for an entry whose last watcher was just removed: it has no watcher now but was
    /// never counted as parked.
    fn take_emptied(&mut self, fd: i32) -> Option<FdWatch> {
        let w = self.slots.get_mut(fd as usize)?.take()?;
        self.present -= 1;
        Some(w)
    }

    fn fresh_generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// The fd registered with exactly this object (asyncio's exhaustive search).
    fn find_fileobj(&self, obj: &Bound<'_, PyAny>) -> Option<i32> {
        self.slots.iter().enumerate().find_map(|(fd, w)| {
            w.as_ref()
                .filter(|w| w.fileobj.as_ptr() == obj.as_ptr())
                .map(|_| fd as i32)
        })
    }

    /// Every registration, for `close()`.
    pub fn drain(&mut self) -> Vec<Py<PyAny>> {
        self.present = 0;
        self.parked = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .flat_map(FdWatch::into_handles)
            .collect()
    }

    /// Queues the watchers an event wakes, as asyncio's `_process_events` does: any flag
    /// besides "readable" counts as writable and any besides "writable" as readable (errors
    /// and hang-ups wake both sides, so each sees the error on its next syscall). Watchers
    /// whose handle was cancelled are collected in `cancelled` for removal.
    pub fn dispatch(
        &mut self,
        py: Python<'_>,
        event: &Event,
        ready: &mut ReadyQueue<Queued>,
        cancelled: &mut Vec<(i32, Direction)>,
    ) {
        let (fd, generation) = decode(event.token);
        let Some(Some(w)) = self.slots.get_mut(fd as usize) else {
            return;
        };
        if w.generation != generation {
            return; // an event of a file this fd number no longer names
        }

        let other = event.error || event.hangup;
        let wake = [
            (event.readable || other, &w.reader, Direction::Read),
            (event.writable || other, &w.writer, Direction::Write),
        ];
        for (fired, handle, dir) in wake {
            let Some(handle) = handle.as_ref().filter(|_| fired) else {
                continue;
            };
            // SAFETY: watcher handles are asyncio.Handle instances; GIL held.
            if unsafe { handles::is_cancelled(handle.as_ptr()) } {
                cancelled.push((fd, dir));
            } else {
                ready.push(Queued::new(handle.bind(py), None));
            }
        }
    }
}

/// An `OSError` as the `socket`/`select` modules raise it: `OSError(errno, strerror)`, which
/// Python turns into the matching subclass (`PermissionError`, `FileNotFoundError`, ...).
pub fn os_error(py: Python<'_>, err: std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => {
            let msg = py
                .import("os")
                .and_then(|os| os.call_method1("strerror", (code,)))
                .and_then(|s| s.extract::<String>())
                .unwrap_or_else(|_| err.to_string());
            PyOSError::new_err((code, msg))
        }
        None => err.into(),
    }
}

/// `selectors._fileobj_to_fd`: an int, or `int(fileobj.fileno())`, and never negative.
fn fileobj_to_fd(py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<i64> {
    // SAFETY: a type check on a live object, GIL held.
    let fd = if unsafe { ffi::PyLong_Check(fileobj.as_ptr()) } != 0 {
        fileobj.extract::<i64>()?
    } else {
        let converted = fileobj
            .call_method0(pyo3::intern!(py, "fileno"))
            .and_then(|n| {
                // `int(...)` of whatever `fileno()` returned.
                py.get_type::<pyo3::types::PyInt>()
                    .call1((n,))?
                    .extract::<i64>()
            });
        match converted {
            Ok(fd) => fd,
            Err(e)
                if e.is_instance_of::<PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py) =>
            {
                return Err(PyValueError::new_err(format!(
                    "Invalid file object: {}",
                    fileobj.repr()?
                )));
            }
            Err(e) => return Err(e),
        }
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd)
}

fn to_c_fd(fd: i64) -> PyResult<i32> {
    i32::try_from(fd)
        .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
}

/// An fd number as the borrowed fd the poller takes.
fn borrow_fd(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the poller only passes the number to `epoll_ctl`, which checks it itself (a
    // closed or reused number gives EBADF/ENOENT, handled by the callers); nothing is read
    // from or written to the fd, and the borrow is not kept.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

impl LoopCore {
    /// The fd `fileobj` names: `fileobj_to_fd`, or else the fd registered with this very
    /// object (asyncio's `_fileobj_lookup`, which finds closed sockets).
    fn lookup_fd(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<i32> {
        match fileobj_to_fd(py, fileobj) {
            Ok(fd) => to_c_fd(fd),
            Err(e) if e.is_instance_of::<PyValueError>(py) => self
                .state
                .borrow_mut(py)
                .watchers
                .find_fileobj(fileobj)
                .ok_or(e),
            Err(e) => Err(e),
        }
    }

    fn sync_registrations(&self, py: Python<'_>) {
        let n = self.state.borrow_mut(py).watchers.len();
        self.io_registrations
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Cancels handles a registration change displaced (outside any borrow: in debug mode
    /// `cancel` computes a repr, which runs Python code).
    fn cancel_all(py: Python<'_>, handles: Vec<Py<PyAny>>) -> PyResult<()> {
        for old in handles {
            old.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
        }
        Ok(())
    }

    /// asyncio's `_add_reader` / `_add_writer` once the handle exists.
    pub(crate) fn add_watcher(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
        dir: Direction,
        handle: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let fd = self.lookup_fd(py, fileobj)?;
        let mut stale: Vec<Py<PyAny>> = Vec::new();
        let result = self.register_watcher(py, fd, fileobj, dir, handle, Mode::Level, &mut stale);
        self.sync_registrations(py);
        Self::cancel_all(py, stale)?;
        result
    }

    /// The native `sock_recv`'s wait on `sock` (whose fd is `fd`): an edge-triggered reader
    /// (see the module comment), unless the fd has other watchers, which keep it
    /// level-triggered. A parked registration made for this very socket object is reused
    /// without a system call.
    pub(crate) fn add_edge_reader(
        &self,
        py: Python<'_>,
        fd: i32,
        sock: &Bound<'_, PyAny>,
        handle: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mode = {
            let mut st = self.state.borrow_mut(py);
            let watchers = &mut st.watchers;
            match watchers.get_mut(fd) {
                Some(w) if w.is_watched() => Mode::Level,
                Some(w) => {
                    let same = w.edge
                        && w.owner.as_ref().is_some_and(|r| {
                            r.bind(py)
                                .cast::<pyo3::types::PyWeakrefReference>()
                                .ok()
                                .and_then(|r| r.upgrade())
                                .is_some_and(|obj| obj.is(sock))
                        });
                    if same {
                        w.reader = Some(handle.clone().unbind());
                        watchers.parked -= 1;
                        drop(st);
                        self.sync_registrations(py);
                        return Ok(());
                    }
                    Mode::Edge
                }
                None => Mode::Edge,
            }
        };
        let fileobj = fd.into_pyobject(py)?.into_any();
        let mut stale: Vec<Py<PyAny>> = Vec::new();
        let result =
            self.register_watcher(py, fd, &fileobj, Direction::Read, handle, mode, &mut stale);
        if result.is_ok() && mode == Mode::Edge {
            let weak = pyo3::types::PyWeakrefReference::new(sock)?
                .into_any()
                .unbind();
            if let Some(w) = self.state.borrow_mut(py).watchers.get_mut(fd) {
                w.owner = Some(weak);
            }
        }
        self.sync_registrations(py);
        Self::cancel_all(py, stale)?;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn register_watcher(
        &self,
        py: Python<'_>,
        fd: i32,
        fileobj: &Bound<'_, PyAny>,
        dir: Direction,
        handle: &Bound<'_, PyAny>,
        mode: Mode,
        stale: &mut Vec<Py<PyAny>>,
    ) -> PyResult<()> {
        let mut st = self.state.borrow_mut(py);
        let watchers = &mut st.watchers;
        if let Some(w) = watchers.get_mut(fd) {
            let was_parked = !w.is_watched();
            let want = match (dir, w.interest()) {
                (_, Some(Interest::BOTH)) => Interest::BOTH,
                (Direction::Read, Some(Interest::WRITABLE))
                | (Direction::Write, Some(Interest::READABLE)) => Interest::BOTH,
                (Direction::Read, _) => Interest::READABLE,
                (Direction::Write, _) => Interest::WRITABLE,
            };
            // Always through MOD, even when nothing changes: it checks that the fd number
            // still names the file we registered.
            let tok = token(fd, w.generation);
            match self.poller.reregister(borrow_fd(fd), tok, want, mode) {
                Ok(()) => {
                    if let Some(old) = w.slot(dir).replace(handle.clone().unbind()) {
                        stale.push(old);
                    }
                    w.edge = mode == Mode::Edge;
                    if !w.edge {
                        w.owner = None;
                    }
                    if was_parked {
                        watchers.parked -= 1;
                    }
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // The file this registration watched is gone; its watchers with it.
                    let old = watchers.take(fd).expect("present");
                    stale.extend(old.into_handles());
                }
                Err(e) => {
                    // As asyncio's selector: the registration is dropped, the error raised.
                    let old = watchers.take(fd).expect("present");
                    drop(st);
                    drop(old);
                    return Err(os_error(py, e));
                }
            }
        }
        let generation = watchers.fresh_generation();
        let interest = match dir {
            Direction::Read => Interest::READABLE,
            Direction::Write => Interest::WRITABLE,
        };
        let tok = token(fd, generation);
        let added = match self.poller.register(borrow_fd(fd), tok, interest, mode) {
            // This very file is still registered from a watcher we forgot (its fd was
            // closed and the file came back under the same number): take it over.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.poller.reregister(borrow_fd(fd), tok, interest, mode)
            }
            other => other,
        };
        if let Err(e) = added {
            drop(st);
            return Err(os_error(py, e));
        }
        let mut watch = FdWatch {
            fileobj: fileobj.clone().unbind(),
            reader: None,
            writer: None,
            generation,
            edge: mode == Mode::Edge,
            owner: None,
        };
        *watch.slot(dir) = Some(handle.clone().unbind());
        watchers.insert(fd, watch);
        Ok(())
    }

    /// asyncio's `_remove_reader` / `_remove_writer`: whether a watcher was removed.
    pub(crate) fn remove_watcher(
        &self,
        py: Python<'_>,
        fileobj: &Bound<'_, PyAny>,
        dir: Direction,
    ) -> PyResult<bool> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let fd = match self.lookup_fd(py, fileobj) {
            Ok(fd) => fd,
            // A number no descriptor can have was never registered: asyncio's selector
            // looks it up, finds nothing and returns False (adding it raises, as here).
            Err(e) if e.is_instance_of::<PyOverflowError>(py) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.remove_watcher_fd(py, fd, dir, None)
    }

    /// Removes the `dir` watcher of `fd` (only if its callback is `only_callback`, when
    /// given) and cancels its handle; whether one was removed.
    pub(crate) fn remove_watcher_fd(
        &self,
        py: Python<'_>,
        fd: i32,
        dir: Direction,
        only_callback: Option<*mut pyo3::ffi::PyObject>,
    ) -> PyResult<bool> {
        let mut dropped: Option<FdWatch> = None;
        let (old, result) = {
            let mut st = self.state.borrow_mut(py);
            let watchers = &mut st.watchers;
            let Some(w) = watchers.get_mut(fd) else {
                return Ok(false);
            };
            if let Some(cb) = only_callback {
                let ours = w.slot(dir).as_ref().is_some_and(|h| {
                    // SAFETY: watcher handles are asyncio.Handle instances; GIL held.
                    unsafe { handles::get_slot(h.as_ptr(), handles::layout().callback) == cb }
                });
                if !ours {
                    return Ok(false);
                }
            }
            let old = w.slot(dir).take();
            let result = match (old.is_some(), w.interest()) {
                (false, _) => Ok(()),
                (true, None) if w.edge => {
                    // The wait is over: leave the edge-triggered registration parked.
                    watchers.parked += 1;
                    Ok(())
                }
                (true, None) => {
                    dropped = watchers.take_emptied(fd);
                    // Errors mean the fd was closed already, which unregistered it.
                    let _ = self.poller.deregister(borrow_fd(fd));
                    Ok(())
                }
                (true, Some(rest)) => {
                    let tok = token(fd, w.generation);
                    w.edge = false;
                    w.owner = None;
                    self.poller
                        .reregister(borrow_fd(fd), tok, rest, Mode::Level)
                        .inspect_err(|_| {
                            dropped = watchers.take(fd);
                        })
                }
            };
            (old, result)
        };
        self.sync_registrations(py);
        drop(dropped);
        result.map_err(|e| os_error(py, e))?;
        match old {
            Some(handle) => {
                handle.bind(py).call_method0(pyo3::intern!(py, "cancel"))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
