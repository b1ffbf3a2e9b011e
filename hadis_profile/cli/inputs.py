"""The inputs of a run: ``zoo validate|list|tiny`` and ``prompts inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hadis_profile.cli.options import SEED, ClipVocab, DecodeErrors, JsonOption, console, group

zoo_app = group("zoo", "Check and list the model zoo (model_zoo.yaml).")
prompts_app = group("prompts", "Inspect prompt sets before profiling them.")
apps = (zoo_app, prompts_app)

ZooArgument = Annotated[Path, typer.Argument(help="The zoo YAML file.")]


@zoo_app.command("validate")
def zoo_validate_cmd(path: ZooArgument = Path("model_zoo.yaml")) -> None:
    """Validate a zoo and print its models; exit 2 with one sentence if it is invalid."""
    from hadis_profile.report.terminal import render_zoo
    from hadis_profile.zoo import load_zoo

    render_zoo(load_zoo(path), console)


@zoo_app.command("list")
def zoo_list_cmd(
    path: ZooArgument = Path("model_zoo.yaml"),
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Only models with this tag (or family); repeatable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print model names, one per line (handy in shell loops); --json: every field."""
    from hadis_profile.zoo import load_zoo

    zoo = load_zoo(path).select(tags=tag)
    if as_json:
        from hadis_profile.report.documents import zoo_document
        from hadis_profile.report.terminal import write_json

        write_json(zoo_document(zoo))
        return
    for name in zoo.names:
        typer.echo(name)


@zoo_app.command("tiny")
def zoo_tiny_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the pipelines and the zoo file.")
    ] = Path("outputs/tiny-zoo"),
    seed: Annotated[int, typer.Option(help="Weight seed (same seed, same weights).", **SEED)] = 0,
    clip_vocab: Annotated[
        ClipVocab,
        typer.Option(
            "--clip-vocab",
            help="The CLIP tokenizer: mini (built in) or openai (the real CLIP BPE; needs "
            "open_clip_torch).",
        ),
    ] = "mini",
) -> None:
    """Build tiny random-weight SD1, SDXL and SD3 pipelines plus model_zoo.tiny.yaml.

    Not real models: for trying `run` and testing on a CPU without downloads.
    """
    import time

    from hadis_profile.measure.tiny import build_tiny_zoo
    from hadis_profile.report.terminal import render_tiny_zoo

    t0 = time.perf_counter()
    tiny = build_tiny_zoo(out, seed=seed, clip_vocab=clip_vocab)
    render_tiny_zoo(tiny, time.perf_counter() - t0, console)


@prompts_app.command("inspect", flags={"path": "FILE"})
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
    seed: Annotated[int, typer.Option("--seed", help="Seed for --sample.", **SEED)] = 0,
    dedup: Annotated[
        bool, typer.Option("--dedup/--no-dedup", help="Drop repeated prompts.")
    ] = True,
    encoding: Annotated[str, typer.Option("--encoding", help="Text encoding.")] = "utf-8",
    errors: Annotated[
        DecodeErrors, typer.Option("--errors", help="What to do with undecodable bytes.")
    ] = "strict",
    show: Annotated[int, typer.Option("--show", min=0, help="How many examples to print.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Load a prompt set as a run would and print its counts, hash and a few examples."""
    from hadis_profile.prompts import load_prompts
    from hadis_profile.report.terminal import render_prompt_set

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
    if as_json:
        from hadis_profile.report.documents import prompt_set_document
        from hadis_profile.report.terminal import write_json

        write_json(prompt_set_document(ps, show=show))
    else:
        render_prompt_set(ps, console, show=show)
