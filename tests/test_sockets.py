"""The sock_* coroutines on real sockets: socketpairs, TCP on 127.0.0.1 and ::1, unix
sockets, UDP. Oracle: stock asyncio (each test runs on both loops)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import ssl
import struct
import sys
import tempfile
import time

import pytest
from conftest import run


def nonblocking(*socks):
    for s in socks:
        s.setblocking(False)
    return socks


@pytest.fixture
def pair():
    a, b = nonblocking(*socket.socketpair())
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(params=["ipv4", "ipv6", "unix"])
def listener(request, tmp_path):
    """A listening, non-blocking stream socket and a function making a client for it."""
    if request.param == "unix":
        family, addr = socket.AF_UNIX, str(tmp_path / "s.sock")
    elif request.param == "ipv6":
        family, addr = socket.AF_INET6, ("::1", 0)
    else:
        family, addr = socket.AF_INET, ("127.0.0.1", 0)
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind(addr)
    srv.listen(16)
    srv.setblocking(False)

    def client():
        c = socket.socket(family, socket.SOCK_STREAM)
        c.setblocking(False)
        return c

    try:
        yield srv, client
    finally:
        srv.close()


# ---------------------------------------------------------------- receiving


def test_sock_recv_ready_and_waiting(loop, pair):
    a, b = pair

    async def main():
        b.send(b"already here")
        first = await loop.sock_recv(a, 100)
        waiting = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        b.send(b"later")
        second = await waiting
        b.shutdown(socket.SHUT_WR)
        eof = await loop.sock_recv(a, 100)
        return first, second, eof

    assert run(loop, main()) == (b"already here", b"later", b"")


@pytest.mark.parametrize("ready", [True, False])
def test_sock_recv_sizes_beyond_memory_and_ssize_t(loop, pair, ready):
    # socket.recv allocates its n-byte buffer first: a size no allocator grants is a
    # MemoryError (ferroloop's native path used to abort the process), and one beyond a C
    # ssize_t is socket.recv's own OverflowError.
    a, b = pair

    async def main():
        if ready:
            b.send(b"data")
        out = []
        for n in (2**40, 2**63):
            try:
                await loop.sock_recv(a, n)
            except (MemoryError, OverflowError) as e:
                out.append((type(e), str(e)))
        out.append(await loop.sock_recv(a, 100) if ready else None)
        return out

    assert run(loop, main()) == [
        (MemoryError, ""),
        (OverflowError, "Python int too large to convert to C ssize_t"),
        b"data" if ready else None,
    ]


def test_sock_recv_is_a_coroutine_function(loop, pair):
    a, b = pair

    async def main():
        coro = loop.sock_recv(a, 1)
        assert asyncio.iscoroutine(coro)
        task = asyncio.create_task(coro)  # what TaskGroup and create_task need
        b.send(b"x")
        return await task

    assert run(loop, main()) == b"x"


def test_sock_recv_into(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        waiting = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        b.send(b"abc")
        n = await waiting
        return n, bytes(buf)

    assert run(loop, main()) == (3, b"abc" + bytes(7))


def test_sock_recv_cancelled_loses_no_data(loop, pair):
    a, b = pair

    async def main():
        waiting = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The watcher went with the cancelled call ...
        assert loop.remove_reader(a) is False
        b.send(b"kept")
        await asyncio.sleep(0.01)
        # ... so the bytes are still in the socket for the next reader.
        return await loop.sock_recv(a, 100)

    assert run(loop, main()) == b"kept"


def test_sock_recv_timeout_via_wait_for(loop, pair):
    a, b = pair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 0.02)
        b.send(b"after")
        return await loop.sock_recv(a, 10)

    assert run(loop, main()) == b"after"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_sock_recv_connection_reset(loop, host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(1)
    srv.setblocking(False)

    async def main():
        c = socket.socket(family)
        c.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(c, srv.getsockname())
        conn, _ = await accept
        with conn:
            reading = asyncio.ensure_future(loop.sock_recv(c, 10))
            await asyncio.sleep(0.01)
            # Abortive close: RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            with pytest.raises(ConnectionResetError):
                await reading
        finally:
            c.close()

    try:
        run(loop, main())
    finally:
        srv.close()


# ---------------------------------------------------------------- sending


def test_sock_sendall_large_payload_arrives_intact(loop, pair):
    a, b = pair
    payload = os.urandom(8 * 1024 * 1024)

    async def reader():
        h, n = hashlib.sha256(), 0
        while n < len(payload):
            chunk = await loop.sock_recv(b, 1 << 16)
            assert chunk
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest()

    async def main():
        r = asyncio.ensure_future(reader())
        assert await loop.sock_sendall(a, payload) is None
        return await r

    assert run(loop, main(), timeout=30) == hashlib.sha256(payload).hexdigest()


def test_sock_sendall_accepts_bytes_like(loop, pair):
    a, b = pair

    async def main():
        await loop.sock_sendall(a, bytearray(b"ab"))
        await loop.sock_sendall(a, memoryview(b"cd"))
        await loop.sock_sendall(a, b"")
        await asyncio.sleep(0.01)
        return await loop.sock_recv(b, 100)

    assert run(loop, main()) == b"abcd"


def test_sock_sendall_to_a_closed_peer_raises(loop, pair):
    a, b = pair
    b.close()

    async def main():
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                await loop.sock_sendall(a, b"x" * 65536)

    run(loop, main())


def test_sock_sendall_waiting_for_room_is_cancellable(loop, pair):
    a, _b = pair

    async def main():
        sending = asyncio.ensure_future(loop.sock_sendall(a, b"x" * (32 * 1024 * 1024)))
        await asyncio.sleep(0.02)
        assert not sending.done()  # nobody reads: blocked on a full buffer
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert loop.remove_writer(a) is False

    run(loop, main())


# ---------------------------------------------------------------- connect / accept


def test_connect_accept_and_echo(loop, listener):
    srv, client = listener

    async def main():
        c = client()
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        assert await loop.sock_connect(c, srv.getsockname()) is None
        conn, addr = await accept
        try:
            assert conn.gettimeout() == 0  # accepted sockets come back non-blocking
            if srv.family != socket.AF_UNIX:
                assert addr == c.getsockname()
            await loop.sock_sendall(c, b"ping")
            got = await loop.sock_recv(conn, 10)
            await loop.sock_sendall(conn, got.upper())
            return await loop.sock_recv(c, 10)
        finally:
            conn.close()
            c.close()

    assert run(loop, main()) == b"PING"


def test_sock_accept_waits_for_a_client(loop, listener):
    srv, client = listener

    async def main():
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await asyncio.sleep(0.01)
        assert not accept.done()
        c = client()
        await loop.sock_connect(c, srv.getsockname())
        conn, _ = await accept
        conn.close()
        c.close()

    run(loop, main())


def test_sock_connect_resolves_host_names(loop):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    async def main():
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            await loop.sock_connect(c, ("localhost", port))
            return c.getpeername()
        finally:
            c.close()

    try:
        assert run(loop, main()) == ("127.0.0.1", port)
    finally:
        srv.close()


def test_sock_connect_refused(loop):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    async def main():
        c = socket.socket()
        c.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError) as ei:
                await loop.sock_connect(c, ("127.0.0.1", port))
            return str(ei.value)
        finally:
            c.close()

    msg = run(loop, main())
    assert msg == f"[Errno 111] Connect call failed ('127.0.0.1', {port})"


def test_sock_connect_unix_missing_path(loop, tmp_path):
    async def main():
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        try:
            with pytest.raises(FileNotFoundError):
                await loop.sock_connect(c, str(tmp_path / "nobody"))
        finally:
            c.close()

    run(loop, main())


# ---------------------------------------------------------------- datagrams


@pytest.fixture(params=["ipv4", "ipv6"])
def udp_pair(request):
    family, host = (
        (socket.AF_INET, "127.0.0.1") if request.param == "ipv4" else (socket.AF_INET6, "::1")
    )
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    a.bind((host, 0))
    b.bind((host, 0))
    nonblocking(a, b)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_sock_sendto_and_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        waiting = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        n = await loop.sock_sendto(a, b"datagram", b.getsockname())
        data, addr = await waiting
        return n, data, addr

    n, data, addr = run(loop, main())
    assert (n, data) == (8, b"datagram")
    assert addr == a.getsockname()


def test_sock_recvfrom_into(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(16)
        waiting = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
        await asyncio.sleep(0.01)
        await loop.sock_sendto(a, b"0123456789", b.getsockname())
        n, addr = await waiting
        limited = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf, 4))
        await loop.sock_sendto(a, b"abcdefgh", b.getsockname())
        m, _ = await limited
        return n, m, bytes(buf), addr

    n, m, buf, addr = run(loop, main())
    assert (n, m) == (10, 4)
    assert buf == b"abcd456789" + bytes(6)
    assert addr == a.getsockname()


# ---------------------------------------------------------------- checks


def test_blocking_socket_rejected_in_debug_mode(loop, pair):
    a, _b = pair
    a.setblocking(True)
    loop.set_debug(True)

    async def main():
        for coro in (loop.sock_recv(a, 1), loop.sock_sendall(a, b"x"),
                     loop.sock_recv_into(a, bytearray(1)), loop.sock_accept(a),
                     loop.sock_connect(a, ("127.0.0.1", 1))):
            with pytest.raises(ValueError, match="^the socket must be non-blocking$"):
                await coro

    run(loop, main())


def test_ssl_socket_rejected(loop):
    ctx = ssl.create_default_context()
    raw = socket.socket()
    sslsock = ctx.wrap_socket(raw, server_hostname="example.org", do_handshake_on_connect=False)

    async def main():
        with pytest.raises(TypeError, match="^Socket cannot be of type SSLSocket$"):
            await loop.sock_recv(sslsock, 1)
        with pytest.raises(TypeError, match="^Socket cannot be of type SSLSocket$"):
            await loop.sock_sendall(sslsock, b"x")

    try:
        run(loop, main())
    finally:
        sslsock.close()


def test_sock_calls_on_a_closed_loop(loop, pair):
    a, _b = pair
    loop.close()
    coro = loop.sock_recv(a, 1)
    with pytest.raises(RuntimeError):
        coro.send(None)  # no data: it must register a watcher, on a closed loop
    coro.close()


# ---------------------------------------------------------------- sendfile


@pytest.fixture
def data_file():
    data = os.urandom(300_000)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        yield f, data


async def _read_exactly(loop, sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(sock, 1 << 16)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_sock_sendfile_whole_file(loop, pair, data_file):
    a, b = pair
    f, data = data_file

    async def main():
        reader = asyncio.ensure_future(_read_exactly(loop, b, len(data)))
        sent = await loop.sock_sendfile(a, f)
        return sent, await reader, f.tell()

    sent, got, pos = run(loop, main())
    assert sent == len(data)
    assert got == data
    assert pos == len(data)


def test_sock_sendfile_offset_and_count(loop, pair, data_file):
    a, b = pair
    f, data = data_file

    async def main():
        reader = asyncio.ensure_future(_read_exactly(loop, b, 1000))
        sent = await loop.sock_sendfile(a, f, 5000, 1000)
        return sent, await reader, f.tell()

    assert run(loop, main()) == (1000, data[5000:6000], 6000)


def test_sock_sendfile_past_the_end_of_the_file(loop, pair, data_file):
    # Nothing to send from an offset at or past the end. asyncio 3.14 still sets the file
    # position to the offset (its _sock_sendfile_update_filepos seeks unconditionally); earlier
    # versions leave the position where it was.
    a, _b = pair
    f, data = data_file
    f.seek(123)

    async def main():
        return await loop.sock_sendfile(a, f, len(data) + 10, fallback=False), f.tell()

    position = len(data) + 10 if sys.version_info >= (3, 14) else 123
    assert run(loop, main()) == (0, position)


def test_sock_sendfile_fallback_reads_from_offset_zero(loop, pair):
    # asyncio 3.14's read-and-send fallback seeks to the offset even when it is 0; before 3.14
    # it reads from wherever the file is positioned.
    a, b = pair
    buf = io.BytesIO(b"0123456789")
    buf.seek(4)

    async def main():
        sent = await loop.sock_sendfile(a, buf)
        return sent, await _read_exactly(loop, b, sent), buf.tell()

    if sys.version_info >= (3, 14):
        assert run(loop, main()) == (10, b"0123456789", 10)
    else:
        assert run(loop, main()) == (6, b"456789", 6)


def test_sock_sendfile_fallback_for_non_regular_files(loop, pair):
    a, b = pair
    buf = io.BytesIO(b"in memory" * 1000)

    async def main():
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, buf, fallback=False)
        reader = asyncio.ensure_future(_read_exactly(loop, b, 9000))
        sent = await loop.sock_sendfile(a, buf)
        return sent, await reader

    assert run(loop, main()) == (9000, b"in memory" * 1000)


def test_sock_sendfile_bad_arguments(loop, pair, data_file):
    a, _b = pair
    f, _ = data_file
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)

    async def main():
        with pytest.raises(ValueError, match="^only SOCK_STREAM type sockets are supported$"):
            await loop.sock_sendfile(udp, f)
        with pytest.raises(ValueError, match=r"^count must be a positive integer \(got 0\)$"):
            await loop.sock_sendfile(a, f, 0, 0)
        with pytest.raises(TypeError, match=r"^offset must be a non-negative integer"):
            await loop.sock_sendfile(a, f, "1")
        with pytest.raises(ValueError, match=r"^offset must be a non-negative integer"):
            await loop.sock_sendfile(a, f, -1)
        with tempfile.TemporaryFile("w") as text, pytest.raises(
            ValueError, match="^file should be opened in binary mode$"
        ):
            await loop.sock_sendfile(a, text)

    try:
        run(loop, main())
    finally:
        udp.close()


def test_sock_sendfile_count_beyond_ssize_t(loop, pair, data_file):
    # asyncio 3.13 caps each os.sendfile() call (gh-82500): a count past a C ssize_t sends the
    # whole file. Before 3.13 os.sendfile raises OverflowError.
    a, b = pair
    f, data = data_file

    async def main():
        reader = asyncio.ensure_future(_read_exactly(loop, b, len(data)))
        try:
            sent = await loop.sock_sendfile(a, f, 0, 2**63, fallback=False)
        except OverflowError as e:
            reader.cancel()
            return str(e)
        return sent, await reader

    got = run(loop, main())
    if sys.version_info >= (3, 13):
        assert got == (len(data), data)
    else:
        assert got == "Python int too large to convert to C ssize_t"


# ---------------------------------------------------------------- waits in a row, fd reuse


def test_many_waits_on_one_socket_then_a_plain_reader(loop, pair):
    # Consecutive waiting reads on one fd, then an ordinary add_reader on the same fd.
    a, b = pair

    async def main():
        got = []
        for i in range(50):
            waiting = asyncio.ensure_future(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            b.send(str(i).encode())
            got.append(await waiting)
        seen = []
        loop.add_reader(a, lambda: seen.append(a.recv(10)))
        b.send(b"plain")
        while not seen:
            await asyncio.sleep(0.001)
        loop.remove_reader(a)
        return got, seen

    got, seen = run(loop, main())
    assert got == [str(i).encode() for i in range(50)]
    assert seen == [b"plain"]


def test_sock_recv_survives_a_spurious_wakeup(loop, pair):
    # Another callback drains the socket in the same iteration the waiting sock_recv is woken:
    # its read would block, and it must go on waiting for the next data.
    a, b = pair
    stolen = []

    def steal():
        try:
            stolen.append(a.recv(100))
        except BlockingIOError:
            loop.call_soon(steal)

    async def main():
        waiting = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        loop.call_soon(steal)
        b.send(b"first")
        while not stolen:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert not waiting.done()
        b.send(b"second")
        return await waiting

    assert run(loop, main()) == b"second"
    assert stolen == [b"first"]


def test_closed_socket_file_kept_alive_elsewhere_does_not_spin_the_loop(loop):
    # A socket read with sock_recv, then closed while its file lives on (here a dup, in real
    # programs a forked child): its data arriving later must not wake the loop, and a new
    # socket that gets the same fd number must work normally.
    a, b = nonblocking(*socket.socketpair())
    keep = os.dup(a.fileno())
    try:
        async def main():
            b.send(b"x")
            assert await loop.sock_recv(a, 10) == b"x"
            fd = a.fileno()
            a.close()
            b.send(b"data for a file nobody watches")
            c, d = nonblocking(*socket.socketpair())
            try:
                assert c.fileno() == fd  # same number, different file
                waiting = asyncio.ensure_future(loop.sock_recv(c, 100))
                await asyncio.sleep(0.01)
                d.send(b"for c")
                assert await waiting == b"for c"
                cpu0 = time.process_time()
                await asyncio.sleep(0.3)
                return time.process_time() - cpu0
            finally:
                c.close()
                d.close()

        idle_cpu = run(loop, main())
        assert idle_cpu < 0.15, f"the loop burned {idle_cpu:.3f} s of CPU while idle"
    finally:
        os.close(keep)
        a.close()
        b.close()
