"""Is the profiler's timer thin? Its median vs a bare perf_counter loop, same call, same process.

Runs the tiny SD 1.x pipeline (``hadis-profile zoo tiny``) on the CPU at batch
size 1. Each round times a block of calls with a bare loop and a block with
``latency.measure_point``, in alternating order (AB, BA, ...), and takes the
ratio of the two blocks' medians: a paired comparison, so drift between rounds
(other load, frequency) cancels instead of landing on one side. It prints the
median ratio over the rounds and their interquartile range, the machine's own
noise. Exits 1 when the median ratio is more than ``--tolerance`` (default 2%)
from 1.

    python benchmarks/bench_profiler_overhead.py [--zoo DIR] [--rounds 30] [--reps 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, help="a built tiny zoo folder (default: build one)")
    ap.add_argument("--model", default="tiny-sd1-light")
    ap.add_argument("--rounds", type=int, default=30)
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

        ratios: list[float] = []
        for r in range(args.rounds):

            def bare() -> float:
                samples = []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    fn(1)
                    samples.append(time.perf_counter() - t0)
                return statistics.median(samples)

            def profiled() -> float:
                return statistics.median(measure_point(fn, 1, warmup=0, reps=args.reps).samples_s)

            if r % 2 == 0:
                b, p = bare(), profiled()
            else:
                p, b = profiled(), bare()
            ratios.append(p / b)

    q1, med, q3 = statistics.quantiles(ratios, n=4)
    print(f"machine: {platform.platform()}; {cpu_model()}; {os.cpu_count()} cores")
    print(
        f"model {args.model}, {args.rounds} rounds x {args.reps} + {args.reps} calls, "
        f"torch threads {args.threads}"
    )
    print(
        f"profiler / bare loop, median over rounds  {med - 1:+8.2%}"
        f"  (tolerance {args.tolerance:.0%})"
    )
    print(f"interquartile range over rounds           {q1 - 1:+8.2%} .. {q3 - 1:+.2%}")
    return 0 if abs(med - 1) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
