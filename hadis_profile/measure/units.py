"""What a run still has to do, and what a finished unit of it gives back.

The run store is the source of truth for progress: every finished unit is
committed at once, so the work left is whatever the store does not hold yet.
:func:`plan_work` reads it as one :class:`ModelWork` per model:

* **latency points**: the batch sizes still to time on this hardware label, in
  increasing order; a stored out-of-memory point ends the list (a larger batch
  cannot fit either);
* **prompts**: the prompt ids whose K images are not all stored.

Results travel as plain data (:class:`~.latency.LatencyPoint`,
:class:`PromptRecord`): picklable, free of torch tensors, so a worker process
or a remote worker can send them to the one process that writes the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError


@dataclass(frozen=True)
class ModelWork:
    """Everything one model still needs: its spec, latency points, prompts and stages."""

    spec: Any  # zoo.ModelSpec
    batch_sizes: tuple[int, ...] = ()
    prompt_ids: tuple[int, ...] = ()
    stages: bool = False
    #: batch -> LatencyStats already stored on this label (picks the generation batch)
    latency: dict = field(default_factory=dict)

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


def plan_work(
    store: Any, zoo: Any, opts: Any, label: str, n_prompts: int
) -> tuple[list[ModelWork], int]:
    """(one :class:`ModelWork` per zoo model, units already done) from what the store holds."""
    works, skipped = [], 0
    for spec in zoo:
        sizes, lat_done = (
            latency_todo(store, spec.name, label, opts.batch_sizes) if opts.latency else ([], 0)
        )
        done = store.done_prompts(spec.name, opts.images_per_prompt) if opts.quality else set()
        todo = [i for i in range(n_prompts) if i not in done] if opts.quality else []
        known = stored_latency(store, spec.name, label)
        works.append(ModelWork(spec, tuple(sizes), tuple(todo), bool(opts.stages), known))
        skipped += lat_done + len(done)
    return works, skipped
