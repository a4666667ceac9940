//! Vectorcall entry points for the scheduling methods, `create_task` and the stream
//! transport's per-packet methods.
//!
//! `call_soon` and friends run once per callback, and asyncio's C `Task` and `Future` call
//! `loop.call_soon(step, context=ctx)` for every task step and done callback. PyO3's generic
//! argument parser costs a noticeable share of that call (a keyword-name search, a fresh
//! `*args` tuple built through a slice), so these four methods take CPython's
//! `METH_FASTCALL | METH_KEYWORDS` calling convention directly: positional arguments arrive
//! as an array, the only keyword is `context`. `create_task` runs once per task and takes
//! `**kwargs` from 3.13.3, which PyO3's parser handles on a slower path even when none are
//! given (~270 more instructions a call, measured), so it is parsed here too. The methods are
//! installed on `LoopCore` at import, replacing nothing else; their logic lives in
//! `event_loop.rs`.
//!
//! The stream transport's `write(data)` (once or twice per response of every server) and the
//! reader callback `_read_ready()` (once per received packet) are installed on
//! `TransportCore` the same way, as `METH_FASTCALL | METH_KEYWORDS` and `METH_NOARGS`
//! functions: PyO3's wrappers around them (argument parsing, the GIL-count bookkeeping of
//! its trampoline) were about 250 of the ~3,100 user-space instructions a 1 KiB echo costs
//! the server. Their logic lives in `transports.rs`.

use std::ffi::CStr;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::PyClass;

use crate::cmethods::{self, guard};
use crate::event_loop::LoopCore;
use crate::transport_common::NativeTransport;
use crate::transports::TransportCore;

/// The parsed form of `method(*prefix, callback, *args, context=None)`.
struct Parsed<'py> {
    prefix: Option<Bound<'py, PyAny>>,
    callback: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    context: Option<Bound<'py, PyAny>>,
}

/// The keyword arguments of a vectorcall, as (name, value) pairs in call order.
///
/// # Safety
/// `args` must point at `nargs` positional arguments followed by one value per entry of
/// `kwnames` (NULL or a tuple of strings), all live while the pairs are used.
#[inline(always)]
unsafe fn keywords<'py>(
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: `kwnames` is a tuple of strings when not NULL.
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
    };
    (0..nkw).map(move |i| {
        // SAFETY: index < size of the kwnames tuple; the values follow the positionals, live
        // per this function's contract.
        unsafe {
            (
                Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, i as ffi::Py_ssize_t)),
                Bound::from_borrowed_ptr(py, *args.add(nargs + i)),
            )
        }
    })
}

/// Parses a vectorcall argument array for a method with `npre` (0 or 1) leading positional
/// parameters named `pre_name`, then `callback`, `*args` and keyword-only `context`.
///
/// # Safety
/// `args` must point at `nargs` positional arguments followed by one value per entry of
/// `kwnames` (CPython's vectorcall convention), all live for the duration of the call.
#[inline(always)]
unsafe fn parse<'py>(
    py: Python<'py>,
    method: &str,
    pre_name: &str,
    npre: usize,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Parsed<'py>> {
    let nargs = nargs as usize;
    let mut context = None;
    let mut kw_pre = None;
    let mut kw_callback = None;
    // SAFETY: the caller's contract is `keywords`'s.
    for (name, value) in unsafe { keywords(py, args, nargs, kwnames) } {
        // asyncio's C Task and Future pass the interned identifier `context` for every step
        // and done callback: recognise it by identity before comparing text.
        if name.is(pyo3::intern!(py, "context")) {
            if !value.is_none() {
                context = Some(value);
            }
            continue;
        }
        let name = name.cast_into::<PyString>()?;
        let name = name.to_str()?;
        let (slot, position) = match name {
            "context" => {
                if !value.is_none() {
                    context = Some(value);
                }
                continue;
            }
            "callback" => (&mut kw_callback, npre),
            n if npre == 1 && n == pre_name => (&mut kw_pre, 0),
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "{method}() got an unexpected keyword argument '{name}'"
                )))
            }
        };
        if nargs > position {
            return Err(PyTypeError::new_err(format!(
                "{method}() got multiple values for argument '{name}'"
            )));
        }
        *slot = Some(value);
    }
    let have_pre = npre == 0 || nargs >= 1 || kw_pre.is_some();
    let have_callback = nargs > npre || kw_callback.is_some();
    if !have_pre || !have_callback {
        let missing = if !have_pre && !have_callback {
            format!("2 required positional arguments: '{pre_name}' and 'callback'")
        } else if !have_pre {
            format!("1 required positional argument: '{pre_name}'")
        } else {
            "1 required positional argument: 'callback'".to_string()
        };
        return Err(PyTypeError::new_err(format!(
            "{method}() missing {missing}"
        )));
    }
    if kw_callback.is_some() || kw_pre.is_some() {
        // Keyword form: no `*args` can follow a parameter given by keyword.
        let prefix = match kw_pre {
            Some(p) => Some(p),
            // SAFETY: `have_pre` with no keyword means `nargs >= 1`, so index 0 is valid.
            None if npre == 1 => Some(unsafe { Bound::from_borrowed_ptr(py, *args) }),
            None => None,
        };
        let callback = match kw_callback {
            Some(c) => c,
            // SAFETY: nargs > npre was checked above.
            None => unsafe { Bound::from_borrowed_ptr(py, *args.add(npre)) },
        };
        return Ok(Parsed {
            prefix,
            callback,
            args: PyTuple::empty(py),
            context,
        });
    }
    // SAFETY: all indices below are < nargs.
    unsafe {
        let prefix = (npre == 1).then(|| Bound::from_borrowed_ptr(py, *args));
        let callback = Bound::from_borrowed_ptr(py, *args.add(npre));
        let rest = nargs - npre - 1;
        let tuple = ffi::PyTuple_New(rest as ffi::Py_ssize_t);
        if tuple.is_null() {
            return Err(PyErr::fetch(py));
        }
        for j in 0..rest {
            let item = *args.add(npre + 1 + j);
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(tuple, j as ffi::Py_ssize_t, item);
        }
        let args = Bound::from_owned_ptr(py, tuple).cast_into_unchecked::<PyTuple>();
        Ok(Parsed {
            prefix,
            callback,
            args,
            context,
        })
    }
}

/// The receiver of one of these methods, as the class `T` (`LoopCore`, `TransportCore`) it is.
///
/// # Safety
/// `slf` must be the receiver `T`'s method descriptor passed: the descriptor checks that it
/// is a `T` (or a subclass instance) before calling the method.
#[inline(always)]
unsafe fn receiver<'py, T: PyClass>(py: Python<'py>, slf: *mut ffi::PyObject) -> Bound<'py, T> {
    // SAFETY: per this function's contract, `slf` is a live `T`, borrowed for the call.
    unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<T>() }
}

macro_rules! entry_point {
    ($fn_name:ident, $method:literal, $pre_name:literal, $npre:literal, $impl:path) => {
        unsafe extern "C" fn $fn_name(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            guard(|py| {
                // SAFETY: called by `LoopCore`'s method descriptor with its receiver.
                let slf = unsafe { receiver::<LoopCore>(py, slf) };
                // SAFETY: CPython's vectorcall convention, forwarded as received.
                let p = unsafe { parse(py, $method, $pre_name, $npre, args, nargs, kwnames)? };
                let handle = $impl(&slf, p.prefix.as_ref(), &p.callback, &p.args, p.context)?;
                Ok(handle.into_ptr())
            })
        }
    };
}

entry_point!(call_soon, "call_soon", "", 0, LoopCore::call_soon_entry);
entry_point!(
    call_soon_threadsafe,
    "call_soon_threadsafe",
    "",
    0,
    LoopCore::call_soon_threadsafe_entry
);
entry_point!(
    call_later,
    "call_later",
    "delay",
    1,
    LoopCore::call_later_entry
);
entry_point!(call_at, "call_at", "when", 1, LoopCore::call_at_entry);

/// `create_task(coro, *, name=None, context=None, **kwargs)`: asyncio's C `Task` machinery
/// does not call it, but every `asyncio.create_task`, `TaskGroup.create_task` and
/// `ensure_future` does, once per task. The keywords other than `coro`, `name` and `context`
/// are gathered into a dict, made only when there are any.
unsafe extern "C" fn create_task(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guard(|py| {
        // SAFETY: called by `LoopCore`'s method descriptor with its receiver.
        let slf = unsafe { receiver::<LoopCore>(py, slf) };
        let nargs = nargs as usize;
        if nargs > 1 {
            return Err(PyTypeError::new_err(format!(
                "{}.create_task() takes 2 positional arguments but {} were given",
                slf.get_type().name()?,
                nargs + 1
            )));
        }
        // SAFETY: nargs <= 1 and index 0 is valid when nargs == 1.
        let mut coro = (nargs == 1).then(|| unsafe { Bound::from_borrowed_ptr(py, *args) });
        let mut name = None;
        let mut context = None;
        let mut extra: Option<Bound<'_, PyDict>> = None;
        // SAFETY: CPython's vectorcall convention, as received.
        for (key, value) in unsafe { keywords(py, args, nargs, kwnames) } {
            // Call sites pass interned identifiers: identity first, text second.
            let slot = if key.is(pyo3::intern!(py, "name")) {
                &mut name
            } else if key.is(pyo3::intern!(py, "context")) {
                &mut context
            } else {
                match key.cast::<PyString>()?.to_str()? {
                    "name" => &mut name,
                    "context" => &mut context,
                    "coro" => {
                        if coro.is_some() {
                            return Err(PyTypeError::new_err(format!(
                                "{}.create_task() got multiple values for argument 'coro'",
                                slf.get_type().name()?
                            )));
                        }
                        coro = Some(value);
                        continue;
                    }
                    _ => {
                        extra
                            .get_or_insert_with(|| PyDict::new(py))
                            .set_item(key, value)?;
                        continue;
                    }
                }
            };
            if !value.is_none() {
                *slot = Some(value);
            }
        }
        let Some(coro) = coro else {
            return Err(PyTypeError::new_err(format!(
                "{}.create_task() missing 1 required positional argument: 'coro'",
                slf.get_type().name()?
            )));
        };
        let task = LoopCore::create_task_entry(&slf, &coro, name, context, extra)?;
        Ok(task.into_ptr())
    })
}

/// `write(data)`: one positional argument is taken as it is; anything else goes through
/// `write_argument`, which lets Python parse it.
unsafe extern "C" fn transport_write(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guard(|py| {
        // SAFETY: called by `TransportCore`'s method descriptor with its receiver.
        let core = unsafe { receiver::<TransportCore>(py, slf) };
        let data = if nargs == 1 && kwnames.is_null() {
            // SAFETY: one positional argument, live for the call.
            unsafe { Bound::from_borrowed_ptr(py, *args) }
        } else {
            // SAFETY: CPython's vectorcall convention, forwarded as received.
            unsafe { write_argument(py, &core, args, nargs, kwnames)? }
        };
        TransportCore::write(&core, &data)?;
        Ok(py.None().into_ptr())
    })
}

/// `ferroloop.transports._write_arguments`, a Python function `write(self, data)`.
static WRITE_ARGUMENTS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// `write`'s one argument, given any other way than one positional: by keyword, or wrong.
/// Python parses them (`_write_arguments`), so every outcome and message is the running
/// interpreter's own for a method `def write(self, data)`.
///
/// # Safety
/// As for `parse`: CPython's vectorcall argument array.
#[cold]
unsafe fn write_argument<'py>(
    py: Python<'py>,
    core: &Bound<'py, TransportCore>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    let parse = WRITE_ARGUMENTS.get_or_try_init(py, || {
        py.import("ferroloop.transports")?
            .getattr("_write_arguments")
            .map(Bound::unbind)
    })?;
    let nargs = nargs as usize;
    let transport = core.get().transport(py);
    let mut positional = vec![transport.unwrap_or_else(|| py.None().into_bound(py))];
    // SAFETY: indices below `nargs` are the positional arguments, live for the call.
    positional.extend((0..nargs).map(|i| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) }));
    let named = PyDict::new(py);
    // SAFETY: the caller's contract is `keywords`'s.
    for (key, value) in unsafe { keywords(py, args, nargs, kwnames) } {
        named.set_item(key, value)?;
    }
    parse
        .bind(py)
        .call(PyTuple::new(py, positional)?, Some(&named))
}

/// `_read_ready()`: the stream transport's reader callback, run from the ready queue.
unsafe extern "C" fn transport_read_ready(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guard(|py| {
        // SAFETY: called by `TransportCore`'s method descriptor with its receiver.
        let core = unsafe { receiver::<TransportCore>(py, slf) };
        core.get().read_ready(py)?;
        Ok(py.None().into_ptr())
    })
}

type FastFn = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

fn install(
    py: Python<'_>,
    cls: &Bound<'_, PyType>,
    name: &'static CStr,
    func: FastFn,
    doc: &'static CStr,
) -> PyResult<()> {
    let meth = ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: func,
    };
    cmethods::install(
        py,
        cls,
        name,
        meth,
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        doc,
    )
}

/// Installs the four scheduling methods and `create_task` on `LoopCore`, and `write` and
/// `_read_ready` on `TransportCore`.
pub fn init(py: Python<'_>) -> PyResult<()> {
    let cls = py.get_type::<LoopCore>();
    install(
        py,
        &cls,
        c"call_soon",
        call_soon,
        c"call_soon($self, callback, /, *args, context=None)\n--\n\nArrange for callback(*args) to be called soon, in FIFO order.",
    )?;
    install(
        py,
        &cls,
        c"call_soon_threadsafe",
        call_soon_threadsafe,
        c"call_soon_threadsafe($self, callback, /, *args, context=None)\n--\n\nLike call_soon(), but callable from any thread; wakes a sleeping loop.",
    )?;
    install(
        py,
        &cls,
        c"call_later",
        call_later,
        c"call_later($self, delay, callback, /, *args, context=None)\n--\n\nArrange for callback(*args) to be called after delay seconds.",
    )?;
    install(
        py,
        &cls,
        c"call_at",
        call_at,
        c"call_at($self, when, callback, /, *args, context=None)\n--\n\nArrange for callback(*args) to be called at loop time when.",
    )?;
    install(
        py,
        &cls,
        c"create_task",
        create_task,
        c"create_task($self, coro, *, name=None, context=None, **kwargs)\n--\n\nSchedule a coroutine on the loop and return its Task.",
    )?;
    let transport = py.get_type::<TransportCore>();
    install(
        py,
        &transport,
        c"write",
        transport_write,
        c"write($self, data)\n--\n\nQueue data (any bytes-like object) to be sent after this batch of callbacks.",
    )?;
    cmethods::install(
        py,
        &transport,
        c"_read_ready",
        ffi::PyMethodDefPointer {
            PyCFunction: transport_read_ready,
        },
        ffi::METH_NOARGS,
        c"_read_ready($self)\n--\n\nThe readability watcher's callback: one read, handed to the protocol.",
    )?;
    Ok(())
}
