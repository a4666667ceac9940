"""Where a server's CPU goes per HTTP request, by component, on each loop.

bench_http.py says how many requests each loop serves per CPU-second; this script says what
those CPU-seconds were spent on. It starts the row's server exactly as bench_http.py does and
splits its cost by the shared object the code belongs to:

- **Python interpreter**: ``libpython`` / the ``python`` binary: the frameworks' Python code
  (uvicorn's or aiohttp's protocol, the app, asyncio's pure-Python parts, and ferroloop's few
  Python-level methods) and the object machinery it drives;
- **asyncio C**: ``_asyncio`` (the C Task and Future every loop shares);
- **event loop (native)**: the loop's own compiled code (ferroloop's ``_native``, uvloop's
  ``loop`` with libuv linked in, rloop's ``_rloop``, the ``select`` module under asyncio);
- **HTTP C**: the frameworks' C helpers (httptools, aiohttp's parser and writer, multidict,
  yarl, propcache, frozenlist);
- **libc**: allocation, memcpy and the system-call wrappers;
- **kernel**: system calls, the loopback TCP stack, epoll, wake-ups (perf mode only);
- **other**: anything else (the dynamic loader, ``_socket``, ...).

Two modes:

- ``perf`` (default): the server under ``wrk`` load on its own CPU, sampled with ``perf
  record`` (user and kernel), each component's share turned into µs per request with the CPU
  time per request measured over the same window (``/proc/<pid>/stat``). Real timings, kernel
  included, but as noisy as the machine.
- ``callgrind``: the server under ``valgrind --tool=callgrind``, driven by a deterministic load
  from this script (C keep-alive connections; each round sends one request on every connection,
  then reads every response), and its instruction counts zeroed after a warm-up and dumped after
  the measured rounds: exact user-space instructions per request, the same on every run and
  unaffected by other tenants, but no kernel time. ``--top N`` lists the functions whose
  instruction counts differ most between the first and the last loop.

    python benchmarks/profile_http.py --row aiohttp_plaintext --loops uvloop,ferroloop
    python benchmarks/profile_http.py --mode callgrind --row aiohttp_plaintext --top 30

Needs ``perf`` (``apt-get install linux-perf``) and wrk, or valgrind; run as root, or with
``kernel.perf_event_paranoid`` low enough to profile your own processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_http import (
    ROWS_BY_KEY,
    WRK_DONE_LUA,
    Env,
    HttpRow,
    Process,
    fetch_raw,
    find_wrk,
    free_port,
    run_wrk,
    server_command,
)
from loop_registry import KNOWN_LOOPS, parse_loop_names

CATEGORIES = (
    "Python interpreter",
    "asyncio C (_asyncio)",
    "event loop (native)",
    "HTTP C (parser, multidict, yarl)",
    "libc",
    "kernel",
    "other",
)


def category(dso: str) -> str:
    """The component a shared object (as perf or callgrind names it) belongs to."""
    name = os.path.basename(dso)
    if name.startswith("[k") or name == "[vdso]":
        return "kernel"
    if name.startswith(("libpython", "python")):
        return "Python interpreter"
    if name.startswith("_asyncio."):
        return "asyncio C (_asyncio)"
    # ferroloop's _native, uvloop's loop (libuv linked in), rloop's _rloop, and the `select`
    # module under asyncio's pure-Python loop.
    if name.startswith(("_native.", "loop.cpython", "_rloop.", "select.")):
        return "event loop (native)"
    if any(
        part in name
        for part in ("httptools", "parser.cpython", "_http_", "multidict", "yarl", "propcache")
    ) or name.startswith(("_helpers_c", "_quoting_c", "_frozenlist", "_websocket")):
        return "HTTP C (parser, multidict, yarl)"
    if name.startswith(("libc.", "libc-", "libm.")):
        return "libc"
    return "other"


# ------------------------------------------------------------------------------------------------
# perf mode
# ------------------------------------------------------------------------------------------------


def perf_samples(data: Path) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Samples per shared object and per (shared object, symbol), from `perf report`."""
    result = subprocess.run(
        [
            "perf",
            "report",
            "-i",
            str(data),
            "--stdio",
            "--no-children",
            "--sort",
            "dso,sym",
            "-F",
            "sample,dso,sym",
            "--percent-limit",
            "0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    by_dso: Counter[str] = Counter()
    by_symbol: Counter[tuple[str, str]] = Counter()
    for line in result.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        samples, dso, symbol = int(parts[0]), parts[1], parts[2].strip()
        by_dso[dso] += samples
        by_symbol[(dso, symbol)] += samples
    return by_dso, by_symbol


def perf_one(row: HttpRow, loop: str, args: argparse.Namespace, env: Env, tmp: Path) -> dict:
    script = tmp / "done.lua"
    script.write_text(WRK_DONE_LUA, encoding="utf-8")
    data = tmp / f"{row.key}-{loop}.perf"
    port = free_port()
    server = Process(server_command(row, loop, port), env.pin[0] if env.pin else None, "server")
    try:
        server.wait_for_port(port)
        status, body, _ = fetch_raw(port, row.path)
        if status != 200 or body != row.body:
            raise SystemExit(f"{loop}: GET {row.path} answered {status} {body[:60]!r}")
        run_wrk(env, port, row.path, 1, script)  # warm-up
        load = subprocess.Popen(
            [
                env.wrk or "wrk",
                "-t1",
                f"-c{env.connections}",
                f"-d{round(args.seconds) + 2}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{row.path}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {env.pin[1]})) if env.pin else None,  # noqa: PLW1509
        )
        time.sleep(0.5)
        user0, sys0 = server.cpu_times()
        perf = subprocess.run(
            [
                "perf",
                "record",
                "-F",
                str(args.frequency),
                "-p",
                str(server.pid),
                "-o",
                str(data),
                "--",
                "sleep",
                f"{args.seconds:g}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        user1, sys1 = server.cpu_times()
        if perf.returncode != 0:
            raise SystemExit(f"perf record failed: {perf.stderr.strip()[-800:]}")
        output, _ = load.communicate(timeout=args.seconds + 30)
        report = next(
            (
                json.loads(line[len("WRK_JSON ") :])
                for line in output.splitlines()
                if line.startswith("WRK_JSON ")
            ),
            None,
        )
        if report is None:
            raise SystemExit(f"wrk failed: {output[-500:]}")
        rate = report["requests"] / (report["duration_us"] / 1e6)
        requests = rate * args.seconds  # served while perf sampled (wrk's rate over its run)
        by_dso, by_symbol = perf_samples(data)
        return {
            "row": row.key,
            "loop": loop,
            "mode": "perf",
            "unit": "µs",
            "per_request": ((user1 - user0) + (sys1 - sys0)) / requests * 1e6,
            "user_us_per_request": (user1 - user0) / requests * 1e6,
            "sys_us_per_request": (sys1 - sys0) / requests * 1e6,
            "requests_per_s": rate,
            "by_dso": dict(by_dso),
            "by_symbol": [[dso, sym, n] for (dso, sym), n in by_symbol.most_common(300)],
        }
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------
# callgrind mode
# ------------------------------------------------------------------------------------------------


def deterministic_load(port: int, path: str, connections: int, rounds: int) -> None:
    """Each round: one request written on every connection, then every response read."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(connections)]
    pending = [b""] * connections
    try:
        for _ in range(rounds):
            for sock in socks:
                sock.sendall(request)
            for index, sock in enumerate(socks):
                data = pending[index]
                while True:
                    head_end = data.find(b"\r\n\r\n")
                    if head_end >= 0:
                        head = data[:head_end].decode("latin-1").lower()
                        length = int(head.split("content-length:")[1].split("\r\n")[0])
                        end = head_end + 4 + length
                        if len(data) >= end:
                            pending[index] = data[end:]
                            break
                    more = sock.recv(65536)
                    if not more:
                        raise SystemExit("the server closed a connection")
                    data += more
    finally:
        for sock in socks:
            sock.close()


def callgrind_costs(path: Path) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Self cost (instructions) per object and per (object, function) of a callgrind dump."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}, "fl": {}}
    by_obj: Counter[str] = Counter()
    by_fn: Counter[tuple[str, str]] = Counter()
    obj = fn = "?"
    after_calls = False

    def resolve(kind: str, spec: str) -> str:
        match = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if not match:
            return spec
        if match.group(2) is not None:
            names[kind][match.group(1)] = match.group(2)
        return names[kind].get(match.group(1), spec)

    with open(path, encoding="utf-8", errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            if not line:
                continue
            key, eq, value = line.partition("=")
            if eq and key in ("ob", "cob"):
                name = resolve("ob", value)
                if key == "ob":
                    obj = name
            elif eq and key in ("fn", "cfn", "cfi", "cfl"):
                name = resolve("fn" if key.endswith("fn") else "fl", value)
                if key == "fn":
                    fn = name
            elif eq and key in ("fl", "fi", "fe"):
                resolve("fl", value)
            elif key == "calls" and eq:
                after_calls = True
            elif line[0].isdigit() or line[0] in "+-*":
                if after_calls:  # the inclusive cost of a call: not this function's own
                    after_calls = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    by_obj[obj] += int(parts[1])
                    by_fn[(obj, fn)] += int(parts[1])
    return by_obj, by_fn


def callgrind_one(row: HttpRow, loop: str, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / f"{row.key}-{loop}.callgrind"
    port = free_port()
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    server = Process(command + server_command(row, loop, port), None, "server under callgrind")
    try:
        server.wait_for_port(port, timeout=120)
        status, body, _ = fetch_raw(port, row.path)
        if status != 200 or body != row.body:
            raise SystemExit(f"{loop}: GET {row.path} answered {status} {body[:60]!r}")
        deterministic_load(port, row.path, args.connections, 20)  # warm-up
        subprocess.run(
            ["callgrind_control", "-z", str(server.pid)], capture_output=True, check=True
        )
        deterministic_load(port, row.path, args.connections, args.rounds)
        subprocess.run(
            ["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True
        )
        dumps: list[Path] = []
        deadline = time.monotonic() + 30
        while not dumps and time.monotonic() < deadline:
            time.sleep(0.5)
            dumps = sorted(tmp.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:] or 0))
        if not dumps:
            raise SystemExit(f"callgrind wrote no dump: {server.output()}")
        time.sleep(1.0)  # let callgrind finish writing the file
        by_obj, by_fn = callgrind_costs(dumps[-1])
        requests = args.connections * args.rounds
        return {
            "row": row.key,
            "loop": loop,
            "mode": "callgrind",
            "unit": "instructions",
            "per_request": sum(by_obj.values()) / requests,
            "requests": requests,
            "by_dso": dict(by_obj),
            "by_symbol": [[o, f, n] for (o, f), n in by_fn.most_common(3000)],
        }
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def breakdown_table(profiles: list[dict]) -> str:
    unit = profiles[0]["unit"]
    fmt = (lambda v: f"{v:.2f}") if unit == "µs" else (lambda v: f"{v:,.0f}")
    lines = [
        "| component | " + " | ".join(f"{p['loop']} {unit}/req (share)" for p in profiles) + " |",
        "| --- |" + " ---: |" * len(profiles),
    ]
    shares = []
    for profile in profiles:
        per_category: Counter[str] = Counter()
        for dso, count in profile["by_dso"].items():
            per_category[category(dso)] += count
        total = sum(per_category.values()) or 1
        shares.append({name: per_category[name] / total for name in CATEGORIES})
    for name in CATEGORIES:
        if profiles[0]["mode"] == "callgrind" and name == "kernel":
            continue
        cells = [
            f"{fmt(share[name] * profile['per_request'])} ({share[name]:.0%})"
            for share, profile in zip(shares, profiles, strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| **total per request** | "
        + " | ".join(f"**{fmt(p['per_request'])}**" for p in profiles)
        + " |"
    )
    if profiles[0]["mode"] == "perf":
        lines.append(
            "| of which user + system (/proc) | "
            + " | ".join(
                f"{p['user_us_per_request']:.2f} + {p['sys_us_per_request']:.2f}" for p in profiles
            )
            + " |"
        )
        lines.append(
            "| requests/s while sampled | "
            + " | ".join(f"{p['requests_per_s'] / 1e3:.1f}k" for p in profiles)
            + " |"
        )
    return "\n".join(lines)


def top_table(profiles: list[dict], top: int) -> str:
    """The symbols whose cost per request differs most between the first and the last loop."""
    unit = profiles[0]["unit"]
    per_request = []
    for profile in profiles:
        total = sum(profile["by_dso"].values()) or 1
        scale = profile["per_request"] / total
        per_request.append(
            {(os.path.basename(o), s): n * scale for o, s, n in profile["by_symbol"]}
        )
    keys = set().union(*per_request)
    first, last = per_request[0], per_request[-1]
    ranked = sorted(keys, key=lambda k: -abs(last.get(k, 0.0) - first.get(k, 0.0)))[:top]
    fmt = (lambda v: f"{v:.3f}") if unit == "µs" else (lambda v: f"{v:,.0f}")
    names = [p["loop"] for p in profiles]
    lines = [
        "| object | symbol | " + " | ".join(names) + f" | {names[-1]} − {names[0]} |",
        "| --- | --- |" + " ---: |" * (len(names) + 1),
    ]
    for obj, symbol in ranked:
        cells = [fmt(table.get((obj, symbol), 0.0)) for table in per_request]
        delta = last.get((obj, symbol), 0.0) - first.get((obj, symbol), 0.0)
        lines.append(
            f"| {obj[:40]} | `{symbol[:70]}` | " + " | ".join(cells) + f" | {delta:+,.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--mode", choices=("perf", "callgrind"), default="perf")
    servers = sorted(key for key, row in ROWS_BY_KEY.items() if row.kind != "client")
    parser.add_argument("--row", default="aiohttp_plaintext", choices=servers)
    parser.add_argument(
        "--loops", default="uvloop,ferroloop", help=f"subset of {','.join(KNOWN_LOOPS)}"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="perf: seconds sampled")
    parser.add_argument("--frequency", type=int, default=2999, help="perf: samples per second")
    parser.add_argument(
        "--rounds", type=int, default=250, help="callgrind: measured rounds (default 250)"
    )
    parser.add_argument(
        "--connections", type=int, help="concurrent connections (default: 32 perf, 8 callgrind)"
    )
    parser.add_argument("--top", type=int, default=0, help="list the N most different symbols")
    parser.add_argument("--json", type=Path, help="write the profiles here")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    if args.connections is None:
        args.connections = 32 if args.mode == "perf" else 8
    tool = "perf" if args.mode == "perf" else "valgrind"
    if shutil.which(tool) is None:
        package = "linux-perf" if tool == "perf" else "valgrind"
        print(f"{tool} not found: apt-get install {package}", file=sys.stderr)
        return 2
    row = ROWS_BY_KEY[args.row]
    wrk = find_wrk(None) if args.mode == "perf" else None
    if args.mode == "perf" and wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    pin = (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else None
    env = Env(wrk, args.connections, args.seconds, 1.0, pin, 60.0)
    profiles = []
    with tempfile.TemporaryDirectory(prefix="profile-http-") as tmp:
        for loop in parse_loop_names(args.loops):
            print(f"profiling {row.key} on {loop} ({args.mode}) ...", file=sys.stderr, flush=True)
            try:
                if args.mode == "perf":
                    profiles.append(perf_one(row, loop, args, env, Path(tmp)))
                else:
                    profiles.append(callgrind_one(row, loop, args, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 -- report the loop as n/a, go on
                print(f"  {loop}: n/a ({type(exc).__name__}: {exc})", file=sys.stderr)
    if not profiles:
        return 1
    print(f"# where the CPU goes per request: {row.title}\n")
    if args.mode == "perf":
        print(
            f"perf record -F {args.frequency}, {args.seconds:g} s per loop under wrk -t1 "
            f"-c{args.connections}"
            + (f"; server on CPU {pin[0]}, wrk on CPU {pin[1]}" if pin else "")
            + ". µs per request = share of the samples × CPU time per request (/proc/<pid>/stat "
            "over the same window).\n"
        )
    else:
        print(
            f"callgrind: user-space instructions per request over {args.rounds} rounds × "
            f"{args.connections} keep-alive connections (one request on every connection, then "
            "every response read), counted after a warm-up; no kernel time.\n"
        )
    print(breakdown_table(profiles))
    if args.top:
        print(f"\n## the {args.top} symbols that differ most ({profiles[0]['unit']} per request)\n")
        print(top_table(profiles, args.top))
    if args.json:
        args.json.write_text(json.dumps(profiles, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
