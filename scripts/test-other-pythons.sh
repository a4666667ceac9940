#!/usr/bin/env bash
# Runs the pytest behaviour suite on the other CPython versions ferroloop targets (3.12+),
# when they are installed (pyenv's versions directory or pythonX.Y on PATH). Each gets its own
# project-local virtual environment (.venv-X.Y) with ferroloop built into it. Every test
# compares ferroloop with that interpreter's own asyncio; the interpreter's own test_asyncio runs
# on both loops too (tests/cpython). No 3.14 is installed here; scripts/test-debian-python.sh
# runs both on Debian's 3.14 (not in CI). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

find_python() {
    local v="$1" p
    if command -v pyenv >/dev/null 2>&1; then
        for p in "$(pyenv root)"/versions/"$v".*/bin/python"$v"; do
            [ -x "$p" ] && { echo "$p"; return 0; }
        done
    fi
    p="$(command -v "python$v" 2>/dev/null || true)"
    if [ -n "$p" ] && "$p" -c 'pass' 2>/dev/null; then
        echo "$p"
        return 0
    fi
    return 1
}

for v in 3.12 3.13 3.14; do
    if ! py="$(find_python "$v")"; then
        echo "== Python $v: not installed on this machine, not tested"
        continue
    fi
    echo "== Python $v ($py)"
    venv="$root/.venv-$v"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    # The same dependencies as .venv, so that every test (HTTP servers, TLS, pytest-asyncio)
    # runs on every version instead of skipping for a missing package.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop -q --release
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
    case "$v" in
        3.12|3.13|3.14)
            # The oracle on this interpreter's own test_asyncio (tests/cpython/run.py), whose
            # expectations hold for 3.11 to 3.14. About a minute.
            echo "== CPython $v's test_asyncio on asyncio and on ferroloop (.venv-$v)"
            "$venv/bin/python" tests/cpython/run.py
            ;;
        *)
            echo "== CPython $v's test_asyncio: tests/cpython has no expectations for $v, not run"
            ;;
    esac
done
