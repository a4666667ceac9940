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
//! Two deliberate shortcuts, with the same outcome as asyncio's code: after a successful read,
//! when neither the incoming BIO nor the `SSLObject` holds a byte (`pending`), the next `read`
//! could only raise `SSLWantReadError` (OpenSSL reads a record from the BIO only when it
//! needs it; a partial record left inside it cannot complete without new bytes), so it is not
//! made (asyncio makes it and catches the exception: 14 % of its record layer at 1 KiB); and
//! the copying path reads plaintext into the protocol's own `_ssl_buffer` (dead once
//! `buffer_updated` has copied its ciphertext into the BIO) instead of letting each read
//! allocate `max_size` (256 KiB) bytes. `tests/test_tls_native_differential.py` drives this
//! path and asyncio's side by side and compares everything observable.
//!
//! The fast path holds the protocol and the application transport by weak reference, so it
//! adds no reference cycle: once `connection_lost` has run, the protocol is freed by
//! reference counting as asyncio's is. The transport's `write` is a `TlsAppWrite`, which
//! holds the fast path by weak reference too: the fast path holds the `SSLObject` (and so the
//! `SSLContext` and OpenSSL's state), and a closed asyncio transport that the application
//! still holds reaches none of that once its protocol is gone (CPython's
//! `test_ssl.test_create_connection_memory_leak`).

mod hs;

use std::os::raw::c_char;

use crate::transports::TransportCore;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyMemoryView, PyString, PyTuple, PyType, PyWeakrefReference,
};

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
    /// `ferroloop.transports.SocketTransport`: an instance of exactly this class has its
    /// core's `write` as its `write`, which is then called without a Python call.
    socket_transport: Py<PyAny>,
    /// What the handshake and shutdown mirror (`tls/hs.rs`) needs.
    hs: hs::HsConsts,
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
        socket_transport: Py<PyAny>,
        hs: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        Ok(Self {
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
            socket_transport,
            hs: hs::HsConsts::new(hs)?,
        })
    }
}

/// `MemoryBIO.pending`, the getset descriptor `pending_of` calls directly, with the type it
/// was taken from (both BIOs of a protocol must be of it).
static BIO_PENDING: pyo3::sync::PyOnceLock<(Py<PyType>, Py<PyAny>)> = pyo3::sync::PyOnceLock::new();

fn bio_pending_descriptor(
    incoming: &Bound<'_, PyAny>,
    outgoing: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = incoming.py();
    let (cls, descr) = BIO_PENDING.get_or_try_init(py, || {
        let cls = incoming.get_type();
        let d = cls.getattr("pending")?;
        if d.get_type().name()?.to_str()? != "getset_descriptor" {
            return Err(PyTypeError::new_err("unexpected MemoryBIO.pending"));
        }
        Ok::<_, PyErr>((cls.unbind(), d.unbind()))
    })?;
    if !incoming.get_type().is(cls.bind(py)) || !outgoing.get_type().is(cls.bind(py)) {
        return Err(PyTypeError::new_err("unexpected MemoryBIO.pending"));
    }
    Ok(descr.clone_ref(py))
}

/// The native data path of one `SSLProtocol` (see the file comment).
#[pyclass(frozen, weakref, module = "ferroloop._native")]
pub(crate) struct TlsFastPath {
    proto: Py<PyWeakrefReference>,
    app: Py<PyWeakrefReference>,
    incoming: Py<PyAny>,
    outgoing: Py<PyAny>,
    /// The protocol's `ssl.SSLObject` when the path was installed, its `_ssl._SSLSocket`, and
    /// the latter's bound methods.
    sslobj: Py<PyAny>,
    ssl_sock: Py<PyAny>,
    ssl_read: Py<PyAny>,
    ssl_write: Py<PyAny>,
    ssl_pending: Py<PyAny>,
    incoming_write: Py<PyAny>,
    outgoing_read: Py<PyAny>,
    /// The `MemoryBIO.pending` descriptor.
    bio_pending: Py<PyAny>,
    /// `SSLProtocol.max_size` as the instance saw it when the path was installed, and as an
    /// `int` object (not one of CPython's cached small ints, so made once here).
    max_size: usize,
    max_size_obj: Py<PyAny>,
    k: Py<TlsConsts>,
}

/// An error that asyncio's `except Exception` would catch (not `KeyboardInterrupt`,
/// `SystemExit` or another bare `BaseException`).
fn is_exception(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyException>(py)
}

/// `f()` run as inside Python's `except` block that caught `exc`: `exc` is the exception
/// being handled (`sys.exception()`, what `logger.debug(..., exc_info=True)` in asyncio's
/// `_fatal_error` logs) for the duration, and the previous one is restored afterwards.
fn handling<T>(
    py: Python<'_>,
    exc: &Bound<'_, PyAny>,
    f: impl FnOnce() -> PyResult<T>,
) -> PyResult<T> {
    // SAFETY: the GIL is held (`py`); PyErr_GetHandledException returns a new reference or
    // NULL, PyErr_SetHandledException takes its own reference to its argument (NULL clears).
    let prev = unsafe {
        let prev = ffi::PyErr_GetHandledException();
        ffi::PyErr_SetHandledException(exc.as_ptr());
        Bound::from_owned_ptr_or_opt(py, prev)
    };
    let result = f();
    // SAFETY: as above; `prev` keeps its own reference until after the call.
    unsafe {
        ffi::PyErr_SetHandledException(prev.as_ref().map_or(std::ptr::null_mut(), |e| e.as_ptr()));
    }
    result
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

    /// The protocol (with its `__dict__`), or `None` once it has been freed.
    fn proto<'py>(&self, py: Python<'py>) -> Option<Obj<'py>> {
        use pyo3::types::PyWeakrefMethods;
        Obj::new(self.proto.bind(py).upgrade()?).ok()
    }

    /// `f` on the protocol, or nothing once the protocol is gone (each mirrored method's
    /// entry).
    fn on_proto(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Self, &Obj<'_>) -> PyResult<()>,
    ) -> PyResult<()> {
        match self.proto(py) {
            Some(p) => f(self, &p),
            None => Ok(()),
        }
    }

    fn is_again(&self, py: Python<'_>, err: &PyErr) -> bool {
        err.matches(py, self.k(py).again.bind(py)).unwrap_or(false)
    }

    /// `bio.pending` for one of the two `MemoryBIO`s, through the getter itself (the
    /// descriptor `MemoryBIO.pending`) rather than a `getattr` with its type lookup.
    fn pending(&self, py: Python<'_>, bio: &Py<PyAny>) -> PyResult<usize> {
        let descr = self.bio_pending.bind(py);
        // SAFETY: `descr` is the live `pending` getset descriptor of `MemoryBIO` (checked in
        // `new`), whose type has a `tp_descr_get`; `bio` is a live `MemoryBIO`. The getter
        // returns a new reference or NULL with an exception set.
        unsafe {
            let get = (*ffi::Py_TYPE(descr.as_ptr()))
                .tp_descr_get
                .ok_or_else(|| PyTypeError::new_err("MemoryBIO.pending is not a descriptor"))?;
            Bound::from_owned_ptr_or_err(
                py,
                get(descr.as_ptr(), bio.as_ptr(), std::ptr::null_mut()),
            )?
            .extract()
        }
    }

    /// Nothing left to read: the incoming BIO and the `SSLObject` are both empty.
    fn drained(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.pending(py, &self.incoming)? == 0
            && self.ssl_pending.bind(py).call0()?.extract::<usize>()? == 0)
    }

    /// `SSLProtocol.buffer_updated`.
    fn buffer_updated_impl(&self, py: Python<'_>, nbytes: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(p) = self.proto(py) else {
            return Ok(());
        };
        // self._incoming.write(self._ssl_buffer_view[:nbytes])
        let buffer = p.get(pyo3::intern!(py, "_ssl_buffer"))?;
        let chunk = match (buffer.cast_exact::<PyByteArray>(), small_int(nbytes)) {
            (Ok(ba), Some(n)) if n >= 0 && (n as usize) <= ba.len() => {
                // SAFETY: the bytearray is alive (`buffer` holds it) and is not resized while
                // the view exists: the view goes only to MemoryBIO.write, which copies it
                // and runs no Python code; the view is dropped right after.
                unsafe {
                    let ptr = ffi::PyByteArray_AsString(ba.as_ptr());
                    Bound::from_owned_ptr_or_err(
                        py,
                        ffi::PyMemoryView_FromMemory(
                            ptr as *mut c_char,
                            n as isize,
                            ffi::PyBUF_READ,
                        ),
                    )?
                }
            }
            _ => {
                // Not a plain bytearray and int: asyncio's expression, literally.
                let view = p.get(pyo3::intern!(py, "_ssl_buffer_view"))?;
                let slice = py
                    .get_type::<pyo3::types::PySlice>()
                    .call1((py.None(), nbytes))?;
                view.get_item(slice)?
            }
        };
        self.incoming_write.bind(py).call1((chunk,))?;
        let k = self.k(py);
        let state = p.get(pyo3::intern!(py, "_state"))?;
        // The native `_do_handshake`, `_do_read`, `_do_flush` and `_do_shutdown` are what the
        // instance's attributes of those names are.
        if state.is(k.do_handshake.bind(py)) {
            self.do_handshake_impl(py, &p)?;
        } else if state.is(k.wrapped.bind(py)) {
            // Only C code ran since `_state` was read.
            self.do_read_body(py, &p)?;
        } else if state.is(k.flushing.bind(py)) {
            self.do_flush_impl(py, &p)?;
        } else if state.is(k.shutdown.bind(py)) {
            self.do_shutdown_impl(py, &p)?;
        }
        Ok(())
    }

    /// `SSLProtocol._do_read`: natively in the `WRAPPED` and `FLUSHING` states (the same
    /// code in both), nothing in the other states (asyncio returns at once), asyncio's own
    /// function if `_state` is anything else.
    fn do_read_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        let state = p.get(pyo3::intern!(py, "_state"))?;
        if state.is(k.wrapped.bind(py)) || state.is(k.flushing.bind(py)) {
            return self.do_read_body(py, p);
        }
        if state.is(k.do_handshake.bind(py))
            || state.is(k.shutdown.bind(py))
            || state.is(k.hs.unwrapped.bind(py))
        {
            return Ok(());
        }
        k.orig_do_read.bind(py).call1((&p.o,))?;
        Ok(())
    }

    /// `_do_read` once the state is known to be `WRAPPED` or `FLUSHING`.
    fn do_read_body(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let result = (|| -> PyResult<()> {
            if !truthy(&p.get(pyo3::intern!(py, "_app_reading_paused"))?)? {
                if truthy(&p.get(pyo3::intern!(py, "_app_protocol_is_buffer"))?)? {
                    self.read_buffered(py, p)?;
                } else {
                    self.read_copied(py, p)?;
                }
                if truthy(&p.get(pyo3::intern!(py, "_write_backlog"))?)? {
                    self.do_write_impl(py, p)?;
                } else {
                    self.process_outgoing_impl(py, p)?;
                }
            }
            self.control_ssl_reading_impl(py, p)
        })();
        match result {
            Err(err) if is_exception(py, &err) => {
                let exc = err.into_value(py).into_bound(py).into_any();
                handling(py, &exc, || {
                    p.o.call_method1(
                        pyo3::intern!(py, "_fatal_error"),
                        (&exc, "Fatal error on SSL protocol"),
                    )
                })?;
                Ok(())
            }
            other => other,
        }
    }

    /// `SSLProtocol._do_read__copied`: everything readable, one `data_received(bytes)`.
    fn read_copied(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        // The plaintext lands in the protocol's own ciphertext buffer (`_ssl_buffer`, which
        // the transport filled and `buffer_updated` has already copied into the incoming
        // BIO, so its contents are dead until the next `get_buffer`), then becomes one
        // `bytes`. No Python code runs between the reads and the copy.
        let scratch = match p
            .get(pyo3::intern!(py, "_ssl_buffer"))?
            .cast_into_exact::<PyByteArray>()
        {
            Ok(ba) if ba.len() > 0 => ba,
            _ => PyByteArray::new(py, &vec![0u8; self.max_size.max(1)]),
        };
        let ssl_read = self.ssl_read.bind(py);
        let mut eof = false;
        let mut earlier: Vec<u8> = Vec::new();
        let mut last = 0usize;
        let result = (|| -> PyResult<()> {
            loop {
                // `_ssl` reads at most the buffer's length into its start.
                let n: usize = ssl_read
                    .call1((self.max_size_obj.bind(py), &scratch))?
                    .extract()?;
                if n == 0 {
                    eof = true;
                    return Ok(());
                }
                if self.drained(py)? {
                    last = n;
                    return Ok(());
                }
                // More to read: keep this chunk before the next read overwrites it.
                // SAFETY: no Python code runs while the slice is borrowed; `n` is at most
                // the bytearray's length.
                earlier.extend_from_slice(unsafe { &scratch.as_bytes()[..n] });
            }
        })();
        let data = if earlier.is_empty() {
            // SAFETY: as above; `last` is at most the bytearray's length.
            (last > 0).then(|| PyBytes::new(py, unsafe { &scratch.as_bytes()[..last] }))
        } else {
            // SAFETY: as above.
            earlier.extend_from_slice(unsafe { &scratch.as_bytes()[..last] });
            Some(PyBytes::new(py, &earlier))
        };
        if let Err(err) = result {
            if !self.is_again(py, &err) {
                return Err(err);
            }
        }
        if let Some(data) = data {
            p.get(pyo3::intern!(py, "_app_protocol"))?
                .call_method1(pyo3::intern!(py, "data_received"), (data,))?;
        }
        if eof {
            self.close_notify(py, p)?;
        }
        Ok(())
    }

    /// `SSLProtocol._do_read__buffered`: read into the application's buffer.
    fn read_buffered(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let ssl_read = self.ssl_read.bind(py);
        let mut offset = 0usize;
        let mut count = 1usize;
        let size = self.pending(py, &self.incoming)?;
        let buf = p
            .get(pyo3::intern!(py, "_app_protocol_get_buffer"))?
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
                    let rest = buf.get_item(pyo3::types::PySlice::new(
                        py,
                        offset as isize,
                        isize::MAX,
                        1,
                    ))?;
                    count = ssl_read.call1((wants - offset, rest))?.extract()?;
                    if count > 0 {
                        offset += count;
                    } else {
                        return Ok(());
                    }
                }
                // The buffer is full: read the rest in a later callback, asyncio's
                // `lambda: self._do_read()` (3.11, 3.12) or `self._do_read` (3.13, the
                // instance's attribute: the native method).
                let call_soon = p
                    .get(pyo3::intern!(py, "_loop"))?
                    .getattr(pyo3::intern!(py, "call_soon"))?;
                let do_read = self.lambda_or_method(
                    py,
                    p,
                    &self.k(py).hs.do_read_lambda,
                    pyo3::intern!(py, "_do_read"),
                )?;
                call_soon.call1((do_read,))?;
            }
            Ok(())
        })();
        if let Err(err) = result {
            if !self.is_again(py, &err) {
                return Err(err);
            }
        }
        if offset > 0 {
            p.get(pyo3::intern!(py, "_app_protocol_buffer_updated"))?
                .call1((offset,))?;
        }
        if count == 0 {
            self.close_notify(py, p)?;
        }
        Ok(())
    }

    /// The peer's `close_notify`: `eof_received` for the application, then shutdown.
    fn close_notify(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        self.call_eof_received_impl(py, p)?;
        self.start_shutdown_impl(py, p)
    }

    /// `SSLProtocol._do_write`: encrypt the backlog, then `_process_outgoing`.
    fn do_write_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let backlog = p.get(pyo3::intern!(py, "_write_backlog"))?;
        let ssl_write = self.ssl_write.bind(py);
        let result = (|| -> PyResult<()> {
            while truthy(&backlog)? {
                let data = backlog.get_item(0)?;
                let count: usize = ssl_write.call1((&data,))?.extract()?;
                let data_len = data.len()?;
                if count < data_len {
                    let rest = data.get_item(pyo3::types::PySlice::new(
                        py,
                        count as isize,
                        isize::MAX,
                        1,
                    ))?;
                    backlog.set_item(0, rest)?;
                    self.add_buffer_size(py, p, -(count as i64))?;
                } else {
                    backlog.call_method0(pyo3::intern!(py, "popleft"))?;
                    self.add_buffer_size(py, p, -(data_len as i64))?;
                }
            }
            Ok(())
        })();
        if let Err(err) = result {
            if !self.is_again(py, &err) {
                return Err(err);
            }
        }
        self.process_outgoing_impl(py, p)
    }

    /// `self._write_buffer_size += delta`, with Python's arithmetic.
    fn add_buffer_size(&self, py: Python<'_>, p: &Obj<'_>, delta: i64) -> PyResult<()> {
        let name = pyo3::intern!(py, "_write_buffer_size");
        let size = p.get(name)?;
        let new = match small_int(&size) {
            Some(n) => (n + delta).into_pyobject(py)?.into_any(),
            None => size.add(delta)?,
        };
        p.set(name, new)
    }

    /// `SSLProtocol._process_outgoing`: the encrypted bytes to the socket transport.
    fn process_outgoing_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let mut known = None;
        if !truthy(&p.get(pyo3::intern!(py, "_ssl_writing_paused"))?)? {
            // As asyncio: read the BIO (empty: the shared b""), send what it held.
            let data = self.outgoing_read.bind(py).call0()?;
            if data.len()? > 0 {
                let transport = p.get(pyo3::intern!(py, "_transport"))?;
                if transport
                    .get_type()
                    .is(self.k(py).socket_transport.bind(py))
                {
                    let core = transport.getattr(pyo3::intern!(py, "_core"))?;
                    TransportCore::write(core.cast::<TransportCore>()?, &data)?;
                } else {
                    transport.call_method1(pyo3::intern!(py, "write"), (data,))?;
                }
            } else {
                // Just emptied, and no Python code ran since.
                known = Some(0);
            }
        }
        self.control_app_writing_with(py, p, known)
    }

    /// `SSLProtocol._control_app_writing`: asyncio's own whenever a mark is crossed.
    /// `outgoing_pending`: the outgoing BIO's size, when the caller has just read it.
    fn control_app_writing_with(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        outgoing_pending: Option<usize>,
    ) -> PyResult<()> {
        // Only the mark that can be crossed is read: high while not paused, low while paused.
        let paused = truthy(&p.get(pyo3::intern!(py, "_app_writing_paused"))?)?;
        let buffered = p.get(pyo3::intern!(py, "_write_buffer_size"))?;
        let mark = if paused {
            p.get(pyo3::intern!(py, "_outgoing_low_water"))?
        } else {
            p.get(pyo3::intern!(py, "_outgoing_high_water"))?
        };
        if let (Some(buffered), Some(mark)) = (small_int(&buffered), small_int(&mark)) {
            let pending = match outgoing_pending {
                Some(n) => n,
                None => self.pending(py, &self.outgoing)?,
            };
            let size = pending as i64 + buffered;
            if !((size >= mark && !paused) || (size <= mark && paused)) {
                return Ok(());
            }
        }
        self.k(py)
            .orig_control_app_writing
            .bind(py)
            .call1((&p.o,))?;
        Ok(())
    }

    fn control_app_writing_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        self.control_app_writing_with(py, p, None)
    }

    /// `SSLProtocol._control_ssl_reading`: asyncio's own whenever a mark is crossed.
    fn control_ssl_reading_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let paused = truthy(&p.get(pyo3::intern!(py, "_ssl_reading_paused"))?)?;
        let mark = if paused {
            p.get(pyo3::intern!(py, "_incoming_low_water"))?
        } else {
            p.get(pyo3::intern!(py, "_incoming_high_water"))?
        };
        if let Some(mark) = small_int(&mark) {
            let size = self.pending(py, &self.incoming)? as i64;
            if !((size >= mark && !paused) || (size <= mark && paused)) {
                return Ok(());
            }
        }
        self.k(py)
            .orig_control_ssl_reading
            .bind(py)
            .call1((&p.o,))?;
        Ok(())
    }

    /// `SSLProtocol._write_appdata((data,))` for one bytes-like `data` in the `WRAPPED`
    /// state with an empty backlog: encrypt it at once.
    fn write_one(&self, py: Python<'_>, p: &Obj<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data_len = data.len()?;
        let result = (|| -> PyResult<()> {
            let backlog = || p.get(pyo3::intern!(py, "_write_backlog"));
            // asyncio appends to the backlog, then `_do_write` encrypts and removes it; only
            // what is left over is put in the backlog here, with the same size accounting.
            match self.ssl_write.bind(py).call1((data,)) {
                Ok(count) => {
                    let count: usize = count.extract()?;
                    if count < data_len {
                        let rest = data.get_item(pyo3::types::PySlice::new(
                            py,
                            count as isize,
                            isize::MAX,
                            1,
                        ))?;
                        backlog()?.call_method1(pyo3::intern!(py, "append"), (rest,))?;
                        self.add_buffer_size(py, p, (data_len - count) as i64)?;
                    }
                }
                Err(err) => {
                    backlog()?.call_method1(pyo3::intern!(py, "append"), (data,))?;
                    self.add_buffer_size(py, p, data_len as i64)?;
                    if !self.is_again(py, &err) {
                        return Err(err);
                    }
                }
            }
            self.process_outgoing_impl(py, p)
        })();
        match result {
            Err(err) if is_exception(py, &err) => {
                let exc = err.into_value(py).into_bound(py).into_any();
                handling(py, &exc, || {
                    p.o.call_method1(
                        pyo3::intern!(py, "_fatal_error"),
                        (&exc, "Fatal error on SSL protocol"),
                    )
                })?;
                Ok(())
            }
            other => other,
        }
    }

    /// `SSLProtocol.get_buffer(n)`.
    fn get_buffer_impl<'py>(
        &self,
        py: Python<'py>,
        n: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(p) = self.proto(py) else {
            return Err(pyo3::exceptions::PyReferenceError::new_err(
                "SSLProtocol is gone",
            ));
        };
        if let Some(want) = small_int(n) {
            let want = if want <= 0 || want as usize > self.max_size {
                self.max_size
            } else {
                want as usize
            };
            let buffer = p.get(pyo3::intern!(py, "_ssl_buffer"))?;
            if buffer.len()? >= want {
                return p.get(pyo3::intern!(py, "_ssl_buffer_view"));
            }
        }
        self.k(py).orig_get_buffer.bind(py).call1((&p.o, n))
    }

    /// `_SSLProtocolTransport.write(data)`, bound on the application transport.
    fn app_write_impl(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
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
        if let Some(p) = self.proto(py) {
            if ssl_protocol.is(&p.o) && self.can_write_one(py, &p)? {
                return self.write_one(py, &p, data);
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
    /// Whether `write_one` may stand in for asyncio's `_write_appdata` now.
    fn can_write_one(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<bool> {
        let state = p.get(pyo3::intern!(py, "_state"))?;
        if !state.is(self.k(py).wrapped.bind(py)) {
            return Ok(false);
        }
        Ok(!truthy(&p.get(pyo3::intern!(py, "_write_backlog"))?)?)
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
        // Once per connection, so the names are interned and the MemoryBIO check is cached:
        // building them anew each time was a third of this constructor's cost.
        let py = proto.py();
        let sslobj = proto.getattr(pyo3::intern!(py, "_sslobj"))?;
        let ssl = sslobj.getattr(pyo3::intern!(py, "_sslobj"))?;
        let incoming = proto.getattr(pyo3::intern!(py, "_incoming"))?;
        let outgoing = proto.getattr(pyo3::intern!(py, "_outgoing"))?;
        let max_size = proto.getattr(pyo3::intern!(py, "max_size"))?;
        Ok(Self {
            sslobj: sslobj.clone().unbind(),
            ssl_sock: ssl.clone().unbind(),
            proto: PyWeakrefReference::new(proto)?.unbind(),
            app: PyWeakrefReference::new(app_transport)?.unbind(),
            ssl_read: ssl.getattr(pyo3::intern!(py, "read"))?.unbind(),
            ssl_write: ssl.getattr(pyo3::intern!(py, "write"))?.unbind(),
            ssl_pending: ssl.getattr(pyo3::intern!(py, "pending"))?.unbind(),
            incoming_write: incoming.getattr(pyo3::intern!(py, "write"))?.unbind(),
            bio_pending: bio_pending_descriptor(&incoming, &outgoing)?,
            outgoing_read: outgoing.getattr(pyo3::intern!(py, "read"))?.unbind(),
            incoming: incoming.unbind(),
            outgoing: outgoing.unbind(),
            max_size: max_size.extract()?,
            max_size_obj: max_size.unbind(),
            k: consts,
        })
    }

    /// `SSLProtocol._do_read()`.
    fn _do_read(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.do_read_impl(py, p))
    }

    /// `SSLProtocol._do_write()`.
    fn _do_write(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.do_write_impl(py, p))
    }

    /// `SSLProtocol._process_outgoing()`.
    fn _process_outgoing(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.process_outgoing_impl(py, p))
    }

    /// `SSLProtocol._control_app_writing()`.
    fn _control_app_writing(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.control_app_writing_impl(py, p))
    }

    /// `SSLProtocol._control_ssl_reading()`.
    fn _control_ssl_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.control_ssl_reading_impl(py, p))
    }

    /// `SSLProtocol._write_appdata(list_of_data)`: one item natively, else asyncio's.
    fn _write_appdata(&self, py: Python<'_>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(p) = self.proto(py) else {
            return Ok(());
        };
        if let Ok(t) = list_of_data.cast_exact::<PyTuple>() {
            if t.len() == 1 {
                let data = t.get_item(0)?;
                if is_bytes_like(&data) && self.can_write_one(py, &p)? {
                    return self.write_one(py, &p, &data);
                }
            }
        }
        self.k(py)
            .orig_write_appdata
            .bind(py)
            .call1((&p.o, list_of_data))?;
        Ok(())
    }

    // The handshake and shutdown (`tls/hs.rs`).

    /// `SSLProtocol.connection_made(transport)`.
    fn connection_made(&self, py: Python<'_>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.connection_made_impl(py, p, transport))
    }

    /// `SSLProtocol.connection_lost(exc)`.
    fn connection_lost(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.connection_lost_impl(py, p, exc))
    }

    /// `SSLProtocol._start_handshake()`.
    fn _start_handshake(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.start_handshake_impl(py, p))
    }

    /// `SSLProtocol._do_handshake()`.
    fn _do_handshake(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.do_handshake_impl(py, p))
    }

    /// `SSLProtocol._on_handshake_complete(handshake_exc)`: natively for `None`.
    fn _on_handshake_complete(
        &self,
        py: Python<'_>,
        handshake_exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.on_proto(py, |s, p| {
            s.on_handshake_complete_entry(py, p, handshake_exc)
        })
    }

    /// `SSLProtocol._call_eof_received()`.
    fn _call_eof_received(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.call_eof_received_impl(py, p))
    }

    /// `SSLProtocol._start_shutdown()`.
    fn _start_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.start_shutdown_impl(py, p))
    }

    /// `SSLProtocol._do_flush()`.
    fn _do_flush(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.do_flush_impl(py, p))
    }

    /// `SSLProtocol._do_shutdown()`.
    fn _do_shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.do_shutdown_impl(py, p))
    }

    /// `SSLProtocol._on_shutdown_complete(shutdown_exc)`: natively for `None`.
    fn _on_shutdown_complete(
        &self,
        py: Python<'_>,
        shutdown_exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.on_proto(py, |s, p| s.on_shutdown_complete_entry(py, p, shutdown_exc))
    }

    /// `SSLProtocol._wakeup_waiter(exc=None)`.
    #[pyo3(signature = (exc=None))]
    fn _wakeup_waiter(&self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let none = py.None().into_bound(py);
        let exc = exc.unwrap_or(&none);
        self.on_proto(py, |s, p| s.wakeup_waiter_impl(py, p, exc))
    }

    /// `SSLProtocol._get_app_transport()` (`None` once the protocol is gone).
    fn _get_app_transport<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.proto(py) {
            Some(p) => self.get_app_transport_impl(py, &p),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// `SSLProtocol._set_state(new_state)`.
    fn _set_state(&self, py: Python<'_>, new_state: &Bound<'_, PyAny>) -> PyResult<()> {
        self.on_proto(py, |s, p| s.set_state_impl(py, p, new_state))
    }
}

/// An instance and its `__dict__`: the attributes asyncio's `SSLProtocol` keeps are plain
/// instance attributes (no class defines a descriptor under their names), so they are read
/// from the dict, which is what `getattr` finds there, without `getattr`'s type lookups; a
/// name not in the dict (a class attribute) takes `getattr`.
pub(crate) struct Obj<'py> {
    o: Bound<'py, PyAny>,
    d: Bound<'py, PyDict>,
}

impl<'py> Obj<'py> {
    fn new(o: Bound<'py, PyAny>) -> PyResult<Self> {
        // SAFETY: `o` is a live object; PyObject_GenericGetDict returns a new reference to its
        // `__dict__` (creating it if needed) or NULL with an exception set (no dict).
        let d = unsafe {
            Bound::from_owned_ptr_or_err(
                o.py(),
                ffi::PyObject_GenericGetDict(o.as_ptr(), std::ptr::null_mut()),
            )?
        };
        Ok(Self {
            o,
            d: d.cast_into::<PyDict>()?,
        })
    }

    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.o.py();
        // SAFETY: `d` is a live dict and `name` a live str; PyDict_GetItemWithError returns a
        // borrowed reference (NULL when absent or on error, with the exception set then), which
        // is turned into an owned one before any other Python code can run.
        let found = unsafe { ffi::PyDict_GetItemWithError(self.d.as_ptr(), name.as_ptr()) };
        if found.is_null() {
            if let Some(err) = PyErr::take(py) {
                return Err(err);
            }
            return self.o.getattr(name);
        }
        // SAFETY: `found` is a live borrowed reference (see above).
        Ok(unsafe { Bound::from_borrowed_ptr(py, found) })
    }

    fn set(&self, name: &Bound<'py, PyString>, v: Bound<'py, PyAny>) -> PyResult<()> {
        self.d.set_item(name, v)
    }
}

/// `isinstance(data, (bytes, bytearray, memoryview))`.
fn is_bytes_like(data: &Bound<'_, PyAny>) -> bool {
    data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>()
}

/// The three methods called once or more per record, as plain C methods (`METH_O`) rather
/// than PyO3's: PyO3's general trampoline and argument parsing cost about a thousand
/// instructions per call, a few per cent of a 1 KiB echo.
type MethO = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;

/// The body of a `METH_O` method of the frozen class `T` (`TlsFastPath`, `TlsAppWrite`).
fn with_receiver<T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync>(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    f: impl FnOnce(Python<'_>, &T, &Bound<'_, PyAny>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    crate::cmethods::guard(|py| {
        // SAFETY: CPython passes a live receiver (checked against the class by the method
        // descriptor) and a live argument, both borrowed for the call.
        let (slf, arg) = unsafe {
            (
                Bound::from_borrowed_ptr(py, slf),
                Bound::from_borrowed_ptr(py, arg),
            )
        };
        let this = slf.cast::<T>()?;
        f(py, this.get(), &arg)
    })
}

/// Returns `None` as a new reference.
fn none(py: Python<'_>) -> *mut ffi::PyObject {
    py.None().into_ptr()
}

unsafe extern "C" fn get_buffer_c(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    with_receiver(slf, arg, |py, this: &TlsFastPath, n| {
        Ok(this.get_buffer_impl(py, n)?.into_ptr())
    })
}

unsafe extern "C" fn buffer_updated_c(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    with_receiver(slf, arg, |py, this: &TlsFastPath, n| {
        this.buffer_updated_impl(py, n)?;
        Ok(none(py))
    })
}

/// A `bytearray` of `n` bytes whose contents are not initialised, for `SSLProtocol`'s
/// 256 KiB `_ssl_buffer` (`tls.py`, `new_ssl_protocol`): asyncio zero-fills it, touching all
/// its pages per connection, which the kernel must fault in again whenever glibc has trimmed
/// the heap in between (design.md §5.24). Nothing reads a byte of it that was not written
/// first: the socket transport receives into it and reports how many bytes it wrote, and the
/// native read path decrypts into it and copies out what `read` returned.
#[pyfunction]
pub(crate) fn uninit_bytearray(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyByteArray>> {
    let n = ffi::Py_ssize_t::try_from(n)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("size too large"))?;
    // SAFETY: the GIL is held; PyByteArray_FromStringAndSize with a NULL source allocates `n`
    // bytes without initialising them (it writes only the trailing NUL) and returns a new
    // reference, or NULL with an exception set.
    let obj = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyByteArray_FromStringAndSize(std::ptr::null(), n))?
    };
    Ok(obj.cast_into::<PyByteArray>()?)
}

/// `_SSLProtocolTransport.write` of one application transport: `tls.py` binds its `write`
/// onto the transport. It reaches the fast path by weak reference (see the file comment):
/// the transport's bound `write` must not keep the `SSLObject` alive after the protocol.
#[pyclass(frozen, module = "ferroloop._native")]
pub(crate) struct TlsAppWrite {
    fast: Py<PyWeakrefReference>,
    app: Py<PyWeakrefReference>,
    k: Py<TlsConsts>,
}

#[pymethods]
impl TlsAppWrite {
    #[new]
    fn new(fast: &Bound<'_, TlsFastPath>) -> PyResult<Self> {
        let py = fast.py();
        let path = fast.get();
        Ok(Self {
            fast: PyWeakrefReference::new(fast)?.unbind(),
            app: path.app.clone_ref(py),
            k: path.k.clone_ref(py),
        })
    }
}

impl TlsAppWrite {
    fn write_impl(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        use pyo3::types::PyWeakrefMethods;
        if let Some(fast) = self.fast.bind(py).upgrade() {
            return fast.cast::<TlsFastPath>()?.get().app_write_impl(py, data);
        }
        // The protocol, and with it the fast path, is gone: asyncio's own method decides
        // (it writes through the transport's `_ssl_protocol`, or fails as asyncio does).
        if let Some(app) = self.app.bind(py).upgrade() {
            self.k
                .bind(py)
                .get()
                .orig_app_write
                .bind(py)
                .call1((app, data))?;
        }
        Ok(())
    }
}

unsafe extern "C" fn app_write_c(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    with_receiver(slf, arg, |py, this: &TlsAppWrite, data| {
        this.write_impl(py, data)?;
        Ok(none(py))
    })
}

/// Installs `get_buffer` and `buffer_updated` on `TlsFastPath`, and `write` on `TlsAppWrite`.
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    let cls = py.get_type::<TlsFastPath>();
    let methods: [(&'static std::ffi::CStr, MethO, &'static std::ffi::CStr); 2] = [
        (c"get_buffer", get_buffer_c, c"SSLProtocol.get_buffer(n)"),
        (
            c"buffer_updated",
            buffer_updated_c,
            c"SSLProtocol.buffer_updated(nbytes)",
        ),
    ];
    for (name, f, doc) in methods {
        let meth = ffi::PyMethodDefPointer { PyCFunction: f };
        crate::cmethods::install(py, &cls, name, meth, ffi::METH_O, doc)?;
    }
    let meth = ffi::PyMethodDefPointer {
        PyCFunction: app_write_c,
    };
    crate::cmethods::install(
        py,
        &py.get_type::<TlsAppWrite>(),
        c"write",
        meth,
        ffi::METH_O,
        c"_SSLProtocolTransport.write(data)",
    )
}
