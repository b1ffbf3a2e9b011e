"""Terminal views (Rich): cascade tables, serving plans, and what each command reports.

Every function here takes finished results and a console and prints them; none
decides anything (which plan to serve, which scorer ranks a table): those
decisions are made by the library before a result reaches this module. Rich is
imported inside the functions, so importing this module costs nothing and the
serving path never pays for it.

Text from users (paths, model names, prompts, messages) is printed verbatim and
harmless: :func:`clean` removes control characters (ANSI escape sequences,
carriage returns, bidirectional overrides) that would let a name repaint the
terminal, and :func:`esc` also escapes Rich markup, so a model called
``light[/x]`` or ``[link=...]`` is shown as written, never interpreted. Plain
sentences go through :func:`say` (no markup, cleaned); every user value placed
in markup (a cell, a title, a panel line) goes through :func:`esc`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadis_profile.table import CascadeTable
from hadis_profile.termtext import clean, esc

if TYPE_CHECKING:
    from rich.console import Console

    from hadis_profile.importer import ImportSummary
    from hadis_profile.prompts import PromptSet
    from hadis_profile.zoo import Zoo


def say(console: Console, text: str) -> None:
    """One plain sentence, printed verbatim (cleaned; no markup, highlighting or hard wrap)."""
    console.print(clean(text), markup=False, highlight=False, soft_wrap=True)


def render_error(console: Console, message: str) -> None:
    """The one-line error every failed command ends with."""
    from rich.text import Text

    line = Text.assemble(("error:", "bold red"), " ", clean(message, one_line=True))
    console.print(line, highlight=False, soft_wrap=True)


def write_json(obj: Any, *, indent: int = 1) -> None:
    """A result as JSON on stdout (strict: NaN is refused), for scripts."""
    sys.stdout.write(json.dumps(obj, indent=indent, allow_nan=False) + "\n")


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
            f"[bold]run[/] {esc(prov.get('run_id') or '—')}   [bold]hardware[/] "
            f"{esc(hw.get('label', '—'))} ({esc(hw.get('device_name') or '—')})",
            f"[bold]prompts[/] {esc(prov.get('n_prompts', '—'))}   [bold]prompt set[/] "
            f"{esc((prov.get('prompt_set_hash') or '—')[:12])}   [bold]zoo[/] "
            f"{esc((prov.get('zoo_hash') or '—')[:12])}",
            f"[bold]quality[/] {esc(metric)} {_direction(t, metric)}   [bold]sweep[/] "
            f"{esc(grid_text)}, {esc(prov.get('pairs', '?'))} pairs"
            f"{', per pair' if prov.get('per_pair') else ''}",
            f"[bold]rows[/] {len(rows)} ({n_front} on the front)   [bold]router[/] "
            f"{'yes' if t.router else 'none'}   [bold]sha256[/] {esc(t.sha256[:16])}   "
            f"[bold]created[/] {esc(t.document.get('created_at'))}",
        ]
    )
    # Model names are long; on narrow terminals rows name models by cost rank and
    # the panel carries the legend.
    order = sorted(t.models, key=lambda m: t.models[m].get("order", 0))
    index = {name: i for i, name in enumerate(order)}
    wide = console.width >= 150
    if not wide:
        legend = "   ".join(
            f"[bold]{index[m]}[/] {esc(m)} ({_num(_batch1(t.models[m]), '.3g')} s)" for m in order
        )
        header += f"\n[bold]models[/] {legend}"
    console.print(Panel(header, title=esc(f"cascade table {t.source}"), expand=False))

    def pair(row: dict) -> str:
        if wide:
            return esc(_pair_label(row))
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
        f"{esc(metric.split(':', 1)[0]) if wide else 'quality'}\n{_direction(t, metric)}",
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


def render_calibration(res: Any, console: Console) -> None:
    """Print a router fit (``router.CalibrationResult``): held-out routing vs the baselines."""
    from rich.table import Table

    fr = res.fitted.fractions
    arrow = "↑" if res.higher_is_better else "↓"
    pair = esc(" → ".join(res.pair) if res.pair else "light → heavy")
    metric = esc(res.metric or "quality")
    t = Table(
        title=f"Router fit ({esc(res.method)}, alpha {res.alpha:g}) on {pair}, {metric} {arrow}: "
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
        w.add_row(esc(name), *before, f"{res.weights[i]:.4g}")
    console.print(w)


def plan_panel(plan, title: str):  # plan: resolve.Plan
    """A Rich panel of a serving plan: the row, its traffic split and per-model GPUs."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    def num(x, unit=""):
        return "-" if x is None else f"{x:.4g}{unit}"

    fr = plan.fractions
    pair = esc(plan.light if plan.heavy is None else f"{plan.light} -> {plan.heavy}")
    head = Table.grid(padding=(0, 2))
    head.add_row("row", f"{plan.row} ({esc(plan.kind)}): [bold]{pair}[/]")
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
    head.add_row("quality", f"{num(plan.quality)} ({esc(plan.quality_metric)})")
    slo = "no SLO" if plan.slo_s is None else f"SLO {plan.slo_s:g} s"
    head.add_row("worst case", f"{num(plan.worst_case_latency_s, ' s')} ({slo})")
    head.add_row("load", f"{plan.qps:.4g} qps, headroom {plan.headroom:g}")
    head.add_row("GPUs", f"{plan.total_gpus} of {plan.gpu_budget} ({plan.reserved_gpus} reserved)")
    models = Table(box=None, header_style="bold")
    for col in ("model", "role", "load", "GPUs", "batch", "p99 batch s", "capacity qps"):
        models.add_column(col, justify="left" if col in ("model", "role") else "right")
    for a in plan.allocations:
        models.add_row(
            esc(a.model),
            esc(a.role),
            f"{a.load_fraction:.1%}",
            str(a.gpus),
            "-" if a.batch_size is None else str(a.batch_size),
            num(a.batch_latency_s),
            num(a.throughput_qps),
        )
    return Panel(Group(head, "", models), title=title, expand=False)


def render_plan(plan: Any, console: Console, err_console: Console) -> None:
    """A ``resolve`` answer: the plan, or why none is feasible and the fallback (if any)."""
    if plan.feasible:
        console.print(plan_panel(plan, "[green]serving plan[/]"))
        return
    err_console.print(f"[bold red]infeasible:[/] {esc(plan.reason)}", highlight=False)
    fb = plan.fallback
    if fb is None:
        say(err_console, "No fallback: no configuration fits the GPU budget at all.")
        return
    ignored = " and ".join("the SLO" if r == "slo_s" else "the requested load" for r in fb.relaxed)
    title = f"[yellow]fallback: highest sustainable load, ignoring {ignored}[/]"
    console.print(plan_panel(fb, title))


# --------------------------------------------------------------------------- command reports


def render_wrote(console: Console, names: Sequence[str | Path], where: Path | None = None) -> None:
    """``Wrote a, b.`` or ``Wrote a, b to FOLDER.``"""
    listed = ", ".join(str(n) for n in names)
    say(console, f"Wrote {listed}" + (f" to {where}." if where is not None else "."))


def render_compiled(doc: dict, out: Path, console: Console, *, plot: Path | None = None) -> None:
    """One sentence on a compiled table: rows kept of those swept, the ranking metric, files."""
    payload = doc["payload"]
    sweep = payload["provenance"]["sweep"]
    singles = sum(1 for r in payload["rows"] if r["kind"] == "single")
    say(
        console,
        f"Kept {len(payload['rows']) - singles} of {sweep['configurations_evaluated']:,} "
        f"configurations (+{singles} single-model rows), ranked by "
        f"{payload['provenance']['quality_metric']}; wrote {out} (sha256 {doc['sha256'][:12]})"
        + (f" and {plot}" if plot is not None else "")
        + ".",
    )


def render_valid(path: Path, table: CascadeTable, console: Console) -> None:
    """The confirmation of ``validate``."""

    console.print(
        f"[green]{esc(str(path))} is a valid cascade table[/] (schema "
        f"{table.document['schema_version']}, {len(table.rows)} rows, sha256 {table.sha256[:12]}).",
        highlight=False,
        soft_wrap=True,
    )


def render_demo(
    table: CascadeTable, plan: Any, request: dict, table_path: Path, console: Console
) -> None:
    """The demo's table, the plan it resolved (or its fallback) and the command to redo it."""
    render_table(table, console, limit=12)
    title = (
        f"serving plan for {request['qps']:g} qps, SLO {request['slo_s']:g} s, "
        f"{request['gpus']} GPUs"
    )
    console.print(plan_panel(plan if plan.feasible else plan.fallback, title))
    say(
        console,
        f"Wrote {table_path}, {table_path.parent / 'pareto.png'} and the run store "
        f"{table_path.parent / 'run'}.\nNext: hadis-profile resolve {table_path} "
        f"--qps {request['qps']:g} --slo {request['slo_s']:g} --gpus {request['gpus']}",
    )
    say(
        console, f"The report (open it in a browser): {table_path.parent / 'report' / 'index.html'}"
    )


def render_import_summary(summary: ImportSummary, console: Console) -> None:
    """What an import put in the run: prompts, models, confidences, latencies, router."""
    from rich.table import Table

    t = Table(title=esc(f"Imported run '{summary.run_id}'"), show_header=False)
    t.add_row("run folder", esc(str(summary.run_dir)))
    t.add_row("prompts", f"{summary.n_prompts}  (set hash {summary.prompt_set_hash[:12]}...)")
    t.add_row("models", esc(", ".join(summary.models)))
    t.add_row(
        "confidences",
        f"{summary.confidence_rows} images ({summary.images_per_prompt} per prompt)"
        if summary.confidence_rows
        else "none",
    )
    t.add_row("latency points", str(summary.latency_points))
    t.add_row("router features", esc(", ".join(summary.router_features)) or "none")
    t.add_row("external configurations", str(summary.external_rows))
    if summary.external_latency_max_dev_s is not None:
        t.add_row(
            "external latency check",
            f"max |nominal - file| = {summary.external_latency_max_dev_s:.4f} s",
        )
    console.print(t)


def render_export(run: Path, fmt: str, paths: Sequence[Path], console: Console) -> None:
    """The files an export wrote, with their sizes."""
    from rich.table import Table

    t = Table(title=esc(f"Exported {run} as {fmt}"))
    t.add_column("file")
    t.add_column("bytes", justify="right")
    for p in paths:
        t.add_row(esc(str(p)), f"{p.stat().st_size:,}")
    console.print(t)


def render_zoo(zoo: Zoo, console: Console) -> None:
    """A validated zoo, one row per model, and its hash."""
    from rich import box
    from rich.table import Table

    where = esc(str(zoo.path or "the zoo"))
    table = Table(
        title=where,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("name", no_wrap=True)  # the key: never truncated
    table.add_column("family")
    table.add_column("source", overflow="ellipsis")  # shrinks first on narrow terminals
    table.add_column("steps", justify="right")
    table.add_column("cfg", justify="right")
    table.add_column("size", no_wrap=True)
    table.add_column("dtype")
    for m in zoo:
        source = m.source + (f"@{m.revision}" if m.revision else "")
        if m.components:
            source += " (+" + ", ".join(c.component for c in m.components) + ")"
        cells = (m.name, m.family or "-", source, str(m.steps), f"{m.guidance_scale:g}", m.size)
        table.add_row(*map(esc, cells), m.dtype)
    console.print(table)
    console.print(
        f"[green]{where} is valid:[/] {len(zoo)} models, zoo hash {zoo.hash()[:12]}.",
        highlight=False,
    )


def render_tiny_zoo(tiny: Any, seconds: float, console: Console) -> None:
    """Where ``zoo tiny`` put the pipelines (``measure.tiny.TinyZoo``)."""
    say(
        console,
        f"Built {len(tiny.model_names)} tiny models in {seconds:.1f} s: "
        f"{tiny.zoo_path} (CLIP metric backbone: {tiny.clip_path}).",
    )


def render_prompt_set(ps: PromptSet, console: Console, *, show: int = 5) -> None:
    """Counts, hash and the first ``show`` prompts of a loaded prompt set."""
    say(console, f"{ps.source}" + (f" (column {ps.column!r})" if ps.column else ""))
    say(console, f"  read        {ps.n_read:,} records, {ps.n_blank:,} blank dropped")
    say(console, f"  duplicates  {ps.n_duplicates:,} dropped, {ps.n_unique:,} unique")
    picked = []
    if ps.limit is not None:
        picked.append(f"first {ps.limit:,}")
    if ps.sample is not None:
        picked.append(f"sample {ps.sample:,} with seed {ps.seed}")
    say(console, f"  prompts     {len(ps):,}" + (f" ({', then '.join(picked)})" if picked else ""))
    say(console, f"  sha256      {ps.sha256}")
    for i, text in enumerate(ps.texts[:show], start=1):
        say(console, f"  {i:>3}. {text if len(text) <= 160 else text[:157] + '...'}")


def render_router_written(what: str, n_prompts: int, out: Path, console: Console) -> None:
    """``router features|score --out``: where the CSV went."""
    say(console, f"Wrote the {what} of {n_prompts:,} prompts to {out}.")


def render_router_stored(
    n_prompts: int, run: Path, console: Console, *, replaced_fitted: bool
) -> None:
    """``router score --run``: the run now holds features, scores and the spec."""
    replaced = " (replacing its fitted router)" if replaced_fitted else ""
    say(console, f"Stored router features and scores of {n_prompts:,} prompts in {run}{replaced}.")


def render_fit_stored(run: Path, console: Console) -> None:
    """``router fit``: the fitted router is in the run, and what uses it."""
    say(console, f"Stored the fitted router in {run}; `hadis-profile pareto --run {run}` uses it.")


def render_training(res: Any, console: Console) -> None:
    """A trained discriminator head (``discriminator.TrainResult``): data, accuracy, files."""
    from rich.table import Table

    m, data = res.metadata["metrics"], res.metadata["data"]
    t = Table(title=esc(f"Discriminator head {res.scorer_id}"), show_header=False)
    t.add_row("encoder", esc(res.metadata["encoder"]))
    t.add_row("real / generated", f"{data['n_real']} / {data['n_generated']}")
    t.add_row(
        "train / validation",
        f"{sum(m['n_train'].values())} / {sum(m['n_val'].values())} (stratified)",
    )
    t.add_row("validation accuracy", f"{m['val_accuracy']:.3f}")
    t.add_row("validation AUC", f"{m['val_auc']:.3f}")
    t.add_row(
        "features",
        esc(f"{res.cache_hits} cached, {res.encoded} encoded ({res.cache_path})"),
    )
    if res.unreadable:
        path, why = res.unreadable[0]
        t.add_row("skipped", esc(f"{len(res.unreadable)} unreadable (first {path}: {why})"))
    t.add_row("head", esc(f"{res.head_path} (+ {res.metadata_path.name})"))
    console.print(t)


def render_scoring(res: Any, console: Console) -> None:
    """Confidences written by ``discriminator score`` (``discriminator.ScoreResult``)."""
    means = ", ".join(f"{k} {v:.3f}" for k, v in res.mean_confidence.items())
    say(
        console,
        f"Scored {res.scored} images under {res.scorer_id} ({res.already} were already "
        f"scored); mean confidence: {means or '-'}.",
    )
