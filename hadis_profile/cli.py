"""The ``hadis-profile`` command line: thin Typer commands that parse and delegate.

Every command imports its implementation lazily, so ``hadis-profile --help``
stays fast and never imports torch. A :class:`~hadis_profile.errors.HadisError`
becomes one red sentence and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from hadis_profile import __version__
from hadis_profile.errors import HadisError

app = typer.Typer(
    name="hadis-profile",
    help="Profile diffusion models, compile a Pareto cascade table, and resolve serving plans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"hadis-profile {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Profile diffusion models, compile a Pareto cascade table, and resolve serving plans."""


def main() -> None:
    """Console-script entry point: user errors print one sentence, never a traceback."""
    try:
        app()  # standalone: Click prints usage errors and exits 2 by itself
    except HadisError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("Interrupted; everything finished so far is saved.")
        sys.exit(130)


if __name__ == "__main__":
    main()
