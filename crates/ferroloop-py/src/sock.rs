//! The per-packet half of `sock_recv` and `sock_sendall` (asyncio's `selector_events`).
//!
//! `python/ferroloop/selector_events.py` keeps each `sock_*` coroutine readable in Python and
//! calls in here first. For a plain `socket.socket` this module does the system call itself
//! (no bound-method call, no `BlockingIOError` object when it would block) and, for
//! `sock_recv`, also the whole wait: a future, a watcher whose callback retries the `recv`
//! and completes the future, and a done-callback that unregisters the watcher, all native.
//! Anything unusual (a socket subclass such as `ssl.SSLSocket`, a non-int size, debug mode
//! with its checks, a bytes-like object other than `bytes`/`bytearray`) answers `None`, and
//! the caller takes the Python path, which is asyncio's algorithm step for step.
//!
//! Errors are raised exactly as the `socket` module raises them (`OSError(errno, strerror)`,
//! which Python maps to `ConnectionResetError` and friends); `EINTR` is retried after running
//! signal handlers, as PEP 475 has the socket module do.

use std::cell::RefCell;

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyType};

use crate::event_loop::LoopCore;
use crate::handles;
use crate::watchers::{os_error, Direction};

/// Reads of up to this many bytes go through a per-thread scratch buffer, larger ones through
/// a temporary one; either way the data is copied into a `bytes` of the size that arrived.
const SCRATCH_SIZE: usize = 256 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SCRATCH_SIZE));
}

static SOCKET_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Whether `sock` is exactly `socket.socket` (what the native path knows how to drive).
fn is_plain_socket(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<bool> {
    let cls = SOCKET_TYPE.get_or_try_init(py, || {
        py.import("socket")?
            .getattr("socket")?
            .cast_into::<PyType>()
            .map(Bound::unbind)
            .map_err(PyErr::from)
    })?;
    Ok(sock.get_type().is(cls.bind(py)))
}

fn fileno(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<i32> {
    sock.call_method0(pyo3::intern!(py, "fileno"))?.extract()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn would_block(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK
}

/// One `recv(fd, n)`: the data (`b""` at end of stream), or `None` if it would block.
fn recv_once<'py>(py: Python<'py>, fd: i32, n: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
    loop {
        let got = if n <= SCRATCH_SIZE {
            recv_via_scratch(py, fd, n)
        } else {
            recv_large(py, fd, n)
        };
        match got {
            Ok(data) => return Ok(Some(data)),
            Err(ALLOC_FAILED) => return Err(PyMemoryError::new_err(())),
            Err(e) if e == libc::EINTR => py.check_signals()?,
            Err(e) if would_block(e) => return Ok(None),
            Err(e) => return Err(os_error(py, std::io::Error::from_raw_os_error(e))),
        }
    }
}

/// A small read: into the thread's scratch buffer, then copied into a `bytes` of the size
/// that arrived. `Err(errno)` if recv failed.
fn recv_via_scratch(py: Python<'_>, fd: i32, n: usize) -> Result<Bound<'_, PyAny>, i32> {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        let spare = buf.spare_capacity_mut();
        debug_assert!(spare.len() >= n);
        // SAFETY: `spare` has room for SCRATCH_SIZE >= n bytes; recv writes at most n bytes
        // into it and nothing reads them before `r` says how many were written.
        let r = unsafe { crate::syscalls::sys_recv(fd, spare.as_mut_ptr().cast(), n) };
        if r < 0 {
            return Err(last_errno());
        }
        // SAFETY: recv initialised the first `r` bytes of the spare capacity.
        let data = unsafe { std::slice::from_raw_parts(spare.as_ptr().cast::<u8>(), r as usize) };
        Ok(PyBytes::new(py, data).into_any())
    })
}

/// `recv_large` could not allocate its buffer (not an errno: those are positive).
const ALLOC_FAILED: i32 = -1;

/// A large read: into a temporary buffer of `n` bytes, then copied into a `bytes` of the
/// size that arrived (CPython shrinks its buffer in place with a private call instead). A
/// buffer the allocator refuses is `ALLOC_FAILED` (a `MemoryError`, as `socket.recv(n)`
/// raises), not an abort.
fn recv_large(py: Python<'_>, fd: i32, n: usize) -> Result<Bound<'_, PyAny>, i32> {
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(n).map_err(|_| ALLOC_FAILED)?;
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` has room for n bytes; recv writes at most n bytes into it.
    let r = unsafe { crate::syscalls::sys_recv(fd, spare.as_mut_ptr().cast(), n) };
    if r < 0 {
        return Err(last_errno());
    }
    // SAFETY: recv initialised the first `r` bytes.
    let data = unsafe { std::slice::from_raw_parts(spare.as_ptr().cast::<u8>(), r as usize) };
    Ok(PyBytes::new(py, data).into_any())
}

/// A waiting native `sock_recv`, in two roles: the watcher callback (called without
/// arguments when the fd is readable: retry the read, complete the future and unregister),
/// and the future's done-callback (called with the future: unregister if the wait ended
/// some other way, e.g. the awaiting task was cancelled). Either way only the watcher whose
/// callback is this object is removed: a later `add_reader` on the fd replaced it otherwise.
///
/// The future holds this object (as its callback) and this object the future, so the pair
/// is collectable by the cycle GC (`__traverse__`/`__clear__`) if a loop is closed with the
/// read still pending.
#[pyclass(module = "ferroloop._native")]
pub struct RecvWait {
    loop_: Option<Py<LoopCore>>,
    fut: Option<Py<PyAny>>,
    fd: i32,
    n: usize,
}

impl RecvWait {
    fn unregister(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (loop_, fd) = {
            let this = slf.borrow();
            let Some(loop_) = this.loop_.as_ref() else {
                return Ok(());
            };
            (loop_.clone_ref(py), this.fd)
        };
        let core = loop_.get();
        if core.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        core.remove_watcher_fd(py, fd, Direction::Read, Some(slf.as_ptr()))
            .map(|_| ())
    }
}

#[pymethods]
impl RecvWait {
    #[pyo3(signature = (fut=None))]
    fn __call__(slf: &Bound<'_, Self>, fut: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        if fut.is_some() {
            return Self::unregister(slf); // done-callback role
        }
        let (fut, fd, n) = {
            let this = slf.borrow();
            let Some(fut) = this.fut.as_ref() else {
                return Ok(());
            };
            (fut.clone_ref(py).into_bound(py), this.fd, this.n)
        };
        if fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
            return Ok(()); // cancelled meanwhile; the done-callback unregisters
        }
        let outcome = match recv_once(py, fd, n) {
            Ok(None) => return Ok(()), // spurious readiness: wait for the next one
            Ok(Some(data)) => Ok(data),
            Err(err) => {
                if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                    || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
                {
                    return Err(err);
                }
                Err(err)
            }
        };
        // Unregister before completing: the registration is parked before anything else runs.
        Self::unregister(slf)?;
        match outcome {
            Ok(data) => fut.call_method1(pyo3::intern!(py, "set_result"), (data,))?,
            Err(err) => fut.call_method1(pyo3::intern!(py, "set_exception"), (err.value(py),))?,
        };
        Ok(())
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Some(f) = &self.fut {
            visit.call(f)?;
        }
        if let Some(l) = &self.loop_ {
            visit.call(l)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.fut = None;
        self.loop_ = None;
    }
}

impl LoopCore {
    /// `sock_recv`'s native path: the data, a future to await, or `None` (take the Python
    /// path).
    pub(crate) fn sock_recv_fast<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        n: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        if this.debug_enabled() || !is_plain_socket(py, sock)? || !n.is_exact_instance_of::<PyInt>()
        {
            return Ok(None);
        }
        // Beyond a C ssize_t, the Python path raises socket.recv's own OverflowError.
        let Ok(n) = n.extract::<isize>() else {
            return Ok(None);
        };
        if n < 0 {
            return Err(PyValueError::new_err("negative buffersize in recv"));
        }
        let fd = fileno(py, sock)?;
        if fd < 0 {
            return Ok(None); // a closed socket: let socket.recv raise what it raises
        }
        if let Some(data) = recv_once(py, fd, n as usize)? {
            return Ok(Some(data));
        }
        // It would block: wait for readability (asyncio's `_add_reader` + done-callback).
        this.check_closed()?;
        this.ensure_fd_no_transport(slf, fd)?;
        let fut = slf.call_method0(pyo3::intern!(py, "create_future"))?;
        let wait = Bound::new(
            py,
            RecvWait {
                loop_: Some(slf.clone().unbind()),
                fut: Some(fut.clone().unbind()),
                fd,
                n: n as usize,
            },
        )?;
        let handle = Self::new_io_handle(slf, wait.as_any())?;
        this.add_edge_reader(py, fd, sock, &handle)?;
        fut.call_method1(pyo3::intern!(py, "add_done_callback"), (wait,))?;
        Ok(Some(fut))
    }

    /// One `send` for `sock_sendall`: how many bytes went out (0 if it would block), or
    /// `None` (take the Python path).
    pub(crate) fn sock_send_fast(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Option<usize>> {
        let py = slf.py();
        if slf.get().debug_enabled() || !is_plain_socket(py, sock)? {
            return Ok(None);
        }
        // Borrow the bytes without copying. Nothing runs Python code while they are used.
        let (ptr, len): (*const u8, usize) = if let Ok(b) = data.cast_exact::<PyBytes>() {
            let s = b.as_bytes();
            (s.as_ptr(), s.len())
        } else if let Ok(b) = data.cast_exact::<PyByteArray>() {
            // SAFETY: the GIL is held and no Python code runs before the send returns, so
            // the bytearray cannot be resized under us.
            let s = unsafe { b.as_bytes() };
            (s.as_ptr(), s.len())
        } else {
            return Ok(None);
        };
        let fd = fileno(py, sock)?;
        if fd < 0 {
            return Ok(None);
        }
        loop {
            // SAFETY: `ptr`/`len` describe the live buffer borrowed above.
            let r =
                unsafe { crate::syscalls::sys_sendto(fd, ptr.cast(), len, std::ptr::null(), 0) };
            if r >= 0 {
                return Ok(Some(r as usize));
            }
            let e = last_errno();
            if e == libc::EINTR {
                py.check_signals()?;
                continue;
            }
            if would_block(e) {
                return Ok(Some(0));
            }
            return Err(os_error(py, std::io::Error::from_raw_os_error(e)));
        }
    }

    /// asyncio's `_ensure_fd_no_transport` for an fd number: RuntimeError if a live
    /// transport owns it. The registry is the Python-side `_transports` mapping.
    fn ensure_fd_no_transport(&self, slf: &Bound<'_, Self>, fd: i32) -> PyResult<()> {
        let py = slf.py();
        let transports = slf.getattr(pyo3::intern!(py, "_transports"))?;
        if transports.len()? == 0 {
            return Ok(());
        }
        slf.call_method1(pyo3::intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        Ok(())
    }

    /// A watcher handle for `callback()` in a copy of the current context.
    pub(crate) fn new_io_handle<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an exception
        // set; the GIL is held.
        let ctx = unsafe {
            let c = ffi::PyContext_CopyCurrent();
            if c.is_null() {
                return Err(PyErr::fetch(py));
            }
            Bound::from_owned_ptr(py, c)
        };
        let args = pyo3::types::PyTuple::empty(py);
        handles::new_handle(py, callback, &args, slf.as_any(), ctx)
    }
}
