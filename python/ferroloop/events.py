"""Loop creation and the event loop policy (asyncio's ``events`` module, ferroloop's part).

A policy is how code that calls ``asyncio.new_event_loop()`` or ``asyncio.run()`` without a
loop factory ends up on ferroloop: ``ferroloop.install()`` sets ``EventLoopPolicy`` as
asyncio's policy. Python 3.14 deprecates policies in favour of loop factories
(``asyncio.run(main(), loop_factory=ferroloop.new_event_loop)``); ``install()`` keeps working
for as long as asyncio keeps the policy API.
"""

from __future__ import annotations

import asyncio
import sys

from .base_events import Loop
from .introspection import VirtualClock, _check_clock

__all__ = ["EventLoopPolicy", "install", "new_event_loop"]


def new_event_loop(*, clock: VirtualClock | None = None) -> Loop:
    """Return a new ferroloop event loop.

    ``clock``: a ``ferroloop.VirtualClock`` for a loop whose time jumps to the next timer
    whenever it is idle (tests), or None for the real clock.
    """
    if clock is not None:
        _check_clock(clock)  # before a loop exists that would have to be closed
    return Loop(clock=clock)


# The base of our policy: asyncio's default one (with the child-watcher API some libraries still
# call on 3.11–3.13). Python 3.14 deprecates the public policy names; its private base class
# avoids a DeprecationWarning at import where it exists.
_PolicyBase: type = asyncio.DefaultEventLoopPolicy if sys.version_info < (3, 14) else (
    getattr(asyncio.events, "_BaseDefaultEventLoopPolicy", None)
    or asyncio.DefaultEventLoopPolicy
)


class EventLoopPolicy(_PolicyBase):  # type: ignore[misc, valid-type]
    """asyncio's default policy, except that the loops it makes are ferroloop loops."""

    def new_event_loop(self) -> Loop:
        return Loop()

    def __repr__(self) -> str:
        return f"<{self.__class__.__module__}.{self.__class__.__qualname__}>"


def install() -> None:
    """Make ferroloop the loop asyncio creates (sets ``EventLoopPolicy`` as the policy)."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
