"""Benchmark ``hadis_profile.simulate``: wall time per policy on a 1-hour, 1->64 qps load.

Run: ``python benchmarks/bench_simulate.py [--repeats 5] [--duration 3600] [--peak 64]``.

The workload is a seeded Poisson process ramping linearly from 1 to ``--peak``
queries/s over ``--duration`` seconds (~117k queries for the defaults) on 16
GPUs with a 30 s SLO. Two tables:

* ``hadis-ref``: the HADIS reference run (4 models, batch size 1 only, FID from
  the authors' sweep), imported from ../shared/data when present. Batch size 1
  means one event per query per stage: the simulator's worst case.
* ``synthetic``: the demo's synthetic run (4 models, batch sizes 1..32, CLIP
  score per prompt), which always exists.

Each policy is timed alone (``run_policy``: the event loop, not table
compilation), median of ``--repeats`` runs; the full ``simulate()`` call with all
8 policies (restricted tables compiled, summaries and windows) is timed too.

With ../shared/data, two E1 timings follow: the HADIS authors' six systems
under their testbed's rules (random per-worker queues, admission, in-flight
demand; reference latencies with ``linear:0.9`` batches) on the same load, and
the whole ``hadis-e1`` scenario (import, table, both blocks, accounting).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from hadis_profile.pareto import compile_table  # noqa: E402
from hadis_profile.simulate import POLICIES, SimConfig, poisson_workload, simulate  # noqa: E402
from hadis_profile.simulate.context import build_context  # noqa: E402
from hadis_profile.simulate.engine import run_policy  # noqa: E402
from hadis_profile.simulate.policies import make_policy  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402
from hadis_profile.table import CascadeTable  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def scenarios(tmp: Path) -> list[tuple[str, CascadeTable, object]]:
    out = []
    if (SHARED / "hadis-reference").is_dir():
        from hadis_profile.importer import import_hadis_reference

        import_hadis_reference(SHARED / "hadis-reference", tmp / "hadis-ref")
        with RunStore.open(tmp / "hadis-ref") as store:
            meas = store.load_measurements()
        out.append(("hadis-ref", CascadeTable(compile_table(meas, nominal=True)), meas))
    else:
        print(f"(skipping hadis-ref: {SHARED} is absent)")
    from hadis_profile.synthetic import write_synthetic_run

    store = write_synthetic_run(tmp / "synthetic", n_prompts=500)
    meas = store.load_measurements()
    store.close()
    out.append(("synthetic", CascadeTable(compile_table(meas)), meas))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--peak", type=float, default=64.0)
    ap.add_argument("--gpus", type=int, default=16)
    ap.add_argument("--slo", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"load: Poisson 1->{args.peak:g} qps over {args.duration:g} s, {args.gpus} GPUs, "
        f"SLO {args.slo:g} s, re-plan every 50 s; median of {args.repeats} runs\n"
    )
    with tempfile.TemporaryDirectory() as d:
        for name, table, meas in scenarios(Path(d)):
            wl = poisson_workload(1.0, args.peak, args.duration, meas.n_prompts, seed=args.seed)
            prompts, _ = wl.mapped_prompts(meas.n_prompts)
            ctx = build_context(table, meas, gpus=args.gpus, slo_s=args.slo)
            print(f"{name}: {len(wl):,} queries, {len(table.rows)} table rows")
            print(f"  {'policy':<14} {'median s':>9} {'min s':>7} {'queries/s':>11} {'viol.':>7}")
            for p in POLICIES:
                pol = make_policy(p, ctx, mean_qps=wl.mean_qps)
                times, run = [], None
                for _ in range(args.repeats):
                    pol = make_policy(p, ctx, mean_qps=wl.mean_qps)  # fresh state each run
                    t0 = time.perf_counter()
                    run = run_policy(ctx, pol, wl.arrivals_s, prompts)
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                late = np.count_nonzero(
                    (run.status == 1) & (run.finish - run.arrival > args.slo + 1e-9)
                )
                viol = (late + np.count_nonzero(run.status == 2)) / len(wl)
                print(
                    f"  {p:<14} {med:>9.3f} {min(times):>7.3f} {len(wl) / med:>11,.0f} {viol:>7.1%}"
                )
            t0 = time.perf_counter()
            simulate(table, meas, wl, list(POLICIES), SimConfig(gpus=args.gpus, slo_s=args.slo))
            took = time.perf_counter() - t0
            print(f"  simulate() with all {len(POLICIES)} policies: {took:.2f} s\n")
        if (SHARED / "hadis-reference").is_dir():
            e1(Path(d), args)


def e1(tmp: Path, args: argparse.Namespace) -> None:
    from hadis_profile.importer import import_hadis_reference
    from hadis_profile.simulate import AUTHORS_POLICIES
    from hadis_profile.simulate.run import build_policy
    from hadis_profile.simulate.scenarios import e1_config, hadis_e1

    import_hadis_reference(SHARED / "hadis-reference", tmp / "e1", batch_latency="linear:0.9")
    with RunStore.open(tmp / "e1") as store:
        meas = store.load_measurements()
    table = CascadeTable(compile_table(meas, nominal=True, pairs="adjacent", per_pair=True))
    wl = poisson_workload(1.0, args.peak, args.duration, meas.n_prompts, seed=args.seed)
    prompts, _ = wl.mapped_prompts(meas.n_prompts)
    config = e1_config("authors")
    ctx = build_context(table, meas, gpus=config.gpus, slo_s=config.slo_s)
    opts = {k: getattr(config, k) for k in ("tick_s", "demand", "admission", "batch_overhead_s",
                                            "batch_time", "dispatch", "seed")}  # fmt: skip
    print(f"E1 rules (authors' systems, {len(wl):,} queries, 16 GPUs, SLO 60 s):")
    print(f"  {'policy':<18} {'median s':>9} {'min s':>7} {'queries/s':>11}")
    for p in AUTHORS_POLICIES:
        times = []
        for _ in range(args.repeats):
            pol = build_policy(p, ctx, mean_qps=wl.mean_qps, config=config)
            t0 = time.perf_counter()
            run_policy(ctx, pol, wl.arrivals_s, prompts, **opts)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"  {p:<18} {med:>9.3f} {min(times):>7.3f} {len(wl) / med:>11,.0f}")
    t0 = time.perf_counter()
    hadis_e1(SHARED)
    print(
        f"  the hadis-e1 scenario (12,270 queries, 14 policies): {time.perf_counter() - t0:.2f} s"
    )


if __name__ == "__main__":
    main()
