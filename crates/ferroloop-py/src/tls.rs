//! The hot data path of an established TLS connection, native (design.md §5.24).
//!
//! Why this file exists: ferroloop runs asyncio's own `asyncio.sslproto.SSLProtocol` for TLS
//! (handshake, shutdown, timeouts, errors, `start_tls`, TLS over TLS), and that protocol's
//! per-record Python — a ciphertext record in, plaintext to the application, the answer
//! encrypted and handed to the socket transport — cost more than twice what the `ssl` calls
//! themselves cost. `TlsFastPath` is the same per-record logic, method for method, in Rust:
//! `python/ferroloop/tls.py` binds its methods onto one `SSLProtocol` instance (and `write`
//! onto its `_SSLProtocolTransport`) under asyncio's own names, so asyncio's Python code,
//! which calls `self._do_read()`, `self._process_outgoing()` and so on, reaches the native
//! versions too, and the native versions read and write the protocol's own attributes
//! (`_state`, `_write_backlog`, `_app_reading_paused`, ...) exactly where asyncio's do.
//!
//! The native path runs only in the `WRAPPED` state with nothing unusual around it; anything
//! else (another state, a write backlog, a flow-control mark crossed) calls asyncio's own
//! function from the `SSLProtocol` class, so cold behaviour is asyncio's by construction.
//! The cryptography is the connection's `ssl.SSLObject` (its `_ssl` object is called directly,
//! which is all `SSLObject.read`/`write` do; `tls.py` installs the fast path only for an
//! exact `ssl.SSLObject`, so a custom `sslobject_class` keeps its own methods).
//!
//! One deliberate shortcut, equivalent by OpenSSL's contract: after a successful read, when
//! neither the incoming BIO nor the `SSLObject` holds a byte (`pending`), the next `read`
//! could only raise `SSLWantReadError`, so it is not made (asyncio makes it and catches the
//! exception; that exception was 0.8 µs of a 1 KiB echo's record layer).
//!
//! The fast path holds the protocol and the application transport by weak reference, so it
//! adds no reference cycle: once `connection_lost` has run, the protocol is freed by
//! reference counting as asyncio's is.

use std::cell::RefCell;
use std::os::raw::c_char;

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyTuple, PyWeakrefReference};

/// The most plaintext one `SSLObject.read` returns is one record (16 KiB); the scratch
/// buffer starts at asyncio's `max_size` and grows when a read might not fit.
const SCRATCH_START: usize = 256 * 1024;

thread_local! {
    /// Plaintext read by the copying path, before it becomes one `bytes` for
    /// `data_received`. Per thread: each loop thread has its own, and no Python code runs on
    /// this thread while it is lent to `_ssl` (the read releases the GIL, but only other
    /// threads run then, with their own buffers).
    static PLAINTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What every fast path shares: asyncio's state enum members, its `SSLAgainErrors`, and the
/// original Python functions the cold cases go to. Made once by `tls.py`.
#[pyclass(frozen, module = "ferroloop._native")]
pub(crate) struct TlsConsts {
    do_handshake: Py<PyAny>,
    wrapped: Py<PyAny>,
    flushing: Py<PyAny>,
    shutdown: Py<PyAny>,
    /// `asyncio.sslproto.SSLAgainErrors`: `(SSLWantReadError, SSLSyscallError)`.
    again: Py<PyAny>,
    /// `SSLProtocol._do_read`, `_write_appdata`, `_control_app_writing`,
    /// `_control_ssl_reading`, `get_buffer` and `_SSLProtocolTransport.write`: asyncio's own.
    orig_do_read: Py<PyAny>,
    orig_write_appdata: Py<PyAny>,
    orig_control_app_writing: Py<PyAny>,
    orig_control_ssl_reading: Py<PyAny>,
    orig_get_buffer: Py<PyAny>,
    orig_app_write: Py<PyAny>,
}

#[pymethods]
impl TlsConsts {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        do_handshake: Py<PyAny>,
        wrapped: Py<PyAny>,
        flushing: Py<PyAny>,
        shutdown: Py<PyAny>,
        again: Py<PyAny>,
        orig_do_read: Py<PyAny>,
        orig_write_appdata: Py<PyAny>,
        orig_control_app_writing: Py<PyAny>,
        orig_control_ssl_reading: Py<PyAny>,
        orig_get_buffer: Py<PyAny>,
        orig_app_write: Py<PyAny>,
    ) -> Self {
        Self {
            do_handshake,
            wrapped,
            flushing,
            shutdown,
            again,
            orig_do_read,
            orig_write_appdata,
            orig_control_app_writing,
            orig_control_ssl_reading,
            orig_get_buffer,
            orig_app_write,
        }
    }
}

/// The native data path of one `SSLProtocol` (see the file comment).
#[pyclass(frozen, module = "ferroloop._native")]
pub(crate) struct TlsFastPath {
    proto: Py<PyWeakrefReference>,
    app: Py<PyWeakrefReference>,
    incoming: Py<PyAny>,
    outgoing: Py<PyAny>,
    /// The `SSLObject`'s `_ssl._SSLSocket`, and its bound methods.
    ssl_read: Py<PyAny>,
    ssl_write: Py<PyAny>,
    ssl_pending: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    /// `SSLProtocol.max_size` as the instance saw it when the path was installed.
    max_size: usize,
    k: Py<TlsConsts>,
}

/// An error that asyncio's `except Exception` would catch (not `KeyboardInterrupt`,
/// `SystemExit` or another bare `BaseException`).
fn is_exception(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyException>(py)
}

/// A Python object's truth value, as an `if` would see it.
fn truthy(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    v.is_truthy()
}

/// A small non-negative int as `i64`; `None` for anything else (floats, big ints, objects),
/// which then takes asyncio's own code.
fn small_int(v: &Bound<'_, PyAny>) -> Option<i64> {
    if v.is_exact_instance_of::<pyo3::types::PyInt>() {
        v.extract::<i64>().ok()
    } else {
        None
    }
}

impl TlsFastPath {
    fn k(&self, _py: Python<'_>) -> &TlsConsts {
        self.k.get()
    }

    fn proto<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        use pyo3::types::PyWeakrefMethods;
        self.proto.bind(py).upgrade()
    }

    fn is_again(&self, py: Python<'_>, err: &PyErr) -> bool {
        err.matches(py, self.k(py).again.bind(py)).unwrap_or(false)
    }

    fn pending(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
        obj.getattr(pyo3::intern!(obj.py(), "pending"))?.extract()
    }

    /// Nothing left to read: the incoming BIO and the `SSLObject` are both empty.
    fn drained(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(Self::pending(self.incoming.bind(py))? == 0
            && self.ssl_pending.bind(py).call0()?.extract::<usize>()? == 0)
    }

    /// `SSLProtocol.buffer_updated`.
    fn buffer_updated_impl(&self, py: Python<'_>, nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(proto) = self.proto(py) else {
            return Ok(());
        };
        // self._incoming.write(self._ssl_buffer_view[:nbytes])
        let buffer = proto.getattr(pyo3::intern!(py, "_ssl_buffer"))?;
        let chunk = match (buffer.cast_exact::<PyByteArray>(), small_int(nbytes)) {
            (Ok(ba), Some(n)) if n >= 0 && (n as usize) <= ba.len() => {
                // SAFETY: the bytearray is alive (`buffer` holds it) and is not resized while
                // the view exists: the view goes only to MemoryBIO.write, which copies it
                // and runs no Python code; the view is dropped right after.
                unsafe {
                    let ptr = ffi::PyByteArray_AsString(ba.as_ptr());
                    Bound::from_owned_ptr_or_err(
                        py,
                        ffi::PyMemoryView_FromMemory(ptr as *mut c_char, n as isize, ffi::PyBUF_READ),
                    )?
                }
            }
            _ => {
                // Not a plain bytearray and int: asyncio's expression, literally.
                let view = proto.getattr(pyo3::intern!(py, "_ssl_buffer_view"))?;
                let slice = py
                    .get_type::<pyo3::types::PySlice>()
                    .call1((py.None(), nbytes))?;
                view.get_item(slice)?
            }
        };
        self.incoming_write.bind(py).call1((chunk,))?;
        let k = self.k(py);
        let state = proto.getattr(pyo3::intern!(py, "_state"))?;
        if state.is(k.do_handshake.bind(py)) {
            proto.call_method0(pyo3::intern!(py, "_do_handshake"))?;
        } else if state.is(k.wrapped.bind(py)) {
            self.do_read_impl(py, &proto)?;
        } else if state.is(k.flushing.bind(py)) {
            proto.call_method0(pyo3::intern!(py, "_do_flush"))?;
        } else if state.is(k.shutdown.bind(py)) {
            proto.call_method0(pyo3::intern!(py, "_do_shutdown"))?;
        }
        Ok(())
    }

    /// `SSLProtocol._do_read`; natively in the `WRAPPED` state, asyncio's otherwise.
    fn do_read_impl(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = self.k(py);
        let state = proto.getattr(pyo3::intern!(py, "_state"))?;
        if !state.is(k.wrapped.bind(py)) {
            k.orig_do_read.bind(py).call1((proto,))?;
            return Ok(());
        }
        let result = (|| -> PyResult<()> {
            if !truthy(&proto.getattr(pyo3::intern!(py, "_app_reading_paused"))?)? {
                if truthy(&proto.getattr(pyo3::intern!(py, "_app_protocol_is_buffer"))?)? {
                    self.read_buffered(py, proto)?;
                } else {
                    self.read_copied(py, proto)?;
                }
                if truthy(&proto.getattr(pyo3::intern!(py, "_write_backlog"))?)? {
                    self.do_write_impl(py, proto)?;
                } else {
                    self.process_outgoing_impl(py, proto)?;
                }
            }
            self.control_ssl_reading_impl(py, proto)
        })();
        match result {
            Err(err) if is_exception(py, &err) => {
                proto.call_method1(
                    pyo3::intern!(py, "_fatal_error"),
                    (err.into_value(py), "Fatal error on SSL protocol"),
                )?;
                Ok(())
            }
            other => other,
        }
    }

    /// `SSLProtocol._do_read__copied`: everything readable, one `data_received(bytes)`.
    fn read_copied(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        let max = self.max_size;
        let ssl_read = self.ssl_read.bind(py);
        let mut eof = false;
        let (read_result, data) = PLAINTEXT.with(|cell| {
            let mut guard = cell.try_borrow_mut();
            let mut local = Vec::new();
            let buf: &mut Vec<u8> = match guard {
                Ok(ref mut g) => g,
                Err(_) => &mut local,
            };
            let mut total = 0usize;
            let result = (|| -> PyResult<()> {
                loop {
                    if buf.len() < total + max {
                        buf.resize((total + max).max(SCRATCH_START), 0);
                    }
                    // SAFETY: `buf` has at least `total + max` initialised bytes and is
                    // neither resized nor dropped while the view exists; the view goes only
                    // to `_ssl`'s read, which writes at most `max` bytes into it and keeps no
                    // reference; it is dropped before the next resize.
                    let view = unsafe {
                        Bound::from_owned_ptr_or_err(
                            py,
                            ffi::PyMemoryView_FromMemory(
                                buf.as_mut_ptr().add(total) as *mut c_char,
                                max as isize,
                                ffi::PyBUF_WRITE,
                            ),
                        )?
                    };
                    let n: usize = ssl_read.call1((max, &view))?.extract()?;
                    drop(view);
                    if n == 0 {
                        eof = true;
                        return Ok(());
                    }
                    total += n;
                    if self.drained(py)? {
                        return Ok(());
                    }
                }
            })();
            let data = if total > 0 {
                Some(PyBytes::new(py, &buf[..total]))
            } else {
                None
            };
            (result, data)
        });
        if let Err(err) = read_result {
            if !self.is_again(py, &err) {
                return Err(err);
            }
        }
        if let Some(data) = data {
            proto
                .getattr(pyo3::intern!(py, "_app_protocol"))?
                .call_method1(pyo3::intern!(py, "data_received"), (data,))?;
        }
        if eof {
            self.close_notify(py, proto)?;
        }
        Ok(())
    }

    /// `SSLProtocol._do_read__buffered`: read into the application's buffer.
    fn read_buffered(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        let ssl_read = self.ssl_read.bind(py);
        let mut offset = 0usize;
        let mut count = 1usize;
        let size = Self::pending(self.incoming.bind(py))?;
        let buf = proto
            .getattr(pyo3::intern!(py, "_app_protocol_get_buffer"))?
            .call1((size,))?;
        let wants = buf.len()?;
        let result = (|| -> PyResult<()> {
            count = ssl_read.call1((wants, &buf))?.extract()?;
            if count > 0 {
                offset = count;
                while offset < wants {
                    if self.drained(py)? {
                        // The next read could only raise SSLWantReadError.
                        return Ok(());
                    }
                    let rest = buf.get_item(pyo3::types::PySlice::new(py, offset as isize, isize::MAX, 1))?;
                    count = ssl_read.call1((wants - offset, rest))?.extract()?;
                    if count > 0 {
                        offset += count;
                    } else {
                        return Ok(());
                    }
                }
                // The buffer is full: read the rest in a later callback.
                let do_read = proto.getattr(pyo3::intern!(py, "_do_read"))?;
                proto
                    .getattr(pyo3::intern!(py, "_loop"))?
                    .call_method1(pyo3::intern!(py, "call_soon"), (do_read,))?;
            }
            Ok(())
        })();
        if let Err(err) = result {
            if !self.is_again(py, &err) {
                return Err(err);
            }
        }
        if offset > 0 {
            proto
                .getattr(pyo3::intern!(py, "_app_protocol_buffer_updated"))?
                .call1((offset,))?;
        }
        if count == 0 {
            self.close_notify(py, proto)?;
        }
        Ok(())
    }

    /// The peer's `close_notify`: `eof_received` for the application, then shutdown.
    fn close_notify(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        proto.call_method0(pyo3::intern!(py, "_call_eof_received"))?;
        proto.call_method0(pyo3::intern!(py, "_start_shutdown"))?;
        Ok(())
    }

    /// `SSLProtocol._do_write`: encrypt the backlog, then `_process_outgoing`.
    fn do_write_impl(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        let backlog = proto.getattr(pyo3::intern!(py, "_write_backlog"))?;
        let ssl_write = self.ssl_write.bind(py);
        let result = (|| -> PyResult<()> {
            while truthy(&backlog)? {
                let data = backlog.get_item(0)?;
                let count: usize = ssl_write.call1((&data,))?.extract()?;
                let data_len = data.len()?;
                if count < data_len {
                    let rest = data.get_item(pyo3::types::PySlice::new(py, count as isize, isize::MAX, 1))?;
                    backlog.set_item(0, rest)?;
                    self.add_buffer_size(py, proto, -(count as i64))?;
                } else {
                    backlog.call_method0(pyo3::intern!(py, "popleft"))?;
                    self.add_buffer_size(py, proto, -(data_len as i64))?;
                }
            }
            Ok(())
        })();
        if let Err(err) = result {
            if !self.is_again(py, &err) {
                return Err(err);
            }
        }
        self.process_outgoing_impl(py, proto)
    }

    /// `self._write_buffer_size += delta`, with Python's arithmetic.
    fn add_buffer_size(&self, py: Python<'_>, proto: &Bound<'_, PyAny>, delta: i64) -> PyResult<()> {
        let name = pyo3::intern!(py, "_write_buffer_size");
        let size = proto.getattr(name)?;
        let new = match small_int(&size) {
            Some(n) => (n + delta).into_pyobject(py)?.into_any(),
            None => size.add(delta)?,
        };
        proto.setattr(name, new)
    }

    /// `SSLProtocol._process_outgoing`: the encrypted bytes to the socket transport.
    fn process_outgoing_impl(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        if !truthy(&proto.getattr(pyo3::intern!(py, "_ssl_writing_paused"))?)? {
            // asyncio reads the BIO even when it is empty and skips an empty result.
            if Self::pending(self.outgoing.bind(py))? > 0 {
                let data = self.outgoing_read.bind(py).call0()?;
                proto
                    .getattr(pyo3::intern!(py, "_transport"))?
                    .call_method1(pyo3::intern!(py, "write"), (data,))?;
            }
        }
        self.control_app_writing_impl(py, proto)
    }

    /// `SSLProtocol._control_app_writing`: asyncio's own whenever a mark is crossed.
    fn control_app_writing_impl(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = proto.getattr(pyo3::intern!(py, "_write_buffer_size"))?;
        let high = proto.getattr(pyo3::intern!(py, "_outgoing_high_water"))?;
        let low = proto.getattr(pyo3::intern!(py, "_outgoing_low_water"))?;
        if let (Some(buffered), Some(high), Some(low)) =
            (small_int(&buffered), small_int(&high), small_int(&low))
        {
            let size = Self::pending(self.outgoing.bind(py))? as i64 + buffered;
            let paused = truthy(&proto.getattr(pyo3::intern!(py, "_app_writing_paused"))?)?;
            if !((size >= high && !paused) || (size <= low && paused)) {
                return Ok(());
            }
        }
        self.k(py).orig_control_app_writing.bind(py).call1((proto,))?;
        Ok(())
    }

    /// `SSLProtocol._control_ssl_reading`: asyncio's own whenever a mark is crossed.
    fn control_ssl_reading_impl(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<()> {
        let high = proto.getattr(pyo3::intern!(py, "_incoming_high_water"))?;
        let low = proto.getattr(pyo3::intern!(py, "_incoming_low_water"))?;
        if let (Some(high), Some(low)) = (small_int(&high), small_int(&low)) {
            let size = Self::pending(self.incoming.bind(py))? as i64;
            let paused = truthy(&proto.getattr(pyo3::intern!(py, "_ssl_reading_paused"))?)?;
            if !((size >= high && !paused) || (size <= low && paused)) {
                return Ok(());
            }
        }
        self.k(py).orig_control_ssl_reading.bind(py).call1((proto,))?;
        Ok(())
    }

    /// `SSLProtocol._write_appdata((data,))` for one bytes-like `data` in the `WRAPPED`
    /// state with an empty backlog: encrypt it at once.
    fn write_one(&self, py: Python<'_>, proto: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data_len = data.len()?;
        let result = (|| -> PyResult<()> {
            let backlog = proto.getattr(pyo3::intern!(py, "_write_backlog"))?;
            // asyncio appends to the backlog, then `_do_write` encrypts and removes it; only
            // what is left over is put in the backlog here, with the same size accounting.
            match self.ssl_write.bind(py).call1((data,)) {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count < data_len {
                        let rest = data.get_item(pyo3::types::PySlice::new(py, count as isize, isize::MAX, 1))?;
                        backlog.call_method1(pyo3::intern!(py, "append"), (rest,))?;
                        self.add_buffer_size(py, proto, (data_len - count) as i64)?;
                    }
                }
                Err(err) => {
                    backlog.call_method1(pyo3::intern!(py, "append"), (data,))?;
                    self.add_buffer_size(py, proto, data_len as i64)?;
                    if !self.is_again(py, &err) {
                        return Err(err);
                    }
                }
            }
            self.process_outgoing_impl(py, proto)
        })();
        match result {
            Err(err) if is_exception(py, &err) => {
                proto.call_method1(
                    pyo3::intern!(py, "_fatal_error"),
                    (err.into_value(py), "Fatal error on SSL protocol"),
                )?;
                Ok(())
            }
            other => other,
        }
    }

    /// Whether `write_one` may stand in for asyncio's `_write_appdata` now.
    fn can_write_one(&self, py: Python<'_>, proto: &Bound<'_, PyAny>) -> PyResult<bool> {
        let state = proto.getattr(pyo3::intern!(py, "_state"))?;
        if !state.is(self.k(py).wrapped.bind(py)) {
            return Ok(false);
        }
        Ok(!truthy(&proto.getattr(pyo3::intern!(py, "_write_backlog"))?)?)
    }
}

#[pymethods]
impl TlsFastPath {
    #[new]
    fn new(
        proto: &Bound<'_, PyAny>,
        app_transport: &Bound<'_, PyAny>,
        consts: Py<TlsConsts>,
    ) -> PyResult<Self> {
        let sslobj = proto.getattr("_sslobj")?;
        let ssl = sslobj.getattr("_sslobj")?;
        let incoming = proto.getattr("_incoming")?;
        let outgoing = proto.getattr("_outgoing")?;
        Ok(Self {
            proto: PyWeakrefReference::new(proto)?.unbind(),
            app: PyWeakrefReference::new(app_transport)?.unbind(),
            ssl_read: ssl.getattr("read")?.unbind(),
            ssl_write: ssl.getattr("write")?.unbind(),
            ssl_pending: ssl.getattr("pending")?.unbind(),
            incoming_write: incoming.getattr("write")?.unbind(),
            outgoing_read: outgoing.getattr("read")?.unbind(),
            incoming: incoming.unbind(),
            outgoing: outgoing.unbind(),
            max_size: proto.getattr("max_size")?.extract()?,
            k: consts,
        })
    }

    /// `SSLProtocol.get_buffer(n)`.
    fn get_buffer<'py>(&self, py: Python<'py>, n: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let Some(proto) = self.proto(py) else {
            return Err(pyo3::exceptions::PyReferenceError::new_err("SSLProtocol is gone"));
        };
        if let Some(want) = small_int(n) {
            let want = if want <= 0 || want as usize > self.max_size {
                self.max_size
            } else {
                want as usize
            };
            let buffer = proto.getattr(pyo3::intern!(py, "_ssl_buffer"))?;
            if buffer.len()? >= want {
                return proto.getattr(pyo3::intern!(py, "_ssl_buffer_view"));
            }
        }
        self.k(py).orig_get_buffer.bind(py).call1((proto, n))
    }

    /// `SSLProtocol.buffer_updated(nbytes)`.
    fn buffer_updated(&self, py: Python<'_>, nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
        self.buffer_updated_impl(py, nbytes)
    }

    /// `SSLProtocol._do_read()`.
    fn _do_read(&self, py: Python<'_>) -> PyResult<()> {
        match self.proto(py) {
            Some(proto) => self.do_read_impl(py, &proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._do_write()`.
    fn _do_write(&self, py: Python<'_>) -> PyResult<()> {
        match self.proto(py) {
            Some(proto) => self.do_write_impl(py, &proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._process_outgoing()`.
    fn _process_outgoing(&self, py: Python<'_>) -> PyResult<()> {
        match self.proto(py) {
            Some(proto) => self.process_outgoing_impl(py, &proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._control_app_writing()`.
    fn _control_app_writing(&self, py: Python<'_>) -> PyResult<()> {
        match self.proto(py) {
            Some(proto) => self.control_app_writing_impl(py, &proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._control_ssl_reading()`.
    fn _control_ssl_reading(&self, py: Python<'_>) -> PyResult<()> {
        match self.proto(py) {
            Some(proto) => self.control_ssl_reading_impl(py, &proto),
            None => Ok(()),
        }
    }

    /// `SSLProtocol._write_appdata(list_of_data)`: one item natively, else asyncio's.
    fn _write_appdata(&self, py: Python<'_>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(proto) = self.proto(py) else {
            return Ok(());
        };
        if let Ok(t) = list_of_data.cast_exact::<PyTuple>() {
            if t.len() == 1 {
                let data = t.get_item(0)?;
                if is_bytes_like(&data) && self.can_write_one(py, &proto)? {
                    return self.write_one(py, &proto, &data);
                }
            }
        }
        self.k(py)
            .orig_write_appdata
            .bind(py)
            .call1((proto, list_of_data))?;
        Ok(())
    }

    /// `_SSLProtocolTransport.write(data)`, bound on the application transport.
    fn app_write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        use pyo3::types::PyWeakrefMethods;
        let Some(app) = self.app.bind(py).upgrade() else {
            return Ok(());
        };
        if !is_bytes_like(data) {
            return Err(PyTypeError::new_err(format!(
                "data: expecting a bytes-like instance, got {}",
                data.get_type().name()?
            )));
        }
        if !truthy(data)? {
            return Ok(());
        }
        let ssl_protocol = app.getattr(pyo3::intern!(py, "_ssl_protocol"))?;
        if let Some(proto) = self.proto(py) {
            if ssl_protocol.is(&proto) && self.can_write_one(py, &proto)? {
                return self.write_one(py, &proto, data);
            }
        }
        if ssl_protocol.is_none() {
            // asyncio's `self._ssl_protocol._write_appdata(...)` on None.
            self.k(py).orig_app_write.bind(py).call1((app, data))?;
            return Ok(());
        }
        ssl_protocol.call_method1(
            pyo3::intern!(py, "_write_appdata"),
            (PyTuple::new(py, [data])?,),
        )?;
        Ok(())
    }
}

/// `isinstance(data, (bytes, bytearray, memoryview))`.
fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>()
}
