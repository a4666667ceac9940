"""Side-by-side UDP benchmarks: datagram endpoints on every loop, under load from a Rust peer.

Issue 9 asks for UDP ping-pong with 1-byte and 1400-byte datagrams and one-way datagram
throughput, with ferroloop at ≥ 1.2× uvloop. This script measures them in bench_io.py's way,
with the measurement code, records and tables they share (harness.py): all loops in one process,
R interleaved rounds with the loop order rotated each round, a fresh loop per measurement,
medians, ratios to uvloop, spread tables, and a correctness check in every workload, so a broken
loop never produces a fast number.

- The loop under test runs a `create_datagram_endpoint` endpoint on 127.0.0.1 with a plain
  `asyncio.DatagramProtocol`, in this process. The load is `udp-peer`
  (crates/ferroloop-bench, Rust) in another process, so it shares neither the GIL nor the
  CPU-time counter with the loop. As in bench_io.py, the loop runs on one CPU and the peer on
  another (`--no-pin` leaves placement to the scheduler). The peer is one thread on
  non-blocking sockets that spins while it waits: with blocking peer threads, their wake-ups
  were the bottleneck on a 2-CPU machine, and a faster loop only went idle more often.
- **Ping-pong** (`udp_pingpong_1`, `udp_pingpong_1400`): F flows (sockets of the peer, each
  connected to the endpoint, each with one request outstanding) send a datagram and wait for
  the echo, R times each; the endpoint is one unconnected socket that echoes every datagram
  to its sender with `transport.sendto(data, addr)`, as a DNS-style server does. The peer
  compares every answer byte for byte; the endpoint checks that it echoed F × R datagrams of
  S bytes.
- **One-way in** (`udp_recv_1400`): the peer sends N datagrams of 1400 bytes, numbered, to the
  endpoint, which acknowledges every 32nd (and the last) with the count so far; the peer never
  runs more than 256 datagrams ahead of the acknowledgements, and the endpoint's receive
  buffer is 4 MiB on every loop, so nothing is dropped. The endpoint checks that it got each
  number once and every datagram's size. On a 2-CPU machine the peer's sending (the kernel's
  loopback path runs in the sender) cannot keep a fast loop busy: a loop that empties its
  socket sleeps until the next datagram, and waking it costs the peer too. Datagrams per CPU
  second of the loop's process are the figure to compare here.
- **One-way out** (`udp_send_1400`): the reverse: after a hello from the peer, the endpoint
  sends N numbered datagrams with `sendto`, at most 32 ahead of the peer's acknowledgements
  (every 8th and the last; the peer's receive buffer is the default, so the window stays
  small), and the peer checks each one's number and payload.
- The timed window is the loop's view: from the first datagram it received to the last one
  it handled (ping-pong: the last echo sent; one-way: the last datagram or acknowledgement).
  Wall time and this process's CPU time (every thread) are taken over it.

    python benchmarks/bench_udp.py                  # 5 rounds, all rows, all loops
    python benchmarks/bench_udp.py --quick          # 2 rounds, small N: a smoke run
    python benchmarks/bench_udp.py --only udp_pingpong_1 --loops uvloop,ferroloop

The rows need the peer binary: `cargo build --release -p ferroloop-bench`.
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
from dataclasses import dataclass
from pathlib import Path

from harness import (
    CheckFailed,
    ClientRun,
    Clock,
    Env,
    IoRow,
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
    uvloop_target_lines,
    write_json,
)

Loop = asyncio.AbstractEventLoop

FLOWS = 8  # default of --flows: ping-pong flows (peer sockets)
ONE_WAY_SIZE = 1400
RECV_WINDOW, RECV_ACK_EVERY = 256, 32  # one-way in: the peer's window, the loop's ack period
SEND_WINDOW, SEND_ACK_EVERY = 32, 8  # one-way out: the loop's window, the peer's ack period
RECV_BUFFER = 4 * 1024 * 1024  # SO_RCVBUF of the endpoint (capped by net.core.rmem_max)


@dataclass
class _Window:
    """The loop's timed window, opened by the first datagram and closed by the last."""

    start: Clock | None = None
    end: Clock | None = None


def _with_peer(
    loop: Loop, env: Env, endpoint: asyncio.DatagramTransport, done: asyncio.Future[None],
    peer_args: list[str], expected: int,
) -> dict[str, object]:
    """Run the peer against ``endpoint`` until ``done``; the peer's checked JSON report."""
    assert env.client is not None, "the rows need the udp-peer binary"
    port = endpoint.get_extra_info("sockname")[1]
    mode, *rest = peer_args
    command = [
        str(env.client), mode, f"127.0.0.1:{port}", *rest, "--timeout", f"{env.timeout:g}",
    ]
    saved_affinity = os.sched_getaffinity(0) if env.pin else None
    run = ClientRun(spawn_client(command, env.pin))
    waiter: threading.Thread | None = None
    try:

        def fail() -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(
                    lambda: done.done() or done.set_exception(CheckFailed("peer failed"))
                )

        waiter = run.wait_in_thread(fail)
        try:
            loop.run_until_complete(done)
        except CheckFailed:
            run.exited.wait(2.0)
            raise CheckFailed(
                f"udp-peer failed (exit {run.process.returncode}): {run.report().get('error')}"
            ) from None
        if not run.exited.wait(10.0):
            raise CheckFailed("udp-peer still running 10 s after the loop finished")
        report = run.report()
        expect(
            run.process.returncode == 0 and report.get("error") is None,
            f"udp-peer failed (exit {run.process.returncode}): {report.get('error')}",
        )
        expect(
            report.get("requests") == expected,
            f"udp-peer moved {report.get('requests')} datagrams, expected {expected}",
        )
        return report
    finally:
        if run.process.poll() is None:
            run.process.kill()
        if waiter is not None:
            waiter.join(5.0)
        endpoint.close()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0))  # let connection_lost run
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


def _endpoint(loop: Loop, protocol: asyncio.DatagramProtocol) -> asyncio.DatagramTransport:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
    sock.bind(("127.0.0.1", 0))
    transport, _ = loop.run_until_complete(
        loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    )
    return transport  # type: ignore[return-value]


def udp_pingpong(size: int, loop: Loop, requests: int, env: Env) -> Timed:
    flows = env.connections
    total = flows * requests
    window = _Window()
    done: asyncio.Future[None] = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        count = 0
        nbytes = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.sendto = transport.sendto  # type: ignore[attr-defined]

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.sendto(data, addr)
            if not self.count:
                window.start = Clock.now()
            self.count += 1
            self.nbytes += len(data)
            if self.count == total:
                window.end = Clock.now()
                done.set_result(None)

    echo = Echo()
    endpoint = _endpoint(loop, echo)
    report = _with_peer(
        loop, env, endpoint, done, ["pingpong", str(flows), str(size), str(requests)], total
    )
    expect(
        echo.count == total and echo.nbytes == total * size,
        f"echoed {echo.count} datagrams ({echo.nbytes} bytes), expected {total} of {size} bytes",
    )
    assert window.start is not None and window.end is not None
    return Timed(total, window.end - window.start, number(report, "seconds"))


def udp_recv(size: int, loop: Loop, n: int, env: Env) -> Timed:
    window = _Window()
    done: asyncio.Future[None] = loop.create_future()

    class Receiver(asyncio.DatagramProtocol):
        count = 0
        seq_sum = 0
        wrong_size = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.sendto = transport.sendto  # type: ignore[attr-defined]

        def datagram_received(self, data: bytes, addr: object) -> None:
            if not self.count:
                window.start = Clock.now()
            self.count += 1
            self.seq_sum += int.from_bytes(data[:8], "little")
            if len(data) != size:
                self.wrong_size += 1
            if self.count % RECV_ACK_EVERY == 0 or self.count == n:
                self.sendto(self.count.to_bytes(8, "little"), addr)
            if self.count == n:
                window.end = Clock.now()
                done.set_result(None)

    receiver = Receiver()
    endpoint = _endpoint(loop, receiver)
    _with_peer(
        loop, env, endpoint, done,
        ["blast", str(size), str(n), "--window", str(RECV_WINDOW)], n,
    )
    expect(
        receiver.count == n and receiver.seq_sum == n * (n - 1) // 2,
        f"received {receiver.count} datagrams (numbers summing to {receiver.seq_sum}), "
        f"expected each of 0..{n - 1} once",
    )
    expect(receiver.wrong_size == 0, f"{receiver.wrong_size} datagrams of the wrong size")
    assert window.start is not None and window.end is not None
    return Timed(n, window.end - window.start)


def udp_send(size: int, loop: Loop, n: int, env: Env) -> Timed:
    window = _Window()
    done: asyncio.Future[None] = loop.create_future()
    tail = bytes(i % 251 for i in range(8, size))

    class Sender(asyncio.DatagramProtocol):
        sent = 0
        acked = 0
        peer: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.sendto = transport.sendto  # type: ignore[attr-defined]

        def datagram_received(self, data: bytes, addr: object) -> None:
            if self.peer is None:  # the peer's hello
                self.peer = addr
                window.start = Clock.now()
            else:
                self.acked = max(self.acked, int.from_bytes(data, "little"))
                if self.acked == n:
                    window.end = Clock.now()
                    done.set_result(None)
                    return
            sendto, peer, limit = self.sendto, self.peer, min(n, self.acked + SEND_WINDOW)
            sent = self.sent
            while sent < limit:
                sendto(sent.to_bytes(8, "little") + tail, peer)
                sent += 1
            self.sent = sent

    sender = Sender()
    endpoint = _endpoint(loop, sender)
    _with_peer(
        loop, env, endpoint, done,
        ["sink", str(size), str(n), "--ack-every", str(SEND_ACK_EVERY)], n,
    )
    expect(sender.sent == n, f"sent {sender.sent} datagrams, expected {n}")
    assert window.start is not None and window.end is not None
    return Timed(n, window.end - window.start)


ROWS: tuple[IoRow, ...] = (
    IoRow(
        "udp_pingpong_1",
        "UDP ping-pong 1 B",
        functools.partial(udp_pingpong, 1),
        10_000,
        "one 1-byte datagram echoed (peer send/recv per flow, loop datagram_received + sendto)",
        needs_client=True,
    ),
    IoRow(
        "udp_pingpong_1400",
        "UDP ping-pong 1400 B",
        functools.partial(udp_pingpong, 1400),
        10_000,
        "one 1400-byte datagram echoed (as above)",
        needs_client=True,
    ),
    IoRow(
        "udp_recv_1400",
        "UDP one-way in 1400 B",
        functools.partial(udp_recv, ONE_WAY_SIZE),
        150_000,
        "one 1400-byte datagram received (datagram_received; an ack sendto every 16th)",
        needs_client=True,
    ),
    IoRow(
        "udp_send_1400",
        "UDP one-way out 1400 B",
        functools.partial(udp_send, ONE_WAY_SIZE),
        150_000,
        "one 1400-byte datagram sent (transport.sendto; an ack received every 8th)",
        needs_client=True,
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


def default_peer_path() -> Path:
    return release_binary("udp-peer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved UDP benchmarks: asyncio vs uvloop vs rloop vs ferroloop.",
    )
    add_standard_options(parser)
    parser.add_argument(
        "--peer", type=Path,
        help="udp-peer binary (default: target/release/udp-peer, or under $CARGO_TARGET_DIR)",
    )
    parser.add_argument(
        "--flows", type=int, default=FLOWS,
        help=f"ping-pong flows, one peer socket each (default {FLOWS})",
    )
    parser.add_argument(
        "--no-pin", action="store_true",
        help="leave CPU placement to the scheduler (default: loop on the first usable CPU, "
        "peer on the second)",
    )
    add_list_option(parser)
    return parse_standard_args(parser, argv, ("--flows",))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_rows(ROWS, 20, 26, 7)
    rows = select_rows(ROWS, args.only)

    peer = (args.peer or default_peer_path()).resolve()
    if not have_binary(peer, "udp-peer", ", or pass --peer PATH"):
        return 2
    pin = pin_cpus(args.no_pin)

    specs, info = loops_and_machine(args.loops)
    print_header(
        "ferroloop UDP benchmarks",
        info,
        f"{method_line(args)} "
        f"Endpoint = the loop under test (create_datagram_endpoint on 127.0.0.1, one "
        f"unconnected socket) in this process; peer = udp-peer, a separate process "
        f"(one spinning thread; ping-pong: {args.flows} flows); timed from the loop's first "
        f"datagram to its last; " + pin_note(pin, "loop", "peer")
    )
    if not report_unavailable(specs):
        return 2

    env = Env(peer, args.flows, pin, args.timeout)
    results = run_windowed(rows, specs, args.rounds, args.scale, args.timeout, env)

    print_rate_tables(
        results,
        rows,
        specs,
        "datagrams per wall second (median; ping-pong: requests per second)",
        "datagrams per CPU second of the loop's process (time.process_time, median)",
    )
    print_spreads(results, rows, specs, args.rounds, "rates")
    print("\n## µs of the loop process's CPU per datagram, user + system (getrusage, median)\n")
    print(per_request_table(results, rows, specs))
    targets = uvloop_target_lines(
        results, rows, 1.2, (("cpu", "CPU second"), ("wall", "wall second"))
    )
    if targets:
        print("\n## issue 9 target (ratios of the medians above)\n")
        print("\n".join(targets))
    print_failures(results, rows)

    if args.json:
        config = {
            **run_config(args, rows),
            "pingpong_flows": args.flows,
            "pin_loop_peer_cpus": list(pin) if pin else None,
            "recv_window": RECV_WINDOW,
            "recv_ack_every": RECV_ACK_EVERY,
            "send_window": SEND_WINDOW,
            "send_ack_every": SEND_ACK_EVERY,
            "recv_buffer": RECV_BUFFER,
            "peer": str(peer),
        }
        write_json(args.json, info, config, specs, rows, results)

    return exit_status(bool(results.failures), args.loops, specs)


if __name__ == "__main__":
    sys.exit(main())
