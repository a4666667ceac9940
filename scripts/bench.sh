#!/usr/bin/env bash
# Set up the project-local environment (.venv, ferroloop built in release mode), then run the
# interleaved benchmarks: asyncio, uvloop, rloop and ferroloop side by side.
#
#   bash scripts/bench.sh [options]      core benchmarks: benchmarks/bench_core.py [options]
#   bash scripts/bench.sh io [options]   I/O benchmarks: also builds the echo client
#                                        (crates/ferroloop-bench), then benchmarks/bench_io.py
#
# Options go to the script (e.g. --quick, --only call_soon,sleep0, --json results.json). The
# echo client is built here rather than by bench_io.py so that the benchmark itself never
# compiles anything while it measures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "io" ]; then
    shift
    bash "$root/scripts/bootstrap.sh"
    (cd "$root" && cargo build --release --quiet -p ferroloop-bench)
    exec "$root/.venv/bin/python" "$root/benchmarks/bench_io.py" "$@"
fi
if [ "${1:-}" = "http" ]; then
    # bash scripts/bench.sh http [options]: HTTP servers and client (uvicorn, aiohttp) under
    # wrk, benchmarks/bench_http.py. Nothing to build besides .venv; a missing wrk is installed
    # with apt-get when running as root, otherwise the script says how.
    shift
    bash "$root/scripts/bootstrap.sh"
    exec "$root/.venv/bin/python" "$root/benchmarks/bench_http.py" "$@"
fi
bash "$root/scripts/bootstrap.sh" && "$root/.venv/bin/python" "$root/benchmarks/bench_core.py" "$@"
