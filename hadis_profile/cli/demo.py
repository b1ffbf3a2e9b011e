"""``hadis-profile demo``: the whole journey on this machine, run -> table -> plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import DemoSource, console, err_console, verbs

app = verbs()
apps = (app,)


@app.command("demo", flags={"n_prompts": "--prompts"})
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's files.")] = Path(
        "outputs/demo"
    ),
    source: Annotated[
        DemoSource,
        typer.Option(
            "--source",
            help="auto (tiny if torch and diffusers are installed), tiny (profile tiny "
            "random-weight pipelines on this CPU) or synthetic (no torch needed).",
        ),
    ] = "auto",
    prompts: Annotated[
        int | None, typer.Option("--prompts", help="Number of prompts (tiny: 2 to 12).")
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPU budget of the resolved plan.")] = 4,
) -> None:
    """The whole journey on this machine: measure -> run store -> Pareto table -> serving plan.

    Writes OUT/run (the run store), OUT/table.json, OUT/pareto.png and the report
    OUT/report/index.html (open it in a browser), and ends by saying where it is.
    """
    from hadis_profile.demo import run_demo
    from hadis_profile.report.terminal import render_demo
    from hadis_profile.resolve import load_table

    table_path, plan, request = run_demo(
        out, source=source, n_prompts=prompts, gpus=gpus, console=err_console
    )
    render_demo(load_table(table_path), plan, request, table_path, console)
