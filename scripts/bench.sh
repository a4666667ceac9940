#!/usr/bin/env bash
# Set up the project-local environment (.venv, ferroloop built in release mode), then run the
# interleaved core benchmarks: asyncio, uvloop, rloop and ferroloop side by side. Arguments go to
# benchmarks/bench_core.py (e.g. --quick, --only call_soon,sleep0, --json results.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" && "$root/.venv/bin/python" "$root/benchmarks/bench_core.py" "$@"
