"""``hadis-profile simulate``: replay a workload against the table and compare policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import (
    LatencyStat,
    Policy,
    SpareGpus,
    console,
    run_dir,
    verbs,
)

app = verbs()
apps = (app,)

# SimConfig fields and workload parameters whose flag is spelled differently.
_FLAGS = {
    "slo_s": "--slo",
    "replan_s": "--replan",
    "window_s": "--window",
    "duration_s": "--duration",
    "policies": "--policy",
}


class Pair(tuple):
    """``LIGHT,HEAVY`` from ``--pair``."""


def parse_pair(text: str) -> Pair:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise typer.BadParameter(f"'{text}' is malformed; expected LIGHT,HEAVY.")
    return Pair(parts)


@app.command("simulate", flags=_FLAGS)
def simulate_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to serve from.")],
    run: Annotated[
        Path,
        typer.Option(
            "--run",
            parser=run_dir,
            help="The run the table was compiled from (per-prompt truth).",
        ),
    ],
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs in the cluster.")],
    slo: Annotated[float, typer.Option("--slo", help="Latency SLO in seconds.")],
    trace: Annotated[
        Path | None,
        typer.Option("--trace", help="Trace file of 'arrival_time_ms,prompt_id' lines."),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Poisson load instead of a trace: RATE or START:END qps."),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds of Poisson load (with --rate).")
    ] = 600.0,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N queries of the trace.")
    ] = None,
    policy: Annotated[
        list[Policy] | None,
        typer.Option("--policy", "-p", help="Serving policy; repeatable (default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the Poisson workload.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the CSVs, summary.json and simulate.png."),
    ] = None,
    replan: Annotated[float, typer.Option("--replan", help="Seconds between re-plans.")] = 50.0,
    switch_s: Annotated[
        float, typer.Option("--switch-s", help="Seconds a GPU serves nothing after a model switch.")
    ] = 0.0,
    drop_factor: Annotated[
        float,
        typer.Option("--drop-factor", help="Drop queries still waiting at this x SLO (0: never)."),
    ] = 2.0,
    pair: Annotated[
        Pair | None,
        typer.Option(
            "--pair",
            parser=parse_pair,
            metavar="LIGHT,HEAVY",
            help="diffserve's pair (default: resolve's pick).",
        ),
    ] = None,
    headroom: Annotated[
        float, typer.Option("--headroom", help="Capacity factor the plans are sized with.")
    ] = 1.05,
    latency_stat: Annotated[
        LatencyStat, typer.Option("--latency-stat", help="Batch time (p99 as resolve).")
    ] = "p99",
    ewma_alpha: Annotated[
        float, typer.Option("--ewma-alpha", help="Weight of the latest second in the demand EWMA.")
    ] = 0.2,
    window: Annotated[
        float, typer.Option("--window", help="Seconds per row of windows.csv and the figure.")
    ] = 10.0,
    spare: Annotated[SpareGpus, typer.Option("--spare", help="GPUs a plan leaves over.")] = (
        "spread"
    ),
    strict_order: Annotated[
        bool, typer.Option("--strict-order", help="Refuse a trace whose lines are out of order.")
    ] = False,
) -> None:
    """Replay a trace (or Poisson load) on simulated GPUs and compare serving policies."""
    from hadis_profile.errors import UsageError
    from hadis_profile.report.terminal import render_wrote
    from hadis_profile.simulate import POLICIES, SimConfig, load_trace, parse_rate, simulate
    from hadis_profile.simulate.output import render_summary, write_outputs
    from hadis_profile.simulate.workload import poisson_workload
    from hadis_profile.store import RunStore
    from hadis_profile.table import load_table

    if (trace is None) == (rate is None):
        raise UsageError("Give exactly one workload: --trace FILE or --rate RATE[:END].")
    if limit is not None and trace is None:
        raise UsageError("--limit applies to --trace only.")
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the simulation's files.")
    names = [p.value for p in policy] if policy else list(POLICIES)
    config = SimConfig(
        gpus=gpus,
        slo_s=slo,
        replan_s=replan,
        switch_s=switch_s,
        drop_factor=drop_factor if drop_factor > 0 else None,
        headroom=headroom,
        latency_stat=latency_stat,
        ewma_alpha=ewma_alpha,
        window_s=window,
        spare=spare,
        pair=tuple(pair) if pair is not None else None,
    )
    config.check()
    tab = load_table(table)
    with RunStore.open(run) as store:
        meas = store.load_measurements()
    if trace is not None:
        workload = load_trace(trace, limit=limit, strict_order=strict_order)
    else:
        start, end = parse_rate(rate)
        workload = poisson_workload(start, end, duration, meas.n_prompts, seed=seed)
    result = simulate(tab, meas, workload, names, config)
    render_summary(result, console)
    if out is not None:
        paths = write_outputs(result, out)
        render_wrote(console, [p.name for p in paths], out)
