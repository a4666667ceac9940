#!/usr/bin/env bash
# Sets up everything a fresh clone needs in a project-local virtual environment (.venv):
# Python dependencies for tests and benchmarks, then builds ferroloop's native module into it.
# Idempotent: re-running only rebuilds what changed.
#
#   FERROLOOP_PROFILE=release|dev   build profile for the native module (default: release)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
venv_py="$root/.venv/bin/python"

stamp=.venv/.deps-stamp
if [ ! -f "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
    "$venv_py" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    touch "$stamp"
fi

profile="${FERROLOOP_PROFILE:-release}"
flags=()
if [ "$profile" = "release" ]; then flags+=(--release); fi
VIRTUAL_ENV="$root/.venv" PATH="$root/.venv/bin:$PATH" \
    "$root/.venv/bin/maturin" develop -q "${flags[@]}"
