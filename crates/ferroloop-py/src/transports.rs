//! The socket stream transport's native core (asyncio's `_SelectorSocketTransport`).
//!
//! `python/ferroloop/transports.py` defines `SocketTransport`, a subclass of
//! `asyncio.Transport` (libraries check `isinstance`), whose cold methods are Python and
//! whose state and per-packet work live here, in a `TransportCore` it holds:
//!
//! * **Reading.** A level-triggered reader (an ordinary fd watcher whose callback is
//!   `_read_ready`, so it runs in the ready queue in asyncio's order) does one `recv` of up to
//!   256 KiB into a per-thread scratch buffer and hands a `bytes` of the exact size to
//!   `protocol.data_received`; for a `BufferedProtocol` it reads straight into the buffer from
//!   `get_buffer(-1)` and calls `buffer_updated`. End of stream calls `eof_received` and
//!   closes unless it returns true, as asyncio does.
//! * **Writing, batched.** `write()` appends to a queue of chunks (a `bytes` is kept by
//!   reference; any other bytes-like object is copied at once, so mutating a `bytearray`
//!   after `write()` cannot change what is sent) and puts the transport on the loop's flush
//!   list. After each batch of callbacks, before the next poll, the loop flushes every listed
//!   transport with one vectored `sendmsg`: a response written as a header and a body is one
//!   system call and one packet. What the kernel does not take waits for writability, as in
//!   asyncio. Every operation whose outcome depends on what was sent flushes first
//!   (`close`, `abort`, `write_eof`, `get_write_buffer_size`), and so does a `write()` that
//!   takes the queue over the high-water mark, so flow control (`pause_writing` /
//!   `resume_writing`) sees what asyncio's transport would see: the bytes the kernel refused.
//!
//! Errors, logging and the protocol's `connection_lost` are in Python (`_fatal_error`,
//! `_call_connection_lost`); the core calls them.

use std::collections::VecDeque;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString, PyTuple};

use crate::event_loop::LoopCore;
use crate::gil_cell::GilCell;
use crate::transport_common::{propagates, Common, NativeTransport};
use crate::watchers::{os_error, Direction};

/// `asyncio.BufferedProtocol`, looked up once: `set_protocol` runs for every connection, and
/// importing the module and reading the attribute each time cost more than the rest of it.
static BUFFERED_PROTOCOL: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// asyncio's `_SelectorTransport.max_size`: the most one read takes.
const MAX_READ: usize = 256 * 1024;
/// asyncio's default high-water mark (`_FlowControlMixin`).
/// Sends one flush may make when `resume_writing` keeps refilling an emptied queue.
const MAX_FLUSH_ROUNDS: u32 = 16;
/// At most this many chunks go into one `sendmsg` (Linux's `IOV_MAX`).
const MAX_IOV: usize = 1024;

/// Up to this many queued chunks, `send` builds its iovecs on the stack.
const STACK_IOV: usize = 16;

thread_local! {
    static READ_SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(MAX_READ));
}

/// A queued piece of outgoing data.
enum Chunk {
    /// A `bytes` object: immutable, kept by reference.
    Shared(Py<PyBytes>),
    /// A copy of any other bytes-like object.
    Owned(Vec<u8>),
}

impl Chunk {
    fn as_raw(&self, py: Python<'_>) -> (*const u8, usize) {
        match self {
            Chunk::Shared(b) => {
                let s = b.bind(py).as_bytes();
                (s.as_ptr(), s.len())
            }
            Chunk::Owned(v) => (v.as_ptr(), v.len()),
        }
    }
}

/// Outgoing data not yet taken by the kernel.
#[derive(Default)]
struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    offset: usize,
    size: usize,
}

impl WriteQueue {
    fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn push(&mut self, chunk: Chunk, len: usize) {
        self.chunks.push_back(chunk);
        self.size += len;
    }

    /// Sends as much as the kernel takes in one `sendmsg`: `Ok(bytes)` or `Err(errno)`.
    fn send(&mut self, py: Python<'_>, fd: i32) -> Result<usize, i32> {
        // The iovecs live on the stack for the usual few chunks: a heap vector here was a
        // malloc and a free per send, 4 % of an echo request's instructions.
        let count = self.chunks.len().min(MAX_IOV);
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut on_stack = [empty; STACK_IOV];
        let mut on_heap = Vec::new();
        let iov: &mut [libc::iovec] = if count <= STACK_IOV {
            &mut on_stack[..count]
        } else {
            on_heap.resize(count, empty);
            &mut on_heap[..]
        };
        for (i, (slot, c)) in iov.iter_mut().zip(self.chunks.iter()).enumerate() {
            let (ptr, len) = c.as_raw(py);
            let skip = if i == 0 { self.offset } else { 0 };
            *slot = libc::iovec {
                // SAFETY: `skip <= len` (the offset never passes the front chunk's end).
                iov_base: unsafe { ptr.add(skip) } as *mut libc::c_void,
                iov_len: len - skip,
            };
        }
        loop {
            // SAFETY: a zeroed msghdr is valid; we set only the iovec fields, pointing at
            // `iov`, which lives across the call. Each iovec points into a chunk the queue
            // owns (a bytes object kept alive, or a Vec), unchanged during the call.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len() as _;
                crate::syscalls::sys_sendmsg(fd, &msg)
            };
            if n >= 0 {
                self.consume(n as usize, py);
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if e != libc::EINTR {
                return Err(e);
            }
        }
    }

    fn consume(&mut self, mut n: usize, py: Python<'_>) {
        self.size -= n;
        while n > 0 {
            let front_len = self
                .chunks
                .front()
                .expect("sent bytes were queued")
                .as_raw(py)
                .1;
            let left = front_len - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.chunks.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    fn clear(&mut self) -> VecDeque<Chunk> {
        self.size = 0;
        self.offset = 0;
        std::mem::take(&mut self.chunks)
    }
}

#[derive(Default)]
pub(crate) struct TState {
    /// The loop, the `SocketTransport`, the protocol, the fd and the flags and limits every
    /// socket transport has (`read_cb`/`write_cb` are our `_read_ready`/`_write_ready`).
    c: Common,
    /// `protocol.data_received`, or `protocol.buffer_updated` for a BufferedProtocol.
    on_data: Option<Py<PyAny>>,
    /// `protocol.get_buffer` for a BufferedProtocol.
    get_buffer: Option<Py<PyAny>>,
    empty_waiter: Option<Py<PyAny>>,
    eof: bool,
    flush_scheduled: bool,
    queue: WriteQueue,
}

/// A protocol method that was missing (or whose lookup raised) when the protocol was set.
///
/// asyncio calls `data_received`, `get_buffer` and `buffer_updated` by name when data
/// arrives, so a protocol without them (an `asyncio.BaseProtocol` used only to write) works
/// until then and fails then, through `_fatal_error`. The transport caches the bound methods
/// in `set_protocol`; where that lookup fails it caches this instead, which looks the method
/// up again when called and so raises the lookup's error at the moment asyncio would.
#[pyclass(module = "ferroloop._native")]
pub struct LateMethod {
    target: Option<Py<PyAny>>,
    name: Py<PyString>,
}

impl LateMethod {
    /// `getattr(obj, name)`, or a `LateMethod` for it if that raises.
    fn lookup<'py>(
        obj: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match obj.getattr(name) {
            Ok(m) => Ok(m),
            Err(_) => Ok(Bound::new(
                obj.py(),
                LateMethod {
                    target: Some(obj.clone().unbind()),
                    name: name.clone().unbind(),
                },
            )?
            .into_any()),
        }
    }
}

#[pymethods]
impl LateMethod {
    #[pyo3(signature = (*args))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(target) = &self.target else {
            return Err(PyRuntimeError::new_err(
                "protocol method called after it was cleared",
            ));
        };
        target.bind(py).getattr(self.name.bind(py))?.call1(args)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Some(t) = &self.target {
            visit.call(t)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.target = None;
    }
}

/// What a protocol call should be reported as if it fails.
enum Failure {
    Fatal(PyErr, &'static str),
}

#[pyclass(frozen, module = "ferroloop._native")]
pub struct TransportCore {
    st: GilCell<TState>,
}

impl NativeTransport for TransportCore {
    type State = TState;

    fn cell(&self) -> &GilCell<TState> {
        &self.st
    }

    fn common(st: &mut TState) -> &mut Common {
        &mut st.c
    }

    fn buffered(st: &TState) -> usize {
        st.queue.size
    }
}

impl TransportCore {
    /// `transport._fatal_error(exc, message)` (Python: logging, exception handler, then
    /// `_force_close`).
    fn fatal(&self, py: Python<'_>, failure: Failure) -> PyResult<()> {
        let Failure::Fatal(err, message) = failure;
        if propagates(py, &err) {
            return Err(err);
        }
        if let Some(tr) = self.transport(py) {
            tr.call_method1(pyo3::intern!(py, "_fatal_error"), (err.value(py), message))?;
        }
        Ok(())
    }

    /// Asks the loop to flush this transport after the current batch. Outside a running
    /// loop no batch ends before the next poll (which could wait forever for an answer to
    /// these very bytes), so it sends now, as asyncio's `write()` does.
    fn schedule_flush(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lp = {
            let st = slf.get().st.borrow_mut(py);
            if st.flush_scheduled || st.c.writer_registered {
                return Ok(());
            }
            st.c.loop_.as_ref().map(|l| l.clone_ref(py))
        };
        let Some(lp) = lp else { return Ok(()) };
        if !lp.get().is_running_flag() {
            return Self::flush_now(slf, false);
        }
        slf.get().st.borrow_mut(py).flush_scheduled = true;
        lp.get().push_flush(py, slf.clone().unbind());
        Ok(())
    }

    /// One `sendmsg` of what is queued (more while `resume_writing` refills an emptied
    /// queue), then asyncio's bookkeeping: wait for writability if
    /// something is left, or, once everything is out, stop waiting, resume the protocol,
    /// wake a sendfile waiter and finish a pending close or `write_eof`.
    /// `from_writer` is true when called by the writability watcher (asyncio's
    /// `_write_ready`), which is the one place a drained close completes synchronously.
    fn flush_now(slf: &Bound<'_, Self>, from_writer: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // When a send empties the queue and resume_writing refills it, the kernel had room
        // to spare: send again now rather than wait for the next writability event, which
        // would move only the little that a paused protocol may queue (the high-water mark)
        // per poll. Bounded, so one fast writer cannot hold the loop.
        let mut rounds = 0;
        loop {
            let outcome = {
                let mut st = this.st.borrow_mut(py);
                st.flush_scheduled = false;
                if st.c.conn_lost > 0 || st.queue.is_empty() {
                    return Ok(());
                }
                let fd = st.c.fd;
                st.queue.send(py, fd)
            };
            if Self::send_failed(slf, outcome)? {
                return Ok(());
            }
            let drained = this.st.borrow_mut(py).queue.is_empty();
            this.maybe_resume_protocol(py)?; // may write more
            rounds += 1;
            let refilled = {
                let st = this.st.borrow_mut(py);
                st.c.conn_lost == 0 && !st.queue.is_empty()
            };
            if !drained || !refilled || rounds == MAX_FLUSH_ROUNDS {
                break;
            }
        }
        Self::after_send(slf, from_writer)
    }

    /// A send's error, if any, handled as asyncio does (the queue is dropped and the
    /// transport fails); true when the transport failed.
    fn send_failed(slf: &Bound<'_, Self>, outcome: Result<usize, i32>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        match outcome {
            Err(e) if e == libc::EAGAIN || e == libc::EWOULDBLOCK => Ok(false),
            Err(e) => {
                let (dropped, had_writer, waiter) = {
                    let mut st = this.st.borrow_mut(py);
                    let had = std::mem::replace(&mut st.c.writer_registered, false);
                    (
                        st.queue.clear(),
                        had,
                        st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                    )
                };
                drop(dropped);
                if had_writer {
                    this.set_watch(py, Direction::Write, false)?;
                }
                let err = os_error(py, std::io::Error::from_raw_os_error(e));
                let exc = err.value(py).clone();
                this.fatal(
                    py,
                    Failure::Fatal(err, "Fatal write error on socket transport"),
                )?;
                if let Some(w) = waiter {
                    w.bind(py)
                        .call_method1(pyo3::intern!(py, "set_exception"), (exc,))?;
                }
                Ok(true)
            }
            Ok(_) => Ok(false),
        }
    }

    /// After the sends: wait for writability if something is left; otherwise stop waiting,
    /// wake a sendfile waiter and finish a pending close or `write_eof`.
    fn after_send(slf: &Bound<'_, Self>, from_writer: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (empty, had_writer) = {
            let st = this.st.borrow_mut(py);
            (st.queue.is_empty(), st.c.writer_registered)
        };
        if !empty {
            if !had_writer {
                this.st.borrow_mut(py).c.writer_registered = true;
                this.set_watch(py, Direction::Write, true)?;
            }
            return Ok(());
        }
        if had_writer {
            this.st.borrow_mut(py).c.writer_registered = false;
            this.set_watch(py, Direction::Write, false)?;
        }
        let (waiter, closing, eof) = {
            let st = this.st.borrow_mut(py);
            (
                st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                st.c.closing,
                st.eof,
            )
        };
        if let Some(w) = waiter {
            w.bind(py)
                .call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
        }
        if closing {
            if from_writer {
                if let Some(tr) = this.transport(py) {
                    tr.call_method1(pyo3::intern!(py, "_call_connection_lost"), (py.None(),))?;
                }
            } else {
                // close() was called with writes queued in this batch; now that they are
                // out, finish it the way close() does with an empty buffer.
                this.finish_close(py)?;
            }
        } else if eof {
            this.shutdown_write(py)?;
        }
        Ok(())
    }

    fn shutdown_write(&self, py: Python<'_>) -> PyResult<()> {
        let fd = self.st.borrow_mut(py).c.fd;
        // SAFETY: `fd` is our socket's descriptor, open until connection_lost closes it.
        if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
            return Err(os_error(py, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// close() with nothing left to send: schedule `connection_lost(None)`.
    fn finish_close(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.st.borrow_mut(py);
            if st.c.conn_lost > 0 {
                return Ok(());
            }
            st.c.conn_lost += 1;
        }
        let had_writer = std::mem::replace(&mut self.st.borrow_mut(py).c.writer_registered, false);
        if had_writer {
            self.set_watch(py, Direction::Write, false)?;
        }
        self.schedule_connection_lost(py, py.None().into_bound(py))
    }

    fn size(&self, py: Python<'_>) -> usize {
        self.st.borrow_mut(py).queue.size
    }

    fn on_eof(&self, py: Python<'_>) -> PyResult<()> {
        let (protocol, tr) = {
            let st = self.st.borrow_mut(py);
            (
                st.c.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.c.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        if let Some(tr) = &tr {
            tr.bind(py).call_method0(pyo3::intern!(py, "_log_eof"))?;
        }
        let Some(protocol) = protocol else {
            return Ok(());
        };
        let keep_open = match protocol
            .bind(py)
            .call_method0(pyo3::intern!(py, "eof_received"))
            .and_then(|r| r.is_truthy())
        {
            Ok(k) => k,
            Err(err) => {
                return self.fatal(
                    py,
                    Failure::Fatal(err, "Fatal error: protocol.eof_received() call failed."),
                )
            }
        };
        if keep_open {
            self.set_watch(py, Direction::Read, false)
        } else if let Some(tr) = tr {
            tr.bind(py)
                .call_method0(pyo3::intern!(py, "close"))
                .map(|_| ())
        } else {
            Ok(())
        }
    }

    fn read_bytes(&self, py: Python<'_>, fd: i32, on_data: Bound<'_, PyAny>) -> PyResult<()> {
        let got = READ_SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            let spare = buf.spare_capacity_mut();
            loop {
                // SAFETY: `spare` has room for MAX_READ bytes; recv writes at most that.
                let r =
                    unsafe { crate::syscalls::sys_recv(fd, spare.as_mut_ptr().cast(), MAX_READ) };
                if r >= 0 {
                    // SAFETY: recv initialised the first `r` bytes.
                    let data = unsafe {
                        std::slice::from_raw_parts(spare.as_ptr().cast::<u8>(), r as usize)
                    };
                    return Ok(PyBytes::new(py, data));
                }
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if e != libc::EINTR {
                    return Err(e);
                }
            }
        });
        let data = match got {
            Ok(d) => d,
            Err(e) if e == libc::EAGAIN || e == libc::EWOULDBLOCK => return Ok(()),
            Err(e) => {
                let err = os_error(py, std::io::Error::from_raw_os_error(e));
                return self.fatal(
                    py,
                    Failure::Fatal(err, "Fatal read error on socket transport"),
                );
            }
        };
        if data.as_bytes().is_empty() {
            return self.on_eof(py);
        }
        if let Err(err) = on_data.call1((data,)) {
            return self.fatal(
                py,
                Failure::Fatal(err, "Fatal error: protocol.data_received() call failed."),
            );
        }
        Ok(())
    }

    fn read_into_buffer(
        &self,
        py: Python<'_>,
        fd: i32,
        get_buffer: Bound<'_, PyAny>,
        buffer_updated: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let buf = match get_buffer.call1((-1,)).and_then(|b| {
            if b.len()? == 0 {
                Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ))
            } else {
                Ok(b)
            }
        }) {
            Ok(b) => b,
            Err(err) => {
                return self.fatal(
                    py,
                    Failure::Fatal(err, "Fatal error: protocol.get_buffer() call failed."),
                )
            }
        };
        let got = {
            let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
            // SAFETY: PyObject_GetBuffer fills `view` on success (returns 0); we release it
            // right after the read. recv writes at most `len` bytes into the exported,
            // writable memory. No Python code runs in between. `tp_name` of a live object's
            // type is a NUL-terminated string.
            unsafe {
                if ffi::PyObject_GetBuffer(buf.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_WRITABLE)
                    != 0
                {
                    // asyncio passes the buffer to sock.recv_into, whose argument parsing
                    // turns any export failure into this TypeError.
                    drop(PyErr::fetch(py));
                    let name = std::ffi::CStr::from_ptr((*ffi::Py_TYPE(buf.as_ptr())).tp_name);
                    let err = PyTypeError::new_err(format!(
                        "recv_into() argument 1 must be read-write bytes-like object, not {}",
                        name.to_string_lossy()
                    ));
                    return self.fatal(
                        py,
                        Failure::Fatal(err, "Fatal read error on socket transport"),
                    );
                }
                let mut view = view.assume_init();
                let result = loop {
                    let r = crate::syscalls::sys_recv(fd, view.buf, view.len as usize);
                    if r >= 0 {
                        break Ok(r as usize);
                    }
                    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    if e != libc::EINTR {
                        break Err(e);
                    }
                };
                ffi::PyBuffer_Release(&mut view);
                result
            }
        };
        let n = match got {
            Ok(n) => n,
            Err(e) if e == libc::EAGAIN || e == libc::EWOULDBLOCK => return Ok(()),
            Err(e) => {
                let err = os_error(py, std::io::Error::from_raw_os_error(e));
                return self.fatal(
                    py,
                    Failure::Fatal(err, "Fatal read error on socket transport"),
                );
            }
        };
        if n == 0 {
            return self.on_eof(py);
        }
        if let Err(err) = buffer_updated.call1((n,)) {
            return self.fatal(
                py,
                Failure::Fatal(err, "Fatal error: protocol.buffer_updated() call failed."),
            );
        }
        Ok(())
    }
}

impl TransportCore {
    /// End-of-batch flush (the loop calls it for every transport on its flush list).
    pub(crate) fn flush_after_batch(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush_now(slf, false)
    }

    /// The readability watcher's callback, installed on the class as `_read_ready`
    /// (`fastcall.rs`).
    pub(crate) fn read_ready(&self, py: Python<'_>) -> PyResult<()> {
        let (fd, on_data, get_buffer) = {
            let st = self.st.borrow_mut(py);
            if st.c.conn_lost > 0 {
                return Ok(());
            }
            let Some(on_data) = st.on_data.as_ref() else {
                return Ok(());
            };
            (
                st.c.fd,
                on_data.clone_ref(py).into_bound(py),
                st.get_buffer
                    .as_ref()
                    .map(|g| g.clone_ref(py).into_bound(py)),
            )
        };
        match get_buffer {
            Some(gb) => self.read_into_buffer(py, fd, gb, on_data),
            None => self.read_bytes(py, fd, on_data),
        }
    }

    /// `transport.write(data)`, installed on the class as `write` (`fastcall.rs`: it runs
    /// once or twice per response, and PyO3's argument parser was a tenth of its cost).
    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // An exact `bytes` is immutable and has no finaliser, so the queue may hold it (and
        // drop it inside a borrow); anything else is copied.
        let (chunk, len) = if let Ok(b) = data.cast_exact::<PyBytes>() {
            let len = b.as_bytes().len();
            (Chunk::Shared(b.clone().unbind()), len)
        } else if data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>()
        {
            let copy = copy_buffer(py, data)?;
            let len = copy.len();
            (Chunk::Owned(copy), len)
        } else {
            // asyncio 3.14 names the accepted types in the message.
            let expected = if py.version_info() >= (3, 14) {
                "a bytes, bytearray, or memoryview object"
            } else {
                "a bytes-like object"
            };
            return Err(PyTypeError::new_err(format!(
                "data argument must be {expected}, not {}",
                data.get_type().name()?.repr()?
            )));
        };
        {
            let mut st = this.st.borrow_mut(py);
            if st.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if st.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
            if len == 0 {
                return Ok(());
            }
            if st.c.conn_lost > 0 {
                let warn = st.c.conn_lost >= 5; // asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES
                st.c.conn_lost += 1;
                drop(st);
                if warn {
                    py.import("logging")?
                        .call_method1("getLogger", ("asyncio",))?
                        .call_method1("warning", ("socket.send() raised exception.",))?;
                }
                return Ok(());
            }
            st.queue.push(chunk, len);
        }
        let (over, waiting) = {
            let st = this.st.borrow_mut(py);
            (st.queue.size as f64 > st.c.high, st.c.writer_registered)
        };
        if over && !waiting {
            // Flow control must see what the kernel refuses: send now.
            Self::flush_now(slf, false)?;
        } else if !waiting {
            Self::schedule_flush(slf)?;
        }
        this.maybe_pause_protocol(py)
    }
}

#[pymethods]
impl TransportCore {
    #[new]
    fn new(
        py: Python<'_>,
        loop_: Bound<'_, LoopCore>,
        transport: Bound<'_, PyAny>,
        fd: i32,
    ) -> PyResult<Self> {
        let _ = py;
        Ok(Self {
            st: GilCell::new(TState {
                c: Common::new(loop_.unbind(), transport.unbind(), fd),
                ..TState::default()
            }),
        })
    }

    /// Binds the watcher callbacks (once the core object exists).
    fn _bind_callbacks(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let read = slf.getattr(pyo3::intern!(py, "_read_ready"))?.unbind();
        let write = slf.getattr(pyo3::intern!(py, "_write_ready"))?.unbind();
        let mut st = slf.get().st.borrow_mut(py);
        st.c.read_cb = Some(read);
        st.c.write_cb = Some(write);
        Ok(())
    }

    /// asyncio's `set_protocol`: a BufferedProtocol is read into its own buffers.
    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let buffered_cls = BUFFERED_PROTOCOL.get_or_try_init(py, || {
            py.import("asyncio")?
                .getattr("BufferedProtocol")
                .map(Bound::unbind)
        })?;
        let (on_data, get_buffer) = if protocol.is_instance(buffered_cls.bind(py))? {
            (
                LateMethod::lookup(&protocol, pyo3::intern!(py, "buffer_updated"))?,
                Some(LateMethod::lookup(&protocol, pyo3::intern!(py, "get_buffer"))?.unbind()),
            )
        } else {
            (
                LateMethod::lookup(&protocol, pyo3::intern!(py, "data_received"))?,
                None,
            )
        };
        let mut st = self.st.borrow_mut(py);
        st.c.protocol = Some(protocol.unbind());
        st.on_data = Some(on_data.unbind());
        st.get_buffer = get_buffer;
        st.c.protocol_connected = true;
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol_or_none(py)
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.closing(py)
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.reading(py)
    }

    /// The reader asyncio adds after `connection_made` (only if still reading).
    fn _start_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.start_reading(py)
    }

    /// Whether reading stopped (false if it was not reading).
    fn pause_reading(&self, py: Python<'_>) -> PyResult<bool> {
        self.pause(py)
    }

    /// Whether reading resumed (false if it was not paused or is closing).
    fn resume_reading(&self, py: Python<'_>) -> PyResult<bool> {
        self.resume(py)
    }

    /// The writability watcher's callback.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::flush_now(slf, true)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        for item in list_of_data.try_iter()? {
            Self::write(slf, &item?)?;
        }
        Ok(())
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::flush_now(slf, false)?;
        let this = slf.get();
        {
            let mut st = this.st.borrow_mut(py);
            if st.c.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            if !st.queue.is_empty() {
                return Ok(());
            }
        }
        this.shutdown_write(py)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.st.borrow_mut(py).c.closing {
            return Ok(());
        }
        Self::flush_now(slf, false)?;
        {
            let mut st = this.st.borrow_mut(py);
            if st.c.closing {
                return Ok(());
            }
            st.c.closing = true;
        }
        this.set_watch(py, Direction::Read, false)?;
        if this.st.borrow_mut(py).queue.is_empty() {
            this.finish_close(py)?;
        }
        Ok(())
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        // What asyncio would already have handed to the kernel at write() time goes out.
        Self::flush_now(slf, false)?;
        slf.get()._force_close(py, py.None().into_bound(py))
    }

    /// asyncio's `_force_close`: drop what is queued, stop watching, and schedule
    /// `connection_lost(exc)` (once).
    fn _force_close(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let (dropped, had_writer, was_closing) = {
            let mut st = self.st.borrow_mut(py);
            if st.c.conn_lost > 0 {
                return Ok(());
            }
            let had = std::mem::replace(&mut st.c.writer_registered, false);
            let was = std::mem::replace(&mut st.c.closing, true);
            st.c.conn_lost += 1;
            (st.queue.clear(), had, was)
        };
        drop(dropped);
        if had_writer {
            self.set_watch(py, Direction::Write, false)?;
        }
        if !was_closing {
            self.set_watch(py, Direction::Read, false)?;
        }
        self.schedule_connection_lost(py, exc)
    }

    fn get_write_buffer_size(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::flush_now(slf, false)?;
        Ok(slf.get().size(slf.py()))
    }

    /// Size without flushing (for repr).
    fn _buffer_size(&self, py: Python<'_>) -> usize {
        self.size(py)
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        self.limits(py)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        &self,
        py: Python<'_>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.set_limits(py, high, low)
    }

    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.st.borrow_mut(py).empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        Self::flush_now(slf, false)?;
        let Some(lp) = this.loop_core(py) else {
            return Err(PyRuntimeError::new_err("transport is closed"));
        };
        let fut = lp.call_method0(pyo3::intern!(py, "create_future"))?;
        let empty = this.st.borrow_mut(py).queue.is_empty();
        if empty {
            fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),))?;
        }
        this.st.borrow_mut(py).empty_waiter = Some(fut.clone().unbind());
        Ok(fut.unbind())
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        self.st.borrow_mut(py).empty_waiter = None;
    }

    fn _take_empty_waiter(&self, py: Python<'_>) -> Py<PyAny> {
        self.st
            .borrow_mut(py)
            .empty_waiter
            .take()
            .map(|w| w.into_any())
            .unwrap_or_else(|| py.None())
    }

    /// `(reading, writing)`: whether each watcher is registered (for repr).
    fn _polling(&self, py: Python<'_>) -> (bool, bool) {
        self.polling(py)
    }

    /// Whether the protocol was told to pause writing (asyncio's `_protocol_paused`).
    fn _protocol_paused(&self, py: Python<'_>) -> bool {
        self.protocol_paused(py)
    }

    /// Whether connection_lost is still to be called (`_protocol_connected`).
    fn _protocol_connected(&self, py: Python<'_>) -> bool {
        self.protocol_connected(py)
    }

    /// After `connection_lost`: let go of everything (breaks the transport/protocol cycle).
    fn _release(&self, py: Python<'_>) {
        let mut old = std::mem::take(&mut *self.st.borrow_mut(py));
        let mut st = self.st.borrow_mut(py);
        st.c = old.c.released(old.c.fd);
        st.eof = old.eof;
        drop(st);
        drop(old);
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        let Some(st) = self.st.try_borrow_unguarded() else {
            return Ok(()); // busy: what it holds stays alive this round, which is safe
        };
        let own = [&st.on_data, &st.get_buffer, &st.empty_waiter];
        for obj in st.c.objects().chain(own.into_iter().flatten()) {
            visit.call(obj)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        // SAFETY: the collector calls tp_clear with the GIL held.
        let py = unsafe { Python::assume_attached() };
        if let Some(mut st) = self.st.try_borrow_mut(py) {
            let old = std::mem::take(&mut *st);
            drop(st);
            drop(old);
        }
    }
}

/// A copy of the bytes of any C-contiguous buffer (a snapshot of a `bytearray`/`memoryview`).
fn copy_buffer(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: on success PyObject_GetBuffer fills `view`; we copy `len` bytes from `buf` and
    // release the view before returning. No Python code runs while the view is held.
    unsafe {
        if ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) != 0 {
            return Err(PyErr::fetch(py));
        }
        let mut view = view.assume_init();
        let data = std::slice::from_raw_parts(view.buf as *const u8, view.len as usize).to_vec();
        ffi::PyBuffer_Release(&mut view);
        Ok(data)
    }
}
