"""What one short connection costs a server, in user-space instructions, on every loop.

A server that sees many short connections (HTTP/1.0 clients, health checks, clients without
a connection pool, every TLS handshake) pays per connection for what the loop does around
``accept``: the socket object, the transport and its extra info, ``connection_made``, the
close and ``connection_lost``, and for TLS the ``SSLProtocol``'s handshake and shutdown. That
path is Python in ferroloop (docs/design.md §2, §5.23), Cython in uvloop.

Rows:

- ``tcp``: accept, the client sends 1 byte, the server's protocol writes it back and closes
  (``data_received`` → ``write`` → ``close``), the client reads it and closes.
- ``tls``: the same over TLS 1.3 (ECDSA P-256 certificate from trustme, no session
  resumption): a full handshake and ``close_notify`` both ways.
- ``tcp_client``: the other side: the loop under test is the client, ``create_connection``
  to a uvloop echo-and-close server in another process (8 at a time, as coroutines gathered
  under a semaphore: that part is the same asyncio code on every loop), sends 1 byte and waits
  for ``connection_lost``.

The server is the loop under test in this process; a client process (``--client``, on uvloop
if installed) makes the connections, 8 at a time. The figure is user-space instructions
executed by the server's thread per connection (``instructions.py``: the CPU's counter, so
machine load does not change it), taken as the difference between a run of ``N2`` and a run
of ``N1`` connections divided by ``N2 − N1``, which cancels the fixed cost of a run; the
median over ``--runs`` interleaved runs. Not counted: the kernel's work (``accept``,
``connect``, TCP, ``close``), which is the same system calls for every loop, and for TLS the
cryptography's share is the same too (it runs in the same ``ssl`` module on every loop but
uvloop, which drives the same ``ssl.SSLObject``).

    .venv/bin/python benchmarks/connection_cost.py                     # both rows, all loops
    .venv/bin/python benchmarks/connection_cost.py --rows tcp --loops uvloop,ferroloop
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from instructions import InstructionCounter
from loop_registry import machine_info, parse_loop_names, resolve_loops

HOST = "127.0.0.1"
CONCURRENCY = 8

CLIENT = r"""
import asyncio, ssl, sys
port, n, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = None
if cafile != "-":
    ctx = ssl.create_default_context(cafile=cafile)
async def one(sem):
    async with sem:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
async def main():
    sem = asyncio.Semaphore(CONCURRENCY)
    await asyncio.gather(*(one(sem) for _ in range(n)))
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
""".replace("CONCURRENCY", str(CONCURRENCY))


SERVER = r"""
import asyncio
class EchoOnceAndClose(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
        self.transport.close()
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoOnceAndClose, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


class SendOneByte(asyncio.Protocol):
    """Client side: send a byte; the server answers and closes."""

    def __init__(self, lost: asyncio.Future[None]) -> None:
        self.lost = lost

    def connection_made(self, transport: Any) -> None:
        transport.write(b"x")

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is None:
            self.lost.set_result(None)
        else:
            self.lost.set_exception(exc)


def connect(factory: Any, n: int, port: int, counter: InstructionCounter) -> int:
    """Make ``n`` client connections on a fresh loop; this thread's instructions meanwhile."""
    loop = factory()

    async def run() -> None:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with sem:
                lost = loop.create_future()
                await loop.create_connection(lambda: SendOneByte(lost), HOST, port)
                await lost

        await asyncio.gather(*(one() for _ in range(n)))

    try:
        start = counter.now()
        loop.run_until_complete(asyncio.wait_for(run(), 120))
        return counter.now() - start
    finally:
        loop.close()


class EchoOnceAndClose(asyncio.Protocol):
    """Server side: echo what arrives, then close (an HTTP/1.0-style exchange)."""

    state: dict[str, Any]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        state = self.state
        state["lost"] += 1
        if exc is not None:
            state["errors"].append(repr(exc))
        if state["lost"] == state["expected"] and not state["done"].done():
            state["done"].set_result(None)


def serve(factory: Any, n: int, server_ctx: ssl.SSLContext | None, cafile: str,
          counter: InstructionCounter) -> int:
    """Serve ``n`` connections on a fresh loop; the server thread's instructions meanwhile."""
    loop = factory()
    try:
        state: dict[str, Any] = {
            "lost": 0, "expected": n, "errors": [], "done": loop.create_future(),
        }
        proto = type("Proto", (EchoOnceAndClose,), {"state": state})
        server = loop.run_until_complete(
            loop.create_server(proto, HOST, 0, ssl=server_ctx, backlog=128)
        )
        port = server.sockets[0].getsockname()[1]
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port), str(n), cafile if server_ctx else "-"],
        )
        start = counter.now()
        loop.run_until_complete(asyncio.wait_for(state["done"], 120))
        spent = counter.now() - start
        if client.wait(60) != 0:
            raise RuntimeError(f"client exited with {client.returncode}")
        if state["errors"]:
            raise RuntimeError(f"server connections failed: {state['errors'][:3]}")
        server.close()
        loop.run_until_complete(server.wait_closed())
        return spent
    finally:
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", default="asyncio,uvloop,rloop,ferroloop")
    parser.add_argument("--rows", default="tcp,tls,tcp_client")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=2500)
    args = parser.parse_args()

    specs = resolve_loops(parse_loop_names(args.loops))
    for spec in specs:
        if not spec.available:
            print(f"{spec.name}: unavailable ({spec.problem})")
    loops = [spec for spec in specs if spec.available]
    info = machine_info(specs)
    print(f"{info['python']}, {info['cpu_model']}, loops {info['loops']}")
    counter = InstructionCounter()
    peer = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    peer_port = int(peer.stdout.readline())
    try:
        run_rows(args, loops, counter, peer_port)
    finally:
        peer.kill()
        peer.wait()
    return 0


def run_rows(args: argparse.Namespace, loops: list[Any], counter: InstructionCounter,
             peer_port: int) -> None:
    import trustme  # a benchmark dependency (requirements-dev.txt)

    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)
        cafile = os.path.join(tmp, "ca.pem")
        ca.cert_pem.write_to_path(cafile)
        print(f"user-space instructions of the loop's thread per connection, median of "
              f"{args.runs} runs, (N={args.n2} − N={args.n1}) / {args.n2 - args.n1}")
        for row in args.rows.split(","):
            ctx = server_ctx if row == "tls" else None
            samples: dict[str, list[float]] = {spec.name: [] for spec in loops}
            failed: dict[str, str] = {}
            for _ in range(args.runs):
                for spec in loops:
                    if spec.name in failed:
                        continue
                    try:
                        if row == "tcp_client":
                            low = connect(spec.factory, args.n1, peer_port, counter)
                            high = connect(spec.factory, args.n2, peer_port, counter)
                        else:
                            low = serve(spec.factory, args.n1, ctx, cafile, counter)
                            high = serve(spec.factory, args.n2, ctx, cafile, counter)
                    except (NotImplementedError, RuntimeError, OSError) as exc:
                        failed[spec.name] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                        continue
                    samples[spec.name].append((high - low) / (args.n2 - args.n1))
            print(f"\n{row}:")
            base = statistics.median(samples["uvloop"]) if samples.get("uvloop") else None
            for spec in loops:
                if spec.name in failed:
                    print(f"  {spec.name:10s} n/a ({failed[spec.name][:100]})")
                    continue
                value = statistics.median(samples[spec.name])
                ratio = f"  {value / base:.2f}× uvloop's" if base else ""
                print(f"  {spec.name:10s} {value:>12,.0f}{ratio}")


if __name__ == "__main__":
    sys.exit(main())
