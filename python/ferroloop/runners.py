"""``ferroloop.run``: ``asyncio.run`` on a ferroloop loop.

asyncio's ``Runner`` already does what ``asyncio.run`` does (cancel leftover tasks, shut down
async generators and the default executor, turn the first Ctrl+C into a cancellation of the
main task) and accepts a loop factory, so ``run`` is that runner with ferroloop's factory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .base_events import Loop
from .events import new_event_loop
from .introspection import BlockedCallback, VirtualClock

__all__ = ["run"]

_T = TypeVar("_T")


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    clock: VirtualClock | None = None,
    block_threshold: float | None = None,
    block_handler: Callable[[BlockedCallback], object] | None = None,
) -> _T:
    """Run the coroutine ``main`` on a new ferroloop loop and return its result.

    ``clock``: a ``ferroloop.VirtualClock`` to run on virtual time. ``block_threshold``:
    turn the blocking detector on (seconds; see ``Loop.set_block_threshold``), reporting to
    the ``asyncio`` logger and to ``block_handler`` if given.
    """
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")

    def factory() -> Loop:
        loop = new_event_loop(clock=clock)
        if block_threshold is not None:
            loop.set_block_threshold(block_threshold, block_handler)
        return loop

    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)
