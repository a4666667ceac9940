"""Datagram endpoints: ``create_datagram_endpoint`` and the UDP / Unix-datagram transport.

Why the split: an endpoint is set up once (Python, here, readable side by side with asyncio's
``base_events.create_datagram_endpoint``), but its transport works once per datagram.
``DatagramTransport`` is a real subclass of ``asyncio.DatagramTransport`` (as asyncio's own
is from 3.12) and of ``asyncio.Transport`` (as asyncio's own is on every version, and as
CPython's tests check), whose per-datagram work (``recvfrom`` into ``datagram_received``,
``sendto``, the queue of datagrams the kernel refused, flow control) is native, in
``_native.DatagramCore`` (``crates/ferroloop-py/src/datagram.rs``). What stays here runs once
per endpoint or on error paths: construction and extra info, ``connection_made`` scheduling,
error reporting, ``connection_lost`` and cleanup, ``repr`` and the unclosed-transport warning.

Behaviour is asyncio's for the running interpreter. From 3.13, ``sendto(b'')`` sends an empty
datagram (before, it does nothing), the write buffer size counts 8 bytes of header per queued
datagram, and ``create_datagram_endpoint(sock=...)`` accepts any socket but a stream one
(before, only ``SOCK_DGRAM``), with another message. Two deliberate differences: asyncio
3.13.0 forgets to take the 8 header bytes off again when a queued datagram is sent (fixed in
later 3.13 releases, as here), and a socket ``create_datagram_endpoint`` made is closed if the
protocol factory raises (asyncio leaves it to the collector), as ``create_connection`` does in
ferroloop.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
import warnings
from asyncio import transports
from typing import Any

from . import _native
from .connections import _set_reuseport
from .transports import NativeSocketTransport

__all__ = ["DatagramMethods", "DatagramTransport", "make_datagram_transport"]

logger = logging.getLogger("asyncio")

_PY313 = sys.version_info >= (3, 13)

# asyncio 3.13 sends empty datagrams and counts a UDP header per queued datagram (gh-113812).
_SEND_EMPTY = _PY313
_HEADER_SIZE = 8 if _PY313 else 0


class DatagramTransport(NativeSocketTransport, transports.Transport, transports.DatagramTransport):
    """A datagram transport over a UDP or Unix datagram socket (connected or not)."""

    # asyncio's _SelectorTransport.max_size: the largest datagram one read takes.
    max_size = 256 * 1024

    def __init__(
        self, loop: Any, sock: socket.socket, protocol: Any, address: Any = None,
        waiter: Any = None, extra: Any = None,
    ) -> None:
        super().__init__(extra)
        self._init_socket(loop, sock)
        self._address = address
        core = _native.DatagramCore(
            loop, self, sock, self._sock_fd, int(sock.family), bool(self._extra["peername"]),
            address if address else None, _HEADER_SIZE, _SEND_EMPTY,
        )
        core._bind_callbacks()
        self._core = core
        core.set_protocol(protocol)
        # Per datagram: straight to the native method, without a Python frame in between
        # (unless a subclass has its own sendto).
        if type(self).sendto is DatagramTransport.sendto:
            self.sendto = core.sendto
        self._start(protocol, waiter)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    def sendto(self, data: Any, addr: Any = None) -> None:  # type: ignore[override]
        # Shadowed per instance by the native method (see __init__); kept for the class API.
        self._core.sendto(data, addr)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        core = self._core
        try:
            if core._protocol_connected():
                core.get_protocol().connection_lost(exc)
        finally:
            # While the socket is open no other transport can own its fd number.
            self._loop._transports.pop(self._sock_fd, None)
            self._sock.close()
            self._sock = None
            self._loop = None
            core._release()


def make_datagram_transport(
    loop: Any, sock: socket.socket, protocol: Any, address: Any = None, waiter: Any = None,
    extra: Any = None,
) -> DatagramTransport:
    """A transport for the datagram socket ``sock`` driving ``protocol`` (asyncio's
    ``_make_datagram_transport``): ``connection_made`` is scheduled with ``call_soon``,
    reading starts after it, and ``waiter`` gets ``None`` once the protocol has the
    transport. ``address`` is the remote address ``sendto`` defaults to (and insists on)."""
    return DatagramTransport(loop, sock, protocol, address, waiter, extra)


def _check_datagram_socket(sock: socket.socket) -> None:
    # 3.13 accepts any socket but a stream one (raw sockets, gh-114887) and says so.
    if _PY313:
        if sock.type == socket.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")


def _remove_stale_unix_socket(path: str) -> None:
    """A socket file left at ``path`` by an earlier endpoint is removed before binding."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        # The directory may allow creating the socket but not looking at what is there.
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)


class DatagramMethods:
    """``create_datagram_endpoint`` of ``ferroloop.Loop`` (asyncio's name and semantics)."""

    # Provided by ferroloop.Loop / LoopCore / SocketMethods.
    create_future: Any
    get_debug: Any
    sock_connect: Any
    _ensure_resolved: Any

    def _make_datagram_transport(
        self, sock: socket.socket, protocol: Any, address: Any = None, waiter: Any = None,
        extra: Any = None,
    ) -> DatagramTransport:
        return make_datagram_transport(self, sock, protocol, address, waiter, extra)

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, *,
        family: int = 0, proto: int = 0, flags: int = 0, reuse_port: bool | None = None,
        allow_broadcast: bool | None = None, sock: socket.socket | None = None,
    ) -> tuple[DatagramTransport, Any]:
        """A datagram endpoint: ``(transport, protocol)`` once ``connection_made`` has run.

        With ``sock``, that socket is used as it is (no other socket argument may be given).
        Otherwise a socket is made for the first (family, protocol) pair that the local and
        remote addresses both resolve to and that can be bound and connected; ``remote_addr``
        connects it (unless ``allow_broadcast``), and ``sendto`` then defaults to it.
        """
        own_sock = sock is None
        if sock is not None:
            _check_datagram_socket(sock)
            modifiers = {
                "local_addr": local_addr, "remote_addr": remote_addr, "family": family,
                "proto": proto, "flags": flags, "reuse_port": reuse_port,
                "allow_broadcast": allow_broadcast,
            }
            problems = ", ".join(f"{name}={value}" for name, value in modifiers.items() if value)
            if problems:
                raise ValueError(
                    "socket modifier keyword arguments can not be used when sock is "
                    f"specified. ({problems})"
                )
            sock.setblocking(False)
            r_addr = None
        else:
            sock, r_addr = await self._open_datagram_socket(
                local_addr, remote_addr, family, proto, flags, reuse_port, allow_broadcast
            )

        transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
            if self.get_debug():
                if local_addr:
                    logger.info(
                        "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                        local_addr, remote_addr, transport, protocol,
                    )
                else:
                    logger.debug(
                        "Datagram endpoint remote_addr=%r created: (%r, %r)",
                        remote_addr, transport, protocol,
                    )
            await waiter
        except BaseException:
            if transport is not None:
                transport.close()
            elif own_sock:
                sock.close()
            raise
        return transport, protocol

    async def _open_datagram_socket(
        self, local_addr: Any, remote_addr: Any, family: int, proto: int, flags: int,
        reuse_port: Any, allow_broadcast: Any,
    ) -> tuple[socket.socket, Any]:
        """The socket of a new endpoint, bound and connected as asked, and the remote address
        ``sendto`` is then limited to (None if there is none)."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            candidates = [((family, proto), (None, None))]
        elif family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr and local_addr[0] not in (0, "\x00"):
                _remove_stale_unix_socket(local_addr)
            candidates = [((family, proto), (local_addr, remote_addr))]
        else:
            candidates = await self._datagram_address_pairs(
                local_addr, remote_addr, family, proto, flags
            )

        errors: list[OSError] = []
        for (fam, pro), (local_address, remote_address) in candidates:
            sock = None
            try:
                sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                if reuse_port:
                    _set_reuseport(sock)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if local_addr:
                    sock.bind(local_address)
                r_addr = None
                if remote_addr:
                    if not allow_broadcast:
                        await self.sock_connect(sock, remote_address)
                    r_addr = remote_address
                return sock, r_addr
            except OSError as exc:
                if sock is not None:
                    sock.close()
                errors.append(exc)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
        raise errors[0]

    async def _datagram_address_pairs(
        self, local_addr: Any, remote_addr: Any, family: int, proto: int, flags: int,
    ) -> list[tuple[tuple[int, int], list[Any]]]:
        """``((family, proto), [local, remote])`` for every pair both given addresses resolve
        to, in the resolver's order."""
        by_key: dict[tuple[int, int], list[Any]] = {}
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError("2-tuple is expected")
            infos = await self._ensure_resolved(
                addr, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in infos:
                by_key.setdefault((fam, pro), [None, None])[index] = address
        pairs = [
            (key, pair) for key, pair in by_key.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not pairs:
            raise ValueError("can not get address information")
        return pairs
