"""GPU check for a lent CUDA machine: what CPU tests cannot show.

1. The tiny zoo profiled on CUDA in fp16 through the real `run` path (latency
   sweep with CUDA events, generation, scoring) into a run store, then
   `pareto` and `resolve` on it.
2. The CUDA timing path against a bare CUDA-event loop around the same call.
3. Memory stats: peak allocated/reserved bytes recorded per batch size.
4. The OOM path with a real `torch.cuda.OutOfMemoryError`: the point is recorded
   infeasible, the cache is freed and the batch stops growing.

Prints one JSON summary (also written to OUT/gpu_check.json). Run through
scripts/gpu_check.sh, which installs carried wheels first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def _label(device_name: str) -> str | None:
    """The short hardware label `run --gpu` expects, for the lent kinds."""
    return next((k for k in ("h100", "h200", "a100", "l40s") if k in device_name.lower()), None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"))
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: this script is for the lent GPU machine.", file=sys.stderr)
        return 2
    summary: dict = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }

    from hadis_profile.measure.latency import latency_sweep, measure_point
    from hadis_profile.measure.profiler import RunOptions, run_profile
    from hadis_profile.measure.tiny import ZOO_FILE, build_tiny_zoo

    # 1. The tiny zoo in fp16 on CUDA through `run`.
    t0 = time.perf_counter()
    zoo_dir = out / "tiny-zoo"
    build_tiny_zoo(zoo_dir)
    zoo_text = (zoo_dir / ZOO_FILE).read_text().replace("dtype: fp32", "dtype: fp16")
    fp16_zoo = zoo_dir / "model_zoo.tiny.fp16.yaml"
    fp16_zoo.write_text(zoo_text)
    prompts = Path(__file__).resolve().parents[1] / "prompts" / "smoke.txt"
    run_dir = out / "run"
    opts = RunOptions(
        zoo=fp16_zoo,
        prompts=prompts,
        out=run_dir,
        limit=8,
        images_per_prompt=2,
        batch_sizes=(1, 2, 4, 8, 16, 32),
        warmup=2,
        reps=10,
        device="cuda",
        gpu=_label(summary["device"]),
        force=True,
        fresh=True,
        router=False,
    )
    run_profile(opts)
    from hadis_profile.pareto import compile_table
    from hadis_profile.resolve import resolve
    from hadis_profile.store import RunStore
    from hadis_profile.table import CascadeTable, write_table

    with RunStore.open(run_dir) as store:
        meas = store.load_measurements()
        hw = store.hardware()
    doc = compile_table(meas)
    write_table(out / "table.json", doc)
    table = CascadeTable.from_document(doc)
    b1 = [m["latency"]["1"]["p99_s"] for m in table.models.values()]
    plan = resolve(table, qps=4 / max(b1), slo_s=4 * (min(b1) + max(b1)), gpus=4)
    summary["run"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        "hardware": hw,
        "latency_ms_b1": {n: round(m.latency[1].p50_s * 1e3, 3) for n, m in meas.models.items()},
        "peak_mem_mb": {
            n: {b: round((p.peak_mem_bytes or 0) / 2**20, 1) for b, p in m.latency.items()}
            for n, m in meas.models.items()
        },
        "table_rows": len(table.rows),
        "plan_feasible": plan.feasible,
    }

    # 2. Profiler timing vs a bare CUDA-event loop around the same call.
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)

    def call(batch: int) -> None:
        for _ in range(batch):
            x @ x

    point = measure_point(call, 4, warmup=5, reps=30, device="cuda")
    bare = []
    for _ in range(30):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        call(4)
        e.record()
        torch.cuda.synchronize()
        bare.append(s.elapsed_time(e) / 1e3)
    summary["timing"] = {
        "profiler_p50_ms": round(point.stats.p50_s * 1e3, 4),
        "bare_p50_ms": round(statistics.median(bare) * 1e3, 4),
        "rel_diff": round(point.stats.p50_s / statistics.median(bare) - 1, 4),
    }

    # 3/4. A real OOM: each batch allocates 2^b GiB; the sweep must stop at the first OOM.
    _free, total = torch.cuda.mem_get_info()

    def hog(batch: int) -> None:
        t = torch.empty(int(batch * total // 8), dtype=torch.uint8, device="cuda")
        del t

    points = latency_sweep(hog, (1, 2, 4, 8, 16, 32), warmup=1, reps=3, device="cuda")
    summary["oom"] = {
        "total_gb": round(total / 2**30, 1),
        "points": [
            {
                "batch": p.stats.batch_size,
                "infeasible": p.stats.infeasible,
                "peak_mem_gb": round((p.stats.peak_mem_bytes or 0) / 2**30, 2),
            }
            for p in points
        ],
        "memory_freed": torch.cuda.memory_allocated() < 2**30,
    }
    text = json.dumps(summary, indent=2, default=str)
    (out / "gpu_check.json").write_text(text)
    print(text)
    ok = (
        plan.feasible
        and abs(summary["timing"]["rel_diff"]) < 0.02
        and points[-1].stats.infeasible
        and summary["oom"]["memory_freed"]
    )
    print("GPU CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
