"""os.fork() with loops alive: the child must not share the parent's loop state.

The child reports what it saw through a pipe and leaves with os._exit (never returning into
pytest). Oracle: stock asyncio where asyncio gives the same guarantee; the tests of what only
ferroloop guarantees say so.

What a fork child inherits is the parent's epoll instance and eventfd (kernel objects, shared,
not copied) and the signal wake-up fd. Without the reset, a child that removed a watcher would
remove it from the parent's epoll, and a signal sent to the child would run the parent's
handler.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time

import pytest
from conftest import run

pytestmark = pytest.mark.timeout(30)


def fork_and_report(child_body):
    """Fork; in the child run ``child_body()`` and send its JSON result back; return it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            result = child_body()
            os.write(w, json.dumps(result).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            try:
                os.write(w, json.dumps({"child error": repr(exc)}).encode())
            finally:
                code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b"null")
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def test_running_loop_is_reset_in_a_child_forked_from_a_callback(loop):
    def child():
        return {
            "running_loop_is_none": asyncio._get_running_loop() is None,
            "wakeup_fd": signal.set_wakeup_fd(-1),
        }

    async def main():
        return fork_and_report(child)

    seen = run(loop, main())
    assert seen["running_loop_is_none"]
    assert seen["wakeup_fd"] == -1 or sys.version_info < (3, 12)


def test_child_can_make_and_run_a_new_loop(loop_factory):
    parent_loop = loop_factory()
    try:
        run(parent_loop, asyncio.sleep(0))

        def child():
            parent_loop.close()
            lp = loop_factory()
            try:
                return lp.run_until_complete(asyncio.sleep(0.01, "child loop ran"))
            finally:
                lp.close()

        assert fork_and_report(child) == "child loop ran"
        # The parent's loop still works, I/O included.
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            b.setblocking(False)

            async def echo():
                await parent_loop.sock_sendall(a, b"still fine")
                return await parent_loop.sock_recv(b, 100)

            assert run(parent_loop, echo()) == b"still fine"
        finally:
            a.close()
            b.close()
    finally:
        parent_loop.close()


def test_child_does_not_touch_the_parents_watchers(ferro_loop):
    # ferroloop-only: asyncio's child shares the parent's epoll instance, so a child that
    # removes a reader (or closes its copy of the loop) removes it from the parent's loop too.
    loop = ferro_loop
    a, b = socket.socketpair()
    a.setblocking(False)
    got = []
    try:
        loop.add_reader(a, lambda: got.append(a.recv(100)))

        def child():
            loop.remove_reader(a)
            loop.call_soon_threadsafe(lambda: None)  # the child's own waker
            loop.close()
            return "done"

        assert fork_and_report(child) == "done"

        async def main():
            b.send(b"for the parent")
            deadline = time.monotonic() + 2
            while not got and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            # The parent's waker still wakes it (the child's close did not unregister it).
            woke = loop.create_future()
            threading.Timer(0.05, loop.call_soon_threadsafe,
                            args=(woke.set_result, "woken")).start()
            return got, await asyncio.wait_for(woke, 2)

        assert run(loop, main()) == ([b"for the parent"], "woken")
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


def test_signal_in_the_child_does_not_reach_the_parents_handler(loop_factory):
    # On 3.11 asyncio's child keeps writing signal numbers to the parent's wake-up socket
    # (3.12+ resets the wake-up fd in the child); ferroloop gives the child its own.
    if not loop_factory.is_ferroloop and sys.version_info < (3, 12):
        pytest.skip("asyncio 3.11 shares the wake-up socket with a fork child")
    loop = loop_factory()
    got = []
    try:
        loop.add_signal_handler(signal.SIGUSR1, got.append, "parent")

        def child():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            return "sent"

        assert fork_and_report(child) == "sent"
        run(loop, asyncio.sleep(0.1))
        assert got == []
        os.kill(os.getpid(), signal.SIGUSR1)
        run(loop, asyncio.sleep(0.1))
        assert got == ["parent"]
    finally:
        loop.close()


def test_child_keeps_its_own_signal_handlers_working(loop_factory):
    # The child's copy of a loop with handlers gets a wake-up socket of its own, so the
    # handlers work there too. (asyncio 3.11 gets there by sharing the parent's socket;
    # 3.12+ sets the child's wake-up fd to -1, which leaves them deaf.)
    if not loop_factory.is_ferroloop and sys.version_info >= (3, 12):
        pytest.skip("asyncio 3.12+ resets the wake-up fd in a fork child")
    loop = loop_factory()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    try:
        def child():
            got = []
            loop.add_signal_handler(signal.SIGUSR1, got.append, "child")

            async def main():
                os.kill(os.getpid(), signal.SIGUSR1)
                await asyncio.sleep(0.05)

            loop.run_until_complete(main())
            loop.close()
            return got

        assert fork_and_report(child) == ["child"]
    finally:
        loop.close()


def test_child_never_signals_the_parents_subprocess(loop):
    # A subprocess transport inherited by a fork child is the parent's; the child closing it
    # (or collecting it) must not kill the parent's process.

    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.exited = loop.create_future()

        def process_exited(self):
            self.exited.set_result(None)

    async def main():
        transport, proto = await loop.subprocess_exec(
            Proto, "sleep", "0.3", stdin=None, stdout=None, stderr=None)

        def child():
            transport.close()
            return "closed in child"

        assert fork_and_report(child) == "closed in child"
        await asyncio.wait_for(proto.exited, 5)
        rc = transport.get_returncode()
        transport.close()
        return rc

    assert run(loop, main()) == 0
