"""loop.connect_read_pipe / connect_write_pipe on pipes, FIFOs, sockets and ptys. Oracle: stock
asyncio, each test on both loops.

Checked: what is accepted and refused (regular files), the protocol callbacks and their order,
end of file, the reading end closing under a writer (connection_lost with or without
BrokenPipeError), flow control (pause_writing/resume_writing at the buffer limits), pausing
reads, and the extra info.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pty
import socket

import pytest
from conftest import run

pytestmark = pytest.mark.timeout(30)


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = loop.create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        assert not self.events
        self.transport = transport
        self.events.append("connection_made")

    def data_received(self, data):
        assert self.events[0] == "connection_made"
        assert "eof_received" not in self.events and not self.lost.done()
        self.data += data
        if self.events[-1] != "data":
            self.events.append("data")
        self.got.set()

    def eof_received(self):
        self.events.append("eof_received")

    def connection_lost(self, exc):
        assert not self.lost.done()
        self.events.append("connection_lost")
        self.lost.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.events = []
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")

    def connection_lost(self, exc):
        assert not self.lost.done()
        self.events.append("connection_lost")
        self.lost.set_result(exc)


@pytest.fixture
def pipe_fds():
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def owned(fd, mode):
    """An unbuffered file object over ``fd``; the transport it is given to closes it."""
    return open(fd, mode, buffering=0)  # the transport given it closes it


def fileobj(fds, key, mode):
    """A file object owning fds[key] (the transport closes it): forget the raw fd."""
    return owned(fds.pop(key), mode)


# ---------------------------------------------------------------- reading


def test_read_pipe_data_eof_and_order(loop, pipe_fds):
    async def main():
        rfile = fileobj(pipe_fds, "r", "rb")
        transport, proto = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        assert proto.events == ["connection_made"]
        assert transport.get_extra_info("pipe") is rfile
        assert transport.is_reading() and not transport.is_closing()
        os.write(pipe_fds["w"], b"hello ")
        os.write(pipe_fds["w"], b"world")
        await asyncio.sleep(0.05)
        os.close(pipe_fds.pop("w"))
        exc = await asyncio.wait_for(proto.lost, 5)
        return exc, bytes(proto.data), proto.events, rfile.closed, transport.is_closing()

    exc, data, events, closed, closing = run(loop, main())
    assert exc is None
    assert data == b"hello world"
    assert events == ["connection_made", "data", "eof_received", "connection_lost"]
    assert closed and closing


def test_read_pipe_pause_and_resume(loop, pipe_fds):
    async def main():
        transport, proto = await loop.connect_read_pipe(
            lambda: ReadProto(loop), fileobj(pipe_fds, "r", "rb"))
        transport.pause_reading()
        assert not transport.is_reading()
        os.write(pipe_fds["w"], b"waiting")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        transport.resume_reading()
        transport.resume_reading()  # idempotent
        await asyncio.wait_for(proto.got.wait(), 5)
        assert transport.is_reading()
        transport.close()
        exc = await asyncio.wait_for(proto.lost, 5)
        assert not transport.is_reading()
        return bytes(proto.data), exc

    assert run(loop, main()) == (b"waiting", None)


def test_read_pipe_close_calls_connection_lost_once(loop, pipe_fds):
    async def main():
        transport, proto = await loop.connect_read_pipe(
            lambda: ReadProto(loop), fileobj(pipe_fds, "r", "rb"))
        transport.close()
        transport.close()
        assert transport.is_closing()
        exc = await asyncio.wait_for(proto.lost, 5)
        await asyncio.sleep(0.01)
        return exc, proto.events

    assert run(loop, main()) == (None, ["connection_made", "connection_lost"])


def test_big_read(loop, pipe_fds):
    # More than one 256 KiB read, written by a thread as the pipe drains.
    import threading

    payload = os.urandom(1024 * 1024)

    def writer(fd):
        view = memoryview(payload)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.close(fd)

    async def main():
        _, proto = await loop.connect_read_pipe(
            lambda: ReadProto(loop), fileobj(pipe_fds, "r", "rb"))
        t = threading.Thread(target=writer, args=(pipe_fds.pop("w"),))
        t.start()
        exc = await asyncio.wait_for(proto.lost, 10)
        t.join()
        return exc, bytes(proto.data) == payload

    assert run(loop, main()) == (None, True)


# ---------------------------------------------------------------- writing


def test_write_pipe_writes_and_closes(loop, pipe_fds):
    async def main():
        wfile = fileobj(pipe_fds, "w", "wb")
        transport, proto = await loop.connect_write_pipe(lambda: WriteProto(loop), wfile)
        assert transport.get_extra_info("pipe") is wfile
        assert transport.can_write_eof()
        transport.write(b"abc")
        transport.write(bytearray(b"def"))
        transport.write(memoryview(b"ghi"))
        transport.writelines([b"j", b"k"])
        transport.write(b"")
        assert transport.get_write_buffer_size() == 0
        transport.close()
        assert transport.is_closing()
        exc = await asyncio.wait_for(proto.lost, 5)
        return exc, os.read(pipe_fds["r"], 100), os.read(pipe_fds["r"], 100), wfile.closed

    assert run(loop, main()) == (None, b"abcdefghijk", b"", True)


def test_pipe_transport_classes_and_unsupported_methods(loop, pipe_fds):
    # As asyncio's: the write pipe transport is a Transport (its reading methods raise
    # NotImplementedError); the read pipe transport is only a ReadTransport (no write).
    async def main():
        rfile = fileobj(pipe_fds, "r", "rb")
        wfile = fileobj(pipe_fds, "w", "wb")
        wt, _ = await loop.connect_write_pipe(lambda: WriteProto(loop), wfile)
        rt, rproto = await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        kinds = [
            (isinstance(t, asyncio.ReadTransport), isinstance(t, asyncio.WriteTransport),
             isinstance(t, asyncio.Transport))
            for t in (wt, rt)
        ]
        unsupported = []
        for call in (wt.pause_reading, wt.resume_reading, wt.is_reading):
            with pytest.raises(NotImplementedError):
                call()
            unsupported.append(call.__name__)
        assert not hasattr(rt, "write")
        wt.close()
        await asyncio.wait_for(rproto.lost, 5)  # the writer's close is the reader's EOF
        return kinds, unsupported

    assert run(loop, main()) == (
        [(True, True, True), (True, False, False)],
        ["pause_reading", "resume_reading", "is_reading"],
    )


def test_write_pipe_flow_control_and_drain(loop, pipe_fds):
    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), fileobj(pipe_fds, "w", "wb"))
        assert transport.get_write_buffer_limits() == (16384, 65536)
        transport.set_write_buffer_limits(high=4096)
        assert transport.get_write_buffer_limits() == (1024, 4096)
        transport.set_write_buffer_limits(low=100)
        assert transport.get_write_buffer_limits() == (100, 400)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=10, low=20)
        transport.set_write_buffer_limits(high=65536, low=1024)
        chunk = b"x" * 65536
        for _ in range(4):  # 256 KiB: more than the pipe holds
            transport.write(chunk)
        assert transport.get_write_buffer_size() > 65536
        assert proto.events == ["connection_made", "pause_writing"]
        # Read everything; the queue drains and the protocol resumes.
        got = 0
        deadline = asyncio.get_running_loop().time() + 10
        while got < 4 * 65536 and asyncio.get_running_loop().time() < deadline:
            try:
                got += len(os.read(pipe_fds["r"], 1 << 20))
            except BlockingIOError:
                pass
            await asyncio.sleep(0.001)
        os.set_blocking(pipe_fds["r"], True)
        assert got == 4 * 65536
        assert transport.get_write_buffer_size() == 0
        transport.close()
        await asyncio.wait_for(proto.lost, 5)
        return proto.events

    os.set_blocking(pipe_fds["r"], False)
    assert run(loop, main()) == [
        "connection_made", "pause_writing", "resume_writing", "connection_lost"]


def test_write_pipe_close_waits_for_the_queue(loop, pipe_fds):
    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), fileobj(pipe_fds, "w", "wb"))
        payload = os.urandom(200_000)
        transport.write(payload)
        transport.close()
        assert transport.is_closing()
        transport.write(b"ignored after close")
        got = bytearray()
        while True:
            chunk = await loop.run_in_executor(None, os.read, pipe_fds["r"], 1 << 16)
            if not chunk:
                break
            got += chunk
        exc = await asyncio.wait_for(proto.lost, 5)
        return exc, bytes(got) == payload

    assert run(loop, main()) == (None, True)


@pytest.mark.parametrize("queued", [False, True], ids=["idle", "data_queued"])
def test_write_pipe_reader_closing(loop, pipe_fds, queued):
    # The reading end goes away: connection_lost(None) if nothing was queued, else
    # connection_lost(BrokenPipeError) (asyncio's rule).
    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), fileobj(pipe_fds, "w", "wb"))
        if queued:
            transport.write(b"x" * (1024 * 1024))
            assert transport.get_write_buffer_size() > 0
        await asyncio.sleep(0.01)
        os.close(pipe_fds.pop("r"))
        exc = await asyncio.wait_for(proto.lost, 5)
        assert transport.is_closing()
        transport.write(b"dropped")  # after the end: ignored, not raised
        return exc

    exc = run(loop, main())
    if queued:
        assert isinstance(exc, BrokenPipeError)
    else:
        assert exc is None


def test_write_pipe_abort_drops_the_queue(loop, pipe_fds):
    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), fileobj(pipe_fds, "w", "wb"))
        transport.write(b"x" * (1024 * 1024))
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        return await asyncio.wait_for(proto.lost, 5)

    assert run(loop, main()) is None


def test_write_pipe_write_eof(loop, pipe_fds):
    async def main():
        transport, proto = await loop.connect_write_pipe(
            lambda: WriteProto(loop), fileobj(pipe_fds, "w", "wb"))
        transport.write(b"last words")
        transport.write_eof()
        transport.write_eof()
        exc = await asyncio.wait_for(proto.lost, 5)
        return exc, os.read(pipe_fds["r"], 100), os.read(pipe_fds["r"], 100)

    assert run(loop, main()) == (None, b"last words", b"")


# ---------------------------------------------------------------- kinds of files


def test_regular_files_are_refused(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"data")

    async def main(rfile, wfile):
        with pytest.raises(ValueError):
            await loop.connect_read_pipe(lambda: ReadProto(loop), rfile)
        with pytest.raises(ValueError):
            await loop.connect_write_pipe(lambda: WriteProto(loop), wfile)
        return "refused"

    with open(path, "rb") as rfile, open(path, "ab") as wfile:
        assert run(loop, main(rfile, wfile)) == "refused"


def test_fifo(loop, tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)

    async def main():
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        _, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), owned(rfd, "rb"))
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), owned(wfd, "wb"))
        wt.write(b"through the fifo")
        await asyncio.wait_for(rp.got.wait(), 5)
        wt.close()
        await asyncio.wait_for(wp.lost, 5)
        exc = await asyncio.wait_for(rp.lost, 5)
        return bytes(rp.data), exc, rp.events

    data, exc, events = run(loop, main())
    assert (data, exc) == (b"through the fifo", None)
    assert events == ["connection_made", "data", "eof_received", "connection_lost"]


def test_sockets_as_pipes(loop):
    a, b = socket.socketpair()

    async def main():
        _, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), a)
        wt, wp = await loop.connect_write_pipe(lambda: WriteProto(loop), b)
        wt.write(b"over a socket")
        await asyncio.wait_for(rp.got.wait(), 5)
        wt.close()
        await asyncio.wait_for(wp.lost, 5)
        exc = await asyncio.wait_for(rp.lost, 5)
        return bytes(rp.data), exc

    try:
        assert run(loop, main()) == (b"over a socket", None)
        assert a.fileno() == -1 and b.fileno() == -1  # the transports closed them
    finally:
        a.close()
        b.close()


def test_pty(loop):
    # A pty's master reads EIO once the slave side is closed: the read transport ends with
    # connection_lost(OSError(EIO)) and no call to the exception handler, as in asyncio.
    master, slave = pty.openpty()
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))

    async def main():
        _, rp = await loop.connect_read_pipe(lambda: ReadProto(loop), owned(master, "rb"))
        wt, wp = await loop.connect_write_pipe(
            lambda: WriteProto(loop), owned(os.dup(slave), "wb"))
        wt.write(b"to the terminal\n")
        await asyncio.wait_for(rp.got.wait(), 5)
        wt.close()
        await asyncio.wait_for(wp.lost, 5)
        os.close(slave)
        exc = await asyncio.wait_for(rp.lost, 5)
        return bytes(rp.data), exc

    data, exc = run(loop, main())
    assert data.replace(b"\r\n", b"\n") == b"to the terminal\n"
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert handler_calls == []


def test_write_type_errors_are_raised(ferro_loop):
    # ferroloop-only: asyncio checks the type with an `assert` (AssertionError, or nothing
    # under -O); ferroloop raises TypeError, as its socket transports do.
    loop = ferro_loop
    r, w = os.pipe()
    try:
        async def main():
            transport, proto = await loop.connect_write_pipe(
                lambda: WriteProto(loop), owned(w, "wb"))
            with pytest.raises(TypeError):
                transport.write("text")
            transport.close()
            await asyncio.wait_for(proto.lost, 5)

        run(loop, main())
    finally:
        os.close(r)


def test_repr_of_transports_left_open_on_a_closed_loop(loop, pipe_fds):
    # Transports the program never closed still have a repr after loop.close() (asyncio's
    # issue #314): "open".
    async def main():
        rt, _ = await loop.connect_read_pipe(lambda: ReadProto(loop), owned(pipe_fds["r"], "rb"))
        wt, _ = await loop.connect_write_pipe(lambda: WriteProto(loop),
                                              owned(pipe_fds["w"], "wb"))
        assert "fd=" in repr(rt) and "fd=" in repr(wt)
        return rt, wt

    rt, wt = run(loop, main())
    loop.close()
    try:
        assert "open" in repr(rt)
        assert "open" in repr(wt)
    finally:
        for t in (rt, wt):
            t._pipe.close()
            t._pipe = None  # as CPython's test does: no ResourceWarning from this test
        pipe_fds.clear()
