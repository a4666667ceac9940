"""Randomised conformance (issue #10): Hypothesis generates sequences of loop operations
(call_soon, call_later, call_at, cancel, callbacks that raise or schedule more, add_reader /
remove_reader on socketpairs, socket sends, a transport's writes, pause/resume reading,
close/abort, the peer's EOF) and each sequence runs on stock asyncio and on ferroloop. The
event logs must be equal.

What is compared, and why that is deterministic: a driver coroutine performs the operations in
order, yielding to the loop only at its ``yield`` operations (and before reading what the
transport wrote, because ferroloop sends a batch's writes after the batch, DESIGN.md §5.22).
Socketpair data is readable as soon as it is sent, so the order of everything that is not a
timer (ready callbacks, reader callbacks, protocol callbacks, the exception handler) is fixed by
asyncio's iteration rules and compared as one sequence. Timers fire at absolute times from
100 ms after the start, in 5 ms slots, each a little later than the one scheduled before it;
their order (and which ones a cancel removed) is compared as a second sequence. Where a timer
fires relative to the rest depends on wall time and is not compared; an example whose driver
took longer than the first timer's delay (a loaded machine) is rejected rather than judged.

Short run: 25 examples, derandomised (the same every run). ``FERROLOOP_LONG=1``: 500 random
examples."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import LoopFactory
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reliability_helpers import LONG

TIMER_START = 0.1  # s from the start of the driver to the first timer slot
SLOT = 0.005
STEP = 0.0002  # between timers scheduled one after another for the same slot
READ_SIZE = 16  # a reader callback reads at most this much: partial reads happen

op = st.one_of(
    st.tuples(st.just("soon")),
    st.tuples(st.just("soon_nested")),
    st.tuples(st.just("raise")),
    st.tuples(st.just("later"), st.integers(0, 9)),
    st.tuples(st.just("at"), st.integers(0, 9)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("yield")),
    st.tuples(st.just("add_reader"), st.integers(0, 1)),
    st.tuples(st.just("remove_reader"), st.integers(0, 1)),
    st.tuples(st.just("send"), st.integers(0, 1), st.integers(1, 40)),
    st.tuples(st.just("twrite"), st.integers(1, 3000)),
    st.tuples(st.just("peer_recv")),
    st.tuples(st.just("tsend"), st.integers(1, 3000)),
    st.tuples(st.just("pause")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("tclose")),
    st.tuples(st.just("tabort")),
    st.tuples(st.just("peer_eof")),
    st.tuples(st.just("threadsafe")),
    st.tuples(st.just("task"), st.integers(0, 3)),
    st.tuples(st.just("srecv")),
    st.tuples(st.just("ssend"), st.integers(1, 40)),
)
ops_strategy = st.lists(op, max_size=40)


class LogProtocol(asyncio.Protocol):
    def __init__(self, log):
        self.log = log

    def connection_made(self, transport):
        self.log.append(("t_made",))

    def data_received(self, data):
        self.log.append(("t_data", bytes(data)))

    def eof_received(self):
        self.log.append(("t_eof",))

    def connection_lost(self, exc):
        self.log.append(("t_lost", type(exc).__name__))


def payload(i, n):
    return bytes((i * 7 + k) % 251 for k in range(n))


async def scenario(ops):
    """Runs ``ops`` on the running loop: (events other than timers, timers, timely)."""
    loop = asyncio.get_running_loop()
    log, timers = [], []

    def handler(lp, ctx):
        exc = ctx.get("exception")
        log.append(("handler", type(exc).__name__, str(exc)))

    loop.set_exception_handler(handler)
    pairs = [socket.socketpair() for _ in range(3)]  # the third one for sock_recv
    ours, peer = socket.socketpair()
    for s in (*(s for p in pairs for s in p), ours, peer):
        s.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: LogProtocol(log), ours)
    await asyncio.sleep(0)  # connection_made and the start of reading
    handles = []
    last_when = {}
    start = loop.time()
    first_due = start + TIMER_START

    def when_for(slot):
        # Strictly increasing within a slot, in the order of scheduling.
        w = max(first_due + slot * SLOT, last_when.get(slot, 0.0) + STEP)
        last_when[slot] = w
        return w

    def on_readable(p):
        try:
            data = pairs[p][0].recv(READ_SIZE)
        except BlockingIOError:
            data = None
        log.append(("read", p, data))

    def nested(i):
        log.append(("nested", i))
        loop.call_soon(log.append, ("inner", i))

    def raiser(i):
        raise ZeroDivisionError(f"op {i}")

    async def stepper(i, steps):
        log.append(("task", i, "start"))
        for k in range(steps):
            await asyncio.sleep(0)
            log.append(("task", i, k))
        return i

    async def receiver(i):
        # One sock_recv at a time: asyncio 3.11 lets a second wait on the same socket
        # replace the first one's reader, which ferroloop does not copy (DESIGN.md §5.19).
        data = await loop.sock_recv(pairs[2][0], READ_SIZE)
        log.append(("srecv", i, data))

    tasks = []
    receiving = None

    try:
        for i, o in enumerate(ops):
            kind = o[0]
            if kind == "soon":
                handles.append(loop.call_soon(log.append, ("soon", i)))
            elif kind == "soon_nested":
                handles.append(loop.call_soon(nested, i))
            elif kind == "raise":
                handles.append(loop.call_soon(raiser, i))
            elif kind == "later":
                delay = when_for(o[1]) - loop.time()
                handles.append(loop.call_later(delay, timers.append, ("later", i)))
            elif kind == "at":
                handles.append(loop.call_at(when_for(o[1]), timers.append, ("at", i)))
            elif kind == "cancel":
                if handles:
                    h = handles[o[1] % len(handles)]
                    h.cancel()
                    log.append(("cancelled", h.cancelled()))
            elif kind == "yield":
                await asyncio.sleep(0)
            elif kind == "add_reader":
                loop.add_reader(pairs[o[1]][0], on_readable, o[1])
            elif kind == "remove_reader":
                log.append(("removed", o[1], loop.remove_reader(pairs[o[1]][0])))
            elif kind == "send":
                pairs[o[1]][1].send(payload(i, o[2]))
            elif kind == "twrite":
                transport.write(payload(i, o[1]))
            elif kind == "peer_recv":
                await asyncio.sleep(0)  # ferroloop sends a batch's writes after the batch
                try:
                    log.append(("peer_got", peer.recv(1 << 16)))
                except (BlockingIOError, ConnectionResetError) as e:
                    log.append(("peer_got", type(e).__name__))
            elif kind == "tsend":
                try:
                    log.append(("tsent", peer.send(payload(i, o[1]))))
                except OSError as e:
                    log.append(("tsent", type(e).__name__))
            elif kind == "pause":
                transport.pause_reading()
                log.append(("reading", transport.is_reading()))
            elif kind == "resume":
                transport.resume_reading()
                log.append(("reading", transport.is_reading()))
            elif kind == "tclose":
                transport.close()
                log.append(("closing", transport.is_closing()))
            elif kind == "tabort":
                transport.abort()
                log.append(("closing", transport.is_closing()))
            elif kind == "threadsafe":
                handles.append(loop.call_soon_threadsafe(log.append, ("threadsafe", i)))
            elif kind == "task":
                t = loop.create_task(stepper(i, o[1]))
                t.add_done_callback(lambda t: log.append(("task_done", t.result())))
                tasks.append(t)
            elif kind == "srecv":
                if receiving is None or receiving.done():
                    receiving = loop.create_task(receiver(i))
                    tasks.append(receiving)
            elif kind == "ssend":
                pairs[2][1].send(payload(i, o[1]))
            elif kind == "peer_eof":
                try:
                    peer.shutdown(socket.SHUT_WR)
                    log.append(("peer_eof", None))
                except OSError as e:
                    log.append(("peer_eof", type(e).__name__))
        timely = loop.time() < first_due
        # Let every timer fire.
        await asyncio.sleep(max(last_when.values(), default=start) - loop.time() + 0.02)
        log.append(("end",))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        for p in pairs:
            loop.remove_reader(p[0])
            p[0].close()
            p[1].close()
        peer.close()
    return log, timers, timely


def run_on(factory, ops):
    loop = factory()
    try:
        return loop.run_until_complete(asyncio.wait_for(scenario(ops), 5))
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.timeout(900 if LONG else 60)
@settings(
    max_examples=500 if LONG else 25,
    derandomize=not LONG,
    deadline=None if LONG else 5000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=ops_strategy)
def test_random_operation_sequences_match_asyncio(ops):
    ref_log, ref_timers, ref_timely = run_on(LoopFactory("asyncio"), ops)
    log, timers, timely = run_on(LoopFactory("ferroloop"), ops)
    assume(ref_timely and timely)
    assert log == ref_log
    assert timers == ref_timers
