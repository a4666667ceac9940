"""pytest plugin of tests/third_party/run.py for asyncpg's own test suite: checks that each test
runs on the loop of the run (FERROLOOP_TP_LOOP).

asyncpg's ``_testbase.TestCase`` makes one loop per test class in ``setUpClass`` with
``asyncio.new_event_loop()`` (or uvloop's, with USE_UVLOOP=1) and keeps it as ``cls.loop``;
``install_plugin`` makes that a ferroloop loop in the ferroloop run. A test whose class has a
``loop`` of another kind fails here before its body runs, so a change in how asyncpg makes its
loops cannot silently test stock asyncio twice. Loaded with ``-p asyncpg_loop_check`` after
``-p install_plugin``.
"""

from __future__ import annotations

import asyncio
import os

import pytest

_LOOP = os.environ.get("FERROLOOP_TP_LOOP", "asyncio")


def _expected() -> type:
    if _LOOP == "ferroloop":
        import ferroloop

        return ferroloop.Loop
    return asyncio.SelectorEventLoop


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    loop = getattr(getattr(item, "cls", None), "loop", None)
    if not isinstance(loop, asyncio.AbstractEventLoop):
        return  # not one of its loop-driven test classes (e.g. the source-code linters)
    if type(loop) is not _expected():
        pytest.fail(f"the {_LOOP} run drives this test with {type(loop)!r}", pytrace=False)
