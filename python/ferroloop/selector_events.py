"""File-descriptor watchers and the ``sock_*`` coroutines (asyncio's ``selector_events.py``).

Why this file exists: asyncio keeps ``add_reader``/``add_writer`` and the low-level socket
coroutines on ``BaseSelectorEventLoop``. ferroloop has no Python selector: the fd registry,
the epoll registrations and the dispatch of readiness to handles are native
(``crates/ferroloop-py/src/watchers.rs``, reached through ``self._add_reader`` and friends).
What remains is the per-call protocol every ``sock_*`` coroutine follows, kept here in
Python so it reads side by side with asyncio's:

1. try the system call at once (most calls on a busy socket succeed without waiting);
2. only if it would block, create a future and register a watcher that retries the call
   each time the fd is ready, until it completes the future;
3. when the future is done for any reason (result, error, cancellation of the awaiting
   task), remove the watcher, so a cancelled ``sock_recv`` reads nothing more from the
   socket and loses no data.

A socket owned by a transport cannot be used here (RuntimeError, as in asyncio); the
registry of transports is ``self._transports``, filled by the transports of issue #5.
"""

from __future__ import annotations

import _socket
import errno
import io
import os
import socket
import sys
from asyncio import exceptions
from typing import Any

# asyncio 3.13 caps each os.sendfile() call (gh-82500), so a count beyond a C ssize_t sends
# the file instead of raising OverflowError; earlier versions raise, and so does ferroloop there.
_SENDFILE_CAP = sys.maxsize // 2 + 1 if sys.version_info >= (3, 13) else None
# asyncio 3.14 sets the file position after a native sock_sendfile even when nothing was sent
# (an offset at or past the end of the file): to the offset; and its read-and-send fallback
# seeks to the offset before reading even when the offset is 0. Earlier versions do neither.
_SENDFILE_SEEKS_ALWAYS = sys.version_info >= (3, 14)

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None  # type: ignore[assignment]

__all__ = ["SocketMethods"]

# A socket's family and type as ints (``_socket.socket``'s own getters): ``socket.socket``'s
# properties convert them into enums through ``enum.__call__``, which showed in the cost of
# every connection (design.md §5.23).
_socket_family = _socket.socket.family.__get__
_socket_type = _socket.socket.type.__get__
_INET_FAMILIES = (
    (int(socket.AF_INET), int(socket.AF_INET6)) if socket.has_ipv6 else (int(socket.AF_INET),)
)

# asyncio's constants.SENDFILE_FALLBACK_READBUFFER_SIZE.
_SENDFILE_FALLBACK_READBUFFER_SIZE = 1024 * 256


def _check_ssl_socket(sock: Any) -> None:
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


class SocketMethods:
    """The fd-watcher and ``sock_*`` methods of ``ferroloop.Loop``."""

    # Provided by ferroloop.Loop / LoopCore.
    _transports: Any

    # -- fd watchers -------------------------------------------------------------------------

    def _ensure_fd_no_transport(self, fd: Any) -> None:
        """RuntimeError if a live transport owns ``fd`` (an int or an object with fileno)."""
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        ref = self._transports.get(fileno)
        transport = ref() if ref is not None else None
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def remove_reader(self, fd: Any) -> bool:
        """Stop watching ``fd`` for reading; whether a reader was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def add_writer(self, fd: Any, callback: Any, *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_writer(self, fd: Any) -> bool:
        """Stop watching ``fd`` for writing; whether a writer was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)

    def _wait_readable(self, sock: Any, retry: Any, *args: Any) -> Any:
        """Steps 2–3 for a read: a future completed by ``retry(fut, *args)`` on readiness."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_reader(fd, retry, fut, *args)
        fut.add_done_callback(_WatcherRemover(self, fd, handle, reader=True))
        return fut

    def _wait_writable(self, sock: Any, retry: Any, *args: Any) -> Any:
        """Steps 2–3 for a write or a connect."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, retry, fut, *args)
        fut.add_done_callback(_WatcherRemover(self, fd, handle, reader=False))
        return fut

    def _check_sock(self, sock: Any) -> None:
        _check_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    # -- receiving ---------------------------------------------------------------------------

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        """Receive up to ``n`` bytes from ``sock``."""
        # Native for a plain socket (sock.rs): the data, or a future already wired to a
        # watcher. None means "not a case the native path handles".
        result = self._sock_recv_fast(sock, n)
        if result is not None:
            if result.__class__ is bytes:
                return result
            return await result
        self._check_sock(sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, _retry_call, sock, "recv", n)

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        """Receive into the writable buffer ``buf``; the number of bytes received."""
        self._check_sock(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, _retry_call, sock, "recv_into", buf)

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
        """Receive a datagram: ``(data, address)``."""
        self._check_sock(sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, _retry_call, sock, "recvfrom", bufsize)

    async def sock_recvfrom_into(
        self, sock: socket.socket, buf: Any, nbytes: int = 0
    ) -> tuple[int, Any]:
        """Receive a datagram into ``buf``: ``(nbytes, address)``."""
        self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(
            sock, _retry_call, sock, "recvfrom_into", buf, nbytes
        )

    # -- sending -----------------------------------------------------------------------------

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        """Send all of ``data``, waiting for room as needed; raises on error."""
        sent = self._sock_send_fast(sock, data)  # native first send, or None (sock.rs)
        if sent is None:
            self._check_sock(sock)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
        if sent == len(data):
            return
        await self._wait_writable(sock, _send_rest, sock, memoryview(data), [sent])

    async def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> int:
        """Send a datagram to ``address``; the number of bytes sent."""
        self._check_sock(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_writable(sock, _retry_call, sock, "sendto", data, 0, address)

    # -- connecting and accepting ------------------------------------------------------------

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """Connect ``sock`` to ``address`` (host names are resolved first, as asyncio does)."""
        self._check_sock(sock)
        if isinstance(sock, _socket.socket):
            # The ints, not socket.socket's enum-converting properties (see _INET_FAMILIES).
            family, type_ = _socket_family(sock), _socket_type(sock)
        else:
            family, type_ = sock.family, sock.type
        if family in _INET_FAMILIES:
            resolved = await self._ensure_resolved(
                address, family=family, type=type_, proto=sock.proto
            )
            address = resolved[0][4]
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            # In progress (EINTR too: the connect goes on in the kernel). Writable means
            # finished, one way or the other; SO_ERROR says which.
            fut = self._wait_writable(sock, _connect_done, sock, address)
            try:
                return await fut
            finally:
                fut = None  # break the traceback -> frame -> future cycle on error

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """Accept a connection: ``(conn, address)``, ``conn`` non-blocking."""
        self._check_sock(sock)
        try:
            conn, address = sock.accept()
        except (BlockingIOError, InterruptedError):
            return await self._wait_readable(sock, _accept_one, sock)
        conn.setblocking(False)
        return conn, address

    # -- sendfile ----------------------------------------------------------------------------

    async def sock_sendfile(
        self, sock: socket.socket, file: Any, offset: int = 0, count: int | None = None,
        *, fallback: bool = True,
    ) -> int:
        """Send a file over ``sock``: zero-copy ``os.sendfile``, else read-and-send."""
        self._check_sock(sock)
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    def _check_sendfile_params(
        self, sock: socket.socket, file: Any, offset: Any, count: Any
    ) -> None:
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    async def _sock_sendfile_native(
        self, sock: socket.socket, file: Any, offset: int, count: int | None
    ) -> int:
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # an empty file
        job = _SendfileJob(self, sock, fileno, offset, count, blocksize)
        return await job.start()

    async def _sock_sendfile_fallback(
        self, sock: socket.socket, file: Any, offset: int, count: int | None
    ) -> int:
        # 3.14 seeks to the offset even when it is 0 (the file may be positioned elsewhere).
        if offset or (_SENDFILE_SEEKS_ALWAYS and hasattr(file, "seek")):
            file.seek(offset)
        chunk = (
            min(count, _SENDFILE_FALLBACK_READBUFFER_SIZE)
            if count
            else _SENDFILE_FALLBACK_READBUFFER_SIZE
        )
        buf = bytearray(chunk)
        total_sent = 0
        try:
            while True:
                if count:
                    chunk = min(count - total_sent, chunk)
                    if chunk <= 0:
                        break
                view = memoryview(buf)[:chunk]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break  # end of file
                await self.sock_sendall(sock, view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)


class _WatcherRemover:
    """Done-callback of a ``sock_*`` future: unregister its watcher.

    Only if the watcher is still the one this operation registered: a later ``add_reader``
    on the same fd replaced (and cancelled) it, and that newer watcher must stay.
    """

    __slots__ = ("_fd", "_handle", "_loop", "_reader")

    def __init__(self, loop: Any, fd: int, handle: Any, reader: bool) -> None:
        self._loop = loop
        self._fd = fd
        self._handle = handle
        self._reader = reader

    def __call__(self, fut: Any) -> None:
        if self._handle.cancelled():
            return
        if self._reader:
            self._loop.remove_reader(self._fd)
        else:
            self._loop.remove_writer(self._fd)


def _retry_call(fut: Any, sock: Any, method: str, *args: Any) -> None:
    """Watcher callback: retry ``sock.<method>(*args)`` and complete ``fut`` unless it would
    block. The method is looked up on every try, as asyncio does (a wrapper or a test may
    swap it while the call waits)."""
    if fut.done():
        return  # cancelled meanwhile; the done-callback removes this watcher
    try:
        result = getattr(sock, method)(*args)
    except (BlockingIOError, InterruptedError):
        return  # spurious readiness: wait for the next one
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the awaiting task gets it
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _send_rest(fut: Any, sock: socket.socket, view: memoryview, pos: list[int]) -> None:
    """Watcher callback of ``sock_sendall``: send what is left, finish when it is all gone."""
    if fut.done():
        return
    start = pos[0]
    try:
        sent = sock.send(view[start:])
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the awaiting task gets it
        fut.set_exception(exc)
        return
    start += sent
    if start == len(view):
        fut.set_result(None)
    else:
        pos[0] = start


def _connect_done(fut: Any, sock: socket.socket, address: Any) -> None:
    """Watcher callback of ``sock_connect``: the connection attempt has an outcome."""
    if fut.done():
        return
    try:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, f"Connect call failed {address}")
    except (BlockingIOError, InterruptedError):
        pass  # not yet: stay registered
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the awaiting task gets it
        fut.set_exception(exc)
    else:
        fut.set_result(None)
    finally:
        # The error's traceback holds this frame: without this the future (which holds the
        # error) and the error would keep each other alive, as asyncio avoids here too.
        fut = None


def _accept_one(fut: Any, sock: socket.socket) -> None:
    """Watcher callback of ``sock_accept``."""
    if fut.done():
        return
    try:
        conn, address = sock.accept()
        conn.setblocking(False)
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the awaiting task gets it
        fut.set_exception(exc)
    else:
        fut.set_result((conn, address))


class _SendfileJob:
    """``os.sendfile`` until ``count`` bytes (or the file) are sent, waiting for room.

    The file position is left after the last byte sent, as asyncio leaves it (sendfile with
    an explicit offset does not move it, so it is set at the end; on 3.14 also when nothing
    was sent).
    """

    def __init__(
        self, loop: Any, sock: socket.socket, fileno: int, offset: int,
        count: int | None, blocksize: int,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._fileno = fileno
        self._start_offset = offset
        self._offset = offset
        self._count = count
        self._blocksize = blocksize
        self._total_sent = 0
        self._fut = loop.create_future()
        self._watching = False

    def start(self) -> Any:
        self._fut.add_done_callback(self._on_done)
        self._step()
        return self._fut

    def _on_done(self, fut: Any) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_writer(self._fd)
        if fut.cancelled():
            self._update_filepos()

    def _update_filepos(self) -> None:
        if self._total_sent > 0 or _SENDFILE_SEEKS_ALWAYS:
            os.lseek(self._fileno, self._start_offset + self._total_sent, os.SEEK_SET)

    def _finish(self, exc: BaseException | None = None) -> None:
        self._update_filepos()
        if exc is None:
            self._fut.set_result(self._total_sent)
        else:
            self._fut.set_exception(exc)

    def _wait(self) -> None:
        if not self._watching:
            self._watching = True
            self._loop.add_writer(self._fd, self._step)

    def _step(self) -> None:
        if self._fut.done():
            return
        blocksize = self._blocksize
        if self._count:
            blocksize = self._count - self._total_sent
            if blocksize <= 0:
                self._finish()
                return
        if _SENDFILE_CAP is not None:
            blocksize = min(blocksize, _SENDFILE_CAP)
        try:
            sent = os.sendfile(self._fd, self._fileno, self._offset, blocksize)
        except (BlockingIOError, InterruptedError):
            self._wait()
        except OSError as exc:
            if self._watching and exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                # The peer went away mid-transfer: report it as a ConnectionError, whatever
                # errno the platform chose.
                new_exc = ConnectionError("socket is not connected", errno.ENOTCONN)
                new_exc.__cause__ = exc
                exc = new_exc
            if self._total_sent == 0:
                # Typically "not a regular file": the caller falls back to read-and-send.
                err = exceptions.SendfileNotAvailableError("os.sendfile call failed")
                self._finish(err)
            else:
                self._finish(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - the awaiting task gets it
            self._finish(exc)
        else:
            if sent == 0:
                self._finish()  # end of file
            else:
                self._offset += sent
                self._total_sent += sent
                self._wait()
