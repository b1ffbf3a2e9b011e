"""Is the profiler's timer thin? Its median vs a bare perf_counter loop, same call, same process.

Runs the tiny SD 1.x pipeline (``hadis-profile zoo tiny``) on the CPU at batch
size 1. Blocks of calls alternate between a bare timing loop and
``latency.measure_point`` (ABAB...), so machine drift (thermal, other load)
hits both alike; the medians of the pooled samples are compared. Exits 1 when
the profiler's median is more than ``--tolerance`` (default 2%) above the bare
loop's.

    python benchmarks/bench_profiler_overhead.py [--zoo DIR] [--rounds 15] [--reps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, help="a built tiny zoo folder (default: build one)")
    ap.add_argument("--model", default="tiny-sd1-light")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=10, help="calls per block")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from hadis_profile.measure.latency import measure_point, pipeline_runner
    from hadis_profile.measure.pipelines import call_kwargs, load_pipeline
    from hadis_profile.measure.tiny import ZOO_FILE, build_tiny_zoo
    from hadis_profile.zoo import load_zoo

    with tempfile.TemporaryDirectory() as tmp:
        zoo_dir = args.zoo or build_tiny_zoo(Path(tmp) / "zoo").root
        zoo = load_zoo(zoo_dir / ZOO_FILE)
        lp = load_pipeline(zoo.get(args.model), device="cpu", base_dir=zoo_dir)
        fn = pipeline_runner(lp.pipe, call_kwargs(lp.spec))
        for _ in range(5):  # warm both paths' caches before anything counts
            fn(1)

        bare: list[float] = []
        profiled: list[float] = []
        for _ in range(args.rounds):
            for _ in range(args.reps):
                t0 = time.perf_counter()
                fn(1)
                bare.append(time.perf_counter() - t0)
            point = measure_point(fn, 1, warmup=0, reps=args.reps)
            profiled.extend(point.samples_s)

    b, p = statistics.median(bare), statistics.median(profiled)
    diff = p / b - 1.0
    print(f"model {args.model}, {len(bare)} + {len(profiled)} calls, torch threads {args.threads}")
    print(f"bare loop median   {b * 1e3:8.3f} ms")
    print(f"profiler median    {p * 1e3:8.3f} ms")
    print(f"difference         {diff:+8.2%}  (tolerance {args.tolerance:.0%})")
    return 0 if abs(diff) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
