#!/usr/bin/env bash
# Runs pinned third-party asyncio test suites (the own tests of anyio 4.16.0, uvloop 0.23.0's
# asyncio test classes, aiohttp 3.14.5, uvicorn 0.54.0, asyncpg 0.32.0 and redis-py 8.1.0's asyncio
# tests)
# on stock asyncio and on ferroloop and compares them (tests/third_party/run.py): fails on a test
# that fails only on ferroloop and is not listed in tests/third_party/expectations.toml.
# Downloads the sdists into target/third-party/cache and installs their test dependencies into
# .venv (both once). anyio takes about 1.5 min, uvloop 1 min, aiohttp about 17 min, uvicorn
# about 4 min (2 cores; uvicorn: 1,316 passed / 12 skipped on asyncio, the same on ferroloop
# but for one listed test of asyncio's own loop class), asyncpg about 3 min, redis about 4 min
# (1,450 passed, 4 failed, 624 skipped on both loops; 989 of its 3,089 tests need a cluster,
# Redis Stack modules, TLS certificates, sentinels or a server on :6379 and are deselected).
# asyncpg's tests start temporary PostgreSQL servers: they need the server binaries (found
# through PGINSTALLATION or `pg_config --bindir`; `sudo bash scripts/install-postgres.sh`
# installs them, on Debian/Ubuntu with apt-get). PostgreSQL refuses root, so when this runs as
# root its pytest processes run as the user ferroloop-tests (made by the same script) in a user
# namespace (unshare --user). The suite stops with instructions when either is missing.
# The redis suite needs Debian's redis-server (apt-get install -y redis-server, as root): run.py
# starts a private server per pytest process with scripts/start-redis.sh and stops it after.
# Extra arguments go to run.py: --suite anyio|uvloop|aiohttp|uvicorn|asyncpg|redis (repeatable),
# --ci (what CI runs: anyio and uvloop; the others take too long for CI's budget, and asyncpg
# and redis also need servers installed on the CI machine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
    bash scripts/bootstrap.sh
fi
exec .venv/bin/python tests/third_party/run.py "$@"
