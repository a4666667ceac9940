#!/usr/bin/env bash
# Set up the project-local environment (.venv, ferroloop built in release mode), then run the
# interleaved benchmarks: asyncio, uvloop, rloop and ferroloop side by side.
#
#   bash scripts/bench.sh [options]      core benchmarks: benchmarks/bench_core.py [options]
#   bash scripts/bench.sh io [options]   I/O benchmarks: also builds the echo client
#                                        (crates/ferroloop-bench), then benchmarks/bench_io.py
#   bash scripts/bench.sh streams [options]
#                                        stream-transport benchmarks: also builds the echo
#                                        client and the Rust-only echo server, then
#                                        benchmarks/bench_streams.py
#
# Options go to the script (e.g. --quick, --only call_soon,sleep0, --json results.json). The
# echo client and server are built here rather than by the benchmark scripts so that a
# benchmark never compiles anything while it measures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
    io | streams)
        script="bench_$1.py"
        shift
        bash "$root/scripts/bootstrap.sh"
        (cd "$root" && cargo build --release --quiet -p ferroloop-bench)
        exec "$root/.venv/bin/python" "$root/benchmarks/$script" "$@"
        ;;
esac
if [ "${1:-}" = "http" ]; then
    # bash scripts/bench.sh http [options]: HTTP servers and client (uvicorn, aiohttp) under
    # wrk, benchmarks/bench_http.py. Nothing to build besides .venv; a missing wrk is installed
    # with apt-get when running as root, otherwise the script says how.
    shift
    bash "$root/scripts/bootstrap.sh"
    exec "$root/.venv/bin/python" "$root/benchmarks/bench_http.py" "$@"
fi
bash "$root/scripts/bootstrap.sh" && "$root/.venv/bin/python" "$root/benchmarks/bench_core.py" "$@"
