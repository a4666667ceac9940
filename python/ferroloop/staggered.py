"""A staggered race: the connection-attempt scheduling of Happy Eyeballs (RFC 8305 §5).

Why this file exists: ``create_connection(..., happy_eyeballs_delay=d)`` must try the
addresses of a host one after another without waiting for each to time out: an attempt
starts, and the next one starts ``d`` seconds later, or at once if the latest attempt has
already failed. The first attempt to succeed wins and every other attempt is cancelled.

asyncio has ``asyncio.staggered.staggered_race`` for this; ferroloop has its own, written
from the RFC and from asyncio's documented behaviour, for two reasons. It is one driver
coroutine and one task per attempt (asyncio chains a helper task per attempt), and it
never leaks what a losing attempt produced: when two attempts succeed in the same loop
iteration, or the race is cancelled after an attempt succeeded, the extra results are
handed to ``discard`` (``create_connection`` closes those sockets). The losers are
cancelled and waited for before the race returns, so a cancelled attempt has closed its
socket by the time the caller sees the winner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

__all__ = ["staggered_race"]

T = TypeVar("T")


async def _attempt(factory: Callable[[], Awaitable[T]]) -> T:
    # The factory runs inside the attempt's task, so that an exception it raises is that
    # attempt's failure, like one raised by the awaitable it returns.
    return await factory()


def _discard_when_done(discard: Callable[[Any], object] | None) -> Callable[[asyncio.Task], None]:
    """Done-callback for an attempt abandoned while running: discard a late success."""

    def done(task: asyncio.Task) -> None:
        if task.cancelled():
            return
        if task.exception() is None and discard is not None:
            discard(task.result())

    return done


async def staggered_race(
    factories: Iterable[Callable[[], Awaitable[T]]],
    delay: float | None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    discard: Callable[[T], object] | None = None,
) -> tuple[T | None, int | None, list[BaseException | None]]:
    """Run the attempts made by ``factories`` with staggered starts; the first success wins.

    The first attempt starts at once. Each further attempt starts ``delay`` seconds after
    the previous one started, or as soon as the most recently started attempt fails,
    whichever comes first; with ``delay=None`` attempts run strictly one after another.
    When an attempt succeeds, the others are cancelled and waited for.

    Returns ``(result, index, errors)``: the winner's result and its index in
    ``factories`` (``None, None`` if every attempt failed), and one entry per attempt
    started, in start order: the exception it failed with, or ``None`` (the winner, or an
    attempt cancelled because another won). Results of successful attempts that are not
    returned (two successes in one iteration; the race itself cancelled) go to
    ``discard``.
    """
    loop = loop or asyncio.get_running_loop()
    pending_factories = iter(factories)
    exhausted = False
    tasks: list[asyncio.Task] = []
    index_of: dict[asyncio.Task, int] = {}
    errors: list[BaseException | None] = []
    running: set[asyncio.Task] = set()
    winner_index: int | None = None
    winner_result: Any = None
    next_start: float | None = None  # loop time at which the next attempt starts anyway

    def start_next() -> None:
        nonlocal exhausted, next_start
        next_start = None
        if exhausted:
            return
        try:
            factory = next(pending_factories)
        except StopIteration:
            exhausted = True
            return
        task = loop.create_task(_attempt(factory))
        index_of[task] = len(tasks)
        tasks.append(task)
        errors.append(None)
        running.add(task)
        if delay is not None:
            next_start = loop.time() + delay

    finished = False
    try:
        start_next()
        while running:
            timeout = None if next_start is None else max(0.0, next_start - loop.time())
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                start_next()  # the delay is up and nothing has won yet
                continue
            latest_failed = False
            for task in sorted(done, key=index_of.__getitem__):
                running.discard(task)
                index = index_of[task]
                exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
                if exc is None:
                    if winner_index is None:
                        winner_index, winner_result = index, task.result()
                    elif discard is not None:
                        discard(task.result())
                    continue
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise exc
                errors[index] = exc
                if index == len(tasks) - 1:
                    latest_failed = True
            if winner_index is not None:
                break
            if latest_failed or not running:
                start_next()
        # A winner (or nothing left to try): stop the others and let them clean up.
        for task in running:
            task.cancel()
        while running:
            done, _ = await asyncio.wait(running)
            for task in done:
                running.discard(task)
                if not task.cancelled() and task.exception() is None and discard is not None:
                    discard(task.result())  # succeeded before the cancellation landed
        finished = True
        return winner_result, winner_index, errors
    finally:
        if not finished:
            # Leaving early (the race was cancelled, or an attempt raised SystemExit or
            # KeyboardInterrupt): nobody will get the winner, and the attempts still
            # running are stopped without waiting; a late success is discarded on its way.
            if winner_index is not None and discard is not None:
                discard(winner_result)
            callback = _discard_when_done(discard)
            for task in running:
                task.cancel()
                task.add_done_callback(callback)
