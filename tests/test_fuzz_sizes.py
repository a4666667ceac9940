"""Fuzzing the paths that take sizes from the user (issue #10), against asyncio: Hypothesis
draws hostile values (negative, zero, huge, past the end, of the wrong type) for
``set_write_buffer_limits``, what a BufferedProtocol's ``get_buffer`` returns, ``sendfile``'s
and ``sock_sendfile``'s offset and count, ``sock_recv``'s ``n`` and ``sock_recv_into``'s buffer,
datagram sizes and a datagram transport's buffer limits. Each value goes through stock asyncio
and ferroloop; the outcomes (result, or exception type and message; protocol callbacks; what
reached the exception handler) must be equal, and nothing may crash the process.

Short run: a few dozen derandomised examples per target; ``FERROLOOP_LONG=1``: many more,
random."""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import tempfile

import pytest
from conftest import LoopFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import LONG

KINDS = ("asyncio", "ferroloop")


def fuzz_settings(short: int, long: int):
    return settings(
        max_examples=long if LONG else short,
        derandomize=not LONG,
        deadline=None if LONG else 5000,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def outcome(fn, *args):
    """("ok", result) or ("raise", exception type name, message)."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the exception is the outcome being compared
        return ("raise", type(e).__name__, str(e))


def on_both(body):
    """``body(loop)`` (a coroutine function) on each loop kind: {kind: result}."""
    results = {}
    for kind in KINDS:
        loop = LoopFactory(kind)()
        try:
            results[kind] = loop.run_until_complete(asyncio.wait_for(body(loop), 5))
        finally:
            loop.close()
            asyncio.set_event_loop(None)
    return results


def assert_same(results):
    assert results["ferroloop"] == results["asyncio"]


# Sizes: small, at the edges of C types, negative, and values of the wrong type.
sizes = st.one_of(
    st.integers(-3, 70_000),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 2**100, -(2**63),
                     -(2**64)]),
)
odd_values = st.sampled_from([None, 1.5, -0.5, float("inf"), float("nan"), "10", b"1", True])
size_or_odd = st.one_of(sizes, odd_values)


# -- set_write_buffer_limits on stream and datagram transports ---------------------------------

def check_limits(results, high, low):
    """Equal outcomes: what set_write_buffer_limits raises or accepts (floats and ints beyond
    64 bits too), the limits get_write_buffer_limits returns, and the buffer size after it."""
    assert results["ferroloop"] == results["asyncio"]


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(60, 1000)
@given(high=st.one_of(st.none(), size_or_odd), low=st.one_of(st.none(), size_or_odd))
def test_set_write_buffer_limits(high, low):
    async def body(loop):
        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        try:
            got = outcome(tr.set_write_buffer_limits, high, low)
            limits = tr.get_write_buffer_limits()
            tr.write(b"x" * 1000)
            size = tr.get_write_buffer_size()
        finally:
            tr.close()
            b.close()
        await asyncio.sleep(0)
        return got, limits, size

    check_limits(on_both(body), high, low)


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(30, 500)
@given(high=st.one_of(st.none(), size_or_odd), low=st.one_of(st.none(), size_or_odd))
def test_datagram_set_write_buffer_limits(high, low):
    async def body(loop):
        tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    local_addr=("127.0.0.1", 0))
        try:
            got = outcome(tr.set_write_buffer_limits, high, low)
            return got, tr.get_write_buffer_limits(), tr.get_write_buffer_size()
        finally:
            tr.close()
            await asyncio.sleep(0)

    check_limits(on_both(body), high, low)


# -- a BufferedProtocol's get_buffer --------------------------------------------------------------


def make_buffer(kind, size):
    if kind == "bytearray":
        return bytearray(size)
    if kind == "bytes":
        return bytes(size)
    if kind == "memoryview":
        return memoryview(bytearray(size))
    if kind == "readonly":
        return memoryview(bytes(size))
    if kind == "strided":
        return memoryview(bytearray(size * 2))[::2]
    if kind == "cast":
        return memoryview(bytearray(size * 4)).cast("i")
    if kind == "array":
        return array.array("h", bytes(size * 2))
    if kind == "none":
        return None
    if kind == "int":
        return size
    return "x" * size


buffer_kinds = st.sampled_from(
    ["bytearray", "bytes", "memoryview", "readonly", "strided", "cast", "array", "none", "int",
     "str"])


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(60, 1000)
@given(kind=buffer_kinds, size=st.one_of(st.integers(0, 20), st.sampled_from([4096, 1 << 20])),
       data=st.binary(min_size=1, max_size=5000))
def test_get_buffer_of_every_shape(kind, size, data):
    async def body(loop):
        errors = []
        loop.set_exception_handler(
            lambda lp, ctx: errors.append((ctx["message"], type(ctx.get("exception")).__name__,
                                           str(ctx.get("exception")))))
        received = bytearray()
        events = []
        lost = loop.create_future()

        class Proto(asyncio.BufferedProtocol):
            def get_buffer(self, sizehint):
                events.append("get_buffer")
                self.buf = make_buffer(kind, size)
                return self.buf

            def buffer_updated(self, nbytes):
                events.append("updated")
                received.extend(memoryview(self.buf).cast("B")[:nbytes])

            def eof_received(self):
                events.append("eof")

            def connection_lost(self, exc):
                events.append("lost")
                lost.set_result(None if exc is None else (type(exc).__name__, str(exc)))

        a, b = socket.socketpair()
        tr, _ = await loop.connect_accepted_socket(Proto, a)
        b.sendall(data)
        b.shutdown(socket.SHUT_WR)
        exc = await lost
        b.close()
        # Consecutive get_buffer/updated pairs depend on how the kernel splits the data.
        collapsed = [e for i, e in enumerate(events) if i < 2 or e != events[i - 2]]
        return bytes(received), collapsed, exc, errors, tr.is_closing()

    results = on_both(body)
    assert_same(results)
    got = results["asyncio"][0]
    assert data.startswith(got)


# -- sendfile and sock_sendfile offsets and counts ---------------------------------------------------


FILE_SIZE = 3000


@pytest.fixture(scope="module")
def data_path():
    fd, path = tempfile.mkstemp()
    os.write(fd, bytes(range(256)) * (FILE_SIZE // 256) + b"z" * (FILE_SIZE % 256))
    os.close(fd)
    yield path
    os.unlink(path)


offsets = st.one_of(st.integers(-2, FILE_SIZE + 10),
                    st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, -(2**63)]), odd_values)
counts = st.one_of(st.none(), st.integers(-2, FILE_SIZE + 10),
                   st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64]), odd_values)


async def read_all(loop, sock):
    out = bytearray()
    while True:
        try:
            async with asyncio.timeout(0.2):
                chunk = await loop.sock_recv(sock, 1 << 16)
        except TimeoutError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(40, 500)
@given(offset=offsets, count=counts, fallback=st.booleans())
def test_sock_sendfile_offsets_and_counts(data_path, offset, count, fallback):
    async def body(loop):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        f = files.pop(0)
        try:
            try:
                sent = ("ok", await loop.sock_sendfile(a, f, offset, count, fallback=fallback))
            except Exception as e:  # noqa: BLE001
                sent = ("raise", type(e).__name__, str(e))
            position = f.tell()
            a.shutdown(socket.SHUT_WR)
            return sent, position, await read_all(loop, b)
        finally:
            a.close()
            b.close()

    with open(data_path, "rb") as f1, open(data_path, "rb") as f2:
        files = [f1, f2]  # one per loop
        assert_same(on_both(body))


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(40, 500)
@given(offset=offsets, count=counts)
def test_transport_sendfile_offsets_and_counts(data_path, offset, count):
    async def body(loop):
        a, b = socket.socketpair()
        b.setblocking(False)
        tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        f = files.pop(0)
        try:
            try:
                sent = ("ok", await loop.sendfile(tr, f, offset, count))
            except Exception as e:  # noqa: BLE001
                sent = ("raise", type(e).__name__, str(e))
            position = f.tell()
            tr.write(b"|end")
            tr.close()
            return sent, position, await read_all(loop, b)
        finally:
            b.close()

    with open(data_path, "rb") as f1, open(data_path, "rb") as f2:
        files = [f1, f2]  # one per loop
        assert_same(on_both(body))


# -- sock_recv(n) and sock_recv_into(buf) -------------------------------------------------------------

recv_sizes = st.one_of(st.integers(-3, 5000),
                       st.sampled_from([2**31 - 1, 2**31, 2**40, 2**63, 2**64, -(2**63)]),
                       odd_values)


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(50, 800)
@given(n=recv_sizes, ready=st.booleans(), data=st.binary(min_size=1, max_size=3000))
def test_sock_recv_sizes(n, ready, data):
    async def body(loop):
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            if ready:
                b.sendall(data)
            else:
                loop.call_later(0.005, b.sendall, data)
            try:
                async with asyncio.timeout(0.5):
                    return ("ok", await loop.sock_recv(a, n))
            except Exception as e:  # noqa: BLE001
                return ("raise", type(e).__name__, str(e))
        finally:
            a.close()
            b.close()

    assert_same(on_both(body))


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(50, 800)
@given(kind=buffer_kinds, size=st.integers(0, 64), ready=st.booleans(),
       data=st.binary(min_size=1, max_size=100))
def test_sock_recv_into_buffers(kind, size, ready, data):
    async def body(loop):
        a, b = socket.socketpair()
        a.setblocking(False)
        buf = make_buffer(kind, size)
        try:
            if ready:
                b.sendall(data)
            else:
                loop.call_later(0.005, b.sendall, data)
            try:
                async with asyncio.timeout(0.5):
                    n = await loop.sock_recv_into(a, buf)
                return ("ok", n, bytes(memoryview(buf).cast("B")[:n]))
            except Exception as e:  # noqa: BLE001
                return ("raise", type(e).__name__, str(e))
        finally:
            a.close()
            b.close()

    assert_same(on_both(body))


# -- datagram sizes ---------------------------------------------------------------------------------


@pytest.mark.timeout(600 if LONG else 60)
@fuzz_settings(30, 400)
@given(size=st.one_of(st.integers(0, 2000),
                      st.sampled_from([65507, 65508, 65535, 65536, 1 << 20])),
       family=st.sampled_from([socket.AF_INET, socket.AF_INET6]),
       how=st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_datagram_sizes(size, family, how):
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"

    async def body(loop):
        got = []
        errors = []

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.append(len(data))

            def error_received(self, exc):
                errors.append((type(exc).__name__, str(exc)))

        receiver = socket.socket(family, socket.SOCK_DGRAM)
        receiver.bind((host, 0))
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        receiver.setblocking(False)
        tr, _ = await loop.create_datagram_endpoint(Proto, local_addr=(host, 0), family=family)
        try:
            data = {"bytes": bytes, "bytearray": bytearray,
                    "memoryview": lambda n: memoryview(bytes(n))}[how](size)
            sent = outcome(tr.sendto, data, receiver.getsockname())
            await asyncio.sleep(0.01)
            with contextlib.suppress(BlockingIOError):
                got.append(("peer", len(receiver.recv(1 << 17))))
            return sent, got, errors, tr.get_write_buffer_size()
        finally:
            tr.close()
            receiver.close()
            await asyncio.sleep(0)

    assert_same(on_both(body))
