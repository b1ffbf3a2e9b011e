"""A run for analysis scripts: ``hadis_profile.load_run(path)`` and its pandas DataFrames.

The optimum-benchmark habit: results are plain objects that keep the raw values,
and a DataFrame is one call away. :func:`load_run` reads what identifies a run
(id, provenance, models with their checkpoints, hardware, prompts) and closes the
store; :meth:`Run.frames` reads every record as tidy DataFrames, the same flat
view ``hadis-profile export`` writes (one source: :func:`~hadis_profile.store.export.
export_tables`), with each image's model, prompt and seed joined onto its scores
and confidences so a groupby needs no merge.

pandas is imported only inside :meth:`Run.frames` (the ``frames`` extra), so
loading a run, the store and the serving path never pay for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadis_profile.errors import HadisError

if TYPE_CHECKING:
    import pandas as pd

    from hadis_profile.measurements import Measurements
    from hadis_profile.store.run_store import RunStore

#: Store column types -> pandas dtypes; nullable ones, since a store column may hold NULL.
#: Text columns keep the dtype pandas infers (object before pandas 3, str from 3 on).
_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean"}
_IMAGE_KEYS = ["image_id", "model", "prompt_id", "seed_index"]


@dataclass
class RunFrames:
    """Every record of a run as a DataFrame (also reachable as ``frames["latency"]``).

    * ``latency``: one row per (model, hardware, batch size) point: the stats (seconds
      per batch), ``images_per_s`` (batch / p50), memory peaks, ``infeasible`` (OOM).
    * ``latency_samples``: the raw timed calls behind each point (``seconds``, ``source``:
      ``sweep`` or ``generation``), in the order they were taken.
    * ``prompts``, ``images`` (model, prompt, seed index, seed, saved path).
    * ``scores``: one row per (image, metric); ``confidences``: per (image, scorer);
      both carry the image's model, prompt id and seed index.
    * ``router``: per prompt, the router score and its features (empty when none).
    * ``models`` (spec JSON), ``hardware`` (libraries JSON), ``external`` (configurations
      measured elsewhere, e.g. HADIS's FID sweep).
    """

    latency: pd.DataFrame
    latency_samples: pd.DataFrame
    prompts: pd.DataFrame
    images: pd.DataFrame
    scores: pd.DataFrame
    confidences: pd.DataFrame
    router: pd.DataFrame
    models: pd.DataFrame
    hardware: pd.DataFrame
    external: pd.DataFrame

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Run:
    """One run folder as read by :func:`load_run`: what identifies it, plus readers."""

    path: Path
    run_id: str
    provenance: dict
    #: name -> {spec_hash, steps, height, width, dtype, spec}; ``spec["checkpoint"]`` is
    #: the weights' identity (Hub commit or content sha256).
    models: dict[str, dict]
    hardware: list[dict]
    prompts: list[str]
    tool_version: str | None = None
    created_at: str | None = None
    router_spec: dict | None = field(default=None, repr=False)

    def open_store(self) -> RunStore:
        """The run's :class:`~hadis_profile.store.RunStore` (close it when done)."""
        from hadis_profile.store.run_store import RunStore

        return RunStore.open(self.path)

    def measurements(
        self, *, hardware: str | None = None, confidence_scorer: str | None = None
    ) -> Measurements:
        """What ``pareto`` compiles: per-prompt means, latency, router scores, provenance."""
        with self.open_store() as store:
            return store.load_measurements(hardware=hardware, confidence_scorer=confidence_scorer)

    def frames(self) -> RunFrames:
        """Every record as pandas DataFrames (see :class:`RunFrames`); needs pandas."""
        pd = _pandas()
        from hadis_profile.store.export import export_tables

        with self.open_store() as store:
            tables = export_tables(store)
        out: dict[str, Any] = {}
        for name, (columns, types, rows) in tables.items():
            df = pd.DataFrame.from_records(rows, columns=columns)
            casts = {c: _DTYPES[t] for c, t in zip(columns, types, strict=True) if t in _DTYPES}
            out[name] = df.astype(casts)
        out["confidences"] = out.pop("confidence")
        if "router" not in out:
            out["router"] = pd.DataFrame({"prompt_id": pd.Series([], dtype="Int64")})
        keys = out["images"][_IMAGE_KEYS]
        for name in ("scores", "confidences"):
            out[name] = keys.merge(out[name], on="image_id", how="inner", validate="one_to_many")
        lat = out["latency"]
        lat["images_per_s"] = (lat["batch_size"].astype("float64") / lat["p50_s"]).where(
            ~lat["infeasible"].fillna(False).astype(bool)
        )
        return RunFrames(**{k: out[k].reset_index(drop=True) for k in RunFrames.names()})


def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder (``outputs/<run>``): its id, provenance, models, hardware, prompts.

    Raises :class:`~hadis_profile.errors.HadisError` with one sentence when ``path``
    holds no run store. The store is closed again; :meth:`Run.frames` and
    :meth:`Run.measurements` reopen it.
    """
    from hadis_profile.store.run_store import RunStore

    root = Path(path)
    with RunStore.open(root) as store:
        return Run(
            path=root,
            run_id=store.run_id,
            provenance=store.provenance,
            models=store.models(),
            hardware=store.hardware(),
            prompts=store.prompts(),
            tool_version=store._meta("tool_version"),
            created_at=store._meta("created_at"),
            router_spec=store.router_spec(),
        )


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise HadisError(
            "A run's DataFrames need pandas; install it with pip install 'hadis-profile[frames]'."
        ) from None
    return pd
