"""Latency sweeps: warm-up, N timed repetitions per batch size, OOM-aware.

The timer is deliberately thin -- one ``perf_counter`` pair (CPU) or one CUDA
event pair plus a synchronize (GPU) per call, the samples appended to a list --
so that what is measured is the pipeline, not the profiler
(``benchmarks/bench_profiler_overhead.py`` checks the median stays within 2% of
a bare loop). Everything else (percentiles, memory, warnings) happens once per
batch size, outside the timed region.

Each batch size's peak memory is measured on its own (:mod:`.memory`).

An out-of-memory error is not a crash: the point is recorded as infeasible,
memory is freed, and the sweep stops growing the batch for that model.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hadis_profile.measure.memory import MemoryMonitor, free_memory, is_oom
from hadis_profile.measurements import LatencyStats

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
#: hyperfine's threshold on the modified Z-score (10 x the 1.4826 MAD-to-sigma factor).
OUTLIER_ZSCORE = 14.826
NOISY_CV = 0.10
SLOW_MAX_OVER_MEDIAN = 2.0


# --------------------------------------------------------------------------- timing


class Timer:
    """Times one call of ``fn``: perf_counter on the CPU, CUDA events on a GPU.

    CUDA work is asynchronous, so a host clock would stop when the kernels are
    queued; events recorded on the stream around the call and a synchronize at
    the end give the device time. The device is synchronized *before* the start
    event too, so earlier queued work is not charged to this call.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.cuda = str(device).startswith("cuda")
        if self.cuda:
            import torch

            self._torch = torch
            self._dev = torch.device(device)
            with torch.cuda.device(self._dev):
                self._start = torch.cuda.Event(enable_timing=True)
                self._end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], Any]) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        cuda = self._torch.cuda
        cuda.synchronize(self._dev)
        self._start.record(cuda.current_stream(self._dev))
        fn()
        self._end.record(cuda.current_stream(self._dev))
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1000.0


def summarize(
    batch_size: int, samples: Sequence[float], *, warmup: int = 0, peak_mem: int | None = None
) -> LatencyStats:
    """LatencyStats from raw per-call seconds (sample std, linear-interpolated percentiles)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        batch_size=int(batch_size),
        mean_s=float(a.mean()),
        std_s=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        p50_s=float(p50),
        p90_s=float(p90),
        p99_s=float(p99),
        peak_mem_bytes=peak_mem,
        infeasible=False,
        warmup=int(warmup),
        reps=int(a.size),
    )


def infeasible(batch_size: int, *, warmup: int = 0) -> LatencyStats:
    """The record of a batch size that ran out of memory."""
    nan = math.nan
    return LatencyStats(int(batch_size), nan, nan, nan, nan, nan, None, True, int(warmup), 0)


def outlier_warning(samples: Sequence[float]) -> str | None:
    """A hyperfine-style warning when the samples look disturbed, else None.

    Flags statistical outliers (modified Z-score above 14.826, as hyperfine), a
    coefficient of variation above 10%, or a maximum above 2x the median.
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.size < 3:
        return None
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    problems = []
    if mad > 0:
        z = 0.6745 * (a - med) / mad
        n_out = int((np.abs(z) > OUTLIER_ZSCORE).sum())
        if n_out:
            problems.append(f"{n_out} statistical outlier(s)")
    cv = float(a.std(ddof=1) / a.mean()) if a.mean() > 0 else 0.0
    if cv > NOISY_CV:
        problems.append(f"CV {cv:.0%}")
    if med > 0 and a.max() > SLOW_MAX_OVER_MEDIAN * med:
        problems.append(f"max {a.max() / med:.1f}x the median")
    if not problems:
        return None
    return (
        "Timings look disturbed (" + ", ".join(problems) + "); other load on the machine or "
        "too few warm-up runs may have interfered. Consider more --warmup or --reps."
    )


# --------------------------------------------------------------------------- sweeps


@dataclass
class LatencyPoint:
    """One batch size's result: the stored stats plus the raw evidence behind them."""

    stats: LatencyStats
    samples_s: list[float] = field(default_factory=list)
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    peak_rss: int | None = None
    peak_rss_resettable: bool = True
    warning: str | None = None
    error: str | None = None  # the OOM message of an infeasible point

    @property
    def infeasible(self) -> bool:
        return self.stats.infeasible


def measure_point(
    fn: Callable[[int], Any],
    batch_size: int,
    *,
    warmup: int = 2,
    reps: int = 10,
    device: str = "cpu",
    min_reps: int = 3,
    time_budget_s: float | None = None,
) -> LatencyPoint:
    """Warm up, then time ``reps`` calls of ``fn(batch_size)``.

    With ``time_budget_s`` the repetitions shrink (never below ``min_reps``) so
    that one point takes about that long: a 30 s batch of a 50-step model does
    not need 10 repetitions to be known to 1%. An OOM anywhere in the point
    yields an infeasible :class:`LatencyPoint` with the memory freed.
    """
    timer = Timer(device)
    monitor = MemoryMonitor(device)
    samples: list[float] = []
    error: str | None = None
    monitor.start()
    try:
        last = None
        for _ in range(warmup):
            last = timer(lambda: fn(batch_size))
        n = reps
        if time_budget_s is not None and last is not None and last > 0:
            n = max(min_reps, min(reps, int(time_budget_s / last)))
        for _ in range(n):
            samples.append(timer(lambda: fn(batch_size)))
    except Exception as e:
        if not is_oom(e):
            raise
        error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if error is not None:
        # The traceback (and the tensors its frames hold) is gone once we are
        # out of the except block, so freeing now really frees.
        free_memory(device)
        return LatencyPoint(infeasible(batch_size, warmup=warmup), error=error)
    mem = monitor.stop()
    peak = mem["peak_reserved"] if monitor.cuda else mem["peak_rss"]
    return LatencyPoint(
        stats=summarize(batch_size, samples, warmup=warmup, peak_mem=peak),
        samples_s=samples,
        peak_allocated=mem["peak_allocated"],
        peak_reserved=mem["peak_reserved"],
        peak_rss=mem["peak_rss"],
        peak_rss_resettable=monitor.resettable,
        warning=outlier_warning(samples),
    )


def latency_sweep(
    fn: Callable[[int], Any],
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    *,
    warmup: int = 2,
    reps: int = 10,
    device: str = "cpu",
    min_reps: int = 3,
    time_budget_s: float | None = None,
    on_point: Callable[[LatencyPoint], None] | None = None,
) -> list[LatencyPoint]:
    """Measure each batch size in increasing order; stop after the first OOM.

    ``on_point`` is called after every point (feasible or not) so a caller can
    commit it at once: a crash later in the sweep loses nothing measured.
    """
    points: list[LatencyPoint] = []
    for b in sorted(set(int(x) for x in batch_sizes)):
        point = measure_point(
            fn,
            b,
            warmup=warmup,
            reps=reps,
            device=device,
            min_reps=min_reps,
            time_budget_s=time_budget_s,
        )
        points.append(point)
        if on_point is not None:
            on_point(point)
        if point.infeasible:
            break
    return points


def pipeline_runner(
    pipe: Any,
    call_kwargs: dict[str, Any],
    prompt: str = "a photograph of an astronaut riding a horse",
    *,
    output_type: str = "pt",
    seed: int = 0,
) -> Callable[[int], Any]:
    """``fn(batch_size)`` generating ``batch_size`` images of one prompt, end to end.

    Text encoding, denoising and VAE decoding are all inside; ``output_type="pt"``
    skips the PIL conversion, which is host-side post-processing a server may
    or may not do. The generator is re-seeded per call so every repetition
    does identical work.
    """
    import torch

    def run(batch_size: int) -> Any:
        generator = torch.Generator("cpu").manual_seed(seed)
        return pipe(
            prompt=[prompt] * batch_size,
            generator=generator,
            output_type=output_type,
            **call_kwargs,
        )

    return run


# --------------------------------------------------------------------------- stages

_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
_DENOISERS = ("unet", "transformer", "prior")


def stage_breakdown(
    pipe: Any, run: Callable[[], Any], *, reps: int = 3, device: str = "cpu"
) -> dict[str, float]:
    """Mean seconds per call spent in text encoding, denoising, VAE decoding and the rest.

    Uses forward hooks on the text encoders and the denoiser and wraps
    ``vae.decode``, so it works for any pipeline with the usual component
    names. On CUDA each stage boundary synchronizes, which perturbs overlap a
    little: use it to see *where* time goes, and the plain sweep for *how much*.
    """
    cuda = str(device).startswith("cuda")
    torch = sys.modules.get("torch") if cuda else None

    def sync() -> None:
        if torch is not None:
            torch.cuda.synchronize(torch.device(device))

    totals = {"text_encoding": 0.0, "denoising": 0.0, "vae_decode": 0.0}
    starts: dict[int, float] = {}
    handles: list[Any] = []

    def hooks(module: Any, stage: str) -> None:
        def pre(mod: Any, *_: Any) -> None:
            sync()
            starts[id(mod)] = time.perf_counter()

        def post(mod: Any, *_: Any) -> None:
            sync()
            totals[stage] += time.perf_counter() - starts.pop(id(mod))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    for name in _TEXT_ENCODERS:
        m = getattr(pipe, name, None)
        if m is not None and hasattr(m, "register_forward_hook"):
            hooks(m, "text_encoding")
    for name in _DENOISERS:
        m = getattr(pipe, name, None)
        if m is not None and hasattr(m, "register_forward_hook"):
            hooks(m, "denoising")
    vae = getattr(pipe, "vae", None)
    original_decode = getattr(vae, "decode", None) if vae is not None else None
    if original_decode is not None:

        def decode(*args: Any, **kwargs: Any) -> Any:
            sync()
            t0 = time.perf_counter()
            out = original_decode(*args, **kwargs)
            sync()
            totals["vae_decode"] += time.perf_counter() - t0
            return out

        vae.decode = decode
    timer = Timer(device)
    total = 0.0
    try:
        run()  # warm-up, not counted
        for k in totals:
            totals[k] = 0.0
        for _ in range(reps):
            total += timer(run)
    finally:
        for h in handles:
            h.remove()
        if original_decode is not None:
            del vae.decode  # the instance attribute; the class method shows again
    out = {k: v / reps for k, v in totals.items()}
    out["other"] = max(total / reps - sum(out.values()), 0.0)
    out["total"] = total / reps
    return out


# --------------------------------------------------------------------------- overheads


def time_per_item(
    fn: Callable[[Sequence[Any]], Any],
    items: Sequence[Any],
    *,
    batch_size: int = 1,
    warmup: int = 1,
    reps: int = 5,
    device: str = "cpu",
) -> LatencyStats:
    """Seconds per item of ``fn(batch)`` over ``items`` in batches of ``batch_size``.

    The returned stats are per item (``batch_size`` field = the batch used), so
    router (per query) and scorer (per image) overheads compare directly with
    the per-image generation latency the sweep charges.
    """
    if not items:
        raise ValueError("no items to time")
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    timer = Timer(device)
    for _ in range(warmup):
        fn(batches[0])
    samples = [timer(lambda b=b: fn(b)) / len(b) for _ in range(reps) for b in batches]
    return summarize(batch_size, samples, warmup=warmup)


def router_overhead(
    score_prompt: Callable[[str], Any], prompts: Sequence[str], **kwargs: Any
) -> LatencyStats:
    """Per-query router latency: ``score_prompt`` called on one prompt at a time."""
    return time_per_item(lambda batch: [score_prompt(p) for p in batch], prompts, **kwargs)


def scorer_overhead(
    scorer: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    **kwargs: Any,
) -> LatencyStats:
    """Per-image latency of ``scorer.score(images, prompts)`` at ``batch_size``."""
    if len(images) != len(prompts):
        raise ValueError("images and prompts differ in length")
    pairs = list(zip(images, prompts, strict=True))

    def run(batch: Sequence[tuple[Any, str]]) -> Any:
        return scorer.score([p[0] for p in batch], [p[1] for p in batch])

    return time_per_item(run, pairs, batch_size=batch_size, **kwargs)
