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
cannot produce a fast number. The machinery (measurement, rounds, tables, JSON, options) lives
in harness.py, which every bench_*.py script shares; this file holds the core workloads and rows.

    python benchmarks/bench_core.py                 # 5 rounds, all rows, all loops
    python benchmarks/bench_core.py --quick         # 2 rounds, small N: a smoke run
    python benchmarks/bench_core.py --only call_soon,sleep0 --loops uvloop,ferroloop --json out.json
    python benchmarks/bench_core.py --instructions  # user-space instructions per op instead

--instructions counts instead of timing: the user-space instructions the process executes per
operation of each row on each loop (the CPU's counter, `instructions.py`; threads the row starts,
such as the threadsafe row's producer, included), as (count at 2N - count at N) / N so that
what a run costs once (starting the loop, a thread) drops out; medians over rounds. Unlike
time, the count hardly moves with the machine's load, so it shows what a loop's own code costs
even where wall-clock ratios swing between runs. It says nothing about cache misses, page
faults or the kernel, which wall time includes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
from pathlib import Path

from harness import (
    LoopSpec,
    Row,
    add_list_option,
    add_standard_options,
    exit_status,
    expect,
    fresh_loop,
    list_rows,
    loops_and_machine,
    method_line,
    parse_standard_args,
    print_failures,
    print_header,
    print_rate_tables,
    print_spreads,
    report_unavailable,
    rotated,
    row_sizes,
    run_config,
    run_counted,
    select_rows,
    table,
    write_json,
)
from instructions import InstructionCounter

Loop = asyncio.AbstractEventLoop


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
# --instructions: user-space instructions per operation instead of time
# --------------------------------------------------------------------------------------------

InstructionCounts = dict[tuple[str, str], list[float]]  # (row key, loop name) -> per op, by round


def counted_run(
    counter: InstructionCounter, spec: LoopSpec, row: Row, n: int, timeout: float
) -> tuple[int, int]:
    """(instructions, ops) of one run of `row` at size `n` on a fresh loop, threads included."""
    with fresh_loop(spec, timeout) as loop:
        threads = counter.threads()
        start = counter.now()
        ops = row.run(loop, n)
        counter.wait_for_threads(threads)
        return counter.now() - start, ops


def count_instructions(
    rows: list[Row], specs: list[LoopSpec], rounds: int, scale: float, timeout: float
) -> tuple[InstructionCounts, dict[tuple[str, str], str]]:
    """Per op, (count at 2N - count at N) / (ops at 2N - ops at N), for every round, row and
    usable loop, loops in rotated order; a (row, loop) that raises is failed and not run again."""
    counter = InstructionCounter(inherit=True)
    sizes = row_sizes(rows, scale)
    counts: InstructionCounts = {}
    failures: dict[tuple[str, str], str] = {}
    usable = [spec for spec in specs if spec.available]
    for round_no in range(1, rounds + 1):
        for row in rows:
            for spec in rotated(usable, round_no):
                key = (row.key, spec.name)
                if key in failures:
                    continue
                n = sizes[row.key]
                try:
                    single, single_ops = counted_run(counter, spec, row, n, timeout)
                    double, double_ops = counted_run(counter, spec, row, 2 * n, timeout)
                except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
                    failures[key] = f"{type(exc).__name__}: {exc}"
                    print(f"  FAILED {row.key} on {spec.name}: {failures[key]}", file=sys.stderr)
                    continue
                counts.setdefault(key, []).append((double - single) / (double_ops - single_ops))
        print(f"round {round_no}/{rounds} counted", file=sys.stderr, flush=True)
    return counts, failures


def instruction_table(counts: InstructionCounts, rows: list[Row], specs: list[LoopSpec]) -> str:
    """Medians per op, and uvloop's count over each loop's (above 1: fewer than uvloop)."""
    names = [spec.name for spec in specs if spec.available]
    others = [name for name in names if name != "uvloop"] if "uvloop" in names else []
    header = ["row", *names, *(f"uvloop÷{name}" for name in others)]
    body = []
    for row in rows:
        medians = {
            name: statistics.median(counts[(row.key, name)])
            for name in names
            if (row.key, name) in counts
        }
        cells = [f"{medians[name]:,.0f}" if name in medians else "FAIL" for name in names]
        ratios = [
            f"{medians['uvloop'] / medians[name]:.2f}×"
            if "uvloop" in medians and name in medians
            else "—"
            for name in others
        ]
        body.append([row.title, *cells, *ratios])
    return table(header, body)


def run_instructions(args: argparse.Namespace, rows: list[Row]) -> int:
    specs, info = loops_and_machine(args.loops)
    print_header(
        "ferroloop core benchmarks: user-space instructions per operation",
        info,
        f"{args.rounds} rounds, scale {args.scale:g}, fresh loop per measurement; per op = "
        "(count at 2N - count at N) / N, threads included; medians over rounds.",
    )
    if not report_unavailable(specs):
        return 2
    counts, failures = count_instructions(rows, specs, args.rounds, args.scale, args.timeout)
    print("\n## user-space instructions per op (median)\n")
    print(instruction_table(counts, rows, specs))
    for (row, loop), error in failures.items():
        print(f"\nFAILED {row} on {loop}: {error}")
    if args.json:
        document = {
            "machine": info,
            "config": {**run_config(args, rows), "measure": "user-space instructions per op"},
            "rows": {row.key: {"title": row.title, "op": row.ops} for row in rows},
            "instructions_per_op": {
                row.key: {loop: values for (key, loop), values in counts.items() if key == row.key}
                for row in rows
            },
            "failures": [
                {"row": row, "loop": loop, "error": error} for (row, loop), error in failures.items()
            ],
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"\nper-round counts written to {path}")
    return exit_status(bool(failures), args.loops, specs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved core benchmarks: asyncio vs uvloop vs rloop vs ferroloop.",
    )
    add_standard_options(parser)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count user-space instructions per op instead of timing (see the module docstring)",
    )
    add_list_option(parser)
    return parse_standard_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_rows(ROWS, 18, 32, 8)
    rows = select_rows(ROWS, args.only)
    if args.instructions:
        return run_instructions(args, rows)

    specs, info = loops_and_machine(args.loops)
    print_header("ferroloop core benchmarks", info, method_line(args))
    if not report_unavailable(specs):
        return 2

    results = run_counted(rows, specs, args.rounds, args.scale, args.timeout)

    print_rate_tables(
        results,
        rows,
        specs,
        "ops per wall second (median)",
        "ops per CPU second of the process (time.process_time, median)",
    )
    print_spreads(results, rows, specs, args.rounds, "ops/s", cpu=False)
    print_failures(results, rows)

    if args.json:
        write_json(args.json, info, run_config(args, rows), specs, rows, results)

    return exit_status(bool(results.failures), args.loops, specs)


if __name__ == "__main__":
    sys.exit(main())
