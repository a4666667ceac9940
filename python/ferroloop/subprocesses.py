"""Subprocess transports: ``subprocess_exec`` / ``subprocess_shell`` (asyncio's base_subprocess).

Why this file exists: a subprocess is started once and its pipes carry its traffic, so by the
layering rule the whole transport is Python. It follows asyncio's ``SubprocessTransport``
contract, which ``asyncio.create_subprocess_exec`` and ``Process.communicate``/``wait`` rely
on, and differs in how the child's exit is observed:

* The child is started by ``subprocess.Popen`` (so every ``Popen`` argument asyncio passes
  through works: ``cwd``, ``env``, ``pass_fds``, ``start_new_session``, ``preexec_fn``, ...),
  with ``bufsize=0``; its ``PIPE`` ends become ``pipes.py`` transports at once, before
  ``subprocess_exec`` returns.
* Exit is watched with a **pidfd** (``os.pidfd_open``, Linux 5.3+): the loop's ordinary fd
  watcher reports it readable when the child exits, and ``os.waitpid(pid, WNOHANG)`` then
  reaps it. No thread per child, no SIGCHLD handler, no polling, and no interference with
  other code that waits for its own children. Where ``pidfd_open`` is missing (older kernels,
  other systems) or refused, one helper thread per child blocks in ``os.waitpid`` and hands
  the status to the loop with ``call_soon_threadsafe`` (what asyncio's default
  ``ThreadedChildWatcher`` does).
* Signals go through the pidfd (``signal.pidfd_send_signal``) while the child is unreaped,
  so they can never reach another process that reused the pid; once the child is reaped,
  ``send_signal``/``terminate``/``kill`` do nothing, and after ``connection_lost`` they raise
  ``ProcessLookupError`` (asyncio's rules).
* If the loop is closed while a child still runs, the child is handed to a helper thread that
  reaps it, so no zombie is left behind.

Callbacks come in asyncio's order: ``connection_made``; ``pipe_data_received`` and
``pipe_connection_lost`` per pipe; ``process_exited``; ``connection_lost(None)`` once the
child is reaped and every pipe is closed (``Process.wait()`` returns then). The reaping is
reported two loop iterations later, as asyncio's child watchers do, so output and end of file
that arrived in the same poll as the exit are delivered first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import warnings
from asyncio import base_subprocess, protocols, transports
from typing import Any

from .pipes import ReadPipeTransport, WritePipeTransport

# CPython gh-119710 (a 3.14 fix): Process.wait() returns as soon as the process has exited, even
# while a pipe stays open (a grandchild inherited it); before, it returned with connection_lost,
# once every pipe was closed too. Read from the running asyncio's own transport (its _wait
# drops a cancelled waiter with set.discard only since that fix), so that ferroloop follows
# every patch release, including any backport.
_WAIT_RETURNS_AT_EXIT = "discard" in base_subprocess.BaseSubprocessTransport._wait.__code__.co_names

__all__ = ["SubprocessTransport"]

logger = logging.getLogger("asyncio")

# Set to False (tests do) to take the thread fallback even where pidfd_open works.
USE_PIDFD = hasattr(os, "pidfd_open")


def _exit_code(status: int) -> int:
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return status  # not an exit or a signal: report the raw status rather than fail


def _reap(pid: int, proc: subprocess.Popen, flags: int) -> int | None:
    """The child's return code once ``waitpid`` reaps it; None if it still runs (WNOHANG)."""
    try:
        got, status = os.waitpid(pid, flags)
    except ChildProcessError:
        # Reaped elsewhere: by the Popen object itself (poll()/wait() on the 'subprocess'
        # extra info), or by a process-wide reaper (SIGCHLD ignored, a waitpid(-1) loop).
        if proc.returncode is not None:
            return proc.returncode
        logger.warning("Unknown child process pid %d, will report returncode 255", pid)
        return 255
    if got == 0:
        return None
    return _exit_code(status)


def _reap_detached(pid: int, proc: subprocess.Popen) -> None:
    """Thread body: reap a child whose loop is gone (no zombie), record its return code."""
    rc = _reap(pid, proc, 0)
    if proc.returncode is None:
        proc.returncode = rc


class _PipeProtocol(protocols.Protocol):
    """The protocol of one of the child's pipes: forwards to the subprocess transport."""

    def __init__(self, owner: SubprocessTransport, fd: int) -> None:
        self.owner: SubprocessTransport | None = owner
        self.fd = fd
        self.pipe: Any = None
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport: Any) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        assert self.owner is not None
        self.owner._call(self.owner._protocol.pipe_data_received, self.fd, data)

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disconnected = True
        owner, self.owner = self.owner, None
        if owner is not None:
            owner._pipe_connection_lost(self.fd, exc)

    # The stdin pipe's flow control is the subprocess protocol's (asyncio streams'
    # StreamWriter.drain() waits on it).
    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner._protocol.resume_writing()


class SubprocessTransport(transports.SubprocessTransport):
    """A child process and its pipes (``loop.subprocess_exec`` / ``subprocess_shell``)."""

    # Read by __del__ even if __init__ failed early.
    _closed = True

    def __init__(
        self, loop: Any, protocol: Any, args: Any, shell: bool, stdin: Any, stdout: Any,
        stderr: Any, bufsize: int, extra: Any = None, **kwargs: Any,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol = protocol
        self._returncode: int | None = None
        self._reaped = False  # waitpid has returned (the pid may be reused from now on)
        self._reported = False  # the loop has been told (_child_reaped ran)
        self._forgotten = False  # a fork child's copy: the process is not ours to touch
        self._pidfd: int | None = None
        self._exit_watched = False
        self._pipes: dict[int, _PipeProtocol] = {}
        self._pending_calls: list[tuple[Any, tuple]] | None = []
        self._exit_waiters: list[Any] | None = []
        self._finished = False
        self._proc: subprocess.Popen | None = subprocess.Popen(
            args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=False, bufsize=bufsize, **kwargs,
        )
        self._closed = False
        proc = self._proc
        self._pid = proc.pid
        self._extra["subprocess"] = proc
        if loop.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            logger.debug("process %r created: pid %s", program, self._pid)
        try:
            loop._children[self._pid] = self
            self._watch_exit()
            for fd, pipe, cls in (
                (0, proc.stdin, WritePipeTransport),
                (1, proc.stdout, ReadPipeTransport),
                (2, proc.stderr, ReadPipeTransport),
            ):
                if pipe is not None:
                    proto = _PipeProtocol(self, fd)
                    self._pipes[fd] = proto
                    proto.pipe = cls(loop, pipe, proto)
            # Runs after the pipes' own connection_made: then the protocol's.
            self._connected = loop.create_future()
            loop.call_soon(self._connection_made)
        except BaseException:
            self._abandon_start()
            raise

    def _abandon_start(self) -> None:
        """Setting up after Popen failed: kill the child, close its pipes, have it reaped."""
        self.close()
        proc = self._proc
        assert proc is not None
        for fd, pipe in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
            # A pipe without a transport: not reached, or its transport failed to build.
            proto = self._pipes.get(fd)
            if pipe is not None and (proto is None or proto.pipe is None):
                pipe.close()
        self._loop._children.pop(self._pid, None)
        if self._pidfd is not None:
            self._detach_from_closed_loop()  # a thread reaps it; the loop is not told
        elif not self._exit_watched:
            threading.Thread(
                target=_reap_detached, args=(self._pid, proc),
                name=f"ferroloop-reap-{self._pid}", daemon=True,
            ).start()
        # else: the fallback's helper thread reaps it

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._closed:
            info.append("closed")
        info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        else:
            info.append("running")
        stdin = self._pipes.get(0)
        if stdin is not None:
            info.append(f"stdin={stdin.pipe}")
        stdout = self._pipes.get(1)
        if stdout is not None:
            info.append(f"stdout={stdout.pipe}")
        stderr = self._pipes.get(2)
        if stderr is not None:
            info.append(f"stderr={stderr.pipe}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()

    # -- start -------------------------------------------------------------------------------

    def _connection_made(self) -> None:
        # As in asyncio, an exception in connection_made goes to the exception handler;
        # subprocess_exec returns the transport regardless.
        self._loop.call_soon(self._protocol.connection_made, self)
        pending, self._pending_calls = self._pending_calls, None
        for callback, args in pending or ():
            self._loop.call_soon(callback, *args)
        if not self._connected.cancelled():
            self._connected.set_result(None)

    def _call(self, callback: Any, *args: Any) -> None:
        """Protocol callbacks wait until connection_made has run, then keep their order."""
        if self._pending_calls is not None:
            self._pending_calls.append((callback, args))
        else:
            self._loop.call_soon(callback, *args)

    # -- watching the exit -------------------------------------------------------------------

    def _watch_exit(self) -> None:
        if USE_PIDFD:
            try:
                self._pidfd = os.pidfd_open(self._pid)
            except OSError:
                self._pidfd = None  # refused (seccomp, ESRCH if reaped elsewhere): fall back
        if self._pidfd is not None:
            self._loop._add_reader(self._pidfd, self._pidfd_ready)
        else:
            threading.Thread(
                target=self._wait_in_thread, name=f"ferroloop-waitpid-{self._pid}", daemon=True
            ).start()
        self._exit_watched = True

    def _close_pidfd(self) -> None:
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            if not self._loop.is_closed():
                self._loop._remove_reader(pidfd)
            os.close(pidfd)

    def _pidfd_ready(self) -> None:
        assert self._proc is not None
        rc = _reap(self._pid, self._proc, os.WNOHANG)
        if rc is None:
            return  # not exited after all: keep watching
        self._close_pidfd()
        self._child_reaped(rc)

    def _wait_in_thread(self) -> None:
        proc = self._proc
        assert proc is not None
        rc = _reap(self._pid, proc, 0)
        self._reaped = True  # from now on no signal may go to this pid
        try:
            self._loop.call_soon_threadsafe(self._child_reaped, rc)
        except RuntimeError:  # the loop was closed meanwhile
            if proc.returncode is None:
                proc.returncode = rc

    def _child_reaped(self, rc: int) -> None:
        if self._reported:
            return
        self._reported = True
        self._reaped = True
        self._loop._children.pop(self._pid, None)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.returncode = rc  # the Popen object would otherwise try to reap it again
        # Two iterations later, as asyncio's child watchers report it: output and end of file
        # that arrived together with the exit are delivered before process_exited.
        self._loop.call_soon(self._loop.call_soon, self._process_exited, rc)

    def _process_exited(self, returncode: int) -> None:
        if self._loop is None:
            return
        if self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        self._call(self._protocol.process_exited)
        self._try_finish()
        if _WAIT_RETURNS_AT_EXIT:
            self._wake_exit_waiters()

    def _pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._finished or self._returncode is None:
            return
        if all(p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._wake_exit_waiters()
            self._loop = None
            self._proc = None
            self._protocol = None

    def _wake_exit_waiters(self) -> None:
        waiters, self._exit_waiters = self._exit_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(self._returncode)

    async def _wait(self) -> int:
        """The return code, once the process has exited (``asyncio.subprocess.Process.wait``
        calls this private method of asyncio's transports)."""
        if self._returncode is not None:
            return self._returncode
        assert self._exit_waiters is not None
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    # -- the loop is closing, or this is a fork child's copy ---------------------------------

    def _detach_from_closed_loop(self) -> None:
        """The loop closes while the child runs: a helper thread reaps it instead."""
        if self._pidfd is None or self._forgotten or self._proc is None:
            return  # reaped already, or the helper thread of the fallback reaps it
        self._reaped = True
        self._close_pidfd()
        threading.Thread(
            target=_reap_detached, args=(self._pid, self._proc),
            name=f"ferroloop-reap-{self._pid}", daemon=True,
        ).start()

    def _forget_after_fork(self) -> None:
        """In a fork child: the process is the parent's child; never signal or reap it."""
        self._forgotten = True
        self._closed = True
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)  # the child's copy; its watcher went with the native reset

    # -- public API --------------------------------------------------------------------------

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        proto = self._pipes.get(fd)
        return None if proto is None else proto.pipe

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closed

    def send_signal(self, sig: int) -> None:
        if self._proc is None:
            raise ProcessLookupError()
        self._signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self._reaped or self._forgotten or self._proc.returncode is not None:
            return  # reaped (here or through the Popen object): the pid may be reused
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                # The thread fallback: its waitpid reaps the child without the GIL and can
                # only set _reaped once it has the GIL back, so _reaped may still be False for
                # a pid that is already free. Popen.send_signal polls first (waitpid WNOHANG:
                # ECHILD for a reaped child, which it then leaves alone), as asyncio does.
                self._proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Close the pipes and kill the child if it still runs (as asyncio does)."""
        if self._closed:
            return
        self._closed = True
        for proto in self._pipes.values():
            if proto.pipe is not None:
                proto.pipe.close()
        proc = self._proc
        # Not if it was reaped, by us or through the Popen object (as asyncio checks).
        if proc is not None and proc.returncode is None and not self._reaped:
            if self._loop is not None and self._loop.get_debug():
                logger.warning("Close running child process: kill %r", self)
            # Through the Popen object, as asyncio does (tests and programs wrap its kill).
            # Safe from pid reuse: the returncode it checks first is set at reaping.
            try:
                proc.kill()
            except (ProcessLookupError, PermissionError):
                pass  # gone already, or a setuid child
