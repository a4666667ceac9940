#!/usr/bin/env bash
# Sets everything up (scripts/bootstrap.sh) and runs every test: lints, the Rust engine's
# cargo tests, the pytest behaviour suite (each test on stock asyncio and on ferroloop), on
# Python 3.11 and on every later CPython that is installed, then CPython's own test_asyncio on
# both loops (tests/cpython: 3.11's, and 3.12's and 3.13's where installed), then anyio's and
# uvloop's own test suites on both loops (tests/third_party).
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

echo "== setup"
bash scripts/bootstrap.sh

echo "== lint"
cargo fmt --all -- --check
# Every `unsafe` block carries a `// SAFETY:` comment; clippy enforces it.
cargo clippy --workspace --all-targets --quiet -- -D warnings -D clippy::undocumented_unsafe_blocks
.venv/bin/ruff check python tests benchmarks examples scripts

echo "== cargo test (engine)"
# ferroloop-py is a Python extension (it links against the interpreter that loads it), so its
# behaviour is tested from Python below; the engine crate is tested on its own.
cargo test -p ferroloop-core --quiet

echo "== pytest on the other supported Pythons"
bash scripts/test-other-pythons.sh "$@"

echo "== pytest (Python 3.11, .venv)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"

echo "== CPython's test_asyncio on asyncio and on ferroloop (Python 3.11, .venv)"
# The oracle (tests/cpython/run.py): fails on a ferroloop-only failure, hang or crash that
# tests/cpython/expectations.toml does not list, and on a listed one that now passes. 3.12's
# and 3.13's test_asyncio ran above, with the pytest suite of those interpreters.
.venv/bin/python tests/cpython/run.py

echo "== anyio's and uvloop's own test suites on asyncio and on ferroloop (Python 3.11, .venv)"
# tests/third_party/run.py: downloads the pinned sdists (once, into target/third-party),
# installs their test dependencies into .venv, runs their tests on both loops and fails on a
# ferroloop-only failure that tests/third_party/expectations.toml does not list. About 2.5 min
# (uvloop's suite: its asyncio test classes only).
bash scripts/test-third-party.sh --ci
