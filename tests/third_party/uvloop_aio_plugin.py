"""pytest plugin of tests/third_party/run.py for uvloop's own test suite.

uvloop tests itself and stock asyncio with the same test bodies: each test class comes twice,
one on ``uvloop._testbase.UVTestCase`` (uvloop's loop) and one on ``AIOTestCase`` (an asyncio
loop, which asyncio's own behaviour must pass). Only the ``AIOTestCase`` classes are run here
(the others test uvloop). In the ferroloop run (FERROLOOP_TP_LOOP=ferroloop) their loop and
policy are ferroloop's, and ``is_asyncio_loop()`` stays true, as it is for stock asyncio: the
suite uses it to skip what uvloop does beyond asyncio (``sendto`` without an address on an
unconnected socket, for one), and ferroloop does what asyncio does there. Test ids are the same
in both runs. Loaded with ``-p uvloop_aio_plugin``.
"""

from __future__ import annotations

import os

from uvloop import _testbase

if os.environ.get("FERROLOOP_TP_LOOP") == "ferroloop":
    import ferroloop

    _testbase.AIOTestCase.new_loop = lambda self: ferroloop.new_event_loop()
    _testbase.AIOTestCase.new_policy = lambda self: ferroloop.EventLoopPolicy()
    _testbase.AIOTestCase.is_asyncio_loop = lambda self: True


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        cls = getattr(item, "cls", None)
        (keep if cls is not None and issubclass(cls, _testbase.AIOTestCase) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
