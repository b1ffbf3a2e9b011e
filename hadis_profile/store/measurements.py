"""Assembling a run's :class:`~hadis_profile.measurements.Measurements` from its store.

This is the one read the compiler depends on: per-prompt means of every
per-image metric and confidence, the per-image feature matrices for set-level
metrics, the latency table of one device, the router's scores and the
provenance, models ordered by batch-1 latency. Incomplete or non-finite data is
refused here with one sentence, so the sweep can trust its inputs.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.measurements import Measurements, ModelMeasurements
from hadis_profile.store.values import decode_vector

if TYPE_CHECKING:
    from hadis_profile.store.run_store import RunStore


def load_measurements(
    store: RunStore, *, hardware: str | None = None, confidence_scorer: str | None = None
) -> Measurements:
    """The run as :class:`Measurements`, models ordered by batch-1 latency.

    ``hardware`` is needed only when the run holds several, ``confidence_scorer``
    only when a model has confidences from several scorers (which one a table is
    calibrated on is the compiler's choice: :func:`hadis_profile.pareto.measurements_for`).
    Incomplete or non-finite data is refused with one sentence.
    """
    prompts = store.prompts()
    n = len(prompts)
    if n == 0:
        raise HadisError(f"The run in {store.root} has no prompts; nothing was measured yet.")
    names = list(store.models())
    if not names:
        raise HadisError(f"The run in {store.root} has no models; nothing was measured yet.")
    hw = store._pick_hardware(hardware)
    info = store.models()
    models: dict[str, ModelMeasurements] = {}
    for name in names:
        m = ModelMeasurements(
            name=name, steps=info[name]["steps"], spec_hash=info[name]["spec_hash"]
        )
        if hw is not None:
            m.latency = store.latency(name, hw)
        metrics = [
            r[0]
            for r in store._db.execute(
                "SELECT DISTINCT s.metric FROM scores s JOIN images i ON i.id = s.image_id "
                "WHERE i.model=? ORDER BY 1",
                (name,),
            )
        ]
        for metric in metrics:
            m.quality[metric] = _per_prompt_mean(
                store._db,
                "SELECT i.prompt_id, s.value FROM scores s JOIN images i ON i.id = s.image_id "
                "WHERE i.model=? AND s.metric=?",
                (name, metric),
                n,
                f"scores '{metric}' of model '{name}'",
            )
        scorer = _pick_scorer(store._db, name, confidence_scorer)
        if scorer is not None:
            m.confidence = _per_prompt_mean(
                store._db,
                "SELECT i.prompt_id, c.value FROM confidences c "
                "JOIN images i ON i.id = c.image_id WHERE i.model=? AND c.scorer=?",
                (name, scorer),
                n,
                f"confidences of model '{name}'",
            )
        m.features = _features(store._db, name, n)
        models[name] = m

    def order(name: str) -> tuple:
        p = models[name].latency.get(1)
        feasible = p is not None and not p.infeasible
        return (not feasible, p.mean_s if feasible else 0.0, name)

    models = {k: models[k] for k in sorted(models, key=order)}

    router_scores, router_spec = None, None
    router = store.router()
    if router is not None:
        _, _, router_scores, router_spec = router
        if router_scores.shape != (n,):
            raise HadisError(
                f"The router scores cover {router_scores.shape[0]} of the run's {n} prompts."
            )
    hw_info = next((h for h in store.hardware() if h["label"] == hw), None)
    provenance = {
        **store.provenance,
        "run_id": store.run_id,
        "hardware": hw_info,
        "prompt_set_hash": store.prompt_set_hash(),
        "n_prompts": n,
        "schema_version": store.schema_version(),
        # Which weights each model ran with: a compiler refuses random ones (run --no-weights
        # measures architecture only) and a table records the checkpoints it describes.
        "checkpoints": {
            name: info[name]["spec"].get("checkpoint")
            for name in models
            if info[name]["spec"].get("checkpoint") is not None
        },
        "random_weights": [n for n in models if info[n]["spec"].get("weights") == "random"],
    }
    meas = Measurements(
        prompts=prompts,
        models=models,
        router_scores=router_scores,
        router_spec=router_spec,
        reference_stats=store.reference_stats(),
        external=store.external_configs(),
        provenance=provenance,
    )
    meas.check()
    return meas


def _per_prompt_mean(
    db: sqlite3.Connection, sql: str, args: tuple, n: int, what: str
) -> np.ndarray | None:
    """Mean over each prompt's images; None when there are no rows at all."""
    rows = db.execute(sql, args).fetchall()
    if not rows:
        return None
    data = np.array(rows, dtype=np.float64)
    pid = data[:, 0].astype(np.int64)
    counts = np.bincount(pid, minlength=n)
    sums = np.bincount(pid, weights=data[:, 1], minlength=n)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise HadisError(
            f"The {what} are missing for {len(missing)} of {n} prompts, first at prompt "
            f"{int(missing[0])}."
        )
    return sums / counts


def _pick_scorer(db: sqlite3.Connection, model: str, scorer: str | None) -> str | None:
    """The scorer whose confidences ``model`` is read under (None: it has none)."""
    scorers = [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT c.scorer FROM confidences c JOIN images i ON i.id = c.image_id "
            "WHERE i.model=? ORDER BY 1",
            (model,),
        )
    ]
    if scorer is not None:
        return scorer if scorer in scorers else None
    if len(scorers) > 1:
        raise HadisError(
            f"Model '{model}' has confidences from several scorers ({', '.join(scorers)}); "
            "choose one."
        )
    return scorers[0] if scorers else None


def _features(db: sqlite3.Connection, model: str, n: int) -> dict[str, np.ndarray]:
    """extractor -> ``model``'s feature vectors as [n_prompts, k, dim] (float32 kept)."""
    out: dict[str, np.ndarray] = {}
    extractors = [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT f.extractor FROM features f JOIN images i ON i.id = f.image_id "
            "WHERE i.model=? ORDER BY 1",
            (model,),
        )
    ]
    for ext in extractors:
        rows = db.execute(
            "SELECT i.prompt_id, f.dtype, f.dim, f.vector FROM features f "
            "JOIN images i ON i.id = f.image_id WHERE i.model=? AND f.extractor=? "
            "ORDER BY i.prompt_id, i.seed_index",
            (model, ext),
        ).fetchall()
        what = f"Feature vectors '{ext}' of model '{model}'"
        dims = {r[2] for r in rows}
        if len(dims) != 1:
            raise HadisError(f"{what} have mixed dimensions {sorted(dims)}.")
        counts = np.bincount(np.array([r[0] for r in rows]), minlength=n)
        if counts.min() != counts.max():
            raise HadisError(
                f"{what} number {counts.min()} to {counts.max()} per prompt, expected the "
                f"same count for all {n} prompts (first short prompt "
                f"{int(np.argmin(counts))})."
            )
        dim, k = dims.pop(), int(counts[0])
        dtypes = {r[1] for r in rows}
        target = np.float32 if dtypes == {"float32"} else np.float64
        arr = np.empty((n * k, dim), dtype=target)
        for j, r in enumerate(rows):
            arr[j] = decode_vector(r[3], r[1], dim, f"feature vector '{ext}'")
        out[ext] = arr.reshape(n, k, dim)
    return out
