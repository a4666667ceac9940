"""What one echoed request costs a server in user-space instructions, on every loop.

`bench_streams.py` reports requests per server CPU second, where most of each request is the
kernel's loopback TCP work and moves between runs. This script counts what does not move: the
user-space instructions the server's thread executes per request (``instructions.py``, the
CPU's counter), for an echo server written with a ``Protocol`` (``data_received`` →
``transport.write``) or with asyncio streams (``reader.read`` → ``writer.write`` +
``drain``), under the Rust ``echo-client`` (8 connections, each sending the next request when
the previous answer is in). The figure is (count at ``2N`` requests per connection - count at
``N``) / ``8N``, so that setting up the server and connections drops out; the median over
``--runs`` interleaved runs. Beside it, the server's user and system CPU time per request
(getrusage over the ``2N`` run), which do move with the machine's load.

What it is for: the share of a request that is the loop's own code. The streams server's
instructions are mostly asyncio's ``StreamReader``/``StreamWriter`` code, the same on every
loop (docs/design.md §5.30).

    cargo build --release -p ferroloop-bench      # echo-client
    .venv/bin/python benchmarks/request_cost.py                      # both servers, all loops
    .venv/bin/python benchmarks/request_cost.py --servers streams --size 10240 --loops uvloop,ferroloop
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
from typing import Any

from harness import have_binary, pin_cpus, release_binary
from instructions import InstructionCounter
from loop_registry import machine_info, parse_loop_names, resolve_loops

CONNECTIONS = 8
# The client waits this long for the server's close after the last answer (rloop 0.5 does not
# close on EOF); it then exits without an error, as in bench_streams.py.
EOF_TIMEOUT = 0.5


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def serve(
    kind: str, size: int, n: int, counter: InstructionCounter, client_cpu: int | None
) -> tuple[int, float, float]:
    """Serve `n` requests of `size` bytes on each of CONNECTIONS connections; (instructions,
    user s, system s) of this thread and process meanwhile."""
    loop = asyncio.get_running_loop()
    if kind == "streams":
        server = await asyncio.start_server(stream_echo, "127.0.0.1", 0)
    else:
        server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pin = ["taskset", "-c", str(client_cpu)] if client_cpu is not None else []
    command = [*pin, str(release_binary("echo-client")), f"127.0.0.1:{port}", str(CONNECTIONS),
               str(size), str(n), "--timeout", "120", "--eof-timeout", str(EOF_TIMEOUT)]
    usage0, count0 = resource.getrusage(resource.RUSAGE_SELF), counter.now()
    client = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
    out, _ = await client.communicate()
    count1, usage1 = counter.now(), resource.getrusage(resource.RUSAGE_SELF)
    server.close()
    await server.wait_closed()
    if client.returncode != 0:
        raise RuntimeError(f"echo-client exited with {client.returncode}: {out[-300:]!r}")
    return (
        count1 - count0,
        usage1.ru_utime - usage0.ru_utime,
        usage1.ru_stime - usage0.ru_stime,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", help="comma-separated subset of asyncio,uvloop,rloop,ferroloop")
    parser.add_argument("--servers", default="protocol,streams", help="protocol,streams")
    parser.add_argument("--size", type=int, default=1024, help="bytes per request (1024)")
    parser.add_argument("--requests", type=int, default=5000, help="N per connection (5000)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not have_binary(release_binary("echo-client"), "echo-client",
                       "cargo build --release -p ferroloop-bench"):
        return 2
    specs = [spec for spec in resolve_loops(parse_loop_names(args.loops)) if spec.available]
    kinds = [kind.strip() for kind in args.servers.split(",") if kind.strip()]
    info = machine_info(specs)
    print(f"{info['python']}, {info['cpu_model']}, loops {info['loops']}")
    pin = pin_cpus(False)
    if pin:
        os.sched_setaffinity(0, {pin[0]})
    counter = InstructionCounter()
    n = args.requests
    per_request: dict[tuple[str, str], list[float]] = {}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for run in range(args.runs):
        for kind in kinds:
            for spec in specs[run % len(specs):] + specs[: run % len(specs)]:
                assert spec.factory is not None
                counts = []
                for size_n in (n, 2 * n):
                    loop = spec.factory()
                    try:
                        counts.append(loop.run_until_complete(
                            serve(kind, args.size, size_n, counter, pin[1] if pin else None)))
                    finally:
                        loop.close()
                (single, _, _), (double, user, system) = counts
                per_request.setdefault((kind, spec.name), []).append(
                    (double - single) / (CONNECTIONS * n))
                requests = CONNECTIONS * 2 * n
                times.setdefault((kind, spec.name), []).append(
                    (user / requests * 1e6, system / requests * 1e6))
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    print(f"\n{args.size}-byte echo, {CONNECTIONS} connections; median of {args.runs} runs\n")
    print("| server | loop | user-space instructions per request | user + system µs per request |")
    print("| --- | --- | ---: | ---: |")
    for kind in kinds:
        for spec in specs:
            counts_of = per_request[(kind, spec.name)]
            user = statistics.median(t[0] for t in times[(kind, spec.name)])
            system = statistics.median(t[1] for t in times[(kind, spec.name)])
            print(f"| {kind} | {spec.name} | {statistics.median(counts_of):,.0f} | "
                  f"{user:.2f} + {system:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
