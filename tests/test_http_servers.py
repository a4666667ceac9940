"""Real HTTP servers on ferroloop, driven by real clients; stock asyncio is the oracle.

Each server runs one of the apps in examples/ in a subprocess on 127.0.0.1 (a free port), on
ferroloop or on stock asyncio, started the way the README says:

* uvicorn + httptools + Starlette: ``python -m uvicorn examples.starlette_app:app --loop
  ferroloop:new_event_loop`` (``--loop asyncio`` for the oracle);
* aiohttp.web: ``python examples/aiohttp_app.py --loop ferroloop`` (``web.run_app(app,
  loop=...)``);
* hypercorn + Starlette: ``python examples/serve_hypercorn.py --loop ferroloop``.

The clients are real too: ``http.client`` and raw sockets (no event loop), and aiohttp's
``ClientSession`` and the ``websockets`` client, which run in this process on a loop of the same
kind as the server's, so the ferroloop runs also test those clients on ferroloop. Every server
reports the class of its running loop at ``/info``, and each run checks it, so a server that
quietly fell back to another loop cannot pass.

Covered per server and loop: HTTP/1.1 keep-alive (sequential and pipelined), chunked streaming
responses, large uploads (Content-Length and chunked), a websocket echo, many concurrent
connections, a client that disconnects mid-response, and a graceful stop on SIGINT and on
SIGTERM with requests in flight. The tests send the signals as a user would (``kill``), and the
servers handle them in different ways: uvicorn installs ``signal.signal`` handlers itself;
aiohttp's ``run_app`` and hypercorn use ``loop.add_signal_handler`` (issue #8; before it, aiohttp
on ferroloop had only ``KeyboardInterrupt`` for SIGINT and nothing for SIGTERM).

Every subprocess is bounded in time and killed in teardown, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LoopFactory

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 15.0

pytestmark = pytest.mark.timeout(60)

# Which Python packages each server needs; a server whose packages are missing is skipped (the
# other CPython versions' environments, scripts/test-other-pythons.sh, have only pytest).
SERVER_DEPS = {
    "uvicorn": ("uvicorn", "httptools", "starlette", "websockets", "aiohttp"),
    "aiohttp": ("aiohttp", "websockets"),
    "hypercorn": ("hypercorn", "starlette", "websockets", "aiohttp"),
}
SERVERS = tuple(SERVER_DEPS)
KINDS = ("asyncio", "ferroloop")

# The class each kind of loop shows at /info.
LOOP_CLASS = {
    "asyncio": "asyncio.unix_events._UnixSelectorEventLoop",
    "ferroloop": "ferroloop.base_events.Loop",
}


def _missing(server: str) -> list[str]:
    return [name for name in SERVER_DEPS[server] if importlib.util.find_spec(name) is None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _command(server: str, kind: str, port: int) -> list[str]:
    if server == "uvicorn":
        loop = "ferroloop:new_event_loop" if kind == "ferroloop" else "asyncio"
        return [
            sys.executable, "-m", "uvicorn", "examples.starlette_app:app",
            "--host", "127.0.0.1", "--port", str(port), "--loop", loop,
            "--http", "httptools",
            "--log-level", "warning", "--no-access-log",
            "--timeout-graceful-shutdown", "10",
        ]  # fmt: skip
    if server == "aiohttp":
        return [
            sys.executable, "examples/aiohttp_app.py", "--port", str(port), "--loop", kind,
        ]  # fmt: skip
    return [
        sys.executable, "examples/serve_hypercorn.py", "--bind", f"127.0.0.1:{port}",
        "--loop", kind,
    ]  # fmt: skip


@dataclass
class ServerProcess:
    server: str
    kind: str
    port: int
    process: subprocess.Popen
    log: Path
    final_output: str | None = None  # the output, kept when the log file is removed

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        if self.final_output is not None:
            return self.final_output
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def info(self) -> dict:
        status, body = self.get("/info")
        assert status == 200, body
        return json.loads(body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.final_output is None:
            self.final_output = self.output()
        with contextlib.suppress(OSError):
            self.log.unlink()


def _start(server: str, kind: str) -> ServerProcess:
    missing = _missing(server)
    if missing:
        pytest.skip(f"{server} needs {', '.join(missing)} (pip install -r requirements-dev.txt)")
    last_error = ""
    for _attempt in range(3):  # the free port may be taken again before the server binds it
        port = _free_port()
        fd, name = tempfile.mkstemp(prefix=f"ferroloop-{server}-{kind}-", suffix=".log")
        log = Path(name)
        with os.fdopen(fd, "wb") as out:
            process = subprocess.Popen(
                _command(server, kind, port),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        handle = ServerProcess(server, kind, port, process, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                time.sleep(0.02)
        else:
            last_error = handle.output()
            handle.stop()
            if "address already in use" in last_error.lower():
                continue
            pytest.fail(f"{server} on {kind} did not start:\n{last_error}")
        try:
            loop_class = handle.info()["loop"]
        except BaseException:
            handle.stop()
            raise
        if loop_class != LOOP_CLASS[kind]:
            handle.stop()
            pytest.fail(f"{server} asked for {kind} runs on {loop_class}")
        return handle
    pytest.fail(f"{server} on {kind}: no free port after 3 attempts:\n{last_error}")


@pytest.fixture(scope="module", params=[(s, k) for s in SERVERS for k in KINDS], ids="-".join)
def server(request):
    """One server process per (server, loop) for the whole module (no test stops it)."""
    handle = _start(*request.param)
    try:
        yield handle
    finally:
        handle.stop()
    if handle.process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"{handle.server} on {handle.kind} crashed:\n{handle.output()}")


def run_client(kind: str, coro_fn, timeout: float = 20.0):
    """Run a client coroutine on a fresh loop of the server's kind (a ferroloop server gets a
    ferroloop client), bounded in time."""
    loop = LoopFactory(kind)()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def chunk(index: int, size: int) -> bytes:
    """The examples' /stream chunk."""
    return ((b"%07d\n" % index) * (size // 8 + 1))[:size]


# ------------------------------------------------------------------------------------------------
# Requests and responses
# ------------------------------------------------------------------------------------------------


def test_hello_and_loop(server):
    status, body = server.get("/")
    assert (status, body) == (200, b"Hello, World!")
    assert server.info()["loop"] == LOOP_CLASS[server.kind]


def test_keep_alive(server):
    """Fifty requests on one HTTP/1.1 connection: the server never closes it in between."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.connect()
        first = conn.sock
        for index in range(50):
            path = "/" if index % 2 else "/stream?chunks=3&size=100"
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            assert not response.will_close, response.getheaders()
            assert conn.sock is first, f"connection replaced after request {index}"
            expected = b"Hello, World!" if index % 2 else b"".join(chunk(i, 100) for i in range(3))
            assert body == expected
    finally:
        conn.close()


def read_response(fp) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a buffered reader: status, headers (lower-case names), body
    (Content-Length or chunked; a chunked body is returned decoded)."""
    status = int(fp.readline().split()[1])
    headers = {}
    while (line := fp.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while (size := int(fp.readline().split(b";")[0], 16)) > 0:
            body += fp.read(size)
            assert fp.read(2) == b"\r\n"
        while fp.readline() not in (b"\r\n", b""):  # trailers
            pass
    else:
        body = fp.read(int(headers.get("content-length", "0")))
    return status, headers, body


def test_keep_alive_pipelined(server):
    """Three requests written at once on one connection are answered in order."""
    request = b"GET /stream?chunks=2&size=50 HTTP/1.1\r\nHost: x\r\n\r\n"
    request += b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    request += b"GET /stream?chunks=1&size=20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        with sock.makefile("rb") as fp:
            responses = [read_response(fp) for _ in range(3)]
            assert fp.read() == b"", "data after the last response"
    assert [status for status, _, _ in responses] == [200] * 3
    assert [body for _, _, body in responses] == [
        chunk(0, 50) + chunk(1, 50),
        b"Hello, World!",
        chunk(0, 20),
    ]


def test_chunked_streaming_response(server):
    """A chunked response arrives as it is produced, not buffered until the end."""
    chunks, size, delay = 12, 4000, 0.05

    async def fetch():
        import aiohttp

        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            url = f"{server.base}/stream?chunks={chunks}&size={size}&delay={delay}"
            async with session.get(url) as response:
                assert response.status == 200
                encoding = response.headers.get("Transfer-Encoding", "")
                first = await response.content.readexactly(size)
                first_at = time.monotonic() - started
                rest = await response.read()
                total = time.monotonic() - started
        return encoding, first + rest, first_at, total

    encoding, body, first_at, total = run_client(server.kind, fetch)
    assert encoding.lower() == "chunked"
    assert body == b"".join(chunk(i, size) for i in range(chunks))
    # The stream takes (chunks - 1) * delay = 0.55 s to produce; the first chunk is sent at once.
    assert total >= (chunks - 1) * delay * 0.9
    assert first_at < total / 2, f"first chunk after {first_at:.3f} s of {total:.3f} s"


def test_large_upload(server):
    """A 24 MiB body with Content-Length, then a chunked upload from an async generator."""
    payload = os.urandom(1 << 20) * 24
    parts = [os.urandom(64 * 1024 + i) for i in range(40)]

    async def upload():
        import aiohttp

        async def generate():
            for part in parts:
                yield part
                await asyncio.sleep(0)

        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.base}/upload", data=payload) as response:
                assert response.status == 200
                whole = await response.json()
            async with session.post(f"{server.base}/upload", data=generate()) as response:
                assert response.status == 200
                chunked = await response.json()
        return whole, chunked

    whole, chunked = run_client(server.kind, upload, timeout=30)
    assert whole == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    joined = b"".join(parts)
    assert chunked == {"bytes": len(joined), "sha256": hashlib.sha256(joined).hexdigest()}


def test_websocket_echo(server):
    """Text and binary messages (up to 1 MiB) echo back in order; a clean close."""
    messages: list[str | bytes] = ["hello", "", "ü" * 1000, b"\x00\x01", os.urandom(1 << 20)]
    messages += [f"message {i}" for i in range(100)]

    async def talk():
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url, max_size=4 << 20) as websocket:
            echoed = []
            for message in messages[:5]:
                await websocket.send(message)
                echoed.append(await websocket.recv())
            for message in messages[5:]:  # a burst, then the replies
                await websocket.send(message)
            for _ in messages[5:]:
                echoed.append(await websocket.recv())
        return echoed, websocket.close_code

    echoed, close_code = run_client(server.kind, talk)
    assert echoed == messages
    assert close_code == 1000


def test_client_disconnects_mid_response(server):
    """A client that goes away in the middle of a long streaming response: the server notices
    (the stream is abandoned, not produced to the end) and keeps serving others."""
    before = server.info()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        # 400 chunks, 20 ms apart: 8 s if nobody stops it.
        sock.sendall(b"GET /stream?chunks=400&size=4096&delay=0.02 HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while len(received) < 3 * 4096:
            data = sock.recv(65536)
            assert data, "server closed the stream early"
            received += data
        assert b"200" in received.split(b"\r\n", 1)[0]
    deadline = time.monotonic() + 5.0
    while True:
        now = server.info()
        if now["streams_aborted"] > before["streams_aborted"]:
            break
        assert time.monotonic() < deadline, f"stream still running 5 s after the client left: {now}"
        time.sleep(0.05)
    assert now["streams_completed"] == before["streams_completed"]
    status, body = server.get("/")
    assert (status, body) == (200, b"Hello, World!")


def test_many_connections(server):
    """Sixty-four concurrent keep-alive connections, ten requests each, from aiohttp's client."""

    async def hammer():
        import aiohttp

        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker(index: int) -> list[bytes]:
                bodies = []
                for _ in range(10):
                    async with session.get(f"{server.base}/stream?chunks=1&size={index}") as r:
                        assert r.status == 200
                        bodies.append(await r.read())
                return bodies

            return await asyncio.gather(*(worker(i) for i in range(1, 65)))

    results = run_client(server.kind, hammer)
    assert results == [[chunk(0, i)] * 10 for i in range(1, 65)]


# ------------------------------------------------------------------------------------------------
# Graceful shutdown
# ------------------------------------------------------------------------------------------------

# How each server exits after a graceful stop, seen on stock asyncio (the oracle). uvicorn
# re-raises the signal once it has shut down, with the handler it found: for SIGINT that is
# Python's KeyboardInterrupt, which uvicorn.run catches (exit status 0); for SIGTERM the
# default action, so the process ends "killed by SIGTERM".
EXPECTED_EXIT = {
    ("uvicorn", "SIGINT"): 0,
    ("uvicorn", "SIGTERM"): -signal.SIGTERM,
    ("aiohttp", "SIGINT"): 0,
    ("aiohttp", "SIGTERM"): 0,
    ("hypercorn", "SIGINT"): 0,
    ("hypercorn", "SIGTERM"): 0,
}


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("server_name", SERVERS)
def test_graceful_shutdown_with_requests_in_flight(server_name, kind, sig):
    handle = _start(server_name, kind)
    try:
        results: list[tuple[int, bytes] | BaseException] = []

        def slow_request() -> None:
            try:
                results.append(handle.get("/slow?delay=1", timeout=10))
            except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
                results.append(exc)

        threads = [threading.Thread(target=slow_request) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5.0
        while handle.info()["in_flight"] < 2:
            assert time.monotonic() < deadline, "the slow requests never arrived"
            time.sleep(0.02)
        sent = time.monotonic()
        handle.process.send_signal(getattr(signal, sig))
        # While the two requests finish, the server stops accepting new connections.
        deadline = sent + 0.6
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                socket.create_connection(("127.0.0.1", handle.port), timeout=0.5).close()
                time.sleep(0.02)
            except OSError:
                refused = True
        for thread in threads:
            thread.join(10)
        try:
            returncode = handle.process.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{server_name} still running 10 s after {sig}:\n{handle.output()}")
        assert results == [(200, b"slept 1")] * 2, handle.output()
        assert refused, "the server still accepted connections 0.6 s after the signal"
        assert returncode == EXPECTED_EXIT[server_name, sig], (returncode, handle.output())
    finally:
        handle.stop()
