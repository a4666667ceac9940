"""pytest-asyncio runs a user's test suite on ferroloop (README: "Testing your code on
ferroloop").

The suite below is what the README shows: a conftest.py with pytest-asyncio's
``pytest_asyncio_loop_factories`` hook (pytest-asyncio >= 1.4), here returning both asyncio and
ferroloop, so every asyncio test runs once on each. It runs in a subprocess with its own rootdir:
our own suite turns pytest-asyncio off (``-p no:asyncio`` in pyproject.toml), because it has its
own loop fixtures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        importlib.util.find_spec("pytest_asyncio") is None,
        reason="pytest-asyncio is not installed (pip install -r requirements-dev.txt)",
    ),
]

CONFTEST = """
import asyncio

import ferroloop


def pytest_asyncio_loop_factories(config, item):
    return {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}
"""

TESTS = """
import asyncio
import json
import os

import pytest
import pytest_asyncio


def record(what):
    loop = asyncio.get_running_loop()
    with open(os.environ["LOOPS_SEEN"], "a") as out:
        out.write(json.dumps([what, type(loop).__module__]) + "\\n")


@pytest_asyncio.fixture
async def echo_server():
    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    record("fixture")
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_sleep_and_tasks():
    record("test_sleep_and_tasks")
    results = await asyncio.gather(*(asyncio.sleep(0.01, result=i) for i in range(10)))
    assert results == list(range(10))


@pytest.mark.asyncio
async def test_echo(echo_server):
    record("test_echo")
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server)
    writer.write(b"ping\\n")
    assert await reader.readline() == b"ping\\n"
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio(loop_factories=["ferroloop"])
async def test_only_on_ferroloop():
    record("test_only_on_ferroloop")
    assert type(asyncio.get_running_loop()).__module__.startswith("ferroloop")
"""


def test_pytest_asyncio_runs_tests_on_ferroloop(tmp_path):
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_user_suite.py").write_text(textwrap.dedent(TESTS))
    seen = tmp_path / "loops.jsonl"
    env = {**os.environ, "LOOPS_SEEN": str(seen)}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-W", "error", "."],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout, result.stdout[-3000:]
    records = sorted(tuple(json.loads(line)) for line in seen.read_text().splitlines())
    assert records == sorted(
        [
            ("fixture", "asyncio.unix_events"),
            ("fixture", "ferroloop.base_events"),
            ("test_echo", "asyncio.unix_events"),
            ("test_echo", "ferroloop.base_events"),
            ("test_only_on_ferroloop", "ferroloop.base_events"),
            ("test_sleep_and_tasks", "asyncio.unix_events"),
            ("test_sleep_and_tasks", "ferroloop.base_events"),
        ]
    )
