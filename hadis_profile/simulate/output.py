"""Views of a simulation: a Rich comparison table, CSV files and a PNG figure.

Rich and matplotlib are imported inside the functions (matplotlib through the
Agg canvas, no pyplot), so importing the simulator costs neither. Every file
is rendered in memory first, then all of them are written into a temporary
folder and moved into ``--out`` together (:func:`hadis_profile.fileio.atomic_dir`):
a failure leaves no partial set of files and no half a CSV or PNG.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadis_profile.fileio import atomic_dir

if TYPE_CHECKING:
    from rich.console import Console

    from hadis_profile.simulate.run import SimulationResult
    from hadis_profile.simulate.scenarios import ScenarioResult

WINDOWS_CSV = "windows.csv"
DECISIONS_CSV = "decisions.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
FIGURE_PNG = "simulate.png"


def _short(metric: str) -> str:
    return metric.split(":", 1)[0]


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, spec)


def render_summary(result: SimulationResult, console: Console) -> None:
    """The per-policy comparison table, then the notes that qualify it."""
    from rich import box
    from rich.table import Table

    from hadis_profile.termtext import esc

    cfg, wl = result.config, result.workload
    title = (
        f"{wl['queries']:,} queries over {wl['duration_s']:.0f} s (mean {wl['mean_qps']:.3g} qps, "
        f"peak {wl['peak_qps_per_window']:.3g} qps per {cfg.window_s:g} s), {cfg.gpus} GPUs, "
        f"SLO {cfg.slo_s:g} s"
    )
    t = Table(
        title=esc(title),
        box=box.SIMPLE_HEAD,
        header_style="bold",
        title_justify="left",
        padding=(0, 1),
    )
    t.add_column("policy", no_wrap=True)
    t.add_column("SLO viol.", justify="right", min_width=5)
    t.add_column("late", justify="right")
    t.add_column("drop", justify="right")
    for m in result.metrics:
        arrow = "↑" if result.higher_is_better[m] else "↓"
        header = f"{esc(_short(m))} {arrow}"
        t.add_column(header, justify="right", min_width=len(header))
    t.add_column("p50 s", justify="right")
    t.add_column("p99 s", justify="right")
    t.add_column("GPU-s used", justify="right")
    for s in result.summaries:
        t.add_row(
            s.policy,
            f"{s.violation_ratio:.1%}",
            f"{s.late:,}",
            f"{s.dropped:,}",
            *(_fmt(s.quality[m], ".4g") for m in result.metrics),
            _fmt(s.p50_s),
            _fmt(s.p99_s),
            f"{s.gpu_s_used:,.0f}",
        )
    console.print(t)
    console.print(
        esc(
            f"Workload: {wl['source']}. SLO violations = (late + dropped) / queries; a query "
            f"still waiting at {cfg.drop_factor:g}x SLO is dropped"
            if cfg.drop_factor is not None
            else f"Workload: {wl['source']}. SLO violations = late / queries (no drops)"
        )
        + esc(
            f". Latency over served queries; batch time = {cfg.latency_stat} of the profile; "
            f"re-plan every {cfg.replan_s:g} s, switch {cfg.switch_s:g} s."
        ),
        highlight=False,
        soft_wrap=True,
    )
    for note in result.notes:
        console.print(f"[dim]note:[/] {esc(note)}", highlight=False, soft_wrap=True)


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return buf.getvalue()


def write_outputs(result: SimulationResult, out: str | os.PathLike) -> list[Path]:
    """windows.csv, decisions.csv, summary.csv, summary.json and simulate.png into ``out``,
    all or none."""
    out = Path(out)
    files = output_files(result)
    with atomic_dir(out) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return [out / name for name in files]


def output_files(result: SimulationResult) -> dict[str, bytes]:
    """The contents of :func:`write_outputs`' files, by file name."""
    q_cols = [f"quality:{m}" for m in result.metrics]
    win_cols = [
        "policy",
        "window_start_s",
        "window_end_s",
        "arrivals",
        "demand_qps",
        "estimated_qps",
        "plan",
        "plan_status",
        "gpus",
        "served",
        "late",
        "dropped",
        "violation_ratio",
        "mean_latency_s",
        *q_cols,
    ]
    decisions = []
    for run in result.runs:
        for d in run.decisions:
            decisions.append(
                {
                    **d,
                    "policy": run.policy,
                    "gpus": " ".join(f"{m}:{g}" for m, g in d["gpus"].items()),
                    "batch": " ".join(f"{m}:{b}" for m, b in d["batch"].items()),
                }
            )
    dec_cols = ["policy", "time_s", "estimated_qps", "plan", "status", "row", "r", "d", "gpus"]
    dec_cols.append("batch")
    summaries = []
    for s in result.summaries:
        row = s.to_dict()
        row.update({f"quality:{m}": v for m, v in s.quality.items()})
        summaries.append(row)
    sum_cols = [
        "policy",
        "queries",
        "served",
        "late",
        "dropped",
        "violation_ratio",
        *q_cols,
        "p50_s",
        "p99_s",
        "mean_s",
        "gpu_s_used",
        "switches",
        "escalated",
        "decisions",
    ]
    files = {
        WINDOWS_CSV: _csv_text(result.windows, win_cols),
        DECISIONS_CSV: _csv_text(decisions, dec_cols),
        SUMMARY_CSV: _csv_text(summaries, sum_cols),
        SUMMARY_JSON: json.dumps(summary_document(result), indent=1, allow_nan=False) + "\n",
    }
    out = {name: text.encode("utf-8") for name, text in files.items()}
    out[FIGURE_PNG] = figure_png(result)
    return out


def summary_document(result: SimulationResult) -> dict:
    """summary.json (and ``simulate --json``): config, workload, metrics, notes, per policy."""
    cfg = result.config
    doc = {
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "workload": result.workload,
        "metrics": result.metrics,
        "quality_metric": result.quality_metric,
        "notes": result.notes,
        "policies": [s.to_dict() for s in result.summaries],
    }
    return json.loads(json.dumps(doc, allow_nan=False, default=str))


def figure_png(result: SimulationResult) -> bytes:
    """Demand, SLO violations and quality over time, one line per policy (PNG bytes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cfg = result.config
    metric = result.quality_metric
    higher = result.higher_is_better[metric]
    policies = [s.policy for s in result.summaries]
    by_policy: dict[str, list[dict]] = {p: [] for p in policies}
    for row in result.windows:
        by_policy[row["policy"]].append(row)

    fig = Figure(figsize=(13, 9), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_d, ax_v, ax_q = fig.subplots(3, 1, sharex=True, height_ratios=(1, 1.2, 1.2))
    first = by_policy[policies[0]]
    mid = [(r["window_start_s"] + r["window_end_s"]) / 2 for r in first]
    ax_d.step(
        [r["window_start_s"] for r in first] + [first[-1]["window_end_s"]],
        [r["demand_qps"] for r in first] + [first[-1]["demand_qps"]],
        where="post",
        color="0.35",
        linewidth=1.4,
        label=f"arrivals per {cfg.window_s:g} s window",
    )
    if cfg.demand == "in-flight":  # each policy has its own estimate: show the last one's
        est_run = result.runs[-1]
        est_label = f"{est_run.policy}'s estimate (EWMA of queries in flight / tick)"
    else:
        est_run, est_label = result.runs[0], "EWMA estimate the policies plan for"
    ticks = est_run.ticks
    ax_d.plot(
        [t for t, _ in ticks],
        [q for _, q in ticks],
        color="C3",
        linewidth=1.0,
        linestyle="--",
        label=est_label,
    )
    for k in range(1, int(result.workload["duration_s"] // cfg.replan_s) + 1):
        for ax in (ax_d, ax_v, ax_q):
            ax.axvline(k * cfg.replan_s, color="0.85", linewidth=0.8, zorder=0)
    ax_d.set_ylabel("demand (queries/s)")
    ax_d.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax_d.set_title(
        f"{Path(result.workload['source']).name}: {cfg.gpus} GPUs, SLO {cfg.slo_s:g} s, "
        f"re-plan every {cfg.replan_s:g} s (grey lines)",
        fontsize=10,
    )
    styles = ["-", "--", "-.", ":"]
    for i, p in enumerate(policies):
        rows = by_policy[p]
        x = [(r["window_start_s"] + r["window_end_s"]) / 2 for r in rows]
        s = next(s for s in result.summaries if s.policy == p)
        bold = p == "hadis"
        kw = {
            "color": f"C{i % 10}",
            "linewidth": 2.4 if bold else 1.2,
            "linestyle": "-" if bold else styles[i % len(styles)],
            "zorder": 5 if bold else 3,
            "marker": "o" if bold else None,
            "markersize": 3,
        }
        v = [math.nan if r["violation_ratio"] is None else r["violation_ratio"] for r in rows]
        ax_v.plot(x, v, label=f"{p}: {s.violation_ratio:.1%}", **kw)
        qv = [r[f"quality:{metric}"] for r in rows]
        qv = [math.nan if q is None else q for q in qv]
        overall = s.quality.get(metric)
        ax_q.plot(x, qv, label=f"{p}: {_fmt(overall, '.4g')}", **kw)
    ax_v.set_ylabel("SLO violation ratio\n(late + dropped)")
    ax_v.set_ylim(-0.03, 1.03)
    ax_v.yaxis.set_major_formatter(_percent())
    ax_v.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="overall")
    better = "higher is better" if higher else "lower is better, axis flipped"
    ax_q.set_ylabel(f"{_short(metric)} of served queries\n({better})")
    if not higher:
        ax_q.invert_yaxis()
    ax_q.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="overall")
    ax_q.set_xlabel("time (s), by query arrival")
    for ax in (ax_d, ax_v, ax_q):
        ax.grid(True, alpha=0.25)
        ax.set_xlim(0, max(mid[-1] + cfg.window_s / 2, 1.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


# --------------------------------------------------------------------------- scenarios

SCENARIO_MD = "e1.md"


def _x(v: float | None) -> str:
    if v is None:
        return "—"
    return "∞" if math.isinf(v) else f"{v:.3g}x"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1%}"


def scenario_rows(result: ScenarioResult, block: str) -> list[dict]:
    """One row per policy: our per-query numbers next to the authors' accounting."""
    from hadis_profile.simulate.scenarios import E1_SYSTEMS

    col = 0 if block.startswith("authors") else 1
    system = {pair[col]: name for name, pair in E1_SYSTEMS.items()}
    res = result.blocks[block]
    metric = res.quality_metric
    rows = []
    for s in res.summaries:
        a = result.accounting[block][s.policy]
        rows.append(
            {
                "system": system.get(s.policy, ""),
                "policy": s.policy,
                "violation_ratio": s.violation_ratio,
                "violation_ratio_authors": a.violation_ratio,
                "late": s.late,
                "dropped": s.dropped,
                "quality": s.quality[metric],
                "quality_authors": a.quality,
                "p50_s": s.p50_s,
                "p99_s": s.p99_s,
            }
        )
    return rows


def scenario_markdown(result: ScenarioResult) -> str:
    """The README's tables: per block, each system's numbers, then HADIS against each."""
    lines = []
    for block, res in result.blocks.items():
        metric = _short(res.quality_metric)
        lines += [
            f"**{block}** ({res.workload['queries']:,} queries)",
            "",
            f"| system | policy | SLO viol. | authors' viol. | late | dropped | {metric} "
            f"| authors' {metric} | p50 s | p99 s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in scenario_rows(result, block):
            lines.append(
                f"| {r['system']} | `{r['policy']}` | {r['violation_ratio']:.1%} "
                f"| {r['violation_ratio_authors']:.1%} | {r['late']:,} | {r['dropped']:,} "
                f"| {_fmt(r['quality'], '.2f')} | {_fmt(r['quality_authors'], '.2f')} "
                f"| {_fmt(r['p50_s'], '.3g')} | {_fmt(r['p99_s'], '.3g')} |"
            )
        c = result.claims.get(block) or {}
        if c:
            lines += [
                "",
                f"| HADIS (`{c['hadis']}`) vs | fewer violations | (authors') "
                f"| {metric} gain | (authors') | (authors', best point) |",
                "|---|---|---|---|---|---|",
            ]
            for system, v in c["baselines"].items():
                lines.append(
                    f"| {system} | {_x(v['violation_reduction_x'])} "
                    f"| {_x(v['violation_reduction_x_authors'])} | {_pct(v['quality_gain'])} "
                    f"| {_pct(v['quality_gain_authors'])} "
                    f"| {_pct(v['peak_quality_gain_authors'])} |"
                )
        lines.append("")
    return "\n".join(lines)


def render_scenario(result: ScenarioResult, console: Console) -> None:
    """Each block's comparison (ours and the authors' accounting), then the claims check."""
    from rich import box
    from rich.table import Table

    from hadis_profile.termtext import esc

    st = result.settings
    console.print(
        esc(
            f"{result.name}: {st['queries']:,} queries of {st['trace']} x{st['time_scale']:g} "
            f"time, {st['gpus']} GPUs, SLO {st['slo_s']:g} s, batch latency {st['batch_latency']} "
            f"+ {st['discriminator_s_per_batch']:g} s per batch, "
            f"re-plan every {st['replan_s']:g} s."
        ),
        highlight=False,
        soft_wrap=True,
    )
    for block in result.blocks:
        t = Table(title=block, box=box.SIMPLE_HEAD, header_style="bold", title_justify="left")
        t.add_column("system")
        t.add_column("policy", no_wrap=True)
        for col in ("viol.", "a.viol.", "late", "drop", "FID", "a.FID"):
            t.add_column(col, justify="right")
        for r in scenario_rows(result, block):
            t.add_row(
                r["system"],
                r["policy"],
                f"{r['violation_ratio']:.1%}",
                f"{r['violation_ratio_authors']:.1%}",
                f"{r['late']:,}",
                f"{r['dropped']:,}",
                _fmt(r["quality"], ".2f"),
                _fmt(r["quality_authors"], ".2f"),
            )
        console.print(t)
        c = result.claims.get(block) or {}
        for system, v in (c.get("baselines") or {}).items():
            console.print(
                esc(
                    f"  {c['hadis']} vs {system}: {_x(v['violation_reduction_x'])} fewer "
                    f"violations ({_x(v['violation_reduction_x_authors'])} authors'), "
                    f"quality {_pct(v['quality_gain'])} ({_pct(v['quality_gain_authors'])}, "
                    f"best point {_pct(v['peak_quality_gain_authors'])})"
                ),
                highlight=False,
            )
    claims = st["paper_claims"]
    lo, hi = claims["violation_reduction_x"]
    console.print(
        esc(
            f"The paper claims {lo:g}-{hi:g}x fewer violations and up to "
            f"{claims['quality_gain']:.0%} better quality. viol. and FID are per query; a. is "
            "the authors' accounting (their figure: mean of 50 s points, 5-point moving average)."
        ),
        highlight=False,
        soft_wrap=True,
    )


def _finite_json(x: Any) -> Any:
    """JSON has no infinity: an x-fold over a zero violation ratio is written as "inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else None)
    if isinstance(x, dict):
        return {k: _finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_json(v) for v in x]
    return x


def write_scenario(result: ScenarioResult, out: str | os.PathLike) -> list[Path]:
    """summary.json and e1.md into ``out``; each block's usual files into ``out/<block>/``;
    all or none."""
    out = Path(out)
    blocks = {block: output_files(res) for block, res in result.blocks.items()}
    top = {
        SUMMARY_JSON: json.dumps(scenario_document(result), indent=1, allow_nan=False) + "\n",
        SCENARIO_MD: scenario_markdown(result),
    }
    paths = []
    with atomic_dir(out) as tmp:
        for block, files in blocks.items():
            (tmp / block).mkdir()
            for name, data in files.items():
                (tmp / block / name).write_bytes(data)
                paths.append(out / block / name)
        for name, text in top.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return [*paths, *(out / name for name in top)]


def scenario_document(result: ScenarioResult) -> dict:
    """A scenario's summary.json (and ``simulate --scenario ... --json``): settings, each
    block's config, workload and policies (with the authors' accounting), and the claims."""
    doc = {
        "scenario": result.name,
        "settings": result.settings,
        "blocks": {
            block: {
                "config": {k: getattr(res.config, k) for k in res.config.__dataclass_fields__},
                "workload": res.workload,
                "notes": res.notes,
                "policies": [
                    {
                        **s.to_dict(),
                        "authors_accounting": result.accounting[block][s.policy].to_dict(),
                    }
                    for s in res.summaries
                ],
            }
            for block, res in result.blocks.items()
        },
        "claims": result.claims,
    }
    return json.loads(json.dumps(_finite_json(doc), allow_nan=False, default=str))
