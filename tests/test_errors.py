"""Errors: exceptions in callbacks, exception handlers, the default handler's logging, and
KeyboardInterrupt / SystemExit propagation. Oracle: stock asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys

import pytest
from conftest import cb_text, run


def boom(*args):
    raise ValueError("boom", *args)


BOOM_SRC = f"{__file__}:{boom.__code__.co_firstlineno}"


def run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def collect(loop):
    ctxs = []
    loop.set_exception_handler(lambda lp, ctx: ctxs.append((lp, ctx)))
    return ctxs


# ---------------------------------------------------------------- exceptions in callbacks


def test_exception_in_callback_goes_to_handler_and_loop_goes_on(loop):
    ctxs = collect(loop)
    out = []
    h = loop.call_soon(boom, 1)
    loop.call_soon(out.append, "after")
    run_once(loop)
    assert out == ["after"]
    assert len(ctxs) == 1
    lp, ctx = ctxs[0]
    assert lp is loop
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["message"] == f"Exception in callback {cb_text('boom', '1')} at {BOOM_SRC}"
    assert type(ctx["exception"]) is ValueError and ctx["exception"].args == ("boom", 1)
    assert ctx["handle"] is h
    assert run(loop, asyncio.sleep(0, "usable")) == "usable"


def test_exception_in_timer_callback(loop):
    ctxs = collect(loop)
    h = loop.call_later(0.001, boom)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert [(c["message"], c["handle"]) for _, c in ctxs] == [
        (f"Exception in callback boom() at {BOOM_SRC}", h)]
    assert isinstance(ctxs[0][1]["handle"], asyncio.TimerHandle)


def test_exception_in_threadsafe_callback(loop):
    ctxs = collect(loop)
    h = loop.call_soon_threadsafe(boom, "ts")
    run_once(loop)
    assert [(c["message"], c["handle"]) for _, c in ctxs] == [
        (f"Exception in callback {cb_text('boom', repr('ts'))} at {BOOM_SRC}", h)]


def test_base_exception_subclass_in_callback_is_reported(loop):
    # Handle._run catches BaseException except SystemExit/KeyboardInterrupt.
    class Custom(BaseException):
        pass

    def raise_custom():
        raise Custom("odd")

    ctxs = collect(loop)
    loop.call_soon(raise_custom)
    run_once(loop)
    assert len(ctxs) == 1 and type(ctxs[0][1]["exception"]) is Custom


def test_many_failing_callbacks(loop):
    ctxs = collect(loop)
    for i in range(100):
        loop.call_soon(boom, i)
    run_once(loop)
    assert [c["exception"].args[1] for _, c in ctxs] == list(range(100))


# ---------------------------------------------------------------- handler management


def test_set_and_get_exception_handler(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_exception_handler_rejects_non_callable(loop):
    with pytest.raises(TypeError) as ei:
        loop.set_exception_handler(42)
    assert str(ei.value) == "A callable object or None is expected, got 42"
    with pytest.raises(TypeError) as ei:
        loop.set_exception_handler("nope")
    assert str(ei.value) == "A callable object or None is expected, got 'nope'"
    assert loop.get_exception_handler() is None


def test_call_exception_handler_with_custom_handler(loop):
    ctxs = collect(loop)
    context = {"message": "custom", "extra": 123}
    loop.call_exception_handler(context)
    assert ctxs == [(loop, context)]
    assert ctxs[0][1] is context


# ---------------------------------------------------------------- default handler logging


def _asyncio_records(caplog):
    return [r for r in caplog.records if r.name == "asyncio"]


# Since 3.12 asyncio runs a custom handler inside the context of the handle, task or future
# the report is about (CPython gh-96704); 3.11 runs it in the loop's own context.
HANDLER_CONTEXT = "callback's" if sys.version_info >= (3, 12) else "loop's"
where = contextvars.ContextVar("where", default="loop's")


@pytest.mark.parametrize("debug", [False, True])
def test_handler_runs_in_the_context_of_the_failed_callback(loop, debug):
    seen = []
    loop.set_debug(debug)
    loop.set_exception_handler(lambda lp, ctx: seen.append(where.get()))

    def callback():
        where.set("callback's")
        raise ValueError("boom")

    loop.call_soon(callback)
    run_once(loop)
    assert seen == [HANDLER_CONTEXT]


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("task_class", ["C", "Python"])
def test_unretrieved_task_exception_reported_right_after_its_step(loop, debug, task_class):
    # asyncio frees the handle of a step as soon as it has run, so a failed task nobody holds
    # is freed then, and reports "Task exception was never retrieved" at once: by the time
    # the task that made it resumes from sleep(0), in the failed task's context on 3.12+.
    # ferroloop's debug-mode runner once held the handle in a frame a traceback kept alive,
    # which deferred the report to the next garbage collection.
    cls = asyncio.tasks._CTask if task_class == "C" else asyncio.tasks._PyTask
    seen = []
    loop.set_debug(debug)

    def handler(lp, ctx):
        seen.append((where.get(), type(ctx["exception"]).__name__, ctx["message"]))

    async def fails():
        where.set("callback's")
        raise ZeroDivisionError("division by zero")

    async def main():
        loop.set_exception_handler(handler)
        cls(fails(), loop=loop)
        await asyncio.sleep(0)
        return list(seen)

    assert run(loop, main()) == [
        (HANDLER_CONTEXT, "ZeroDivisionError", "Task exception was never retrieved")
    ]


def test_default_handler_logs_callback_exception(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    h = loop.call_soon(boom, 2)
    run_once(loop)
    recs = _asyncio_records(caplog)
    assert len(recs) == 1
    rec = recs[0]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage() == (f"Exception in callback {cb_text('boom', '2')} at {BOOM_SRC}\n"
                                f"handle: {h!r}")
    assert rec.exc_info[0] is ValueError
    assert rec.exc_info[1].args == ("boom", 2)


def test_default_exception_handler_format(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.call_exception_handler({"message": "hello", "foo": 1, "bar": "x"})
    loop.call_exception_handler({"foo": 1})
    exc = KeyError("k")
    loop.default_exception_handler({"message": "direct", "exception": exc})
    recs = _asyncio_records(caplog)
    assert [(r.levelno, r.getMessage()) for r in recs] == [
        (logging.ERROR, "hello\nbar: 'x'\nfoo: 1"),
        (logging.ERROR, "Unhandled exception in event loop\nfoo: 1"),
        (logging.ERROR, "direct"),
    ]
    assert not recs[0].exc_info and not recs[1].exc_info
    assert recs[2].exc_info[1] is exc


def test_custom_handler_can_defer_to_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_exception_handler({"message": "deferred"})
    assert seen == ["deferred"]
    assert [r.getMessage() for r in _asyncio_records(caplog)] == ["deferred"]


def test_failing_custom_handler_falls_back_to_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def handler(lp, ctx):
        raise ValueError("handler broke")

    loop.set_exception_handler(handler)
    loop.call_exception_handler({"message": "m"})
    loop.call_soon(boom)
    run_once(loop)  # the loop survives a broken handler
    recs = _asyncio_records(caplog)
    assert [r.getMessage().splitlines()[0] for r in recs] == [
        "Unhandled error in exception handler"] * 2
    assert recs[0].getMessage() == "Unhandled error in exception handler\ncontext: {'message': 'm'}"
    assert all(r.exc_info[1].args == ("handler broke",) for r in recs)


# ---------------------------------------------------------------- KeyboardInterrupt / SystemExit


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exit_in_callback_propagates_from_run_forever(loop, exc_type):
    ctxs = collect(loop)
    out = []

    def raiser():
        out.append("raiser")
        raise exc_type("out")

    loop.call_soon(out.append, "before")
    loop.call_soon(raiser)
    loop.call_soon(out.append, "rest of batch")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert out == ["before", "raiser"]
    assert ctxs == []
    assert loop.is_running() is False
    assert asyncio._get_running_loop() is None
    # asyncio keeps the rest of the interrupted batch queued: it runs on the next run.
    run_once(loop)
    assert out == ["before", "raiser", "rest of batch"]
    assert run(loop, asyncio.sleep(0.001, "usable")) == "usable"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exit_in_timer_propagates(loop, exc_type):
    def raiser():
        raise exc_type()

    loop.call_later(0.001, raiser)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert run(loop, asyncio.sleep(0.001, "usable")) == "usable"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exit_in_coroutine_propagates_from_run_until_complete(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type("from coro")

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert loop.is_running() is False

    async def after():
        await asyncio.sleep(0.001)
        return "usable"

    assert loop.run_until_complete(after()) == "usable"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exit_in_callback_propagates_from_run_until_complete(loop, exc_type):
    fut = loop.create_future()

    def raiser():
        raise exc_type()

    loop.call_soon(raiser)
    with pytest.raises(exc_type):
        loop.run_until_complete(fut)
    assert not fut.done()
    loop.call_soon(fut.set_result, "later")
    assert loop.run_until_complete(fut) == "later"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exit_from_exception_handler_propagates(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type()

    loop.set_exception_handler(handler)
    loop.call_soon(boom)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert loop.is_running() is False
