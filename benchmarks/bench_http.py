"""Side-by-side HTTP benchmarks: real servers and a real client on every loop, load from wrk.

Issue 6 asks that users who run uvicorn or aiohttp see the speed: ferroloop must serve ≥ 1.15×
uvloop's requests per wall second and per server CPU-second on every row. This script checks
that in the style of bench_core.py and bench_io.py, with the tables and JSON writer of
harness.py that they share: all loops in one run, R interleaved rounds with the loop order
rotated each round, medians, ratios to uvloop, a spread table, and correctness checks, so that a
broken loop never produces a fast number.

The rows (see --list):

- uvicorn + httptools, plaintext and a 10 KiB body: ``python -m uvicorn http_apps:asgi_app
  --loop <loop> --http httptools`` (a raw ASGI app, http_apps.py), under ``wrk``.
- aiohttp.web plaintext: ``web.run_app(app, loop=<loop>)`` (http_apps.py), under ``wrk``.
- aiohttp client: ``aiohttp.ClientSession`` on the loop under test, C concurrent keep-alive
  GETs against a fixed local server (a minimal keep-alive responder on uvloop, the same for
  every loop).

How one measurement goes:

- A fresh process for the side under test (the server, or the client in the client row), on its
  own CPU; the load (wrk, or the fixed server) runs in another process on another CPU (server
  CPU 0, wrk CPU 1 by default; ``--no-pin`` leaves placement to the scheduler).
- Before measuring: the server must answer ``/loop`` with the class of the loop asked for (a
  server that quietly fell back to another loop fails), and the response to the row's request is
  read once over a raw socket, checked byte for byte, and its exact size on the wire noted.
- Warm-up: ``wrk`` for --warmup seconds, not recorded. Then ``wrk -t1 -cC -dD --latency`` with a
  Lua ``done`` hook that prints wrk's summary as JSON: requests, bytes, errors, latency mean and
  p99. The server's CPU time is read from ``/proc/<pid>/stat`` (utime + stime, every thread)
  before wrk starts and after it exits.
- Checks: wrk must report no socket errors, no non-2xx response and no timeout, and the bytes it
  read must equal its request count times the response size (plus at most one partial response
  per connection when time ran out): a server that sent a wrong, short or extra response fails.
  The client row checks every response's status and body itself.

    python benchmarks/bench_http.py                      # 5 rounds, 5 s per measurement
    python benchmarks/bench_http.py --quick              # 2 rounds, 1 s: a smoke run
    python benchmarks/bench_http.py --only uvicorn_plaintext --loops uvloop,ferroloop
    python benchmarks/bench_http.py --json benchmarks/results/$(date +%F)-http.json

wrk is a Debian package (``apt-get install wrk``). When it is missing, the script installs it
with apt-get if it runs as root, and otherwise says how to install it and exits with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    CheckFailed,
    Results,
    Sample,
    add_list_option,
    add_selection_options,
    exit_status,
    expect,
    loop_table,
    loops_and_machine,
    pin_cpus,
    print_failures,
    print_header,
    print_rate_tables,
    print_spreads,
    record_failure,
    report_unavailable,
    run_rounds,
    select_rows,
    uvloop_target_lines,
    write_json,
)
from http_apps import BODY_10K, PLAINTEXT, fixed_loop_name
from loop_registry import (
    LoopSpec,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STARTUP_TIMEOUT = 20.0
TARGET = 1.15  # issue 6: >= 1.15x uvloop, per wall second and per server CPU-second

# uvicorn's --loop value for each loop: its built-in names, or a module:callable loop factory.
UVICORN_LOOP = {
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "rloop": "rloop:new_event_loop",
    "ferroloop": "ferroloop:new_event_loop",
}

WRK_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, \"connect\": %d, " ..
    "\"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, \"latency_mean_us\": %.3f, " ..
    "\"latency_p50_us\": %d, \"latency_p99_us\": %d, \"latency_max_us\": %d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class HttpRow:
    # key, title and ops are the attributes harness's tables and JSON writer read.
    key: str
    title: str
    kind: str  # "uvicorn" | "aiohttp" (servers under wrk) | "client" (aiohttp client)
    path: str
    body: bytes
    ops: str


ROWS: tuple[HttpRow, ...] = (
    HttpRow(
        "uvicorn_plaintext",
        "uvicorn+httptools plaintext",
        "uvicorn",
        "/",
        PLAINTEXT,
        "one GET / answered with 13 bytes by uvicorn (httptools) and a raw ASGI app",
    ),
    HttpRow(
        "uvicorn_10k",
        "uvicorn+httptools 10 KiB body",
        "uvicorn",
        "/10k",
        BODY_10K,
        "one GET /10k answered with 10,240 bytes by uvicorn (httptools) and a raw ASGI app",
    ),
    HttpRow(
        "aiohttp_plaintext",
        "aiohttp.web plaintext",
        "aiohttp",
        "/",
        PLAINTEXT,
        "one GET / answered with 13 bytes by an aiohttp.web handler (web.run_app(loop=...))",
    ),
    HttpRow(
        "aiohttp_client",
        "aiohttp client (ClientSession GET)",
        "client",
        "/",
        PLAINTEXT,
        "one ClientSession GET of 13 bytes from a fixed local keep-alive server",
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


@dataclass
class HttpSample(Sample):
    # ops = requests in the timed window; wall_s = wrk's (or the client's) measured duration;
    # cpu_s = CPU seconds of the process under test over the window (user + system).
    user_s: float | None = None
    sys_s: float | None = None
    latency_mean_us: float | None = None
    latency_p99_us: float | None = None
    latency_max_us: float | None = None
    bytes_read: int | None = None


@dataclass(frozen=True)
class Env:
    wrk: str | None
    connections: int
    duration: float
    warmup: float
    pin: tuple[int, int] | None  # (CPU of the side under test, CPU of the load)
    timeout: float
    fixed_port: int | None = None  # the client row's fixed server


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pinned(cpu: int | None):
    """A preexec_fn: run the child on `cpu` (and with SIGINT at its default, see below). It
    only makes two system calls, so it is safe between fork and exec."""

    def setup() -> None:
        # A child of a background job inherits SIGINT ignored; the servers stop on SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


class Process:
    """A child process whose output goes to a temporary file (a pipe could fill and block it)."""

    def __init__(self, command: list[str], cpu: int | None, label: str):
        self.label = label
        fd, name = tempfile.mkstemp(prefix="bench-http-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(fd, "wb") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned(cpu),  # noqa: PLW1509 -- two syscalls, no locks
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, limit: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the process, every thread, from /proc/<pid>/stat."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks

    def wait_for_port(self, port: int, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise CheckFailed(
                    f"{self.label} exited with {self.popen.returncode} before listening: "
                    f"{self.output()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.02)
        raise CheckFailed(f"{self.label} not listening after {timeout:g} s: {self.output()}")

    def stop(self) -> None:
        if self.alive():
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        with contextlib.suppress(OSError):
            self.log.unlink()


def server_command(row: HttpRow, loop: str, port: int) -> list[str]:
    if row.kind == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "http_apps:asgi_app",
            "--host", "127.0.0.1", "--port", str(port), "--loop", UVICORN_LOOP[loop],
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    return [
        sys.executable,
        str(HERE / "http_apps.py"),
        row.kind,
        "--loop",
        loop,
        "--port",
        str(port),
    ]


def fetch_raw(port: int, path: str) -> tuple[int, bytes, int]:
    """One GET as wrk sends it, over a raw socket: (status, body, bytes of the whole response)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                raise CheckFailed(f"connection closed after {len(data)} bytes of headers")
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expect("content-length" in headers, f"{path}: no Content-Length in {lines}")
        length = int(headers["content-length"])
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                raise CheckFailed(f"{path}: body cut short at {len(body)} of {length} bytes")
            body += more
        expect(len(body) == length, f"{path}: {len(body) - length} bytes after the body")
        return status, body, len(head) + 4 + length


def run_wrk(env: Env, port: int, path: str, duration: float, script: Path) -> dict:
    assert env.wrk is not None
    # wrk takes whole seconds only (a fractional warm-up becomes 1 s).
    command = [
        env.wrk, "-t1", f"-c{env.connections}", f"-d{max(1, round(duration))}s",
        "--latency", "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=duration + 30,
        preexec_fn=pinned(env.pin[1] if env.pin else None),
    )
    for line in result.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON ") :])
    raise CheckFailed(
        f"wrk exited with {result.returncode} without a summary: "
        f"{(result.stderr or result.stdout).strip()[-500:]}"
    )


def measure_server(
    row: HttpRow, spec: LoopSpec, round_no: int, env: Env, script: Path
) -> HttpSample:
    port = free_port()
    server = Process(
        server_command(row, spec.name, port), env.pin[0] if env.pin else None, f"{row.kind} server"
    )
    try:
        server.wait_for_port(port)
        status, body, _ = fetch_raw(port, "/loop")
        # Each loop's class lives in the package of the same name (asyncio.unix_events...).
        expect(
            status == 200 and body.decode(errors="replace").split(".")[0] == spec.name,
            f"the server runs on {body.decode(errors='replace')!r}, not on {spec.name}",
        )
        status, body, response_size = fetch_raw(port, row.path)
        expect(status == 200 and body == row.body, f"GET {row.path}: {status}, {body[:60]!r}")
        if env.warmup > 0:
            run_wrk(env, port, row.path, env.warmup, script)
        user0, sys0 = server.cpu_times()
        report = run_wrk(env, port, row.path, env.duration, script)
        user1, sys1 = server.cpu_times()
        expect(server.alive(), f"the server died during the run: {server.output()}")
        errors = {key: report[key] for key in ("connect", "read", "write", "status", "timeout")}
        expect(not any(errors.values()), f"wrk saw errors: {errors}")
        requests = int(report["requests"])
        expect(requests > 0, "wrk completed no request")
        low = requests * response_size
        high = (requests + env.connections) * response_size
        expect(
            low <= report["bytes"] <= high,
            f"wrk read {report['bytes']} bytes for {requests} responses of {response_size} "
            f"bytes (expected {low}..{high})",
        )
        user, system = user1 - user0, sys1 - sys0
        return HttpSample(
            row.key,
            spec.name,
            round_no,
            env.connections,
            requests,
            report["duration_us"] / 1e6,
            max(user + system, 1e-9),
            user_s=user,
            sys_s=system,
            latency_mean_us=report["latency_mean_us"],
            latency_p99_us=report["latency_p99_us"],
            latency_max_us=report["latency_max_us"],
            bytes_read=report["bytes"],
        )
    finally:
        server.stop()


def measure_client(row: HttpRow, spec: LoopSpec, round_no: int, env: Env) -> HttpSample:
    assert env.fixed_port is not None
    command = [
        sys.executable, str(HERE / "http_apps.py"), "client", "--loop", spec.name,
        "--port", str(env.fixed_port), "--connections", str(env.connections),
        "--duration", f"{env.duration:g}", "--warmup", f"{env.warmup:g}",
    ]  # fmt: skip
    client = Process(command, env.pin[0] if env.pin else None, "aiohttp client")
    try:
        try:
            client.popen.wait(env.duration + env.warmup + env.timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"the client did not finish: {client.output()}") from None
        output = client.output(limit=100_000)
        lines = [line for line in output.splitlines() if line.startswith("{")]
        expect(
            client.popen.returncode == 0 and bool(lines),
            f"the client exited with {client.popen.returncode}: {output[-800:]}",
        )
        report = json.loads(lines[-1])
        expect(
            report["loop"].split(".")[0] == spec.name,
            f"the client ran on {report['loop']}, not on {spec.name}",
        )
        expect(report["errors"] == 0, f"{report['errors']} bad responses: {report['first_error']}")
        expect(report["requests"] > 0, "the client completed no request")
        return HttpSample(
            row.key,
            spec.name,
            round_no,
            env.connections,
            report["requests"],
            report["wall_s"],
            max(report["cpu_s"], 1e-9),
            user_s=report["user_s"],
            sys_s=report["sys_s"],
            latency_mean_us=report["latency_mean_us"],
            latency_p99_us=report["latency_p99_us"],
            latency_max_us=report["latency_max_us"],
        )
    finally:
        client.stop()


def run_benchmarks(
    rows: list[HttpRow], specs: list[LoopSpec], rounds: int, env: Env, script: Path
) -> Results:
    results = Results()

    def attempt(spec: LoopSpec, row: HttpRow, round_no: int) -> HttpSample | None:
        if (row.key, spec.name) in results.failures:
            return None
        try:
            if row.kind == "client":
                return measure_client(row, spec, round_no, env)
            return measure_server(row, spec, round_no, env, script)
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            record_failure(results, row, spec, f"{type(exc).__name__}: {exc}")
            return None

    run_rounds(rows, specs, rounds, results, attempt, warm_up=False)
    return results


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def _samples(results: Results, row: str, loop: str) -> list[HttpSample]:
    return [
        sample
        for sample in results.samples
        if isinstance(sample, HttpSample) and sample.row == row and sample.loop == loop
    ]


def latency_table(results: Results, rows: list[HttpRow], specs: list[LoopSpec]) -> str:
    """Median over rounds of each run's latency mean and p99, in milliseconds."""

    def latency(row: HttpRow, spec: LoopSpec) -> str:
        if (row.key, spec.name) in results.failures:
            return "FAIL"
        samples = _samples(results, row.key, spec.name)
        if not samples:
            return "-"
        mean = statistics.median(s.latency_mean_us or 0.0 for s in samples) / 1e3
        p99 = statistics.median(s.latency_p99_us or 0.0 for s in samples) / 1e3
        return f"{mean:.2f} / {p99:.2f}"

    return loop_table(rows, specs, latency)


def per_request_table(results: Results, rows: list[HttpRow], specs: list[LoopSpec]) -> str:
    """Median µs of CPU per request of the process under test, user + system."""

    def split(row: HttpRow, spec: LoopSpec) -> str:
        if (row.key, spec.name) in results.failures:
            return "FAIL"
        samples = _samples(results, row.key, spec.name)
        if not samples:
            return "-"
        user = statistics.median((s.user_s or 0.0) / s.ops for s in samples) * 1e6
        system = statistics.median((s.sys_s or 0.0) / s.ops for s in samples) * 1e6
        return f"{user:.1f} + {system:.1f}"

    return loop_table(rows, specs, split)


def busy_table(results: Results, rows: list[HttpRow], specs: list[LoopSpec]) -> str:
    """Median CPU ÷ wall time of the process under test: how busy it was during the window.

    A server under 32 connections of wrk should be busy nearly 100% of the time; when it is
    clearly less, something else set the pace (other processes on its CPU, or the load
    generator), and its wall rate says more about the machine than about the loop."""

    def busy(row: HttpRow, spec: LoopSpec) -> str:
        samples = _samples(results, row.key, spec.name)
        if (row.key, spec.name) in results.failures or not samples:
            return "-"
        return f"{statistics.median(s.cpu_s / s.wall_s for s in samples):.0%}"

    return loop_table(rows, specs, busy)


def paired_table(results: Results, rows: list[HttpRow], specs: list[LoopSpec]) -> str:
    """ferroloop ÷ uvloop within each round, median [min–max] over rounds, wall and CPU.

    The two measurements of a round run minutes apart at most, so their ratio is less exposed to
    slow drifts of the machine than the ratio of two medians taken over the whole run."""
    names = {spec.name for spec in specs if spec.available}
    if not {"ferroloop", "uvloop"} <= names:
        return ""
    lines = ["| row | per wall second | per CPU-second |", "| --- | ---: | ---: |"]
    for row in rows:
        by_round: dict[int, dict[str, HttpSample]] = {}
        for sample in results.samples:
            if isinstance(sample, HttpSample) and sample.row == row.key:
                by_round.setdefault(sample.round, {})[sample.loop] = sample
        pairs = [
            (pair["ferroloop"], pair["uvloop"])
            for pair in by_round.values()
            if "ferroloop" in pair and "uvloop" in pair
        ]
        cells = [row.title]
        for rate in ("wall_rate", "cpu_rate"):
            ratios = [getattr(ours, rate) / getattr(base, rate) for ours, base in pairs]
            if not ratios:
                cells.append("-")
                continue
            cells.append(f"{statistics.median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------------


def find_wrk(path: str | None) -> str | None:
    """The wrk binary: --wrk, or on PATH, or installed with apt-get when running as root."""
    if path:
        return path if shutil.which(path) else None
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found; installing it: apt-get install -y wrk", file=sys.stderr, flush=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, check=False, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False, **quiet)
            subprocess.run(install, env=env, check=False, **quiet)
        return shutil.which("wrk")
    return None


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0].partition(" Copyright")[0].strip() if text else "unknown"


def package_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for name in ("uvicorn", "httptools", "aiohttp"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved HTTP benchmarks (uvicorn, aiohttp; wrk): asyncio vs uvloop vs "
        "rloop vs ferroloop.",
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 2 with --quick)")
    parser.add_argument(
        "--duration", type=float, help="seconds of load per measurement (default 5; 1 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds of unrecorded load first (default 1; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 1 s")
    add_selection_options(parser)
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent connections (default 32)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave CPU placement to the scheduler (default: the process under test on the first "
        "usable CPU, the load on the second)",
    )
    parser.add_argument("--wrk", help="the wrk binary (default: wrk on PATH)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="extra seconds a measurement may take"
    )
    add_list_option(parser)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.duration is None:
        args.duration = 1.0 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 1.0
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("--rounds and --connections must be >= 1, --duration >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for row in ROWS:
            print(f"{row.key:18} {row.title:36} op = {row.ops}")
        return 0
    rows = select_rows(ROWS, args.only)

    wrk: str | None = None
    if any(row.kind != "client" for row in rows):
        wrk = find_wrk(args.wrk)
        if wrk is None:
            print(
                "wrk not found: install it with `apt-get install wrk` (Debian/Ubuntu; run this "
                "script as root to have it do that), pass --wrk PATH, or measure only the client "
                "row with --only aiohttp_client",
                file=sys.stderr,
            )
            return 2
    missing = [name for name, version in package_versions().items() if version == "missing"]
    if missing:
        print(
            f"missing Python packages: {', '.join(missing)} (pip install -r requirements-dev.txt)",
            file=sys.stderr,
        )
        return 2

    pin = pin_cpus(args.no_pin)

    specs, info = loops_and_machine(args.loops)
    info["packages"] = package_versions()
    info["wrk"] = wrk_version(wrk) if wrk else None
    fixed_loop = fixed_loop_name()
    print_header(
        "ferroloop HTTP benchmarks",
        info,
        f"{', '.join(f'{name} {version}' for name, version in info['packages'].items())}; "  # type: ignore[union-attr]
        f"{info['wrk'] or 'no wrk'}.\n\n"
        f"{args.rounds} rounds, interleaved (loop order rotated every round); each measurement: "
        f"a fresh server (or client) process, {args.warmup:g} s of warm-up load, then "
        f"{args.duration:g} s measured with {args.connections} keep-alive connections; medians "
        f"over rounds. Servers under `wrk -t1 -c{args.connections} --latency`; the client row: "
        f"aiohttp.ClientSession with {args.connections} concurrent GETs against a fixed server "
        f"on {fixed_loop}. "
        + (
            f"Process under test pinned to CPU {pin[0]}, load (wrk or the fixed server) to CPU "
            f"{pin[1]}."
            if pin
            else "CPU placement left to the scheduler (--no-pin, or fewer than 2 CPUs)."
        ),
    )
    if not report_unavailable(specs):
        return 2

    fixed: Process | None = None
    fixed_port: int | None = None
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        script = Path(tmp) / "done.lua"
        script.write_text(WRK_DONE_LUA, encoding="utf-8")
        try:
            if any(row.kind == "client" for row in rows):
                fixed_port = free_port()
                fixed = Process(
                    [
                        sys.executable,
                        str(HERE / "http_apps.py"),
                        "fixed",
                        "--port",
                        str(fixed_port),
                    ],
                    pin[1] if pin else None,
                    "fixed server",
                )
                fixed.wait_for_port(fixed_port)
            env = Env(
                wrk, args.connections, args.duration, args.warmup, pin, args.timeout, fixed_port
            )
            results = run_benchmarks(rows, specs, args.rounds, env, script)
        finally:
            if fixed is not None:
                fixed.stop()

    print_rate_tables(
        results,
        rows,
        specs,
        "requests per wall second (median)",
        "requests per CPU-second of the process under test (the server; the client in "
        "the client row; median)",
    )
    print("\n## latency mean / p99, ms (wrk's, or the client's own; median over rounds)\n")
    print(latency_table(results, rows, specs))
    print_spreads(results, rows, specs, args.rounds, "requests/s")
    print("\n## how busy the process under test was: CPU ÷ wall time over the window (median)\n")
    print(busy_table(results, rows, specs))
    print("\n## µs of CPU per request of the process under test, user + system (median)\n")
    print(per_request_table(results, rows, specs))
    paired = paired_table(results, rows, specs)
    if paired:
        print("\n## ferroloop ÷ uvloop paired within each round: median [min–max] over rounds\n")
        print(paired)
    targets = uvloop_target_lines(
        results,
        rows,
        TARGET,
        (("wall", "wall second"), ("cpu", "CPU-second of the process under test")),
    )
    if targets:
        print(f"\n## issue 6 targets (≥ {TARGET:g}× uvloop; ratios of the medians above)\n")
        print("\n".join(targets))
    print_failures(results, rows)

    if args.json:
        config = {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "pin_under_test_load_cpus": list(pin) if pin else None,
            "wrk": info["wrk"],
            "client_row_fixed_server_loop": fixed_loop,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
        write_json(args.json, info, config, specs, rows, results)

    return exit_status(bool(results.failures), args.loops, specs)


if __name__ == "__main__":
    sys.exit(main())
