"""Load (issue #10): many connections held open and echoing on one loop, and a server under a
connect/close storm, on stock asyncio and on ferroloop. The server runs on the loop under test
in this process; the clients run in a separate process (tests/load_client.py, stock asyncio
and blocking sockets), so the server has the descriptor limit to itself.

Short sizes run in the normal suite; ``FERROLOOP_LONG=1`` (scripts/test-long.sh) runs 10,000
held connections and a 1,000,000-connection storm. Each test writes its figures (RSS per
connection, connections per second, RSS and open descriptors at start and end) to stdout and,
when ``FERROLOOP_LOAD_REPORT`` names a file, appends them there as one JSON line."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run
from reliability_helpers import LONG, fd_leaks, open_fds, raise_fd_limit, rss_bytes

CLIENT = Path(__file__).with_name("load_client.py")
HOLD_N = 10_000 if LONG else 1_000
STORM_M = 1_000_000 if LONG else 20_000
STORM_THREADS = 2
# RSS the server may gain between the end of the storm's warm-up (its first 5% of
# connections) and its end, after a collection: allocator noise, not per-connection state.
STORM_RSS_BOUND = 16 << 20 if LONG else 4 << 20
# A held connection (transport, protocol, socket object, buffers) must cost less than this.
HOLD_RSS_PER_CONN_BOUND = 32 * 1024


def report(test: str, kind: str, **figures) -> None:
    line = json.dumps({"test": test, "loop": kind, **figures})
    print(line)
    path = os.environ.get("FERROLOOP_LOAD_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def socket_fds() -> int:
    return sum(1 for what in open_fds().values() if what.startswith("socket:"))


class Stats:
    def __init__(self, close_after_echo=False):
        self.close_after_echo = close_after_echo
        self.protocols = []  # every Echo (for the hold test's close)
        self.made = 0
        self.lost = 0
        self.live = 0
        self.lost_twice = 0
        self.on_made = None  # called with the count after each connection_made


class Echo(asyncio.Protocol):
    """Echoes (and then closes, with ``close_after_echo``); closes on the peer's EOF."""

    def __init__(self, stats):
        self.stats = stats
        self.gone = False

    def connection_made(self, transport):
        self.transport = transport
        s = self.stats
        if not s.close_after_echo:
            s.protocols.append(self)
        s.made += 1
        s.live += 1
        if s.on_made is not None:
            s.on_made(s.made)

    def data_received(self, data):
        self.transport.write(data)
        if self.stats.close_after_echo:
            self.transport.close()

    def connection_lost(self, exc):
        if self.gone:
            self.stats.lost_twice += 1
        self.gone = True
        self.stats.lost += 1
        self.stats.live -= 1


async def until(pred, timeout):
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def client(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CLIENT), *map(str, args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


@pytest.mark.timeout(600 if LONG else 60)
def test_connections_held_open_and_echoing(loop, loop_factory):
    n = HOLD_N
    assert raise_fd_limit(n + 2000) >= n + 500
    stats = Stats()
    run(loop, asyncio.sleep(0))  # the loop's own descriptors exist from here on
    before = open_fds()

    async def main():
        await loop.run_in_executor(None, int)  # the executor's thread, before measuring
        srv = await loop.create_server(lambda: Echo(stats), "127.0.0.1", 0, backlog=4096)
        port = srv.sockets[0].getsockname()[1]
        gc.collect()
        rss0, sockets0 = rss_bytes(), socket_fds()
        proc = client("hold", port, n)
        start = time.perf_counter()
        try:
            line = await loop.run_in_executor(None, proc.stdout.readline)
            assert line == "ready\n", line
            opened = time.perf_counter() - start
            assert stats.made == n and stats.live == n
            gc.collect()
            rss1, sockets1 = rss_bytes(), socket_fds()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = await loop.run_in_executor(None, proc.stdout.readline)
            assert line == f"done {n}\n", line
            for p in stats.protocols:  # the server closes first (see load_client.py)
                p.transport.close()
            await until(lambda: stats.live == 0, timeout=60)
            assert await loop.run_in_executor(None, proc.wait) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
            proc.stdout.close()
        srv.close()
        await srv.wait_closed()
        return rss0, rss1, sockets0, sockets1, opened

    rss0, rss1, sockets0, sockets1, opened = run(loop, main(), timeout=500 if LONG else 50)
    per_conn = (rss1 - rss0) / n
    report("hold", loop_factory.name, connections=n, rss_before=rss0, rss_held=rss1,
           rss_per_connection=round(per_conn), open_seconds=round(opened, 2))
    assert sockets1 - sockets0 == n  # one descriptor per held connection, no more
    assert stats.lost == n and stats.lost_twice == 0
    stats.protocols.clear()
    assert per_conn < HOLD_RSS_PER_CONN_BOUND
    assert fd_leaks(before) == {}


@pytest.mark.timeout(3600 if LONG else 60)
def test_connect_close_storm(loop, loop_factory):
    m = STORM_M
    warmup = m // 20
    stats = Stats(close_after_echo=True)
    marks = {}
    samples = []
    sample_every = max(m // 10, 1)

    def on_made(count):
        if count == warmup:
            gc.collect()
            marks["rss"] = rss_bytes()
            marks["fds"] = len(open_fds())
        if count % sample_every == 0:
            samples.append((count, rss_bytes()))

    stats.on_made = on_made
    run(loop, asyncio.sleep(0))
    before = open_fds()

    async def main():
        await loop.run_in_executor(None, int)
        srv = await loop.create_server(lambda: Echo(stats), "127.0.0.1", 0, backlog=4096)
        port = srv.sockets[0].getsockname()[1]
        gc.collect()
        rss0, fds0 = rss_bytes(), len(open_fds())
        proc = client("storm", port, m, STORM_THREADS)
        try:
            line = await loop.run_in_executor(None, proc.stdout.readline)
            assert await loop.run_in_executor(None, proc.wait) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
            proc.stdout.close()
        done, ok, seconds = line.split()
        assert (done, int(ok)) == ("done", m), line
        await until(lambda: stats.live == 0, timeout=30)
        gc.collect()
        rss_end, fds_end = rss_bytes(), len(open_fds())
        srv.close()
        await srv.wait_closed()
        return rss0, fds0, rss_end, fds_end, float(seconds)

    rss0, fds0, rss_end, fds_end, seconds = run(loop, main(), timeout=3500 if LONG else 50)
    report("storm", loop_factory.name, connections=m, seconds=round(seconds, 2),
           per_second=round(m / seconds), rss_start=rss0, rss_after_warmup=marks["rss"],
           rss_end=rss_end, fds_start=fds0, fds_after_warmup=marks["fds"], fds_end=fds_end,
           rss_samples=samples)
    assert stats.made == m and stats.lost == m and stats.lost_twice == 0
    assert fds_end == fds0  # every connection's descriptor is closed
    assert rss_end - marks["rss"] <= STORM_RSS_BOUND, (rss_end - marks["rss"]) / 2**20
    assert fd_leaks(before) == {}
