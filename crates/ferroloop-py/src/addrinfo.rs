//! `getaddrinfo` for hosts that are already IP addresses, answered in-process.
//!
//! asyncio sends every `getaddrinfo` to the default executor: a thread hop and a libc
//! resolver call, tens of microseconds, even for `'127.0.0.1'`. Connection setup with a
//! numeric host (the common case behind proxies, in tests and for `localhost` services) need
//! not pay that. This module recognises exactly the inputs whose answer it can build itself
//! and must build *identically* to `socket.getaddrinfo` (same tuples, same enum members, same
//! address spelling); for everything else it answers `None` and the caller takes asyncio's
//! executor path, so errors, service names, `AI_ADDRCONFIG`, host names and the rest keep
//! libc's behaviour. `tests/test_getaddrinfo.py` checks the equality over a grid.
//!
//! Addresses are parsed and printed with libc's `inet_pton`/`inet_ntop`, which is what
//! `socket.getaddrinfo` ends up doing (so `'::0001'` comes back as `'::1'` and
//! `'::1.2.3.4'` keeps its dotted tail). IPv4 forms that only `inet_aton` accepts
//! (`'127.1'`) go to the executor.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};

const AF_UNSPEC: i32 = libc::AF_UNSPEC;
const AF_INET: i32 = libc::AF_INET;
const AF_INET6: i32 = libc::AF_INET6;
const SOCK_STREAM: i32 = libc::SOCK_STREAM;
const SOCK_DGRAM: i32 = libc::SOCK_DGRAM;
const SOCK_RAW: i32 = libc::SOCK_RAW;
const IPPROTO_TCP: i32 = libc::IPPROTO_TCP;
const IPPROTO_UDP: i32 = libc::IPPROTO_UDP;
/// Flags that do not change the answer for a numeric host and port.
const HANDLED_FLAGS: i32 =
    libc::AI_PASSIVE | libc::AI_NUMERICHOST | libc::AI_NUMERICSERV | libc::AI_CANONNAME;

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

enum Addr {
    V4(String),
    V6(String, u32),
}

/// `inet_pton` then `inet_ntop`: the canonical spelling of an address literal, if it is one.
fn canonical(family: i32, text: &str) -> Option<String> {
    let c = CString::new(text).ok()?;
    let mut raw = [0u8; 16];
    let mut out = [0 as libc::c_char; 64];
    // SAFETY: `c` is NUL-terminated; `raw` has room for an in6_addr (16 bytes), the larger of
    // the two address types; `out` is larger than INET6_ADDRSTRLEN (46) and its length is
    // passed; inet_ntop NUL-terminates on success.
    unsafe {
        if inet_pton(family, c.as_ptr(), raw.as_mut_ptr().cast()) != 1 {
            return None;
        }
        let p = inet_ntop(
            family,
            raw.as_ptr().cast(),
            out.as_mut_ptr(),
            out.len() as libc::socklen_t,
        );
        if p.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(p).to_str().ok()?.to_owned())
    }
}

/// A zone id as glibc reads it: an interface name, else a decimal number.
fn scope_id(zone: &str) -> Option<u32> {
    if zone.is_empty() {
        return None;
    }
    let c = CString::new(zone).ok()?;
    // SAFETY: `c` is a NUL-terminated string; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index != 0 {
        return Some(index);
    }
    if zone.bytes().all(|b| b.is_ascii_digit()) {
        return zone.parse::<u32>().ok();
    }
    None
}

fn parse_host(host: &str, family: i32) -> Option<Addr> {
    let (addr, zone) = match host.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (host, None),
    };
    if zone.is_none() && matches!(family, AF_UNSPEC | AF_INET) {
        if let Some(a) = canonical(AF_INET, addr) {
            return Some(Addr::V4(a));
        }
    }
    if matches!(family, AF_UNSPEC | AF_INET6) {
        let a = canonical(AF_INET6, addr)?;
        let scope = match zone {
            None => 0,
            // glibc takes a zone only on link-local addresses (fe80::/10).
            Some(z) => {
                let lower = a.to_ascii_lowercase();
                let link_local = lower.starts_with("fe8")
                    || lower.starts_with("fe9")
                    || lower.starts_with("fea")
                    || lower.starts_with("feb");
                if !link_local {
                    return None;
                }
                scope_id(z)?
            }
        };
        return Some(Addr::V6(a, scope));
    }
    None
}

/// The port a numeric service names: `None` → 0, an exact int in range, or decimal digits.
fn parse_port(port: &Bound<'_, PyAny>) -> Option<u16> {
    if port.is_none() {
        return Some(0);
    }
    if port.is_exact_instance_of::<PyInt>() {
        return port.extract::<u16>().ok();
    }
    let text: String = if let Ok(s) = port.cast::<PyString>() {
        s.to_str().ok()?.to_owned()
    } else if let Ok(b) = port.cast::<PyBytes>() {
        std::str::from_utf8(b.as_bytes()).ok()?.to_owned()
    } else {
        return None;
    };
    if text.is_empty() {
        return Some(0);
    }
    if text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u16::try_from(text.parse::<u32>().ok()?).ok()
}

/// The (socket type, protocol) pairs libc lists for a type/protocol filter.
fn kinds(socktype: i32, proto: i32) -> Option<&'static [(i32, i32)]> {
    const ALL: [(i32, i32); 3] = [
        (SOCK_STREAM, IPPROTO_TCP),
        (SOCK_DGRAM, IPPROTO_UDP),
        (SOCK_RAW, 0),
    ];
    match (socktype, proto) {
        (0, 0) => Some(&ALL),
        (0, IPPROTO_TCP) | (SOCK_STREAM, 0) | (SOCK_STREAM, IPPROTO_TCP) => Some(&ALL[0..1]),
        (0, IPPROTO_UDP) | (SOCK_DGRAM, 0) | (SOCK_DGRAM, IPPROTO_UDP) => Some(&ALL[1..2]),
        // SOCK_RAW with a port is an error for libc; leave all of it to libc.
        _ => None,
    }
}

static ADDRESS_FAMILY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SOCKET_KIND: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn socket_enum<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
    value: i32,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = cell.get_or_try_init(py, || py.import("socket")?.getattr(name).map(Bound::unbind))?;
    cls.bind(py).call1((value,))
}

/// `socket.getaddrinfo(host, port, family, type, proto, flags)` when `host` is an IP address
/// literal and everything else is numeric too; `None` when libc must answer.
#[pyfunction]
pub fn getaddrinfo_numeric<'py>(
    py: Python<'py>,
    host: &Bound<'py, PyAny>,
    port: &Bound<'py, PyAny>,
    family: &Bound<'py, PyAny>,
    r#type: &Bound<'py, PyAny>,
    proto: &Bound<'py, PyAny>,
    flags: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let as_int = |o: &Bound<'py, PyAny>| -> Option<i32> {
        o.cast::<PyInt>().ok().and_then(|i| i.extract::<i32>().ok())
    };
    let (Some(family), Some(socktype), Some(proto), Some(flags)) =
        (as_int(family), as_int(r#type), as_int(proto), as_int(flags))
    else {
        return Ok(None);
    };
    if flags & !HANDLED_FLAGS != 0 || !matches!(family, AF_UNSPEC | AF_INET | AF_INET6) {
        return Ok(None);
    }
    let host_text: String = if let Ok(s) = host.cast::<PyString>() {
        match s.to_str() {
            Ok(t) => t.to_owned(),
            Err(_) => return Ok(None),
        }
    } else if let Ok(b) = host.cast::<PyBytes>() {
        match std::str::from_utf8(b.as_bytes()) {
            Ok(t) if t.is_ascii() => t.to_owned(),
            _ => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let (Some(addr), Some(port), Some(kinds)) = (
        parse_host(&host_text, family),
        parse_port(port),
        kinds(socktype, proto),
    ) else {
        return Ok(None);
    };
    let (af, sockaddr) = match addr {
        Addr::V4(a) => (AF_INET, (a, port).into_pyobject(py)?.into_any()),
        Addr::V6(a, scope) => (
            AF_INET6,
            (a, port, 0u32, scope).into_pyobject(py)?.into_any(),
        ),
    };
    let af = socket_enum(py, &ADDRESS_FAMILY, "AddressFamily", af)?;
    let out = PyList::empty(py);
    for (i, &(kind, proto)) in kinds.iter().enumerate() {
        let canonname = if i == 0 && flags & libc::AI_CANONNAME != 0 {
            host_text.as_str()
        } else {
            ""
        };
        let kind = socket_enum(py, &SOCKET_KIND, "SocketKind", kind)?;
        out.append(PyTuple::new(
            py,
            [
                af.clone(),
                kind,
                proto.into_pyobject(py)?.into_any(),
                PyString::new(py, canonname).into_any(),
                sockaddr.clone(),
            ],
        )?)?;
    }
    Ok(Some(out))
}
