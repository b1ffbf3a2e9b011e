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

import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hadis_profile.measure.memory import Baseline, MemoryMonitor, free_memory, is_oom
from hadis_profile.measurements import LatencyStats
from hadis_profile.samples import median_ci_rel, outlier_warning, summarize

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


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


def infeasible(batch_size: int, *, warmup: int = 0) -> LatencyStats:
    """The record of a batch size that ran out of memory."""
    nan = math.nan
    return LatencyStats(int(batch_size), nan, nan, nan, nan, nan, None, True, int(warmup), 0)


# --------------------------------------------------------------------------- sweeps


@dataclass
class LatencyPoint:
    """One batch size's result: the stored stats plus the raw evidence behind them.

    ``samples_s`` are the raw per-call seconds (the store keeps them); memory
    peaks are above the model's :class:`~.memory.Baseline`. ``ci_rel`` is the
    95% interval of the median relative to it, ``converged`` whether it met the
    tolerance, and ``budget_cut`` whether the time budget stopped the point
    before it converged (or, without a tolerance, before ``reps`` calls).
    """

    stats: LatencyStats
    samples_s: list[float] = field(default_factory=list)
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    peak_rss: int | None = None
    peak_rss_resettable: bool = True
    warning: str | None = None
    error: str | None = None  # the OOM message of an infeasible point
    ci_rel: float | None = None
    converged: bool | None = None
    budget_cut: bool = False

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
    tolerance: float | None = None,
    time_budget_s: float | None = None,
    baseline: Baseline | None = None,
    enough: Callable[[list[float]], bool] | None = None,
) -> LatencyPoint:
    """Warm up, then time calls of ``fn(batch_size)``: at most ``reps``, at least ``min_reps``.

    Without ``tolerance`` it times exactly ``reps`` calls. With it, it stops as
    soon as the median's 95% interval (:func:`median_ci`) lies within
    ``tolerance`` of the median: a stable point is known after a handful of
    calls, a noisy one gets up to ``reps``. ``time_budget_s`` caps the timed
    calls' total (a 30 s batch of a 50-step model cannot afford 30 calls); the
    point then says ``budget_cut``. ``enough(samples)``, asked once at
    ``min_reps`` calls, may end the point there: when other calls will add
    samples to it later (the image generation's, see :meth:`.job.ModelJob.run`).
    An OOM anywhere in the point yields an infeasible :class:`LatencyPoint`
    with the memory freed.
    """
    timer = Timer(device)
    monitor = MemoryMonitor(device, baseline)
    samples: list[float] = []
    error: str | None = None
    ci_rel: float | None = None
    converged: bool | None = None if tolerance is None else False
    budget_cut = False
    floor = max(1, min(min_reps, reps))
    monitor.start()
    try:
        for _ in range(warmup):
            timer(lambda: fn(batch_size))
        spent = 0.0
        while len(samples) < reps:
            t = timer(lambda: fn(batch_size))
            samples.append(t)
            spent += t
            n = len(samples)
            if enough is not None and n == floor and n < reps and enough(list(samples)):
                break
            if tolerance is not None and n >= floor:
                ci_rel = median_ci_rel(samples)
                if ci_rel is not None and ci_rel <= tolerance:
                    converged = True
                    break
            if time_budget_s is not None and n >= floor and spent >= time_budget_s:
                budget_cut = n < reps
                break
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
    if ci_rel is None:
        ci_rel = median_ci_rel(samples)
    return LatencyPoint(
        stats=summarize(batch_size, samples, warmup=warmup, peak_mem=peak),
        samples_s=samples,
        peak_allocated=mem["peak_allocated"],
        peak_reserved=mem["peak_reserved"],
        peak_rss=mem["peak_rss"],
        peak_rss_resettable=monitor.resettable,
        warning=outlier_warning(samples),
        ci_rel=ci_rel,
        converged=converged,
        budget_cut=budget_cut,
    )


def latency_sweep(
    fn: Callable[[int], Any],
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    *,
    on_point: Callable[[LatencyPoint], None] | None = None,
    enough: Callable[[int, list[float]], bool] | None = None,
    **point_kwargs: Any,
) -> list[LatencyPoint]:
    """Measure each batch size in increasing order (:func:`measure_point` with
    ``point_kwargs``); stop after the first OOM.

    ``on_point`` is called after every point (feasible or not) so a caller can
    commit it at once: a crash later in the sweep loses nothing measured.
    ``enough(batch_size, samples)`` is each point's ``enough``.
    """
    points: list[LatencyPoint] = []
    for b in sorted(set(int(x) for x in batch_sizes)):
        ask = None if enough is None else functools.partial(enough, b)
        point = measure_point(fn, b, enough=ask, **point_kwargs)
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
