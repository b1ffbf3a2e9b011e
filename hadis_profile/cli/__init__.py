"""The ``hadis-profile`` command line: thin Typer commands that parse, delegate and render.

One module per verb group, each registering its commands on its own app:

* :mod:`.run`            ``run``: profile a zoo
* :mod:`.data`           ``import hadis-reference|files``, ``export``, ``migrate``
* :mod:`.router`         ``router features|score|fit``
* :mod:`.discriminator`  ``discriminator train|score``
* :mod:`.table`          ``pareto``, ``validate``, ``show``, ``resolve``
* :mod:`.simulate`       ``simulate``
* :mod:`.report`         ``report``
* :mod:`.inputs`         ``zoo validate|list|tiny``, ``prompts inspect``
* :mod:`.demo`           ``demo``
* :mod:`.options`        option types, parsers and the flag-naming command class

Commands import their implementation lazily, so ``hadis-profile --help`` stays
fast and never imports torch. Decisions live in the library, drawing in
:mod:`hadis_profile.report`. :func:`main` is the one error handler: a
:class:`~hadis_profile.errors.HadisError` or a command-line mistake becomes one
red sentence and its exit code, never a traceback. As a last line of defence
an ``OSError`` (a path the library did not wrap), a SQLite error or running out
of memory are one sentence too (exit 1); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from hadis_profile import __version__
from hadis_profile.cli import (
    data,
    demo,
    discriminator,
    inputs,
    report,
    router,
    run,
    simulate,
    table,
)
from hadis_profile.cli.options import HadisTyper, console, err_console
from hadis_profile.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    HadisError,
    ParameterError,
)

__all__ = ["app", "main"]

app = HadisTyper(
    name="hadis-profile",
    help="Profile diffusion models, compile a Pareto cascade table, and resolve serving plans.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from hadis_profile.report.terminal import say

        say(console, f"hadis-profile {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Profile diffusion models, compile a Pareto cascade table, and resolve serving plans."""


# The order of --help: measure, fill, calibrate, compile, serve, look, check inputs, try it all.
for _module in (run, data, router, discriminator, table, simulate, report, inputs, demo):
    for _sub in _module.apps:
        app.add_typer(_sub)


def _usage_sentence(e: Any) -> str:
    """Typer's usage error as one sentence, with where to find the command's help."""
    text = e.format_message().replace(": Value error, ", ": ").strip()
    text = " ".join(text.split())  # one line, whatever Typer wrapped
    if text and text[-1] not in ".!?":
        text += "."
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        text += f" See '{ctx.command_path} --help'."
    return text


def main() -> None:
    """Console-script entry point: every error is one sentence and an exit code."""
    from hadis_profile.report.terminal import render_error, say

    try:
        code = app(standalone_mode=False)  # Typer returns the exit code of typer.Exit
    except HadisError as e:
        # A command turns its ParameterErrors into flag-naming UsageErrors; one raised
        # anywhere else (a callback) still gets the default flag spelling.
        text = (
            e.for_flag("--" + e.param.replace("_", "-"))
            if isinstance(e, ParameterError)
            else str(e)
        )
        render_error(err_console, text)
        sys.exit(e.exit_code)
    except typer.Abort:
        render_error(err_console, "Aborted.")
        sys.exit(EXIT_ERROR)
    except OSError as e:  # the library names its paths; this is the safety net
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        render_error(err_console, f"{e.strerror or e}{where}.")
        sys.exit(EXIT_ERROR)
    except MemoryError:
        render_error(err_console, "Ran out of memory; the input is too large for this machine.")
        sys.exit(EXIT_ERROR)
    except typer.TyperException as e:  # bad command line, caught by Typer before any command
        if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            render_error(err_console, _usage_sentence(e))
        sys.exit(getattr(e, "exit_code", EXIT_USAGE))
    except Exception as e:
        import sqlite3

        if not isinstance(e, sqlite3.Error):
            raise
        render_error(err_console, f"A run store could not be read or written: {e}.")
        sys.exit(EXIT_ERROR)
    if code == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into this exit code
        say(err_console, "Interrupted; everything finished so far is saved.")
    sys.exit(code if isinstance(code, int) else EXIT_OK)
