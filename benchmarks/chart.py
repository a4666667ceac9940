"""One chart of every benchmark row: each loop's rate relative to uvloop's, from the JSON files
the benchmark scripts write (``--json``).

    python benchmarks/chart.py                         # the latest results of each kind
    python benchmarks/chart.py benchmarks/results/2026-11-22-core.json benchmarks/results/…
    python benchmarks/chart.py --output benchmarks/results/$(date +%F)-chart.png

Without file arguments it takes, from benchmarks/results/, the newest ``<date>-<kind>.json`` of
each kind: ``core`` (bench_core.py), ``io`` (bench_io.py), ``streams`` (bench_streams.py),
``tls`` (bench_tls.py), ``udp`` (bench_udp.py), ``proc`` (bench_proc.py), ``http``
(bench_http.py). One panel per kind (two for http: per wall second and per
server CPU-second), one group of bars per row: ferroloop, rloop and asyncio, each as the ratio
of its median to uvloop's median in the same run (log scale; 1 = uvloop). The figure is what the
tables say, no more: read the spread tables of the run before trusting a bar near a target.

Each panel uses the figure its issue's targets are stated in: ops per wall second for the core
rows, per CPU-second for the echo, stream, TLS, datagram and subprocess rows, and both for
HTTP.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KIND_ORDER = ("core", "io", "streams", "tls", "udp", "proc", "http")
# (kind, rate) panels: which median each kind's panel shows, and its caption.
PANELS = {
    "core": [("wall_ops_per_s", "loop core (bench_core.py): ops per wall second")],
    "io": [("cpu_ops_per_s", "sockets (bench_io.py): per server CPU-second")],
    "streams": [("cpu_ops_per_s", "transports and streams (bench_streams.py): per server CPU-s")],
    "tls": [("cpu_ops_per_s", "TLS (bench_tls.py): per server CPU-second")],
    "udp": [("cpu_ops_per_s", "datagrams (bench_udp.py): per CPU-second")],
    "proc": [("cpu_ops_per_s", "subprocesses and pipes (bench_proc.py): per CPU-second")],
    "http": [
        ("wall_ops_per_s", "HTTP (bench_http.py): requests per wall second"),
        (
            "cpu_ops_per_s",
            "HTTP (bench_http.py): requests per CPU-second of the process under test",
        ),
    ],
}
TICKS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
SERIES = (("ferroloop", "#d2542c"), ("rloop", "#4c72b0"), ("asyncio", "#8c8c8c"))
HTTP_TARGET = 1.15  # issue 6: ferroloop >= 1.15x uvloop on every HTTP row
NAME = re.compile(r"(\d{4}-\d{2}-\d{2})-([a-z]+)\.json$")


def latest_results(directory: Path) -> list[Path]:
    newest: dict[str, Path] = {}
    for path in sorted(directory.glob("*.json")):
        match = NAME.search(path.name)
        if match and match.group(2) in PANELS:
            newest[match.group(2)] = path  # sorted by name, so by date: the last one wins
    return [newest[kind] for kind in KIND_ORDER if kind in newest]


def kind_of(path: Path, document: dict) -> str:
    match = NAME.search(path.name)
    if match and match.group(2) in PANELS:
        return match.group(2)
    config = document.get("config", {})
    if "connections" in config and "duration_s" in config:
        return "http"
    if "echo_connections" in config:
        return "io"
    return "core"


def ratios(document: dict, rate: str) -> tuple[list[str], dict[str, list[float | None]]]:
    """Row titles and, per loop, each row's median divided by uvloop's (None when missing)."""
    titles, values = [], {name: [] for name, _ in SERIES}
    for key, per_loop in document["medians"].items():
        base = (per_loop.get("uvloop") or {}).get(rate)
        titles.append(document["rows"].get(key, {}).get("title", key))
        for name, _ in SERIES:
            value = (per_loop.get(name) or {}).get(rate)
            values[name].append(value / base if value and base else None)
    return titles, values


def draw(paths: list[Path], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    machine = None
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        machine = machine or document.get("machine")
        for rate, caption in PANELS[kind_of(path, document)]:
            titles, values = ratios(document, rate)
            date = (document.get("machine") or {}).get("date", "")
            target = HTTP_TARGET if kind_of(path, document) == "http" else None
            panels.append((f"{caption}  [{path.name}, {date}]", titles, values, target))
    if not panels:
        raise SystemExit("no benchmark results to chart")

    heights = [0.9 + 0.42 * len(titles) for _, titles, _, _ in panels]
    figure, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, sum(heights) + 1.2),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    bar = 0.26
    for axis, (caption, titles, values, target) in zip(axes[:, 0], panels, strict=True):
        rows = list(range(len(titles)))
        for index, (name, color) in enumerate(SERIES):
            for row in rows:
                value = values[name][row]
                if value is None:
                    continue
                y = row + (index - 1) * bar
                axis.barh(y, value, height=bar, color=color, label=name if row == 0 else None)
                if name == "ferroloop":
                    axis.text(value * 1.03, y, f"{value:.2f}×", va="center", fontsize=7)
        axis.axvline(1.0, color="black", linewidth=0.8)
        if target:
            axis.axvline(target, color="#d2542c", linewidth=0.8, linestyle="--")
            axis.text(
                target * 1.02, len(titles) - 0.6, f"target {target:g}×", fontsize=7, color="#d2542c"
            )
        axis.set_xscale("log")
        largest = max((v for series in values.values() for v in series if v), default=1.0)
        right = max(12.0, largest * 1.6)
        ticks = [tick for tick in TICKS if tick <= right]
        axis.set_xticks(ticks)
        axis.set_xticklabels([f"{tick:g}×" for tick in ticks])
        axis.minorticks_off()
        axis.set_yticks(rows)
        axis.set_yticklabels(titles, fontsize=8)
        axis.invert_yaxis()
        axis.set_title(caption, fontsize=9, loc="left")
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(axis="x", alpha=0.25)
        axis.set_xlim(0.04, right)
    handles = [plt.Rectangle((0, 0), 1, 1, color=color) for _, color in SERIES]
    figure.legend(
        handles,
        [f"{name} ÷ uvloop" for name, _ in SERIES],
        loc="upper right",
        fontsize=8,
        ncol=3,
    )
    header = "ferroloop benchmarks: each loop's median rate ÷ uvloop's in the same run (log scale)"
    if machine:
        header += (
            f"\n{machine.get('cpu_model', '?')}, nproc {machine.get('nproc', '?')}, "
            f"{machine.get('python', '')}"
        )
    figure.suptitle(header, fontsize=10, x=0.01, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="JSON files from --json")
    parser.add_argument(
        "--output",
        type=Path,
        help="PNG to write (default: benchmarks/results/<today>-chart.png)",
    )
    args = parser.parse_args(argv)
    paths = args.results or latest_results(RESULTS)
    if not paths:
        print(
            f"no <date>-<kind>.json results in {RESULTS}; run a benchmark with --json",
            file=sys.stderr,
        )
        return 2
    output = args.output or RESULTS / f"{datetime.date.today().isoformat()}-chart.png"
    draw(paths, output)
    print(f"chart of {', '.join(path.name for path in paths)} written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
