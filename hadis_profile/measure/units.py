"""What a run still has to do, and what a finished unit of it gives back.

The run store is the source of truth for progress: every finished unit is
committed at once, so the work left is whatever the store does not hold yet.
:func:`plan_work` reads it as one :class:`ModelWork` per model:

* **latency points**: the batch sizes still to time on this hardware label, in
  increasing order; a stored out-of-memory point ends the list (a larger batch
  cannot fit either);
* **prompts**: the prompt ids whose K images are not all stored.

Prompts are handed out in **chunks** of ``prompt_chunk`` consecutive ids
(chunk ``c`` holds ids ``c*chunk .. (c+1)*chunk-1`` of the whole prompt set,
whatever is stored), so a long model can be spread over several workers while
its latency sweep stays on one (an out-of-memory point must stop the batch
from growing). :func:`plan_units` lists these units one by one, with one sweep
per hardware label (a cluster with several GPU types times every model on
each); :func:`plan_work` merges them back into one :class:`ModelWork` per model
for launchers that keep a model on one device.

A **shard** ``(index, count)`` keeps a deterministic share of the units: the
units of the whole plan, in zoo order (each model's sweep, then its chunks),
are dealt round-robin to ``count`` shards. The share depends only on the zoo
selection, the prompt count and the chunk size, never on what is stored, so
``count`` batch jobs running the same command each fill their own store and a
rerun of one resumes its own share (``hadis-profile merge`` joins the stores).

Results travel as plain data (:class:`~.latency.LatencyPoint`,
:class:`PromptRecord`): picklable, free of torch tensors, so a worker process
or a remote worker can send them to the one process that writes the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, ParameterError

#: Prompts per unit of work that shards and the cluster launcher hand out.
DEFAULT_PROMPT_CHUNK = 16


@dataclass(frozen=True)
class ModelWork:
    """Everything one model still needs: its spec, latency points, prompts and stages."""

    spec: Any  # zoo.ModelSpec
    batch_sizes: tuple[int, ...] = ()
    prompt_ids: tuple[int, ...] = ()
    stages: bool = False
    #: batch -> LatencyStats already stored on this label (picks the generation batch)
    latency: dict = field(default_factory=dict)
    #: The hardware label ``batch_sizes`` are timed for and generation samples filed
    #: under; None: the run's one label.
    label: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def empty(self) -> bool:
        """Nothing left: the model need not even be loaded."""
        return not (self.batch_sizes or self.prompt_ids or self.stages)

    @property
    def units(self) -> int:
        """Units this work commits: one per latency point and one per prompt."""
        return len(self.batch_sizes) + len(self.prompt_ids)


@dataclass
class PromptRecord:
    """One prompt's K images as the store keeps them: seeds, scores, confidences, features.

    ``png`` holds the encoded images when the run saves them (the writer puts
    them on disk, so workers need no shared filesystem); ``scorer_s`` the wall
    time each scorer spent on these images, which a serving plan pays too.
    """

    model: str
    prompt_id: int
    seeds: list[int]
    scores: dict[str, list[float]] = field(default_factory=dict)
    confidence: list[float] | None = None
    scorer_id: str | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    png: list[bytes] | None = None
    scorer_s: dict[str, float] = field(default_factory=dict)


def stored_latency(store: Any, model: str, label: str) -> dict:
    """batch -> LatencyStats already stored for (model, label); {} when there are none."""
    try:
        return store.latency(model, label)
    except HadisError:  # no latency on this hardware label yet
        return {}


def latency_todo(store: Any, model: str, label: str, sizes: Sequence[int]) -> tuple[list, int]:
    """Batch sizes still to measure, and how many are done (an OOM ends the list)."""
    todo, done = [], 0
    stored = stored_latency(store, model, label)
    for b in sorted(set(int(x) for x in sizes)):
        point = stored.get(b)
        if point is not None:
            done += 1
            if point.infeasible:
                break
            continue
        todo.append(b)
    return todo, done


def generation_batch(latency: dict, requested: int | None, default: int = 4) -> int:
    """The batch to generate quality images at, from what the latency sweep found.

    ``requested`` (``gen_batch``) is clamped to the largest feasible batch: a
    larger one is known to run out of memory. Without a request it is the
    best-throughput feasible batch (most images per second at p50; the smaller
    batch on a tie), so the images cost the least device time and their calls
    double as latency samples for that batch. With no feasible point known it
    is ``requested`` or ``default``.
    """
    feasible = {
        int(b): s for b, s in latency.items() if not s.infeasible and s.p50_s and s.p50_s > 0
    }
    if not feasible:
        return max(1, int(requested or default))
    if requested:
        return max(1, min(int(requested), max(feasible)))
    return max(sorted(feasible), key=lambda b: b / feasible[b].p50_s)


def model_record(spec: Any, opts: Any, base_dir: Path) -> dict[str, Any]:
    """What the store keeps of a model: the zoo's record plus exactly which weights ran.

    With checkpoints, ``spec["checkpoint"]`` is the resolved snapshot commit or content
    hash (:func:`~.pipelines.checkpoint_identity`): other weights behind the same spec
    invalidate the model's records. With random weights (``no_weights``) the spec says
    ``weights: random`` and hashes differently, so architecture-only records never mix
    with a checkpoint's.
    """
    from hadis_profile.store import spec_hash_of

    record = spec.store_record()
    if opts.no_weights:
        record["spec"] = {**record["spec"], "weights": "random"}
        record["spec_hash"] = spec_hash_of({"spec_hash": record["spec_hash"], "weights": "random"})
    else:
        from hadis_profile.measure.pipelines import checkpoint_identity

        ident = checkpoint_identity(spec, cache_dir=opts.cache_dir, base_dir=base_dir)
        record["spec"] = {**record["spec"], "checkpoint": ident}
    return record


def check_shard(shard: tuple[int, int] | None) -> None:
    """Refuse a shard that is not ``(index, count)`` with ``0 <= index < count``."""
    if shard is None:
        return
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ParameterError(
            "shard", f"{{param}} {index}/{count} must be I/N with 0 <= I < N (e.g. 0/4)."
        )


def check_chunk(chunk: int) -> None:
    if int(chunk) < 1:
        raise ParameterError("prompt_chunk", f"{{param}} must be at least 1, not {chunk}.")


def in_shard(slot: int, shard: tuple[int, int] | None) -> bool:
    """Whether the unit at ``slot`` of the whole plan belongs to ``shard`` (round-robin)."""
    return shard is None or slot % shard[1] == shard[0]


def plan_units(
    store: Any,
    zoo: Any,
    opts: Any,
    labels: Sequence[str],
    n_prompts: int,
    *,
    shard: tuple[int, int] | None = None,
    chunk: int = DEFAULT_PROMPT_CHUNK,
) -> tuple[list[ModelWork], int]:
    """(the units left, units already done), in zoo order; see the module docstring.

    Per model: one sweep unit per label with batch sizes left on it (stage
    timings ride on the first), then one unit per prompt chunk with prompts
    left. A sweep unit carries its label and the latency stored on it; a chunk
    unit has neither (whoever runs it knows its own label). Units outside
    ``shard`` are neither listed nor counted as done.
    """
    check_shard(shard)
    check_chunk(chunk)
    n_chunks = math.ceil(n_prompts / chunk)
    units: list[ModelWork] = []
    skipped = 0
    for m, spec in enumerate(zoo):
        base = m * (n_chunks + 1)  # the model's sweep slot; its chunks follow
        if in_shard(base, shard):
            stages = bool(opts.stages)
            for label in labels:
                sizes, done = (
                    latency_todo(store, spec.name, label, opts.batch_sizes)
                    if opts.latency
                    else ([], 0)
                )
                skipped += done
                if sizes or stages:
                    known = stored_latency(store, spec.name, label)
                    units.append(ModelWork(spec, tuple(sizes), (), stages, known, label))
                    stages = False
        if not opts.quality:
            continue
        done_ids = store.done_prompts(spec.name, opts.images_per_prompt)
        for c in range(n_chunks):
            if not in_shard(base + 1 + c, shard):
                continue
            ids = range(c * chunk, min(n_prompts, (c + 1) * chunk))
            todo = tuple(i for i in ids if i not in done_ids)
            skipped += len(ids) - len(todo)
            if todo:
                units.append(ModelWork(spec, prompt_ids=todo))
    return units, skipped


def plan_work(
    store: Any,
    zoo: Any,
    opts: Any,
    label: str,
    n_prompts: int,
    *,
    shard: tuple[int, int] | None = None,
    chunk: int = DEFAULT_PROMPT_CHUNK,
) -> tuple[list[ModelWork], int]:
    """(one :class:`ModelWork` per zoo model, units already done) from what the store holds:
    :func:`plan_units` on one label, each model's units merged back together."""
    units, skipped = plan_units(store, zoo, opts, [label], n_prompts, shard=shard, chunk=chunk)
    works = []
    for spec in zoo:
        mine = [u for u in units if u.name == spec.name]
        works.append(
            ModelWork(
                spec,
                tuple(b for u in mine for b in u.batch_sizes),
                tuple(i for u in mine for i in u.prompt_ids),
                any(u.stages for u in mine),
                stored_latency(store, spec.name, label),
                label,
            )
        )
    return works, skipped
