"""Ctrl+C: a real SIGINT reaching a loop that sleeps in poll must raise KeyboardInterrupt out of
run_forever promptly (within 100 ms), and the loop must stay usable. Signals are real: sent with
signal.pthread_kill, os.kill, or by a child process. Oracle: stock asyncio.

The outcome is recorded inside the test (never left to escape into pytest), and a fallback
thread stops the loop after a few seconds so that a loop that misses the signal fails the test
instead of hanging it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import run

LATENCY_LIMIT = 0.1
FALLBACK_AFTER = 3.0

pytestmark = pytest.mark.timeout(30)


def _send_pthread_kill(sent):
    sent.append(time.monotonic())
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def _send_os_kill(sent):
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)


CHILD_SENDER = """
import os, signal, sys, time
time.sleep(0.05)
t = time.monotonic()
os.kill(int(sys.argv[1]), signal.SIGINT)
print(repr(t), flush=True)
"""


def _run_forever_expecting_sigint(loop, start_sender):
    """Run the loop until SIGINT; return [(outcome, monotonic time)]."""
    stop_fallback = threading.Event()

    def fallback():
        if not stop_fallback.wait(FALLBACK_AFTER):
            loop.call_soon_threadsafe(loop.stop)

    fb = threading.Thread(target=fallback, daemon=True)
    fb.start()
    loop.call_soon(start_sender)
    outcome = []
    try:
        try:
            loop.run_forever()
            outcome.append(("returned", time.monotonic()))
        except KeyboardInterrupt:
            outcome.append(("KeyboardInterrupt", time.monotonic()))
        # A SIGINT that is still pending is raised here at the latest.
        time.sleep(0.02)
    except KeyboardInterrupt:
        outcome.append(("late KeyboardInterrupt", time.monotonic()))
    finally:
        stop_fallback.set()
        fb.join()
    return outcome


def _assert_prompt_interrupt(outcome, sent_at):
    assert [kind for kind, _ in outcome] == ["KeyboardInterrupt"]
    latency = outcome[0][1] - sent_at
    assert 0 <= latency < LATENCY_LIMIT, f"KeyboardInterrupt took {latency * 1000:.1f} ms"


def _assert_usable_and_clean(loop):
    assert loop.is_running() is False
    assert asyncio._get_running_loop() is None
    assert run(loop, asyncio.sleep(0.01, "usable")) == "usable"
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    loop.close()
    # Like asyncio (which sets no wakeup fd unless add_signal_handler is used), a closed loop
    # leaves no wakeup fd behind.
    old = signal.set_wakeup_fd(-1)
    assert old == -1, "the loop left a signal wakeup fd installed"


@pytest.mark.parametrize("sender", [_send_pthread_kill, _send_os_kill],
                         ids=["pthread_kill", "os_kill"])
@pytest.mark.parametrize("idle", ["no_timers", "far_timer"])
def test_sigint_from_thread_interrupts_poll(loop, sender, idle):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if idle == "far_timer":
        far = loop.call_later(60, lambda: None)
    sent = []

    def start_sender():
        def delayed():
            time.sleep(0.05)  # let the loop go to sleep in poll
            sender(sent)

        threading.Thread(target=delayed, daemon=True).start()

    outcome = _run_forever_expecting_sigint(loop, start_sender)
    assert sent
    _assert_prompt_interrupt(outcome, sent[0])
    if idle == "far_timer":
        assert not far.cancelled()
        far.cancel()
    _assert_usable_and_clean(loop)


def test_sigint_from_child_process_interrupts_poll(loop):
    procs = []

    def start_sender():
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD_SENDER, str(os.getpid())],
                                      stdout=subprocess.PIPE, text=True))

    outcome = _run_forever_expecting_sigint(loop, start_sender)
    out, _ = procs[0].communicate(timeout=10)
    assert procs[0].returncode == 0
    sent_at = float(out.strip())
    _assert_prompt_interrupt(outcome, sent_at)
    _assert_usable_and_clean(loop)


def test_sigint_while_running_callbacks(loop):
    count = [0]

    def spin():
        count[0] += 1
        loop.call_soon(spin)

    sent = []

    def start_sender():
        spin()

        def delayed():
            time.sleep(0.05)
            _send_pthread_kill(sent)

        threading.Thread(target=delayed, daemon=True).start()

    outcome = _run_forever_expecting_sigint(loop, start_sender)
    assert sent
    _assert_prompt_interrupt(outcome, sent[0])
    assert count[0] > 1
    _assert_usable_and_clean(loop)


def test_sigint_during_run_until_complete(loop):
    sent = []

    async def main():
        def delayed():
            time.sleep(0.05)
            _send_os_kill(sent)

        threading.Thread(target=delayed, daemon=True).start()
        await loop.create_future()  # never completes

    outcome = []
    try:
        try:
            run(loop, main(), timeout=FALLBACK_AFTER)
            outcome.append(("returned", time.monotonic()))
        except KeyboardInterrupt:
            outcome.append(("KeyboardInterrupt", time.monotonic()))
        except TimeoutError:
            outcome.append(("TimeoutError", time.monotonic()))
        time.sleep(0.02)
    except KeyboardInterrupt:
        outcome.append(("late KeyboardInterrupt", time.monotonic()))
    assert sent
    _assert_prompt_interrupt(outcome, sent[0])
    # The interrupted tasks are still pending (as in asyncio): cancel them cleanly.
    pending = asyncio.all_tasks(loop)
    # main() and, before 3.12 (whose wait_for is built on asyncio.timeout), wait_for's inner task.
    assert len(pending) == (2 if sys.version_info < (3, 12) else 1)
    for t in pending:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    _assert_usable_and_clean(loop)


def test_python_signal_handler_runs_promptly_while_loop_sleeps(loop):
    # A Python-level handler (not KeyboardInterrupt) must run soon after the signal even though
    # the loop is asleep in poll. asyncio's poll is retried after the handler runs (PEP 475), so
    # the loop keeps sleeping until something else wakes it: here the handler's own threadsafe
    # call.
    ran = []
    sent = []

    def handler(signum, frame):
        ran.append(time.monotonic())
        loop.call_soon_threadsafe(loop.stop)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        def start_sender():
            def delayed():
                time.sleep(0.05)
                sent.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGUSR1)

            threading.Thread(target=delayed, daemon=True).start()

        fallback = threading.Timer(FALLBACK_AFTER, loop.call_soon_threadsafe, args=(loop.stop,))
        fallback.start()
        loop.call_soon(start_sender)
        try:
            loop.run_forever()
        finally:
            fallback.cancel()
        stopped = time.monotonic()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert sent and ran
    assert ran[0] - sent[0] < LATENCY_LIMIT
    assert stopped - sent[0] < LATENCY_LIMIT
