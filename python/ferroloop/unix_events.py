"""Unix specifics of the loop: signal handlers, pipes, subprocesses, fork (asyncio's unix_events).

Why this file exists: asyncio keeps these on ``_UnixSelectorEventLoop``. They run once per
signal, pipe or process, so they are Python (the transports are in ``pipes.py`` and
``subprocesses.py``); the only native piece is the run loop's reading of the signal wake-up
socket.

**Signals.** CPython runs a Python-level signal handler only in the main thread, between two
bytecodes; the C-level handler it installs also writes the signal number to the *wake-up fd*
(``signal.set_wakeup_fd``). The loop owns a socket pair for that: its write end is the wake-up
fd, its read end sits in the loop's epoll set (``LoopCore._set_signal_fd``), so any signal ends
the poll at once. The loop owns the wake-up fd while it runs in the main thread (so that Ctrl+C
raises ``KeyboardInterrupt`` promptly, design.md §5.11) and, as asyncio does, for as long as
``add_signal_handler`` handlers exist, running or not. ``add_signal_handler`` installs a no-op
Python handler for the signal (so CPython catches it and writes its number) and remembers a
handle; the native poll drains the socket and, while handlers exist, passes the numbers to
``_process_self_data``, which queues the handles: the callbacks run on the loop, in the next
batch, never inside the signal handler. ``remove_signal_handler`` (and ``close``) put back
``SIG_DFL``, or ``default_int_handler`` for SIGINT, as asyncio does, except for a signal that
was ignored (``SIG_IGN``) before the loop took it, which is ignored again. When neither a
handler nor a run needs the wake-up fd any more, the one that was there before is restored.

**Fork.** A child made by ``os.fork()`` gets copies of every loop, whose epoll instance and
eventfd are the parent's own kernel objects. ``_after_fork_in_child`` (registered with
``os.register_at_fork``) gives each ferroloop loop in the child a fresh epoll instance and
eventfd under the same fd numbers, forgets its fd watchers and the parent's children, resets
the running loop (as asyncio 3.12+ does) and takes the signal wake-up fd away from the
parent's socket.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
import weakref
from asyncio import events
from typing import Any

from . import _native
from .pipes import ReadPipeTransport, WritePipeTransport
from .subprocesses import SubprocessTransport

__all__ = ["UnixMethods"]

logger = logging.getLogger("asyncio")

# Every ferroloop loop alive in this process, for the fork hook.
_loops: weakref.WeakSet = weakref.WeakSet()


def _noop_signal_handler(signum: int, frame: Any) -> None:
    """Python-level handler of a signal the loop handles: CPython catches the signal and
    writes its number to the wake-up fd; the loop does the rest."""


def _format_pipe(fd: Any) -> str:
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


class UnixMethods:
    """Signals, pipes and subprocesses: the unix-only methods of ``ferroloop.Loop``."""

    # Provided by ferroloop.Loop / LoopCore.
    _signal_rsock: socket.socket | None
    _signal_wsock: socket.socket | None
    _old_wakeup_fd: int | None
    _old_wakeup_id: tuple[int, int] | None

    def _init_unix(self) -> None:
        self._signal_handlers: dict[int, asyncio.Handle] = {}
        # Signals that were SIG_IGN before the loop took them: ignored again on removal.
        self._signals_ignored_before: set[int] = set()
        # The wake-up fd was claimed by run_forever (not only by handlers).
        self._wakeup_for_run = False
        # pid -> transport, for the children not reaped yet.
        self._children: dict[int, SubprocessTransport] = {}
        _loops.add(self)

    # -- the signal wake-up fd -----------------------------------------------------------------

    def _claim_wakeup_fd(self) -> None:
        """Make the loop's socket the wake-up fd; ValueError outside the main thread."""
        if self._signal_wsock is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._signal_rsock, self._signal_wsock = rsock, wsock
        assert self._signal_rsock is not None and self._signal_wsock is not None
        ours = self._signal_wsock.fileno()
        old = signal.set_wakeup_fd(ours, warn_on_full_buffer=False)
        if self._old_wakeup_fd is None:
            old_id = None if old == ours else _fd_identity(old)
            # A previous fd that no longer names a file (closed without being unset) is
            # nothing to give back.
            self._old_wakeup_fd = old if old_id is not None else -1
            self._old_wakeup_id = old_id
            self._set_signal_fd(self._signal_rsock.fileno())

    def _release_wakeup_fd(self) -> None:
        """Give the wake-up fd back to whoever had it before the loop claimed it."""
        old = self._old_wakeup_fd
        if old is None:
            return
        old_id = self._old_wakeup_id
        self._old_wakeup_fd = None
        self._old_wakeup_id = None
        self._set_signal_fd(None)
        ours = self._signal_wsock.fileno() if self._signal_wsock is not None else -1
        if old != -1 and _fd_identity(old) != old_id:
            # Closed since the loop took over (its owner gave it up), and the number may name
            # another file by now: making that the wake-up fd would write signal numbers
            # into it. Nobody is waiting on the old one any more.
            old = -1
        try:
            current = signal.set_wakeup_fd(old)
        except (ValueError, OSError):
            # Not the main thread, or the old fd is gone: at least stop pointing at ours.
            try:
                current = signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info("set_wakeup_fd(-1) failed: %s", exc)
                return
        if current != ours:
            # Someone replaced ours meanwhile: theirs stays. If that someone is another
            # ferroloop loop, it remembers our socket as the fd to give back when it lets go;
            # ours is about to be released (and closed with the loop), so it must give back
            # what we replaced instead, or it would restore a closed fd whose number another
            # file may own by then, and signals would be written into that file.
            signal.set_wakeup_fd(current)
            if ours != -1:
                for other in list(_loops):
                    if other is not self and getattr(other, "_old_wakeup_fd", None) == ours:
                        other._old_wakeup_fd = old
                        other._old_wakeup_id = old_id if old != -1 else None

    def _watch_signal_wakeups(self) -> None:
        """run_forever's start: signals wake the loop while it runs in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._claim_wakeup_fd()
        except (ValueError, OSError):
            return
        self._wakeup_for_run = True

    def _unwatch_signal_wakeups(self) -> None:
        """run_forever's end: keep the wake-up fd only if signal handlers need it."""
        if not self._wakeup_for_run:
            return
        self._wakeup_for_run = False
        if not self._signal_handlers:
            self._release_wakeup_fd()

    # -- signal handlers -----------------------------------------------------------------------

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the loop whenever signal ``sig`` arrives.

        ValueError for an invalid signal number, RuntimeError for one that cannot be caught
        (SIGKILL, SIGSTOP) or outside the main thread.
        """
        # (inspect's check: asyncio.iscoroutinefunction is deprecated from 3.14)
        if asyncio.iscoroutine(callback) or inspect.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Raises ValueError outside the main thread: a loop running in another thread
            # cannot add a signal handler.
            self._claim_wakeup_fd()
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        previous = signal.getsignal(sig)
        self._signal_handlers[sig] = _native.Handle(callback, args, self, None)
        try:
            signal.signal(sig, _noop_signal_handler)
            # SA_RESTART: interrupted system calls of other threads restart.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._set_signal_dispatch(False)
                if not self._wakeup_for_run:
                    self._release_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise
        if previous is signal.SIG_IGN:
            self._signals_ignored_before.add(sig)
        self._set_signal_dispatch(True)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler of ``sig``; whether there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        if sig in self._signals_ignored_before:
            self._signals_ignored_before.discard(sig)
            handler: Any = signal.SIG_IGN
        elif sig == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise
        if not self._signal_handlers:
            self._set_signal_dispatch(False)
            if not self._wakeup_for_run:
                self._release_wakeup_fd()
        return True

    def _check_signal(self, sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def _process_self_data(self, data: bytes) -> None:
        """Signal numbers read from the wake-up socket (called by the native poll)."""
        for signum in data:
            if signum:
                self._handle_signal(signum)

    def _handle_signal(self, sig: int) -> None:
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # removed meanwhile
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self._push_ready(handle)

    # -- pipes ---------------------------------------------------------------------------------

    async def connect_read_pipe(self, protocol_factory: Any, pipe: Any) -> tuple[Any, Any]:
        """Wrap the read end of a pipe (or a FIFO, socket, pty) in a read transport."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = ReadPipeTransport(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("Read pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
        return transport, protocol

    async def connect_write_pipe(self, protocol_factory: Any, pipe: Any) -> tuple[Any, Any]:
        """Wrap the write end of a pipe (or a FIFO, socket, pty) in a write transport."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = WritePipeTransport(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("Write pipe %r connected: (%r, %r)", pipe.fileno(), transport, protocol)
        return transport, protocol

    # -- subprocesses --------------------------------------------------------------------------

    async def subprocess_shell(
        self, protocol_factory: Any, cmd: Any, *, stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False, shell: bool = True, bufsize: int = 0,
        encoding: Any = None, errors: Any = None, text: Any = None, **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Run ``cmd`` through the shell; ``(transport, protocol)``."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")  # noqa: TRY004 - asyncio's exception
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_binary(bufsize, text, encoding, errors)
        protocol = protocol_factory()
        debug_log = None
        if self.get_debug():
            # Not the arguments: they may hold secrets and be long (as asyncio).
            debug_log = f"run shell command {cmd!r}"
            _log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, **kwargs
        )
        if debug_log is not None:
            logger.info("%s: %r", debug_log, transport)
        return transport, protocol

    async def subprocess_exec(
        self, protocol_factory: Any, program: Any, *args: Any, stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False, shell: bool = False, bufsize: int = 0,
        encoding: Any = None, errors: Any = None, text: Any = None, **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Run ``program`` with ``args``; ``(transport, protocol)``."""
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        _check_binary(bufsize, text, encoding, errors)
        popen_args = (program, *args)
        protocol = protocol_factory()
        debug_log = None
        if self.get_debug():
            debug_log = f"execute program {program!r}"
            _log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, popen_args, False, stdin, stdout, stderr, bufsize, **kwargs
        )
        if debug_log is not None:
            logger.info("%s: %r", debug_log, transport)
        return transport, protocol

    async def _make_subprocess_transport(
        self, protocol: Any, args: Any, shell: bool, stdin: Any, stdout: Any, stderr: Any,
        bufsize: int, extra: Any = None, **kwargs: Any,
    ) -> SubprocessTransport:
        transport = SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs
        )
        try:
            await transport._connected
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    # -- close and fork ------------------------------------------------------------------------

    def _close_unix(self) -> None:
        """Loop.close(): hand running children to a reaper, remove the signal handlers.

        Outside the main thread removing a handler raises ValueError (as in asyncio): the
        children are seen to first, and the signal sockets stay open, since the wake-up fd
        still names one of them (closed, its number could be reused by another file).
        """
        for child in list(self._children.values()):
            child._detach_from_closed_loop()
        self._children.clear()
        if self._signal_handlers:
            if sys.is_finalizing():
                warnings.warn(
                    f"Closing the loop {self!r} on interpreter shutdown stage, "
                    "skipping signal handlers removal",
                    ResourceWarning,
                    source=self,
                )
                self._signal_handlers.clear()
            else:
                for sig in list(self._signal_handlers):
                    self.remove_signal_handler(sig)
        self._set_signal_dispatch(False)
        self._release_wakeup_fd()
        for sock in (self._signal_rsock, self._signal_wsock):
            if sock is not None:
                sock.close()
        self._signal_rsock = self._signal_wsock = None

    def _after_fork_in_child(self) -> None:
        """This process is a fork child: stop sharing anything with the parent's loop."""
        self._reset_after_fork()
        for sock in (self._signal_rsock, self._signal_wsock):
            if sock is not None:
                sock.close()  # the child's copies; the parent's stay open
        self._signal_rsock = self._signal_wsock = None
        self._old_wakeup_fd = None
        self._old_wakeup_id = None
        for child in self._children.values():
            child._forget_after_fork()
        self._children.clear()
        self._wakeup_for_run = False
        if self._signal_handlers:
            # The handlers keep working in the child, on a wake-up socket of its own. A loop
            # that was merely running gets none: asyncio 3.12+ leaves a fork child without a
            # wake-up fd, and so does ferroloop.
            try:
                self._claim_wakeup_fd()
            except (ValueError, OSError):
                return
            self._set_signal_dispatch(True)


def _fd_identity(fd: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file ``fd`` names; None for -1 or a closed fd."""
    if fd < 0:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _check_binary(bufsize: int, text: Any, encoding: Any, errors: Any) -> None:
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


def _log_subprocess(msg: str, stdin: Any, stdout: Any, stderr: Any) -> None:
    info = [msg]
    if stdin is not None:
        info.append(f"stdin={_format_pipe(stdin)}")
    if stdout is not None and stderr == subprocess.STDOUT:
        info.append(f"stdout=stderr={_format_pipe(stdout)}")
    else:
        if stdout is not None:
            info.append(f"stdout={_format_pipe(stdout)}")
        if stderr is not None:
            info.append(f"stderr={_format_pipe(stderr)}")
    logger.debug(" ".join(info))


def _after_fork_in_child() -> None:
    # asyncio 3.12+ resets the running loop in a fork child itself; 3.11 compares pids.
    events._set_running_loop(None)
    if _loops:
        # Whatever the parent's wake-up fd was, it is the parent's socket: not ours to write.
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError):
            pass
    for loop in list(_loops):
        try:
            loop._after_fork_in_child()
        except Exception:  # one broken loop must not spoil the others
            logger.exception("ferroloop: resetting %r after fork failed", loop)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
