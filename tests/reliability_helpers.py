"""Helpers of the reliability suite (tests/test_reliability.py, tests/test_load.py): open-fd and
RSS measurement from /proc, and the size switch between the short runs (normal suite) and the
long ones (``FERROLOOP_LONG=1``, see scripts/test-long.sh)."""

from __future__ import annotations

import gc
import os
import resource

LONG = os.environ.get("FERROLOOP_LONG", "") not in ("", "0")

PAGE = os.sysconf("SC_PAGE_SIZE")


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what each refers to (the listing's own is left out)."""
    out = {}
    names = os.listdir("/proc/self/fd")
    for name in names:
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the directory fd of the listing itself, closed by now
    return out


def fd_leaks(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open in ``before`` (after a collection)."""
    gc.collect()
    now = open_fds()
    return {fd: what for fd, what in now.items() if before.get(fd) != what}


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
