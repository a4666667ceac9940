"""The main job: a realistic asyncio program run on stock asyncio, uvloop and ferroloop.

Micro-benchmarks (bench_core.py) say how fast each loop schedules; this says whether a real
program built from the usual asyncio parts produces exactly the same answer on ferroloop as on
stock asyncio, and how long it takes. It is the project's demo: `scripts/demo.sh` runs it.

The job is a small ingestion pipeline:

    producers --(asyncio.Queue, bounded: back-pressure)--> worker pool --> results
                                                            |
      per item: single-flight cache (Lock + Event)    ------+
                rate-limited downstream call (Semaphore, asyncio.timeout) over a pool of
                  keep-alive TCP connections to a line-protocol service on 127.0.0.1
                  (asyncio streams: start_server, open_connection, readline, drain)
                fan-out to shards (TaskGroup), each checking the request's contextvar
                a callback scheduled with call_soon that must see the same contextvar
                every Nth item: blocking hashing in the default executor (run_in_executor)
                every Mth item: a call to a stalled dependency, abandoned by wait_for (timeout)
      beside it: a monitor task ticking on a 1 ms sleep, stopped through an Event

Every item's value is a pure function of the item, and the invariants (one cache fill per key,
one timeout per stalled call, contextvars seen where they were set) are checked, so the final
checksum is identical on any correct loop. The script runs the loops interleaved for a few rounds,
checks the checksums agree and prints the median wall time and the ratio to asyncio.

    python benchmarks/main_job.py                     # asyncio, uvloop (if installed), ferroloop
    python benchmarks/main_job.py --rounds 5 --loops asyncio,ferroloop --scale 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import faulthandler
import gc
import hashlib
import statistics
import sys
import time
from dataclasses import dataclass, field

from harness import rotated
from loop_registry import (
    LoopSpec,
    format_machine_line,
    machine_info,
    parse_loop_names,
    resolve_loops,
)

RUN_TIMEOUT = 30.0  # seconds one run of the job may take before it counts as failed

REQUEST_ID: contextvars.ContextVar[int] = contextvars.ContextVar("request_id", default=-1)

MASK64 = (1 << 64) - 1


def mix(*values: int) -> int:
    """A small deterministic 64-bit mixer (FNV-1a over the values' 64-bit words)."""
    acc = 0xCBF29CE484222325
    for value in values:
        acc = ((acc ^ (value & MASK64)) * 0x100000001B3) & MASK64
        acc ^= acc >> 29
    return acc


@dataclass(frozen=True)
class JobConfig:
    producers: int = 4
    items_per_producer: int = 4000
    workers: int = 24
    queue_size: int = 64
    distinct_keys: int = 400  # keys of the single-flight cache
    downstream_limit: int = 8  # Semaphore: concurrent "downstream calls"
    shards: int = 3  # TaskGroup fan-out per item
    blocking_every: int = 40  # every Nth item hashes in the executor
    blocking_rounds: int = 200
    stalled_every: int = 97  # every Mth item calls a dependency that never answers
    stall_timeout: float = 0.002

    @property
    def items(self) -> int:
        return self.producers * self.items_per_producer


@dataclass(frozen=True)
class Item:
    id: int
    key: int
    payload: int


@dataclass
class JobReport:
    checksum: str
    items: int
    cache_fills: int
    cache_waits: int
    timeouts: int
    executor_calls: int
    monitor_ticks: int  # timing-dependent: shown, not part of the checksum
    max_queue_depth: int  # timing-dependent too


class InvariantBroken(Exception):
    """The loop ran the job but the job's own invariants do not hold."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantBroken(message)


class SingleFlightCache:
    """Computes each key's value once; concurrent requests for a key in flight wait for it."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._values: dict[int, int] = {}
        self._in_flight: dict[int, asyncio.Event] = {}
        self.fills = 0
        self.waits = 0

    async def get(self, key: int) -> int:
        async with self._lock:
            if key in self._values:
                return self._values[key]
            event = self._in_flight.get(key)
            owner = event is None
            if owner:
                event = asyncio.Event()
                self._in_flight[key] = event
        assert event is not None
        if not owner:
            self.waits += 1
            await event.wait()
            return self._values[key]
        value = await self._fill(key)
        async with self._lock:
            self._values[key] = value
            del self._in_flight[key]
            self.fills += 1
        event.set()
        return value

    @staticmethod
    async def _fill(key: int) -> int:
        await asyncio.sleep(0.0005)  # pretend to fetch it
        return mix(key, 0xCAC4E)


def blocking_digest(payload: int, rounds: int) -> int:
    """CPU-bound work that a real program would push to a thread pool."""
    data = payload.to_bytes(8, "little") * 128
    for _ in range(rounds):
        data = hashlib.sha256(data).digest() * 32
    return int.from_bytes(data[:8], "little")


class DownstreamService:
    """A real TCP service on 127.0.0.1, served and called with asyncio streams.

    Each request is one line with a number; the answer is one line with its mix (after a
    short pause for every 5th number, like a slower backend). Callers share a pool of
    keep-alive connections, one request at a time per connection.
    """

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.connections: list[asyncio.StreamWriter] = []
        self.requests = 0

    async def start(self, connections: int) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        for _ in range(connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            self.connections.append(writer)
            self.pool.put_nowait((reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                payload = int(line)
                if payload % 5 == 0:
                    await asyncio.sleep(0.0001)
                writer.write(b"%d\n" % mix(payload, 0xD0))
                await writer.drain()
        finally:
            writer.close()

    async def call(self, payload: int) -> int:
        reader, writer = await self.pool.get()
        try:
            writer.write(b"%d\n" % payload)
            await writer.drain()
            answer = await reader.readline()
            self.requests += 1
            return int(answer)
        finally:
            self.pool.put_nowait((reader, writer))

    async def close(self) -> None:
        for writer in self.connections:
            writer.close()
        for writer in self.connections:
            await writer.wait_closed()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Job:
    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=config.queue_size)
        self.cache = SingleFlightCache()
        self.downstream = asyncio.Semaphore(config.downstream_limit)
        self.service = DownstreamService()
        self.stalled_dependency = asyncio.Event()  # never set: calls to it always time out
        self.done = asyncio.Event()
        self.results: dict[int, int] = {}
        self.timeouts = 0
        self.executor_calls = 0
        self.monitor_ticks = 0
        self.max_queue_depth = 0

    async def produce(self, producer: int) -> None:
        config = self.config
        for seq in range(config.items_per_producer):
            item_id = producer * config.items_per_producer + seq
            item = Item(item_id, mix(item_id, 7) % config.distinct_keys, mix(item_id, producer))
            await self.queue.put(item)
            if seq % 250 == 249:
                await asyncio.sleep(0.0002)  # bursts, as from a real source

    async def work(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if item is None:
                    return
                token = REQUEST_ID.set(item.id)
                try:
                    self.results[item.id] = await self.process(item)
                finally:
                    REQUEST_ID.reset(token)
            finally:
                self.queue.task_done()

    async def process(self, item: Item) -> int:
        loop = asyncio.get_running_loop()
        config = self.config
        base = await self.cache.get(item.key)
        downstream = await self.call_downstream(item)

        async with asyncio.TaskGroup() as group:
            shards = [group.create_task(self.shard(item, index)) for index in range(config.shards)]
        shard_value = mix(*(task.result() for task in shards))

        seen: asyncio.Future[int] = loop.create_future()
        loop.call_soon(lambda: seen.set_result(REQUEST_ID.get()))  # runs in a copy of our context
        check(await seen == item.id, "call_soon callback saw another request's contextvar")

        extra = 0
        if item.id % config.blocking_every == 0:
            extra = await loop.run_in_executor(
                None, blocking_digest, item.payload, config.blocking_rounds
            )
            self.executor_calls += 1
        if item.id % config.stalled_every == 0:
            try:
                await asyncio.wait_for(self.stalled_dependency.wait(), config.stall_timeout)
            except TimeoutError:
                self.timeouts += 1
                extra ^= 0x7140E0
            else:
                raise InvariantBroken("the stalled dependency answered")
        check(REQUEST_ID.get() == item.id, "contextvar changed under the worker")
        return mix(item.id, base, downstream, shard_value, extra)

    async def call_downstream(self, item: Item) -> int:
        async with self.downstream, asyncio.timeout(5.0):
            return await self.service.call(item.payload)

    async def shard(self, item: Item, index: int) -> int:
        check(REQUEST_ID.get() == item.id, "TaskGroup child did not inherit the contextvar")
        await asyncio.sleep(0)
        return mix(item.payload, index)

    async def monitor(self) -> None:
        while not self.done.is_set():
            self.max_queue_depth = max(self.max_queue_depth, self.queue.qsize())
            self.monitor_ticks += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), 0.001)

    async def run(self) -> JobReport:
        config = self.config
        await self.service.start(config.downstream_limit)
        monitor = asyncio.create_task(self.monitor(), name="monitor")
        async with asyncio.TaskGroup() as group:
            workers = [
                group.create_task(self.work(), name=f"worker-{index}")
                for index in range(config.workers)
            ]
            await asyncio.gather(*(self.produce(index) for index in range(config.producers)))
            await self.queue.join()
            for _ in workers:
                await self.queue.put(None)
        self.done.set()
        await monitor
        await self.service.close()
        return self.report()

    def report(self) -> JobReport:
        config = self.config
        produced = len(self.results)
        check(produced == config.items, f"{produced} results for {config.items} items")
        keys_used = {mix(item_id, 7) % config.distinct_keys for item_id in range(config.items)}
        fills = self.cache.fills
        check(fills == len(keys_used), f"{fills} cache fills for {len(keys_used)} keys")
        stalled = sum(1 for item_id in range(config.items) if item_id % config.stalled_every == 0)
        check(self.timeouts == stalled, f"{self.timeouts} timeouts, expected {stalled}")
        check(self.service.requests == config.items,
              f"{self.service.requests} downstream requests for {config.items} items")
        digest = hashlib.sha256()
        for item_id in sorted(self.results):
            digest.update(f"{item_id}:{self.results[item_id]};".encode())
        digest.update(
            f"fills={self.cache.fills};timeouts={self.timeouts};"
            f"executor={self.executor_calls}".encode()
        )
        return JobReport(
            checksum=digest.hexdigest()[:16],
            items=len(self.results),
            cache_fills=self.cache.fills,
            cache_waits=self.cache.waits,
            timeouts=self.timeouts,
            executor_calls=self.executor_calls,
            monitor_ticks=self.monitor_ticks,
            max_queue_depth=self.max_queue_depth,
        )


async def main_job(config: JobConfig) -> JobReport:
    return await Job(config).run()


@dataclass
class LoopRuns:
    spec: LoopSpec
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    reports: list[JobReport] = field(default_factory=list)
    error: str | None = None


def run_once(spec: LoopSpec, config: JobConfig) -> tuple[float, float, JobReport]:
    """One complete program run: create the loop, run the job, shut down (executor included)."""
    assert spec.factory is not None
    reported: list[str] = []

    def record(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        reported.append(f"{context.get('message')}: {context.get('exception')!r}")

    gc.collect()
    # The job bounds itself (wait_for below); this bounds a loop that hangs holding the GIL.
    faulthandler.dump_traceback_later(RUN_TIMEOUT + 30.0, exit=True)
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        with asyncio.Runner(loop_factory=spec.factory) as runner:
            # The job never leaves an error to the loop's exception handler; if one arrives, the
            # loop mis-ran something, even when the checksum still comes out right.
            runner.get_loop().set_exception_handler(record)
            report = runner.run(asyncio.wait_for(main_job(config), timeout=RUN_TIMEOUT))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        faulthandler.cancel_dump_traceback_later()
    check(
        not reported,
        f"{len(reported)} error(s) reached the exception handler: {reported[0]}"
        if reported
        else "",
    )
    return wall, cpu, report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the main job on several event loops.")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--loops", help="comma-separated loops (default asyncio,uvloop,ferroloop)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of items")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.scale <= 0:
        parser.error("--rounds must be >= 1 and --scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = parse_loop_names(args.loops, default=("asyncio", "uvloop", "ferroloop"))
    specs = resolve_loops(names)
    config = JobConfig(items_per_producer=max(1, round(JobConfig.items_per_producer * args.scale)))

    print("# ferroloop main job\n")
    print(format_machine_line(machine_info(specs)))
    print(
        f"\n{config.items} items, {config.producers} producers -> queue({config.queue_size}) -> "
        f"{config.workers} workers; {args.rounds} rounds, interleaved, fresh loop per run "
        "(asyncio.Runner with loop_factory)."
    )
    runs = [LoopRuns(spec) for spec in specs]
    for run in runs:
        if not run.spec.available:
            print(f"{run.spec.name}: {run.spec.problem} — skipped")
    active = [run for run in runs if run.spec.available]

    for round_no in range(1, args.rounds + 1):
        for run in rotated(active, round_no):
            if run.error is not None:
                continue
            try:
                wall, cpu, report = run_once(run.spec, config)
            except Exception as exc:  # noqa: BLE001 -- a broken loop may raise anything
                run.error = f"{type(exc).__name__}: {exc}"
                print(f"  {run.spec.name}: FAILED: {run.error}", file=sys.stderr)
                continue
            run.walls.append(wall)
            run.cpus.append(cpu)
            run.reports.append(report)
            print(
                f"  round {round_no} {run.spec.name:9} {wall * 1000:7.0f} ms  "
                f"checksum {report.checksum}",
                file=sys.stderr,
                flush=True,
            )

    checksums = {report.checksum for run in active for report in run.reports}
    baseline = next((run for run in active if run.spec.name == "asyncio" and run.walls), None)
    base_median = statistics.median(baseline.walls) if baseline else None

    print("\n| loop | median wall | best wall | median CPU | vs asyncio (time) | checksum |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for run in runs:
        if not run.spec.available:
            print(f"| {run.spec.name} | n/a | n/a | n/a | - | not available |")
            continue
        if not run.walls:
            print(f"| {run.spec.name} | FAIL | FAIL | FAIL | - | {run.error} |")
            continue
        median = statistics.median(run.walls)
        ratio = f"{median / base_median:.2f}×" if base_median else "-"
        sums = ", ".join(sorted({report.checksum for report in run.reports}))
        print(
            f"| {run.spec.name} | {median * 1000:.0f} ms | {min(run.walls) * 1000:.0f} ms | "
            f"{statistics.median(run.cpus) * 1000:.0f} ms | {ratio} | {sums} |"
        )

    sample = next((run.reports[-1] for run in active if run.reports), None)
    if sample is not None:
        print(
            f"\nevery run: {sample.items} items, {sample.cache_fills} cache fills, "
            f"{sample.timeouts} wait_for timeouts, {sample.executor_calls} executor calls."
        )
        print(
            "timing-dependent (last run; waits on in-flight cache fills / monitor ticks / "
            "max queue depth): "
            + ", ".join(
                f"{run.spec.name} {run.reports[-1].cache_waits}/{run.reports[-1].monitor_ticks}/"
                f"{run.reports[-1].max_queue_depth}"
                for run in active
                if run.reports
            )
        )
    print("vs asyncio: time relative to asyncio's median; below 1.00× is faster.")

    failed = [run for run in active if run.error is not None]
    if len(checksums) > 1:
        print(f"\nRESULTS DIFFER between loops: {sorted(checksums)}")
        return 1
    if failed:
        print("\nfailed: " + "; ".join(f"{run.spec.name}: {run.error}" for run in failed))
        return 1
    if checksums:
        print(f"\nall runs produced the same result (checksum {checksums.pop()}).")
    ferroloop_missing = any(s.name == "ferroloop" and not s.available for s in specs)
    explicitly_missing = bool(args.loops) and any(not spec.available for spec in specs)
    return 2 if ferroloop_missing or explicitly_missing else 0


if __name__ == "__main__":
    sys.exit(main())
