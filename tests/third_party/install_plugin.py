"""pytest plugin of tests/third_party/run.py for suites that make their loops with
``asyncio.new_event_loop()`` (aiohttp's ``loop`` fixture): in the ferroloop run
(FERROLOOP_TP_LOOP=ferroloop) it calls ``ferroloop.install()`` when loaded, the documented way
to make ``asyncio.new_event_loop()`` and ``asyncio.run()`` use ferroloop. Test ids stay the
same in both runs. Loaded with ``-p install_plugin``.
"""

from __future__ import annotations

import os

if os.environ.get("FERROLOOP_TP_LOOP") == "ferroloop":
    import ferroloop

    ferroloop.install()
