"""Side-by-side benchmarks of subprocesses and pipes (issue 8): asyncio, uvloop, rloop, ferroloop.

Issue 8 asks for two numbers beside uvloop: how many trivial processes a loop can start and
collect per second (spawn + communicate), and how fast bytes cross a pipe. This script measures
them in the style of bench_core.py, and reuses its measurement record, timing, spread table and
JSON writer: all loops in one process, R interleaved rounds with the loop order rotated every
round, a fresh loop per measurement, medians, ratios to uvloop, and a correctness check in every
workload, so a broken loop never produces a fast number.

Rows:

- ``spawn_true``: ``create_subprocess_exec('/bin/true')`` then ``wait()``, one process at a
  time: the latency of starting a process, noticing its exit and reaping it.
- ``spawn_echo``: ``create_subprocess_exec('/bin/echo', i, stdout=PIPE)`` then
  ``communicate()``, 16 in flight: the same plus a pipe per process, under concurrency.
- ``pipe_loop``: 128 MiB from a write-pipe transport to a read-pipe transport over one
  ``os.pipe()``, both on the loop under test (64 KiB writes, paced by the writer's flow
  control): the loop's and the transports' cost per byte, no other process involved.
- ``pipe_loop_1k``: the same with 1 KiB writes (64 MiB): the per-write cost of the write
  transport, which batches what the pipe refuses, and the read transport's per-read cost.
- ``pipe_stdout``: 256 MiB of a child's stdout (``head -c``), read with ``communicate()``.

Most of a spawn is the kernel's and ``subprocess.Popen``'s (fork/exec, closing descriptors),
which every loop pays the same way except uvloop (libuv spawns without Popen), so the spawn
rows compare loops' overheads on top of a large fixed cost. A loop lacking a feature shows
``n/a`` and the reason under the table.

    python benchmarks/bench_proc.py                 # 5 rounds, all rows, all loops
    python benchmarks/bench_proc.py --quick         # 2 rounds, small N: a smoke run
    python benchmarks/bench_proc.py --only pipe_loop --loops uvloop,ferroloop --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from bench_core import (
    Results,
    Row,
    expect,
    human,
    measure,
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
PIPE = asyncio.subprocess.PIPE

SPAWN_CONCURRENCY = 16
PIPE_CHUNK = 64 * 1024
MIB = 1024 * 1024


class Unsupported(Exception):
    """The loop does not implement what the row needs (shown as n/a, not as a failure)."""


def _run(loop: Loop, coro) -> object:
    try:
        return loop.run_until_complete(coro)
    except NotImplementedError as exc:
        raise Unsupported(str(exc) or "NotImplementedError") from exc


# --------------------------------------------------------------------------------------------
# Workloads: fresh loop, size n; each checks its own result and returns its number of ops.
# --------------------------------------------------------------------------------------------


def spawn_true(loop: Loop, n: int) -> int:
    async def main() -> list[int]:
        codes = []
        for _ in range(n):
            proc = await asyncio.create_subprocess_exec("/bin/true")
            codes.append(await proc.wait())
        return codes

    codes = _run(loop, main())
    expect(codes == [0] * n, f"exit codes {sorted(set(codes))!r}, expected all 0")
    return n


def spawn_echo(loop: Loop, n: int) -> int:
    async def one(i: int) -> bytes:
        proc = await asyncio.create_subprocess_exec("/bin/echo", str(i), stdout=PIPE)
        out, _ = await proc.communicate()
        expect(proc.returncode == 0, f"echo exited with {proc.returncode}")
        return out

    async def main() -> list[bytes]:
        sem = asyncio.Semaphore(SPAWN_CONCURRENCY)

        async def bounded(i: int) -> bytes:
            async with sem:
                return await one(i)

        return await asyncio.gather(*(bounded(i) for i in range(n)))

    outs = _run(loop, main())
    expect(outs == [f"{i}\n".encode() for i in range(n)], "wrong or misrouted echo output")
    return n


class _Sink(asyncio.Protocol):
    def __init__(self, done: asyncio.Future) -> None:
        self.received = 0
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


class _Source(asyncio.BaseProtocol):
    def __init__(self, loop: Loop) -> None:
        self.resumed = loop.create_future()
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True
        self.resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.paused = False
        if not self.resumed.done():
            self.resumed.set_result(None)


def pipe_loop(loop: Loop, n_mib: int, chunk_size: int = PIPE_CHUNK) -> int:
    """n_mib MiB through one pipe in writes of chunk_size bytes; ops are MiB."""
    total = n_mib * MIB
    chunk = b"\xa5" * chunk_size

    async def main() -> int:
        r, w = os.pipe()
        done = loop.create_future()
        rtr, sink = await loop.connect_read_pipe(lambda: _Sink(done), os.fdopen(r, "rb", 0))
        wtr, source = await loop.connect_write_pipe(lambda: _Source(loop), os.fdopen(w, "wb", 0))
        sent = 0
        while sent < total:
            wtr.write(chunk)
            sent += len(chunk)
            if source.paused:
                await source.resumed
        wtr.close()
        exc = await done
        expect(exc is None, f"read side ended with {exc!r}")
        rtr.close()
        return sink.received

    received = _run(loop, main())
    expect(received == total, f"received {received} bytes, expected {total}")
    return n_mib


def pipe_loop_1k(loop: Loop, n_mib: int) -> int:
    return pipe_loop(loop, n_mib, 1024)


def pipe_stdout(loop: Loop, n_mib: int) -> int:
    """n_mib MiB of a child's stdout through communicate(); ops are MiB."""

    async def main() -> tuple[int, int, int]:
        proc = await asyncio.create_subprocess_exec(
            "head", "-c", str(n_mib * MIB), "/dev/zero", stdout=PIPE)
        out, _ = await proc.communicate()
        return len(out), out.count(0), proc.returncode

    size, zeros, code = _run(loop, main())
    expect(code == 0 and size == zeros == n_mib * MIB, f"got {size} bytes, exit {code}")
    return n_mib


ROWS: tuple[Row, ...] = (
    Row("spawn_true", "spawn + wait, /bin/true, 1 at a time", spawn_true, 300,
        "create_subprocess_exec('/bin/true') + wait()"),
    Row("spawn_echo", f"spawn + communicate, /bin/echo, {SPAWN_CONCURRENCY} in flight",
        spawn_echo, 400, "create_subprocess_exec('/bin/echo', stdout=PIPE) + communicate()"),
    Row("pipe_loop", "pipe throughput, loop to loop (MiB/s)", pipe_loop, 512,
        "one MiB from connect_write_pipe to connect_read_pipe over os.pipe()"),
    Row("pipe_loop_1k", "pipe throughput, loop to loop, 1 KiB writes (MiB/s)", pipe_loop_1k, 64,
        "one MiB from connect_write_pipe to connect_read_pipe, in 1 KiB writes"),
    Row("pipe_stdout", "child stdout throughput (MiB/s)", pipe_stdout, 256,
        "one MiB of `head -c N /dev/zero` read by communicate()"),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


# --------------------------------------------------------------------------------------------
# Running and reporting (bench_core's measurement; n/a for unsupported features)
# --------------------------------------------------------------------------------------------


def run_benchmarks(
    rows: list[Row], specs: list[LoopSpec], rounds: int, scale: float, timeout: float
) -> tuple[Results, dict[tuple[str, str], str]]:
    results = Results()
    unsupported: dict[tuple[str, str], str] = {}
    usable = [spec for spec in specs if spec.available]
    sizes = {row.key: max(1, round(row.base_n * scale)) for row in rows}

    def attempt(spec: LoopSpec, row: Row, n: int, round_no: int) -> None:
        key = (row.key, spec.name)
        if key in results.failures or key in unsupported:
            return
        try:
            sample = measure(spec, row, n, round_no, timeout)
        except Unsupported as exc:
            unsupported[key] = str(exc)
            print(f"  n/a {row.key} on {spec.name}: {exc}", file=sys.stderr)
            return
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            results.failures[key] = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED {row.key} on {spec.name}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return
        if round_no:
            results.samples.append(sample)

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
                attempt(spec, row, sizes[row.key], round_no)
        print(f"round {round_no}/{rounds} done in {time.perf_counter() - started:.1f} s "
              f"(order: {', '.join(spec.name for spec in order)})", file=sys.stderr, flush=True)
    return results, unsupported


def markdown_table(
    results: Results, unsupported: dict[tuple[str, str], str], rows: list[Row],
    specs: list[LoopSpec], kind: str,
) -> str:
    names = [spec.name for spec in specs]
    ratios = [n for n in ("ferroloop", "rloop", "asyncio") if n in names] if "uvloop" in names \
        else []
    header = ["row", *names, *(f"{name}÷uvloop" for name in ratios)]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for row in rows:
        cells = [row.title]
        for spec in specs:
            key = (row.key, spec.name)
            if not spec.available or key in unsupported:
                cells.append("n/a")
            elif key in results.failures:
                cells.append("FAIL")
            else:
                value = results.median(row.key, spec.name, kind)
                cells.append(human(value) if value is not None else "-")
        base = results.median(row.key, "uvloop", kind)
        for name in ratios:
            value = results.median(row.key, name, kind)
            cells.append("-" if value is None or not base else f"{value / base:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved subprocess and pipe benchmarks: asyncio vs uvloop vs rloop "
        "vs ferroloop.")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 2 with --quick)")
    parser.add_argument("--scale", type=float, help="multiply every N (default 1; 0.1 --quick)")
    parser.add_argument("--quick", action="store_true", help="fast smoke run: 2 rounds, small N")
    parser.add_argument("--loops", help=f"comma-separated subset of {','.join(KNOWN_LOOPS)}")
    parser.add_argument("--only", help="comma-separated row keys (see --list)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every raw sample here")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds one measurement may take before it counts as failed")
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
            print(f"{row.key:12} {row.title:52} N={row.base_n:<6} op = {row.ops}")
        return 0
    rows = list(ROWS)
    if args.only:
        keys = [key.strip() for key in args.only.split(",") if key.strip()]
        unknown = [key for key in keys if key not in ROWS_BY_KEY]
        if unknown:
            raise SystemExit(f"unknown row(s): {', '.join(unknown)}; see --list")
        rows = [row for row in ROWS if row.key in keys]

    specs = resolve_loops(parse_loop_names(args.loops))
    info = machine_info(specs)
    print("# ferroloop subprocess and pipe benchmarks\n")
    print(format_machine_line(info))
    print(f"\n{args.rounds} rounds, interleaved (loop order rotated every round), "
          f"scale {args.scale:g}, fresh loop per measurement; medians over rounds.")
    for spec in specs:
        if not spec.available:
            print(f"{spec.name}: {spec.problem} — skipped")
    if not any(spec.available for spec in specs):
        print("no loop is available; nothing to measure", file=sys.stderr)
        return 2

    results, unsupported = run_benchmarks(rows, specs, args.rounds, args.scale, args.timeout)

    print("\n## ops per wall second (median; the pipe rows count MiB)\n")
    print(markdown_table(results, unsupported, rows, specs, "wall"))
    print("\n## ops per CPU second of this process (time.process_time, median)\n")
    print(markdown_table(results, unsupported, rows, specs, "cpu"))
    if args.rounds >= 2:
        print("\n## spread of wall ops/s across rounds, (max − min) / median\n")
        print(spread_table(results, rows, specs))
    if unsupported:
        print("\n## n/a: features a loop does not implement\n")
        for (row_key, loop_name), reason in unsupported.items():
            print(f"- {row_key} on {loop_name}: {reason}")
    if results.failures:
        print("\n## failures (the cell shows FAIL; no number is reported for a wrong result)\n")
        for (row_key, loop_name), error in results.failures.items():
            print(f"- {row_key} on {loop_name}: {error}")
    if args.json:
        config = {
            "rounds": args.rounds, "scale": args.scale, "timeout_s": args.timeout,
            "sizes": {row.key: max(1, round(row.base_n * args.scale)) for row in rows},
            "unsupported": [{"row": r, "loop": lp, "reason": why}
                            for (r, lp), why in unsupported.items()],
        }
        write_json(args.json, info, config, specs, rows, results)
        print(f"\nraw samples written to {args.json}")
    explicitly_missing = bool(args.loops) and any(not spec.available for spec in specs)
    if results.failures:
        return 1
    return 2 if explicitly_missing else 0


if __name__ == "__main__":
    sys.exit(main())
