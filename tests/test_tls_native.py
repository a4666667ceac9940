"""The native TLS data path (``ferroloop.tls.install_fast_path``, ``tls.rs``): the hot methods
of an established ``SSLProtocol`` run natively, and must behave exactly as asyncio's.

Each test runs on stock asyncio (the oracle) and on ferroloop, with the same assertions:
flow control both ways with data in flight, ``BufferedProtocol`` applications with small
buffers, close_notify and eof ordering (also while reading is paused), abort mid-stream,
errors raised by the application, the write checks, TLS over TLS, a TLS 1.3 key update from
an ``openssl s_server`` peer, and a custom ``sslobject_class``. The version gate and the
switch are checked too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest
import test_tls
from conftest import run
from test_tls import (
    HOST,
    NAME,
    Events,
    close_server,
    make_client_ctx,
    make_server_ctx,
    tls_echo_server,
)

trustme = pytest.importorskip("trustme")

# test_tls's fixtures (certificates made at test time, the leak check), under their names.
ca = test_tls.ca
server_cert = test_tls.server_cert
sctx = test_tls.sctx
cctx = test_tls.cctx
no_unclosed_resources = test_tls.no_unclosed_resources


def _fast(loop, transport) -> bool:
    """Whether ``transport`` (an ``_SSLProtocolTransport``) has ferroloop's native path."""
    proto = transport._ssl_protocol
    return "buffer_updated" in vars(proto) and "write" in vars(transport)


def _is_ferroloop(loop) -> bool:
    return type(loop).__module__.startswith("ferroloop")


# ---------------------------------------------------------------- the gate


def test_native_path_is_on_for_the_pythons_it_was_written_for():
    from ferroloop import tls

    # 3.14 (checked on 3.14.8): its sslproto.py is 3.13's; only its compiled form differs.
    if sys.version_info[:2] in {(3, 11), (3, 12), (3, 13), (3, 14)}:
        assert tls.NATIVE_TLS, tls.NATIVE_TLS_REASON
    assert isinstance(tls.NATIVE_TLS_REASON, str)


def _fresh_interpreter(code: str, **env: str) -> str:
    """What ``code`` prints in a new interpreter, with ``env`` and without
    FERROLOOP_NATIVE_TLS unless given (ferroloop.tls decides its gate at import)."""
    full = {k: v for k, v in os.environ.items() if k != "FERROLOOP_NATIVE_TLS"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True
    ).stdout


def test_switch_and_unknown_sslproto_fall_back_visibly():
    out = _fresh_interpreter(
        "import ferroloop.tls as t; print(t.NATIVE_TLS, t.NATIVE_TLS_REASON)",
        FERROLOOP_NATIVE_TLS="0",
    )
    assert out.startswith("False switched off"), out
    # A changed asyncio.sslproto (here: one more attribute read in _do_write) is refused.
    code = (
        "import asyncio.sslproto as s\n"
        "src = s.SSLProtocol._do_write\n"
        "def _do_write(self):\n"
        "    self._something_new\n"
        "    return src(self)\n"
        "s.SSLProtocol._do_write = _do_write\n"
        "import ferroloop.tls as t; print(t.NATIVE_TLS, t.NATIVE_TLS_REASON)"
    )
    out = _fresh_interpreter(code)
    assert out.startswith("False unknown asyncio.sslproto"), out


def test_ssl_protocol_state_as_asyncio_builds_it_but_the_buffer(ca):
    # tls.new_ssl_protocol runs asyncio's __init__ unchanged except that the 256 KiB read
    # buffer is not zero-filled: every other attribute must be what SSLProtocol(...) makes,
    # max_size must read the class's value again, and the buffer must have the full size.
    from asyncio import sslproto

    from ferroloop import tls

    assert tls._UNINIT_BUFFER is tls.NATIVE_TLS
    loop = asyncio.new_event_loop()
    try:
        ctx = make_client_ctx(ca)
        args = (loop, asyncio.Protocol(), ctx, None, False, NAME)
        kwargs = {"ssl_handshake_timeout": 7.0, "call_connection_made": False}
        ours, theirs = tls.new_ssl_protocol(*args, **kwargs), sslproto.SSLProtocol(*args, **kwargs)
    finally:
        loop.close()
    assert type(ours) is sslproto.SSLProtocol
    assert "max_size" not in vars(ours) and ours.max_size == sslproto.SSLProtocol.max_size
    assert set(vars(ours)) == set(vars(theirs))
    assert type(ours._ssl_buffer) is bytearray and len(ours._ssl_buffer) == ours.max_size
    assert ours._ssl_buffer_view.obj is ours._ssl_buffer
    assert ours._ssl_buffer_view.nbytes == theirs._ssl_buffer_view.nbytes
    made_per_instance = {"_ssl_buffer", "_ssl_buffer_view", "_incoming", "_outgoing", "_sslobj",
                         "_app_transport", "_write_backlog", "_extra"}
    for name, value in vars(theirs).items():
        if name in made_per_instance:
            assert type(getattr(ours, name)) is type(value), name
        else:
            assert getattr(ours, name) == value, name
    assert ours._extra == theirs._extra
    for proto in (ours, theirs):
        # Never connected: mark the app transports closed so that they do not warn.
        proto._app_transport._closed = True


def test_ssl_protocol_init_reading_max_size_twice_is_refused():
    # The uninitialised buffer relies on __init__ reading max_size once (for the buffer);
    # an __init__ that reads it again keeps asyncio's construction.
    code = (
        "import asyncio.sslproto as s\n"
        "src = s.SSLProtocol.__init__\n"
        "def __init__(self, *a, **k):\n"
        "    self.max_size\n"
        "    self.max_size\n"
        "    src(self, *a, **k)\n"
        "s.SSLProtocol.__init__ = __init__\n"
        "import ferroloop.tls as t; print(t._init_reads_max_size_once(), t._UNINIT_BUFFER)"
    )
    out = _fresh_interpreter(code)
    assert out.split() == ["False", "False"], out


def test_installed_on_both_sides_and_on_start_tls(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"x")
        await proto.read_until(1)
        if _is_ferroloop(loop):
            from ferroloop import tls

            assert _fast(loop, transport) == tls.NATIVE_TLS
            assert _fast(loop, server.protocols[0].transport) == tls.NATIVE_TLS
            # The protocol stays asyncio's own class, and so does its transport.
            assert type(transport._ssl_protocol) is asyncio.sslproto.SSLProtocol
            assert type(transport) is asyncio.sslproto._SSLProtocolTransport
        else:
            assert not _fast(loop, transport)
        transport.close()
        await proto.lost_once()
        await server.protocols[0].lost_once()
        await close_server(server)

    run(loop, main())


def test_custom_sslobject_class_keeps_its_methods(loop, sctx, ca):
    calls = []

    class Counting(ssl.SSLObject):
        def read(self, len=1024, buffer=None):
            calls.append("read")
            return super().read(len, buffer)

        def write(self, data):
            calls.append("write")
            return super().write(data)

    ctx = make_client_ctx(ca)
    ctx.sslobject_class = Counting

    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=ctx, server_hostname=NAME
        )
        assert not _fast(loop, transport)
        transport.write(b"hello")
        assert await proto.read_until(5) == b"hello"
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())
    assert "read" in calls and "write" in calls


# ---------------------------------------------------------------- flow control


class Writer(Events):
    """Records pause_writing/resume_writing between the other events."""

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


def test_large_writes_pause_and_resume_writing(loop, sctx, cctx):
    block = bytes(range(256)) * 256  # 64 KiB
    limit = 256 * 1024 * 1024

    async def main():
        server_protos: list[Events] = []

        def factory():
            p = Events()
            server_protos.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Writer, HOST, port, ssl=cctx, server_hostname=NAME
        )
        await asyncio.sleep(0.05)
        sproto = server_protos[0]
        sproto.transport.pause_reading()
        assert not sproto.transport.is_reading()
        # The kernel's buffers take a few MiB first; then the socket transport pauses the
        # SSLProtocol, records pile up in its outgoing BIO, and past the high-water mark the
        # application's pause_writing runs, inside write().
        written = 0
        while proto.events == ["made"] and written < limit:
            transport.write(block)
            written += len(block)
        assert proto.events == ["made", "pause"]
        assert transport.get_write_buffer_size() >= 512 * 1024
        assert transport.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
        for _ in range(4):  # writes while paused are still taken
            transport.write(block)
            written += len(block)
        await asyncio.sleep(0.1)
        # The socket may drain into the kernel meanwhile: SSLProtocol then hands its whole
        # outgoing BIO to the socket transport (whose buffer it does not count) and resumes.
        assert proto.events in (["made", "pause"], ["made", "pause", "resume"])
        sproto.transport.resume_reading()
        assert await sproto.read_until(written, timeout=20) == block * (written // len(block))
        async with asyncio.timeout(5):
            while proto.events[-1] != "resume":
                await asyncio.sleep(0.01)
        assert proto.events == ["made", "pause", "resume"]
        assert transport.get_write_buffer_size() == 0
        transport.close()
        await proto.lost_once()
        await sproto.lost_once()
        await close_server(server)

    run(loop, main(), timeout=30)


def test_write_buffer_limits_zero_pause_on_every_write(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Writer, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.set_write_buffer_limits(high=0)
        assert transport.get_write_buffer_limits() == (0, 0)
        transport.write(b"a" * 100)
        # SSLProtocol counts its outgoing BIO: the record was handed to the socket at once,
        # so nothing is pending and the mark is not crossed... or it is, with 0 >= 0.
        events_after_write = list(proto.events)
        assert await proto.read_until(100) == b"a" * 100
        transport.close()
        await proto.lost_once()
        await close_server(server)
        return events_after_write

    events = run(loop, main())
    # asyncio's rule (size >= high while not paused) with size 0 and high 0: pause at once.
    assert events[:2] == ["made", "pause"]


def test_pause_reading_on_the_app_transport_with_data_in_flight(loop, sctx, cctx):
    chunk = b"z" * 10_000

    async def main():
        server_protos: list[Events] = []

        class Pausing(Events):
            paused_once = False

            def data_received(self, data):
                super().data_received(data)
                if not self.paused_once:
                    self.paused_once = True
                    self.transport.pause_reading()
                    self.events.append("paused")

        def factory():
            p = Pausing()
            server_protos.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(chunk)
        sproto = server_protos[0]
        await sproto.read_until(1)
        got_when_paused = len(sproto.data)
        for _ in range(30):
            transport.write(chunk)
        transport.close()  # close_notify follows the data
        await asyncio.sleep(0.3)
        # Nothing delivered while paused, and no eof either (it waits behind the data).
        assert len(sproto.data) == got_when_paused
        assert sproto.events == ["made", "data", "paused"]
        assert not sproto.transport.is_reading()
        sproto.transport.resume_reading()
        assert sproto.transport.is_reading()
        assert await sproto.read_until(31 * len(chunk)) == chunk * 31
        assert await sproto.lost_once() is None
        assert sproto.events == ["made", "data", "paused", "data", "eof", "lost"]
        await proto.lost_once()
        await close_server(server)

    run(loop, main(), timeout=15)


def test_pause_reading_then_resume_in_the_same_iteration(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.pause_reading()
        transport.resume_reading()
        transport.pause_reading()
        transport.write(b"q" * 5000)
        await asyncio.sleep(0.2)
        assert proto.data == b""
        transport.resume_reading()
        assert await proto.read_until(5000) == b"q" * 5000
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())


# ---------------------------------------------------------------- BufferedProtocol apps


class SmallBufferEcho(asyncio.BufferedProtocol):
    """A server application reading into a 100-byte buffer and echoing each piece."""

    def __init__(self, size: int = 100):
        loop = asyncio.get_running_loop()
        self.buf = bytearray(size)
        self.sizehints: list[int] = []
        self.events: list[str] = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        if self.events[-1] != "data":
            self.events.append("data")
        self.transport.write(bytes(self.buf[:nbytes]))

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


@pytest.mark.parametrize("size", [100, 16 * 1024 + 1])
def test_buffered_protocol_server_with_a_small_buffer(loop, sctx, cctx, size):
    payload = bytes(range(256)) * 400  # 100 KiB: many records, many buffers each

    async def main():
        apps: list[SmallBufferEcho] = []

        def factory():
            app = SmallBufferEcho(size)
            apps.append(app)
            return app

        server = await loop.create_server(factory, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(payload)
        assert await proto.read_until(len(payload), timeout=10) == payload
        transport.close()
        await proto.lost_once()
        app = apps[0]
        assert await asyncio.wait_for(app.lost, 5) is None
        assert app.events == ["made", "data", "eof", "lost"]
        # The size hint is what the incoming BIO still holds (SSLProtocol's read buffer size).
        assert all(h >= 0 for h in app.sizehints)
        await close_server(server)

    run(loop, main(), timeout=15)


# ---------------------------------------------------------------- eof, close, abort, errors


def test_write_eof_is_not_supported(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        assert transport.can_write_eof() is False
        with pytest.raises(NotImplementedError):
            transport.write_eof()
        transport.write(b"still open")
        assert await proto.read_until(10) == b"still open"
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())


def test_write_checks(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        with pytest.raises(TypeError) as info:
            transport.write("text")
        assert str(info.value) == "data: expecting a bytes-like instance, got str"
        with pytest.raises(TypeError):
            transport.write(12)
        transport.write(b"")
        transport.write(bytearray(b""))
        transport.write(bytearray(b"ab"))
        transport.write(memoryview(b"cd"))
        transport.writelines([b"e", bytearray(b"f"), memoryview(b"gh")])
        transport.writelines(iter([b"i"]))
        assert await proto.read_until(9) == b"abcdefghi"
        transport.close()
        transport.write(b"ignored after close")
        await proto.lost_once()
        await close_server(server)

    run(loop, main())


def test_write_after_connection_lost_and_second_close(loop, sctx, cctx, caplog):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.close()
        await proto.lost_once()
        for _ in range(8):
            transport.write(b"x")  # counted, and logged from the 5th on
        transport.close()  # the second close forgets the protocol, as asyncio's does
        with pytest.raises(AttributeError):
            transport.write(b"x")
        await close_server(server)

    with caplog.at_level("WARNING", logger="asyncio"):
        run(loop, main())
    assert sum("SSL connection is closed" in r.getMessage() for r in caplog.records) >= 1


def test_peer_close_notify_gives_eof_then_connection_lost(loop, sctx, cctx, caplog):
    async def main():
        server_protos: list[Events] = []

        class KeepOpen(Events):
            def eof_received(self):
                super().eof_received()
                return True  # has no effect with TLS, and asyncio says so

        def factory():
            p = KeepOpen()
            server_protos.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"bye")
        transport.close()
        sproto = server_protos[0]
        assert await sproto.lost_once() is None
        assert sproto.events == ["made", "data", "eof", "lost"]
        assert bytes(sproto.data) == b"bye"
        assert await proto.lost_once() is None
        assert proto.events == ["made", "eof", "lost"]
        await close_server(server)

    with caplog.at_level("WARNING", logger="asyncio"):
        run(loop, main())
    assert any("has no effect when using ssl" in r.getMessage() for r in caplog.records)


def test_abort_mid_stream(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"a" * 100_000)
        await proto.read_until(1)
        transport.write(b"b" * 2_000_000)
        transport.abort()
        assert transport.is_closing()
        transport.write(b"after abort")  # ignored
        assert await proto.lost_once() is None
        assert "eof" not in proto.events
        sproto = server.protocols[0]
        await sproto.lost_once()
        await close_server(server)

    run(loop, main(), timeout=15)


def test_server_aborts_from_data_received(loop, sctx, cctx):
    async def main():
        server_protos: list[Events] = []

        class Aborting(Events):
            def data_received(self, data):
                super().data_received(data)
                self.transport.write(b"last words")
                self.transport.abort()

        def factory():
            p = Aborting()
            server_protos.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"x" * 50_000)
        sproto = server_protos[0]
        assert await sproto.lost_once() is None
        assert sproto.events == ["made", "data", "lost"]
        await proto.lost_once()
        transport.close()
        await close_server(server)

    run(loop, main())


def test_data_received_raising_is_a_fatal_error(loop, sctx, cctx):
    reported = []

    async def main():
        loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))
        server_protos: list[Events] = []

        class Raising(Events):
            def data_received(self, data):
                super().data_received(data)
                raise ValueError("app failed")

        def factory():
            p = Raising()
            server_protos.append(p)
            return p

        server = await loop.create_server(factory, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"boom")
        sproto = server_protos[0]
        exc = await sproto.lost_once()
        assert isinstance(exc, ValueError)
        await proto.lost_once()
        transport.close()
        await close_server(server)

    run(loop, main())
    messages = [ctx["message"] for ctx in reported]
    assert messages == ["Fatal error on SSL protocol"], messages
    assert isinstance(reported[0]["exception"], ValueError)
    assert isinstance(reported[0]["protocol"], asyncio.sslproto.SSLProtocol)


def test_pause_writing_raising_goes_to_the_exception_handler(loop, sctx, cctx):
    reported = []

    class BadPause(Writer):
        def pause_writing(self):
            super().pause_writing()
            raise RuntimeError("cannot pause")

    async def main():
        loop.set_exception_handler(lambda lp, ctx: reported.append(ctx["message"]))
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            BadPause, HOST, port, ssl=cctx, server_hostname=NAME
        )
        # SSLProtocol counts only what it holds (its outgoing BIO and backlog), which a
        # socket that takes everything keeps at 0: a high-water mark of 0 pauses at once.
        transport.set_write_buffer_limits(high=0)
        assert proto.events == ["made", "pause"]
        transport.write(b"y" * 100_000)
        await proto.read_until(100_000, timeout=10)
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main(), timeout=15)
    assert reported[:1] == ["protocol.pause_writing() failed"]


# ---------------------------------------------------------------- TLS over TLS


def test_tls_over_tls_both_sides_large_echo(loop, ca, sctx, cctx):
    inner_cert = ca.issue_cert("inner.example")
    inner_sctx = make_server_ctx(inner_cert)
    payload = bytes(range(256)) * 1200  # 300 KiB through two record layers

    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(inner_sctx)
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=cctx, server_hostname=NAME
        )
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        outer = writer.transport
        await writer.start_tls(make_client_ctx(ca), server_hostname="inner.example")
        inner = writer.transport
        if _is_ferroloop(loop):
            from ferroloop import tls

            assert _fast(loop, outer) == tls.NATIVE_TLS
            assert _fast(loop, inner) == tls.NATIVE_TLS
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        assert got == payload
        writer.close()
        await writer.wait_closed()
        await close_server(server)

    run(loop, main(), timeout=20)


# ---------------------------------------------------------------- TLS 1.3 key update


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_key_update_from_an_openssl_peer(loop, server_cert, cctx, tmp_path):
    # ssl.SSLObject cannot start a key update; `openssl s_server` can: the command "K" on its
    # stdin sends a KeyUpdate that requests one back. The data after it is encrypted with the
    # new keys both ways, so the exchange only works if the record layer let OpenSSL take the
    # update in and sent its answer out.
    cert = tmp_path / "cert.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(cert))
    port = _free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{HOST}:{port}", "-cert", str(cert),
         "-tls1_3", "-ign_eof", "-msg"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        # s_server prints ACCEPT once it listens (a probe connection would use up its first
        # accept).
        head = b""
        while b"ACCEPT" not in head:
            line = server.stdout.readline()
            assert line, head
            head += line

        def send(line: bytes) -> None:
            server.stdin.write(line)
            server.stdin.flush()

        async def main():
            transport, proto = await loop.create_connection(
                Events, HOST, port, ssl=cctx, server_hostname=NAME
            )
            assert transport.get_extra_info("ssl_object").version() == "TLSv1.3"
            transport.write(b"before\n")
            await asyncio.sleep(0.2)
            await loop.run_in_executor(None, send, b"K\n")
            await asyncio.sleep(0.2)
            await loop.run_in_executor(None, send, b"after the update\n")
            assert (await proto.read_until(17)).endswith(b"after the update\n")
            transport.write(b"client after the update\n")
            await asyncio.sleep(0.3)
            transport.close()
            await proto.lost_once()

        run(loop, main(), timeout=20)
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    text = out.decode(errors="replace")
    # -msg: ">>>" is what s_server sent, "<<<" what it received.
    sent = [line for line in text.splitlines() if line.startswith(">>>") and "KeyUpdate" in line]
    got = [line for line in text.splitlines() if line.startswith("<<<") and "KeyUpdate" in line]
    assert sent and got, text  # its update, and the one it requested back from our side
    assert "before" in text and "client after the update" in text, text
