"""``hadis-profile run``: profile a zoo (latency per batch size, then scored images)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from hadis_profile.cli.options import (
    FID_FEATURES,
    QUALITY_SCORER,
    RUN_DISCRIMINATOR,
    SEED,
    BatchSizes,
    CacheDirOption,
    JsonOption,
    OnlineOption,
    console,
    err_console,
    parse_batch_sizes,
    verbs,
)

app = verbs()
apps = (app,)

Launcher = Literal["local", "ray"]


class Shard(tuple):
    """``I/N`` from ``--shard``: this task's index and the number of tasks."""


def parse_shard(text: str | Shard) -> Shard:
    """``"2/8"`` -> (2, 8), with ``0 <= I < N``."""
    if isinstance(text, Shard):
        return text
    index, sep, count = text.partition("/")
    try:
        shard = Shard((int(index), int(count)))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise typer.BadParameter(f"'{text}' must be I/N with 0 <= I < N (e.g. 0/4).")
    return shard


# RunOptions fields whose flag is spelled differently.
_FLAGS = {
    "time_budget_s": "--time-budget",
    "models": "--model",
    "tags": "--tag",
    "scorers": "--scorer",
    "gpu": "--gpu",
    "devices": "--devices",
    "ray_resources": "--ray-resource",
    "prompt_chunk": "--prompt-chunk",
}


@app.command("run", flags=_FLAGS)
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
    seed: Annotated[
        int, typer.Option(help="Base seed of the per-(prompt, image) seeds.", **SEED)
    ] = 0,
    batch_sizes: Annotated[
        BatchSizes,
        typer.Option(
            "--batch-sizes",
            parser=parse_batch_sizes,
            metavar="B1,B2,...",
            help="Batch sizes to time, comma-separated.",
        ),
    ] = "1,2,4,8,16,32",
    warmup: Annotated[int, typer.Option(help="Untimed warm-up calls per batch size.")] = 1,
    reps: Annotated[
        int,
        typer.Option(help="The most timed calls per batch size (a stable point stops sooner)."),
    ] = 20,
    min_reps: Annotated[
        int,
        typer.Option(
            "--min-reps",
            help="The fewest timed calls per batch size (6 gives the median a 95% interval).",
        ),
    ] = 6,
    tolerance: Annotated[
        float,
        typer.Option(
            help="Stop a batch size once its median's 95% interval is within this fraction "
            "of it; 0 times exactly --reps calls.",
        ),
    ] = 0.02,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget",
            help="Cap on the timed seconds per batch size (never below --min-reps calls); "
            "the summary says which points it cut short.",
        ),
    ] = None,
    gen_batch: Annotated[
        int | None,
        typer.Option(
            "--gen-batch",
            help="Images per generation call (default: the best-throughput feasible batch; "
            "a larger request is clamped to the largest feasible one).",
        ),
    ] = None,
    no_weights: Annotated[
        bool,
        typer.Option(
            "--no-weights",
            help="Build each model from its shipped architecture with random weights: "
            "latency, memory and the OOM point without downloading checkpoints (no quality).",
        ),
    ] = False,
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
        typer.Option(
            "--gpu",
            help="Hardware label (e.g. a100; must match the detected device), or a label per "
            "GPU type: 'NVIDIA H100 80GB HBM3=h100,NVIDIA A100-SXM4-80GB=a100' (default: "
            "derived from the device name).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Record --gpu even if it contradicts the device.")
    ] = False,
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            parser=QUALITY_SCORER,
            metavar=QUALITY_SCORER.metavar,
            help="Per-image quality scorer; repeatable (default: the zoo's scorers: list, "
            "else clip_score).",
        ),
    ] = None,
    discriminator: Annotated[
        str,
        typer.Option(
            parser=RUN_DISCRIMINATOR,
            metavar=RUN_DISCRIMINATOR.metavar,
            help="Escalation signal: clip (CLIP score / 100), none, a head from "
            "`discriminator train`, or a plug-in.",
        ),
    ] = "clip",
    fid: Annotated[
        str,
        typer.Option(parser=FID_FEATURES, metavar=FID_FEATURES.metavar, help="FID features."),
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
    launcher: Annotated[
        Launcher,
        typer.Option(
            help="Where models are measured: local (this machine; see --devices) or ray "
            "(one worker per GPU of a Ray cluster; needs the package's ray extra).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --launcher ray: the cluster (auto, host:port or ray://host:port; "
            "default: the local instance, started if none runs).",
        ),
    ] = None,
    ray_resource: Annotated[
        list[str] | None,
        typer.Option(
            "--ray-resource",
            help="With --launcher ray: a custom resource each worker takes one of instead of a "
            "GPU (workers then run on the CPU, named after it); repeatable.",
        ),
    ] = None,
    shard: Annotated[
        Shard | None,
        typer.Option(
            "--shard",
            parser=parse_shard,
            metavar="I/N",
            help="Measure only share I of N (by model and prompt chunk), e.g. one per SLURM "
            "array task, each into its own --out; join them with `hadis-profile merge`.",
        ),
    ] = None,
    prompt_chunk: Annotated[
        int,
        typer.Option(
            "--prompt-chunk",
            help="Prompts per unit that --shard and --launcher ray hand out (every shard of a "
            "run must use the same).",
        ),
    ] = 16,
    online: OnlineOption = False,
    cache_dir: CacheDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Profile the zoo: latency per batch size, then K seeded images per prompt, scored.

    Every finished unit (a batch size, a prompt's images) is committed at once;
    rerunning the same command resumes where it stopped. --launcher ray spreads
    the units over a Ray cluster's GPUs; --shard I/N measures one share of them
    (a batch scheduler's array task), joined afterwards with `merge`. A model that fails does
    not stop the others; the run then exits 1 naming it. --no-weights times the
    real architectures with random weights before any checkpoint is downloaded.
    """
    from hadis_profile.errors import UsageError
    from hadis_profile.measure.devices import parse_devices
    from hadis_profile.measure.profiler import RunFailed, RunOptions, run_profile
    from hadis_profile.report.runs import render_run

    if devices is not None and device is not None:
        raise UsageError("--device and --devices are mutually exclusive; pass one of them.")
    if launcher != "ray" and (ray_address or ray_resource):
        raise UsageError("--ray-address and --ray-resource need --launcher ray.")
    opts = RunOptions(
        zoo=zoo,
        prompts=prompts,
        out=out,
        models=model,
        tags=tag,
        limit=limit,
        images_per_prompt=images_per_prompt,
        seed=seed,
        batch_sizes=list(batch_sizes),
        warmup=warmup,
        reps=reps,
        min_reps=min_reps,
        tolerance=tolerance or None,
        time_budget_s=time_budget,
        gen_batch=gen_batch,
        no_weights=no_weights,
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
        launcher=launcher,
        ray_address=ray_address,
        ray_resources=ray_resource or None,
        shard=tuple(shard) if shard is not None else None,
        prompt_chunk=prompt_chunk,
    )
    show = _json_summary if as_json else render_run
    try:
        report = run_profile(opts, console=err_console)
    except RunFailed as e:  # the summary of what did get measured, then the one sentence
        show(e.report, console)
        raise
    show(report, console)


def _json_summary(report: object, _console: object) -> None:
    """``run --json``: the run's summary (``measure.summary.RunReport``) as one document."""
    from hadis_profile.fileio import jsonable
    from hadis_profile.report.terminal import write_json

    write_json(jsonable(report))
