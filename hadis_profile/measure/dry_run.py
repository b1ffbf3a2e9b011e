"""``hadis-profile run --dry-run``: what a run would do, and how long it should take.

Per model: the latency points and prompts left, and an upper bound on its
device time from a stored batch-1 latency or, failing that, a quick probe
(load the model, time 1 warm-up + 2 batch-1 calls). Nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError
from hadis_profile.measure.job import LATENCY_PROMPT
from hadis_profile.measure.summary import ModelReport, RunReport
from hadis_profile.measure.units import latency_todo, model_record, stored_latency


def estimate_seconds(
    per_image_s: float,
    *,
    images_left: int,
    batch_sizes_left: Sequence[int],
    warmup: int,
    reps: int,
    stage_calls: int = 0,
    load_s: float = 0.0,
) -> float:
    """Device seconds the rest of one model's run should take at most.

    With ``t`` the per-image seconds at batch 1 (a stored batch-1 p50, or the
    median of a probe's 2 timed calls)::

        generation = images_left * t            # images_left = prompts left x K
        sweep      = sum(b in batch_sizes_left) (warmup + reps) * b * t
        stages     = stage_calls * t            # --stages: 1 warm-up + min(reps, 3)
        estimate   = generation + sweep + stages + load_s

    Both terms charge every image at the batch-1 rate, so the result is an
    upper bound: a batched call costs at most ``b`` single calls (usually much
    less), and ``--time-budget`` only lowers ``reps``. ``load_s`` is the
    probe's own model-load time when one ran (the real run loads the model
    again). Scoring, FID features and the router are not included.
    """
    sweep = sum((warmup + reps) * int(b) for b in batch_sizes_left)
    return (images_left + sweep + stage_calls) * per_image_s + load_s


def _shipped_architecture(spec: Any) -> bool:
    from hadis_profile.measure.no_weights import architecture_for_spec

    try:
        architecture_for_spec(spec)
    except HadisError:
        return False
    return True


def _probe(spec, opts, info, base_dir, console) -> tuple[float | None, float | None, list[str]]:
    """(seconds per image at batch 1, load seconds, notes) from building ``spec`` on the
    run's device and timing 1 warm-up + 2 batch-1 calls; the model is freed after.

    A model whose architecture ships with hadis-profile is built with random weights
    (the same compute, without reading gigabytes of weights, or having them at all);
    any other is loaded from its checkpoint.
    """
    from hadis_profile.measure.latency import measure_point, pipeline_runner
    from hadis_profile.measure.memory import free_memory, is_oom
    from hadis_profile.measure.no_weights import load_random
    from hadis_profile.measure.pipelines import load_pipeline

    random = opts.no_weights or _shipped_architecture(spec)
    if console is not None:
        how = " (random weights)" if random else ""
        console.print(f"probing {spec.name} on {info.device}{how} ...", highlight=False)
    lp = runner = None
    try:
        if random:
            lp = load_random(spec, device=info.device, seed=opts.seed)
        else:
            lp = load_pipeline(
                spec,
                device=info.device,
                cache_dir=opts.cache_dir,
                online=opts.online,
                base_dir=base_dir,
            )
        load_s, notes = lp.load_s, [f"{spec.name}: {n}" for n in lp.notes]
        runner = pipeline_runner(lp.pipe, lp.call_kwargs(), LATENCY_PROMPT, seed=opts.seed)
        point = measure_point(runner, 1, warmup=1, reps=2, device=info.device)
    except Exception as e:
        if not (isinstance(e, HadisError) or is_oom(e)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, None, [f"{spec.name}: probe failed, no estimate ({first})"]
    finally:
        del lp, runner
        free_memory(info.device)
    if point.infeasible:
        notes.append(f"{spec.name}: probe ran out of memory at batch 1 ({point.error})")
        return None, load_s, notes
    return point.stats.p50_s, load_s, notes


def dry_run(opts, zoo, prompts, info, label, base_dir, console) -> RunReport:
    """What a run would do: per model, latency points and prompts left, and an
    estimate of its device time (:func:`estimate_seconds`) from a stored batch-1
    latency or, failing that, a quick probe (``opts.probe``). Nothing is written."""
    from hadis_profile.measure.pipelines import preflight
    from hadis_profile.store import DB_NAME, RunStore

    report = RunReport(Path(opts.out), label, info.device, info.name, [], dry_run=True)
    store = None
    if (Path(opts.out) / DB_NAME).exists() and not opts.fresh:
        store = RunStore.open(opts.out, readonly=True)
    try:
        for spec in zoo:
            m = ModelReport(spec.name, spec.steps, prompts_total=len(prompts))
            unchanged = store is not None and store.models().get(spec.name, {}).get(
                "spec_hash"
            ) == model_record(spec, opts, base_dir).get("spec_hash")
            b1 = None
            if unchanged:
                todo, done = latency_todo(store, spec.name, label, opts.batch_sizes)
                m.prompts_done = len(store.done_prompts(spec.name, opts.images_per_prompt))
                b1 = stored_latency(store, spec.name, label).get(1)
            else:
                todo, done = sorted(set(opts.batch_sizes)), 0
            m.latency = {b: None for b in todo} if opts.latency else {}
            if not opts.quality:
                m.prompts_total = 0
            problem = None
            if not opts.no_weights:
                problem = preflight(
                    spec, cache_dir=opts.cache_dir, online=opts.online, base_dir=base_dir
                )
            if problem:
                m.warnings.append(problem)
                if _shipped_architecture(spec):
                    problem = None  # the probe needs no checkpoint
            images_left = max(m.prompts_total - m.prompts_done, 0) * opts.images_per_prompt
            stage_calls = 1 + max(1, min(opts.reps, 3)) if opts.stages else 0
            work_left = bool(images_left or m.latency or stage_calls)
            load_s = 0.0
            if b1 is not None and not b1.infeasible:
                m.per_image_s, m.per_image_source = b1.p50_s, "stored"
            elif work_left and opts.probe and not problem:
                per_image, m.load_s, notes = _probe(spec, opts, info, base_dir, console)
                report.notes.extend(notes)
                if per_image is not None:
                    m.per_image_s, m.per_image_source = per_image, "probe"
                    load_s = m.load_s or 0.0
            if m.per_image_s is not None:
                m.estimate_s = estimate_seconds(
                    m.per_image_s,
                    images_left=images_left,
                    batch_sizes_left=list(m.latency),
                    warmup=opts.warmup,
                    reps=opts.reps,
                    stage_calls=stage_calls,
                    load_s=load_s,
                )
            elif not work_left:
                m.estimate_s = 0.0
            report.units_skipped += done + (m.prompts_done if opts.quality else 0)
            report.units_done += len(m.latency) + max(m.prompts_total - m.prompts_done, 0)
            report.models.append(m)
    finally:
        if store is not None:
            store.close()
    return report
