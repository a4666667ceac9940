"""Instructions per operation with and without issue 11's features, counted by callgrind.

Wall-clock benchmarks on a shared 2-core machine cannot resolve a 1% difference; instruction
counts can, and they repeat exactly. This script runs one workload N and 2N times under
`valgrind --tool=callgrind` and reports (instructions(2N) - instructions(N)) / N, which leaves
out interpreter start-up and imports.

    python benchmarks/introspection_cost.py                      # both workloads, detector off/on
    PYTHONPATH=/path/to/other/build python benchmarks/introspection_cost.py --modes off

Workloads (run by this same file as a child, `--child WORKLOAD MODE N`):

- call_soon: one callback that re-schedules itself (bench_core's call_soon chain): one
  callback and one loop iteration per operation, the worst case for per-callback costs.
- sleep0: one task awaiting asyncio.sleep(0): a task step and a loop iteration per operation.
- pingpong: two tasks on one loop bouncing 64 bytes over a socketpair with sock_recv and
  sock_sendall: a poll, I/O events and task steps per operation.

MODE is `off` (plain loop), `on` (blocking detector on, threshold 1 s) or `thread` (detector
off, an idle second thread: what merely having another thread costs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import socket
import subprocess
import sys
import tempfile


def call_soon(loop: asyncio.AbstractEventLoop, n: int) -> None:
    count = 0

    def step() -> None:
        nonlocal count
        count += 1
        if count < n:
            loop.call_soon(step)
        else:
            loop.stop()

    loop.call_soon(step)
    loop.run_forever()
    assert count == n


def pingpong(loop: asyncio.AbstractEventLoop, n: int) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    payload = b"x" * 64

    async def side(sock: socket.socket, first: bool) -> None:
        for _ in range(n):
            if first:
                await loop.sock_sendall(sock, payload)
                assert len(await loop.sock_recv(sock, 64)) == 64
            else:
                assert len(await loop.sock_recv(sock, 64)) == 64
                await loop.sock_sendall(sock, payload)

    async def main() -> None:
        await asyncio.gather(side(a, True), side(b, False))

    try:
        loop.run_until_complete(main())
    finally:
        a.close()
        b.close()


def sleep0(loop: asyncio.AbstractEventLoop, n: int) -> None:
    async def spin() -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    loop.run_until_complete(spin())


WORKLOADS = {"call_soon": call_soon, "sleep0": sleep0, "pingpong": pingpong}


def child(workload: str, mode: str, n: int) -> None:
    import ferroloop

    # As bench_core.py: what exists before the workload is frozen, so the collector's full
    # passes do not charge the workload for the size of the imported code.
    gc.collect()
    gc.freeze()
    loop = ferroloop.new_event_loop()
    if mode == "on":
        loop.set_block_threshold(1.0)
    elif mode == "thread":
        # Detector off, but a second thread exists (one that sleeps), as the watchdog does:
        # prices what any second thread costs (glibc's multi-threaded paths).
        import threading

        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
    try:
        WORKLOADS[workload](loop, n)
    finally:
        loop.close()


def instructions(workload: str, mode: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--child", workload, mode, str(n)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{proc.stderr}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "MODE", "N"))
    parser.add_argument("--workloads", default="call_soon,sleep0,pingpong")
    parser.add_argument("--modes", default="off,on")
    parser.add_argument("-n", type=int, default=20_000, help="operations (default 20000)")
    args = parser.parse_args()
    if args.child:
        workload, mode, n = args.child
        child(workload, mode, int(n))
        return 0
    import ferroloop

    print(f"ferroloop from {os.path.dirname(ferroloop.__file__)}; N = {args.n}")
    for workload in args.workloads.split(","):
        for mode in args.modes.split(","):
            one = instructions(workload, mode, args.n)
            two = instructions(workload, mode, 2 * args.n)
            print(f"{workload:10} detector {mode:3}: {(two - one) / args.n:9.1f} instructions/op")
    return 0


if __name__ == "__main__":
    sys.exit(main())
