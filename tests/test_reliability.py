"""Faults (issue #10): peers that reset mid-write and mid-read, half-closes, ``abort()`` with
writes queued, transports closed from inside their own callbacks, protocol callbacks that
raise, a loop closed with live transports and servers, and KeyboardInterrupt at random points
of a busy loop. Each case runs on stock asyncio (the oracle) and on ferroloop and checks the
same observable outcome on both: the protocol callbacks in order, ``connection_lost`` exactly
once with the right exception, what reached the exception handler, no descriptor left open
(/proc/self/fd before and after), and a loop that still runs afterwards.

``FERROLOOP_LONG=1`` (scripts/test-long.sh) runs more KeyboardInterrupt rounds."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import socket
import struct
import threading
import warnings

import pytest
from conftest import run
from reliability_helpers import LONG, fd_leaks, open_fds

LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class Rec(asyncio.Protocol):
    """Records every protocol callback; ``action`` maps a callback name to something to do
    inside it ("close", "abort" or "raise")."""

    def __init__(self, action=None, keep_open=False):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = "not yet"
        self.lost_calls = 0
        self.action = action or {}
        self.keep_open = keep_open

    def _act(self, name):
        what = self.action.get(name)
        if what == "close":
            self.transport.close()
        elif what == "abort":
            self.transport.abort()
        elif what == "raise":
            raise ZeroDivisionError(f"in {name}")

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self._act("connection_made")

    def data_received(self, data):
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self._act("data_received")

    def eof_received(self):
        self.events.append("eof")
        self._act("eof_received")
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause")
        self._act("pause_writing")

    def resume_writing(self):
        self.events.append("resume")
        self._act("resume_writing")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc
        self.lost_calls += 1
        self._act("connection_lost")


async def until(pred, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.001)


async def make_tcp(loop, proto):
    """(transport, protocol, peer): a transport over an accepted 127.0.0.1 connection whose
    other end is the plain non-blocking socket ``peer``."""
    srv = socket.socket()
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        peer = socket.create_connection(srv.getsockname())
        ours, _ = srv.accept()
    finally:
        srv.close()
    peer.setblocking(False)
    transport, protocol = await loop.connect_accepted_socket(lambda: proto, ours)
    return transport, protocol, peer


async def drain_peer(loop, peer, limit=None):
    """Read from ``peer`` until EOF (or a reset); returns (bytes read, how it ended)."""
    total = 0
    while True:
        try:
            chunk = await loop.sock_recv(peer, 1 << 18)
        except ConnectionResetError:
            return total, "reset"
        if not chunk:
            return total, "eof"
        total += len(chunk)


def baseline(loop) -> dict[int, str]:
    """The open fds once the loop has run (ferroloop makes its Ctrl+C wake-up socketpair on
    the first run, DESIGN.md §5.11: the loop's own, closed by close())."""
    run(loop, asyncio.sleep(0))
    return open_fds()


def handler_log(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


# -- resets, half-closes, abort ----------------------------------------------------------------


def test_peer_reset_mid_write(loop):
    before = baseline(loop)
    errors = handler_log(loop)

    async def main():
        tr, pr, peer = await make_tcp(loop, Rec())
        tr.set_write_buffer_limits(high=1 << 30)  # no pause_writing: just a full socket
        for _ in range(16):
            tr.write(b"w" * (1 << 20))
        await until(lambda: tr.get_write_buffer_size() > 0)
        await asyncio.sleep(0.02)
        peer.recv(4096)  # the peer has read a little, and resets with the rest unread
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        peer.close()
        await until(lambda: pr.lost_calls)
        await asyncio.sleep(0.05)  # nothing may follow connection_lost
        return tr, pr

    tr, pr = run(loop, main())
    assert pr.events == ["made", "lost"]
    assert pr.lost_calls == 1
    assert isinstance(pr.lost, (ConnectionResetError, BrokenPipeError)), pr.lost
    assert tr.is_closing()
    assert tr.get_write_buffer_size() == 0
    assert errors == []  # OSErrors from the peer are not the exception handler's business
    assert fd_leaks(before) == {}
    assert run(loop, asyncio.sleep(0, "usable")) == "usable"


def test_peer_reset_mid_read(loop):
    before = baseline(loop)
    errors = handler_log(loop)
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def main():
        tr, pr, peer = await make_tcp(loop, Rec())
        tr.pause_reading()
        sent = 0
        while sent < len(payload):  # as much as the two socket buffers take
            try:
                sent += peer.send(payload[sent:])
            except BlockingIOError:
                break
        tr.resume_reading()
        await until(lambda: len(pr.data) > 0)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        peer.close()  # RST while the transport is still reading what was sent
        await until(lambda: pr.lost_calls)
        await asyncio.sleep(0.05)
        return tr, pr, sent

    _tr, pr, sent = run(loop, main())
    assert pr.events == ["made", "data", "lost"]
    assert pr.lost_calls == 1
    assert isinstance(pr.lost, ConnectionResetError), pr.lost
    # Whatever arrived is an in-order prefix of what was sent.
    assert 0 < len(pr.data) <= sent
    assert bytes(pr.data) == payload[: len(pr.data)]
    assert errors == []
    assert fd_leaks(before) == {}


def test_half_close_both_ways_over_tcp(loop):
    before = baseline(loop)
    reply = b"r" * (3 << 20)

    class Server(Rec):
        def eof_received(self):
            super().eof_received()
            # The request is complete: answer it on the half-open connection, then half-close.
            self.transport.write(reply)
            self.transport.write_eof()
            return True

    async def main():
        tr, pr, peer = await make_tcp(loop, Server())
        await loop.sock_sendall(peer, b"request")
        peer.shutdown(socket.SHUT_WR)
        got, how = await drain_peer(loop, peer)
        assert not tr.is_closing()
        with pytest.raises(RuntimeError, match="write_eof"):
            tr.write(b"after eof")
        tr.close()
        await until(lambda: pr.lost_calls)
        peer.close()
        return pr, got, how

    pr, got, how = run(loop, main())
    assert (got, how) == (len(reply), "eof")
    assert bytes(pr.data) == b"request"
    assert pr.events == ["made", "data", "eof", "lost"]
    assert pr.lost is None and pr.lost_calls == 1
    assert fd_leaks(before) == {}


def test_abort_with_writes_queued_and_writing_paused(loop):
    before = baseline(loop)
    total = 32 << 20

    async def main():
        tr, pr, peer = await make_tcp(loop, Rec())
        tr.set_write_buffer_limits(high=64 * 1024)
        for _ in range(32):
            tr.write(b"a" * (1 << 20))
        assert pr.events == ["made", "pause"]
        queued = tr.get_write_buffer_size()
        assert queued > 0
        tr.abort()
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        await until(lambda: pr.lost_calls)
        got, how = await drain_peer(loop, peer)
        peer.close()
        return pr, got, how

    pr, got, how = run(loop, main(), timeout=10)
    # No resume_writing: abort drops the queue without telling the protocol it drained.
    assert pr.events == ["made", "pause", "lost"]
    assert pr.lost is None and pr.lost_calls == 1
    assert got < total  # the queued tail was dropped, not sent
    assert how in ("eof", "reset")
    assert fd_leaks(before) == {}


# -- closing from inside the transport's own callbacks -----------------------------------------


CLOSE_INSIDE = [
    # (callback, close or abort, expected events)
    ("connection_made", "close", ["made", "lost"]),
    ("connection_made", "abort", ["made", "lost"]),
    ("data_received", "close", ["made", "data", "lost"]),
    ("data_received", "abort", ["made", "data", "lost"]),
    ("eof_received", "close", ["made", "data", "eof", "lost"]),
    ("eof_received", "abort", ["made", "data", "eof", "lost"]),
    ("connection_lost", "close", ["made", "data", "eof", "lost"]),
    ("connection_lost", "abort", ["made", "data", "eof", "lost"]),
]


@pytest.mark.parametrize(("callback", "how", "expected"), CLOSE_INSIDE)
def test_closed_from_inside_its_own_callback(loop, callback, how, expected):
    before = baseline(loop)
    errors = handler_log(loop)

    async def main():
        pr = Rec(action={callback: how})
        # The peer has sent data and its EOF before the transport exists.
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        peer = socket.create_connection(srv.getsockname())
        ours, _ = srv.accept()
        srv.close()
        peer.sendall(b"one two three")
        peer.shutdown(socket.SHUT_WR)
        peer.setblocking(False)
        tr, _ = await loop.connect_accepted_socket(lambda: pr, ours)
        await until(lambda: pr.lost_calls)
        await asyncio.sleep(0.05)  # nothing may follow
        got, end = await drain_peer(loop, peer)
        peer.close()
        return tr, pr, got, end

    tr, pr, got, end = run(loop, main())
    assert pr.events == expected
    assert pr.lost_calls == 1 and pr.lost is None
    assert tr.is_closing()
    assert got == 0 and end in ("eof", "reset")
    assert errors == []
    assert fd_leaks(before) == {}


@pytest.mark.parametrize("how", ["close", "abort"])
def test_closed_from_inside_pause_writing(loop, how):
    before = baseline(loop)
    chunk = 1 << 20

    async def main():
        pr = Rec(action={"pause_writing": how})
        tr, pr, peer = await make_tcp(loop, pr)
        tr.set_write_buffer_limits(high=256 * 1024, low=16 * 1024)
        writes = 0
        while "pause" not in pr.events:  # pause_writing comes inside a write(), and closes
            tr.write(b"p" * chunk)
            writes += 1
            assert writes < 64
        assert pr.events[:2] == ["made", "pause"]
        assert tr.is_closing()
        got, end = await drain_peer(loop, peer)
        await until(lambda: pr.lost_calls)
        peer.close()
        return pr, got, end, writes * chunk

    pr, got, end, written = run(loop, main(), timeout=10)
    assert pr.lost_calls == 1 and pr.lost is None
    if how == "close":
        # close() flushes what was written; the drained queue resumes the protocol first.
        assert pr.events == ["made", "pause", "resume", "lost"]
        assert (got, end) == (written, "eof")
    else:
        assert pr.events == ["made", "pause", "lost"]
        assert got < written
    assert fd_leaks(before) == {}


# -- protocol callbacks that raise ---------------------------------------------------------------


class BufRec(asyncio.BufferedProtocol):
    """A BufferedProtocol recording its callbacks; ``raising`` names the one that raises."""

    def __init__(self, raising):
        self.events = []
        self.raising = raising
        self.buf = bytearray(1024)
        self.lost = "not yet"
        self.lost_calls = 0

    def _maybe_raise(self, name):
        if name == self.raising:
            raise ZeroDivisionError(f"in {name}")

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self._maybe_raise("connection_made")

    def get_buffer(self, sizehint):
        self.events.append("get_buffer")
        self._maybe_raise("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        self.events.append("updated")
        self._maybe_raise("buffer_updated")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc
        self.lost_calls += 1


IN_CALLBACK = "Exception in callback "
RAISING = [
    # (protocol kind, callback that raises, events, connection_lost's exception, handler message)
    # An exception from connection_made/connection_lost is an ordinary callback error: the
    # handler hears of it and the transport carries on.
    ("plain", "connection_made", ["made", "data", "eof", "lost"], None, IN_CALLBACK),
    ("plain", "connection_lost", ["made", "data", "eof", "lost"], None, IN_CALLBACK),
    # From a reading callback it is fatal: handler, then close with the exception.
    ("plain", "data_received", ["made", "data", "lost"], ZeroDivisionError,
     "Fatal error: protocol.data_received() call failed."),
    ("plain", "eof_received", ["made", "data", "eof", "lost"], ZeroDivisionError,
     "Fatal error: protocol.eof_received() call failed."),
    # Flow-control callbacks: reported, the connection goes on.
    ("plain", "pause_writing", ["made", "pause", "resume", "data", "eof", "lost"], None,
     "protocol.pause_writing() failed"),
    ("plain", "resume_writing", ["made", "pause", "resume", "data", "eof", "lost"], None,
     "protocol.resume_writing() failed"),
    ("buffered", "connection_made", ["made", "get_buffer", "updated", "get_buffer", "eof", "lost"],
     None, IN_CALLBACK),
    ("buffered", "get_buffer", ["made", "get_buffer", "lost"], ZeroDivisionError,
     "Fatal error: protocol.get_buffer() call failed."),
    ("buffered", "buffer_updated", ["made", "get_buffer", "updated", "lost"], ZeroDivisionError,
     "Fatal error: protocol.buffer_updated() call failed."),
]


@pytest.mark.parametrize(("kind", "callback", "events", "lost", "message"), RAISING,
                         ids=[f"{k}-{c}" for k, c, *_ in RAISING])
def test_protocol_callback_that_raises(loop, kind, callback, events, lost, message):
    before = baseline(loop)
    errors = handler_log(loop)

    async def read_while_data(peer):
        while True:
            try:
                async with asyncio.timeout(0.2):
                    if not await loop.sock_recv(peer, 1 << 20):
                        return
            except TimeoutError:
                return

    async def main():
        pr = BufRec(callback) if kind == "buffered" else Rec(action={callback: "raise"})
        tr, pr, peer = await make_tcp(loop, pr)
        tr.set_write_buffer_limits(high=64 * 1024)
        await asyncio.sleep(0.01)
        if callback in ("pause_writing", "resume_writing"):
            writes = 0
            while "pause" not in pr.events:
                tr.write(b"x" * (1 << 20))
                writes += 1
                assert writes < 64
            await read_while_data(peer)  # drains the queue: resume_writing
        await loop.sock_sendall(peer, b"hello")
        await asyncio.sleep(0.02)
        try:
            peer.shutdown(socket.SHUT_WR)
        except OSError:
            assert lost is not None  # the transport is gone already
        await asyncio.sleep(0.05)
        # On an EOF the transport closes itself (eof_received returned None).
        assert tr.is_closing()
        await until(lambda: pr.lost_calls)
        await asyncio.sleep(0.02)
        peer.close()
        return tr, pr

    tr, pr = run(loop, main())
    assert pr.events == events
    assert pr.lost_calls == 1
    if lost is None:
        assert pr.lost is None
    else:
        assert isinstance(pr.lost, lost)
    (ctx,) = errors
    assert ctx["message"].startswith(message), ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    if not message.startswith(IN_CALLBACK):
        assert ctx["transport"] is tr
        assert ctx["protocol"] is pr
    assert fd_leaks(before) == {}
    assert run(loop, asyncio.sleep(0, "usable")) == "usable"


# -- a loop closed under live transports and servers ---------------------------------------------


def test_loop_closed_with_live_transports_and_servers(loop_factory, tmp_path):
    # Closing a loop does not close its transports or servers (asyncio's rule): nothing is
    # called on the protocols, and closing a transport afterwards raises because it cannot
    # schedule connection_lost. What the user drops is collected with an "unclosed" warning
    # and its socket closed, so no descriptor outlives the objects. (The loops' own
    # descriptors go in close(); test_lifecycle checks that. The dropped transports' sockets
    # go when the transports are collected, so the comparison is made after a collection.)
    before = open_fds()

    def scenario():
        lp = loop_factory()
        path = str(tmp_path / "s")

        async def main():
            srv = await lp.create_server(Rec, "127.0.0.1", 0)
            usrv = await lp.create_unix_server(Rec, path)
            port = srv.sockets[0].getsockname()[1]
            conns = [await lp.create_connection(Rec, "127.0.0.1", port) for _ in range(3)]
            conns += [await lp.create_unix_connection(Rec, path) for _ in range(2)]
            for tr, _ in conns:
                tr.write(b"in flight")
            await asyncio.sleep(0.02)
            return srv, usrv, conns

        srv, usrv, conns = lp.run_until_complete(asyncio.wait_for(main(), 5))
        lp.close()
        assert lp.is_closed()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            lp.run_until_complete(asyncio.sleep(0))
        assert [pr.events for _, pr in conns] == [["made"]] * 5
        assert not any(tr.is_closing() for tr, _ in conns)
        for tr, pr in conns:
            with pytest.raises(RuntimeError, match="Event loop is closed"):
                tr.close()
            assert tr.is_closing()
            assert pr.lost_calls == 0
        srv.close()
        usrv.close()
        assert not srv.is_serving()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        scenario()
        gc.collect()
    unclosed = [str(w.message) for w in caught if "unclosed transport" in str(w.message)]
    del caught  # the warnings' sources (the transports) refer to the loop
    # The five client transports; the servers' accepted ones were made in the loop, too.
    assert len(unclosed) >= 5, unclosed
    assert fd_leaks(before) == {}


# -- KeyboardInterrupt at random points of a busy loop --------------------------------------------


class PingPong(asyncio.Protocol):
    """Client side: sends a message, waits for the echo, sends again (until closed)."""

    MSG = b"ping" * 64

    def __init__(self, lost_counts):
        self.lost_counts = lost_counts
        self.got = 0
        self.rounds = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.MSG)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= len(self.MSG):
            self.got -= len(self.MSG)
            self.rounds += 1
            self.transport.write(self.MSG)

    def connection_lost(self, exc):
        self.lost_counts[id(self)] = self.lost_counts.get(id(self), 0) + 1


class CountingEcho(asyncio.Protocol):
    def __init__(self, lost_counts):
        self.lost_counts = lost_counts

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost_counts[id(self)] = self.lost_counts.get(id(self), 0) + 1


KI_ROUNDS = 300 if LONG else 25


@pytest.mark.timeout(300 if LONG else 40)
def test_keyboard_interrupt_at_random_points_of_a_busy_loop(loop):
    # SIGINT from another thread at a random moment while 20 connections ping-pong on the
    # loop: run_until_complete raises KeyboardInterrupt, wherever the main thread was (in a
    # protocol callback, in native code, in the poll). Afterwards the loop runs again, a new
    # connection echoes, and at the end every transport gets connection_lost exactly once and
    # every descriptor is closed.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    before = baseline(loop)
    rng = random.Random(0x10)
    server_lost, client_lost = {}, {}
    servers = []

    def server_factory():
        p = CountingEcho(server_lost)
        servers.append(p)
        return p

    async def setup():
        srv = await loop.create_server(server_factory, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        clients = [await loop.create_connection(lambda: PingPong(client_lost), "127.0.0.1", port)
                   for _ in range(20)]
        return srv, port, clients

    async def one_echo(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"still here")
        got = await r.readexactly(10)
        w.close()
        await w.wait_closed()
        return got

    srv, port, clients = run(loop, setup())
    interrupted = 0
    for _ in range(KI_ROUNDS):
        delay = rng.uniform(0.0005, 0.02)
        killer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        sleeper = loop.create_task(asyncio.sleep(30))
        # The signal may be handled as soon as the timer starts (a loaded machine can run the
        # timer thread first): everything from its start to its end is inside the raises.
        with pytest.raises(KeyboardInterrupt):
            try:
                killer.start()
                loop.run_until_complete(sleeper)
            finally:
                killer.join()
        killer.join()
        interrupted += 1
        sleeper.cancel()
        assert not loop.is_running()
        assert run(loop, one_echo(port)) == b"still here"
    assert interrupted == KI_ROUNDS
    assert sum(pr.rounds for _, pr in clients) > 0

    async def teardown():
        for tr, _ in clients:
            tr.close()
        srv.close()
        await srv.wait_closed()
        await until(lambda: len(client_lost) == 20 and len(server_lost) == len(servers))

    run(loop, teardown(), timeout=10)
    assert sorted(client_lost.values()) == [1] * 20
    assert sorted(server_lost.values()) == [1] * len(servers)
    assert len(servers) == 20 + KI_ROUNDS
    assert fd_leaks(before) == {}
