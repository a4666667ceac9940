"""A small aiohttp.web app on ferroloop.

From the repository root, with the project's .venv:

    .venv/bin/python examples/aiohttp_app.py --port 8080

It makes a ferroloop loop and hands it to ``aiohttp.web.run_app(app, loop=loop)``;
``--loop asyncio`` (or ``uvloop``) serves the same app on another loop, for comparison. Ctrl+C
(SIGINT) or SIGTERM stops it gracefully: in-flight requests finish first.

Routes (the same as examples/starlette_app.py; tests/test_http_servers.py drives both):

    GET  /                          "Hello, World!" (text/plain)
    GET  /info                      JSON: the running loop's class and the counters below
    GET  /stream?chunks=&size=&delay=
                                    a chunked response: `chunks` chunks of `size` bytes
                                    (see `chunk`), `delay` seconds apart
    POST /upload                    JSON: the request body's length and SHA-256, read as a stream
    GET  /slow?delay=               "slept <delay>" after `delay` seconds (in-flight work for
                                    graceful-shutdown checks)
    WS   /ws                        echoes every text and binary message
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib

from aiohttp import WSMsgType, web

STATS = {
    "in_flight": 0,  # /slow requests currently sleeping
    "slow_completed": 0,
    "streams_started": 0,
    "streams_completed": 0,
    "streams_aborted": 0,  # the client went away (or the server stopped) mid-stream
}


def chunk(index: int, size: int) -> bytes:
    """Chunk `index` of a /stream response: its number, repeated, so that order is checkable."""
    return ((b"%07d\n" % index) * (size // 8 + 1))[:size]


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


async def info(request: web.Request) -> web.Response:
    loop = asyncio.get_running_loop()
    return web.json_response(
        {"loop": f"{type(loop).__module__}.{type(loop).__qualname__}", **STATS}
    )


async def stream(request: web.Request) -> web.StreamResponse:
    chunks = int(request.query.get("chunks", "10"))
    size = int(request.query.get("size", "1024"))
    delay = float(request.query.get("delay", "0"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    STATS["streams_started"] += 1
    completed = False
    try:
        for index in range(chunks):
            await response.write(chunk(index, size))
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
        completed = True
    finally:
        STATS["streams_completed" if completed else "streams_aborted"] += 1
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for part in request.content.iter_any():
        digest.update(part)
        size += len(part)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


async def slow(request: web.Request) -> web.Response:
    delay = float(request.query.get("delay", "1"))
    STATS["in_flight"] += 1
    try:
        await asyncio.sleep(delay)
    finally:
        STATS["in_flight"] -= 1
    STATS["slow_completed"] += 1
    return web.Response(text=f"slept {delay:g}")


async def echo(request: web.Request) -> web.WebSocketResponse:
    websocket = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
    await websocket.prepare(request)
    async for message in websocket:
        if message.type == WSMsgType.TEXT:
            await websocket.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await websocket.send_bytes(message.data)
    return websocket


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.get("/", hello),
            web.get("/info", info),
            web.get("/stream", stream),
            web.post("/upload", upload),
            web.get("/slow", slow),
            web.get("/ws", echo),
        ]
    )
    return app


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loop", choices=("ferroloop", "asyncio", "uvloop"), default="ferroloop")
    args = parser.parse_args()
    loop = new_loop(args.loop)
    print(f"serving on http://{args.host}:{args.port} with {type(loop).__module__}", flush=True)
    # shutdown_timeout: how long a graceful stop waits for in-flight requests.
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        loop=loop,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
    )


if __name__ == "__main__":
    main()
