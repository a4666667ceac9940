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
  reading when nothing is pending instead of catching ``SSLWantReadError`` (measured, not used);
- ``ferroloop``: asyncio's ``SSLProtocol`` with ferroloop's native data path installed
  (``ferroloop.tls.install_fast_path``), what ferroloop runs.

    .venv/bin/python benchmarks/tls_record_layer.py [--instructions] [SIZE ...]   # default 1024 16384

Median of 5 runs of 20,000 requests each, variants interleaved. Certificates from trustme.
With ``--instructions``, each figure is user-space instructions per request instead, counted
by the CPU around the timed loop alone (``perf_event_open``, this process only): unlike time,
it does not depend on what else the machine is doing.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import sys
import time
from asyncio import sslproto

import trustme
from ferroloop.tls import NATIVE_TLS, install_fast_path
from instructions import InstructionCounter

N = 20_000
RUNS = 5


class _Counter:
    """User-space instructions retired by this thread (``instructions.py``), or wall time."""

    def __init__(self, instructions: bool) -> None:
        self._counter = InstructionCounter() if instructions else None

    def now(self) -> float:
        return self._counter.now() if self._counter is not None else time.perf_counter()

    def per_request(self, start: float) -> float:
        spent = self.now() - start
        return spent / N if self._counter is not None else spent / N * 1e6


COUNTER = _Counter(False)

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
    t0 = COUNTER.now()
    for record in records:
        si.write(record)
        n = s.read(len(buf), buf)
        s.write(bytes(view[:n]))
        so.read()
    return COUNTER.per_request(t0)


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


def native(loop, app, sslcontext, waiter, server_side):
    proto = sslproto.SSLProtocol(loop, app, sslcontext, waiter, server_side)
    if not install_fast_path(proto):
        raise RuntimeError("ferroloop's native TLS path is not available here")
    return proto


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
    t0 = COUNTER.now()
    for record in records:
        buf = get_buffer(256 * 1024)
        n = len(record)
        buf[:n] = record
        buffer_updated(n)
    return COUNTER.per_request(t0)


def main() -> None:
    global COUNTER
    import uvloop
    import uvloop.loop

    args = sys.argv[1:]
    instructions = "--instructions" in args
    COUNTER = _Counter(instructions)
    unit = "instructions" if instructions else "µs"
    sizes = [int(a) for a in args if a != "--instructions"] or [1024, 16384]
    for size in sizes:
        results: dict[str, list[float]] = {
            "floor": [], "asyncio": [], "uvloop": [], "asyncio, no WantRead": [],
            "ferroloop": [],
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
            if NATIVE_TLS:
                results["ferroloop"].append(asyncio.run(protocol(native, size)))
        digits = 0 if instructions else 2
        print(f"{size} B, {unit} per request (median of {RUNS}): " + ", ".join(
            f"{name} {statistics.median(values):.{digits}f}"
            for name, values in results.items() if values
        ))


if __name__ == "__main__":
    main()
