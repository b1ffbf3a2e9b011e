"""What a run did, per model and in all: plain, serialisable objects that keep raw values.

The profiler fills them (through the recorder), the terminal and JSON
renderers read them; nothing here decides or draws anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError


@dataclass
class Failure:
    """A model that stopped on an error: where, in which phase, and why (one line)."""

    model: str
    phase: str
    detail: str
    where: str = ""

    def sentence(self) -> str:
        at = f" on {self.where}" if self.where else ""
        return f"{self.model}{at} during {self.phase} ({self.detail.rstrip('.')})"


@dataclass
class ModelReport:
    """One model's line of a run: what the store holds for it now, and this run's notes."""

    name: str
    steps: int
    latency: dict[int, Any] = field(default_factory=dict)  # batch -> LatencyStats
    prompts_done: int = 0
    prompts_total: int = 0
    mean_scores: dict[str, float] = field(default_factory=dict)
    mean_confidence: float | None = None
    load_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: Dry run: seconds per image at batch 1, from the store ("stored") or a probe
    #: ("probe"); None when neither was available. See :func:`estimate_seconds`.
    per_image_s: float | None = None
    per_image_source: str | None = None
    estimate_s: float | None = None


@dataclass
class RunReport:
    """What a run did: per-model results plus the units measured now vs. skipped."""

    run_dir: Path
    hardware_label: str
    device: str
    device_name: str
    models: list[ModelReport]
    units_done: int = 0
    units_skipped: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)
    #: scorer id -> [seconds, images]: the per-image cost of each scorer and of the
    #: discriminator, which a serving plan pays on top of generation.
    scorer_time: dict[str, list[float]] = field(default_factory=dict)
    #: Models that stopped on an error this run (the others went on).
    failures: list[Failure] = field(default_factory=list)

    @property
    def estimate_s(self) -> float | None:
        """Dry run: the sum of the per-model estimates (None when no model has one)."""
        parts = [m.estimate_s for m in self.models if m.estimate_s is not None]
        return sum(parts) if parts else None


class RunFailed(HadisError):
    """Some models failed; everything else was measured and committed. Holds the report."""

    def __init__(self, report: RunReport) -> None:
        self.report = report
        fails = report.failures
        n = len({f.model for f in fails})
        total = len(report.models) or n
        super().__init__(
            f"{n} of {total} model{'s' if total != 1 else ''} failed: "
            + "; ".join(f.sentence() for f in fails)
            + ". Everything else is saved, and rerunning the same command retries what is "
            "missing."
        )
