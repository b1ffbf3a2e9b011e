"""One model on one device: loaded once, then its latency points, stage timings and images.

A :class:`ModelJob` owns the measuring of one model and nothing else: it never
writes the store. Every finished unit goes to a :class:`Sink` as plain data (a
:class:`~.latency.LatencyPoint` per batch size, a :class:`~.units.PromptRecord`
per prompt), and the launcher decides where that is: the run's recorder in
this process, a queue to the parent process, or the return value of a remote
call. That is what lets the same job run in-process, in one process per local
device, or on a cluster, with one writer for the store.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from hadis_profile.errors import HadisError
from hadis_profile.measure.latency import LatencyPoint
from hadis_profile.measure.units import ModelWork, PromptRecord, generation_batch
from hadis_profile.samples import summarize

#: Prompt used for the latency sweep (prompt content barely matters: text is padded).
LATENCY_PROMPT = "a photograph of an astronaut riding a horse"


class Sink(Protocol):
    """Where a job's results go, one finished unit at a time."""

    def begin(self, work: ModelWork) -> None: ...
    def loaded(self, model: str, load_s: float, notes: list[str]) -> None: ...
    def latency(self, model: str, point: LatencyPoint) -> None: ...
    def samples(self, model: str, batch_size: int, seconds: list[float]) -> None: ...
    def stages(self, model: str, stages: dict[str, float]) -> None: ...
    def prompt(self, record: PromptRecord) -> None: ...
    def log(self, text: str) -> None: ...


class ModelFailed(HadisError):
    """A model's job stopped on an unexpected error; names the model and the phase."""

    def __init__(self, model: str, phase: str, detail: str) -> None:
        self.model, self.phase, self.detail = model, phase, detail
        super().__init__(f"Model '{model}' failed during {phase}: {detail}")


def one_line(e: BaseException) -> str:
    """An exception as one short line: its message, with the class for non-user errors."""
    text = " ".join(str(e).split())
    if not isinstance(e, HadisError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text.rstrip(".")
    return text if len(text) <= 300 else text[:297] + "..."


class ModelJob:
    """Measure one model on ``device``; use as a context manager (load, then free).

    ``opts`` is the run's :class:`~.options.RunOptions`; ``tools`` its
    :class:`~.quality.QualityTools` (scorers, discriminator, FID extractors),
    shared by every job of a worker.
    """

    def __init__(self, spec: Any, opts: Any, device: str, tools: Any, base_dir: Path) -> None:
        self.spec, self.opts, self.device, self.tools = spec, opts, device, tools
        self.base_dir = Path(base_dir)
        self.loaded: Any = None  # pipelines.LoadedPipeline
        self.baseline: Any = None  # memory.Baseline before the model was loaded
        self._dtypes: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    def __enter__(self) -> ModelJob:
        from hadis_profile.measure.memory import take_baseline
        from hadis_profile.measure.pipelines import load_pipeline

        self.tools.to("cpu")  # scorers off the device while this model is timed
        self.baseline = take_baseline(self.device)
        if getattr(self.opts, "no_weights", False):
            from hadis_profile.measure.no_weights import load_random

            self.loaded = load_random(self.spec, device=self.device, seed=self.opts.seed)
        else:
            self.loaded = load_pipeline(
                self.spec,
                device=self.device,
                cache_dir=self.opts.cache_dir,
                online=self.opts.online,
                base_dir=self.base_dir,
            )
        self._dtypes = component_dtypes(self.loaded.pipe)
        return self

    def __exit__(self, *exc: object) -> None:
        from hadis_profile.measure.memory import free_memory

        self.loaded = None
        free_memory(self.device)

    def restore(self) -> list[str]:
        """Put every component back in the dtype it was loaded in; the names it changed.

        A pipeline may change a component's dtype for part of a call and change
        it back only when the call succeeds: SDXL upcasts its VAE to fp32 for
        the decode (``force_upcast``), so an out-of-memory error in the decode
        leaves an fp32 VAE that the next call feeds fp16 latents. Called after
        every failed call, before the next one.
        """
        changed = []
        for name, dtype in self._dtypes.items():
            module = getattr(self.loaded.pipe, name, None)
            if module is not None and _dtype_of(module) != dtype:
                module.to(dtype=dtype)
                changed.append(name)
        return changed

    # ----------------------------------------------------------------- phases

    def _runner(self) -> Any:
        from hadis_profile.measure.latency import pipeline_runner

        lp = self.loaded
        return pipeline_runner(lp.pipe, lp.call_kwargs(), LATENCY_PROMPT, seed=self.opts.seed)

    def latency(
        self,
        batch_sizes: Sequence[int],
        on_point: Callable[[LatencyPoint], None],
        *,
        enough: Callable[[int, list[float]], bool] | None = None,
    ) -> list[LatencyPoint]:
        """One point per batch size, in increasing order; stops after an out-of-memory point
        (after which the pipeline is repaired, see :meth:`restore`).

        ``enough(batch, samples)``, asked of each point once it has ``min_reps``
        timed calls, may end it there: when later calls (the image generation's)
        will add enough samples to it, ``reps`` sweep calls would be spent twice.
        """
        from hadis_profile.measure.latency import latency_sweep

        opts = self.opts

        def point_done(point: LatencyPoint) -> None:
            if point.infeasible:
                self.restore()
            on_point(point)

        return latency_sweep(
            self._runner(),
            batch_sizes,
            on_point=point_done,
            enough=enough,
            warmup=opts.warmup,
            reps=opts.reps,
            min_reps=opts.min_reps,
            tolerance=opts.tolerance,
            time_budget_s=opts.time_budget_s,
            device=self.device,
            baseline=self.baseline,
        )

    def stages(self) -> dict[str, float]:
        """Mean seconds per call in text encoding, denoising, VAE decoding and the rest."""
        from hadis_profile.measure.latency import stage_breakdown

        runner = self._runner()
        reps = max(1, min(self.opts.reps, 3))
        return stage_breakdown(self.loaded.pipe, lambda: runner(1), reps=reps, device=self.device)

    def prompts(
        self,
        prompt_ids: Sequence[int],
        texts: Sequence[str],
        *,
        batch_size: int,
        on_call: Callable[[int, float], None] | None = None,
        on_oom: Callable[[int, str], None] | None = None,
    ) -> Iterator[PromptRecord]:
        """K seeded images per prompt, scored, as one :class:`PromptRecord` per prompt."""
        from hadis_profile.measure.generate import generate_images

        lp, opts, tools = self.loaded, self.opts, self.tools

        def repaired(size: int, error: str) -> None:
            self.restore()
            if on_oom is not None:
                on_oom(size, error)

        stream = generate_images(
            lp.pipe,
            [texts[i] for i in prompt_ids],
            lp.call_kwargs(),
            prompt_ids=list(prompt_ids),
            images_per_prompt=opts.images_per_prompt,
            base_seed=opts.seed,
            batch_size=batch_size,
            output_type="pt",
            device=self.device,
            on_call=on_call,
            on_oom=repaired,
        )
        for unit in stream:
            prompts = [unit.prompt] * len(unit.images)
            rec = PromptRecord(self.name, unit.prompt_id, list(unit.seeds))
            for s in tools.scorers:
                t0 = time.perf_counter()
                rec.scores[s.metric_id] = [float(v) for v in s.score(unit.images, prompts)]
                rec.scorer_s[s.metric_id] = time.perf_counter() - t0
            if tools.discriminator is not None:
                disc = tools.discriminator
                t0 = time.perf_counter()
                rec.confidence = [float(v) for v in disc.confidence(unit.images, prompts)]
                rec.scorer_s[disc.scorer_id] = time.perf_counter() - t0
                rec.scorer_id = disc.scorer_id
            rec.features = {e.extractor_id: e.features(unit.images) for e in tools.extractors}
            if opts.save_images:
                rec.png = [_png(img) for img in unit.images]
            yield rec

    # ----------------------------------------------------------------- all of it

    def run(self, work: ModelWork, texts: Sequence[str], sink: Sink) -> None:
        """Measure what ``work`` lists, sending each finished unit to ``sink`` at once.

        Called inside ``with job:``. The images are made at the best-throughput
        feasible batch (:func:`.units.generation_batch`), and those calls are
        also latency samples of that batch. An error that is neither a user
        error nor an interrupt becomes :class:`ModelFailed`, naming the phase.
        """
        lp = self.loaded
        sink.loaded(self.name, lp.load_s, list(lp.notes))
        known = dict(work.latency)
        phase = "the latency sweep"
        try:
            if work.batch_sizes:

                def point_done(point: LatencyPoint) -> None:
                    known[point.stats.batch_size] = point.stats
                    sink.latency(self.name, point)

                largest = max(work.batch_sizes)

                def finished_later(batch: int, samples: list[float]) -> bool:
                    # The images are made at generation_batch(known). Only the largest
                    # batch can know it will be that one: a larger one may still be faster.
                    if batch != largest or not work.prompt_ids:
                        return False
                    calls = len(work.prompt_ids) * self.opts.images_per_prompt // batch
                    trial = {**known, batch: summarize(batch, samples)}
                    return (
                        calls >= self.opts.min_reps
                        and generation_batch(trial, self.opts.gen_batch) == batch
                    )

                self.latency(work.batch_sizes, point_done, enough=finished_later)
            if work.stages:
                phase = "the stage breakdown"
                sink.stages(self.name, self.stages())
            if work.prompt_ids:
                phase = "image generation and scoring"
                gen_batch = generation_batch(known, self.opts.gen_batch)
                timed = gen_batch if gen_batch in known else None

                def call_done(n_images: int, seconds: float) -> None:
                    if n_images == timed:  # a full call at a swept batch size: a sample too
                        sink.samples(self.name, n_images, [seconds])

                def oom(size: int, error: str) -> None:
                    sink.log(
                        f"{self.name}: generation ran out of memory ({error}); "
                        f"retrying at batch {size}."
                    )

                self.tools.to(self.device)
                for rec in self.prompts(
                    work.prompt_ids, texts, batch_size=gen_batch, on_call=call_done, on_oom=oom
                ):
                    sink.prompt(rec)
        except (KeyboardInterrupt, ModelFailed):
            raise
        except Exception as e:
            raise ModelFailed(self.name, phase, one_line(e)) from e


def component_dtypes(pipe: Any) -> dict[str, Any]:
    """name -> dtype of every torch module among the pipeline's components."""
    out = {}
    for name, module in getattr(pipe, "components", {}).items():
        dtype = _dtype_of(module)
        if dtype is not None:
            out[name] = dtype
    return out


def _dtype_of(module: Any) -> Any:
    """A module's floating-point dtype (its first floating parameter's), or None."""
    params = getattr(module, "parameters", None)
    if not callable(params):
        return None
    for p in params():
        if p.is_floating_point():
            return p.dtype
    return None


def _png(image: Any) -> bytes:
    """An image as PNG bytes (the writer saves them; workers need no shared disk)."""
    from hadis_profile.measure.scorers import to_pil

    buf = io.BytesIO()
    to_pil([image])[0].save(buf, format="PNG")
    return buf.getvalue()
