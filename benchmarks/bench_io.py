"""Side-by-side I/O benchmarks: name resolution and a TCP echo server on every loop.

Issue 4 gives ferroloop two I/O targets: numeric `getaddrinfo` answered in-process (≥ 10× stock
asyncio, which goes through the default executor), and socket coroutines that serve an echo
server with less CPU per request than uvloop (≥ 1.5×) and rloop (≥ 1×). This script checks both
in the same style as bench_core.py, with the machinery they share (harness.py), except that a
workload times its own window: all loops in one process, R interleaved rounds with the loop
order rotated each round, a fresh loop per measurement, medians, ratios to uvloop, a spread
table, and a correctness check in every workload, so a broken loop never produces a fast number.

Why the echo rows look the way they do:

- The server is the loop under test, in this process, written with `loop.sock_accept`,
  `loop.sock_recv` and `loop.sock_sendall` (one task per connection), because those are the
  socket coroutines issue 4 adds. Transports and protocols are issue 5.
- The load comes from a separate process, `echo-client` (crates/ferroloop-bench, Rust, one
  thread per connection). In this process it would share the GIL and the CPU-time counter with
  the server. Written in Python, it would be the bottleneck itself.
- The timed window is the server's view, from the first accepted connection until every
  connection has closed. Both wall time and this process's CPU time (`time.process_time()`,
  every thread) are taken over that window. On a 2-core machine the client can saturate before
  the server does, so requests per wall second partly measure the client. Requests per server
  CPU-second are the figure issue 4's targets use.
- By default the server runs on one CPU and the client on another. When the scheduler placed
  them, client threads kept landing on the server's core, and the runs switched between two
  regimes: the server preempted by its own load and reading requests that were already queued,
  or the server alone and waking once per request. asyncio's CPU per request differed by up to
  4× between the two. Pinning gave clearly steadier rounds. `--no-pin` restores the scheduler's
  choice.
- Correctness: the client compares every echo byte for byte and requires a clean EOF. The
  server checks that each connection echoed exactly R × S bytes, and that the client reported
  C × R requests and no error.

    python benchmarks/bench_io.py                   # 5 rounds, all rows, all loops
    python benchmarks/bench_io.py --quick           # 2 rounds, small N: a smoke run
    python benchmarks/bench_io.py --only tcp_echo_1k --loops uvloop,ferroloop --json out.json

The echo rows need the client binary: `cargo build --release -p ferroloop-bench`, or run
everything through `bash scripts/bench.sh io [options]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import socket
import sys
import threading
from pathlib import Path

from harness import (
    CheckFailed,
    ClientRun,
    Clock,
    Env,
    IoRow,
    Results,
    Timed,
    add_list_option,
    add_standard_options,
    exit_status,
    expect,
    have_binary,
    list_rows,
    loops_and_machine,
    method_line,
    number,
    parse_standard_args,
    per_request_table,
    pin_cpus,
    pin_note,
    print_failures,
    print_header,
    print_rate_tables,
    print_spreads,
    release_binary,
    report_unavailable,
    run_config,
    run_windowed,
    select_rows,
    spawn_client,
    write_json,
)

Loop = asyncio.AbstractEventLoop

RECV_SIZE = 65536  # the server's sock_recv buffer, as in the issue
GAI_PORT = 8080


def timed_run(loop: Loop, coro: object) -> tuple[object, Clock]:
    start = Clock.now()
    result = loop.run_until_complete(coro)  # type: ignore[arg-type]
    return result, Clock.now() - start


# --------------------------------------------------------------------------------------------
# getaddrinfo: N sequential awaits in one coroutine, each result compared with the blocking call
# --------------------------------------------------------------------------------------------


def getaddrinfo_numeric(host: str, loop: Loop, n: int, env: Env) -> Timed:
    expected = socket.getaddrinfo(host, GAI_PORT, type=socket.SOCK_STREAM)

    async def resolve_all() -> tuple[int, object]:
        getaddrinfo = loop.getaddrinfo
        wrong, first_wrong = 0, None
        for _ in range(n):
            infos = await getaddrinfo(host, GAI_PORT, type=socket.SOCK_STREAM)
            if infos != expected:
                wrong += 1
                first_wrong = infos if first_wrong is None else first_wrong
        return wrong, first_wrong

    (wrong, first_wrong), window = timed_run(loop, resolve_all())  # type: ignore[misc]
    expect(
        wrong == 0,
        f"{wrong} of {n} results differ from socket.getaddrinfo: got {first_wrong!r}, "
        f"expected {expected!r}",
    )
    # Not timed: join the executor threads stock asyncio (or a fallback path) started.
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_default_executor())
    return Timed(n, window)


# --------------------------------------------------------------------------------------------
# TCP echo: sock_* server on the loop under test, echo-client in another process
# --------------------------------------------------------------------------------------------


def tcp_echo(size: int, loop: Loop, requests: int, env: Env) -> Timed:
    assert env.client is not None, "the echo rows need the client binary"
    connections = env.connections
    saved_affinity = os.sched_getaffinity(0) if env.pin else None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    tasks: list[asyncio.Task[object]] = []
    run: ClientRun | None = None
    waiter: threading.Thread | None = None
    clocks: dict[str, Clock] = {}
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(max(128, connections))
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def echo(conn: socket.socket) -> int:
            recv, sendall = loop.sock_recv, loop.sock_sendall
            echoed = 0
            try:
                while data := await recv(conn, RECV_SIZE):
                    echoed += len(data)
                    await sendall(conn, data)
            finally:
                conn.close()
            return echoed

        async def serve() -> list[int]:
            echoes = []
            for index in range(connections):
                conn, _ = await loop.sock_accept(listener)
                if index == 0:
                    clocks["start"] = Clock.now()
                accepted.append(conn)
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                echoes.append(loop.create_task(echo(conn)))
                tasks.append(echoes[-1])
            echoed = await asyncio.gather(*echoes)
            clocks["end"] = Clock.now()
            return echoed

        server = loop.create_task(serve())
        tasks.append(server)
        command = [
            str(env.client),
            f"127.0.0.1:{port}",
            str(connections),
            str(size),
            str(requests),
            "--timeout",
            f"{env.timeout:g}",
        ]
        run = ClientRun(spawn_client(command, env.pin))

        def cancel_server() -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(server.cancel)

        waiter = run.wait_in_thread(cancel_server)
        try:
            echoed = loop.run_until_complete(server)
        except (Exception, asyncio.CancelledError) as exc:
            # The client waiter cancels the server when the client fails; a server error (say,
            # a reset connection) usually has a client error behind it too. Report both.
            if run.exited.wait(2.0) and run.process.returncode != 0:
                raise CheckFailed(
                    f"echo client failed (exit {run.process.returncode}): "
                    f"{run.report().get('error')}; server: {type(exc).__name__}: {exc}"
                ) from exc
            raise

        # The client exits right after its last connection sees EOF.
        if not run.exited.wait(10.0):
            raise CheckFailed("echo client still running 10 s after the server finished")
        report = run.report()
        expected_requests = connections * requests
        expect(
            run.process.returncode == 0 and report.get("error") is None,
            f"echo client failed (exit {run.process.returncode}): {report.get('error')}",
        )
        expect(
            report.get("requests") == expected_requests,
            f"echo client did {report.get('requests')} requests, expected {expected_requests}",
        )
        expect(
            report.get("closed_by_server", connections) == connections,
            f"the server closed {report.get('closed_by_server')} of {connections} connections",
        )
        expect(
            echoed == [requests * size] * connections,
            f"server echoed {echoed} bytes per connection, expected {requests * size} on each "
            f"of {connections}",
        )
        return Timed(
            expected_requests,
            clocks["end"] - clocks["start"],
            number(report, "seconds"),
            number(report, "latency_mean_us"),
            number(report, "latency_p99_us"),
        )
    finally:
        if run is not None and run.process.poll() is None:
            run.process.kill()
        if any(not task.done() for task in tasks) and not loop.is_closed():
            # After a failure: cancel what is left and let it unwind, so no "Task was destroyed
            # but it is pending" noise follows the failure report. Bounded, and best effort: the
            # loop may be the thing that is broken.
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait(tasks, timeout=2.0))
        if waiter is not None:
            waiter.join(5.0)
        for conn in accepted:
            conn.close()
        listener.close()
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

ECHO_CONNECTIONS = 8  # default of --connections


def echo_row(key: str, size: int, label: str, requests: int) -> IoRow:
    return IoRow(
        key,
        f"TCP echo {label}",
        functools.partial(tcp_echo, size),
        requests,
        f"one {size}-byte request echoed (client write_all, server sock_recv/sock_sendall, "
        "client read_exact)",
        needs_client=True,
    )


ROWS: tuple[IoRow, ...] = (
    IoRow(
        "getaddrinfo_numeric",
        "getaddrinfo 127.0.0.1 (numeric)",
        functools.partial(getaddrinfo_numeric, "127.0.0.1"),
        10_000,
        'await loop.getaddrinfo("127.0.0.1", 8080, type=SOCK_STREAM)',
    ),
    IoRow(
        "getaddrinfo_numeric_v6",
        "getaddrinfo ::1 (numeric)",
        functools.partial(getaddrinfo_numeric, "::1"),
        10_000,
        'await loop.getaddrinfo("::1", 8080, type=SOCK_STREAM)',
    ),
    echo_row("tcp_echo_1k", 1024, "1 KiB", 4_000),
    echo_row("tcp_echo_10k", 10 * 1024, "10 KiB", 4_000),
    echo_row("tcp_echo_100k", 100 * 1024, "100 KiB", 1_500),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def target_lines(results: Results, rows: list[IoRow]) -> list[str]:
    """Issue 4's targets, stated as ratios of medians from this run."""

    def ratio(row: str, top: str, bottom: str, kind: str) -> float | None:
        if (row, top) in results.failures or (row, bottom) in results.failures:
            return None
        a, b = results.median(row, top, kind), results.median(row, bottom, kind)
        return None if a is None or b is None else a / b

    lines = []
    for row in rows:
        if row.key.startswith("getaddrinfo"):
            checks = [("asyncio", "wall", 10.0)]
        else:
            checks = [("uvloop", "cpu", 1.5), ("rloop", "cpu", 1.0)]
        for other, kind, goal in checks:
            value = ratio(row.key, "ferroloop", other, kind)
            if value is None:
                continue
            verdict = "met" if value >= goal else "NOT met"
            unit = "wall" if kind == "wall" else "server CPU"
            lines.append(
                f"- {row.key}: ferroloop ÷ {other} per {unit} second = {value:.2f}× "
                f"(target ≥ {goal:g}×): {verdict}"
            )
    return lines


def default_client_path() -> Path:
    return release_binary("echo-client")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved I/O benchmarks: asyncio vs uvloop vs rloop vs ferroloop.",
    )
    add_standard_options(parser)
    parser.add_argument(
        "--client",
        type=Path,
        help="echo-client binary (default: target/release/echo-client, or under $CARGO_TARGET_DIR)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=ECHO_CONNECTIONS,
        help=f"echo client connections, one thread each (default {ECHO_CONNECTIONS})",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="echo rows: leave CPU placement to the scheduler (default: server on the first "
        "usable CPU, client on the second)",
    )
    add_list_option(parser)
    return parse_standard_args(parser, argv, ("--connections",))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_rows(ROWS, 24, 34, 7)
    rows = select_rows(ROWS, args.only)

    client: Path | None = None
    if any(row.needs_client for row in rows):
        client = (args.client or default_client_path()).resolve()
        advice = (
            " (bash scripts/bench.sh io does), pass --client PATH, or leave out the tcp_echo "
            "rows with --only"
        )
        if not have_binary(client, "echo client", advice):
            return 2
    pin = pin_cpus(args.no_pin)

    specs, info = loops_and_machine(args.loops)
    print_header(
        "ferroloop I/O benchmarks",
        info,
        f"{method_line(args)} "
        f"TCP echo: server = the loop under test (sock_accept/sock_recv/sock_sendall, "
        f"one task per connection) in this process; client = echo-client, a separate process "
        f"with {args.connections} connections (one thread each); timed from the first accept "
        f"to the last close; " + pin_note(pin, "server", "client"),
    )
    if not report_unavailable(specs):
        return 2

    env = Env(client, args.connections, pin, args.timeout)
    results = run_windowed(rows, specs, args.rounds, args.scale, args.timeout, env)

    print_rate_tables(
        results,
        rows,
        specs,
        "ops per wall second (median; echo: requests per second)",
        "ops per CPU second of the benchmark process (time.process_time, median; "
        "echo: requests per server CPU-second)",
    )
    print_spreads(results, rows, specs, args.rounds, "ops/s")
    if any(row.needs_client for row in rows):
        print("\n## TCP echo: µs of server CPU per request, user + system (getrusage, median)\n")
        print(per_request_table(results, rows, specs))
    targets = target_lines(results, rows)
    if targets:
        print("\n## issue 4 targets (ratios of the medians above)\n")
        print("\n".join(targets))
    print_failures(results, rows)

    if args.json:
        config = {
            **run_config(args, rows),
            "echo_connections": args.connections,
            "echo_pin_server_client_cpus": list(pin) if pin else None,
            "echo_recv_size": RECV_SIZE,
            "echo_client": str(client) if client else None,
        }
        write_json(args.json, info, config, specs, rows, results)

    return exit_status(bool(results.failures), args.loops, specs)


if __name__ == "__main__":
    sys.exit(main())
