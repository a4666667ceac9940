"""Reads valgrind memcheck logs (scripts/memcheck.sh) and sorts every error record into ours
(a frame in ferroloop's native module or Rust code) or the interpreter's (frames in CPython
and libc only, mostly known false positives of an optimised CPython under memcheck, such as
reads past the end of strings by vectorised compares). Prints a summary and exits 1 if any
record is ours.

    python scripts/memcheck_report.py LOG...
"""

from __future__ import annotations

import re
import sys
from collections import Counter

OURS = re.compile(r"_native\.cpython|ferroloop|crates/|pyo3|/rustc/|\.cargo/registry")
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


def main(paths: list[str]) -> int:
    ours, theirs = [], Counter()
    summaries = []
    for path in paths:
        with open(path, errors="replace") as f:
            summaries += [line.strip() for line in f if "ERROR SUMMARY" in line
                          or "definitely lost:" in line]
        for head, frames in records(path):
            if OURS.search("\n".join(frames)):
                ours.append((path, head, frames))
            else:
                top = frames[0].split(":", 1)[-1].strip() if frames else "?"
                theirs[f"{head} @ {top}"] += 1
    for line in summaries:
        print("valgrind:", line)
    print(f"error records in CPython/libc frames only: {sum(theirs.values())}")
    for what, n in theirs.most_common(12):
        print(f"  {n:5d}  {what}")
    print(f"error records with a ferroloop frame: {len(ours)}")
    for path, head, frames in ours[:20]:
        print(f"--- {path}: {head}")
        for fr in frames[:25]:
            print("     ", fr)
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
