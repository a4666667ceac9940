"""loop.create_connection on real TCP sockets (127.0.0.1 and ::1): echo through protocols,
every argument error and connect failure asyncio reports (same type, same message), local
addresses, Happy Eyeballs and interleaving by family. Oracle: stock asyncio (each test runs on
both loops); host names are made to resolve to chosen loopback addresses by replacing
``loop.getaddrinfo`` on the instance, which both loops call."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import socket
import ssl
import sys
import time

import pytest
from conftest import run
from stream_helpers import (
    EchoProtocol,
    Recorder,
    bind_error_text,
    blackhole,
    open_fds,
    refusing,
    resolve_to,
    tcp_info,
)

FAMILIES = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


async def start_echo(loop, host="127.0.0.1"):
    server = await loop.create_server(EchoProtocol, host, 0)
    return server, server.sockets[0].getsockname()


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    "method",
    ["create_connection", "create_server", "create_unix_connection", "create_unix_server",
     "connect_accepted_socket"],
)
def test_signature_is_asyncios(loop, method):
    # Same parameters, kinds and defaults as this interpreter's asyncio (all_errors from
    # 3.12, keep_alive and cleanup_socket from 3.13).
    reference = asyncio.new_event_loop()
    try:
        expected = inspect.signature(getattr(reference, method)).parameters
    finally:
        reference.close()
    actual = inspect.signature(getattr(loop, method)).parameters
    assert [(p.name, p.kind, p.default) for p in actual.values()] == [
        (p.name, p.kind, p.default) for p in expected.values()
    ]


# ---------------------------------------------------------------- connecting and echoing


@pytest.mark.parametrize("family", list(FAMILIES))
def test_echo_through_protocols(loop, family):
    _, host = FAMILIES[family]

    async def main():
        server, addr = await start_echo(loop, host)
        transport, proto = await loop.create_connection(Recorder, host, addr[1])
        assert isinstance(transport, asyncio.Transport)
        assert proto.transport is transport
        assert proto.events == ["made"]  # connection_made ran before create_connection returned
        assert transport.get_extra_info("peername")[:2] == addr[:2]
        assert transport.get_extra_info("sockname")[0] == host
        assert isinstance(transport.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        transport.write(b"hello ")
        transport.writelines([b"wor", b"ld"])
        assert await proto.read_until(11) == b"hello world"
        transport.write_eof()  # the echo server closes on EOF
        assert await asyncio.wait_for(proto.lost, 3) is None
        assert proto.events == ["made", "data", "eof", "lost"]
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_write_outside_the_running_loop_is_sent(loop):
    # A write made while the loop is not running is sent even if the loop then only waits on
    # a future (no callback is ready): ferroloop, which sends a running loop's writes after
    # each batch of callbacks, sends these at once, as asyncio's write() does.
    class Waiter(asyncio.Protocol):
        def __init__(self):
            self.answer = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if not self.answer.done():
                self.answer.set_result(data)

    server, addr = run(loop, start_echo(loop))
    transport, proto = run(loop, loop.create_connection(Waiter, *addr[:2]))
    transport.write(b"ping")
    # Wait on the bare future (wait_for would add a task, whose step ends a batch).
    guard = loop.call_later(5, lambda: proto.answer.done() or proto.answer.set_exception(
        TimeoutError("the write made outside the loop was not sent")))
    assert loop.run_until_complete(proto.answer) == b"ping"
    guard.cancel()
    transport.close()
    server.close()
    run(loop, server.wait_closed())


def test_host_name_is_resolved(loop):
    calls = []

    async def main():
        server, (_, port) = await start_echo(loop)
        resolve_to(loop, [tcp_info(("127.0.0.1", port))], calls)
        transport, proto = await loop.create_connection(
            Recorder, "echo.invalid", port, family=socket.AF_INET, flags=socket.AI_CANONNAME
        )
        transport.write(b"x")
        assert await proto.read_until(1) == b"x"
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert calls == [("echo.invalid", calls[0][1], socket.AF_INET, socket.SOCK_STREAM, 0,
                      socket.AI_CANONNAME)]


def test_port_only_resolves_host_none(loop):
    # host None with a port: getaddrinfo(None, port), i.e. the loopback address.
    async def main():
        server, (_, port) = await start_echo(loop)
        transport, proto = await loop.create_connection(
            Recorder, None, port, family=socket.AF_INET
        )
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_connect_with_sock(loop):
    async def main():
        server, addr = await start_echo(loop)
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, addr)
        transport, proto = await loop.create_connection(Recorder, sock=sock)
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        transport.write(b"via sock")
        assert await proto.read_until(8) == b"via sock"
        transport.close()
        await proto.lost
        assert sock.fileno() == -1  # the transport owned it
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_connect_with_unix_stream_sock(loop, tmp_path):
    # create_connection takes AF_UNIX stream sockets too (asyncio keeps this for
    # backwards compatibility).
    async def main():
        path = str(tmp_path / "s")
        server = await loop.create_unix_server(EchoProtocol, path)
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
        transport, proto = await loop.create_connection(Recorder, sock=sock)
        transport.write(b"unix")
        assert await proto.read_until(4) == b"unix"
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_local_addr(loop):
    async def main():
        server, (_, port) = await start_echo(loop)
        with socket.socket() as probe:  # a free local port to bind the client to
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()
        transport, proto = await loop.create_connection(
            Recorder, "127.0.0.1", port, local_addr=local
        )
        assert transport.get_extra_info("sockname") == local
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_local_addr_picks_the_family_of_the_remote(loop):
    # local_addr resolves to several families; each attempt binds the one of its family.
    async def main():
        server, addr = await start_echo(loop, "::1")
        port = addr[1]
        resolve_to(loop, [tcp_info(("127.0.0.1", 0)), tcp_info(("::1", 0, 0, 0))])
        transport, proto = await loop.create_connection(
            Recorder, "::1", port, local_addr=("local.invalid", 0)
        )
        assert transport.get_extra_info("sockname")[0] == "::1"
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_protocol_factory_error_propagates(loop):
    class Boom(Exception):
        pass

    def factory():
        raise Boom

    async def main():
        server, (_, port) = await start_echo(loop)
        with pytest.raises(Boom):
            await loop.create_connection(factory, "127.0.0.1", port)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_cancelled_while_connecting_closes_the_socket(loop):
    async def main():
        with blackhole() as addr:
            before = open_fds()
            task = asyncio.ensure_future(loop.create_connection(Recorder, *addr))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert open_fds() <= before

    run(loop, main())


# ---------------------------------------------------------------- argument errors


def _ssl_socket():
    ctx = ssl.create_default_context()
    return ctx.wrap_socket(socket.socket(), server_hostname="example.org",
                           do_handshake_on_connect=False)


ARGUMENT_ERRORS = [
    ("server_hostname_without_ssl", {"host": "127.0.0.1", "port": 1, "server_hostname": "x"},
     ValueError, "server_hostname is only meaningful with ssl"),
    ("ssl_without_host", {"ssl": True, "sock": "stream"},
     ValueError, "You must set server_hostname when using ssl without a host"),
    ("handshake_timeout_without_ssl", {"host": "127.0.0.1", "port": 1, "ssl_handshake_timeout": 1},
     ValueError, "ssl_handshake_timeout is only meaningful with ssl"),
    ("shutdown_timeout_without_ssl", {"host": "127.0.0.1", "port": 1, "ssl_shutdown_timeout": 1},
     ValueError, "ssl_shutdown_timeout is only meaningful with ssl"),
    ("ssl_socket", {"sock": "ssl"}, TypeError, "Socket cannot be of type SSLSocket"),
    ("host_and_sock", {"host": "127.0.0.1", "port": 1, "sock": "stream"},
     ValueError, "host/port and sock can not be specified at the same time"),
    ("port_and_sock", {"port": 1, "sock": "stream"},
     ValueError, "host/port and sock can not be specified at the same time"),
    ("nothing", {}, ValueError, "host and port was not specified and no sock specified"),
    ("datagram_sock", {"sock": "dgram"}, ValueError, "A Stream Socket was expected, got {sock!r}"),
]


@pytest.mark.parametrize(
    "kwargs,exc_type,message", [row[1:] for row in ARGUMENT_ERRORS],
    ids=[row[0] for row in ARGUMENT_ERRORS],
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
            run(loop, loop.create_connection(asyncio.Protocol, **kwargs))
        assert str(ei.value) == message.format(sock=sock)
        assert type(ei.value) is exc_type
        if sock is not None:
            assert sock.fileno() != -1  # a socket passed in is not closed on error
    finally:
        if sock is not None:
            sock.close()


def test_getaddrinfo_empty(loop):
    resolve_to(loop, [])
    with pytest.raises(OSError) as ei:
        run(loop, loop.create_connection(asyncio.Protocol, "nothing.invalid", 80))
    assert type(ei.value) is OSError
    assert str(ei.value) == "getaddrinfo() returned empty list"


def test_getaddrinfo_empty_for_local_addr(loop):
    async def fake_getaddrinfo(host, port, **kwargs):
        return [] if host == "local.invalid" else [tcp_info(("127.0.0.1", 9))]

    loop.getaddrinfo = fake_getaddrinfo
    with pytest.raises(OSError) as ei:
        run(loop, loop.create_connection(asyncio.Protocol, "127.0.0.1", 9,
                                         local_addr=("local.invalid", 0)))
    assert type(ei.value) is OSError
    assert str(ei.value) == "getaddrinfo() returned empty list"


def test_getaddrinfo_error_propagates(loop):
    async def fake_getaddrinfo(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    loop.getaddrinfo = fake_getaddrinfo
    with pytest.raises(socket.gaierror) as ei:
        run(loop, loop.create_connection(asyncio.Protocol, "nothing.invalid", 80))
    assert str(ei.value) == "[Errno -2] Name or service not known"


# ---------------------------------------------------------------- connect failures


def test_one_address_refused(loop):
    with refusing() as addr, pytest.raises(ConnectionRefusedError) as ei:
        run(loop, loop.create_connection(asyncio.Protocol, *addr))
    assert str(ei.value) == f"[Errno 111] Connect call failed {addr}"


def test_every_address_is_named_when_all_fail(loop):
    with refusing(socket.AF_INET) as a4, refusing(socket.AF_INET6) as a6:
        resolve_to(loop, [tcp_info(a6), tcp_info(a4)])
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_connection(asyncio.Protocol, "two.invalid", 80))
    assert type(ei.value) is OSError
    assert str(ei.value) == (
        f"Multiple exceptions: [Errno 111] Connect call failed {a6}, "
        f"[Errno 111] Connect call failed {a4}"
    )


def test_failures_with_the_same_text_raise_one(loop):
    with refusing() as addr:
        resolve_to(loop, [tcp_info(addr), tcp_info(addr)])
        with pytest.raises(ConnectionRefusedError) as ei:
            run(loop, loop.create_connection(asyncio.Protocol, "twice.invalid", 80))
    assert str(ei.value) == f"[Errno 111] Connect call failed {addr}"


def test_falls_through_to_the_next_address(loop):
    async def main():
        server, addr = await start_echo(loop)
        with refusing(socket.AF_INET6) as bad:
            resolve_to(loop, [tcp_info(bad), tcp_info(addr)])
            transport, proto = await loop.create_connection(Recorder, "host.invalid", 80)
        assert transport.get_extra_info("peername") == addr
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is new in 3.12")
def test_all_errors_raises_an_exception_group(loop):
    with refusing(socket.AF_INET) as a4, refusing(socket.AF_INET6) as a6:
        resolve_to(loop, [tcp_info(a4), tcp_info(a6)])
        with pytest.raises(ExceptionGroup) as ei:
            run(loop, loop.create_connection(asyncio.Protocol, "two.invalid", 80,
                                             all_errors=True))
    assert ei.value.message == "create_connection failed"
    assert [str(e) for e in ei.value.exceptions] == [
        f"[Errno 111] Connect call failed {a4}", f"[Errno 111] Connect call failed {a6}"
    ]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="all_errors exists from 3.12")
def test_all_errors_is_not_a_parameter_before_312(loop):
    with pytest.raises(TypeError, match="unexpected keyword argument 'all_errors'"):
        loop.run_until_complete(
            loop.create_connection(asyncio.Protocol, "127.0.0.1", 9, all_errors=True)
        )


def test_local_addr_in_use(loop):
    async def main():
        server, (_, port) = await start_echo(loop)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            local = holder.getsockname()
            with pytest.raises(OSError) as ei:
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             local_addr=local)
        with socket.socket() as s, socket.socket() as t:  # the text bind() gives
            s.bind(("127.0.0.1", 0))
            s.listen()
            try:
                t.bind(s.getsockname())
            except OSError as err:
                reference = err
        server.close()
        await server.wait_closed()
        return ei.value, local, reference

    exc, local, reference = run(loop, main())
    assert type(exc) is OSError
    assert exc.errno == reference.errno
    assert str(exc) == f"[Errno {reference.errno}] " + bind_error_text(local, reference)


def test_local_addr_of_no_matching_family(loop):
    with refusing(socket.AF_INET6) as addr, pytest.raises(OSError) as ei:
        run(loop, loop.create_connection(asyncio.Protocol, *addr[:2],
                                         local_addr=("127.0.0.1", 0)))
    assert type(ei.value) is OSError
    assert str(ei.value) == (
        f"no matching local address with family={socket.AF_INET6!r} found"
    )


@pytest.mark.parametrize("failure", ["refused", "local_addr_in_use"])
def test_connect_error_is_not_held_by_a_reference_cycle(loop, failure):
    # A failed connect's exception is referenced by nothing of create_connection's once it has
    # been raised: no error list or connect future kept alive through the frames of its
    # traceback (gh-124859). anyio's connect_tcp checks this (test_happy_eyeballs_refcycles).
    async def main():
        with contextlib.ExitStack() as stack:
            kwargs = {}
            if failure == "refused":
                addr = stack.enter_context(refusing())
            else:
                server = stack.enter_context(socket.socket())
                server.bind(("127.0.0.1", 0))
                server.listen()
                addr = server.getsockname()
                holder = stack.enter_context(socket.socket())
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                kwargs["local_addr"] = holder.getsockname()
            exc = None
            try:
                await loop.create_connection(asyncio.Protocol, *addr, **kwargs)
            except OSError as e:
                exc = e
        assert exc is not None
        for _ in range(3):  # let the handle that woke this task go
            await asyncio.sleep(0)
        # This coroutine holds `exc` itself (a local); 3.14's gc reports it as a referrer.
        return [type(r).__name__ for r in gc.get_referrers(exc)
                if getattr(r, "cr_code", None) is not main.__code__]

    assert run(loop, main()) == []


# ---------------------------------------------------------------- Happy Eyeballs


def test_happy_eyeballs_refused_first_starts_the_next_at_once(loop):
    async def main():
        server, addr = await start_echo(loop)
        with refusing(socket.AF_INET6) as bad:
            resolve_to(loop, [tcp_info(bad), tcp_info(addr)])
            t0 = time.monotonic()
            transport, proto = await loop.create_connection(
                Recorder, "host.invalid", 80, happy_eyeballs_delay=2.0
            )
            elapsed = time.monotonic() - t0
        assert transport.get_extra_info("peername") == addr
        assert elapsed < 1.0  # did not wait for the delay: the first attempt failed
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_happy_eyeballs_blackholed_first_loses_to_the_next(loop):
    async def main():
        # The good address is a plain listener that never accepts (the kernel completes
        # the handshake), so the only new descriptor must be the winner's socket.
        with socket.socket() as good, blackhole(socket.AF_INET) as hole:
            good.bind(("127.0.0.1", 0))
            good.listen()
            addr = good.getsockname()
            resolve_to(loop, [tcp_info(hole), tcp_info(addr)])
            before = open_fds()
            t0 = time.monotonic()
            transport, proto = await loop.create_connection(
                Recorder, "host.invalid", 80, happy_eyeballs_delay=0.05
            )
            elapsed = time.monotonic() - t0
            # The losing attempt's socket is closed by the time the winner is returned.
            assert open_fds() - before == {transport.get_extra_info("socket").fileno()}
            assert transport.get_extra_info("peername") == addr
            assert 0.04 <= elapsed < 1.0  # the delay, not a connect timeout
            transport.close()
            await proto.lost

    run(loop, main())


def test_happy_eyeballs_ipv6_blackholed_ipv4_wins(loop):
    # localhost with both families, the preferred one (::1) not answering.
    async def main():
        server, addr = await start_echo(loop, "127.0.0.1")
        with blackhole(socket.AF_INET6) as hole:
            resolve_to(loop, [tcp_info(hole), tcp_info(addr)])
            transport, proto = await loop.create_connection(
                Recorder, "localhost.invalid", 80, happy_eyeballs_delay=0.05
            )
        assert transport.get_extra_info("peername") == addr
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_happy_eyeballs_first_address_wins_when_it_answers(loop):
    async def main():
        s1, a1 = await start_echo(loop, "::1")
        s2, a2 = await start_echo(loop, "127.0.0.1")
        resolve_to(loop, [tcp_info(a1), tcp_info(a2)])
        transport, proto = await loop.create_connection(
            Recorder, "host.invalid", 80, happy_eyeballs_delay=0.5
        )
        assert transport.get_extra_info("peername") == a1
        transport.close()
        await proto.lost
        for s in (s1, s2):
            s.close()
            await s.wait_closed()

    run(loop, main())


def test_happy_eyeballs_all_fail(loop):
    with refusing(socket.AF_INET) as a4, refusing(socket.AF_INET6) as a6:
        resolve_to(loop, [tcp_info(a6), tcp_info(a4)])
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_connection(asyncio.Protocol, "two.invalid", 80,
                                             happy_eyeballs_delay=0.01))
    assert str(ei.value) == (
        f"Multiple exceptions: [Errno 111] Connect call failed {a6}, "
        f"[Errno 111] Connect call failed {a4}"
    )


def test_happy_eyeballs_cancelled_closes_every_attempt(loop):
    async def main():
        with blackhole(socket.AF_INET) as h4, blackhole(socket.AF_INET6) as h6:
            resolve_to(loop, [tcp_info(h6), tcp_info(h4)])
            before = open_fds()
            task = asyncio.ensure_future(loop.create_connection(
                asyncio.Protocol, "host.invalid", 80, happy_eyeballs_delay=0.01))
            await asyncio.sleep(0.1)  # both attempts are running by now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.01)
            assert open_fds() <= before

    run(loop, main())


@pytest.mark.parametrize(
    "interleave,v6_count,expected",
    [
        (None, 2, "6a 6b 4a 4b"),
        (0, 2, "6a 6b 4a 4b"),
        (1, 2, "6a 4a 6b 4b"),
        (2, 2, "6a 6b 4a 4b"),
        (2, 3, "6a 6b 4a 6c 4b"),  # the leading family keeps one extra address up front
        (9, 3, "6a 6b 6c 4a 4b"),
    ],
)
def test_interleave_orders_attempts_by_family(loop, interleave, v6_count, expected):
    # Sequential attempts (no happy_eyeballs_delay): the error message lists the addresses
    # in the order they were tried.
    with contextlib.ExitStack() as stack:
        addrs = {}
        for i in range(v6_count):
            addrs[f"6{'abc'[i]}"] = stack.enter_context(refusing(socket.AF_INET6))
        for name in ("4a", "4b"):
            addrs[name] = stack.enter_context(refusing(socket.AF_INET))
        resolve_to(loop, [tcp_info(a) for a in addrs.values()])
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_connection(asyncio.Protocol, "many.invalid", 80,
                                             interleave=interleave))
    assert str(ei.value) == "Multiple exceptions: " + ", ".join(
        f"[Errno 111] Connect call failed {addrs[name]}" for name in expected.split()
    )


def test_happy_eyeballs_interleaves_by_default(loop):
    with refusing(socket.AF_INET6) as a, refusing(socket.AF_INET6) as b, \
            refusing(socket.AF_INET) as c, refusing(socket.AF_INET) as d:
        resolve_to(loop, [tcp_info(x) for x in (a, b, c, d)])
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_connection(asyncio.Protocol, "many.invalid", 80,
                                             happy_eyeballs_delay=0.01))
    assert str(ei.value) == "Multiple exceptions: " + ", ".join(
        f"[Errno 111] Connect call failed {x}" for x in (a, c, b, d)
    )


# ---------------------------------------------------------------- the staggered race itself
# ferroloop.staggered.staggered_race is ferroloop's own (asyncio has its own version); it only
# uses public asyncio API, so these run on both loops.


def _race(loop, factories, delay, discarded):
    from ferroloop.staggered import staggered_race

    return run(loop, staggered_race(factories, delay, loop=loop, discard=discarded.append))


def test_race_two_winners_in_one_iteration_discards_the_second(loop):
    gate = loop.create_future()

    async def quick(value):
        await gate  # both attempts wake up, and finish, in the same iteration
        return value

    discarded = []
    loop.call_later(0.01, gate.set_result, None)
    result = _race(loop, [lambda: quick("a"), lambda: quick("b")], 0, discarded)
    assert result == ("a", 0, [None, None])
    assert discarded == ["b"]


def test_race_sequential_without_delay(loop):
    started = []

    async def attempt(i, fail):
        started.append((i, loop.time()))
        await asyncio.sleep(0.02)
        if fail:
            raise OSError(i, "nope")
        return i

    discarded = []
    result, index, errors = _race(
        loop, [lambda: attempt(0, True), lambda: attempt(1, False), lambda: attempt(2, False)],
        None, discarded,
    )
    assert (result, index) == (1, 1)
    assert [type(e) for e in errors] == [OSError, type(None)]
    assert [i for i, _ in started] == [0, 1]  # the third never started
    assert started[1][1] - started[0][1] >= 0.015  # after the first failed, not before
    assert discarded == []


def test_race_delay_starts_the_next_while_the_first_hangs(loop):
    async def hang():
        await asyncio.sleep(10)

    async def answer():
        return "second"

    t0 = time.monotonic()
    result = _race(loop, [hang, answer], 0.05, [])
    assert result == ("second", 1, [None, None])
    assert 0.04 <= time.monotonic() - t0 < 1.0


def test_race_all_fail(loop):
    async def fail(i):
        raise ValueError(i)

    result, index, errors = _race(loop, [lambda: fail(0), lambda: fail(1)], 0.5, [])
    assert (result, index) == (None, None)
    assert [e.args for e in errors] == [(0,), (1,)]


def test_race_factory_error_is_that_attempts_failure(loop):
    def broken():
        raise RuntimeError("factory")

    async def ok():
        return 1

    result, index, errors = _race(loop, [broken, ok], 5, [])
    assert (result, index) == (1, 1)
    assert isinstance(errors[0], RuntimeError)


def test_race_empty(loop):
    assert _race(loop, [], 0.1, []) == (None, None, [])


def test_race_cancelled_after_a_win_discards_the_winner(loop):
    from ferroloop.staggered import staggered_race

    discarded = []

    async def winner():
        return "won"

    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # slow to clean up
            raise

    async def main():
        task = asyncio.ensure_future(staggered_race(
            [stubborn, winner], 0, loop=loop, discard=discarded.append))
        await asyncio.sleep(0.01)  # the winner has won; the race waits for the loser
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert discarded == ["won"]

    run(loop, main())
