"""``hadis-profile router features|score|fit``: the rule-based prompt router (HADIS)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import (
    SEED,
    FitMethod,
    JsonOption,
    Numbers,
    RunOption,
    console,
    err_console,
    group,
    run_dir,
    weights_option,
)

app = group("router", "The rule-based prompt router (HADIS): features and scores.")
apps = (app,)

_LEXICON_HELP = "Concreteness CSV (Brysbaert et al. 2014: Word, Conc.M); default: built-in list."
_SPATIAL_HELP = "Spatial phrases, one per line; default: built-in list."
_ENCODING_HELP = "Encoding of the prompts file; undecodable bytes are dropped (HADIS: ascii)."
LexiconOption = Annotated[Path | None, typer.Option("--lexicon", help=_LEXICON_HELP)]
SpatialOption = Annotated[Path | None, typer.Option("--spatial", help=_SPATIAL_HELP)]
EncodingOption = Annotated[str, typer.Option("--encoding", help=_ENCODING_HELP)]


def _write_csv(out: Path | None, header: list[str], rows) -> None:
    """CSV to ``out`` (atomically) or stdout (data, byte-exact when piped)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    if out is None:
        text = buf.getvalue()
        if sys.stdout.isatty():  # a terminal, not a pipe: no escape sequence from a prompt
            from hadis_profile.termtext import clean

            text = clean(text)
        sys.stdout.write(text)
    else:
        from hadis_profile.fileio import atomic_write_text

        atomic_write_text(out, buf.getvalue())


def _check_outputs(*paths: Path | None) -> None:
    """Refuse an --out that cannot be written before any prompt is read."""
    from hadis_profile.fileio import check_output_file

    for path in paths:
        if path is not None:
            check_output_file(path)


def _write_spec(path: Path, router) -> None:
    import json

    from hadis_profile.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(router.to_spec(), indent=1, allow_nan=False) + "\n")


def _prompts(path: Path, encoding: str) -> list[str]:
    """The prompt set as `run` reads it (so features agree), keeping duplicates so that
    rows line up with the file; undecodable bytes dropped, as HADIS read its prompts."""
    from hadis_profile.prompts import load_prompts

    return list(load_prompts(path, encoding=encoding, errors="ignore", dedup=False))


def _router(table: Path | None, lexicon, spatial, weights: Numbers | None):
    """The router a table fixes, or one built from the flags (HADIS's weights by default)."""
    from hadis_profile.errors import UsageError
    from hadis_profile.router import DEFAULT_WEIGHTS, Router

    if table is not None:
        if lexicon or spatial or weights:
            raise UsageError("--table fixes the router; drop --lexicon, --spatial and --weights.")
        return Router.from_table(table)
    w = tuple(weights) if weights is not None else DEFAULT_WEIGHTS
    return Router(weights=w, lexicon=lexicon, spatial_terms=spatial)


@app.command("features")
def router_features_cmd(
    prompts_file: Annotated[Path, typer.Argument(help="Prompts, one per line.")],
    lexicon: LexiconOption = None,
    spatial: SpatialOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="features.csv (default: stdout).")
    ] = None,
    encoding: EncodingOption = "utf-8",
) -> None:
    """Compute the router's 8 features per prompt (the layout of HADIS's prompt_features.csv)."""
    from hadis_profile.report.terminal import render_router_written
    from hadis_profile.router import FEATURES, Router

    _check_outputs(out)
    prompts = _prompts(prompts_file, encoding)
    X = Router(lexicon=lexicon, spatial_terms=spatial).features(prompts)
    rows = ([p, *map(int, row)] for p, row in zip(prompts, X, strict=True))
    _write_csv(out, ["prompt", *FEATURES], rows)
    if out is not None:
        render_router_written("features", len(prompts), out, err_console)


@app.command("score")
def router_score_cmd(
    prompts_file: Annotated[
        Path | None, typer.Argument(help="Prompts, one per line (or give --run).")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            parser=run_dir,
            help="Score this run's prompts and store features, scores and spec in it.",
        ),
    ] = None,
    table: Annotated[
        Path | None,
        typer.Option("--table", help="Use this table.json's router (its weights and stats)."),
    ] = None,
    lexicon: LexiconOption = None,
    spatial: SpatialOption = None,
    weights: Annotated[
        Numbers | None, weights_option("8 comma-separated weights (default: HADIS's).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="scores.csv (default: stdout).")
    ] = None,
    spec_out: Annotated[
        Path | None, typer.Option("--spec-out", help="Also write the router spec (JSON).")
    ] = None,
    encoding: EncodingOption = "utf-8",
) -> None:
    """Score prompts (higher = harder); without --table, normalise over these prompts."""
    from hadis_profile.errors import UsageError
    from hadis_profile.report.terminal import render_router_written

    if (prompts_file is None) == (run is None):
        raise UsageError("Give either a prompts file or --run RUN, not both or neither.")
    _check_outputs(out, spec_out)
    router = _router(table, lexicon, spatial, weights)
    if run is not None:
        _score_run(run, router, fit=table is None, out=out, spec_out=spec_out)
        return
    prompts = _prompts(prompts_file, encoding)
    if table is not None:
        scores = router.score(prompts)
    else:
        X = router.features(prompts)
        scores = router.fit_normalisation(X).score_features(X)
    rows = ([p, repr(float(s))] for p, s in zip(prompts, scores, strict=True))
    _write_csv(out, ["prompt", "score"], rows)
    if spec_out is not None:
        _write_spec(spec_out, router)
    if out is not None:
        render_router_written("scores", len(prompts), out, err_console)


def _score_run(run: Path, router, *, fit: bool, out: Path | None, spec_out: Path | None) -> None:
    """`router score --run`: features + scores + spec into the run's store, one transaction."""
    from hadis_profile.report.terminal import render_router_stored
    from hadis_profile.router_run import score_run
    from hadis_profile.store import RunStore

    with RunStore.open(run, write_lock="router score") as store:
        old = store.router_spec()
        _, scores = score_run(store, router, fit_normalisation=fit)
        prompts = store.prompts()
    if out is not None:
        rows = ([p, repr(float(s))] for p, s in zip(prompts, scores, strict=True))
        _write_csv(out, ["prompt", "score"], rows)
    if spec_out is not None:
        _write_spec(spec_out, router)
    replaced = bool(old and old.get("fitted"))
    render_router_stored(len(prompts), run, console, replaced_fitted=replaced)


@app.command("fit")
def router_fit_cmd(
    run: RunOption,
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
        FitMethod,
        typer.Option("--method", help="ridge (least squares) or rank (pairwise)."),
    ] = "ridge",
    alpha: Annotated[float, typer.Option("--alpha", help="L2 penalty.")] = 1.0,
    train_fraction: Annotated[
        float, typer.Option("--train-fraction", help="Share of prompts to fit on.")
    ] = 0.7,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the split and baselines.", **SEED)
    ] = 0,
    random_seeds: Annotated[
        int, typer.Option("--random-seeds", help="Seeds averaged for random routing.")
    ] = 200,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Evaluate only; leave the stored router alone.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Fit router weights to each prompt's gain from the heavy model; store them for pareto."""
    from hadis_profile.report.terminal import render_calibration, render_fit_stored, write_json
    from hadis_profile.router_run import fit_run_router
    from hadis_profile.store import RunStore

    writer = {"readonly": True} if dry_run else {"write_lock": "router fit"}
    with RunStore.open(run, **writer) as store:
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
        write_json(res.to_dict())
        return
    render_calibration(res, console)
    if res.stored:
        render_fit_stored(run, console)
