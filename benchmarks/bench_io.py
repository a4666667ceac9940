"""Side-by-side I/O benchmarks: name resolution and a TCP echo server on every loop.

Issue 4 gives ferroloop two I/O targets: numeric `getaddrinfo` answered in-process (≥ 10× stock
asyncio, which goes through the default executor), and socket coroutines that serve an echo
server with less CPU per request than uvloop (≥ 1.5×) and rloop (≥ 1×). This script checks both
in the same style as bench_core.py, and reuses its measurement record, tables and JSON writer:
all loops in one process, R interleaved rounds with the loop order rotated each round, a fresh
loop per measurement, medians, ratios to uvloop, a spread table, and a correctness check in
every workload, so a broken loop never produces a fast number.

Why the echo rows look the way they do:

- The server is the loop under test, in this process, written with `loop.sock_accept`,
  `loop.sock_recv` and `loop.sock_sendall` (one task per connection), because those are the
  socket coroutines issue 4 adds. Transports and protocols are issue 5.
- The load comes from a separate process, `echo-client` (crates/ferroloop-bench, Rust, one
  thread per connection). In this process it would share the GIL and the CPU-time counter with
  the server. Written in Python, it would be the bottleneck itself.
- The timed window is the server's view, from the first accepted connection until every
  connection has closed. Both wall time and this process's CPU time (`time.process_time()`,
  every thread) are taken over that window. On a 2-core machine the client can saturate before
  the server does, so requests per wall second partly measure the client. Requests per server
  CPU-second are the figure issue 4's targets use.
- By default the server runs on one CPU and the client on another. When the scheduler placed
  them, client threads kept landing on the server's core, and the runs switched between two
  regimes: the server preempted by its own load and reading requests that were already queued,
  or the server alone and waking once per request. asyncio's CPU per request differed by up to
  4× between the two. Pinning gave clearly steadier rounds. `--no-pin` restores the scheduler's
  choice.
- Correctness: the client compares every echo byte for byte and requires a clean EOF. The
  server checks that each connection echoed exactly R × S bytes, and that the client reported
  C × R requests and no error.

    python benchmarks/bench_io.py                   # 5 rounds, all rows, all loops
    python benchmarks/bench_io.py --quick           # 2 rounds, small N: a smoke run
    python benchmarks/bench_io.py --only tcp_echo_1k --loops uvloop,ferroloop --json out.json

The echo rows need the client binary: `cargo build --release -p ferroloop-bench`, or run
everything through `bash scripts/bench.sh io [options]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import functools
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench_core import (
    CheckFailed,
    MeasurementTimeout,
    Results,
    Sample,
    expect,
    markdown_table,
    spread_table,
    write_json,
)
from loop_registry import (
    KNOWN_LOOPS,
    LoopSpec,
    format_machine_line,
    machine_info,
    parse_loop_names,
    resolve_loops,
)

Loop = asyncio.AbstractEventLoop

ROOT = Path(__file__).resolve().parent.parent
RECV_SIZE = 65536  # the server's sock_recv buffer, as in the issue
GAI_PORT = 8080


@dataclass
class Clock:
    """A timed window: wall time, the process's CPU time (every thread), and that CPU time split
    into user and kernel time. The split separates what the loop itself costs from the kernel's
    TCP work, which is much the same for every loop (see the per-request table in the output)."""

    wall: float = 0.0
    cpu: float = 0.0
    user: float = 0.0
    sys: float = 0.0

    @classmethod
    def now(cls) -> Clock:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.perf_counter(), time.process_time(), usage.ru_utime, usage.ru_stime)

    def __sub__(self, start: Clock) -> Clock:
        return Clock(
            self.wall - start.wall,
            self.cpu - start.cpu,
            self.user - start.user,
            self.sys - start.sys,
        )


@dataclass(frozen=True)
class Timed:
    """What a workload measured itself: operations done and the timed window."""

    ops: int
    window: Clock
    client_s: float | None = None
    # Per-request latency as the echo client saw it (write start to end of response), µs.
    latency_mean_us: float | None = None
    latency_p99_us: float | None = None


@dataclass
class IoSample(Sample):
    # getrusage's user and system seconds over the window (their sum is close to cpu_s, which
    # comes from the finer-grained process_time()).
    user_s: float | None = None
    sys_s: float | None = None
    # The echo client's own wall time (connect to last close): a cross-check in the JSON output.
    client_s: float | None = None
    # The echo client's per-request latency over all requests of the sample: mean and p99, µs.
    latency_mean_us: float | None = None
    latency_p99_us: float | None = None


@dataclass(frozen=True)
class Env:
    """What the workloads need besides the loop and N (from the command line)."""

    client: Path | None = None  # the echo-client binary; None when no echo row runs
    connections: int = 8  # echo client connections (--connections)
    pin: tuple[int, int] | None = None  # (server CPU, client CPU); None with --no-pin
    timeout: float = 60.0


def timed_run(loop: Loop, coro: object) -> tuple[object, Clock]:
    start = Clock.now()
    result = loop.run_until_complete(coro)  # type: ignore[arg-type]
    return result, Clock.now() - start


# --------------------------------------------------------------------------------------------
# getaddrinfo: N sequential awaits in one coroutine, each result compared with the blocking call
# --------------------------------------------------------------------------------------------


def getaddrinfo_numeric(host: str, loop: Loop, n: int, env: Env) -> Timed:
    expected = socket.getaddrinfo(host, GAI_PORT, type=socket.SOCK_STREAM)

    async def resolve_all() -> tuple[int, object]:
        getaddrinfo = loop.getaddrinfo
        wrong, first_wrong = 0, None
        for _ in range(n):
            infos = await getaddrinfo(host, GAI_PORT, type=socket.SOCK_STREAM)
            if infos != expected:
                wrong += 1
                first_wrong = infos if first_wrong is None else first_wrong
        return wrong, first_wrong

    (wrong, first_wrong), window = timed_run(loop, resolve_all())  # type: ignore[misc]
    expect(
        wrong == 0,
        f"{wrong} of {n} results differ from socket.getaddrinfo: got {first_wrong!r}, "
        f"expected {expected!r}",
    )
    # Not timed: join the executor threads stock asyncio (or a fallback path) started.
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_default_executor())
    return Timed(n, window)


# --------------------------------------------------------------------------------------------
# TCP echo: sock_* server on the loop under test, echo-client in another process
# --------------------------------------------------------------------------------------------


@dataclass
class ClientRun:
    """The echo client process and, once it has exited, what it said."""

    process: subprocess.Popen[str]
    stdout: str = ""
    stderr: str = ""
    exited: threading.Event = field(default_factory=threading.Event)

    def wait_in_thread(self, on_failure: Callable[[], None]) -> threading.Thread:
        # A blocked thread costs the server no CPU. It exists so that a client that dies early
        # (e.g. before every connection was accepted) fails the measurement at once instead of
        # leaving the server waiting in sock_accept until the watchdog fires.
        def wait() -> None:
            try:
                self.stdout, self.stderr = self.process.communicate()
            finally:
                self.exited.set()
            if self.process.returncode != 0:
                on_failure()

        thread = threading.Thread(target=wait, name="echo-client-wait", daemon=True)
        thread.start()
        return thread

    def report(self) -> dict[str, object]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        try:
            document = json.loads(lines[-1])
        except (IndexError, ValueError):
            detail = (self.stderr.strip() or self.stdout.strip() or "no output")[-500:]
            raise CheckFailed(
                f"echo client exited with {self.process.returncode} without a JSON report: {detail}"
            ) from None
        if not isinstance(document, dict):
            raise CheckFailed(f"echo client printed {lines[-1]!r}, not a JSON object")
        return document


def number(report: dict[str, object], key: str) -> float | None:
    """A numeric field of the client's report, or None (absent, null, or not a number)."""
    value = report.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def spawn_client(command: list[str], pin: tuple[int, int] | None) -> subprocess.Popen[str]:
    """Start the echo client; with `pin`, on its own CPU and with this thread on the other.

    Linux applies sched_setaffinity(0, ...) to the calling thread, and a child (or a thread)
    inherits its creator's mask: so switch this thread to the client's CPU just for the spawn."""

    def popen() -> subprocess.Popen[str]:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    if pin is None:
        return popen()
    server_cpu, client_cpu = pin
    os.sched_setaffinity(0, {client_cpu})
    try:
        return popen()
    finally:
        os.sched_setaffinity(0, {server_cpu})


def tcp_echo(size: int, loop: Loop, requests: int, env: Env) -> Timed:
    assert env.client is not None, "the echo rows need the client binary"
    connections = env.connections
    saved_affinity = os.sched_getaffinity(0) if env.pin else None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    tasks: list[asyncio.Task[object]] = []
    run: ClientRun | None = None
    waiter: threading.Thread | None = None
    clocks: dict[str, Clock] = {}
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(max(128, connections))
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def echo(conn: socket.socket) -> int:
            recv, sendall = loop.sock_recv, loop.sock_sendall
            echoed = 0
            try:
                while data := await recv(conn, RECV_SIZE):
                    echoed += len(data)
                    await sendall(conn, data)
            finally:
                conn.close()
            return echoed

        async def serve() -> list[int]:
            echoes = []
            for index in range(connections):
                conn, _ = await loop.sock_accept(listener)
                if index == 0:
                    clocks["start"] = Clock.now()
                accepted.append(conn)
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                echoes.append(loop.create_task(echo(conn)))
                tasks.append(echoes[-1])
            echoed = await asyncio.gather(*echoes)
            clocks["end"] = Clock.now()
            return echoed

        server = loop.create_task(serve())
        tasks.append(server)
        command = [
            str(env.client),
            f"127.0.0.1:{port}",
            str(connections),
            str(size),
            str(requests),
            "--timeout",
            f"{env.timeout:g}",
        ]
        run = ClientRun(spawn_client(command, env.pin))

        def cancel_server() -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(server.cancel)

        waiter = run.wait_in_thread(cancel_server)
        try:
            echoed = loop.run_until_complete(server)
        except (Exception, asyncio.CancelledError) as exc:
            # The client waiter cancels the server when the client fails; a server error (say,
            # a reset connection) usually has a client error behind it too. Report both.
            if run.exited.wait(2.0) and run.process.returncode != 0:
                raise CheckFailed(
                    f"echo client failed (exit {run.process.returncode}): "
                    f"{run.report().get('error')}; server: {type(exc).__name__}: {exc}"
                ) from exc
            raise

        # The client exits right after its last connection sees EOF.
        if not run.exited.wait(10.0):
            raise CheckFailed("echo client still running 10 s after the server finished")
        report = run.report()
        expected_requests = connections * requests
        expect(
            run.process.returncode == 0 and report.get("error") is None,
            f"echo client failed (exit {run.process.returncode}): {report.get('error')}",
        )
        expect(
            report.get("requests") == expected_requests,
            f"echo client did {report.get('requests')} requests, expected {expected_requests}",
        )
        expect(
            report.get("closed_by_server", connections) == connections,
            f"the server closed {report.get('closed_by_server')} of {connections} connections",
        )
        expect(
            echoed == [requests * size] * connections,
            f"server echoed {echoed} bytes per connection, expected {requests * size} on each "
            f"of {connections}",
        )
        return Timed(
            expected_requests,
            clocks["end"] - clocks["start"],
            number(report, "seconds"),
            number(report, "latency_mean_us"),
            number(report, "latency_p99_us"),
        )
    finally:
        if run is not None and run.process.poll() is None:
            run.process.kill()
        if any(not task.done() for task in tasks) and not loop.is_closed():
            # After a failure: cancel what is left and let it unwind, so no "Task was destroyed
            # but it is pending" noise follows the failure report. Bounded, and best effort: the
            # loop may be the thing that is broken.
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait(tasks, timeout=2.0))
        if waiter is not None:
            waiter.join(5.0)
        for conn in accepted:
            conn.close()
        listener.close()
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

Workload = Callable[[Loop, int, Env], Timed]


@dataclass(frozen=True)
class IoRow:
    # key, title and ops are the attributes bench_core's table and JSON code read.
    key: str
    title: str
    run: Workload
    base_n: int  # getaddrinfo: calls; echo: requests per connection. ~0.2-0.5 s on asyncio
    ops: str  # what one op is
    needs_client: bool = False


ECHO_CONNECTIONS = 8  # default of --connections


def echo_row(key: str, size: int, label: str, requests: int) -> IoRow:
    return IoRow(
        key,
        f"TCP echo {label}",
        functools.partial(tcp_echo, size),
        requests,
        f"one {size}-byte request echoed (client write_all, server sock_recv/sock_sendall, "
        "client read_exact)",
        needs_client=True,
    )


ROWS: tuple[IoRow, ...] = (
    IoRow(
        "getaddrinfo_numeric",
        "getaddrinfo 127.0.0.1 (numeric)",
        functools.partial(getaddrinfo_numeric, "127.0.0.1"),
        10_000,
        'await loop.getaddrinfo("127.0.0.1", 8080, type=SOCK_STREAM)',
    ),
    IoRow(
        "getaddrinfo_numeric_v6",
        "getaddrinfo ::1 (numeric)",
        functools.partial(getaddrinfo_numeric, "::1"),
        10_000,
        'await loop.getaddrinfo("::1", 8080, type=SOCK_STREAM)',
    ),
    echo_row("tcp_echo_1k", 1024, "1 KiB", 4_000),
    echo_row("tcp_echo_10k", 10 * 1024, "10 KiB", 4_000),
    echo_row("tcp_echo_100k", 100 * 1024, "100 KiB", 1_500),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


# --------------------------------------------------------------------------------------------
# Measurement: as bench_core.measure, except that the workload times its own window
# --------------------------------------------------------------------------------------------


def measure(
    spec: LoopSpec, row: IoRow, n: int, round_no: int, timeout: float, env: Env
) -> IoSample:
    assert spec.factory is not None
    loop = spec.factory()
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)

    watchdog = threading.Timer(timeout, on_timeout)
    watchdog.daemon = True
    faulthandler.dump_traceback_later(timeout + 30.0, exit=True)
    try:
        gc.collect()
        gc.freeze()
        watchdog.start()
        try:
            timed = row.run(loop, n, env)
        except Exception as exc:
            if timed_out.is_set():
                raise MeasurementTimeout(f"did not finish within {timeout:g} s") from exc
            raise
    finally:
        watchdog.cancel()
        faulthandler.cancel_dump_traceback_later()
        gc.unfreeze()
        if not loop.is_running():
            loop.close()
    window = timed.window
    return IoSample(
        row.key,
        spec.name,
        round_no,
        n,
        timed.ops,
        window.wall,
        window.cpu,
        user_s=window.user,
        sys_s=window.sys,
        client_s=timed.client_s,
        latency_mean_us=timed.latency_mean_us,
        latency_p99_us=timed.latency_p99_us,
    )


def run_benchmarks(
    rows: list[IoRow],
    specs: list[LoopSpec],
    rounds: int,
    scale: float,
    timeout: float,
    env: Env,
) -> Results:
    results = Results()
    usable = [spec for spec in specs if spec.available]
    sizes = {row.key: max(1, round(row.base_n * scale)) for row in rows}

    def attempt(spec: LoopSpec, row: IoRow, n: int, round_no: int) -> IoSample | None:
        if (row.key, spec.name) in results.failures:
            return None
        try:
            return measure(spec, row, n, round_no, timeout, env)
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            results.failures[(row.key, spec.name)] = f"{type(exc).__name__}: {exc}"
            print(
                f"  FAILED {row.key} on {spec.name}: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            return None

    print("warm-up ...", file=sys.stderr, flush=True)
    for row in rows:
        for spec in usable:
            attempt(spec, row, max(1, sizes[row.key] // 10), round_no=0)

    for round_no in range(1, rounds + 1):
        started = time.perf_counter()
        shift = (round_no - 1) % max(1, len(usable))
        order = usable[shift:] + usable[:shift]
        for row in rows:
            for spec in order:
                sample = attempt(spec, row, sizes[row.key], round_no)
                if sample is not None:
                    results.samples.append(sample)
        print(
            f"round {round_no}/{rounds} done in {time.perf_counter() - started:.1f} s "
            f"(order: {', '.join(spec.name for spec in order)})",
            file=sys.stderr,
            flush=True,
        )
    return results


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cpu_view(results: Results) -> Results:
    """The same samples with CPU seconds in place of wall seconds, so that bench_core's
    wall-rate spread table shows the spread of the CPU rates (the echo rows' key figure)."""
    return Results(
        samples=[replace(sample, wall_s=max(sample.cpu_s, 1e-9)) for sample in results.samples],
        failures=results.failures,
    )


def per_request_table(results: Results, rows: list[IoRow], specs: list[LoopSpec]) -> str:
    """Median µs of server CPU per echo request, as user + system time (getrusage).

    The system part is mostly the kernel's loopback TCP work and wake-ups, much the same for
    every loop; it also moves with where the scheduler puts the client's threads (see README).
    The user part is the loop's own code plus the echo coroutine, which is the same Python on
    every loop."""
    usable = [spec for spec in specs if spec.available]
    lines = [
        "| row | " + " | ".join(spec.name for spec in usable) + " |",
        "| --- |" + " ---: |" * len(usable),
    ]
    for row in rows:
        if not row.needs_client:
            continue
        cells = [row.title]
        for spec in usable:
            if (row.key, spec.name) in results.failures:
                cells.append("FAIL")
                continue
            samples = [
                sample
                for sample in results.samples
                if isinstance(sample, IoSample)
                and sample.row == row.key
                and sample.loop == spec.name
                and sample.user_s is not None
                and sample.sys_s is not None
            ]
            if not samples:
                cells.append("-")
                continue
            user = statistics.median(s.user_s / s.ops for s in samples)  # type: ignore[operator]
            system = statistics.median(s.sys_s / s.ops for s in samples)  # type: ignore[operator]
            cells.append(f"{user * 1e6:.2f} + {system * 1e6:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(results: Results, rows: list[IoRow]) -> list[str]:
    """Issue 4's targets, stated as ratios of medians from this run."""

    def ratio(row: str, top: str, bottom: str, kind: str) -> float | None:
        if (row, top) in results.failures or (row, bottom) in results.failures:
            return None
        a, b = results.median(row, top, kind), results.median(row, bottom, kind)
        return None if a is None or b is None else a / b

    lines = []
    for row in rows:
        if row.key.startswith("getaddrinfo"):
            checks = [("asyncio", "wall", 10.0)]
        else:
            checks = [("uvloop", "cpu", 1.5), ("rloop", "cpu", 1.0)]
        for other, kind, goal in checks:
            value = ratio(row.key, "ferroloop", other, kind)
            if value is None:
                continue
            verdict = "met" if value >= goal else "NOT met"
            unit = "wall" if kind == "wall" else "server CPU"
            lines.append(
                f"- {row.key}: ferroloop ÷ {other} per {unit} second = {value:.2f}× "
                f"(target ≥ {goal:g}×): {verdict}"
            )
    return lines


def default_client_path() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else ROOT / "target"
    return base / "release" / "echo-client"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved I/O benchmarks: asyncio vs uvloop vs rloop vs ferroloop.",
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 2 with --quick)")
    parser.add_argument(
        "--scale", type=float, help="multiply every N (default 1; 0.1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="fast smoke run: 2 rounds, small N")
    parser.add_argument("--loops", help=f"comma-separated subset of {','.join(KNOWN_LOOPS)}")
    parser.add_argument("--only", help="comma-separated row keys (see --list)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every raw sample here")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds one measurement may take before it counts as failed",
    )
    parser.add_argument(
        "--client",
        type=Path,
        help="echo-client binary (default: target/release/echo-client, or under $CARGO_TARGET_DIR)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=ECHO_CONNECTIONS,
        help=f"echo client connections, one thread each (default {ECHO_CONNECTIONS})",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="echo rows: leave CPU placement to the scheduler (default: server on the first "
        "usable CPU, client on the second)",
    )
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.scale is None:
        args.scale = 0.1 if args.quick else 1.0
    if args.rounds < 1 or args.scale <= 0 or args.connections < 1:
        parser.error("--rounds and --connections must be >= 1 and --scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for row in ROWS:
            print(f"{row.key:24} {row.title:34} N={row.base_n:<7} op = {row.ops}")
        return 0
    if args.only:
        keys = [key.strip() for key in args.only.split(",") if key.strip()]
        unknown = [key for key in keys if key not in ROWS_BY_KEY]
        if unknown:
            raise SystemExit(f"unknown row(s): {', '.join(unknown)}; see --list")
        rows = [row for row in ROWS if row.key in keys]
    else:
        rows = list(ROWS)

    client: Path | None = None
    if any(row.needs_client for row in rows):
        client = (args.client or default_client_path()).resolve()
        if not (client.is_file() and os.access(client, os.X_OK)):
            print(
                f"echo client not found at {client}: build it with "
                "`cargo build --release -p ferroloop-bench` (bash scripts/bench.sh io does), "
                "pass --client PATH, or leave out the tcp_echo rows with --only",
                file=sys.stderr,
            )
            return 2
    pin: tuple[int, int] | None = None
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2:
        pin = (cpus[0], cpus[1])

    specs = resolve_loops(parse_loop_names(args.loops))
    info = machine_info(specs)
    print("# ferroloop I/O benchmarks\n")
    print(format_machine_line(info))
    print(
        f"\n{args.rounds} rounds, interleaved (loop order rotated every round), "
        f"scale {args.scale:g}, fresh loop per measurement; medians over rounds. "
        f"TCP echo: server = the loop under test (sock_accept/sock_recv/sock_sendall, "
        f"one task per connection) in this process; client = echo-client, a separate process "
        f"with {args.connections} connections (one thread each); timed from the first accept "
        f"to the last close; "
        + (
            f"server pinned to CPU {pin[0]}, client to CPU {pin[1]}."
            if pin
            else "CPU placement left to the scheduler (--no-pin, or fewer than 2 CPUs)."
        )
    )
    for spec in specs:
        if not spec.available:
            print(f"{spec.name}: {spec.problem} — skipped")
    if not any(spec.available for spec in specs):
        print("no loop is available; nothing to measure", file=sys.stderr)
        return 2

    env = Env(client, args.connections, pin, args.timeout)
    results = run_benchmarks(rows, specs, args.rounds, args.scale, args.timeout, env)

    print("\n## ops per wall second (median; echo: requests per second)\n")
    print(markdown_table(results, rows, specs, "wall"))  # type: ignore[arg-type]
    print(
        "\n## ops per CPU second of the benchmark process (time.process_time, median; "
        "echo: requests per server CPU-second)\n"
    )
    print(markdown_table(results, rows, specs, "cpu"))  # type: ignore[arg-type]
    if args.rounds >= 2:
        print("\n## spread of wall ops/s across rounds, (max − min) / median\n")
        print(spread_table(results, rows, specs))  # type: ignore[arg-type]
        print("\n## spread of CPU ops/s across rounds, (max − min) / median\n")
        print(spread_table(cpu_view(results), rows, specs))  # type: ignore[arg-type]
    if any(row.needs_client for row in rows):
        print("\n## TCP echo: µs of server CPU per request, user + system (getrusage, median)\n")
        print(per_request_table(results, rows, specs))
    targets = target_lines(results, rows)
    if targets:
        print("\n## issue 4 targets (ratios of the medians above)\n")
        print("\n".join(targets))
    if results.failures:
        print("\n## failures (the cell shows FAIL; no number is reported for a wrong result)\n")
        order = {row.key: index for index, row in enumerate(rows)}
        for (row_key, loop_name), error in sorted(
            results.failures.items(), key=lambda item: order[item[0][0]]
        ):
            print(f"- {row_key} on {loop_name}: {error}")

    if args.json:
        config = {
            "rounds": args.rounds,
            "scale": args.scale,
            "timeout_s": args.timeout,
            "sizes": {row.key: max(1, round(row.base_n * args.scale)) for row in rows},
            "echo_connections": args.connections,
            "echo_pin_server_client_cpus": list(pin) if pin else None,
            "echo_recv_size": RECV_SIZE,
            "echo_client": str(client) if client else None,
        }
        write_json(args.json, info, config, specs, rows, results)  # type: ignore[arg-type]
        print(f"\nraw samples written to {args.json}")

    explicitly_missing = bool(args.loops) and any(not spec.available for spec in specs)
    if results.failures:
        return 1
    return 2 if explicitly_missing else 0


if __name__ == "__main__":
    sys.exit(main())
