"""loop.create_server and the Server object on real TCP sockets (127.0.0.1 and ::1):
binding (host lists, duplicates, IPv6-only sockets, reuse_address/reuse_port), every argument
and bind error asyncio reports, and the server's life: start_serving, is_serving, sockets,
close, wait_closed, serve_forever, async with, close_clients, abort_clients, and the accept
path under a connection burst and when accept() runs out of file descriptors.
Oracle: stock asyncio (each test runs on both loops). Where asyncio changed between versions
(wait_closed waits for connections from 3.12.1; close_clients/abort_clients from 3.13), each
loop is checked against what it promises on this interpreter."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import ssl
import sys

import pytest
from conftest import run, until
from stream_helpers import (
    EchoProtocol,
    Recorder,
    bind_error_text,
    resolve_to,
    tcp_info,
    wait_closed_waits,
)


async def connect(loop, addr):
    transport, proto = await loop.create_connection(Recorder, *addr[:2])
    return transport, proto


async def echo_once(loop, addr, payload=b"ping"):
    transport, proto = await connect(loop, addr)
    transport.write(payload)
    data = await proto.read_until(len(payload))
    transport.close()
    await proto.lost
    return data


class ServerSide(asyncio.Protocol):
    """Server-side protocol that lets the test see its connections."""

    instances: list[ServerSide]

    def __init__(self):
        self.made = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        ServerSide.instances.append(self)

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.fixture
def server_side():
    ServerSide.instances = []
    yield ServerSide
    ServerSide.instances = []


# ---------------------------------------------------------------- the server object


def test_server_object(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert server.get_loop() is loop
        assert server.is_serving()
        (tsock,) = server.sockets
        assert isinstance(tsock, asyncio.trsock.TransportSocket)
        assert tsock.family == socket.AF_INET and tsock.type == socket.SOCK_STREAM
        assert tsock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0  # POSIX default
        assert tsock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert repr(server) == f"<Server sockets={server.sockets!r}>"
        assert await echo_once(loop, tsock.getsockname()) == b"ping"
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        assert repr(server) == "<Server sockets=()>"
        await server.wait_closed()
        server.close()  # twice is fine

    run(loop, main())


def test_reuse_address_false(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, reuse_address=False)
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_backlog_is_passed_to_listen(loop):
    # The kernel does not say what listen() got; a server with backlog 1 still serves.
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=1)
        assert await echo_once(loop, server.sockets[0].getsockname()) == b"ping"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_ipv6_socket_is_ipv6_only(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "::1", 0)
        (tsock,) = server.sockets
        assert tsock.family == socket.AF_INET6
        assert tsock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert await echo_once(loop, tsock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_host_list_binds_every_address(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, ["127.0.0.1", "::1"], 0)
        families = sorted(s.family for s in server.sockets)
        assert families == [socket.AF_INET, socket.AF_INET6]
        for tsock in server.sockets:
            assert await echo_once(loop, tsock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_host_list_binds_each_address_once(loop):
    async def main():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = await loop.create_server(EchoProtocol, ["127.0.0.1", "127.0.0.1"], port)
        assert [s.getsockname() for s in server.sockets] == [("127.0.0.1", port)]
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("host", [None, ""])
def test_host_none_or_empty_binds_every_passive_address(loop, host):
    # host None or '' asks getaddrinfo(None, port, flags=AI_PASSIVE) for the wildcard
    # addresses and binds each, one socket per family (dual stack). The answer is replaced
    # with loopback addresses, so the test never listens on all interfaces.
    calls = []

    async def main():
        resolve_to(loop, [tcp_info(("127.0.0.1", 0)), tcp_info(("::1", 0, 0, 0))], calls)
        server = await loop.create_server(EchoProtocol, host, 0)
        socks = sorted(server.sockets, key=lambda s: s.family)
        assert [s.family for s in socks] == [socket.AF_INET, socket.AF_INET6]
        assert socks[1].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        for tsock in socks:
            assert await echo_once(loop, tsock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert calls == [(None, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)]


def test_family_and_flags_are_passed_to_getaddrinfo(loop):
    calls = []

    async def main():
        resolve_to(loop, [tcp_info(("127.0.0.1", 0))], calls)
        server = await loop.create_server(EchoProtocol, "srv.invalid", 0,
                                          family=socket.AF_INET, flags=0)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert calls == [("srv.invalid", 0, socket.AF_INET, socket.SOCK_STREAM, 0, 0)]


def test_reuse_port(loop):
    async def main():
        first = await loop.create_server(EchoProtocol, "127.0.0.1", 0, reuse_port=True)
        addr = first.sockets[0].getsockname()
        assert first.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        second = await loop.create_server(EchoProtocol, *addr, reuse_port=True)
        assert second.sockets[0].getsockname() == addr
        assert await echo_once(loop, addr) == b"ping"
        for s in (first, second):
            s.close()
            await s.wait_closed()

    run(loop, main())


def test_sock_argument(loop):
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(EchoProtocol, sock=sock)
        assert server.sockets[0].fileno() == sock.fileno()
        assert sock.gettimeout() == 0  # made non-blocking
        assert await echo_once(loop, sock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()
        assert sock.fileno() == -1  # close() closes the listening socket

    run(loop, main())


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX])
def test_accepted_socket_is_a_nonblocking_socket_of_the_listeners_kind(loop, family, tmp_path):
    """What the accept path builds from the raw fd: a socket.socket of the listener's family,
    type and protocol, non-blocking, with TCP_NODELAY on TCP (as asyncio sets it)."""
    seen = []

    class Peek(asyncio.Protocol):
        def connection_made(self, transport):
            sock = transport.get_extra_info("socket")
            nodelay = None
            if family != socket.AF_UNIX:
                nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen.append((sock.family, sock.type, sock.proto, sock.gettimeout(), nodelay,
                         os.get_blocking(sock.fileno())))
            transport.close()

    async def main():
        if family == socket.AF_UNIX:
            path = str(tmp_path / "s.sock")
            server = await loop.create_unix_server(Peek, path)
            reader, writer = await asyncio.open_unix_connection(path)
        else:
            host = "127.0.0.1" if family == socket.AF_INET else "::1"
            server = await loop.create_server(Peek, host, 0, family=family)
            reader, writer = await asyncio.open_connection(host, server.sockets[0].getsockname()[1])
        assert await reader.read() == b""  # the server side closed after looking
        writer.close()
        server.close()
        await server.wait_closed()
        return server

    run(loop, main())
    assert len(seen) == 1
    sock_family, sock_type, proto, timeout, nodelay, blocking = seen[0]
    # Enums, as socket.accept() makes them.
    assert type(sock_family) is socket.AddressFamily and sock_family == family
    assert type(sock_type) is socket.SocketKind and sock_type == socket.SOCK_STREAM
    assert proto == (0 if family == socket.AF_UNIX else socket.IPPROTO_TCP)
    assert timeout == 0.0 and blocking is False
    assert nodelay == (None if family == socket.AF_UNIX else 1)


def test_listening_socket_subclass_accepts_through_its_own_accept(loop):
    """A socket.socket subclass given as sock= keeps its accept() (asyncio calls it)."""
    calls = []

    class CountingSocket(socket.socket):
        def accept(self):
            conn, addr = super().accept()
            calls.append(addr)
            return conn, addr

    async def main():
        sock = CountingSocket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(EchoProtocol, sock=sock)
        assert await echo_once(loop, sock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert len(calls) == 1


def test_fd_of_a_finished_connection_can_be_watched_again(loop):
    """A transport owns its fd number only while its connection lasts: once connection_lost
    ran, a new socket that gets the same number can be given to add_reader."""
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        transport, proto = await connect(loop, server.sockets[0].getsockname())
        fd = transport.get_extra_info("socket").fileno()
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(fd, print)
        transport.close()
        await proto.lost
        # The lowest free number is the one just released (nothing else opens fds here).
        a, b = socket.socketpair()
        reused = a if a.fileno() == fd else b if b.fileno() == fd else None
        try:
            assert reused is not None, "the fd number was not reused by the next socket"
            loop.add_reader(reused, print)
            assert loop.remove_reader(reused)
        finally:
            a.close()
            b.close()
        server.close()
        await server.wait_closed()

    run(loop, main())


# ---------------------------------------------------------------- errors


def _ssl_socket():
    ctx = ssl.create_default_context()
    return ctx.wrap_socket(socket.socket(), server_hostname="example.org",
                           do_handshake_on_connect=False)


SERVER_ARGUMENT_ERRORS = [
    ("ssl_true", {"host": "127.0.0.1", "port": 0, "ssl": True},
     TypeError, "ssl argument must be an SSLContext or None"),
    ("ssl_false", {"host": "127.0.0.1", "port": 0, "ssl": False},
     TypeError, "ssl argument must be an SSLContext or None"),
    ("handshake_timeout_without_ssl", {"host": "127.0.0.1", "port": 0, "ssl_handshake_timeout": 1},
     ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ("shutdown_timeout_without_ssl", {"host": "127.0.0.1", "port": 0, "ssl_shutdown_timeout": 1},
     ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ("ssl_socket", {"sock": "ssl"}, TypeError, "Socket cannot be of type SSLSocket"),
    ("host_and_sock", {"host": "127.0.0.1", "sock": "stream"},
     ValueError, "host/port and sock can not be specified at the same time"),
    ("nothing", {}, ValueError, "Neither host/port nor sock were specified"),
    ("datagram_sock", {"sock": "dgram"}, ValueError, "A Stream Socket was expected, got {sock!r}"),
]


@pytest.mark.parametrize(
    "kwargs,exc_type,message", [row[1:] for row in SERVER_ARGUMENT_ERRORS],
    ids=[row[0] for row in SERVER_ARGUMENT_ERRORS],
)
def test_argument_errors(loop, kwargs, exc_type, message):
    kwargs = dict(kwargs)
    sock = None
    if kwargs.get("sock") == "stream":
        sock = kwargs["sock"] = socket.socket()
    elif kwargs.get("sock") == "dgram":
        sock = kwargs["sock"] = socket.socket(type=socket.SOCK_DGRAM)
    elif kwargs.get("sock") == "ssl":
        sock = kwargs["sock"] = _ssl_socket()
    try:
        with pytest.raises(exc_type) as ei:
            run(loop, loop.create_server(asyncio.Protocol, **kwargs))
        assert type(ei.value) is exc_type
        assert str(ei.value) == message.format(sock=sock)
    finally:
        if sock is not None:
            sock.close()


def test_bind_error_names_the_address(loop):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        addr = holder.getsockname()
        with socket.socket() as t:  # the error bind() gives, for the expected text
            try:
                t.bind(addr)
            except OSError as err:
                reference = err
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_server(EchoProtocol, *addr, reuse_address=False))
    assert type(ei.value) is OSError
    assert ei.value.errno == errno.EADDRINUSE
    assert str(ei.value) == f"[Errno {errno.EADDRINUSE}] " + bind_error_text(addr, reference)


def ipv6_holder_with_free_ipv4_twin() -> socket.socket:
    """A listening socket on ::1:P where 127.0.0.1:P is free to bind (no SO_REUSEADDR).

    Not every port the kernel hands out on ::1 is free on 127.0.0.1: after long runs, tens of
    thousands of connections may sit in TIME_WAIT there."""
    for _ in range(50):
        holder = socket.socket(socket.AF_INET6)
        holder.bind(("::1", 0))
        port = holder.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                holder.close()
                continue
        holder.listen()
        return holder
    raise AssertionError("no port free on both ::1 and 127.0.0.1 in 50 tries")


def test_bind_error_closes_the_sockets_already_bound(loop):
    # ::1:P is taken; 127.0.0.1:P binds first (listed first), then must be closed again.
    with ipv6_holder_with_free_ipv4_twin() as holder:
        port = holder.getsockname()[1]
        resolve_to(loop, [tcp_info(("127.0.0.1", port)), tcp_info(("::1", port, 0, 0))])
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_server(EchoProtocol, "both.invalid", port,
                                         reuse_address=False))
        assert ei.value.errno == errno.EADDRINUSE
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # free again: the server's socket was closed


def test_getaddrinfo_empty(loop):
    resolve_to(loop, [])
    with pytest.raises(OSError) as ei:
        run(loop, loop.create_server(EchoProtocol, "nothing.invalid", 0))
    assert type(ei.value) is OSError
    assert str(ei.value) == "getaddrinfo('nothing.invalid') returned empty list"


# ---------------------------------------------------------------- serving


def test_start_serving_false(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        addr = server.sockets[0].getsockname()
        with pytest.raises(ConnectionRefusedError):  # not even listening yet
            await loop.create_connection(asyncio.Protocol, *addr)
        await server.start_serving()
        assert server.is_serving()
        assert await echo_once(loop, addr) == b"ping"
        await server.start_serving()  # again: no effect
        assert await echo_once(loop, addr) == b"ping"
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_connection_made_before_data(loop):
    events = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            events.append(("made", transport.get_extra_info("peername")))

        def data_received(self, data):
            events.append(("data", data))

    async def main():
        server = await loop.create_server(Server, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        with socket.create_connection(addr) as c:  # data is already there at accept time
            c.sendall(b"early")
            await until(lambda: len(events) >= 2)
            assert events == [("made", c.getsockname()), ("data", b"early")]
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_close_keeps_connections_open(loop, server_side):
    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        transport, proto = await connect(loop, addr)
        await server_side.instances[0].made
        server.close()
        transport.write(b"still there")
        assert await proto.read_until(11) == b"still there"
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *addr)
        transport.close()
        await proto.lost
        await server.wait_closed()

    run(loop, main())


def test_wait_closed_after_close_waits_for_connections(loop, loop_factory, server_side):
    # 3.12.1+ semantics (ferroloop on every version): wait_closed returns once the server is
    # closed and all its connections are gone. asyncio 3.11 returns at once.
    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        transport, proto = await connect(loop, server.sockets[0].getsockname())
        await server_side.instances[0].made
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        if not wait_closed_waits(loop_factory):
            assert waiter.done()
        else:
            assert not waiter.done()
            transport.close()  # the client goes; the server side sees EOF and closes
            await asyncio.wait_for(waiter, 3)
            assert server_side.instances[0].lost.done()
        transport.close()
        await proto.lost
        await server.wait_closed()  # once over, returns at once

    run(loop, main())


def test_wait_closed_before_close_waits_for_close_and_connections(loop, server_side):
    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        transport, _proto = await connect(loop, server.sockets[0].getsockname())
        await server_side.instances[0].made
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()  # not closed
        server.close()
        await asyncio.sleep(0.02)
        assert not waiter.done()  # a connection is still open
        transport.close()
        await asyncio.wait_for(waiter, 3)

    run(loop, main())


def test_wait_closed_without_connections(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()
        server.close()
        await asyncio.wait_for(waiter, 1)
        await server.wait_closed()

    run(loop, main())


def test_serve_forever_is_cancelled_by_close(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, start_serving=False)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        assert await echo_once(loop, server.sockets[0].getsockname()) == b"ping"
        with pytest.raises(RuntimeError) as ei:
            await server.serve_forever()
        assert str(ei.value) == f"server {server!r} is already being awaited on serve_forever()"
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(RuntimeError) as ei:
            await server.serve_forever()
        assert str(ei.value) == "server <Server sockets=()> is closed"

    run(loop, main())


def test_cancelling_serve_forever_closes_the_server(loop):
    async def main():
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()

    run(loop, main())


def test_cancelling_serve_forever_with_a_connection_open(loop, loop_factory, server_side):
    # asyncio 3.14's serve_forever, when cancelled, closes the server's connections before it
    # waits for them (a client that never hangs up cannot keep a Ctrl+C'd server alive);
    # before, it waits until they end on their own (where wait_closed waits for connections).
    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        task = asyncio.ensure_future(server.serve_forever())
        client, _ = await connect(loop, server.sockets[0].getsockname())
        await until(lambda: len(server_side.instances) == 1)
        await server_side.instances[0].made
        task.cancel()
        try:
            async with asyncio.timeout(1):
                await asyncio.shield(task)
        except TimeoutError:
            outcome = "still waiting for the connection"
        except asyncio.CancelledError:
            outcome = "cancelled"
        server_closed_it = server_side.instances[0].lost.done()
        client.close()
        if not task.done():
            with pytest.raises(asyncio.CancelledError):
                await task
        return outcome, server_closed_it

    if sys.version_info >= (3, 14):
        expected = ("cancelled", True)
    elif wait_closed_waits(loop_factory):
        expected = ("still waiting for the connection", False)
    else:  # asyncio before 3.12.1: wait_closed returns at once when the server is closed
        expected = ("cancelled", False)
    assert run(loop, main()) == expected


def test_async_with_closes_the_server(loop):
    async def main():
        async with await loop.create_server(EchoProtocol, "127.0.0.1", 0) as server:
            assert server.is_serving()
            assert await echo_once(loop, server.sockets[0].getsockname()) == b"ping"
        assert not server.is_serving()
        assert server.sockets == ()

    run(loop, main())


def _skip_without_close_clients(loop_factory):
    if not loop_factory.is_ferroloop and sys.version_info < (3, 13):
        pytest.skip("asyncio's Server has close_clients/abort_clients from 3.13")


def test_close_clients(loop, loop_factory, server_side):
    _skip_without_close_clients(loop_factory)

    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        clients = [await connect(loop, addr) for _ in range(3)]
        await until(lambda: len(server_side.instances) == 3)
        await asyncio.gather(*(p.made for p in server_side.instances))
        server.close()
        server.close_clients()
        for _, proto in clients:
            assert await asyncio.wait_for(proto.lost, 3) is None  # orderly EOF from the server
            assert "eof" in proto.events
        await asyncio.wait_for(server.wait_closed(), 3)
        assert all(p.lost.result() is None for p in server_side.instances)

    run(loop, main())


def test_abort_clients_drops_buffered_data(loop, loop_factory, server_side):
    _skip_without_close_clients(loop_factory)

    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        transport, proto = await connect(loop, addr)
        transport.pause_reading()  # the client reads nothing: the server's writes pile up
        await until(lambda: len(server_side.instances) == 1)
        side = server_side.instances[0]
        await side.made
        side.transport.write(b"x" * (16 * 1024 * 1024))
        assert side.transport.get_write_buffer_size() > 0
        server.close()
        server.close_clients()  # closing, but still flushing to a client that does not read
        await asyncio.sleep(0.05)
        assert not side.lost.done()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        server.abort_clients()
        await asyncio.wait_for(waiter, 3)
        assert side.lost.done()
        transport.abort()
        await proto.lost

    run(loop, main())


# ---------------------------------------------------------------- the accept path


def test_connection_burst(loop, server_side):
    # A burst of connections pending at once: each readiness report of the listening socket
    # accepts a batch of them.
    n = 80

    async def main():
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        clients = []
        for _ in range(n):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(addr)
            except BlockingIOError:
                pass
            clients.append(c)
        await until(lambda: len(server_side.instances) == n, timeout=5)
        peers = {p.transport.get_extra_info("peername") for p in server_side.instances}
        assert peers == {c.getsockname() for c in clients}
        for c in clients:
            c.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)

    run(loop, main(), timeout=10)


@pytest.mark.timeout(30)
def test_accept_out_of_file_descriptors_pauses_and_resumes(loop, server_side):
    # accept() failing with EMFILE goes to the exception handler, accepting pauses for a
    # second (Linux would keep reporting the socket readable), then resumes.
    contexts = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def handler(loop_, context):
        contexts.append(context)

    async def main():
        loop.set_exception_handler(handler)
        server = await loop.create_server(server_side, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        await asyncio.sleep(0)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        c = socket.socket()
        c.setblocking(False)
        try:
            # Only descriptors below the lowest free one may be used from now on: the
            # client's socket must exist first.
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))
                try:
                    c.connect(addr)
                except BlockingIOError:
                    pass
                await until(lambda: contexts, timeout=5)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            t0 = loop.time()
            assert server_side.instances == []
            await until(lambda: server_side.instances, timeout=5)
            assert loop.time() - t0 >= 0.5  # resumed by the retry timer, about 1 s later
            # (asyncio retries accept() up to `backlog` times in the failing callback and
            # reports each failure; ferroloop stops at the first.)
            for context in contexts:
                assert context["message"] == "socket.accept() out of system resource"
                assert isinstance(context["exception"], OSError)
                assert context["exception"].errno == errno.EMFILE
                assert isinstance(context["socket"], asyncio.trsock.TransportSocket)
        finally:
            c.close()
            server.close()
            await server.wait_closed()

    run(loop, main(), timeout=20)


def test_protocol_factory_error_drops_the_connection(loop, loop_factory):
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no protocol for you")
        return EchoProtocol()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        transport, proto = await connect(loop, addr)
        await until(lambda: calls)
        assert await echo_once(loop, addr) == b"ping"  # the server goes on
        if loop_factory.is_ferroloop:
            # ferroloop closes the dropped connection at once; asyncio leaves the socket to
            # the garbage collector (and keeps it in debug mode, where the error is logged).
            await asyncio.wait_for(proto.lost, 3)
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())
