"""TLS: asyncio's own memory-BIO ``SSLProtocol`` over ferroloop's native socket transport.

Why this file exists: TLS is set up once per connection, so by the layering rule the wiring
is Python, and it is asyncio's wiring, line for line, so that a reader can hold it next to
``asyncio/selector_events.py`` (``_make_ssl_transport``) and ``asyncio/base_events.py``
(``start_tls``). The record layer is ``asyncio.sslproto.SSLProtocol`` of the running
interpreter: the user's ``ssl.SSLContext`` decides protocols, certificates, verification,
ALPN and SNI, ``ssl.SSLObject`` does the cryptography, and errors, timeouts and shutdown are
asyncio's. Nothing in ``ssl`` or ``asyncio`` is patched.

``SSLProtocol`` is a ``BufferedProtocol``: the native transport reads the ciphertext
straight into its buffer (``get_buffer``) and sends what it writes in the loop's end-of-batch
``sendmsg`` (design.md §5.22), so a TLS record and the application's next record written in
the same batch of callbacks leave in one system call.

The per-record data path of an established connection is native: ``install_fast_path``
binds the methods of a ``_native.TlsFastPath`` onto each ``SSLProtocol`` instance (and
``write`` onto its ``_SSLProtocolTransport``) under asyncio's own names; they mirror asyncio's
logic on asyncio's own private attributes and hand every cold case back to asyncio's functions
(``crates/ferroloop-py/src/tls.rs``). That depends on ``SSLProtocol``'s internals, so it is
used only when the running interpreter's ``sslproto`` is the one it was written against
(``_fingerprint()``: the names and constants the mirrored functions use, the same on
3.11.7, 3.12.1 and 3.13.0); otherwise ``NATIVE_TLS`` is false, ``NATIVE_TLS_REASON`` says
why, and every connection runs asyncio's ``SSLProtocol`` unchanged. ``FERROLOOP_NATIVE_TLS=0``
in the environment switches it off too. Figures and reasons: design.md §5.24.
"""

from __future__ import annotations

import asyncio
import dis
import hashlib
import os
import types
from asyncio import sslproto
from typing import Any

from . import _native
from .transports import SocketTransport, make_socket_transport

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None  # type: ignore[assignment]

__all__ = ["NATIVE_TLS", "NATIVE_TLS_REASON", "install_fast_path", "make_ssl_transport", "start_tls"]

# The functions of asyncio.sslproto whose logic tls.rs (data path) and tls/hs.rs (handshake
# and shutdown) mirror or rely on (the attributes they set and read, the helpers they call).
_MIRRORED = (
    ("SSLProtocol", "__init__"), ("SSLProtocol", "_set_app_protocol"),
    ("SSLProtocol", "get_buffer"), ("SSLProtocol", "buffer_updated"),
    ("SSLProtocol", "_do_read"), ("SSLProtocol", "_do_read__buffered"),
    ("SSLProtocol", "_do_read__copied"), ("SSLProtocol", "_do_write"),
    ("SSLProtocol", "_process_outgoing"), ("SSLProtocol", "_write_appdata"),
    ("SSLProtocol", "_control_app_writing"), ("SSLProtocol", "_control_ssl_reading"),
    ("SSLProtocol", "_get_write_buffer_size"), ("SSLProtocol", "_get_read_buffer_size"),
    ("_SSLProtocolTransport", "__init__"), ("_SSLProtocolTransport", "write"),
    # The handshake and shutdown.
    ("SSLProtocol", "connection_made"), ("SSLProtocol", "connection_lost"),
    ("SSLProtocol", "_start_handshake"), ("SSLProtocol", "_do_handshake"),
    ("SSLProtocol", "_on_handshake_complete"), ("SSLProtocol", "_call_eof_received"),
    ("SSLProtocol", "_start_shutdown"), ("SSLProtocol", "_do_flush"),
    ("SSLProtocol", "_do_shutdown"), ("SSLProtocol", "_on_shutdown_complete"),
    ("SSLProtocol", "_wakeup_waiter"), ("SSLProtocol", "_get_app_transport"),
    ("SSLProtocol", "_set_state"),
)
# The methods of ssl.SSLObject whose one-line bodies (a call of its ``_sslobj``) the native
# code makes directly.
_SSLOBJECT_MIRRORED = (
    "read", "write", "pending", "do_handshake", "getpeercert", "cipher", "compression", "unwrap",
)
# _fingerprint() of asyncio 3.11.7 and 3.12.1 (the same sslproto.py), of 3.13.0 and 3.13.5 (which
# schedule the handshake and shutdown timeouts and a buffered read's continuation with bound
# methods instead of lambdas; tls/hs.rs makes whichever the running version makes), and of
# 3.14.8, whose sslproto.py is 3.13.5's byte for byte: its fingerprint differs only because
# 3.14's compiler keeps the keys of a constant-keyed dict display (_control_app_writing's
# exception-handler context) as separate string constants instead of one tuple.
_KNOWN_FINGERPRINTS = frozenset({"6bbdf3f06b9ae695", "72abc4ef31573445", "bc057e868f2e4da0"})


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    names.add("(" + ",".join(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.add("<code " + const.co_name + " " + ",".join(const.co_freevars))
            names |= _code_names(const)
        elif isinstance(const, str) and "\n" not in const:  # docstrings differ in indentation
            names.add("'" + const)
    return names


def _fingerprint() -> str:
    """What the mirrored functions of ``asyncio.sslproto`` (and the ``ssl.SSLObject`` methods
    bypassed) refer to: every attribute, global and string constant (nested functions
    included, with their names and free variables), and their parameters, hashed. A change to
    their logic that touches another attribute, message or parameter changes it."""
    digest = hashlib.sha256()
    functions = [(name, getattr(getattr(sslproto, cls), name)) for cls, name in _MIRRORED]
    functions += [("SSLObject." + name, getattr(ssl.SSLObject, name)) for name in _SSLOBJECT_MIRRORED]
    for name, func in functions:
        digest.update(repr((name, sorted(_code_names(func.__code__)))).encode())
    return digest.hexdigest()[:16]


def _timeout_lambda(func: Any, method: str) -> types.CodeType | None:
    """The code of the ``lambda: self.<method>()`` that ``func`` schedules (3.11, 3.12: the
    handshake and shutdown timeouts, a full buffered read's continuation), or ``None`` when it
    schedules the bound method ``self.<method>`` (3.13)."""
    for const in func.__code__.co_consts:
        if (
            isinstance(const, types.CodeType) and const.co_name == "<lambda>"
            and const.co_freevars == ("self",) and method in const.co_names
        ):
            return const
    if method not in func.__code__.co_names:
        raise ValueError(f"{func.__qualname__} schedules no {method}")
    return None


def _check() -> tuple[bool, str]:
    if ssl is None:  # pragma: no cover - Python built without ssl
        return False, "no ssl module"
    if os.environ.get("FERROLOOP_NATIVE_TLS", "1") == "0":
        return False, "switched off by FERROLOOP_NATIVE_TLS=0"
    try:
        fingerprint = _fingerprint()
        states = sslproto.SSLProtocolState
        consts = _native.TlsConsts(
            states.DO_HANDSHAKE, states.WRAPPED, states.FLUSHING, states.SHUTDOWN,
            sslproto.SSLAgainErrors,
            sslproto.SSLProtocol._do_read, sslproto.SSLProtocol._write_appdata,
            sslproto.SSLProtocol._control_app_writing,
            sslproto.SSLProtocol._control_ssl_reading, sslproto.SSLProtocol.get_buffer,
            sslproto._SSLProtocolTransport.write, SocketTransport,
            {
                "unwrapped": states.UNWRAPPED,
                "app_init": sslproto.AppProtocolState.STATE_INIT,
                "app_con_made": sslproto.AppProtocolState.STATE_CON_MADE,
                "app_eof": sslproto.AppProtocolState.STATE_EOF,
                "app_con_lost": sslproto.AppProtocolState.STATE_CON_LOST,
                "ssl_error": ssl.SSLError,
                "cert_error": ssl.CertificateError,
                "globals": vars(sslproto),
                "code_type": types.CodeType,
                "handshake_lambda": _timeout_lambda(
                    sslproto.SSLProtocol._start_handshake, "_check_handshake_timeout"),
                "shutdown_lambda": _timeout_lambda(
                    sslproto.SSLProtocol._start_shutdown, "_check_shutdown_timeout"),
                "do_read_lambda": _timeout_lambda(
                    sslproto.SSLProtocol._do_read__buffered, "_do_read"),
                "orig_set_state": sslproto.SSLProtocol._set_state,
                "orig_get_app_transport": sslproto.SSLProtocol._get_app_transport,
                "orig_start_handshake": sslproto.SSLProtocol._start_handshake,
                "orig_on_handshake_complete": sslproto.SSLProtocol._on_handshake_complete,
                "orig_call_eof_received": sslproto.SSLProtocol._call_eof_received,
                "orig_start_shutdown": sslproto.SSLProtocol._start_shutdown,
                "orig_on_shutdown_complete": sslproto.SSLProtocol._on_shutdown_complete,
            },
        )
    except Exception as exc:  # noqa: BLE001 - any surprise means: do not use it
        return False, f"asyncio.sslproto is not as expected: {exc!r}"
    if fingerprint not in _KNOWN_FINGERPRINTS:
        return False, f"unknown asyncio.sslproto (fingerprint {fingerprint})"
    global _CONSTS
    _CONSTS = consts
    return True, f"asyncio.sslproto fingerprint {fingerprint}"


_CONSTS: Any = None
#: Whether TLS connections get the native data path (else asyncio's SSLProtocol unchanged).
NATIVE_TLS, NATIVE_TLS_REASON = _check()


def _init_reads_max_size_once() -> bool:
    """Whether ``SSLProtocol.__init__`` reads ``max_size`` exactly once (for its buffer), which
    ``new_ssl_protocol`` relies on; it does in 3.11 to 3.13."""
    init = sslproto.SSLProtocol.__init__
    return sum(1 for i in dis.get_instructions(init) if i.argval == "max_size") == 1


#: Whether new_ssl_protocol leaves the read buffer uninitialised (else asyncio's __init__ as is).
_UNINIT_BUFFER = NATIVE_TLS and _init_reads_max_size_once()


def new_ssl_protocol(*args: Any, **kwargs: Any) -> Any:
    """``sslproto.SSLProtocol(*args, **kwargs)``, with its 256 KiB read buffer not zero-filled.

    asyncio's ``__init__`` makes ``bytearray(self.max_size)``, writing all 64 pages of it for
    every connection; when glibc has trimmed the heap since the last connection (eight
    handshakes in flight move its top by more than the trim threshold), each of those pages is
    a page fault again: 36–64 per handshake against uvloop's 6 (design.md §5.24). uvloop
    leaves its buffer uninitialised, so only the pages data lands in are touched. Here
    ``__init__`` runs unchanged on an instance whose ``max_size`` reads 0 (an instance
    attribute, removed right after, so the class's value shows again), and the buffer and its
    view are then made at full size without being written. No byte of it is read before it is
    written: the transport receives into it and says how much it wrote, and the read path
    decrypts into it and copies out what ``read`` returned. Only with the native path (whose
    fingerprint covers ``__init__``) and while ``__init__`` reads ``max_size`` just once.
    """
    if not _UNINIT_BUFFER:
        return sslproto.SSLProtocol(*args, **kwargs)
    proto = sslproto.SSLProtocol.__new__(sslproto.SSLProtocol)
    proto.max_size = 0
    try:
        proto.__init__(*args, **kwargs)
    finally:
        del proto.max_size
    buffer = _native.uninit_bytearray(sslproto.SSLProtocol.max_size)
    proto._ssl_buffer = buffer
    proto._ssl_buffer_view = memoryview(buffer)
    return proto


_allocator_primed = False


def _prime_allocator() -> None:
    """Once per process: allocate and free a block twice the size of ``SSLProtocol``'s
    per-connection read buffer.

    ``SSLProtocol.__init__`` allocates (and zero-fills) a 256 KiB ``bytearray`` for every
    connection. glibc serves a block that size with a fresh ``mmap`` (and page faults on all of
    it) until freeing a mapped block has raised its adaptive mmap threshold above that size.
    asyncio's Python read path raised it by the way (it allocates 256 KiB ``bytes`` per read);
    the native path does not, so without this every TLS connection paid for mapping, faulting
    in and unmapping its buffer (design.md §5.24). Freeing one larger mapped block now raises
    the threshold as that would have. Elsewhere than glibc this is one short-lived allocation.
    """
    global _allocator_primed
    _allocator_primed = True
    bytearray(2 * sslproto.SSLProtocol.max_size)


def install_fast_path(ssl_protocol: Any, *, native_connection_lost: bool = True) -> bool:
    """Bind the native data path, handshake and shutdown onto one fresh ``SSLProtocol`` (and
    ``write`` onto its app transport).

    Only for an exact ``ssl.SSLObject`` over ``ssl.MemoryBIO``s (a custom
    ``SSLContext.sslobject_class`` keeps asyncio's Python path, which calls its methods).
    Returns whether it was installed.

    The native methods hold the protocol by weak reference, so a native bound method kept by
    someone who does not also keep the protocol would find it gone. Only ``connection_lost``
    is at risk: a TLS transport under this protocol (TLS over TLS) schedules
    ``call_soon(self._app_protocol.connection_lost, exc)`` and then drops the protocol. So
    ``native_connection_lost`` is false unless the transport under it is ferroloop's socket
    transport (which looks the method up on the protocol it holds when it calls it), and
    ``connection_lost`` then stays asyncio's.
    """
    if not NATIVE_TLS:
        return False
    sslobj = ssl_protocol._sslobj
    if (
        type(ssl_protocol) is not sslproto.SSLProtocol
        or type(sslobj) is not ssl.SSLObject
        or type(ssl_protocol._incoming) is not ssl.MemoryBIO
        or type(ssl_protocol._outgoing) is not ssl.MemoryBIO
        or type(ssl_protocol._write_backlog) is not sslproto.collections.deque
    ):
        return False
    if not _allocator_primed:
        _prime_allocator()
    app_transport = ssl_protocol._app_transport
    fast = _native.TlsFastPath(ssl_protocol, app_transport, _CONSTS)
    # Plain stores (CPython keeps the instance's dict compact then).
    ssl_protocol.get_buffer = fast.get_buffer
    ssl_protocol.buffer_updated = fast.buffer_updated
    ssl_protocol._do_read = fast._do_read
    ssl_protocol._do_write = fast._do_write
    ssl_protocol._process_outgoing = fast._process_outgoing
    ssl_protocol._control_app_writing = fast._control_app_writing
    ssl_protocol._control_ssl_reading = fast._control_ssl_reading
    ssl_protocol._write_appdata = fast._write_appdata
    # The handshake and shutdown: only the entries called from outside the native code (by the
    # transport under it, and _SSLProtocolTransport.close); the native code calls the other
    # mirrored functions directly, and asyncio's remaining code (eof_received, _abort, the
    # timeouts, the failure paths) calls asyncio's, which do the same.
    ssl_protocol.connection_made = fast.connection_made
    if native_connection_lost:
        ssl_protocol.connection_lost = fast.connection_lost
    ssl_protocol._start_shutdown = fast._start_shutdown
    app_transport.write = _native.TlsAppWrite(fast).write
    return True


def make_ssl_transport(
    loop: Any, rawsock: Any, protocol: Any, sslcontext: Any, waiter: Any = None, *,
    server_side: bool = False, server_hostname: str | None = None, extra: Any = None,
    server: Any = None, ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[Any, Any]:
    """asyncio's ``_make_ssl_transport``: ``SSLProtocol`` on a socket transport.

    Returns ``(app_transport, raw_transport)``: the ``_SSLProtocolTransport`` the
    application's ``protocol`` sees, and the socket transport under it (which a server
    tracks, as asyncio's server tracks its socket transports). ``waiter`` gets its result
    (or the handshake's exception) from ``SSLProtocol``; ``None`` timeouts mean asyncio's
    defaults. ``sslcontext`` ``None`` means asyncio's default context for the side.
    """
    ssl_protocol = new_ssl_protocol(
        loop, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    install_fast_path(ssl_protocol)
    raw = make_socket_transport(loop, rawsock, ssl_protocol, extra=extra, server=server)
    return ssl_protocol._app_transport, raw


# CPython gh-142352 (a 3.14 fix): on the server side, start_tls hands what a StreamReader has
# already buffered (a ClientHello that arrived with, or right after, the plaintext part) to the
# new SSLProtocol, which would otherwise wait for it forever. Whether the running asyncio does
# is read from its own start_tls (the fix is the only place there that touches `_incoming`), so
# that ferroloop follows every patch release, including any backport.
_START_TLS_TAKES_BUFFERED_DATA = "_incoming" in asyncio.BaseEventLoop.start_tls.__code__.co_names


def _move_buffered_stream_data(protocol: Any, ssl_protocol: Any) -> None:
    if isinstance(protocol, asyncio.StreamReaderProtocol):
        reader = getattr(protocol, "_stream_reader", None)
        if reader is not None and reader._buffer:
            ssl_protocol._incoming.write(reader._buffer)
            reader._buffer.clear()


async def start_tls(
    loop: Any, transport: Any, protocol: Any, sslcontext: Any, *, server_side: bool = False,
    server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> Any:
    """asyncio's ``BaseEventLoop.start_tls``: upgrade ``transport`` to TLS in place.

    Reading is paused so that no plaintext-era data reaches ``SSLProtocol`` before its
    ``connection_made``; the transport's protocol becomes the ``SSLProtocol``, which starts
    the handshake; the returned transport is the one ``protocol`` uses from now on. Works on
    any transport asyncio accepts (``_start_tls_compatible``): ferroloop's socket transport,
    and a TLS transport itself (TLS over TLS, e.g. through an HTTPS proxy).
    """
    if ssl is None:  # pragma: no cover - Python built without ssl
        raise RuntimeError("Python ssl module is not available")
    if not isinstance(sslcontext, ssl.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")

    waiter = loop.create_future()
    ssl_protocol = new_ssl_protocol(
        loop, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
        call_connection_made=False,
    )
    install_fast_path(ssl_protocol, native_connection_lost=type(transport) is SocketTransport)
    transport.pause_reading()
    if server_side and _START_TLS_TAKES_BUFFERED_DATA:
        _move_buffered_stream_data(protocol, ssl_protocol)
    transport.set_protocol(ssl_protocol)
    conmade_cb = loop.call_soon(ssl_protocol.connection_made, transport)
    resume_cb = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        conmade_cb.cancel()
        resume_cb.cancel()
        raise
    return ssl_protocol._app_transport
