"""Subprocesses: loop.subprocess_exec / subprocess_shell, the SubprocessTransport API, the
SubprocessProtocol callbacks, and asyncio.create_subprocess_exec/shell on top. Real processes
(sh, cat, head, sleep, the test's own Python). Oracle: stock asyncio, each test on both loops.

The load tests stay small enough for CI: 10 MB through one stdout, and 200 short-lived
processes at once; both take well under a few seconds on either loop.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
from conftest import run

PIPE = asyncio.subprocess.PIPE
PY = sys.executable

pytestmark = pytest.mark.timeout(60)


def assert_reaped(pid):
    """The child is gone and reaped: it is no longer a child of this process. (WNOWAIT: a
    zombie is reported, not reaped, so the check never steals a loop's work.)"""
    with pytest.raises(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)


class RecordingProtocol(asyncio.SubprocessProtocol):
    """Records every callback, checking asyncio's invariants as it goes."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.done = loop.create_future()
        self.exited = loop.create_future()

    def connection_made(self, transport):
        assert not self.events, self.events
        self.transport = transport
        self.events.append("connection_made")

    def pipe_data_received(self, fd, data):
        assert self.events[0] == "connection_made"
        assert "connection_lost" not in self.events
        self.data[fd] += data
        if not self.events or self.events[-1] != ("data", fd):
            self.events.append(("data", fd))

    def pipe_connection_lost(self, fd, exc):
        assert ("pipe_connection_lost", fd) not in self.events
        self.events.append(("pipe_connection_lost", fd))

    def process_exited(self):
        assert "process_exited" not in self.events
        self.events.append("process_exited")
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        assert exc is None
        assert "connection_lost" not in self.events
        self.events.append("connection_lost")
        self.done.set_result(None)


def check_order(events, pipes):
    """asyncio's order: connection_made first, connection_lost last and after process_exited
    and every pipe's pipe_connection_lost; a pipe's data before its pipe_connection_lost."""
    assert events[0] == "connection_made"
    assert events[-1] == "connection_lost"
    assert events.count("process_exited") == 1
    for fd in pipes:
        lost = events.index(("pipe_connection_lost", fd))
        for i, e in enumerate(events):
            if e == ("data", fd):
                assert i < lost, events


# ---------------------------------------------------------------- asyncio.subprocess


def test_create_subprocess_exec_communicate(loop):
    async def main():
        p = await asyncio.create_subprocess_exec(
            "sh", "-c", "cat; echo err >&2; exit 3", stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await p.communicate(b"to cat\n")
        return out, err, p.returncode

    assert run(loop, main()) == (b"to cat\n", b"err\n", 3)


# CPython gh-119710 (a 3.14 fix): wait() returns once the process has exited, even if a pipe of
# it stays open. Read from asyncio itself, as ferroloop reads it (subprocesses.py).
WAIT_RETURNS_AT_EXIT = (
    "discard" in asyncio.base_subprocess.BaseSubprocessTransport._wait.__code__.co_names
)


def test_wait_returns_while_a_grandchild_holds_the_pipes(loop):
    # The child starts a grandchild that inherits its stdin and stdout, then sleeps until it is
    # killed; the grandchild writes "ready" and keeps both pipes open until its stdin reaches
    # end of file. wait() is already waiting when the child dies.
    grandchild = "import sys; sys.stdout.write('ready'); sys.stdout.flush(); sys.stdin.read()"
    child = (f"import subprocess, sys, time; "
             f"subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(60)")

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", child, stdin=PIPE, stdout=PIPE)
        waiting = asyncio.ensure_future(proc.wait())
        assert await proc.stdout.readexactly(5) == b"ready"
        proc.kill()
        try:
            async with asyncio.timeout(2):
                first = await asyncio.shield(waiting)
        except TimeoutError:
            first = "still waiting"
        proc.stdin.close()  # the grandchild exits, the pipes close
        assert await proc.stdout.read() == b""
        return first, await waiting

    killed = -signal.SIGKILL
    expected = (killed, killed) if WAIT_RETURNS_AT_EXIT else ("still waiting", killed)
    assert run(loop, main()) == expected


def test_create_subprocess_shell_and_wait(loop):
    async def main():
        p = await asyncio.create_subprocess_shell("exit 7")
        rc = await p.wait()
        return rc, p.returncode

    assert run(loop, main()) == (7, 7)


def test_stdout_stream_reading_and_readline(loop):
    async def main():
        p = await asyncio.create_subprocess_exec(
            "sh", "-c", "echo one; echo two; echo three", stdout=PIPE)
        lines = [await p.stdout.readline() for _ in range(3)]
        rest = await p.stdout.read()
        return lines, rest, await p.wait()

    assert run(loop, main()) == ([b"one\n", b"two\n", b"three\n"], b"", 0)


def test_ten_megabytes_through_stdout(loop):
    size = 10 * 1024 * 1024

    async def main():
        t0 = time.monotonic()
        p = await asyncio.create_subprocess_exec(
            "head", "-c", str(size), "/dev/zero", stdout=PIPE)
        out, _ = await p.communicate()
        return len(out), out.count(0), p.returncode, time.monotonic() - t0

    n, zeros, rc, took = run(loop, main(), timeout=30)
    assert (n, zeros, rc) == (size, size, 0)
    assert took < 10


def test_large_stdin_with_flow_control(loop):
    # 4 MB into cat, which echoes it back: the stdin writer must pause (drain) and resume.
    payload = bytes(range(256)) * (4 * 1024 * 4)

    async def main():
        p = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        out, _ = await p.communicate(payload)
        return out == payload, p.returncode

    assert run(loop, main(), timeout=30) == (True, 0)


def test_stdin_writer_drain_and_close(loop):
    async def main():
        p = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write(str(len(sys.stdin.buffer.read())))",
            stdin=PIPE, stdout=PIPE)
        for _ in range(64):
            p.stdin.write(b"x" * 65536)
            await p.stdin.drain()
        p.stdin.close()
        await p.stdin.wait_closed()
        out = await p.stdout.read()
        return int(out), await p.wait()

    assert run(loop, main(), timeout=30) == (64 * 65536, 0)


def test_communicate_ignores_broken_pipe(loop):
    # The child exits without reading its stdin: writing to it breaks the pipe, which
    # communicate() ignores.
    async def main():
        p = await asyncio.create_subprocess_exec("true", stdin=PIPE, stdout=PIPE)
        await asyncio.sleep(0.1)
        out, err = await p.communicate(b"x" * (1024 * 1024))
        return out, err, p.returncode

    assert run(loop, main()) == (b"", None, 0)


def test_communicate_timeout_then_kill(loop):
    async def main():
        p = await asyncio.create_subprocess_exec("sleep", "10", stdout=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(p.communicate(), 0.1)
        p.kill()
        return await p.wait(), p.pid

    rc, pid = run(loop, main())
    assert rc == -signal.SIGKILL
    assert_reaped(pid)


def test_terminate_and_send_signal(loop):
    async def main():
        results = []
        for how in ("terminate", "send_signal"):
            p = await asyncio.create_subprocess_exec("sleep", "10")
            if how == "terminate":
                p.terminate()
            else:
                p.send_signal(signal.SIGUSR1)
            results.append(await p.wait())
        return results

    assert run(loop, main()) == [-signal.SIGTERM, -signal.SIGUSR1]


def test_kill_a_process_blocked_on_a_full_pipe(loop):
    # `yes` fills its stdout pipe and blocks in write(); nobody reads. Killing it must end
    # it, and the output already in the pipe is still there to be read.
    async def main():
        p = await asyncio.create_subprocess_exec("yes", stdout=PIPE)
        await asyncio.sleep(0.2)
        p.kill()
        data = await p.stdout.read()
        rc = await p.wait()
        return rc, len(data) > 0, p.pid

    rc, got_data, pid = run(loop, main(), timeout=20)
    assert rc == -signal.SIGKILL
    assert got_data
    assert_reaped(pid)


def test_two_hundred_short_lived_processes_at_once(loop):
    n = 200

    async def one(i):
        p = await asyncio.create_subprocess_exec("sh", "-c", f"echo {i}", stdout=PIPE)
        out, _ = await p.communicate()
        return int(out), p.returncode, p.pid

    async def main():
        t0 = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        return results, time.monotonic() - t0

    results, took = run(loop, main(), timeout=50)
    assert [r[0] for r in results] == list(range(n))
    assert all(r[1] == 0 for r in results)
    for _, _, pid in results:
        assert_reaped(pid)
    assert took < 30


def test_many_waits_without_pipes(loop):
    async def main():
        procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {i % 5}")
                 for i in range(50)]
        return await asyncio.gather(*(p.wait() for p in procs)), [p.pid for p in procs]

    rcs, pids = run(loop, main(), timeout=30)
    assert rcs == [i % 5 for i in range(50)]
    for pid in pids:
        assert_reaped(pid)


# ---------------------------------------------------------------- Popen arguments


def test_stderr_to_stdout_and_devnull(loop):
    async def main():
        p = await asyncio.create_subprocess_shell(
            "echo out; echo err >&2", stdout=PIPE, stderr=asyncio.subprocess.STDOUT)
        merged, err = await p.communicate()
        q = await asyncio.create_subprocess_shell(
            "echo out; echo err >&2", stdout=asyncio.subprocess.DEVNULL, stderr=PIPE)
        out2, err2 = await q.communicate()
        return sorted(merged.split()), err, out2, err2

    assert run(loop, main()) == ([b"err", b"out"], None, None, b"err\n")


def test_files_and_fds_as_stdio(loop, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"from a file\n")
    dst = tmp_path / "out.txt"

    async def main(fin, fout):
        p = await asyncio.create_subprocess_exec("cat", stdin=fin, stdout=fout.fileno())
        assert p.stdin is None and p.stdout is None
        return await p.wait()

    with open(src, "rb") as fin, open(dst, "wb") as fout:
        assert run(loop, main(fin, fout)) == 0
    assert dst.read_bytes() == b"from a file\n"


def test_cwd_env_and_new_session(loop, tmp_path):
    async def main():
        p = await asyncio.create_subprocess_exec(
            PY, "-c",
            "import os; print(os.getcwd()); print(os.environ['FERRO_T']);"
            "print(os.getsid(0) == os.getpid())",
            stdout=PIPE, cwd=str(tmp_path), env={**os.environ, "FERRO_T": "env ok"},
            start_new_session=True)
        out, _ = await p.communicate()
        return out.decode().splitlines(), p.returncode

    lines, rc = run(loop, main())
    assert rc == 0
    assert os.path.realpath(lines[0]) == os.path.realpath(str(tmp_path))
    assert lines[1:] == ["env ok", "True"]


def test_pass_fds_and_preexec_fn(loop):
    r, w = os.pipe()
    try:
        async def main():
            p = await asyncio.create_subprocess_exec(
                PY, "-c", f"import os; os.write({w}, os.environ['FROM_PREEXEC'].encode())",
                pass_fds=(w,), preexec_fn=lambda: os.environ.__setitem__("FROM_PREEXEC", "hi"))
            return await p.wait()

        assert run(loop, main()) == 0
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"hi"
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


def test_missing_program_raises(loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/ferroloop-test-program")
        with pytest.raises(NotADirectoryError):
            await asyncio.create_subprocess_exec("true", cwd="/dev/null")
        return "ok"

    assert run(loop, main()) == "ok"


@pytest.mark.parametrize("kwargs", [
    {"universal_newlines": True}, {"bufsize": 1}, {"text": True}, {"encoding": "utf-8"},
    {"errors": "strict"},
])
def test_text_mode_arguments_are_refused(loop, kwargs):
    async def main():
        with pytest.raises(ValueError):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", **kwargs)
        with pytest.raises(ValueError):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", **kwargs)

    run(loop, main())


def test_shell_flag_and_cmd_type_are_checked(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", shell=True)
        with pytest.raises(ValueError):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", shell=False)
        with pytest.raises(ValueError):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])

    run(loop, main())


# ---------------------------------------------------------------- transport and protocol


def test_protocol_callbacks_in_order(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop), "sh", "-c", "printf out; printf err >&2; exit 5")
        assert proto.events[0] == "connection_made"
        await asyncio.wait_for(proto.done, 5)
        transport.close()
        return proto

    proto = run(loop, main())
    check_order(proto.events, (0, 1, 2))
    assert bytes(proto.data[1]) == b"out"
    assert bytes(proto.data[2]) == b"err"
    assert proto.exited.result() == 5


def test_transport_api(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop), "cat", stderr=subprocess.DEVNULL)
        assert isinstance(transport, asyncio.SubprocessTransport)
        pid = transport.get_pid()
        assert isinstance(pid, int) and pid > 0
        assert transport.get_returncode() is None
        assert transport.get_extra_info("subprocess").pid == pid
        stdin, stdout = transport.get_pipe_transport(0), transport.get_pipe_transport(1)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(stdout, asyncio.ReadTransport)
        assert transport.get_pipe_transport(2) is None
        assert transport.get_pipe_transport(3) is None
        assert transport.get_protocol() is proto
        assert not transport.is_closing()
        stdin.write(b"echo me")
        stdin.write_eof()
        rc = await asyncio.wait_for(proto.exited, 5)
        await asyncio.wait_for(proto.done, 5)
        assert transport.get_returncode() == rc == 0
        # Reaped and done: signals are refused as asyncio refuses them.
        with pytest.raises(ProcessLookupError):
            transport.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            transport.kill()
        transport.close()
        assert transport.is_closing()
        return bytes(proto.data[1]), pid

    out, pid = run(loop, main())
    assert out == b"echo me"
    assert_reaped(pid)


def test_close_kills_a_running_process(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop), "sleep", "10")
        transport.close()
        rc = await asyncio.wait_for(proto.exited, 5)
        await asyncio.wait_for(proto.done, 5)
        return rc, transport.get_pid()

    rc, pid = run(loop, main())
    assert rc == -signal.SIGKILL
    assert_reaped(pid)


def test_output_of_a_process_that_exited_before_being_read(loop):
    # The child writes 60 KB (less than the pipe holds) and exits while the loop is blocked
    # and reads nothing; all of it must still arrive, before connection_lost.
    size = 60_000

    class Blocking(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            time.sleep(0.3)  # the child writes and exits meanwhile

    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: Blocking(loop), "head", "-c", str(size), "/dev/zero", stdin=None)
        rc = await asyncio.wait_for(proto.exited, 5)
        await asyncio.wait_for(proto.done, 5)
        transport.close()
        return rc, len(proto.data[1]), proto.events

    rc, n, events = run(loop, main())
    assert (rc, n) == (0, size)
    check_order(events, (1, 2))


def test_subprocess_from_a_loop_in_another_thread(loop_factory):
    results = []

    def thread_main():
        lp = loop_factory()
        try:
            async def main():
                p = await asyncio.create_subprocess_exec("sh", "-c", "echo t", stdout=PIPE)
                out, _ = await p.communicate()
                return out, p.returncode

            results.append(lp.run_until_complete(asyncio.wait_for(main(), 10)))
        finally:
            lp.close()

    t = threading.Thread(target=thread_main)
    t.start()
    t.join(20)
    assert results == [(b"t\n", 0)]


def test_closing_the_loop_leaves_no_zombie(ferro_loop):
    # ferroloop-only: a child still running when its loop is closed is reaped anyway (issue
    # 8: "no zombies are left"). Stock asyncio depends on its child watcher: 3.11's threaded
    # watcher reaps it, 3.12's pidfd watcher stops watching at close and leaves a zombie.
    loop = ferro_loop
    try:
        async def main():
            transport, _ = await loop.subprocess_exec(
                asyncio.SubprocessProtocol, "sleep", "0.2", stdin=None, stdout=None,
                stderr=None)
            return transport

        transport = run(loop, main())
        pid = transport.get_pid()
    finally:
        loop.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break  # reaped by the loop's helper
        time.sleep(0.05)
    else:
        pytest.fail("the child was never reaped (a zombie, or still running)")
    transport._closed = True  # silence the unclosed-transport warning of this deliberate leak


# ---------------------------------------------------------------- ferroloop's guarantees


def test_no_thread_per_child(ferro_loop):
    # ferroloop-only: asyncio 3.11's default child watcher starts one thread per child;
    # ferroloop watches a pidfd per child with its poller.
    loop = ferro_loop

    async def main():
        before = threading.active_count()
        procs = [await asyncio.create_subprocess_exec("sleep", "0.3") for _ in range(20)]
        during = threading.active_count()
        rcs = await asyncio.gather(*(p.wait() for p in procs))
        return before, during, rcs

    before, during, rcs = run(loop, main())
    assert during == before
    assert rcs == [0] * 20


def test_thread_fallback_without_pidfd(ferro_loop, monkeypatch):
    # ferroloop-only: where pidfd_open is unavailable, a helper thread per child waits.
    from ferroloop import subprocesses

    monkeypatch.setattr(subprocesses, "USE_PIDFD", False)
    loop = ferro_loop

    async def main():
        p = await asyncio.create_subprocess_exec("sh", "-c", "echo fb; exit 2", stdout=PIPE)
        out, _ = await p.communicate()
        q = await asyncio.create_subprocess_exec("sleep", "10")
        q.kill()
        return out, p.returncode, await q.wait(), p.pid, q.pid

    out, rc, rc_killed, pid1, pid2 = run(loop, main())
    assert (out, rc, rc_killed) == (b"fb\n", 2, -signal.SIGKILL)
    assert_reaped(pid1)
    assert_reaped(pid2)


def test_thread_fallback_never_signals_a_pid_its_thread_has_reaped(ferro_loop, monkeypatch):
    # ferroloop-only (its thread fallback). The helper thread's waitpid reaps the child
    # without the GIL, then needs the GIL to record it; until then the pid is free for reuse
    # but the transport does not know. A send_signal in that window must not reach the pid
    # (another process may own it by then): it goes through Popen.send_signal, whose
    # waitpid(WNOHANG) finds the child gone, as asyncio's transports do. Deterministic: the
    # loop thread holds the GIL (a long switch interval, and nothing here releases it) from
    # the child's death until after send_signal. Before the fix, os.kill(pid, SIGTERM) was
    # called on the reaped pid.
    from ferroloop import subprocesses

    monkeypatch.setattr(subprocesses, "USE_PIDFD", False)
    loop = ferro_loop
    real_kill = os.kill
    sent = []

    def recording_kill(pid, sig):
        if sig != 0:
            sent.append((pid, sig))
        return real_kill(pid, sig)

    async def main():
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, "sleep", "10", stdin=None, stdout=None, stderr=None)
        pid = transport.get_pid()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(100.0)
        try:
            real_kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            reaped = False
            while not reaped and time.monotonic() < deadline:
                try:
                    real_kill(pid, 0)  # (os.kill keeps the GIL)
                except ProcessLookupError:
                    reaped = True  # the helper thread's waitpid has reaped it
            monkeypatch.setattr(os, "kill", recording_kill)
            transport.send_signal(signal.SIGTERM)
            monkeypatch.setattr(os, "kill", real_kill)
        finally:
            sys.setswitchinterval(interval)
        rc = await transport._wait()
        transport.close()
        return reaped, pid, rc

    reaped, pid, rc = run(loop, main())
    assert reaped
    assert sent == [], "a signal was sent to a pid that had already been reaped"
    assert rc == -signal.SIGKILL
    assert_reaped(pid)


def test_stream_reader_pauses_the_stdout_pipe(loop):
    # The intent of CPython's test_pause_reading (asyncio issue #22685): a child that writes
    # more than the stream's limit makes the StreamReader pause its pipe transport, and
    # reading resumes it; nothing is lost.
    size = 1024 * 1024

    async def main():
        p = await asyncio.create_subprocess_exec(
            "head", "-c", str(size), "/dev/zero", stdout=PIPE, limit=1024)
        stdout_transport = p._transport.get_pipe_transport(1)
        await asyncio.sleep(0.2)
        paused = not stdout_transport.is_reading()
        out = await p.stdout.read()
        return paused, len(out), await p.wait()

    assert run(loop, main()) == (True, size, 0)


def test_close_does_not_kill_a_process_reaped_elsewhere(loop):
    # The Popen object (extra info 'subprocess') reaped the child before the loop noticed:
    # close() must not signal that pid any more (it may be reused).
    async def main():
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, "sleep", "10", stdin=None, stdout=None, stderr=None)
        proc = transport.get_extra_info("subprocess")
        proc.kill()
        proc.wait()
        killed = []
        proc.kill = lambda: killed.append(True)
        transport.close()
        await asyncio.sleep(0.05)
        return proc.returncode, killed

    # (asyncio's watcher thread may reap the child before proc.wait() does, which then
    # reports 0: only "reaped" is certain.)
    returncode, killed = run(loop, main())
    assert returncode is not None
    assert killed == []


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "thread"])
def test_failure_after_popen_kills_and_reaps_the_child(ferro_loop, monkeypatch, use_pidfd):
    # ferroloop-only (its own setup steps): if making the pipe transports fails after the
    # child started, the child is killed and reaped and the error propagates.
    from ferroloop import pipes, subprocesses

    monkeypatch.setattr(subprocesses, "USE_PIDFD", use_pidfd)
    started = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        return proc

    def broken(self, *args, **kwargs):
        raise OSError("pipe setup failed")

    monkeypatch.setattr(subprocesses.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(pipes.ReadPipeTransport, "__init__", broken)
    loop = ferro_loop

    async def main():
        with pytest.raises(OSError, match="pipe setup failed"):
            await asyncio.create_subprocess_exec("sleep", "10", stdout=PIPE)
        await asyncio.sleep(0.05)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run(loop, main())
        gc.collect()  # the child's stdout pipe file, if nothing closed it
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert len(started) == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.waitid(os.P_PID, started[0], os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the child was not killed and reaped")
