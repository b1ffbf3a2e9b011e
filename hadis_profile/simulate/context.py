"""What a policy decides and what it decides on: the :class:`Assignment` of GPUs,
batch caps and routing, and the :class:`Context` every policy of one simulation
shares (the table, the run's per-prompt signals and quality, GPUs, SLO, latency
profile), built once by :func:`build_context`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hadis_profile.errors import HadisError
from hadis_profile.table import CascadeTable

if TYPE_CHECKING:
    from hadis_profile.measurements import Measurements

#: The latency statistic a simulation serves with (resolve's rule is p99).
LATENCY_STATS = ("p99", "mean", "p50", "p90")


@dataclass
class Assignment:
    """What runs on the GPUs until the next decision, and how queries are routed.

    mode "cascade": a query whose router score is >= ``router_threshold`` goes to
    ``heavy``; others to ``light``, escalated to ``heavy`` when the light model's
    confidence for the prompt is < ``confidence_threshold``. ``heavy`` None: one model.
    mode "split": query i goes to ``split[k]`` in proportion to ``weights[k]``.
    ``qkey`` indexes the quality rows of the context (set-level metric values).
    """

    policy: str
    workers: dict[int, int]
    batch: dict[int, int]
    mode: str = "cascade"
    light: int = -1
    heavy: int | None = None
    router_threshold: float | None = None
    confidence_threshold: float | None = None
    split: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    qkey: int = -1
    row: int | None = None
    r: float | None = None
    d: float | None = None
    plan_qps: float = 0.0
    status: str = "ok"  # ok | fallback | fallback-no-slo | overloaded | shed | init
    label: str = ""

    @property
    def gpus(self) -> int:
        return sum(self.workers.values())


@dataclass
class Context:
    """Everything the policies and the engine share for one simulation."""

    table: CascadeTable
    meas: Measurements
    models: list[str]  # table models, cheapest first
    lat: list[dict[int, float]]  # per model: usable batch size -> batch seconds (the statistic)
    gpus: int
    slo_s: float
    headroom: float
    latency_stat: str
    spare: str
    metrics: list[str]
    set_level: dict[str, bool]
    higher_is_better: dict[str, bool]
    quality_metric: str
    qrows: list[dict[str, float | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _qrow_cache: dict[Any, int] = field(default_factory=dict)
    _tables: dict[Any, CascadeTable] = field(default_factory=dict)

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.models)}

    def qkey(self, key: Any, quality: dict[str, Any]) -> int:
        """Register a row's metric values once; the engine stores the int per query."""
        k = self._qrow_cache.get(key)
        if k is None:
            k = len(self.qrows)
            self.qrows.append({m: _finite(quality.get(m)) for m in self.metrics})
            self._qrow_cache[key] = k
        return k

    def single_qkey(self, m: int) -> int:
        return self._qrow_cache[("single", m)]

    def best_batch(self, m: int) -> int:
        """Most throughput whose worst case (2 batch latencies) fits the SLO, else the fastest."""
        pts = self.lat[m]
        ok = [b for b, s in pts.items() if 2 * s <= self.slo_s + 1e-9]
        if ok:
            return max(ok, key=lambda b: (b / pts[b], -b))
        return min(pts, key=lambda b: (pts[b], b))


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def build_context(
    table: CascadeTable,
    meas: Measurements,
    *,
    gpus: int,
    slo_s: float,
    headroom: float = 1.05,
    latency_stat: str = "p99",
    spare: str = "spread",
) -> Context:
    """Check that ``table`` and ``meas`` belong together and collect the shared arrays."""
    if latency_stat not in LATENCY_STATS:
        raise HadisError(
            f"The latency statistic '{latency_stat}' is not one of {', '.join(LATENCY_STATS)}."
        )
    if spare not in ("spread", "idle"):
        raise HadisError(f"spare must be 'spread' or 'idle', not '{spare}'.")
    prov = table.provenance
    run_hash = (meas.provenance or {}).get("prompt_set_hash")
    if prov.get("prompt_set_hash") and run_hash and prov["prompt_set_hash"] != run_hash:
        raise HadisError(
            f"The table was compiled from another prompt set than this run's "
            f"({prov['prompt_set_hash'][:12]} vs {run_hash[:12]}); pass the run it came from."
        )
    if prov.get("n_prompts") not in (None, meas.n_prompts):
        raise HadisError(
            f"The table was compiled over {prov['n_prompts']} prompts but the run has "
            f"{meas.n_prompts}; pass the run it came from."
        )
    models = sorted(table.models, key=lambda n: (table.models[n].get("order", 0), n))
    missing = [m for m in models if m not in meas.models]
    if missing:
        raise HadisError(f"The table's model '{missing[0]}' is not in the run.")
    key = f"{latency_stat}_s"
    lat: list[dict[int, float]] = []
    for name in models:
        spec = table.models[name]
        max_batch = spec.get("max_batch")
        pts: dict[int, float] = {}
        for point in (spec.get("latency") or {}).values():
            if not isinstance(point, dict) or point.get("infeasible"):
                continue
            b, s = int(point.get("batch_size", 0)), _finite(point.get(key))
            if b >= 1 and s is not None and s > 0 and (max_batch is None or b <= max_batch):
                pts[b] = s
        if not pts:
            raise HadisError(f"Model '{name}' has no usable profiled latency in the table.")
        lat.append(pts)
    for row in table.rows:
        if row.get("router_threshold") is not None and meas.router_scores is None:
            raise HadisError("The table routes by router score, but the run has no router scores.")
        if (
            row.get("confidence_threshold") is not None
            and row.get("heavy") is not None
            and meas.models[row["light"]].confidence is None
        ):
            raise HadisError(
                f"The table escalates on '{row['light']}' confidences, which the run lacks."
            )
    from hadis_profile import metrics as metric_ids

    spec_metrics = prov.get("metrics") or {}
    quality_metric = table.quality_metric
    names = [quality_metric, *(m for m in spec_metrics if m != quality_metric)]
    set_level, hib = {}, {}
    for m in names:
        info = spec_metrics.get(m) or {}
        try:
            known = metric_ids.info(m)
            set_level[m], hib[m] = known.set_level, known.higher_is_better
        except HadisError:
            set_level[m] = bool(info.get("set_level", False))
            hib[m] = bool(info.get("higher_is_better", True))
    ctx = Context(
        table=table,
        meas=meas,
        models=models,
        lat=lat,
        gpus=gpus,
        slo_s=slo_s,
        headroom=headroom,
        latency_stat=latency_stat,
        spare=spare,
        metrics=names,
        set_level=set_level,
        higher_is_better=hib,
        quality_metric=quality_metric,
    )
    for i, name in enumerate(models):
        row = next((r for r in table.rows if r["kind"] == "single" and r["light"] == name), None)
        ctx.qkey(("single", i), row["quality"] if row is not None else {})
    return ctx
