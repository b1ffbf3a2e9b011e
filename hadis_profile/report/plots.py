"""Figures of a cascade table (matplotlib): the quality-vs-cost Pareto plot.

matplotlib is imported inside the functions, so importing this module costs
nothing. The plot uses the Agg canvas directly (no pyplot, no global backend
switch), so it works on headless machines and inside other programs' processes.
"""

from __future__ import annotations

import io
import os
from typing import Any

from hadis_profile.fileio import atomic_write_bytes
from hadis_profile.table import CascadeTable


def plot_pareto(table: CascadeTable | dict, path: str | os.PathLike) -> None:
    """Write :func:`pareto_figure` as a PNG (atomically)."""
    fig, _ = pareto_figure(table)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def pareto_figure(table: CascadeTable | dict) -> tuple[Any, Any]:
    """Quality against GPU-s/query: one colour per pair, the front as a line, models labelled.

    The quality axis is flipped for lower-is-better metrics (FID) so that "up"
    always means better, and cost is on a log axis when it spans over 10x.
    Returns the figure (on an Agg canvas) and its axes, whose data transform places
    each row (``gpu_s_per_query``, quality) in the picture.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = table if isinstance(table, CascadeTable) else CascadeTable.from_document(table)
    metric = t.quality_metric
    higher = t.provenance.get("metrics", {}).get(metric, {}).get("higher_is_better", True)
    order = {name: m.get("order", 0) for name, m in t.models.items()}
    rows = [r for r in t.rows if r["quality"].get(metric) is not None]

    fig = Figure(figsize=(9.5, 6.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pairs = sorted(
        {(r["light"], r["heavy"]) for r in rows if r["kind"] == "cascade"},
        key=lambda p: (order[p[0]], order[p[1]]),
    )
    colours = {p: f"C{i % 10}" for i, p in enumerate(pairs)}
    for pair in pairs:
        pts = [r for r in rows if (r["light"], r["heavy"]) == pair]
        on = [r for r in pts if r.get("on_front")]
        off = [r for r in pts if not r.get("on_front")]
        if off:
            ax.scatter(
                [r["gpu_s_per_query"] for r in off],
                [r["quality"][metric] for r in off],
                s=12,
                color=colours[pair],
                alpha=0.3,
                linewidths=0,
            )
        ax.scatter(
            [r["gpu_s_per_query"] for r in on],
            [r["quality"][metric] for r in on],
            s=30,
            color=colours[pair],
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=f"{pair[0]} → {pair[1]} ({len(on)} on front)",
        )
    front = sorted((r for r in rows if r.get("on_front")), key=lambda r: r["gpu_s_per_query"])
    if front:
        ax.plot(
            [r["gpu_s_per_query"] for r in front],
            [r["quality"][metric] for r in front],
            color="black",
            linewidth=1.2,
            alpha=0.8,
            zorder=2,
            label=f"Pareto front ({len(front)} rows)",
        )
    singles = [r for r in rows if r["kind"] == "single"]
    ax.scatter(
        [r["gpu_s_per_query"] for r in singles],
        [r["quality"][metric] for r in singles],
        marker="*",
        s=180,
        color="gold",
        edgecolors="black",
        linewidths=0.8,
        zorder=4,
        label="single model",
    )
    for r in singles:
        ax.annotate(
            r["light"],
            (r["gpu_s_per_query"], r["quality"][metric]),
            xytext=(6, -12 if higher else 8),
            textcoords="offset points",
            fontsize=8,
            ha="left",
        )
    costs = [r["gpu_s_per_query"] for r in rows if r["gpu_s_per_query"] > 0]
    if costs and max(costs) / min(costs) > 10:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    if not higher:
        ax.invert_yaxis()
    better = "higher is better" if higher else "lower is better, axis flipped"
    ax.set_xlabel("GPU-seconds per query (batch size 1)")
    ax.set_ylabel(f"{metric}  ({better})")
    run = t.provenance.get("run_id") or t.source
    ax.set_title(f"Cascade table for {run}: {len(t.rows)} rows, {len(front)} on the front")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    return fig, ax
