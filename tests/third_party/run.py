"""Third-party asyncio test suites on stock asyncio and on ferroloop, compared.

Usage: ``.venv/bin/python tests/third_party/run.py [--suite NAME | --ci]`` (what
``scripts/test-third-party.sh`` runs). The suites (``SUITES``): anyio 4.16.0 (about 1.5 min)
and uvloop 0.23.0's asyncio test classes (under a minute), both run by CI through ``--ci``,
aiohttp 3.14.5 (about 17 min), uvicorn 0.54.0 (about 4 min), asyncpg 0.32.0 (about 3 min) and
redis-py 8.1.0's asyncio tests (about 4 min), run on demand. asyncpg's starts temporary
PostgreSQL servers: it needs their binaries (``postgres_server``; install them with
``scripts/install-postgres.sh``) and, when the runner is root, runs its pytest processes as an
unprivileged user (``unprivileged_prefix``). redis-py's runs against a private redis-server that
``service`` starts for each pytest process through scripts/start-redis.sh. For each:

1. the sdist is downloaded once into ``target/third-party/cache`` by pip (``pip download
   --no-deps --no-binary :all:``), and unpacked afresh into ``target/third-party/<name>`` on
   every run; the changes made to it are scripted here (``patch``: a line appended to a
   conftest; ``remove``: a source tree that would shadow the installed package), nothing is
   edited by hand; plugins of ours (``plugins``) are loaded with ``-p``;
2. the package and its test dependencies, pinned, are installed into the running interpreter's
   environment (the project's .venv) by pip, once per set of pins (a stamp file);
3. the suite runs twice in the same environment, once on stock asyncio and once on ferroloop,
   each in its own pytest process; ``report_plugin.py`` streams one JSON line per test. If the
   interpreter dies, the test that was running is recorded as a crash and pytest is started
   again without the tests already done;
4. the two outcomes of each test are compared. A test that passes on asyncio but fails, is
   skipped or crashes on ferroloop is *ours*. Every ours failure is run once more on both
   loops in a fresh process with only those tests; one that then passes on ferroloop is
   reported as flaky (the test depends on what ran before it, or races) and does not count.
   What remains must be listed in ``expectations.toml`` with a reason; an unlisted one fails
   the run, and so does a listed entry that matches no ours failure (stale) unless it is
   marked ``flaky = true``. A crash on ferroloop always fails the run.

Exit status 0 when nothing unlisted remains.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = ROOT / "target" / "third-party"
CACHE = WORK / "cache"
LOOPS = ("asyncio", "ferroloop")
RUN_LIMIT = 900.0  # seconds for one pytest process (the per-test limit is the suite's own)
MAX_RESTARTS = 10


@dataclass
class Suite:
    name: str
    version: str
    # Installed into the environment, pinned: the package itself and its test dependencies.
    requirements: list[str]
    # pytest arguments after the test paths given in `paths`.
    paths: list[str]
    args: list[str] = field(default_factory=list)
    # Scripted change to the unpacked sdist: (relative file, text appended to it).
    patch: tuple[str, str] | None = None
    # Paths of the unpacked sdist removed before the run (a source package that would shadow
    # the installed one).
    remove: list[str] = field(default_factory=list)
    # Extra pytest plugins of ours (modules in this directory), loaded with -p.
    plugins: list[str] = field(default_factory=list)
    # Whether scripts/test.sh (CI) runs it; the others take too long for CI.
    ci: bool = False
    # Checks what the suite needs from the machine beyond pip packages; returns extra
    # environment variables for its pytest processes, or exits saying how to provide it.
    machine: Callable[[], dict[str, str]] | None = None
    # Runs its pytest processes as an unprivileged user when the runner is root (see
    # unprivileged_prefix).
    unprivileged: bool = False
    # Runs each pytest process in a session of its own, and kills what is left of that session
    # when pytest has ended (servers that a dead or timed-out pytest did not stop).
    own_session: bool = False
    # A service the tests need (a server), as a context manager factory: entered before each
    # pytest process of the suite (so each run starts from the same fresh state) and left
    # after it; it is given the suite's work directory and yields extra pytest arguments
    # (where to reach the service).
    service: Callable[[Path], AbstractContextManager[list[str]]] | None = None


INSTALL_POSTGRES = "scripts/install-postgres.sh"
# The user asyncpg's suite runs as when the runner is root; install-postgres.sh creates it.
PG_USER = os.environ.get("FERROLOOP_PG_USER", "ferroloop-tests")


def postgres_server() -> dict[str, str]:
    """PostgreSQL's server binaries for asyncpg's suite, which starts its own temporary clusters
    (asyncpg/cluster.py: initdb through ``pg_ctl init``, then ``postgres``) and finds them
    through PGINSTALLATION, else through ``pg_config --bindir``. Returns PGINSTALLATION, and a
    fresh TMPDIR under target/third-party for the clusters' data directories and sockets and
    the temporary files some of its tests leave behind."""
    bindir = os.environ.get("PGINSTALLATION", "")
    if not bindir and shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=False)
        bindir = out.stdout.strip() if out.returncode == 0 else ""
    missing = [b for b in ("initdb", "pg_ctl", "postgres")
               if not bindir or not os.access(os.path.join(bindir, b), os.X_OK)]
    if missing:
        where = f" in {bindir}" if bindir else " (no PGINSTALLATION, no pg_config on PATH)"
        raise SystemExit(
            f"asyncpg's suite needs PostgreSQL's server binaries; {', '.join(missing)} not "
            f"found{where}.\nInstall them with `sudo bash {INSTALL_POSTGRES}` (Debian/Ubuntu: "
            f"apt-get install -y postgresql), or set PGINSTALLATION to their directory.")
    tmp = WORK / "asyncpg-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return {"PGINSTALLATION": bindir, "TMPDIR": str(tmp)}


def unprivileged_prefix() -> list[str]:
    """The command prefix that runs a suite's pytest process as a user other than root, when
    the runner is root (else nothing). initdb and postgres refuse to run as root, and asyncpg's
    cluster code has no way around that. The process runs in a new user namespace
    (``unshare --user``) in which it is PG_USER, mapped to root outside: it still reads
    everything the runner can (the interpreter may live under /root, which PG_USER could not
    enter), and the files it writes belong to root; inside, initdb and postgres see a
    non-root user with a name, as they require."""
    if os.geteuid() != 0:
        return []
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        raise SystemExit(
            f"running as root: asyncpg's suite runs as the user {PG_USER} (PostgreSQL refuses "
            f"root), which does not exist; create it with `bash {INSTALL_POSTGRES}`, or name "
            f"an existing unprivileged user in FERROLOOP_PG_USER.") from None
    prefix = ["unshare", "--user", f"--map-user={entry.pw_uid}",
              f"--map-group={entry.pw_gid}", "--"]
    probe = subprocess.run([*prefix, "id", "-u"], capture_output=True, text=True, check=False)
    if probe.returncode != 0 or probe.stdout.strip() != str(entry.pw_uid):
        raise SystemExit(
            f"running as root: could not run as {PG_USER} in a user namespace with "
            f"`{' '.join(prefix)}` (util-linux 2.38+ and user namespaces are needed): "
            f"{probe.stderr.strip()}\nRun the asyncpg suite as a non-root user instead.")
    return prefix


class SuiteError(Exception):
    """A suite that cannot run here (its service would not start): fails it, not the others."""


@contextmanager
def redis_server(work: Path) -> Iterator[list[str]]:
    """A private redis-server (scripts/start-redis.sh) for one pytest process, fresh each time."""
    script = ["bash", str(ROOT / "scripts" / "start-redis.sh"), "--dir", str(work / "redis-server")]
    subprocess.run([*script, "--stop"], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(script, check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SuiteError("could not start redis-server (scripts/start-redis.sh says why above)")
    url = next(line.split("=", 1)[1] for line in out.stdout.splitlines()
               if line.startswith("REDIS_URL="))
    try:
        # --redis-mod-url: the same server (it has no modules, so the module tests would skip;
        # they are deselected anyway), rather than whatever may listen on localhost:6479.
        yield [f"--redis-url={url}", f"--redis-mod-url={url}"]
    finally:
        subprocess.run([*script, "--stop"], check=False, stdout=subprocess.DEVNULL)


ANYIO_CONFTEST_TAIL = """

# Added by ferroloop's tests/third_party/run.py: the loop comes from FERROLOOP_TP_LOOP.
from anyio_overrides import (  # noqa: E402, F401, F811
    anyio_backend, asyncio_event_loop, pytest_collection_modifyitems,
)
"""

SUITES = {
    "anyio": Suite(
        name="anyio",
        version="4.16.0",
        requirements=[
            "anyio==4.16.0",
            # anyio's `test` dependency group (pyproject.toml), pinned to what was reviewed.
            "blockbuster==1.5.29",
            "hypothesis>=6.100",
            "psutil==7.2.2",
            "pytest>=9.0",
            "pytest-mock==3.17.0",
            "pytest-timeout>=2.4.0",
            "trustme==1.2.1",
            "truststore==0.10.5",
            "uvloop>=0.22.1",
        ],
        paths=["tests"],
        # Its own config (pyproject.toml: -p anyio, a 20 s pytest-timeout, warnings as errors)
        # applies; the asyncio backend's params come from anyio_overrides.py.
        args=[],
        patch=("tests/conftest.py", ANYIO_CONFTEST_TAIL),
        plugins=["blockbuster_mirror"],
        ci=True,
    ),
    "aiohttp": Suite(
        name="aiohttp",
        version="3.14.5",
        requirements=[
            "aiohttp==3.14.5",
            # From its requirements/test-common*.in and runtime extras, pinned to what was
            # reviewed (not pytest-xdist, pytest-cov, pytest-codspeed: see `args`).
            "aiodns==4.0.4",
            "backports.zstd==1.8.0",
            "blockbuster==1.5.29",
            "Brotli==1.2.1",
            "coverage>=7",
            "freezegun==1.5.5",
            "gunicorn==27.0.1",
            "isal==1.9.1",
            "proxy.py==2.4.10",
            "pytest-mock==3.17.0",
            "pytest-timeout>=2.4.0",
            "trustme==1.2.1",
            "uvloop>=0.22.1",
            "zlib_ng==1.1.0",
        ],
        paths=["tests"],
        # Its pytest.ini's addopts ask for xdist, coverage and doctests of the source tree:
        # replaced by the markers it selects by default, one process, a 30 s per-test limit.
        # Its benchmarks need pytest-codspeed and its autobahn tests need docker.
        args=[
            "-o", "addopts=", "-p", "no:asyncio", "--strict-markers",
            "-m", "not dev_mode and not autobahn and not internal", "--timeout=30",
            "--ignore-glob=tests/test_benchmarks_*", "--ignore=tests/autobahn",
        ],
        # The sdist's aiohttp/ (sources without the compiled parsers) would shadow the
        # installed wheel, the one users run.
        remove=["aiohttp"],
        # Its `loop` fixture makes loops with asyncio.new_event_loop(): ferroloop.install().
        plugins=["install_plugin", "blockbuster_mirror"],
    ),
    "uvloop": Suite(
        name="uvloop",
        version="0.23.0",
        requirements=[
            "uvloop==0.23.0",
            # Its `test` extra (pyproject.toml) less the linters, pinned to what was reviewed.
            "aiohttp==3.14.5",
            "psutil==7.2.2",
            "pyOpenSSL==26.4.0",
            "pytest-timeout>=2.4.0",
        ],
        paths=["tests"],
        # Its own config applies (pyproject.toml: no capture, importlib import mode); a 30 s
        # per-test limit. Only its asyncio classes run (uvloop_aio_plugin.py).
        args=["--timeout=30"],
        # The sdist's uvloop/ (sources, not compiled) would shadow the installed wheel.
        remove=["uvloop"],
        plugins=["uvloop_aio_plugin"],
        ci=True,
    ),
    "uvicorn": Suite(
        name="uvicorn",
        version="0.54.0",
        requirements=[
            "uvicorn==0.54.0",
            # Its `dev` dependency group (pyproject.toml) and `standard` extra, pinned to what
            # was reviewed, less the linters, type checkers, coverage plugins, twine, xdist and
            # codspeed (pytest-mock at the version the other suites use).
            "a2wsgi==1.10.10",
            "cryptography==50.0.2",
            "h11==0.16.0",
            "httptools==0.9.0",
            "httpx2==2.16.2",
            "pytest-mock==3.17.0",
            "pytest-timeout>=2.4.0",
            "python-dotenv==1.2.4",
            "PyYAML==6.0.3",
            "trustme==1.2.1",
            "watchfiles==1.3.0",
            "websockets==17.4",
            "wsproto==1.3.2",
            "zttp==0.0.35",
        ],
        paths=["tests"],
        # Its pyproject.toml's addopts ask for xdist (-n 8): replaced by its other options in
        # one process, a 30 s per-test limit; its benchmarks need pytest-codspeed. The rest of
        # its config applies (warnings as errors, strict xfail, a 60 s faulthandler dump).
        args=[
            "-o", "addopts=", "-p", "no:asyncio", "-rxXs", "--strict-config",
            "--strict-markers", "--timeout=30", "--ignore=tests/benchmarks",
        ],
        # The sdist's uvicorn/ would shadow the installed package (the same files).
        remove=["uvicorn"],
        # ferroloop.install() in the ferroloop run; uvicorn's "auto" loop is the run's loop.
        plugins=["uvicorn_plugin"],
        # Not in CI: about 2 min per loop (its reload tests wait 5 s each on file watching).
        ci=False,
    ),
    "asyncpg": Suite(
        name="asyncpg",
        version="0.32.0",
        requirements=[
            "asyncpg==0.32.0",
            # From its `test` dependency group (pyproject.toml), pinned to what was reviewed.
            # Not flake8/mypy (they lint the sdist's source tree, removed below: skipped on
            # both loops), not gssapi/k5test (a Kerberos realm: skipped), not uvloop (used only
            # with USE_UVLOOP=1).
            "distro==1.9.0",
            "pytest-timeout>=2.4.0",
        ],
        paths=["tests"],
        # Its own config applies (pyproject.toml: no capture, importlib import mode, warnings
        # shown); pytest-asyncio (ours, not among its test dependencies) is left out; a 60 s
        # per-test limit.
        args=["-p", "no:asyncio", "--timeout=60"],
        # The sdist's asyncpg/ (sources without the compiled protocol) would shadow the
        # installed wheel, which has asyncpg._testbase too.
        remove=["asyncpg"],
        # Its TestCase makes one loop per class with asyncio.new_event_loop():
        # ferroloop.install(), and a check that each test's loop is the run's.
        plugins=["install_plugin", "asyncpg_loop_check"],
        # It starts temporary PostgreSQL clusters itself: server binaries, and not as root.
        machine=postgres_server,
        unprivileged=True,
        own_session=True,
    ),
    "redis": Suite(
        name="redis",
        version="8.1.0",
        requirements=[
            "redis==8.1.0",
            # From its dev_requirements.txt, what tests/test_asyncio imports or configures,
            # pinned to what was reviewed (not hiredis: the pure-Python parser, redis-py's
            # default, reads through the loop's streams; not its linters, coverage plugins,
            # uvloop or OpenTelemetry exporters). coverage only for the warning filter its
            # pytest config names.
            "coverage>=7",
            "numpy==2.4.6",
            "packaging>=20.4",
            "pybreaker==1.4.1",
            "pytest-asyncio==1.5.0",
            "pytest-timeout>=2.4.0",
            "redis-entraid==1.2.1",
        ],
        # The asyncio client's tests only (tests/test_asyncio), less its scenario tests (a
        # Redis Enterprise cluster with a fault injector).
        paths=["tests/test_asyncio"],
        # Its pyproject.toml's addopts (-s) replaced by nothing; the rest of its config applies
        # (pytest-asyncio in auto mode, a 30 s per-test limit). Deselected by marker, on both
        # loops: what needs more than one plain Redis server (a cluster, Redis Stack modules,
        # TLS certificates from its repository's dockers/ tree, which the sdist lacks, Entra ID,
        # its multi-database docker profile). redis_plugin.py deselects the few unmarked ones.
        args=[
            "-o", "addopts=", "--ignore=tests/test_asyncio/test_scenario",
            "-m", ("not onlycluster and not redismod and not ssl and not cp_integration"
                   " and not multidb_integration"),
        ],
        # The sdist's redis/ (the same files as the installed package) would shadow it.
        remove=["redis"],
        # ferroloop.install() in the ferroloop run (pytest-asyncio's loops come from the
        # policy); the deselections above.
        plugins=["redis_plugin"],
        # A private redis-server (Debian's redis-server package) per pytest process.
        service=redis_server,
        ci=False,
    ),
}


# ------------------------------------------------------------------------------ preparation


def log(text: str) -> None:
    print(text, flush=True)


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True
    )


def sdist(suite: Suite) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    prefix = f"{suite.name}-{suite.version}"
    found = [p for p in CACHE.iterdir() if p.name.startswith(prefix) and p.suffix == ".gz"]
    if not found:
        log(f"-- downloading the {prefix} sdist")
        pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(CACHE),
            f"{suite.name}=={suite.version}")
        found = [p for p in CACHE.iterdir() if p.name.startswith(prefix) and p.suffix == ".gz"]
    if len(found) != 1:
        raise SystemExit(f"expected one {prefix} sdist in {CACHE}, found {found}")
    return found[0]


def unpack(suite: Suite, archive: Path) -> Path:
    dest = WORK / suite.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    for rel in suite.remove:
        shutil.rmtree(top / rel)
    if suite.patch is not None:
        rel, tail = suite.patch
        with open(top / rel, "a", encoding="utf-8") as f:
            f.write(tail)
    return top


def install(suite: Suite) -> None:
    stamp = Path(sys.prefix) / f".third-party-{suite.name}-stamp"
    wanted = "\n".join(suite.requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log(f"-- installing {suite.name}'s test dependencies into {sys.prefix}")
    pip("install", *suite.requirements)
    stamp.write_text(wanted)


# ------------------------------------------------------------------------------ running


@dataclass
class Machine:
    env: dict[str, str]  # added to the pytest processes' environment
    prefix: list[str]  # put before their command line


@dataclass
class Outcome:
    outcome: str  # passed, failed, skipped, xfailed, xpassed, crashed, missing
    message: str = ""


def run_pytest(suite: Suite, top: Path, loop: str, tag: str, machine: Machine,
               only: list[str] | None = None) -> dict[str, Outcome]:
    """Run the suite (or the node ids in ``only``) on ``loop``; restart after a crash."""
    results: dict[str, Outcome] = {}
    report = WORK / f"{suite.name}-{loop}-{tag}.jsonl"
    deselect = WORK / f"{suite.name}-{loop}-{tag}.deselect"
    logfile = WORK / f"{suite.name}-{loop}-{tag}.log"
    logfile.write_text("")
    env = dict(os.environ)
    env.update(
        FERROLOOP_TP_LOOP=loop,
        FERROLOOP_TP_REPORT=str(report),
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(machine.env)
    targets = only if only is not None else suite.paths
    done: set[str] = set()
    for _attempt in range(MAX_RESTARTS + 1):
        report.unlink(missing_ok=True)
        if done:
            deselect.write_text("\n".join(sorted(done)) + "\n")
            env["FERROLOOP_TP_DESELECT"] = str(deselect)
        service = suite.service(WORK) if suite.service is not None else nullcontext([])
        with service as service_args, open(logfile, "a", encoding="utf-8") as out:
            cmd = [*machine.prefix, sys.executable, "-m", "pytest", "-q", "-p",
                   "no:cacheprovider", "-p", "report_plugin",
                   *(a for p in suite.plugins for a in ("-p", p)),
                   *suite.args, *service_args, *targets]
            proc = subprocess.Popen(cmd, cwd=top, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=suite.own_session)
            try:
                code: int | None = proc.wait(timeout=RUN_LIMIT)
            except subprocess.TimeoutExpired:
                code = None
            if suite.own_session:
                # What is left of its session once pytest is gone (servers it started and
                # did not stop because it died), or all of it after a timeout.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if code is None:
                proc.kill()
                proc.wait()
        running = None
        if report.exists():
            for line in report.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                if rec["event"] == "start":
                    running = rec["id"]
                else:
                    results[rec["id"]] = Outcome(rec["outcome"], rec["message"])
                    done.add(rec["id"])
                    running = None
        # pytest's own statuses: 0 all passed, 1 some failed, 5 nothing collected. Anything
        # else with a test still open (a signal, a timeout of the whole process) is a crash.
        if code in (0, 1, 5) or running is None:
            if code not in (0, 1, 5):
                log(f"   pytest ({loop}) ended with status {code}; see {logfile}")
            break
        what = "timed out" if code is None else f"died (status {code})"
        log(f"   {running} {what} on {loop}; restarting without it")
        results[running] = Outcome("crashed", f"the pytest process {what}")
        done.add(running)
    return results


# ------------------------------------------------------------------------------ judging


@dataclass
class Entry:
    suite: str
    test: str
    category: str
    why: str
    flaky: bool
    matched: list[str] = field(default_factory=list)


CATEGORIES = {"not-applicable", "ours-open", "environment"}


def load_expectations() -> list[Entry]:
    data = tomllib.loads((HERE / "expectations.toml").read_text(encoding="utf-8"))
    entries = []
    for raw in data.get("entry", []):
        if raw.get("category") not in CATEGORIES:
            raise SystemExit(f"expectations.toml: bad category in {raw}")
        if not raw.get("why"):
            raise SystemExit(f"expectations.toml: an entry needs `why`: {raw}")
        entries.append(Entry(raw["suite"], raw["test"], raw["category"], raw["why"],
                             bool(raw.get("flaky", False))))
    return entries


def fails(o: Outcome | None) -> bool:
    return o is None or o.outcome in ("failed", "crashed", "skipped", "missing", "xpassed")


def judge(suite: Suite, top: Path, entries: list[Entry], machine: Machine) -> bool:
    runs = {loop: run_pytest(suite, top, loop, "full", machine) for loop in LOOPS}
    ids = sorted(set(runs["asyncio"]) | set(runs["ferroloop"]))
    for loop in LOOPS:
        counts: dict[str, int] = {}
        for o in runs[loop].values():
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        log(f"   {loop:9}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    ours = [t for t in ids
            if runs["asyncio"].get(t, Outcome("missing")).outcome in ("passed", "xfailed")
            and fails(runs["ferroloop"].get(t))]
    asyncio_only = [t for t in ids
                    if runs["asyncio"].get(t, Outcome("missing")).outcome in ("failed", "crashed")
                    and runs["ferroloop"].get(t, Outcome("missing")).outcome == "passed"]
    crashed = [t for t in ids if runs["ferroloop"].get(t, Outcome("missing")).outcome == "crashed"]
    flaky: list[str] = []
    if ours:
        log(f"   running the {len(ours)} ferroloop-only failure(s) again, alone")
        again = {loop: run_pytest(suite, top, loop, "again", machine, only=ours) for loop in LOOPS}
        for t in ours:
            if again["ferroloop"].get(t, Outcome("missing")).outcome == "passed":
                flaky.append(t)
        ours = [t for t in ours if t not in flaky]
    ok = True
    for t in flaky:
        log(f"   flaky (failed in the full run on ferroloop, passed alone): {t}")
    for t in asyncio_only:
        log(f"   fails on asyncio only (not judged): {t}")
    mine = [e for e in entries if e.suite == suite.name]
    for t in ours:
        entry = next((e for e in mine if fnmatch.fnmatchcase(t, e.test)), None)
        outcome = runs["ferroloop"].get(t, Outcome("missing"))
        if entry is None:
            ok = False
            log(f"FAIL unlisted ferroloop-only {outcome.outcome}: {t}")
            for line in outcome.message.strip().splitlines()[-12:]:
                log(f"       {line}")
        else:
            entry.matched.append(t)
            log(f"   expected ({entry.category}): {t}")
    for t in crashed:
        ok = False
        log(f"FAIL crash on ferroloop: {t}")
    for e in mine:
        if not e.matched and not e.flaky:
            ok = False
            log(f"FAIL stale expectation (matches no ferroloop-only failure): {e.test}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", choices=sorted(SUITES),
                        help="run only this suite (repeatable); default: all")
    parser.add_argument("--ci", action="store_true",
                        help="run the suites that CI runs (anyio, uvloop); default: all")
    args = parser.parse_args()
    entries = load_expectations()
    ok = True
    names = args.suite or sorted(n for n, s in SUITES.items() if s.ci or not args.ci)
    for name in names:
        suite = SUITES[name]
        start = time.monotonic()
        log(f"== {suite.name} {suite.version}: its own tests on asyncio and on ferroloop")
        try:
            machine = Machine(suite.machine() if suite.machine is not None else {},
                              unprivileged_prefix() if suite.unprivileged else [])
        except SystemExit as e:  # what the machine lacks: the other suites still run
            log(f"FAIL {suite.name} cannot run on this machine: {e}")
            ok = False
            continue
        install(suite)
        top = unpack(suite, sdist(suite))
        try:
            ok = judge(suite, top, entries, machine) and ok
        except SuiteError as e:
            ok = False
            log(f"FAIL {suite.name} did not run: {e}")
        log(f"   ({time.monotonic() - start:.0f} s; logs in {WORK})")
    log("third-party suites: OK" if ok else "third-party suites: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
