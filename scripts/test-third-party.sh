#!/usr/bin/env bash
# Runs pinned third-party asyncio test suites (the own tests of anyio 4.16.0, uvloop 0.23.0's
# asyncio test classes, aiohttp 3.14.5, uvicorn 0.54.0 and asyncpg 0.32.0)
# on stock asyncio and on ferroloop and compares them (tests/third_party/run.py): fails on a test
# that fails only on ferroloop and is not listed in tests/third_party/expectations.toml.
# Downloads the sdists into target/third-party/cache and installs their test dependencies into
# .venv (both once). anyio takes about 1.5 min, uvloop 1 min, aiohttp about 17 min, uvicorn
# about 4 min (2 cores; uvicorn: 1,316 passed / 12 skipped on asyncio, the same on ferroloop
# but for one listed test of asyncio's own loop class), asyncpg about 3 min.
# asyncpg's tests start temporary PostgreSQL servers: they need the server binaries (found
# through PGINSTALLATION or `pg_config --bindir`; `sudo bash scripts/install-postgres.sh`
# installs them, on Debian/Ubuntu with apt-get). PostgreSQL refuses root, so when this runs as
# root its pytest processes run as the user ferroloop-tests (made by the same script) in a user
# namespace (unshare --user). The suite stops with instructions when either is missing.
# Extra arguments go to run.py: --suite anyio|uvloop|aiohttp|uvicorn|asyncpg (repeatable), --ci
# (what CI runs: anyio and uvloop; the others take too long for CI's budget).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
    bash scripts/bootstrap.sh
fi
exec .venv/bin/python tests/third_party/run.py "$@"
