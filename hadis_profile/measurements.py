"""The in-memory view of one profiling run, as the table compiler consumes it.

The run store (``hadis_profile.store``) is the durable contract between measuring
and compiling; :class:`Measurements` is what ``RunStore.load_measurements()``
returns and what ``sweep.py`` and ``pareto.py`` take. Keeping the compiler on
plain numpy arrays means it never touches SQLite and can be tested on
synthetic or imported data alike.

Everything here is numpy-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hadis_profile.errors import HadisError


@dataclass(frozen=True)
class LatencyStats:
    """One profiled (model, batch size) point. Times are seconds per batch."""

    batch_size: int
    mean_s: float
    std_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    peak_mem_bytes: int | None = None
    infeasible: bool = False
    warmup: int = 0
    reps: int = 0
    p95_s: float | None = None  # None in stores and tables written before it was recorded

    @property
    def cv(self) -> float:
        """Coefficient of variation, the hyperfine-style noise indicator."""
        return self.std_s / self.mean_s if self.mean_s > 0 else math.nan

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "mean_s": self.mean_s,
            "std_s": self.std_s,
            "p50_s": self.p50_s,
            "p90_s": self.p90_s,
            "p99_s": self.p99_s,
            "peak_mem_bytes": self.peak_mem_bytes,
            "infeasible": self.infeasible,
            "warmup": self.warmup,
            "reps": self.reps,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @classmethod
    def constant(cls, batch_size: int, seconds: float) -> LatencyStats:
        """A point known only by one number (published or imported latencies)."""
        return cls(batch_size, seconds, 0.0, seconds, seconds, seconds)


@dataclass
class ModelMeasurements:
    """Everything measured for one candidate model.

    quality:    metric id -> per-prompt mean over that prompt's images, shape [n_prompts].
    confidence: discriminator confidence, per-prompt mean over images, shape [n_prompts]
                (higher = the image looks better); None if never scored.
    features:   extractor id -> per-image feature vectors for set-level metrics (FID),
                shape [n_prompts, images_per_prompt, dim].
    """

    name: str
    latency: dict[int, LatencyStats] = field(default_factory=dict)
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    confidence: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int | None = None
    spec_hash: str | None = None

    def batch1_latency(self) -> float:
        """Seconds per image at batch size 1, the cost unit of the sweep."""
        point = self.latency.get(1)
        if point is None or point.infeasible:
            raise HadisError(f"Model '{self.name}' has no feasible batch-size-1 latency.")
        return point.mean_s


@dataclass(frozen=True)
class ExternalConfig:
    """One configuration measured elsewhere (e.g. HADIS's config_results_hybrid.csv).

    Set-level quality such as FID cannot be recomputed without the images, so
    it is carried as given and joined onto the sweep on (light, heavy, r, d).
    """

    light: str
    heavy: str
    r: float
    d: float
    values: dict[str, float]


@dataclass
class Measurements:
    """A run's measurements, ready for the sweep.

    models is ordered from cheapest to most expensive at batch size 1.
    router_scores: per-prompt router score (higher = harder), shape [n_prompts].
    reference_stats: extractor id -> (mu [dim], sigma [dim, dim]) of the FID reference set.
    """

    prompts: list[str]
    models: dict[str, ModelMeasurements]
    router_scores: np.ndarray | None = None
    router_spec: dict | None = None
    reference_stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    external: list[ExternalConfig] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    def ordered_models(self) -> list[str]:
        """Model names from fastest to slowest at batch size 1 (ties by name)."""
        return sorted(self.models, key=lambda m: (self.models[m].batch1_latency(), m))

    def check(self) -> None:
        """Refuse NaNs and shape mismatches with one sentence naming the culprit."""
        n = self.n_prompts
        if n == 0:
            raise HadisError("The run has no prompts.")
        if not self.models:
            raise HadisError("The run has no models.")
        if self.router_scores is not None:
            _check_vector(self.router_scores, n, "router scores")
        for m in self.models.values():
            for metric, values in m.quality.items():
                _check_vector(values, n, f"quality '{metric}' of model '{m.name}'")
            if m.confidence is not None:
                _check_vector(m.confidence, n, f"confidence of model '{m.name}'")
            for extractor, feats in m.features.items():
                if feats.ndim != 3 or feats.shape[0] != n:
                    raise HadisError(
                        f"Feature vectors '{extractor}' of model '{m.name}' have shape "
                        f"{feats.shape}, expected [{n}, images, dim]."
                    )
                if not np.isfinite(feats).all():
                    raise HadisError(
                        f"Feature vectors '{extractor}' of model '{m.name}' contain NaN or inf."
                    )
            for b, p in m.latency.items():
                if not p.infeasible and not (math.isfinite(p.mean_s) and p.mean_s > 0):
                    raise HadisError(
                        f"Latency of model '{m.name}' at batch size {b} is {p.mean_s}, "
                        "expected a positive number."
                    )


def _check_vector(values: np.ndarray, n: int, what: str) -> None:
    if values.shape != (n,):
        raise HadisError(f"The {what} have shape {values.shape}, expected ({n},).")
    bad = ~np.isfinite(values)
    if bad.any():
        raise HadisError(
            f"The {what} contain {int(bad.sum())} NaN or infinite value(s), "
            f"first at prompt {int(np.flatnonzero(bad)[0])}."
        )
