"""TLS on the loop's transports: ``ssl=`` in create_connection/create_server, the unix
variants and connect_accepted_socket, ``loop.start_tls`` on both sides, ``StreamWriter.start_tls``,
TLS over TLS through a proxy, extra info, and the failures asyncio reports (bad certificate,
hostname mismatch, handshake timeout, peer closing mid-handshake, unclean shutdown, shutdown
timeout), each with ``connection_lost`` exactly once and no transport left unclosed.

Certificates come from a CA made at test time (``trustme``); no key is stored anywhere.
Oracle: stock asyncio (each test runs on both loops); the ``cross`` tests also put a loop of
the other kind on the other end, in a second thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import socket
import ssl
import sys
import threading
import time
import warnings
import weakref

import pytest
from conftest import LoopFactory, run
from stream_helpers import wait_closed_waits

trustme = pytest.importorskip("trustme")

HOST = "127.0.0.1"
NAME = "localhost"  # the name the server certificate is issued for (with 127.0.0.1)


# ---------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca):
    return ca.issue_cert(NAME, HOST, "::1")


def make_server_ctx(cert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def make_client_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def sctx(server_cert):
    return make_server_ctx(server_cert)


@pytest.fixture
def cctx(ca):
    return make_client_ctx(ca)


# ---------------------------------------------------------------- leak checks


# Tests where stock asyncio itself leaves a socket unclosed: create_connection does not close
# the socket it connected when SSLProtocol's constructor rejects a timeout (ferroloop does).
ASYNCIO_LEAKS_SOCKETS = {"test_invalid_handshake_timeouts"}


@pytest.fixture(autouse=True)
def no_unclosed_resources(request):
    """Fail a test that leaves a transport, socket or event loop unclosed (ResourceWarning),
    checked after the loop fixture has closed the loop and everything was collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("loop_factory") if callspec else None
    if kind == "asyncio" and request.node.originalname in ASYNCIO_LEAKS_SOCKETS:
        leaks = [m for m in leaks if not m.startswith("unclosed <socket.socket")]
    assert not leaks, leaks


class Events(asyncio.Protocol):
    """Records the protocol callbacks; ``lost`` resolves on connection_lost, whose number of
    calls is checked by ``lost_once``."""

    def __init__(self, echo: bool = False):
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.events: list[str] = []
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.lost_calls = 0
        self._grew = asyncio.Event()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        self._grew.set()
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)

    async def read_until(self, n: int, timeout: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout):
            while len(self.data) < n:
                self._grew.clear()
                await self._grew.wait()
        return bytes(self.data)

    async def lost_once(self, timeout: float = 5.0):
        exc = await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        await asyncio.sleep(0.01)  # a second call would come in the next iterations
        assert self.lost_calls == 1, self.events
        return exc


async def tls_echo_server(sctx, **kwargs):
    """A TLS server whose connections echo; ``protocols`` lists them."""
    protocols: list[Events] = []

    def factory():
        p = Events(echo=True)
        protocols.append(p)
        return p

    server = await asyncio.get_running_loop().create_server(factory, HOST, 0, ssl=sctx, **kwargs)
    server.protocols = protocols
    return server, server.sockets[0].getsockname()[1]


async def close_server(server):
    server.close()
    await server.wait_closed()


# ---------------------------------------------------------------- handshake and echo


@pytest.mark.parametrize("size", [1, 1024, 16 * 1024, 300 * 1024])
def test_echo_through_protocols(loop, sctx, cctx, size):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        assert isinstance(transport, asyncio.Transport)
        assert proto.events == ["made"]  # connection_made ran after the handshake, before return
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        transport.write(payload[: size // 2])
        transport.writelines([payload[size // 2:]])
        assert await proto.read_until(size) == payload
        assert not transport.can_write_eof()
        transport.close()
        assert transport.is_closing()
        assert await proto.lost_once() is None
        # The server answered close_notify with its own: eof, then connection_lost(None).
        assert proto.events == ["made", "data", "eof", "lost"]
        # The server's side saw close_notify: eof, then connection_lost(None), once.
        sproto = server.protocols[0]
        assert await sproto.lost_once() is None
        assert sproto.events == ["made", "data", "eof", "lost"]
        await close_server(server)

    run(loop, main(), timeout=15)


def test_server_closes_first(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"ping")
        assert await proto.read_until(4) == b"ping"
        server.protocols[0].transport.close()
        assert await proto.lost_once() is None
        assert proto.events == ["made", "data", "eof", "lost"]
        assert await server.protocols[0].lost_once() is None
        await close_server(server)

    run(loop, main())


def test_closed_transport_kept_by_the_app_does_not_keep_the_ssl_context(loop, ca, sctx):
    # CPython's test_ssl.test_create_connection_memory_leak, with the references made explicit:
    # the application keeps its protocol and transport after the connection is over (the
    # protocol stores the transport), and neither may keep the SSLContext alive, nor OpenSSL's
    # state with it. On asyncio the closed transport drops its SSLProtocol; ferroloop's native
    # write bound onto that transport must not hold the SSLObject either. No gc.collect: a
    # reference cycle would keep it too.
    ctx = make_client_ctx(ca)
    ctx_ref = weakref.ref(ctx)

    async def main(ctx):
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=ctx, server_hostname=NAME
        )
        transport.write(b"ping")
        assert await proto.read_until(4) == b"ping"
        server.protocols[0].transport.close()
        assert await proto.lost_once() is None
        transport.close()
        await close_server(server)
        return transport, proto

    transport, proto = run(loop, main(ctx))
    del ctx
    assert proto.transport is transport and transport.is_closing()
    assert ctx_ref() is None


def test_close_from_outside_the_running_loop(loop, sctx, cctx):
    # As CPython's test_events test_create_server_ssl: the server's TLS transport is closed
    # while the loop is not running, then the loop only waits for connection_lost. The
    # close_notify written then must go out without a callback to end a batch first.
    server, port = run(loop, tls_echo_server(sctx))
    transport, proto = run(loop, loop.create_connection(
        Events, HOST, port, ssl=cctx, server_hostname=NAME))
    transport.write(b"x")
    run(loop, proto.read_until(1))
    sproto = server.protocols[0]
    sproto.transport.close()
    # Wait on the bare future (wait_for would add a task, whose step ends a batch).
    guard = loop.call_later(5, lambda: sproto.lost.done() or sproto.lost.set_exception(
        TimeoutError("close_notify written outside the loop was not sent")))
    assert loop.run_until_complete(sproto.lost) is None
    guard.cancel()
    assert run(loop, proto.lost_once()) is None
    server.close()
    run(loop, server.wait_closed())


def test_streams_and_large_transfer_with_flow_control(loop, sctx, cctx):
    # 4 MiB each way through asyncio streams: the TLS transport pauses and resumes the
    # socket transport (and the other way round) many times.
    async def handler(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=cctx, server_hostname=NAME
        )
        block = bytes(range(256)) * 256  # 64 KiB
        total = 64 * len(block)

        async def send():
            for _ in range(64):
                writer.write(block)
                await writer.drain()

        sender = asyncio.create_task(send())
        got = bytearray()
        while len(got) < total:
            chunk = await reader.read(1 << 20)
            assert chunk
            got += chunk
        await sender
        assert bytes(got) == block * 64
        writer.close()
        await writer.wait_closed()
        await close_server(server)

    run(loop, main(), timeout=30)


def test_buffered_protocol_client(loop, sctx, cctx):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)
            self.got = bytearray()
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return memoryview(self.buf)  # SSLProtocol slices it: must not be a copy

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Buffered, HOST, port, ssl=cctx, server_hostname=NAME
        )
        payload = b"abc" * 10_000
        transport.write(payload)
        async with asyncio.timeout(5):
            while len(proto.got) < len(payload):
                await asyncio.sleep(0.005)
        assert bytes(proto.got) == payload
        transport.close()
        assert await proto.lost is None
        await close_server(server)

    run(loop, main())


def test_ssl_true_uses_the_default_context(loop, sctx):
    # ssl=True: asyncio's default client context (system CAs), which does not trust the
    # test CA: the certificate is refused. server_hostname defaults to the host.
    async def main():
        server, port = await tls_echo_server(sctx)
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await loop.create_connection(Events, HOST, port, ssl=True)
        assert ei.value.reason == "CERTIFICATE_VERIFY_FAILED"
        await close_server(server)

    run(loop, main())


def test_extra_info(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        assert transport.get_extra_info("sslcontext") is cctx
        sslobj = transport.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_hostname == NAME
        assert not sslobj.server_side
        peercert = transport.get_extra_info("peercert")
        assert ("DNS", NAME) in peercert["subjectAltName"]
        assert peercert == sslobj.getpeercert()
        cipher = transport.get_extra_info("cipher")
        assert cipher == sslobj.cipher() and isinstance(cipher[0], str)
        assert transport.get_extra_info("compression") == sslobj.compression()
        # The socket-level keys come from the socket transport underneath.
        assert transport.get_extra_info("peername") == (HOST, port)
        assert transport.get_extra_info("sockname")[0] == HOST
        sock = transport.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.getpeername() == (HOST, port)
        assert transport.get_extra_info("nonexistent", "dflt") == "dflt"

        stransport = await asyncio.wait_for(server.protocols[0].made, 5)
        assert stransport.get_extra_info("sslcontext") is sctx
        assert stransport.get_extra_info("ssl_object").server_side
        assert stransport.get_extra_info("peercert") is None  # no client certificate
        assert stransport.get_extra_info("cipher") == cipher
        assert stransport.get_extra_info("peername") == transport.get_extra_info("sockname")
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())


def test_client_certificate_alpn_and_sni(loop, ca, server_cert, cctx):
    client_cert = ca.issue_cert("client@example.org")
    seen_sni = []

    async def main():
        sctx = make_server_ctx(server_cert)
        sctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(sctx)
        sctx.set_alpn_protocols(["h2", "http/1.1"])
        sctx.sni_callback = lambda obj, name, ctx: seen_sni.append(name)
        client_cert.configure_cert(cctx)
        cctx.set_alpn_protocols(["http/1.1"])
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        stransport = await asyncio.wait_for(server.protocols[0].made, 5)
        assert stransport.get_extra_info("peercert")["subjectAltName"] == (
            ("email", "client@example.org"),
        )
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())
    assert seen_sni == [NAME]


def test_unix_sockets(loop, sctx, cctx, tmp_path):
    path = str(tmp_path / "tls.sock")

    async def main():
        protocols = []

        def factory():
            protocols.append(Events(echo=True))
            return protocols[-1]

        server = await loop.create_unix_server(factory, path, ssl=sctx)
        transport, proto = await loop.create_unix_connection(
            Events, path, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"over a unix socket")
        assert await proto.read_until(18) == b"over a unix socket"
        assert transport.get_extra_info("peername") == path
        transport.close()
        assert await proto.lost_once() is None
        assert await protocols[0].lost_once() is None
        await close_server(server)

    run(loop, main())


def test_connect_accepted_socket_and_sock_argument(loop, sctx, cctx):
    async def main():
        lsock = socket.create_server((HOST, 0))
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        csock = socket.socket()
        csock.setblocking(False)
        connecting = asyncio.ensure_future(loop.sock_connect(csock, (HOST, port)))
        conn, _ = await loop.sock_accept(lsock)
        await connecting
        lsock.close()
        accepted = asyncio.ensure_future(
            loop.connect_accepted_socket(lambda: Events(echo=True), conn, ssl=sctx)
        )
        transport, proto = await loop.create_connection(
            Events, sock=csock, ssl=cctx, server_hostname=NAME
        )
        stransport, sproto = await accepted
        assert stransport.get_extra_info("ssl_object").server_side
        transport.write(b"hi")
        assert await proto.read_until(2) == b"hi"
        transport.close()
        assert await proto.lost_once() is None
        assert await sproto.lost_once() is None

    run(loop, main())


def test_server_wait_closed_waits_for_tls_connections(loop, loop_factory, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        await asyncio.wait_for(server.protocols[0].made, 5)
        server.close()
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        if wait_closed_waits(loop_factory):
            assert not waiting.done()  # the TLS connection is still attached
        transport.close()
        await proto.lost_once()
        await server.protocols[0].lost_once()
        await asyncio.wait_for(waiting, 5)

    run(loop, main())


@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_server_close_and_abort_clients(loop, loop_factory, sctx, cctx, how):
    # They act on the socket transports under TLS, as asyncio 3.13's do: the client sees the
    # TCP connection end without close_notify.
    if not loop_factory.is_ferroloop and not hasattr(asyncio.base_events.Server, how):
        pytest.skip(f"asyncio {sys.version_info[:2]} has no Server.{how}")

    async def main():
        server, port = await tls_echo_server(sctx)
        _, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        await asyncio.wait_for(server.protocols[0].made, 5)
        server.close()
        getattr(server, how)()
        assert await proto.lost_once() is None
        assert proto.events == ["made", "eof", "lost"]
        assert await server.protocols[0].lost_once() is None
        await asyncio.wait_for(server.wait_closed(), 5)

    run(loop, main())


# ---------------------------------------------------------------- failures


def test_hostname_mismatch(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await loop.create_connection(Events, HOST, port, ssl=cctx,
                                         server_hostname="wrong.example")
        exc = ei.value
        assert exc.reason == "CERTIFICATE_VERIFY_FAILED"
        assert exc.verify_message == (
            "Hostname mismatch, certificate is not valid for 'wrong.example'."
        )
        assert str(exc).startswith(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch"
        )
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)  # the failed connection detached
        # The server's handshake failed too (the client's alert): no connection_made.
        assert [p.events for p in server.protocols] == [[]]

    run(loop, main())


def test_unknown_certificate_authority(loop, sctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        stranger = make_client_ctx(trustme.CA())
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await loop.create_connection(Events, HOST, port, ssl=stranger,
                                         server_hostname=NAME)
        assert ei.value.reason == "CERTIFICATE_VERIFY_FAILED"
        assert ei.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        assert ei.value.verify_message == "unable to get local issuer certificate"
        await close_server(server)

    run(loop, main())


def test_server_side_handshake_failure_reported_in_debug(loop, sctx):
    # A plaintext HTTP request to a TLS server: the handshake fails on the server; in debug
    # mode the loop's exception handler hears about the failed incoming connection.
    contexts = []

    async def main():
        loop.set_debug(True)
        loop.slow_callback_duration = 10
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        server, port = await tls_echo_server(sctx)
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            while not contexts:
                await asyncio.sleep(0.01)
        await close_server(server)

    run(loop, main())
    assert [c["message"] for c in contexts] == [
        "Error on transport creation for incoming connection"
    ]
    assert isinstance(contexts[0]["exception"], ssl.SSLError)
    assert contexts[0]["exception"].reason == "HTTP_REQUEST"


@contextlib.contextmanager
def silent_tcp_server():
    """A plain TCP listener that accepts and never answers (until the block ends)."""
    lsock = socket.create_server((HOST, 0))
    conns = []
    stop = threading.Event()

    def accept():
        lsock.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conns.append(lsock.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        for c in conns:
            c.close()
        lsock.close()


def test_client_handshake_timeout(loop, cctx):
    async def main():
        with silent_tcp_server() as port:
            t0 = time.monotonic()
            with pytest.raises(ConnectionAbortedError) as ei:
                await loop.create_connection(Events, HOST, port, ssl=cctx,
                                             server_hostname=NAME, ssl_handshake_timeout=0.2)
            assert 0.15 < time.monotonic() - t0 < 3
        assert str(ei.value) == (
            "SSL handshake is taking longer than 0.2 seconds: aborting the connection"
        )

    run(loop, main())


def test_server_handshake_timeout(loop, sctx):
    # A client that connects and sends nothing: after ssl_handshake_timeout the server drops
    # it, and the server's wait_closed() does not wait for it any more.
    async def main():
        server, port = await tls_echo_server(sctx, ssl_handshake_timeout=0.2)
        reader, writer = await asyncio.open_connection(HOST, port)
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.15 < time.monotonic() - t0 < 3
        writer.close()
        await writer.wait_closed()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert [p.events for p in server.protocols] == [[]]

    run(loop, main())


def test_invalid_handshake_timeouts(loop, cctx):
    async def main():
        with silent_tcp_server() as port:
            for value in (0, -1):
                with pytest.raises(ValueError) as ei:
                    await loop.create_connection(Events, HOST, port, ssl=cctx,
                                                 server_hostname=NAME,
                                                 ssl_handshake_timeout=value)
                assert str(ei.value) == (
                    f"ssl_handshake_timeout should be a positive number, got {value}"
                )
                with pytest.raises(ValueError) as ei:
                    await loop.create_connection(Events, HOST, port, ssl=cctx,
                                                 server_hostname=NAME,
                                                 ssl_shutdown_timeout=value)
                assert str(ei.value) == (
                    f"ssl_shutdown_timeout should be a positive number, got {value}"
                )

    run(loop, main())


def test_cancelled_during_handshake(loop, cctx):
    async def main():
        with silent_tcp_server() as port:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    loop.create_connection(Events, HOST, port, ssl=cctx, server_hostname=NAME),
                    0.1,
                )
            await asyncio.sleep(0.05)  # the aborted transport's connection_lost runs

    run(loop, main())


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_peer_closes_mid_handshake(loop, cctx, how):
    # The server reads the start of the ClientHello, then sends EOF (the client's handshake
    # meets the end of the stream: ConnectionResetError without arguments, as asyncio's
    # SSLProtocol raises it) or resets the connection (the read fails with ECONNRESET).
    async def main():
        writers = []

        async def handler(reader, writer):
            await reader.readexactly(5)  # a record header
            if how == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01" + b"\x00" * 7)
                writer.transport.abort()
            else:
                writer.write_eof()
                writers.append(writer)

        server = await asyncio.start_server(handler, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionResetError) as ei:
            await loop.create_connection(Events, HOST, port, ssl=cctx, server_hostname=NAME)
        if how == "eof":
            assert ei.value.args == ()
        else:
            assert ei.value.errno == errno.ECONNRESET
        await asyncio.sleep(0.01)  # the client's transport finishes closing
        for writer in writers:
            writer.close()
        await close_server(server)

    run(loop, main())


def test_client_leaves_mid_handshake_server_side(loop, sctx):
    # The server's side: a client that sends half a ClientHello and hangs up makes no
    # connection_made/connection_lost, and detaches from the server.
    async def main():
        server, port = await tls_echo_server(sctx)
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"\x16\x03\x01\x02\x00\x01")  # a handshake record header, then nothing
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert [p.events for p in server.protocols] == [[]]

    run(loop, main())


def test_peer_closes_tcp_without_close_notify(loop, sctx, cctx):
    # An unclean shutdown by the client (TCP FIN, no TLS close_notify): the server's
    # protocol gets eof_received and connection_lost(None), once each.
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"x")
        await proto.read_until(1)
        sock = transport.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)
        sproto = server.protocols[0]
        assert await sproto.lost_once() is None
        assert sproto.events == ["made", "data", "eof", "lost"]
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())


def test_peer_resets(loop, sctx, cctx):
    # The client's TCP connection is reset (SO_LINGER 0): the server's protocol gets
    # connection_lost(ConnectionResetError) exactly once.
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.write(b"x")
        await proto.read_until(1)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        transport.abort()
        assert await proto.lost_once() is None
        sproto = server.protocols[0]
        exc = await sproto.lost_once()
        assert isinstance(exc, ConnectionResetError)
        assert sproto.events == ["made", "data", "lost"]
        await close_server(server)

    run(loop, main())


@contextlib.contextmanager
def blocking_tls_peer(sctx):
    """A TLS server in a thread (blocking ssl sockets) that completes the handshake, then
    neither reads nor closes until the block ends: TLS shutdown gets no answer."""
    lsock = socket.create_server((HOST, 0))
    lsock.settimeout(10)
    done = threading.Event()
    errors = []

    def serve():
        try:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True):
                done.wait(10)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1]
    finally:
        done.set()
        t.join(10)
        lsock.close()
    assert not errors, errors


def test_shutdown_timeout(loop, sctx, cctx):
    async def main():
        with blocking_tls_peer(sctx) as port:
            transport, proto = await loop.create_connection(
                Events, HOST, port, ssl=cctx, server_hostname=NAME, ssl_shutdown_timeout=0.3
            )
            t0 = time.monotonic()
            transport.close()  # sends close_notify; the peer never answers
            exc = await proto.lost_once()
            assert 0.25 < time.monotonic() - t0 < 3
            assert isinstance(exc, TimeoutError)
            assert str(exc) == "SSL shutdown timed out"

    run(loop, main())


def test_abort_skips_shutdown(loop, sctx, cctx):
    async def main():
        with blocking_tls_peer(sctx) as port:
            transport, proto = await loop.create_connection(
                Events, HOST, port, ssl=cctx, server_hostname=NAME
            )
            transport.write(b"dropped, maybe")
            transport.abort()
            assert transport.is_closing()
            assert await proto.lost_once(timeout=2) is None
            assert proto.events == ["made", "lost"]

    run(loop, main())


def test_write_after_close_is_ignored(loop, sctx, cctx):
    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        transport.close()
        transport.write(b"ignored")
        assert await proto.lost_once() is None
        await close_server(server)

    run(loop, main())


# ---------------------------------------------------------------- start_tls


def test_start_tls_both_sides(loop, sctx, cctx):
    # A plaintext greeting, then both sides upgrade with loop.start_tls (STARTTLS).
    async def main():
        upgraded = loop.create_future()

        class ServerSide(asyncio.Protocol):
            tls = None
            early = b""  # decrypted before start_tls() returned (it is a coroutine)

            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                if data == b"STARTTLS\n":
                    self.transport.write(b"GO\n")
                    upgraded.set_result(asyncio.ensure_future(self.upgrade()))
                elif self.tls is None:
                    self.early += data
                else:
                    self.tls.write(data.upper())

            async def upgrade(self):
                self.tls = await loop.start_tls(self.transport, self, sctx, server_side=True)
                if self.early:
                    self.tls.write(self.early.upper())
                return self.tls

        server = await loop.create_server(ServerSide, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Events, HOST, port)
        transport.write(b"STARTTLS\n")
        assert await proto.read_until(3) == b"GO\n"
        proto.data.clear()
        tls_transport = await loop.start_tls(transport, proto, cctx, server_hostname=NAME)
        assert tls_transport is not transport
        assert transport.get_protocol() is not proto  # the SSLProtocol reads the socket now
        assert tls_transport.get_extra_info("peercert")["subjectAltName"]
        proto.transport = tls_transport
        tls_transport.write(b"secret")
        assert await proto.read_until(6) == b"SECRET"
        server_tls = await (await upgraded)
        assert server_tls.get_extra_info("ssl_object").server_side
        tls_transport.close()
        assert await proto.lost_once() is None
        assert proto.events == ["made", "data", "eof", "lost"]
        await close_server(server)

    run(loop, main())


def test_start_tls_argument_errors(loop, cctx):
    async def main():
        server = await loop.create_server(asyncio.Protocol, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Events, HOST, port)
        with pytest.raises(TypeError) as ei:
            await loop.start_tls(transport, proto, None)
        assert str(ei.value) == (
            "sslcontext is expected to be an instance of ssl.SSLContext, got None"
        )

        class Plain:
            def __repr__(self):
                return "<plain>"

        with pytest.raises(TypeError) as ei:
            await loop.start_tls(Plain(), proto, cctx)
        assert str(ei.value) == "transport <plain> is not supported by start_tls()"
        transport.close()
        await proto.lost_once()
        await close_server(server)

    run(loop, main())


def test_start_tls_handshake_timeout_closes_the_transport(loop, cctx):
    async def main():
        server = await loop.create_server(asyncio.Protocol, HOST, 0)  # never speaks TLS
        port = server.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(Events, HOST, port)
        with pytest.raises(ConnectionAbortedError):
            await loop.start_tls(transport, proto, cctx, server_hostname=NAME,
                                 ssl_handshake_timeout=0.2)
        assert transport.is_closing()
        await asyncio.sleep(0.05)
        # asyncio's SSLProtocol does not tell the application protocol of a connection lost
        # before the handshake ended, even when start_tls took an established one.
        assert proto.events == ["made"]
        await close_server(server)

    run(loop, main())


def test_stream_writer_start_tls(loop, sctx, cctx):
    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(sctx)
        assert writer.get_extra_info("ssl_object").server_side
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(cctx, server_hostname=NAME)
        assert writer.get_extra_info("peercert") is not None
        writer.write(b"hello over tls\n")
        assert await reader.readline() == b"HELLO OVER TLS\n"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await close_server(server)

    run(loop, main())


@pytest.mark.skipif(
    "_incoming" not in asyncio.BaseEventLoop.start_tls.__code__.co_names,
    reason="asyncio's start_tls leaves a StreamReader's buffered data behind (before gh-142352)",
)
def test_stream_writer_start_tls_takes_the_buffered_client_hello(loop, sctx, cctx):
    # The client starts TLS right after its STARTTLS line, without waiting for an answer, so
    # the server's StreamReader has the ClientHello buffered behind the line when the server
    # calls start_tls. asyncio (since CPython gh-142352, 3.14) hands that data to the TLS
    # protocol; without it the server waits for a ClientHello that has already arrived.
    async def handler(reader, writer):
        await asyncio.sleep(0.2)  # the line and the ClientHello are both buffered by now
        assert await reader.readline() == b"STARTTLS\n"
        await writer.start_tls(sctx)
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"STARTTLS\n")
        async with asyncio.timeout(5):
            await writer.start_tls(cctx, server_hostname=NAME)
        writer.write(b"hello over tls\n")
        assert await reader.readline() == b"HELLO OVER TLS\n"
        writer.close()
        await writer.wait_closed()
        await close_server(server)

    run(loop, main())


def test_tls_over_tls_through_a_proxy(loop, ca, sctx, cctx):
    # The client speaks TLS to a proxy, and TLS to the backend inside that (start_tls on a
    # TLS transport), as through an HTTPS proxy's CONNECT tunnel.
    backend_cert = ca.issue_cert("backend.example")
    bctx = make_server_ctx(backend_cert)
    sni = []
    bctx.sni_callback = lambda obj, name, ctx: sni.append(name)

    async def backend_handler(reader, writer):
        line = await reader.readline()
        writer.write(b"backend got " + line + ",".join(sni).encode() + b"\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def proxy_handler(reader, writer):
        assert await reader.readline() == b"CONNECT\n"
        breader, bwriter = await asyncio.open_connection(HOST, backend_port)
        writer.write(b"OK\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, bwriter), pipe(breader, writer),
                             return_exceptions=True)
        await bwriter.wait_closed()
        await writer.wait_closed()

    async def main():
        nonlocal backend_port
        backend = await asyncio.start_server(backend_handler, HOST, 0, ssl=bctx)
        backend_port = backend.sockets[0].getsockname()[1]
        proxy = await asyncio.start_server(proxy_handler, HOST, 0, ssl=sctx)
        proxy_port = proxy.sockets[0].getsockname()[1]

        reader, writer = await asyncio.open_connection(
            HOST, proxy_port, ssl=cctx, server_hostname=NAME
        )
        writer.write(b"CONNECT\n")
        assert await reader.readline() == b"OK\n"
        outer = writer.transport
        await writer.start_tls(make_client_ctx(ca), server_hostname="backend.example")
        inner = writer.transport
        assert inner is not outer
        assert inner.get_extra_info("peercert")["subjectAltName"] == (
            ("DNS", "backend.example"),
        )
        writer.write(b"hello\n")
        assert await reader.readline() == b"backend got hello\n"
        assert await reader.readline() == b"backend.example\n"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        for server in (proxy, backend):
            await close_server(server)

    backend_port = 0
    run(loop, main(), timeout=15)


def test_sendfile_over_tls_falls_back_to_writes(loop, sctx, cctx, tmp_path):
    path = tmp_path / "data.bin"
    payload = bytes(range(256)) * 1000
    path.write_bytes(payload)

    async def main():
        server, port = await tls_echo_server(sctx)
        transport, proto = await loop.create_connection(
            Events, HOST, port, ssl=cctx, server_hostname=NAME
        )
        assert await loop.sendfile(transport, f) == len(payload)
        assert await proto.read_until(len(payload)) == payload
        transport.close()
        await proto.lost_once()
        await close_server(server)

    with open(path, "rb") as f:
        run(loop, main())


# ---------------------------------------------------------------- the other loop as the peer


OTHER = {"asyncio": "ferroloop", "ferroloop": "asyncio"}


@contextlib.contextmanager
def loop_in_thread(kind: str):
    """A running loop of ``kind`` in a second thread; yields ``submit(coro) -> awaitable``."""
    lp = LoopFactory(kind)()
    ready = threading.Event()

    def target():
        asyncio.set_event_loop(lp)
        lp.call_soon(ready.set)
        lp.run_forever()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    assert ready.wait(5)

    def submit(coro):
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, lp))

    try:
        yield submit
    finally:
        lp.call_soon_threadsafe(lp.stop)
        t.join(10)
        lp.close()


async def _echo_stream_handler(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def _exchange_sizes():
    return [1, 1024, 16 * 1024, 200 * 1024]


def test_cross_loop_client_against_other_loops_server(loop, loop_factory, sctx, cctx):
    other = OTHER[loop_factory.name]
    box = {}

    async def start_server():
        box["server"] = await asyncio.start_server(_echo_stream_handler, HOST, 0, ssl=sctx)
        return box["server"].sockets[0].getsockname()[1]

    async def stop_server():
        await close_server(box["server"])

    async def main(submit):
        port = await submit(start_server())
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=cctx, server_hostname=NAME
        )
        for size in _exchange_sizes():
            payload = bytes([size % 251]) * size
            writer.write(payload)
            assert await reader.readexactly(size) == payload
        writer.close()
        await writer.wait_closed()
        await submit(stop_server())

    with loop_in_thread(other) as submit:
        run(loop, main(submit), timeout=15)


def test_cross_loop_server_against_other_loops_client(loop, loop_factory, sctx, cctx):
    other = OTHER[loop_factory.name]

    async def client(port):
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=cctx, server_hostname=NAME
        )
        for size in _exchange_sizes():
            payload = bytes([size % 251]) * size
            writer.write(payload)
            assert await reader.readexactly(size) == payload
        peercert = writer.get_extra_info("peercert")
        writer.close()
        await writer.wait_closed()
        return peercert

    async def main(submit):
        server = await asyncio.start_server(_echo_stream_handler, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        peercert = await submit(client(port))
        assert ("DNS", NAME) in peercert["subjectAltName"]
        await close_server(server)

    with loop_in_thread(other) as submit:
        run(loop, main(submit), timeout=15)


def test_cross_loop_start_tls(loop, loop_factory, sctx, cctx):
    # STARTTLS where the server runs on the other loop.
    other = OTHER[loop_factory.name]
    box = {}

    async def handler(reader, writer):
        await reader.readline()
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(sctx)
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def start_server():
        box["server"] = await asyncio.start_server(handler, HOST, 0)
        return box["server"].sockets[0].getsockname()[1]

    async def stop_server():
        await close_server(box["server"])

    async def main(submit):
        port = await submit(start_server())
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(cctx, server_hostname=NAME)
        writer.write(b"quiet\n")
        assert await reader.readline() == b"QUIET\n"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await submit(stop_server())

    with loop_in_thread(other) as submit:
        run(loop, main(submit), timeout=15)


def test_many_concurrent_tls_connections(loop, sctx, cctx):
    async def main():
        server = await asyncio.start_server(_echo_stream_handler, HOST, 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]

        async def one(i):
            reader, writer = await asyncio.open_connection(
                HOST, port, ssl=cctx, server_hostname=NAME
            )
            for n in (10, 5000, 70_000):
                payload = bytes([i % 256]) * n
                writer.write(payload)
                assert await reader.readexactly(n) == payload
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(*(one(i) for i in range(40)))
        await close_server(server)

    run(loop, main(), timeout=30)
