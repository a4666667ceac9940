"""Futures, tasks and asyncio's high-level primitives running on the loop. Oracle: stock asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import re
import sys
import threading
import time

import pytest
from conftest import run

var = contextvars.ContextVar("var", default="default")


# ---------------------------------------------------------------- futures


def test_create_future_type(loop):
    fut = loop.create_future()
    assert type(fut) is asyncio.Future
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_future_done_callbacks_run_via_call_soon_in_order(loop):
    out = []
    fut = loop.create_future()
    fut.add_done_callback(lambda f: out.append(("cb1", f.result())))
    fut.add_done_callback(lambda f: out.append(("cb2", f.result())))

    def complete():
        fut.set_result(7)
        out.append("set_result returned")

    loop.call_soon(complete)
    loop.call_soon(out.append, "queued before callbacks")
    loop.run_until_complete(fut)
    assert out == ["set_result returned", "queued before callbacks", ("cb1", 7), ("cb2", 7)]


def test_future_done_callback_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "cb-ctx")
    seen = []
    fut = loop.create_future()
    fut.add_done_callback(lambda f: seen.append(var.get()), context=ctx)
    loop.call_soon(fut.set_result, None)
    loop.run_until_complete(fut)
    assert seen == ["cb-ctx"]


def test_future_exception_never_retrieved_goes_to_handler(loop):
    ctxs = []
    loop.set_exception_handler(lambda lp, ctx: ctxs.append(ctx))

    async def fail():
        raise KeyError("lost")

    task = loop.create_task(fail())
    run(loop, asyncio.sleep(0.01))
    assert task.done()
    del task
    gc.collect()
    assert len(ctxs) == 1
    assert ctxs[0]["message"] == "Task exception was never retrieved"
    assert isinstance(ctxs[0]["exception"], KeyError)
    assert isinstance(ctxs[0]["future"], asyncio.Task)


# ---------------------------------------------------------------- tasks


def test_create_task_type_and_default_name(loop):
    async def main():
        return "r"

    task = loop.create_task(main())
    assert type(task) is asyncio.Task
    assert task.get_loop() is loop
    assert re.fullmatch(r"Task-\d+", task.get_name())
    assert loop.run_until_complete(task) == "r"


def test_create_task_name(loop):
    async def main():
        return asyncio.current_task().get_name()

    task = loop.create_task(main(), name="custom-name")
    assert task.get_name() == "custom-name"
    assert loop.run_until_complete(task) == "custom-name"


def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task-ctx")

    async def main():
        before = var.get()
        var.set("changed in task")
        await asyncio.sleep(0)
        return before, var.get()

    task = loop.create_task(main(), context=ctx)
    assert loop.run_until_complete(task) == ("task-ctx", "changed in task")
    assert ctx[var] == "changed in task"
    assert var.get() == "default"


def test_create_task_copies_current_context(loop):
    async def main():
        return var.get()

    def make():
        var.set("at create_task")
        task = loop.create_task(main())
        var.set("after")
        return task

    task = contextvars.copy_context().run(make)
    assert loop.run_until_complete(task) == "at create_task"


def test_tasks_created_before_run_start_in_order(loop):
    out = []

    async def worker(i):
        out.append(("start", i))
        await asyncio.sleep(0)
        out.append(("end", i))

    tasks = [loop.create_task(worker(i)) for i in range(3)]
    loop.run_until_complete(asyncio.gather(*tasks))
    assert out == [("start", 0), ("start", 1), ("start", 2), ("end", 0), ("end", 1), ("end", 2)]


def test_task_cancel_with_message(loop):
    async def main():
        async def sleeper():
            await asyncio.sleep(10)

        t = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0)
        assert t.cancel("because") is True
        try:
            await t
        except asyncio.CancelledError as exc:
            return exc.args, t.cancelled()
        return None

    assert run(loop, main()) == (("because",), True)


def test_current_task_and_all_tasks(loop):
    async def child():
        await asyncio.sleep(0.01)

    async def main():
        me = asyncio.current_task()
        assert me is asyncio.current_task(loop)
        c = asyncio.ensure_future(child())
        tasks = asyncio.all_tasks()
        assert asyncio.all_tasks(loop) == tasks
        await c
        return me, c, tasks

    outer = loop.create_task(main())
    me, c, tasks = loop.run_until_complete(outer)
    assert me is outer
    assert tasks == {outer, c}
    assert asyncio.current_task(loop) is None
    assert asyncio.all_tasks(loop) == set()


def test_current_task_is_none_in_plain_callback(loop):
    seen = []

    def cb():
        seen.append(asyncio.current_task())
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert seen == [None]


# ---------------------------------------------------------------- task factory


def test_set_task_factory(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, sorted(kwargs)))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        return asyncio.current_task().get_name()

    t1 = loop.create_task(main(), name="n1")
    ctx = contextvars.copy_context()
    t2 = loop.create_task(main(), context=ctx)
    # asyncio passes context= only when it is given. The name: before 3.14 it is set on what
    # the factory returns; from 3.14 the factory gets it, with every other keyword argument.
    named = ["name"] if sys.version_info >= (3, 14) else []
    assert calls == [(loop, named), (loop, ["context"])]
    assert t1.get_name() == "n1"
    assert loop.run_until_complete(t1) == "n1"
    assert loop.run_until_complete(t2) == t2.get_name()

    # Tasks created by asyncio itself (run_until_complete, gather) go through the factory too.
    async def both():
        return await asyncio.gather(main(), main())

    loop.run_until_complete(both())
    assert len(calls) == 5

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(main())
    assert len(calls) == 5


def test_set_task_factory_rejects_non_callable(loop):
    with pytest.raises(TypeError, match="^task factory must be a callable or None$"):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


# ---------------------------------------------------------------- high-level API


def test_task_group(loop):
    async def ok(v, d):
        await asyncio.sleep(d)
        return v

    async def main():
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(ok("a", 0.01))
            b = tg.create_task(ok("b", 0))
        return a.result(), b.result()

    assert run(loop, main()) == ("a", "b")


def test_task_group_failure_cancels_siblings(loop):
    out = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            out.append("sibling cancelled")
            raise

    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("bad")

    async def main():
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(slow())
                tg.create_task(fail())
        except ExceptionGroup as eg:
            return [(type(e), str(e)) for e in eg.exceptions]

    assert run(loop, main()) == [(ValueError, "bad")]
    assert out == ["sibling cancelled"]


def test_timeout_context_manager(loop):
    async def main():
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02) as cm:
                await asyncio.sleep(10)
        elapsed = loop.time() - t0
        assert cm.expired()
        async with asyncio.timeout(1) as cm2:
            await asyncio.sleep(0)
        assert not cm2.expired()
        return elapsed

    elapsed = run(loop, main())
    assert 0.02 - 0.001 <= elapsed < 0.5


def test_gather(loop):
    async def val(v, d):
        await asyncio.sleep(d)
        return v

    async def boom():
        raise RuntimeError("gathered")

    async def main():
        r1 = await asyncio.gather(val(1, 0.02), val(2, 0), val(3, 0.01))
        r2 = await asyncio.gather(val(4, 0), boom(), return_exceptions=True)
        return r1, r2

    r1, r2 = run(loop, main())
    assert r1 == [1, 2, 3]
    assert r2[0] == 4 and isinstance(r2[1], RuntimeError) and str(r2[1]) == "gathered"


def test_wait_for(loop):
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        assert await asyncio.wait_for(asyncio.sleep(0, "fast"), 1) == "fast"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow(), 0.01)
        return cancelled[:]

    assert run(loop, main()) == [True]


def test_wait_and_as_completed(loop):
    async def val(v, d):
        await asyncio.sleep(d)
        return v

    async def main():
        tasks = [asyncio.ensure_future(val(i, d)) for i, d in enumerate((0.03, 0.01, 0.02))]
        order = [await f for f in asyncio.as_completed(tasks)]
        t_fast = asyncio.ensure_future(val("x", 0))
        t_slow = asyncio.ensure_future(val("y", 10))
        done, pending = await asyncio.wait({t_fast, t_slow}, return_when=asyncio.FIRST_COMPLETED)
        t_slow.cancel()
        return order, done == {t_fast}, pending == {t_slow}

    assert run(loop, main()) == ([1, 2, 0], True, True)


def test_sleep(loop):
    async def main():
        t0 = time.monotonic()
        r = await asyncio.sleep(0.03, result="woke")
        return r, time.monotonic() - t0

    r, elapsed = run(loop, main())
    assert r == "woke"
    assert 0.03 - 0.001 <= elapsed < 0.5


def test_sleep_zero_interleaves_tasks(loop):
    out = []

    async def worker(name):
        for i in range(3):
            out.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    run(loop, main())
    assert out == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_shield(loop):
    async def inner():
        await asyncio.sleep(0.02)
        return "inner done"

    async def main():
        t = asyncio.ensure_future(inner())
        outer = asyncio.ensure_future(asyncio.shield(t))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await t

    assert run(loop, main()) == "inner done"


def test_queue(loop):
    async def main():
        q = asyncio.Queue(maxsize=2)
        got = []

        async def producer():
            for i in range(6):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                got.append(item)
                q.task_done()
            q.task_done()

        await asyncio.gather(producer(), consumer())
        await asyncio.wait_for(q.join(), 1)
        return got, q.empty()

    assert run(loop, main()) == ([0, 1, 2, 3, 4, 5], True)


def test_priority_and_lifo_queues(loop):
    async def main():
        pq, lq = asyncio.PriorityQueue(), asyncio.LifoQueue()
        for v in (3, 1, 2):
            pq.put_nowait(v)
            lq.put_nowait(v)
        return [pq.get_nowait() for _ in range(3)], [lq.get_nowait() for _ in range(3)]

    assert run(loop, main()) == ([1, 2, 3], [2, 1, 3])


def test_lock_is_fifo(loop):
    out = []

    async def main():
        lock = asyncio.Lock()

        async def worker(i):
            async with lock:
                out.append(("in", i))
                await asyncio.sleep(0.001)
                out.append(("out", i))

        await asyncio.gather(*(worker(i) for i in range(4)))
        return lock.locked()

    assert run(loop, main()) is False
    assert out == [(k, i) for i in range(4) for k in ("in", "out")]


def test_event(loop):
    async def main():
        ev = asyncio.Event()
        woke = []

        async def waiter(i):
            await ev.wait()
            woke.append(i)

        tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert woke == []
        ev.set()
        await asyncio.gather(*tasks)
        return woke, ev.is_set()

    assert run(loop, main()) == ([0, 1, 2], True)


def test_semaphore(loop):
    async def main():
        sem = asyncio.Semaphore(2)
        active, peak = [0], [0]

        async def worker():
            async with sem:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                await asyncio.sleep(0.002)
                active[0] -= 1

        await asyncio.gather(*(worker() for _ in range(6)))
        bounded = asyncio.BoundedSemaphore(1)
        await bounded.acquire()
        bounded.release()
        with pytest.raises(ValueError, match="BoundedSemaphore released too many times"):
            bounded.release()
        return peak[0]

    assert run(loop, main()) == 2


def test_condition(loop):
    async def main():
        cond = asyncio.Condition()
        out = []

        async def waiter(i):
            async with cond:
                await cond.wait()
                out.append(i)

        tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
        await asyncio.sleep(0)
        async with cond:
            cond.notify(1)
        await asyncio.sleep(0.001)
        assert out == [0]
        async with cond:
            cond.notify_all()
        await asyncio.gather(*tasks)
        return out

    assert run(loop, main()) == [0, 1, 2]


def test_barrier(loop):
    async def main():
        barrier = asyncio.Barrier(3)
        out = []

        async def party(i):
            await asyncio.sleep(0.001 * i)
            out.append(("arrive", i))
            await barrier.wait()
            out.append(("leave", i))

        await asyncio.gather(*(party(i) for i in range(3)))
        return out[:3], sorted(out[3:])

    arrive, leave = run(loop, main())
    assert arrive == [("arrive", 0), ("arrive", 1), ("arrive", 2)]
    assert leave == [("leave", 0), ("leave", 1), ("leave", 2)]


# ---------------------------------------------------------------- threads and the loop


def test_run_coroutine_threadsafe(loop):
    results = []

    async def work(x):
        await asyncio.sleep(0.001)
        return x * 2, asyncio.get_running_loop() is loop

    def in_thread():
        cf = asyncio.run_coroutine_threadsafe(work(21), loop)
        assert isinstance(cf, concurrent.futures.Future)
        results.append(cf.result(timeout=5))

    async def main():
        t = threading.Thread(target=in_thread)
        t.start()
        while t.is_alive():
            await asyncio.sleep(0.005)
        t.join()

    run(loop, main())
    assert results == [(42, True)]


def test_to_thread_propagates_context(loop):
    async def main():
        var.set("to_thread ctx")
        return await asyncio.to_thread(lambda: (var.get(), threading.current_thread().name))

    value, thread_name = run(loop, main())
    assert value == "to_thread ctx"
    assert thread_name.startswith("asyncio_")


def test_wrap_future(loop):
    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            cf = ex.submit(lambda: "from pool")
            return await asyncio.wrap_future(cf)

    assert run(loop, main()) == "from pool"
