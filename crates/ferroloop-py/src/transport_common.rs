//! What the two native transport cores share: `TransportCore` (stream sockets,
//! `transports.rs`) and `DatagramCore` (datagram sockets, `datagram.rs`).
//!
//! In asyncio both socket transports derive from `_SelectorTransport`, which holds the loop,
//! the socket's fd, the protocol, the closing / reading / connection-lost state and the write
//! buffer limits with their `pause_writing` / `resume_writing` calls. Here that base is
//! `Common`, a struct each core embeds in its own state as the field `c`, and the behaviour
//! built on it is the trait `NativeTransport`, whose default methods both cores use. A core
//! supplies three things: its cell, where its `Common` is, and how many bytes it has queued
//! (a byte queue for streams, datagrams plus asyncio's per-datagram header for datagrams).
//! The Python methods themselves stay in each core's `#[pymethods]` block, as one-line calls
//! into the trait, so a reader finds every transport method where asyncio's name says.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::IntoPyObjectExt;

use crate::event_loop::LoopCore;
use crate::gil_cell::GilCell;
use crate::watchers::Direction;

/// asyncio's default high-water mark for a transport's write buffer (the low one is a
/// quarter of it).
pub(crate) const DEFAULT_HIGH: usize = 64 * 1024;

/// The state of asyncio's `_SelectorTransport` that both cores keep alike.
#[derive(Default)]
pub(crate) struct Common {
    pub(crate) loop_: Option<Py<LoopCore>>,
    /// The Python transport this core belongs to (what protocols see).
    pub(crate) transport: Option<Py<PyAny>>,
    pub(crate) protocol: Option<Py<PyAny>>,
    /// The core's own bound readiness callbacks, the watchers' callbacks.
    pub(crate) read_cb: Option<Py<PyAny>>,
    pub(crate) write_cb: Option<Py<PyAny>>,
    /// The socket's descriptor; -1 once a core knows it is closed.
    pub(crate) fd: i32,
    pub(crate) closing: bool,
    /// Reading paused (`pause_reading`).
    pub(crate) paused: bool,
    /// asyncio's `_conn_lost`: non-zero once `connection_lost` is scheduled.
    pub(crate) conn_lost: u32,
    /// Whether `connection_lost` is still to be called (asyncio's `_protocol_connected`).
    pub(crate) protocol_connected: bool,
    /// Whether the protocol was told to pause writing (asyncio's `_protocol_paused`).
    pub(crate) protocol_paused: bool,
    pub(crate) writer_registered: bool,
    /// The write-buffer limits as numbers to compare sizes with.
    pub(crate) high: f64,
    pub(crate) low: f64,
    /// The limits as the user gave them, `(low, high)`: asyncio keeps and returns those
    /// objects (a float stays a float). `None`: the defaults.
    pub(crate) limit_objects: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl Common {
    pub(crate) fn new(loop_: Py<LoopCore>, transport: Py<PyAny>, fd: i32) -> Self {
        Self {
            loop_: Some(loop_),
            transport: Some(transport),
            fd,
            high: DEFAULT_HIGH as f64,
            low: (DEFAULT_HIGH / 4) as f64,
            ..Self::default()
        }
    }

    /// What survives `_release` (after `connection_lost`): the transport closed, the limits
    /// as they were, no other Python object.
    pub(crate) fn released(&mut self, fd: i32) -> Self {
        Self {
            fd,
            closing: true,
            conn_lost: self.conn_lost.max(1),
            high: self.high,
            low: self.low,
            limit_objects: self.limit_objects.take(),
            ..Self::default()
        }
    }

    /// The Python objects it holds, for the collector's `tp_traverse`.
    pub(crate) fn objects(&self) -> impl Iterator<Item = &Py<PyAny>> {
        [
            self.loop_.as_ref().map(|l| l.as_any()),
            self.transport.as_ref(),
            self.protocol.as_ref(),
            self.read_cb.as_ref(),
            self.write_cb.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.limit_objects.iter().flat_map(|(l, h)| [l, h]))
    }
}

impl LoopCore {
    pub(crate) fn is_closed_flag(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn is_running_flag(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A write-buffer limit (already checked to be `>= 0`) as a number to compare buffer sizes
/// with: asyncio compares sizes with whatever the user gave, so a float stays fractional and
/// an int too large for 64 bits is larger than any size.
fn limit_number(v: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(n) = v.extract::<u64>() {
        return Ok(n as f64);
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return Ok(f64::INFINITY);
    }
    v.extract::<f64>()
}

/// KeyboardInterrupt and SystemExit go to the caller; every other error a protocol raises is
/// reported through the loop, as asyncio does.
pub(crate) fn propagates(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}

/// asyncio's `_SelectorTransport` behaviour over a core's `Common` (see the module comment).
pub(crate) trait NativeTransport {
    type State;

    fn cell(&self) -> &GilCell<Self::State>;
    fn common(st: &mut Self::State) -> &mut Common;
    /// asyncio's `get_write_buffer_size()`, without sending anything first.
    fn buffered(st: &Self::State) -> usize;

    fn loop_core<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        let mut st = self.cell().borrow_mut(py);
        Self::common(&mut st)
            .loop_
            .as_ref()
            .map(|l| l.clone_ref(py).into_bound(py))
    }

    fn transport<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let mut st = self.cell().borrow_mut(py);
        Self::common(&mut st)
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py).into_bound(py))
    }

    fn protocol<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let mut st = self.cell().borrow_mut(py);
        Self::common(&mut st)
            .protocol
            .as_ref()
            .map(|p| p.clone_ref(py).into_bound(py))
    }

    /// Starts or stops the loop watching the fd in one direction, with the core's callback.
    /// Nothing once the fd is closed or the loop is closed.
    fn set_watch(&self, py: Python<'_>, dir: Direction, on: bool) -> PyResult<()> {
        let Some(lp) = self.loop_core(py) else {
            return Ok(());
        };
        let (fd, cb) = {
            let mut st = self.cell().borrow_mut(py);
            let c = Self::common(&mut st);
            let cb = match dir {
                Direction::Read => c.read_cb.as_ref(),
                Direction::Write => c.write_cb.as_ref(),
            };
            (c.fd, cb.map(|cb| cb.clone_ref(py)))
        };
        if fd < 0 || lp.get().is_closed_flag() {
            return Ok(());
        }
        if on {
            let Some(cb) = cb else { return Ok(()) };
            let handle = LoopCore::new_io_handle(&lp, cb.bind(py))?;
            let fdobj = fd.into_pyobject(py)?.into_any();
            lp.get().add_watcher(py, &fdobj, dir, &handle)
        } else {
            lp.get().remove_watcher_fd(py, fd, dir, None).map(|_| ())
        }
    }

    /// `pause_writing()` once the buffer is above the high-water mark.
    fn maybe_pause_protocol(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.cell().borrow_mut(py);
            let size = Self::buffered(&st);
            let c = Self::common(&mut st);
            if size as f64 <= c.high || c.protocol_paused {
                return Ok(());
            }
            c.protocol_paused = true;
        }
        self.call_flow_control(py, "pause_writing")
    }

    /// `resume_writing()` once a paused protocol's buffer is down to the low-water mark.
    fn maybe_resume_protocol(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.cell().borrow_mut(py);
            let size = Self::buffered(&st);
            let c = Self::common(&mut st);
            if !c.protocol_paused || size as f64 > c.low {
                return Ok(());
            }
            c.protocol_paused = false;
        }
        self.call_flow_control(py, "resume_writing")
    }

    /// `protocol.pause_writing()` / `resume_writing()`; a failure goes to the exception
    /// handler (Python: `transport._flow_control_failed`).
    fn call_flow_control(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let Some(protocol) = self.protocol(py) else {
            return Ok(());
        };
        if let Err(err) = protocol.call_method0(name) {
            if propagates(py, &err) {
                return Err(err);
            }
            if let Some(tr) = self.transport(py) {
                tr.call_method1(
                    pyo3::intern!(py, "_flow_control_failed"),
                    (name, err.value(py)),
                )?;
            }
        }
        Ok(())
    }

    /// `loop.call_soon(transport._call_connection_lost, exc)`.
    fn schedule_connection_lost(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let (Some(lp), Some(tr)) = (self.loop_core(py), self.transport(py)) else {
            return Ok(());
        };
        let cb = tr.getattr(pyo3::intern!(py, "_call_connection_lost"))?;
        LoopCore::call_soon_native(&lp, &cb, &PyTuple::new(py, [exc])?)
    }

    fn protocol_or_none(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol(py)
            .map(Bound::unbind)
            .unwrap_or_else(|| py.None())
    }

    fn closing(&self, py: Python<'_>) -> bool {
        Self::common(&mut self.cell().borrow_mut(py)).closing
    }

    fn reading(&self, py: Python<'_>) -> bool {
        let mut st = self.cell().borrow_mut(py);
        let c = Self::common(&mut st);
        !c.closing && !c.paused
    }

    /// The reader asyncio adds after `connection_made` (only if still reading).
    fn start_reading(&self, py: Python<'_>) -> PyResult<()> {
        if !self.reading(py) {
            return Ok(());
        }
        self.set_watch(py, Direction::Read, true)
    }

    /// Whether reading stopped (false if it was not reading).
    fn pause(&self, py: Python<'_>) -> PyResult<bool> {
        {
            let mut st = self.cell().borrow_mut(py);
            let c = Self::common(&mut st);
            if c.closing || c.paused {
                return Ok(false);
            }
            c.paused = true;
        }
        self.set_watch(py, Direction::Read, false)?;
        Ok(true)
    }

    /// Whether reading resumed (false if it was not paused or is closing).
    fn resume(&self, py: Python<'_>) -> PyResult<bool> {
        {
            let mut st = self.cell().borrow_mut(py);
            let c = Self::common(&mut st);
            if c.closing || !c.paused {
                return Ok(false);
            }
            c.paused = false;
        }
        self.set_watch(py, Direction::Read, true)?;
        Ok(true)
    }

    /// `(low, high)`, as asyncio's `get_write_buffer_limits()` orders them: the objects the
    /// user gave, or the default ints.
    fn limits(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let given = {
            let mut st = self.cell().borrow_mut(py);
            Self::common(&mut st)
                .limit_objects
                .as_ref()
                .map(|(low, high)| (low.clone_ref(py), high.clone_ref(py)))
        };
        match given {
            Some(pair) => Ok(pair),
            None => Ok((
                (DEFAULT_HIGH / 4).into_py_any(py)?,
                DEFAULT_HIGH.into_py_any(py)?,
            )),
        }
    }

    /// asyncio's `set_write_buffer_limits(high=None, low=None)`.
    fn set_limits(
        &self,
        py: Python<'_>,
        high: Option<Bound<'_, PyAny>>,
        low: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        // asyncio's arithmetic, with Python's operators (so odd values raise what asyncio
        // raises).
        let high_v: Bound<'_, PyAny> = match (&high, &low) {
            (Some(h), _) => h.clone(),
            (None, None) => DEFAULT_HIGH.into_pyobject(py)?.into_any(),
            (None, Some(l)) => l.mul(4)?,
        };
        let low_v: Bound<'_, PyAny> = match &low {
            Some(l) => l.clone(),
            None => high_v.floor_div(4)?,
        };
        let zero = 0i64.into_pyobject(py)?;
        if !(high_v.ge(&low_v)? && low_v.ge(&zero)?) {
            return Err(PyValueError::new_err(format!(
                "high ({}) must be >= low ({}) must be >= 0",
                high_v.repr()?,
                low_v.repr()?
            )));
        }
        // Both converted before either is stored: a value that does not convert leaves the
        // previous limits in place.
        let (high, low) = (limit_number(&high_v)?, limit_number(&low_v)?);
        let old = {
            let mut st = self.cell().borrow_mut(py);
            let c = Self::common(&mut st);
            c.high = high;
            c.low = low;
            c.limit_objects.replace((low_v.unbind(), high_v.unbind()))
        };
        drop(old); // outside the borrow: dropping a Python object may run code
        self.maybe_pause_protocol(py)
    }

    /// `(reading, writing)`: whether each watcher is registered (for repr).
    fn polling(&self, py: Python<'_>) -> (bool, bool) {
        let mut st = self.cell().borrow_mut(py);
        let c = Self::common(&mut st);
        (
            !c.closing && !c.paused && c.conn_lost == 0,
            c.writer_registered,
        )
    }

    fn protocol_paused(&self, py: Python<'_>) -> bool {
        Self::common(&mut self.cell().borrow_mut(py)).protocol_paused
    }

    fn protocol_connected(&self, py: Python<'_>) -> bool {
        Self::common(&mut self.cell().borrow_mut(py)).protocol_connected
    }
}
