"""``hadis-profile demo``: the whole journey (run -> Pareto table -> plan) on this machine.

Two sources, so that the demo works everywhere:

* tiny (the default when torch and diffusers are installed): the tiny
  random-weight SD 1.x / SDXL / SD3 pipelines of :mod:`hadis_profile.measure.tiny`,
  really profiled on this machine's CPU by ``run`` (latency sweep, seeded
  images, CLIP score and PickScore from tiny CLIP models). The numbers mean
  nothing about image quality; the mechanics are exactly those of a GPU run.
* synthetic: :mod:`hadis_profile.synthetic`'s measurement set; no torch needed.

Each call starts a fresh demo run under ``out/run`` (only a folder that holds a
run store is ever replaced), writes ``out/table.json``, ``out/pareto.png`` and
the HTML report ``out/report/index.html``, and resolves a serving plan for a
load the table can serve. The tiny run computes the router's features (spaCy,
brought by the ``measure`` extra) and saves its images, so the table holds
cascades that use the router and the discriminator together (r > 0 and d > 0)
and the report shows a contact sheet.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hadis_profile.errors import ParameterError

SOURCES = ("auto", "tiny", "synthetic")

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
#: How many prompts the tiny demo takes: at least two, at most the built-in list.
TINY_PROMPTS = (2, len(DEMO_PROMPTS))
#: How many prompts the synthetic demo takes (a bound, not a default: 200).
SYNTHETIC_PROMPTS = (1, 100_000)


def _fresh_run_dir(path: Path) -> None:
    from hadis_profile.store import DB_NAME
    from hadis_profile.store.lock import write_lock

    if path.exists():
        if not (path / DB_NAME).exists():
            raise ParameterError(
                "out", f"{path} exists and is not a run folder; choose another {{param}}."
            )
        with write_lock(path, "demo"):  # refused while another process writes that run
            shutil.rmtree(path)


def pick_source(source: str) -> str:
    """``auto`` means tiny when the measuring stack is importable, else synthetic."""
    if source not in SOURCES:
        raise ParameterError("source", f"{{param}} '{source}' is not one of {', '.join(SOURCES)}.")
    if source != "auto":
        return source
    import importlib.util

    have = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "transformers"))
    return "tiny" if have else "synthetic"


def demo_request(table: Any, gpus: int = 4) -> dict[str, float]:
    """A load and SLO the demo's table can serve, derived from its own latencies.

    SLO: 4x the batch-1 latency of the cheapest plus the dearest model (room for
    a cascade with queueing). Load: three times what ``gpus`` GPUs of the dearest
    model carry at batch size 1, more than it can serve even batched, so the
    resolver has to trade quality for capacity with a cascade.
    """
    b1 = [m["latency"]["1"]["p99_s"] for m in table.models.values() if "1" in m["latency"]]
    slo = 4.0 * (min(b1) + max(b1))
    qps = 3.0 * gpus / max(b1)
    return {"qps": round(qps, 3), "slo_s": round(slo, 4), "gpus": gpus}


def run_demo(
    out: str | Path,
    *,
    source: str = "auto",
    n_prompts: int | None = None,
    gpus: int = 4,
    console: Any = None,
) -> tuple[Path, Any, dict[str, float]]:
    """Build a demo run, compile it, plot it, report it, resolve it: (table path, Plan,
    request); the report is ``out/report/index.html``.

    The table is compiled exactly as ``hadis-profile pareto`` compiles a run
    (:func:`hadis_profile.pareto.compile_run`).
    """
    from hadis_profile.pareto import compile_run
    from hadis_profile.report.html import write_report
    from hadis_profile.report.plots import plot_pareto
    from hadis_profile.resolve import load_table, resolve
    from hadis_profile.table import write_table

    out = Path(out)
    run_dir = out / "run"
    source = pick_source(source)
    lo, hi = TINY_PROMPTS if source == "tiny" else SYNTHETIC_PROMPTS
    if n_prompts is not None and (n_prompts < lo or (hi is not None and n_prompts > hi)):
        allowed = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise ParameterError(
            "n_prompts", f"{{param}} must be {allowed} for the {source} demo, not {n_prompts}."
        )
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ParameterError(
            "gpus", f"{{param}} must be a whole number of at least 1, not {gpus!r}."
        )
    _fresh_run_dir(run_dir)  # only after every argument is known to be good
    out.mkdir(parents=True, exist_ok=True)
    if console is not None:
        from hadis_profile.termtext import esc

        console.print(
            f"[bold]demo[/]: {source} measurements into {esc(str(run_dir))}", highlight=False
        )
    if source == "tiny":
        quality = _tiny_run(out, run_dir, n_prompts or 8, console)
    else:
        from hadis_profile.synthetic import METRIC, write_synthetic_run

        write_synthetic_run(run_dir, n_prompts=n_prompts or 200).close()
        quality = METRIC
    doc = compile_run(run_dir, quality=quality)
    table_path = out / "table.json"
    write_table(table_path, doc)
    table = load_table(table_path)
    plot_pareto(table, out / "pareto.png")
    write_report(run_dir, out / "report", table=table, gpus=gpus)
    request = demo_request(table, gpus)
    plan = resolve(table, **request)
    return table_path, plan, request


def _tiny_run(out: Path, run_dir: Path, n_prompts: int, console: Any) -> str:
    from hadis_profile.measure.profiler import RunOptions, run_profile
    from hadis_profile.measure.tiny import ZOO_FILE, build_tiny_zoo
    from hadis_profile.report.runs import render_run

    zoo_dir = out / "tiny-zoo"
    if not (zoo_dir / ZOO_FILE).is_file():
        build_tiny_zoo(zoo_dir)
    prompts_path = out / "prompts.txt"
    prompts_path.write_text("\n".join(DEMO_PROMPTS[:n_prompts]) + "\n", encoding="utf-8")
    # One thread: on a small shared CPU, OpenMP spin-waits make 2 threads noisier, not faster.
    opts = RunOptions(
        zoo=zoo_dir / ZOO_FILE,
        prompts=prompts_path,
        out=run_dir,
        images_per_prompt=2,
        batch_sizes=(1, 2, 4),
        warmup=2,
        reps=5,
        device="cpu",
        discriminator="clip",
        save_images=True,  # 32x32 PNGs: the report's contact sheet
        threads=1,
    )
    report = run_profile(opts, console=console)
    if console is not None:
        render_run(report, console)
    return "pick_score"  # PickScore is not clamped: more spread than CLIP score
