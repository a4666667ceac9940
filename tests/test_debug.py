"""Debug mode: set_debug/get_debug, PYTHONASYNCIODEBUG and -X dev, slow-callback logging, the
thread check on non-thread-safe calls, coroutine origin tracking, unclosed-loop warnings.
Oracle: stock asyncio."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from conftest import loop_in_subprocess_src, run

ENV_DEBUG = sys.flags.dev_mode or (not sys.flags.ignore_environment
                                   and bool(os.environ.get("PYTHONASYNCIODEBUG")))

THREAD_MSG = "Non-thread-safe operation invoked on an event loop other than the current one"


def test_default_debug_follows_environment(loop):
    assert loop.get_debug() is ENV_DEBUG


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    assert "debug=True" in repr(loop)
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_duration_attribute(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25


# ---------------------------------------------------------------- environment, in a child


def _child_debug(kind, args=(), env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    env.update(env_extra or {})
    src = loop_in_subprocess_src(kind) + (
        "lp = new_loop()\n"
        "print(lp.get_debug())\n"
        "lp.close()\n")
    res = subprocess.run([sys.executable, *args, "-c", src], env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize(("args", "env", "expected"), [
    ((), {}, "False"),
    ((), {"PYTHONASYNCIODEBUG": "1"}, "True"),
    ((), {"PYTHONASYNCIODEBUG": ""}, "False"),
    (("-X", "dev"), {}, "True"),
    ((), {"PYTHONDEVMODE": "1"}, "True"),
    (("-E",), {"PYTHONASYNCIODEBUG": "1"}, "False"),  # -E: environment ignored
], ids=["plain", "PYTHONASYNCIODEBUG=1", "PYTHONASYNCIODEBUG=empty", "X-dev", "PYTHONDEVMODE",
        "E-ignores-env"])
def test_debug_from_environment(loop_factory, args, env, expected):
    assert _child_debug(loop_factory.name, args, env) == expected


# ---------------------------------------------------------------- slow callbacks


def _asyncio_warnings(caplog):
    return [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]


def test_slow_callback_is_logged(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    loop.call_soon(time.sleep, 0.06)
    loop.call_soon(time.sleep, 0)  # fast: not logged
    loop.call_soon(loop.stop)
    loop.run_forever()
    msgs = [r.getMessage() for r in _asyncio_warnings(caplog)]
    assert len(msgs) == 1, msgs
    m = re.fullmatch(r"Executing <Handle sleep\(0\.06\) created at (.+):(\d+)> took (\d+\.\d{3}) "
                     r"seconds", msgs[0])
    assert m, msgs[0]
    assert m.group(1) == __file__
    assert 0.06 <= float(m.group(3)) < 1.0


def test_slow_timer_callback_is_logged(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    loop.call_later(0.001, time.sleep, 0.06)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    msgs = [r.getMessage() for r in _asyncio_warnings(caplog)]
    assert len(msgs) == 1
    assert re.fullmatch(r"Executing <TimerHandle when=[0-9.]+ sleep\(0\.06\) created at .+:\d+> "
                        r"took \d+\.\d{3} seconds", msgs[0]), msgs[0]


def test_slow_task_step_is_logged(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    async def slow():
        time.sleep(0.06)  # noqa: ASYNC251 - blocking on purpose: a slow task step

    loop.run_until_complete(loop.create_task(slow(), name="slowtask"))
    msgs = [r.getMessage() for r in _asyncio_warnings(caplog)]
    assert len(msgs) == 1
    assert re.fullmatch(r"Executing <Task .*name='slowtask'.*> took \d+\.\d{3} seconds",
                        msgs[0]), msgs[0]


def test_slow_callback_not_logged_outside_debug_mode(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.02)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert _asyncio_warnings(caplog) == []


# ---------------------------------------------------------------- thread checks


def _call_from_thread(fn):
    result = []

    def target():
        try:
            result.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001
            result.append(("error", type(exc), str(exc)))

    t = threading.Thread(target=target)
    t.start()
    t.join(5)
    return result[0]


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_other_thread_raises_in_debug_mode(loop, method):
    loop.set_debug(True)
    calls = {
        "call_soon": lambda: loop.call_soon(print),
        "call_later": lambda: loop.call_later(10, print),
        "call_at": lambda: loop.call_at(loop.time() + 10, print),
    }

    async def main():
        return _call_from_thread(calls[method])

    assert run(loop, main()) == ("error", RuntimeError, THREAD_MSG)


def test_threadsafe_call_from_other_thread_is_fine_in_debug_mode(loop):
    loop.set_debug(True)
    out = []

    async def main():
        res = _call_from_thread(lambda: loop.call_soon_threadsafe(out.append, "ts"))
        await asyncio.sleep(0)
        return res[0]

    assert run(loop, main()) == "ok"
    assert out == ["ts"]


def test_thread_check_only_while_running(loop):
    # asyncio checks the thread only while the loop runs (it records the running thread's id):
    # from another thread, call_soon on a loop that is not running does not raise even in debug.
    loop.set_debug(True)
    out = []
    res = _call_from_thread(lambda: loop.call_soon(out.append, "queued"))
    assert res[0] == "ok"
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["queued"]


def test_no_thread_check_outside_debug_mode(loop):
    # Not thread-safe, but asyncio does not check outside debug mode: the call succeeds and the
    # callback runs once something wakes the loop.
    loop.set_debug(False)
    out = []

    async def main():
        def from_thread():
            loop.call_soon(out.append, "unsafe")
            loop.call_soon_threadsafe(out.append, "safe")

        res = _call_from_thread(from_thread)
        for _ in range(10):
            if len(out) == 2:
                break
            await asyncio.sleep(0.001)
        return res[0]

    assert run(loop, main()) == "ok"
    assert out == ["unsafe", "safe"]


# ---------------------------------------------------------------- coroutine origin tracking


def test_coroutine_origin_tracking_while_running_in_debug(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(True)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) == 10  # asyncio.constants.DEBUG_STACK_DEPTH
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_never_awaited_coroutine_warning_has_origin_in_debug(loop):
    loop.set_debug(True)

    async def never():
        pass

    async def main():
        never()  # deliberately never awaited

    with pytest.warns(RuntimeWarning, match=r"coroutine '.*never' was never awaited\n"
                                            r"Coroutine created at \(most recent call last\)"):
        loop.run_until_complete(main())


def test_unclosed_loop_resource_warning(loop_factory):
    lp = loop_factory()
    r = repr(lp)
    with pytest.warns(ResourceWarning, match=f"^unclosed event loop {re.escape(r)}$"):  # noqa: PT031
        del lp
        gc.collect()  # in case the loop sits in a reference cycle
