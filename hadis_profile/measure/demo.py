"""``hadis-profile demo``: the whole chain (run store -> Pareto table) on data made here.

Two sources, so that the demo works everywhere:

* synthetic (default): :mod:`hadis_profile.synthetic`'s measurement set; no torch.
* tiny: the tiny random-weight pipelines of :mod:`.tiny`, really profiled on this
  machine's CPU by :func:`.profiler.run_profile` (latency sweep, seeded images,
  CLIP score and PickScore from tiny CLIP models). The numbers mean nothing
  about image quality; the mechanics are exactly those of a GPU run.

Each call starts a fresh demo run under ``out/run`` (only a folder that holds a
run store is ever replaced) and writes ``out/table.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError

#: Used when prompts/smoke.txt is not next to the package (e.g. an installed wheel).
DEMO_PROMPTS = (
    "a red apple on a white table",
    "a tabby cat sleeping in a patch of sunlight",
    "a lighthouse on a cliff during a storm",
    "three yellow rubber ducks in a bathtub",
    "a green cube underneath a red pyramid",
    'a street sign that reads "Maple Avenue"',
    "a koi pond in autumn as a ukiyo-e woodblock print",
    "the weight of a difficult decision",
    "a fox, a rabbit and a hedgehog having a picnic",
    "a foggy forest path in early morning light",
    "an astronaut riding a horse on the moon",
    "a bowl of noodles with chopsticks, seen from above",
)


def _fresh_run_dir(path: Path) -> None:
    from hadis_profile.store import DB_NAME

    if path.exists():
        if not (path / DB_NAME).exists():
            raise HadisError(f"{path} exists and is not a run folder; choose another --out.")
        shutil.rmtree(path)


def run_demo(
    out: str | Path, *, tiny: bool = False, n_prompts: int | None = None, console: Any = None
) -> Path:
    """Build a demo run and compile it; returns the path of the written ``table.json``."""
    from hadis_profile.pareto import compile_table
    from hadis_profile.store import RunStore
    from hadis_profile.table import write_table

    out = Path(out)
    run_dir = out / "run"
    _fresh_run_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tiny:
        quality = _tiny_run(out, run_dir, n_prompts or 8, console)
    else:
        from hadis_profile.synthetic import METRIC, write_synthetic_run

        write_synthetic_run(run_dir, n_prompts=n_prompts or 200).close()
        quality = METRIC
    with RunStore.open(run_dir) as store:
        meas = store.load_measurements()
    doc = compile_table(meas, quality_metric=quality)
    table_path = out / "table.json"
    write_table(table_path, doc)
    return table_path


def _tiny_run(out: Path, run_dir: Path, n_prompts: int, console: Any) -> str:
    from hadis_profile.measure.profiler import RunOptions, render_report, run_profile
    from hadis_profile.measure.tiny import ZOO_FILE, build_tiny_zoo

    zoo_dir = out / "tiny-zoo"
    if not (zoo_dir / ZOO_FILE).is_file():
        build_tiny_zoo(zoo_dir)
    prompts = list(DEMO_PROMPTS)
    if n_prompts < 2 or n_prompts > len(prompts):
        raise HadisError(f"The tiny demo takes 2 to {len(prompts)} prompts, not {n_prompts}.")
    prompts_path = out / "prompts.txt"
    prompts_path.write_text("\n".join(prompts[:n_prompts]) + "\n", encoding="utf-8")
    pick = f"pick_score:{zoo_dir / 'pickscore'},{zoo_dir / 'clip'}"
    # One thread: on a small shared CPU, OpenMP spin-waits make 2 threads noisier, not faster.
    opts = RunOptions(
        zoo=zoo_dir / ZOO_FILE,
        prompts=prompts_path,
        out=run_dir,
        images_per_prompt=2,
        batch_sizes=(1, 2, 4),
        warmup=2,
        reps=5,
        gen_batch=4,
        device="cpu",
        scorers=[pick, f"clip_score:{zoo_dir / 'clip'}"],
        discriminator="clip",
        threads=1,
    )
    report = run_profile(opts, console=console)
    if console is not None:
        render_report(report, console)
    return f"pick_score:{zoo_dir / 'pickscore'}"  # PickScore is not clamped: more spread
