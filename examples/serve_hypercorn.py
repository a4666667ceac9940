"""Serve the Starlette example (starlette_app.py) with hypercorn, on ferroloop.

From the repository root, with the project's .venv:

    .venv/bin/python examples/serve_hypercorn.py --bind 127.0.0.1:8000

hypercorn's command line has no custom-loop option (``-k asyncio`` uses asyncio's default
policy), so the programmatic API runs it: ``hypercorn.asyncio.serve`` inside
``asyncio.Runner(loop_factory=ferroloop.new_event_loop)``. Alternatively call
``ferroloop.install()`` first: then ``hypercorn -k asyncio`` gets ferroloop loops through the
policy. SIGINT and SIGTERM stop it gracefully (in-flight requests finish first).
"""

from __future__ import annotations

import argparse
import asyncio

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette_app import app


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
    parser.add_argument("--bind", default="127.0.0.1:8000")
    parser.add_argument("--loop", choices=("ferroloop", "asyncio", "uvloop"), default="ferroloop")
    args = parser.parse_args()
    config = Config()
    config.bind = [args.bind]
    config.graceful_timeout = 10.0
    config.accesslog = None
    with asyncio.Runner(loop_factory=lambda: new_loop(args.loop)) as runner:
        runner.run(serve(app, config))


if __name__ == "__main__":
    main()
