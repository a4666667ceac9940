"""ferroloop: asyncio's event loop, written in Rust.

Use it in one line::

    ferroloop.run(main())                                   # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # Python 3.11+
    ferroloop.install()                                     # make it asyncio's default

Seeing inside the loop: ``ferroloop.run(main(), block_threshold=0.1)`` reports callbacks that
block the loop, with their stack, while they block; ``loop.stats()``; and
``ferroloop.new_event_loop(clock=ferroloop.VirtualClock())`` for tests on virtual time.

``ferroloop.Loop`` is an ``asyncio.AbstractEventLoop``; asyncio's own Future and Task run on
it unchanged.
"""

from __future__ import annotations

from ._native import Handle, TimerHandle
from .base_events import Loop
from .events import EventLoopPolicy, install, new_event_loop
from .introspection import BlockedCallback, LoopStats, VirtualClock
from .runners import run

__all__ = [
    "BlockedCallback",
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "LoopStats",
    "TimerHandle",
    "VirtualClock",
    "install",
    "new_event_loop",
    "run",
]

__version__ = "0.1.0"
