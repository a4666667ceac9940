"""Helpers shared by the connection, server and stream tests (test_tcp, test_unix,
test_server, test_streams): protocols that record what the transport did, addresses that
refuse or never answer, and a getaddrinfo stand-in that makes a host name resolve to chosen
loopback addresses (so Happy Eyeballs and interleaving can be tested without DNS)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sys
from collections.abc import Iterator

# asyncio 3.12.1 made Server.wait_closed wait for the server's connections; ferroloop does on
# every version (DESIGN.md §4). Tests check each loop against what it promises.
ASYNCIO_WAIT_CLOSED_WAITS = sys.version_info >= (3, 12, 1)


def wait_closed_waits(loop_factory) -> bool:
    """Whether this loop's Server.wait_closed waits for connections after close()."""
    return loop_factory.is_ferroloop or ASYNCIO_WAIT_CLOSED_WAITS


def bind_error_text(sa, err: OSError) -> str:
    """asyncio's "error while attempting to bind" message on this Python version."""
    tail = str(err).lower() if sys.version_info >= (3, 13) else err.strerror.lower()
    return f"error while attempting to bind on address {sa!r}: {tail}"


class EchoProtocol(asyncio.Protocol):
    """Server side: sends back what it receives; closes on EOF. ``lost`` is a future."""

    def connection_made(self, transport):
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class Recorder(asyncio.Protocol):
    """Records the protocol callbacks in order; ``made`` / ``lost`` are futures."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events: list[str] = []
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.got_data = asyncio.Event()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self.got_data.set()

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    async def read_until(self, n: int, timeout: float = 3.0) -> bytes:
        """Wait until at least ``n`` bytes have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.data) < n:
                self.got_data.clear()
                await self.got_data.wait()
        return bytes(self.data)


def tcp_info(addr) -> tuple:
    """The getaddrinfo entry for an IP address tuple."""
    family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)


@contextlib.contextmanager
def refusing(family: int = socket.AF_INET) -> Iterator[tuple]:
    """An address where connections are refused: a bound socket that does not listen."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        yield s.getsockname()
    finally:
        s.close()


@contextlib.contextmanager
def blackhole(family: int = socket.AF_INET) -> Iterator[tuple]:
    """An address where a connect neither succeeds nor fails for a while: a listener whose
    accept queue is full, so the kernel drops further SYNs (the client retransmits)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    lsock = socket.socket(family, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        lsock.bind((host, 0))
        lsock.listen(0)
        addr = lsock.getsockname()
        for _ in range(4):  # more than the queue takes
            c = socket.socket(family, socket.SOCK_STREAM)
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(addr)
            fillers.append(c)
        yield addr
    finally:
        for c in fillers:
            c.close()
        lsock.close()


def resolve_to(loop, infos: list[tuple], calls: list | None = None) -> None:
    """Make ``loop.getaddrinfo`` answer ``infos`` for every host (recording the calls)."""

    async def fake_getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if calls is not None:
            calls.append((host, port, family, type, proto, flags))
        return list(infos)

    loop.getaddrinfo = fake_getaddrinfo


def open_fds() -> set[int]:
    """The process's open descriptors (after a collection, so that sockets leaked by an
    earlier test, e.g. by asyncio's create_connection when a protocol factory raises, are
    closed now and not in the middle of a measurement)."""
    gc.collect()
    return {int(n) for n in os.listdir("/proc/self/fd")}


