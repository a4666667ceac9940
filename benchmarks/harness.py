"""The measuring machinery every benchmark script shares: rounds, measurement, tables, JSON, CLI.

Every bench_*.py script compares the loops the same way (see README.md, "Methodology"): all loops
in one process, R interleaved rounds with the loop order rotated each round, a fresh loop per
measurement after gc.collect() + gc.freeze() under a watchdog, medians, ratios to uvloop, spread
tables, correctness checks that turn a wrong result into FAIL, and the same exit statuses. That
method was first written in bench_core.py and bench_io.py, and the later scripts imported it from
there or repeated it. It lives here, once, so that the scripts agree by construction and each one
holds only its own workloads, rows and row-specific tables.

What is here, in order:

- checks: `CheckFailed`, `expect`;
- records: `Sample` and `IoSample` (one measurement), `Results`, the `Clock` of a timed window
  and what a self-timing workload returns (`Timed`); the two kinds of row, `Row` (timed by
  `measure`) and `IoRow` (times itself);
- measurement: `fresh_loop` (fresh loop, GC freeze, watchdog), `measure` (the harness times the
  workload) and `measure_window` (the workload times its own window);
- rounds: `run_rounds` (warm-up, interleaving, rotation), `run_sized` (the usual attempt) and
  `run_windowed` (the same with `measure_window`);
- load processes: `Env`, `ClientRun`, `spawn_client`, CPU pinning (`pin_cpus`, `pin_note`),
  the Rust binaries' paths;
- report: the Markdown tables, `write_json`, the failure list;
- command line: the common options, `--only`, the header lines and the exit status.

Finding the loops and describing the machine stay in loop_registry.py (main_job.py uses that too).
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
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

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


class RowLike(Protocol):
    """What the shared code reads of a script's row: its key, its title and what one op is."""

    @property
    def key(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def ops(self) -> str: ...


R = TypeVar("R", bound=RowLike)
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A workload's result is wrong: the loop dropped, duplicated or misrouted work."""


def expect(condition: bool, message: str) -> None:
    # Not `assert`: the guard must survive `python -O`.
    if not condition:
        raise CheckFailed(message)


class MeasurementTimeout(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    row: str
    loop: str
    round: int
    n: int
    ops: int
    wall_s: float
    cpu_s: float

    @property
    def wall_rate(self) -> float:
        return self.ops / self.wall_s

    @property
    def cpu_rate(self) -> float:
        # process_time() ticks coarsely on some kernels; never divide by zero.
        return self.ops / max(self.cpu_s, 1e-9)


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


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (row, loop) -> error

    def rates(self, row: str, loop: str, kind: str) -> list[float]:
        return [
            sample.wall_rate if kind == "wall" else sample.cpu_rate
            for sample in self.samples
            if sample.row == row and sample.loop == loop
        ]

    def median(self, row: str, loop: str, kind: str) -> float | None:
        rates = self.rates(row, loop, kind)
        return statistics.median(rates) if rates else None


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


@dataclass(frozen=True)
class Env:
    """What self-timing workloads need besides the loop and N (from the command line)."""

    client: Path | None = None  # the load client (or peer) binary; None when no row needs it
    connections: int = 8  # client connections or flows (--connections, --flows)
    pin: tuple[int, int] | None = None  # (server CPU, client CPU); None with --no-pin
    timeout: float = 60.0


@dataclass(frozen=True)
class Row:
    """A row whose workload counts its operations and leaves the timing to `measure`."""

    key: str
    title: str
    run: Callable[[Loop, int], int]  # (fresh loop, N) -> ops done, after checking the result
    base_n: int  # sized so one measurement takes roughly 0.1-0.5 s on stock asyncio
    ops: str  # what one op is


# A self-timing workload: (loop, N, the script's environment, e.g. an `Env`) -> Timed.
Workload = Callable[[Loop, int, Any], Timed]


@dataclass(frozen=True)
class IoRow:
    """A row whose workload times its own window (see `measure_window`)."""

    # key, title and ops are the attributes the tables and the JSON writer read.
    key: str
    title: str
    run: Workload
    base_n: int  # calls, requests per connection, datagrams...: ~0.2-0.5 s on asyncio
    ops: str  # what one op is
    needs_client: bool = False


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_loop(spec: LoopSpec, timeout: float) -> Iterator[Loop]:
    """A fresh loop from `spec` for one measurement, bounded by `timeout` seconds, with the heap
    collected and frozen; closed afterwards. An error after the watchdog fired is re-raised as
    MeasurementTimeout."""
    assert spec.factory is not None
    loop = spec.factory()
    timed_out = threading.Event()

    def on_timeout() -> None:
        # Soft bound: ask the loop to stop; the workload then fails its own checks.
        timed_out.set()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)

    watchdog = threading.Timer(timeout, on_timeout)
    watchdog.daemon = True
    # Hard bound, for a loop that hangs while holding the GIL: dump every thread's stack and exit.
    faulthandler.dump_traceback_later(timeout + 30.0, exit=True)
    try:
        # Collect, then freeze what survives: the collector then only ever walks objects made
        # during this measurement, so a measurement does not pay for garbage that an earlier one
        # left behind (rloop 0.5 leaks a Context per cancelled timer, and every loop object).
        gc.collect()
        gc.freeze()
        watchdog.start()
        try:
            yield loop
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


def measure(spec: LoopSpec, row: Row, n: int, round_no: int, timeout: float) -> Sample:
    """Run `row` once on a fresh loop from `spec`; the time is taken around the workload."""
    with fresh_loop(spec, timeout) as loop:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        ops = row.run(loop, n)
        wall1, cpu1 = time.perf_counter(), time.process_time()
    return Sample(row.key, spec.name, round_no, n, ops, wall1 - wall0, cpu1 - cpu0)


class TimingRow(RowLike, Protocol):
    @property
    def run(self) -> Callable[[Loop, int, Any], Timed]: ...


def measure_window(
    spec: LoopSpec, row: TimingRow, n: int, round_no: int, timeout: float, env: object
) -> IoSample:
    """As `measure`, except that the workload times its own window (e.g. from the first
    accepted connection to the last close) and returns it."""
    with fresh_loop(spec, timeout) as loop:
        timed = row.run(loop, n, env)
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


# --------------------------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------------------------


def row_sizes(rows: Iterable[Any], scale: float) -> dict[str, int]:
    """Each row's N at `scale` (rows with a `base_n`)."""
    return {row.key: max(1, round(row.base_n * scale)) for row in rows}


def warm_up_size(n: int) -> int:
    return max(1, n // 10)


def rotated(items: Sequence[T], round_no: int) -> list[T]:
    """`items` in round `round_no`'s order (1-based): rotated left by one more each round, so
    that drift in machine load spreads over all loops instead of landing on whichever ran last."""
    shift = (round_no - 1) % max(1, len(items))
    return [*items[shift:], *items[:shift]]


def record_failure(results: Results, row: RowLike, spec: LoopSpec, reason: str) -> None:
    """File a failed (row, loop): the cell shows FAIL and the pair is not measured again."""
    results.failures[(row.key, spec.name)] = reason
    print(f"  FAILED {row.key} on {spec.name}: {reason}", file=sys.stderr)


def run_rounds(
    rows: Sequence[R],
    specs: Sequence[LoopSpec],
    rounds: int,
    results: Results,
    attempt: Callable[[LoopSpec, R, int], Sample | None],
    *,
    warm_up: bool = True,
    columns: Callable[[R, list[LoopSpec]], list[LoopSpec]] | None = None,
) -> None:
    """The interleaved rounds: `attempt(spec, row, round_no)` for every row and usable loop,
    with the loop order rotated by one each round; round 0 is the unrecorded warm-up (which also
    finds broken pairs early). The samples of rounds 1..R go into `results`. `columns` picks
    the loops that run a row, in the round's order (default: all)."""
    usable = [spec for spec in specs if spec.available]

    def which(row: R, order: list[LoopSpec]) -> list[LoopSpec]:
        return order if columns is None else columns(row, order)

    if warm_up:
        print("warm-up ...", file=sys.stderr, flush=True)
        for row in rows:
            for spec in which(row, usable):
                attempt(spec, row, 0)

    for round_no in range(1, rounds + 1):
        started = time.perf_counter()
        order = rotated(usable, round_no)
        for row in rows:
            for spec in which(row, order):
                sample = attempt(spec, row, round_no)
                if sample is not None:
                    results.samples.append(sample)
        print(
            f"round {round_no}/{rounds} done in {time.perf_counter() - started:.1f} s "
            f"(order: {', '.join(spec.name for spec in order)})",
            file=sys.stderr,
            flush=True,
        )


def run_sized(
    rows: Sequence[R],
    specs: Sequence[LoopSpec],
    rounds: int,
    scale: float,
    measure_one: Callable[[LoopSpec, R, int, int], Sample],
) -> Results:
    """`run_rounds` with the usual attempt: `measure_one(spec, row, n, round_no)` at the row's
    N (N/10 in the warm-up); any exception fails that (row, loop) for the rest of the run."""
    results = Results()
    sizes = row_sizes(rows, scale)

    def attempt(spec: LoopSpec, row: R, round_no: int) -> Sample | None:
        if (row.key, spec.name) in results.failures:
            return None
        n = sizes[row.key] if round_no else warm_up_size(sizes[row.key])
        try:
            return measure_one(spec, row, n, round_no)
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            record_failure(results, row, spec, f"{type(exc).__name__}: {exc}")
            return None

    run_rounds(rows, specs, rounds, results, attempt)
    return results


def run_counted(
    rows: Sequence[Row], specs: Sequence[LoopSpec], rounds: int, scale: float, timeout: float
) -> Results:
    """`run_sized` for rows the harness times (`measure`)."""
    return run_sized(rows, specs, rounds, scale, functools.partial(measure, timeout=timeout))


def run_windowed(
    rows: Sequence[TimingRow],
    specs: Sequence[LoopSpec],
    rounds: int,
    scale: float,
    timeout: float,
    env: object,
) -> Results:
    """`run_sized` for rows whose workloads time their own window (`measure_window`)."""
    measure_one = functools.partial(measure_window, timeout=timeout, env=env)
    return run_sized(rows, specs, rounds, scale, measure_one)


# --------------------------------------------------------------------------------------------
# Load processes and CPU pinning
# --------------------------------------------------------------------------------------------


@dataclass
class ClientRun:
    """The load client process and, once it has exited, what it said."""

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
    """Start the load client; with `pin`, on its own CPU and with this thread on the other.

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


def pin_cpus(no_pin: bool) -> tuple[int, int] | None:
    """(CPU of the side under test, CPU of the load): the first two usable CPUs, or None with
    --no-pin or fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if not no_pin and len(cpus) >= 2:
        return (cpus[0], cpus[1])
    return None


def pin_note(pin: tuple[int, int] | None, tested: str, load: str) -> str:
    """The header's sentence on CPU placement."""
    if pin:
        return f"{tested} pinned to CPU {pin[0]}, {load} to CPU {pin[1]}."
    return "CPU placement left to the scheduler (--no-pin, or fewer than 2 CPUs)."


def release_binary(name: str) -> Path:
    """target/release/NAME, or the same under $CARGO_TARGET_DIR (crates/ferroloop-bench)."""
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else ROOT / "target"
    return base / "release" / name


def executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def have_binary(path: Path, what: str, advice: str) -> bool:
    """Whether the Rust binary `path` is there; if not, say so and how to build it (stderr)."""
    if executable(path):
        return True
    print(
        f"{what} not found at {path}: build it with `cargo build --release -p ferroloop-bench`"
        + advice,
        file=sys.stderr,
    )
    return False


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def human(rate: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= factor:
            return f"{rate / factor:.3g}{suffix}"
    return f"{rate:.3g}"


def ratio_columns(loop_names: list[str]) -> list[str]:
    if "uvloop" not in loop_names:
        return []
    return [name for name in ("ferroloop", "rloop", "asyncio") if name in loop_names]


def rate_header(names: list[str]) -> tuple[list[str], list[str]]:
    """The header of a table of rates with a column per loop in `names`, then a ratio column
    to uvloop for each other loop (when uvloop is there); and those other loops."""
    ratios = ratio_columns(names)
    return ["row", *names, *(f"{name}÷uvloop" for name in ratios)], ratios


def table(header: list[str], body: Iterable[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def loop_table(
    rows: Iterable[R], specs: Sequence[LoopSpec], cell: Callable[[R, LoopSpec], str]
) -> str:
    """A table with a column per available loop and `cell(row, spec)` in each cell."""
    usable = [spec for spec in specs if spec.available]
    header = ["row", *(spec.name for spec in usable)]
    return table(header, ([row.title, *(cell(row, spec) for spec in usable)] for row in rows))


def cell(results: Results, spec: LoopSpec, row: RowLike, kind: str) -> str:
    if not spec.available:
        return "n/a"
    if (row.key, spec.name) in results.failures:
        return "FAIL"
    value = results.median(row.key, spec.name, kind)
    return human(value) if value is not None else "-"


def markdown_table(
    results: Results, rows: Sequence[RowLike], specs: Sequence[LoopSpec], kind: str
) -> str:
    """Median rates ("wall" or "cpu") per row and loop, with ratio columns to uvloop."""
    header, ratios = rate_header([spec.name for spec in specs])
    body = []
    for row in rows:
        cells = [row.title, *(cell(results, spec, row, kind) for spec in specs)]
        base = results.median(row.key, "uvloop", kind)
        for name in ratios:
            value = results.median(row.key, name, kind)
            failed = (row.key, name) in results.failures or (row.key, "uvloop") in results.failures
            if value is None or base is None or failed:
                cells.append("-")
            else:
                cells.append(f"{value / base:.2f}×")
        body.append(cells)
    return table(header, body)


def spread_table(results: Results, rows: Sequence[RowLike], specs: Sequence[LoopSpec]) -> str:
    """(max - min) / median of the wall rates: how far to trust each cell."""

    def spread(row: RowLike, spec: LoopSpec) -> str:
        rates = results.rates(row.key, spec.name, "wall")
        if len(rates) < 2:
            return "-"
        return f"{(max(rates) - min(rates)) / statistics.median(rates):.0%}"

    return loop_table(rows, specs, spread)


def cpu_view(results: Results) -> Results:
    """The same samples with CPU seconds in place of wall seconds, so that the wall-rate
    spread table shows the spread of the CPU rates (the figure the I/O targets use)."""
    return Results(
        samples=[replace(sample, wall_s=max(sample.cpu_s, 1e-9)) for sample in results.samples],
        failures=results.failures,
    )


def per_request_table(results: Results, rows: Sequence[IoRow], specs: Sequence[LoopSpec]) -> str:
    """Median µs of server CPU per request, as user + system time (getrusage), on the rows that
    run a load client.

    The system part is mostly the kernel's loopback TCP work and wake-ups, much the same for
    every loop; it also moves with where the scheduler puts the client's threads (see README).
    The user part is the loop's own code plus the server's Python code, which is the same on
    every loop."""

    def split(row: IoRow, spec: LoopSpec) -> str:
        if (row.key, spec.name) in results.failures:
            return "FAIL"
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
            return "-"
        user = statistics.median(s.user_s / s.ops for s in samples)  # type: ignore[operator]
        system = statistics.median(s.sys_s / s.ops for s in samples)  # type: ignore[operator]
        return f"{user * 1e6:.2f} + {system * 1e6:.2f}"

    return loop_table([row for row in rows if row.needs_client], specs, split)


def print_rate_tables(
    results: Results,
    rows: Sequence[RowLike],
    specs: Sequence[LoopSpec],
    wall_heading: str,
    cpu_heading: str,
) -> None:
    """The two tables of medians with their ratio columns: per wall second, per CPU second."""
    print(f"\n## {wall_heading}\n")
    print(markdown_table(results, rows, specs, "wall"))
    print(f"\n## {cpu_heading}\n")
    print(markdown_table(results, rows, specs, "cpu"))


def print_spreads(
    results: Results,
    rows: Sequence[RowLike],
    specs: Sequence[LoopSpec],
    rounds: int,
    unit: str,
    cpu: bool = True,
) -> None:
    """The spread tables (with 2 rounds or more): of the wall rates, and with `cpu` of the CPU
    rates too; `unit` names the rates in the headings ("ops/s", "rates", ...)."""
    if rounds < 2:
        return
    print(f"\n## spread of wall {unit} across rounds, (max − min) / median\n")
    print(spread_table(results, rows, specs))
    if cpu:
        print(f"\n## spread of CPU {unit} across rounds, (max − min) / median\n")
        print(spread_table(cpu_view(results), rows, specs))


def uvloop_target_lines(
    results: Results, rows: Sequence[RowLike], goal: float, units: Sequence[tuple[str, str]]
) -> list[str]:
    """A target of the form "ferroloop ≥ `goal` × uvloop" as ratios of this run's medians: a
    line per row and (rate kind, unit name) in `units`, met or NOT met. Rows where either loop
    failed or did not run are left out."""
    lines = []
    for row in rows:
        for kind, unit in units:
            if (row.key, "ferroloop") in results.failures or (
                row.key,
                "uvloop",
            ) in results.failures:
                continue
            ours = results.median(row.key, "ferroloop", kind)
            base = results.median(row.key, "uvloop", kind)
            if ours is None or base is None:
                continue
            value = ours / base
            verdict = "met" if value >= goal else "NOT met"
            lines.append(
                f"- {row.key}: ferroloop ÷ uvloop per {unit} = {value:.2f}× "
                f"(target ≥ {goal:g}×): {verdict}"
            )
    return lines


def print_failures(results: Results, rows: Sequence[RowLike]) -> None:
    """The failures section under the tables, in row order (nothing when all went well)."""
    if not results.failures:
        return
    print("\n## failures (the cell shows FAIL; no number is reported for a wrong result)\n")
    order = {row.key: index for index, row in enumerate(rows)}
    for (row_key, loop_name), error in sorted(
        results.failures.items(), key=lambda item: order[item[0][0]]
    ):
        print(f"- {row_key} on {loop_name}: {error}")


def write_json(
    path: Path,
    info: dict[str, object],
    config: dict[str, object],
    specs: Sequence[LoopSpec],
    rows: Sequence[RowLike],
    results: Results,
    say_where: bool = True,
) -> None:
    """Every raw sample, the medians, the machine and the configuration (see README); then,
    with `say_where`, a line saying where they went."""
    medians = {
        row.key: {
            spec.name: {
                "wall_ops_per_s": results.median(row.key, spec.name, "wall"),
                "cpu_ops_per_s": results.median(row.key, spec.name, "cpu"),
            }
            for spec in specs
            if spec.available
        }
        for row in rows
    }
    document = {
        "machine": info,
        "config": config,
        "unavailable": {spec.name: spec.problem for spec in specs if not spec.available},
        "rows": {row.key: {"title": row.title, "op": row.ops} for row in rows},
        "samples": [
            {**asdict(sample), "wall_ops_per_s": sample.wall_rate, "cpu_ops_per_s": sample.cpu_rate}
            for sample in results.samples
        ],
        "failures": [
            {"row": row, "loop": loop, "error": error}
            for (row, loop), error in results.failures.items()
        ],
        "medians": medians,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if say_where:
        print(f"\nraw samples written to {path}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

SCALE_HELP = "multiply every N (default 1; 0.1 with --quick)"
TIMEOUT_HELP = "seconds one measurement may take before it counts as failed"


def list_rows(rows: Iterable[Any], key_width: int, title_width: int, n_width: int) -> int:
    """--list: each row's key, title, N and what one op is, in columns; the exit status 0."""
    for row in rows:
        print(
            f"{row.key:{key_width}} {row.title:{title_width}} N={row.base_n:<{n_width}} "
            f"op = {row.ops}"
        )
    return 0


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """--loops, --only and --json."""
    parser.add_argument("--loops", help=f"comma-separated subset of {','.join(KNOWN_LOOPS)}")
    parser.add_argument("--only", help="comma-separated row keys (see --list)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every raw sample here")


def add_standard_options(parser: argparse.ArgumentParser, scale_help: str = SCALE_HELP) -> None:
    """--rounds, --scale, --quick, --loops, --only, --json and --timeout, in that order; a
    script adds its own options after them, then `add_list_option`."""
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 2 with --quick)")
    parser.add_argument("--scale", type=float, help=scale_help)
    parser.add_argument("--quick", action="store_true", help="fast smoke run: 2 rounds, small N")
    add_selection_options(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help=TIMEOUT_HELP)


def add_list_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list the rows and exit")


def apply_quick(args: argparse.Namespace) -> None:
    """The defaults of --rounds and --scale: 5 and 1, or 2 and 0.1 with --quick."""
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.scale is None:
        args.scale = 0.1 if args.quick else 1.0


def parse_standard_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, counts: Sequence[str] = ()
) -> argparse.Namespace:
    """Parse the command line of a script with `add_standard_options`: apply the --quick
    defaults, and require --rounds >= 1, --scale > 0 and each option in `counts` (e.g.
    "--connections") >= 1."""
    args = parser.parse_args(argv)
    apply_quick(args)
    too_small = [name for name in counts if getattr(args, name[2:].replace("-", "_")) < 1]
    if args.rounds < 1 or args.scale <= 0 or too_small:
        parser.error(f"{' and '.join(['--rounds', *counts])} must be >= 1 and --scale > 0")
    return args


def select_rows(rows: Sequence[R], only: str | None) -> list[R]:
    """The rows named by --only (comma-separated keys), in their own order; all without it."""
    if not only:
        return list(rows)
    keys = [key.strip() for key in only.split(",") if key.strip()]
    known = {row.key for row in rows}
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise SystemExit(f"unknown row(s): {', '.join(unknown)}; see --list")
    return [row for row in rows if row.key in keys]


def loops_and_machine(loops_option: str | None) -> tuple[list[LoopSpec], dict[str, object]]:
    """The loops named by --loops (all known loops without it), each usable or with the reason
    it is not, and the description of the machine for the header and the JSON."""
    specs = resolve_loops(parse_loop_names(loops_option))
    return specs, machine_info(specs)


def print_header(title: str, info: dict[str, object], intro: str, machine_suffix: str = "") -> None:
    """The top of the output: the title, the machine line, then a paragraph on the method."""
    print(f"# {title}\n")
    print(format_machine_line(info) + machine_suffix)
    print("\n" + intro)


def method_line(args: argparse.Namespace) -> str:
    """The header's sentence on the method, for the scripts with --rounds and --scale."""
    return (
        f"{args.rounds} rounds, interleaved (loop order rotated every round), "
        f"scale {args.scale:g}, fresh loop per measurement; medians over rounds."
    )


def report_unavailable(specs: Sequence[LoopSpec], what: str = "skipped") -> bool:
    """Print each loop that is not available and why; False (and a message) when none is."""
    for spec in specs:
        if not spec.available:
            print(f"{spec.name}: {spec.problem} — {what}")
    if not any(spec.available for spec in specs):
        print("no loop is available; nothing to measure", file=sys.stderr)
        return False
    return True


def run_config(args: argparse.Namespace, rows: Iterable[Any]) -> dict[str, object]:
    """The start of the JSON "config" of the scripts with --rounds, --scale and --timeout."""
    return {
        "rounds": args.rounds,
        "scale": args.scale,
        "timeout_s": args.timeout,
        "sizes": row_sizes(rows, args.scale),
    }


def exit_status(failed: bool, loops_option: str | None, specs: Sequence[LoopSpec]) -> int:
    """0 when everything that ran was correct, 1 when a measurement failed, 2 when a loop named
    in --loops was unavailable."""
    if failed:
        return 1
    explicitly_missing = bool(loops_option) and any(not spec.available for spec in specs)
    return 2 if explicitly_missing else 0
