//! The once-per-connection part of asyncio's `SSLProtocol`, native (design.md §5.24).
//!
//! Why this file exists: after the data path went native, a TLS handshake on ferroloop still
//! ran about twenty Python frames of `SSLProtocol` per connection (`connection_made`,
//! `_start_handshake`, three `_do_handshake`s, `_on_handshake_complete`, and at the close
//! `_call_eof_received`, `_start_shutdown`, `_do_flush`, `_do_shutdown`,
//! `_on_shutdown_complete`, `connection_lost`, with `_set_state`, `_wakeup_waiter` and
//! `_get_app_transport` several times), where uvloop runs the same algorithm in Cython. These
//! are the same functions in Rust, in the same discipline as the data path in `tls.rs`. The
//! entries called from outside (`connection_made`, `connection_lost`, and `_start_shutdown`,
//! which `_SSLProtocolTransport.close` calls) are bound onto the instance under asyncio's
//! names by `tls.py`; the native code calls the others directly, and asyncio's remaining
//! Python code calls asyncio's versions of them, which do the same. Statement by statement, the
//! same attributes of the protocol read and written at the same points, the same callbacks
//! scheduled in the same order with the same arguments. Only the common routes are mirrored;
//! the others call asyncio's own function from the class: a handshake or shutdown that fails
//! (`_on_handshake_complete(exc)`, `_on_shutdown_complete(exc)`), a shutdown started during
//! the handshake (`_abort`, whose signature changed in 3.13), a forbidden state transition
//! (the `RuntimeError`), the call of `_call_eof_received` that delivers `eof_received` to the
//! application (the later ones do nothing), the debug mode's `_start_handshake` and
//! `_on_handshake_complete` (they log, and a log record names the function that made it), the
//! timeouts (`_check_handshake_timeout`, `_check_shutdown_timeout`), `_fatal_error` and
//! `eof_received`. Where asyncio calls one of those from inside an `except` block, it is
//! called with that exception set as the one being handled (`handling`), so that
//! `sys.exception()` and `exc_info=True` see it as they would.
//!
//! Python 3.13 changed three of the mirrored statements: the handshake and shutdown timeouts
//! and a full buffered read's continuation are scheduled with the bound method
//! (`self._check_handshake_timeout`, ...) instead of a lambda calling it. `tls.py` passes the lambda's code object when the running `sslproto` has one,
//! and the same function is made from it here (the code object, the module's globals and a
//! cell holding the protocol: what executing the `lambda` expression makes), so the timer
//! handle holds what asyncio's would.

use super::{handling, is_exception, truthy, Obj, TlsFastPath};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

/// The part of `TlsConsts` the handshake and shutdown need, from the dict `tls.py` passes.
pub(crate) struct HsConsts {
    pub(super) unwrapped: Py<PyAny>,
    /// `AppProtocolState.STATE_INIT`, `STATE_CON_MADE`, `STATE_EOF`, `STATE_CON_LOST`.
    app_init: Py<PyAny>,
    app_con_made: Py<PyAny>,
    app_eof: Py<PyAny>,
    app_con_lost: Py<PyAny>,
    /// `ssl.SSLError` and `ssl.CertificateError`.
    ssl_error: Py<PyAny>,
    cert_error: Py<PyAny>,
    /// `asyncio.sslproto`'s globals (the lambdas' globals).
    globals: Py<PyDict>,
    /// The code of the `lambda` `_start_handshake` / `_start_shutdown` schedule (Python 3.11
    /// and 3.12), or `None` where they schedule the bound method (3.13).
    handshake_lambda: Option<Py<PyAny>>,
    shutdown_lambda: Option<Py<PyAny>>,
    /// The same for the `lambda: self._do_read()` of `_do_read__buffered`.
    pub(super) do_read_lambda: Option<Py<PyAny>>,
    /// asyncio's own functions for the cold routes.
    orig_set_state: Py<PyAny>,
    orig_get_app_transport: Py<PyAny>,
    orig_start_handshake: Py<PyAny>,
    orig_on_handshake_complete: Py<PyAny>,
    orig_call_eof_received: Py<PyAny>,
    orig_start_shutdown: Py<PyAny>,
    orig_on_shutdown_complete: Py<PyAny>,
}

impl HsConsts {
    pub(super) fn new(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let get = |name: &str| -> PyResult<Py<PyAny>> {
            d.get_item(name)?
                .map(Bound::unbind)
                .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
        };
        // A lambda's code: a code object with one free variable (`self`), which
        // `lambda_or_method` gives it a closure for.
        let code_type = get("code_type")?;
        let lambda = |name: &str| -> PyResult<Option<Py<PyAny>>> {
            let v = get(name)?.into_bound(d.py());
            if v.is_none() {
                return Ok(None);
            }
            if !v.get_type().is(code_type.bind(d.py())) || v.getattr("co_freevars")?.len()? != 1 {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "{name}: not the code of a lambda with one free variable"
                )));
            }
            Ok(Some(v.unbind()))
        };
        Ok(Self {
            unwrapped: get("unwrapped")?,
            app_init: get("app_init")?,
            app_con_made: get("app_con_made")?,
            app_eof: get("app_eof")?,
            app_con_lost: get("app_con_lost")?,
            ssl_error: get("ssl_error")?,
            cert_error: get("cert_error")?,
            globals: get("globals")?
                .into_bound(d.py())
                .cast_into::<PyDict>()?
                .unbind(),
            handshake_lambda: lambda("handshake_lambda")?,
            shutdown_lambda: lambda("shutdown_lambda")?,
            do_read_lambda: lambda("do_read_lambda")?,
            orig_set_state: get("orig_set_state")?,
            orig_get_app_transport: get("orig_get_app_transport")?,
            orig_start_handshake: get("orig_start_handshake")?,
            orig_on_handshake_complete: get("orig_on_handshake_complete")?,
            orig_call_eof_received: get("orig_call_eof_received")?,
            orig_start_shutdown: get("orig_start_shutdown")?,
            orig_on_shutdown_complete: get("orig_on_shutdown_complete")?,
        })
    }
}

/// `a == b`, as Python's `==` (the rich comparison; identity for enum members).
fn eq(a: &Bound<'_, PyAny>, b: &Py<PyAny>) -> PyResult<bool> {
    a.eq(b.bind(a.py()))
}

/// `a in (m1, m2, ...)`: a tuple's `in` (identity, then `m == a`).
fn is_in(a: &Bound<'_, PyAny>, members: &[&Py<PyAny>]) -> PyResult<bool> {
    for m in members {
        let m = m.bind(a.py());
        if m.is(a) || m.eq(a)? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl TlsFastPath {
    /// `sslobj.<name>()` for the protocol's current `_sslobj`: the `_ssl` object's method
    /// directly when it is the `ssl.SSLObject` the path was installed with (whose `do_handshake`,
    /// `cipher`, `compression` are one-line wrappers around it), its Python method otherwise.
    fn sslobj_call0<'py>(
        &self,
        py: Python<'py>,
        sslobj: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if sslobj.is(self.sslobj.bind(py)) {
            self.ssl_sock.bind(py).call_method0(name)
        } else {
            sslobj.call_method0(name)
        }
    }

    /// `self.<name> += 1`, with Python's arithmetic.
    fn add_int(&self, py: Python<'_>, p: &Obj<'_>, name: &Bound<'_, PyString>) -> PyResult<()> {
        let v = p.get(name)?;
        let new = match super::small_int(&v) {
            Some(n) => (n + 1).into_pyobject(py)?.into_any(),
            None => v.add(1)?,
        };
        p.set(name, new)
    }

    /// The callback `_start_handshake`, `_start_shutdown` or `_do_read__buffered` schedules:
    /// asyncio's `lambda` (made from its code object with the protocol in its closure cell)
    /// or, on 3.13, the bound method (the instance's attribute).
    pub(super) fn lambda_or_method<'py>(
        &self,
        py: Python<'py>,
        p: &Obj<'py>,
        lambda: &Option<Py<PyAny>>,
        method: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = &self.k(py).hs;
        match lambda {
            Some(code) => {
                // What executing the `lambda` expression does (MAKE_FUNCTION): a function of
                // the code object and the module's globals (its name, qualified name and
                // builtins come from them), whose closure is the cell of `self`.
                // SAFETY: `code` is a code object with exactly one free variable (checked in
                // `HsConsts::new`), `globals` a dict, the protocol a live object; each call
                // returns a new reference or NULL with an exception set, and
                // PyFunction_SetClosure takes its own reference to the tuple.
                unsafe {
                    let cell = Bound::from_owned_ptr_or_err(py, ffi::PyCell_New(p.o.as_ptr()))?;
                    let closure = PyTuple::new(py, [cell])?;
                    let func = Bound::from_owned_ptr_or_err(
                        py,
                        ffi::PyFunction_New(code.as_ptr(), k.globals.as_ptr()),
                    )?;
                    if ffi::PyFunction_SetClosure(func.as_ptr(), closure.as_ptr()) != 0 {
                        return Err(PyErr::fetch(py));
                    }
                    Ok(func)
                }
            }
            None => p.o.getattr(method),
        }
    }

    /// `SSLProtocol._set_state(new_state)`; asyncio's own for a forbidden transition (its
    /// `RuntimeError`).
    pub(super) fn set_state_impl(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        new: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = self.k(py);
        let allowed = if eq(new, &k.hs.unwrapped)? {
            true
        } else {
            let cur = p.get(intern!(py, "_state"))?;
            (eq(&cur, &k.hs.unwrapped)? && eq(new, &k.do_handshake)?)
                || (eq(&cur, &k.do_handshake)? && eq(new, &k.wrapped)?)
                || (eq(&cur, &k.wrapped)? && eq(new, &k.flushing)?)
                || (eq(&cur, &k.flushing)? && eq(new, &k.shutdown)?)
        };
        if allowed {
            p.set(intern!(py, "_state"), new.clone())
        } else {
            k.hs.orig_set_state.bind(py).call1((&p.o, new))?;
            Ok(())
        }
    }

    fn set_state_to(&self, py: Python<'_>, p: &Obj<'_>, new: &Py<PyAny>) -> PyResult<()> {
        self.set_state_impl(py, p, new.bind(py))
    }

    /// `SSLProtocol._wakeup_waiter(exc)`.
    pub(super) fn wakeup_waiter_impl(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let waiter = intern!(py, "_waiter");
        if p.get(waiter)?.is_none() {
            return Ok(());
        }
        if !truthy(&p.get(waiter)?.call_method0(intern!(py, "cancelled"))?)? {
            if !exc.is_none() {
                p.get(waiter)?
                    .call_method1(intern!(py, "set_exception"), (exc,))?;
            } else {
                p.get(waiter)?
                    .call_method1(intern!(py, "set_result"), (py.None(),))?;
            }
        }
        p.set(waiter, py.None().into_bound(py))
    }

    /// `SSLProtocol._get_app_transport()`; asyncio's own when there is none (it makes one, or
    /// raises).
    pub(super) fn get_app_transport_impl<'py>(
        &self,
        py: Python<'py>,
        p: &Obj<'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = p.get(intern!(py, "_app_transport"))?;
        if t.is_none() {
            return self.k(py).hs.orig_get_app_transport.bind(py).call1((&p.o,));
        }
        Ok(t)
    }

    /// `SSLProtocol.connection_made(transport)`.
    pub(super) fn connection_made_impl(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        transport: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        p.set(intern!(py, "_transport"), transport.clone())?;
        self.start_handshake_impl(py, p)
    }

    /// `SSLProtocol._start_handshake()`; asyncio's own in debug mode (it logs, and a log
    /// record names the function that made it).
    pub(super) fn start_handshake_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        let lp = intern!(py, "_loop");
        if truthy(&p.get(lp)?.call_method0(intern!(py, "get_debug"))?)? {
            k.hs.orig_start_handshake.bind(py).call1((&p.o,))?;
            return Ok(());
        }
        p.set(
            intern!(py, "_handshake_start_time"),
            py.None().into_bound(py),
        )?;
        self.set_state_to(py, p, &k.do_handshake)?;
        let call_later = p.get(lp)?.getattr(intern!(py, "call_later"))?;
        let timeout = p.get(intern!(py, "_ssl_handshake_timeout"))?;
        let cb = self.lambda_or_method(
            py,
            p,
            &k.hs.handshake_lambda,
            intern!(py, "_check_handshake_timeout"),
        )?;
        let handle = call_later.call1((timeout, cb))?;
        p.set(intern!(py, "_handshake_timeout_handle"), handle)?;
        self.do_handshake_impl(py, p)
    }

    /// `SSLProtocol._do_handshake()`: a failed handshake goes to asyncio's
    /// `_on_handshake_complete(exc)`.
    pub(super) fn do_handshake_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        let sslobj = p.get(intern!(py, "_sslobj"))?;
        match self.sslobj_call0(py, &sslobj, intern!(py, "do_handshake")) {
            Ok(_) => self.on_handshake_complete_ok(py, p),
            Err(err) => self.ssl_step_failed(py, p, err, &k.hs.orig_on_handshake_complete),
        }
    }

    /// The two `except` clauses asyncio puts around a handshake or shutdown step: for
    /// `SSLAgainErrors`, `_process_outgoing()` (the step goes on when the peer answers); for
    /// any other `ssl.SSLError`, asyncio's `_on_handshake_complete(exc)` or
    /// `_on_shutdown_complete(exc)` (`on_failure`); anything else propagates. Each runs with
    /// the exception set as the one being handled, as inside the `except` block.
    fn ssl_step_failed(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        err: PyErr,
        on_failure: &Py<PyAny>,
    ) -> PyResult<()> {
        if self.is_again(py, &err) {
            let exc = err.into_value(py).into_bound(py).into_any();
            return handling(py, &exc, || self.process_outgoing_impl(py, p));
        }
        if err.is_instance(py, self.k(py).hs.ssl_error.bind(py)) {
            let exc = err.into_value(py).into_bound(py).into_any();
            handling(py, &exc, || on_failure.bind(py).call1((&p.o, &exc)))?;
            return Ok(());
        }
        Err(err)
    }

    /// `SSLProtocol._on_handshake_complete(None)`: the handshake succeeded. asyncio's own in
    /// debug mode (it logs the handshake's duration): the loop's `get_debug()` is asked first
    /// instead of after the timeout's cancellation, the state change and `getpeercert()`,
    /// which cannot change it.
    pub(super) fn on_handshake_complete_ok(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        if truthy(
            &p.get(intern!(py, "_loop"))?
                .call_method0(intern!(py, "get_debug"))?,
        )? {
            k.hs.orig_on_handshake_complete
                .bind(py)
                .call1((&p.o, py.None()))?;
            return Ok(());
        }
        let handle = intern!(py, "_handshake_timeout_handle");
        if !p.get(handle)?.is_none() {
            p.get(handle)?.call_method0(intern!(py, "cancel"))?;
            p.set(handle, py.None().into_bound(py))?;
        }
        let sslobj = p.get(intern!(py, "_sslobj"))?;
        let peercert = (|| {
            self.set_state_to(py, p, &k.wrapped)?;
            if sslobj.is(self.sslobj.bind(py)) {
                // `SSLObject.getpeercert(binary_form=False)`.
                self.ssl_sock
                    .bind(py)
                    .call_method1(intern!(py, "getpeercert"), (false,))
            } else {
                sslobj.call_method0(intern!(py, "getpeercert"))
            }
        })();
        let peercert = match peercert {
            Ok(v) => v,
            Err(err) if is_exception(py, &err) => {
                let exc = err.into_value(py).into_bound(py).into_any();
                return handling(py, &exc, || {
                    self.set_state_to(py, p, &k.hs.unwrapped)?;
                    let msg = if exc.is_instance(k.hs.cert_error.bind(py))? {
                        "SSL handshake failed on verifying the certificate"
                    } else {
                        "SSL handshake failed"
                    };
                    p.o.call_method1(intern!(py, "_fatal_error"), (&exc, msg))?;
                    self.wakeup_waiter_impl(py, p, &exc)
                });
            }
            Err(err) => return Err(err),
        };
        // (`if self._loop.get_debug(): ...`: not in debug mode, see above.)
        // self._extra.update(peercert=..., cipher=..., compression=..., ssl_object=sslobj)
        let update = p
            .get(intern!(py, "_extra"))?
            .getattr(intern!(py, "update"))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "peercert"), peercert)?;
        kwargs.set_item(
            intern!(py, "cipher"),
            self.sslobj_call0(py, &sslobj, intern!(py, "cipher"))?,
        )?;
        kwargs.set_item(
            intern!(py, "compression"),
            self.sslobj_call0(py, &sslobj, intern!(py, "compression"))?,
        )?;
        kwargs.set_item(intern!(py, "ssl_object"), &sslobj)?;
        update.call((), Some(&kwargs))?;
        if eq(&p.get(intern!(py, "_app_state"))?, &k.hs.app_init)? {
            p.set(
                intern!(py, "_app_state"),
                k.hs.app_con_made.bind(py).clone(),
            )?;
            let made = p
                .get(intern!(py, "_app_protocol"))?
                .getattr(intern!(py, "connection_made"))?;
            made.call1((self.get_app_transport_impl(py, p)?,))?;
        }
        self.wakeup_waiter_impl(py, p, &py.None().into_bound(py))?;
        self.do_read_impl(py, p)
    }

    /// `SSLProtocol._call_eof_received()`: nothing once the application has had its
    /// `eof_received` (the second and third calls of a closing connection); asyncio's own for
    /// the call that delivers it (an exception from the application's `eof_received`, and the
    /// warning when it returns true, then carry asyncio's frame).
    pub(super) fn call_eof_received_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        let app_state = p.get(intern!(py, "_app_state"))?;
        if app_state.is(k.hs.app_eof.bind(py)) || app_state.is(k.hs.app_con_lost.bind(py)) {
            // `if self._app_state == STATE_CON_MADE:` is false; nothing can raise.
            return Ok(());
        }
        k.hs.orig_call_eof_received.bind(py).call1((&p.o,))?;
        Ok(())
    }

    /// `SSLProtocol._start_shutdown()`: natively from `WRAPPED`; asyncio's own from
    /// `DO_HANDSHAKE` (it aborts, and `_abort` differs between versions) or an unknown state.
    pub(super) fn start_shutdown_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        let state = p.get(intern!(py, "_state"))?;
        if is_in(&state, &[&k.flushing, &k.shutdown, &k.hs.unwrapped])? {
            return Ok(());
        }
        if !state.is(k.wrapped.bind(py)) {
            k.hs.orig_start_shutdown.bind(py).call1((&p.o,))?;
            return Ok(());
        }
        let app_transport = p.get(intern!(py, "_app_transport"))?;
        if !app_transport.is_none() {
            app_transport.setattr(intern!(py, "_closed"), true)?;
        }
        // `if self._state == DO_HANDSHAKE: self._abort()`: it is `WRAPPED` (setting the
        // application transport's `_closed` runs no Python code).
        self.set_state_to(py, p, &k.flushing)?;
        let call_later = p
            .get(intern!(py, "_loop"))?
            .getattr(intern!(py, "call_later"))?;
        let timeout = p.get(intern!(py, "_ssl_shutdown_timeout"))?;
        let cb = self.lambda_or_method(
            py,
            p,
            &k.hs.shutdown_lambda,
            intern!(py, "_check_shutdown_timeout"),
        )?;
        let handle = call_later.call1((timeout, cb))?;
        p.set(intern!(py, "_shutdown_timeout_handle"), handle)?;
        self.do_flush_impl(py, p)
    }

    /// `SSLProtocol._do_flush()`.
    pub(super) fn do_flush_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        self.do_read_impl(py, p)?;
        self.set_state_to(py, p, &self.k(py).shutdown)?;
        self.do_shutdown_impl(py, p)
    }

    /// `SSLProtocol._do_shutdown()`: a failed shutdown goes to asyncio's
    /// `_on_shutdown_complete(exc)`.
    pub(super) fn do_shutdown_impl(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let k = self.k(py);
        let result = (|| -> PyResult<()> {
            if !truthy(&p.get(intern!(py, "_eof_received"))?)? {
                let sslobj = p.get(intern!(py, "_sslobj"))?;
                if sslobj.is(self.sslobj.bind(py)) {
                    // `SSLObject.unwrap()` is `self._sslobj.shutdown()`.
                    self.ssl_sock
                        .bind(py)
                        .call_method0(intern!(py, "shutdown"))?;
                } else {
                    sslobj.call_method0(intern!(py, "unwrap"))?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.process_outgoing_impl(py, p)?;
                self.call_eof_received_impl(py, p)?;
                self.on_shutdown_complete_ok(py, p)
            }
            Err(err) => self.ssl_step_failed(py, p, err, &k.hs.orig_on_shutdown_complete),
        }
    }

    /// `SSLProtocol._on_shutdown_complete(None)`: the shutdown succeeded.
    pub(super) fn on_shutdown_complete_ok(&self, py: Python<'_>, p: &Obj<'_>) -> PyResult<()> {
        let handle = intern!(py, "_shutdown_timeout_handle");
        if !p.get(handle)?.is_none() {
            p.get(handle)?.call_method0(intern!(py, "cancel"))?;
            p.set(handle, py.None().into_bound(py))?;
        }
        let call_soon = p
            .get(intern!(py, "_loop"))?
            .getattr(intern!(py, "call_soon"))?;
        let close = p
            .get(intern!(py, "_transport"))?
            .getattr(intern!(py, "close"))?;
        call_soon.call1((close,))?;
        Ok(())
    }

    /// `SSLProtocol.connection_lost(exc)`.
    pub(super) fn connection_lost_impl(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = self.k(py);
        p.get(intern!(py, "_write_backlog"))?
            .call_method0(intern!(py, "clear"))?;
        p.get(intern!(py, "_outgoing"))?
            .call_method0(intern!(py, "read"))?;
        self.add_int(py, p, intern!(py, "_conn_lost"))?;
        let app_transport = intern!(py, "_app_transport");
        if !p.get(app_transport)?.is_none() {
            p.get(app_transport)?
                .setattr(intern!(py, "_closed"), true)?;
        }
        if !eq(&p.get(intern!(py, "_state"))?, &k.do_handshake)? {
            let app_state = intern!(py, "_app_state");
            if eq(&p.get(app_state)?, &k.hs.app_con_made)? || eq(&p.get(app_state)?, &k.hs.app_eof)?
            {
                p.set(app_state, k.hs.app_con_lost.bind(py).clone())?;
                let call_soon = p
                    .get(intern!(py, "_loop"))?
                    .getattr(intern!(py, "call_soon"))?;
                let lost = p
                    .get(intern!(py, "_app_protocol"))?
                    .getattr(intern!(py, "connection_lost"))?;
                call_soon.call1((lost, exc))?;
            }
        }
        self.set_state_to(py, p, &k.hs.unwrapped)?;
        let none = py.None().into_bound(py);
        p.set(intern!(py, "_transport"), none.clone())?;
        p.set(app_transport, none.clone())?;
        p.set(intern!(py, "_app_protocol"), none.clone())?;
        self.wakeup_waiter_impl(py, p, exc)?;
        for handle in [
            intern!(py, "_shutdown_timeout_handle"),
            intern!(py, "_handshake_timeout_handle"),
        ] {
            if truthy(&p.get(handle)?)? {
                p.get(handle)?.call_method0(intern!(py, "cancel"))?;
                p.set(handle, none.clone())?;
            }
        }
        Ok(())
    }

    /// `SSLProtocol._on_handshake_complete(handshake_exc)`: natively for `None`.
    pub(super) fn on_handshake_complete_entry(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        handshake_exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if handshake_exc.is_none() {
            return self.on_handshake_complete_ok(py, p);
        }
        self.k(py)
            .hs
            .orig_on_handshake_complete
            .bind(py)
            .call1((&p.o, handshake_exc))?;
        Ok(())
    }

    /// `SSLProtocol._on_shutdown_complete(shutdown_exc)`: natively for `None`.
    pub(super) fn on_shutdown_complete_entry(
        &self,
        py: Python<'_>,
        p: &Obj<'_>,
        shutdown_exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if shutdown_exc.is_none() {
            return self.on_shutdown_complete_ok(py, p);
        }
        self.k(py)
            .hs
            .orig_on_shutdown_complete
            .bind(py)
            .call1((&p.o, shutdown_exc))?;
        Ok(())
    }
}
