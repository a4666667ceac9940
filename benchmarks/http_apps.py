"""The processes bench_http.py starts: the HTTP servers under test, the aiohttp client under
test, and the fixed server that client talks to.

    python -m uvicorn --app-dir benchmarks http_apps:asgi_app --loop ferroloop:new_event_loop ...
    python benchmarks/http_apps.py aiohttp --loop ferroloop --port 8080
    python benchmarks/http_apps.py fixed --port 8081          # uvloop if installed, else asyncio
    python benchmarks/http_apps.py client --loop ferroloop --port 8081 --connections 32 \\
        --duration 5 --warmup 1                             # prints one JSON line

Every server answers three paths: ``/`` with ``Hello, World!`` (13 bytes, text/plain), ``/10k``
with a 10,240-byte body (`BODY_10K`) and ``/loop`` with the class of its running loop, which
bench_http.py checks before measuring, so a server that fell back to another loop is caught.

The uvicorn app is a raw ASGI callable, as in the usual uvicorn benchmarks: no framework
between uvicorn's httptools protocol and the loop, so that the loop's share is not drowned in
routing code. The aiohttp server is a plain ``aiohttp.web`` application run by
``web.run_app(app, loop=loop)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from loop_registry import resolve_loop

PLAINTEXT = b"Hello, World!"
BODY_10K = (b"0123456789abcdef" * 640)[:10240]


def loop_class(loop: asyncio.AbstractEventLoop) -> bytes:
    return f"{type(loop).__module__}.{type(loop).__qualname__}".encode()


# ------------------------------------------------------------------------------------------------
# uvicorn: a raw ASGI app
# ------------------------------------------------------------------------------------------------

_PLAIN_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
_10K_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"10240")]


async def asgi_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/":
        headers, body = _PLAIN_HEADERS, PLAINTEXT
    elif path == "/10k":
        headers, body = _10K_HEADERS, BODY_10K
    elif path == "/loop":
        body = loop_class(asyncio.get_running_loop())
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------
# aiohttp.web
# ------------------------------------------------------------------------------------------------


def serve_aiohttp(loop_name: str, port: int) -> None:
    from aiohttp import web

    async def plaintext(request: web.Request) -> web.Response:
        return web.Response(body=PLAINTEXT, content_type="text/plain")

    async def body_10k(request: web.Request) -> web.Response:
        return web.Response(body=BODY_10K, content_type="application/octet-stream")

    async def which_loop(request: web.Request) -> web.Response:
        return web.Response(body=loop_class(asyncio.get_running_loop()), content_type="text/plain")

    app = web.Application()
    app.add_routes(
        [web.get("/", plaintext), web.get("/10k", body_10k), web.get("/loop", which_loop)]
    )
    web.run_app(
        app, host="127.0.0.1", port=port, loop=new_loop(loop_name), access_log=None, print=None
    )


# ------------------------------------------------------------------------------------------------
# The fixed server for the client row: a minimal keep-alive responder on uvloop
# ------------------------------------------------------------------------------------------------

FIXED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + PLAINTEXT
)


class FixedResponder(asyncio.Protocol):
    """Answers every request head (GET, no body) with FIXED_RESPONSE, in order."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        if heads:
            self.transport.write(FIXED_RESPONSE * heads)  # type: ignore[attr-defined]
            data = data[data.rfind(b"\r\n\r\n") + 4 :]
        self.pending = data


def fixed_loop_name() -> str:
    return "uvloop" if resolve_loop("uvloop").available else "asyncio"


def serve_fixed(port: int) -> None:
    loop = new_loop(fixed_loop_name())

    async def main() -> None:
        server = await loop.create_server(FixedResponder, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


# ------------------------------------------------------------------------------------------------
# The client under test: aiohttp.ClientSession on the loop under test
# ------------------------------------------------------------------------------------------------


async def client_run(port: int, connections: int, duration: float, warmup: float) -> dict:
    import aiohttp

    url = f"http://127.0.0.1:{port}/"
    connector = aiohttp.TCPConnector(limit=connections)
    errors: list[str] = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(deadline: float, latencies: list[float]) -> None:
            clock = time.perf_counter
            while (started := clock()) < deadline:
                async with session.get(url) as response:
                    body = await response.read()
                    status = response.status
                latencies.append(clock() - started)
                if status != 200 or body != PLAINTEXT:
                    errors.append(f"status {status}, body {body[:40]!r}")

        warm: list[float] = []
        await asyncio.gather(
            *(worker(time.perf_counter() + warmup, warm) for _ in range(connections))
        )
        latencies: list[float] = []
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(wall0 + duration, latencies) for _ in range(connections)))
        wall1, cpu1 = time.perf_counter(), time.process_time()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    count = len(latencies)
    return {
        "loop": loop_class(asyncio.get_running_loop()).decode(),
        "requests": count,
        "wall_s": wall1 - wall0,
        "cpu_s": cpu1 - cpu0,
        "user_s": usage1.ru_utime - usage0.ru_utime,
        "sys_s": usage1.ru_stime - usage0.ru_stime,
        "latency_mean_us": sum(latencies) / count * 1e6 if count else None,
        "latency_p99_us": latencies[min(count - 1, int(count * 0.99))] * 1e6 if count else None,
        "latency_max_us": latencies[-1] * 1e6 if count else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def run_client(loop_name: str, port: int, connections: int, duration: float, warmup: float) -> None:
    with asyncio.Runner(loop_factory=lambda: new_loop(loop_name)) as runner:
        report = runner.run(client_run(port, connections, duration, warmup))
    print(json.dumps(report), flush=True)


# ------------------------------------------------------------------------------------------------


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    spec = resolve_loop(name)
    if spec.factory is None:
        raise SystemExit(f"{name}: {spec.problem}")
    return spec.factory()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bench_http.py's server and client processes")
    parser.add_argument("role", choices=("aiohttp", "fixed", "client"))
    parser.add_argument("--loop", default="ferroloop")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.role == "aiohttp":
        serve_aiohttp(args.loop, args.port)
    elif args.role == "fixed":
        serve_fixed(args.port)
    else:
        run_client(args.loop, args.port, args.connections, args.duration, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
