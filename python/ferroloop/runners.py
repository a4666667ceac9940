"""``ferroloop.run``: ``asyncio.run`` on a ferroloop loop.

asyncio's ``Runner`` already does what ``asyncio.run`` does (cancel leftover tasks, shut down
async generators and the default executor, turn the first Ctrl+C into a cancellation of the
main task) and accepts a loop factory, so ``run`` is that runner with ferroloop's factory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .events import new_event_loop

__all__ = ["run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run the coroutine ``main`` on a new ferroloop loop and return its result."""
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
