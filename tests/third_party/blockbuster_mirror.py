"""pytest plugin of tests/third_party/run.py: blockbuster's allow-list, mirrored onto ferroloop.

anyio's and aiohttp's suites use blockbuster (an autouse fixture) to fail on blocking calls made
while a loop runs. It allows a blocking call only inside functions it names by file and name,
and the standard-library entries name asyncio's own files: ``os.read`` may block inside
``asyncio/base_events.py:subprocess_exec`` (where ``subprocess.Popen`` waits for the exec),
``os.stat``/``os.unlink`` inside ``asyncio/unix_events.py:create_unix_server`` and
``_stop_serving``, ``os.sendfile`` inside ``asyncio/base_events.py:sendfile``, and so on.
ferroloop makes the same calls from functions of the same names in its own modules. In the
ferroloop run (FERROLOOP_TP_LOOP=ferroloop) every such asyncio entry is mirrored onto each of
ferroloop's modules, with the same function names; nothing else is allowed. Loaded with
``-p blockbuster_mirror``.
"""

from __future__ import annotations

import os
from typing import Any


def _mirror_asyncio_allowances() -> None:
    try:
        import blockbuster.blockbuster as bbmod
    except ImportError:
        return
    import ferroloop

    modules = sorted(
        f"ferroloop/{name}"
        for name in os.listdir(os.path.dirname(ferroloop.__file__))
        if name.endswith(".py")
    )
    original_init = bbmod.BlockBuster.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        for function in self.functions.values():
            for filename, names in list(function.can_block_functions):
                if filename.startswith("asyncio/"):
                    for module in modules:
                        function.can_block_in(module, set(names))

    bbmod.BlockBuster.__init__ = init


if os.environ.get("FERROLOOP_TP_LOOP") == "ferroloop":
    _mirror_asyncio_allowances()
