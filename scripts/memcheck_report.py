"""Reads valgrind memcheck logs (scripts/memcheck.sh) and sorts every error record:

* ours: one of its innermost frames (``TOP``) is ferroloop's native module or Rust code;
* the interpreter's: CPython and libc frames only. An optimised CPython has known memcheck
  false positives (vectorised string compares reading past the end, uninitialised-value
  reports in object headers and small-int checks), which a stock-asyncio run and even
  ``python -c 'print(1)'`` show too;
* under our run loop: CPython frames on top and ferroloop's frames only further down (the
  loop ran a Python callback, and CPython reported something in it). Such a record is the
  interpreter's if the same error in the same function also occurs without any ferroloop
  frame (in these logs, or in the ``--baseline`` logs of a stock-asyncio run), and ours
  otherwise.

Prints a summary and exits 1 if any record is ours.

    python scripts/memcheck_report.py [--baseline LOG...] -- LOG...
"""

from __future__ import annotations

import re
import sys
from collections import Counter

OURS = re.compile(r"_native\.cpython|ferroloop|crates/|pyo3|/rustc/|\.cargo/registry")
TOP = 6  # innermost frames that decide whether an error is in our code
HEAD = re.compile(r"^==\d+== (\S.*)$")
FRAME = re.compile(r"^==\d+==\s+(at|by) ")


def records(path: str):
    """Each error record: (headline, frames)."""
    head, frames = None, []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = HEAD.match(line)
            if m and not FRAME.match(line):
                text = m.group(1)
                if head is not None and frames:
                    yield head, frames
                head, frames = text, []
            elif FRAME.match(line) and head is not None:
                frames.append(line.split("== ", 1)[1].strip())
            elif re.match(r"^==\d+== ?$", line):
                if head is not None and frames:
                    yield head, frames
                head, frames = None, []
    if head is not None and frames:
        yield head, frames


def signature(head: str, frames: list[str]) -> tuple[str, str]:
    """The error kind and the innermost function (without file and line)."""
    fn = frames[0].split(":", 1)[-1].strip().split(" (")[0] if frames else "?"
    return head, fn


def main(argv: list[str]) -> int:
    baseline, paths = [], argv
    if argv and argv[0] == "--baseline":
        cut = argv.index("--")
        baseline, paths = argv[1:cut], argv[cut + 1:]
    noise = set()
    for path in baseline:
        for head, frames in records(path):
            if not OURS.search("\n".join(frames)):
                noise.add(signature(head, frames))
    ours, under, theirs = [], Counter(), Counter()
    deep = []
    summaries = []
    for path in paths:
        with open(path, errors="replace") as f:
            summaries += [line.strip() for line in f if "ERROR SUMMARY" in line
                          or "definitely lost:" in line]
        for head, frames in records(path):
            if any(OURS.search(fr) for fr in frames[:TOP]):
                ours.append((path, head, frames))
            elif OURS.search("\n".join(frames)):
                deep.append((path, head, frames))
            else:
                noise.add(signature(head, frames))
                theirs[" @ ".join(signature(head, frames))] += 1
    for path, head, frames in deep:
        if signature(head, frames) in noise:
            under[" @ ".join(signature(head, frames))] += 1
        else:
            ours.append((path, head, frames))
    for line in summaries:
        print("valgrind:", line)
    print(f"error records in CPython/libc frames only: {sum(theirs.values())}")
    for what, n in theirs.most_common(12):
        print(f"  {n:5d}  {what}")
    print(f"CPython errors under ferroloop's run loop, also seen without it: {sum(under.values())}")
    for what, n in under.most_common(12):
        print(f"  {n:5d}  {what}")
    print(f"error records that are ferroloop's: {len(ours)}")
    for path, head, frames in ours[:20]:
        print(f"--- {path}: {head}")
        for fr in frames[:25]:
            print("     ", fr)
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
