"""Human views of a cascade table: a Rich table for the terminal and a Pareto plot.

Rich and matplotlib are imported inside the functions, so importing this module
costs nothing and the serving path never pays for either. The plot uses the
Agg canvas directly (no pyplot, no global backend switch), so it works on
headless machines and inside other programs' processes.
"""

from __future__ import annotations

import io
import math
import os
from typing import TYPE_CHECKING, Any

from hadis_profile.fileio import atomic_write_bytes
from hadis_profile.table import CascadeTable

if TYPE_CHECKING:
    from rich.console import Console


def _as_table(table: CascadeTable | dict) -> CascadeTable:
    return table if isinstance(table, CascadeTable) else CascadeTable.from_document(table)


def _num(x: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "—"
    return format(x, fmt)


def _pair_label(row: dict) -> str:
    return row["light"] if row["heavy"] is None else f"{row['light']} → {row['heavy']}"


def _direction(table: CascadeTable, metric: str) -> str:
    info = table.provenance.get("metrics", {}).get(metric, {})
    return "↑" if info.get("higher_is_better", True) else "↓"


def render_table(table: CascadeTable | dict, console: Console, *, limit: int | None = None) -> None:
    """Print a provenance panel and the rows (cheapest first); ``limit`` caps the rows shown."""
    from rich import box
    from rich.panel import Panel
    from rich.table import Table

    t = _as_table(table)
    prov = t.provenance
    metric = t.quality_metric
    hw = prov.get("hardware") or {}
    grid = prov.get("grid") or {}
    grid_text = (
        "exact"
        if grid.get("mode") == "exact"
        else f"grid {grid.get('steps')} steps"
        if grid.get("mode")
        else "?"
    )
    if grid.get("nominal"):
        grid_text += ", nominal"
    rows = t.rows
    n_front = sum(1 for r in rows if r.get("on_front"))
    header = "\n".join(
        [
            f"[bold]run[/] {prov.get('run_id') or '—'}   [bold]hardware[/] "
            f"{hw.get('label', '—')} ({hw.get('device_name') or '—'})",
            f"[bold]prompts[/] {prov.get('n_prompts', '—')}   [bold]prompt set[/] "
            f"{(prov.get('prompt_set_hash') or '—')[:12]}   [bold]zoo[/] "
            f"{(prov.get('zoo_hash') or '—')[:12]}",
            f"[bold]quality[/] {metric} {_direction(t, metric)}   [bold]sweep[/] {grid_text}, "
            f"{prov.get('pairs', '?')} pairs{', per pair' if prov.get('per_pair') else ''}",
            f"[bold]rows[/] {len(rows)} ({n_front} on the front)   [bold]router[/] "
            f"{'yes' if t.router else 'none'}   [bold]sha256[/] {t.sha256[:16]}   "
            f"[bold]created[/] {t.document.get('created_at')}",
        ]
    )
    # Model names are long; on narrow terminals rows name models by cost rank and
    # the panel carries the legend.
    order = sorted(t.models, key=lambda m: t.models[m].get("order", 0))
    index = {name: i for i, name in enumerate(order)}
    wide = console.width >= 150
    if not wide:
        legend = "   ".join(
            f"[bold]{index[m]}[/] {m} ({_num(_batch1(t.models[m]), '.3g')} s)" for m in order
        )
        header += f"\n[bold]models[/] {legend}"
    console.print(Panel(header, title=f"cascade table {t.source}", expand=False))

    def pair(row: dict) -> str:
        if wide:
            return _pair_label(row)
        if row["heavy"] is None:
            return f"{index[row['light']]}"
        return f"{index[row['light']]} → {index[row['heavy']]}"

    shown = rows if limit is None else rows[: max(0, limit)]
    out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 0))
    for name in (
        "#",
        "",
        "pair",
        "r",
        "d",
        "router\nthr",
        "conf\nthr",
        "direct",
        "escal",
        "light\nalone",
        f"{metric.split(':', 1)[0] if wide else 'quality'}\n{_direction(t, metric)}",
        "GPU-s/\nquery",
        "latency\ns",
    ):
        out.add_column(name, justify="left" if name in ("", "pair") else "right", no_wrap=True)
    for i, row in enumerate(shown):
        f = row["fractions"]
        label = pair(row)
        out.add_row(
            str(i),
            "★" if row.get("on_front") else "",
            f"[bold]{label}[/]" if row["kind"] == "single" else label,
            _num(row["r"], ".2f"),
            _num(row["d"], ".2f"),
            _num(row["router_threshold"], ".3g"),
            _num(row["confidence_threshold"], ".3g"),
            _num(f["direct"], ".2f"),
            _num(f["escalated"], ".2f"),
            _num(f["light"], ".2f"),
            _num(row["quality"].get(metric), ".4g"),
            _num(row["gpu_s_per_query"], ".4g"),
            _num(row["latency_s"], ".4g"),
            style=None if row.get("on_front") else "dim",
        )
    if len(shown) < len(rows):
        out.caption = f"{len(rows) - len(shown)} more row(s); use --limit to see them"
    console.print(out)


def _batch1(model: dict) -> float | None:
    point = model.get("latency", {}).get("1")
    return None if point is None else point.get("mean_s")


def plot_pareto(table: CascadeTable | dict, path: str | os.PathLike) -> None:
    """Quality against GPU-s/query: one colour per pair, the front as a line, models labelled.

    The quality axis is flipped for lower-is-better metrics (FID) so that "up"
    always means better, and cost is on a log axis when it spans over 10x.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = _as_table(table)
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

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def render_calibration(res: Any, console: Console) -> None:
    """Print a router fit (``router.CalibrationResult``): held-out routing vs the baselines."""
    from rich.table import Table

    fr = res.fitted.fractions
    arrow = "↑" if res.higher_is_better else "↓"
    pair = " → ".join(res.pair) if res.pair else "light → heavy"
    metric = res.metric or "quality"
    t = Table(
        title=f"Router fit ({res.method}, alpha {res.alpha:g}) on {pair}, {metric} {arrow}: "
        f"held out {res.n_test} of {res.n_train + res.n_test} prompts (seed {res.seed})",
        caption=f"light only {res.light_only:.4f}, heavy only {res.heavy_only:.4f}; "
        f"random = mean ± 95% CI over {res.random.n_seeds} seeds",
    )
    t.add_column("routing")
    t.add_column("Spearman", justify="right")
    for r in fr:
        t.add_column(f"{r:.0%} heavy", justify="right")
    t.add_row("fitted", _num(res.fitted.spearman, ".3f"), *(f"{q:.4f}" for q in res.fitted.quality))
    if res.default is not None:
        t.add_row(
            "HADIS default",
            _num(res.default.spearman, ".3f"),
            *(f"{q:.4f}" for q in res.default.quality),
        )
    rnd = res.random
    t.add_row(
        "random",
        f"{rnd.spearman_mean:.3f} ± {rnd.spearman_ci:.3f}",
        *(f"{m:.4f} ± {c:.4f}" for m, c in zip(rnd.quality_mean, rnd.quality_ci, strict=True)),
    )
    t.add_row("oracle", _num(res.oracle.spearman, ".3f"), *(f"{q:.4f}" for q in res.oracle.quality))
    console.print(t)
    w = Table(title="Weights (on z-scored features)")
    w.add_column("feature")
    if res.previous_weights is not None:
        w.add_column("before", justify="right")
    w.add_column("fitted", justify="right")
    for i, name in enumerate(res.features):
        before = [] if res.previous_weights is None else [f"{res.previous_weights[i]:.4g}"]
        w.add_row(name, *before, f"{res.weights[i]:.4g}")
    console.print(w)


def plan_panel(plan, title: str):  # plan: resolve.Plan
    """A Rich panel of a serving plan: the row, its traffic split and per-model GPUs."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    def num(x, unit=""):
        return "-" if x is None else f"{x:.4g}{unit}"

    fr = plan.fractions
    pair = plan.light if plan.heavy is None else f"{plan.light} -> {plan.heavy}"
    head = Table.grid(padding=(0, 2))
    head.add_row("row", f"{plan.row} ({plan.kind}): [bold]{pair}[/]")
    if plan.heavy is not None:
        head.add_row("r, d", f"{num(plan.r)}, {num(plan.d)}")
        head.add_row(
            "thresholds",
            f"router {num(plan.router_threshold)}, confidence {num(plan.confidence_threshold)}",
        )
        head.add_row(
            "traffic",
            f"light only {fr['light']:.1%}, direct {fr['direct']:.1%}, "
            f"escalated {fr['escalated']:.1%}",
        )
    head.add_row("quality", f"{num(plan.quality)} ({plan.quality_metric})")
    slo = "no SLO" if plan.slo_s is None else f"SLO {plan.slo_s:g} s"
    head.add_row("worst case", f"{num(plan.worst_case_latency_s, ' s')} ({slo})")
    head.add_row("load", f"{plan.qps:.4g} qps, headroom {plan.headroom:g}")
    head.add_row("GPUs", f"{plan.total_gpus} of {plan.gpu_budget} ({plan.reserved_gpus} reserved)")
    models = Table(box=None, header_style="bold")
    for col in ("model", "role", "load", "GPUs", "batch", "p99 batch s", "capacity qps"):
        models.add_column(col, justify="left" if col in ("model", "role") else "right")
    for a in plan.allocations:
        models.add_row(
            a.model,
            a.role,
            f"{a.load_fraction:.1%}",
            str(a.gpus),
            "-" if a.batch_size is None else str(a.batch_size),
            num(a.batch_latency_s),
            num(a.throughput_qps),
        )
    return Panel(Group(head, "", models), title=title, expand=False)
