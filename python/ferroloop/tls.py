"""TLS: asyncio's own memory-BIO ``SSLProtocol`` over ferroloop's native socket transport.

Why this file exists: TLS is set up once per connection, so by the layering rule the wiring
is Python, and it is asyncio's wiring, line for line, so that a reader can hold it next to
``asyncio/selector_events.py`` (``_make_ssl_transport``) and ``asyncio/base_events.py``
(``start_tls``). The record layer is ``asyncio.sslproto.SSLProtocol`` of the running
interpreter: the user's ``ssl.SSLContext`` decides protocols, certificates, verification,
ALPN and SNI, ``ssl.SSLObject`` does the cryptography, and errors, timeouts and shutdown are
asyncio's. Nothing in ``ssl`` or ``asyncio`` is patched.

``SSLProtocol`` is a ``BufferedProtocol``: the native transport reads the ciphertext
straight into its buffer (``get_buffer``) and sends what it writes in the loop's end-of-batch
``sendmsg`` (design.md §5.22), so a TLS record and the application's next record written in
the same batch of callbacks leave in one system call. Why asyncio's protocol rather than a
native record layer, with figures: design.md §5.24.
"""

from __future__ import annotations

from asyncio import sslproto
from typing import Any

from .transports import make_socket_transport

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None  # type: ignore[assignment]

__all__ = ["make_ssl_transport", "start_tls"]


def make_ssl_transport(
    loop: Any, rawsock: Any, protocol: Any, sslcontext: Any, waiter: Any = None, *,
    server_side: bool = False, server_hostname: str | None = None, extra: Any = None,
    server: Any = None, ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> tuple[Any, Any]:
    """asyncio's ``_make_ssl_transport``: ``SSLProtocol`` on a socket transport.

    Returns ``(app_transport, raw_transport)``: the ``_SSLProtocolTransport`` the
    application's ``protocol`` sees, and the socket transport under it (which a server
    tracks, as asyncio's server tracks its socket transports). ``waiter`` gets its result
    (or the handshake's exception) from ``SSLProtocol``; ``None`` timeouts mean asyncio's
    defaults. ``sslcontext`` ``None`` means asyncio's default context for the side.
    """
    ssl_protocol = sslproto.SSLProtocol(
        loop, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    raw = make_socket_transport(loop, rawsock, ssl_protocol, extra=extra, server=server)
    return ssl_protocol._app_transport, raw


async def start_tls(
    loop: Any, transport: Any, protocol: Any, sslcontext: Any, *, server_side: bool = False,
    server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> Any:
    """asyncio's ``BaseEventLoop.start_tls``: upgrade ``transport`` to TLS in place.

    Reading is paused so that no plaintext-era data reaches ``SSLProtocol`` before its
    ``connection_made``; the transport's protocol becomes the ``SSLProtocol``, which starts
    the handshake; the returned transport is the one ``protocol`` uses from now on. Works on
    any transport asyncio accepts (``_start_tls_compatible``): ferroloop's socket transport,
    and a TLS transport itself (TLS over TLS, e.g. through an HTTPS proxy).
    """
    if ssl is None:  # pragma: no cover - Python built without ssl
        raise RuntimeError("Python ssl module is not available")
    if not isinstance(sslcontext, ssl.SSLContext):
        raise TypeError(
            f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
        )
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")

    waiter = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
        call_connection_made=False,
    )
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    conmade_cb = loop.call_soon(ssl_protocol.connection_made, transport)
    resume_cb = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        conmade_cb.cancel()
        resume_cb.cancel()
        raise
    return ssl_protocol._app_transport
