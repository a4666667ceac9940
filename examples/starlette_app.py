"""A small Starlette app, served by uvicorn (or hypercorn) on ferroloop.

From the repository root, with the project's .venv:

    .venv/bin/uvicorn examples.starlette_app:app --loop ferroloop:new_event_loop --http httptools

uvicorn's ``--loop`` takes a ``module:callable`` that returns a new event loop, so
``ferroloop:new_event_loop`` is all it needs. ``--loop asyncio`` serves the same app on stock
asyncio. To serve it with hypercorn instead, see ``serve_hypercorn.py``.

Routes (the aiohttp example serves the same ones, and tests/test_http_servers.py drives both):

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

import asyncio
import hashlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

# What the app has seen; /info reports it. One process serves one app, so module state is fine.
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


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, World!")


async def info(request: Request) -> JSONResponse:
    loop = asyncio.get_running_loop()
    return JSONResponse({"loop": f"{type(loop).__module__}.{type(loop).__qualname__}", **STATS})


async def stream(request: Request) -> StreamingResponse:
    chunks = int(request.query_params.get("chunks", "10"))
    size = int(request.query_params.get("size", "1024"))
    delay = float(request.query_params.get("delay", "0"))

    async def body():
        STATS["streams_started"] += 1
        completed = False
        try:
            for index in range(chunks):
                yield chunk(index, size)
                if delay:
                    await asyncio.sleep(delay)
            completed = True
        finally:
            STATS["streams_completed" if completed else "streams_aborted"] += 1

    return StreamingResponse(body(), media_type="application/octet-stream")


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    size = 0
    async for part in request.stream():
        digest.update(part)
        size += len(part)
    return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})


async def slow(request: Request) -> PlainTextResponse:
    delay = float(request.query_params.get("delay", "1"))
    STATS["in_flight"] += 1
    try:
        await asyncio.sleep(delay)
    finally:
        STATS["in_flight"] -= 1
    STATS["slow_completed"] += 1
    return PlainTextResponse(f"slept {delay:g}")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/info", info),
        Route("/stream", stream),
        Route("/upload", upload, methods=["POST"]),
        Route("/slow", slow),
        WebSocketRoute("/ws", echo),
    ]
)
