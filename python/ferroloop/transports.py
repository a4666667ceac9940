"""Stream transports over sockets (asyncio's ``_SelectorSocketTransport``).

SCAFFOLD, to be replaced by the native transport of issue #5: for now
``make_socket_transport`` builds asyncio's own selector transport on top of ferroloop's
native fd watchers (``_add_reader``/``_add_writer``/``_transports``), so that connection
setup, servers and streams can be built and tested against the real transport contract
while the native transport is written. Nothing outside this module may depend on the
scaffold's internals: callers use only the constructor below and the public
``asyncio.Transport`` API.
"""

from __future__ import annotations

from asyncio import selector_events
from typing import Any

__all__ = ["make_socket_transport"]


def make_socket_transport(
    loop: Any, sock: Any, protocol: Any, waiter: Any = None, *, extra: Any = None,
    server: Any = None,
) -> Any:
    """A transport for the connected stream socket ``sock`` driving ``protocol``.

    As asyncio's: ``connection_made`` is scheduled with ``call_soon``, reading starts after
    it, and ``waiter`` (a future) gets ``None`` once the protocol has the transport.
    ``server`` is the ``Server`` the connection belongs to (it is attached/detached).
    """
    return selector_events._SelectorSocketTransport(loop, sock, protocol, waiter, extra, server)
