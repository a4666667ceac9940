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


# --- The handshake and shutdown (tls/hs.rs) ------------------------------------------------
#
# One SSLProtocol (server or client side, plain or native) and its peer SSLObject, from
# connection_made to connection_lost, on a loop that traces every call_soon/call_later (with a
# description of the callback: asyncio's lambdas by code and closure, bound methods by owner and
# name), every timer cancellation and the waiter's outcome, with a fake clock (timeouts fire when
# the script advances it). Everything the transport, the application, the exception handler and
# asyncio's logger see is compared, with the protocol's state after each step. RSA certificates:
# their signatures have a fixed size, so the handshake's records are the same size in both runs
# and are compared too.

import logging
import re
import sys
import types

_rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
_rsa_cert = _rsa_ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
_untrusted_ca = trustme.CA(key_type=trustme.KeyType.RSA)
_untrusted_cert = _untrusted_ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)


def _describe(cb, proto) -> tuple:
    """What a scheduled callback is, independent of the run."""
    if isinstance(cb, types.FunctionType):
        cells = tuple(
            "proto" if c.cell_contents is proto else type(c.cell_contents).__name__
            for c in cb.__closure__ or ()
        )
        return (
            "function", cb.__module__, cb.__qualname__, cb.__code__.co_firstlineno, cells,
            cb.__globals__ is vars(sys.modules[cb.__module__]), cb.__defaults__,
        )
    owner = getattr(cb, "__self__", None)
    # A method of the protocol, asyncio's or the native one bound onto it.
    who = "proto" if owner is proto or type(owner).__name__ == "TlsFastPath" else (
        type(owner).__name__
    )
    return ("method", who, getattr(cb, "__name__", type(cb).__name__))


class _TracedTimer(asyncio.TimerHandle):
    __slots__ = ()

    def cancel(self) -> None:
        if not self._cancelled:
            self._loop.trace.append(("timer.cancel", _describe(self._callback, self._loop.proto)))
        super().cancel()


class HsLoop(asyncio.SelectorEventLoop):
    """asyncio's loop with a fake clock, tracing what is scheduled on it."""

    def __init__(self, trace: list) -> None:
        super().__init__()
        self.trace = trace
        self.clock = 1000.0
        self.proto = None

    def time(self) -> float:
        return self.clock

    def call_soon(self, callback, *args, context=None):
        self.trace.append(
            ("loop.call_soon", _describe(callback, self.proto),
             tuple(type(a).__name__ for a in args))
        )
        return super().call_soon(callback, *args, context=context)

    def call_later(self, delay, callback, *args, context=None):
        self.trace.append(("loop.call_later", delay, _describe(callback, self.proto)))
        handle = super().call_later(delay, callback, *args, context=context)
        handle.__class__ = _TracedTimer
        return handle


class HsSink(Sink):
    """The transport under the protocol; closing it loses the connection soon, as a socket
    transport's does."""

    def __init__(self, trace: list, loop) -> None:
        super().__init__(trace)
        self.loop = loop
        self.protocol = None
        self.lost = False

    def _lose(self, exc) -> None:
        if not self.lost:
            self.lost = True
            self.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc) -> None:
        self.trace.append(("t.connection_lost", type(exc).__name__))
        self.protocol.connection_lost(exc)

    def close(self) -> None:
        super().close()
        self._lose(None)

    def abort(self) -> None:
        super().abort()
        self._lose(None)

    def _force_close(self, exc) -> None:
        self.trace.append(("t.force_close", type(exc).__name__, str(exc)))
        self.closing = True
        self._lose(exc)


class HsApp(asyncio.Protocol):
    def __init__(self, trace: list, rng: random.Random) -> None:
        self.trace = trace
        self.transport = None
        self.echo = rng.random() < 0.5
        self.eof_result = rng.choice([None, None, True, "raise", "raise_oserror"])

    on_made = ""  # what the application does in connection_made (the scenario's choice)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.trace.append(("a.made", type(transport).__name__))
        if "write" in self.on_made:
            transport.write(b"hello")
        if "close" in self.on_made:
            transport.close()
        if "abort" in self.on_made:
            transport.abort()

    def data_received(self, data) -> None:
        self.trace.append(("a.data", len(data)))
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.trace.append(("a.eof",))
        if self.eof_result == "raise":
            raise RuntimeError("eof_received failed")
        if self.eof_result == "raise_oserror":
            raise ConnectionResetError("eof_received failed")
        return self.eof_result

    def connection_lost(self, exc) -> None:
        self.trace.append(("a.lost", type(exc).__name__, str(exc)))


class HsBufferedApp(HsApp, asyncio.BufferedProtocol):
    """A BufferedProtocol application with a small buffer: a record fills it, and the rest is
    read in a callback the protocol schedules (asyncio's lambda on 3.11/3.12)."""

    def __init__(self, trace: list, rng: random.Random) -> None:
        super().__init__(trace, rng)
        self.buf = bytearray(rng.choice([2000, 16000]))

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes) -> None:
        self.data_received(bytes(self.buf[:nbytes]))


class _LogTrace(logging.Handler):
    def __init__(self, trace: list) -> None:
        super().__init__(logging.DEBUG)
        self.trace = trace

    def emit(self, record) -> None:
        message = re.sub(r"0x[0-9a-f]+", "0x?", record.getMessage())
        exc = record.exc_info[1] if record.exc_info else None
        self.trace.append(("log", record.levelname, message, type(exc).__name__))


class Conn:
    """One SSLProtocol over an HsSink, with its peer SSLObject over memory BIOs."""

    def __init__(
        self, fast: bool, seed: int, server_side: bool, peer_cert, on_made: str = ""
    ) -> None:
        rng = self.rng = random.Random(seed)
        self.trace: list = []
        self.reports: list = []
        loop = self.loop = HsLoop(self.trace)
        loop.set_debug(seed % 3 == 0)
        loop.set_exception_handler(
            lambda lp, ctx: self.trace.append(
                ("exception_handler", ctx["message"], type(ctx.get("exception")).__name__)
            )
        )
        self.hs_timeout = rng.choice([5.0, 60.0])
        self.sd_timeout = rng.choice([1.0, 30.0])
        self.app = (HsBufferedApp if rng.random() < 0.3 else HsApp)(self.trace, rng)
        self.app.on_made = on_made
        self.waiter = loop.create_future()
        self.waiter.add_done_callback(self._waiter_done)
        pctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        peer_cert.configure_cert(pctx)
        cctx = ssl.create_default_context()
        _rsa_ca.configure_trust(cctx)
        if server_side:
            ctx, pctx = pctx, cctx
        else:
            ctx = cctx
        self.proto = sslproto.SSLProtocol(
            loop, self.app, ctx, self.waiter, server_side,
            None if server_side else "localhost",
            ssl_handshake_timeout=self.hs_timeout, ssl_shutdown_timeout=self.sd_timeout,
        )
        loop.proto = self.proto
        if fast:
            assert tls.install_fast_path(self.proto)
            assert type(self.proto.__dict__["connection_made"]).__name__ == (
                "builtin_function_or_method"
            )
        else:
            assert "connection_made" not in self.proto.__dict__
        self.sink = HsSink(self.trace, loop)
        self.sink.protocol = self.proto
        self.pin, self.pout = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.peer = pctx.wrap_bio(
            self.pin, self.pout, server_side=not server_side,
            server_hostname="localhost" if server_side else None,
        )
        self.app_transport = self.proto._app_transport
        self.log = _LogTrace(self.trace)

    def _waiter_done(self, fut) -> None:
        self.trace.append(
            ("waiter", "cancelled" if fut.cancelled() else type(fut.exception()).__name__)
        )

    def feed(self, data: bytes) -> None:
        """Ciphertext into the protocol through get_buffer/buffer_updated, in seeded pieces."""
        while data:
            piece = self.rng.choice([1, 7, 100, 517, 4096, 70_000])
            chunk, data = data[:piece], data[piece:]
            buf = self.proto.get_buffer(-1)
            n = min(len(chunk), len(buf))
            buf[:n] = chunk[:n]
            self.trace.append(("feed", n))
            self.proto.buffer_updated(n)
            data = chunk[n:] + data

    def pump(self) -> None:
        """The protocol's records to the peer, which reads what it can."""
        for record in self.sink.records:
            self.pin.write(record)
        self.sink.records.clear()
        while True:
            try:
                chunk = self.peer.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:
                self.trace.append(("peer.error", type(exc).__name__))
                break
            if not chunk:
                self.trace.append(("peer.eof",))
                break
            self.trace.append(("peer.data", len(chunk)))

    def peer_handshake(self) -> None:
        try:
            self.peer.do_handshake()
            self.trace.append(("peer.handshake_done",))
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self.trace.append(("peer.error", type(exc).__name__))
        self.feed(self.pout.read())

    def spin(self, n: int = 2) -> None:
        """n iterations of the loop (the stop is scheduled past the trace)."""
        for _ in range(n):
            asyncio.BaseEventLoop.call_soon(self.loop, self.loop.stop)
            self.loop.run_forever()

    def state(self) -> tuple:
        p = self.proto
        return (
            p._state.name, p._app_state.name, p._conn_lost, p._eof_received,
            p._handshake_timeout_handle is None, p._shutdown_timeout_handle is None,
            p._waiter is None, p._transport is None, p._app_protocol is None,
            self.app_transport._closed, self.sink.closing,
        )

    def extra(self) -> tuple:
        e = self.proto._extra
        return tuple(
            (k, v if k not in ("sslcontext", "ssl_object") else type(v).__name__)
            for k, v in e.items()
        )


def _hs_script(scenario: str, seed: int) -> list[tuple]:
    rng = random.Random(seed * 31 + 7)
    hs_rounds = [("handshake",), ("spin",), ("pump",)] * 4
    steps: list[tuple] = [("connection_made",)]
    kind, _, ending = scenario.partition(":")
    if kind in ("server", "client", "made"):
        steps += hs_rounds
        for _ in range(rng.randint(0, 3)):
            steps += [("send", rng.choice([1, 100, 20000])), ("spin",), ("pump",)]
    elif kind == "garbage":
        steps += [("garbage",), ("spin",), ("pump",)]
    elif kind == "bad_cert":
        steps += hs_rounds
    else:  # something happens during the handshake
        steps += [("handshake",), ("spin",)][: rng.choice([0, 2])]
        steps += {
            "mid_eof": [("tcp_eof",)],
            "mid_lost": [("lost", rng.choice([None, "reset"]))],
            "hs_timeout": [("advance", "hs")],
            "close_in_hs": [("app_close",)],
            "abort_in_hs": [("app_abort",)],
        }[kind]
    if kind == "made":  # the application closes in connection_made: the peer answers
        ending = "peer_answers"
    steps += {
        "": [],
        "peer_answers": [("peer_close",), ("spin",), ("pump",)],
        "client_close": [("peer_close",), ("spin",), ("pump",)],
        "client_close_then_eof": [("peer_close",), ("spin",), ("pump",), ("tcp_eof",)],
        "app_close_reply": [("app_close",), ("spin",), ("pump",), ("peer_close",)],
        "app_close_timeout": [("app_close",), ("spin",), ("pump",), ("advance", "sd")],
        "app_close_abort": [("app_close",), ("spin",), ("pump",), ("app_abort",)],
        "app_close_eof": [("app_close",), ("spin",), ("pump",), ("tcp_eof",)],
        "app_close_lost": [("app_close",), ("spin",), ("lost", "reset")],
        "both_close": [("app_close",), ("peer_close",), ("spin",), ("pump",)],
        "tcp_eof": [("tcp_eof",)],
        "reset": [("lost", "reset")],
        "write_after_close": [("app_close",), ("app_write",), ("peer_close",)],
    }[ending]
    steps += [("spin",), ("pump",), ("advance", "both"), ("spin",)]
    return steps


def _hs_run(fast: bool, scenario: str, seed: int) -> tuple:
    kind = scenario.partition(":")[0]
    asyncio_logger = logging.getLogger("asyncio")
    conn = Conn(
        fast, seed, server_side=kind not in ("client", "bad_cert"),
        peer_cert=_untrusted_cert if kind == "bad_cert" else _rsa_cert,
        on_made=scenario.partition(":")[2] if kind == "made" else "",
    )
    old_level = asyncio_logger.level
    asyncio_logger.addHandler(conn.log)
    asyncio_logger.setLevel(logging.DEBUG)
    states = []
    try:
        for step in _hs_script(scenario, seed):
            conn.trace.append(("step",) + step)
            what = step[0]
            if what == "connection_made":
                conn.proto.connection_made(conn.sink)
            elif what == "handshake":
                conn.peer_handshake()
            elif what == "send":
                try:
                    conn.peer.write(b"d" * step[1])
                except ssl.SSLError as exc:
                    conn.trace.append(("peer.error", type(exc).__name__))
                conn.feed(conn.pout.read())
            elif what == "garbage":
                conn.feed(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            elif what == "peer_close":
                try:
                    conn.peer.unwrap()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    conn.trace.append(("peer.error", type(exc).__name__))
                conn.feed(conn.pout.read())
            elif what == "tcp_eof":
                keep_open = conn.proto.eof_received()
                conn.trace.append(("eof_received ->", keep_open))
                if not keep_open:
                    conn.sink.close()
            elif what == "lost":
                # The transport loses the connection (the peer reset it, or it just ended).
                exc = ConnectionResetError("reset by peer") if step[1] == "reset" else None
                conn.sink.closing = True
                conn.sink._lose(exc)
            elif what == "app_close":
                conn.app_transport.close()
            elif what == "app_abort":
                conn.app_transport.abort()
            elif what == "app_write":
                conn.app_transport.write(b"late")
            elif what == "advance":
                delay = {"hs": conn.hs_timeout, "sd": conn.sd_timeout, "both": 100.0}[step[1]]
                conn.loop.clock += delay + 0.5
                conn.spin(1)
            elif what == "spin":
                conn.spin()
            elif what == "pump":
                conn.pump()
            conn.spin(1)
            states.append(conn.state())
        conn.spin(3)
        if not conn.sink.lost:
            conn.sink._lose(None)
            conn.spin(3)
        states.append(conn.state())
        return conn.trace, states, conn.extra()
    finally:
        asyncio_logger.removeHandler(conn.log)
        asyncio_logger.setLevel(old_level)
        conn.loop.close()


_HS_SCENARIOS = [
    "server:client_close", "server:client_close_then_eof", "server:app_close_reply",
    "server:app_close_timeout", "server:app_close_abort", "server:app_close_eof",
    "server:app_close_lost", "server:both_close", "server:tcp_eof", "server:reset",
    "server:write_after_close", "client:client_close", "client:app_close_reply",
    "client:app_close_timeout", "garbage", "bad_cert", "mid_eof", "mid_lost", "hs_timeout",
    "close_in_hs", "abort_in_hs", "made:close", "made:write_close", "made:abort",
]


def _assert_same(plain, native) -> None:
    p_trace, p_states, p_extra = plain
    n_trace, n_states, n_extra = native
    for i, (a, b) in enumerate(zip(p_trace, n_trace)):
        assert a == b, (i, p_trace[max(0, i - 10):i + 3], n_trace[max(0, i - 10):i + 3])
    assert len(p_trace) == len(n_trace), (p_trace[len(n_trace):], n_trace[len(p_trace):])
    assert p_states == n_states
    assert p_extra == n_extra


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scenario", _HS_SCENARIOS)
def test_handshake_and_shutdown_match_asyncio(scenario, seed):
    _assert_same(_hs_run(False, scenario, seed), _hs_run(True, scenario, seed))


def _covers(scenario: str, trace: list) -> bool:
    """Whether a run of the scenario went down the path it is named after."""
    kinds = {e[0] for e in trace}
    messages = {e[2] for e in trace if e[0] == "log"} | {
        e[1] for e in trace if e[0] == "exception_handler"
    }
    forced = {e[2] for e in trace if e[0] == "t.force_close"}
    checks = [scenario.startswith(("server:", "client:")) <= (
        ("a.made", "_SSLProtocolTransport") in trace and ("waiter", "NoneType") in trace
        and "a.lost" in kinds
    )]
    if scenario == "bad_cert":
        checks.append(("waiter", "SSLCertVerificationError") in trace)
        checks.append(any(
            m.endswith("SSL handshake failed on verifying the certificate") for m in messages
        ))
    if scenario == "garbage":
        checks.append(("waiter", "SSLError") in trace)
    if scenario == "hs_timeout":
        checks.append(any(m.startswith("SSL handshake is taking longer than") for m in forced))
    if scenario in ("mid_eof", "mid_lost"):
        checks.append(("waiter", "NoneType") not in trace and any(
            e[0] == "waiter" for e in trace))
    if scenario.endswith("app_close_timeout"):
        checks.append("SSL shutdown timed out" in forced)
    if ":client_close" in scenario:
        checks.append("a.eof" in kinds)
    if scenario.endswith("app_close_reply"):
        checks.append("peer.eof" in kinds and ("t.close",) in trace)
    if scenario.endswith("both_close"):
        checks.append(("t.close",) in trace)
    if scenario.endswith("app_close_abort"):
        checks.append(("t.abort",) in trace or any(e[0] == "t.force_close" for e in trace))
    return all(checks)


@pytest.mark.parametrize("scenario", _HS_SCENARIOS)
def test_handshake_scenarios_cover_their_paths(scenario):
    """Each scenario goes, for some of the seeds compared above, down the path it is named
    after (handshake success, failure, timeout, the shutdown's variants), so that the
    comparison covers it; the debug-mode seeds log the handshake's start and duration."""
    runs = [_hs_run(False, scenario, seed)[0] for seed in range(6)]
    assert any(_covers(scenario, trace) for trace in runs)
    if scenario.startswith("server:"):
        assert any("SSL handshake took" in e[2] for e in runs[0] if e[0] == "log")


@pytest.mark.parametrize("seed", range(40))
def test_handshake_and_shutdown_random_scenarios(seed):
    scenario = random.Random(seed).choice(_HS_SCENARIOS)
    _assert_same(_hs_run(False, scenario, 1000 + seed), _hs_run(True, scenario, 1000 + seed))


def test_handshake_native_methods_are_bound():
    """The comparison above compares asyncio with the native code, not with itself."""
    loop = asyncio.new_event_loop()
    try:
        sctx, _ = _contexts()
        proto = sslproto.SSLProtocol(loop, asyncio.Protocol(), sctx, None, server_side=True)
        assert tls.install_fast_path(proto)
        for name in ("connection_made", "connection_lost", "_start_shutdown"):
            assert type(proto.__dict__[name].__self__).__name__ == "TlsFastPath", name
        proto2 = sslproto.SSLProtocol(loop, asyncio.Protocol(), sctx, None, server_side=True)
        assert tls.install_fast_path(proto2, native_connection_lost=False)
        assert "connection_lost" not in proto2.__dict__
    finally:
        loop.close()
