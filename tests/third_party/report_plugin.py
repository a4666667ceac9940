"""pytest plugin of tests/third_party/run.py: one JSON line per finished test, written as it
happens (a crash of the interpreter leaves every earlier result on disk), plus a ``start``
line before each test so that the runner can name the test a crash happened in.

Loaded with ``-p report_plugin``. FERROLOOP_TP_REPORT is the file to append to;
FERROLOOP_TP_DESELECT, if set, names a file of node ids to leave out (the tests already run
before a crash, and the crashing one).
"""

from __future__ import annotations

import json
import os

import pytest

_REPORT = os.environ.get("FERROLOOP_TP_REPORT")
_outcomes: dict[str, dict] = {}


def _write(record: dict) -> None:
    if _REPORT is None:
        return
    with open(_REPORT, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = os.environ.get("FERROLOOP_TP_DESELECT")
    if not path:
        return
    with open(path, encoding="utf-8") as f:
        drop = {line.strip() for line in f if line.strip()}
    kept = [item for item in items if item.nodeid not in drop]
    deselected = [item for item in items if item.nodeid in drop]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _write({"event": "start", "id": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    state = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
    if report.failed:
        if state["outcome"] != "failed":
            state["outcome"] = "failed"
            text = report.longreprtext or ""
            state["message"] = f"{report.when}: " + text[-3000:]
    elif report.skipped and state["outcome"] == "passed":
        if hasattr(report, "wasxfail"):
            state["outcome"] = "xfailed"
        else:
            state["outcome"] = "skipped"
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                state["message"] = str(longrepr[2])
    elif report.passed and hasattr(report, "wasxfail") and report.when == "call":
        state["outcome"] = "xpassed"
    if report.when == "teardown":
        _write({"event": "result", "id": report.nodeid, **_outcomes.pop(report.nodeid)})
