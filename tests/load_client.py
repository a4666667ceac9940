"""The client side of the load tests (tests/test_load.py), run as a separate process so that
the server process under test has the fd limit to itself. Stock asyncio and blocking sockets
only: it never runs ferroloop.

    python load_client.py hold PORT N    open N connections, echo once on each, print
                                         "ready", wait for a line on stdin, echo once more on
                                         each, print "done OK_COUNT", wait for the server to
                                         close every connection, close them, exit
    python load_client.py storm PORT M T connect, send a byte, read the echo and the server's
                                         EOF, close; M times from T threads; print
                                         "done OK_COUNT SECONDS"

The server closes first in both, so TIME_WAIT entries stay on the server's port instead of
taking this side's ephemeral ports for a minute, which other tests binding ports would hit.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
import threading
import time

MSG = b"load-test-echo-64-bytes.........................................."[:64]


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def hold(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(256)  # connects in flight: keeps within the listen backlog

    async def open_one():
        async with gate:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(MSG)
            assert await r.readexactly(len(MSG)) == MSG
            return r, w

    conns = await asyncio.gather(*(open_one() for _ in range(n)))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)

    async def echo(r, w):
        w.write(MSG)
        return await r.readexactly(len(MSG)) == MSG

    ok = sum(await asyncio.gather(*(echo(r, w) for r, w in conns)))
    print(f"done {ok}", flush=True)

    async def until_eof(r, w):
        await r.read()
        w.close()
        await w.wait_closed()

    await asyncio.gather(*(until_eof(r, w) for r, w in conns), return_exceptions=True)


def storm(port: int, total: int, threads: int) -> None:
    ok = [0] * threads
    addr = ("127.0.0.1", port)

    def worker(i: int, count: int) -> None:
        for _ in range(count):
            s = socket.create_connection(addr)
            try:
                s.sendall(b"x")
                got = b""
                while chunk := s.recv(16):
                    got += chunk
                if got == b"x":  # the echo, then the server's EOF
                    ok[i] += 1
            finally:
                s.close()

    share = [total // threads + (1 if i < total % threads else 0) for i in range(threads)]
    start = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(i, share[i])) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"done {sum(ok)} {time.perf_counter() - start:.3f}", flush=True)


def main() -> None:
    raise_fd_limit()
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "hold":
        asyncio.run(hold(port, int(sys.argv[3])))
    elif mode == "storm":
        storm(port, int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
