"""Shared fixtures: every behaviour test runs on stock asyncio (the oracle) and on ferroloop.

* ``loop_factory`` is parametrized with the ids ``asyncio`` and ``ferroloop``. ferroloop is
  imported lazily, when a loop is first made, so that collection works before the package is
  built; if it cannot be imported the ferroloop tests error out (they never skip).
* ``loop`` makes a loop from the factory, yields it and closes it afterwards.
* ``run(loop, coro, timeout=...)`` runs a coroutine on the loop with a time limit.
* ``ferro_loop`` is a ferroloop-only loop, for the few tests of guarantees that ferroloop makes
  beyond asyncio (each says why it is ferroloop-only).

Time limits: pyproject sets a 120 s pytest-timeout; here every test without its own
``@pytest.mark.timeout`` gets ``DEFAULT_TIMEOUT``. As a backstop for a loop that hangs in native
code without ever returning to Python (where pytest-timeout's SIGALRM handler could run),
faulthandler dumps all stacks and exits the process a little after the test's limit.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys

import pytest

# asyncio 3.13 stopped showing a callback's arguments in handle reprs and in "Exception in
# callback ..." messages outside debug mode. Tests spell callbacks through `cb_text` so that
# each interpreter is checked against its own asyncio.
SHOWS_CALLBACK_ARGS = sys.version_info < (3, 13)


def cb_text(name: str, args: str) -> str:
    """How asyncio shows the call `name(args)` in a handle's repr outside debug mode."""
    return f"{name}({args})" if SHOWS_CALLBACK_ARGS else f"{name}()"

# FERROLOOP_TIME_SCALE stretches the time limits below (and run()'s) for slow runs, such as
# scripts/memcheck.sh under valgrind.
TIME_SCALE = float(os.environ.get("FERROLOOP_TIME_SCALE", "1"))
DEFAULT_TIMEOUT = 20.0 * TIME_SCALE
LOOP_KINDS = ("asyncio", "ferroloop")

# tests/cpython is CPython's test_asyncio run as an oracle by its own runner (run.py), not pytest.
collect_ignore = ["cpython"]


def _import_ferroloop():
    import ferroloop  # lazy on purpose: the package may not be built yet

    return ferroloop


class LoopFactory:
    """A callable that makes a new event loop of one kind; ``name`` is the kind."""

    def __init__(self, name: str):
        self.name = name

    @property
    def is_ferroloop(self) -> bool:
        return self.name == "ferroloop"

    def __call__(self) -> asyncio.AbstractEventLoop:
        if self.name == "asyncio":
            return asyncio.new_event_loop()
        return _import_ferroloop().new_event_loop()

    def __repr__(self) -> str:
        return f"LoopFactory({self.name!r})"


@pytest.fixture(params=LOOP_KINDS)
def loop_factory(request) -> LoopFactory:
    return LoopFactory(request.param)


@pytest.fixture
def loop(loop_factory):
    lp = loop_factory()
    try:
        yield lp
    finally:
        try:
            if lp.is_running():
                lp.stop()
            lp.close()
        finally:
            asyncio.set_event_loop(None)


@pytest.fixture
def ferro_loop():
    lp = _import_ferroloop().new_event_loop()
    try:
        yield lp
    finally:
        lp.close()
        asyncio.set_event_loop(None)


def run(loop, coro, timeout: float = 5.0):
    """Run ``coro`` to completion on ``loop``; fail with TimeoutError after ``timeout`` s."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout * TIME_SCALE))


async def until(pred, timeout: float = 3.0) -> None:
    """Yield to the running loop until ``pred()`` holds; AssertionError after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def loop_in_subprocess_src(kind: str) -> str:
    """Python source that binds ``new_loop`` to the factory of ``kind`` (for child processes)."""
    if kind == "asyncio":
        return "import asyncio\nnew_loop = asyncio.new_event_loop\n"
    return "import asyncio, ferroloop\nnew_loop = ferroloop.new_event_loop\n"


def _item_timeout(item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    return DEFAULT_TIMEOUT


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))
        elif TIME_SCALE != 1:
            scaled = _item_timeout(item) * TIME_SCALE
            item.add_marker(pytest.mark.timeout(scaled), append=False)


@pytest.fixture(autouse=True)
def _hard_backstop(request):
    # If a loop hangs inside native code, SIGALRM (pytest-timeout) never gets to run Python:
    # dump every thread's stack and exit rather than hang the whole run forever.
    faulthandler.dump_traceback_later(_item_timeout(request.node) + 15.0, exit=True,
                                      file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _no_running_loop_leaks():
    # Every test must leave the thread without a running loop and with the default hooks.
    hooks = sys.get_asyncgen_hooks()
    yield
    assert asyncio._get_running_loop() is None, "a running loop leaked out of the test"
    assert sys.get_asyncgen_hooks() == hooks, "asyncgen hooks were not restored"
