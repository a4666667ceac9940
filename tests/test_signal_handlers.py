"""loop.add_signal_handler / remove_signal_handler with real signals (os.kill, pthread_kill).
Oracle: stock asyncio, each test on both loops.

What is checked: asyncio's argument rules (TypeError, ValueError, RuntimeError for SIGKILL and
SIGSTOP and outside the main thread); callbacks run on the loop, promptly while it sleeps in
poll and while it is busy with callbacks; the handlers coexist with Python's own ``signal``
handlers and with Ctrl+C; removal and ``close()`` restore the dispositions and the wake-up fd.
Every test that waits for a signal has a fallback that stops the loop, so a missed signal
fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from conftest import run

LATENCY_LIMIT = 0.1
FALLBACK_AFTER = 3.0

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _clean_signal_state():
    """Each test starts and must end with default dispositions and no wake-up fd."""
    sigs = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGALRM, signal.SIGHUP)
    before = {s: signal.getsignal(s) for s in sigs}
    assert signal.set_wakeup_fd(-1) == -1
    yield
    leaked_fd = signal.set_wakeup_fd(-1)
    after = {s: signal.getsignal(s) for s in sigs}
    for s, handler in before.items():
        signal.signal(s, handler)
    assert leaked_fd == -1, "a signal wake-up fd was left installed"
    assert after == before, "a signal disposition was left changed"


def _kill_later(sig, delay=0.05, sent=None, thread_target=False):
    """Send ``sig`` to this process from a thread after ``delay`` seconds."""

    def go():
        time.sleep(delay)
        if sent is not None:
            sent.append(time.monotonic())
        if thread_target:
            signal.pthread_kill(threading.main_thread().ident, sig)
        else:
            os.kill(os.getpid(), sig)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def _run_with_fallback(loop, coro):
    return run(loop, coro, timeout=FALLBACK_AFTER)


# ---------------------------------------------------------------- delivery


@pytest.mark.parametrize("sender", ["os_kill", "pthread_kill"])
def test_handler_runs_on_the_loop_promptly_while_it_sleeps(loop, sender):
    sent = []
    got = []

    async def main():
        done = loop.create_future()

        def handler(*args):
            got.append((time.monotonic(), args, threading.get_ident(),
                        asyncio.get_running_loop() is loop))
            done.set_result(None)

        loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
        try:
            # Nothing else is scheduled: the loop sleeps in poll when the signal comes.
            _kill_later(signal.SIGUSR1, sent=sent, thread_target=sender == "pthread_kill")
            await asyncio.wait_for(done, FALLBACK_AFTER)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    run(loop, main())
    assert len(got) == 1
    at, args, ident, on_loop = got[0]
    assert args == ("a", 2)
    assert ident == threading.get_ident()  # the loop's thread, called by the loop
    assert on_loop
    assert at - sent[0] < LATENCY_LIMIT, f"handler ran {(at - sent[0]) * 1000:.1f} ms late"


def test_handler_runs_while_the_loop_is_busy_with_callbacks(loop):
    # A loop that never sleeps (a callback re-scheduling itself, no I/O) must still read the
    # signal and run the handler.
    got = []
    spins = [0]
    sent = []

    def spin():
        spins[0] += 1
        if not got:
            loop.call_soon(spin)
        else:
            loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, lambda: got.append(time.monotonic()))
    try:
        fallback = threading.Timer(FALLBACK_AFTER, loop.call_soon_threadsafe, args=(loop.stop,))
        fallback.start()
        loop.call_soon(spin)
        loop.call_soon(_kill_later, signal.SIGUSR1, 0.05, sent)
        try:
            loop.run_forever()
        finally:
            fallback.cancel()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got, "the handler never ran"
    assert spins[0] > 1
    assert got[0] - sent[0] < LATENCY_LIMIT


def test_signal_before_run_is_delivered_by_the_next_run(loop):
    # asyncio keeps the wake-up fd while handlers exist, running or not: a signal that
    # arrives between two runs is handled by the next one.
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "between runs")
    try:
        run(loop, asyncio.sleep(0))
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got == []
        run(loop, asyncio.sleep(0.05))
        assert got == ["between runs"]
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def test_several_signals_and_replacing_a_handler(loop):
    got = []

    async def main():
        loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
        loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")  # replaces
        loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)

    try:
        run(loop, main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)
    assert got == ["usr1", "usr2", "usr1"]


def test_handler_exception_goes_to_the_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def boom():
        raise ZeroDivisionError("in handler")

    async def main():
        loop.add_signal_handler(signal.SIGUSR1, boom)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)
        return "loop survived"

    try:
        assert run(loop, main()) == "loop survived"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ZeroDivisionError)
    assert contexts[0]["message"].startswith("Exception in callback")


def test_sigint_handler_replaces_keyboard_interrupt(loop):
    got = []

    async def main():
        loop.add_signal_handler(signal.SIGINT, got.append, "sigint")
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.05)
        finally:
            assert loop.remove_signal_handler(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    run(loop, main())
    assert got == ["sigint"]


def test_debug_mode(loop):
    loop.set_debug(True)
    got = []

    async def main():
        loop.add_signal_handler(signal.SIGUSR1, got.append, "debug")
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)

    try:
        run(loop, main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got == ["debug"]


# ---------------------------------------------------------------- coexistence


def test_python_signal_module_handler_still_runs(loop):
    # A handler set with signal.signal for another signal keeps working (and promptly: the
    # loop's wake-up fd ends the poll) while the loop handles SIGUSR1.
    py_got = []
    loop_got = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: py_got.append(s))
    try:
        async def main():
            loop.add_signal_handler(signal.SIGUSR1, loop_got.append, "loop")
            try:
                os.kill(os.getpid(), signal.SIGUSR2)
                os.kill(os.getpid(), signal.SIGUSR1)
                await asyncio.sleep(0.05)
            finally:
                loop.remove_signal_handler(signal.SIGUSR1)

        run(loop, main())
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert py_got == [signal.SIGUSR2]
    assert loop_got == ["loop"]


def test_ctrl_c_still_interrupts_while_handlers_are_registered(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    sent = []
    outcome = []
    try:
        fallback = threading.Timer(FALLBACK_AFTER, loop.call_soon_threadsafe, args=(loop.stop,))
        fallback.start()
        loop.call_soon(_kill_later, signal.SIGINT, 0.05, sent)
        try:
            try:
                loop.run_forever()
                outcome.append(("returned", time.monotonic()))
            except KeyboardInterrupt:
                outcome.append(("KeyboardInterrupt", time.monotonic()))
            time.sleep(0.02)
        except KeyboardInterrupt:
            outcome.append(("late KeyboardInterrupt", time.monotonic()))
        finally:
            fallback.cancel()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert [kind for kind, _ in outcome] == ["KeyboardInterrupt"]
    assert outcome[0][1] - sent[0] < LATENCY_LIMIT


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_runner_and_a_loop_handler_leave_default_dispositions(loop_factory, signum):
    # asyncio.Runner installs its own SIGINT handler around run(); a program that adds its
    # own handler on the loop must still leave the defaults behind once the runner closes,
    # so that the next runner installs its handler again.
    default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    got = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signum, got.append, "mine")
        os.kill(os.getpid(), signum)
        await asyncio.sleep(0.05)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert got == ["mine"]
    assert signal.getsignal(signum) is default


# ---------------------------------------------------------------- argument rules


def test_invalid_and_uncatchable_signals(loop):
    def cb():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler("boom", cb)
    with pytest.raises(TypeError):
        loop.remove_signal_handler("boom")
    for bad in (signal.NSIG + 1, 0, -1):
        with pytest.raises(ValueError):
            loop.add_signal_handler(bad, cb)
        with pytest.raises(ValueError):
            loop.remove_signal_handler(bad)
    for uncatchable in (signal.SIGKILL, signal.SIGSTOP):
        with pytest.raises(RuntimeError):
            loop.add_signal_handler(uncatchable, cb)
        # Removing never calls signal.signal for an unregistered signal: no error.
        assert loop.remove_signal_handler(uncatchable) is False
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_coroutines_are_refused(loop):
    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_closed_loop_refuses(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_main_thread_only(loop):
    errors = []

    def other_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except Exception as exc:  # noqa: BLE001 - the type is the assertion
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_running_in_another_thread_refuses(loop_factory):
    # A loop that runs in a non-main thread cannot add a signal handler (RuntimeError).
    errors = []

    def other_thread():
        lp = loop_factory()
        try:
            async def main():
                try:
                    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
                except RuntimeError as exc:
                    errors.append(exc)

            lp.run_until_complete(main())
        finally:
            lp.close()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert len(errors) == 1


# ---------------------------------------------------------------- removal and close


def test_remove_restores_defaults_and_reports(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # No handler left: the wake-up fd is given back.
    assert signal.set_wakeup_fd(-1) == -1


def test_wakeup_fd_is_held_while_handlers_exist(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    try:
        fd = signal.set_wakeup_fd(-1)
        assert fd != -1
        signal.set_wakeup_fd(fd)
        run(loop, asyncio.sleep(0))
        # Still held after the run ended.
        assert signal.set_wakeup_fd(fd) == fd
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.set_wakeup_fd(-1) == -1


def test_previous_wakeup_fd_is_restored(loop_factory):
    # A deliberate difference: asyncio sets the wake-up fd to -1 when its last handler goes,
    # dropping one the program had set before; ferroloop gives that one back.
    import socket

    loop = loop_factory()
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        theirs = b.fileno()
        signal.set_wakeup_fd(theirs)
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
            loop.remove_signal_handler(signal.SIGUSR1)
            restored = signal.set_wakeup_fd(-1)
        finally:
            signal.set_wakeup_fd(-1)
            loop.close()
    finally:
        a.close()
        b.close()
    assert restored == (theirs if loop_factory.is_ferroloop else -1)


def test_close_removes_handlers(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    loop.add_signal_handler(signal.SIGINT, got.append, 2)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1
    assert got == []


def test_ignored_signal_is_ignored_again_after_removal(loop_factory):
    # A deliberate difference: asyncio resets a removed signal to SIG_DFL even if it was
    # ignored before (a SIGHUP ignored by nohup would kill the process after the loop is
    # done with it); ferroloop puts SIG_IGN back.
    loop = loop_factory()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        loop.remove_signal_handler(signal.SIGHUP)
        after_remove = signal.getsignal(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        loop.close()
        after_close = signal.getsignal(signal.SIGHUP)
    finally:
        loop.close()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    expected = signal.SIG_IGN if loop_factory.is_ferroloop else signal.SIG_DFL
    assert after_remove == expected
    assert after_close == expected


def test_two_loops_release_the_wakeup_fd_out_of_order(loop_factory):
    # Loop A claims the wake-up fd (a handler), then loop B claims it over A's (a run in the
    # main thread, a handler) and remembers A's socket as "the one before". If A is closed
    # first, its socket is closed and its fd number becomes free; B must not put that number
    # back when it lets go, or signals are written into whatever file reuses it. Here a pipe
    # is made to reuse the number, and a signal after B's release must not reach it.
    # Deterministic (no timing involved); it failed before the fix (the pipe got the byte).
    # asyncio ends with no wake-up fd (its close sets -1); ferroloop ends with the one that
    # was there before A (none here), also -1.
    a = loop_factory()
    b = loop_factory()
    try:
        a.add_signal_handler(signal.SIGUSR1, lambda: None)
        a_fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(a_fd)
        b.add_signal_handler(signal.SIGUSR2, lambda: None)
        r, w = os.pipe()  # before A's close, so neither end takes A's number
        a.close()  # A goes first: its socket, and fd number a_fd, are gone
        try:
            os.dup2(w, a_fd)  # an unrelated file now owns the number
            # Non-blocking, as a program's sockets are (set_wakeup_fd refuses blocking fds).
            os.set_blocking(a_fd, False)
            os.set_blocking(r, False)
            b.close()  # B lets go of the wake-up fd
            left = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(left)
            # Any signal now goes to the wake-up fd, if one is set.
            prev = signal.signal(signal.SIGUSR1, lambda *_: None)
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(0.01)
            finally:
                signal.signal(signal.SIGUSR1, prev)
            try:
                leaked = os.read(r, 16)
            except BlockingIOError:
                leaked = b""
        finally:
            signal.set_wakeup_fd(-1)
            os.close(a_fd)
            os.close(r)
            os.close(w)
        assert left != a_fd, "a released loop put back a closed loop's wake-up fd"
        assert leaked == b"", "a signal was written into a file that reused the fd number"
        assert left == -1
    finally:
        b.close()
        a.close()


def test_a_previous_wakeup_fd_closed_meanwhile_is_not_restored(loop_factory):
    # The program had a wake-up fd (a socket of its own), the loop took over, and the program
    # closed its socket meanwhile; another file now has that fd number. When the loop lets go
    # it must not make that number the wake-up fd again: signals would be written into the
    # unrelated file. (asyncio sets -1 anyway; ferroloop restores the previous fd only while it
    # still names the file it named when the loop took over.) Deterministic; before the fix
    # the unrelated pipe received the signal's byte.
    import socket

    loop = loop_factory()
    theirs_r, theirs_w = socket.socketpair()
    theirs_w.setblocking(False)
    num = theirs_w.fileno()
    try:
        signal.set_wakeup_fd(num)
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        r, w = os.pipe()  # before the close, so neither end takes the number
        theirs_w.close()  # the program's socket is gone; its number is free
        try:
            os.dup2(w, num)
            os.set_blocking(num, False)
            os.set_blocking(r, False)
            loop.remove_signal_handler(signal.SIGUSR1)  # the loop lets go
            left = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(left)
            prev = signal.signal(signal.SIGUSR2, lambda *_: None)
            try:
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(0.01)
            finally:
                signal.signal(signal.SIGUSR2, prev)
            try:
                leaked = os.read(r, 16)
            except BlockingIOError:
                leaked = b""
        finally:
            signal.set_wakeup_fd(-1)
            os.close(num)
            os.close(r)
            os.close(w)
        assert left == -1, "a closed wake-up fd's number was made the wake-up fd again"
        assert leaked == b""
    finally:
        signal.set_wakeup_fd(-1)
        theirs_r.close()
        theirs_w.close()
        loop.close()


def test_the_programs_wakeup_fd_comes_back_after_two_loops_release_out_of_order(loop_factory):
    # The chain of test_two_loops_release_the_wakeup_fd_out_of_order with a wake-up fd of the
    # program's own under it: A took over from the program, B from A, A let go first. B must
    # hand back the program's fd, not A's closed socket (nor nothing). asyncio sets -1 (the
    # deliberate difference of test_previous_wakeup_fd_is_restored).
    import socket

    theirs_r, theirs_w = socket.socketpair()
    theirs_w.setblocking(False)
    theirs = theirs_w.fileno()
    a = loop_factory()
    b = loop_factory()
    try:
        signal.set_wakeup_fd(theirs)
        a.add_signal_handler(signal.SIGUSR1, lambda: None)
        b.add_signal_handler(signal.SIGUSR2, lambda: None)
        a.close()
        b.close()
        restored = signal.set_wakeup_fd(-1)
    finally:
        signal.set_wakeup_fd(-1)
        b.close()
        a.close()
        theirs_r.close()
        theirs_w.close()
    assert restored == (theirs if loop_factory.is_ferroloop else -1)


def _anon_inodes(kind: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if kind in os.readlink(f"/proc/self/fd/{fd}"):
                n += 1
        except OSError:
            pass
    return n


def test_close_from_another_thread_with_handlers_still_closes_the_poller(loop_factory):
    # close() from a thread other than the main one cannot restore signal dispositions
    # (signal.signal raises ValueError there), and asyncio lets that ValueError out of close().
    # asyncio has closed its selector by then; ferroloop used to stop at that point and leave
    # its epoll instance and eventfd open for good (a second close() returns at once). The
    # ValueError still propagates, as in asyncio. Deterministic.
    epolls = _anon_inodes("eventpoll")
    eventfds = _anon_inodes("eventfd")
    loop = loop_factory()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    errors = []

    def closer():
        try:
            loop.close()
        except Exception as exc:  # noqa: BLE001 - checked below
            errors.append(type(exc))

    t = threading.Thread(target=closer)
    t.start()
    t.join(5.0)
    try:
        assert errors == [ValueError]
        assert loop.is_closed()
        assert _anon_inodes("eventpoll") == epolls, "the closed loop kept its epoll instance"
        assert _anon_inodes("eventfd") == eventfds, "the closed loop kept its eventfd"
    finally:
        # The main thread puts the disposition and the wake-up fd back (both loops forgot the
        # handler before signal.signal refused).
        loop.remove_signal_handler(signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
