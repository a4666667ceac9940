"""The TLS record layer alone, server side, without sockets or a loop's I/O: how much of a TLS
echo is the record layer, and what a native one could save (docs/design.md §5.24).

Per request: one client record goes in, is decrypted, the application protocol echoes it
(``data_received`` → ``write``), the answer is encrypted and one record comes out. Variants:

- ``floor``: only the ``ssl.SSLObject``/``MemoryBIO`` calls any record layer driving the
  user's ``SSLContext`` must make (``incoming.write``, ``read`` into a buffer, the ``bytes``
  the protocol gets, ``write``, ``outgoing.read``), from a Python loop;
- ``asyncio``: asyncio's ``SSLProtocol`` (what ferroloop runs, and asyncio);
- ``uvloop``: uvloop's ``SSLProtocol``, the same algorithm compiled with Cython;
- ``asyncio, no WantRead``: asyncio's ``SSLProtocol`` with a ``_do_read__copied`` that stops
  reading when nothing is pending instead of catching ``SSLWantReadError`` (measured, not used).

    .venv/bin/python benchmarks/tls_record_layer.py [SIZE ...]     # default 1024 16384

Median of 5 runs of 20,000 requests each, variants interleaved. Certificates from trustme.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import sys
import time
from asyncio import sslproto

import trustme

N = 20_000
RUNS = 5

_ca = trustme.CA()
_cert = _ca.issue_cert("localhost")
SCTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
_cert.configure_cert(SCTX)
CCTX = ssl.create_default_context()
_ca.configure_trust(CCTX)


def client() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return CCTX.wrap_bio(incoming, outgoing, server_hostname="localhost"), incoming, outgoing


def client_records(c: ssl.SSLObject, outgoing: ssl.MemoryBIO, size: int) -> list[bytes]:
    try:
        c.read(1)  # take in the server's session tickets
    except ssl.SSLWantReadError:
        pass
    payload = b"x" * size
    records = []
    for _ in range(N):
        c.write(payload)
        records.append(outgoing.read())
    return records


def floor(size: int) -> float:
    c, ci, co = client()
    si, so = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = SCTX.wrap_bio(si, so, server_side=True)
    for _ in range(10):
        for obj in (c, s):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        si.write(co.read())
        ci.write(so.read())
    records = client_records(c, co, size)
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    t0 = time.perf_counter()
    for record in records:
        si.write(record)
        n = s.read(len(buf), buf)
        s.write(bytes(view[:n]))
        so.read()
    return (time.perf_counter() - t0) / N * 1e6


class _Sink(asyncio.Transport):
    def __init__(self, sink) -> None:
        super().__init__()
        self.sink = sink

    def write(self, data) -> None:
        self.sink(data)

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class _Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data) -> None:
        self.transport.write(data)


class NoWantRead(sslproto.SSLProtocol):
    def _do_read__copied(self):  # asyncio 3.11-3.13's, without the exception per read
        sslobj, incoming = self._sslobj, self._incoming
        chunks = []
        chunk = b"1"
        try:
            while True:
                chunk = sslobj.read(self.max_size)
                if not chunk:
                    break
                chunks.append(chunk)
                if not incoming.pending and not sslobj.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        if chunks:
            self._app_protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if not chunk:
            self._call_eof_received()
            self._start_shutdown()


async def protocol(cls, size: int) -> float:
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    proto = cls(loop, _Echo(), SCTX, waiter, server_side=True)
    sent: list[bytes] = []
    transport = _Sink(sent.append)
    proto.connection_made(transport)
    c, ci, co = client()
    for _ in range(10):
        try:
            c.do_handshake()
        except ssl.SSLWantReadError:
            pass
        data = co.read()
        if data:
            buf = proto.get_buffer(256 * 1024)
            buf[: len(data)] = data
            proto.buffer_updated(len(data))
        for d in sent:
            ci.write(d)
        sent.clear()
        await asyncio.sleep(0)
    await waiter
    records = client_records(c, co, size)
    transport.sink = lambda data: None
    get_buffer, buffer_updated = proto.get_buffer, proto.buffer_updated
    t0 = time.perf_counter()
    for record in records:
        buf = get_buffer(256 * 1024)
        n = len(record)
        buf[:n] = record
        buffer_updated(n)
    return (time.perf_counter() - t0) / N * 1e6


def main() -> None:
    import uvloop
    import uvloop.loop

    sizes = [int(a) for a in sys.argv[1:]] or [1024, 16384]
    for size in sizes:
        results: dict[str, list[float]] = {
            "floor": [], "asyncio": [], "uvloop": [], "asyncio, no WantRead": []
        }
        for _ in range(RUNS):
            results["floor"].append(floor(size))
            results["asyncio"].append(asyncio.run(protocol(sslproto.SSLProtocol, size)))
            loop = uvloop.new_event_loop()
            try:
                results["uvloop"].append(
                    loop.run_until_complete(protocol(uvloop.loop.SSLProtocol, size))
                )
            finally:
                loop.close()
            results["asyncio, no WantRead"].append(asyncio.run(protocol(NoWantRead, size)))
        print(f"{size} B, µs per request (median of {RUNS}): " + ", ".join(
            f"{name} {statistics.median(values):.2f}" for name, values in results.items()
        ))


if __name__ == "__main__":
    main()
