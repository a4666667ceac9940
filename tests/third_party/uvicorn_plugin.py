"""pytest plugin of tests/third_party/run.py for uvicorn's own test suite.

Almost all of uvicorn's server tests are ``@pytest.mark.anyio`` tests (its ``anyio_backend``
fixture returns ``"asyncio"``) that start ``Server.serve()`` inside the running test loop, which
anyio's pytest plugin makes with ``asyncio.Runner``, that is, with
``asyncio.new_event_loop()``. In the ferroloop run (FERROLOOP_TP_LOOP=ferroloop) this plugin
calls ``ferroloop.install()`` when loaded, so those loops, and ``asyncio.run()``'s, are
ferroloop's.

The few tests that start a loop through uvicorn's own ``Config.loop`` (``Server.run()``,
``uvicorn.run()``) use its default, ``"auto"``, which picks uvloop when it is installed (it is,
in this environment). In both runs ``"auto"`` is pointed at the run's loop instead: stock
asyncio's ``SelectorEventLoop`` in the asyncio run, ferroloop's in the ferroloop run, so that
neither run tests uvloop. ``uvicorn.loops.auto.auto_loop_factory`` itself is left alone (its own
test imports it directly and expects uvloop). ``"asyncio"`` is left alone too: every test that
names it serves inside the test's running loop, and ``test_get_loop_factory`` checks that it
gives an ``asyncio.SelectorEventLoop``. Test ids are the same in both runs. Loaded with
``-p uvicorn_plugin``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from uvicorn import config as _uvicorn_config

FERROLOOP = os.environ.get("FERROLOOP_TP_LOOP") == "ferroloop"

if FERROLOOP:
    import ferroloop

    ferroloop.install()


def run_loop_factory(use_subprocess: bool = False) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvicorn's ``"auto"`` loop in these runs: the loop the run is about."""
    if FERROLOOP:
        return ferroloop.new_event_loop
    return asyncio.SelectorEventLoop


_uvicorn_config.LOOP_FACTORIES["auto"] = f"{__name__}:run_loop_factory"
