"""getaddrinfo / getnameinfo: exactly what the socket module returns.
Oracle: ``socket.getaddrinfo`` itself, and stock asyncio for the loop-level behaviour."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import socket

import pytest
from conftest import _import_ferroloop, run

HOSTS = [
    "127.0.0.1", "0.0.0.0", "255.255.255.255", "10.1.2.3", b"127.0.0.1",
    "::1", "::", "::0001", "2001:db8::1", "2001:DB8:0:0:0:0:0:1", "::ffff:1.2.3.4", "::1.2.3.4",
    "fe80::1%lo", "fe80::1%1", "fe80::abcd%4294967295", "fe80::1%no-such-if", "::1%lo",
    "ff02::1%lo", "127.1", "1.2.3.256", "01.2.3.4", " 127.0.0.1", "localhost", "", None,
    "1.2.3.4%lo", "[::1]", "::1%", b"\xff", "127.0.0.1\x00",
]
PORTS = [None, 0, 80, "80", b"80", "080", "", 65535, 65536, -1, "http", "8o", True, 8.0]
FAMILIES = [0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX]
TYPES = [0, socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW]
PROTOS = [0, socket.IPPROTO_TCP, socket.IPPROTO_UDP, 1]
FLAGS = [0, socket.AI_PASSIVE, socket.AI_CANONNAME, socket.AI_NUMERICHOST,
         socket.AI_NUMERICSERV, socket.AI_ADDRCONFIG, socket.AI_V4MAPPED | socket.AI_ALL,
         socket.AI_CANONNAME | socket.AI_NUMERICHOST]


def _oracle(*args):
    try:
        return ("ok", socket.getaddrinfo(*args))
    except Exception as exc:  # noqa: BLE001 - compared as data
        return ("error", type(exc), exc.args)


def _exact(infos):
    """A comparable form that also keeps the enum classes (repr shows them)."""
    return [tuple((type(x), x) for x in info) for info in infos]


def test_numeric_fast_path_equals_socket_getaddrinfo():
    # ferroloop-only: the in-process answer for IP-address hosts. Over the whole grid it must
    # either decline (None: the loop then asks libc in the executor) or return exactly what
    # socket.getaddrinfo returns; it must never answer where libc raises.
    native = _import_ferroloop()._native
    answered = declined = 0
    for args in itertools.product(HOSTS, PORTS, FAMILIES, TYPES, PROTOS, FLAGS):
        mine = native.getaddrinfo_numeric(*args)
        if mine is None:
            declined += 1
            continue
        answered += 1
        want = _oracle(*args)
        assert want[0] == "ok", (args, want)
        assert _exact(mine) == _exact(want[1]), args
        assert repr(mine) == repr(want[1]), args
    # The fast path must actually cover the common numeric cases.
    assert answered > 5000, answered
    assert declined > answered


@pytest.mark.parametrize("host, port", [
    ("127.0.0.1", 80), ("::1", "443"), ("fe80::1%lo", 0), (b"10.0.0.1", None),
    ("2001:db8::1", b"8080"),
])
def test_common_numeric_hosts_take_the_fast_path(host, port):
    native = _import_ferroloop()._native
    for kind in (0, socket.SOCK_STREAM, socket.SOCK_DGRAM):
        got = native.getaddrinfo_numeric(host, port, 0, kind, 0, 0)
        assert got is not None
        assert got == socket.getaddrinfo(host, port, 0, kind)


def test_loop_getaddrinfo_matches_socket_module(loop):
    # Only names this machine answers without DNS (numeric, /etc/hosts), except under
    # AI_NUMERICHOST, which fails non-numeric names locally: a DNS timeout must not make
    # the test slow or flaky.
    hosts = ["127.0.0.1", "::1", "localhost", "fe80::1%lo", "127.1", None]
    ports = [None, 80, "http", "80", "nope"]
    cases = list(itertools.product(hosts, ports, [0, socket.AF_INET], [0, socket.SOCK_STREAM],
                                   [0, socket.AI_PASSIVE, socket.AI_NUMERICHOST]))
    cases += [("1.2.3.256", 80, 0, 0, socket.AI_NUMERICHOST),
              ("no-such-host.invalid", "http", 0, 0, socket.AI_NUMERICHOST)]

    async def main():
        mismatches = []
        for host, port, family, kind, flags in cases:
            want = _oracle(host, port, family, kind, 0, flags)
            try:
                got = ("ok", await loop.getaddrinfo(host, port, family=family, type=kind,
                                                    flags=flags))
            except Exception as exc:  # noqa: BLE001 - compared as data
                got = ("error", type(exc), exc.args)
            if got != want:
                mismatches.append(((host, port, family, kind, flags), got, want))
        return mismatches

    assert run(loop, main(), timeout=60) == []


def test_getaddrinfo_bad_argument_types(loop):
    async def main():
        with pytest.raises(TypeError) as got:
            await loop.getaddrinfo("127.0.0.1", 80, family="x")
        with pytest.raises(TypeError) as want:
            socket.getaddrinfo("127.0.0.1", 80, "x")
        assert str(got.value) == str(want.value)
        with pytest.raises(OSError):
            await loop.getaddrinfo("127.0.0.1", 80.5)

    run(loop, main())


def test_numeric_getaddrinfo_needs_no_executor(ferro_loop):
    # ferroloop-only: numeric hosts are answered without the default executor, so a loop
    # whose executor refuses work still resolves them (asyncio would fail here).
    class Refusing(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            raise RuntimeError("executor used")

    loop = ferro_loop
    loop.set_default_executor(Refusing())

    async def main():
        got = await loop.getaddrinfo("127.0.0.1", 8080, type=socket.SOCK_STREAM)
        with pytest.raises(RuntimeError, match="executor used"):
            await loop.getaddrinfo("localhost", 8080)
        return got

    assert run(loop, main()) == socket.getaddrinfo("127.0.0.1", 8080, type=socket.SOCK_STREAM)


def test_getaddrinfo_debug_mode_logs_like_asyncio(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level("DEBUG", logger="asyncio"):
        infos = run(loop, loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert infos == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert "Get address info 127.0.0.1:80, type=<SocketKind.SOCK_STREAM: 1>" in messages
    assert any(m.startswith("Getting address info 127.0.0.1:80, type=") for m in messages)


@pytest.mark.parametrize("sockaddr, flags", [
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("::1", 443, 0, 0), socket.NI_NUMERICHOST),
])
def test_getnameinfo_matches_socket_module(loop, sockaddr, flags):
    assert run(loop, loop.getnameinfo(sockaddr, flags)) == socket.getnameinfo(sockaddr, flags)


def test_getnameinfo_error(loop):
    async def main():
        with pytest.raises(TypeError):
            await loop.getnameinfo("not a tuple")

    run(loop, main())


def test_getaddrinfo_is_awaitable_from_tasks(loop):
    async def main():
        return await asyncio.gather(*(loop.getaddrinfo("127.0.0.1", p) for p in range(5)))

    results = run(loop, main())
    assert [r[0][4][1] for r in results] == list(range(5))
