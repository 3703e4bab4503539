#!/usr/bin/env python3
"""Draws docs/benchmarks.png from the load harness's results
(target/bench-results.json): requests per second by scenario as horizontal
bars, the GET /healthz floor as a dashed line, each bar annotated with its
ratio to that floor, and the Express baselines (results with "baseline":
true) in another colour, each under the gatehouse scenario it is compared
with ("compare_with"), also annotated with its ratio to that scenario.

    python3 bench/plot.py [RESULTS] [--out PNG] [--log]

matplotlib comes from a virtual environment, target/bench-venv, which
ensure_venv() creates when missing; when this script runs under a Python
without matplotlib, it re-runs itself with the venv's. By hand:

    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install matplotlib==3.11.2
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "target" / "bench-results.json"
OUT = ROOT / "docs" / "benchmarks.png"
VENV = ROOT / "target" / "bench-venv"
MATPLOTLIB = "matplotlib==3.11.2"  # has CPython 3.11 wheels (manylinux x86_64)

GATEHOUSE, BASELINE, FLOOR = "#2c6fbb", "#e07b24", "#8a8a8a"


def ensure_venv(venv: Path = VENV) -> Path:
    """Creates `venv` with matplotlib when it lacks it; returns its python."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import matplotlib"],
                                          capture_output=True).returncode == 0:
        return python
    print(f"plot: installing {MATPLOTLIB} into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    MATPLOTLIB], check=True)
    return python


def ordered(results: list) -> list:
    """gatehouse's scenarios in the run's order, each followed by the
    baselines compared with it; baselines of a scenario not in the run last."""
    own = [r for r in results if not r.get("baseline")]
    labels = {r["scenario"] for r in own}
    rows = []
    for r in own:
        rows.append(r)
        rows.extend(b for b in results if b.get("baseline") and b.get("compare_with") == r["scenario"])
    rows.extend(b for b in results if b.get("baseline") and b.get("compare_with") not in labels)
    return rows


def floor_of(results: list) -> float:
    own = [r for r in results if not r.get("baseline")]
    for r in own:
        if r["scenario"].startswith("GET /healthz"):
            return r["rps"]
    return (own or results)[0]["rps"]


def plot(results_path: Path = RESULTS, out: Path = OUT, log: bool = False) -> Path:
    """Writes the chart of `results_path` to `out` (PNG); returns `out`.
    `log`: a logarithmic throughput axis (default linear)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    data = json.loads(Path(results_path).read_text())
    rows = ordered(data["results"])
    floor = floor_of(data["results"])
    by_label = {r["scenario"]: r for r in data["results"] if not r.get("baseline")}

    height = 0.36 * len(rows) + 1.6
    fig, ax = plt.subplots(figsize=(13, height), dpi=110)
    ys = range(len(rows))
    colours, labels = [], []
    for r in rows:
        base = r.get("baseline")
        is_floor = not base and r["rps"] == floor and r["scenario"].startswith("GET /healthz")
        colours.append(BASELINE if base else FLOOR if is_floor else GATEHOUSE)
        label = r["scenario"]
        if r.get("non2xx"):
            label += f" [{r['non2xx']} non-2xx!]"
        labels.append(textwrap.shorten(label, 95, placeholder="…"))
    bars = ax.barh(list(ys), [r["rps"] for r in rows], color=colours, height=0.72,
                   hatch=["//" if r.get("baseline") else "" for r in rows], edgecolor="white", linewidth=0)
    ax.set_yticks(list(ys), labels, fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r.get("baseline"):
            tick.set_color("#9c4a0c")
    ax.invert_yaxis()

    top = max(r["rps"] for r in rows)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(left=min(r["rps"] for r in rows) / 2, right=top * 6)
    else:
        ax.set_xlim(0, top * 1.32)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(axis="x", color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    for bar, r in zip(bars, rows):
        text = f" {r['rps']:,.0f}/s  {r['rps'] / floor:.2f}×"
        compared = by_label.get(r.get("compare_with"))
        if r.get("baseline") and compared and compared["rps"] != floor:
            text += f"  ({r['rps'] / compared['rps']:.2f}× gatehouse)"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text,
                va="center", ha="left", fontsize=7.5, color="#333333")

    # Separators between a gatehouse scenario's group and the next.
    for i, r in enumerate(rows[1:], start=1):
        if not r.get("baseline"):
            ax.axhline(i - 0.5, color="#d0d0d0", linewidth=0.6)

    ax.axvline(floor, color="#555555", linestyle="--", linewidth=1)
    ax.set_xlabel("requests per second" + (" (log scale)" if log else "") +
                  "; annotations: ×floor = throughput ÷ gatehouse's GET /healthz in the same run")
    title = "gatehouse: throughput by scenario"
    if any(r.get("baseline") for r in rows):
        title += ", with Express baselines"
    sub = data.get("machine", "")
    if data.get("idle_rss_mb"):
        sub += f"; idle RSS of a node {data['idle_rss_mb']:.1f} MB"
    fig.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    ax.set_title(sub, loc="left", fontsize=8, color="#555555")
    handles = [Patch(color=GATEHOUSE, label="gatehouse"),
               Line2D([], [], color="#555555", linestyle="--", label=f"/healthz floor ({floor:,.0f}/s)")]
    if any(r.get("baseline") for r in rows):
        handles.insert(1, Patch(facecolor=BASELINE, hatch="//", edgecolor="white",
                                label="baseline (Express), under the scenario it is compared with"))
    # Right of the bars, below the floor's: the emptiest part of the chart.
    ax.legend(handles=handles, loc="center right", fontsize=8, framealpha=0.95)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main():
    import argparse
    parser = argparse.ArgumentParser(description="docs/benchmarks.png from bench results")
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--log", action="store_true", help="logarithmic throughput axis")
    args = parser.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        python = ensure_venv()
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    print(plot(args.results, args.out, args.log))


if __name__ == "__main__":
    main()
