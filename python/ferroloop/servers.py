"""``Server``: the object ``create_server`` and ``create_unix_server`` return.

Why this file exists: a server object is bookkeeping that runs once per server or per
connection (layering rule: Python), and its behaviour is a contract libraries rely on:
``close``, ``wait_closed``, ``serve_forever``, ``start_serving``, ``is_serving``,
``sockets``, ``get_loop``, ``async with``, ``close_clients`` and ``abort_clients``. The name
mirrors asyncio's ``base_events.Server``; the accepting itself is the loop's
(``connections.py``, ``_start_serving``/``_accept_connection``).

``wait_closed`` has asyncio 3.12.1's semantics on every Python version (the founding
design asks for it): it returns once the server is closed *and* every connection it
accepted is gone. asyncio 3.11 returned at once when the server was already closed, even
with connections still open.

Connections register themselves: a transport calls ``server._attach(transport)`` when it
is made and ``server._detach(transport)`` after ``connection_lost`` (ferroloop's
``SocketTransport``, also the one under a TLS connection, as asyncio 3.13's transports do;
a transport that passes no argument, as asyncio's 3.11 and 3.12 ones, is counted but not
listed for ``close_clients``/``abort_clients``). The connection count, not the set of
transports, decides when ``wait_closed`` returns.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from asyncio import trsock
from typing import Any

# A cancelled serve_forever() also closes the server's connections from 3.14 on (asyncio closes
# the clients, then waits); earlier versions wait for the connections to end by themselves.
_CLOSE_CLIENTS_WHEN_CANCELLED = sys.version_info >= (3, 14)

__all__ = ["Server"]


class Server(asyncio.AbstractServer):
    """A listening server: its sockets, its connections, and the accept loop's switch."""

    def __init__(
        self, loop: Any, sockets: list[Any], protocol_factory: Any, ssl_context: Any,
        backlog: int, ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        self._loop = loop
        self._sockets: list[Any] | None = sockets
        self._active_count = 0  # connections attached and not yet detached
        # id(transport) -> weak reference. Weak: a transport nobody references any more
        # must still be collectable (and warn as unclosed), as in asyncio. A dict of plain
        # weak references rather than a WeakSet, whose add/discard are Python code run for
        # every connection; an entry leaves when its transport detaches (also from the
        # transport's __del__), and a dead one is skipped.
        self._clients: dict[int, weakref.ref] = {}
        self._waiters: list[asyncio.Future] | None = []  # None once wait_closed is over
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut: asyncio.Future | None = None

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    # -- connections -------------------------------------------------------------------------

    def _attach(self, transport: Any = None) -> None:
        """A connection of this server was made (called by its transport)."""
        self._active_count += 1
        if transport is not None:
            self._clients[id(transport)] = weakref.ref(transport)

    def _detach(self, transport: Any = None) -> None:
        """A connection of this server is gone (called by its transport)."""
        if self._active_count <= 0:
            return  # detached twice: count it once
        self._active_count -= 1
        if transport is not None:
            self._clients.pop(id(transport), None)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self) -> None:
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # -- serving -----------------------------------------------------------------------------

    def _start_serving(self) -> None:
        if self._serving or self._sockets is None:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_serving(
                self._protocol_factory, sock, self._ssl_context, self, self._backlog,
                self._ssl_handshake_timeout, self._ssl_shutdown_timeout,
            )

    def get_loop(self) -> Any:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[trsock.TransportSocket, ...]:
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self) -> None:
        """Stop listening and close the listening sockets; connections stay open."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            self._loop._stop_serving(sock)
        self._serving = False
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def close_clients(self) -> None:
        """Close every connection of this server (buffered data is still sent)."""
        for transport in self._live_clients():
            transport.close()

    def abort_clients(self) -> None:
        """Abort every connection of this server (buffered data is dropped)."""
        for transport in self._live_clients():
            transport.abort()

    def _live_clients(self) -> list[Any]:
        return [t for t in (ref() for ref in list(self._clients.values())) if t is not None]

    async def start_serving(self) -> None:
        """Start accepting connections, if not yet (``create_server(start_serving=False)``)."""
        self._start_serving()
        await asyncio.sleep(0)  # let one iteration pass, as asyncio does

    async def serve_forever(self) -> None:
        """Accept connections until cancelled; ``close()`` cancels it too.

        When cancelled, the server is closed (on 3.14 its connections too) and its
        connections are waited for (``wait_closed``) before ``CancelledError`` propagates.
        """
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                if _CLOSE_CLIENTS_WHEN_CANCELLED:
                    self.close_clients()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and all its connections are gone."""
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
