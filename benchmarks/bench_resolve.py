"""Benchmark ``hadis_profile.resolve``: import cost, call latency, and HiGHS MILP comparison.

Run: ``python benchmarks/bench_resolve.py [--calls 2000] [--seed 0]``.

The instance is a synthetic 1,000-row table (6 models, all 15 light/heavy pairs
plus the 6 single-model rows, batch sizes 1..32, the two largest models OOM at
32) of the shape ``pareto`` writes. Calls draw qps log-uniformly in [0.5, 100]
and the SLO uniformly in [2, 60] s. The MILP is the staged lexicographic HiGHS
formulation from ``tests/resolve_oracles.py`` on the problem as
:mod:`hadis_profile.resolve_reference` parses it (quality, then GPUs, then latency,
then row), solved with ``scipy.optimize.milp`` on the same table and request.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import resolve_oracles as oracle  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from hadis_profile.resolve import Resolver, resolve  # noqa: E402
from hadis_profile.resolve_reference import parse  # noqa: E402
from hadis_profile.table import CascadeTable, load_table, make_document, write_table  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32)
METRIC = "fid:inception-v3-compat"


def point(b: int, p99: float | None) -> dict:
    mean = (p99 or 1.0) / 1.1
    return {
        "batch_size": b,
        "mean_s": mean,
        "std_s": 0.02 * mean,
        "p50_s": mean,
        "p90_s": 1.05 * mean,
        "p99_s": p99 if p99 is not None else mean * 1.1,
        "peak_mem_bytes": None,
        "infeasible": p99 is None,
        "warmup": 2,
        "reps": 10,
    }


def synthetic_table(seed: int = 0, n_rows: int = 1000) -> CascadeTable:
    rng = random.Random(seed)
    batch1 = [0.25, 0.5, 0.9, 1.6, 2.8, 4.5]
    fid = [31.0, 27.5, 24.0, 21.5, 19.5, 18.0]
    names = [f"m{i}" for i in range(6)]
    models = {}
    for i, name in enumerate(names):
        lat = {}
        for b in BATCHES:
            oom = i >= 4 and b == 32
            lat[str(b)] = point(b, None if oom else 1.1 * batch1[i] * (0.35 + 0.65 * b) ** 0.95)
        models[name] = {
            "order": i,
            "steps": 2 + 2 * i,
            "latency": lat,
            "max_batch": 32,
            "peak_mem_bytes": None,
        }
    rows = []
    for i, name in enumerate(names):
        rows.append(row(name, None, 0.0, 0.0, fid[i]))
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    while len(rows) < n_rows:
        i, j = rng.choice(pairs)
        r, d = round(rng.random(), 3), round(rng.random(), 3)
        direct, esc = r, (1 - r) * d
        share_heavy = direct + esc
        q = (
            (1 - share_heavy) * fid[i]
            + share_heavy * fid[j]
            - 0.6 * share_heavy * (1 - share_heavy)
        )
        rows.append(row(names[i], names[j], r, d, round(q + rng.gauss(0, 0.05), 3)))
    payload = {
        "provenance": {
            "run_id": "bench",
            "hardware": {
                "label": "synthetic",
                "device_name": "synthetic",
                "driver": None,
                "libraries": {},
            },
            "zoo_hash": "z",
            "prompt_set_hash": "p",
            "n_prompts": 5000,
            "metrics": {METRIC: {"higher_is_better": False, "set_level": True}},
            "quality_metric": METRIC,
            "seeds": {},
            "grid": {"mode": "grid", "steps": 10},
            "pairs": "all",
            "per_pair": False,
            "router": {},
            "discriminator": {},
        },
        "models": models,
        "router": {"features": ["prompt_length"], "weights": [1.0], "mean": [0.0], "std": [1.0]},
        "rows": rows,
    }
    return CascadeTable.from_document(make_document(payload, created_at="2026-01-01T00:00:00Z"))


def row(light: str, heavy: str | None, r: float, d: float, q: float) -> dict:
    direct, esc = (r, (1 - r) * d) if heavy else (0.0, 0.0)
    return {
        "light": light,
        "heavy": heavy,
        "kind": "cascade" if heavy else "single",
        "r": r if heavy else 0.0,
        "d": d if heavy else 0.0,
        "router_threshold": 0.5 if heavy and r > 0 else None,
        "confidence_threshold": 0.4 if heavy else None,
        "fractions": {
            "direct": direct,
            "escalated": esc,
            "light": max(1 - direct - esc, 0.0),
            "load_light": 1 - direct,
            "load_heavy": direct + esc,
        },
        "quality": {METRIC: q},
        "gpu_s_per_query": 1.0,
        "latency_s": 1.0,
        "on_front": True,
    }


def import_time(runs: int = 7) -> tuple[float, float, float]:
    """Median seconds to import hadis_profile.resolve in a fresh interpreter.

    Returns (as this environment runs it, with a warm bytecode cache, whole process).
    The second number uses a private ``-X pycache_prefix`` folder (nothing is written
    into the repository) and drops PYTHONDONTWRITEBYTECODE, i.e. a deployed install.
    """
    code = (
        "import time; t = time.perf_counter(); import hadis_profile.resolve; "
        "print(time.perf_counter() - t)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def once(extra: list[str], env: dict) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, *extra, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return float(out.stdout), time.perf_counter() - t0

    plain = [once([], env) for _ in range(runs)]
    with tempfile.TemporaryDirectory() as cache:
        warm_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        extra = ["-X", f"pycache_prefix={cache}"]
        once(extra, warm_env)  # fill the cache
        warm = [once(extra, warm_env)[0] for _ in range(runs)]
    return (
        statistics.median(t for t, _ in plain),
        statistics.median(warm),
        statistics.median(w for _, w in plain),
    )


def time_calls(table, reqs, repeat: int = 1, call=None) -> np.ndarray:
    """Microseconds per call of ``resolve(table, **req)`` (or ``call(**req)``)."""
    call = call or functools.partial(resolve, table)
    out = np.empty(len(reqs) * repeat)
    i = 0
    for _ in range(repeat):
        for req in reqs:
            t0 = time.perf_counter_ns()
            call(**req)
            out[i] = (time.perf_counter_ns() - t0) / 1e3
            i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="random requests per GPU budget")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import scipy

    print(
        f"machine: {platform.platform()} | CPU {cpu_model()} | {os.cpu_count()} cores | "
        f"python {platform.python_version()} | numpy {np.__version__} | scipy {scipy.__version__}"
    )
    imp, warm, total = import_time()
    dont_write = "PYTHONDONTWRITEBYTECODE" in os.environ
    print(
        f"import hadis_profile.resolve, fresh interpreter, median of 7: {imp * 1e3:.1f} ms"
        f"{' (PYTHONDONTWRITEBYTECODE is set: sources recompiled each time)' if dont_write else ''}"
        f"; with a warm bytecode cache: {warm * 1e3:.1f} ms"
        f"; whole `python -c` process: {total * 1e3:.0f} ms"
    )

    table = synthetic_table(args.seed)
    t0 = time.perf_counter()
    resolve(table, qps=1, slo_s=60, gpus=8)  # first call compiles a Resolver (cached by sha256)
    print(
        f"table: {len(table.rows)} rows, 6 models, batch sizes {BATCHES}; "
        f"first call (compile + resolve): {(time.perf_counter() - t0) * 1e3:.1f} ms"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.json"
        write_table(path, table.document)
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            load_table(path)
            loads.append(time.perf_counter() - t0)
        print(
            f"load_table ({path.stat().st_size / 1e6:.2f} MB, every check of the strict loader), "
            f"median of 5: {statistics.median(loads) * 1e3:.1f} ms"
        )

    rng = random.Random(args.seed)
    print(
        "\nresolve() on random requests, qps log-U[0.5, 100], headroom 1.05; "
        "SLO U[2, 60] s (new SLO each call) or fixed 30 s (per-SLO state cached):"
    )
    print(
        f"{'gpus':>5} {'random SLO: median':>19} {'p90 us':>7} {'feasible':>9}   "
        f"{'fixed SLO: median':>18} {'p90 us':>7} {'feasible':>9}"
    )
    for gpus in (8, 16, 32, 64):
        cols = []
        for fixed in (False, True):
            reqs = [
                dict(
                    qps=float(np.exp(rng.uniform(np.log(0.5), np.log(100)))),
                    slo_s=30.0 if fixed else rng.uniform(2, 60),
                    gpus=gpus,
                )
                for _ in range(args.calls)
            ]
            feas = np.mean([resolve(table, **r).feasible for r in reqs])
            us = time_calls(table, reqs)
            cols.append((np.median(us), np.percentile(us, 90), feas))
        (m1, p1, f1), (m2, p2, f2) = cols
        print(f"{gpus:>5} {m1:>19.1f} {p1:>7.1f} {f1:>9.0%}   {m2:>18.1f} {p2:>7.1f} {f2:>9.0%}")

    resolver = Resolver(table)
    reqs = [
        dict(
            qps=float(np.exp(rng.uniform(np.log(0.5), np.log(100)))),
            slo_s=rng.uniform(2, 60),
            gpus=16,
        )
        for _ in range(args.calls)
    ]
    wrapped = np.median(time_calls(table, reqs))
    direct = np.median(time_calls(table, reqs, call=resolver.resolve))
    print(
        f"\n16 GPUs, random SLO: resolve(table, ...) median {wrapped:.1f} us; "
        f"Resolver(table).resolve(...) median {direct:.1f} us (no per-call cache lookup)"
    )

    qualities = sorted(r["quality"][METRIC] for r in table.rows)
    cases = [
        ("qps=20 slo=30", dict(qps=20.0, slo_s=30.0)),
        ("qps=20 slo=6", dict(qps=20.0, slo_s=6.0)),
    ]
    cases.append(("qps=400 slo=30", dict(qps=400.0, slo_s=30.0)))
    print(
        "\nfixed requests vs HiGHS (scipy.optimize.milp, lexicographic in 4 stages: quality, "
        "GPUs, latency, row; same instance). rank = quality rank of the chosen row (0 = best),"
        " i.e. how many rows the search had to pass:"
    )
    print(
        f"{'request':<15} {'gpus':>4} {'rank':>5} {'resolve med/p90 us':>19} {'MILP ms':>8} "
        f"{'stage-1 ms':>10} {'speed-up':>9} {'vs stage-1':>10} {'agree':>6}"
    )
    for label, base in cases:
        for gpus in (8, 16, 32, 64):
            req = dict(base, gpus=gpus)
            us = time_calls(table, [req], repeat=500)
            plan = resolve(table, **req)
            prob = parse(table.document, **req, headroom=1.05)
            t0 = time.perf_counter()
            oracle.milp_solve(prob, stages=1)
            stage1 = time.perf_counter() - t0
            t0 = time.perf_counter()
            truth = oracle.milp_solve(prob)
            milp_s = time.perf_counter() - t0
            if truth is None:
                agree = not plan.feasible
            else:
                agree = (
                    plan.feasible
                    and plan.quality == truth["qkey"][1]
                    and plan.total_gpus == truth["gpus"]
                    and abs(plan.worst_case_latency_s - truth["latency"]) < 1e-6
                    and plan.row == truth["row"]
                )
            rank = str(qualities.index(plan.quality)) if plan.feasible else "-"
            med = float(np.median(us))
            print(
                f"{label:<15} {gpus:>4} {rank:>5} {med:>9.1f} / {np.percentile(us, 90):>6.1f} "
                f"{milp_s * 1e3:>8.1f} {stage1 * 1e3:>10.1f} {milp_s / (med / 1e6):>8.0f}x "
                f"{stage1 / (med / 1e6):>9.0f}x {'yes' if agree else 'NO':>6}"
            )


if __name__ == "__main__":
    main()
