"""The stream transport contract (DESIGN.md §4), on real sockets.
Oracle: stock asyncio (each test runs on both loops). Transports are made with the public
``loop.connect_accepted_socket`` over socketpairs and TCP connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
import sys
import warnings

import pytest
from conftest import run, until


class Recorder(asyncio.Protocol):
    """Records every protocol callback in order."""

    def __init__(self, eof_keep_open=False):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = None
        self.eof_keep_open = eof_keep_open

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")
        return self.eof_keep_open

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


async def make(loop, proto, family=socket.AF_UNIX):
    """(transport, protocol, peer socket): a transport over one end of a connected pair."""
    if family == socket.AF_UNIX:
        ours, peer = socket.socketpair()
    else:
        srv = socket.socket(family)
        srv.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        srv.listen(1)
        peer = socket.create_connection(srv.getsockname()[:2])
        ours, _ = srv.accept()
        srv.close()
    peer.setblocking(False)
    transport, protocol = await loop.connect_accepted_socket(lambda: proto, ours)
    return transport, protocol, peer


async def read_until(loop, peer, n):
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(peer, 1 << 16)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_echo_and_callback_order(loop):
    class Echo(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.write(data.upper())

    async def main():
        tr, pr, peer = await make(loop, Echo())
        assert isinstance(tr, asyncio.Transport)
        assert pr.events == ["made"]
        await loop.sock_sendall(peer, b"hello")
        got = await read_until(loop, peer, 5)
        peer.shutdown(socket.SHUT_WR)
        await until(lambda: pr.events[-1] == "lost")
        peer.close()
        return got, pr.events, pr.lost

    got, events, lost = run(loop, main())
    assert got == b"HELLO"
    assert events == ["made", "data", "eof", "lost"]
    assert lost is None


def test_writes_of_every_bytes_like_kind_and_snapshot(loop):
    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        buf = bytearray(b"abc")
        tr.write(buf)
        buf[:] = b"XYZ"  # must not change what was written
        tr.write(memoryview(b"def"))
        tr.writelines([b"g", bytearray(b"h"), memoryview(b"ij")])
        tr.write(b"")
        got = await read_until(loop, peer, 10)
        tr.close()
        peer.close()
        return got

    assert run(loop, main()) == b"abcdefghij"


def test_write_rejects_non_bytes(loop):
    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        with pytest.raises(TypeError) as ei:
            tr.write("text")
        tr.close()
        peer.close()
        return str(ei.value)

    # asyncio 3.14 names the accepted types.
    expected = ("a bytes, bytearray, or memoryview object" if sys.version_info >= (3, 14)
                else "a bytes-like object")
    assert run(loop, main()) == f"data argument must be {expected}, not 'str'"



WRONG_WRITE_CALLS = [
    ((), {}), ((b"x", b"y"), {}), ((), {"dat": b"x"}), ((b"x",), {"data": b"y"}),
    ((b"a", 1, 2), {"data": 3}), ((b"a", 1), {"dat": 3}), ((), {"data": b"x", "dat": 1}),
    ((), {"xyz": 1}), ((), {"self": 1}),
]


def python_method_errors(calls):
    """What CPython says, after the method's name, for each call of a Python method
    `write(self, data)` (3.13 adds "Did you mean ...?")."""
    def write(self, data):
        return data

    said = []
    for args, kwargs in calls:
        with pytest.raises(TypeError) as ei:
            write(None, *args, **kwargs)
        said.append(str(ei.value).split("write() ", 1)[1])
    return said


def test_write_takes_data_by_keyword_and_refuses_other_calls(loop):
    # write(data) is a Python method on asyncio's transport; ferroloop's is native, and any
    # call but one positional argument must come out as a Python method's would.
    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        errors = []
        for args, kwargs in WRONG_WRITE_CALLS:
            with pytest.raises(TypeError) as ei:
                tr.write(*args, **kwargs)
            errors.append(str(ei.value).split(".write() ", 1)[1])
        tr.write(data=b"kw")
        tr.write(b"pos")
        got = await read_until(loop, peer, 5)
        tr.close()
        peer.close()
        return errors, got

    errors, got = run(loop, main())
    assert got == b"kwpos"
    assert errors == python_method_errors(WRONG_WRITE_CALLS)
    assert errors[0] == "missing 1 required positional argument: 'data'"


def test_write_eof_half_close(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        assert tr.can_write_eof() is True
        tr.write(b"last words")
        tr.write_eof()
        tr.write_eof()  # twice is fine
        with pytest.raises(RuntimeError, match=r"^Cannot call write\(\) after write_eof\(\)$"):
            tr.write(b"more")
        got = await read_until(loop, peer, 100)  # reads to EOF
        await loop.sock_sendall(peer, b"still readable")
        await until(lambda: bytes(pr.data) == b"still readable")
        assert not tr.is_closing()
        tr.close()
        peer.close()
        return got

    assert run(loop, main()) == b"last words"


@pytest.mark.parametrize("keep_open", [False, True])
def test_eof_received_decides_whether_to_close(loop, keep_open):
    async def main():
        tr, pr, peer = await make(loop, Recorder(eof_keep_open=keep_open))
        peer.shutdown(socket.SHUT_WR)
        await until(lambda: "eof" in pr.events)
        await asyncio.sleep(0.01)
        if keep_open:
            assert not tr.is_closing()
            tr.write(b"after eof")
            got = await read_until(loop, peer, 9)
            tr.close()
        else:
            got = b""
        await until(lambda: pr.events[-1] == "lost")
        peer.close()
        return got, pr.events

    got, events = run(loop, main())
    assert events == ["made", "eof", "lost"]
    assert got == (b"after eof" if keep_open else b"")


def test_close_flushes_then_connection_lost_once(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        payload = b"x" * (4 * 1024 * 1024)  # more than the socket takes at once
        tr.write(payload)
        tr.close()
        tr.close()
        assert tr.is_closing()
        got = await read_until(loop, peer, len(payload) + 1)
        await until(lambda: "lost" in pr.events)
        await asyncio.sleep(0.01)
        peer.close()
        return len(got), pr.events.count("lost"), pr.lost

    n, lost_count, exc = run(loop, main(), timeout=20)
    assert n == 4 * 1024 * 1024
    assert lost_count == 1
    assert exc is None


def test_abort_loses_connection_without_error(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        tr.write(b"y" * (8 * 1024 * 1024))
        tr.abort()
        assert tr.is_closing()
        await until(lambda: "lost" in pr.events)
        peer.close()
        return pr.lost, pr.events.count("lost")

    assert run(loop, main(), timeout=20) == (None, 1)


def test_peer_reset_reports_the_error(loop):
    async def main():
        _tr, pr, peer = await make(loop, Recorder(), family=socket.AF_INET)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        await until(lambda: "lost" in pr.events)
        return pr.lost

    assert isinstance(run(loop, main()), ConnectionResetError)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_peer_reset_while_writes_are_queued(loop, family):
    # The peer never reads; the writer goes over its high-water mark with data still queued,
    # then the peer resets: connection_lost gets the error once, the queue is dropped, and
    # there is no resume_writing for a connection that is gone.
    async def main():
        tr, pr, peer = await make(loop, Recorder(), family=family)
        chunk = b"x" * 65536
        for _ in range(2048):  # the kernel takes megabytes on loopback TCP before pushing back
            tr.write(chunk)
            if "pause" in pr.events:
                break
        assert pr.events == ["made", "pause"]
        assert tr.get_write_buffer_size() > 0
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        await until(lambda: "lost" in pr.events)
        await asyncio.sleep(0.01)
        return tr, pr

    tr, pr = run(loop, main())
    assert pr.events == ["made", "pause", "lost"]
    assert isinstance(pr.lost, (ConnectionResetError, BrokenPipeError))
    assert tr.is_closing()
    assert tr.get_write_buffer_size() == 0


def test_pause_and_resume_reading(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        assert tr.is_reading()
        tr.pause_reading()
        tr.pause_reading()  # idempotent
        assert not tr.is_reading()
        await loop.sock_sendall(peer, b"held back")
        await asyncio.sleep(0.02)
        assert bytes(pr.data) == b""
        tr.resume_reading()
        assert tr.is_reading()
        await until(lambda: bytes(pr.data) == b"held back")
        tr.close()
        assert not tr.is_reading()
        peer.close()

    run(loop, main())


def test_flow_control_pause_and_resume_writing(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"z" * 65536
        for _ in range(200):  # the peer reads nothing: the kernel fills up
            tr.write(chunk)
            if "pause" in pr.events:
                break
        assert "pause" in pr.events
        assert tr.get_write_buffer_size() > 64 * 1024
        total = 0
        while "resume" not in pr.events:
            data = await loop.sock_recv(peer, 1 << 20)
            total += len(data)
        assert tr.get_write_buffer_size() <= 16 * 1024
        tr.close()
        peer.close()
        return pr.events.count("pause"), pr.events.count("resume")

    assert run(loop, main(), timeout=20) == (1, 1)


def test_write_buffer_limits_validation(loop):
    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        with pytest.raises(ValueError) as ei:
            tr.set_write_buffer_limits(high=1, low=2)
        msg = str(ei.value)
        tr.set_write_buffer_limits(low=100)
        limits = tr.get_write_buffer_limits()
        tr.set_write_buffer_limits()
        default = tr.get_write_buffer_limits()
        tr.close()
        peer.close()
        return msg, limits, default

    msg, limits, default = run(loop, main())
    assert msg == "high (1) must be >= low (2) must be >= 0"
    assert limits == (100, 400)
    assert default == (16384, 65536)


def test_write_buffer_limits_of_any_number(loop):
    # asyncio keeps the limits as the objects it was given and compares sizes with them: a
    # float stays a float, an int beyond 64 bits is larger than any buffer.
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        got = []
        for high, low in ((2, 1.5), (1.5, 1), (2**64, None), (None, 2**63), (3.0, 0.5)):
            tr.set_write_buffer_limits(high, low)
            got.append(tr.get_write_buffer_limits())
        tr.set_write_buffer_limits(2**70, 2**65)
        chunk = b"x" * 65536
        for _ in range(256):  # 16 MiB: far beyond what the kernel takes, never a pause
            tr.write(chunk)
        paused_huge = "pause" in pr.events
        tr.abort()
        peer.close()
        await asyncio.sleep(0)
        return got, paused_huge

    got, paused_huge = run(loop, main())
    assert got == [(1.5, 2), (1, 1.5), (2**62, 2**64), (2**63, 2**65), (0.5, 3.0)]
    assert [type(v) for pair in got for v in pair] == [float, int, int, float, int, int,
                                                     int, int, float, float]
    assert not paused_huge


def test_write_buffer_limit_as_float_decides_the_pause(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        tr.pause_reading()
        big = b"x" * (8 << 20)
        tr.set_write_buffer_limits(high=0.5, low=0.25)
        tr.write(big)  # the kernel cannot take 8 MiB at once: something stays queued
        paused = "pause" in pr.events
        tr.abort()
        peer.close()
        await asyncio.sleep(0)
        return paused

    assert run(loop, main()) is True


def test_write_buffer_limits_arithmetic_is_pythons(loop):
    # low * 4 and high // 4 are Python's operators: an operand without them raises the
    # operator's TypeError (ferroloop called the dunder methods: AttributeError).
    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for //"):
            tr.set_write_buffer_limits(high="10")
        with pytest.raises(TypeError, match=r"'>=' not supported"):
            tr.set_write_buffer_limits(low="10")
        tr.set_write_buffer_limits(high=True)
        limits = tr.get_write_buffer_limits()
        tr.close()
        peer.close()
        return limits

    assert run(loop, main()) == (0, True)


def test_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)  # small on purpose: many reads
            self.got = bytearray()
            self.lost = "not yet"

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            assert sizehint == -1
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            self.lost = exc

    async def main():
        _tr, pr, peer = await make(loop, Buffered())
        payload = bytes(range(256)) * 40
        await loop.sock_sendall(peer, payload)
        peer.shutdown(socket.SHUT_WR)
        await until(lambda: pr.lost != "not yet")
        peer.close()
        return bytes(pr.got) == payload, pr.lost

    assert run(loop, main()) == (True, None)


def test_protocol_errors_go_to_the_handler_and_close(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Broken(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("in data_received")

    async def main():
        tr, pr, peer = await make(loop, Broken())
        await loop.sock_sendall(peer, b"boom")
        await until(lambda: "lost" in pr.events)
        peer.close()
        return tr, pr

    tr, pr = run(loop, main())
    assert isinstance(pr.lost, ZeroDivisionError)
    (ctx,) = errors
    assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
    assert ctx["transport"] is tr
    assert ctx["protocol"] is pr


@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_INET])
def test_protocol_without_data_received_writes_and_fails_only_when_data_arrives(loop, family):
    # asyncio looks protocol methods up when it calls them: an `asyncio.BaseProtocol` used
    # only to send works, and data arriving is a fatal error of the connection then.
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class SendOnly(asyncio.BaseProtocol):
        def __init__(self):
            self.lost = []

        def connection_made(self, transport):
            self.transport = transport

        def connection_lost(self, exc):
            self.lost.append(exc)

    async def main():
        tr, pr, peer = await make(loop, SendOnly(), family)
        tr.write(b"one way")
        assert await read_until(loop, peer, 7) == b"one way"
        assert not tr.is_closing() and pr.lost == [] and errors == []
        await loop.sock_sendall(peer, b"unexpected")
        await until(lambda: pr.lost)
        peer.close()
        return tr, pr

    tr, pr = run(loop, main())
    (exc,) = pr.lost
    assert isinstance(exc, AttributeError)
    assert "data_received" in str(exc)
    (ctx,) = errors
    assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
    assert ctx["transport"] is tr
    assert tr.is_closing()


def test_empty_get_buffer_is_an_error(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Empty(asyncio.BufferedProtocol):
        lost = "not yet"

        def get_buffer(self, sizehint):
            return bytearray()

        def buffer_updated(self, nbytes):
            raise AssertionError("unreachable")

        def connection_lost(self, exc):
            self.lost = exc

    async def main():
        _tr, pr, peer = await make(loop, Empty())
        await loop.sock_sendall(peer, b"data")
        await until(lambda: pr.lost != "not yet")
        peer.close()
        return pr.lost

    exc = run(loop, main())
    assert isinstance(exc, RuntimeError)
    assert str(exc) == "get_buffer() returned an empty buffer"
    assert errors[0]["message"] == "Fatal error: protocol.get_buffer() call failed."


@pytest.mark.parametrize("make_buf", [bytes, lambda n: memoryview(bytes(n)),
                                      lambda n: memoryview(bytearray(2 * n))[::2]],
                         ids=["bytes", "readonly", "strided"])
def test_get_buffer_not_writable_is_recv_intos_type_error(loop, make_buf):
    # asyncio reads with sock.recv_into(buf): a buffer that is not a writable contiguous one
    # fails its argument parsing with this TypeError, reported as a fatal read error.
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Proto(asyncio.BufferedProtocol):
        lost = "not yet"

        def get_buffer(self, sizehint):
            return make_buf(16)

        def buffer_updated(self, nbytes):
            raise AssertionError("unreachable")

        def connection_lost(self, exc):
            self.lost = exc

    async def main():
        _tr, pr, peer = await make(loop, Proto())
        await loop.sock_sendall(peer, b"data")
        await until(lambda: pr.lost != "not yet")
        peer.close()
        return pr.lost

    exc = run(loop, main())
    assert isinstance(exc, TypeError)
    assert str(exc) == (
        "recv_into() argument 1 must be read-write bytes-like object, not "
        + ("bytes" if make_buf is bytes else "memoryview"))
    (ctx,) = errors
    assert ctx["message"] == "Fatal read error on socket transport"
    assert ctx["exception"] is exc


def test_extra_info(loop):
    async def main():
        tr, _pr, peer = await make(loop, Recorder(), family=socket.AF_INET)
        info = {k: tr.get_extra_info(k) for k in ("peername", "sockname")}
        sock = tr.get_extra_info("socket")
        missing = tr.get_extra_info("no such thing", "dflt")
        result = (info, peer.getsockname(), peer.getpeername(), type(sock).__name__,
                  sock.fileno() >= 0, missing)
        tr.close()
        peer.close()
        return result

    info, peer_name, peer_peer, sock_type, has_fd, missing = run(loop, main())
    assert info == {"peername": peer_name, "sockname": peer_peer}
    assert sock_type == "TransportSocket"
    assert has_fd
    assert missing == "dflt"


def test_set_protocol_switches_to_a_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.got = bytearray()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

    async def main():
        first = Recorder()
        tr, _pr, peer = await make(loop, first)
        second = Buffered()
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        await loop.sock_sendall(peer, b"to the second")
        await until(lambda: bytes(second.got) == b"to the second")
        tr.close()
        peer.close()
        return bytes(first.data)

    assert run(loop, main()) == b""


def test_writes_after_connection_lost_are_dropped_and_logged(loop, caplog):
    async def main():
        tr, pr, peer = await make(loop, Recorder(), family=socket.AF_INET)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        await until(lambda: "lost" in pr.events)
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(7):
                tr.write(b"into the void")
        return [r.getMessage() for r in caplog.records if r.name == "asyncio"]

    messages = run(loop, main())
    assert "socket.send() raised exception." in messages


def test_transport_owns_its_fd(loop):
    async def main():
        tr, pr, peer = await make(loop, Recorder())
        fd = tr.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, print)
        tr.close()
        await until(lambda: "lost" in pr.events)
        loop.add_reader(peer, print)  # other fds are fine
        loop.remove_reader(peer)
        peer.close()
        return repr(tr)

    assert "closed" in run(loop, main())


def test_repr(loop):
    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        await asyncio.sleep(0)
        text = repr(tr)
        tr.close()
        peer.close()
        return text, tr.get_extra_info("socket").fileno()

    text, fd = run(loop, main())
    assert f"fd={fd}" in text
    assert "read=polling" in text
    assert "write=<idle, bufsize=0>" in text


def test_unclosed_transport_warns(loop_factory):
    lp = loop_factory()
    try:
        async def main():
            tr, _pr, peer = await make(lp, Recorder())
            await asyncio.sleep(0)
            return tr, peer

        tr, peer = run(lp, main())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tr.__del__()
        peer.close()
        assert any(issubclass(w.category, ResourceWarning)
                   and str(w.message).startswith("unclosed transport ") for w in caught)
        tr._sock = None  # already warned and closed
    finally:
        lp.close()
        gc.collect()


@pytest.mark.timeout(60)
def test_many_connections_checksummed_echo(loop):
    # 50 connections, random message sizes, pause/resume toggled on the server side: every
    # byte comes back to the connection that sent it, in order.
    import hashlib
    import random

    rng = random.Random(7)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.n = 0

        def data_received(self, data):
            self.transport.write(data)
            self.n += 1
            if self.n % 7 == 0:
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(0.001, self.transport.resume_reading)

    async def client(i):
        tr, _pr, peer = await make(loop, Echo())
        sent, got = hashlib.sha256(), hashlib.sha256()
        total = 0
        for _ in range(20):
            msg = rng.randbytes(rng.randint(1, 20000)) + str(i).encode()
            sent.update(msg)
            total += len(msg)
            await loop.sock_sendall(peer, msg)
        back = await read_until(loop, peer, total)
        got.update(back)
        tr.close()
        peer.close()
        return sent.hexdigest() == got.hexdigest() and len(back) == total

    async def main():
        return await asyncio.gather(*(client(i) for i in range(50)))

    assert all(run(loop, main(), timeout=50))


# ---------------------------------------------------------------- loop.sendfile


@pytest.fixture
def data_file(tmp_path):
    import os

    data = os.urandom(700_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


def test_sendfile_after_earlier_writes(loop, data_file):
    f, data = data_file

    async def main():
        tr, pr, peer = await make(loop, Recorder(), family=socket.AF_INET)
        tr.write(b"header:")
        sent = await loop.sendfile(tr, f)
        tr.write(b":trailer")
        got = await read_until(loop, peer, 7 + len(data) + 8)
        assert tr.is_reading()  # resumed afterwards
        await loop.sock_sendall(peer, b"still read")
        await until(lambda: bytes(pr.data) == b"still read")
        tr.close()
        peer.close()
        return sent, got, f.tell()

    sent, got, pos = run(loop, main(), timeout=20)
    assert sent == len(data)
    assert got == b"header:" + data + b":trailer"
    assert pos == len(data)


def test_sendfile_offset_and_count(loop, data_file):
    f, data = data_file

    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        sent = await loop.sendfile(tr, f, 1000, 5000)
        got = await read_until(loop, peer, 5000)
        tr.close()
        peer.close()
        return sent, got, f.tell()

    assert run(loop, main()) == (5000, data[1000:6000], 6000)


def test_sendfile_of_a_non_regular_file(loop):
    import io

    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        buf = io.BytesIO(b"0123456789" * 5000)
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(tr, buf, fallback=False)
        sent = await loop.sendfile(tr, buf)  # read-and-write fallback
        got = await read_until(loop, peer, 50000)
        tr.close()
        peer.close()
        return sent, got

    assert run(loop, main()) == (50000, b"0123456789" * 5000)


def test_sendfile_fallback_reads_from_offset_zero(loop, data_file):
    # A file positioned past its start, sent from offset 0 through the read-and-write fallback
    # (a BytesIO) and natively (a regular file). asyncio 3.14 sends the whole file either way:
    # its fallback seeks to the offset even when it is 0, and its native path sets the
    # position even when nothing is left to send. Before 3.14 the fallback reads from where the
    # file is, and an offset at the end leaves the position alone.
    import io

    f, data = data_file
    buf = io.BytesIO(b"0123456789")
    buf.seek(4)
    f.seek(123)

    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        sent = await loop.sendfile(tr, buf)
        got = await read_until(loop, peer, sent)
        at_end = await loop.sendfile(tr, f, len(data))
        tr.close()
        peer.close()
        return sent, got, buf.tell(), at_end, f.tell()

    if sys.version_info >= (3, 14):
        expected = (10, b"0123456789", 10, 0, len(data))
    else:
        expected = (6, b"456789", 6, 0, 123)
    assert run(loop, main()) == expected


def test_sendfile_on_a_closing_transport(loop, data_file):
    f, _ = data_file

    async def main():
        tr, _pr, peer = await make(loop, Recorder())
        tr.close()
        with pytest.raises(RuntimeError, match="^Transport is closing$"):
            await loop.sendfile(tr, f)
        peer.close()

    run(loop, main())


@pytest.mark.parametrize("chunks", [1, 16, 17, 1500])
def test_many_writes_in_one_batch_arrive_whole_and_in_order(loop, chunks):
    """Writes of one callback go out together (one vectored send of up to 1024 pieces on
    ferroloop, built on the stack up to 16): every count around those limits delivers the
    same bytes, in order, as asyncio's one send per write."""
    pieces = [f"<{i}:{'x' * (i % 7)}>".encode() for i in range(chunks)]
    expected = b"".join(pieces)

    async def main():
        tr, _pr, peer = await make(loop, Recorder(), family=socket.AF_INET)
        for piece in pieces:
            tr.write(piece)
        got = await read_until(loop, peer, len(expected))
        tr.close()
        peer.close()
        return got

    assert run(loop, main()) == expected
