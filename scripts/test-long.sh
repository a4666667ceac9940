#!/usr/bin/env bash
# The long reliability runs of issue #10 (the short versions run in scripts/test.sh):
#
#   * load: 10,000 TCP connections held open and echoing on one loop (RSS per connection),
#     and a storm of 1,000,000 connect/send/echo/close cycles against one server (rate, RSS
#     and open fds at start and end), each test on each loop in a fresh process so that RSS
#     figures are not skewed by an earlier test's freed memory;
#   * faults with 300 KeyboardInterrupt rounds instead of 25;
#   * Hypothesis: 500 random operation sequences (conformance) and 400-1,000 random examples
#     per fuzz target, instead of the short runs' fixed few dozen.
#
# Figures are printed at the end and kept in target/long/load.jsonl. Takes about 10 minutes
# on 2 cores (the storm is bounded by its Python client, about 13-15k connections/s).
# Extra arguments go to every pytest run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/bootstrap.sh  # release build: the figures are for the release build
out=target/long
mkdir -p "$out"
report="$out/load.jsonl"
rm -f "$report"
export FERROLOOP_LONG=1 FERROLOOP_LOAD_REPORT="$root/$report"
py=.venv/bin/python

for test in test_connections_held_open_and_echoing test_connect_close_storm; do
    for kind in asyncio ferroloop; do
        echo "== load: $test[$kind]"
        "$py" -m pytest -q -p no:cacheprovider "tests/test_load.py::$test[$kind]" "$@"
    done
done

echo "== faults, randomised conformance, fuzz (long)"
"$py" -m pytest -q -p no:cacheprovider tests/test_reliability.py \
    tests/test_random_conformance.py tests/test_fuzz_sizes.py "$@"

echo "== figures"
"$py" - "$report" <<'PY'
import json
import sys

for line in open(sys.argv[1]):
    r = json.loads(line)

    def mib(b):
        return f"{b / 2**20:.1f} MiB"

    if r["test"] == "hold":
        print(f"hold  {r['loop']:9} {r['connections']} connections: "
              f"{r['rss_per_connection']} B RSS per connection "
              f"({mib(r['rss_before'])} -> {mib(r['rss_held'])}), opened in {r['open_seconds']} s")
    else:
        print(f"storm {r['loop']:9} {r['connections']} connections in {r['seconds']} s "
              f"({r['per_second']}/s): RSS {mib(r['rss_after_warmup'])} after warm-up -> "
              f"{mib(r['rss_end'])} at end; open fds {r['fds_start']} -> {r['fds_end']}")
PY
