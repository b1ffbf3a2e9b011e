"""Benchmark: the full grid sweep on a HADIS-sized synthetic run.

4 models x 5,000 prompts x 4 images, all 6 ordered pairs, a 101 x 101 (r, d)
grid, 2 per-image metrics. The target is under 2 s in total on a 2-core
machine. Run: ``python benchmarks/bench_sweep.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from machine import cpu_model

from hadis_profile.measurements import LatencyStats, Measurements, ModelMeasurements
from hadis_profile.sweep import candidate_pairs, iter_sweep

METRICS = ["clip_score:synthetic", "pick_score:synthetic"]


def build(n_prompts: int = 5000, images: int = 4, seed: int = 0) -> Measurements:
    """Per-image scores averaged per prompt, as the store would load them."""
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(2.0, 2.0, n_prompts)
    models = {}
    for i, (name, lat) in enumerate(
        [("sdxl-lightning", 0.5), ("sd35-turbo", 1.3), ("sd35-medium", 13.0), ("sd35-large", 27.0)]
    ):
        skill = 0.4 + 0.15 * i
        per_image = skill - 0.5 * difficulty[:, None] + rng.normal(0, 0.1, (n_prompts, images))
        conf = 1 / (1 + np.exp(-5 * per_image)) + rng.normal(0, 0.05, (n_prompts, images))
        models[name] = ModelMeasurements(
            name,
            latency={1: LatencyStats.constant(1, lat)},
            quality={
                METRICS[0]: 30 * per_image.mean(axis=1),
                METRICS[1]: 20 + per_image.mean(axis=1) + rng.normal(0, 0.2, n_prompts),
            },
            confidence=conf.mean(axis=1),
        )
    scores = difficulty + rng.normal(0, 0.2, n_prompts)
    return Measurements([f"prompt {i}" for i in range(n_prompts)], models, router_scores=scores)


def run_once(meas: Measurements) -> int:
    return sum(len(chunk) for chunk in iter_sweep(meas, "all", grid=100, metrics=METRICS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    meas = build()
    assert len(candidate_pairs(meas, "all")) == 6
    configs = run_once(meas)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run_once(meas)
        times.append(time.perf_counter() - t0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.platform()}; {cpu_model()}; {cores} cores usable")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(
        f"sweep: 4 models x 5000 prompts x 4 images, 6 pairs, 101 x 101 grid, "
        f"{len(METRICS)} metrics -> {configs} configurations per run"
    )
    print(
        f"seconds per run over {args.repeats} runs after a warm-up: median "
        f"{statistics.median(times):.4f}, min {min(times):.4f}, max {max(times):.4f} "
        "(target < 2 s)"
    )


if __name__ == "__main__":
    main()
