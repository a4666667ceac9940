"""Seeing inside the loop (issue #11): the blocking detector, loop statistics, a virtual clock.

Three tools that stock asyncio does not have, all ferroloop-only:

* **Blocking detector** (``loop.set_block_threshold(seconds, handler)``, or
  ``ferroloop.run(main(), block_threshold=0.1)``). A native watchdog thread notices a callback
  that has held the loop for longer than the threshold and, while it is still blocked, logs
  its handle, the time so far and the loop thread's Python stack to the ``asyncio`` logger and
  hands a :class:`BlockedCallback` to the handler. When the callback finally returns, a
  second, short report gives the total duration. Mechanism and costs: docs/design.md §5.28.
* **Statistics** (``loop.stats()``): a :class:`LoopStats` snapshot of counters and gauges.
* **Virtual clock** (``ferroloop.new_event_loop(clock=ferroloop.VirtualClock())``): loop time
  that stands still while the loop works and jumps to the next timer when it is idle, so code
  full of ``sleep(60)`` and timeouts runs in milliseconds, in the order real time would give.

The Loop methods behind these live in ``IntrospectionMethods`` (a mixin of ``Loop``); the
per-callback work is native (``introspect.rs``, ``event_loop.rs``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BlockedCallback", "LoopStats", "VirtualClock"]

logger = logging.getLogger("asyncio")


@dataclass(frozen=True)
class BlockedCallback:
    """One report of the blocking detector, as the handler receives it.

    The handler is called twice per blocked callback: once by the watchdog thread while the
    callback is still running (``finished`` is False, ``stack`` holds the loop thread's
    stack), and once by the loop thread right after the callback returned (``finished`` is
    True, ``seconds`` is the total, ``stack`` is None).
    """

    #: The asyncio.Handle being run (for a task step, its callback is the task's ``__step``).
    handle: Any
    #: How the callback is named in the log: the task it steps, or the handle's repr.
    description: str
    #: Seconds it has blocked the loop so far (``finished``: in total). Measured from the
    #: watchdog's first sight of the callback, so at most a quarter of the threshold short.
    seconds: float
    #: The loop thread's stack when the report was made, innermost frame last (None in the
    #: ``finished`` report, and when the stack could not be read).
    stack: traceback.StackSummary | None
    #: False: reported while still blocked; True: the callback has returned.
    finished: bool
    #: ``finished`` only: whether a stack was reported while it ran. False when the callback
    #: held the GIL the whole time (a C extension that does not release it), so the watchdog
    #: could not look until it had returned.
    stack_reported: bool = True

    def format_stack(self) -> str:
        """The stack as ``traceback.format_stack`` prints it."""
        return "".join(self.stack.format()) if self.stack is not None else ""


@dataclass(frozen=True)
class LoopStats:
    """A snapshot of ``loop.stats()``. Counters count since the loop was created.

    The counters are always kept (design.md §5.28 has their cost): integer increments in
    state the run loop touches anyway, two coarse-clock reads around each poll that may
    sleep, two clock reads per ``run_forever``. Times are real seconds (``time.monotonic``), also with a virtual
    clock.
    """

    #: Iterations of the run loop (one poll and one batch of callbacks each).
    iterations: int
    #: Callbacks run (cancelled handles are skipped and not counted).
    callbacks: int
    #: Callbacks ready to run now (a gauge).
    ready: int
    #: Timers scheduled and not cancelled, waiting for their deadline (a gauge).
    timers: int
    #: Timers scheduled (call_later/call_at, including asyncio.sleep and timeouts), timers
    #: cancelled while scheduled, and timers that came due and were queued.
    timers_scheduled: int
    timers_cancelled: int
    timers_fired: int
    #: File descriptors the loop watches for users (readers, writers, transports; a gauge).
    fds: int
    #: ``epoll_wait`` calls; those that were allowed to sleep; and the seconds spent in those
    #: (measured with the coarse monotonic clock, 1-4 ms steps, exact in sum over many polls).
    #: (Zero-timeout polls are skipped while no fd is watched, and count as busy time.)
    polls: int
    sleeping_polls: int
    poll_seconds: float
    #: I/O readiness events delivered to watchers and transports.
    io_events: int
    #: Seconds spent inside ``run_forever`` (``run_until_complete``, ``asyncio.run``), the
    #: current run included. ``running_seconds - poll_seconds`` is the time the loop was busy.
    running_seconds: float
    #: Virtual clock: jumps to the next timer (0 with the real clock).
    clock_jumps: int
    #: Blocking detector: its threshold (None while off), how many callbacks it caught, and
    #: the longest of them (seconds, description; None until one is caught). Callbacks are
    #: timed only by the detector, and only those over the threshold (see §5.28).
    block_threshold: float | None
    blocked_callbacks: int
    slowest_callback_seconds: float | None
    slowest_callback: str | None

    @property
    def busy_seconds(self) -> float:
        """Seconds the loop spent running, less those it slept in poll (within a few ms:
        ``poll_seconds`` moves in scheduler ticks)."""
        return max(0.0, self.running_seconds - self.poll_seconds)


class VirtualClock:
    """A clock for tests: loop time stands still while the loop works, and jumps.

    Pass it to ``ferroloop.new_event_loop(clock=...)`` (or ``ferroloop.run(..., clock=...)``).
    ``loop.time()`` then returns virtual seconds, starting at ``start``. When the loop has
    nothing ready to run and a poll for I/O finds nothing either, the clock jumps to the
    earliest timer, which then fires. A program full of ``asyncio.sleep(60)``, ``wait_for``
    and ``asyncio.timeout`` runs in milliseconds, with its callbacks in the order the same
    deadlines give in real time.

    * ``autojump_threshold``: real seconds the loop waits for I/O before it jumps (default 0:
      jump as soon as a zero-timeout poll finds nothing). Raise it when the program waits for
      something outside the process (a subprocess, a remote peer) while a timer is pending.
    * Jobs of ``loop.run_in_executor`` (also ``getaddrinfo``) hold the clock while they run:
      virtual time does not move until their results are back. Threads of your own are not
      tracked: hand their work in with ``call_soon_threadsafe`` before the loop goes idle, or
      use a threshold.
    * ``advance(seconds)`` moves the clock forward by hand.

    One clock drives one loop at a time; a closed loop's clock can be reused, and continues
    from where it stopped.
    """

    def __init__(self, start: float = 0.0, *, autojump_threshold: float = 0.0) -> None:
        start = float(start)
        threshold = float(autojump_threshold)
        if not math.isfinite(start):
            raise ValueError("start must be a finite number")
        if not (threshold >= 0.0 and math.isfinite(threshold)):
            raise ValueError("autojump_threshold must be a finite number >= 0")
        self._start = start
        self._autojump_threshold = threshold
        self._loop: weakref.ref | None = None

    @property
    def autojump_threshold(self) -> float:
        return self._autojump_threshold

    def _current_loop(self) -> Any:
        return self._loop() if self._loop is not None else None

    def _attach(self, loop: Any) -> None:
        old = self._current_loop()
        if old is not None:
            if not old.is_closed():
                raise RuntimeError("this VirtualClock already drives an open event loop")
            self._start = old.time()
        self._loop = weakref.ref(loop)
        loop._set_virtual_clock(self._start, self._autojump_threshold)

    def _loop_closed(self, loop: Any) -> None:
        if self._current_loop() is loop:
            self._start = loop.time()
            self._loop = None

    def time(self) -> float:
        """The current virtual time (the loop's ``loop.time()``)."""
        loop = self._current_loop()
        return loop.time() if loop is not None else self._start

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; timers now due run in the next iteration."""
        loop = self._current_loop()
        if loop is None:
            seconds = float(seconds)
            if not seconds >= 0.0:
                raise ValueError("time can only move forward")
            self._start += seconds
            return self._start
        t = loop._advance_clock(float(seconds))
        loop._write_to_self()
        return t

    def __repr__(self) -> str:
        return (
            f"<VirtualClock time={self.time()!r} "
            f"autojump_threshold={self._autojump_threshold!r}>"
        )


def _check_clock(clock: Any) -> None:
    if not isinstance(clock, VirtualClock):
        raise TypeError(f"clock must be a ferroloop.VirtualClock or None, got {clock!r}")


def _format_handle(handle: Any) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    import asyncio

    if isinstance(owner, asyncio.Task):
        return repr(owner)
    return str(handle)


class IntrospectionMethods:
    """``Loop``'s blocking detector, ``stats()`` and virtual-clock plumbing."""

    def _init_introspection(self, clock: VirtualClock | None) -> None:
        self._clock: VirtualClock | None = None
        self._block_threshold: float | None = None
        self._block_handler: Callable[[BlockedCallback], object] | None = None
        self._blocked_count = 0
        self._slowest: tuple[float, str] | None = None
        self._run_seconds = 0.0
        self._run_started: float | None = None
        if clock is not None:
            _check_clock(clock)
            clock._attach(self)
            self._clock = clock

    # -- blocking detector -------------------------------------------------------------------

    def set_block_threshold(
        self,
        seconds: float | None,
        handler: Callable[[BlockedCallback], object] | None = None,
    ) -> None:
        """Report callbacks that block the loop for longer than ``seconds`` (None: stop).

        A native watchdog thread watches the loop. A callback still running after
        ``seconds`` is logged to the ``asyncio`` logger (a warning with the callback, the time
        so far and the loop thread's stack) while it is still blocked, and once more with its
        total duration when it returns. ``handler``, if given, receives both reports as
        :class:`BlockedCallback` objects: the first on the watchdog thread (with the GIL
        held), the second on the loop thread. The watchdog stops when the detector is turned
        off, when the loop closes, and at interpreter exit.
        """
        if seconds is None:
            self._set_block_detector(None)
            self._block_threshold = None
            self._block_handler = None
            return
        self._check_closed()
        seconds = float(seconds)
        if not (seconds > 0.0 and math.isfinite(seconds)):
            raise ValueError("block threshold must be a positive number of seconds")
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable or None, got {handler!r}")
        previous = (self._block_handler, self._block_threshold)
        self._block_handler = handler
        self._block_threshold = seconds
        try:
            # RuntimeError if another thread closed the loop since the check above.
            self._set_block_detector(seconds, weakref.WeakMethod(self._report_blocked))
        except BaseException:
            self._block_handler, self._block_threshold = previous
            raise

    def get_block_threshold(self) -> float | None:
        """The blocking detector's threshold in seconds, or None while it is off."""
        return self._block_threshold

    def _report_blocked(self, handle: Any, seconds: float, frames: list) -> None:
        """Watchdog thread, GIL held, the callback still running: the first report."""
        stack = traceback.StackSummary.from_list(
            [traceback.FrameSummary(f, n, name) for f, n, name in frames]
        )
        report = BlockedCallback(
            handle=handle,
            description=_format_handle(handle),
            seconds=seconds,
            stack=stack,
            finished=False,
        )
        try:
            logger.warning(
                "Callback %s has blocked the event loop for %.3f seconds and is still "
                "running; loop thread stack (most recent call last):\n%s",
                report.description, seconds, report.format_stack().rstrip(),
            )
            self._call_block_handler(report)
        finally:
            _forget_dummy_thread()

    def _blocked_callback_done(self, handle: Any, seconds: float, stack_reported: bool) -> None:
        """Loop thread: a callback the watchdog caught has returned after ``seconds``."""
        description = _format_handle(handle)
        self._blocked_count += 1
        if self._slowest is None or seconds > self._slowest[0]:
            self._slowest = (seconds, description)
        if stack_reported:
            logger.warning("Callback %s blocked the event loop for %.3f seconds",
                           description, seconds)
        else:
            logger.warning(
                "Callback %s blocked the event loop for %.3f seconds; no stack: it held the "
                "GIL the whole time", description, seconds,
            )
        self._call_block_handler(BlockedCallback(
            handle=handle, description=description, seconds=seconds, stack=None,
            finished=True, stack_reported=stack_reported,
        ))

    def _call_block_handler(self, report: BlockedCallback) -> None:
        handler = self._block_handler
        if handler is None:
            return
        try:
            handler(report)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            logger.exception("Exception in the block handler %r", handler)

    # -- statistics --------------------------------------------------------------------------

    def stats(self) -> LoopStats:
        """A snapshot of the loop's counters and gauges (see :class:`LoopStats`)."""
        raw = self._stats()
        running = self._run_seconds
        if self._run_started is not None:
            running += time.monotonic() - self._run_started
        slowest = self._slowest
        return LoopStats(
            **raw,
            running_seconds=running,
            block_threshold=self._block_threshold,
            blocked_callbacks=self._blocked_count,
            slowest_callback_seconds=slowest[0] if slowest else None,
            slowest_callback=slowest[1] if slowest else None,
        )

    def _run_timer_start(self) -> None:
        self._run_started = time.monotonic()

    def _run_timer_stop(self) -> None:
        if self._run_started is not None:
            self._run_seconds += time.monotonic() - self._run_started
            self._run_started = None

    # -- virtual clock -----------------------------------------------------------------------

    def _hold_clock_until(self, fut: Any) -> None:
        """Virtual clock: no jumps until ``fut`` (an executor job's future) is done."""
        if self._clock is None or fut.done():
            return
        self._hold_clock(1)
        fut.add_done_callback(self._release_clock)

    def _release_clock(self, _fut: Any) -> None:
        self._hold_clock(-1)


def _forget_dummy_thread() -> None:
    # The watchdog is a native thread: Python code run on it (logging asks for the current
    # thread's name) makes `threading` register a _DummyThread for it, which would stay in
    # threading.enumerate() after the thread has ended. Drop it after each report.
    ident = threading.get_ident()
    with threading._active_limbo_lock:  # type: ignore[attr-defined]
        if isinstance(threading._active.get(ident), threading._DummyThread):  # type: ignore[attr-defined]
            del threading._active[ident]  # type: ignore[attr-defined]


def _stop_all_watchdogs() -> None:
    # At exit, before the interpreter finalizes: no watchdog thread may try to take the GIL
    # while the interpreter is being torn down.
    from .unix_events import _loops

    for loop in list(_loops):
        with contextlib.suppress(Exception):  # best effort at exit
            loop._set_block_detector(None)


atexit.register(_stop_all_watchdogs)
