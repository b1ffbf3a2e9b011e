"""The ``hadis-profile`` command line: thin Typer commands that parse and delegate.

Every command imports its implementation lazily, so ``hadis-profile --help``
stays fast and never imports torch. A :class:`~hadis_profile.errors.HadisError`
becomes one red sentence and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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

# Options several commands share, declared once so their flags and help agree.
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


# --------------------------------------------------------------------------- import / export

import_app = typer.Typer(
    help="Fill a run from measurements made elsewhere (e.g. the HADIS reference data).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

_LATENCY_HELP = (
    "Latency NAME=BATCH:SECONDS[,BATCH:SECONDS...] in seconds per batch (NAME=SECONDS means "
    "batch size 1); repeatable."
)


def _latencies(specs: list[str] | None, yaml_file: Path | None) -> dict[str, dict[int, float]]:
    """Merge --latency-yaml and --latency (the command line wins per batch size)."""
    from hadis_profile.importer import parse_latency_spec, read_latency_yaml

    merged = read_latency_yaml(yaml_file) if yaml_file else {}
    for text in specs or []:
        name, points = parse_latency_spec(text)
        merged[name] = {**merged.get(name, {}), **points}
    return merged


def _print_import(summary) -> None:  # summary: importer.ImportSummary
    from rich.table import Table

    t = Table(title=f"Imported run '{summary.run_id}'", show_header=False)
    t.add_row("run folder", str(summary.run_dir))
    t.add_row("prompts", f"{summary.n_prompts}  (set hash {summary.prompt_set_hash[:12]}...)")
    t.add_row("models", ", ".join(summary.models))
    t.add_row(
        "confidences",
        f"{summary.confidence_rows} images ({summary.images_per_prompt} per prompt)"
        if summary.confidence_rows
        else "none",
    )
    t.add_row("latency points", str(summary.latency_points))
    t.add_row("router features", ", ".join(summary.router_features) or "none")
    t.add_row("external configurations", str(summary.external_rows))
    if summary.external_latency_max_dev_s is not None:
        t.add_row(
            "external latency check",
            f"max |nominal - file| = {summary.external_latency_max_dev_s:.4f} s",
        )
    console.print(t)


@import_app.command("hadis-reference")
def import_hadis_reference_cmd(
    data_dir: Annotated[
        Path,
        typer.Argument(help="The hadis-reference folder, e.g. ../shared/data/hadis-reference."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to create.")] = Path(
        "outputs/hadis-ref"
    ),
    latency: Annotated[
        list[str] | None,
        typer.Option("--latency", help=_LATENCY_HELP + " Overrides the published L40S numbers."),
    ] = None,
    latency_yaml: Annotated[
        Path | None, typer.Option("--latency-yaml", help="YAML: model -> {batch: seconds}.")
    ] = None,
    hardware: Annotated[str, typer.Option(help="Hardware label of the latencies.")] = "l40s",
    device_name: Annotated[str, typer.Option(help="Device name to record.")] = "NVIDIA L40S",
    external: Annotated[
        bool, typer.Option(help="Import the authors' FID sweep (config_results_hybrid.csv).")
    ] = True,
    fresh: Annotated[bool, typer.Option("--fresh", help="Replace an existing run.")] = False,
) -> None:
    """Import the HADIS reference data (arXiv 2509.00642): 4 models, 5,000 prompts."""
    from hadis_profile.importer import import_hadis_reference

    summary = import_hadis_reference(
        data_dir,
        out,
        fresh=fresh,
        latencies=_latencies(latency, latency_yaml),
        hardware_label=hardware,
        device_name=device_name,
        external=external,
    )
    _print_import(summary)


@import_app.command("files")
def import_files_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to create.")],
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
        str | None, typer.Option(help="Router weights, comma-separated, one per feature column.")
    ] = None,
    latency: Annotated[list[str] | None, typer.Option(help=_LATENCY_HELP)] = None,
    latency_yaml: Annotated[
        Path | None, typer.Option("--latency-yaml", help="YAML: model -> {batch: seconds}.")
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
    fresh: Annotated[bool, typer.Option("--fresh", help="Replace an existing run.")] = False,
) -> None:
    """Import generic files: prompts, per-model confidences, router features, latencies."""
    from hadis_profile.errors import UsageError
    from hadis_profile.importer import HADIS_FID_METRIC, ImportSpec, ModelSource, run_import

    models = []
    for text in model:
        name, _, conf = text.partition("=")
        if not name.strip():
            raise UsageError(f"--model '{text}' is malformed; expected NAME[=CONFIDENCE_FILE].")
        models.append(
            ModelSource(
                name.strip(),
                spec={"name": name.strip(), "source": "import"},
                confidence_file=Path(conf) if conf else None,
            )
        )
    metrics = {"fid": HADIS_FID_METRIC}
    if external_metric:
        metrics = {}
        for text in external_metric:
            col, sep, metric = text.partition("=")
            if not sep or not col or not metric:
                raise UsageError(
                    f"--external-metric '{text}' is malformed; expected COLUMN=METRIC_ID."
                )
            metrics[col] = metric
    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError:
        raise UsageError(
            f"--weights '{weights}' is not a comma-separated list of numbers."
        ) from None
    spec = ImportSpec(
        prompts_file=prompts,
        prompts_ascii=ascii_prompts,
        models=models,
        features_file=features,
        router_weights=w,
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
    _print_import(run_import(spec, out, fresh=fresh))


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (or a run id under outputs/).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or parquet.")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder to write (default RUN/export).")
    ] = None,
) -> None:
    """Export every table of a run as CSV or parquet files, one per table."""
    from rich.table import Table

    from hadis_profile.errors import UsageError
    from hadis_profile.store import EXPORT_FORMATS, RunStore

    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format '{fmt}' is not one of {', '.join(EXPORT_FORMATS)}.")
    if not run.is_dir() and (Path("outputs") / run).is_dir():
        run = Path("outputs") / run
    with RunStore.open(run) as store:
        paths = store.export(out or run / "export", fmt)
    t = Table(title=f"Exported {run} as {fmt}")
    t.add_column("file")
    t.add_column("bytes", justify="right")
    for p in paths:
        t.add_row(str(p), f"{p.stat().st_size:,}")
    console.print(t)


# ----------------------------------------------------------------------- pareto / validate / show


@app.command("pareto")
def pareto_cmd(
    run: Annotated[Path, typer.Option("--run", help="Run folder (or a run id under outputs/).")],
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
        str, typer.Option("--pairs", help="Candidate pairs: 'all' or 'adjacent' (in cost order).")
    ] = "all",
    grid: Annotated[int, typer.Option("--grid", help="Steps per axis of the (r, d) grid.")] = 10,
    exact: Annotated[
        bool, typer.Option("--exact", help="Every distinct threshold the data allows.")
    ] = False,
    nominal: Annotated[
        bool, typer.Option("--nominal", help="HADIS's nominal fractions and latency.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also write a quality-vs-cost PNG."),
    ] = None,
    confidence: Annotated[
        str | None,
        typer.Option(
            "--confidence",
            help="Confidence scorer id (or unique prefix) to calibrate on (default: the only "
            "one, else the discriminator scored last).",
        ),
    ] = None,
) -> None:
    """Compile a run into a Pareto cascade table (written atomically; nothing on failure)."""
    from hadis_profile.discriminator import discriminator_for_table
    from hadis_profile.errors import UsageError
    from hadis_profile.pareto import compile_table
    from hadis_profile.store import RunStore
    from hadis_profile.table import check_document, write_table

    if pairs not in ("all", "adjacent"):
        raise UsageError(f"--pairs '{pairs}' is not one of all, adjacent.")
    if grid < 1:
        raise UsageError(f"--grid must be at least 1, not {grid}.")
    if not run.is_dir() and (Path("outputs") / run).is_dir():
        run = Path("outputs") / run
    with RunStore.open(run) as store:
        scorer = store.default_confidence_scorer(confidence)
        meas = store.load_measurements(confidence_scorer=scorer)
    if scorer is not None:  # the table names the scorer its thresholds are calibrated on
        meas.provenance["discriminator"] = discriminator_for_table(meas.provenance, scorer)
    doc = compile_table(
        meas,
        quality_metric=quality,
        pairs=pairs,
        per_pair=per_pair,
        grid=grid,
        exact=exact,
        nominal=nominal,
    )
    check_document(doc, str(out))
    if plot is not None:
        from hadis_profile.report import plot_pareto

        plot_pareto(doc, plot)
    write_table(out, doc)
    payload = doc["payload"]
    sweep = payload["provenance"]["sweep"]
    singles = sum(1 for r in payload["rows"] if r["kind"] == "single")
    console.print(
        f"Kept {len(payload['rows']) - singles} of {sweep['configurations_evaluated']:,} "
        f"configurations (+{singles} single-model rows), ranked by "
        f"{payload['provenance']['quality_metric']}; wrote {out} (sha256 {doc['sha256'][:12]})"
        + (f" and {plot}" if plot is not None else "")
        + ".",
        highlight=False,
        soft_wrap=True,
    )


@app.command("validate")
def validate_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to check.")],
) -> None:
    """Check a table against its JSON Schema and its sha256; exit 1 with one sentence if not."""
    from hadis_profile.table import validate_file

    t = validate_file(table)
    console.print(
        f"[green]{table} is a valid cascade table[/] (schema {t.document['schema_version']}, "
        f"{len(t.rows)} rows, sha256 {t.sha256[:12]}).",
        highlight=False,
        soft_wrap=True,
    )


@app.command("show")
def show_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to show.")],
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also write a quality-vs-cost PNG."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help="Show at most this many rows."),
    ] = None,
) -> None:
    """Print a table's provenance and rows; optionally plot its Pareto front."""
    from hadis_profile.report import plot_pareto, render_table
    from hadis_profile.table import load_table

    t = load_table(table)
    render_table(t, console, limit=limit)
    if plot is not None:
        plot_pareto(t, plot)
        console.print(f"Wrote {plot}.", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- zoo / prompts

zoo_app = typer.Typer(help="Check and list the model zoo (model_zoo.yaml).", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
prompts_app = typer.Typer(help="Inspect prompt sets before profiling them.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

_ZOO_ARG = typer.Argument(help="The zoo YAML file.")


@zoo_app.command("validate")
def zoo_validate_cmd(
    path: Annotated[Path, _ZOO_ARG] = Path("model_zoo.yaml"),
) -> None:
    """Validate a zoo and print its models; exit 2 with one sentence if it is invalid."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from hadis_profile.zoo import load_zoo

    zoo = load_zoo(path)
    table = Table(
        title=escape(str(path)),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("name", no_wrap=True)  # the key: never truncated
    table.add_column("family")
    table.add_column("source", overflow="ellipsis")  # shrinks first on narrow terminals
    table.add_column("steps", justify="right")
    table.add_column("cfg", justify="right")
    table.add_column("size", no_wrap=True)
    table.add_column("dtype")
    for m in zoo:
        source = m.source + (f"@{m.revision}" if m.revision else "")
        if m.components:
            source += " (+" + ", ".join(c.component for c in m.components) + ")"
        cells = (m.name, m.family or "-", source, str(m.steps), f"{m.guidance_scale:g}", m.size)
        table.add_row(*map(escape, cells), m.dtype)
    console.print(table)
    console.print(
        f"[green]{escape(str(path))} is valid:[/] {len(zoo)} models, zoo hash {zoo.hash()[:12]}.",
        highlight=False,
    )


@zoo_app.command("list")
def zoo_list_cmd(
    path: Annotated[Path, _ZOO_ARG] = Path("model_zoo.yaml"),
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Only models with this tag (or family); repeatable."),
    ] = None,
) -> None:
    """Print model names, one per line (handy in shell loops)."""
    from hadis_profile.zoo import load_zoo

    for name in load_zoo(path).select(tags=tag).names:
        typer.echo(name)


@prompts_app.command("inspect")
def prompts_inspect_cmd(
    file: Annotated[Path, typer.Argument(help="A .txt, .tsv, .csv, .jsonl or .parquet file.")],
    column: Annotated[
        str | None,
        typer.Option("--column", "-c", help="Column or JSON key (default: prompt/text)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Keep the first N prompts (after de-duplication)."),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, help="Then draw N at random (kept in file order)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --sample.")] = 0,
    dedup: Annotated[
        bool, typer.Option("--dedup/--no-dedup", help="Drop repeated prompts.")
    ] = True,
    encoding: Annotated[str, typer.Option("--encoding", help="Text encoding.")] = "utf-8",
    errors: Annotated[
        str, typer.Option("--errors", help="Undecodable bytes: strict, replace or ignore.")
    ] = "strict",
    show: Annotated[int, typer.Option("--show", min=0, help="How many examples to print.")] = 5,
) -> None:
    """Load a prompt set as a run would and print its counts, hash and a few examples."""
    from hadis_profile.prompts import load_prompts

    ps = load_prompts(
        file,
        column=column,
        limit=limit,
        sample=sample,
        seed=seed,
        dedup=dedup,
        encoding=encoding,
        errors=errors,
    )
    out = Console(highlight=False, markup=False, soft_wrap=True)
    out.print(f"{file}" + (f" (column {ps.column!r})" if ps.column else ""))
    out.print(f"  read        {ps.n_read:,} records, {ps.n_blank:,} blank dropped")
    out.print(f"  duplicates  {ps.n_duplicates:,} dropped, {ps.n_unique:,} unique")
    picked = []
    if limit is not None:
        picked.append(f"first {limit:,}")
    if sample is not None:
        picked.append(f"sample {sample:,} with seed {seed}")
    out.print(f"  prompts     {len(ps):,}" + (f" ({', then '.join(picked)})" if picked else ""))
    out.print(f"  sha256      {ps.sha256}")
    for i, text in enumerate(ps.texts[:show], start=1):
        out.print(f"  {i:>3}. {text if len(text) <= 160 else text[:157] + '...'}")


# --------------------------------------------------------------------------- router

router_app = typer.Typer(
    help="The rule-based prompt router (HADIS): features and scores.", no_args_is_help=True
)
app.add_typer(router_app, name="router")

_LEXICON_HELP = "Concreteness CSV (Brysbaert et al. 2014: Word, Conc.M); default: built-in list."
_SPATIAL_HELP = "Spatial phrases, one per line; default: built-in list."
_ENCODING_HELP = "Encoding of the prompts file; undecodable bytes are dropped (HADIS: ascii)."


def _router_write_csv(out: Path | None, header: list[str], rows) -> None:
    """CSV to --out (atomically) or stdout."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        from hadis_profile.fileio import atomic_write_text

        atomic_write_text(out, buf.getvalue())


def _router_prompts(path: Path, encoding: str) -> list[str]:
    """The prompt set as `run` reads it (so features agree), keeping duplicates so that
    rows line up with the file; undecodable bytes dropped, as HADIS read its prompts."""
    from hadis_profile.prompts import load_prompts

    return list(load_prompts(path, encoding=encoding, errors="ignore", dedup=False))


@router_app.command("features")
def router_features_cmd(
    prompts_file: Annotated[Path, typer.Argument(help="Prompts, one per line.")],
    lexicon: Annotated[Path | None, typer.Option("--lexicon", help=_LEXICON_HELP)] = None,
    spatial: Annotated[Path | None, typer.Option("--spatial", help=_SPATIAL_HELP)] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="features.csv (default: stdout).")
    ] = None,
    encoding: Annotated[str, typer.Option("--encoding", help=_ENCODING_HELP)] = "utf-8",
) -> None:
    """Compute the router's 8 features per prompt (the layout of HADIS's prompt_features.csv)."""
    from hadis_profile.router import FEATURES, Router

    prompts = _router_prompts(prompts_file, encoding)
    X = Router(lexicon=lexicon, spatial_terms=spatial).features(prompts)
    rows = ([p, *map(int, row)] for p, row in zip(prompts, X, strict=True))
    _router_write_csv(out, ["prompt", *FEATURES], rows)
    if out is not None:
        err_console.print(f"Wrote the features of {len(prompts):,} prompts to {out}.")


@router_app.command("score")
def router_score_cmd(
    prompts_file: Annotated[
        Path | None, typer.Argument(help="Prompts, one per line (or give --run).")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run", help="Score this run's prompts and store features, scores and spec in it."
        ),
    ] = None,
    table: Annotated[
        Path | None,
        typer.Option("--table", help="Use this table.json's router (its weights and stats)."),
    ] = None,
    lexicon: Annotated[Path | None, typer.Option("--lexicon", help=_LEXICON_HELP)] = None,
    spatial: Annotated[Path | None, typer.Option("--spatial", help=_SPATIAL_HELP)] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="8 comma-separated weights (default: HADIS's)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="scores.csv (default: stdout).")
    ] = None,
    spec_out: Annotated[
        Path | None, typer.Option("--spec-out", help="Also write the router spec (JSON).")
    ] = None,
    encoding: Annotated[str, typer.Option("--encoding", help=_ENCODING_HELP)] = "utf-8",
) -> None:
    """Score prompts (higher = harder); without --table, normalise over these prompts."""
    import json

    from hadis_profile.errors import UsageError
    from hadis_profile.router import DEFAULT_WEIGHTS, Router

    if (prompts_file is None) == (run is None):
        raise UsageError("Give either a prompts file or --run RUN, not both or neither.")
    if run is not None:
        _router_score_run(_run_dir(run), table, lexicon, spatial, weights, out, spec_out)
        return
    prompts = _router_prompts(prompts_file, encoding)
    if table is not None:
        if lexicon or spatial or weights:
            raise UsageError("--table fixes the router; drop --lexicon, --spatial and --weights.")
        router = Router.from_table(table)
        scores = router.score(prompts)
    else:
        w = DEFAULT_WEIGHTS
        if weights is not None:
            try:
                w = tuple(float(x) for x in weights.split(","))
            except ValueError:
                raise UsageError(f"--weights {weights!r} is not a list of numbers.") from None
        router = Router(weights=w, lexicon=lexicon, spatial_terms=spatial)
        X = router.features(prompts)
        scores = router.fit_normalisation(features=X).score_features(X)
    rows = ([p, repr(float(s))] for p, s in zip(prompts, scores, strict=True))
    _router_write_csv(out, ["prompt", "score"], rows)
    if spec_out is not None:
        from hadis_profile.fileio import atomic_write_text

        atomic_write_text(spec_out, json.dumps(router.to_spec(), indent=1, allow_nan=False) + "\n")
    if out is not None:
        err_console.print(f"Wrote the scores of {len(prompts):,} prompts to {out}.")


def _run_dir(run: Path) -> Path:
    """A run folder, or a run id under outputs/."""
    return Path("outputs") / run if not run.is_dir() and (Path("outputs") / run).is_dir() else run


def _router_weights(text: str | None) -> tuple[float, ...]:
    from hadis_profile.errors import UsageError
    from hadis_profile.router import DEFAULT_WEIGHTS

    if text is None:
        return DEFAULT_WEIGHTS
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--weights {text!r} is not a list of numbers.") from None


def _router_score_run(run, table, lexicon, spatial, weights, out, spec_out) -> None:
    """`router score --run`: features + scores + spec into the run's store, one transaction."""
    import json

    from hadis_profile.errors import UsageError
    from hadis_profile.router import Router
    from hadis_profile.router_run import score_run
    from hadis_profile.store import RunStore

    if table is not None and (lexicon or spatial or weights):
        raise UsageError("--table fixes the router; drop --lexicon, --spatial and --weights.")
    if table is not None:
        router = Router.from_table(table)
    else:
        router = Router(weights=_router_weights(weights), lexicon=lexicon, spatial_terms=spatial)
    with RunStore.open(run) as store:
        old = store.router_spec()
        _, scores = score_run(store, router, fit_normalisation=table is None)
        prompts = store.prompts()
    if out is not None:
        rows = ([p, repr(float(s))] for p, s in zip(prompts, scores, strict=True))
        _router_write_csv(out, ["prompt", "score"], rows)
    if spec_out is not None:
        from hadis_profile.fileio import atomic_write_text

        atomic_write_text(spec_out, json.dumps(router.to_spec(), indent=1, allow_nan=False) + "\n")
    replaced = " (replacing its fitted router)" if old and old.get("fitted") else ""
    console.print(
        f"Stored router features and scores of {len(prompts):,} prompts in {run}{replaced}.",
        highlight=False,
        soft_wrap=True,
    )


@router_app.command("fit")
def router_fit_cmd(
    run: Annotated[Path, typer.Option("--run", help="Run folder (or a run id under outputs/).")],
    light: Annotated[
        str | None, typer.Option("--light", help="Light model (default: the cheapest).")
    ] = None,
    heavy: Annotated[
        str | None, typer.Option("--heavy", help="Heavy model (default: the most expensive).")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Per-image metric id or scorer (default: the first)."),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="ridge (least squares) or rank (pairwise).")
    ] = "ridge",
    alpha: Annotated[float, typer.Option("--alpha", help="L2 penalty.")] = 1.0,
    train_fraction: Annotated[
        float, typer.Option("--train-fraction", help="Share of prompts to fit on.")
    ] = 0.7,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and baselines.")] = 0,
    random_seeds: Annotated[
        int, typer.Option("--random-seeds", help="Seeds averaged for random routing.")
    ] = 200,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Evaluate only; leave the stored router alone.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fit router weights to each prompt's gain from the heavy model; store them for pareto."""
    import json

    from hadis_profile.router_run import fit_run_router
    from hadis_profile.store import RunStore

    run = _run_dir(run)
    with RunStore.open(run) as store:
        res = fit_run_router(
            store,
            light=light,
            heavy=heavy,
            metric=metric,
            method=method,
            alpha=alpha,
            train_fraction=train_fraction,
            seed=seed,
            random_seeds=random_seeds,
            write=not dry_run,
        )
    if as_json:
        sys.stdout.write(json.dumps(res.to_dict(), indent=1, allow_nan=False) + "\n")
        return
    from hadis_profile.report import render_calibration

    render_calibration(res, console)
    if res.stored:
        console.print(
            f"Stored the fitted router in {run}; `hadis-profile pareto --run {run}` uses it.",
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------- zoo tiny (measure)


@zoo_app.command("tiny")
def zoo_tiny_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the pipelines and the zoo file.")
    ] = Path("outputs/tiny-zoo"),
    seed: Annotated[int, typer.Option(help="Weight seed (same seed, same weights).")] = 0,
    clip_vocab: Annotated[
        str,
        typer.Option(
            "--clip-vocab",
            help="mini (built in) or openai (the real CLIP BPE; needs open_clip_torch).",
        ),
    ] = "mini",
) -> None:
    """Build tiny random-weight SD1, SDXL and SD3 pipelines plus model_zoo.tiny.yaml.

    Not real models: for trying `run` and testing on a CPU without downloads.
    """
    import time

    from hadis_profile.measure.tiny import build_tiny_zoo

    t0 = time.perf_counter()
    tiny = build_tiny_zoo(out, seed=seed, clip_vocab=clip_vocab)
    console.print(
        f"Built {len(tiny.model_names)} tiny models in {time.perf_counter() - t0:.1f} s: "
        f"{tiny.zoo_path} (CLIP metric backbone: {tiny.clip_path}).",
        highlight=False,
        soft_wrap=True,
    )


# --------------------------------------------------------------------------- resolve


def _batch_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    from hadis_profile.errors import UsageError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"--batch-sizes must be comma-separated whole numbers (e.g. 1,2,4), not '{text}'."
        ) from None


@app.command("resolve")
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
        str | None,
        typer.Option("--batch-sizes", help="Allowed batch sizes, comma-separated (e.g. 1,2,4)."),
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

    Exits 1 when no plan meets the request, after printing why and the fallback.
    """
    import json

    from hadis_profile.resolve import load_table, resolve

    plan = resolve(
        load_table(table),
        qps=qps,
        slo_s=slo,
        gpus=gpus,
        reserved_gpus=reserved_gpus,
        headroom=headroom,
        batch_sizes=_batch_sizes(batch_sizes),
        queue_delay_s=queue_delay,
        overhead_s=overhead,
    )
    from hadis_profile.report import plan_panel

    if as_json:
        sys.stdout.write(json.dumps(plan.to_dict(), indent=2, allow_nan=False) + "\n")
    elif plan.feasible:
        console.print(plan_panel(plan, "[green]serving plan[/]"))
    else:
        from rich.markup import escape

        err_console.print(f"[bold red]infeasible:[/] {escape(plan.reason)}", highlight=False)
        fb = plan.fallback
        if fb is None:
            err_console.print("No fallback: no configuration fits the GPU budget at all.")
        else:
            ignored = " and ".join(
                "the SLO" if r == "slo_s" else "the requested load" for r in fb.relaxed
            )
            title = f"[yellow]fallback: highest sustainable load, ignoring {ignored}[/]"
            console.print(plan_panel(fb, title))
    if not plan.feasible:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- run / demo (measure)


def _int_list(text: str, option: str) -> list[int]:
    from hadis_profile.errors import UsageError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{option} '{text}' is not a comma-separated list of integers.") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} '{text}' must list positive integers.")
    return values


@app.command("run")
def run_cmd(
    zoo: Annotated[Path, typer.Option("--zoo", help="The zoo YAML file.")] = Path("model_zoo.yaml"),
    prompts: Annotated[
        Path, typer.Option("--prompts", "-p", help="Prompt file (.txt/.tsv/.csv/.jsonl/.parquet).")
    ] = Path("prompts/varied.txt"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (created or resumed).")] = (
        Path("outputs/run")
    ),
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only this model; repeatable.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Only models with this tag.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts.")] = None,
    images_per_prompt: Annotated[
        int, typer.Option("--images-per-prompt", "-k", help="Images per prompt.")
    ] = 4,
    seed: Annotated[int, typer.Option(help="Base seed of the per-(prompt, image) seeds.")] = 0,
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="Batch sizes to time, comma-separated.")
    ] = "1,2,4,8,16,32",
    warmup: Annotated[int, typer.Option(help="Untimed warm-up calls per batch size.")] = 2,
    reps: Annotated[int, typer.Option(help="Timed calls per batch size.")] = 10,
    time_budget: Annotated[
        float | None,
        typer.Option("--time-budget", help="Seconds per batch size; fewer reps (>= 3) if slow."),
    ] = None,
    gen_batch: Annotated[int, typer.Option("--gen-batch", help="Generation batch size.")] = 4,
    device: Annotated[
        str | None, typer.Option(help="auto (the default), cpu, cuda or cuda:N.")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            help="Shard the models over local devices, one worker process each: 0,1,2,3 "
            "(cuda:0..3) or cpu,cpu.",
        ),
    ] = None,
    gpu: Annotated[
        str | None,
        typer.Option("--gpu", help="Hardware label (e.g. a100); must match the detected device."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Record --gpu even if it contradicts the device.")
    ] = False,
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            help="clip_score[:ckpt], pick_score[:model[,processor]] or module:callable; "
            "repeatable (default: the zoo's scorers: list, else clip_score).",
        ),
    ] = None,
    discriminator: Annotated[
        str,
        typer.Option(
            help="clip (CLIP score / 100), none, learned:HEAD (a `discriminator train` head) "
            "or module:callable."
        ),
    ] = "clip",
    fid: Annotated[
        str, typer.Option(help="FID features: none, clip[:ckpt], inception[:weights], module:fn.")
    ] = "none",
    fid_reference: Annotated[
        Path | None,
        typer.Option("--fid-reference", help="Reference stats (.npz mu/sigma) or image folder."),
    ] = None,
    save_images: Annotated[
        bool, typer.Option("--save-images", help="Write PNGs under RUN/images/.")
    ] = False,
    stages: Annotated[
        bool, typer.Option("--stages", help="Also time text encoding / denoising / VAE decode.")
    ] = False,
    skip_latency: Annotated[bool, typer.Option("--skip-latency")] = False,
    skip_quality: Annotated[bool, typer.Option("--skip-quality")] = False,
    no_router: Annotated[
        bool, typer.Option("--no-router", help="Do not compute router features.")
    ] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard what the run holds.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be measured; run nothing.")
    ] = False,
    no_probe: Annotated[
        bool,
        typer.Option(
            "--no-probe",
            help="With --dry-run: estimate GPU time only from stored latencies; load no model.",
        ),
    ] = False,
    online: OnlineOption = False,
    cache_dir: CacheDirOption = None,
) -> None:
    """Profile the zoo: latency per batch size, then K seeded images per prompt, scored.

    Every finished unit (a batch size, a prompt's images) is committed at once;
    rerunning the same command resumes where it stopped.
    """
    from hadis_profile.errors import UsageError
    from hadis_profile.measure.devices import parse_devices
    from hadis_profile.measure.profiler import RunOptions, render_report, run_profile

    if devices is not None and device is not None:
        raise UsageError("--device and --devices are mutually exclusive; pass one of them.")
    opts = RunOptions(
        zoo=zoo,
        prompts=prompts,
        out=out,
        models=model,
        tags=tag,
        limit=limit,
        images_per_prompt=images_per_prompt,
        seed=seed,
        batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
        warmup=warmup,
        reps=reps,
        time_budget_s=time_budget,
        gen_batch=gen_batch,
        device=device or "auto",
        devices=parse_devices(devices) if devices is not None else None,
        gpu=gpu,
        force=force,
        scorers=scorer or None,
        discriminator=discriminator,
        fid=fid,
        fid_reference=fid_reference,
        save_images=save_images,
        stages=stages,
        latency=not skip_latency,
        quality=not skip_quality,
        router=not no_router,
        fresh=fresh,
        dry_run=dry_run,
        probe=not no_probe,
        online=online,
        cache_dir=cache_dir,
    )
    render_report(run_profile(opts, console=err_console), console)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's files.")] = Path(
        "outputs/demo"
    ),
    source: Annotated[
        str,
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

    Writes OUT/run (the run store), OUT/table.json and OUT/pareto.png.
    """
    from hadis_profile.demo import run_demo
    from hadis_profile.report import plan_panel, render_table
    from hadis_profile.resolve import load_table

    table_path, plan, request = run_demo(
        out, source=source, n_prompts=prompts, gpus=gpus, console=err_console
    )
    render_table(load_table(table_path), console, limit=12)
    title = (
        f"serving plan for {request['qps']:g} qps, SLO {request['slo_s']:g} s, "
        f"{request['gpus']} GPUs"
    )
    console.print(plan_panel(plan if plan.feasible else plan.fallback, title))
    console.print(
        f"Wrote {table_path}, {table_path.parent / 'pareto.png'} and the run store "
        f"{table_path.parent / 'run'}.\nNext: hadis-profile resolve {table_path} "
        f"--qps {request['qps']:g} --slo {request['slo_s']:g} --gpus {request['gpus']}",
        highlight=False,
        soft_wrap=True,
    )


# --------------------------------------------------------------------------- simulate


@app.command("simulate")
def simulate_cmd(
    table: Annotated[Path, typer.Argument(help="The table.json to serve from.")],
    run: Annotated[
        Path, typer.Option("--run", help="The run the table was compiled from (per-prompt truth).")
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
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="hadis, diffserve, router-only, disc-only, clipper-light, clipper-heavy, "
            "proteus or infaas; repeatable (default: all).",
        ),
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
        str | None,
        typer.Option("--pair", help="diffserve's LIGHT,HEAVY pair (default: resolve's pick)."),
    ] = None,
    headroom: Annotated[
        float, typer.Option("--headroom", help="Capacity factor the plans are sized with.")
    ] = 1.05,
    latency_stat: Annotated[
        str, typer.Option("--latency-stat", help="Batch time: p99 (as resolve), mean, p50, p90.")
    ] = "p99",
    ewma_alpha: Annotated[
        float, typer.Option("--ewma-alpha", help="Weight of the latest second in the demand EWMA.")
    ] = 0.2,
    window: Annotated[
        float, typer.Option("--window", help="Seconds per row of windows.csv and the figure.")
    ] = 10.0,
    spare: Annotated[
        str, typer.Option("--spare", help="GPUs a plan leaves over: spread or idle.")
    ] = "spread",
    strict_order: Annotated[
        bool, typer.Option("--strict-order", help="Refuse a trace whose lines are out of order.")
    ] = False,
) -> None:
    """Replay a trace (or Poisson load) on simulated GPUs and compare serving policies."""
    from hadis_profile.errors import UsageError
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
    names = policy or list(POLICIES)
    pair_t = None
    if pair is not None:
        parts = [p.strip() for p in pair.split(",")]
        if len(parts) != 2 or not all(parts):
            raise UsageError(f"--pair '{pair}' is malformed; expected LIGHT,HEAVY.")
        pair_t = (parts[0], parts[1])
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
        pair=pair_t,
    )
    config.check()
    tab = load_table(table)
    if not run.is_dir() and (Path("outputs") / run).is_dir():
        run = Path("outputs") / run
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
        console.print(
            f"Wrote {', '.join(p.name for p in paths)} to {out}.", highlight=False, soft_wrap=True
        )


# --------------------------------------------------------------------------- discriminator

discriminator_app = typer.Typer(
    help="Train and apply the quality discriminator (P(real), HADIS's escalation signal).",
    no_args_is_help=True,
)
app.add_typer(discriminator_app, name="discriminator")


@discriminator_app.command("train")
def discriminator_train_cmd(
    real: Annotated[Path, typer.Option("--real", help="Folder of real images (recursive).")],
    run: Annotated[
        Path, typer.Option("--run", help="Run with saved images (`run --save-images`).")
    ],
    models: Annotated[
        list[str] | None,
        typer.Option("--models", "-m", help="Generated images of this model only; repeatable."),
    ] = None,
    encoder: Annotated[
        str,
        typer.Option(help="CLIP checkpoint (Hub id or folder) or open_clip:ARCH[,PRETRAINED]."),
    ] = "openai/clip-vit-base-patch32",
    epochs: Annotated[int, typer.Option(help="Training epochs of the head.")] = 20,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Head training batch.")] = 64,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Held-out share of each class.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split, init and shuffles.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Head file (default RUN/discriminator/head.safetensors)."),
    ] = None,
    device: Annotated[str, typer.Option(help="Encoder device: auto, cpu, cuda, cuda:N.")] = "auto",
    feature_cache: FeatureCacheOption = None,
    online: OnlineOption = False,
    cache_dir: CacheDirOption = None,
) -> None:
    """Train the head (frozen CLIP encoder + MLP) on real vs the run's generated images."""
    from rich.markup import escape
    from rich.table import Table

    from hadis_profile.measure.discriminator_run import train_discriminator

    res = train_discriminator(
        real,
        _run_dir(run),
        models=models,
        encoder=encoder,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        out=out,
        device=device,
        cache_dir=cache_dir,
        online=online,
        feature_cache=feature_cache,
        console=err_console,
    )
    m, data = res.metadata["metrics"], res.metadata["data"]
    t = Table(title=f"Discriminator head {res.scorer_id}", show_header=False)
    t.add_row("encoder", escape(res.metadata["encoder"]))
    t.add_row("real / generated", f"{data['n_real']} / {data['n_generated']}")
    t.add_row(
        "train / validation",
        f"{sum(m['n_train'].values())} / {sum(m['n_val'].values())} (stratified)",
    )
    t.add_row("validation accuracy", f"{m['val_accuracy']:.3f}")
    t.add_row("validation AUC", f"{m['val_auc']:.3f}")
    t.add_row("features", f"{res.cache_hits} cached, {res.encoded} encoded ({res.cache_path})")
    if res.unreadable:
        path, why = res.unreadable[0]
        t.add_row("skipped", escape(f"{len(res.unreadable)} unreadable (first {path}: {why})"))
    t.add_row("head", escape(f"{res.head_path} (+ {res.metadata_path.name})"))
    console.print(t)


@discriminator_app.command("score")
def discriminator_score_cmd(
    run: Annotated[Path, typer.Option("--run", help="Run with saved images.")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="learned (with --head), clip[:ckpt], pick[:model[,processor]] or module:fn.",
        ),
    ] = "learned",
    head: Annotated[
        Path | None, typer.Option("--head", help="Head file from `discriminator train`.")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Encoder for the head (default: the head's own).")
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--models", "-m", help="Only this model; repeatable.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    feature_cache: FeatureCacheOption = None,
    online: OnlineOption = False,
    cache_dir: CacheDirOption = None,
) -> None:
    """Write one confidence per saved image into the run (resumable), for `pareto`.

    The scorer becomes the run's discriminator: `pareto` calibrates on it and
    records it (kind, head hash, encoder) in the table's provenance.
    """
    from rich.markup import escape

    from hadis_profile.measure.discriminator_run import score_run

    res = score_run(
        _run_dir(run),
        kind,
        head=head,
        encoder=encoder,
        models=models,
        device=device,
        batch_size=batch_size,
        cache_dir=cache_dir,
        online=online,
        feature_cache=feature_cache,
        console=err_console,
    )
    means = ", ".join(f"{escape(k)} {v:.3f}" for k, v in res.mean_confidence.items())
    console.print(
        f"Scored {res.scored} images under {escape(res.scorer_id)} ({res.already} were already "
        f"scored); mean confidence: {means or '-'}.",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    """Console-script entry point: user errors print one sentence, never a traceback."""
    try:
        app()  # standalone: Click prints usage errors and exits 2 by itself
    except HadisError as e:
        from rich.markup import escape

        from hadis_profile.errors import ParameterError

        text = str(e)
        if isinstance(e, ParameterError):  # the library names the parameter; say the flag
            text = e.for_flag("--" + e.param.replace("_", "-"))
        err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("Interrupted; everything finished so far is saved.")
        sys.exit(130)


if __name__ == "__main__":
    main()
