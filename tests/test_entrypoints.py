"""Entry points and identity: ferroloop.run (compared with asyncio.run), asyncio.Runner with a loop
factory, ferroloop.install() / ferroloop.EventLoopPolicy, AbstractEventLoop and weakref support,
and the methods of later issues that are not implemented yet on ferroloop."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import signal
import sys
import threading
import time
import weakref

import pytest
from conftest import _import_ferroloop

var = contextvars.ContextVar("var", default="default")


@pytest.fixture(params=["asyncio", "ferroloop"])
def run_fn(request):
    """asyncio.run (the oracle) or ferroloop.run; both must behave the same."""
    if request.param == "asyncio":
        fn = asyncio.run
    else:
        fn = _import_ferroloop().run
    yield fn
    asyncio.set_event_loop(None)


@pytest.fixture
def restore_policy():
    old = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(old)
        asyncio.set_event_loop(None)


# ---------------------------------------------------------------- identity of loops


def test_loop_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_loop_is_weak_referenceable(loop, loop_factory):
    ref = weakref.ref(loop)
    assert ref() is loop
    lp = loop_factory()
    ref2 = weakref.ref(lp)
    lp.close()
    del lp
    gc.collect()
    assert ref2() is None


def test_loops_are_distinct(loop_factory):
    a, b = loop_factory(), loop_factory()
    try:
        assert a is not b
        assert type(a) is type(b)
        assert not a.is_running() and not a.is_closed()
    finally:
        a.close()
        b.close()


def test_ferroloop_loop_class():
    ferroloop = _import_ferroloop()
    assert issubclass(ferroloop.Loop, asyncio.AbstractEventLoop)
    lp = ferroloop.new_event_loop()
    try:
        assert type(lp) is ferroloop.Loop
    finally:
        lp.close()


# ---------------------------------------------------------------- ferroloop.run vs asyncio.run


def test_run_returns_result(run_fn):
    async def main():
        await asyncio.sleep(0.001)
        return "result"

    assert run_fn(main()) == "result"


def test_run_uses_expected_loop_type(run_fn):
    async def main():
        return asyncio.get_running_loop()

    lp = run_fn(main())
    assert lp.is_closed()
    if run_fn is asyncio.run:
        assert isinstance(lp, asyncio.BaseEventLoop)
    else:
        assert type(lp) is _import_ferroloop().Loop


def test_run_propagates_exception(run_fn):
    async def main():
        raise LookupError("from main")

    with pytest.raises(LookupError, match="^from main$"):
        run_fn(main())


@pytest.mark.parametrize("debug", [True, False, None])
def test_run_debug(run_fn, debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    expected = debug if debug is not None else asyncio.coroutines._is_debug_mode()
    assert run_fn(main(), debug=debug) is expected


def test_run_cancels_leftover_tasks(run_fn):
    events = []

    async def leftover():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        asyncio.ensure_future(leftover())
        await asyncio.sleep(0)
        return "main done"

    t0 = time.monotonic()
    assert run_fn(main()) == "main done"
    assert events == ["cancelled"]
    assert time.monotonic() - t0 < 5


def test_run_reports_leftover_task_errors(run_fn):
    ctxs = []

    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ValueError("during cancel") from None

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda lp, ctx: ctxs.append(ctx))
        asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)

    run_fn(main())
    assert len(ctxs) == 1
    assert isinstance(ctxs[0]["exception"], ValueError)
    assert isinstance(ctxs[0]["task"], asyncio.Task)


def test_run_shuts_down_asyncgens_and_executor(run_fn):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("agen closed")

    def job():
        time.sleep(0.05)
        events.append("job done")

    holder = []

    async def main():
        g = agen()
        holder.append(g)  # keep it alive: only shutdown_asyncgens can close it
        await g.__anext__()
        asyncio.get_running_loop().run_in_executor(None, job)
        return "ok"

    assert run_fn(main()) == "ok"
    assert sorted(events) == ["agen closed", "job done"]


def test_run_in_running_loop_raises(run_fn):
    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError):
                run_fn(coro)
        finally:
            coro.close()
        return "ok"

    assert asyncio.run(main()) == "ok"


def test_run_rejects_non_coroutine(run_fn):
    # asyncio 3.14's run() also takes awaitables, and says so when given neither.
    if sys.version_info >= (3, 14):
        error, message = TypeError, "^An asyncio.Future, a coroutine or an awaitable is required$"
    else:
        error, message = ValueError, "^a coroutine was expected, got 42$"
    with pytest.raises(error, match=message):
        run_fn(42)


def test_run_isolates_context(run_fn):
    async def main():
        var.set("inside run")
        return var.get()

    assert run_fn(main()) == "inside run"
    assert var.get() == "default"


def test_run_from_a_thread(run_fn):
    result = []

    async def main():
        await asyncio.sleep(0.001)
        return threading.current_thread().name

    t = threading.Thread(target=lambda: result.append(run_fn(main())), name="runner-thread")
    t.start()
    t.join(10)
    assert result == ["runner-thread"]


# ---------------------------------------------------------------- asyncio.Runner


def test_runner_with_loop_factory(loop_factory):
    async def main(x):
        await asyncio.sleep(0)
        var.set(x)
        return asyncio.get_running_loop(), x

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        lp = runner.get_loop()
        sample = loop_factory()
        sample.close()
        assert type(lp) is type(sample)
        got_loop, value = runner.run(main("first"))
        assert got_loop is lp and value == "first"

        async def read():
            return var.get()

        # One context for all runs of a Runner.
        assert runner.run(read()) == "first"
    assert lp.is_closed()


def test_runner_debug(loop_factory):
    async def main():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True, loop_factory=loop_factory) as runner:
        assert runner.run(main()) is True


# ---------------------------------------------------------------- install / policy


def test_install_sets_the_policy(restore_policy):
    ferroloop = _import_ferroloop()
    ferroloop.install()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, ferroloop.EventLoopPolicy)
    lp = asyncio.new_event_loop()
    try:
        assert type(lp) is ferroloop.Loop
    finally:
        lp.close()

    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main()) is ferroloop.Loop


def test_event_loop_policy(restore_policy):
    ferroloop = _import_ferroloop()
    policy = ferroloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    asyncio.set_event_loop_policy(policy)
    lp = policy.new_event_loop()
    try:
        assert type(lp) is ferroloop.Loop
        asyncio.set_event_loop(lp)
        assert asyncio.get_event_loop() is lp
        assert policy.get_event_loop() is lp
    finally:
        asyncio.set_event_loop(None)
        lp.close()


# ---------------------------------------------------------------- the whole loop API


ABSTRACT_METHODS = sorted(
    name for name, value in vars(asyncio.AbstractEventLoop).items()
    if callable(value) and not name.startswith("__")
)


@pytest.mark.parametrize("method", ABSTRACT_METHODS)
def test_every_abstract_event_loop_method_is_implemented(method):
    # ferroloop-only: every method of asyncio.AbstractEventLoop (whose bodies raise
    # NotImplementedError) is ferroloop's own, none is left to the abstract base.
    ferroloop = _import_ferroloop()
    assert getattr(ferroloop.Loop, method) is not getattr(asyncio.AbstractEventLoop, method)


# ---------------------------------------------------------------- Ctrl+C under run()


@pytest.mark.timeout(20)
def test_run_ctrl_c_cancels_main_then_raises_keyboard_interrupt(run_fn):
    # asyncio.run (through asyncio.Runner) installs its own SIGINT handler in the main thread:
    # the first Ctrl+C cancels the main task, and run() then raises KeyboardInterrupt.
    events = []

    async def main():
        def later():
            time.sleep(0.05)
            events.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=later, daemon=True).start()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            events.append("main cancelled")
            raise
        return "slept through"

    outcome = []
    try:
        try:
            outcome.append(("returned", run_fn(main()), time.monotonic()))
        except KeyboardInterrupt:
            outcome.append(("KeyboardInterrupt", None, time.monotonic()))
        time.sleep(0.02)  # a SIGINT still pending is raised here at the latest
    except KeyboardInterrupt:
        outcome.append(("late KeyboardInterrupt", None, time.monotonic()))
    assert [o[0] for o in outcome] == ["KeyboardInterrupt"]
    assert events[1:] == ["main cancelled"]
    assert outcome[0][2] - events[0] < 0.1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("via_guard", [False, True], ids=["pyo3-wrapper", "c-method-guard"])
def test_rust_panic_surfaces_as_python_exception(via_guard):
    # A panic in native code must become a Python exception, never abort the interpreter.
    # (ferroloop-only: stock asyncio has no native code of ours.)
    ferroloop = _import_ferroloop()
    from ferroloop import _native

    with pytest.raises(BaseException) as caught:
        _native._panic_for_tests(via_guard)
    assert type(caught.value).__name__ == "PanicException"
    assert "ferroloop test panic" in str(caught.value)
    loop = ferroloop.new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "still fine")) == "still fine"
    finally:
        loop.close()
