//! The datagram transport's native core (asyncio's `_SelectorDatagramTransport`).
//!
//! `python/ferroloop/datagram.py` defines `DatagramTransport`, a subclass of
//! `asyncio.DatagramTransport` (and of `asyncio.Transport`, as asyncio's own is), whose cold
//! methods are Python and whose state and per-datagram work live here, in a `DatagramCore`:
//!
//! * **Reading.** A level-triggered reader (an ordinary fd watcher whose callback is
//!   `_read_ready`, so it runs in the ready queue in asyncio's order) does `recvfrom` of up to
//!   256 KiB (asyncio's `max_size`) into a per-thread scratch buffer and calls
//!   `protocol.datagram_received(bytes, addr)`, with `addr` built as the socket module builds
//!   it. A failing `recvfrom` goes to `protocol.error_received(exc)`: that is how an ICMP
//!   port-unreachable on a connected socket shows up (`ConnectionRefusedError`).
//!
//!   One difference from asyncio, which reads one datagram per readiness event: a readiness
//!   event reads up to `READ_BATCH` (32, libuv's number) datagrams, until the socket is empty,
//!   an error, or the protocol stops reading (`pause_reading`, `close`, `abort` inside
//!   `datagram_received` end the batch). Callbacks the protocol schedules run after the batch
//!   instead of between datagrams. One read per event cost a poll per datagram and left
//!   ferroloop 0.89-0.94x uvloop's speed (uvloop reads up to 32). On IPv4/IPv6 sockets the
//!   batch is one `recvmmsg` into 32 slots of 64 KiB (the largest UDP payload fits), which
//!   also saves the final read that would find the socket empty; the datagrams it took that
//!   the protocol has not had when it pauses or raises wait in `pending` and go out, in
//!   order and before anything read later, once it reads again (`_deliver_pending`, scheduled
//!   by `resume_reading` or after the exception); closing drops them, as closing the socket
//!   drops what the kernel holds. Unix datagram sockets, whose datagrams can be larger than
//!   64 KiB, keep one `recvfrom` per datagram into a 256 KiB buffer (asyncio's `max_size`).
//!   Senders are cached (`AddrCache`): a datagram from a recent sender gets the same immutable
//!   `(host, port)` tuple, and a reply `sendto(data, addr)` finds the kernel address of that
//!   tuple without parsing it.
//! * **Writing.** Unlike the stream transport, nothing is batched: asyncio sends a datagram
//!   inside `sendto()` and reports its failure to `error_received` before `sendto()` returns,
//!   and so does this core. Only what the kernel refuses with `EAGAIN` is queued (a copy, with
//!   its destination), sent datagram by datagram from a writability watcher, and counted for
//!   flow control (`pause_writing` above the high-water mark, `resume_writing` at or below
//!   the low one; asyncio 3.13 adds 8 bytes of header per queued datagram, see
//!   `header`).
//!
//! Addresses: a connected socket (one with a peer name) uses `send()` and ignores the
//! address, as asyncio does. Otherwise the common address forms are converted natively: an
//! exact `(str, int)` tuple (plus flow info and scope id for IPv6) whose host `inet_pton`
//! accepts for the socket's family. Anything else (host names, `''`, `'<broadcast>'`, Unix
//! paths, bad input) is handed to the Python socket's own `sendto`, so errors are exactly the
//! socket module's: an `OSError` (a `gaierror` for a wrong address family, `EMSGSIZE` for an
//! oversized datagram) goes to `error_received`, anything else (a `TypeError` for a malformed
//! address) is fatal to the transport, as in asyncio. Sockets of other families than
//! `AF_INET`, `AF_INET6` and `AF_UNIX` are read through the socket's `recvfrom` too.
//!
//! Errors, logging and the protocol's `connection_lost` are in Python (`_fatal_error`,
//! `_call_connection_lost`); the core calls them.

use std::cell::RefCell;
use std::collections::VecDeque;

use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyOSError, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyMemoryView, PyString, PyTuple};

use crate::event_loop::LoopCore;
use crate::gil_cell::GilCell;
use crate::syscalls::{sys_recvfrom, sys_sendto};
use crate::transport_common::{propagates, Common, NativeTransport};
use crate::watchers::{os_error, Direction};

/// asyncio's `_SelectorTransport.max_size`: the most one `recvfrom` takes.
const MAX_READ: usize = 256 * 1024;
/// Datagrams read per readiness event at most (libuv reads up to 32).
const READ_BATCH: usize = 32;
/// asyncio's `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

// POSIX, declared here because the `libc` crate leaves them out.
unsafe extern "C" {
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

/// A slot of the batched read: the largest UDP payload over IPv4 or IPv6 is 65,527 bytes.
const MMSG_SLOT: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(MAX_READ));
    /// `recvmmsg`'s buffers, made on a thread's first batched read.
    static MMSG: RefCell<Option<Box<MmsgScratch>>> = const { RefCell::new(None) };
}

/// READ_BATCH slots of MMSG_SLOT bytes with their addresses and message headers. The
/// headers point at their slot and address once and for all (the box never moves); a call
/// only resets the address lengths the previous call's messages overwrote.
struct MmsgScratch {
    bufs: Vec<u8>,
    addrs: [libc::sockaddr_storage; READ_BATCH],
    iovs: [libc::iovec; READ_BATCH],
    hdrs: [libc::mmsghdr; READ_BATCH],
    /// Messages the previous `recvmmsg` filled.
    used: usize,
}

const SOCKADDR_STORAGE_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl MmsgScratch {
    fn new() -> Box<Self> {
        let mut bufs = vec![0u8; READ_BATCH * MMSG_SLOT];
        let base = bufs.as_mut_ptr();
        let mut me = Box::new(Self {
            bufs: Vec::new(),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: unsafe { std::mem::zeroed() },
            // SAFETY: iovec is a plain C struct; all zeroes is a valid value (set below).
            iovs: unsafe { std::mem::zeroed() },
            // SAFETY: mmsghdr is a plain C struct; all zeroes (null control, no flags) is a
            // valid value, and its name and iovec pointers are set below.
            hdrs: unsafe { std::mem::zeroed() },
            used: 0,
        });
        let me_ref = &mut *me;
        for i in 0..READ_BATCH {
            me_ref.iovs[i] = libc::iovec {
                // SAFETY: slot i lies inside `bufs` (READ_BATCH slots).
                iov_base: unsafe { base.add(i * MMSG_SLOT) }.cast(),
                iov_len: MMSG_SLOT,
            };
            let hdr = &mut me_ref.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut me_ref.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = SOCKADDR_STORAGE_LEN;
            hdr.msg_iov = &mut me_ref.iovs[i];
            hdr.msg_iovlen = 1;
        }
        // The Vec's heap buffer does not move when the Vec itself is moved into the box.
        me.bufs = bufs;
        me
    }
}

/// One `recvmmsg` of up to READ_BATCH datagrams (IPv4/IPv6 sockets): each datagram and its
/// sender's address, or `errno` if not even one could be read.
fn recvmmsg_batch(py: Python<'_>, fd: i32) -> Result<Vec<(Bound<'_, PyBytes>, SockAddr)>, i32> {
    MMSG.with(|cell| {
        let mut slot = cell.borrow_mut();
        let m = slot.get_or_insert_with(MmsgScratch::new);
        for hdr in &mut m.hdrs[..m.used] {
            hdr.msg_hdr.msg_namelen = SOCKADDR_STORAGE_LEN;
        }
        m.used = 0;
        // SAFETY: every header points at its own address storage and one iovec of MMSG_SLOT
        // bytes inside `bufs`, all owned by `m` and alive for the call; the kernel writes at
        // most those sizes. A null timeout: return what is there (the socket is non-blocking).
        let n = unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                fd,
                m.hdrs.as_mut_ptr(),
                READ_BATCH as libc::c_uint,
                0,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if n < 0 {
            return Err(last_errno());
        }
        m.used = n as usize;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let len = (m.hdrs[i].msg_len as usize).min(MMSG_SLOT);
            let sa = SockAddr {
                storage: m.addrs[i],
                len: m.hdrs[i].msg_hdr.msg_namelen,
            };
            // SAFETY: the kernel wrote `len` bytes (at most the slot) into slot i.
            let data =
                unsafe { std::slice::from_raw_parts(m.bufs.as_ptr().add(i * MMSG_SLOT), len) };
            out.push((PyBytes::new(py, data), sa));
        }
        Ok(out)
    })
}

/// A socket address in the form the kernel takes and gives.
#[derive(Clone, Copy)]
struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    fn zeroed() -> Self {
        Self {
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }
}

/// An IPv4 or IPv6 socket address (`sockaddr_in` or `sockaddr_in6`), compact enough to keep
/// per cached address and per queued datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
struct IpSockAddr {
    bytes: [u8; IP_SOCKADDR_MAX],
    len: u32,
}

/// `size_of::<sockaddr_in6>()`, the larger of the two.
const IP_SOCKADDR_MAX: usize = 28;

impl IpSockAddr {
    /// The address the kernel filled in, if it is an IPv4 or IPv6 one.
    fn from_received(sa: &SockAddr) -> Option<Self> {
        let family = i32::from(sa.storage.ss_family);
        let len = sa.len as usize;
        if !(family == libc::AF_INET || family == libc::AF_INET6) || len > IP_SOCKADDR_MAX {
            return None;
        }
        let mut out = IpSockAddr {
            bytes: [0; IP_SOCKADDR_MAX],
            len: len as u32,
        };
        // SAFETY: sockaddr_storage has at least `len` (<= 28) readable bytes.
        let src = unsafe { std::slice::from_raw_parts(&sa.storage as *const _ as *const u8, len) };
        out.bytes[..len].copy_from_slice(src);
        Some(out)
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        self.bytes.as_ptr().cast()
    }

    /// The first of the two slots of the address cache this address may be in (the other
    /// is `slot ^ 1`).
    fn slot(&self) -> usize {
        // Port and the low bytes of the address vary the most between peers.
        let b = &self.bytes;
        let h = u32::from_ne_bytes([b[2], b[3], b[4], b[5]])
            ^ u32::from_ne_bytes([b[20], b[21], b[22], b[23]]).rotate_left(7);
        (h.wrapping_mul(0x9e37_79b1) >> 27) as usize % ADDR_CACHE
    }
}

/// Slots of a transport's cache of received addresses (two-way set associative).
const ADDR_CACHE: usize = 64;

/// The Python tuples of recently seen senders, by kernel address. A datagram from a known
/// sender gets the same (immutable) tuple again instead of a new one, and `sendto` to that
/// tuple (a reply) finds its kernel address by identity, without parsing it.
#[derive(Default)]
struct AddrCache {
    slots: Vec<Option<(IpSockAddr, Py<PyAny>)>>,
    /// The slot of the latest datagram's sender: the likeliest destination of a reply.
    last: usize,
    /// The latest destination `sendto` parsed, by identity (a client sending to one peer).
    parsed: Option<(Py<PyAny>, IpSockAddr)>,
}

impl AddrCache {
    /// The kernel address of `addr`, if it is a tuple this cache holds.
    fn find(&self, addr: &Bound<'_, PyAny>) -> Option<IpSockAddr> {
        let ptr = addr.as_ptr();
        if let Some(Some((key, obj))) = self.slots.get(self.last) {
            if obj.as_ptr() == ptr {
                return Some(*key);
            }
        }
        if let Some((obj, key)) = &self.parsed {
            if obj.as_ptr() == ptr {
                return Some(*key);
            }
        }
        self.slots
            .iter()
            .flatten()
            .find(|(_, obj)| obj.as_ptr() == ptr)
            .map(|(key, _)| *key)
    }
}

/// Where a datagram goes.
enum Dest {
    /// A connected socket: `send()`, the address is ignored (asyncio's `peername` check).
    Connected,
    /// A destination converted natively: `sendto()` with it.
    Native(IpSockAddr),
    /// Anything else: the Python socket's `sendto(data, addr)` decides (and raises).
    Python(Py<PyAny>),
}

/// A datagram the kernel refused for now.
struct Outgoing {
    /// `bytes(data)`: an exact `bytes` by reference, anything else copied.
    data: Py<PyBytes>,
    dest: Dest,
}

/// What one send attempt came to.
enum Sent {
    Done,
    WouldBlock,
    /// An `OSError`: reported to `protocol.error_received`.
    Failed(PyErr),
    /// Anything else: fatal to the transport (`_fatal_error`).
    Fatal(PyErr),
}

#[derive(Default)]
pub(crate) struct DState {
    /// The loop, the `DatagramTransport`, the protocol, the fd (-1 once the socket is closed)
    /// and the flags and limits every socket transport has (`read_cb`/`write_cb` are our
    /// `_read_ready`/`_sendto_ready`).
    c: Common,
    /// The Python socket, for the address forms and families handled by the socket module.
    sock: Option<Py<PyAny>>,
    /// `protocol.datagram_received`, looked up once per protocol.
    on_datagram: Option<Py<PyAny>>,
    /// asyncio's `_address`: the remote address of `create_datagram_endpoint(remote_addr=)`,
    /// or `None` (kept only when truthy, as asyncio tests it).
    address: Option<Py<PyAny>>,
    family: i32,
    /// The family is one whose addresses this module converts (INET, INET6, UNIX).
    native: bool,
    /// The socket had a peer name at creation: `send()`, as asyncio does.
    connected: bool,
    /// Bytes counted per queued datagram on top of its length (8 from asyncio 3.13).
    header: usize,
    /// `sendto(b'')` sends an empty datagram (asyncio 3.13+); before, it does nothing.
    send_empty: bool,
    /// asyncio's `_buffer_size`.
    size: usize,
    queue: VecDeque<Outgoing>,
    addrs: AddrCache,
    /// Datagrams a batched read took from the kernel that the protocol has not had yet (it
    /// paused reading, or raised, in the middle of the batch), with their senders.
    pending: VecDeque<(Py<PyBytes>, Py<PyAny>)>,
    /// Our own bound `_deliver_pending`, scheduled when pending datagrams may go out.
    deliver_cb: Option<Py<PyAny>>,
}

#[pyclass(frozen, module = "ferroloop._native")]
pub struct DatagramCore {
    st: GilCell<DState>,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn would_block(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK
}

/// The bytes of `data` (a bytes-like object) for one system call: an exact `bytes` as it
/// is, anything else exported with `PyObject_GetBuffer` (C-contiguous, or the export fails).
enum DataRef<'py> {
    Bytes(Bound<'py, PyBytes>),
    View(BufferView),
}

/// An exported buffer, released on drop. Nothing runs Python code while it is held, so the
/// exporter (a `bytearray`) cannot be resized under us.
struct BufferView(ffi::Py_buffer);

impl Drop for BufferView {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released
        // exactly once, here, with the GIL held (it never leaves a GIL-holding scope).
        unsafe { ffi::PyBuffer_Release(&mut self.0) }
    }
}

impl<'py> DataRef<'py> {
    fn new(data: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = data.cast_exact::<PyBytes>() {
            return Ok(DataRef::Bytes(b.clone()));
        }
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: on success PyObject_GetBuffer fills `view`, which BufferView releases.
        unsafe {
            if ffi::PyObject_GetBuffer(data.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) != 0 {
                return Err(PyErr::fetch(data.py()));
            }
            Ok(DataRef::View(BufferView(view.assume_init())))
        }
    }

    fn raw(&self) -> (*const u8, usize) {
        match self {
            DataRef::Bytes(b) => {
                let s = b.as_bytes();
                (s.as_ptr(), s.len())
            }
            DataRef::View(v) => (v.0.buf as *const u8, v.0.len as usize),
        }
    }
}

/// An exact Python `int` in `0..=max`, or `None`.
fn small_uint(obj: &Bound<'_, PyAny>, max: u64) -> Option<u64> {
    let v = obj.cast_exact::<PyInt>().ok()?.extract::<u64>().ok()?;
    (v <= max).then_some(v)
}

/// `addr` as a kernel address for a socket of `family`, when it is an exact tuple of an IP
/// literal (of that family, without a zone id) and exact ints in range; `None` otherwise
/// (the socket module then converts it, resolving names and raising its own errors).
fn parse_ip_address(family: i32, addr: &Bound<'_, PyAny>) -> Option<IpSockAddr> {
    let t = addr.cast_exact::<PyTuple>().ok()?;
    let n = t.len();
    let ok_len = match family {
        libc::AF_INET => n == 2,
        libc::AF_INET6 => (2..=4).contains(&n),
        _ => false,
    };
    if !ok_len {
        return None;
    }
    let host_obj = t.get_item(0).ok()?;
    let host = host_obj.cast_exact::<PyString>().ok()?.to_str().ok()?;
    // NUL-terminated on the stack; anything too long for an address literal is not one.
    let mut text = [0 as libc::c_char; 64];
    if host.is_empty() || host.len() >= text.len() || host.bytes().any(|b| b == 0 || b == b'%') {
        return None;
    }
    for (d, s) in text.iter_mut().zip(host.bytes()) {
        *d = s as libc::c_char;
    }
    let port = small_uint(&t.get_item(1).ok()?, 0xffff)? as u16;
    let mut out = IpSockAddr {
        bytes: [0; IP_SOCKADDR_MAX],
        len: 0,
    };
    if family == libc::AF_INET {
        // SAFETY: `out.bytes` is 28 bytes, 8-aligned: room for a sockaddr_in (16 bytes).
        let sin = unsafe { &mut *(out.bytes.as_mut_ptr() as *mut libc::sockaddr_in) };
        // SAFETY: `text` is NUL-terminated; inet_pton writes 4 bytes into sin_addr.
        let ok = unsafe {
            inet_pton(
                libc::AF_INET,
                text.as_ptr(),
                (&mut sin.sin_addr as *mut libc::in_addr).cast(),
            )
        };
        if ok != 1 {
            return None;
        }
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        out.len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    } else {
        let flowinfo = match t.get_item(2) {
            Ok(f) => small_uint(&f, 0xfffff)? as u32,
            Err(_) => 0,
        };
        let scope_id = match t.get_item(3) {
            Ok(s) => small_uint(&s, u64::from(u32::MAX))? as u32,
            Err(_) => 0,
        };
        // SAFETY: `out.bytes` is 28 bytes, 8-aligned: room for a sockaddr_in6 (28 bytes).
        let sin6 = unsafe { &mut *(out.bytes.as_mut_ptr() as *mut libc::sockaddr_in6) };
        // SAFETY: `text` is NUL-terminated; inet_pton writes 16 bytes into sin6_addr.
        let ok = unsafe {
            inet_pton(
                libc::AF_INET6,
                text.as_ptr(),
                (&mut sin6.sin6_addr as *mut libc::in6_addr).cast(),
            )
        };
        if ok != 1 {
            return None;
        }
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sin6.sin6_port = port.to_be();
        sin6.sin6_flowinfo = flowinfo.to_be();
        sin6.sin6_scope_id = scope_id;
        out.len = std::mem::size_of::<libc::sockaddr_in6>() as u32;
    }
    Some(out)
}

/// `inet_ntop` of the address at `src`.
fn ntop(py: Python<'_>, family: i32, src: *const libc::c_void) -> PyResult<Bound<'_, PyString>> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: `src` points at an in_addr/in6_addr matching `family`; `buf` has room for the
    // longest text form (INET6_ADDRSTRLEN = 46) and inet_ntop NUL-terminates it.
    let p = unsafe { inet_ntop(family, src, buf.as_mut_ptr(), buf.len() as _) };
    if p.is_null() {
        return Err(os_error(py, std::io::Error::last_os_error()));
    }
    // SAFETY: inet_ntop wrote a NUL-terminated string into `buf`.
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(PyString::new(py, &text.to_string_lossy()))
}

/// A received address as the socket module returns it (`makesockaddr`): `(host, port)` for
/// IPv4, `(host, port, flowinfo, scope_id)` for IPv6, a `str` path (or `bytes` for the
/// abstract namespace) for Unix sockets, `None` for an unnamed sender.
fn sockaddr_to_py<'py>(py: Python<'py>, sa: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    if sa.len == 0 {
        return Ok(py.None().into_bound(py));
    }
    match i32::from(sa.storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in (ss_family says so).
            let sin = unsafe { &*(&sa.storage as *const _ as *const libc::sockaddr_in) };
            let host = ntop(
                py,
                libc::AF_INET,
                (&sin.sin_addr as *const libc::in_addr).cast(),
            )?;
            let port = u16::from_be(sin.sin_port).into_pyobject(py)?;
            Ok(PyTuple::new(py, [host.into_any(), port.into_any()])?.into_any())
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled a sockaddr_in6 (ss_family says so).
            let sin6 = unsafe { &*(&sa.storage as *const _ as *const libc::sockaddr_in6) };
            let host = ntop(
                py,
                libc::AF_INET6,
                (&sin6.sin6_addr as *const libc::in6_addr).cast(),
            )?;
            Ok(PyTuple::new(
                py,
                [
                    host.into_any(),
                    u16::from_be(sin6.sin6_port).into_pyobject(py)?.into_any(),
                    u32::from_be(sin6.sin6_flowinfo)
                        .into_pyobject(py)?
                        .into_any(),
                    sin6.sin6_scope_id.into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any())
        }
        libc::AF_UNIX => {
            // SAFETY: the kernel filled a sockaddr_un (ss_family says so).
            let sun = unsafe { &*(&sa.storage as *const _ as *const libc::sockaddr_un) };
            let offset = std::mem::size_of::<libc::sa_family_t>();
            let n = (sa.len as usize)
                .saturating_sub(offset)
                .min(sun.sun_path.len());
            // SAFETY: sun_path has at least `n` initialised bytes (the kernel wrote them, the
            // rest was zeroed before the call).
            let path = unsafe { std::slice::from_raw_parts(sun.sun_path.as_ptr().cast::<u8>(), n) };
            if n > 0 && path[0] == 0 {
                return Ok(PyBytes::new(py, path).into_any()); // Linux abstract namespace
            }
            let end = path.iter().position(|&b| b == 0).unwrap_or(n);
            // SAFETY: decodes `end` bytes of `path` (file system encoding, surrogateescape);
            // returns a new reference or NULL with an exception set.
            unsafe {
                let s = ffi::PyUnicode_DecodeFSDefaultAndSize(
                    path.as_ptr().cast(),
                    end as ffi::Py_ssize_t,
                );
                Bound::from_owned_ptr_or_err(py, s)
            }
        }
        family => {
            // As the socket module shows an address of a family it does not know.
            let data = &sa.storage as *const _ as *const u8;
            // SAFETY: sockaddr_storage is 128 readable bytes; sa_data starts after the family.
            let raw = unsafe { std::slice::from_raw_parts(data.add(2), 14) };
            Ok(PyTuple::new(
                py,
                [
                    family.into_pyobject(py)?.into_any(),
                    PyBytes::new(py, raw).into_any(),
                ],
            )?
            .into_any())
        }
    }
}

/// One `recvfrom` into the thread's scratch buffer: the datagram and its sender's address,
/// or `errno`.
fn recvfrom_once(py: Python<'_>, fd: i32) -> Result<(Bound<'_, PyBytes>, SockAddr), i32> {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        let spare = buf.spare_capacity_mut();
        let mut sa = SockAddr::zeroed();
        // SAFETY: `spare` has room for MAX_READ bytes and recvfrom writes at most that; `sa`
        // has room for any address and `len` says how much.
        let r = unsafe {
            sys_recvfrom(
                fd,
                spare.as_mut_ptr().cast(),
                MAX_READ,
                (&mut sa.storage as *mut libc::sockaddr_storage).cast(),
                &mut sa.len,
            )
        };
        if r < 0 {
            return Err(last_errno());
        }
        // SAFETY: recvfrom initialised the first `r` bytes.
        let data = unsafe { std::slice::from_raw_parts(spare.as_ptr().cast::<u8>(), r as usize) };
        Ok((PyBytes::new(py, data), sa))
    })
}

/// One `send`/`sendto` system call; `Err(errno)` on failure.
fn send_raw(fd: i32, data: &DataRef<'_>, to: Option<&IpSockAddr>) -> Result<(), i32> {
    let (ptr, len) = data.raw();
    // SAFETY: `ptr`/`len` describe bytes kept alive (and unchanged) by `data` for the call;
    // `to` is a complete address of `to.len` bytes.
    let r = unsafe {
        match to {
            None => sys_sendto(fd, ptr.cast(), len, std::ptr::null(), 0),
            Some(sa) => sys_sendto(fd, ptr.cast(), len, sa.as_ptr(), sa.len as libc::socklen_t),
        }
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// Sorts an exception raised by the socket module's `send`/`sendto`/`recvfrom` as asyncio's
/// handlers do; `Err` for KeyboardInterrupt/SystemExit, which propagate.
fn classify(py: Python<'_>, err: PyErr) -> PyResult<Sent> {
    if err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py) {
        Ok(Sent::WouldBlock)
    } else if err.is_instance_of::<PyOSError>(py) {
        Ok(Sent::Failed(err))
    } else if propagates(py, &err) {
        Err(err)
    } else {
        Ok(Sent::Fatal(err))
    }
}

impl NativeTransport for DatagramCore {
    type State = DState;

    fn cell(&self) -> &GilCell<DState> {
        &self.st
    }

    fn common(st: &mut DState) -> &mut Common {
        &mut st.c
    }

    fn buffered(st: &DState) -> usize {
        st.size
    }
}

impl DatagramCore {
    /// `transport._fatal_error(exc, message)` (Python: logging, exception handler, then
    /// `_force_close`). After `connection_lost` there is no transport to report to: the
    /// error goes to the caller (asyncio raises an `AttributeError` there too, from its
    /// `_fatal_error`, whose loop is gone).
    fn fatal(&self, py: Python<'_>, err: PyErr, message: &str) -> PyResult<()> {
        if propagates(py, &err) {
            return Err(err);
        }
        match self.transport(py) {
            Some(tr) => tr
                .call_method1(pyo3::intern!(py, "_fatal_error"), (err.value(py), message))
                .map(|_| ()),
            None => Err(err),
        }
    }

    /// `protocol.error_received(exc)`; what it raises propagates, as in asyncio.
    fn error_received(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        match self.protocol(py) {
            Some(p) => p
                .call_method1(pyo3::intern!(py, "error_received"), (err.value(py),))
                .map(|_| ()),
            None => Ok(()),
        }
    }

    /// One attempt to send `data` (a bytes-like object) to `dest`.
    fn send_one(
        &self,
        py: Python<'_>,
        fd: i32,
        data: &Bound<'_, PyAny>,
        dest: &Dest,
    ) -> PyResult<Sent> {
        let to = match dest {
            Dest::Connected => None,
            Dest::Native(sa) => Some(sa),
            Dest::Python(addr) => {
                // The socket module converts the address (and raises what it raises).
                let sock = self
                    .st
                    .borrow_mut(py)
                    .sock
                    .as_ref()
                    .map(|s| s.clone_ref(py).into_any())
                    .unwrap_or_else(|| py.None());
                return match sock
                    .bind(py)
                    .call_method1(pyo3::intern!(py, "sendto"), (data, addr.bind(py)))
                {
                    Ok(_) => Ok(Sent::Done),
                    Err(e) => classify(py, e),
                };
            }
        };
        if fd < 0 {
            // After connection_lost the socket is gone: asyncio then calls `None.send` (or
            // `None.sendto`) and reports the AttributeError as fatal; so does this.
            let name = if to.is_none() { "send" } else { "sendto" };
            return match py.None().bind(py).getattr(name) {
                Ok(_) => Ok(Sent::Done),
                Err(e) => classify(py, e),
            };
        }
        loop {
            let result = {
                let buf = match DataRef::new(data) {
                    Ok(b) => b,
                    Err(e) => return classify(py, e), // e.g. a non-contiguous memoryview
                };
                send_raw(fd, &buf, to)
            };
            match result {
                Ok(()) => return Ok(Sent::Done),
                Err(e) if would_block(e) => return Ok(Sent::WouldBlock),
                Err(libc::EINTR) => {
                    // PEP 475: run the signal handlers (no export held), then retry.
                    if let Err(e) = py.check_signals() {
                        return classify(py, e);
                    }
                }
                Err(e) => {
                    return Ok(Sent::Failed(os_error(
                        py,
                        std::io::Error::from_raw_os_error(e),
                    )))
                }
            }
        }
    }

    /// Where a datagram for `addr` goes (`addr` already checked against `_address`).
    fn dest_for(&self, py: Python<'_>, addr: Option<&Bound<'_, PyAny>>) -> Dest {
        let (connected, family) = {
            let st = self.st.borrow_mut(py);
            (st.connected, st.family)
        };
        if connected {
            return Dest::Connected;
        }
        let Some(a) = addr else {
            return Dest::Python(py.None());
        };
        if let Some(key) = self.st.borrow_mut(py).addrs.find(a) {
            return Dest::Native(key);
        }
        match parse_ip_address(family, a) {
            Some(key) => {
                let old = self
                    .st
                    .borrow_mut(py)
                    .addrs
                    .parsed
                    .replace((a.clone().unbind(), key));
                drop(old); // an exact tuple of a str and ints: nothing runs
                Dest::Native(key)
            }
            None => Dest::Python(a.clone().unbind()),
        }
    }

    /// The sender of a datagram as a Python object: from the cache for an IP address seen
    /// recently, else built (and cached).
    fn addr_object<'py>(&self, py: Python<'py>, sa: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
        let Some(key) = IpSockAddr::from_received(sa) else {
            return sockaddr_to_py(py, sa);
        };
        let first = key.slot();
        let victim = {
            let mut st = self.st.borrow_mut(py);
            let cache = &mut st.addrs;
            if cache.slots.is_empty() {
                cache.slots.resize_with(ADDR_CACHE, || None);
            }
            for slot in [first, first ^ 1] {
                if let Some((k, obj)) = &cache.slots[slot] {
                    if *k == key {
                        cache.last = slot;
                        return Ok(obj.clone_ref(py).into_bound(py));
                    }
                }
            }
            // Replace an empty slot, else the one the latest datagram did not come from.
            let victim = if cache.slots[first].is_none() || cache.last == first ^ 1 {
                first
            } else {
                first ^ 1
            };
            cache.last = victim;
            victim
        };
        let obj = sockaddr_to_py(py, sa)?;
        let old = self.st.borrow_mut(py).addrs.slots[victim].replace((key, obj.clone().unbind()));
        drop(old); // a tuple of a str and ints this module made: nothing runs
        Ok(obj)
    }

    /// The datagram and its sender through the Python socket's `recvfrom` (families this
    /// module does not convert).
    fn read_via_socket(&self, py: Python<'_>) -> PyResult<()> {
        let sock = self
            .st
            .borrow_mut(py)
            .sock
            .as_ref()
            .map(|s| s.clone_ref(py));
        let Some(sock) = sock else { return Ok(()) };
        let got = sock
            .bind(py)
            .call_method1(pyo3::intern!(py, "recvfrom"), (MAX_READ,))
            .and_then(|pair| {
                let (data, addr): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                Ok((data, addr))
            });
        match got {
            Ok((data, addr)) => self.deliver(py, data, addr),
            Err(e) => match classify(py, e)? {
                Sent::Done | Sent::WouldBlock => Ok(()),
                Sent::Failed(e) => self.error_received(py, e),
                Sent::Fatal(e) => self.fatal(py, e, "Fatal read error on datagram transport"),
            },
        }
    }

    /// IPv4/IPv6: one `recvmmsg` takes up to READ_BATCH datagrams, which go to the protocol
    /// one by one while it keeps reading. What it has not had when it pauses or raises waits
    /// in `pending` (closing drops it, as closing the socket would).
    fn read_batch(&self, py: Python<'_>, fd: i32) -> PyResult<()> {
        let batch = loop {
            match recvmmsg_batch(py, fd) {
                Ok(b) => break b,
                Err(e) => {
                    if let Some(done) = self.read_failed(py, e) {
                        return done;
                    }
                }
            }
        };
        let mut rest = batch.into_iter();
        let mut first = true;
        while let Some((data, sa)) = rest.next() {
            if !first {
                let (gone, paused) = {
                    let st = self.st.borrow_mut(py);
                    (st.c.conn_lost > 0 || st.c.closing, st.c.paused)
                };
                if gone {
                    return Ok(());
                }
                if paused {
                    return self.hold(py, std::iter::once((data, sa)).chain(rest));
                }
            }
            first = false;
            let addr = match self.addr_object(py, &sa) {
                Ok(a) => a,
                Err(e) => return self.fatal(py, e, "Fatal read error on datagram transport"),
            };
            if let Err(e) = self.deliver(py, data.into_any(), addr) {
                self.hold(py, rest)?;
                if !self.st.borrow_mut(py).pending.is_empty() {
                    self.schedule_pending(py)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// A failed read's outcome, as asyncio has it: nothing for `EAGAIN`, the protocol's
    /// `error_received` for an `OSError`; `None` after `EINTR` with no signal handler raising
    /// (read again).
    fn read_failed(&self, py: Python<'_>, errno: i32) -> Option<PyResult<()>> {
        if would_block(errno) {
            return Some(Ok(()));
        }
        if errno == libc::EINTR {
            return py
                .check_signals()
                .err()
                .map(|e| self.fatal(py, e, "Fatal read error on datagram transport"));
        }
        let err = os_error(py, std::io::Error::from_raw_os_error(errno));
        Some(self.error_received(py, err))
    }

    /// Keeps datagrams read but not delivered, with their senders as Python objects.
    fn hold<'py>(
        &self,
        py: Python<'py>,
        items: impl Iterator<Item = (Bound<'py, PyBytes>, SockAddr)>,
    ) -> PyResult<()> {
        for (data, sa) in items {
            let addr = self.addr_object(py, &sa)?;
            self.st
                .borrow_mut(py)
                .pending
                .push_back((data.unbind(), addr.unbind()));
        }
        Ok(())
    }

    /// `loop.call_soon(self._deliver_pending)`.
    fn schedule_pending(&self, py: Python<'_>) -> PyResult<()> {
        let cb = self
            .st
            .borrow_mut(py)
            .deliver_cb
            .as_ref()
            .map(|c| c.clone_ref(py));
        let (Some(lp), Some(cb)) = (self.loop_core(py), cb) else {
            return Ok(());
        };
        LoopCore::call_soon_native(&lp, cb.bind(py), &PyTuple::empty(py))
    }

    /// `protocol.datagram_received(data, addr)`; what it raises propagates, as in asyncio.
    fn deliver(
        &self,
        py: Python<'_>,
        data: Bound<'_, PyAny>,
        addr: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (cb, protocol) = {
            let st = self.st.borrow_mut(py);
            (
                st.on_datagram.as_ref().map(|c| c.clone_ref(py)),
                st.c.protocol.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        match (cb, protocol) {
            (Some(cb), _) => cb.bind(py).call1((data, addr)).map(|_| ()),
            (None, Some(p)) => p
                .bind(py)
                .call_method1(pyo3::intern!(py, "datagram_received"), (data, addr))
                .map(|_| ()),
            (None, None) => Ok(()),
        }
    }
}

#[pymethods]
impl DatagramCore {
    /// `connected`: the socket has a peer name (send() it is); `address`: asyncio's
    /// `_address` if truthy, else None; `header`: bytes counted per queued datagram besides
    /// its length; `send_empty`: whether `sendto(b'')` sends.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        loop_: Bound<'_, LoopCore>,
        transport: Bound<'_, PyAny>,
        sock: Bound<'_, PyAny>,
        fd: i32,
        family: i32,
        connected: bool,
        address: Option<Bound<'_, PyAny>>,
        header: usize,
        send_empty: bool,
    ) -> Self {
        Self {
            st: GilCell::new(DState {
                c: Common::new(loop_.unbind(), transport.unbind(), fd),
                sock: Some(sock.unbind()),
                address: address.map(Bound::unbind),
                family,
                native: matches!(family, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX),
                connected,
                header,
                send_empty,
                ..DState::default()
            }),
        }
    }

    /// Binds the watcher callbacks (once the core object exists).
    fn _bind_callbacks(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let read = slf.getattr(pyo3::intern!(py, "_read_ready"))?.unbind();
        let write = slf.getattr(pyo3::intern!(py, "_sendto_ready"))?.unbind();
        let deliver = slf.getattr(pyo3::intern!(py, "_deliver_pending"))?.unbind();
        let mut st = slf.get().st.borrow_mut(py);
        st.c.read_cb = Some(read);
        st.c.write_cb = Some(write);
        st.deliver_cb = Some(deliver);
        Ok(())
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) {
        // Looked up once; a protocol without it fails when a datagram arrives, as in asyncio.
        let on_datagram = protocol
            .getattr(pyo3::intern!(py, "datagram_received"))
            .ok()
            .map(Bound::unbind);
        let (old_protocol, old_cb) = {
            let mut st = self.st.borrow_mut(py);
            st.c.protocol_connected = true;
            (
                st.c.protocol.replace(protocol.unbind()),
                std::mem::replace(&mut st.on_datagram, on_datagram),
            )
        };
        drop((old_protocol, old_cb));
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

    /// Whether reading resumed (false if it was not paused or is closing). Datagrams a
    /// batched read holds for the protocol go out soon, before anything read later.
    fn resume_reading(&self, py: Python<'_>) -> PyResult<bool> {
        let resumed = self.resume(py)?;
        if resumed && !self.st.borrow_mut(py).pending.is_empty() {
            self.schedule_pending(py)?;
        }
        Ok(resumed)
    }

    /// Hands the protocol the datagrams a batched read holds, while it keeps reading.
    fn _deliver_pending(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            let next = {
                let mut st = self.st.borrow_mut(py);
                if st.c.conn_lost > 0 || st.c.closing || st.c.paused {
                    return Ok(());
                }
                st.pending.pop_front()
            };
            let Some((data, addr)) = next else {
                return Ok(());
            };
            if let Err(e) = self.deliver(py, data.into_bound(py).into_any(), addr.into_bound(py)) {
                // As a reader callback that raised: the rest come on the next iteration.
                if !self.st.borrow_mut(py).pending.is_empty() {
                    self.schedule_pending(py)?;
                }
                return Err(e);
            }
        }
    }

    /// The readability watcher's callback: up to `READ_BATCH` datagrams, while the
    /// transport keeps reading (see the module comment).
    fn _read_ready(&self, py: Python<'_>) -> PyResult<()> {
        // Datagrams an earlier batch holds go first: order is the kernel's.
        if !self.st.borrow_mut(py).pending.is_empty() {
            self._deliver_pending(py)?;
            if !self.st.borrow_mut(py).pending.is_empty() {
                return Ok(());
            }
        }
        let (fd, native, family) = {
            let st = self.st.borrow_mut(py);
            if st.c.conn_lost > 0 || st.c.fd < 0 {
                return Ok(());
            }
            (st.c.fd, st.native, st.family)
        };
        if !native {
            return self.read_via_socket(py);
        }
        if family == libc::AF_INET || family == libc::AF_INET6 {
            return self.read_batch(py, fd);
        }
        for i in 0..READ_BATCH {
            if i > 0 {
                let st = self.st.borrow_mut(py);
                if st.c.conn_lost > 0 || st.c.fd < 0 || st.c.closing || st.c.paused {
                    return Ok(());
                }
            }
            let (data, sa) = match recvfrom_once(py, fd) {
                Ok(got) => got,
                Err(e) => match self.read_failed(py, e) {
                    Some(done) => return done,
                    None => continue,
                },
            };
            let addr = match self.addr_object(py, &sa) {
                Ok(a) => a,
                Err(e) => return self.fatal(py, e, "Fatal read error on datagram transport"),
            };
            self.deliver(py, data.into_any(), addr)?;
        }
        Ok(())
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let exact_bytes = data.is_exact_instance_of::<PyBytes>();
        if !(exact_bytes
            || data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not {}",
                data.get_type().name()?.repr()?
            )));
        }
        let (send_empty, address) = {
            let st = self.st.borrow_mut(py);
            (st.send_empty, st.address.as_ref().map(|a| a.clone_ref(py)))
        };
        let empty = if exact_bytes {
            data.len()? == 0
        } else {
            !data.is_truthy()?
        };
        if empty && !send_empty {
            return Ok(());
        }
        let addr = match address {
            Some(address) => {
                let address = address.into_bound(py);
                if let Some(a) = &addr {
                    if !a.is(&address) && !address.eq(a)? {
                        return Err(PyValueError::new_err(format!(
                            "Invalid address: must be None or {}",
                            address.str()?
                        )));
                    }
                }
                {
                    let mut st = self.st.borrow_mut(py);
                    if st.c.conn_lost > 0 {
                        let warn = st.c.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                        st.c.conn_lost += 1;
                        drop(st);
                        if warn {
                            py.import("logging")?
                                .call_method1("getLogger", ("asyncio",))?
                                .call_method1("warning", ("socket.send() raised exception.",))?;
                        }
                        return Ok(());
                    }
                }
                Some(address)
            }
            None => addr,
        };
        let dest = self.dest_for(py, addr.as_ref());
        let (queued, fd) = {
            let st = self.st.borrow_mut(py);
            (!st.queue.is_empty(), st.c.fd)
        };
        if !queued {
            // Send at once, as asyncio does.
            match self.send_one(py, fd, data, &dest)? {
                Sent::Done => return Ok(()),
                Sent::WouldBlock => {
                    let newly =
                        !std::mem::replace(&mut self.st.borrow_mut(py).c.writer_registered, true);
                    if newly {
                        self.set_watch(py, Direction::Write, true)?;
                    }
                }
                Sent::Failed(e) => return self.error_received(py, e),
                Sent::Fatal(e) => {
                    return self.fatal(py, e, "Fatal write error on datagram transport");
                }
            }
        }
        // Queue `bytes(data)`: what is sent later cannot change.
        let copy: Bound<'_, PyBytes> = if exact_bytes {
            data.cast::<PyBytes>()?.clone()
        } else {
            py.get_type::<PyBytes>()
                .call1((data,))?
                .cast_into::<PyBytes>()?
        };
        let len = copy.as_bytes().len();
        {
            let mut st = self.st.borrow_mut(py);
            st.size += len + st.header;
            st.queue.push_back(Outgoing {
                data: copy.unbind(),
                dest,
            });
        }
        self.maybe_pause_protocol(py)
    }

    /// The writability watcher's callback: send what is queued, datagram by datagram.
    fn _sendto_ready(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            let (item, fd) = {
                let mut st = self.st.borrow_mut(py);
                let Some(item) = st.queue.pop_front() else {
                    break;
                };
                let n = item.data.bind(py).as_bytes().len() + st.header;
                st.size = st.size.saturating_sub(n);
                (item, st.c.fd)
            };
            let data = item.data.bind(py).clone();
            match self.send_one(py, fd, data.as_any(), &item.dest)? {
                Sent::Done => {}
                Sent::WouldBlock => {
                    let mut st = self.st.borrow_mut(py);
                    st.size += data.as_bytes().len() + st.header;
                    st.queue.push_front(item);
                    break;
                }
                Sent::Failed(e) => {
                    drop(item);
                    return self.error_received(py, e);
                }
                Sent::Fatal(e) => {
                    drop(item);
                    return self.fatal(py, e, "Fatal write error on datagram transport");
                }
            }
        }
        self.maybe_resume_protocol(py)?; // may queue more
        let (empty, had_writer, closing) = {
            let st = self.st.borrow_mut(py);
            (st.queue.is_empty(), st.c.writer_registered, st.c.closing)
        };
        if empty {
            if had_writer {
                self.st.borrow_mut(py).c.writer_registered = false;
                self.set_watch(py, Direction::Write, false)?;
            }
            if closing {
                if let Some(tr) = self.transport(py) {
                    tr.call_method1(pyo3::intern!(py, "_call_connection_lost"), (py.None(),))?;
                }
            }
        }
        Ok(())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut st = self.st.borrow_mut(py);
            if st.c.closing {
                return Ok(());
            }
            st.c.closing = true;
        }
        self.set_watch(py, Direction::Read, false)?;
        let had_writer = {
            let mut st = self.st.borrow_mut(py);
            if !st.queue.is_empty() {
                return Ok(()); // the writer finishes the close once the queue is sent
            }
            st.c.conn_lost += 1;
            std::mem::replace(&mut st.c.writer_registered, false)
        };
        if had_writer {
            self.set_watch(py, Direction::Write, false)?;
        }
        self.schedule_connection_lost(py, py.None().into_bound(py))
    }

    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self._force_close(py, py.None().into_bound(py))
    }

    /// asyncio's `_force_close`: drop what is queued, stop watching, and schedule
    /// `connection_lost(exc)` (once). As in asyncio, the write buffer size is left as it was.
    fn _force_close(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let (dropped, had_writer, was_closing) = {
            let mut st = self.st.borrow_mut(py);
            if st.c.conn_lost > 0 {
                return Ok(());
            }
            let had = std::mem::replace(&mut st.c.writer_registered, false);
            let was = std::mem::replace(&mut st.c.closing, true);
            st.c.conn_lost += 1;
            (std::mem::take(&mut st.queue), had, was)
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

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.st.borrow_mut(py).size
    }

    /// The same, under the name the stream core gives its size without a flush (for repr).
    fn _buffer_size(&self, py: Python<'_>) -> usize {
        self.st.borrow_mut(py).size
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

    /// After `connection_lost` closed the socket: let go of everything (breaks the
    /// transport/protocol cycle) and never touch the fd number again.
    fn _release(&self, py: Python<'_>) {
        let mut old = std::mem::take(&mut *self.st.borrow_mut(py));
        {
            let mut st = self.st.borrow_mut(py);
            st.c = old.c.released(-1);
            st.family = old.family;
            st.connected = old.connected;
            st.header = old.header;
            st.send_empty = old.send_empty;
            st.address = old.address.as_ref().map(|a| a.clone_ref(py));
            st.size = old.size;
        }
        drop(old);
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        let Some(st) = self.st.try_borrow_unguarded() else {
            return Ok(()); // busy: what it holds stays alive this round, which is safe
        };
        let own = [&st.sock, &st.on_datagram, &st.address, &st.deliver_cb];
        for obj in st.c.objects().chain(own.into_iter().flatten()) {
            visit.call(obj)?;
        }
        for (data, addr) in &st.pending {
            visit.call(data)?;
            visit.call(addr)?;
        }
        for (_, obj) in st.addrs.slots.iter().flatten() {
            visit.call(obj)?;
        }
        if let Some((obj, _)) = &st.addrs.parsed {
            visit.call(obj)?;
        }
        for item in &st.queue {
            visit.call(&item.data)?;
            if let Dest::Python(addr) = &item.dest {
                visit.call(addr)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // SAFETY: the collector calls tp_clear with the GIL held.
        let py = unsafe { Python::assume_attached() };
        if let Some(mut st) = self.st.try_borrow_mut(py) {
            let old = std::mem::take(&mut *st);
            st.c.fd = -1;
            st.c.closing = true;
            st.c.conn_lost = 1;
            drop(st);
            drop(old);
        }
    }
}
