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
from asyncio import futures, transports, trsock
from typing import Any

from . import _native

__all__ = ["SocketTransport", "make_socket_transport"]

logger = logging.getLogger("asyncio")


def _set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on TCP sockets, as asyncio sets it (small writes go out at once)."""
    if (
        sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.type == socket.SOCK_STREAM
        and sock.proto == socket.IPPROTO_TCP
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SocketTransport(transports.Transport):
    """A stream transport over a connected socket (TCP or Unix)."""

    # Read by asyncio's sendfile machinery (loop.sendfile) to pick the zero-copy path.
    _start_tls_compatible = True

    # The destructor reads it even if __init__ failed early.
    _sock: socket.socket | None = None

    def __init__(
        self, loop: Any, sock: socket.socket, protocol: Any, waiter: Any = None,
        extra: Any = None, server: Any = None,
    ) -> None:
        super().__init__(extra)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._server = server
        core = _native.TransportCore(loop, self, self._sock_fd)
        core._bind_callbacks()
        self._core = core
        core.set_protocol(protocol)
        if server is not None:
            server._attach(self)
        loop._transports[self._sock_fd] = self
        _set_nodelay(sock)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(core._start_reading)
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

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    # -- the public transport API (native) ---------------------------------------------------

    def write(self, data: Any) -> None:
        self._core.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._core.writelines(list_of_data)

    def write_eof(self) -> None:
        self._core.write_eof()

    def can_write_eof(self) -> bool:
        return True

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
