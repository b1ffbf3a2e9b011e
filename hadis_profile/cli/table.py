"""The cascade table: ``pareto`` (compile), ``validate``, ``show`` and ``resolve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import (
    BatchSizes,
    JsonOption,
    PairSelection,
    PlotOption,
    RunOption,
    console,
    err_console,
    parse_batch_sizes,
    verbs,
)

app = verbs()
apps = (app,)


@app.command("pareto", flags={"run_dir": "--run", "quality_metric": "--quality"})
def pareto_cmd(
    run: RunOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Table file to write.")] = Path(
        "table.json"
    ),
    quality: Annotated[
        str | None,
        typer.Option("--quality", help="Metric id (or scorer name) to rank by."),
    ] = None,
    per_pair: Annotated[
        bool,
        typer.Option("--per-pair", help="Keep each pair's own front, not only the global one."),
    ] = False,
    pairs: Annotated[
        PairSelection,
        typer.Option("--pairs", help="Candidate pairs: all, or adjacent in cost order."),
    ] = "all",
    grid: Annotated[int, typer.Option("--grid", help="Steps per axis of the (r, d) grid.")] = 10,
    exact: Annotated[
        bool, typer.Option("--exact", help="Every distinct threshold the data allows.")
    ] = False,
    nominal: Annotated[
        bool, typer.Option("--nominal", help="HADIS's nominal fractions and latency.")
    ] = False,
    plot: PlotOption = None,
    confidence: Annotated[
        str | None,
        typer.Option(
            "--confidence",
            help="Confidence scorer id (or unique prefix) to calibrate on (default: the only "
            "one, else the discriminator scored last).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compile a run into a Pareto cascade table (written atomically; nothing on failure)."""
    from hadis_profile.fileio import check_output_file
    from hadis_profile.pareto import compile_run
    from hadis_profile.report.terminal import render_compiled
    from hadis_profile.table import check_document, write_table

    for path in (out, plot):  # a bad path fails now, not after the sweep
        if path is not None:
            check_output_file(path)
    doc = compile_run(
        run,
        quality=quality,
        pairs=pairs,
        per_pair=per_pair,
        grid=grid,
        exact=exact,
        nominal=nominal,
        confidence=confidence,
    )
    check_document(doc, str(out))
    if plot is not None:
        from hadis_profile.report.plots import plot_pareto

        plot_pareto(doc, plot)
    write_table(out, doc)
    if as_json:
        from hadis_profile.report.documents import compiled_document
        from hadis_profile.report.terminal import write_json

        write_json(compiled_document(doc, out, plot))
    else:
        render_compiled(doc, out, console, plot=plot)


@app.command("validate")
def validate_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to check.")],
) -> None:
    """Check a table against its JSON Schema and its sha256; exit 1 with one sentence if not."""
    from hadis_profile.report.terminal import render_valid
    from hadis_profile.table import validate_file

    render_valid(table, validate_file(table), console)


@app.command("show")
def show_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to show.")],
    plot: PlotOption = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help="Show at most this many rows."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a table's provenance and rows; optionally plot its Pareto front."""
    from hadis_profile.report.plots import plot_pareto
    from hadis_profile.report.terminal import render_table, render_wrote
    from hadis_profile.table import load_table

    t = load_table(table)
    if plot is not None:
        from hadis_profile.fileio import check_output_file

        check_output_file(plot)
    if as_json:
        from hadis_profile.report.documents import table_document
        from hadis_profile.report.terminal import write_json

        write_json(table_document(t, limit=limit))
    else:
        render_table(t, console, limit=limit)
    if plot is not None:
        plot_pareto(t, plot)
        render_wrote(err_console if as_json else console, [plot])


@app.command(
    "resolve",
    flags={"slo_s": "--slo", "queue_delay_s": "--queue-delay", "overhead_s": "--overhead"},
)
def resolve_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to resolve against.")],
    qps: Annotated[float, typer.Option("--qps", help="Offered load, queries per second.")],
    slo: Annotated[float, typer.Option("--slo", help="Latency SLO in seconds.")],
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs in the cluster.")],
    reserved_gpus: Annotated[
        int, typer.Option("--reserved-gpus", help="GPUs kept out of the plan.")
    ] = 0,
    headroom: Annotated[
        float, typer.Option("--headroom", help="Capacity factor over the offered load (>= 1).")
    ] = 1.05,
    batch_sizes: Annotated[
        BatchSizes | None,
        typer.Option(
            "--batch-sizes",
            parser=parse_batch_sizes,
            metavar="B1,B2,...",
            help="Allowed batch sizes, comma-separated (e.g. 1,2,4).",
        ),
    ] = None,
    queue_delay: Annotated[
        float | None,
        typer.Option(
            "--queue-delay", help="Queueing delay per stage in seconds (default: one batch)."
        ),
    ] = None,
    overhead: Annotated[
        float | None,
        typer.Option(
            "--overhead",
            help="Routing overhead in seconds per query on every cascade path, replacing "
            "the router and discriminator costs the table records.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print Plan.to_dict() as JSON.")] = False,
) -> None:
    """Pick the best cascade, batch sizes and GPU split for a load, SLO and GPU budget.

    Exits 3 when no plan meets the request (errors exit 1 or 2), after printing why and
    the fallback; with --json the plan's "feasible", "reason" and "fallback" say the same.
    """
    from hadis_profile.errors import EXIT_INFEASIBLE
    from hadis_profile.report.terminal import render_plan, write_json
    from hadis_profile.resolve import load_table, resolve

    plan = resolve(
        load_table(table),
        qps=qps,
        slo_s=slo,
        gpus=gpus,
        reserved_gpus=reserved_gpus,
        headroom=headroom,
        batch_sizes=list(batch_sizes) if batch_sizes is not None else None,
        queue_delay_s=queue_delay,
        overhead_s=overhead,
    )
    if as_json:
        write_json(plan.to_dict(), indent=2)
    else:
        render_plan(plan, console, err_console)
    if not plan.feasible:
        raise typer.Exit(EXIT_INFEASIBLE)
