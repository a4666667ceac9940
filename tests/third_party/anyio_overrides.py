"""Fixture overrides for anyio's own test suite, run by scripts/test-third-party.sh.

The script appends one import line to the unpacked sdist's tests/conftest.py, so these
definitions replace anyio's ``anyio_backend`` and ``asyncio_event_loop`` fixtures. Which loop
they use comes from FERROLOOP_TP_LOOP: ``asyncio`` (stock asyncio, the oracle) or ``ferroloop``
(``loop_factory=ferroloop.new_event_loop``, the way anyio users adopt it). Both runs keep
anyio's own options (``debug=True``) and the param id ``asyncio``, so the test ids of the two
runs are the same and can be compared one to one. uvloop and trio are left out.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator
from typing import Any

import pytest

LOOP = os.environ.get("FERROLOOP_TP_LOOP", "asyncio")
if LOOP not in ("asyncio", "ferroloop"):
    raise RuntimeError(f"FERROLOOP_TP_LOOP must be 'asyncio' or 'ferroloop', not {LOOP!r}")


def _new_loop() -> asyncio.AbstractEventLoop:
    if LOOP == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    return asyncio.new_event_loop()


def _options() -> dict[str, Any]:
    options: dict[str, Any] = {"debug": True}
    if LOOP == "ferroloop":
        import ferroloop

        options["loop_factory"] = ferroloop.new_event_loop
    return options


@pytest.fixture(params=[pytest.param(("asyncio", _options()), id="asyncio")])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param


@pytest.fixture
def asyncio_event_loop() -> Generator[asyncio.AbstractEventLoop, None, None]:
    loop = _new_loop()
    yield loop
    loop.close()


# ------------------------------------------------------------------ IPv6 "localhost"
#
# Many of anyio's socket tests bind or resolve "localhost" for their ipv6 variant. Where
# "localhost" has no IPv6 address (a /etc/hosts without "::1 localhost", as in some
# containers) they fail on every loop, and the IPv6 sockets their fixtures leave unclosed are
# reported by whichever later test happens to run the garbage collector, on either loop. Both
# runs skip the ipv6 variants there, so the comparison is not blurred by that noise.


def _localhost_has_ipv6() -> bool:
    import socket

    try:
        return bool(socket.getaddrinfo("localhost", 0, socket.AF_INET6, socket.SOCK_STREAM))
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _localhost_has_ipv6():
        return
    skip = pytest.mark.skip(reason='"localhost" has no IPv6 address on this machine')
    for item in items:
        if "ipv6" in item.name:
            item.add_marker(skip)
