"""Side-by-side TLS benchmarks: a TLS echo server and TLS handshakes on every loop.

Issue 7 asks for TLS echo at 1 KiB and 16 KiB and handshakes per second beside uvloop and
asyncio, with ferroloop at ≥ 1.2× uvloop. Same method as bench_io.py, with the measurement,
tables and JSON writer they share (harness.py): every loop in one process, R interleaved rounds
with the loop order rotated each round, a fresh loop per measurement, medians, ratios to uvloop,
and a correctness check in every workload.

- The server is the loop under test, in this process: ``loop.create_server(..., ssl=ctx)``
  with a protocol that writes back what it receives (``data_received`` → ``write``). That is
  the path an HTTPS server takes: the loop's TLS (asyncio's ``SSLProtocol`` on ferroloop and
  asyncio, uvloop's Cython port of it on uvloop) over the loop's socket transport.
- The load comes from a separate process: this script in ``--client-mode``, on uvloop (the
  fastest TLS client among the loops; asyncio if uvloop is missing), pinned to the other CPU.
  The client is the same for every loop, so the loops are compared on the same load. It checks
  every echo byte for byte.
- The timed window is the server's: from the first accepted connection until the last
  ``connection_lost``. Requests (or handshakes) per server CPU-second are the key figure: on 2
  cores the client process can saturate first, and then per wall second partly measures it.
- Handshakes: the client opens ``N`` connections, ``--connections`` at a time; each does a
  full TLS handshake (no session resumption), echoes one byte and closes (close_notify both
  ways). The server's certificate is ECDSA P-256 (trustme's default), TLS 1.3.
- rloop has no TLS (``ssl=`` raises ``NotImplementedError``): its column shows n/a with the
  reason.

    python benchmarks/bench_tls.py                  # 5 rounds, all rows, all loops
    python benchmarks/bench_tls.py --quick          # 2 rounds, small N: a smoke run
    python benchmarks/bench_tls.py --only tls_echo_1k --loops uvloop,ferroloop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    CheckFailed,
    Clock,
    IoRow,
    Results,
    Timed,
    add_list_option,
    add_standard_options,
    expect,
    list_rows,
    method_line,
    parse_standard_args,
    per_request_table,
    pin_cpus,
    print_header,
    print_rate_tables,
    print_spreads,
    report_unavailable,
    run_config,
    run_windowed,
    select_rows,
    spawn_client,
    write_json,
)
from loop_registry import (
    LoopSpec,
    machine_info,
    parse_loop_names,
    resolve_loops,
)

Loop = asyncio.AbstractEventLoop
HOST = "127.0.0.1"
NAME = "localhost"  # the name on the server certificate
CONNECTIONS = 8  # default of --connections


# --------------------------------------------------------------------------------------------
# Certificates: a CA and a server certificate made at start (trustme); only the CA's
# certificate is written to a file, for the client process. No key is stored.
# --------------------------------------------------------------------------------------------


@dataclass
class Certs:
    server_ctx: ssl.SSLContext
    cafile: str

    @classmethod
    def make(cls, tmpdir: str) -> Certs:
        import trustme  # a test/bench dependency (requirements-dev.txt)

        ca = trustme.CA()
        cert = ca.issue_cert(NAME, HOST)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        cafile = os.path.join(tmpdir, "ca.pem")
        ca.cert_pem.write_to_path(cafile)
        return cls(ctx, cafile)


@dataclass(frozen=True)
class Env:
    certs: Certs
    connections: int = CONNECTIONS
    pin: tuple[int, int] | None = None
    timeout: float = 60.0


# --------------------------------------------------------------------------------------------
# The server (loop under test)
# --------------------------------------------------------------------------------------------


@dataclass
class ServerState:
    expected: int  # connections
    accepted: int = 0
    lost: int = 0
    echoed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    start: Clock | None = None
    done: asyncio.Future[None] | None = None


class EchoServerProtocol(asyncio.Protocol):
    __slots__ = ("echoed", "state", "transport")

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.echoed = 0
        if state.start is None:
            state.start = Clock.now()
        state.accepted += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.echoed += len(data)
        self.transport.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        state.lost += 1
        state.echoed.append(self.echoed)
        if exc is not None:
            state.errors.append(f"{type(exc).__name__}: {exc}")
        if state.lost == state.expected and state.done is not None and not state.done.done():
            state.done.set_result(None)


def client_command(mode: str, port: int, env: Env, count: int, size: int) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--client-mode", mode,
        "--port", str(port), "--cafile", env.certs.cafile,
        "--connections", str(env.connections), "--count", str(count), "--size", str(size),
        "--timeout", f"{env.timeout:g}",
    ]


def serve_tls(mode: str, size: int, loop: Loop, n: int, env: Env) -> Timed:
    """Serve one client run: ``echo`` (``connections`` × ``n`` requests of ``size`` bytes) or
    ``handshake`` (``n`` connections of one 1-byte echo each)."""
    if mode == "echo":
        connections, expected_ops, per_conn = env.connections, env.connections * n, n * size
    else:
        connections, expected_ops, per_conn = n, n, 1
    state = ServerState(expected=connections)
    saved_affinity = os.sched_getaffinity(0) if env.pin else None
    process: subprocess.Popen[str] | None = None
    server = None
    try:
        state.done = loop.create_future()
        server = loop.run_until_complete(
            loop.create_server(
                functools.partial(EchoServerProtocol, state), HOST, 0,
                ssl=env.certs.server_ctx, backlog=max(128, env.connections),
            )
        )
        port = server.sockets[0].getsockname()[1]
        process = spawn_client(client_command(mode, port, env, n, size), env.pin)
        out: dict[str, str] = {}

        def wait_client() -> None:
            out["stdout"], out["stderr"] = process.communicate()
            if process.returncode != 0:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(
                        lambda: state.done.done() or state.done.set_exception(  # type: ignore[union-attr]
                            CheckFailed(f"client exited with {process.returncode}: "
                                        f"{out['stderr'].strip()[-400:]}")
                        )
                    )

        waiter = threading.Thread(target=wait_client, daemon=True)
        waiter.start()
        loop.run_until_complete(state.done)
        end = Clock.now()
        waiter.join(10)
        expect(not waiter.is_alive(), "client still running 10 s after the server finished")
        lines = [line for line in out.get("stdout", "").splitlines() if line.strip()]
        try:
            report = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise CheckFailed(f"client printed no report: {out.get('stderr', '')[-400:]}") from None
        expect(report.get("error") is None, f"client failed: {report.get('error')}")
        expect(report.get("ops") == expected_ops,
               f"client did {report.get('ops')} ops, expected {expected_ops}")
        expect(not state.errors, f"server connections failed: {state.errors[:3]}")
        expect(state.echoed == [per_conn] * connections,
               f"server echoed {sorted(set(state.echoed))} bytes per connection, "
               f"expected {per_conn} on each of {connections}")
        assert state.start is not None
        return Timed(expected_ops, end - state.start, float(report["seconds"]))
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        if server is not None and not loop.is_closed():
            server.close()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 2))
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


# --------------------------------------------------------------------------------------------
# The client (separate process)
# --------------------------------------------------------------------------------------------


class EchoClientProtocol(asyncio.Protocol):
    def __init__(self, payload: bytes, requests: int) -> None:
        self.payload = payload
        self.size = len(payload)
        self.left = requests
        self.done = 0
        self.buf = bytearray()
        self.error: str | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if len(buf) < self.size:
            return
        assert self.transport is not None
        if buf != self.payload:
            self.error = "echo differs from what was sent"
            self.transport.abort()
            return
        buf.clear()
        self.done += 1
        self.left -= 1
        if self.left:
            self.transport.write(self.payload)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
        if not self.lost.done():
            self.lost.set_result(None)


async def client_main(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(cafile=args.cafile)

    async def connect(payload: bytes, requests: int) -> EchoClientProtocol:
        _, proto = await loop.create_connection(
            lambda: EchoClientProtocol(payload, requests), HOST, args.port, ssl=ctx,
            server_hostname=NAME,
        )
        return proto  # type: ignore[return-value]

    t0 = time.perf_counter()
    if args.client_mode == "echo":
        protos = [await connect(os.urandom(args.size), args.count)
                  for _ in range(args.connections)]
        for proto in protos:
            proto.start()
        await asyncio.gather(*(proto.lost for proto in protos))
    else:
        protos = []

        async def worker(k: int) -> None:
            for _ in range(k):
                proto = await connect(b"x", 1)
                proto.start()
                await proto.lost
                protos.append(proto)

        share, extra = divmod(args.count, args.connections)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(args.connections)))
    seconds = time.perf_counter() - t0
    errors = [proto.error for proto in protos if proto.error]
    return {
        "ops": sum(proto.done for proto in protos),
        "seconds": seconds,
        "error": errors[0] if errors else None,
        "loop": type(loop).__module__,
    }


def run_client(args: argparse.Namespace) -> int:
    try:
        import uvloop

        new_loop = uvloop.new_event_loop
    except ImportError:
        new_loop = asyncio.new_event_loop
    loop = new_loop()
    try:
        report = loop.run_until_complete(asyncio.wait_for(client_main(args), args.timeout))
    except BaseException as exc:  # noqa: BLE001 - reported to the server process
        report = {"ops": 0, "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        loop.close()
    print(json.dumps(report))
    return 0 if report.get("error") is None else 1


# --------------------------------------------------------------------------------------------
# Rows and loops
# --------------------------------------------------------------------------------------------


ROWS: tuple[IoRow, ...] = (
    IoRow("tls_echo_1k", "TLS echo 1 KiB", functools.partial(serve_tls, "echo", 1024), 3_000,
          "one 1024-byte request echoed over TLS (protocol data_received → write)",
          needs_client=True),
    IoRow("tls_echo_16k", "TLS echo 16 KiB", functools.partial(serve_tls, "echo", 16 * 1024),
          1_000, "one 16384-byte request echoed over TLS", needs_client=True),
    IoRow("tls_handshake", "TLS handshakes", functools.partial(serve_tls, "handshake", 1),
          1_000, "one connection: full TLS 1.3 handshake (ECDSA P-256), 1-byte echo, "
          "close_notify both ways", needs_client=True),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


def check_tls_support(spec: LoopSpec, certs: Certs) -> LoopSpec:
    """A loop whose ``create_server(ssl=...)`` does not work is shown as n/a, with why."""
    if not spec.available:
        return spec
    assert spec.factory is not None
    loop = spec.factory()
    try:
        server = loop.run_until_complete(
            loop.create_server(asyncio.Protocol, HOST, 0, ssl=certs.server_ctx)
        )
        server.close()
        loop.run_until_complete(server.wait_closed())
        return spec
    except Exception as exc:  # noqa: BLE001 - any failure means no TLS
        return LoopSpec(spec.name, None, spec.version,
                        f"no TLS (create_server(ssl=...) raises {type(exc).__name__}{': ' if str(exc) else ''}{exc})")
    finally:
        loop.close()


def target_lines(results: Results, rows: list[IoRow]) -> list[str]:
    lines = []
    for row in rows:
        for kind, unit in (("cpu", "server CPU second"), ("wall", "wall second")):
            a = results.median(row.key, "ferroloop", kind)
            b = results.median(row.key, "uvloop", kind)
            if a is None or b is None:
                continue
            verdict = "met" if a / b >= 1.2 else "NOT met"
            lines.append(f"- {row.key}: ferroloop ÷ uvloop per {unit} = {a / b:.2f}× "
                         f"(target ≥ 1.2×): {verdict}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved TLS benchmarks: asyncio vs uvloop vs rloop vs ferroloop.",
    )
    add_standard_options(parser, scale_help="multiply every N (default 1; 0.1 --quick)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help=f"client connections (handshakes: concurrency), default {CONNECTIONS}")
    parser.add_argument("--no-pin", action="store_true",
                        help="leave CPU placement to the scheduler (default: server on the "
                        "first usable CPU, client on the second)")
    add_list_option(parser)
    # The client process (internal).
    parser.add_argument("--client-mode", choices=("echo", "handshake"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    return parse_standard_args(parser, argv, ("--connections",))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_mode:
        return run_client(args)
    if args.list:
        return list_rows(ROWS, 16, 18, 6)
    rows = select_rows(ROWS, args.only)
    pin = pin_cpus(args.no_pin)

    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmpdir:
        certs = Certs.make(tmpdir)
        specs = [check_tls_support(spec, certs)
                 for spec in resolve_loops(parse_loop_names(args.loops))]
        info = machine_info(specs)
        print_header(
            "ferroloop TLS benchmarks",
            info,
            f"{method_line(args)} Server = the loop "
            f"under test (create_server(ssl=...), echo protocol) in this process; client = "
            f"this script on uvloop in a separate process, {args.connections} connections "
            f"(handshakes: {args.connections} at a time); timed from the first accept to the "
            f"last connection_lost; "
            + (f"server pinned to CPU {pin[0]}, client to CPU {pin[1]}." if pin
               else "CPU placement left to the scheduler."),
            machine_suffix=f" | {ssl.OPENSSL_VERSION}",
        )
        if not report_unavailable(specs, "n/a"):
            return 2
        env = Env(certs, args.connections, pin, args.timeout)
        results = run_windowed(rows, specs, args.rounds, args.scale, args.timeout, env)

    print_rate_tables(
        results,
        rows,
        specs,
        "ops per wall second (median; echo: requests/s, handshakes/s)",
        "ops per server CPU second (time.process_time of this process, median)",
    )
    print_spreads(results, rows, specs, args.rounds, "ops/s")
    print("\n## µs of server CPU per op, user + system (getrusage, median)\n")
    print(per_request_table(results, rows, specs))
    targets = target_lines(results, rows)
    if targets:
        print("\n## issue 7 target (ratios of the medians above)\n")
        print("\n".join(targets))
    if results.failures:
        print("\n## failures\n")
        for (row_key, loop_name), error in results.failures.items():
            print(f"- {row_key} on {loop_name}: {error}")
    if args.json:
        config = {
            **run_config(args, rows),
            "connections": args.connections,
            "pin_server_client_cpus": list(pin) if pin else None,
            "openssl": ssl.OPENSSL_VERSION,
        }
        write_json(args.json, info, config, specs, rows, results, say_where=False)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
