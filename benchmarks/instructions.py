"""User-space instructions retired by the calling thread, from the CPU's own counter.

Why count instructions: on this shared 2-core VM, time per operation moves by tens of percent
with what else runs, and the kernel's share of a socket operation switches between regimes
(README). The number of instructions a thread executes in user space for the same work does
not: it is the figure to compare for code that runs once per connection or per record, where
the difference between loops is the loop's own code. It says nothing about the kernel's
share (system calls are counted as the user-space instructions around them only).

``perf_event_open`` on this thread, user space only (``exclude_kernel``, ``exclude_hv``). The
kernel must allow it (``/proc/sys/kernel/perf_event_paranoid`` ≤ 2, the default, is enough
for one's own thread).
"""

from __future__ import annotations

import ctypes
import os
import time

__all__ = ["InstructionCounter"]

_PERF_EVENT_OPEN_X86_64 = 298
_PERF_TYPE_HARDWARE = 0
_PERF_COUNT_HW_INSTRUCTIONS = 1
_INHERIT = 1 << 1
_EXCLUDE_KERNEL_AND_HV = (1 << 5) | (1 << 6)


class _PerfEventAttr(ctypes.Structure):
    # The leading fields of struct perf_event_attr; the rest stays zero.
    _fields_ = [
        ("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64), ("rest", ctypes.c_uint64 * 8),
    ]


class InstructionCounter:
    """``now()``: instructions this thread has executed in user space since the counter
    was opened. With ``inherit=True``, threads this thread starts afterwards count too, but
    only once they have exited (the kernel adds a thread's count to its parent's at exit):
    ``wait_for_threads`` waits for that."""

    def __init__(self, inherit: bool = False) -> None:
        attr = _PerfEventAttr()
        attr.type = _PERF_TYPE_HARDWARE
        attr.size = ctypes.sizeof(_PerfEventAttr)
        attr.config = _PERF_COUNT_HW_INSTRUCTIONS
        attr.flags = _EXCLUDE_KERNEL_AND_HV | (_INHERIT if inherit else 0)
        libc = ctypes.CDLL(None, use_errno=True)
        # pid 0, cpu -1: this thread, on whichever CPU it runs.
        fd = libc.syscall(_PERF_EVENT_OPEN_X86_64, ctypes.byref(attr), 0, -1, -1, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "perf_event_open failed")
        self.fd = fd

    def now(self) -> int:
        return int.from_bytes(os.read(self.fd, 8), "little")

    @staticmethod
    def threads() -> set[str]:
        """The ids of this process's threads now (``/proc/self/task``). One listing can miss a
        thread when another exits while it is read (the directory is walked by position), so
        it is read until two listings agree."""
        listing = set(os.listdir("/proc/self/task"))
        for _ in range(100):
            again = set(os.listdir("/proc/self/task"))
            if again == listing:
                break
            listing = again
        return listing

    @classmethod
    def wait_for_threads(cls, before: set[str], timeout: float = 5.0) -> None:
        """Wait until every thread not in ``before`` has exited, so that an inheriting
        counter includes them. A thread's ``join()`` returns slightly before the OS thread is
        gone; its ``/proc/self/task`` entry goes after the kernel has added its count."""
        deadline = time.monotonic() + timeout
        while cls.threads() - before:
            if time.monotonic() > deadline:
                left = sorted(cls.threads() - before)
                names = [cls._thread_name(tid) for tid in left]
                raise TimeoutError(f"threads {', '.join(names)} did not exit")
            time.sleep(0.001)

    @staticmethod
    def _thread_name(tid: str) -> str:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as comm:
                return f"{tid} ({comm.read().strip()})"
        except OSError:
            return tid

    def close(self) -> None:
        os.close(self.fd)
