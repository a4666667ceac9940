"""asyncio streams (open_connection, start_server, open_unix_connection, start_unix_server,
StreamWriter.drain/close/wait_closed) running unmodified on the loop's transports and
servers, over TCP on 127.0.0.1/::1 and unix sockets in tmp_path; and a stress test of many
concurrent connections echoing messages of random sizes, checked by checksum.
Oracle: stock asyncio (each test runs on both loops)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
import time

import pytest
from conftest import run
from stream_helpers import wait_closed_waits


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_open_connection_start_server(loop, host):
    async def main():
        server = await asyncio.start_server(echo_handler, host, 0)
        addr = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(host, addr[1])
        assert writer.get_extra_info("peername")[:2] == addr[:2]
        writer.write(b"line one\nline two\n")
        await writer.drain()
        assert await reader.readline() == b"line one\n"
        assert await reader.readexactly(9) == b"line two\n"
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.read() == b""
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        assert writer.is_closing()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_unix_streams(loop, tmp_path):
    path = str(tmp_path / "st.sock")

    async def main():
        server = await asyncio.start_unix_server(echo_handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"over unix\n")
        assert await reader.readuntil(b"\n") == b"over unix\n"
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_drain_waits_for_a_slow_reader(loop):
    # The writer's buffer passes the high-water mark: drain() blocks until the peer reads.
    async def main():
        started = asyncio.Event()
        release = asyncio.Event()
        finished = asyncio.Event()
        received = bytearray()

        async def slow(reader, writer):
            started.set()
            await release.wait()
            while data := await reader.read(1 << 20):
                received.extend(data)
            writer.close()
            await writer.wait_closed()
            finished.set()

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        await started.wait()
        payload = random.randbytes(8 * 1024 * 1024)
        writer.write(payload)
        assert writer.transport.get_write_buffer_size() > 0
        drain = asyncio.ensure_future(writer.drain())
        await asyncio.sleep(0.05)
        assert not drain.done()  # paused: the server is not reading
        release.set()
        await asyncio.wait_for(drain, 5)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(finished.wait(), 5)
        server.close()
        await server.wait_closed()
        assert bytes(received) == payload

    run(loop, main(), timeout=10)


def test_client_connected_cb_coroutine_and_function(loop):
    async def main():
        seen = []

        def plain(reader, writer):  # a plain function works too
            seen.append(writer.get_extra_info("peername"))
            writer.close()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        assert await reader.read() == b""
        assert seen == [writer.get_extra_info("sockname")]
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_server_wait_closed_waits_for_stream_handlers(loop, loop_factory):
    # A handler still talking to its client keeps wait_closed (3.12.1+ semantics; ferroloop
    # on every version) from returning until the connection is gone.
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        assert waiter.done() is not wait_closed_waits(loop_factory)
        writer.write(b"still echoing")
        assert await reader.readexactly(13) == b"still echoing"
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(waiter, 3)

    run(loop, main())


def test_async_with_start_server_and_serve_forever(loop):
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0, start_serving=False)
        async with server:
            task = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0)  # serve_forever starts serving
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"forever")
            assert await reader.readexactly(7) == b"forever"
            writer.close()
            await writer.wait_closed()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not server.is_serving()

    run(loop, main())


# ---------------------------------------------------------------- stress


async def _framed_echo(reader, writer):
    """Reads length-prefixed frames and sends each back with its SHA-256."""
    try:
        while True:
            try:
                (size,) = struct.unpack("!I", await reader.readexactly(4))
            except asyncio.IncompleteReadError:
                break
            body = await reader.readexactly(size)
            writer.write(struct.pack("!I", size) + hashlib.sha256(body).digest() + body)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_many_concurrent_connections_echo_with_checksums(loop, tmp_path, transport):
    n_clients, rounds = 100, 20
    seed = random.randrange(1 << 30)

    async def main():
        if transport == "tcp":
            server = await asyncio.start_server(_framed_echo, "127.0.0.1", 0)
            addr = server.sockets[0].getsockname()

            def open_conn():
                return asyncio.open_connection(*addr)
        else:
            path = str(tmp_path / "stress.sock")
            server = await asyncio.start_unix_server(_framed_echo, path)

            def open_conn():
                return asyncio.open_unix_connection(path)

        async def client(i):
            rng = random.Random(seed * 1000 + i)
            reader_writer = await open_conn()
            return await _client_on(reader_writer, rng, rounds)

        try:
            totals = await asyncio.gather(*(client(i) for i in range(n_clients)))
        except AssertionError as exc:
            raise AssertionError(f"echo mismatch (random seed {seed})") from exc
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        return sum(totals)

    t0 = time.monotonic()
    total = run(loop, main(), timeout=20)
    elapsed = time.monotonic() - t0
    assert total > 0
    assert elapsed < 10, f"{elapsed:.2f}s for {total} bytes each way"  # about 0.3 s here


async def _client_on(reader_writer, rng: random.Random, rounds: int) -> int:
    reader, writer = reader_writer
    total = 0
    try:
        for _ in range(rounds):
            body = rng.randbytes(rng.choice((0, 1, rng.randrange(2, 200_000))))
            writer.write(struct.pack("!I", len(body)) + body)
            await writer.drain()
            (size,) = struct.unpack("!I", await reader.readexactly(4))
            digest = await reader.readexactly(32)
            echoed = await reader.readexactly(size)
            assert size == len(body)
            assert digest == hashlib.sha256(body).digest()
            assert echoed == body
            total += size
        writer.write_eof()
        assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
    return total
