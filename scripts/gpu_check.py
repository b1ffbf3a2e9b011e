"""One GPU check for `run`, ready to run on a lent CUDA machine in under 10 minutes.

Each check exercises the real `run` path (no mocks but the injected faults) and
reports a JSON record; the script prints one JSON summary and PASSED or FAILED:

1. ``tiny``: the tiny zoo profiled in fp16 and bf16 (CUDA-event timing, both
   memory peaks per point, raw samples), compiled, resolved.
2. ``vae_oom``: an out-of-memory error injected inside the SDXL VAE's fp32
   upcast decode at batch >= 2 (half precision); the next point and the image
   generation must still run, and ``memory_reserved`` must come back down.
3. ``devices``: ``--devices`` with one worker; the parent must never have
   created a CUDA context (checked in a fresh interpreter).
4. ``scorers``: a 2 GiB plug-in scorer beside the model: the model's peak
   memory must not include it.
5. ``no_weights``: full-size SD 1.5 and SDXL at 512 and 1024 px, batch 1-8, and
   SD3.5 Medium at batch 1, built from the shipped configs with random weights.
6. ``timing``: the profiler's timer against a bare CUDA-event loop (< 2%).

``--device cpu --quick`` runs a CPU-sized version of 1-4 and 6 (the test suite
does, so the script cannot rot where no GPU is lent). Run through
scripts/gpu_check.sh, which installs carried wheels first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def _label(device_name: str) -> str:
    """The short hardware label `run --gpu` expects for the kinds this project is lent."""
    low = device_name.lower()
    return next((k for k in ("h100", "h200", "a100", "l40s", "a10g", "l4") if k in low), "gpu")


def _opts(**kw: Any) -> Any:
    from hadis_profile.measure.options import RunOptions

    base = {"warmup": 1, "reps": 10, "min_reps": 3, "router": False, "fresh": True, "force": True}
    return RunOptions(**{**base, **kw})


def _tiny_zoo(out: Path, dtype: str) -> Path:
    from hadis_profile.measure.tiny import ZOO_FILE, build_tiny_zoo

    zoo_dir = out / "tiny-zoo"
    if not (zoo_dir / ZOO_FILE).is_file():
        build_tiny_zoo(zoo_dir)
    path = zoo_dir / f"model_zoo.tiny.{dtype}.yaml"
    path.write_text((zoo_dir / ZOO_FILE).read_text().replace("dtype: fp32", f"dtype: {dtype}"))
    return path


def check_tiny(out: Path, device: str, quick: bool) -> dict:
    """The tiny zoo in each half precision through `run`, then `pareto` and `resolve`."""
    from hadis_profile.pareto import compile_run
    from hadis_profile.resolve import resolve
    from hadis_profile.store import RunStore
    from hadis_profile.table import CascadeTable

    prompts = ROOT / "prompts" / "smoke.txt"
    res: dict = {}
    dtypes = ("fp32",) if device == "cpu" else ("fp16", "bf16")
    for dtype in dtypes:
        zoo = _tiny_zoo(out, dtype)
        run_dir = out / f"tiny-{dtype}"
        opts = _opts(
            zoo=zoo,
            prompts=prompts,
            out=run_dir,
            limit=3 if quick else 8,
            images_per_prompt=2,
            batch_sizes=(1, 2) if quick else (1, 2, 4, 8, 16, 32),
            device=device,
            gpu="cpu" if device == "cpu" else None,
            models=["tiny-sd1-light", "tiny-sd1-heavy"] if quick else None,
        )
        _run(opts)
        with RunStore.open(run_dir) as store:
            models = list(store.models())
            samples = {m: store.latency_samples(m) for m in models}
            details = {m: store.latency_details(m) for m in models}
        doc = compile_run(run_dir)
        table = CascadeTable.from_document(doc)
        b1 = [m["latency"]["1"]["p99_s"] for m in table.models.values()]
        plan = resolve(table, qps=1 / max(b1), slo_s=8 * (min(b1) + max(b1)), gpus=4)
        peaks_ok = device == "cpu" or all(
            d[1]["peak_allocated_bytes"] is not None and d[1]["peak_reserved_bytes"]
            for d in details.values()
        )
        res[dtype] = {
            "models": len(models),
            "b1_ms": {
                m: round(statistics.median(x for x, _ in s[1]) * 1e3, 3) for m, s in samples.items()
            },
            "rows": len(table.rows),
            "plan_feasible": plan.feasible,
            "ok": plan.feasible and peaks_ok and all(len(s[1]) >= 3 for s in samples.values()),
        }
    res["ok"] = all(v["ok"] for v in res.values() if isinstance(v, dict))
    return res


def check_vae_oom(out: Path, device: str, quick: bool) -> dict:
    """OOM inside SDXL's upcast VAE decode at batch >= 2, then the next point and images."""
    import torch
    from diffusers import AutoencoderKL

    from hadis_profile.measure import pipelines
    from hadis_profile.measure.job import ModelJob
    from hadis_profile.measure.quality import QualityTools
    from hadis_profile.measure.units import ModelWork
    from hadis_profile.zoo import load_zoo

    zoo = _tiny_zoo(out, "fp16")
    spec = load_zoo(zoo).get("tiny-sdxl-mid")
    real_load, real_decode = pipelines.load_pipeline, AutoencoderKL.decode
    seen: list = []

    def load(spec: Any, **kw: Any) -> Any:
        lp = real_load(spec, **kw)
        lp.pipe.to(torch.float16)  # fp16 on the CPU too: the CPU loader gives fp32
        lp.pipe.vae.config.force_upcast = True
        return lp

    def decode(self: Any, z: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((int(z.shape[0]), str(self.dtype)))
        if z.shape[0] >= 2:
            # hold real memory first, so the allocator has something to give back
            hold = torch.empty(GiB // 4, dtype=torch.uint8, device=z.device)
            del hold
            raise torch.OutOfMemoryError("CUDA out of memory (injected by gpu_check)")
        return real_decode(self, z, *args, **kwargs)

    class Sink:
        def __init__(self) -> None:
            self.points: list = []
            self.records: list = []

        def begin(self, work: Any) -> None: ...
        def loaded(self, *a: Any) -> None: ...
        def samples(self, *a: Any) -> None: ...
        def stages(self, *a: Any) -> None: ...
        def log(self, text: str) -> None: ...

        def latency(self, model: str, point: Any) -> None:
            self.points.append(point)

        def prompt(self, record: Any) -> None:
            self.records.append(record)

    pipelines.load_pipeline, AutoencoderKL.decode = load, decode
    sink = Sink()
    try:
        opts = _opts(zoo=zoo, prompts="-", out=out, images_per_prompt=2, reps=3, gen_batch=4)
        before = torch.cuda.memory_reserved() if device != "cpu" else 0
        with ModelJob(spec, opts, device, QualityTools([], None, []), zoo.parent) as job:
            job.run(ModelWork(spec, (1, 2, 4), (0, 1)), ["a red apple", "a blue door"], sink)
            again = job.latency([1], lambda p: None)[0]
            vae_dtype = str(job.loaded.pipe.vae.dtype)
        after = torch.cuda.memory_reserved() if device != "cpu" else 0
    finally:
        pipelines.load_pipeline, AutoencoderKL.decode = real_load, real_decode
    points = [(p.stats.batch_size, p.infeasible) for p in sink.points]
    return {
        "points": points,
        "upcast_decode_failed": any(b >= 2 and "float32" in d for b, d in seen),
        "vae_dtype_after": vae_dtype,
        "next_point_ok": not again.infeasible,
        "prompts_done": [r.prompt_id for r in sink.records],
        "reserved_gib_before_after": [round(before / GiB, 3), round(after / GiB, 3)],
        "ok": points == [(1, False), (2, True)]
        and vae_dtype == "torch.float16"
        and not again.infeasible
        and [r.prompt_id for r in sink.records] == [0, 1]
        and after <= before + GiB // 8,
    }


DEVICES_CHILD = textwrap.dedent(
    """\
    import json, sys
    import torch
    from hadis_profile.measure.options import RunOptions
    from hadis_profile.measure.profiler import run_profile
    args = json.loads(sys.argv[1])
    run_profile(RunOptions(**args))
    print(json.dumps({"parent_cuda_initialized": torch.cuda.is_initialized()}))
    """
)


def check_devices(out: Path, device: str, quick: bool) -> dict:
    """`--devices` with one worker, in a fresh interpreter that must never touch CUDA."""
    zoo = _tiny_zoo(out, "fp32" if device == "cpu" else "fp16")
    args = {
        "zoo": str(zoo),
        "prompts": str(ROOT / "prompts" / "smoke.txt"),
        "out": str(out / "devices"),
        "limit": 2,
        "images_per_prompt": 1,
        "batch_sizes": [1, 2],
        "warmup": 0,
        "reps": 3,
        "min_reps": 3,
        "models": ["tiny-sd1-light"],
        "devices": ["cpu" if device == "cpu" else "cuda:0"],
        "gpu": "cpu" if device == "cpu" else None,
        "force": True,
        "fresh": True,
        "router": False,
    }
    done = subprocess.run(
        [sys.executable, "-c", DEVICES_CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr.strip().splitlines()[-1:]}
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {**got, "ok": not got["parent_cuda_initialized"]}


class HogScorer:
    """A plug-in scorer that keeps ``size`` bytes on the device, as a big metric model would."""

    metric_id = "clip_score:hog"

    def __init__(self, device: str, size: int) -> None:
        import torch

        self.device = device
        self.ballast = torch.ones(size // 4, dtype=torch.float32, device=device)

    def to(self, device: str) -> HogScorer:
        self.ballast = self.ballast.to(device)
        self.device = device
        return self

    def score(self, images: Any, prompts: Any) -> Any:
        import numpy as np

        return np.full(len(prompts), 0.5)


def check_scorers(out: Path, device: str, quick: bool) -> dict:
    """The same model's peaks with and without a big scorer beside it."""
    from hadis_profile.measure import profiler
    from hadis_profile.store import RunStore

    zoo = _tiny_zoo(out, "fp32" if device == "cpu" else "fp16")
    size = GiB // 2 if device == "cpu" else 2 * GiB
    real = profiler.build_quality_tools
    peaks = {}
    for hog in (False, True):

        def build(opts: Any, dev: str, hog: bool = hog) -> Any:
            tools = real(opts, dev)
            if hog:
                tools.scorers.append(HogScorer(dev, size))
            return tools

        profiler.build_quality_tools = build
        try:
            run_dir = out / f"scorers-{hog}"
            _run(
                _opts(
                    zoo=zoo,
                    prompts=ROOT / "prompts" / "smoke.txt",
                    out=run_dir,
                    limit=1,
                    images_per_prompt=1,
                    batch_sizes=(1, 2),
                    models=["tiny-sd1-light"],
                    device=device,
                    gpu="cpu" if device == "cpu" else None,
                    discriminator="none",
                )
            )
        finally:
            profiler.build_quality_tools = real
        with RunStore.open(run_dir) as store:
            peaks[hog] = {b: s.peak_mem_bytes for b, s in store.latency("tiny-sd1-light").items()}
    diff = max(abs((peaks[True][b] or 0) - (peaks[False][b] or 0)) for b in peaks[False])
    return {
        "peaks_mib": {
            str(k): {b: round((v or 0) / 2**20, 1) for b, v in p.items()} for k, p in peaks.items()
        },
        "scorer_gib": size / GiB,
        "max_diff_mib": round(diff / 2**20, 1),
        "ok": diff < size / 4,
    }


NO_WEIGHTS_ZOO = """\
models:
  - {name: sd15-512, source: stable-diffusion-v1-5/stable-diffusion-v1-5, family: sd1,
     steps: STEPS, guidance_scale: 7.5, height: 512, width: 512, dtype: fp16}
  - {name: sd15-1024, source: stable-diffusion-v1-5/stable-diffusion-v1-5, family: sd1,
     steps: STEPS, guidance_scale: 7.5, height: 1024, width: 1024, dtype: fp16}
  - {name: sdxl-512, source: stabilityai/stable-diffusion-xl-base-1.0, family: sdxl,
     steps: STEPS, guidance_scale: 5.0, height: 512, width: 512, dtype: fp16}
  - {name: sdxl-1024, source: stabilityai/stable-diffusion-xl-base-1.0, family: sdxl,
     steps: STEPS, guidance_scale: 5.0, height: 1024, width: 1024, dtype: fp16}
  - {name: sd35-medium, source: stabilityai/stable-diffusion-3.5-medium, family: sd3,
     steps: STEPS, guidance_scale: 4.5, height: 1024, width: 1024, dtype: bf16}
"""


def check_no_weights(out: Path, device: str, quick: bool) -> dict:
    """Real architectures at full size with random weights: latency and memory per batch."""
    from hadis_profile.store import RunStore

    steps = 2 if quick else 10
    zoo = out / "no-weights.yaml"
    zoo.write_text(NO_WEIGHTS_ZOO.replace("STEPS", str(steps)))
    run_dir = out / "no-weights"
    res: dict = {"steps": steps}
    plan = [
        (["sd15-512", "sd15-1024", "sdxl-512", "sdxl-1024"], (1, 2, 4, 8)),
        (["sd35-medium"], (1,)),
    ]
    for models, sizes in plan:
        _run(
            _opts(
                zoo=zoo,
                prompts=ROOT / "prompts" / "smoke.txt",
                out=run_dir,
                models=models,
                batch_sizes=sizes,
                reps=5,
                device=device,
                no_weights=True,
                fresh=False,
            )
        )
    with RunStore.open(run_dir) as store:
        for m in store.models():
            lat, det = store.latency(m), store.latency_details(m)
            res[m] = {
                str(b): {
                    "p50_ms": None if s.infeasible else round(s.p50_s * 1e3, 1),
                    "ms_per_image": None if s.infeasible else round(s.p50_s * 1e3 / b, 1),
                    "peak_allocated_gib": round((det[b]["peak_allocated_bytes"] or 0) / GiB, 2),
                    "peak_reserved_gib": round((det[b]["peak_reserved_bytes"] or 0) / GiB, 2),
                    "infeasible": s.infeasible,
                }
                for b, s in lat.items()
            }
    res["ok"] = all(
        "1" in res[m] and not res[m]["1"]["infeasible"] for m in res if isinstance(res[m], dict)
    )
    return res


def check_timing(out: Path, device: str, quick: bool) -> dict:
    """The profiler's timer against a bare loop around the same call (< 2% apart)."""
    import torch

    from hadis_profile.measure.latency import measure_point

    n = 1024 if device == "cpu" else 4096
    x = torch.randn(n, n, device=device, dtype=torch.float32 if device == "cpu" else torch.float16)

    def call(batch: int) -> None:
        for _ in range(batch):
            x @ x

    def bare() -> float:
        if device == "cpu":
            t0 = time.perf_counter()
            call(4)
            return time.perf_counter() - t0
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        s.record()
        call(4)
        e.record()
        e.synchronize()
        return s.elapsed_time(e) / 1e3

    ratios = []
    for _ in range(5):  # ABAB, so drift hits both alike
        point = measure_point(call, 4, warmup=3, reps=15, device=device)
        ref = statistics.median(bare() for _ in range(15))
        ratios.append(point.stats.p50_s / ref - 1)
    rel = statistics.median(ratios)
    return {"rel_diff": round(rel, 4), "ok": abs(rel) < (0.05 if device == "cpu" else 0.02)}


def _run(opts: Any) -> Any:
    from hadis_profile.measure.profiler import run_profile

    return run_profile(opts)


CHECKS: dict[str, Callable[[Path, str, bool], dict]] = {
    "tiny": check_tiny,
    "vae_oom": check_vae_oom,
    "devices": check_devices,
    "scorers": check_scorers,
    "no_weights": check_no_weights,
    "timing": check_timing,
}
#: What a CPU-sized check leaves out: full-size SDXL and SD3.5 take minutes per call there.
CPU_SKIPS = ("no_weights",)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"))
    ap.add_argument("--device", default="cuda", help="cuda (the default) or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (the test suite's run)")
    ap.add_argument("--only", action="append", choices=sorted(CHECKS), help="run just these")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA device: pass --device cpu --quick to run the CPU-sized checks.")
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    from hadis_profile.measure.devices import detect_device, library_versions

    info = detect_device(args.device)
    summary: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "device": info.name,
        "details": info.details,
        "libraries": library_versions(),
        "checks": {},
    }
    names = args.only or [n for n in CHECKS if not (args.device == "cpu" and n in CPU_SKIPS)]
    for name in names:
        t0 = time.perf_counter()
        try:
            res = CHECKS[name](out, args.device, args.quick)
        except Exception as e:  # a check that crashes fails, and the others still run
            res = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
            traceback.print_exc(file=sys.stderr)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        summary["checks"][name] = res
        print(f"{name}: {'ok' if res['ok'] else 'FAILED'} ({res['seconds']} s)", file=sys.stderr)
    summary["passed"] = all(c["ok"] for c in summary["checks"].values())
    text = json.dumps(summary, indent=2, default=str)
    (out / "gpu_check.json").write_text(text)
    print(text)
    print("GPU CHECK", "PASSED" if summary["passed"] else "FAILED")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
