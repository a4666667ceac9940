"""Side-by-side benchmarks of subprocesses and pipes (issue 8): asyncio, uvloop, rloop, ferroloop.

Issue 8 asks for two numbers beside uvloop: how many trivial processes a loop can start and
collect per second (spawn + communicate), and how fast bytes cross a pipe. This script measures
them in the style of bench_core.py, with its measurement (harness.measure), spread table and
JSON writer, from harness.py: all loops in one process, R interleaved rounds with the loop order
rotated every round, a fresh loop per measurement, medians, ratios to uvloop, and a correctness
check in every workload, so a broken loop never produces a fast number.

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

from harness import (
    Results,
    Row,
    Sample,
    add_list_option,
    add_standard_options,
    exit_status,
    expect,
    human,
    list_rows,
    loops_and_machine,
    measure,
    method_line,
    parse_standard_args,
    print_header,
    print_spreads,
    rate_header,
    record_failure,
    report_unavailable,
    row_sizes,
    run_config,
    run_rounds,
    select_rows,
    table,
    warm_up_size,
    write_json,
)
from loop_registry import (
    LoopSpec,
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
# Running and reporting (harness.measure, as bench_core; n/a for unsupported features)
# --------------------------------------------------------------------------------------------


def run_benchmarks(
    rows: list[Row], specs: list[LoopSpec], rounds: int, scale: float, timeout: float
) -> tuple[Results, dict[tuple[str, str], str]]:
    results = Results()
    unsupported: dict[tuple[str, str], str] = {}
    sizes = row_sizes(rows, scale)

    def attempt(spec: LoopSpec, row: Row, round_no: int) -> Sample | None:
        key = (row.key, spec.name)
        if key in results.failures or key in unsupported:
            return None
        n = sizes[row.key] if round_no else warm_up_size(sizes[row.key])
        try:
            return measure(spec, row, n, round_no, timeout)
        except Unsupported as exc:
            unsupported[key] = str(exc)
            print(f"  n/a {row.key} on {spec.name}: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
            record_failure(results, row, spec, f"{type(exc).__name__}: {exc}")
        return None

    run_rounds(rows, specs, rounds, results, attempt)
    return results, unsupported


def markdown_table(
    results: Results, unsupported: dict[tuple[str, str], str], rows: list[Row],
    specs: list[LoopSpec], kind: str,
) -> str:
    header, ratios = rate_header([spec.name for spec in specs])
    body = []
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
        body.append(cells)
    return table(header, body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved subprocess and pipe benchmarks: asyncio vs uvloop vs rloop "
        "vs ferroloop.")
    add_standard_options(parser, scale_help="multiply every N (default 1; 0.1 --quick)")
    add_list_option(parser)
    return parse_standard_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_rows(ROWS, 12, 52, 6)
    rows = select_rows(ROWS, args.only)

    specs, info = loops_and_machine(args.loops)
    print_header("ferroloop subprocess and pipe benchmarks", info, method_line(args))
    if not report_unavailable(specs):
        return 2

    results, unsupported = run_benchmarks(rows, specs, args.rounds, args.scale, args.timeout)

    print("\n## ops per wall second (median; the pipe rows count MiB)\n")
    print(markdown_table(results, unsupported, rows, specs, "wall"))
    print("\n## ops per CPU second of this process (time.process_time, median)\n")
    print(markdown_table(results, unsupported, rows, specs, "cpu"))
    print_spreads(results, rows, specs, args.rounds, "ops/s", cpu=False)
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
            **run_config(args, rows),
            "unsupported": [{"row": r, "loop": lp, "reason": why}
                            for (r, lp), why in unsupported.items()],
        }
        write_json(args.json, info, config, specs, rows, results)
    return exit_status(bool(results.failures), args.loops, specs)


if __name__ == "__main__":
    sys.exit(main())
