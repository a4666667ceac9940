"""pytest plugin of tests/third_party/run.py for redis-py's asyncio tests (tests/test_asyncio).

Its async tests and fixtures run under pytest-asyncio (``asyncio_mode = "auto"``), whose runner
is an ``asyncio.Runner`` without a loop factory, inside the event loop policy of its
``event_loop_policy`` fixture, which is the current policy: in the ferroloop run
(FERROLOOP_TP_LOOP=ferroloop) this plugin calls ``ferroloop.install()`` when loaded, so every
test loop is ferroloop's (redis-py's own ``--uvloop`` option does the same with
``uvloop.install()``). Test ids are the same in both runs.

The run gives the suite a private server (``--redis-url``, started by run.py through
scripts/start-redis.sh on a port of its own), and selects by marker what needs no more than
that (run.py's ``args``). A few tests outside those markers still need more, and are deselected
here, in both runs alike:

* ``NEEDS_DEFAULT_PORT``: tests that connect to a server at ``localhost:6379`` whatever
  ``--redis-url`` says (``Connection()`` with its defaults, or the sentinel tests' mocked
  master at port 6379). The private server is not there; a server that is would be someone
  else's.
* tests that use the ``deployed_sentinel`` fixture, or read ``--sentinels`` themselves: they
  need three Redis Sentinels on ports 26379-26381 monitoring a master.

In a run of whole files, a listed id that is not collected is an error, so the list cannot
go stale unnoticed.
Loaded with ``-p redis_plugin``.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("FERROLOOP_TP_LOOP") == "ferroloop":
    import ferroloop

    ferroloop.install()

PREFIX = "tests/test_asyncio/"

NEEDS_DEFAULT_PORT = {
    # Connection() and ConnectionPool(host=...) without a port: localhost:6379.
    "test_connection.py::test_connect_with_retries",
    "test_connection_pool.py::TestConnectionPool::test_multiple_connections",
    "test_connection_pool.py::TestConnectionPool::test_max_connections",
    "test_connection_pool.py::TestConnectionPool::test_reuse_previously_released_connection",
    "test_connection_pool.py::TestBlockingConnectionPool::test_reuse_previously_released_connection",
    # The mocked sentinel's master is at (the --redis-url host, 6379).
    "test_sentinel.py::test_master_for",
    "test_sentinel.py::test_slave_for",
    "test_sentinel.py::test_replica_for",
    "test_sentinel.py::test_repr_correctly_represents_connection_object",
}

NEEDS_SENTINELS = {
    "test_sentinel.py::test_sentinel_commands_with_strict_redis_client",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    listed = {PREFIX + t for t in NEEDS_DEFAULT_PORT | NEEDS_SENTINELS}
    seen: set[str] = set()
    keep, drop = [], []
    for item in items:
        base = item.nodeid.split("[", 1)[0]
        if base in listed:
            seen.add(base)
            drop.append(item)
        elif "deployed_sentinel" in getattr(item, "fixturenames", ()):
            drop.append(item)
        else:
            keep.append(item)
    # Every listed test must be collected in a run of whole files (run.py's reruns name single
    # tests).
    if not any("::" in arg for arg in config.args):
        files = {item.nodeid.split("::", 1)[0] for item in items}
        missing = sorted(t for t in listed - seen if t.split("::", 1)[0] in files)
        if missing:
            raise pytest.UsageError(f"redis_plugin: listed tests not collected: {missing}")
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
