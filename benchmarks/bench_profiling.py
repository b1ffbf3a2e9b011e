"""What does profiling cost beyond making the images? Total `run` time over the tiny zoo
against the sum of its image-generation calls, adaptive sweep vs the old fixed one.

The physical limit of profiling is each image generated once at the best-throughput
batch, plus enough timed calls per batch size for a stable median. The adaptive
profiler (the default) stops a batch size once its median's 95% interval is within 2%,
generates the images at the best-throughput feasible batch and reuses those calls as
latency samples. The baseline, measured in the same run on the same models, is the
former fixed sweep (2 warm-ups and 10 timed calls per batch size, images at batch 4).

Per mode it prints the median over ``--repeats`` runs of the total profiler time, of
the time spent inside image-generation calls, and their ratio (goal: at most 1.2x),
and the largest relative p50 difference between the two modes over every (model,
batch size) point (goal: within 2%).

Scoring is left out (no scorer, no discriminator): a tiny CLIP costs about as much
as a tiny diffusion model, where a real CLIP is about 1% of an SDXL call, so it
would measure the tiny zoo rather than the profiler. What is compared is what the
profiler adds around the images: loading, the sweep and its bookkeeping.

    python benchmarks/bench_profiling.py [--prompts 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

MODELS = ["tiny-sd1-light", "tiny-sdxl-mid", "tiny-sd3-heavy", "tiny-sd1-heavy"]
MODES = {
    "adaptive (default)": {},
    "fixed sweep (before)": {"warmup": 2, "reps": 10, "tolerance": None, "gen_batch": 4},
}


def profile_once(zoo: Path, prompts: Path, out: Path, args: argparse.Namespace, **mode) -> dict:
    """One `run` of the tiny zoo: total seconds, seconds inside generation calls, p50s."""
    from hadis_profile.measure import generate
    from hadis_profile.measure.options import RunOptions
    from hadis_profile.measure.profiler import run_profile
    from hadis_profile.store import RunStore

    real = generate.generate_images
    spent = [0.0]

    def counted(*a, on_call=None, **kw):
        def both(n: int, seconds: float) -> None:
            spent[0] += seconds
            if on_call is not None:
                on_call(n, seconds)

        return real(*a, on_call=both, **kw)

    generate.generate_images = counted
    try:
        opts = RunOptions(
            zoo=zoo,
            prompts=prompts,
            out=out,
            models=MODELS,
            images_per_prompt=args.k,
            batch_sizes=(1, 2, 4, 8),
            device="cpu",
            threads=1,
            router=False,
            scorers=[],
            discriminator="none",
            fresh=True,
            **mode,
        )
        t0 = time.perf_counter()
        run_profile(opts)
        total = time.perf_counter() - t0
    finally:
        generate.generate_images = real
    with RunStore.open(out) as store:
        p50 = {(m, b): s.p50_s for m in MODELS for b, s in store.latency(m, "cpu").items()}
    return {"total": total, "generation": spent[0], "p50": p50}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=300, help="first N of prompts/varied.txt")
    ap.add_argument("-k", type=int, default=4, help="images per prompt")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from hadis_profile.measure.tiny import ZOO_FILE, build_tiny_zoo

    root = Path(__file__).resolve().parents[1]
    texts = (root / "prompts" / "varied.txt").read_text().splitlines()[: args.prompts]
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        zoo_dir = build_tiny_zoo(tmp / "zoo").root
        prompts = tmp / "prompts.txt"
        prompts.write_text("\n".join(texts) + "\n")
        for i in range(args.repeats):  # modes alternate, so drift hits both alike
            for name, mode in MODES.items():
                out = tmp / f"run-{i}-{len(results[name])}"
                results[name].append(profile_once(zoo_dir / ZOO_FILE, prompts, out, args, **mode))

    print(
        f"machine: {cpu_model()}, 1 torch thread; tiny zoo ({len(MODELS)} models), "
        f"{args.prompts} prompts x {args.k} images, batch sizes 1,2,4,8; "
        f"median of {args.repeats} runs per mode"
    )
    print(f"{'mode':<22} {'total s':>8} {'generation s':>13} {'ratio':>6}")
    ratios = {}
    for name, runs in results.items():
        total = statistics.median(r["total"] for r in runs)
        gen = statistics.median(r["generation"] for r in runs)
        ratios[name] = statistics.median(r["total"] / r["generation"] for r in runs)
        print(f"{name:<22} {total:8.1f} {gen:13.1f} {ratios[name]:6.2f}")
    adaptive, fixed = (results[m] for m in MODES)
    keys = sorted(set.intersection(*(set(r["p50"]) for r in adaptive + fixed)))

    def worst(a: list[dict], b: list[dict]) -> float:
        """Largest |p50 of a / p50 of b - 1| over the points (medians over each list's runs)."""
        return max(
            abs(
                statistics.median(r["p50"][k] for r in a)
                / statistics.median(r["p50"][k] for r in b)
                - 1
            )
            for k in keys
        )

    print(
        f"largest p50 difference over {len(keys)} points: adaptive vs fixed "
        f"{worst(adaptive, fixed):.2%}",
        end="",
    )
    if args.repeats >= 2:  # the machine's own noise: one mode against itself
        floor = max(worst(runs[:1], runs[1:2]) for runs in (adaptive, fixed))
        print(f"; one mode against itself, run to run (the noise floor): {floor:.2%}")
    else:
        print()
    print(
        f"adaptive profiling costs {ratios['adaptive (default)']:.2f}x its image generation "
        f"(goal <= 1.2x); the fixed sweep cost {ratios['fixed sweep (before)']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
