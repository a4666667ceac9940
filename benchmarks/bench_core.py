"""Side-by-side micro-benchmarks of the loop core: asyncio, uvloop, rloop and ferroloop.

ferroloop's promise is that scheduling (callbacks, timers, tasks, futures) is faster than uvloop's
and never slower than rloop's (issue 2 lists the target ratios). This script is how that promise
is checked: it runs the same small workloads on every loop in one process, interleaved, and prints
medians and ratios to uvloop, per wall second and per CPU second. Numbers from separate runs on a
noisy machine are not comparable; numbers from one interleaved run are.

Methodology (details in benchmarks/README.md): R rounds; in each round every row runs once on every
loop, with the loop order rotated each round; each measurement gets a fresh loop, closed
afterwards, and a gc.collect() (then gc.freeze()) before it; the median over rounds is reported.
Every workload checks its own result (counts, sums) and raises if it is wrong, so a broken loop
cannot produce a fast number.

    python benchmarks/bench_core.py                 # 5 rounds, all rows, all loops
    python benchmarks/bench_core.py --quick         # 2 rounds, small N: a smoke run
    python benchmarks/bench_core.py --only call_soon,sleep0 --loops uvloop,ferroloop --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loop_registry import (
    KNOWN_LOOPS,
    LoopSpec,
    format_machine_line,
    machine_info,
    parse_loop_names,
    resolve_loops,
)

Loop = asyncio.AbstractEventLoop


class CheckFailed(Exception):
    """A workload's result is wrong: the loop dropped, duplicated or misrouted work."""


def expect(condition: bool, message: str) -> None:
    # Not `assert`: the guard must survive `python -O`.
    if not condition:
        raise CheckFailed(message)


def drain(loop: Loop) -> None:
    """Run one more loop iteration, so that work a broken loop duplicated (still queued when the
    workload stopped the loop) runs now and shows up in the workload's count."""
    loop.call_soon(loop.stop)
    loop.run_forever()


# --------------------------------------------------------------------------------------------
# Workloads. Each takes a fresh loop and a size n, runs to completion, checks its own result and
# returns the number of operations it performed (what "ops" means is in the row's description).
# --------------------------------------------------------------------------------------------


def call_soon_chain(loop: Loop, n: int) -> int:
    ran = 0

    def step() -> None:
        nonlocal ran
        ran += 1
        if ran < n:
            loop.call_soon(step)
        else:
            loop.stop()

    loop.call_soon(step)
    loop.run_forever()
    drain(loop)
    expect(ran == n, f"chain ran {ran} callbacks, expected {n}")
    return n


def call_soon_args(loop: Loop, n: int) -> int:
    finished: list[tuple[int, str, float]] = []

    def step(i: int, b: str, c: float) -> None:
        if i < n:
            loop.call_soon(step, i + 1, b, c)
        else:
            finished.append((i, b, c))
            loop.stop()

    loop.call_soon(step, 1, "b", 2.5)
    loop.run_forever()
    drain(loop)
    expect(finished == [(n, "b", 2.5)], f"chain with args ended with {finished}, expected n={n}")
    return n


def call_soon_threadsafe(loop: Loop, n: int) -> int:
    ran = 0

    def tick() -> None:
        nonlocal ran
        ran += 1
        if ran == n:
            loop.stop()

    def produce() -> None:
        schedule = loop.call_soon_threadsafe
        try:
            for _ in range(n):
                schedule(tick)
        except RuntimeError:
            pass  # the loop was closed under us (watchdog fired); the count check reports it

    producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
    loop.call_soon(producer.start)
    loop.run_forever()
    producer.join(timeout=5.0)
    drain(loop)
    expect(not producer.is_alive(), "producer thread still running after the loop stopped")
    expect(ran == n, f"ran {ran} threadsafe callbacks, expected {n}")
    return n


def call_later_cancel(loop: Loop, n: int) -> int:
    fired = 0
    last: list[asyncio.TimerHandle] = []

    def never() -> None:
        nonlocal fired
        fired += 1

    def burst() -> None:
        call_later = loop.call_later
        handle = None
        for _ in range(n):
            handle = call_later(10.0, never)
            handle.cancel()
        assert handle is not None
        last.append(handle)
        # Stop one iteration later, so the time includes a full loop iteration with n cancelled
        # timers in the heap (where asyncio compacts them away).
        loop.call_soon(loop.stop)

    loop.call_soon(burst)
    loop.run_forever()
    expect(len(last) == 1 and last[0].cancelled(), "last timer handle is not cancelled")
    expect(fired == 0, f"{fired} cancelled timers fired")
    return n


TIMER_SLOTS = 50  # timers are spread over 0 .. (TIMER_SLOTS - 1) * TIMER_SLOT_SECONDS
TIMER_SLOT_SECONDS = 1e-4


def timers_fire(loop: Loop, n: int) -> int:
    fired = 0
    index_sum = 0

    def fire(i: int) -> None:
        nonlocal fired, index_sum
        fired += 1
        index_sum += i
        if fired == n:
            loop.stop()

    def arm() -> None:
        call_later = loop.call_later
        for i in range(n):
            call_later((i % TIMER_SLOTS) * TIMER_SLOT_SECONDS, fire, i)

    loop.call_soon(arm)
    loop.run_forever()
    drain(loop)
    expect(fired == n, f"{fired} timers fired, expected {n}")
    expect(index_sum == n * (n - 1) // 2, "timers fired with wrong arguments or more than once")
    return n


def sleep0(loop: Loop, n: int) -> int:
    async def spin() -> int:
        sleep = asyncio.sleep
        done = 0
        for _ in range(n):
            await sleep(0)
            done += 1
        return done

    done = loop.run_until_complete(spin())
    expect(done == n, f"{done} sleep(0) iterations, expected {n}")
    return n


TASK_BATCH = 10_000


def tasks_gather(loop: Loop, batches: int) -> int:
    async def answer(i: int) -> int:
        return i

    async def run_batches() -> int:
        total = 0
        for _ in range(batches):
            tasks = [loop.create_task(answer(i)) for i in range(TASK_BATCH)]
            results = await asyncio.gather(*tasks)
            total += sum(results)
        return total

    total = loop.run_until_complete(run_batches())
    expected = batches * (TASK_BATCH * (TASK_BATCH - 1) // 2)
    expect(total == expected, f"gathered results sum to {total}, expected {expected}")
    return batches * TASK_BATCH


def futures(loop: Loop, n: int) -> int:
    async def round_trips() -> int:
        create_future = loop.create_future
        call_soon = loop.call_soon
        total = 0
        for i in range(n):
            fut = create_future()
            call_soon(fut.set_result, i)
            total += await fut
        return total

    total = loop.run_until_complete(round_trips())
    expect(total == n * (n - 1) // 2, f"future results sum to {total}, expected {n * (n - 1) // 2}")
    return n


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    run: Callable[[Loop, int], int]
    base_n: int  # sized so one measurement takes roughly 0.1-0.5 s on stock asyncio
    ops: str  # what one op is


ROWS: tuple[Row, ...] = (
    Row(
        "call_soon",
        "call_soon chain",
        call_soon_chain,
        200_000,
        "one callback that re-schedules itself with call_soon",
    ),
    Row(
        "call_soon_args",
        "call_soon with 3 args",
        call_soon_args,
        200_000,
        "one cb(a, b, c) that re-schedules itself with 3 args",
    ),
    Row(
        "threadsafe",
        "call_soon_threadsafe (thread)",
        call_soon_threadsafe,
        100_000,
        "one call_soon_threadsafe from a producer thread, run by the loop",
    ),
    Row(
        "call_later_cancel",
        "call_later schedule+cancel",
        call_later_cancel,
        200_000,
        "loop.call_later(10, cb).cancel() in one callback",
    ),
    Row(
        "timers_fire",
        "short timers that fire",
        timers_fire,
        100_000,
        "a call_later(0..4.9 ms) timer that fires",
    ),
    Row(
        "sleep0",
        "sleep(0) iterations",
        sleep0,
        100_000,
        "one `await asyncio.sleep(0)` in a single coroutine",
    ),
    Row(
        "tasks_gather",
        "10k create_task + gather",
        tasks_gather,
        6,
        f"one task (of batches of {TASK_BATCH} create_task + gather, trivial coroutines)",
    ),
    Row(
        "futures",
        "future create/set/await",
        futures,
        100_000,
        "create_future + call_soon(fut.set_result) + await fut",
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


# --------------------------------------------------------------------------------------------
# Measurement
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


class MeasurementTimeout(Exception):
    pass


def measure(spec: LoopSpec, row: Row, n: int, round_no: int, timeout: float) -> Sample:
    """Run `row` once on a fresh loop from `spec`, bounded by `timeout` seconds."""
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
        wall0, cpu0 = time.perf_counter(), time.process_time()
        try:
            ops = row.run(loop, n)
        except Exception as exc:
            if timed_out.is_set():
                raise MeasurementTimeout(f"did not finish within {timeout:g} s") from exc
            raise
        wall1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        watchdog.cancel()
        faulthandler.cancel_dump_traceback_later()
        gc.unfreeze()
        if not loop.is_running():
            loop.close()
    return Sample(row.key, spec.name, round_no, n, ops, wall1 - wall0, cpu1 - cpu0)


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


def run_benchmarks(
    rows: list[Row], specs: list[LoopSpec], rounds: int, scale: float, timeout: float
) -> Results:
    results = Results()
    usable = [spec for spec in specs if spec.available]
    sizes = {row.key: max(1, round(row.base_n * scale)) for row in rows}

    def attempt(spec: LoopSpec, row: Row, n: int, round_no: int) -> Sample | None:
        if (row.key, spec.name) in results.failures:
            return None
        try:
            return measure(spec, row, n, round_no, timeout)
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            results.failures[(row.key, spec.name)] = f"{type(exc).__name__}: {exc}"
            print(
                f"  FAILED {row.key} on {spec.name}: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            return None

    # Warm-up: one small unrecorded run of every (row, loop), which also finds broken pairs early.
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


def human(rate: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= factor:
            return f"{rate / factor:.3g}{suffix}"
    return f"{rate:.3g}"


def ratio_columns(loop_names: list[str]) -> list[str]:
    if "uvloop" not in loop_names:
        return []
    return [name for name in ("ferroloop", "rloop", "asyncio") if name in loop_names]


def cell(results: Results, spec: LoopSpec, row: Row, kind: str) -> str:
    if not spec.available:
        return "n/a"
    if (row.key, spec.name) in results.failures:
        return "FAIL"
    value = results.median(row.key, spec.name, kind)
    return human(value) if value is not None else "-"


def markdown_table(results: Results, rows: list[Row], specs: list[LoopSpec], kind: str) -> str:
    names = [spec.name for spec in specs]
    ratios = ratio_columns(names)
    header = ["row", *names, *(f"{name}÷uvloop" for name in ratios)]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(results: Results, rows: list[Row], specs: list[LoopSpec]) -> str:
    """(max - min) / median of the wall rates: how far to trust each cell."""
    usable = [spec for spec in specs if spec.available]
    lines = [
        "| row | " + " | ".join(spec.name for spec in usable) + " |",
        "| --- |" + " ---: |" * len(usable),
    ]
    for row in rows:
        cells = [row.title]
        for spec in usable:
            rates = results.rates(row.key, spec.name, "wall")
            if len(rates) < 2:
                cells.append("-")
            else:
                cells.append(f"{(max(rates) - min(rates)) / statistics.median(rates):.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(
    path: Path,
    info: dict[str, object],
    config: dict[str, object],
    specs: list[LoopSpec],
    rows: list[Row],
    results: Results,
) -> None:
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved core benchmarks: asyncio vs uvloop vs rloop vs ferroloop.",
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
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.scale is None:
        args.scale = 0.1 if args.quick else 1.0
    if args.rounds < 1 or args.scale <= 0:
        parser.error("--rounds must be >= 1 and --scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for row in ROWS:
            print(f"{row.key:18} {row.title:32} N={row.base_n:<8} op = {row.ops}")
        return 0
    if args.only:
        keys = [key.strip() for key in args.only.split(",") if key.strip()]
        unknown = [key for key in keys if key not in ROWS_BY_KEY]
        if unknown:
            raise SystemExit(f"unknown row(s): {', '.join(unknown)}; see --list")
        rows = [row for row in ROWS if row.key in keys]
    else:
        rows = list(ROWS)

    specs = resolve_loops(parse_loop_names(args.loops))
    info = machine_info(specs)
    print("# ferroloop core benchmarks\n")
    print(format_machine_line(info))
    print(
        f"\n{args.rounds} rounds, interleaved (loop order rotated every round), "
        f"scale {args.scale:g}, fresh loop per measurement; medians over rounds."
    )
    for spec in specs:
        if not spec.available:
            print(f"{spec.name}: {spec.problem} — skipped")
    if not any(spec.available for spec in specs):
        print("no loop is available; nothing to measure", file=sys.stderr)
        return 2

    results = run_benchmarks(rows, specs, args.rounds, args.scale, args.timeout)

    print("\n## ops per wall second (median)\n")
    print(markdown_table(results, rows, specs, "wall"))
    print("\n## ops per CPU second of the process (time.process_time, median)\n")
    print(markdown_table(results, rows, specs, "cpu"))
    if args.rounds >= 2:
        print("\n## spread of wall ops/s across rounds, (max − min) / median\n")
        print(spread_table(results, rows, specs))
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
        }
        write_json(args.json, info, config, specs, rows, results)
        print(f"\nraw samples written to {args.json}")

    explicitly_missing = bool(args.loops) and any(not spec.available for spec in specs)
    if results.failures:
        return 1
    return 2 if explicitly_missing else 0


if __name__ == "__main__":
    sys.exit(main())
