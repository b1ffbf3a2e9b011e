"""``hadis-profile simulate``: replay a workload against the table and compare policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from hadis_profile.cli.options import (
    SEED,
    JsonOption,
    LatencyStat,
    Policy,
    SpareGpus,
    console,
    err_console,
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
    "tick_s": "--tick",
    "batch_overhead_s": "--batch-overhead",
}


class Pair(tuple):
    """``LIGHT,HEAVY`` from ``--pair``."""


def parse_pair(text: str) -> Pair:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise typer.BadParameter(f"'{text}' is malformed; expected LIGHT,HEAVY.")
    return Pair(parts)


#: our policies (simulate.POLICIES); the rest of Policy are the authors' (simulate.authors)
_OURS = frozenset(
    ("hadis", "diffserve", "router-only", "disc-only", "clipper-light", "clipper-heavy",
     "proteus", "infaas")
)  # fmt: skip
#: the engine's and the scenarios' choices (simulate.engine, simulate.scenarios)
Demand = Literal["arrivals", "in-flight"]
Dispatch = Literal["shared", "random"]
BatchTime = Literal["ceil", "hadis-worker"]
Scenario = Literal["hadis-e1"]


@app.command("simulate", flags=_FLAGS)
def simulate_cmd(
    table: Annotated[
        Path | None, typer.Argument(help="The table.json to serve from (not with --scenario).")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            parser=run_dir,
            help="The run the table was compiled from (per-prompt truth).",
        ),
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs in the cluster.")] = None,
    slo: Annotated[float | None, typer.Option("--slo", help="Latency SLO in seconds.")] = None,
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
        int | None,
        typer.Option("--limit", help="Use only the first N queries of the trace (or scenario)."),
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            help="Multiply the trace's arrival times by this: 10 replays a 10x compressed trace "
            "(HADIS's E1 testbed) in the paper's units.",
        ),
    ] = 1.0,
    policy: Annotated[
        list[Policy] | None,
        typer.Option(
            "--policy",
            "-p",
            metavar="POLICY",
            help="Ours: "
            + ", ".join(p.value for p in Policy if p.value in _OURS)
            + "; or the HADIS authors' definition of a system: "
            + ", ".join(p.value for p in Policy if p.value not in _OURS)
            + ". Repeatable (default: ours).",
        ),
    ] = None,
    scenario: Annotated[
        Scenario | None,
        typer.Option(
            "--scenario",
            help="Run a named experiment instead: hadis-e1 is HADIS's Figure 7 set up from the "
            "reference data, every system (docs/simulate.md).",
        ),
    ] = None,
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="With --scenario: the folder holding hadis-reference/ and traces/."
        ),
    ] = Path("../shared/data"),
    batch_latency: Annotated[
        str | None,
        typer.Option(
            "--batch-latency",
            help="With --scenario: the batch latency model (default linear:0.9, the testbed's; "
            "scale:2=2.21,4=4.47 is SD3.5 Large as measured).",
        ),
    ] = None,
    blocks: Annotated[
        str | None,
        typer.Option(
            "--blocks",
            help="With --scenario hadis-e1: authors, authors-arrival-demand and/or ours, "
            "comma-separated (default authors,ours).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the Poisson workload and of --dispatch random.", **SEED)
    ] = 0,
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
    admission: Annotated[
        float,
        typer.Option(
            "--admission",
            help="Workers drop a query that would finish past this x SLO (HADIS: 1.5; 0: off).",
        ),
    ] = 0.0,
    pair: Annotated[
        Pair | None,
        typer.Option(
            "--pair",
            parser=parse_pair,
            metavar="LIGHT,HEAVY",
            help="diffserve's pair (default: resolve's pick); diffserve-fixed's (default: the "
            "second cheapest model and the most expensive).",
        ),
    ] = None,
    headroom: Annotated[
        float, typer.Option("--headroom", help="Capacity factor the plans are sized with.")
    ] = 1.05,
    latency_stat: Annotated[
        LatencyStat, typer.Option("--latency-stat", help="Batch time (p99 as resolve).")
    ] = "p99",
    batch_time: Annotated[
        BatchTime,
        typer.Option(
            "--batch-time",
            help="A batch's time: the smallest profiled batch that holds it, or the HADIS "
            "authors' worker lookup.",
        ),
    ] = "ceil",
    batch_overhead: Annotated[
        float,
        typer.Option(
            "--batch-overhead", help="Seconds added to every batch (HADIS's discriminator)."
        ),
    ] = 0.0,
    dispatch: Annotated[
        Dispatch,
        typer.Option(
            "--dispatch",
            help="One queue per model, or one per worker fed at random (HADIS's load balancer).",
        ),
    ] = "shared",
    demand: Annotated[
        Demand,
        typer.Option(
            "--demand",
            help="The demand estimate: an EWMA of arrivals per tick, or of the queries in the "
            "system (HADIS's controller).",
        ),
    ] = "arrivals",
    tick: Annotated[
        float, typer.Option("--tick", help="Seconds between demand updates (controller ticks).")
    ] = 1.0,
    planner_clock: Annotated[
        float | None,
        typer.Option(
            "--planner-clock",
            help="The authors' planners round latencies to 0.1 s on a clock this many times "
            "ours (0.1 for E1 in paper units).",
        ),
    ] = None,
    ewma_alpha: Annotated[
        float, typer.Option("--ewma-alpha", help="Weight of the latest tick in the demand EWMA.")
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
    as_json: JsonOption = False,
) -> None:
    """Replay a trace (or Poisson load) on simulated GPUs and compare serving policies."""
    from hadis_profile.errors import UsageError
    from hadis_profile.pareto import measurements_for
    from hadis_profile.report.terminal import render_wrote
    from hadis_profile.simulate import POLICIES, SimConfig, load_trace, parse_rate, simulate
    from hadis_profile.simulate.output import render_summary, write_outputs
    from hadis_profile.simulate.workload import poisson_workload
    from hadis_profile.store import RunStore
    from hadis_profile.table import load_table

    if out is not None:  # before the simulation: a bad --out fails in a second, not after
        from hadis_profile.fileio import check_output_dir

        check_output_dir(out)
    if scenario is not None:
        given = {
            "TABLE": (table, None), "--run": (run, None), "--gpus": (gpus, None),
            "--slo": (slo, None), "--trace": (trace, None), "--rate": (rate, None),
            "--policy": (policy, None), "--time-scale": (time_scale, 1.0),
            "--replan": (replan, 50.0), "--drop-factor": (drop_factor, 2.0),
            "--admission": (admission, 0.0), "--dispatch": (dispatch, "shared"),
            "--demand": (demand, "arrivals"), "--tick": (tick, 1.0),
            "--batch-overhead": (batch_overhead, 0.0), "--batch-time": (batch_time, "ceil"),
            "--planner-clock": (planner_clock, None), "--pair": (pair, None),
        }  # fmt: skip
        clash = [flag for flag, (value, default) in given.items() if value != default]
        if clash:
            raise UsageError(
                f"--scenario {scenario} sets its own cluster, workload and rules; drop {clash[0]}."
            )
        _scenario(data, out, limit, batch_latency, blocks, seed, as_json)
        return
    for flag, value in (("--batch-latency", batch_latency), ("--blocks", blocks)):
        if value is not None:
            raise UsageError(f"{flag} applies to --scenario only.")
    missing = [f for f, v in (("TABLE", table), ("--run", run), ("--gpus", gpus),
                              ("--slo", slo)) if v is None]  # fmt: skip
    if missing:
        raise UsageError(f"Give {', '.join(missing)} (or run a --scenario).")
    if (trace is None) == (rate is None):
        raise UsageError("Give exactly one workload: --trace FILE or --rate RATE[:END].")
    if limit is not None and trace is None:
        raise UsageError("--limit applies to --trace only.")
    if time_scale != 1 and trace is None:
        raise UsageError("--time-scale applies to --trace only.")
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
        tick_s=tick,
        demand=demand,
        admission=admission if admission > 0 else None,
        batch_overhead_s=batch_overhead,
        batch_time=batch_time,
        dispatch=dispatch,
        seed=seed,
        planner_clock=planner_clock,
    )
    config.check()
    tab = load_table(table)
    with RunStore.open(run, readonly=True) as store:
        meas = measurements_for(store)
    if trace is not None:
        workload = load_trace(trace, limit=limit, strict_order=strict_order)
        workload = workload.time_scaled(time_scale)
    else:
        start, end = parse_rate(rate)
        workload = poisson_workload(start, end, duration, meas.n_prompts, seed=seed)
    result = simulate(tab, meas, workload, names, config)
    if as_json:
        from hadis_profile.report.terminal import write_json
        from hadis_profile.simulate.output import summary_document

        write_json(summary_document(result))
    else:
        render_summary(result, console)
    if out is not None:
        paths = write_outputs(result, out)
        render_wrote(err_console if as_json else console, [p.name for p in paths], out)


def _scenario(
    data: Path,
    out: Path | None,
    limit: int | None,
    batch_latency: str | None,
    blocks: str | None,
    seed: int,
    as_json: bool = False,
) -> None:
    """``simulate --scenario hadis-e1``: the scenario fixes the cluster, workload and policies."""
    from hadis_profile.report.terminal import say
    from hadis_profile.simulate.output import render_scenario, write_scenario
    from hadis_profile.simulate.scenarios import E1_BATCH_LATENCY, hadis_e1

    parts = tuple(b.strip() for b in blocks.split(",")) if blocks else ("authors", "ours")
    result = hadis_e1(
        data,
        batch_latency=batch_latency or E1_BATCH_LATENCY,
        limit=limit,
        blocks=parts,
        seed=seed,
    )
    if as_json:
        from hadis_profile.report.terminal import write_json
        from hadis_profile.simulate.output import scenario_document

        write_json(scenario_document(result))
    else:
        render_scenario(result, console)
    if out is not None:
        paths = write_scenario(result, out)
        say(
            err_console if as_json else console,
            f"Wrote {len(paths)} files to {out} (summary.json, e1.md, one folder per block).",
        )
