"""``hadis-profile run``: measure every zoo model into a run store, resumably.

For each model, two phases, each made of small units that are committed as
soon as they finish (so an interrupted run loses at most one unit, and a rerun
skips what is done):

1. **latency**: one unit per batch size; after an out-of-memory point the batch
   stops growing, on this run and on resume.
2. **quality**: one unit per prompt: its K images (fixed per-(prompt, image)
   seeds, :mod:`.generate`), their per-image scores, discriminator confidences
   and FID feature vectors, written in one transaction.

Before the first model, the prompts are stored (a changed prompt set is
refused), the router's features are computed when spaCy is available, every
model's checkpoint is checked (a missing one fails at once, not hours in), and
the hardware is recorded under a label that must agree with the detected device
(``gpu="a100"`` on an H100 is refused unless forced).

Then :func:`.units.plan_work` reads what the store still lacks, a launcher
(:mod:`.launchers`) gets each model's :class:`~.job.ModelJob` run (here, or in
one worker process per device with ``devices``), and the
:class:`~.recorder.Recorder` in this process commits every finished unit.

A model that fails (to load, or in a phase) is reported and the run goes on
with the others; the run then raises :class:`~.summary.RunFailed` (one
sentence naming each model and phase, the report attached), everything else
committed.

Settings that decide which images exist (base seed, images per prompt,
scorers) are part of the run's provenance; resuming with different ones is
refused, because mixing them would silently corrupt the comparison.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.limits import MAX_BATCH_SIZE, MAX_IMAGES_PER_PROMPT, MAX_REPS, at_most
from hadis_profile.measure.devices import (
    DeviceInfo,
    check_hardware_label,
    common_device,
    detect_device,
    device_infos,
    library_versions,
    worker_threads,
)
from hadis_profile.measure.generate import SEED_FORMAT
from hadis_profile.measure.launchers import RunContext
from hadis_profile.measure.options import RunOptions
from hadis_profile.measure.quality import QualityTools, build_quality_tools, reference_stats
from hadis_profile.measure.recorder import Recorder
from hadis_profile.measure.summary import ModelReport, RunFailed, RunReport
from hadis_profile.measure.units import model_record, plan_work, stored_latency
from hadis_profile.progress import ProgressBoard

__all__ = ["RunFailed", "RunOptions", "RunReport", "run_profile"]


def _check_options(opts: RunOptions) -> None:
    """Refuse settings that would make a run measure nothing or loop forever."""
    for name in ("images_per_prompt", "reps", "min_reps"):
        if getattr(opts, name) < 1:
            raise ParameterError(name, f"{{param}} must be at least 1, not {getattr(opts, name)}.")
    if opts.gen_batch is not None and opts.gen_batch < 1:
        raise ParameterError("gen_batch", f"{{param}} must be at least 1, not {opts.gen_batch}.")
    if opts.warmup < 0:
        raise ParameterError("warmup", f"{{param}} must be 0 or more, not {opts.warmup}.")
    if opts.tolerance is not None and not 0 < opts.tolerance < 1:
        raise ParameterError(
            "tolerance", f"{{param}} must lie strictly between 0 and 1, not {opts.tolerance}."
        )
    budget = opts.time_budget_s
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise ParameterError("time_budget_s", f"{{param}} must be a positive number, not {budget}.")
    if not opts.batch_sizes or min(opts.batch_sizes) < 1:
        raise ParameterError("batch_sizes", "{param} must be positive integers.")
    # hadis_profile.limits: a request that would run for ever or allocate without end
    at_most("batch_sizes", max(opts.batch_sizes), MAX_BATCH_SIZE, "images per batch")
    if opts.gen_batch is not None:
        at_most("gen_batch", opts.gen_batch, MAX_BATCH_SIZE, "images per call")
    at_most("images_per_prompt", opts.images_per_prompt, MAX_IMAGES_PER_PROMPT, "images")
    for name in ("reps", "min_reps", "warmup"):
        at_most(name, getattr(opts, name), MAX_REPS, "calls per batch size")


def _check_resume(store: Any, provenance: dict) -> None:
    old = store.provenance
    for key, what in (("seeds", "seeds"), ("quality_tools", "scorers")):
        if key in old and key in provenance and old[key] != provenance[key]:
            raise HadisError(
                f"The run in {store.root} was measured with other {what} ({old[key]}); rerun "
                "with the same settings to resume, or start it fresh."
            )


def _open_store(opts: RunOptions, provenance: dict) -> Any:
    from hadis_profile.store import DB_NAME, RunStore

    out = Path(opts.out)
    # write_lock: a second `run` (or an import) on this folder is refused here, before
    # anything is measured; the lock is held until the store is closed.
    if (out / DB_NAME).exists():
        store = RunStore.open(out, write_lock="run")
        try:
            if opts.fresh:
                store.reset()
            else:
                _check_resume(store, provenance)
            store.update_provenance(provenance)
        except BaseException:
            store.close()
            raise
        return store
    return RunStore.create(out, provenance=provenance, write_lock="run")


def _devices(opts: RunOptions) -> tuple[DeviceInfo, list[DeviceInfo]]:
    """(the run's device record, one record per worker; empty for an in-process run)."""
    if opts.devices:
        infos = device_infos(opts.devices, opts.threads)
        return common_device(infos, opts.force), infos
    return detect_device(opts.device), []


def run_profile(opts: RunOptions, console: Any | None = None) -> RunReport:
    """Measure the selected models into ``opts.out``; see the module docstring."""
    from hadis_profile.measure.pipelines import configure_hub

    configure_hub(opts.online)  # before torch/diffusers pull in huggingface_hub
    from hadis_profile.measure.quality import zoo_scorers
    from hadis_profile.prompts import load_prompts, prompt_set_hash
    from hadis_profile.zoo import load_zoo

    _check_options(opts)
    zoo = load_zoo(opts.zoo).select(opts.models, opts.tags)
    base_dir = Path(opts.zoo).resolve().parent
    if opts.scorers is None:
        opts = replace(opts, scorers=zoo_scorers(zoo, base_dir))
    prompts = list(load_prompts(opts.prompts, limit=opts.limit))
    if not prompts:
        raise HadisError(f"{opts.prompts} holds no prompts.")
    if opts.threads is not None:
        import torch

        torch.set_num_threads(max(1, int(opts.threads)))
    info, infos = _devices(opts)
    label = check_hardware_label(opts.gpu, info, opts.force)
    seeds = {
        "format": SEED_FORMAT,
        "base_seed": opts.seed,
        "images_per_prompt": opts.images_per_prompt,
    }

    notes: list[str] = []
    if opts.no_weights:
        from hadis_profile.measure.no_weights import architecture_for_spec

        for spec in zoo:
            architecture_for_spec(spec)  # one sentence for a model no shipped config covers
        if opts.quality or opts.router:
            notes.append(
                "quality skipped: random weights make noise, so only latency and memory "
                "are measured (the store marks these models as architecture-only)"
            )
        opts = replace(opts, quality=False, router=False)

    if opts.dry_run:
        from hadis_profile.measure.dry_run import dry_run

        return dry_run(opts, zoo, prompts, info, label, base_dir, console)

    if not opts.no_weights:
        from hadis_profile.measure.pipelines import preflight

        for spec in zoo:
            problem = preflight(
                spec, cache_dir=opts.cache_dir, online=opts.online, base_dir=base_dir
            )
            if problem:
                raise HadisError(problem)
    # With worker processes the scorers are loaded here only to describe them (on the
    # CPU: this process must not touch a GPU), then freed; each worker loads its own.
    tools_device = "cpu" if infos else info.device
    tools = build_quality_tools(opts, tools_device) if opts.quality else QualityTools([], None, [])
    provenance = {
        "source": "hadis-profile run",
        "zoo_path": str(opts.zoo),
        "zoo_hash": zoo.hash(),
        "prompts_path": str(opts.prompts),
        "prompt_set_hash": prompt_set_hash(prompts),
        "seeds": seeds,
        "latency_settings": {
            "batch_sizes": sorted(set(opts.batch_sizes)),
            "warmup": opts.warmup,
            "reps": opts.reps,
            "min_reps": opts.min_reps,
            "tolerance": opts.tolerance,
            "time_budget_s": opts.time_budget_s,
        },
        "generation": {"batch_size": opts.gen_batch or "best-throughput"},
    }
    if opts.quality:
        provenance["quality_tools"] = tools.describe()
    store = _open_store(opts, provenance)
    if callable(getattr(tools.discriminator, "spec", None)):  # pareto copies it to the table
        from hadis_profile.measure.discriminator_run import record_discriminator

        record_discriminator(store, tools.discriminator.spec())
    report = RunReport(Path(opts.out), label, info.device, info.name, [], notes=notes)
    try:
        store.upsert_hardware(
            label, device_name=info.name, driver=info.driver, libraries=library_versions()
        )
        devices = [i.details for i in (infos or [info])]
        store.update_provenance(
            {"environment": {"libraries": library_versions(), "devices": devices}}
        )
        store.add_prompts(prompts)
        if opts.router and store.router_spec() is None:
            _router(store, prompts, report)
        for extractor, (mu, sigma) in reference_stats(opts, tools).items():
            store.put_reference_stats(extractor, mu, sigma)
        scorer_id = getattr(tools.discriminator, "scorer_id", None)
        with ProgressBoard(console) as progress:
            for spec in zoo:
                if store.upsert_model(spec.name, **model_record(spec, opts, base_dir)):
                    progress.log(
                        f"{spec.name}: its spec or weights changed since the last run; its "
                        "old records are gone."
                    )
            works, report.units_skipped = plan_work(store, zoo, opts, label, len(prompts))
            recorder = Recorder(store, label, Path(opts.out), report, progress)
            if infos:
                from hadis_profile.measure.launchers.local import LocalProcessLauncher
                from hadis_profile.measure.memory import free_memory

                del tools  # the workers load their own; free this copy first
                free_memory("cpu")
                launcher: Any = LocalProcessLauncher(
                    infos, worker_threads([i.device for i in infos], opts.threads)
                )
            else:
                from hadis_profile.measure.launchers.inprocess import InProcessLauncher

                launcher = InProcessLauncher(info.device, tools)
            launcher.run(works, RunContext(opts, prompts, base_dir), recorder)
        report.models = [
            _model_report(store, spec, opts, label, recorder, len(prompts)) for spec in zoo
        ]
        _record_overheads(store, report)
        if opts.quality:
            _fill_means(store, report, label, scorer_id)
    finally:
        store.close()
    if report.failures:
        raise RunFailed(report)
    return report


def _model_report(
    store: Any, spec: Any, opts: RunOptions, label: str, recorder: Recorder, n: int
) -> ModelReport:
    """One model's line of the summary: what the store now holds, plus this run's notes."""
    seen = recorder.models.get(spec.name)
    m = ModelReport(spec.name, spec.steps, prompts_total=n if opts.quality else 0)
    if seen is not None:
        m.load_s, m.warnings = seen.load_s, list(seen.warnings)
    m.latency = stored_latency(store, spec.name, label)
    m.prompts_done = (
        len(store.done_prompts(spec.name, opts.images_per_prompt)) if opts.quality else 0
    )
    return m


def _router(store: Any, prompts: list[str], report: RunReport) -> None:
    """Router features and scores for the prompt set, when spaCy is installed."""
    from hadis_profile.router import FEATURES, Router

    router = Router()
    t0 = time.perf_counter()
    try:
        X = router.features(prompts)
    except HadisError as e:
        report.notes.append(f"router skipped: {e}")
        return
    per_query = (time.perf_counter() - t0) / len(prompts)
    scores = router.fit_normalisation(X).score_features(X)
    spec = router.to_spec()
    spec["overhead_s_per_query"] = per_query
    store.put_router(X, list(FEATURES), scores, spec=spec)


def _record_overheads(store: Any, report: RunReport) -> None:
    """Model load times and per-image scorer costs, kept in the run's provenance
    (``pareto`` carries them into the table) for plans that budget for them."""
    loads = {m.name: round(m.load_s, 3) for m in report.models if m.load_s is not None}
    if loads:
        store.update_provenance({"load_s": {**store.provenance.get("load_s", {}), **loads}})
    per_image = {k: t / n for k, (t, n) in report.scorer_time.items() if n}
    if per_image:
        known = store.provenance.get("scorer_overhead_s_per_image", {})
        store.update_provenance({"scorer_overhead_s_per_image": {**known, **per_image}})


def _fill_means(store: Any, report: RunReport, label: str, scorer: str | None) -> None:
    """Mean score per metric and mean confidence per model, once every prompt is done."""
    try:
        meas = store.load_measurements(hardware=label, confidence_scorer=scorer)
    except HadisError as e:  # incomplete (e.g. no latency): the table shows "-"
        report.notes.append(f"no quality summary: {e}")
        return
    for m in report.models:
        mm = meas.models.get(m.name)
        if mm is None:
            continue
        m.mean_scores = {k: float(v.mean()) for k, v in mm.quality.items()}
        if mm.confidence is not None:
            m.mean_confidence = float(mm.confidence.mean())
