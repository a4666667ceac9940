"""run_in_executor, set_default_executor and the default executor's shutdown.
Oracle: stock asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time

import pytest
from conftest import run


def whoami(*args):
    return threading.current_thread().name, args


def test_run_in_executor_default(loop):
    async def main():
        fut = loop.run_in_executor(None, whoami, 1, "two")
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    name, args = run(loop, main())
    assert args == (1, "two")
    assert name.startswith("asyncio_")
    assert name != threading.current_thread().name


def test_default_executor_is_reused(loop):
    async def main():
        names = set()
        for _ in range(5):
            name, _ = await loop.run_in_executor(None, whoami)
            names.add(name)
        return names

    names = run(loop, main())
    assert all(n.startswith("asyncio_") for n in names)


def test_run_in_executor_exception(loop):
    def fail():
        raise ZeroDivisionError("in thread")

    async def main():
        with pytest.raises(ZeroDivisionError, match="^in thread$"):
            await loop.run_in_executor(None, fail)
        return "handled"

    assert run(loop, main()) == "handled"


def test_run_in_executor_custom_thread_pool(loop):
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="custom") as ex:
        name, args = run(loop, loop.run_in_executor(ex, whoami, "x"))
    assert name.startswith("custom_")
    assert args == ("x",)


def test_run_in_executor_process_pool(loop):
    with concurrent.futures.ProcessPoolExecutor(1) as ex:
        pid = run(loop, loop.run_in_executor(ex, os.getpid), timeout=20)
    assert isinstance(pid, int) and pid != os.getpid()


def test_many_jobs_in_parallel(loop):
    barrier = threading.Barrier(4, timeout=5)

    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, barrier.wait) for _ in range(4)))

    # All four wait for each other: they must really run concurrently.
    assert sorted(run(loop, main())) == [0, 1, 2, 3]


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine")
    try:
        loop.set_default_executor(ex)
        name, _ = run(loop, loop.run_in_executor(None, whoami))
        assert name.startswith("mine_")
    finally:
        ex.shutdown(wait=True)


@pytest.mark.parametrize("bad", ["process_pool", "object", "none"])
def test_set_default_executor_type_check(loop, bad):
    if bad == "process_pool":
        executor = concurrent.futures.ProcessPoolExecutor(1)
    elif bad == "object":
        executor = object()
    else:
        executor = None
    try:
        with pytest.raises(TypeError, match="^executor must be ThreadPoolExecutor instance$"):
            loop.set_default_executor(executor)
    finally:
        if bad == "process_pool":
            executor.shutdown()
    name, _ = run(loop, loop.run_in_executor(None, whoami))
    assert name.startswith("asyncio_")


def test_close_shuts_default_executor_down_without_waiting(loop):
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait(5)
        finished.set()

    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="default")
    loop.set_default_executor(ex)
    try:
        loop.run_in_executor(None, job)
        assert started.wait(5)
        t0 = time.monotonic()
        loop.close()
        assert time.monotonic() - t0 < 0.5
        assert not finished.is_set()
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            ex.submit(int)
    finally:
        release.set()
    assert finished.wait(5)


def test_close_leaves_other_executors_alone(loop):
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        run(loop, loop.run_in_executor(ex, int))
        loop.close()
        assert ex.submit(lambda: "still open").result(timeout=5) == "still open"


def test_explicit_executor_after_shutdown_default_executor(loop):
    run(loop, loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
        loop.run_in_executor(None, int)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explicit") as ex:
        name, _ = run(loop, loop.run_in_executor(ex, whoami))
    assert name.startswith("explicit_")


def test_run_in_executor_coroutine_function_in_debug_mode(loop):
    async def coro_fn():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"^coroutines cannot be used with run_in_executor\(\)$"):
        loop.run_in_executor(None, coro_fn)


def test_cancel_executor_future(loop):
    release = threading.Event()

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            blocker = loop.run_in_executor(ex, release.wait, 5)
            queued = loop.run_in_executor(ex, whoami)
            queued.cancel()
            await asyncio.sleep(0)
            release.set()
            await blocker
            return queued.cancelled()

    try:
        assert run(loop, main()) is True
    finally:
        release.set()
