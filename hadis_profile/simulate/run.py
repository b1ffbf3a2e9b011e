"""Run several policies on one workload and reduce the outcome to comparable numbers.

Quality a query receives:

* per-image metrics (CLIP score, ...): the run's measured per-prompt quality of
  the model that finally served it (the per-prompt truth, not a row average);
* set-level metrics (FID), or a metric the serving model has no per-prompt
  values for: the table-row value of the plan the query was dispatched under
  (single-model rows for clipper, proteus and infaas), averaged over served
  queries. For proteus this is the query-weighted mean of single-model FIDs,
  not the FID of the mixed image set, which the table cannot give.

Violations are late (latency > SLO) plus dropped queries over all queries.
Latency percentiles are over served queries. GPU-seconds used = time spent on
batches plus time spent switching models (idle GPUs cost nothing here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.limits import MAX_SIM_GPUS, MAX_TICKS, MAX_WINDOWS, at_most
from hadis_profile.simulate.authors import AUTHORS_POLICIES, make_authors_policy
from hadis_profile.simulate.context import LATENCY_STATS, Context, build_context
from hadis_profile.simulate.engine import (
    BATCH_TIMES,
    DEMANDS,
    DISPATCHES,
    DROPPED,
    SERVED,
    PolicyRun,
    run_policy,
)
from hadis_profile.simulate.policies import CASCADE_POLICIES, POLICIES, Policy, make_policy

if TYPE_CHECKING:
    from hadis_profile.measurements import Measurements
    from hadis_profile.simulate.workload import Workload
    from hadis_profile.table import CascadeTable

LATE_TOL_S = 1e-9
#: every policy name simulate() accepts: ours, then the HADIS authors' E1 variants
ALL_POLICIES = POLICIES + AUTHORS_POLICIES
_TWO_MODEL = CASCADE_POLICIES | {"diffserve-fixed", "hadis-milp"}
SPARE_MODES = ("spread", "idle")


@dataclass(frozen=True)
class SimConfig:
    """The cluster, the SLO and the control loop (see the CLI for each option).

    The defaults are our model; HADIS's E1 testbed (docs/simulate.md) is
    ``tick_s`` = one controller second, ``demand="in-flight"``, ``admission=1.5``,
    ``batch_overhead_s`` = the discriminator's time, ``batch_time="hadis-worker"``,
    ``dispatch="random"`` and ``planner_clock`` = the testbed's time compression.
    """

    gpus: int
    slo_s: float
    replan_s: float = 50.0
    switch_s: float = 0.0
    drop_factor: float | None = 2.0
    headroom: float = 1.05
    latency_stat: str = "p99"
    ewma_alpha: float = 0.2
    window_s: float = 10.0
    spare: str = "spread"
    pair: tuple[str, str] | None = None
    tick_s: float = 1.0
    demand: str = "arrivals"
    admission: float | None = None
    batch_overhead_s: float = 0.0
    batch_time: str = "ceil"
    dispatch: str = "shared"
    seed: int = 0
    planner_clock: float | None = None

    def check(self) -> None:
        """Refuse a setting the simulation cannot honour, naming its parameter."""
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise ParameterError(
                "gpus", f"{{param}} must be a whole number of at least 1, not {self.gpus!r}."
            )
        at_most("gpus", self.gpus, MAX_SIM_GPUS, "GPUs")
        for name, v in (
            ("slo_s", self.slo_s),
            ("replan_s", self.replan_s),
            ("window_s", self.window_s),
        ):
            if not (_real(v) and v > 0):
                raise ParameterError(
                    name, f"{{param}} must be a positive number of seconds, not {v!r}."
                )
        if not (_real(self.switch_s) and self.switch_s >= 0):
            raise ParameterError(
                "switch_s", f"{{param}} must be zero or more seconds, not {self.switch_s!r}."
            )
        if self.drop_factor is not None and not (_real(self.drop_factor) and self.drop_factor > 0):
            raise ParameterError(
                "drop_factor", f"{{param}} must be positive (or None), not {self.drop_factor!r}."
            )
        if not (_real(self.headroom) and self.headroom >= 1):
            raise ParameterError(
                "headroom", f"{{param}} must be at least 1, not {self.headroom!r}."
            )
        if not (_real(self.ewma_alpha) and 0 < self.ewma_alpha <= 1):
            raise ParameterError(
                "ewma_alpha", f"{{param}} must be in (0, 1], not {self.ewma_alpha!r}."
            )
        for name, v in (("tick_s", self.tick_s), ("admission", self.admission),
                        ("planner_clock", self.planner_clock)):  # fmt: skip
            if v is not None and not (_real(v) and v > 0):
                raise ParameterError(name, f"{{param}} must be a positive number, not {v!r}.")
        if not (_real(self.batch_overhead_s) and self.batch_overhead_s >= 0):
            raise ParameterError(
                "batch_overhead_s",
                f"{{param}} must be zero or more seconds, not {self.batch_overhead_s!r}.",
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(
                "seed", f"{{param}} must be a whole number of at least 0, not {self.seed!r}."
            )
        for name, v, choices in (
            ("demand", self.demand, DEMANDS),
            ("batch_time", self.batch_time, BATCH_TIMES),
            ("dispatch", self.dispatch, DISPATCHES),
            ("latency_stat", self.latency_stat, LATENCY_STATS),
            ("spare", self.spare, SPARE_MODES),
        ):
            if v not in choices:
                raise ParameterError(
                    name, f"{{param}} must be one of {', '.join(choices)}, not {v!r}."
                )

    def check_span(self, span_s: float) -> None:
        """Refuse a workload whose span needs more ticks or windows than the limits allow."""
        for name, step, limit, what in (
            ("tick_s", self.tick_s, MAX_TICKS, "controller ticks"),
            ("window_s", self.window_s, MAX_WINDOWS, "windows"),
        ):
            count = span_s / step
            if count > limit:
                raise ParameterError(
                    name,
                    f"The workload spans {span_s:,.6g} s, which at {{param}} = {step:g} s is "
                    f"{count:,.6g} {what}, more than the limit of {limit:,}; shorten the "
                    "workload or raise {param}.",
                )


def _real(v: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class PolicySummary:
    """One policy's headline numbers."""

    policy: str
    queries: int
    served: int
    late: int
    dropped: int
    violation_ratio: float
    quality: dict[str, float | None]
    p50_s: float | None
    p99_s: float | None
    mean_s: float | None
    gpu_s_used: float
    switches: int
    escalated: int
    decisions: int
    wall_s: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SimulationResult:
    """Everything a report needs: config, workload facts, notes, per-policy runs."""

    config: SimConfig
    workload: dict
    metrics: list[str]
    quality_metric: str
    higher_is_better: dict[str, bool]
    models: list[str]
    runs: list[PolicyRun]
    summaries: list[PolicySummary]
    windows: list[dict]
    notes: list[str] = field(default_factory=list)


def query_quality(ctx: Context, run: PolicyRun) -> dict[str, np.ndarray]:
    """Per query and metric: the quality it received (NaN when not served or unknown)."""
    served = run.status == SERVED
    keys = np.where(served, run.qkey, 0)
    out: dict[str, np.ndarray] = {}
    for metric in ctx.metrics:
        rows = np.array(
            [np.nan if r[metric] is None else r[metric] for r in ctx.qrows], dtype=np.float64
        )
        vals = rows[keys]
        if not ctx.set_level[metric]:
            for m, name in enumerate(ctx.models):
                per_prompt = ctx.meas.models[name].quality.get(metric)
                if per_prompt is None:
                    continue
                mask = served & (run.model == m)
                vals[mask] = per_prompt[run.prompt[mask]]
        vals[~served] = np.nan
        out[metric] = vals
    return out


def _mean(x: np.ndarray) -> float | None:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else None


def summarise(ctx: Context, run: PolicyRun) -> PolicySummary:
    served = run.status == SERVED
    lat = (run.finish - run.arrival)[served]
    late = int(np.count_nonzero(lat > ctx.slo_s + LATE_TOL_S))
    dropped = int(np.count_nonzero(run.status == DROPPED))
    n = len(run.arrival)
    q = query_quality(ctx, run)
    return PolicySummary(
        policy=run.policy,
        queries=n,
        served=int(served.sum()),
        late=late,
        dropped=dropped,
        violation_ratio=(late + dropped) / n if n else 0.0,
        quality={m: _mean(v) for m, v in q.items()},
        p50_s=float(np.percentile(lat, 50)) if lat.size else None,
        p99_s=float(np.percentile(lat, 99)) if lat.size else None,
        mean_s=float(lat.mean()) if lat.size else None,
        gpu_s_used=run.busy_s + run.switch_s,
        switches=run.switches,
        escalated=int(run.escalated.sum()),
        decisions=len(run.decisions),
        wall_s=run.wall_s,
    )


def window_rows(ctx: Context, run: PolicyRun, window_s: float) -> list[dict]:
    """Per window of arrival time: demand, the plan in force, violations and quality."""
    n_win = math.floor(float(run.arrival.max()) / window_s) + 1 if len(run.arrival) else 0
    w = np.minimum((run.arrival / window_s).astype(np.int64), n_win - 1)
    served = run.status == SERVED
    lat = run.finish - run.arrival
    late = served & (lat > ctx.slo_s + LATE_TOL_S)
    dropped = run.status == DROPPED

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(w[mask], minlength=n_win)

    arrivals = np.bincount(w, minlength=n_win)
    n_served, n_late, n_drop = count(served), count(late), count(dropped)
    lat_sum = np.bincount(w[served], weights=lat[served], minlength=n_win)
    quality = {}
    for metric, vals in query_quality(ctx, run).items():
        ok = np.isfinite(vals)
        s = np.bincount(w[ok], weights=vals[ok], minlength=n_win)
        c = np.bincount(w[ok], minlength=n_win)
        quality[metric] = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    tick_t = np.array([t for t, _ in run.ticks] or [0.0])
    tick_q = np.array([q for _, q in run.ticks] or [0.0])
    dec_t = [d["time_s"] for d in run.decisions]
    rows = []
    for k in range(n_win):
        t0, t1 = k * window_s, (k + 1) * window_s
        j = int(np.searchsorted(tick_t, t1, side="right")) - 1
        i = max(int(np.searchsorted(dec_t, t0, side="right")) - 1, 0)
        dec = run.decisions[i] if run.decisions else {}
        row = {
            "policy": run.policy,
            "window_start_s": t0,
            "window_end_s": t1,
            "arrivals": int(arrivals[k]),
            "demand_qps": arrivals[k] / window_s,
            "estimated_qps": float(tick_q[j]) if j >= 0 else None,
            "plan": dec.get("plan"),
            "plan_status": dec.get("status"),
            "gpus": " ".join(f"{m}:{g}" for m, g in (dec.get("gpus") or {}).items()),
            "served": int(n_served[k]),
            "late": int(n_late[k]),
            "dropped": int(n_drop[k]),
            "violation_ratio": (n_late[k] + n_drop[k]) / arrivals[k] if arrivals[k] else None,
            "mean_latency_s": lat_sum[k] / n_served[k] if n_served[k] else None,
        }
        for metric, v in quality.items():
            row[f"quality:{metric}"] = None if math.isnan(v[k]) else float(v[k])
        rows.append(row)
    return rows


def build_policy(name: str, ctx: Context, *, mean_qps: float, config: SimConfig) -> Policy:
    """One of :data:`ALL_POLICIES`: ours from ``policies``, the authors' from ``authors``."""
    if name in AUTHORS_POLICIES:
        return make_authors_policy(name, ctx, clock=config.planner_clock, pair=config.pair)
    return make_policy(name, ctx, mean_qps=mean_qps, pair=config.pair)


def simulate(
    table: CascadeTable,
    meas: Measurements,
    workload: Workload,
    policies: list[str] | tuple[str, ...],
    config: SimConfig,
) -> SimulationResult:
    """Simulate each policy on the same workload and cluster; deterministic."""
    config.check()
    if not policies:
        raise ParameterError("policies", "Name at least one policy to simulate ({param}).")
    for p in policies:
        if p not in ALL_POLICIES:
            raise ParameterError(
                "policies",
                f"Unknown policy '{p}' in {{param}}: choose from {', '.join(ALL_POLICIES)}.",
            )
    if len(set(policies)) != len(policies):
        dup = next(p for p in policies if list(policies).count(p) > 1)
        raise ParameterError("policies", f"{{param}} names '{dup}' twice.")
    if len(workload) == 0:
        raise HadisError("The workload has no queries.")
    ctx = build_context(
        table,
        meas,
        gpus=config.gpus,
        slo_s=config.slo_s,
        headroom=config.headroom,
        latency_stat=config.latency_stat,
        spare=config.spare,
    )
    notes: list[str] = []
    prompts, wrapped = workload.mapped_prompts(meas.n_prompts)
    notes.append(
        f"Prompt ids are mapped onto the run's {meas.n_prompts} prompts modulo {meas.n_prompts}"
        + (f" ({wrapped} of {len(workload)} ids were >= {meas.n_prompts})." if wrapped else ".")
    )
    if workload.reordered:
        notes.append(
            f"{workload.reordered} trace line(s) arrived earlier than the line above; "
            "arrivals were sorted by time."
        )
    arrivals = workload.arrivals_s
    if arrivals[0] > config.replan_s:
        notes.append(f"The workload starts at {arrivals[0]:g} s; times are shifted to start at 0.")
        arrivals = arrivals - arrivals[0]
    config.check_span(float(arrivals[-1]))
    fastest = min(min(p.values()) for p in ctx.lat)
    if config.slo_s < fastest:
        notes.append(
            f"The {config.slo_s:g} s SLO is below every model's batch latency (fastest "
            f"{fastest:g} s): every served query is late; plans fall back to ignoring the SLO."
        )
    if all(set(p) == {1} for p in ctx.lat):
        notes.append("The latency profile has batch size 1 only, so every batch is one query.")
    if any(p in _TWO_MODEL for p in policies) and config.gpus < 2:
        raise ParameterError(
            "gpus",
            f"The cascade policies ({', '.join(p for p in policies if p in _TWO_MODEL)}) "
            f"need at least 2 GPUs, one per model, but {{param}} is {config.gpus}.",
        )
    duration = float(arrivals[-1]) if arrivals[-1] > 0 else 1.0
    mean_qps = len(arrivals) / duration
    built = [build_policy(p, ctx, mean_qps=mean_qps, config=config) for p in policies]
    runs = []
    for pol in built:
        run = run_policy(
            ctx,
            pol,
            arrivals,
            prompts,
            replan_s=config.replan_s,
            switch_s=config.switch_s,
            drop_factor=config.drop_factor,
            ewma_alpha=config.ewma_alpha,
            tick_s=config.tick_s,
            demand=config.demand,
            admission=config.admission,
            batch_overhead_s=config.batch_overhead_s,
            batch_time=config.batch_time,
            dispatch=config.dispatch,
            seed=config.seed,
        )
        run.fid_accounting = pol.authors_fid
        runs.append(run)
    windows = [row for run in runs for row in window_rows(ctx, run, config.window_s)]
    notes.extend(ctx.notes)
    return SimulationResult(
        config=config,
        workload={
            "source": workload.source,
            "queries": len(workload),
            "duration_s": duration,
            "mean_qps": mean_qps,
            "peak_qps_per_window": max(
                (r["demand_qps"] for r in windows if r["policy"] == runs[0].policy), default=0.0
            ),
            "reordered": workload.reordered,
            "wrapped_prompt_ids": wrapped,
            "n_prompts": meas.n_prompts,
        },
        metrics=ctx.metrics,
        quality_metric=ctx.quality_metric,
        higher_is_better=ctx.higher_is_better,
        models=ctx.models,
        runs=runs,
        summaries=[summarise(ctx, run) for run in runs],
        windows=windows,
        notes=notes,
    )
