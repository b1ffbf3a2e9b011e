"""The one writer of a run's measurements: each finished unit is one transaction, at once.

Whatever launcher ran a job (this process, a worker process per device, a
cluster), its results arrive here, in the process that opened the run store,
and are committed as they arrive: a latency point, a prompt's images with
their scores, confidences and feature vectors, a model's stage timings. A
crash or Ctrl-C therefore loses at most the units in flight, and the next run
skips everything committed (:func:`.units.plan_work`). SQLite in WAL mode
wants one writer on local disk; this is it.

The recorder also keeps the run's :class:`~.summary.RunReport` (units done,
warnings, load and scorer times) and draws the progress bars.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hadis_profile.fileio import atomic_write_bytes
from hadis_profile.measure.latency import LatencyPoint
from hadis_profile.measure.summary import Failure, ModelReport, RunReport
from hadis_profile.measure.units import ModelWork, PromptRecord


class Recorder:
    """Implements the job :class:`~.job.Sink` on top of the run store (see the module doc)."""

    def __init__(
        self, store: Any, label: str, out_dir: Path, report: RunReport, progress: Any
    ) -> None:
        self.store, self.label, self.out_dir = store, label, Path(out_dir)
        self.report, self.progress = report, progress
        self.models: dict[str, ModelReport] = {}
        self._tasks: dict[tuple[str, str], Any] = {}
        self._where: dict[str, str] = {}

    def for_label(self, label: str) -> Recorder:
        """This recorder filing latency under ``label`` (a run on several GPU types); it
        shares the report, the progress bars and the store."""
        other = copy.copy(self)
        other.label = label
        return other

    def model(self, name: str) -> ModelReport:
        """The report entry of ``name`` (created on first use)."""
        if name not in self.models:
            self.models[name] = ModelReport(name, 0)
        return self.models[name]

    # ----------------------------------------------------------------- the Sink

    def begin(self, work: ModelWork, where: str = "") -> None:
        """A worker starts ``work``: one bar per phase, labelled with where it runs."""
        self._where[work.name] = where
        prefix = f"{where} " if where else ""
        if work.batch_sizes:
            self._tasks[(work.name, "latency")] = self.progress.task(
                f"{prefix}{work.name}: latency", len(work.batch_sizes)
            )
        if work.prompt_ids:
            self._tasks[(work.name, "images")] = self.progress.task(
                f"{prefix}{work.name}: images", len(work.prompt_ids)
            )

    def loaded(self, model: str, load_s: float, notes: list[str]) -> None:
        m = self.model(model)
        m.load_s = load_s
        m.warnings.extend(notes)

    def latency(self, model: str, point: LatencyPoint) -> None:
        self.store.put_latency(
            model,
            self.label,
            point.stats,
            samples=point.samples_s,
            peak_allocated=point.peak_allocated,
            peak_reserved=point.peak_reserved,
            ci_rel=point.ci_rel,
            converged=point.converged,
            budget_cut=point.budget_cut,
        )
        self._done(model, "latency")
        b = point.stats.batch_size
        if point.infeasible:
            msg = f"{model}: batch {b} ran out of memory ({point.error})"
            self.model(model).warnings.append(msg)
            self.log(msg + "; larger batches skipped.")
        elif point.warning:
            self.model(model).warnings.append(f"batch {b}: {point.warning}")
            self.log(f"{model}, batch {b}: {point.warning}")
        if point.budget_cut:
            ci = f"+/-{point.ci_rel:.1%}" if point.ci_rel is not None else "unknown"
            msg = (
                f"batch {b}: the time budget stopped it after {point.stats.reps} calls "
                f"(median known to {ci})"
            )
            self.model(model).warnings.append(msg)
            self.log(f"{model}, {msg}.")

    def stages(self, model: str, stages: dict[str, float]) -> None:
        with self.store.transaction():  # read and write under one lock
            old = self.store.provenance.get("stages", {})
            self.store.update_provenance({"stages": {**old, model: stages}})

    def prompt(self, record: PromptRecord) -> None:
        paths: list[str | None] = [None] * len(record.seeds)
        for j, data in enumerate(record.png or ()):
            rel = Path("images") / record.model / f"{record.prompt_id:06d}_{j}.png"
            atomic_write_bytes(self.out_dir / rel, data)
            paths[j] = str(rel)
        store = self.store
        with store.transaction():
            for j, seed in enumerate(record.seeds):
                iid = store.put_image(record.model, record.prompt_id, j, seed=seed, path=paths[j])
                if record.scores:
                    store.put_scores(iid, {m: v[j] for m, v in record.scores.items()})
                if record.confidence is not None:
                    store.put_confidence(iid, record.confidence[j], scorer=record.scorer_id)
                for ext_id, f in record.features.items():
                    store.put_feature_vector(iid, ext_id, f[j])
        for scorer, seconds in record.scorer_s.items():
            acc = self.report.scorer_time.setdefault(scorer, [0.0, 0])
            acc[0] += seconds
            acc[1] += len(record.seeds)
        self._done(record.model, "images")

    def samples(self, model: str, batch_size: int, seconds: list[float]) -> None:
        """Generation calls at a swept batch size: more samples of that latency point."""
        self.store.add_latency_samples(model, self.label, batch_size, seconds, source="generation")

    def failed(self, model: str, phase: str, detail: str, where: str = "") -> None:
        """A model stopped on an error; the run goes on with the others."""
        f = Failure(model, phase, detail, where)
        self.report.failures.append(f)
        self.log(f"[failed] {f.sentence()}; the other models go on.")

    def log(self, text: str) -> None:
        self.progress.log(text)

    # ----------------------------------------------------------------- helpers

    def _done(self, model: str, phase: str) -> None:
        self.report.units_done += 1
        self.progress.advance(self._tasks.get((model, phase)))
