"""``hadis-profile discriminator train|score``: the quality discriminator (P(real))."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import (
    SCORE_KIND,
    SEED,
    CacheDirOption,
    FeatureCacheOption,
    OnlineOption,
    console,
    err_console,
    group,
    run_dir,
)

app = group(
    "discriminator",
    "Train and apply the quality discriminator (P(real), HADIS's escalation signal).",
)
apps = (app,)

_DEVICE_HELP = "Encoder device: auto, cpu, cuda or cuda:N."


@app.command("train", flags={"run_dir": "--run", "real_dir": "--real"})
def discriminator_train_cmd(
    real: Annotated[Path, typer.Option("--real", help="Folder of real images (recursive).")],
    run: Annotated[
        Path,
        typer.Option("--run", parser=run_dir, help="Run with saved images (`run --save-images`)."),
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
    seed: Annotated[int, typer.Option(help="Seed of the split, init and shuffles.", **SEED)] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Head file (default RUN/discriminator/head.safetensors)."),
    ] = None,
    device: Annotated[str, typer.Option(help=_DEVICE_HELP)] = "auto",
    feature_cache: FeatureCacheOption = None,
    online: OnlineOption = False,
    cache_dir: CacheDirOption = None,
) -> None:
    """Train the head (frozen CLIP encoder + MLP) on real vs the run's generated images."""
    from hadis_profile.measure.discriminator_run import train_discriminator
    from hadis_profile.report.terminal import render_training

    res = train_discriminator(
        real,
        run,
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
    render_training(res, console)


@app.command("score", flags={"run_dir": "--run"})
def discriminator_score_cmd(
    run: Annotated[Path, typer.Option("--run", parser=run_dir, help="Run with saved images.")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            parser=SCORE_KIND,
            metavar=SCORE_KIND.metavar,
            help="The scorer: a trained head (learned, with --head), CLIP score, PickScore "
            "or a plug-in.",
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
    device: Annotated[str, typer.Option(help=_DEVICE_HELP)] = "auto",
    feature_cache: FeatureCacheOption = None,
    online: OnlineOption = False,
    cache_dir: CacheDirOption = None,
) -> None:
    """Write one confidence per saved image into the run (resumable), for `pareto`.

    The scorer becomes the run's discriminator: `pareto` calibrates on it and
    records it (kind, head hash, encoder) in the table's provenance.
    """
    from hadis_profile.measure.discriminator_run import score_run
    from hadis_profile.report.terminal import render_scoring

    res = score_run(
        run,
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
    render_scoring(res, console)
