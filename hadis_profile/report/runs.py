"""Rich views of a profiling run: its summary table, or the plan of a dry run.

They read a finished :class:`~hadis_profile.measure.summary.RunReport` (plain
data) and decide nothing. Rich is imported inside, and model names, notes and
messages are escaped (they are user text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hadis_profile.measure.summary import RunReport


_SHORT = {"clip_score": "clip", "pick_score": "pick"}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g}"


def _secs(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 100 else f"{seconds:.3g}"


def _estimate_line(report: RunReport) -> str:
    """The dry run's footer: total estimated device time and where it comes from."""
    total = report.estimate_s
    sources = {m.per_image_source for m in report.models if m.per_image_source}
    missing = sum(1 for m in report.models if m.estimate_s is None)
    if total is None:
        return "Estimated GPU time: unknown (no model has a stored batch-1 latency or a probe)"
    if not sources:
        return "Estimated GPU time: 0 h (nothing left to measure)"
    if "probe" in sources:
        origin = f"from a probe on {report.device_name}"
        if "stored" in sources:
            origin += " and stored batch-1 latencies"
    else:
        origin = f"from stored batch-1 latencies under label '{report.hardware_label}'"
    line = (
        f"Estimated GPU time: {_hours(total)} h ({_secs(total)} s; upper bound at batch size 1; "
        f"{origin})"
    )
    if missing:
        line += f"; {missing} model{'s' if missing > 1 else ''} without an estimate (-) not counted"
    return line


def render_run(report: RunReport, console: Any) -> None:
    """The summary table after a run (or the plan of a dry run)."""
    from rich import box
    from rich.table import Table

    from hadis_profile.termtext import esc

    if report.dry_run:
        # Narrow columns, short cells: readable at 80 columns. A model's warnings (often a
        # whole sentence with the command that fetches it) go below the table, one line each.
        t = Table(
            title=esc(
                f"Plan for {report.run_dir} on {report.device_name} "
                f"(label '{report.hardware_label}'); nothing was run"
            ),
            box=box.SIMPLE_HEAD,
            title_justify="left",
            pad_edge=False,
            collapse_padding=True,
            caption="batches: sizes to time; prompts: left to generate / all; s/img: probe or "
            "stored seconds per image at batch 1; est. h: estimated hours.",
            caption_justify="left",
        )
        t.add_column("model", no_wrap=True, overflow="fold")
        t.add_column("steps", justify="right", no_wrap=True)
        t.add_column("batches", overflow="fold")
        t.add_column("prompts", justify="right", no_wrap=True)
        t.add_column("s/img", justify="right", no_wrap=True)
        t.add_column("est. h", justify="right", no_wrap=True)
        t.add_column("checkpoint", no_wrap=True)
        warnings = []
        for m in report.models:
            per_image = est = "-"
            if m.per_image_s is not None:
                stored = " (stored)" if m.per_image_source == "stored" else ""
                per_image = f"{m.per_image_s:.3g}{stored}"
            if m.estimate_s is not None:
                est = _hours(m.estimate_s)
            warnings += [w if m.name in w else f"{m.name}: {w}" for w in m.warnings]
            t.add_row(
                esc(m.name),
                str(m.steps),
                ",".join(map(str, m.latency)) or "-",
                f"{m.prompts_total - m.prompts_done}/{m.prompts_total}",
                per_image,
                est,
                "[red]see below[/]" if m.warnings else "[green]ok[/]",
            )
        console.print(t)
        for w in warnings:
            console.print(f"[red]warning:[/] {esc(w)}", highlight=False, soft_wrap=True)
        for note in report.notes:
            console.print(f"note: {esc(note)}", highlight=False, soft_wrap=True)
        console.print(
            f"{report.units_done} units to measure, {report.units_skipped} already done.",
            highlight=False,
        )
        console.print(_estimate_line(report), highlight=False, soft_wrap=True)
        return
    metrics = sorted({k for m in report.models for k in m.mean_scores})
    t = Table(
        title=f"Run {report.run_dir} on {report.device_name} (label '{report.hardware_label}')",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
        caption="b1 ms: p50 at batch 1; max b: largest feasible batch; ms/img: p50 per "
        "image there; mem: peak memory (GiB); done: prompts with all images; scores and "
        "conf: means over images.",
        caption_justify="left",
    )
    t.add_column("model", no_wrap=True, overflow="fold")
    for head in ("steps", "b1 ms", "max b", "ms/img", "mem", "done"):
        t.add_column(head, justify="right", no_wrap=True)
    for metric in metrics:
        scorer = metric.split(":", 1)[0]
        t.add_column(esc(_SHORT.get(scorer, scorer[:8])), justify="right", no_wrap=True)
    t.add_column("conf", justify="right", no_wrap=True)
    for m in report.models:
        feasible = {b: s for b, s in m.latency.items() if s is not None and not s.infeasible}
        b1 = feasible.get(1)
        top = max(feasible) if feasible else None
        peak = max((s.peak_mem_bytes or 0) for s in feasible.values()) if feasible else 0
        t.add_row(
            esc(m.name),
            str(m.steps),
            _ms(b1.p50_s) if b1 else "-",
            str(top) if top else "-",
            _ms(feasible[top].p50_s / top) if top else "-",
            f"{peak / 2**30:.2f}" if peak else "-",
            f"{m.prompts_done}/{m.prompts_total}" if m.prompts_total else "-",
            *(f"{m.mean_scores[x]:.3g}" if x in m.mean_scores else "-" for x in metrics),
            f"{m.mean_confidence:.3g}" if m.mean_confidence is not None else "-",
        )
    console.print(t)
    for note in report.notes:
        console.print(f"note: {esc(note)}", highlight=False, soft_wrap=True)
    console.print(
        f"Measured {report.units_done} units now, {report.units_skipped} were already done; "
        f"the run is in {report.run_dir}.",
        highlight=False,
        soft_wrap=True,
    )
