"""loop.create_unix_connection, loop.create_unix_server and loop.connect_accepted_socket on
real unix sockets in tmp_path and in the abstract namespace: echo, path-like paths, stale
socket files, every argument and bind error asyncio reports (same type, same message), and
the socket file's removal on close (asyncio 3.13's cleanup_socket).
Oracle: stock asyncio (each test runs on both loops)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import uuid

import pytest
from conftest import run
from stream_helpers import EchoProtocol, Recorder


async def unix_echo(loop, path, payload=b"hello unix"):
    transport, proto = await loop.create_unix_connection(Recorder, path)
    assert proto.events == ["made"]
    transport.write(payload)
    data = await proto.read_until(len(payload))
    transport.write_eof()
    assert await asyncio.wait_for(proto.lost, 3) is None
    assert proto.events == ["made", "data", "eof", "lost"]
    return data


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike"])
def test_echo(loop, tmp_path, kind):
    path = tmp_path / "echo.sock"
    arg = {"str": str(path), "bytes": os.fsencode(path), "pathlike": path}[kind]

    async def main():
        server = await loop.create_unix_server(EchoProtocol, arg)
        (tsock,) = server.sockets
        assert tsock.family == socket.AF_UNIX
        assert os.fsdecode(tsock.getsockname()) == str(path)
        assert await unix_echo(loop, arg) == b"hello unix"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_peername_and_sockname(loop, tmp_path):
    path = str(tmp_path / "n.sock")

    async def main():
        seen = []

        class Side(asyncio.Protocol):
            def connection_made(self, transport):
                seen.append(transport.get_extra_info("sockname"))

        server = await loop.create_unix_server(Side, path)
        transport, proto = await loop.create_unix_connection(Recorder, path)
        assert transport.get_extra_info("peername") == path
        while not seen:
            await asyncio.sleep(0.001)
        assert seen == [path]
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_abstract_namespace(loop):
    name = f"\0ferroloop-test-{uuid.uuid4().hex}"

    async def main():
        server = await loop.create_unix_server(EchoProtocol, name)
        assert server.sockets[0].getsockname() == name.encode()
        assert await unix_echo(loop, name) == b"hello unix"
        assert await unix_echo(loop, name.encode()) == b"hello unix"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_stale_socket_file_is_removed(loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()  # the file stays behind, as when a server process dies
    assert os.path.exists(path)

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        assert await unix_echo(loop, path) == b"hello unix"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_a_file_that_is_not_a_socket_is_kept(loop, tmp_path):
    path = str(tmp_path / "regular")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(OSError) as ei:
        run(loop, loop.create_unix_server(EchoProtocol, path))
    assert type(ei.value) is OSError
    assert ei.value.errno == errno.EADDRINUSE
    assert str(ei.value) == f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use"
    with open(path) as f:
        assert f.read() == "keep me"


def test_abstract_name_in_use(loop):
    name = f"\0ferroloop-test-{uuid.uuid4().hex}"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(name)
    try:
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_unix_server(EchoProtocol, name))
        assert str(ei.value) == f"[Errno {errno.EADDRINUSE}] Address {name!r} is already in use"
    finally:
        holder.close()


def test_bind_error_other_than_in_use(loop, tmp_path):
    path = str(tmp_path / "no-such-dir" / "s.sock")
    with pytest.raises(FileNotFoundError) as ei:
        run(loop, loop.create_unix_server(EchoProtocol, path))
    assert str(ei.value) == "[Errno 2] No such file or directory"


def test_socket_file_on_close(loop, tmp_path):
    # asyncio 3.13 removes the socket file when the server closes (cleanup_socket=True by
    # default); earlier versions leave it.
    path = str(tmp_path / "c.sock")

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        assert os.path.exists(path)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert os.path.exists(path) == (sys.version_info < (3, 13))


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is new in 3.13")
def test_cleanup_socket_false_keeps_the_file(loop, tmp_path):
    path = str(tmp_path / "k.sock")

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path, cleanup_socket=False)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert os.path.exists(path)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is new in 3.13")
def test_cleanup_leaves_a_replaced_file(loop, tmp_path):
    path = str(tmp_path / "r.sock")

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        os.unlink(path)
        other = socket.socket(socket.AF_UNIX)
        other.bind(path)  # someone else's socket now
        try:
            server.close()
            await server.wait_closed()
            assert os.path.exists(path)
        finally:
            other.close()

    run(loop, main())


def test_server_from_sock(loop, tmp_path):
    path = str(tmp_path / "pre.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)

    async def main():
        server = await loop.create_unix_server(EchoProtocol, sock=sock)
        assert sock.gettimeout() == 0
        assert await unix_echo(loop, path) == b"hello unix"
        server.close()
        await server.wait_closed()
        assert sock.fileno() == -1

    run(loop, main())


def test_connection_from_sock(loop, tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        server = await loop.create_unix_server(EchoProtocol, path)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)  # blocking: create_unix_connection makes it non-blocking
        transport, proto = await loop.create_unix_connection(Recorder, sock=sock)
        assert sock.gettimeout() == 0
        transport.write(b"sock")
        assert await proto.read_until(4) == b"sock"
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_connect_to_missing_path(loop, tmp_path):
    path = str(tmp_path / "missing.sock")
    with pytest.raises(FileNotFoundError) as ei:
        run(loop, loop.create_unix_connection(Recorder, path))
    assert str(ei.value) == "[Errno 2] No such file or directory"


def test_connect_refused(loop, tmp_path):
    path = str(tmp_path / "r.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)  # bound, not listening
    try:
        with pytest.raises(ConnectionRefusedError) as ei:
            run(loop, loop.create_unix_connection(Recorder, path))
        assert str(ei.value) == "[Errno 111] Connection refused"
    finally:
        s.close()


# ---------------------------------------------------------------- argument errors


def _sock(kind):
    if kind == "unix":
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if kind == "unix-dgram":
        return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "tcp":
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return None


CONNECTION_ERRORS = [
    ("server_hostname_without_ssl", {"path": "/x", "server_hostname": "h"},
     ValueError, "server_hostname is only meaningful with ssl"),
    ("ssl_without_server_hostname", {"path": "/x", "ssl": True},
     ValueError, "you have to pass server_hostname when using ssl"),
    ("handshake_timeout_without_ssl", {"path": "/x", "ssl_handshake_timeout": 1},
     ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ("shutdown_timeout_without_ssl", {"path": "/x", "ssl_shutdown_timeout": 1},
     ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ("path_and_sock", {"path": "/x", "sock": "unix"},
     ValueError, "path and sock can not be specified at the same time"),
    ("nothing", {}, ValueError, "no path and sock were specified"),
    ("tcp_sock", {"sock": "tcp"},
     ValueError, "A UNIX Domain Stream Socket was expected, got {sock!r}"),
    ("dgram_sock", {"sock": "unix-dgram"},
     ValueError, "A UNIX Domain Stream Socket was expected, got {sock!r}"),
]


@pytest.mark.parametrize(
    "kwargs,exc_type,message", [row[1:] for row in CONNECTION_ERRORS],
    ids=[row[0] for row in CONNECTION_ERRORS],
)
def test_connection_argument_errors(loop, kwargs, exc_type, message):
    kwargs = dict(kwargs)
    sock = kwargs["sock"] = _sock(kwargs.get("sock"))
    try:
        with pytest.raises(exc_type) as ei:
            run(loop, loop.create_unix_connection(asyncio.Protocol, **kwargs))
        assert type(ei.value) is exc_type
        assert str(ei.value) == message.format(sock=sock)
    finally:
        if sock is not None:
            sock.close()


SERVER_ERRORS = [
    ("ssl_true", {"path": "/x", "ssl": True},
     TypeError, "ssl argument must be an SSLContext or None"),
    ("handshake_timeout_without_ssl", {"path": "/x", "ssl_handshake_timeout": 1},
     ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ("shutdown_timeout_without_ssl", {"path": "/x", "ssl_shutdown_timeout": 1},
     ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ("path_and_sock", {"path": "/x", "sock": "unix"},
     ValueError, "path and sock can not be specified at the same time"),
    ("nothing", {}, ValueError, "path was not specified, and no sock specified"),
    ("tcp_sock", {"sock": "tcp"},
     ValueError, "A UNIX Domain Stream Socket was expected, got {sock!r}"),
    ("dgram_sock", {"sock": "unix-dgram"},
     ValueError, "A UNIX Domain Stream Socket was expected, got {sock!r}"),
]


@pytest.mark.parametrize(
    "kwargs,exc_type,message", [row[1:] for row in SERVER_ERRORS],
    ids=[row[0] for row in SERVER_ERRORS],
)
def test_server_argument_errors(loop, kwargs, exc_type, message):
    kwargs = dict(kwargs)
    sock = kwargs["sock"] = _sock(kwargs.get("sock"))
    try:
        with pytest.raises(exc_type) as ei:
            run(loop, loop.create_unix_server(asyncio.Protocol, **kwargs))
        assert type(ei.value) is exc_type
        assert str(ei.value) == message.format(sock=sock)
    finally:
        if sock is not None:
            sock.close()


# ---------------------------------------------------------------- connect_accepted_socket


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_connect_accepted_socket(loop, tmp_path, family):
    async def main():
        if family == "unix":
            lsock = socket.socket(socket.AF_UNIX)
            lsock.bind(str(tmp_path / "a.sock"))
        else:
            lsock = socket.socket()
            lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)
        with lsock:
            client = socket.socket(lsock.family)
            client.setblocking(False)
            connecting = asyncio.ensure_future(loop.sock_connect(client, lsock.getsockname()))
            conn, _ = await loop.sock_accept(lsock)
            await connecting
            transport, proto = await loop.connect_accepted_socket(EchoProtocol, conn)
            assert isinstance(proto, EchoProtocol) and proto.transport is transport
            await loop.sock_sendall(client, b"accepted")
            got = b""
            while len(got) < 8:
                got += await loop.sock_recv(client, 100)
            assert got == b"accepted"
            client.close()
            assert await asyncio.wait_for(proto.lost, 3) is None  # EOF from the client

    run(loop, main())


def test_connect_accepted_socket_errors(loop):
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError) as ei:
            run(loop, loop.connect_accepted_socket(asyncio.Protocol, dgram))
        assert str(ei.value) == f"A Stream Socket was expected, got {dgram!r}"
        with pytest.raises(ValueError) as ei:
            run(loop, loop.connect_accepted_socket(asyncio.Protocol, a, ssl_handshake_timeout=1))
        assert str(ei.value) == "ssl_handshake_timeout is only meaningful with ssl"
        with pytest.raises(ValueError) as ei:
            run(loop, loop.connect_accepted_socket(asyncio.Protocol, a, ssl_shutdown_timeout=1))
        assert str(ei.value) == "ssl_shutdown_timeout is only meaningful with ssl"
    finally:
        for s in (dgram, a, b):
            s.close()
