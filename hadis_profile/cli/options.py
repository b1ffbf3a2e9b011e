"""What the commands share: option types, value parsers, and flag-naming errors.

A flag that several commands take (``--run``, ``--weights``, ``--batch-sizes``,
``--online``) is declared here once, so it is spelled, parsed and refused the
same way everywhere. Choices are types (``Literal`` or ``Enum``), so ``--help``
lists them and Typer refuses anything else with exit code 2 before a command
runs. Parsers raise ``typer.BadParameter``, which Typer reports naming the flag.

The library names its parameters in errors (:class:`ParameterError`);
:class:`HadisCommand` rewrites such an error to name the flag that fed the
parameter. Every command is registered through :class:`HadisTyper`, which makes
it a :class:`HadisCommand` and takes the per-command ``flags=`` overrides.

Only Typer, Rich's Console, ``hadis_profile.errors`` and ``hadis_profile.limits`` are
imported here: ``--help`` stays fast.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from rich.console import Console
from typer.core import TyperCommand

from hadis_profile.errors import ParameterError, UsageError
from hadis_profile.limits import MAX_SEED

console = Console()
err_console = Console(stderr=True)

#: The range of every ``--seed`` (hadis_profile.limits.MAX_SEED): ``typer.Option(**SEED)``.
SEED = {"min": 0, "max": MAX_SEED}

#: Where a bare run id points: ``--run hadis-ref`` means ``outputs/hadis-ref``.
RUNS_DIR = Path("outputs")


# --------------------------------------------------------------------------- flag-naming errors


class HadisCommand(TyperCommand):
    """A command that turns a library :class:`ParameterError` into one naming its flag.

    The flag for a parameter is, in order: the command's override
    (``flag_overrides``), the option ``--`` + the parameter with ``_`` -> ``-``
    when the command has it, the option (or argument) whose Python name is the
    parameter. A parameter no flag of this command feeds keeps its Python name,
    so a message never names a flag the user cannot pass here.
    """

    flag_overrides: ClassVar[dict[str, str]] = {}

    def flag_for(self, param: str) -> str | None:
        """The flag (or ARGUMENT) that feeds the library parameter ``param``, if any."""
        if param in self.flag_overrides:
            return self.flag_overrides[param]
        default = "--" + param.replace("_", "-")
        if any(default in p.opts for p in self.params):
            return default
        for p in self.params:
            if p.name == param:
                if p.param_type_name == "argument":
                    return param.upper()
                longs = [o for o in p.opts if o.startswith("--")]
                return longs[0] if longs else p.opts[0]
        return None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ParameterError as e:
            flag = self.flag_for(e.param)
            raise UsageError(e.for_flag(flag) if flag else str(e)) from e


class HadisTyper(typer.Typer):
    """``typer.Typer`` whose commands are :class:`HadisCommand` s.

    ``flags`` maps a library parameter to the flag that feeds it where the two
    differ (``@app.command("resolve", flags={"slo_s": "--slo"})``).
    """

    def command(  # type: ignore[override]
        self, name: str | None = None, *, flags: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        cls = HadisCommand
        if flags:
            cls = type("HadisCommand", (HadisCommand,), {"flag_overrides": dict(flags)})
        return super().command(name, cls=cls, **kwargs)


def verbs() -> HadisTyper:
    """Top-level commands of one module, mounted on the root app without a group name."""
    return HadisTyper(add_completion=False)


def group(name: str, help: str) -> HadisTyper:
    """A verb group (``router``, ``zoo``...): its help when called bare."""
    return HadisTyper(name=name, help=help, no_args_is_help=True, add_completion=False)


# --------------------------------------------------------------------------- parsers


def run_dir(path: str | Path) -> Path:
    """A run folder, or a run id under ``outputs/`` when no such folder exists here."""
    p = Path(path)
    under = RUNS_DIR / p
    return under if not p.is_dir() and under.is_dir() else p


class Numbers(tuple):
    """Comma-separated numbers from one flag (``--weights 1,0.5,2``)."""


class BatchSizes(tuple):
    """Comma-separated batch sizes from one flag (``--batch-sizes 1,2,4``)."""


def parse_numbers(text: str | Numbers) -> Numbers:
    """``"1,0.5,2"`` -> (1.0, 0.5, 2.0); anything else is a usage error naming the flag."""
    if isinstance(text, Numbers):
        return text
    try:
        return Numbers(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a comma-separated list of numbers.") from None


def parse_batch_sizes(text: str | BatchSizes) -> BatchSizes:
    """``"1,2,4"`` -> (1, 2, 4): at least one whole number, each at least 1."""
    if isinstance(text, BatchSizes):
        return text
    try:
        values = BatchSizes(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(
            f"'{text}' is not a comma-separated list of whole numbers (e.g. 1,2,4)."
        ) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"'{text}' must list batch sizes of at least 1 (e.g. 1,2,4).")
    return values


_MODULE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class SpecChoice:
    """A ``KIND[:ARG]`` choice (``clip:openai/clip-vit-large-patch14``) or a plug-in.

    ``bare`` kinds may stand alone, ``with_arg`` kinds may take ``:ARG``; with
    ``plugin`` a ``package.module:callable`` reference is accepted too. The
    library decides what an argument means; this only refuses what no kind
    accepts, before any model loads, and its ``metavar`` lists the kinds.
    """

    def __init__(self, bare: tuple[str, ...], with_arg: dict[str, str], *, plugin: bool) -> None:
        self.bare, self.with_arg, self.plugin = bare, with_arg, plugin
        kinds = [*bare, *(k for k in with_arg if k not in bare)]

        def shown(kind: str) -> str:  # clip[:CKPT] (optional argument), learned:HEAD (required)
            if kind not in with_arg:
                return kind
            return f"{kind}[:{with_arg[kind]}]" if kind in bare else f"{kind}:{with_arg[kind]}"

        self.metavar = "|".join([*map(shown, kinds), *(["MODULE:FN"] if plugin else [])])

    def __call__(self, text: str) -> str:
        kind, sep, arg = text.partition(":")
        if (not sep and kind in self.bare) or (sep and arg and kind in self.with_arg):
            return text
        if self.plugin and _MODULE_REF.match(text):
            return text
        raise typer.BadParameter(f"'{text}' is not one of {self.metavar.replace('|', ', ')}.")


# --------------------------------------------------------------------------- choices

PairSelection = Literal["all", "adjacent"]
ExportFormat = Literal["csv", "parquet"]
DemoSource = Literal["auto", "tiny", "synthetic"]
FitMethod = Literal["ridge", "rank"]
DecodeErrors = Literal["strict", "replace", "ignore"]
ClipVocab = Literal["mini", "openai"]
LatencyStat = Literal["p99", "mean", "p50", "p90"]
SpareGpus = Literal["spread", "idle"]


class Policy(str, Enum):
    """The serving policies ``simulate`` compares (``simulate.ALL_POLICIES``): ours, then the
    HADIS authors' definitions of E1's six systems."""

    hadis = "hadis"
    diffserve = "diffserve"
    router_only = "router-only"
    disc_only = "disc-only"
    clipper_light = "clipper-light"
    clipper_heavy = "clipper-heavy"
    proteus = "proteus"
    infaas = "infaas"
    clipper_light_fit = "clipper-light-fit"
    clipper_heavy_fit = "clipper-heavy-fit"
    infaas_acc = "infaas-acc"
    proteus_milp = "proteus-milp"
    diffserve_fixed = "diffserve-fixed"
    hadis_milp = "hadis-milp"


FID_FEATURES = SpecChoice(
    ("none", "clip", "inception"), {"clip": "CKPT", "inception": "WEIGHTS"}, plugin=True
)
RUN_DISCRIMINATOR = SpecChoice(("clip", "none"), {"learned": "HEAD"}, plugin=True)
SCORE_KIND = SpecChoice(
    ("learned", "clip", "pick"),
    {"learned": "HEAD", "clip": "CKPT", "pick": "MODEL[,PROCESSOR]"},
    plugin=True,
)
QUALITY_SCORER = SpecChoice(
    ("clip_score", "pick_score"),
    {"clip_score": "CKPT", "pick_score": "MODEL[,PROCESSOR]"},
    plugin=True,
)


# --------------------------------------------------------------------------- shared options

RunOption = Annotated[
    Path,
    typer.Option("--run", parser=run_dir, help="Run folder (or a run id under outputs/)."),
]
OnlineOption = Annotated[
    bool, typer.Option("--online", help="Allow Hub downloads (default: offline).")
]
CacheDirOption = Annotated[
    Path | None, typer.Option("--cache-dir", help="Hugging Face cache folder.")
]
FeatureCacheOption = Annotated[
    Path | None,
    typer.Option(
        "--feature-cache", help="Feature cache folder (default RUN/discriminator/features)."
    ),
]
FreshOption = Annotated[bool, typer.Option("--fresh", help="Replace an existing run.")]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the result as one JSON document on stdout (messages go to stderr)."
    ),
]
PlotOption = Annotated[
    Path | None, typer.Option("--plot", help="Also write a quality-vs-cost PNG.")
]


def weights_option(help: str) -> Any:
    """``--weights W1,W2,...``: router weights, parsed by :func:`parse_numbers`."""
    return typer.Option("--weights", parser=parse_numbers, metavar="W1,W2,...", help=help)
