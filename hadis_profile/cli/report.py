"""``hadis-profile report``: a run (and its table, and a simulation) as an offline HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import JsonOption, console, err_console, run_dir, verbs

app = verbs()
apps = (app,)


@app.command("report", flags={"run_dir": "RUN", "sim_dir": "--sim"})
def report_cmd(
    run: Annotated[
        Path, typer.Argument(parser=run_dir, help="Run folder (or a run id under outputs/).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder to write (default RUN/report)."),
    ] = None,
    table: Annotated[
        Path | None,
        typer.Option(
            "--table",
            help="The table.json to show (default: the run compiled in memory, as pareto "
            "would with its defaults).",
        ),
    ] = None,
    sim: Annotated[
        Path | None,
        typer.Option("--sim", help="A simulate --out folder: its timelines and summary."),
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPU budget of the capacity map.")] = 8,
    hardware: Annotated[
        str | None,
        typer.Option("--hardware", help="Hardware label to show (when the run has several)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write an offline HTML report of a run: OUT/index.html, OUT/report.json, OUT/figures/.

    Latency (with every raw sample), throughput and memory per batch size, score and
    confidence distributions, the router's effect per pair, the Pareto front with its
    rows, a capacity map (resolve over load x SLO), the simulation (--sim), a contact
    sheet of saved images, and the provenance. The page loads nothing from the network.
    """
    from hadis_profile.report.html import write_report
    from hadis_profile.report.terminal import say, write_json

    tab = None
    if table is not None:
        from hadis_profile.table import load_table

        tab = load_table(table)
    where = out if out is not None else run / "report"
    rep = write_report(run, where, table=tab, sim_dir=sim, gpus=gpus, hardware=hardware)
    if as_json:
        write_json({"index": str(rep.index), "report_json": str(rep.json),
                    "figures": {k: str(v) for k, v in rep.figures.items()},
                    "notes": rep.data["notes"]})  # fmt: skip
        return
    for note in rep.data["notes"]:
        say(err_console, f"note: {note}")
    say(console, f"Wrote the report to {rep.index} ({len(rep.figures)} figures; numbers in "
                 f"{rep.json.name}).")  # fmt: skip
