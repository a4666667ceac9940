#!/usr/bin/env bash
# The main demo: set up the project-local environment (.venv, ferroloop built into it), then run
# the main job -- a realistic asyncio workload -- on stock asyncio, uvloop and ferroloop side by
# side, checking that they compute the same result. Arguments go to benchmarks/main_job.py
# (e.g. --rounds 3, --loops asyncio,ferroloop, --scale 0.5).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" && "$root/.venv/bin/python" "$root/benchmarks/main_job.py" "$@"
