"""ferroloop.Loop: the event loop class users get.

Why this file exists: asyncio's event loop has two kinds of work. What runs once per
callback (scheduling, timers, the run loop) is native, in ``ferroloop._native.LoopCore``.
What runs once per loop or per call of a rarely used method is here, in Python, where it is
easy to read against asyncio's own ``base_events.py``: the run/stop lifecycle around the
native loop, ``run_until_complete``, executors, the exception handler, debug-mode
scheduling (which records where each handle was created) and async generator bookkeeping.

The names mirror asyncio's ``BaseEventLoop`` so that a reader finds every concept under the
name asyncio gives it. Behaviour is checked against stock asyncio by ``tests/``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import socket
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import events, format_helpers, futures, tasks
from collections.abc import Callable
from typing import Any

from . import _native, tls, transports
from .connections import ConnectionMethods
from .datagram import DatagramMethods
from .introspection import IntrospectionMethods, VirtualClock
from .selector_events import SocketMethods
from .unix_events import UnixMethods

__all__ = ["Loop"]

logger = logging.getLogger("asyncio")

# Depth of the coroutine origin stack recorded in debug mode (asyncio's DEBUG_STACK_DEPTH).
_DEBUG_STACK_DEPTH = 10

# asyncio grew a ``debug`` parameter on _format_callback_source in 3.12.
_FORMAT_TAKES_DEBUG = "debug" in inspect.signature(format_helpers._format_callback_source).parameters
# Since 3.12 (CPython gh-96704) asyncio runs a custom exception handler inside the context of
# the task, future or handle the report is about; 3.11 calls it in the loop's own context.
_HANDLER_IN_REPORTED_CONTEXT = sys.version_info >= (3, 12)
# From 3.14 `create_task` hands the task name to the task factory with the other keyword
# arguments instead of calling `set_name` on what the factory returns (gh-128307).
_FACTORY_TAKES_NAME = sys.version_info >= (3, 14)
# asyncio's debug-mode callback check: 3.14 deprecates asyncio.iscoroutinefunction (it warns on
# every call) and checks with its private, warning-free equivalent.
_iscoroutinefunction = getattr(asyncio.coroutines, "_iscoroutinefunction", None) or (
    asyncio.iscoroutinefunction
)


def _debug_mode_from_environment() -> bool:
    """Debug mode as asyncio decides it for a new loop: ``-X dev`` or PYTHONASYNCIODEBUG."""
    if sys.flags.dev_mode:
        return True
    return not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))


def _format_handle(handle: asyncio.Handle) -> str:
    """How a slow callback is named in the debug log: the task it steps, or the handle."""
    callback = handle._callback
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, tasks.Task):
        return repr(owner)
    return str(handle)


def _stop_loop_when_done(fut: asyncio.Future) -> None:
    """Done-callback of run_until_complete's future: stop the loop it runs on.

    A future that finished with SystemExit/KeyboardInterrupt already unwinds the loop by
    raising; stopping it too would make the next run stop early.
    """
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return
    futures._get_loop(fut).stop()


class Loop(
    _native.LoopCore, SocketMethods, ConnectionMethods, UnixMethods, DatagramMethods,
    IntrospectionMethods, asyncio.AbstractEventLoop,
):
    """An asyncio event loop whose scheduler, timers and poller are written in Rust.

    ``clock``: None for the real clock, or a ``ferroloop.VirtualClock`` (introspection.py).
    """

    def __init__(self, *, clock: VirtualClock | None = None) -> None:
        self._thread_id: int | None = None
        self._exception_handler: Callable[[Any, dict], object] | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._task_factory: Callable | None = None
        self._current_handle: asyncio.Handle | None = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth: int | None = None
        self._clock_resolution = time_resolution()
        # In debug mode, callbacks that take longer than this are logged.
        self.slow_callback_duration = 0.1
        # Signal wake-up socket pair (main thread only), created on first run.
        self._signal_rsock: socket.socket | None = None
        self._signal_wsock: socket.socket | None = None
        self._old_wakeup_fd: int | None = None
        # (st_dev, st_ino) of that fd when the loop took over: it is given back only if the
        # number still names that file (unix_events.py).
        self._old_wakeup_id: tuple[int, int] | None = None
        # fd -> weak reference to the transport that owns it (filled by the transports of
        # issue #5); a watcher or sock_* call on such an fd raises RuntimeError, as in
        # asyncio. asyncio keeps a WeakValueDictionary; plain weak references cost a
        # connection less (its __setitem__ and removal callback are Python code). A
        # transport removes its entry in _call_connection_lost; a dead one reads as absent.
        self._transports: dict[int, weakref.ref] = {}
        # Signal handlers, children, the fork hook (unix_events.py).
        self._init_unix()
        self._set_debug_flag(_debug_mode_from_environment())
        if type(self).time is not _native.LoopCore.time:
            self._set_time_overridden(True)
        # Blocking detector, stats(), virtual clock (introspection.py).
        self._init_introspection(clock)

    # -- a patched ``loop.time`` must keep driving the scheduler -----------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "time":
            self._set_time_overridden(True)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name == "time":
            self._set_time_overridden(
                "time" in self.__dict__ or type(self).time is not _native.LoopCore.time
            )

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn: Callable = warnings.warn) -> None:
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- checks ------------------------------------------------------------------------------

    @property
    def _closed(self) -> bool:
        """asyncio's private flag (uvloop has it too), read by code that peeks at it; the same
        as ``is_closed()``. Read-only: ``close()`` is the way to close."""
        return self.is_closed()

    def _check_closed(self) -> None:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _check_thread(self) -> None:
        """Debug mode: non-thread-safe methods must be called from the loop's thread."""
        if self._thread_id is None:
            return
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    @staticmethod
    def _check_callback(callback: object, method: str) -> None:
        if asyncio.iscoroutine(callback) or _iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(
                f"a callable object was expected by {method}(), got {callback!r}"
            )

    # -- running and stopping ----------------------------------------------------------------

    def run_forever(self) -> None:
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._set_running(True)
            self._watch_signal_wakeups()
            self._run_timer_start()
            self._run_forever_native()
        finally:
            self._run_timer_stop()
            self._unwatch_signal_wakeups()
            self._set_running(False)
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def run_until_complete(self, future: Any) -> Any:
        """Run until the future (a Future, coroutine or other awaitable) is done."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # A task made here is ours to reap: an exception it ends with is raised below,
            # so the "exception was never retrieved" log would only be noise.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_loop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # The loop was interrupted by the task's own exception (e.g.
                # KeyboardInterrupt); mark it retrieved, it is being raised.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_loop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self) -> None:
        """Close the loop: drop pending callbacks, shut the default executor down (no wait)."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        if self._clock is not None:
            self._clock._loop_closed(self)  # the clock keeps the time it reached
        self._close_native()
        # Stops and joins the watchdog thread. After _close_native (which marks the loop
        # closed): another thread can then no longer start a watchdog while this one is
        # joined with the GIL released (the native start refuses a closed loop).
        self.set_block_threshold(None)
        try:
            # Running children handed to a reaper, signal handlers removed, wake-up fd
            # restored. Outside the main thread the handlers cannot be removed: the ValueError
            # propagates, as in asyncio, but the rest of close() still happens (the loop is
            # already marked closed; a second close() would return at once).
            self._close_unix()
        finally:
            self._executor_shutdown_called = True
            executor = self._default_executor
            if executor is not None:
                self._default_executor = None
                executor.shutdown(wait=False)
            self._close_poller()

    # Ctrl+C while the loop sleeps, and signal handlers: _watch_signal_wakeups and
    # _unwatch_signal_wakeups (called above) are in unix_events.py.

    # -- futures and tasks -------------------------------------------------------------------

    # create_future() and create_task() are native (LoopCore); create_task comes here in
    # debug mode or when a task factory is set.

    def _create_task_slow(
        self, coro: Any, name: str | None, context: Any, kwargs: dict[str, Any] | None
    ) -> Any:
        """create_task with a task factory, other keyword arguments, or in debug mode.

        ``kwargs`` holds the keyword arguments other than ``name`` and ``context``; the native
        ``create_task`` accepts them only from 3.13.3, as asyncio does. The task factory's
        contract is the running version's: up to 3.13 it gets ``context`` only when one is
        given (and the other keyword arguments, from 3.13.3), and the name is set on the task
        it returns; from 3.14 it gets every keyword argument, the name among them.
        """
        if kwargs is None:
            kwargs = {}
        if self._task_factory is None:
            task = tasks.Task(coro, loop=self, name=name, context=context, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        if context is not None:
            kwargs["context"] = context
        if _FACTORY_TAKES_NAME:
            if name is not None:
                kwargs["name"] = name
            return self._task_factory(self, coro, **kwargs)
        task = self._task_factory(self, coro, **kwargs)
        if name is not None:
            set_name = getattr(task, "set_name", None)
            if set_name is not None:
                set_name(name)
        return task

    def set_task_factory(self, factory: Callable | None) -> None:
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory
        self._set_has_task_factory(factory is not None)

    def get_task_factory(self) -> Callable | None:
        return self._task_factory

    # -- async generators --------------------------------------------------------------------

    def _asyncgen_firstiter_hook(self, agen: Any) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close every async generator still alive on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- executors ---------------------------------------------------------------------------

    def _check_default_executor(self) -> None:
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(self, executor: Any, func: Callable, *args: Any) -> asyncio.Future:
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            self._check_default_executor()
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        fut = futures.wrap_future(executor.submit(func, *args), loop=self)
        if self._clock is not None:
            self._hold_clock_until(fut)  # a virtual clock waits for the job
        return fut

    def set_default_executor(self, executor: Any) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Wait for the default executor's threads (at most ``timeout`` seconds)."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        if self._clock is not None:
            self._hold_clock_until(future)  # a virtual clock waits for the threads
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            warnings.warn(
                "The executor did not finishing joining "
                f"its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future: asyncio.Future) -> None:
        try:
            assert self._default_executor is not None
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, future, None)
        except Exception as ex:  # noqa: BLE001 - any failure is handed to the awaiting task
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)

    # -- errors ------------------------------------------------------------------------------

    def get_exception_handler(self) -> Callable | None:
        return self._exception_handler

    def set_exception_handler(self, handler: Callable | None) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict) -> None:
        """Log the context to the 'asyncio' logger, as asyncio's loops do."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info: Any = (
            (type(exception), exception, exception.__traceback__)
            if exception is not None
            else False
        )
        current = self._current_handle
        if (
            "source_traceback" not in context
            and current is not None
            and current._source_traceback
        ):
            context["handle_traceback"] = current._source_traceback
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                formatted = "".join(traceback.format_list(value)).rstrip()
                value = "Object created at (most recent call last):\n" + formatted
            elif key == "handle_traceback":
                formatted = "".join(traceback.format_list(value)).rstrip()
                value = "Handle created at (most recent call last):\n" + formatted
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict) -> None:
        """Pass the context to the user's handler, or to default_exception_handler."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.exception("Exception in default exception handler")
            return
        try:
            ctx = self._reported_context(context) if _HANDLER_IN_REPORTED_CONTEXT else None
            if ctx is not None:
                ctx.run(self._exception_handler, self, context)
            else:
                self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken handler must not kill the loop
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.exception(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler"
                )

    @staticmethod
    def _reported_context(context: dict) -> Any:
        """The ``contextvars.Context`` a 3.12+ asyncio runs the custom handler in: that of the
        report's task, else its future (a task may come under that key), else its handle;
        ``None`` (call it directly) when there is none or it has no ``run``."""
        thing = context.get("task")
        if thing is None:
            thing = context.get("future")
        if thing is None:
            thing = context.get("handle")
        ctx = thing.get_context() if thing is not None and hasattr(thing, "get_context") else None
        return ctx if ctx is not None and hasattr(ctx, "run") else None

    def _callback_error(self, handle: asyncio.Handle, exc: BaseException) -> None:
        """The native run loop's report of a callback that raised (asyncio's Handle._run)."""
        if _FORMAT_TAKES_DEBUG:
            source = format_helpers._format_callback_source(
                handle._callback, handle._args, debug=self.get_debug()
            )
        else:
            source = format_helpers._format_callback_source(handle._callback, handle._args)
        context: dict[str, Any] = {
            "message": f"Exception in callback {source}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    # -- debug mode --------------------------------------------------------------------------

    def set_debug(self, enabled: bool) -> None:
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth or 0)
        self._coroutine_origin_tracking_enabled = enabled

    def _call_soon_debug(
        self, callback: Callable, args: tuple, context: Any, method: str
    ) -> asyncio.Handle:
        """call_soon / call_soon_threadsafe in debug mode: checked, with a source traceback."""
        if method == "call_soon":
            self._check_thread()
        self._check_callback(callback, method)
        # asyncio 3.14's call_soon_threadsafe makes a _ThreadSafeHandle (the native module has
        # that class where asyncio does), whose __init__ is one more frame in the traceback.
        cls, frames = _native.Handle, 1
        if method == "call_soon_threadsafe" and hasattr(_native, "_ThreadSafeHandle"):
            cls, frames = _native._ThreadSafeHandle, 2
        handle = cls(callback, args, self, context)
        if handle._source_traceback:
            # Drop our frames: the traceback ends where the user called call_soon.
            del handle._source_traceback[-frames:]
        self._push_ready(handle)
        return handle

    def _call_at_debug(
        self, when: Any, callback: Callable, args: tuple, context: Any
    ) -> asyncio.TimerHandle:
        """call_at / call_later in debug mode: checked, with a source traceback."""
        self._check_thread()
        self._check_callback(callback, "call_at")
        timer = _native.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        self._push_timer(timer)
        return timer

    def _run_handle_debug(self, handle: asyncio.Handle) -> None:
        """Run one callback in debug mode, logging it if it was slow."""
        try:
            self._current_handle = handle
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                logger.warning("Executing %s took %.3f seconds", _format_handle(handle), dt)
        finally:
            self._current_handle = None
            # This frame can outlive the call: a frame object made for a traceback inside the
            # callback (a task's failing coroutine) links back to it. Holding the handle here
            # would keep the callback, and so a failed task, alive until the next collection,
            # and asyncio reports "exception was never retrieved" when the task is freed,
            # right after its step (as asyncio's _run_once drops its handle).
            handle = None

    def _io_handle_debug(self, callback: Callable, args: tuple) -> asyncio.Handle:
        """The handle of an fd watcher in debug mode (it records where it was created)."""
        handle = _native.Handle(callback, args, self, None)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        return handle

    # -- name resolution ---------------------------------------------------------------------

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0,
        flags: int = 0,
    ) -> list[tuple]:
        """``socket.getaddrinfo`` without blocking the loop.

        IP-address hosts with numeric ports are answered in-process (identically, see
        ``addrinfo.rs``); everything else runs ``socket.getaddrinfo`` in the default
        executor, as asyncio does. Debug mode always takes the executor path, whose
        logging asyncio users know.
        """
        if not self.get_debug():
            infos = _native.getaddrinfo_numeric(host, port, family, type, proto, flags)
            if infos is not None:
                return infos
            resolve = socket.getaddrinfo
        else:
            resolve = self._getaddrinfo_debug
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    def _getaddrinfo_debug(
        self, host: Any, port: Any, family: int, type: int, proto: int, flags: int
    ) -> list[tuple]:
        """``socket.getaddrinfo`` with the timing log asyncio writes in debug mode."""
        parts = [f"{host}:{port!r}"]
        for name, value in (("family", family), ("type", type), ("proto", proto),
                            ("flags", flags)):
            if value:
                parts.append(f"{name}={value!r}")
        what = ", ".join(parts)
        logger.debug("Get address info %s", what)
        t0 = self.time()
        infos = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = self.time() - t0
        msg = f"Getting address info {what} took {dt * 1e3:.3f}ms: {infos!r}"
        if dt >= self.slow_callback_duration:
            logger.info(msg)
        else:
            logger.debug(msg)
        return infos

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        """``socket.getnameinfo`` in the default executor (as asyncio)."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    async def _ensure_resolved(
        self, address: Any, *, family: int = 0, type: int = socket.SOCK_STREAM,
        proto: int = 0, flags: int = 0,
    ) -> list[tuple]:
        """Address infos for ``address``: the address itself if it is an IP already."""
        host, port = address[:2]
        info = _ipaddr_info(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await self.getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )

    # -- sendfile and TLS upgrade (transports.py, tls.py) -------------------------------------

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send a file over a transport; the number of bytes sent (see transports.py)."""
        return await transports.sendfile(self, transport, file, offset, count,
                                         fallback=fallback)

    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                        server_hostname=None, ssl_handshake_timeout=None,
                        ssl_shutdown_timeout=None):
        """Upgrade ``transport`` to TLS; the new transport ``protocol`` uses (see tls.py)."""
        return await tls.start_tls(
            self, transport, protocol, sslcontext, server_side=server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    # connect_read_pipe, connect_write_pipe, subprocess_exec, subprocess_shell,
    # add_signal_handler and remove_signal_handler are in unix_events.py.


def _ipaddr_info(
    host: Any, port: Any, family: int, type: int, proto: int, flowinfo: int = 0,
    scopeid: int = 0,
) -> tuple | None:
    """One address info for a host that is already an IP address, else None.

    Used where asyncio skips ``getaddrinfo`` (``sock_connect``, ``create_connection``): the
    host string is kept as given, flow info and scope id come from the address tuple.
    """
    if host is None or proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    if type == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None or port == "" or port == b"":
        port = 0
    else:
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None  # a service name: getaddrinfo must look it up
    if family == socket.AF_UNSPEC:
        families = [socket.AF_INET, socket.AF_INET6] if socket.has_ipv6 else [socket.AF_INET]
    else:
        families = [family]
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None  # inet_pton takes no zone id; getaddrinfo resolves it
    for af in families:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if socket.has_ipv6 and af == socket.AF_INET6:
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


def _set_result_unless_cancelled(fut: asyncio.Future, result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


def time_resolution() -> float:
    """Resolution of the clock behind loop.time() (asyncio's ``_clock_resolution``)."""
    import time

    return time.get_clock_info("monotonic").resolution
