"""The oracle: CPython's own test_asyncio, run on stock asyncio and on ferroloop, compared.

Usage: ``.venv/bin/python tests/cpython/run.py`` (the README's test command runs it; see
``--help`` for subsets, logs and the README table). Exit status 0 only if every test that fails
on ferroloop but passes on asyncio is listed in ``expectations.toml``, nothing hangs or crashes
on ferroloop unlisted, and no listed entry has gone stale (a listed test that now passes, or a
pattern that matches nothing).

Why it is built this way:

* **Nothing is copied.** The tests are the running interpreter's own ``test.test_asyncio``, so
  they always match the asyncio they are compared with. The expectations are written for
  CPython 3.11 (the project's main interpreter), 3.12, 3.13 and 3.14; CI runs the oracle on
  3.11 to 3.13, and ``scripts/test-debian-python.sh`` on Debian's 3.14 (and 3.13.x); on another
  version the runner refuses to judge. Modules newer than 3.11 are run
  where they exist (``Module.since``).
* **Both loops, every module, same test ids.** Each module runs once on stock asyncio and once
  on ferroloop (``child.py`` explains how ferroloop is put under test without renaming
  anything), so each test gets a pair of outcomes: passes on both; fails on both (not ours:
  the environment, or asyncio itself); fails only on ferroloop (ours). Tests that build
  ``SelectorEventLoop``/``TestLoop`` themselves test asyncio's implementation in both runs and
  simply pass on both; the child counts the loops ferroloop makes, so the report says how many
  tests really ran on ferroloop.
* **One selector variant per mixin group.** test_events, test_sock_lowlevel and test_sendfile
  repeat the same mixin for epoll, poll and select; the epoll class is the one run (and the one
  hooked for ferroloop), the duplicates are dropped (``MODULES``), which saves about half the
  time and changes nothing for ferroloop, which has one poller.
* **A subprocess per module and loop, two at a time** (the CI machine has 2 cores), each with a
  time limit, and a per-test watchdog in the child. A hang or a crash is recorded against the
  test that was running, and the module is restarted without it, so the run goes on.
* **Flakiness is checked, not guessed:** unlisted ferroloop-only failures, and asyncio's own
  failures, are run once more in a fresh process before they count; what passes the second
  time is reported as flaky.
* **One reviewed file of differences** (``expectations.toml``): each entry is a test id or an
  fnmatch pattern with a category (``waits-on-issue`` + the issue, ``not-applicable`` + why,
  ``ours-open`` + the discrepancy). An entry must stay true: a matched test that passes on
  ferroloop, a pattern that matches nothing, a ``waits-on-issue`` failure whose traceback
  does not name its issue, or a hang where the entry does not say ``hangs = true`` (or the
  reverse) fails the run (``hangs = "sometimes"``: a test that hangs or fails depending on a
  race in the test itself, which the entry explains). A crash on ferroloop always fails it,
  listed or not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
EXPECTATIONS = HERE / "expectations.toml"
SUPPORTED = ((3, 11), (3, 12), (3, 13), (3, 14))

OK = {"pass", "skip", "xfail"}          # outcomes that are not failures
BAD = {"fail", "error", "xpass", "hang", "crash"}
MAX_RESTARTS = 25                        # per module and loop, after hangs or crashes
# Watchdog for tests listed with ``hangs = true``: they hang only until their issue lands (and
# then pass in well under a second on asyncio), so they need not cost a full --test-timeout.
LISTED_HANG_TIMEOUT = 10.0


@dataclass(frozen=True)
class Module:
    """A module of test_asyncio and how it is run."""

    name: str
    # Duplicate selector variants of a mixin group that is run through its epoll class.
    drop: tuple[str, ...] = ()
    # ``Class.method`` loop factories that build an asyncio SelectorEventLoop themselves: in the
    # ferroloop run they return a ferroloop loop instead.
    hooks: tuple[str, ...] = ()
    # Rough asyncio run time in seconds, to start the long modules first.
    weight: float = 1.0
    # The first CPython whose test_asyncio has the module.
    since: tuple[int, int] = (3, 11)


_VARIANTS = ("PollEventLoopTests", "SelectEventLoopTests")

MODULES: tuple[Module, ...] = (
    Module("test_base_events", weight=1),
    Module("test_buffered_proto", hooks=("BufferedProtocolSelectorTests.new_loop",)),
    Module("test_context"),
    Module("test_eager_task_factory", since=(3, 12)),
    Module("test_events", drop=_VARIANTS, hooks=("EPollEventLoopTests.create_event_loop",),
           weight=4),
    Module("test_free_threading", since=(3, 14)),
    Module("test_futures"),
    Module("test_futures2"),
    Module("test_graph", since=(3, 14)),
    Module("test_locks"),
    Module("test_pep492"),
    Module("test_protocols"),
    Module("test_queues"),
    Module("test_runners"),
    Module("test_selector_events"),
    Module("test_sendfile", drop=_VARIANTS, hooks=("EPollEventLoopTests.create_event_loop",)),
    Module("test_server", hooks=("SelectorStartServerTests.new_loop",)),
    Module("test_sock_lowlevel", drop=_VARIANTS,
           hooks=("EPollEventLoopTests.create_event_loop",), weight=1.5),
    Module("test_ssl", weight=8),
    Module("test_sslproto", hooks=("SelectorStartTLSTests.new_loop",), weight=4),
    Module("test_staggered", since=(3, 13)),
    Module("test_streams", weight=1),
    Module("test_subprocess", weight=14),
    Module("test_taskgroups", weight=6),
    Module("test_tasks", weight=13),
    Module("test_threads"),
    Module("test_timeouts"),
    Module("test_tools", since=(3, 14)),
    Module("test_transports"),
    Module("test_unix_events"),
    Module("test_waitfor", weight=1),
)

# Modules of test_asyncio that are not run at all, with the reason.
NOT_RUN: dict[str, str] = {
    "test_windows_events": "Windows only (raises SkipTest at import elsewhere)",
    "test_windows_utils": "Windows only (raises SkipTest at import elsewhere)",
    "test_proactor_events": "asyncio's BaseProactorEventLoop and its transports over a mocked "
                            "IOCP proactor; no test goes through the policy or a loop factory",
}


# -- running the children -------------------------------------------------------------------


@dataclass
class Result:
    outcome: str          # pass fail error skip xfail xpass hang crash
    detail: str = ""
    ferro: bool = False   # the test made at least one ferroloop loop
    seconds: float = 0.0


@dataclass
class JobResult:
    module: str
    loop: str
    results: dict[str, Result] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # module-level crashes, time limits
    seconds: float = 0.0
    restarts: int = 0


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        events.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a crash
                        pass
    return events


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def _watchdog_dump(path: Path) -> str:
    """The stacks faulthandler printed when a child's per-test watchdog fired, if it did."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    at = text.rfind("Timeout (")
    return text[at:at + 6000] if at >= 0 else ""


def run_job(mod: Module, loop: str, workdir: Path, args: argparse.Namespace,
            only: set[str] | None = None, tag: str = "",
            short: tuple[str, ...] = ()) -> JobResult:
    """Run ``mod`` on ``loop`` in child processes until every planned test has an outcome."""
    job = JobResult(mod.name, loop)
    started = time.monotonic()
    deadline = started + args.module_timeout
    skip: set[str] = set()
    base = workdir / f"{mod.name}.{loop}{tag}"
    for attempt in range(MAX_RESTARTS + 1):
        out = base.with_name(f"{base.name}.{attempt}.jsonl")
        log = base.with_name(f"{base.name}.{attempt}.log")
        exclude = base.with_name(f"{base.name}.{attempt}.exclude")
        exclude.write_text("\n".join(sorted(skip)) + "\n", encoding="utf-8")
        cmd = [sys.executable, str(CHILD), "--module", mod.name, "--loop", loop,
               "--out", str(out), "--exclude", str(exclude),
               "--test-timeout", str(args.test_timeout)]
        for cls in mod.drop:
            cmd += ["--drop-class", cls]
        for hook in mod.hooks:
            cmd += ["--hook", hook]
        if loop == "ferroloop":
            for pat in short:
                cmd += ["--short-timeout-pattern", pat]
            cmd += ["--short-timeout", str(LISTED_HANG_TIMEOUT)]
        if only is not None:
            only_file = base.with_name(f"{base.name}.only")
            only_file.write_text("\n".join(sorted(only)) + "\n", encoding="utf-8")
            cmd += ["--only", str(only_file)]
        env = dict(os.environ)
        env.pop("PYTHONASYNCIODEBUG", None)
        env["PYTHONUNBUFFERED"] = "1"
        with log.open("wb") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=workdir,
                                    start_new_session=True)
            timed_out = False
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        running: str | None = None
        done = False
        for ev in _read_events(out):
            kind = ev.get("event")
            if kind == "plan":
                for tid in ev["ids"]:
                    if tid not in job.results and tid not in job.order:
                        job.order.append(tid)
                for note in ev.get("adaptations", []):
                    if note not in job.adaptations:
                        job.adaptations.append(note)
            elif kind == "start":
                running = ev["id"]
            elif kind == "end":
                job.results[ev["id"]] = Result(ev["outcome"], ev.get("detail", ""),
                                               ev.get("ferro", False), ev.get("seconds", 0.0))
                if ev["id"] == running:
                    running = None
            elif kind == "done":
                done = True
        if done and rc == 0:
            break
        tail = _tail(log)
        dump = _watchdog_dump(log)
        if running is not None:
            if timed_out:
                job.results[running] = Result("hang", f"module time limit "
                                              f"({args.module_timeout:.0f} s) reached\n{tail}")
            elif dump:  # the child's watchdog fired (faulthandler's backstop may crash)
                job.results[running] = Result("hang", f"no result within the child's watchdog "
                                              f"time\n{dump}")
            else:
                job.results[running] = Result("crash", f"child exit status {rc}\n{tail}")
        else:
            job.problems.append(f"{mod.name} on {loop}: child exit status {rc} "
                                f"{'(time limit)' if timed_out else ''} outside any test\n{tail}")
            break
        if timed_out:
            job.problems.append(f"{mod.name} on {loop}: module time limit reached")
            break
        skip = set(job.results)
        job.restarts += 1
        if not set(job.order) - skip:
            break
    else:
        job.problems.append(f"{mod.name} on {loop}: gave up after {MAX_RESTARTS} restarts")
    for tid in job.order:
        if tid not in job.results:
            job.results[tid] = Result("hang", "never ran: the module was stopped before it")
    job.seconds = time.monotonic() - started
    return job


# -- expectations ---------------------------------------------------------------------------


CATEGORIES = ("waits-on-issue", "not-applicable", "ours-open")


@dataclass
class Entry:
    category: str
    why: str
    tests: list[str]
    issue: int | None = None
    # waits-on-issue entries whose failure is a consequence that does not print the issue
    # (e.g. a hang, or an exception swallowed by the test) say so here.
    unnamed: str | None = None
    # The tests hang on ferroloop until the issue lands (watchdog: LISTED_HANG_TIMEOUT).
    hangs: bool = False
    # ``hangs = "sometimes"``: they hang or fail, depending on a race in the test itself
    # (same watchdog); either outcome is accepted.
    hangs_sometimes: bool = False
    matched: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def label(self) -> str:
        return f"#{self.issue}" if self.category == "waits-on-issue" else self.category


def _version(text: Any, where: str) -> tuple[int, ...]:
    if not isinstance(text, str) or not re.fullmatch(r"3\.\d+(\.\d+)?", text):
        raise SystemExit(f"{where}: a version is written \"3.14\" or \"3.13.5\"")
    return tuple(int(part) for part in text.split("."))


def load_expectations(path: Path) -> list[Entry]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = []
    running = sys.version_info[:3]
    for i, raw in enumerate(data.get("entry", [])):
        where = f"{path.name}: entry {i + 1}"
        unknown = set(raw) - {"category", "why", "tests", "issue", "unnamed", "hangs", "since",
                              "before"}
        if unknown:
            raise SystemExit(f"{where}: unknown keys {sorted(unknown)}")
        # Tests that exist only in some versions' test_asyncio: the entry holds from ``since``
        # and until before ``before``; elsewhere it is left out (its patterns would be stale).
        since = _version(raw["since"], where) if "since" in raw else None
        before = _version(raw["before"], where) if "before" in raw else None
        if (since is not None and running < since) or (before is not None and running >= before):
            continue
        cat = raw.get("category")
        if cat not in CATEGORIES:
            raise SystemExit(f"{where}: category must be one of {CATEGORIES}")
        if not raw.get("why") or not raw.get("tests"):
            raise SystemExit(f"{where}: 'why' and 'tests' are required")
        if (cat == "waits-on-issue") != isinstance(raw.get("issue"), int):
            raise SystemExit(f"{where}: 'issue' (a number) goes with waits-on-issue, only")
        hangs = raw.get("hangs", False)
        if not (isinstance(hangs, bool) or hangs == "sometimes"):
            raise SystemExit(f"{where}: 'hangs' is true, false or \"sometimes\"")
        if hangs and cat == "waits-on-issue" and not raw.get("unnamed"):
            raise SystemExit(f"{where}: a hang names no issue: say why in 'unnamed'")
        entries.append(Entry(cat, raw["why"], list(raw["tests"]), raw.get("issue"),
                             raw.get("unnamed"), hangs is True, hangs == "sometimes"))
    return entries


def match(entries: list[Entry], tid: str) -> Entry | None:
    hits = [e for e in entries for pat in e.tests if fnmatch.fnmatchcase(tid, pat)]
    for e in hits:
        for pat in e.tests:
            if fnmatch.fnmatchcase(tid, pat):
                e.matched[pat].add(tid)
    if len({id(e) for e in hits}) > 1:
        raise SystemExit(f"{tid} is matched by more than one expectations entry")
    return hits[0] if hits else None


# -- classification -------------------------------------------------------------------------


@dataclass
class Row:
    tid: str
    a: Result
    f: Result
    kind: str = ""          # see classify()
    entry: Entry | None = None
    note: str = ""


def classify(a: Result, f: Result) -> str:
    if a.outcome == "skip" and f.outcome == "skip":
        return "skipped"
    if a.outcome in OK and f.outcome in OK:
        if f.outcome == "skip":
            return "ours"        # passes on asyncio, skipped on ferroloop: needs a reason
        return "pass-both"
    if a.outcome in BAD and f.outcome in BAD:
        return "fail-both"
    if a.outcome in BAD:
        return "asyncio-only"
    return "ours"


def module_of(tid: str) -> str:
    return tid.split(".", 1)[0].split(" ")[-1].lstrip("(")


def _summary(result: Result) -> str:
    """One line: the exception of a failure, the reason of a skip, what a hang or crash was."""
    lines = [ln.strip() for ln in result.detail.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[0] if result.outcome in ("hang", "crash") else lines[-1]


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", help="run only these modules (test_events …)")
    parser.add_argument("--jobs", type=int, default=2)
    # The slowest test_asyncio test takes about 2.5 s on asyncio here; 30 s is
    # test.support.SHORT_TIMEOUT, what the tests themselves allow for "should be quick".
    parser.add_argument("--test-timeout", type=float, default=30.0,
                        help="seconds before a single test counts as a hang")
    parser.add_argument("--module-timeout", type=float, default=300.0,
                        help="seconds for one module on one loop")
    parser.add_argument("--expectations", type=Path, default=EXPECTATIONS,
                        help="the reviewed list of differences (default: %(default)s)")
    parser.add_argument("--logs", type=Path, help="keep the children's logs and results here")
    parser.add_argument("--json", type=Path, help="write every test's pair of outcomes here")
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="list every failing test, not only the ones that fail the run")
    args = parser.parse_args()

    if sys.version_info[:2] not in SUPPORTED:
        versions = ", ".join(".".join(map(str, v)) for v in SUPPORTED)
        print(f"tests/cpython: expectations.toml is written for CPython {versions}; "
              f"this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    here = [m for m in MODULES if sys.version_info[:2] >= m.since]

    import test.test_asyncio as package  # the interpreter's own tests

    present = {p.stem for p in Path(package.__path__[0]).glob("test_*.py")}
    known = {m.name for m in here} | set(NOT_RUN)
    if present != known:
        print(f"tests/cpython: test_asyncio modules changed: new {sorted(present - known)}, "
              f"gone {sorted(known - present)}; update MODULES/NOT_RUN", file=sys.stderr)
        return 2
    modules = [m for m in here if not args.modules or m.name in args.modules]
    if args.modules and len(modules) != len(args.modules):
        print(f"unknown modules in {args.modules}", file=sys.stderr)
        return 2
    entries = load_expectations(args.expectations)

    workdir = Path(tempfile.mkdtemp(prefix="ferroloop-oracle-"))
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(workdir)
        workdir = args.logs.resolve()
    t0 = time.monotonic()
    jobs = sorted(((m, loop) for m in modules for loop in ("ferroloop", "asyncio")),
                  key=lambda ml: -ml[0].weight)
    short = tuple(pat for e in entries if e.hangs or e.hangs_sometimes for pat in e.tests)
    done: dict[tuple[str, str], JobResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {pool.submit(run_job, m, loop, workdir, args, None, "",
                            tuple(p for p in short if module_of(p) == m.name)): (m.name, loop)
                for m, loop in jobs}
        for fut in concurrent.futures.as_completed(futs):
            job = fut.result()
            done[futs[fut]] = job
            print(f"  {job.module:<22} {job.loop:<9} {len(job.results):>4} tests "
                  f"{job.seconds:6.1f} s" + (f", {job.restarts} restart(s)"
                                              if job.restarts else ""), flush=True)

    # Rerun once, in a fresh process: unlisted ferroloop-only failures, and asyncio's failures.
    def outcome_pairs() -> dict[str, tuple[Result, Result]]:
        pairs = {}
        for m in modules:
            a_job, f_job = done[(m.name, "asyncio")], done[(m.name, "ferroloop")]
            for tid in dict.fromkeys(list(a_job.results) + list(f_job.results)):
                a = a_job.results.get(tid, Result("crash", "no result on asyncio"))
                f = f_job.results.get(tid, Result("crash", "no result on ferroloop"))
                pairs[tid] = (a, f)
        return pairs

    flaky: dict[str, str] = {}
    pairs = outcome_pairs()
    rerun: dict[tuple[str, str], set[str]] = defaultdict(set)
    for tid, (a, f) in pairs.items():
        if " (" in tid:       # fixture errors (setUpClass …) cannot be rerun alone
            continue
        if a.outcome in BAD and a.outcome != "hang":
            rerun[(module_of(tid), "asyncio")].add(tid)
        if (a.outcome in OK and f.outcome in BAD and f.outcome != "hang"
                and _peek(entries, tid) is None):
            rerun[(module_of(tid), "ferroloop")].add(tid)
    if rerun:
        by_name = {m.name: m for m in modules}
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futs2 = {pool.submit(run_job, by_name[mod], loop, workdir, args, ids, ".rerun"):
                     (mod, loop, ids) for (mod, loop), ids in rerun.items()}
            for fut in concurrent.futures.as_completed(futs2):
                mod, loop, ids = futs2[fut]
                again = fut.result()
                for tid in ids:
                    second = again.results.get(tid)
                    if second is not None and second.outcome in OK:
                        first = done[(mod, loop)].results[tid]
                        flaky[tid] = (f"{first.outcome} then {second.outcome} on {loop}: "
                                      f"{_summary(first)}")
                        done[(mod, loop)].results[tid] = second
        pairs = outcome_pairs()
    elapsed = time.monotonic() - t0

    # Classify and check the expectations.
    rows: list[Row] = []
    failures: list[str] = []
    for tid, (a, f) in pairs.items():
        row = Row(tid, a, f, classify(a, f))
        row.entry = match(entries, tid)
        if row.entry is not None:
            e = row.entry
            if row.kind != "ours" and f.outcome not in BAD:
                failures.append(f"STALE {tid}: listed ({e.label()}) but {f.outcome}es on "
                                f"ferroloop; remove it from expectations.toml")
            elif f.outcome == "crash":
                failures.append(f"CRASH {tid}: listed ({e.label()}), but a crash is never "
                                f"expected: {_summary(f)}")
            elif ((f.outcome == "hang") != e.hangs and not e.hangs_sometimes
                  and row.kind == "ours"):
                failures.append(f"WRONG KIND {tid}: listed ({e.label()}) "
                                f"{'as hanging' if e.hangs else 'without hangs = true'}, but "
                                f"it {f.outcome}s on ferroloop: {_summary(f)}")
            elif row.kind == "ours" and e.category == "waits-on-issue" and e.unnamed is None \
                    and f.outcome in BAD and f"issue #{e.issue}" not in f.detail:
                named = sorted(set(re.findall(r"issue #\d+", f.detail)))
                failures.append(f"WRONG ISSUE {tid}: listed as waiting on #{e.issue}, but the "
                                f"failure names {named or 'no issue'}: {_summary(f)}")
        elif row.kind == "ours":
            failures.append(f"OURS {tid}: {f.outcome} on ferroloop, {a.outcome} on asyncio: "
                            f"{_summary(f) or f.outcome}")
        rows.append(row)
    ran = {m.name for m in modules}
    for e in entries:
        for pat in e.tests:
            if module_of(pat) in ran and not e.matched.get(pat):
                failures.append(f"STALE pattern {pat!r} ({e.label()}) matches no test")
    problems = [p for job in done.values() for p in job.problems]

    report(rows, modules, done, flaky, problems, failures, elapsed, args)
    if args.json:
        args.json.write_text(json.dumps({r.tid: {
            "asyncio": r.a.outcome, "ferroloop": r.f.outcome, "kind": r.kind,
            "ferro_loop": r.f.ferro, "entry": r.entry.label() if r.entry else None,
            "ferroloop_detail": _summary(r.f) if r.f.outcome in BAD else "",
        } for r in rows}, indent=1, sort_keys=True), encoding="utf-8")
    if not args.logs:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures or problems else 0


def _peek(entries: list[Entry], tid: str) -> Entry | None:
    for e in entries:
        if any(fnmatch.fnmatchcase(tid, pat) for pat in e.tests):
            return e
    return None


def report(rows: list[Row], modules: list[Module], done: dict[tuple[str, str], JobResult],
           flaky: dict[str, str], problems: list[str], failures: list[str], elapsed: float,
           args: argparse.Namespace) -> None:
    def counts(rs: list[Row]) -> Counter:
        c: Counter = Counter()
        for r in rs:
            c["run"] += 1
            c[r.kind] += 1
            if r.f.ferro:
                c["on-ferroloop"] += 1
                if r.kind == "pass-both":
                    c["pass-both-on-ferroloop"] += 1
            if r.kind == "ours":
                c["ours:" + (r.entry.label() if r.entry else "unlisted")] += 1
        return c

    by_mod: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_mod[module_of(r.tid)].append(r)
    issues = sorted({r.entry.label() for r in rows if r.entry and r.kind == "ours"},
                    key=lambda s: (not s.startswith("#"), int(s[1:]) if s[0] == "#" else 0, s))

    print()
    head = (f"{'module':<22} {'tests':>5} {'both ok':>7} {'skip':>4} {'fail both':>9} "
            f"{'async only':>10} {'ours':>5}  {'on ferro':>8}  ours by entry")
    print(head)
    print("-" * len(head))
    for m in modules:
        c = counts(by_mod[m.name])
        detail = ", ".join(f"{k[5:]}: {v}" for k, v in sorted(c.items()) if k.startswith("ours:"))
        print(f"{m.name:<22} {c['run']:>5} {c['pass-both']:>7} {c['skipped']:>4} "
              f"{c['fail-both']:>9} {c['asyncio-only']:>10} {c['ours']:>5}  "
              f"{c['on-ferroloop']:>8}  {detail}")
    total = counts(rows)
    print("-" * len(head))
    detail = ", ".join(f"{k[5:]}: {v}" for k, v in sorted(total.items()) if k.startswith("ours:"))
    print(f"{'total':<22} {total['run']:>5} {total['pass-both']:>7} {total['skipped']:>4} "
          f"{total['fail-both']:>9} {total['asyncio-only']:>10} {total['ours']:>5}  "
          f"{total['on-ferroloop']:>8}  {detail}")
    print(f"\n{total['run']} tests in {len(modules)} modules, each on asyncio and on ferroloop, "
          f"in {elapsed:.0f} s ({args.jobs} at a time). {total['on-ferroloop']} of them made "
          f"a ferroloop loop ({total['pass-both-on-ferroloop']} of those pass on both); the "
          f"others test asyncio's own classes (TestLoop, SelectorEventLoop, mocks) in both runs.")
    adaptations = sorted({a for j in done.values() for a in j.adaptations})
    for note in adaptations:
        print(f"fixture adaptation in the ferroloop run: {note}")

    def show(title: str, items: list[str]) -> None:
        if items:
            print(f"\n{title} ({len(items)}):")
            for it in items:
                print("  " + it)

    show("ours-open: listed differences from asyncio in what ferroloop has already",
         [f"{r.tid}: {r.f.outcome}: {_summary(r.f)}" for r in rows
          if r.entry and r.entry.category == "ours-open"])
    show("flaky (failed, then passed on a rerun)", [f"{t}: {d}" for t, d in flaky.items()])
    show("failing on asyncio only (not ours)",
         [f"{r.tid}: {r.a.outcome}: {_summary(r.a)}" for r in rows
          if r.kind == "asyncio-only"])
    if args.verbose:
        show("failing on both (not ours)",
             [f"{r.tid}: {r.a.outcome}/{r.f.outcome}: {_summary(r.a)}" for r in rows
              if r.kind == "fail-both"])
        show("ours, listed", [f"{r.tid} [{r.entry.label()}]: {r.f.outcome}: "
                              f"{_summary(r.f)}" for r in rows
                              if r.kind == "ours" and r.entry])
    else:
        fb = [r for r in rows if r.kind == "fail-both"]
        if fb:
            print(f"\nfailing on both (not ours): {len(fb)} (-v lists them)")
    show("problems", problems)
    show("FAILURES", failures)
    if args.markdown:
        listed = Counter(r.entry.label() for r in rows if r.kind == "ours" and r.entry)
        ours = ", ".join(f"{listed[k]} wait on {k}" if k.startswith("#") else f"{listed[k]} {k}"
                         for k in issues if k != "not-applicable")
        print("\n| tests run | passed on both (on a ferroloop loop) | failed on both (not ours) "
              "| ours failing | not applicable | skipped on both |")
        print("| ---: | ---: | ---: | --- | ---: | ---: |")
        ours_n = total["ours"] - listed["not-applicable"]
        print(f"| {total['run']} | {total['pass-both']} ({total['pass-both-on-ferroloop']}) "
              f"| {total['fail-both']} | {ours_n} ({ours or 'none'}) "
              f"| {listed['not-applicable']} | {total['skipped']} |")
    print("\nresult:", "FAILED" if failures or problems else "OK")


if __name__ == "__main__":
    sys.exit(main())
