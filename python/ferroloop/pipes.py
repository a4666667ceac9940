"""Pipe transports: ``connect_read_pipe`` / ``connect_write_pipe`` and a subprocess's pipes.

Why this file exists: asyncio's unix loop carries two transports for file descriptors that
are not connected sockets it made itself: a read transport and a write transport over a
pipe, a FIFO, a character device (a pty, a terminal) or a socket. They run once per read or
write, but in practice pipes carry a subprocess's output or a terminal, not a server's
traffic, so they are written in Python over the loop's native fd watchers
(``loop._add_reader`` / ``loop._add_writer``) and read side by side with asyncio's
``_UnixReadPipeTransport`` / ``_UnixWritePipeTransport``, whose behaviour they follow:

* only pipes, FIFOs, sockets and character devices are accepted (a regular file, whose
  readiness epoll cannot report, is a ``ValueError``); the descriptor is made non-blocking;
* ``connection_made`` runs first, then reading starts, then ``connect_*_pipe`` returns;
* a read transport reads up to 256 KiB per readiness event; end of file calls
  ``eof_received`` and then ``connection_lost(None)``; ``EIO`` (what a pty master reads once
  its slave side is closed) ends the transport quietly, other read errors go to the
  exception handler first;
* a write transport writes at once when nothing is queued, queues the rest and writes it
  when the descriptor is writable, pausing the protocol above the high-water mark
  (64 KiB by default) and resuming it at the low one; for pipes and sockets it also watches
  its own descriptor for readability, which is how it learns that the reading end closed
  (``connection_lost(BrokenPipeError())`` if data was still queued, else ``None``).

Every watcher is removed before the descriptor is closed (design.md §5.18).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from asyncio import transports
from typing import Any

__all__ = ["ReadPipeTransport", "WritePipeTransport"]

logger = logging.getLogger("asyncio")

# asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES: writes after the pipe broke that are
# dropped silently before each further one logs a warning.
_LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5

_DEFAULT_HIGH_WATER = 64 * 1024


def _set_result_unless_cancelled(fut: Any, result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class ReadPipeTransport(transports.ReadTransport):
    """Reads a pipe, FIFO, socket or character device into a ``Protocol``."""

    max_size = 256 * 1024  # bytes read per readiness event at most (asyncio's value)

    # Read by __del__ even when __init__ refused the file.
    _pipe: Any = None

    def __init__(
        self, loop: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        super().__init__(extra)
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = fileno
        self._protocol = protocol
        self._closing = False
        self._paused = False
        self._watching = False
        os.set_blocking(fileno, False)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run, and the waiter wakes after both.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None:
            if self._loop is None or self._loop.is_closed():
                info.append("open")  # the loop is gone; so is the watcher (as asyncio)
            else:
                info.append("polling" if self._watching else "idle")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    # -- reading -----------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if self.is_reading():
            self._watch()

    def _watch(self) -> None:
        self._loop._add_reader(self._fileno, self._read_ready)
        self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._loop._remove_reader(self._fileno)

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fileno, self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if data:
            self._protocol.data_received(data)
            return
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._unwatch()
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        self._unwatch()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._watch()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    # -- protocol, closing -------------------------------------------------------------------

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        # EIO is how a pty master reports that its slave side closed: an ordinary end.
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=exc)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._close(exc)

    def _close(self, exc: BaseException | None) -> None:
        self._closing = True
        self._unwatch()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class WritePipeTransport(transports.Transport):
    """Writes to a pipe, FIFO, socket or character device, with flow control.

    A ``Transport`` (read and write), not only a ``WriteTransport``, because asyncio's write
    pipe transport is one (through its flow-control mixin): ``isinstance`` answers the same,
    and the reading methods it never overrides raise ``NotImplementedError`` as asyncio's do.
    """

    _pipe: Any = None

    def __init__(
        self, loop: Any, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> None:
        super().__init__(extra)
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        is_socket = stat.S_ISSOCK(mode)
        is_fifo = stat.S_ISFIFO(mode)
        if not (is_socket or is_fifo or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = fileno
        self._protocol = protocol
        self._buffer = bytearray()
        self._conn_lost = 0
        self._closing = False  # close() or write_eof() was called, or the pipe broke
        self._protocol_paused = False
        self._lost_scheduled = False  # connection_lost runs once, however the end came
        self._high_water = _DEFAULT_HIGH_WATER
        self._low_water = _DEFAULT_HIGH_WATER // 4
        # The reading end's closing shows as readability of this end, for pipes and sockets
        # (not for character devices).
        self._watches_peer = is_socket or is_fifo
        os.set_blocking(fileno, False)
        loop.call_soon(protocol.connection_made, self)
        if self._watches_peer:
            loop.call_soon(self._watch_peer)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None:
            if self._loop is None or self._loop.is_closed():
                info.append("open")
            else:
                info.append("polling" if self._buffer else "idle")
                info.append(f"bufsize={len(self._buffer)}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    def _watch_peer(self) -> None:
        if self._pipe is not None and not self._closing:
            self._loop._add_reader(self._fileno, self._peer_closed)

    def _unwatch_peer(self) -> None:
        if self._watches_peer:
            self._loop._remove_reader(self._fileno)

    def _peer_closed(self) -> None:
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._close(BrokenPipeError() if self._buffer else None)

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if data.__class__ is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        buffer = self._buffer
        if buffer:
            # Already waiting for the pipe: queue behind (a copy, so later changes to the
            # caller's buffer are not sent).
            buffer += data
            if len(buffer) > self._high_water and not self._protocol_paused:
                self._maybe_pause_protocol()
            return
        # Nothing queued: try the pipe at once.
        try:
            n = os.write(self._fileno, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends the transport
            self._conn_lost += 1
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return
        if n == (data.nbytes if isinstance(data, memoryview) else len(data)):
            return
        buffer += memoryview(data).cast("B")[n:]
        self._loop._add_writer(self._fileno, self._write_ready)
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        try:
            n = os.write(self._fileno, self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends the transport
            self._buffer.clear()
            self._conn_lost += 1
            self._loop._remove_writer(self._fileno)
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return
        if n < len(self._buffer):
            del self._buffer[:n]
            return
        self._buffer.clear()
        self._loop._remove_writer(self._fileno)
        self._maybe_resume_protocol()  # the protocol may write again here
        if self._closing and not self._buffer and not self._lost_scheduled:
            self._unwatch_peer()
            self._lost_scheduled = True
            self._call_connection_lost(None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._unwatch_peer()
            self._lost_scheduled = True
            self._loop.call_soon(self._call_connection_lost, None)

    def close(self) -> None:
        if self._pipe is not None and not self._closing:
            self.write_eof()  # the queue drains first, then the pipe is closed

    def abort(self) -> None:
        self._close(None)

    def is_closing(self) -> bool:
        return self._closing

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    # -- flow control ------------------------------------------------------------------------

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or len(self._buffer) <= self._high_water:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken protocol is reported
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or len(self._buffer) > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken protocol is reported
            self._loop.call_exception_handler({
                "message": "protocol.resume_writing() failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })

    # -- errors and the end ------------------------------------------------------------------

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        # A broken pipe is the reader's doing, not a bug: only debug mode logs it.
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=exc)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._close(exc)

    def _close(self, exc: BaseException | None) -> None:
        if self._lost_scheduled:
            return
        self._lost_scheduled = True
        self._closing = True
        if self._buffer:
            self._loop._remove_writer(self._fileno)
            self._buffer.clear()
        self._unwatch_peer()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None
