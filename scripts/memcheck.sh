#!/usr/bin/env bash
# Runs a meaningful part of the pytest suite under valgrind memcheck (issue #10) and fails if
# any memory error or definite leak has a frame in ferroloop's native code.
#
#   bash scripts/memcheck.sh                 # the default selection below, ferroloop runs only
#   bash scripts/memcheck.sh tests/test_x.py # other tests (extra arguments go to pytest)
#
# How: the native module is built with the dev profile (debug assertions and overflow checks
# on, full debug info), Python runs with PYTHONMALLOC=malloc so that memcheck sees every
# allocation, and FERROLOOP_TIME_SCALE=40 stretches the tests' time limits for memcheck's
# slowdown. Each pytest file runs in its own valgrind process; logs go to target/memcheck/.
# scripts/memcheck_report.py then sorts the error records: those entirely in CPython and libc
# frames are the interpreter's (an optimised CPython has known memcheck false positives:
# vectorised string compares reading past the end, uninitialised-value reports in object
# headers and small-int checks; a stock-asyncio run of test_tcp.py is the baseline) and are
# only counted; a record with a ferroloop or Rust frame among its innermost ones, or with
# ferroloop frames further down and an error the baseline does not have, fails the run.
# A few timing-sensitive tests may fail under the slowdown; their failures are printed but
# the verdict is memcheck's. Takes about 15-25 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 2; }
FERROLOOP_PROFILE="${FERROLOOP_PROFILE:-dev}" bash scripts/bootstrap.sh

out=target/memcheck
rm -rf "$out"
mkdir -p "$out"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(
        tests/test_callbacks.py tests/test_timers.py tests/test_watchers.py
        tests/test_sockets.py tests/test_transports.py tests/test_tcp.py tests/test_server.py
        tests/test_unix.py tests/test_datagram.py tests/test_reliability.py
    )
fi

status=0
for t in "${targets[@]}"; do
    name="$(basename "$t" .py)"
    echo "== memcheck: $t"
    PYTHONMALLOC=malloc FERROLOOP_TIME_SCALE=40 \
        valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --num-callers=40 --log-file="$out/$name.%p.log" \
        .venv/bin/python -m pytest -q -p no:cacheprovider -k ferroloop "$t" \
        >"$out/$name.pytest.txt" 2>&1 || status=$?
    tail -n 1 "$out/$name.pytest.txt"
    if [ "$status" -ne 0 ]; then
        grep -E "^(FAILED|ERROR)" "$out/$name.pytest.txt" || true
        status=0
    fi
done

# The interpreter's own reports, for comparison: the same tests on stock asyncio (test_tcp's
# coroutines produce the widest variety of them).
echo "== memcheck baseline: tests/test_tcp.py on stock asyncio"
PYTHONMALLOC=malloc FERROLOOP_TIME_SCALE=40 \
    valgrind --tool=memcheck --num-callers=40 --log-file="$out/baseline.%p.vglog" \
    .venv/bin/python -m pytest -q -p no:cacheprovider -k asyncio tests/test_tcp.py \
    >"$out/baseline.pytest.txt" 2>&1 || true
tail -n 1 "$out/baseline.pytest.txt"

echo "== memcheck verdict"
.venv/bin/python scripts/memcheck_report.py --baseline "$out"/baseline.*.vglog -- "$out"/*.log
