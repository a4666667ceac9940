"""Run one module of CPython's test_asyncio on one event loop; write each test's outcome.

Started by ``run.py``, once per (module, loop) and again after a hang or crash, never by hand
in CI. Why it is built this way:

* **A process per module and loop.** test_asyncio mutates process-wide state (the policy, child
  watchers, signal handlers, threads, the asyncio logger). A fresh interpreter per module keeps
  one module's leftovers, or a ferroloop crash, from deciding another module's results.
* **Results are streamed, one JSON line per event, flushed at once.** If a test hangs or the
  interpreter dies, everything before it is already on disk, and the ``start`` line without an
  ``end`` names the culprit; ``run.py`` then restarts the module without it.
* **A watchdog per test** turns a hang into a stack dump and exit status 1 after
  ``--test-timeout`` seconds, so a hang costs one test, not the whole module's time limit. It is
  a Python thread that dumps the stacks while holding the GIL: faulthandler's own
  ``dump_traceback_later`` reads the frames of a thread that is still running Python and can
  crash doing so (seen here: SIGSEGV in the dump of a busy-looping test). faulthandler's timer
  stays armed a few seconds later, as the backstop for a hang that never releases the GIL.
* **How ferroloop is put under test** (``--loop ferroloop``), without changing test ids:
  - ``asyncio.DefaultEventLoopPolicy`` is replaced *before* the module is imported by a subclass
    of ``ferroloop.EventLoopPolicy``. asyncio 3.11 re-imports that name from the package each
    time the policy is reset (``events._init_event_loop_policy``; 3.14 imports
    ``unix_events._DefaultEventLoopPolicy``, replaced there), so the modules'
    ``asyncio.set_event_loop_policy(None)`` calls bring back ferroloop, and every
    ``asyncio.new_event_loop()``, ``asyncio.run()`` and ``IsolatedAsyncioTestCase`` goes to it.
  - The conformance classes that build their loop themselves (``create_event_loop`` /
    ``new_loop`` returning ``asyncio.SelectorEventLoop(...)``) are listed by ``run.py`` as hooks;
    the hook method is replaced on the class itself, so ids stay identical between runs.
  - Tests that build ``asyncio.SelectorEventLoop``, ``BaseEventLoop`` or ``test_utils.TestLoop``
    directly keep testing asyncio's implementation. Each loop ferroloop makes is counted, and
    each result says whether the test made one (``ferro``), so the report can say how many
    tests really ran on ferroloop.
* Only the standard library and ferroloop are imported: this runs inside the interpreter whose
  own ``test`` package is being run.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from typing import Any, TextIO

PACKAGE = "test.test_asyncio"
DETAIL_LIMIT = 6000
WATCHDOG_MARK = "Timeout ("  # run.py looks for this at the start of the dump
BACKSTOP = 5.0               # seconds after the Python watchdog, for GIL-holding hangs

# How many loops ferroloop has made in this process (only loops made through the substitutes
# installed below are counted; the probe's own loop is not).
_ferro_loops = 0


def short_id(test: Any) -> str:
    """``test.test_asyncio.test_events.X.test_y`` -> ``test_events.X.test_y``."""
    tid = test.id()
    prefix = PACKAGE + "."
    if tid.startswith(prefix):
        return tid[len(prefix):]
    # Class- and module-level fixture errors: "setUpClass (test.test_asyncio.test_x.Cls)".
    return tid.replace("(" + prefix, "(")


def _new_ferroloop() -> asyncio.AbstractEventLoop:
    import ferroloop

    global _ferro_loops
    _ferro_loops += 1
    return ferroloop.new_event_loop()


def _ferroloop_signal_handlers_missing() -> bool:
    """True while ferroloop's ``add_signal_handler`` raises NotImplementedError (issue #8)."""
    import ferroloop

    loop = ferroloop.new_event_loop()
    try:
        loop.add_signal_handler(signal.SIGCHLD, lambda: None)
    except NotImplementedError:
        return True
    else:
        loop.remove_signal_handler(signal.SIGCHLD)
        return False
    finally:
        loop.close()


def install_ferroloop_policy() -> None:
    import ferroloop

    class OracleEventLoopPolicy(ferroloop.EventLoopPolicy):  # type: ignore[misc, valid-type]
        """ferroloop's policy, counting the loops it makes."""

        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return _new_ferroloop()

    if sys.version_info >= (3, 14):
        # 3.14 deprecates the public policy names (module __getattr__ with a warning) and
        # ``_init_event_loop_policy`` imports the private ``unix_events._DefaultEventLoopPolicy``;
        # the test modules reset the policy through ``events._set_event_loop_policy(None)``.
        asyncio.unix_events._DefaultEventLoopPolicy = OracleEventLoopPolicy  # type: ignore[attr-defined]
        asyncio.events._set_event_loop_policy(None)  # type: ignore[attr-defined]
        policy = asyncio.events._get_event_loop_policy()  # type: ignore[attr-defined]
    else:
        asyncio.DefaultEventLoopPolicy = OracleEventLoopPolicy  # type: ignore[misc]
        if sys.platform != "win32":
            asyncio.unix_events.DefaultEventLoopPolicy = OracleEventLoopPolicy  # type: ignore[misc]
        asyncio.set_event_loop_policy(None)
        policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, OracleEventLoopPolicy), policy


def install_hooks(module: Any, hooks: list[str]) -> None:
    """Replace each ``Class.method`` loop factory of ``module`` by ferroloop's."""
    for hook in hooks:
        cls_name, method = hook.split(".")
        cls = getattr(module, cls_name)
        if method not in vars(cls):
            raise SystemExit(f"hook {module.__name__}.{hook}: the class defines no {method}()")

        def make_loop(self: Any) -> asyncio.AbstractEventLoop:
            return _new_ferroloop()

        setattr(cls, method, make_loop)


def _threaded_watcher_in_setup(cls: Any) -> None:
    """While ``cls.setUp`` runs, ``asyncio.SafeChildWatcher`` is ``ThreadedChildWatcher``."""
    original = cls.setUp

    def setUp(self: Any) -> None:
        safe = asyncio.SafeChildWatcher
        asyncio.SafeChildWatcher = asyncio.ThreadedChildWatcher  # type: ignore[misc]
        try:
            original(self)
        finally:
            asyncio.SafeChildWatcher = safe  # type: ignore[misc]

    cls.setUp = setUp


def adapt_test_events(module: Any) -> list[str]:
    """Two fixtures of test_events, ``UnixEventLoopTestsMixin.setUp`` and
    ``GetEventLoopTestsMixin.setUp``, attach an ``asyncio.SafeChildWatcher`` to the loop, which
    calls ``loop.add_signal_handler(SIGCHLD)``. While that raises NotImplementedError (#8), every
    test of both classes would fail in setUp, including the ~20 that test what ferroloop has
    already (run_until_complete, call_soon/call_later/call_soon_threadsafe, close, executors,
    fd watchers, get_event_loop/get_running_loop). Until then, in the ferroloop run, those two
    setUps get a ``ThreadedChildWatcher`` (3.11's default watcher; it needs no signal
    handler). Only the fixture changes: the subprocess and signal tests still fail, on #8's
    methods, and the adaptation switches itself off once ferroloop has signal handlers."""
    if not _ferroloop_signal_handlers_missing():
        return []
    notes = []
    for name in ("UnixEventLoopTestsMixin", "GetEventLoopTestsMixin"):
        cls = getattr(module, name, None)
        if cls is None:
            raise SystemExit(f"test_events.{name} (to adapt) does not exist")
        _threaded_watcher_in_setup(cls)
        notes.append(f"test_events.{name}.setUp: ThreadedChildWatcher until #8")
    return notes


ADAPTATIONS: dict[str, Callable[[Any], list[str]]] = {
    "test_events": adapt_test_events,
}


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item  # type: ignore[misc]


class Watchdog:
    """One daemon thread: ends the process with a stack dump if a test outlives its time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._test = ""
        self._seconds = 0.0
        threading.Thread(target=self._run, name="oracle-watchdog", daemon=True).start()

    def arm(self, test: str, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._test, self._seconds = test, seconds
            self._cond.notify()
        faulthandler.dump_traceback_later(seconds + BACKSTOP, exit=True)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        with self._cond:
            self._deadline = None
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                sys.stderr.write(f"\n{WATCHDOG_MARK}{self._seconds:g} s): {self._test} "
                                 "is still running\n")
                sys.stderr.flush()
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                os._exit(1)


_RANK = {"pass": 0, "skip": 1, "xfail": 2, "xpass": 3, "fail": 4, "error": 5}


class Recorder(unittest.TestResult):
    """Writes ``start``/``end`` events as JSON lines; arms the per-test watchdog."""

    def __init__(self, out: TextIO, test_timeout: float, short_patterns: list[str],
                 short_timeout: float):
        super().__init__()
        self.watchdog = Watchdog()
        self.out = out
        self.test_timeout = test_timeout
        self.short_patterns = short_patterns
        self.short_timeout = short_timeout
        self.current: Any = None
        self.outcome = "pass"
        self.details: list[str] = []
        self.loops_before = 0
        self.started = 0.0

    def emit(self, **record: Any) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def _trim(self, text: str) -> str:
        return text if len(text) <= DETAIL_LIMIT else "…" + text[-DETAIL_LIMIT:]

    def _text(self, test: Any, err: Any) -> str:
        if isinstance(test, unittest.TestCase):
            return self._exc_info_to_string(err, test)  # without unittest's own frames
        return "".join(traceback.format_exception(*err))

    def _note(self, test: Any, outcome: str, detail: str) -> None:
        if self.current is None or test is not self.current:
            # A class- or module-level fixture (setUpClass, tearDownModule, …): no start/stop.
            self.emit(event="end", id=short_id(test), outcome=outcome,
                      detail=self._trim(detail), ferro=False, seconds=0.0)
            return
        if _RANK[outcome] > _RANK[self.outcome]:
            self.outcome = outcome
        if detail:
            self.details.append(detail)

    def startTest(self, test: Any) -> None:
        super().startTest(test)
        self.current = test
        self.outcome = "pass"
        self.details = []
        self.loops_before = _ferro_loops
        self.started = time.monotonic()
        tid = short_id(test)
        self.emit(event="start", id=tid)
        short = any(fnmatch.fnmatchcase(tid, pat) for pat in self.short_patterns)
        self.watchdog.arm(tid, self.short_timeout if short else self.test_timeout)

    def stopTest(self, test: Any) -> None:
        self.watchdog.disarm()
        super().stopTest(test)
        self.emit(event="end", id=short_id(test), outcome=self.outcome,
                  detail=self._trim("\n".join(self.details)),
                  ferro=_ferro_loops > self.loops_before,
                  seconds=round(time.monotonic() - self.started, 3))
        self.current = None

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._note(test, "error", self._text(test, err))

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._note(test, "fail", self._text(test, err))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._note(test, "skip", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._note(test, "xfail", "")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._note(test, "xpass", "unexpected success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._note(test, kind, f"[subtest {subtest._subDescription()}]\n"
                       + self._text(test, err))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="e.g. test_events")
    parser.add_argument("--loop", choices=("asyncio", "ferroloop"), required=True)
    parser.add_argument("--out", required=True, help="JSON-lines file to append to")
    parser.add_argument("--drop-class", action="append", default=[],
                        help="test class not to run (a duplicate selector variant)")
    parser.add_argument("--hook", action="append", default=[],
                        help="Class.method loop factory replaced in the ferroloop run")
    parser.add_argument("--exclude", default=None, help="file of test ids not to run")
    parser.add_argument("--only", default=None, help="file of the only test ids to run")
    parser.add_argument("--test-timeout", type=float, default=30.0)
    parser.add_argument("--short-timeout-pattern", action="append", default=[],
                        help="fnmatch pattern of tests that get --short-timeout instead")
    parser.add_argument("--short-timeout", type=float, default=10.0)
    args = parser.parse_args()

    faulthandler.enable()
    out = open(args.out, "a", encoding="utf-8")  # noqa: SIM115 - closed by os._exit
    recorder = Recorder(out, args.test_timeout, args.short_timeout_pattern, args.short_timeout)

    adaptations: list[str] = []
    if args.loop == "ferroloop":
        install_ferroloop_policy()
    module = importlib.import_module(f"{PACKAGE}.{args.module}")
    for name in args.drop_class:
        if not hasattr(module, name):
            raise SystemExit(f"{args.module}.{name} (to drop) does not exist")
    if args.loop == "ferroloop":
        install_hooks(module, args.hook)
        adapt = ADAPTATIONS.get(args.module)
        if adapt is not None:
            adaptations.extend(adapt(module))

    def read_ids(path: str | None) -> set[str] | None:
        if path is None:
            return None
        with open(path, encoding="utf-8") as f:
            return {line.strip() for line in f if line.strip()}

    exclude = read_ids(args.exclude) or set()
    only = read_ids(args.only)
    dropped = set(args.drop_class)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    selected = [
        t for t in iter_tests(suite)
        if type(t).__name__ not in dropped
        and short_id(t) not in exclude
        and (only is None or short_id(t) in only)
    ]
    recorder.emit(event="plan", ids=[short_id(t) for t in selected], adaptations=adaptations,
                  python=sys.version.split()[0])
    unittest.TestSuite(selected).run(recorder)
    recorder.emit(event="done")
    out.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Tests may leave non-daemon threads or executors behind; do not wait for them at exit.
    os._exit(0)


if __name__ == "__main__":
    main()
