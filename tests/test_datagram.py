"""Datagram endpoints (issue 9): loop.create_datagram_endpoint and the datagram transport, on
real UDP (IPv4, IPv6, dual-stack) and Unix datagram sockets (bound and unbound): round trips,
connected and unconnected sending, empty datagrams, ICMP port unreachable, bad destinations,
oversized datagrams, sending after close, reading and writing flow control under real kernel
push-back, extra info, close/abort, and every argument error create_datagram_endpoint reports
(same type, same message). Oracle: stock asyncio (each test runs on both loops); where asyncio
changed between versions (3.12, 3.13) the expectation follows the running interpreter."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import sys
import warnings

import pytest
from conftest import run, until

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")


class Recorder(asyncio.DatagramProtocol):
    """Records every protocol callback in order; futures to wait on."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events = []
        self.datagrams = []
        self.errors = []
        self.transport = None
        self.lost = loop.create_future()
        self._arrived = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def datagram_received(self, data, addr):
        assert isinstance(data, bytes)
        self.datagrams.append((data, addr))
        self.events.append("datagram")
        self._arrived.set()

    def error_received(self, exc):
        self.errors.append(exc)
        self.events.append("error")
        self._arrived.set()

    def connection_lost(self, exc):
        self.events.append("lost")
        assert not self.lost.done(), "connection_lost called twice"
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    async def wait_for(self, pred, timeout=3.0):
        async def poll():
            while not pred():
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(poll(), timeout)

    async def datagram(self, n=1, timeout=3.0):
        """The n-th datagram received (1-based), once it has arrived."""
        await self.wait_for(lambda: len(self.datagrams) >= n, timeout)
        return self.datagrams[n - 1]


class Echo(Recorder):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(b"echo:" + data, addr)


def free_udp_port(host="127.0.0.1", family=socket.AF_INET):
    """A port nothing listens on (bound, then closed)."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def collect_errors(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


async def close_and_wait(*transports):
    for tr in transports:
        tr.close()
    for tr in transports:
        proto = tr.get_protocol()
        if isinstance(proto, Recorder):
            await asyncio.wait_for(proto.lost, 3)


# -------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "host,family",
    [("127.0.0.1", socket.AF_INET), pytest.param("::1", socket.AF_INET6, marks=needs_ipv6)],
    ids=["ipv4", "ipv6"],
)
def test_echo_round_trip(loop, host, family):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Echo, local_addr=(host, 0), family=family
        )
        assert server.events == ["made"]
        sockname = server_tr.get_extra_info("sockname")
        assert sockname[0] == host
        client_tr, client = await loop.create_datagram_endpoint(
            Recorder, remote_addr=sockname[:2]
        )
        assert client.events == ["made"]
        client_tr.sendto(b"ping")
        data, addr = await client.datagram()
        assert data == b"echo:ping"
        assert addr == sockname
        sdata, saddr = server.datagrams[0]
        assert sdata == b"ping"
        assert saddr == client_tr.get_extra_info("sockname")
        if family == socket.AF_INET6:
            assert len(saddr) == 4 and saddr[2:] == (0, 0)
        else:
            assert len(saddr) == 2
        await close_and_wait(client_tr, server_tr)
        assert client.events == ["made", "datagram", "lost"]
        assert server.events == ["made", "datagram", "lost"]
        assert client.lost.result() is None

    run(loop, main())


@needs_ipv6
def test_dual_stack_endpoint_receives_ipv4(loop):
    # An IPv6 wildcard endpoint (IPV6_V6ONLY off, Linux's default) also gets IPv4 datagrams,
    # from v4-mapped addresses, and can answer them.
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Echo, local_addr=("::", 0), family=socket.AF_INET6
        )
        sock = server_tr.get_extra_info("socket")
        if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            pytest.skip("IPV6_V6ONLY is on by default here")
        port = server_tr.get_extra_info("sockname")[1]
        v4_tr, v4 = await loop.create_datagram_endpoint(
            Recorder, remote_addr=("127.0.0.1", port)
        )
        v6_tr, v6 = await loop.create_datagram_endpoint(Recorder, remote_addr=("::1", port))
        v4_tr.sendto(b"four")
        v6_tr.sendto(b"six")
        assert (await v4.datagram())[0] == b"echo:four"
        assert (await v6.datagram())[0] == b"echo:six"
        addrs = {data: addr for data, addr in server.datagrams}
        v4_port = v4_tr.get_extra_info("sockname")[1]
        assert addrs[b"four"] == ("::ffff:127.0.0.1", v4_port, 0, 0)
        assert addrs[b"six"][0] == "::1"
        await close_and_wait(v4_tr, v6_tr, server_tr)

    run(loop, main())


def test_unconnected_endpoints_talk_both_ways(loop):
    async def main():
        a_tr, a = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        b_tr, b = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        a_addr, b_addr = a_tr.get_extra_info("sockname"), b_tr.get_extra_info("sockname")
        assert a_tr.get_extra_info("peername") is None
        for i in range(20):
            a_tr.sendto(b"a%d" % i, b_addr)
            b_tr.sendto(b"b%d" % i, a_addr)
        await b.datagram(20)
        await a.datagram(20)
        assert b.datagrams == [(b"a%d" % i, a_addr) for i in range(20)]
        assert a.datagrams == [(b"b%d" % i, b_addr) for i in range(20)]
        await close_and_wait(a_tr, b_tr)

    run(loop, main())


def test_bytes_like_data_and_large_datagram(loop):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        client_tr, _ = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        client_tr.sendto(bytearray(b"bytearray"))
        client_tr.sendto(memoryview(b"xxmemoryviewxx")[2:-2])
        big = os.urandom(65507)  # the largest UDP payload over IPv4
        client_tr.sendto(big)
        await server.datagram(3)
        assert [d for d, _ in server.datagrams] == [b"bytearray", b"memoryview", big]
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
            client_tr.sendto("text")
        with pytest.raises(TypeError, match="not 'int'"):
            client_tr.sendto(1)
        await close_and_wait(client_tr, server_tr)

    run(loop, main())


def test_sendto_empty_datagram(loop):
    # asyncio 3.13 sends an empty datagram for sendto(b''); before, it sends nothing.
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        client_tr, _ = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        client_tr.sendto(b"", addr)
        client_tr.sendto(bytearray(), addr)
        client_tr.sendto(b"end", addr)
        await until(lambda: any(d == b"end" for d, _ in server.datagrams))
        expected = [b"", b"", b"end"] if PY313 else [b"end"]
        assert [d for d, _ in server.datagrams] == expected
        await close_and_wait(client_tr, server_tr)

    run(loop, main())


# ------------------------------------------------------------------------- unix datagrams


def test_unix_bound_endpoints(loop, tmp_path):
    server_path = str(tmp_path / "server.sock")
    client_path = str(tmp_path / "client.sock")

    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Echo, local_addr=server_path, family=socket.AF_UNIX
        )
        assert server_tr.get_extra_info("sockname") == server_path
        assert server_tr.get_extra_info("peername") is None
        client_tr, client = await loop.create_datagram_endpoint(
            Recorder, local_addr=client_path, remote_addr=server_path, family=socket.AF_UNIX
        )
        assert client_tr.get_extra_info("peername") == server_path
        client_tr.sendto(b"hi")
        assert await client.datagram() == (b"echo:hi", server_path)
        assert server.datagrams == [(b"hi", client_path)]
        # An explicit address equal to the remote one is accepted.
        client_tr.sendto(b"again", server_path)
        assert (await client.datagram(2))[0] == b"echo:again"
        await close_and_wait(client_tr, server_tr)

    run(loop, main())


def test_unix_unbound_sender_and_receiver(loop, tmp_path):
    # A client without a bound path shows up as None at the receiver; an endpoint made with
    # only family=AF_UNIX is unbound and unconnected and can send anywhere.
    server_path = str(tmp_path / "s.sock")

    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=server_path, family=socket.AF_UNIX
        )
        connected_tr, _ = await loop.create_datagram_endpoint(
            Recorder, remote_addr=server_path, family=socket.AF_UNIX
        )
        free_tr, _ = await loop.create_datagram_endpoint(Recorder, family=socket.AF_UNIX)
        assert free_tr.get_extra_info("peername") is None
        assert free_tr.get_extra_info("sockname") in ("", None)
        connected_tr.sendto(b"one")
        free_tr.sendto(b"two", server_path)
        await server.datagram(2)
        assert sorted(server.datagrams) == [(b"one", None), (b"two", None)]
        await close_and_wait(connected_tr, free_tr, server_tr)

    run(loop, main())


def test_unix_abstract_namespace(loop):
    name = f"\0ferroloop-test-{os.getpid()}"

    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Echo, local_addr=name, family=socket.AF_UNIX
        )
        client_tr, client = await loop.create_datagram_endpoint(
            Recorder, local_addr=name + "-c", remote_addr=name, family=socket.AF_UNIX
        )
        client_tr.sendto(b"abstract")
        data, addr = await client.datagram()
        assert data == b"echo:abstract"
        assert addr == os.fsencode(name)
        assert server.datagrams == [(b"abstract", os.fsencode(name + "-c"))]
        await close_and_wait(client_tr, server_tr)

    run(loop, main())


def test_unix_stale_socket_file_is_replaced(loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old.bind(path)
    old.close()  # the file stays behind

    async def main():
        tr, _ = await loop.create_datagram_endpoint(
            Recorder, local_addr=path, family=socket.AF_UNIX
        )
        assert tr.get_extra_info("sockname") == path
        await close_and_wait(tr)

    run(loop, main())


def test_unix_socketpair_sock(loop):
    # A socketpair end has an empty peer name, so asyncio's transport uses sendto(data, addr):
    # sending needs no address on the other end, which is connected.
    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tr, proto = await loop.create_datagram_endpoint(Recorder, sock=a)
        assert proto.events == ["made"]
        b.send(b"from b")
        assert await proto.datagram() == (b"from b", None)
        b.close()
        await close_and_wait(tr)
        assert a.fileno() == -1

    run(loop, main())


# ------------------------------------------------------------- connected vs unconnected


def test_connected_transport_insists_on_its_address(loop):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        client_tr, _ = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        assert client_tr.get_extra_info("peername") == addr
        client_tr.sendto(b"1", addr)
        client_tr.sendto(b"2", ("127.0.0.1", addr[1]))
        invalid = r"^Invalid address: must be None or \('127\.0\.0\.1', "
        with pytest.raises(ValueError, match=invalid):
            client_tr.sendto(b"3", ("127.0.0.1", addr[1] + 1))
        await server.datagram(2)
        assert [d for d, _ in server.datagrams] == [b"1", b"2"]
        await close_and_wait(client_tr, server_tr)

    run(loop, main())


def test_unconnected_without_address_is_fatal(loop):
    # asyncio calls sock.sendto(data, None): a TypeError, fatal to the transport.
    async def main():
        errors = collect_errors(loop)
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        tr.sendto(b"nowhere")
        exc = await asyncio.wait_for(proto.lost, 3)
        assert isinstance(exc, TypeError)
        assert "must be tuple, not NoneType" in str(exc)
        assert [ctx["message"] for ctx in errors] == ["Fatal write error on datagram transport"]
        assert errors[0]["exception"] is exc
        assert errors[0]["transport"] is tr
        assert tr.is_closing()

    run(loop, main())


def test_icmp_port_unreachable_goes_to_error_received(loop):
    # A connected UDP socket learns of the ICMP port unreachable its datagram provoked: the
    # next receive or send fails with ECONNREFUSED, which is reported to error_received and
    # leaves the transport open.
    async def main():
        port = free_udp_port()
        tr, proto = await loop.create_datagram_endpoint(
            Recorder, remote_addr=("127.0.0.1", port)
        )
        tr.sendto(b"anyone?")
        await proto.wait_for(lambda: proto.errors)
        assert isinstance(proto.errors[0], ConnectionRefusedError)
        assert proto.errors[0].errno == errno.ECONNREFUSED
        assert not tr.is_closing()
        assert not proto.lost.done()
        # Still usable: another datagram provokes another report.
        tr.sendto(b"still?")
        await proto.wait_for(lambda: len(proto.errors) >= 2)
        assert all(isinstance(e, ConnectionRefusedError) for e in proto.errors)
        await close_and_wait(tr)
        assert proto.lost.result() is None

    run(loop, main())


class _NamedAddr(tuple):
    """A tuple subclass (as a namedtuple would be)."""


class _IntPort(int):
    """An int subclass as a port number."""


@pytest.mark.parametrize(
    "family,make_dest",
    [
        (socket.AF_INET, lambda port: ("127.0.0.1", port)),
        (socket.AF_INET, lambda port: ("localhost", port)),
        (socket.AF_INET, lambda port: (b"127.0.0.1", port)),
        (socket.AF_INET, lambda port: _NamedAddr(("127.0.0.1", port))),
        (socket.AF_INET, lambda port: ("127.0.0.1", _IntPort(port))),
        (socket.AF_INET, lambda port: ("127.1", port)),
        pytest.param(socket.AF_INET6, lambda port: ("::1", port), marks=needs_ipv6),
        pytest.param(socket.AF_INET6, lambda port: ("::1", port, 0), marks=needs_ipv6),
        pytest.param(socket.AF_INET6, lambda port: ("::1", port, 0, 0), marks=needs_ipv6),
        pytest.param(
            socket.AF_INET6, lambda port: ("0:0:0:0:0:0:0:1", port, 0, 0), marks=needs_ipv6
        ),
        pytest.param(socket.AF_INET6, lambda port: ("::ffff:127.0.0.1", port), marks=needs_ipv6),
    ],
    ids=[
        "v4", "v4-name", "v4-bytes-host", "v4-tuple-subclass", "v4-int-subclass-port",
        "v4-short-form",
        "v6-pair", "v6-triple", "v6-quad", "v6-long-form", "v6-mapped",
    ],
)
def test_destination_forms(loop, family, make_dest):
    # Every address form the socket module takes reaches the same peer.
    async def main():
        host = "::" if family == socket.AF_INET6 else "127.0.0.1"
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=(host, 0), family=family
        )
        port = server_tr.get_extra_info("sockname")[1]
        tr, proto = await loop.create_datagram_endpoint(
            Recorder, local_addr=(host, 0), family=family
        )
        tr.sendto(b"form", make_dest(port))
        assert (await server.datagram())[0] == b"form"
        assert proto.errors == []
        await close_and_wait(tr, server_tr)

    run(loop, main())


@pytest.mark.parametrize(
    "dest,exc_type",
    [
        pytest.param(("::1", 9), socket.gaierror, marks=needs_ipv6, id="ipv6-to-ipv4-socket"),
        pytest.param(("no such host.invalid", 9), socket.gaierror, id="bad-name"),
    ],
)
def test_unreachable_destinations_go_to_error_received(loop, dest, exc_type):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", dest)
        assert len(proto.errors) == 1, proto.events
        assert isinstance(proto.errors[0], exc_type)
        assert not tr.is_closing()
        await close_and_wait(tr)

    run(loop, main())


@needs_ipv6
def test_ipv4_address_on_ipv6_socket_goes_to_error_received(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("::1", 0))
        tr.sendto(b"x", ("127.0.0.1", 9))
        assert len(proto.errors) == 1 and isinstance(proto.errors[0], OSError)
        assert not tr.is_closing()
        await close_and_wait(tr)

    run(loop, main())


@pytest.mark.parametrize(
    "dest,text",
    [
        (("127.0.0.1", 9, 0, 0), "AF_INET address must be a pair (host, port)"),
        ("/some/path", "AF_INET address must be tuple, not str"),
        (("127.0.0.1", "port"), "'str' object cannot be interpreted as an integer"),
        (("127.0.0.1", 70000), "port must be 0-65535"),
    ],
    ids=["4-tuple", "unix-path", "str-port", "big-port"],
)
def test_malformed_destination_is_fatal(loop, dest, text):
    # Not an OSError: asyncio treats it as fatal (exception handler, connection_lost(exc)).
    async def main():
        errors = collect_errors(loop)
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        tr.sendto(b"x", dest)
        exc = await asyncio.wait_for(proto.lost, 3)
        assert text in str(exc)
        assert [ctx["message"] for ctx in errors] == ["Fatal write error on datagram transport"]
        assert errors[0]["exception"] is exc
        assert proto.errors == []

    run(loop, main())


def test_oversized_datagram_is_emsgsize(loop):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        tr.sendto(b"x" * 70000, addr)
        assert len(proto.errors) == 1
        assert isinstance(proto.errors[0], OSError)
        assert proto.errors[0].errno == errno.EMSGSIZE
        assert not tr.is_closing()
        tr.sendto(b"small", addr)
        assert await server.datagram() == (b"small", tr.get_extra_info("sockname"))
        await close_and_wait(tr, server_tr)

    run(loop, main())


def test_error_received_exception_propagates_from_sendto(loop):
    async def main():
        class Raising(Recorder):
            def error_received(self, exc):
                raise RuntimeError("from error_received")

        tr, _ = await loop.create_datagram_endpoint(Raising, local_addr=("127.0.0.1", 0))
        with pytest.raises(RuntimeError, match="from error_received"):
            tr.sendto(b"x" * 70000, ("127.0.0.1", 9))
        assert not tr.is_closing()
        await close_and_wait(tr)

    run(loop, main())


def test_datagram_received_exception_goes_to_the_handler(loop):
    async def main():
        errors = collect_errors(loop)

        class Raising(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                if data == b"boom":
                    raise ZeroDivisionError("in datagram_received")

        tr, proto = await loop.create_datagram_endpoint(Raising, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"boom", addr)
            peer.sendto(b"after", addr)
            await proto.datagram(2)
        assert [d for d, _ in proto.datagrams] == [b"boom", b"after"]
        assert len(errors) == 1
        assert errors[0]["message"].startswith("Exception in callback ")
        assert isinstance(errors[0]["exception"], ZeroDivisionError)
        assert not tr.is_closing()
        await close_and_wait(tr)

    run(loop, main())


# ------------------------------------------------------------------- after close / abort


def test_close_calls_connection_lost_once(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        sock = tr.get_extra_info("socket")
        assert not tr.is_closing()
        tr.close()
        assert tr.is_closing()
        tr.close()
        tr.abort()
        assert await asyncio.wait_for(proto.lost, 3) is None
        await asyncio.sleep(0.01)
        assert proto.events == ["made", "lost"]
        assert sock.fileno() == -1

    run(loop, main())


def test_abort_calls_connection_lost_once(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        tr.abort()
        assert tr.is_closing()
        tr.abort()
        tr.close()
        assert await asyncio.wait_for(proto.lost, 3) is None
        await asyncio.sleep(0.01)
        assert proto.events == ["made", "lost"]

    run(loop, main())


def test_nothing_is_received_after_close(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"pending", addr)
            tr.close()
            await asyncio.wait_for(proto.lost, 3)
        assert proto.datagrams == []

    run(loop, main())


def test_sendto_after_close_connected_is_dropped_and_logged(loop, caplog):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        tr, proto = await loop.create_datagram_endpoint(
            Recorder, remote_addr=server_tr.get_extra_info("sockname")
        )
        tr.close()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            tr.sendto(b"dropped")
            await asyncio.wait_for(proto.lost, 3)
            for _ in range(6):
                tr.sendto(b"dropped")
        await asyncio.sleep(0.02)
        assert server.datagrams == []
        warned = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert warned and set(warned) == {"socket.send() raised exception."}
        await close_and_wait(server_tr)

    run(loop, main())


def test_sendto_after_connection_lost_unconnected_raises(loop):
    # asyncio's transport has lost its socket and loop by then: sendto raises AttributeError.
    async def main():
        errors = collect_errors(loop)
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        tr.close()
        await asyncio.wait_for(proto.lost, 3)
        with pytest.raises(AttributeError):
            tr.sendto(b"late", ("127.0.0.1", 9))
        assert errors == []
        assert proto.events == ["made", "lost"]

    run(loop, main())


# ---------------------------------------------------------------------------- flow control


def test_pause_and_resume_reading(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        tr.pause_reading()  # no-op
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for i in range(5):
                peer.sendto(b"%d" % i, addr)
            await asyncio.sleep(0.05)
            assert proto.datagrams == []
            tr.resume_reading()
            assert tr.is_reading()
            tr.resume_reading()  # no-op
            await proto.datagram(5)
        assert [d for d, _ in proto.datagrams] == [b"%d" % i for i in range(5)]
        tr.close()
        assert not tr.is_reading()
        tr.resume_reading()
        assert not tr.is_reading()
        await asyncio.wait_for(proto.lost, 3)

    run(loop, main())


@pytest.mark.parametrize("action", ["pause_reading", "close", "abort"])
def test_no_datagram_after_pause_or_close_from_the_protocol(loop, action):
    # Several datagrams are waiting; the protocol stops reading on the first one: no other
    # one is delivered (until resume_reading).
    async def main():
        class StopsAtFirst(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                getattr(self.transport, action)()

        tr, proto = await loop.create_datagram_endpoint(StopsAtFirst, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        tr.pause_reading()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for i in range(10):
                peer.sendto(b"%d" % i, addr)
            await asyncio.sleep(0.02)
            tr.resume_reading()
            await proto.datagram(1)
            await asyncio.sleep(0.05)
            assert [d for d, _ in proto.datagrams] == [b"0"]
            if action == "pause_reading":
                assert not tr.is_reading()
                tr.resume_reading()
                await proto.datagram(2)
                assert [d for d, _ in proto.datagrams][:2] == [b"0", b"1"]
                tr.close()
        assert await asyncio.wait_for(proto.lost, 3) is None

    run(loop, main())


def test_bursts_with_pauses_and_raising_callbacks_lose_nothing(loop):
    # 60 datagrams wait in the socket; the protocol pauses reading on every 7th (resuming
    # soon after) and raises on every 11th. Every datagram arrives once, in order, and each
    # exception reaches the handler.
    async def main():
        errors = collect_errors(loop)
        lp = asyncio.get_running_loop()

        class Moody(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                n = int(data)
                if n % 7 == 6:
                    self.transport.pause_reading()
                    lp.call_later(0.002, self.transport.resume_reading)
                if n % 11 == 10:
                    raise ZeroDivisionError(n)

        tr, proto = await loop.create_datagram_endpoint(Moody, local_addr=("127.0.0.1", 0))
        tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        addr = tr.get_extra_info("sockname")
        tr.pause_reading()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for i in range(60):
                peer.sendto(b"%02d" % i, addr)
            await asyncio.sleep(0.02)
            tr.resume_reading()
            await proto.datagram(60)
        await asyncio.sleep(0.01)
        assert [d for d, _ in proto.datagrams] == [b"%02d" % i for i in range(60)]
        assert [e["exception"].args[0] for e in errors] == [10, 21, 32, 43, 54]
        await close_and_wait(tr)

    run(loop, main())


def test_datagrams_interleave_with_other_callbacks(loop):
    # What a protocol schedules with call_soon runs, and every datagram arrives, in order,
    # however many wait in the socket.
    async def main():
        order = []

        class Scheduling(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                order.append(data)
                asyncio.get_running_loop().call_soon(order.append, b"cb:" + data)

        tr, proto = await loop.create_datagram_endpoint(Scheduling, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        tr.pause_reading()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for i in range(50):
                peer.sendto(b"%02d" % i, addr)
            await asyncio.sleep(0.02)
            tr.resume_reading()
            await proto.datagram(50)
        await asyncio.sleep(0.01)
        datagrams = [x for x in order if not x.startswith(b"cb:")]
        callbacks = [x[3:] for x in order if x.startswith(b"cb:")]
        assert datagrams == callbacks == [b"%02d" % i for i in range(50)]
        # Each callback runs after the datagram that scheduled it.
        assert all(order.index(b"cb:" + d) > order.index(d) for d in datagrams)
        await close_and_wait(tr)

    run(loop, main())


def test_pause_reading_before_connection_made_holds_reading(loop):
    async def main():
        class PausesAtOnce(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()

        tr, proto = await loop.create_datagram_endpoint(
            PausesAtOnce, local_addr=("127.0.0.1", 0)
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"held", tr.get_extra_info("sockname"))
            await asyncio.sleep(0.03)
            assert proto.datagrams == []
            tr.resume_reading()
            assert (await proto.datagram())[0] == b"held"
        await close_and_wait(tr)

    run(loop, main())


class _Blocked:
    """A Unix datagram receiver that does not read yet: a connected sender's datagrams pile
    up in its queue until the kernel refuses more (EAGAIN), deterministically."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "slow.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    async def drain(self, n, timeout=5.0):
        got = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(got) < n:
            try:
                got.append(self.sock.recv(65536))
            except BlockingIOError:
                if loop.time() > end:
                    raise AssertionError(f"only {len(got)} of {n} datagrams arrived") from None
                await asyncio.sleep(0.001)
        return got

    def close(self):
        self.sock.close()


def test_pause_and_resume_writing_under_kernel_push_back(loop, tmp_path):
    async def main():
        blocked = _Blocked(tmp_path)
        tr, proto = await loop.create_datagram_endpoint(
            Recorder, remote_addr=blocked.path, family=socket.AF_UNIX
        )
        tr.set_write_buffer_limits(high=4000, low=1000)
        assert tr.get_write_buffer_limits() == (1000, 4000)
        payloads = [b"%04d" % i + b"." * 496 for i in range(60)]
        for p in payloads:
            tr.sendto(p)
        # The receiver's queue took some; the rest waits in the transport.
        assert proto.events == ["made", "pause"]
        queued = tr.get_write_buffer_size()
        assert queued > 4000
        assert queued % (508 if PY313 else 500) == 0  # asyncio 3.13 adds 8 per datagram
        got = await blocked.drain(len(payloads))
        assert got == payloads
        await until(lambda: "resume" in proto.events)
        assert proto.events == ["made", "pause", "resume"]
        if not PY313:  # asyncio 3.13.0 never takes the 8 header bytes off again
            assert tr.get_write_buffer_size() == 0
        await close_and_wait(tr)
        blocked.close()

    run(loop, main())


def test_queued_bytearray_is_copied(loop, tmp_path):
    async def main():
        blocked = _Blocked(tmp_path)
        tr, _ = await loop.create_datagram_endpoint(
            Recorder, remote_addr=blocked.path, family=socket.AF_UNIX
        )
        n = 0
        while tr.get_write_buffer_size() == 0:  # until the kernel refuses one
            tr.sendto(b"fill%d" % n)
            n += 1
            assert n < 100_000
        buf = bytearray(b"original")
        tr.sendto(buf)
        buf[:] = b"mutated!"
        got = await blocked.drain(n + 1)
        assert got[-1] == b"original"
        await close_and_wait(tr)
        blocked.close()

    run(loop, main())


def test_close_with_queued_datagrams_sends_them_first(loop, tmp_path):
    async def main():
        blocked = _Blocked(tmp_path)
        tr, proto = await loop.create_datagram_endpoint(
            Recorder, remote_addr=blocked.path, family=socket.AF_UNIX
        )
        sent = []
        while tr.get_write_buffer_size() == 0 or len(sent) < 200:
            sent.append(b"q%d" % len(sent))
            tr.sendto(sent[-1])
        tr.close()
        await asyncio.sleep(0.02)
        assert not proto.lost.done()  # waits for the queue
        assert await blocked.drain(len(sent)) == sent
        assert await asyncio.wait_for(proto.lost, 3) is None
        blocked.close()

    run(loop, main())


def test_abort_drops_queued_datagrams(loop, tmp_path):
    async def main():
        blocked = _Blocked(tmp_path)
        tr, proto = await loop.create_datagram_endpoint(
            Recorder, remote_addr=blocked.path, family=socket.AF_UNIX
        )
        sent = 0
        while tr.get_write_buffer_size() == 0:
            tr.sendto(b"a%d" % sent)
            sent += 1
        tr.sendto(b"never")
        tr.abort()
        assert await asyncio.wait_for(proto.lost, 3) is None
        got = await blocked.drain(sent - 1)
        await asyncio.sleep(0.02)
        with pytest.raises(BlockingIOError):
            blocked.sock.recv(100)  # nothing queued by the transport arrived
        assert b"never" not in got
        blocked.close()

    run(loop, main())


def test_flow_control_callbacks_failing_go_to_the_handler(loop, tmp_path):
    async def main():
        errors = collect_errors(loop)
        blocked = _Blocked(tmp_path)

        class Failing(Recorder):
            def pause_writing(self):
                raise RuntimeError("pause failed")

        tr, _ = await loop.create_datagram_endpoint(
            Failing, remote_addr=blocked.path, family=socket.AF_UNIX
        )
        tr.set_write_buffer_limits(high=0)
        n = 0
        while tr.get_write_buffer_size() == 0:
            tr.sendto(b"x%d" % n)
            n += 1
        assert [c["message"] for c in errors] == ["protocol.pause_writing() failed"]
        assert isinstance(errors[0]["exception"], RuntimeError)
        assert errors[0]["transport"] is tr
        await blocked.drain(n)
        await close_and_wait(tr)
        blocked.close()

    run(loop, main())


def test_write_buffer_limits(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        assert tr.get_write_buffer_limits() == (16384, 65536)
        assert tr.get_write_buffer_size() == 0
        tr.set_write_buffer_limits(low=100)
        assert tr.get_write_buffer_limits() == (100, 400)
        tr.set_write_buffer_limits(high=1000)
        assert tr.get_write_buffer_limits() == (250, 1000)
        with pytest.raises(ValueError, match=r"^high \(10\) must be >= low \(20\) must be >= 0$"):
            tr.set_write_buffer_limits(high=10, low=20)
        await close_and_wait(tr)

    run(loop, main())


# ------------------------------------------------------------------------------ extra info


def test_extra_info_and_isinstance(loop):
    async def main():
        server_tr, _ = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        addr = server_tr.get_extra_info("sockname")
        tr, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        assert tr.get_extra_info("peername") == addr
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == "127.0.0.1" and sockname[1] > 0
        sock = tr.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_DGRAM
        assert sock.getsockname() == sockname
        assert tr.get_extra_info("nothing", "default") == "default"
        assert tr.get_protocol() is proto
        assert isinstance(tr, asyncio.BaseTransport)
        assert isinstance(tr, asyncio.Transport)  # CPython's own tests check this
        if PY312 or not isinstance(loop, asyncio.BaseEventLoop):
            assert isinstance(tr, asyncio.DatagramTransport)
        assert f"fd={sock.fileno()}" in repr(tr)
        assert "read=polling" in repr(tr)
        await close_and_wait(tr, server_tr)
        assert "closed" in repr(tr)

    run(loop, main())


def test_set_protocol(loop):
    async def main():
        tr, first = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        second = Recorder()
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"to second", tr.get_extra_info("sockname"))
            await second.datagram()
        assert first.datagrams == []
        tr.close()
        await asyncio.wait_for(second.lost, 3)
        assert not first.lost.done()

    run(loop, main())


def test_transport_subclass_sendto_is_used(loop):
    # Only ferroloop's own class; a subclass's sendto override must still be what runs.
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        addr = tr.get_extra_info("sockname")
        if type(tr).__module__.startswith("ferroloop"):
            calls = []

            class Counting(type(tr)):
                def sendto(self, data, addr=None):
                    calls.append(data)
                    super().sendto(data, addr)

            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            other = Recorder()
            sub = Counting(loop, sock, other)
            await asyncio.sleep(0)
            sub.sendto(b"via subclass", addr)
            assert calls == [b"via subclass"]
            assert (await proto.datagram())[0] == b"via subclass"
            await close_and_wait(sub)
        await close_and_wait(tr)

    run(loop, main())


def test_unclosed_transport_warns(loop):
    async def main():
        tr, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        return tr

    tr = run(loop, main())
    sock = tr.get_extra_info("socket")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.__del__()
    assert any(
        issubclass(w.category, ResourceWarning) and str(w.message).startswith("unclosed transport ")
        for w in caught
    )
    assert sock.fileno() == -1
    tr._sock = None  # already warned and closed


# ---------------------------------------------------------------- create_datagram_endpoint


def test_debug_mode_logs_the_endpoint(loop, caplog):
    async def main():
        loop.set_debug(True)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            server_tr, _ = await loop.create_datagram_endpoint(
                Recorder, local_addr=("127.0.0.1", 0)
            )
            addr = server_tr.get_extra_info("sockname")
            tr, _ = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
            tr.pause_reading()
            tr.resume_reading()
        messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert any(
            m.startswith("Datagram endpoint local_addr=('127.0.0.1', 0) remote_addr=None created")
            for m in messages
        ), messages
        assert any(
            m.startswith(f"Datagram endpoint remote_addr={addr!r} created") for m in messages
        ), messages
        assert any(m.endswith(" pauses reading") for m in messages)
        assert any(m.endswith(" resumes reading") for m in messages)
        await close_and_wait(tr, server_tr)
        loop.set_debug(False)

    run(loop, main())


def test_closed_endpoint_is_collectable(loop):
    import weakref

    async def main():
        tr, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"x", tr.get_extra_info("sockname"))
            await proto.datagram()
        await close_and_wait(tr)
        return weakref.ref(tr), weakref.ref(proto)

    refs = run(loop, main())
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_reuse_port_and_allow_broadcast(loop):
    async def main():
        a_tr, _ = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), reuse_port=True
        )
        port = a_tr.get_extra_info("sockname")[1]
        b_tr, _ = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", port), reuse_port=True
        )
        sock = b_tr.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        # allow_broadcast: SO_BROADCAST, and remote_addr is not connected but still the
        # default (and only) destination of sendto.
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        c_tr, _ = await loop.create_datagram_endpoint(
            Recorder, remote_addr=addr, allow_broadcast=True
        )
        csock = c_tr.get_extra_info("socket")
        assert csock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        assert c_tr.get_extra_info("peername") is None
        c_tr.sendto(b"bcast")
        assert (await server.datagram())[0] == b"bcast"
        with pytest.raises(ValueError, match="Invalid address"):
            c_tr.sendto(b"x", ("127.0.0.1", 9))
        await close_and_wait(a_tr, b_tr, server_tr, c_tr)

    run(loop, main())


def test_sock_argument(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        tr, proto = await loop.create_datagram_endpoint(Recorder, sock=sock)
        assert not sock.getblocking()
        assert tr.get_extra_info("sockname") == sock.getsockname()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"via sock", sock.getsockname())
            assert (await proto.datagram())[0] == b"via sock"
        await close_and_wait(tr)
        assert sock.fileno() == -1

    run(loop, main())


def test_connected_sock_argument_sends_to_its_peer(loop):
    # A sock connected beforehand has a peer name: asyncio uses send() and ignores addr.
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(addr)
        tr, _ = await loop.create_datagram_endpoint(Recorder, sock=sock)
        tr.sendto(b"one")
        tr.sendto(b"two", ("127.0.0.1", 9))
        await server.datagram(2)
        assert [d for d, _ in server.datagrams] == [b"one", b"two"]
        await close_and_wait(tr, server_tr)

    run(loop, main())


def test_stream_sock_is_rejected(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            text = "A datagram socket was expected" if PY313 else "A UDP Socket was expected"
            with pytest.raises(ValueError, match=f"^{text}, got <socket.socket"):
                await loop.create_datagram_endpoint(Recorder, sock=sock)

    run(loop, main())


def test_seqpacket_sock_accepted_from_313(loop):
    # asyncio 3.13 rejects only stream sockets (raw sockets, gh-114887); before, anything but
    # SOCK_DGRAM.
    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            if not PY313:
                with pytest.raises(ValueError, match="^A UDP Socket was expected, got "):
                    await loop.create_datagram_endpoint(Recorder, sock=a)
                return
            tr, proto = await loop.create_datagram_endpoint(Recorder, sock=a)
            b.send(b"packet")
            assert (await proto.datagram())[0] == b"packet"
            await close_and_wait(tr)

    run(loop, main())


@pytest.mark.parametrize(
    "kwargs,problems",
    [
        ({"local_addr": ("127.0.0.1", 0)}, "local_addr=('127.0.0.1', 0)"),
        ({"remote_addr": ("127.0.0.1", 1)}, "remote_addr=('127.0.0.1', 1)"),
        ({"family": socket.AF_INET}, "family=2"),
        ({"proto": 17}, "proto=17"),
        ({"flags": 1}, "flags=1"),
        ({"reuse_port": True}, "reuse_port=True"),
        ({"allow_broadcast": True}, "allow_broadcast=True"),
        ({"family": 2, "proto": 17, "flags": 0}, "family=2, proto=17"),
    ],
)
def test_sock_with_socket_modifiers_is_rejected(loop, kwargs, problems):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError) as ei:
                await loop.create_datagram_endpoint(Recorder, sock=sock, **kwargs)
            assert str(ei.value) == (
                "socket modifier keyword arguments can not be used when sock is specified. "
                f"({problems})"
            )
            assert sock.fileno() != -1

    run(loop, main())


@pytest.mark.parametrize(
    "kwargs,exc_type,message",
    [
        ({}, ValueError, "unexpected address family"),
        ({"family": socket.AF_UNIX, "local_addr": ("x", 1)}, TypeError, "string is expected"),
        ({"family": socket.AF_UNIX, "remote_addr": b"/x"}, TypeError, "string is expected"),
        ({"local_addr": "127.0.0.1"}, TypeError, "2-tuple is expected"),
        ({"local_addr": ("127.0.0.1", 0, 0, 0)}, TypeError, "2-tuple is expected"),
        ({"remote_addr": ["127.0.0.1", 1]}, TypeError, "2-tuple is expected"),
        (
            {"local_addr": ("127.0.0.1", 0), "remote_addr": ("::1", 1)},
            ValueError,
            "can not get address information",
        ),
        (
            {"local_addr": ("127.0.0.1", 0), "family": socket.AF_INET6},
            socket.gaierror,
            None,
        ),
    ],
    ids=[
        "no-address-no-family", "unix-tuple", "unix-bytes", "str-local", "4-tuple-local",
        "list-remote", "no-common-family", "family-mismatch",
    ],
)
def test_argument_errors(loop, kwargs, exc_type, message):
    async def main():
        with pytest.raises(exc_type) as ei:
            await loop.create_datagram_endpoint(Recorder, **kwargs)
        if message is not None:
            assert str(ei.value) == message

    run(loop, main())


def test_reuse_address_is_not_accepted(loop):
    # Removed from create_datagram_endpoint in 3.11 (a security problem with UDP).
    async def main():
        with pytest.raises(TypeError, match="unexpected keyword argument 'reuse_address'$"):
            await loop.create_datagram_endpoint(
                Recorder, local_addr=("127.0.0.1", 0), reuse_address=True
            )

    run(loop, main())


def test_bind_error_is_raised(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            with pytest.raises(OSError) as ei:
                await loop.create_datagram_endpoint(Recorder, local_addr=taken.getsockname())
            assert ei.value.errno == errno.EADDRINUSE

    run(loop, main())


def test_unix_bind_error_is_raised(loop, tmp_path):
    async def main():
        with pytest.raises(OSError) as ei:
            await loop.create_datagram_endpoint(
                Recorder, local_addr=str(tmp_path / "no" / "such" / "dir.sock"),
                family=socket.AF_UNIX,
            )
        assert ei.value.errno == errno.ENOENT

    run(loop, main())


def test_protocol_factory_error_propagates(loop):
    async def main():
        def factory():
            raise ZeroDivisionError("factory")

        with pytest.raises(ZeroDivisionError, match="factory"):
            await loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", 0))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio leaves its socket to gc
        run(loop, main())
        gc.collect()


def test_remote_name_is_resolved(loop):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        port = server_tr.get_extra_info("sockname")[1]
        tr, _ = await loop.create_datagram_endpoint(
            Recorder, remote_addr=("localhost", port), family=socket.AF_INET
        )
        tr.sendto(b"by name")
        assert (await server.datagram())[0] == b"by name"
        await close_and_wait(tr, server_tr)

    run(loop, main())


def test_family_only_endpoint_sends_anywhere(loop):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        tr, _ = await loop.create_datagram_endpoint(Recorder, family=socket.AF_INET)
        assert tr.get_extra_info("peername") is None
        tr.sendto(b"hello", addr)
        data, src = await server.datagram()
        assert data == b"hello"
        assert src[1] == tr.get_extra_info("socket").getsockname()[1]
        await close_and_wait(tr, server_tr)

    run(loop, main())


def test_connection_made_runs_before_the_endpoint_returns(loop):
    async def main():
        order = []

        class P(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                order.append("made")

        tr, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        order.append("returned")
        assert order == ["made", "returned"]
        tr.close()
        await asyncio.sleep(0.01)

    run(loop, main())


def test_cancelled_while_waiting_closes_the_transport(loop):
    async def main():
        made = []

        class P(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                made.append(transport)

            def connection_lost(self, exc):
                made.append("lost")

        task = loop.create_task(
            loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        )
        await asyncio.sleep(0)  # the socket is made without awaiting: the waiter is pending
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: "lost" in made)

    run(loop, main())


@pytest.mark.timeout(30)
def test_many_datagrams_in_order_both_ways(loop):
    # A short burst of traffic between two endpoints with a windowed sender (so the
    # receiver's buffer never overflows on a slow machine): nothing lost, duplicated or
    # reordered on loopback.
    async def main():
        total, window = 3000, 64

        class Acker(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                self.transport.sendto(data[:8], addr)

        server_tr, server = await loop.create_datagram_endpoint(
            Acker, local_addr=("127.0.0.1", 0)
        )
        tr, client = await loop.create_datagram_endpoint(
            Recorder, remote_addr=server_tr.get_extra_info("sockname")
        )
        for i in range(total):
            while i - len(client.datagrams) >= window:
                await client.wait_for(lambda i=i: i - len(client.datagrams) < window)
            tr.sendto(b"%08d" % i + b"p" * (i % 1400))
        await client.datagram(total, timeout=20)
        assert [d for d, _ in client.datagrams] == [b"%08d" % i for i in range(total)]
        assert [len(d) for d, _ in server.datagrams] == [8 + i % 1400 for i in range(total)]
        await close_and_wait(tr, server_tr)

    run(loop, main(), timeout=25)
