"""User-space instructions per TLS handshake in the server's thread (docs/design.md §5.24).

``bench_tls.py``'s handshake server (the client, uvloop in a second process, connects, sends
one byte, reads the echo and sends ``close_notify``) is run twice on a fresh loop, for a small
and a large number of connections; the difference of the two counts, divided by the difference
of the numbers, is what one more connection costs the server: accept, handshake, echo, shutdown
and close, without the start-up and the certificate set-up. Counted by the CPU
(``perf_event_open``, user space, this thread only), so what else the machine does changes
nothing.

    .venv/bin/python benchmarks/tls_handshake_instructions.py [LOOPS] [ROUNDS]

LOOPS is a comma-separated list of ``ferroloop``, ``uvloop``, ``asyncio`` (default
``uvloop,ferroloop``); ROUNDS (default 1) repeats the measurement.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_tls
from tls_record_layer import _Counter

SMALL, LARGE = 1000, 3000


def _factory(name: str):
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise SystemExit(f"unknown loop {name!r}")


def main() -> None:
    names = (sys.argv[1] if len(sys.argv) > 1 else "uvloop,ferroloop").split(",")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    counter = _Counter(True)
    with tempfile.TemporaryDirectory() as tmp:
        env = bench_tls.Env(certs=bench_tls.Certs.make(tmp), pin=(0, 1))
        for _ in range(rounds):
            for name in names:
                counts = []
                for n in (SMALL, LARGE):
                    loop = _factory(name)()
                    start = counter.now()
                    bench_tls.serve_tls("handshake", 1, loop, n, env)
                    counts.append(counter.now() - start)
                    loop.close()
                per = (counts[1] - counts[0]) / (LARGE - SMALL)
                print(f"{name:10} {per:12,.0f} instructions per handshake", flush=True)


if __name__ == "__main__":
    main()
