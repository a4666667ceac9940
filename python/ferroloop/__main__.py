"""``python -m ferroloop top``: run a program on ferroloop and print its loops' statistics live.

    python -m ferroloop top [--interval 1] [--block-threshold 0.1] app.py [args ...]
    python -m ferroloop top [options] -m package.module [args ...]

The program runs as ``python app.py`` would (``sys.argv`` is its own), with ferroloop
installed as asyncio's loop (``ferroloop.install()``), so ``asyncio.run`` and
``asyncio.new_event_loop`` make ferroloop loops. A daemon thread prints, every interval, one
line per open loop to stderr: iterations and callbacks per second, ready callbacks, pending
timers, watched fds, the share of the interval the loop was busy (running but not sleeping in
poll), and, with ``--block-threshold``, the callbacks the blocking detector caught. The
numbers come from ``loop.stats()`` (design.md §5.28).
"""

from __future__ import annotations

import argparse
import runpy
import sys
import threading
from typing import Any

from . import events
from .base_events import Loop
from .unix_events import _loops


def _line(index: int, loop: Loop, now: Any, before: Any, seconds: float) -> str:
    # A poll still in progress counts as busy until it ends: clamp the share.
    busy = (now.busy_seconds - before.busy_seconds) / seconds if before else 0.0
    busy = min(1.0, max(0.0, busy))
    its = (now.iterations - before.iterations) / seconds if before else 0.0
    cbs = (now.callbacks - before.callbacks) / seconds if before else 0.0
    text = (
        f"[ferroloop top] loop {index}: {'running' if loop.is_running() else 'idle'}  "
        f"{its:,.0f} it/s  {cbs:,.0f} cb/s  busy {busy:.0%}  ready {now.ready}  "
        f"timers {now.timers}  fds {now.fds}"
    )
    if now.block_threshold is not None:
        text += f"  blocked {now.blocked_callbacks}"
        if now.slowest_callback_seconds is not None:
            text += f" (slowest {now.slowest_callback_seconds:.3f} s)"
    return text


def _monitor(interval: float, stop: threading.Event) -> None:
    previous: dict[int, Any] = {}
    numbers: dict[int, int] = {}
    while not stop.wait(interval):
        for loop in list(_loops):
            if loop.is_closed():
                continue
            key = id(loop)
            index = numbers.setdefault(key, len(numbers) + 1)
            stats = loop.stats()
            print(_line(index, loop, stats, previous.get(key), interval), file=sys.stderr,
                  flush=True)
            previous[key] = stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferroloop", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    top = sub.add_parser("top", help="run a program on ferroloop and print loop statistics")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    top.add_argument("--block-threshold", type=float, default=None,
                     help="turn the blocking detector on in every loop (seconds)")
    top.add_argument("-m", dest="module", help="run a module (as python -m)")
    top.add_argument("args", nargs=argparse.REMAINDER, help="script and its arguments")
    args = parser.parse_args(argv)
    if args.module is None and not args.args:
        parser.error("give a script or -m module")
    if not args.interval > 0:
        parser.error("--interval must be positive")

    threshold = args.block_threshold

    class TopPolicy(events.EventLoopPolicy):
        def new_event_loop(self) -> Loop:
            loop = super().new_event_loop()
            if threshold is not None:
                loop.set_block_threshold(threshold)
            return loop

    import asyncio

    asyncio.set_event_loop_policy(TopPolicy())
    stop = threading.Event()
    threading.Thread(target=_monitor, args=(args.interval, stop), name="ferroloop-top",
                     daemon=True).start()
    try:
        if args.module is not None:
            sys.argv = [args.module, *args.args]
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args.args)
            runpy.run_path(args.args[0], run_name="__main__")
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
