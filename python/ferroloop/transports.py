"""Stream transports over sockets (asyncio's ``_SelectorSocketTransport``).

Why the split: a transport is created once per connection but read and written once per
packet. ``SocketTransport`` is a real subclass of ``asyncio.Transport`` (aiohttp and others
check ``isinstance``) whose per-packet work (reading into the protocol, batching and
sending writes, flow control) is native, in ``_native.TransportCore``
(``crates/ferroloop-py/src/transports.rs``). What stays here runs once per connection or on
error paths: construction and the extra info, ``connection_made`` scheduling, error
reporting, ``connection_lost`` and cleanup, ``repr`` and the unclosed-transport warning.

Behaviour is asyncio's, with one deliberate difference: writes made during one batch of
callbacks are sent together, after the batch (one ``sendmsg``), instead of one ``send`` per
``write()``. ``close``, ``abort``, ``write_eof``, ``get_write_buffer_size`` and a write that
crosses the high-water mark send first, so flow control and closing see what asyncio's
transport would see.
"""

from __future__ import annotations

import logging
import socket
import warnings
import weakref
from asyncio import exceptions, futures, protocols, transports, trsock
from typing import Any

from . import _native
from .selector_events import (
    _INET_FAMILIES,
    _SENDFILE_SEEKS_ALWAYS,
    _socket_family,
    _socket_type,
)

__all__ = ["NativeSocketTransport", "SocketTransport", "make_socket_transport", "sendfile"]

# Chunk size of sendfile's read-and-write fallback.
_SENDFILE_FALLBACK_CHUNK = 16 * 1024

logger = logging.getLogger("asyncio")


# For TCP_NODELAY on TCP sockets, set as asyncio sets it (small writes go out at once).
_SOCK_STREAM = int(socket.SOCK_STREAM)
_IPPROTO_TCP = socket.IPPROTO_TCP
_TCP_NODELAY = socket.TCP_NODELAY


class NativeSocketTransport:
    """What asyncio's ``_SelectorTransport`` is to its socket transports, for ferroloop's:
    the cold Python half of a transport whose per-packet work is a native core
    (``self._core``: ``TransportCore`` or ``DatagramCore``, which share
    ``transport_common.rs``). Mixed in before the asyncio transport classes, so that
    ``isinstance`` checks see what asyncio's transports are."""

    _core: Any
    _loop: Any
    # The destructor reads it even if __init__ failed early.
    _sock: socket.socket | None = None

    def _init_socket(self, loop: Any, sock: socket.socket) -> None:
        """The extra info and attributes every socket transport has (asyncio's names)."""
        extra = self._extra  # type: ignore[attr-defined]
        extra["socket"] = trsock.TransportSocket(sock)
        try:
            extra["sockname"] = sock.getsockname()
        except OSError:
            extra["sockname"] = None
        if "peername" not in extra:
            try:
                extra["peername"] = sock.getpeername()
            except OSError:
                extra["peername"] = None
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()

    def _start(self, protocol: Any, waiter: Any) -> None:
        """asyncio's order: ``connection_made`` soon, reading after it, then the waiter."""
        loop = self._loop
        loop._transports[self._sock_fd] = weakref.ref(self)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(self._core._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            reading, writing = self._core._polling()
            info.append("read=polling" if reading else "read=idle")
            state = "polling" if writing else "idle"
            info.append(f"write=<{state}, bufsize={self._core._buffer_size()}>")
        return "<{}>".format(" ".join(info))

    # -- the public transport API (native) ---------------------------------------------------

    def close(self) -> None:
        self._core.close()

    def abort(self) -> None:
        self._core.abort()

    def is_closing(self) -> bool:
        return self._core.is_closing()

    def is_reading(self) -> bool:
        return self._core.is_reading()

    def pause_reading(self) -> None:
        if self._core.pause_reading() and self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._core.resume_reading() and self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def set_protocol(self, protocol: Any) -> None:
        self._core.set_protocol(protocol)

    def get_protocol(self) -> Any:
        return self._core.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        self._core.set_write_buffer_limits(high, low)

    @property
    def _protocol(self) -> Any:
        return self._core.get_protocol()

    @property
    def _protocol_paused(self) -> bool:
        return self._core._protocol_paused()

    # -- called by the native core -----------------------------------------------------------

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if isinstance(exc, OSError):
            # Resets and broken pipes are the peer's doing: debug-log them, as asyncio does.
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=exc)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._core.get_protocol(),
            })
        self._core._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        self._core._force_close(exc)

    def _flow_control_failed(self, which: str, exc: BaseException) -> None:
        self._loop.call_exception_handler({
            "message": f"protocol.{which}() failed",
            "exception": exc,
            "transport": self,
            "protocol": self._core.get_protocol(),
        })


def _write_arguments(self: Any, data: Any) -> Any:
    """``write``'s arguments when they came in any other way than one positional (by keyword,
    or wrong): the native ``write`` (``fastcall.rs``) passes them here, so that a wrong call
    raises exactly the ``TypeError`` a Python method ``write(self, data)`` raises on this
    interpreter (3.13 adds "Did you mean ...?" suggestions), naming ``SocketTransport.write``
    as asyncio's names ``_SelectorSocketTransport.write``."""
    return data


_write_arguments.__qualname__ = "SocketTransport.write"
_write_arguments.__name__ = "write"


class SocketTransport(NativeSocketTransport, transports.Transport):
    """A stream transport over a connected socket (TCP or Unix)."""

    # Read by asyncio's sendfile machinery (loop.sendfile) to pick the zero-copy path.
    _start_tls_compatible = True

    def __init__(
        self, loop: Any, sock: socket.socket, protocol: Any, waiter: Any = None,
        extra: Any = None, server: Any = None,
    ) -> None:
        self._extra = {} if extra is None else extra  # asyncio's BaseTransport.__init__
        self._init_socket(loop, sock)
        self._server = server
        core = _native.TransportCore(loop, self, self._sock_fd)
        core._bind_callbacks()
        self._core = core
        # The per-packet methods, bound straight to the core: `transport.write(data)` is then
        # one native call, with no Python frame in between (subclasses keep the class's methods,
        # which do the same and serve super() calls and introspection).
        # Plain attribute stores, not setattr() in a loop: CPython keeps the instance's
        # attributes in its fast shared-key layout then (measured: 300 fewer instructions
        # per echo round trip).
        if type(self) is SocketTransport:
            self.write = core.write
            self.writelines = core.writelines
            self.is_closing = core.is_closing
            self.is_reading = core.is_reading
            self.close = core.close
        core.set_protocol(protocol)
        if server is not None:
            server._attach(self)
        if (
            _socket_family(sock) in _INET_FAMILIES
            and _socket_type(sock) == _SOCK_STREAM
            and sock.proto == _IPPROTO_TCP
        ):
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        self._start(protocol, waiter)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()
            # A server connection collected without connection_lost must not keep the
            # server's wait_closed() waiting (asyncio 3.13 detaches here too).
            server = self._server
            self._server = None
            if server is not None:
                server._detach(self)

    def write(self, data: Any) -> None:
        self._core.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._core.writelines(list_of_data)

    def write_eof(self) -> None:
        self._core.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def _log_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        core = self._core
        try:
            if core._protocol_connected():
                core.get_protocol().connection_lost(exc)
        finally:
            waiter = core._take_empty_waiter()
            # While the socket is open no other transport can own its fd number.
            self._loop._transports.pop(self._sock_fd, None)
            self._sock.close()
            self._sock = None
            self._loop = None
            server = self._server
            self._server = None
            core._release()
            if server is not None:
                server._detach(self)
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("Connection is closed by peer"))

    # -- loop.sendfile support ---------------------------------------------------------------

    def _make_empty_waiter(self) -> Any:
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self) -> None:
        self._core._reset_empty_waiter()


def make_socket_transport(
    loop: Any, sock: Any, protocol: Any, waiter: Any = None, *, extra: Any = None,
    server: Any = None,
) -> SocketTransport:
    """A transport for the connected stream socket ``sock`` driving ``protocol``.

    As asyncio's: ``connection_made`` is scheduled with ``call_soon``, reading starts after
    it, and ``waiter`` (a future) gets ``None`` once the protocol has the transport.
    ``server`` is the ``Server`` the connection belongs to (``_attach``/``_detach``).
    """
    return SocketTransport(loop, sock, protocol, waiter, extra, server)


# -- loop.sendfile ----------------------------------------------------------------------------


async def sendfile(
    loop: Any, transport: Any, file: Any, offset: int = 0, count: int | None = None,
    *, fallback: bool = True,
) -> int:
    """``loop.sendfile``: zero-copy ``os.sendfile`` on a plain socket transport, else (with
    ``fallback``) read the file in chunks and write them with the transport's flow control."""
    if transport.is_closing():
        raise RuntimeError("Transport is closing")
    if isinstance(transport, SocketTransport):
        try:
            return await _sendfile_zero_copy(loop, transport, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
    else:
        # asyncio's own transports (e.g. TLS) say what they support in an enum attribute.
        mode = getattr(transport, "_sendfile_compatible", None)
        if getattr(mode, "name", None) not in ("TRY_NATIVE", "FALLBACK"):
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
    if not fallback:
        raise RuntimeError(
            f"fallback is disabled and native sendfile is not supported for transport "
            f"{transport!r}"
        )
    return await _sendfile_by_writes(loop, transport, file, offset, count)


async def _sendfile_zero_copy(
    loop: Any, transport: SocketTransport, file: Any, offset: int, count: int | None
) -> int:
    """Hand the socket to ``sock_sendfile`` once everything written before is out, with
    reading paused meanwhile; the transport takes its fd back afterwards."""
    fd = transport._sock_fd
    ref = loop._transports.pop(fd)
    resume_reading = transport.is_reading()
    transport.pause_reading()
    await transport._make_empty_waiter()
    try:
        return await loop.sock_sendfile(transport._sock, file, offset, count, fallback=False)
    finally:
        transport._reset_empty_waiter()
        if resume_reading:
            transport.resume_reading()
        loop._transports[fd] = ref


async def _sendfile_by_writes(
    loop: Any, transport: Any, file: Any, offset: int, count: int | None
) -> int:
    # 3.14 seeks to the offset even when it is 0 (the file may be positioned elsewhere).
    if offset or (_SENDFILE_SEEKS_ALWAYS and hasattr(file, "seek")):
        file.seek(offset)
    chunk = min(count, _SENDFILE_FALLBACK_CHUNK) if count else _SENDFILE_FALLBACK_CHUNK
    buf = bytearray(chunk)
    total_sent = 0
    flow = _SendfileFlow(loop, transport)
    try:
        while True:
            if count:
                chunk = min(count - total_sent, chunk)
                if chunk <= 0:
                    return total_sent
            view = memoryview(buf)[:chunk]
            read = await loop.run_in_executor(None, file.readinto, view)
            if not read:
                return total_sent  # end of file
            await flow.drain()
            transport.write(view[:read])
            total_sent += read
    finally:
        if total_sent > 0 and hasattr(file, "seek"):
            file.seek(offset + total_sent)
        flow.restore()


class _SendfileFlow(protocols.Protocol):
    """Stands in for the transport's protocol while sendfile writes: it turns
    ``pause_writing``/``resume_writing`` into something ``drain()`` can wait on, and
    passes ``connection_lost`` through. Reading is paused for the duration."""

    def __init__(self, loop: Any, transport: Any) -> None:
        self._loop = loop
        self._transport = transport
        self._proto = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        self._resume_writing = bool(getattr(transport, "_protocol_paused", False))
        transport.pause_reading()
        transport.set_protocol(self)
        self._ready: Any = loop.create_future() if self._resume_writing else None

    async def drain(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._ready is not None:
            await self._ready

    def connection_made(self, transport: Any) -> None:
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            # The peer left before the file was sent: always an error for the sender.
            self._ready.set_exception(exc or ConnectionError("Connection is closed by peer"))
        self._proto.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._ready is None:
            self._ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._ready is not None:
            self._ready.set_result(False)
            self._ready = None

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def restore(self) -> None:
        self._transport.set_protocol(self._proto)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._ready is not None:
            self._ready.cancel()
        if self._resume_writing:
            self._proto.resume_writing()
