"""Differential test of the native TLS data path against asyncio's own ``SSLProtocol``.

Two server-side ``asyncio.sslproto.SSLProtocol`` instances, one plain and one with
``ferroloop.tls.install_fast_path``, are driven with the same scripted inputs, without sockets:
the same plaintext from a client ``SSLObject`` (its records cut into the same pieces), the same
application behaviour (writes of every kind and size, ``pause_reading``/``resume_reading``,
write-buffer limits, closing), the same flow-control signals from the transport under them
(``pause_writing``/``resume_writing``), and the same loop iterations in between. Everything
observable must be identical: the application's callbacks in order (with the size of each
``data_received``/``buffer_updated``, and the bytes), the transport calls in order (with the
size of each record written: the same plaintext gives the same record sizes), the
decrypted answer, ``get_write_buffer_size()``/``is_reading()`` after each step, and the
exception handler's reports. Scripts are random, from fixed seeds.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from asyncio import sslproto

import pytest

trustme = pytest.importorskip("trustme")

from ferroloop import tls

pytestmark = pytest.mark.skipif(not tls.NATIVE_TLS, reason=tls.NATIVE_TLS_REASON)

_ca = trustme.CA()
_cert = _ca.issue_cert("localhost")


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    _ca.configure_trust(cctx)
    return sctx, cctx


class Sink(asyncio.Transport):
    """The transport under the SSLProtocol: records every call."""

    def __init__(self, trace: list) -> None:
        super().__init__()
        self.trace = trace
        self.records: list[bytes] = []
        self.closing = False

    def write(self, data) -> None:
        self.trace.append(("t.write", len(data)))
        self.records.append(bytes(data))

    def pause_reading(self) -> None:
        self.trace.append(("t.pause_reading",))

    def resume_reading(self) -> None:
        self.trace.append(("t.resume_reading",))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.trace.append(("t.close",))
        self.closing = True

    def abort(self) -> None:
        self.trace.append(("t.abort",))
        self.closing = True

    def _force_close(self, exc) -> None:
        self.trace.append(("t.force_close", type(exc).__name__))
        self.closing = True

    def get_extra_info(self, name, default=None):
        return default


class App(asyncio.Protocol):
    """The application: records its callbacks, and does what the script says on data."""

    def __init__(self, trace: list, on_data) -> None:
        self.trace = trace
        self.on_data = on_data
        self.data = bytearray()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.trace.append(("a.made",))

    def data_received(self, data) -> None:
        self.trace.append(("a.data", len(data), type(data).__name__))
        self.data += data
        self.on_data(self, len(data))

    def eof_received(self):
        self.trace.append(("a.eof",))

    def connection_lost(self, exc) -> None:
        self.trace.append(("a.lost", type(exc).__name__))

    def pause_writing(self) -> None:
        self.trace.append(("a.pause_writing",))

    def resume_writing(self) -> None:
        self.trace.append(("a.resume_writing",))


class BufferedApp(App, asyncio.BufferedProtocol):
    def __init__(self, trace: list, on_data, size: int) -> None:
        super().__init__(trace, on_data)
        self.buf = bytearray(size)

    def get_buffer(self, sizehint):
        self.trace.append(("a.get_buffer", sizehint))
        return memoryview(self.buf)

    def buffer_updated(self, nbytes) -> None:
        self.trace.append(("a.buffer_updated", nbytes))
        self.data += self.buf[:nbytes]
        self.on_data(self, nbytes)


class Side:
    """One server SSLProtocol (plain or native) with its client, sink and application."""

    def __init__(self, loop, fast: bool, buffered: int, on_data, seed: int) -> None:
        sctx, cctx = _contexts()
        self.loop = loop
        self.trace: list = []
        self.reports: list = []
        self.app = (
            BufferedApp(self.trace, on_data, buffered) if buffered else App(self.trace, on_data)
        )
        waiter = loop.create_future()
        self.proto = sslproto.SSLProtocol(loop, self.app, sctx, waiter, server_side=True)
        if fast:
            assert tls.install_fast_path(self.proto)
        self.sink = Sink(self.trace)
        self.cin, self.cout = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = cctx.wrap_bio(self.cin, self.cout, server_hostname="localhost")
        self.answer = bytearray()
        self.client_eof = False
        self.rng = random.Random(seed)  # the same cuts on both sides
        self.proto.connection_made(self.sink)
        for _ in range(10):
            try:
                self.client.do_handshake()
            except ssl.SSLWantReadError:
                pass
            self.feed(self.cout.read())
            self.pump()
            self.spin()
        assert waiter.done() and waiter.exception() is None
        self.transport = self.proto._app_transport
        # The handshake's records differ in size from run to run (an ECDSA signature's DER
        # encoding is 70 to 72 bytes): the comparison starts after it.
        assert self.trace[1] == ("a.made",), self.trace
        del self.trace[:]

    def feed(self, data: bytes) -> None:
        """The ciphertext reaches the protocol through get_buffer/buffer_updated in pieces."""
        while data:
            piece = self.rng.choice([1, 5, 100, 1000, 16 * 1024 + 22, 70_000])
            chunk, data = data[:piece], data[piece:]
            buf = self.proto.get_buffer(-1)
            n = min(len(chunk), len(buf))
            buf[:n] = chunk[:n]
            self.proto.buffer_updated(n)
            data = chunk[n:] + data

    def pump(self) -> None:
        """What the server wrote reaches the client, which decrypts it."""
        for record in self.sink.records:
            self.cin.write(record)
        self.sink.records.clear()
        while True:
            try:
                chunk = self.client.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:
                self.trace.append(("c.error", type(exc).__name__))
                break
            if not chunk:
                self.client_eof = True
                break
            self.answer += chunk

    def spin(self, n: int = 3) -> None:
        for _ in range(n):
            self.loop.run_until_complete(asyncio.sleep(0))

    def state(self) -> tuple:
        t = self.transport
        return (
            t.get_write_buffer_size(), t.is_reading(), t.is_closing(),
            self.proto._state.name, self.proto._app_writing_paused,
            self.proto._ssl_reading_paused,
        )


def _script(seed: int) -> list[tuple]:
    rng = random.Random(seed)
    steps: list[tuple] = []
    ssl_paused = False
    for _ in range(rng.randint(10, 40)):
        kind = rng.choice(
            ["send", "send", "send", "write", "write", "writelines", "pause", "resume",
             "limits", "ssl_pause", "spin", "pump"]
        )
        if kind == "send":
            steps.append(("send", rng.choice([1, 100, 1000, 5000, 16384, 20000, 70000, 200_000])))
        elif kind == "write":
            steps.append(("write", rng.choice([0, 1, 1000, 16384, 40000, 300_000]),
                          rng.choice(["bytes", "bytearray", "memoryview"])))
        elif kind == "writelines":
            steps.append(("writelines", [rng.choice([0, 10, 5000]) for _ in range(3)]))
        elif kind == "pause":
            steps.append(("pause_reading",))
        elif kind == "resume":
            steps.append(("resume_reading",))
        elif kind == "limits":
            high = rng.choice([0, 1000, 64 * 1024, None])
            steps.append(("limits", high))
        elif kind == "ssl_pause":
            steps.append(("ssl_resume",) if ssl_paused else ("ssl_pause",))
            ssl_paused = not ssl_paused
        elif kind == "spin":
            steps.append(("spin",))
        else:
            steps.append(("pump",))
    if ssl_paused:
        steps.append(("ssl_resume",))
    steps.append(("resume_reading",))
    steps.append(rng.choice([("client_close",), ("app_close",), ("abort",), ("pump",)]))
    steps.append(("spin",))
    steps.append(("pump",))
    return steps


def _on_data_for(seed: int):
    """What the application does on each delivery, decided by a seeded coin."""
    rng_box: dict = {}

    def on_data(app, n: int) -> None:
        rng = rng_box.setdefault(id(app), random.Random(seed * 7 + 1))
        choice = rng.random()
        if choice < 0.4:
            app.transport.write(b"e" * n)  # echo the length
        elif choice < 0.5:
            app.transport.pause_reading()
        elif choice < 0.55:
            app.transport.writelines([b"x" * 3, bytearray(b"y" * n)])

    return on_data


def _run(fast: bool, seed: int, buffered: int) -> tuple:
    loop = asyncio.new_event_loop()
    try:
        side = Side(loop, fast, buffered, _on_data_for(seed), seed)
        loop.set_exception_handler(
            lambda lp, ctx: side.reports.append(
                (ctx["message"], type(ctx.get("exception")).__name__)
            )
        )
        states = []
        for step in _script(seed):
            side.trace.append(("step",) + tuple(
                s if not isinstance(s, list) else tuple(s) for s in step
            ))
            kind = step[0]
            t = side.transport
            if kind == "send":
                side.client.write(b"c" * step[1])
                side.feed(side.cout.read())
            elif kind == "write":
                payload = b"w" * step[1]
                t.write({"bytes": payload, "bytearray": bytearray(payload),
                         "memoryview": memoryview(payload)}[step[2]])
            elif kind == "writelines":
                t.writelines([b"l" * n for n in step[1]])
            elif kind == "pause_reading":
                t.pause_reading()
            elif kind == "resume_reading":
                t.resume_reading()
            elif kind == "limits":
                t.set_write_buffer_limits(high=step[1])
            elif kind == "ssl_pause":
                side.proto.pause_writing()
            elif kind == "ssl_resume":
                side.proto.resume_writing()
            elif kind == "spin":
                side.spin()
            elif kind == "pump":
                side.pump()
            elif kind == "client_close":
                try:
                    side.client.unwrap()
                except ssl.SSLWantReadError:
                    pass
                side.feed(side.cout.read())
            elif kind == "app_close":
                t.close()
            elif kind == "abort":
                t.abort()
            side.spin(1)
            states.append(side.state())
        side.spin()
        side.pump()
        if not side.sink.is_closing():
            side.proto.connection_lost(None)
            side.spin()
        return side.trace, states, bytes(side.app.data), bytes(side.answer), side.reports
    finally:
        loop.close()


@pytest.mark.parametrize("buffered", [0, 100, 16 * 1024 + 1])
@pytest.mark.parametrize("seed", range(40))
def test_native_path_matches_asyncio(seed, buffered):
    plain = _run(False, seed, buffered)
    native = _run(True, seed, buffered)
    p_trace, p_states, p_data, p_answer, p_reports = plain
    n_trace, n_states, n_data, n_answer, n_reports = native
    for i, (a, b) in enumerate(zip(p_trace, n_trace)):
        assert a == b, (i, p_trace[max(0, i - 8):i + 3], n_trace[max(0, i - 8):i + 3])
    assert len(p_trace) == len(n_trace)
    assert p_states == n_states
    assert p_data == n_data
    assert p_answer == n_answer
    assert p_reports == n_reports
