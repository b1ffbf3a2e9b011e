"""Data in and out of a run: ``import hadis-reference|files`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import (
    ExportFormat,
    FreshOption,
    Numbers,
    console,
    group,
    run_dir,
    verbs,
    weights_option,
)

import_app = group(
    "import", "Fill a run from measurements made elsewhere (e.g. the HADIS reference data)."
)
export_app = verbs()
apps = (import_app, export_app)

_LATENCY_HELP = (
    "Latency NAME=BATCH:SECONDS[,BATCH:SECONDS...] in seconds per batch (NAME=SECONDS means "
    "batch size 1); repeatable."
)
_LATENCY_YAML_HELP = "YAML: model -> {batch: seconds}."
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Run folder to create.")]
# ImportSpec fields whose flag is spelled differently.
_IMPORT_FLAGS = {"router_weights": "--weights", "features_file": "--features"}


def _latencies(specs: list[str] | None, yaml_file: Path | None) -> dict[str, dict[int, float]]:
    """Merge --latency-yaml and --latency (the command line wins per batch size)."""
    from hadis_profile.importer import parse_latency_spec, read_latency_yaml

    merged = read_latency_yaml(yaml_file) if yaml_file else {}
    for text in specs or []:
        name, points = parse_latency_spec(text)
        merged[name] = {**merged.get(name, {}), **points}
    return merged


def _pairs(texts: list[str], flag: str, syntax: str, *, value_required: bool) -> list[tuple]:
    """``NAME=VALUE`` items of a repeatable flag; a malformed one is a usage error."""
    from hadis_profile.errors import UsageError

    out = []
    for text in texts:
        name, sep, value = text.partition("=")
        if not name.strip() or (value_required and not (sep and value)):
            raise UsageError(f"{flag} '{text}' is malformed; expected {syntax}.")
        out.append((name.strip(), value))
    return out


@import_app.command("hadis-reference")
def import_hadis_reference_cmd(
    data_dir: Annotated[
        Path,
        typer.Argument(help="The hadis-reference folder, e.g. ../shared/data/hadis-reference."),
    ],
    out: OutOption = Path("outputs/hadis-ref"),
    latency: Annotated[
        list[str] | None,
        typer.Option("--latency", help=_LATENCY_HELP + " Overrides the published L40S numbers."),
    ] = None,
    latency_yaml: Annotated[
        Path | None, typer.Option("--latency-yaml", help=_LATENCY_YAML_HELP)
    ] = None,
    hardware: Annotated[str, typer.Option(help="Hardware label of the latencies.")] = "l40s",
    device_name: Annotated[str, typer.Option(help="Device name to record.")] = "NVIDIA L40S",
    external: Annotated[
        bool, typer.Option(help="Import the authors' FID sweep (config_results_hybrid.csv).")
    ] = True,
    batch_latency: Annotated[
        str | None,
        typer.Option(
            "--batch-latency",
            help="Derive batch sizes 1-32 from the batch-1 latencies: linear:F (b x base x F for "
            "b > 1; HADIS's testbed uses linear:0.9) or scale:2=M2,4=M4 (measured multiples).",
        ),
    ] = None,
    fresh: FreshOption = False,
) -> None:
    """Import the HADIS reference data (arXiv 2509.00642): 4 models, 5,000 prompts."""
    from hadis_profile.importer import import_hadis_reference
    from hadis_profile.report.terminal import render_import_summary

    summary = import_hadis_reference(
        data_dir,
        out,
        fresh=fresh,
        latencies=_latencies(latency, latency_yaml),
        hardware_label=hardware,
        device_name=device_name,
        external=external,
        batch_latency=batch_latency,
    )
    render_import_summary(summary, console)


@import_app.command("files", flags=_IMPORT_FLAGS)
def import_files_cmd(
    out: OutOption,
    prompts: Annotated[Path, typer.Option(help="Prompts file, one per line; line i = prompt i.")],
    model: Annotated[
        list[str],
        typer.Option(
            help="NAME[=CONFIDENCE_FILE], in index order (index = position); repeatable. A "
            "confidence file has one row per image, prompt-major, confidence in column 2."
        ),
    ],
    features: Annotated[
        Path | None,
        typer.Option(help="Router features CSV with a header (optional 'prompt' column)."),
    ] = None,
    weights: Annotated[
        Numbers | None,
        weights_option("Router weights, comma-separated, one per feature column."),
    ] = None,
    latency: Annotated[list[str] | None, typer.Option(help=_LATENCY_HELP)] = None,
    latency_yaml: Annotated[
        Path | None, typer.Option("--latency-yaml", help=_LATENCY_YAML_HELP)
    ] = None,
    hardware: Annotated[str, typer.Option(help="Hardware label of the latencies.")] = "unknown",
    device_name: Annotated[str | None, typer.Option(help="Device name to record.")] = None,
    external: Annotated[
        Path | None,
        typer.Option(help="Per-configuration CSV (light_model, heavy_model, router_ratio, ...)."),
    ] = None,
    external_metric: Annotated[
        list[str] | None,
        typer.Option(
            help="COLUMN=METRIC_ID of the external CSV; default fid=fid:clean-fid-imagenet1k."
        ),
    ] = None,
    scorer: Annotated[
        str, typer.Option(help="Id of the discriminator.")
    ] = "imported-discriminator",
    images_per_prompt: Annotated[
        int | None, typer.Option(help="Expected images per prompt in confidence files.")
    ] = None,
    ascii_prompts: Annotated[
        bool, typer.Option("--ascii", help="Read prompts as ASCII, dropping undecodable bytes.")
    ] = False,
    fresh: FreshOption = False,
) -> None:
    """Import generic files: prompts, per-model confidences, router features, latencies."""
    from hadis_profile.importer import HADIS_FID_METRIC, ImportSpec, ModelSource, run_import
    from hadis_profile.report.terminal import render_import_summary

    models = [
        ModelSource(
            name,
            spec={"name": name, "source": "import"},
            confidence_file=Path(conf) if conf else None,
        )
        for name, conf in _pairs(model, "--model", "NAME[=CONFIDENCE_FILE]", value_required=False)
    ]
    metrics = {"fid": HADIS_FID_METRIC}
    if external_metric:
        metrics = dict(
            _pairs(external_metric, "--external-metric", "COLUMN=METRIC_ID", value_required=True)
        )
    spec = ImportSpec(
        prompts_file=prompts,
        prompts_ascii=ascii_prompts,
        models=models,
        features_file=features,
        router_weights=list(weights) if weights is not None else None,
        router_source=f"weights given on the command line, features from {features}",
        latencies=_latencies(latency, latency_yaml),
        hardware_label=hardware,
        device_name=device_name,
        external_file=external,
        external_metrics=metrics,
        scorer=scorer,
        images_per_prompt=images_per_prompt,
        provenance={"source": "import"},
    )
    render_import_summary(run_import(spec, out, fresh=fresh), console)


@export_app.command("export")
def export_cmd(
    run: Annotated[
        Path, typer.Argument(parser=run_dir, help="Run folder (or a run id under outputs/).")
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="File format.")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder to write (default RUN/export).")
    ] = None,
) -> None:
    """Export every table of a run as CSV or parquet files, one per table."""
    from hadis_profile.fileio import check_output_dir
    from hadis_profile.report.terminal import render_export
    from hadis_profile.store import RunStore

    target = out or run / "export"
    with RunStore.open(run, readonly=True) as store:
        check_output_dir(target)
        paths = store.export(target, fmt)
    render_export(run, fmt, paths, console)


@export_app.command("migrate")
def migrate_cmd(
    run: Annotated[
        Path, typer.Argument(parser=run_dir, help="Run folder (or a run id under outputs/).")
    ],
) -> None:
    """Upgrade a run store written by an older hadis-profile to this version's schema.

    Commands that only read a run (export, pareto, simulate...) never change it,
    so they refuse an old store and point here; run/import upgrade it as they write.
    """
    from hadis_profile.report.terminal import say
    from hadis_profile.store import RunStore

    with RunStore.open(run, write_lock="migrate") as store:
        before, after = store.upgraded_from, store.schema_version()
    if before is None:
        say(console, f"The run store in {run} is already at schema version {after}.")
    else:
        say(console, f"Upgraded the run store in {run} from schema version {before} to {after}.")
