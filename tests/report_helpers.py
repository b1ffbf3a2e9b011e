"""Runs for the report's tests: the synthetic run (no torch), with saved images and raw samples
added by hand, so that every section of the report has something to draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIM_ARGS = ("--rate", "0.5:3", "--duration", "120", "--gpus", "8", "--slo", "200",
            "--policy", "hadis", "--policy", "clipper-light")  # fmt: skip


def synthetic_run(root: Path, *, n_prompts: int = 80, images: bool = True) -> Path:
    """A synthetic run; with ``images``, a 24x24 PNG per image of seed index 0 (saved under
    ``RUN/images/`` as ``run --save-images`` does), a stage breakdown and raw samples."""
    from PIL import Image

    from hadis_profile.samples import summarize
    from hadis_profile.synthetic import write_synthetic_run

    run = root / "run"
    store = write_synthetic_run(run, n_prompts=n_prompts)
    with store:
        if not images:
            return run
        rng = np.random.default_rng(1)
        names = list(store.models())
        for m, name in enumerate(names):
            base = store.latency(name)[1].p50_s
            xs = list(base * (1 + 0.05 * rng.standard_normal(8)).clip(0.5))
            store.put_latency(name, "synthetic", summarize(1, xs, peak_mem=2**30), samples=xs)
            for p in range(n_prompts):
                rel = Path("images") / name / f"{p:06d}_0.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                colour = (40 * m % 256, 7 * p % 256, 200)
                Image.new("RGB", (24, 24), colour).save(run / rel)
                store.put_image(name, p, 0, seed=p * 1000, path=str(rel))
        stages = {n: {"text_encoding": 0.01, "denoising": 0.05 * (i + 1), "vae_decode": 0.02}
                  for i, n in enumerate(names)}  # fmt: skip
        store.update_provenance({"stages": stages})
    return run
