#!/usr/bin/env bash
# Runs pinned third-party asyncio test suites (anyio 4.16.0's own tests) on stock asyncio and on
# ferroloop and compares them (tests/third_party/run.py): fails on a test that fails only on
# ferroloop and is not listed in tests/third_party/expectations.toml. Downloads the sdists into
# target/third-party/cache and installs their test dependencies into .venv (both once).
# Extra arguments go to run.py (e.g. --suite anyio).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
    bash scripts/bootstrap.sh
fi
exec .venv/bin/python tests/third_party/run.py "$@"
