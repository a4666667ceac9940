"""Side-by-side stream-transport benchmarks (issue 5): protocols, streams, unix sockets, bulk.

bench_io.py measures the `sock_*` coroutines; this script measures what most asyncio servers are
built on, the stream transports: `loop.create_server` with an `asyncio.Protocol` or an
`asyncio.BufferedProtocol`, `asyncio.start_server` streams, `loop.create_unix_server`, a one-way
bulk transfer under flow control, and a response written as header + body (two
`transport.write()` calls). The method is bench_io's, and the clock, client runner and
measurement come from harness.py, as there: all loops in one process, R interleaved rounds with
the loop order rotated, a fresh loop per measurement after `gc.collect()` + `gc.freeze()`, the
server pinned to one CPU and the load client (`echo-client`, crates/ferroloop-bench) to another,
a window from the first connection to the last close, medians, ratios to uvloop, spreads, and a
correctness check in every measurement.

Two things are new:

- **Latency.** The client times every request (write start to end of response) and reports
  the mean and p99. With a closed-loop client (each connection waits for its response before
  sending again) the mean is essentially connections ÷ throughput; p99 shows the tail.
- **The Rust-only ceiling.** `echo-server` (crates/ferroloop-bench) is a single-threaded
  non-blocking epoll echo server in Rust (std + libc): what a Python-driven loop can at best
  approach. It serves the plain echo rows under the same client, pinned to the same CPU, in the
  same rotation, as the column "rust-only". Each loop's server efficiency (requests per CPU
  second) is then also shown as a percentage of it.

A loop that does not implement something a row needs (NotImplementedError, e.g. rloop 0.5's
`create_unix_server`) shows `n/a` in that row, with the reason under the tables; any other
error, or a wrong result, shows `FAIL`.

    python benchmarks/bench_streams.py                 # 5 rounds, all rows, all loops
    python benchmarks/bench_streams.py --quick         # 2 rounds, small N: a smoke run
    python benchmarks/bench_streams.py --only proto_echo_1k,header_body_1k --loops uvloop,ferroloop

The rows need target/release/echo-client and echo-server: `cargo build --release -p
ferroloop-bench`, or run everything through `bash scripts/bench.sh streams [options]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    CheckFailed,
    ClientRun,
    Clock,
    Env,
    IoSample,
    Results,
    Timed,
    add_list_option,
    add_standard_options,
    exit_status,
    expect,
    have_binary,
    human,
    loops_and_machine,
    measure_window,
    method_line,
    number,
    parse_standard_args,
    pin_cpus,
    pin_note,
    print_header,
    print_spreads,
    rate_header,
    record_failure,
    release_binary,
    report_unavailable,
    row_sizes,
    run_config,
    run_rounds,
    select_rows,
    spawn_client,
    table,
    warm_up_size,
    write_json,
)
from loop_registry import (
    LoopSpec,
)

Loop = asyncio.AbstractEventLoop

READ_SIZE = 256 * 1024  # BufferedProtocol's buffer: asyncio's transport read size (max_size)
STREAM_READ = 65536  # reader.read(n) in the streams server
HEADER_LEN = 150  # header + body rows: the header's length
# The header + body row's header, as echo-client --header-bytes expects it: byte i is 'A' + i % 26.
HEADER = bytes(65 + i % 26 for i in range(HEADER_LEN))
# The bulk row's chunk: the byte at stream offset k is k % 251 (what echo-client --sink checks),
# and the chunk's length is a multiple of 251, so consecutive chunks continue the pattern.
BULK_CHUNK = bytes(k % 251 for k in range(251 * 256))  # 64,256 bytes
MIB = 1 << 20
GIB = 1 << 30
BACKLOG = 128


# --------------------------------------------------------------------------------------------
# The servers. One `ServerLog` per measurement collects what the server side saw; every
# protocol (or stream handler) reports to it when its connection starts and ends.
# --------------------------------------------------------------------------------------------


@dataclass
class ServerLog:
    connections: int  # how many the client opens
    done: asyncio.Future[None]  # resolved when `connections` connections have ended
    started: Clock | None = None  # at the first connection
    ended: Clock | None = None  # at the last connection's end
    counts: list[int] = field(default_factory=list)  # bytes echoed / written, per ended conn
    errors: list[str] = field(default_factory=list)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)  # for cleanup

    def opened(self, transport: asyncio.BaseTransport) -> None:
        if self.started is None:
            self.started = Clock.now()
        self.transports.append(transport)

    def closed(self, count: int, exc: BaseException | None) -> None:
        if exc is not None:
            self.errors.append(f"connection_lost({type(exc).__name__}: {exc})")
        self.counts.append(count)
        if len(self.counts) == self.connections:
            self.ended = Clock.now()
            if not self.done.done():
                self.done.set_result(None)


class EchoProtocol(asyncio.Protocol):
    """Echo with `asyncio.Protocol`: each `data_received` is written straight back."""

    def __init__(self, log: ServerLog) -> None:
        self.log = log
        self.echoed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.log.opened(transport)

    def data_received(self, data: bytes) -> None:
        self.echoed += len(data)
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.closed(self.echoed, exc)


class BufferedEchoProtocol(asyncio.BufferedProtocol):
    """Echo with `asyncio.BufferedProtocol`: the loop reads into our buffer, we write a view of
    it back. The next read into that buffer comes only after the client got this response, so
    a transport that keeps a reference to unsent data would still echo the right bytes; the
    client's check would catch one that did not."""

    def __init__(self, log: ServerLog) -> None:
        self.log = log
        self.echoed = 0
        self.buffer = memoryview(bytearray(READ_SIZE))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.log.opened(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.echoed += nbytes
        self.transport.write(self.buffer[:nbytes])

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.closed(self.echoed, exc)


class HeaderBodyProtocol(asyncio.Protocol):
    """Per request of `size` bytes, respond with two writes: a 150-byte header, then the request
    as the body. Requests are framed by size, since one `data_received` may hold part of one."""

    def __init__(self, log: ServerLog, size: int) -> None:
        self.log = log
        self.size = size
        self.received = 0
        self.partial = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.log.opened(transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.partial:
            data = self.partial + data
        size, write = self.size, self.transport.write
        if len(data) == size:  # the usual case: exactly one request
            write(HEADER)
            write(data)
            self.partial = b""
            return
        whole = len(data) - len(data) % size
        for offset in range(0, whole, size):
            write(HEADER)
            write(data[offset : offset + size])
        self.partial = data[whole:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self.log.errors.append(f"{len(self.partial)} bytes of an incomplete request at EOF")
        self.log.closed(self.received, exc)


class BulkWriterProtocol(asyncio.Protocol):
    """Write `total` bytes to the connection as fast as flow control allows, then close: write
    chunks until the transport calls `pause_writing`, continue on `resume_writing`."""

    def __init__(self, log: ServerLog, total: int) -> None:
        self.log = log
        self.left = total
        self.total = total
        self.paused = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.log.opened(transport)
        self.loop = asyncio.get_running_loop()
        self.pump()

    def pump(self) -> None:
        write, chunk = self.transport.write, len(BULK_CHUNK)
        while not self.paused and self.left:
            if self.left >= chunk:
                write(BULK_CHUNK)
                self.left -= chunk
            else:
                write(BULK_CHUNK[: self.left])
                self.left = 0
        if not self.left and not self.closing:
            # close() sends what is buffered first. It is not called from here directly,
            # because pump() may run inside resume_writing(), and asyncio 3.11's transport
            # calls connection_lost twice when close() runs there with its buffer empty.
            self.closing = True
            self.loop.call_soon(self.transport.close)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def data_received(self, data: bytes) -> None:
        self.log.errors.append(f"the sink client sent {len(data)} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.closed(self.total - self.left, exc)


async def stream_echo(
    log: ServerLog, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Echo with asyncio streams: reader.read, writer.write + drain, until EOF."""
    log.opened(writer.transport)
    echoed, error = 0, None
    try:
        while data := await reader.read(STREAM_READ):
            echoed += len(data)
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except Exception as exc:  # noqa: BLE001 -- reported as the row's failure
        error = exc
    finally:
        log.closed(echoed, error)


# --------------------------------------------------------------------------------------------
# What a row does, and the run of one measurement
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    server: str  # "protocol", "buffered", "streams", "header_body" or "bulk"
    family: str = "tcp"  # "tcp" (127.0.0.1) or "unix"
    size: int = 0  # request bytes (echo rows); bulk: unused, N is MiB per connection

    @property
    def bulk(self) -> bool:
        return self.server == "bulk"


@dataclass(frozen=True)
class StreamEnv(Env):
    server_binary: Path | None = None  # echo-server, for the rust-only column
    # Quirks the current measurement found (a result that is right but not quite what the
    # row asks for); run_benchmarks clears it before each measurement and files its contents.
    quirks: list[str] = field(default_factory=list)


# How long the client waits for the server's close (EOF) once everything has arrived. A server
# that does not close within this (rloop 0.5) is measured, and its cells are marked.
EOF_TIMEOUT = 0.5


def client_command(workload: Workload, address: str, n: int, env: Env) -> list[str]:
    assert env.client is not None
    tail = ["--timeout", f"{env.timeout:g}", "--eof-timeout", f"{EOF_TIMEOUT:g}"]
    if workload.bulk:
        return [str(env.client), "--sink", address, str(env.connections), str(n * MIB), *tail]
    if workload.server == "header_body":
        tail += ["--header-bytes", str(HEADER_LEN)]
    return [str(env.client), address, str(env.connections), str(workload.size), str(n), *tail]


def expected_count(workload: Workload, n: int) -> int:
    """Bytes the server echoes (or, bulk, writes) on each connection."""
    return n * MIB if workload.bulk else n * workload.size


def check_client(run: ClientRun, workload: Workload, n: int, env: Env) -> dict[str, object]:
    """The client must have exited 0, reported no error and done all its requests."""
    if not run.exited.wait(10.0):
        raise CheckFailed("echo client still running 10 s after the server finished")
    report = run.report()
    expect(
        run.process.returncode == 0 and report.get("error") is None,
        f"echo client failed (exit {run.process.returncode}): {report.get('error')}",
    )
    expected = env.connections if workload.bulk else env.connections * n
    expect(
        report.get("requests") == expected,
        f"echo client completed {report.get('requests')} "
        f"{'connections' if workload.bulk else 'requests'}, expected {expected}",
    )
    closed = report.get("closed_by_server")
    if closed != env.connections and isinstance(env, StreamEnv):
        env.quirks.append(
            f"the server's close reached the client on {closed} of {env.connections} "
            f"connections (no EOF within {EOF_TIMEOUT:g} s after the last byte), although "
            "connection_lost ran on every one"
        )
    return report


def timed_from(
    report: dict[str, object], workload: Workload, n: int, window: Clock, env: Env
) -> Timed:
    ops = env.connections * (n * MIB if workload.bulk else n)
    return Timed(
        ops,
        window,
        number(report, "seconds"),
        number(report, "latency_mean_us"),
        number(report, "latency_p99_us"),
    )


async def open_server(
    loop: Loop, workload: Workload, log: ServerLog, n: int, path: str | None
) -> asyncio.AbstractServer:
    if workload.server == "streams":
        handler = functools.partial(stream_echo, log)
        if workload.family == "unix":
            return await asyncio.start_unix_server(handler, path, backlog=BACKLOG)
        return await asyncio.start_server(handler, "127.0.0.1", 0, backlog=BACKLOG)
    factories: dict[str, Callable[[], asyncio.BaseProtocol]] = {
        "protocol": lambda: EchoProtocol(log),
        "buffered": lambda: BufferedEchoProtocol(log),
        "header_body": lambda: HeaderBodyProtocol(log, workload.size),
        "bulk": lambda: BulkWriterProtocol(log, n * MIB),
    }
    factory = factories[workload.server]
    if workload.family == "unix":
        return await loop.create_unix_server(factory, path, backlog=BACKLOG)
    return await loop.create_server(factory, "127.0.0.1", 0, backlog=BACKLOG)


def python_server(workload: Workload, loop: Loop, n: int, env: Env) -> Timed:
    """One measurement of a Python server on `loop` (the signature harness.measure_window calls)."""
    saved_affinity = os.sched_getaffinity(0) if env.pin else None
    tmpdir = tempfile.mkdtemp(prefix="ferroloop-bench-") if workload.family == "unix" else None
    path = os.path.join(tmpdir, "echo.sock") if tmpdir else None
    log = ServerLog(env.connections, loop.create_future())
    server: asyncio.AbstractServer | None = None
    run: ClientRun | None = None
    waiter: threading.Thread | None = None
    try:
        server = loop.run_until_complete(open_server(loop, workload, log, n, path))
        if path is None:
            address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
        else:
            address = f"unix:{path}"
        run = ClientRun(spawn_client(client_command(workload, address, n, env), env.pin))

        def fail_fast() -> None:  # the client died: stop waiting for its connections
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(log.done.cancel)

        waiter = run.wait_in_thread(fail_fast)
        try:
            loop.run_until_complete(log.done)
        except (Exception, asyncio.CancelledError) as exc:
            if run.exited.wait(2.0) and run.process.returncode != 0:
                raise CheckFailed(
                    f"echo client failed (exit {run.process.returncode}): "
                    f"{run.report().get('error')}; server: {type(exc).__name__}: {exc}; "
                    f"server errors: {log.errors[:3]}"
                ) from exc
            raise
        report = check_client(run, workload, n, env)
        expect(not log.errors, f"server side: {'; '.join(log.errors[:3])}")
        expected = expected_count(workload, n)
        expect(
            log.counts == [expected] * env.connections,
            f"server counted {log.counts} bytes per connection, expected {expected} on each "
            f"of {env.connections}",
        )
        assert log.started is not None and log.ended is not None
        return timed_from(report, workload, n, log.ended - log.started, env)
    finally:
        if run is not None and run.process.poll() is None:
            run.process.kill()
        if not loop.is_closed() and not loop.is_running():
            # Not timed. After a failure, abort what is left so no connection outlives the
            # measurement; bounded and best effort, since the loop may be what is broken.
            for transport in log.transports:
                with contextlib.suppress(Exception):
                    if not transport.is_closing():
                        transport.abort()  # type: ignore[attr-defined]
            if server is not None:
                server.close()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 2.0))
        if waiter is not None:
            waiter.join(5.0)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


def rust_server(workload: Workload, n: int, env: StreamEnv) -> Timed:
    """One measurement of the Rust-only echo-server: it gets a listening socket bound here,
    runs pinned to the server CPU, and reports its own window and CPU time (getrusage)."""
    assert env.server_binary is not None and workload.server == "protocol"
    saved_affinity = os.sched_getaffinity(0)
    tmpdir = tempfile.mkdtemp(prefix="ferroloop-bench-") if workload.family == "unix" else None
    family = socket.AF_UNIX if tmpdir else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    server: subprocess.Popen[str] | None = None
    client: subprocess.Popen[str] | None = None
    try:
        if tmpdir:
            path = os.path.join(tmpdir, "echo.sock")
            listener.bind(path)
            address = f"unix:{path}"
        else:
            listener.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{listener.getsockname()[1]}"
        listener.listen(BACKLOG)
        command = [
            str(env.server_binary),
            "--fd",
            str(listener.fileno()),
            str(env.connections),
            "--timeout",
            f"{env.timeout:g}",
        ]
        if env.pin:
            os.sched_setaffinity(0, {env.pin[0]})  # the child inherits this thread's mask
        server = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(listener.fileno(),),
        )
        client = spawn_client(client_command(workload, address, n, env), env.pin)
        listener.close()  # the server holds its own copy
        client_run = ClientRun(client)
        client_run.stdout, client_run.stderr = client.communicate(timeout=env.timeout)
        client_run.exited.set()
        if client.returncode != 0:
            server.kill()  # it would wait for connections that will never come
        server_out, server_err = server.communicate(timeout=10.0)
        report = check_client(client_run, workload, n, env)
        expect(not env.quirks, f"echo-server: {'; '.join(env.quirks)}")
        server_report = ClientRun(server, server_out, server_err).report()
        expect(
            server.returncode == 0 and server_report.get("error") is None,
            f"echo-server failed (exit {server.returncode}): {server_report.get('error')}",
        )
        expected = expected_count(workload, n)
        expect(
            server_report.get("echoed") == [expected] * env.connections,
            f"echo-server echoed {server_report.get('echoed')} bytes per connection, expected "
            f"{expected} on each of {env.connections}",
        )
        wall, user, system = (number(server_report, key) for key in ("seconds", "user_s", "sys_s"))
        assert wall is not None and user is not None and system is not None
        return timed_from(report, workload, n, Clock(wall, user + system, user, system), env)
    finally:
        for process in (client, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        listener.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        os.sched_setaffinity(0, saved_affinity)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRow:
    # key, title, run, base_n and ops are what harness.measure_window and write_json read.
    key: str
    title: str
    workload: Workload
    base_n: int  # requests per connection; bulk: MiB per connection. ~0.2-0.5 s on asyncio
    ops: str  # what one op is
    ceiling: bool = False  # the rust-only server is measured on this row
    ceiling_key: str | None = None  # the row whose rust-only figure serves the same wire load

    @property
    def run(self) -> Callable[[Loop, int, Env], Timed]:
        return functools.partial(python_server, self.workload)

    @property
    def bulk(self) -> bool:
        return self.workload.bulk


SIZES = ((1024, "1k", "1 KiB", 4_000), (10 * 1024, "10k", "10 KiB", 4_000),
         (100 * 1024, "100k", "100 KiB", 1_500))  # fmt: skip


def echo_rows() -> list[StreamRow]:
    rows = []
    kinds = (
        ("proto", "protocol", "Protocol", "data_received → transport.write"),
        ("buffered", "buffered", "BufferedProtocol", "get_buffer/buffer_updated → write(view)"),
        ("streams", "streams", "streams", "reader.read → writer.write + drain"),
    )
    for prefix, server, label, how in kinds:
        for size, suffix, size_label, requests in SIZES:
            rows.append(
                StreamRow(
                    f"{prefix}_echo_{suffix}",
                    f"TCP echo {size_label}, {label}",
                    Workload(server, "tcp", size),
                    requests,
                    f"one {size}-byte request echoed ({how})",
                    ceiling=server == "protocol",
                    ceiling_key=f"proto_echo_{suffix}",
                )
            )
    return rows


ROWS: tuple[StreamRow, ...] = (
    *echo_rows(),
    StreamRow(
        "unix_echo_1k",
        "unix echo 1 KiB, Protocol",
        Workload("protocol", "unix", 1024),
        4_000,
        "one 1024-byte request echoed over a unix socket (create_unix_server, Protocol)",
        ceiling=True,
        ceiling_key="unix_echo_1k",
    ),
    StreamRow(
        "header_body_1k",
        "header + body 1 KiB (2 writes)",
        Workload("header_body", "tcp", 1024),
        4_000,
        "a 1024-byte request answered with write(150-byte header) + write(1024-byte body)",
    ),
    StreamRow(
        "bulk_write",
        "bulk write, GiB/s",
        Workload("bulk"),
        512,
        "one byte of a one-way transfer of N MiB per connection (server writes 64,256-byte "
        "chunks under pause_writing/resume_writing, client reads and counts)",
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


# --------------------------------------------------------------------------------------------
# Measurement: harness.measure_window for the loops, plus the rust-only column
# --------------------------------------------------------------------------------------------


def _no_loop() -> Loop:
    raise RuntimeError("the rust-only column is a separate server process, not a loop")


# The rust-only server as a column of the tables. It is no loop: rows measure it through
# rust_server(), never through its factory.
CEILING = LoopSpec("rust-only", _no_loop, "echo-server (crates/ferroloop-bench)")


@dataclass
class StreamResults(Results):
    # (row, loop) -> reason: the loop does not implement what the row needs (NotImplementedError).
    # These pairs are also in `failures`, so they are not measured again.
    unsupported: dict[tuple[str, str], str] = field(default_factory=dict)
    # (row, loop) -> what was odd about otherwise correct results; the cells get a † mark.
    quirks: dict[tuple[str, str], str] = field(default_factory=dict)

    def stat(self, row: str, loop: str, kind: str, how: str) -> float | None:
        """The median rate over rounds, or with how="best" the highest (see the README: on a
        VM whose kernel cost per request switches between two levels, the best round is the
        one measured undisturbed)."""
        if how == "median":
            return self.median(row, loop, kind)
        rates = self.rates(row, loop, kind)
        return max(rates) if rates else None


def measure_ceiling(row: StreamRow, n: int, round_no: int, env: StreamEnv) -> IoSample:
    timed = rust_server(row.workload, n, env)
    window = timed.window
    return IoSample(
        row.key, CEILING.name, round_no, n, timed.ops, window.wall, window.cpu,
        user_s=window.user, sys_s=window.sys, client_s=timed.client_s,
        latency_mean_us=timed.latency_mean_us, latency_p99_us=timed.latency_p99_us,
    )  # fmt: skip


def run_benchmarks(
    rows: list[StreamRow],
    columns: list[LoopSpec],
    rounds: int,
    scale: float,
    timeout: float,
    env: StreamEnv,
) -> StreamResults:
    results = StreamResults()
    sizes = row_sizes(rows, scale)

    def attempt(spec: LoopSpec, row: StreamRow, round_no: int) -> IoSample | None:
        if (row.key, spec.name) in results.failures:
            return None
        n = sizes[row.key] if round_no else warm_up_size(sizes[row.key])
        env.quirks.clear()
        try:
            if spec is CEILING:
                sample = measure_ceiling(row, n, round_no, env)
            else:
                sample = measure_window(spec, row, n, round_no, timeout, env)
            for quirk in env.quirks:
                results.quirks.setdefault((row.key, spec.name), quirk)
            return sample
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            reason = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, NotImplementedError):
                record_failure(results, row, spec, reason)
                return None
            if not str(exc):
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                where = f"{frame.name}, {Path(frame.filename).name}:{frame.lineno}"
                reason = f"NotImplementedError (raised by {where})"
            results.failures[(row.key, spec.name)] = reason
            results.unsupported[(row.key, spec.name)] = reason
            print(f"  n/a: {row.key} on {spec.name}: {reason}", file=sys.stderr)
            return None

    def columns_for(row: StreamRow, order: list[LoopSpec]) -> list[LoopSpec]:
        return [spec for spec in order if spec is not CEILING or row.ceiling]

    run_rounds(rows, columns, rounds, results, attempt, columns=columns_for)
    return results


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def rate_text(row: StreamRow, rate: float) -> str:
    return f"{rate / GIB:.2f}" if row.bulk else human(rate)


def status(results: StreamResults, row: StreamRow, spec: LoopSpec) -> str | None:
    """What a cell shows instead of a number, or None when it has samples to show."""
    if not spec.available:
        return "n/a"
    if (row.key, spec.name) in results.unsupported:
        return "n/a"
    if (row.key, spec.name) in results.failures:
        return "FAIL"
    if spec is CEILING and not row.ceiling:
        return "-"
    return None


def ratio(
    results: StreamResults, row: str, top: str, bottom: str, kind: str, how: str = "median"
) -> float | None:
    if (row, top) in results.failures or (row, bottom) in results.failures:
        return None
    a, b = results.stat(row, top, kind, how), results.stat(row, bottom, kind, how)
    return None if a is None or b is None else a / b


def rate_table(
    results: StreamResults,
    rows: list[StreamRow],
    columns: list[LoopSpec],
    kind: str,
    how: str = "median",
) -> str:
    header, ratios = rate_header([spec.name for spec in columns])
    body = []
    for row in rows:
        cells = [row.title]
        for spec in columns:
            value = results.stat(row.key, spec.name, kind, how)
            shown = status(results, row, spec)
            mark = " †" if (row.key, spec.name) in results.quirks else ""
            cells.append(shown or (rate_text(row, value) + mark if value is not None else "-"))
        for name in ratios:
            value = ratio(results, row.key, name, "uvloop", kind, how)
            cells.append("-" if value is None else f"{value:.2f}×")
        body.append(cells)
    return table(header, body)


def stream_samples(results: Results, row: str, loop: str) -> list[IoSample]:
    return [
        sample
        for sample in results.samples
        if isinstance(sample, IoSample) and sample.row == row and sample.loop == loop
    ]


def per_sample_table(
    results: StreamResults,
    rows: list[StreamRow],
    columns: list[LoopSpec],
    show: Callable[[StreamRow, list[IoSample]], str | None],
) -> str:
    """A table of one figure per (row, column), computed from that cell's samples."""

    def figure(row: StreamRow, spec: LoopSpec) -> str:
        shown = status(results, row, spec)
        samples = stream_samples(results, row.key, spec.name)
        return shown or (show(row, samples) if samples else None) or "-"

    header = ["row", *(spec.name for spec in columns)]
    return table(header, ([row.title, *(figure(row, spec) for spec in columns)] for row in rows))


def latency_cell(row: StreamRow, samples: list[IoSample]) -> str | None:
    means = [s.latency_mean_us for s in samples if s.latency_mean_us is not None]
    p99s = [s.latency_p99_us for s in samples if s.latency_p99_us is not None]
    if row.bulk or not means or not p99s:
        return None
    return f"{statistics.median(means):.1f} / {statistics.median(p99s):.1f}"


def cpu_split_cell(row: StreamRow, samples: list[IoSample]) -> str | None:
    per = MIB if row.bulk else 1  # bulk: µs per MiB; echo: µs per request
    pairs = [(s.user_s, s.sys_s, s.ops / per) for s in samples]
    if any(user is None or system is None for user, system, _ in pairs):
        return None
    user = statistics.median(u / ops for u, _, ops in pairs)  # type: ignore[operator]
    system = statistics.median(s / ops for _, s, ops in pairs)  # type: ignore[operator]
    return f"{user * 1e6:.2f} + {system * 1e6:.2f}"


def ceiling_table(
    results: StreamResults, rows: list[StreamRow], specs: list[LoopSpec]
) -> str | None:
    """Each loop's requests per server CPU-second as a % of the rust-only server's on the same
    wire workload (same transport and request size); the Buffered and streams rows use the
    Protocol row's ceiling, which serves the same bytes. Best rounds on both sides: each
    server's undisturbed cost."""
    usable = [spec for spec in specs if spec.available]
    lines = [
        "| row | " + " | ".join(spec.name for spec in usable) + " | rust-only µs CPU/req |",
        "| --- |" + " ---: |" * (len(usable) + 1),
    ]
    for row in rows:
        if row.ceiling_key is None:
            continue
        top = results.stat(row.ceiling_key, CEILING.name, "cpu", "best")
        if top is None or (row.ceiling_key, CEILING.name) in results.failures:
            continue
        cells = [row.title]
        for spec in usable:
            value = results.stat(row.key, spec.name, "cpu", "best")
            shown = status(results, row, spec)
            cells.append(shown or (f"{value / top:.0%}" if value is not None else "-"))
        cells.append(f"{1e6 / top:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else None


# Issue 5's targets: (other loop, rate kind, ratio ferroloop ÷ other must reach), on every row.
TARGETS = (("uvloop", "cpu", 1.25), ("rloop", "cpu", 1.0), ("uvloop", "wall", 1.0))
CEILING_TARGET = ("proto_echo_1k", 0.85)  # ferroloop ÷ rust-only per CPU second, at 1 KiB


def target_report(results: StreamResults, rows: list[StreamRow], names: list[str]) -> str:
    """Issue 5's targets as ratios of this run's medians, and of its best rounds: a table, one
    column per target, and a line for the Rust-only one. A loop that did not run leaves its
    target out; one that failed or does not support a row shows why it is not evaluated."""
    targets = [t for t in TARGETS if t[0] in names] if "ferroloop" in names else []
    if not targets:
        return "(needs ferroloop and uvloop or rloop in --loops)"

    def judged(value: float, goal: float) -> str:
        return f"{value:.2f}× {'✓' if value >= goal else '✗'}"

    def verdict(row: str, other: str, kind: str, goal: float) -> str:
        median = ratio(results, row, "ferroloop", other, kind)
        best = ratio(results, row, "ferroloop", other, kind, "best")
        if median is None or best is None:
            for loop in ("ferroloop", other):
                if (row, loop) in results.failures:
                    return f"{loop} {'n/a' if (row, loop) in results.unsupported else 'FAIL'}"
            return "-"
        return f"{judged(median, goal)} · {judged(best, goal)}"

    header = [
        f"÷{other} per {'server CPU' if kind == 'cpu' else 'wall'} s ≥ {goal:g}×"
        for other, kind, goal in targets
    ]
    lines = [
        "ferroloop's ratio of medians · ratio of best rounds; ✓ met, ✗ not met.\n",
        "| row | " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * len(header),
    ]
    for row in rows:
        cells = [verdict(row.key, *target) for target in targets]
        lines.append(f"| {row.title} | " + " | ".join(cells) + " |")
    row_key, goal = CEILING_TARGET
    median = ratio(results, row_key, "ferroloop", CEILING.name, "cpu")
    best = ratio(results, row_key, "ferroloop", CEILING.name, "cpu", "best")
    if median is not None and best is not None:
        lines.append(
            f"\n- {row_key}: ferroloop ÷ rust-only per server CPU second ≥ {goal:g}×: "
            f"{judged(median, goal)} (medians) · {judged(best, goal)} (best rounds)"
        )
    return "\n".join(lines)


def default_client_path() -> Path:
    return release_binary("echo-client")


def default_server_path() -> Path:
    return release_binary("echo-server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved stream-transport benchmarks: asyncio vs uvloop vs rloop vs "
        "ferroloop, with a Rust-only echo server as the ceiling.",
    )
    add_standard_options(parser)
    parser.add_argument(
        "--client",
        type=Path,
        help="echo-client binary (default: target/release/echo-client, or under $CARGO_TARGET_DIR)",
    )
    parser.add_argument(
        "--server",
        type=Path,
        help="echo-server binary for the rust-only column (default: next to echo-client)",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="leave out the rust-only column")
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="client connections, one thread each (default 8)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave CPU placement to the scheduler (default: server on the first usable CPU, "
        "client on the second)",
    )
    add_list_option(parser)
    return parse_standard_args(parser, argv, ("--connections",))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for row in ROWS:
            unit = "MiB/conn" if row.bulk else "req/conn"
            print(f"{row.key:18} {row.title:34} N={row.base_n:<5} {unit}  op = {row.ops}")
        return 0
    rows = select_rows(ROWS, args.only)

    client = (args.client or default_client_path()).resolve()
    server = (args.server or default_server_path()).resolve()
    ceiling = not args.no_ceiling and any(row.ceiling for row in rows)
    advice = " (bash scripts/bench.sh streams does), pass --client/--server PATH, or --no-ceiling"
    for binary, needed in ((client, True), (server, ceiling)):
        if needed and not have_binary(binary, binary.name, advice):
            return 2
    pin = pin_cpus(args.no_pin)

    specs, info = loops_and_machine(args.loops)
    columns = [*specs, CEILING] if ceiling else list(specs)
    print_header(
        "ferroloop stream-transport benchmarks",
        info,
        f"{method_line(args)} Server = the "
        f"loop under test in this process; client = echo-client, a separate process with "
        f"{args.connections} connections (one thread each); timed from the first connection "
        "to the last close; "
        + pin_note(pin, "server", "client")
        + (
            " rust-only = echo-server (Rust, single-threaded epoll, std + libc), same client "
            "and CPUs."
            if ceiling
            else ""
        ),
    )
    if not report_unavailable(specs):
        return 2

    env = StreamEnv(client, args.connections, pin, args.timeout, server if ceiling else None)
    results = run_benchmarks(rows, columns, args.rounds, args.scale, args.timeout, env)

    print("\n## requests per wall second (median; bulk: GiB/s)\n")
    print(rate_table(results, rows, columns, "wall"))
    print("\n## requests per server CPU-second (median; bulk: GiB per server CPU-second)\n")
    print(rate_table(results, rows, columns, "cpu"))
    if args.rounds >= 2:
        print("\n## requests per server CPU-second, best round (bulk: GiB per CPU-second)\n")
        print(rate_table(results, rows, columns, "cpu", "best"))
    print("\n## latency per request, mean / p99 in µs (client-side; median over rounds)\n")
    print(per_sample_table(results, rows, columns, latency_cell))
    print_spreads(results, rows, columns, args.rounds, "rates")
    print("\n## µs of server CPU per request (bulk: per MiB), user + system (getrusage, median)\n")
    print(per_sample_table(results, rows, columns, cpu_split_cell))
    table = ceiling_table(results, rows, specs) if ceiling else None
    if table:
        print(
            "\n## server efficiency as % of the rust-only server "
            "(requests per CPU-second, best rounds)\n"
        )
        print(table)
    print("\n## issue 5 targets (ratios of the medians and of the best rounds above)\n")
    print(target_report(results, rows, [spec.name for spec in columns if spec.available]))
    if results.quirks:
        print("\n## † marks: results that passed every check, with something odd\n")
        grouped: dict[tuple[str, str], list[str]] = {}
        for (row_key, loop_name), quirk in results.quirks.items():
            grouped.setdefault((loop_name, quirk), []).append(row_key)
        for (loop_name, quirk), keys in grouped.items():
            print(f"- {loop_name} on {', '.join(keys)}: {quirk}")
    if results.failures:
        print("\n## n/a and failures (no number is reported for a wrong result)\n")
        order = {row.key: index for index, row in enumerate(rows)}
        for (row_key, loop_name), error in sorted(
            results.failures.items(), key=lambda item: order[item[0][0]]
        ):
            kind = "n/a" if (row_key, loop_name) in results.unsupported else "FAIL"
            print(f"- {kind}: {row_key} on {loop_name}: {error}")

    if args.json:
        config = {
            **run_config(args, rows),
            "connections": args.connections,
            "pin_server_client_cpus": list(pin) if pin else None,
            "client": str(client),
            "ceiling_server": str(server) if ceiling else None,
            "quirks": [
                {"row": row, "loop": loop, "quirk": quirk}
                for (row, loop), quirk in results.quirks.items()
            ],
            "unsupported": [
                {"row": row, "loop": loop, "reason": reason}
                for (row, loop), reason in results.unsupported.items()
            ],
        }
        write_json(args.json, info, config, columns, rows, results)

    return exit_status(bool(set(results.failures) - set(results.unsupported)), args.loops, specs)


if __name__ == "__main__":
    sys.exit(main())
