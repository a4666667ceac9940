"""Connection setup and servers: ``create_connection``, ``create_server`` and friends.

Why this file exists: setting up a connection or a server runs once per connection or per
server, so by the layering rule it is Python, where it can be read side by side with
asyncio's ``base_events.py``/``unix_events.py``/``selector_events.py`` and must behave like
them: the same signatures (per Python version: ``all_errors`` from 3.12, ``keep_alive`` and
``cleanup_socket`` from 3.13), the same argument checks in the same order, the same
exception types and messages. The per-packet work belongs to the transport, which this
module reaches only through ``transports.make_socket_transport`` and the public
``asyncio.Transport`` API, so whichever transport that constructor builds (the native
``SocketTransport`` today; asyncio's selector transport served while it was written) works
unchanged.

Where ferroloop does better than asyncio, without changing what callers see:

* Happy Eyeballs uses ferroloop's own staggered race (``staggered.py``), which closes the
  socket of an attempt that also succeeded instead of leaking it.
* A socket that ``create_connection`` made is closed if the protocol factory raises.
* The accept path makes the transport in the reader callback itself (asyncio spawns a task
  per connection for that), and it stops accepting as soon as the server is closed.

TLS (``ssl=``): the ssl-related argument checks are asyncio's; the connection is then
asyncio's ``SSLProtocol`` over the socket transport (``tls.make_ssl_transport``).
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import errno
import functools
import itertools
import logging
import os
import socket
import stat
import sys
from asyncio import trsock
from typing import Any

from .selector_events import _check_ssl_socket, _socket_family, _socket_type
from .servers import Server
from .staggered import staggered_race
from .tls import make_ssl_transport
from .transports import make_socket_transport

__all__ = ["ConnectionMethods"]

logger = logging.getLogger("asyncio")

_PY312 = sys.version_info >= (3, 12)
_PY313 = sys.version_info >= (3, 13)

# asyncio's constants.ACCEPT_RETRY_DELAY: pause after accept() ran out of a system resource.
_ACCEPT_RETRY_DELAY = 1.0

# accept() failed for lack of a system resource. Linux keeps reporting the listening
# socket as readable, so accepting pauses for a while (as asyncio does) instead of spinning.
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# accept() failed because of that one pending connection (it was reset, or a network error
# was already pending on it, see accept(2) on Linux): skip it and accept the next.
_ACCEPT_SKIP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
        "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH",
    )
    if hasattr(errno, name)
)


def _bind_error_text(exc: OSError) -> str:
    """The tail of asyncio's "error while attempting to bind on address ..." message.

    asyncio 3.13 words it with ``str(exc)`` ("[errno 98] address already in use"), 3.11 and
    3.12 with the bare ``strerror``.
    """
    if _PY313 or exc.strerror is None:
        return str(exc).lower()
    return exc.strerror.lower()


def _set_reuseport(sock: socket.socket) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _interleave_addrinfos(infos: list[tuple], first_family_count: int = 1) -> list[tuple]:
    """Reorder address infos so that families alternate (RFC 8305 §4).

    The family of the first address leads with ``first_family_count`` addresses, then
    one address of each family in turn, each family keeping its own order.
    """
    groups: dict[int, collections.deque] = {}
    for info in infos:
        groups.setdefault(info[0], collections.deque()).append(info)
    queues = list(groups.values())
    ordered: list[tuple] = []
    if queues:
        lead = queues[0]
        for _ in range(max(0, first_family_count - 1)):
            if not lead:
                break
            ordered.append(lead.popleft())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.popleft())
    return ordered


def _close_socket(sock: socket.socket) -> None:
    sock.close()


def _is_filesystem_path(path: str | bytes) -> bool:
    """False for the abstract namespace ('\\0name', b'\\0name') and autobind ('')."""
    return bool(path) and path[0] not in (0, "\x00")


class ConnectionMethods:
    """Connection and server setup methods of ``ferroloop.Loop`` (asyncio's names)."""

    # Provided by ferroloop.Loop / LoopCore / SocketMethods.
    create_future: Any
    create_task: Any
    call_later: Any
    call_exception_handler: Any
    get_debug: Any
    sock_connect: Any
    _ensure_resolved: Any
    _add_reader: Any
    _remove_reader: Any

    # -- create_connection -------------------------------------------------------------------

    if _PY312:

        async def create_connection(
            self, protocol_factory: Any, host: Any = None, port: Any = None, *,
            ssl: Any = None, family: int = 0, proto: int = 0, flags: int = 0,
            sock: Any = None, local_addr: Any = None, server_hostname: str | None = None,
            ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None,
            happy_eyeballs_delay: float | None = None, interleave: int | None = None,
            all_errors: bool = False,
        ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
            """Connect to a TCP server: ``(transport, protocol)``."""
            return await self._create_connection(
                protocol_factory, host, port, ssl, family, proto, flags, sock, local_addr,
                server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout,
                happy_eyeballs_delay, interleave, all_errors,
            )

    else:

        async def create_connection(  # type: ignore[misc]
            self, protocol_factory: Any, host: Any = None, port: Any = None, *,
            ssl: Any = None, family: int = 0, proto: int = 0, flags: int = 0,
            sock: Any = None, local_addr: Any = None, server_hostname: str | None = None,
            ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None,
            happy_eyeballs_delay: float | None = None, interleave: int | None = None,
        ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
            """Connect to a TCP server: ``(transport, protocol)``."""
            return await self._create_connection(
                protocol_factory, host, port, ssl, family, proto, flags, sock, local_addr,
                server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout,
                happy_eyeballs_delay, interleave, False,
            )

    async def _create_connection(
        self, protocol_factory: Any, host: Any, port: Any, ssl: Any, family: int, proto: int,
        flags: int, sock: Any, local_addr: Any, server_hostname: str | None,
        ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None,
        happy_eyeballs_delay: float | None, interleave: int | None, all_errors: bool,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            # The host names the certificate to check, unless server_hostname says otherwise.
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1  # Happy Eyeballs alternates families by default

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            sock = await self._connect_to_host(
                host, port, family, proto, flags, local_addr, happy_eyeballs_delay,
                interleave, all_errors,
            )
            own_sock = True
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                # AF_UNIX stream sockets are accepted too, as asyncio accepts them.
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            own_sock = False

        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname, own_sock=own_sock,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            logger.debug(
                "%r connected to %s:%r: (%r, %r)",
                transport.get_extra_info("socket"), host, port, transport, protocol,
            )
        return transport, protocol

    async def _connect_to_host(
        self, host: Any, port: Any, family: int, proto: int, flags: int, local_addr: Any,
        happy_eyeballs_delay: float | None, interleave: int | None, all_errors: bool,
    ) -> socket.socket:
        """Resolve ``host`` and connect a socket to one of its addresses."""
        infos = await self._ensure_resolved(
            (host, port), family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        laddr_infos = None
        if local_addr is not None:
            laddr_infos = await self._ensure_resolved(
                local_addr, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not laddr_infos:
                raise OSError("getaddrinfo() returned empty list")
        if interleave:
            infos = _interleave_addrinfos(infos, interleave)

        # One list of errors per address, in the order the addresses are tried.
        errors: list[list[OSError]] = [[] for _ in infos]
        race_errors: list[BaseException | None] = []
        if happy_eyeballs_delay is None:
            for info, info_errors in zip(infos, errors):
                try:
                    return await self._connect_sock(info_errors, info, laddr_infos)
                except OSError:
                    continue
                finally:
                    # The raised errors' tracebacks hold this frame: no local may keep
                    # their list alive (asyncio leaves no such cycle, gh-124859).
                    info_errors = None  # type: ignore[assignment]
        else:
            sock, _, race_errors = await staggered_race(
                (
                    functools.partial(self._connect_sock, info_errors, info, laddr_infos)
                    for info, info_errors in zip(infos, errors)
                ),
                happy_eyeballs_delay,
                loop=self,  # type: ignore[arg-type]
                discard=_close_socket,
            )
            if sock is not None:
                return sock

        flat = [exc for info_errors in errors for exc in info_errors]
        try:
            if not flat:
                # Every attempt failed with something other than OSError (possible only in
                # the race, which collects any exception): raise the first of those.
                first = next((e for e in race_errors if e is not None), None)
                raise first if first is not None else OSError("create_connection failed")
            if all_errors:
                raise ExceptionGroup("create_connection failed", flat)
            if len(flat) == 1:
                raise flat[0]
            model = str(flat[0])
            if all(str(exc) == model for exc in flat):
                raise flat[0]
            raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in flat)))
        finally:
            flat = errors = race_errors = None  # type: ignore[assignment]  # break cycles

    async def _connect_sock(
        self, errors: list[OSError], addr_info: tuple, local_addr_infos: list[tuple] | None,
    ) -> socket.socket:
        """Make a socket for ``addr_info``, bind it if asked, connect it. ``errors`` collects
        every OSError this attempt met (failed binds included); the socket is closed on
        any failure, cancellation included."""
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_addr_infos is not None:
                self._bind_local(sock, family, local_addr_infos, errors)
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            # The error's traceback holds this frame; dropping the list here leaves the
            # exception without a reference cycle through it, as in asyncio.
            errors = None  # type: ignore[assignment]

    @staticmethod
    def _bind_local(
        sock: socket.socket, family: int, local_addr_infos: list[tuple],
        errors: list[OSError],
    ) -> None:
        """Bind to the first local address of the socket's family that can be bound."""
        for lfamily, _, _, _, laddr in local_addr_infos:
            if lfamily != family:
                continue
            try:
                sock.bind(laddr)
                return
            except OSError as exc:
                errors.append(
                    OSError(
                        exc.errno,
                        f"error while attempting to bind on address {laddr!r}: "
                        f"{_bind_error_text(exc)}",
                    )
                )
        if errors:
            try:
                raise errors.pop()  # re-recorded by _connect_sock
            finally:
                errors = None  # type: ignore[assignment]  # no cycle through this frame
        raise OSError(f"no matching local address with {family=} found")

    async def _create_connection_transport(
        self, sock: Any, protocol_factory: Any, ssl: Any, server_hostname: str | None,
        server_side: bool = False, *, own_sock: bool = False,
        ssl_handshake_timeout: float | None = None, ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Wrap the connected ``sock`` in a transport; return once the protocol has it."""
        sock.setblocking(False)
        transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            if ssl:
                transport, _ = make_ssl_transport(
                    self, sock, protocol, None if isinstance(ssl, bool) else ssl, waiter,
                    server_side=server_side, server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                )
            else:
                transport = make_socket_transport(self, sock, protocol, waiter)
            await waiter
        except BaseException:
            if transport is not None:
                transport.close()
            elif own_sock:
                sock.close()
            raise
        return transport, protocol

    # -- create_server -----------------------------------------------------------------------

    if _PY313:

        async def create_server(
            self, protocol_factory: Any, host: Any = None, port: Any = None, *,
            family: int = socket.AF_UNSPEC, flags: int = socket.AI_PASSIVE, sock: Any = None,
            backlog: int = 100, ssl: Any = None, reuse_address: bool | None = None,
            reuse_port: bool | None = None, keep_alive: bool | None = None,
            ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None, start_serving: bool = True,
        ) -> Server:
            """Listen for TCP connections on every address of ``host`` (a name, an address,
            a sequence of them, or ``None``/'' for all interfaces)."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog, ssl,
                reuse_address, reuse_port, keep_alive, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving,
            )

    else:

        async def create_server(  # type: ignore[misc]
            self, protocol_factory: Any, host: Any = None, port: Any = None, *,
            family: int = socket.AF_UNSPEC, flags: int = socket.AI_PASSIVE, sock: Any = None,
            backlog: int = 100, ssl: Any = None, reuse_address: bool | None = None,
            reuse_port: bool | None = None, ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None, start_serving: bool = True,
        ) -> Server:
            """Listen for TCP connections on every address of ``host`` (a name, an address,
            a sequence of them, or ``None``/'' for all interfaces)."""
            return await self._create_server(
                protocol_factory, host, port, family, flags, sock, backlog, ssl,
                reuse_address, reuse_port, None, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving,
            )

    async def _create_server(
        self, protocol_factory: Any, host: Any, port: Any, family: int, flags: int,
        sock: Any, backlog: int, ssl: Any, reuse_address: bool | None,
        reuse_port: bool | None, keep_alive: bool | None,
        ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None,
        start_serving: bool,
    ) -> Server:
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            _check_ssl_socket(sock)

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            sockets = await self._bind_server_sockets(
                host, port, family, flags, reuse_address, reuse_port, keep_alive
            )
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        for s in sockets:
            s.setblocking(False)
        server = Server(
            self, sockets, protocol_factory, ssl, backlog, ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        await self._maybe_start_serving(server, start_serving)
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    async def _maybe_start_serving(self, server: Server, start_serving: bool) -> None:
        if not start_serving:
            return
        server._start_serving()
        try:
            await asyncio.sleep(0)  # one iteration, as asyncio lets pass
        except BaseException:
            server.close()  # cancelled: nobody will ever get this server to close it
            raise

    async def _create_server_getaddrinfo(
        self, host: Any, port: Any, family: int, flags: int
    ) -> list[tuple]:
        infos = await self._ensure_resolved(
            (host, port), family=family, type=socket.SOCK_STREAM, flags=flags
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    async def _bind_server_sockets(
        self, host: Any, port: Any, family: int, flags: int, reuse_address: bool | None,
        reuse_port: bool | None, keep_alive: bool | None,
    ) -> list[socket.socket]:
        """One bound socket per distinct address of every host, as asyncio binds them."""
        if reuse_address is None:
            reuse_address = os.name == "posix" and sys.platform != "cygwin"
        if host == "":
            hosts: Any = [None]
        elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
            hosts = [host]
        else:
            hosts = host
        resolved = await asyncio.gather(
            *[self._create_server_getaddrinfo(h, port, family, flags) for h in hosts]
        )
        # Each address once (asyncio uses a set; a dict keeps the resolver's order).
        infos = list(dict.fromkeys(itertools.chain.from_iterable(resolved)))

        debug = self.get_debug()
        sockets: list[socket.socket] = []
        completed = False
        try:
            for af, socktype, proto, _, sa in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    # A family, type or protocol this host cannot make: skip it.
                    if debug:
                        logger.warning(
                            "create_server() failed to create socket.socket(%r, %r, %r)",
                            af, socktype, proto, exc_info=True,
                        )
                    continue
                sockets.append(sock)
                if reuse_address:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                if reuse_port:
                    _set_reuseport(sock)
                if keep_alive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                if socket.has_ipv6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    # One socket per family: Linux would otherwise make this IPv6 socket take
                    # IPv4 connections too, and the IPv4 socket's bind would fail.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                try:
                    sock.bind(sa)
                except OSError as err:
                    msg = (
                        f"error while attempting to bind on address {sa!r}: "
                        f"{_bind_error_text(err)}"
                    )
                    if _PY313 and err.errno == errno.EADDRNOTAVAIL:
                        # asyncio 3.13: assume the family is not enabled here, skip it.
                        sockets.pop()
                        sock.close()
                        if debug:
                            logger.warning(msg)
                        continue
                    raise OSError(err.errno, msg) from None
            if _PY313 and not sockets:
                raise OSError(
                    f"could not bind on any address out of {[info[4] for info in infos]!r}"
                )
            completed = True
        finally:
            if not completed:
                for sock in sockets:
                    sock.close()
        return sockets

    # -- the accept path ---------------------------------------------------------------------

    def _start_serving(
        self, protocol_factory: Any, sock: socket.socket, sslcontext: Any = None,
        server: Server | None = None, backlog: int = 100,
        ssl_handshake_timeout: float | None = None, ssl_shutdown_timeout: float | None = None,
    ) -> None:
        """Accept connections on the listening ``sock`` whenever it is readable."""
        self._add_reader(
            sock.fileno(), self._accept_connection, protocol_factory, sock, sslcontext,
            server, backlog, ssl_handshake_timeout, ssl_shutdown_timeout,
        )

    def _resume_serving(
        self, protocol_factory: Any, sock: socket.socket, sslcontext: Any,
        server: Server | None, backlog: int, ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
    ) -> None:
        """Timer after a resource shortage: accept again, unless the server was closed."""
        if sock.fileno() == -1 or (server is not None and not server.is_serving()):
            return
        self._start_serving(
            protocol_factory, sock, sslcontext, server, backlog, ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    def _stop_serving(self, sock: socket.socket) -> None:
        """Stop accepting on ``sock`` and close it (and, asyncio 3.13, remove its file)."""
        registry = self.__dict__.get("_unix_server_sockets")
        cleanup = None
        if registry and sock in registry:
            cleanup = (sock.getsockname(), registry.pop(sock))
        self._remove_reader(sock.fileno())
        sock.close()
        if cleanup is not None:
            path, inode = cleanup
            try:
                # Only the file this server made: another process may have replaced it.
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    def _accept_connection(
        self, protocol_factory: Any, sock: socket.socket, sslcontext: Any,
        server: Server | None, backlog: int, ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
    ) -> None:
        """Reader callback of a listening socket: accept up to ``backlog`` connections.

        One readiness report may stand for many pending connections; accepting a batch
        per report (asyncio: bpo-27906) keeps a burst of clients from waiting one loop
        iteration each.
        """
        # A plain socket.socket is accepted through its C method, with the listener's
        # family, type and protocol read once as ints: socket.accept() itself converts
        # family and type into enums for every connection (with the TCP_NODELAY check, a
        # fifth of ferroloop's per-connection instructions before this, design.md §5.23).
        # Subclasses keep their own accept().
        fast = type(sock) is socket.socket
        if fast:
            family, type_, proto = _socket_family(sock), _socket_type(sock), sock.proto
        debug = self.get_debug()
        for _ in range(backlog):
            if sock.fileno() == -1:
                return  # a protocol factory closed the server meanwhile
            try:
                if fast:
                    fd, addr = sock._accept()
                    conn = socket.socket(family, type_, proto, fileno=fd)
                else:
                    conn, addr = sock.accept()
                if debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError):
                return  # nothing more pending
            except OSError as exc:
                if exc.errno in _ACCEPT_SKIP_ERRNOS:
                    continue
                if exc.errno in _ACCEPT_RESOURCE_ERRNOS:
                    # Nowhere to send the error but the handler; the socket stays readable,
                    # so stop watching it for a while instead of spinning on it.
                    self.call_exception_handler(
                        {
                            "message": "socket.accept() out of system resource",
                            "exception": exc,
                            "socket": trsock.TransportSocket(sock),
                        }
                    )
                    self._remove_reader(sock.fileno())
                    self.call_later(
                        _ACCEPT_RETRY_DELAY, self._resume_serving, protocol_factory, sock,
                        sslcontext, server, backlog, ssl_handshake_timeout,
                        ssl_shutdown_timeout,
                    )
                    return
                raise  # the loop reports it as an exception in this callback
            self._accept_connection2(
                protocol_factory, conn, {"peername": addr}, sslcontext, server,
                ssl_handshake_timeout, ssl_shutdown_timeout,
            )

    def _accept_connection2(
        self, protocol_factory: Any, conn: socket.socket, extra: dict, sslcontext: Any,
        server: Server | None, ssl_handshake_timeout: float | None,
        ssl_shutdown_timeout: float | None,
    ) -> None:
        """Give the accepted ``conn`` a protocol and a transport.

        The transport schedules ``connection_made`` (and only then starts reading) and
        attaches itself to ``server``. Failures are reported in debug mode only, as asyncio
        reports them; the connection is closed.
        """
        protocol = transport = waiter = None
        try:
            protocol = protocol_factory()
            if sslcontext:
                # The socket transport under the TLS one attaches itself to the server, as
                # asyncio's does (close_clients/abort_clients act on it). The waiter gets
                # the handshake's outcome; a failed handshake closes the connection.
                waiter = self.create_future()
                transport, _ = make_ssl_transport(
                    self, conn, protocol, sslcontext, waiter, server_side=True, extra=extra,
                    server=server, ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                )
            else:
                # No waiter: a plain transport's setup cannot fail after this point (asyncio
                # awaits one that only ever gets None).
                transport = make_socket_transport(self, conn, protocol, extra=extra, server=server)
        except (SystemExit, KeyboardInterrupt):
            conn.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - reported, the connection dropped
            if transport is not None:
                transport.close()
            else:
                conn.close()
            self._report_accept_error(exc, protocol, transport)
            return
        if waiter is not None:
            waiter.add_done_callback(
                functools.partial(self._accepted_transport_ready, transport, protocol)
            )

    def _accepted_transport_ready(
        self, transport: Any, protocol: Any, waiter: asyncio.Future
    ) -> None:
        """Done-callback of an accepted transport's waiter: close it if setup failed."""
        if waiter.cancelled():
            transport.close()
            return
        exc = waiter.exception()
        if exc is not None:
            transport.close()
            self._report_accept_error(exc, protocol, transport)

    def _report_accept_error(self, exc: BaseException, protocol: Any, transport: Any) -> None:
        if not self.get_debug():
            return
        context: dict[str, Any] = {
            "message": "Error on transport creation for incoming connection",
            "exception": exc,
        }
        if protocol is not None:
            context["protocol"] = protocol
        if transport is not None:
            context["transport"] = transport
        self.call_exception_handler(context)

    # -- connect_accepted_socket -------------------------------------------------------------

    async def connect_accepted_socket(
        self, protocol_factory: Any, sock: socket.socket, *, ssl: Any = None,
        ssl_handshake_timeout: float | None = None, ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Wrap a connection accepted elsewhere (server side): ``(transport, protocol)``."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        _check_ssl_socket(sock)
        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, "", server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            logger.debug(
                "%r handled: (%r, %r)", transport.get_extra_info("socket"), transport, protocol
            )
        return transport, protocol

    # -- unix sockets ------------------------------------------------------------------------

    async def create_unix_connection(
        self, protocol_factory: Any, path: Any = None, *, ssl: Any = None, sock: Any = None,
        server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Connect to a unix stream socket at ``path`` (a file or '\\0abstract' name)."""
        assert server_hostname is None or isinstance(server_hostname, str)  # as asyncio
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            if ssl_handshake_timeout is not None:
                raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
            if ssl_shutdown_timeout is not None:
                raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")

        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
            own_sock = True
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
            own_sock = False

        return await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname, own_sock=own_sock,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    if _PY313:

        async def create_unix_server(
            self, protocol_factory: Any, path: Any = None, *, sock: Any = None,
            backlog: int = 100, ssl: Any = None, ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None, start_serving: bool = True,
            cleanup_socket: bool = True,
        ) -> Server:
            """Listen on a unix stream socket at ``path`` (a stale socket file there is
            removed first); with ``cleanup_socket``, ``close()`` removes the file."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving, cleanup_socket,
            )

    else:

        async def create_unix_server(  # type: ignore[misc]
            self, protocol_factory: Any, path: Any = None, *, sock: Any = None,
            backlog: int = 100, ssl: Any = None, ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None, start_serving: bool = True,
        ) -> Server:
            """Listen on a unix stream socket at ``path`` (a stale socket file there is
            removed first)."""
            return await self._create_unix_server(
                protocol_factory, path, sock, backlog, ssl, ssl_handshake_timeout,
                ssl_shutdown_timeout, start_serving, False,
            )

    async def _create_unix_server(
        self, protocol_factory: Any, path: Any, sock: Any, backlog: int, ssl: Any,
        ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None,
        start_serving: bool, cleanup_socket: bool,
    ) -> Server:
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")

        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if _is_filesystem_path(path):
                # A socket file left by a server that is gone would make bind fail; remove
                # it, but nothing that is not a socket.
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    # The directory may allow creating the socket but not checking it.
                    logger.error(
                        "Unable to check or remove stale UNIX socket %r: %r", path, err
                    )
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")

        if cleanup_socket:
            bound = sock.getsockname()
            if _is_filesystem_path(bound):
                try:
                    self._unix_server_registry()[sock] = os.stat(bound).st_ino
                except FileNotFoundError:
                    pass

        sock.setblocking(False)
        server = Server(
            self, [sock], protocol_factory, ssl, backlog, ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        await self._maybe_start_serving(server, start_serving)
        return server

    def _unix_server_registry(self) -> dict[socket.socket, int]:
        """Listening unix sockets whose file ``_stop_serving`` removes: socket -> inode."""
        registry = self.__dict__.get("_unix_server_sockets")
        if registry is None:
            registry = {}
            self._unix_server_sockets = registry
        return registry
