"""Issue #11: the blocking detector, loop.stats() and the virtual clock.

These are ferroloop-only features (stock asyncio has none of them), so most tests run on
ferroloop alone. Where asyncio has an analogue, it is the reference: a program on the virtual
clock must see its timers, timeouts and task-group cancellations in the order that stock
asyncio gives the same program on real (scaled-down) time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time

import ferroloop
import pytest
from conftest import run
from ferroloop import BlockedCallback, LoopStats, VirtualClock

pytestmark = pytest.mark.timeout(30)


def watchdog_threads() -> list[str]:
    """Names of this process's native watchdog threads (kernel thread names, 15 chars)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("ferroloop-watch"):
            names.append(name)
    return names


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class Recorder:
    """A block handler that records reports with the real time they arrived."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, BlockedCallback]] = []
        self.first = threading.Event()

    def __call__(self, report: BlockedCallback) -> None:
        self.reports.append((time.monotonic(), report))
        if not report.finished:
            self.first.set()

    def during(self) -> list[BlockedCallback]:
        return [r for _, r in self.reports if not r.finished]

    def after(self) -> list[BlockedCallback]:
        return [r for _, r in self.reports if r.finished]


# -- blocking detector ----------------------------------------------------------------------


def test_detector_reports_time_sleep_while_the_callback_is_still_blocked(ferro_loop, caplog):
    loop = ferro_loop
    rec = Recorder()
    loop.set_block_threshold(0.1, rec)
    assert loop.get_block_threshold() == 0.1
    outcome = {}

    def blocking_sleeper():
        # Blocks the loop in time.sleep until the detector's report has arrived (at most 5 s),
        # so "reported while still blocked" is observed, not inferred from timing.
        start = time.monotonic()
        while not rec.first.is_set() and time.monotonic() - start < 5.0:
            time.sleep(0.02)
        outcome["saw_report_while_blocked"] = rec.first.is_set()
        outcome["returned_at"] = time.monotonic()
        outcome["blocked_for"] = time.monotonic() - start

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(blocking_sleeper)
        loop.call_soon(loop.stop)
        loop.run_forever()

    assert outcome["saw_report_while_blocked"]
    during, after = rec.during(), rec.after()
    assert len(during) == 1 and len(after) == 1
    first_at = next(t for t, r in rec.reports if not r.finished)
    assert first_at < outcome["returned_at"]
    report = during[0]
    assert "blocking_sleeper" in report.description
    assert report.seconds >= 0.1
    assert report.seconds <= outcome["blocked_for"] + 0.01
    assert report.stack is not None
    names = [f.name for f in report.stack]
    assert names[-1] == "blocking_sleeper", names
    assert "time.sleep(0.02)" in report.format_stack()
    # The follow-up has the total.
    assert after[0].seconds >= report.seconds
    assert after[0].stack is None and after[0].stack_reported
    # Both went to the asyncio logger, the first with the stack.
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("still running" in m and "blocking_sleeper" in m and "time.sleep" in m
               for m in messages), messages
    assert any("blocked the event loop for" in m and "still running" not in m
               for m in messages), messages
    stats = loop.stats()
    assert stats.blocked_callbacks == 1
    assert stats.slowest_callback is not None and "blocking_sleeper" in stats.slowest_callback
    assert stats.slowest_callback_seconds == pytest.approx(after[0].seconds)


def test_detector_catches_a_cpu_bound_coroutine_and_names_the_task():
    rec = Recorder()

    def parse_forever(limit: float) -> int:
        # Pure Python, no GIL release except the interpreter's switch interval.
        n = 0
        start = time.monotonic()
        while not rec.first.is_set() and time.monotonic() - start < limit:
            n += sum(i * i for i in range(200))
        return n

    async def crunch():
        await asyncio.sleep(0)
        parse_forever(5.0)
        return rec.first.is_set()

    async def main():
        return await asyncio.create_task(crunch(), name="cruncher")

    assert ferroloop.run(main(), block_threshold=0.1, block_handler=rec) is True
    during = rec.during()
    assert len(during) == 1
    assert "cruncher" in during[0].description and "Task" in during[0].description
    names = [f.name for f in during[0].stack]
    assert "parse_forever" in names and "crunch" in names, names
    assert names.index("crunch") < names.index("parse_forever")
    assert len(rec.after()) == 1
    assert wait_until(lambda: not watchdog_threads())


def test_no_report_below_the_threshold(ferro_loop, caplog):
    loop = ferro_loop
    rec = Recorder()
    loop.set_block_threshold(0.3, rec)

    async def main():
        for _ in range(6):
            time.sleep(0.05)  # noqa: ASYNC251 - blocks on purpose, under the threshold
            await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    assert rec.reports == []
    assert not [r for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert loop.stats().blocked_callbacks == 0
    assert loop.stats().slowest_callback is None


def test_detector_on_off_and_no_thread_after_close():
    dummies_before = {t for t in threading.enumerate() if isinstance(t, threading._DummyThread)}
    loop = ferroloop.new_event_loop()
    try:
        rec = Recorder()
        assert watchdog_threads() == [] and loop.get_block_threshold() is None
        loop.set_block_threshold(0.05, rec)
        assert wait_until(lambda: len(watchdog_threads()) == 1)
        loop.set_block_threshold(None)
        assert wait_until(lambda: watchdog_threads() == [])
        loop.call_soon(time.sleep, 0.2)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert rec.reports == []  # off: nothing reported
        loop.set_block_threshold(0.05, rec)
        loop.set_block_threshold(0.05, rec)  # again: still one thread
        assert wait_until(lambda: len(watchdog_threads()) == 1)
        assert len(watchdog_threads()) == 1
        loop.call_soon(time.sleep, 0.2)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert len(rec.during()) == 1 and len(rec.after()) == 1
        assert loop.stats().block_threshold == 0.05
    finally:
        loop.close()
    assert wait_until(lambda: watchdog_threads() == [])
    assert loop.get_block_threshold() is None
    # Reports ran Python on the native thread; threading does not keep listing it.
    dummies = {t for t in threading.enumerate() if isinstance(t, threading._DummyThread)}
    assert dummies <= dummies_before


def test_detector_turned_on_from_another_thread_while_close_joins_the_watchdog():
    # close() stops the watchdog and joins it with the GIL released. Another thread that
    # turns the detector on during that join must not leave a watchdog running for a closed
    # loop: it gets asyncio's "Event loop is closed". Deterministic: the watchdog is held in
    # the block handler (so the join waits) until the other thread has made its call; before
    # the fix the call started a second watchdog, which outlived close().
    loop = ferroloop.new_event_loop()
    in_handler = threading.Event()
    release = threading.Event()
    outcome: dict = {}

    def handler(report: BlockedCallback) -> None:
        if not report.finished:
            in_handler.set()
            release.wait(5.0)  # the watchdog stays here, so close()'s join waits too

    def other() -> None:
        try:
            # close() has taken the watchdog out of the loop and is joining it.
            outcome["saw_join"] = wait_until(lambda: not loop._block_detector_running(), 5.0)
            try:
                loop.set_block_threshold(0.05)
                outcome["result"] = "started"
            except RuntimeError as exc:
                outcome["result"] = str(exc)
        finally:
            release.set()

    try:
        loop.set_block_threshold(0.05, handler)
        loop.call_soon(in_handler.wait, 5.0)  # blocks the loop until the first report
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert in_handler.is_set()
        t = threading.Thread(target=other)
        t.start()
        loop.close()
        t.join(10.0)
        assert outcome.get("saw_join")
        assert outcome.get("result") == "Event loop is closed"
        assert not loop._block_detector_running()
        assert wait_until(lambda: watchdog_threads() == [])
    finally:
        release.set()
        loop._set_block_detector(None)  # a stray watchdog (the bug) is stopped here
        loop.close()


def test_detector_argument_checks(ferro_loop):
    with pytest.raises(ValueError):
        ferro_loop.set_block_threshold(0)
    with pytest.raises(ValueError):
        ferro_loop.set_block_threshold(float("nan"))
    with pytest.raises(TypeError):
        ferro_loop.set_block_threshold(0.1, handler=42)
    ferro_loop.close()
    with pytest.raises(RuntimeError):
        ferro_loop.set_block_threshold(0.1)


def test_a_failing_handler_is_logged_and_the_loop_goes_on(ferro_loop, caplog):
    loop = ferro_loop

    def bad_handler(report):
        raise ValueError("handler broke")

    loop.set_block_threshold(0.05, bad_handler)

    async def main():
        time.sleep(0.2)  # noqa: ASYNC251 - blocks the loop on purpose
        await asyncio.sleep(0)
        return "still running"

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        assert run(loop, main()) == "still running"
    errors = [r for r in caplog.records if "Exception in the block handler" in r.getMessage()]
    assert len(errors) == 2  # the report while blocked and the follow-up


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_detector_is_forgotten_in_a_fork_child(ferro_loop):
    loop = ferro_loop
    loop.set_block_threshold(0.05)
    assert wait_until(lambda: len(watchdog_threads()) == 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no watchdog thread, the loop still runs and can watch again
        code = 1
        try:
            result = {"threshold_after_fork": loop._block_detector_running(),
                      "threads": watchdog_threads()}
            loop.call_soon(loop.stop)
            loop.run_forever()
            loop.set_block_threshold(0.05)
            wait_until(lambda: len(watchdog_threads()) == 1)
            result["threads_again"] = watchdog_threads()
            loop.close()
            result["threads_closed"] = watchdog_threads()
            os.write(w, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result = json.loads(data)
    assert result == {"threshold_after_fork": False, "threads": [],
                      "threads_again": ["ferroloop-watch"], "threads_closed": []}
    assert wait_until(lambda: len(watchdog_threads()) == 1)  # the parent's is untouched


def test_a_fork_child_does_not_report_the_parents_blocked_callback(ferro_loop):
    # A callback the parent's watchdog flagged forks (a slow callback that starts a worker
    # process). The child has no detector (it is forgotten at the fork), so the callback's end
    # in the child must not produce a second "blocked the event loop" report (a log line and
    # a handler call in the child, a blocked callback counted in its stats): the parent
    # reports it once. Deterministic: the callback forks only after the watchdog's first
    # report. Before the fix the child reported it too.
    loop = ferro_loop
    rec = Recorder()
    loop.set_block_threshold(0.05, rec)
    r, w = os.pipe()
    forked = {}

    def blocker():
        rec.first.wait(5.0)
        time.sleep(0.05)  # let the watchdog's report return
        pid = os.fork()
        forked["pid"] = pid

    loop.call_soon(blocker)
    loop.call_soon(loop.stop)
    loop.run_forever()
    if forked["pid"] == 0:  # the child, back from its copy of the batch
        code = 1
        try:
            result = {"finished_reports": len(rec.after()),
                      "blocked": loop.stats().blocked_callbacks}
            os.write(w, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(forked["pid"], 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(data) == {"finished_reports": 0, "blocked": 0}
    # The parent reported it, both while it ran and when it returned.
    assert len(rec.during()) == 1 and len(rec.after()) == 1
    assert loop.stats().blocked_callbacks == 1


# -- stats ----------------------------------------------------------------------------------


def test_stats_count_callbacks_and_iterations(ferro_loop):
    loop = ferro_loop
    s0 = loop.stats()
    assert isinstance(s0, LoopStats)
    assert (s0.iterations, s0.callbacks, s0.ready, s0.timers, s0.fds) == (0, 0, 0, 0, 0)
    ran = []
    for i in range(100):
        loop.call_soon(ran.append, i)
    loop.call_soon(ran.append, "cancelled").cancel()
    assert loop.stats().ready == 101
    loop.call_soon(loop.stop)
    loop.run_forever()
    s = loop.stats()
    assert len(ran) == 100
    assert s.iterations == 1
    assert s.callbacks == 101  # 100 + stop; the cancelled handle is not counted
    assert s.ready == 0
    with pytest.raises(AttributeError):
        s.callbacks = 0  # frozen


def test_stats_count_timers(ferro_loop):
    loop = ferro_loop
    fired = []
    handles = [loop.call_later(0.01 * (i % 3), fired.append, i) for i in range(10)]
    for h in handles[:3]:
        h.cancel()
    s = loop.stats()
    assert (s.timers_scheduled, s.timers_cancelled, s.timers) == (10, 3, 7)

    async def main():
        while len(fired) < 7:
            await asyncio.sleep(0.01)

    run(loop, main())
    s = loop.stats()
    assert sorted(fired) == list(range(3, 10))
    assert s.timers_fired >= 7  # and the sleeps' own timers
    assert s.timers_scheduled - s.timers_cancelled == s.timers_fired + s.timers
    assert s.timers == 0


def test_stats_fds_io_events_and_poll_time(ferro_loop):
    loop = ferro_loop
    a, b = socket.socketpair()
    try:
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(100)))
        assert loop.stats().fds == 1

        async def main():
            await asyncio.sleep(0.2)  # the loop sleeps in poll: counted as poll time
            b.send(b"ping")
            while not got:
                await asyncio.sleep(0.001)

        before = loop.stats()
        run(loop, main())
        s = loop.stats()
        assert got == [b"ping"]
        assert s.io_events - before.io_events >= 1
        assert s.sleeping_polls >= 1 and s.polls >= s.sleeping_polls
        # poll_seconds is summed on the coarse clock: within a scheduler tick (<= 4 ms).
        assert 0.15 <= s.poll_seconds <= s.running_seconds + 0.005
        assert s.running_seconds >= 0.2
        assert s.busy_seconds == max(0.0, s.running_seconds - s.poll_seconds)
        assert loop.remove_reader(a)
        assert loop.stats().fds == 0
    finally:
        a.close()
        b.close()


# -- virtual clock --------------------------------------------------------------------------


def test_virtual_sleep_of_an_hour_takes_no_real_time():
    clock = VirtualClock()

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return t0, loop.time()

    start = time.monotonic()
    t0, t1 = ferroloop.run(main(), clock=clock)
    assert time.monotonic() - start < 0.5
    assert (t0, t1) == (0.0, 3600.0)
    assert clock.time() == 3600.0


def _scenario(unit: float):
    """Timers, sleeps, asyncio.timeout, wait_for and a TaskGroup; returns what happened.

    All deadlines are distinct multiples of ``unit`` at least one unit apart, so stock
    asyncio on real time (small unit) and the virtual clock (large unit) must agree on the
    order. Labels only: the times differ by the unit.
    """

    async def main():
        loop = asyncio.get_running_loop()
        log = []

        start = loop.time()

        async def sleeper(name, wakes):
            for w in wakes:
                # Against the start, so late wake-ups on a busy machine do not add up.
                await asyncio.sleep(start + w * unit - loop.time())
                log.append(f"{name}@{w}")

        async def timed_out(name, limit, work):
            try:
                async with asyncio.timeout(limit * unit):
                    await asyncio.sleep(work * unit)
                log.append(f"{name} finished")
            except TimeoutError:
                log.append(f"{name} timed out")

        async def waited(name, limit, work):
            try:
                await asyncio.wait_for(asyncio.sleep(work * unit), limit * unit)
                log.append(f"{name} finished")
            except TimeoutError:
                log.append(f"{name} timed out")

        async def group():
            async def fails_at(t):
                await asyncio.sleep(t * unit)
                log.append(f"group fails@{t}")
                raise ValueError(t)

            async def long_one(name):
                try:
                    await asyncio.sleep(100 * unit)
                    log.append(f"{name} survived")
                except asyncio.CancelledError:
                    log.append(f"{name} cancelled")
                    raise

            try:
                async with asyncio.TaskGroup() as tg:
                    # One long task: the group cancels its tasks in set order.
                    tg.create_task(long_one("g1"))
                    tg.create_task(fails_at(13))
            except* ValueError:
                log.append("group raised")

        for i in range(5):
            loop.call_later((4 * i + 2) * unit, log.append, f"call_later {4 * i + 2}")
        await asyncio.gather(
            sleeper("a", [1, 5, 9, 17]),
            sleeper("b", [3, 7, 11, 19, 23]),
            timed_out("t1", 15, 21),
            timed_out("t2", 25, 24),
            waited("w1", 12, 27),
            waited("w2", 29, 26),
            group(),
        )
        return log

    return main


@pytest.mark.timeout(30)
def test_virtual_clock_order_matches_asyncio_on_real_time():
    start = time.monotonic()
    virtual = ferroloop.run(_scenario(60.0)(), clock=VirtualClock())
    elapsed = time.monotonic() - start
    assert elapsed < 0.5
    # asyncio on real time is the reference. On a loaded machine a 40 ms step can be too short
    # for it to keep the scenario's order (a late wake-up reorders two timers), so it gets
    # longer steps before the comparison fails; the virtual run is deterministic.
    reals = []
    for unit_real in (0.04, 0.1, 0.25):
        reals.append(asyncio.run(_scenario(unit_real)()))
        if reals[-1] == virtual:
            break
    assert virtual == reals[-1], reals
    # Sanity: the scenario exercised every kind of timer.
    assert "t1 timed out" in virtual and "t2 finished" in virtual
    assert "w1 timed out" in virtual and "w2 finished" in virtual
    assert "g1 cancelled" in virtual and "group raised" in virtual
    assert virtual.index("group fails@13") < virtual.index("t1 timed out")


def test_virtual_clock_many_timers_fire_at_exact_virtual_times():
    fired = []

    async def main():
        loop = asyncio.get_running_loop()
        for i in range(200):
            delay = float((i * 37) % 101)  # many equal deadlines: FIFO among equals
            loop.call_later(delay, lambda i=i: fired.append((loop.time(), i)))
        await asyncio.sleep(200)

    ferroloop.run(main(), clock=VirtualClock(start=1000.0))
    assert len(fired) == 200
    expected = sorted((1000.0 + float((i * 37) % 101), i) for i in range(200))
    assert fired == expected


def test_virtual_clock_timeout_wait_for_and_taskgroup_times():
    async def main():
        loop = asyncio.get_running_loop()
        out = {}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.sleep(3600)
        out["timeout"] = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 30)
        out["wait_for"] = loop.time()
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(asyncio.sleep(5, "five"))
            t2 = tg.create_task(asyncio.sleep(50, "fifty"))
        out["taskgroup"] = (loop.time(), t1.result(), t2.result())
        return out

    out = ferroloop.run(main(), clock=VirtualClock())
    assert out == {"timeout": 10.0, "wait_for": 40.0, "taskgroup": (90.0, "five", "fifty")}


def test_virtual_clock_with_real_socket_io():
    async def main():
        loop = asyncio.get_running_loop()

        handled = asyncio.Event()

        async def handle(reader, writer):
            while data := await reader.readline():
                writer.write(data.upper())
                await writer.drain()
            writer.close()
            await writer.wait_closed()
            handled.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ticker = asyncio.create_task(asyncio.sleep(10_000))  # a far timer is pending
        async with asyncio.timeout(60):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answers = []
            for word in (b"one\n", b"two\n", b"three\n"):
                writer.write(word)
                await writer.drain()
                answers.append(await reader.readline())
            writer.close()  # the client closes first: no TIME_WAIT left on the server's port
            await writer.wait_closed()
            await handled.wait()
        now = loop.time()
        ticker.cancel()
        server.close()
        await server.wait_closed()
        return answers, now

    for _ in range(5):  # loopback I/O completes before the next poll: no spurious jump
        answers, now = ferroloop.run(main(), clock=VirtualClock())
        assert answers == [b"ONE\n", b"TWO\n", b"THREE\n"]
        assert now < 60


def test_virtual_clock_waits_for_executor_jobs_and_threadsafe_calls():
    async def main():
        loop = asyncio.get_running_loop()
        # The job takes real time; its timeout is virtual. The clock is held while it runs.
        got = await asyncio.wait_for(loop.run_in_executor(None, time.sleep, 0.1), 1)
        t_after_job = loop.time()
        # No timer at all: the loop sleeps in real time until another thread calls in.
        fut = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        woken = await fut
        # A name that needs the executor (getaddrinfo) under a virtual timeout.
        async with asyncio.timeout(5):
            infos = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        return got, t_after_job, woken, bool(infos), loop.time()

    got, t_after_job, woken, resolved, t_end = ferroloop.run(main(), clock=VirtualClock())
    assert (got, t_after_job, woken, resolved, t_end) == (None, 0.0, "woken", True, 0.0)


def test_virtual_clock_with_runner_and_advance():
    clock = VirtualClock(start=5.0)

    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        loop.call_later(100, fired.append, "due")
        clock.advance(100)  # by hand: the timer is due now
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return fired, loop.time()

    with asyncio.Runner(loop_factory=lambda: ferroloop.new_event_loop(clock=clock)) as runner:
        fired, now = runner.run(main())
        loop = runner.get_loop()
        assert loop.stats().clock_jumps == 0
    assert (fired, now) == (["due"], 105.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    # A closed loop's clock drives a new loop from where it stopped.
    loop2 = ferroloop.new_event_loop(clock=clock)
    try:
        assert loop2.time() == 105.0
        with pytest.raises(RuntimeError):
            ferroloop.new_event_loop(clock=clock)
    finally:
        loop2.close()


def test_virtual_clock_argument_checks():
    with pytest.raises(ValueError):
        VirtualClock(float("inf"))
    with pytest.raises(ValueError):
        VirtualClock(autojump_threshold=-1)
    with pytest.raises(TypeError):
        ferroloop.new_event_loop(clock=time.monotonic)


def test_virtual_clock_autojump_threshold_waits_for_io_from_outside():
    # A peer outside the loop answers after 0.1 s of real time while a 1 s (virtual) timeout
    # is pending: with a threshold of 0.5 s the loop waits for the answer instead of jumping.
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        with contextlib.closing(a), contextlib.closing(b):
            threading.Timer(0.1, b.send, (b"late",)).start()
            async with asyncio.timeout(1):
                data = await loop.sock_recv(a, 10)
        return data, loop.time()

    data, now = ferroloop.run(main(), clock=VirtualClock(autojump_threshold=0.5))
    assert (data, now) == (b"late", 0.0)


def test_real_clock_loop_is_unchanged(ferro_loop):
    # Without a clock, loop.time() is time.monotonic() and stats show no jumps.
    t = ferro_loop.time()
    assert abs(t - time.monotonic()) < 0.1
    assert ferro_loop.stats().clock_jumps == 0
    with pytest.raises(RuntimeError):
        ferro_loop._advance_clock(1.0)


if sys.version_info >= (3, 12):

    def test_virtual_clock_with_asyncio_run_loop_factory():
        async def main():
            await asyncio.sleep(86400)
            return asyncio.get_running_loop().time()

        assert asyncio.run(main(), loop_factory=lambda: ferroloop.new_event_loop(
            clock=VirtualClock())) == 86400.0


def test_a_callback_that_holds_the_gil_is_reported_when_it_returns(ferro_loop, caplog):
    # A regular expression that backtracks for a while: `re` never releases the GIL, so the
    # watchdog cannot look at the stack while it runs; the loop thread reports it afterwards.
    import re

    pattern = re.compile(r"(a|aa)+$")
    n = 20
    while True:
        start = time.monotonic()
        pattern.match("a" * n + "b")
        if time.monotonic() - start >= 0.05 or n >= 40:
            break
        n += 1
    subject = "a" * (n + 4) + "b"  # about 7x longer than the calibration: >= 0.3 s
    loop = ferro_loop
    rec = Recorder()
    loop.set_block_threshold(0.1, rec)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(pattern.match, subject)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert rec.during() == []
    (after,) = rec.after()
    assert not after.stack_reported and after.seconds >= 0.1
    assert any("held the GIL" in r.getMessage() for r in caplog.records)


def test_a_handler_may_turn_the_detector_off(ferro_loop):
    loop = ferro_loop
    seen = []

    def handler(report):
        seen.append(report.finished)
        loop.set_block_threshold(None)  # on the watchdog thread: must not join itself

    loop.set_block_threshold(0.05, handler)
    loop.call_soon(time.sleep, 0.2)
    loop.call_soon(time.sleep, 0.2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [False]  # turned off after the first report: no follow-up, no second one
    assert loop.get_block_threshold() is None
    assert wait_until(lambda: watchdog_threads() == [])


def test_virtual_clock_never_jumps_to_an_infinite_deadline():
    # Only an infinite timer is pending: the loop waits in real time (it does not spin or jump
    # to inf) until another thread calls in.
    async def main():
        loop = asyncio.get_running_loop()
        never = loop.call_at(float("inf"), lambda: None)
        fut = loop.create_future()
        threading.Timer(0.1, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        result = await fut
        never.cancel()
        return result, loop.time(), loop.stats()

    start = time.monotonic()
    result, now, stats = ferroloop.run(main(), clock=VirtualClock())
    assert (result, now, stats.clock_jumps) == ("woken", 0.0, 0)
    assert stats.iterations < 20  # it slept instead of spinning
    assert time.monotonic() - start >= 0.09


def test_detector_on_a_loop_in_another_thread_in_debug_mode():
    # The stack is the thread's that runs the loop; debug mode's own slow-callback log
    # (afterwards, from asyncio's Handle._run path) and the detector work side by side.
    rec = Recorder()
    result = {}

    def slow_step():
        time.sleep(0.25)

    def body():
        loop = ferroloop.new_event_loop()
        loop.set_debug(True)
        loop.set_block_threshold(0.05, rec)
        try:
            loop.call_soon(slow_step)
            loop.call_soon(loop.stop)
            loop.run_forever()
            result["stats"] = loop.stats()
        finally:
            loop.close()

    t = threading.Thread(target=body, name="loop-thread")
    t.start()
    t.join(10)
    assert not t.is_alive()
    (during,) = rec.during()
    names = [f.name for f in during.stack]
    assert names[-1] == "slow_step" and "body" in names, names
    assert "_run_handle_debug" in names  # debug mode runs callbacks through Python
    assert result["stats"].blocked_callbacks == 1


def test_python_m_ferroloop_top_prints_live_stats(tmp_path):
    import subprocess

    script = tmp_path / "app.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    print(type(loop).__module__, sys.argv[1:], flush=True)\n"
        "    for _ in range(12):\n"
        "        for _ in range(50):\n"
        "            loop.call_soon(lambda: None)\n"
        "        await asyncio.sleep(0.05)\n"
        "    time.sleep(0.25)\n"
        "    await asyncio.sleep(0.3)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", "top", "--interval", "0.2",
         "--block-threshold", "0.1", str(script), "one", "two"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ferroloop.base_events ['one', 'two']")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[ferroloop top] loop 1:")]
    assert len(lines) >= 3, proc.stderr
    assert any(" 0 cb/s" not in ln and "cb/s" in ln for ln in lines[1:]), lines
    assert "blocked 1 (slowest" in lines[-1], lines
    assert "has blocked the event loop" in proc.stderr
