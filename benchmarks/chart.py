"""One chart of every benchmark row: each loop's rate relative to uvloop's, from the JSON files
the benchmark scripts write (``--json``).

    python benchmarks/chart.py                         # the latest results of each kind
    python benchmarks/chart.py benchmarks/results/2026-11-22-core.json benchmarks/results/…
    python benchmarks/chart.py --output benchmarks/results/$(date +%F)-chart.png
    python benchmarks/chart.py --table                 # one markdown table of every row instead

Without file arguments it takes, from benchmarks/results/, the ``<date>-<kind>[-<tag>].json``
of each kind whose run is the newest (by the date recorded in it): ``core`` (bench_core.py), ``io`` (bench_io.py), ``streams`` (bench_streams.py),
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
NAME = re.compile(r"(\d{4}-\d{2}-\d{2})-([a-z]+)(?:-[a-z0-9]+)?\.json$")

# The issues' targets, as (figure, base loop, ratio): the ratio ferroloop's median must reach
# against the base loop's median in the same run. Rows without an entry have no target.
TARGETS: dict[tuple[str, str], tuple[str, str, float]] = {
    # issue 2, ops per wall second
    ("core", "call_soon"): ("wall_ops_per_s", "uvloop", 4.0),
    ("core", "call_soon_args"): ("wall_ops_per_s", "uvloop", 2.0),
    ("core", "threadsafe"): ("wall_ops_per_s", "uvloop", 2.5),
    ("core", "call_later_cancel"): ("wall_ops_per_s", "uvloop", 4.0),
    ("core", "timers_fire"): ("wall_ops_per_s", "uvloop", 2.0),
    ("core", "sleep0"): ("wall_ops_per_s", "uvloop", 2.5),
    ("core", "tasks_gather"): ("wall_ops_per_s", "uvloop", 1.1),
    ("core", "futures"): ("wall_ops_per_s", "uvloop", 1.1),
    # issue 4: getaddrinfo against stock asyncio; echo per server CPU-second
    ("io", "getaddrinfo_numeric"): ("wall_ops_per_s", "asyncio", 10.0),
    ("io", "getaddrinfo_numeric_v6"): ("wall_ops_per_s", "asyncio", 10.0),
    ("io", "tcp_echo_1k"): ("cpu_ops_per_s", "uvloop", 1.5),
    ("io", "tcp_echo_10k"): ("cpu_ops_per_s", "uvloop", 1.5),
    ("io", "tcp_echo_100k"): ("cpu_ops_per_s", "uvloop", 1.5),
    # issue 6 (HTTP), issue 7 (TLS), issue 9 (datagrams); issue 5 below for every stream row
    **{("http", key): ("cpu_ops_per_s", "uvloop", 1.15) for key in (
        "uvicorn_plaintext", "uvicorn_10k", "aiohttp_plaintext", "aiohttp_client")},
    **{("tls", key): ("cpu_ops_per_s", "uvloop", 1.2) for key in (
        "tls_echo_1k", "tls_echo_16k", "tls_handshake")},
    **{("udp", key): ("cpu_ops_per_s", "uvloop", 1.2) for key in (
        "udp_pingpong_1", "udp_pingpong_1400", "udp_recv_1400", "udp_send_1400")},
}
STREAMS_TARGET = ("cpu_ops_per_s", "uvloop", 1.25)  # issue 5: every row of bench_streams.py
FIGURE_NAMES = {"wall_ops_per_s": "per wall s", "cpu_ops_per_s": "per CPU s"}


def latest_results(directory: Path) -> list[Path]:
    """Per kind, the results file whose run is newest (the ``date`` it records, then its
    name); files without medians (``bench_core.py --instructions``) are not charted."""
    newest: dict[str, tuple[str, str, Path]] = {}
    for path in sorted(directory.glob("*.json")):
        match = NAME.search(path.name)
        if not (match and match.group(2) in PANELS):
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        if "medians" not in document:
            continue
        key = (str(document.get("machine", {}).get("date", "")), path.name, path)
        kind = match.group(2)
        if kind not in newest or key[:2] > newest[kind][:2]:
            newest[kind] = key
    return [newest[kind][2] for kind in KIND_ORDER if kind in newest]


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


def target_of(kind: str, key: str) -> tuple[str, str, float] | None:
    if kind == "streams":
        return STREAMS_TARGET
    return TARGETS.get((kind, key))


def table(paths: list[Path]) -> str:
    """One markdown table of every row: ferroloop's, rloop's and asyncio's median ÷ uvloop's,
    in the figure the row's target is stated in (per CPU-second where it has none; HTTP rows
    in both), the target, what ferroloop reached against the target's base loop, ✓ or ✗."""
    lines = [
        "| benchmark row | figure | ferroloop | rloop | asyncio | target | reached | met | run |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | :---: | --- |",
    ]

    def cell(value: float | None) -> str:
        return f"{value:.2f}×" if value else "n/a"

    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        kind = kind_of(path, document)
        date = (document.get("machine") or {}).get("date", "")
        for key, per_loop in document["medians"].items():
            title = document["rows"].get(key, {}).get("title", key)
            target = target_of(kind, key)
            figures = [target[0]] if target else ["cpu_ops_per_s"]
            if kind == "http":
                figures = ["wall_ops_per_s", "cpu_ops_per_s"]
            for figure in figures:
                base = (per_loop.get("uvloop") or {}).get(figure)

                def ratio(
                    name: str,
                    figure: str = figure,
                    base: float | None = base,
                    per_loop: dict = per_loop,
                ) -> float | None:
                    value = (per_loop.get(name) or {}).get(figure)
                    return value / base if value and base else None

                wanted, met, reached = "", "", None
                if target:
                    _, versus, goal = target
                    if versus == "uvloop":
                        reached = ratio("ferroloop")
                    else:
                        ours = (per_loop.get("ferroloop") or {}).get(figure)
                        theirs = (per_loop.get(versus) or {}).get(figure)
                        reached = ours / theirs if ours and theirs else None
                    wanted = f"≥ {goal:g}× {versus}"
                    met = "✓" if reached and reached >= goal else "✗"
                lines.append(
                    f"| {title} | {FIGURE_NAMES[figure]} | {cell(ratio('ferroloop'))} | "
                    f"{cell(ratio('rloop'))} | {cell(ratio('asyncio'))} | {wanted} | "
                    f"{cell(reached) if target else ''} | {met} | "
                    f"{path.name}, {date} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="JSON files from --json")
    parser.add_argument(
        "--output",
        type=Path,
        help="PNG to write (default: benchmarks/results/<today>-chart.png)",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print one markdown table of every row (ratios to uvloop, targets) instead",
    )
    args = parser.parse_args(argv)
    paths = args.results or latest_results(RESULTS)
    if not paths:
        print(
            f"no <date>-<kind>.json results in {RESULTS}; run a benchmark with --json",
            file=sys.stderr,
        )
        return 2
    if args.table:
        print(table(paths))
        return 0
    output = args.output or RESULTS / f"{datetime.date.today().isoformat()}-chart.png"
    draw(paths, output)
    print(f"chart of {', '.join(path.name for path in paths)} written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
