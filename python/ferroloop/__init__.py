"""ferroloop: asyncio's event loop, written in Rust.

Use it in one line::

    ferroloop.run(main())                                   # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)   # Python 3.11+
    ferroloop.install()                                     # make it asyncio's default

``ferroloop.Loop`` is an ``asyncio.AbstractEventLoop``; asyncio's own Future and Task run on
it unchanged.
"""

from __future__ import annotations

from ._native import Handle, TimerHandle
from .base_events import Loop
from .events import EventLoopPolicy, install, new_event_loop
from .runners import run

__all__ = [
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "TimerHandle",
    "install",
    "new_event_loop",
    "run",
]

__version__ = "0.1.0"
