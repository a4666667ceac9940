"""Which event loops the benchmarks can compare, and what machine they ran on.

Every benchmark script (through harness.py) and main_job.py compare the same loops side by side
and print the same header, so finding the loops and describing the machine lives here, once. A loop
whose package is missing or broken is reported with the reason and skipped: a half-built ferroloop
must not stop the other loops from being measured.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: Every loop the benchmarks know, in the column order of their tables.
KNOWN_LOOPS: tuple[str, ...] = ("asyncio", "uvloop", "rloop", "ferroloop")

#: ferroloop with an optional feature switched on, measured only when named in --loops (to
#: price the feature against plain "ferroloop" in the same interleaved run).
VARIANT_LOOPS: dict[str, str] = {
    "ferroloop-watched": "ferroloop with the blocking detector on (threshold 0.1 s, issue 11)",
}


@dataclass(frozen=True)
class LoopSpec:
    """One candidate loop: a factory when it is usable, otherwise the reason it is not."""

    name: str
    factory: LoopFactory | None
    version: str
    problem: str | None = None

    @property
    def available(self) -> bool:
        return self.factory is not None


def _stock_asyncio_loop() -> asyncio.AbstractEventLoop:
    # Named explicitly rather than asyncio.new_event_loop(), so that an installed policy (for
    # example uvloop.install()) can never turn the "asyncio" column into another loop.
    return asyncio.SelectorEventLoop()


def _distribution_version(name: str, module: object | None = None) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def _variant(name: str) -> LoopSpec:
    base = resolve_loop("ferroloop")
    if base.factory is None:
        return LoopSpec(name, None, base.version, base.problem)
    make = base.factory

    def watched() -> asyncio.AbstractEventLoop:
        loop = make()
        loop.set_block_threshold(0.1)  # type: ignore[attr-defined]
        return loop

    return LoopSpec(name, watched, base.version)


def resolve_loop(name: str) -> LoopSpec:
    """Import the loop package `name` and check that it can make (and close) a loop."""
    if name in VARIANT_LOOPS:
        return _variant(name)
    if name == "asyncio":
        factory: LoopFactory = _stock_asyncio_loop
        version = f"stdlib {platform.python_version()}"
    else:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 -- ImportError, or whatever a broken build raises
            return LoopSpec(name, None, "n/a", f"not importable ({type(exc).__name__}: {exc})")
        version = _distribution_version(name, module)
        factory_attr = getattr(module, "new_event_loop", None)
        if not callable(factory_attr):
            return LoopSpec(name, None, version, "not usable (no new_event_loop())")
        factory = factory_attr
    try:
        probe = factory()
        if not isinstance(probe, asyncio.AbstractEventLoop):
            return LoopSpec(
                name,
                None,
                version,
                f"not usable (new_event_loop() returned {type(probe).__name__}, "
                "not an asyncio.AbstractEventLoop)",
            )
        probe.close()
    except Exception as exc:  # noqa: BLE001 -- any failure means "not usable"
        return LoopSpec(
            name,
            None,
            version,
            f"not usable (new_event_loop() raised {type(exc).__name__}: {exc})",
        )
    return LoopSpec(name, factory, version)


def resolve_loops(names: list[str]) -> list[LoopSpec]:
    return [resolve_loop(name) for name in names]


def parse_loop_names(text: str | None, default: tuple[str, ...] = KNOWN_LOOPS) -> list[str]:
    """Parse a comma-separated --loops value; unknown names are an error, order is canonical."""
    if not text:
        return list(default)
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    choices = (*KNOWN_LOOPS, *VARIANT_LOOPS)
    unknown = [name for name in wanted if name not in choices]
    if unknown:
        raise SystemExit(
            f"unknown loop(s): {', '.join(unknown)}; choose from {', '.join(choices)}"
        )
    return [name for name in choices if name in wanted]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info(specs: list[LoopSpec]) -> dict[str, object]:
    """Everything a reader needs to judge where the numbers came from."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "nproc": _usable_cpus(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": sys.version.replace("\n", " "),
        "loops": {spec.name: spec.version for spec in specs},
        "loadavg": [round(value, 2) for value in load],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def format_machine_line(info: dict[str, object]) -> str:
    loops = info["loops"]
    assert isinstance(loops, dict)
    versions = ", ".join(f"{name} {version}" for name, version in loops.items())
    load = info["loadavg"]
    assert isinstance(load, list)
    return (
        f"{info['platform']} | CPU: {info['cpu_model']} | nproc {info['nproc']} | "
        f"{info['python']} | {versions} | {info['date']} | "
        f"load avg {' '.join(str(value) for value in load)}"
    )
