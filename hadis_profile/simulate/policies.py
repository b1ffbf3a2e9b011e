"""Serving policies: what each one deploys on the GPUs at a given estimated load.

A policy turns (time, estimated qps) into an :class:`Assignment`: GPUs and a
batch-size cap per model, plus how a query is routed. All policies see the same
table, run, GPUs and SLO; only the decision rule differs.

* ``hadis``: :func:`hadis_profile.resolve.resolve` on the table as deployed.
* ``router-only`` / ``disc-only`` (HADIS's ablations) and ``diffserve``: resolve
  on a table restricted to cascades without a discriminator (d = 0) or without a
  router (r = 0). The restricted table is recompiled from the run with the
  table's own sweep settings and the stage removed from the measurements, so
  each ablation gets its own Pareto front instead of the few rows of the hybrid
  front that happen to have r = 0 or d = 0. (When the table records no sweep
  settings, its rows are filtered instead; the result's notes say which.)
  ``diffserve`` fixes one pair: ``pair``, or the pair resolve picks on the
  discriminator-only cascades at the workload's mean load.
* ``clipper-light`` / ``clipper-heavy``: every GPU on the cheapest / most
  expensive model.
* ``proteus``: no cascade; single models mixed across GPUs. The LP relaxation
  (maximise mean quality s.t. capacity covers the load, GPUs <= budget) mixes
  at most two models on the convex hull of (GPU-s/query, quality); it is rounded
  to whole GPUs and queries are split in the LP's proportions (smooth weighted
  round robin, deterministic).
* ``infaas``: one model on every GPU; every tick it steps to a cheaper model
  when the expected latency exceeds the SLO and to a more expensive one when it
  is below 0.89 x SLO and the next model's expected latency would fit the SLO
  (without that guard it would step straight back down).

Batch caps for the single-model baselines: the profiled batch size with the
most throughput whose worst case (two batch latencies, resolve's rule) fits the
SLO, else the fastest one. Resolve's plans size only the GPUs a plan needs; the
rest are spread over the plan's models, each to the model with the least
capacity per offered query (``spare="idle"`` leaves them unused instead).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.resolve import Plan, resolve
from hadis_profile.table import CascadeTable, make_document

if TYPE_CHECKING:
    from hadis_profile.simulate.testbed import Telemetry

from hadis_profile.simulate.context import (
    Assignment,
    Context,
)

POLICIES = (
    "hadis",
    "diffserve",
    "router-only",
    "disc-only",
    "clipper-light",
    "clipper-heavy",
    "proteus",
    "infaas",
)
CASCADE_POLICIES = frozenset({"hadis", "diffserve", "router-only", "disc-only"})
INFAAS_UP = 0.89


# --------------------------------------------------------------------------- restricted tables


def filter_rows(table: CascadeTable, keep: Any, note: str) -> CascadeTable:
    """A new in-memory table with the rows ``keep(row)`` accepts (hash recomputed)."""
    payload = dict(table.payload)
    payload["rows"] = [r for r in table.rows if keep(r)]
    if not payload["rows"]:
        raise HadisError(f"No table row is left for {note}.")
    payload["provenance"] = {**table.provenance, "simulate_filter": note}
    return CascadeTable(make_document(payload, created_at=table.document["created_at"]))


def restricted_table(
    ctx: Context,
    *,
    router: bool,
    discriminator: bool,
    note: str,
    only: tuple[str, ...] | None = None,
) -> CascadeTable:
    """The table recompiled from the run without the router or the discriminator.

    ``only`` restricts the models (their pairs get their own front). Falls back to
    filtering the deployed table's rows when it records no sweep settings. Cached.
    """
    key = (router, discriminator, only)
    if key not in ctx._tables:
        ctx._tables[key] = _restricted_table(ctx, router, discriminator, note, only)
    return ctx._tables[key]


def _restricted_table(
    ctx: Context, router: bool, discriminator: bool, note: str, only: tuple[str, ...] | None
) -> CascadeTable:
    from hadis_profile.pareto import compile_table

    table, meas = ctx.table, ctx.meas
    prov = table.provenance
    grid = prov.get("grid") or {}
    keep_models = set(table.models if only is None else only)

    def keep(row: dict) -> bool:
        if row["light"] not in keep_models or (row["heavy"] or row["light"]) not in keep_models:
            return False
        if row["kind"] == "single":
            return True
        return (router or row["r"] == 0) and (discriminator or row["d"] == 0)

    if grid.get("mode") not in ("grid", "exact") or prov.get("pairs") not in ("all", "adjacent"):
        ctx.notes.append(f"{note}: the table records no sweep settings, so its rows are filtered.")
        return filter_rows(table, keep, note)
    models = {
        name: m if discriminator else dataclasses.replace(m, confidence=None)
        for name, m in meas.models.items()
        if name in keep_models
    }
    restricted = dataclasses.replace(
        meas, models=models, router_scores=meas.router_scores if router else None
    )
    try:
        doc = compile_table(
            restricted,
            quality_metric=ctx.quality_metric,
            pairs=prov["pairs"],
            per_pair=bool(prov.get("per_pair")),
            grid=int(grid.get("steps") or 10),
            exact=grid["mode"] == "exact",
            nominal=bool(grid.get("nominal")),
        )
    except HadisError as e:
        ctx.notes.append(f"{note}: recompiling failed ({e}), so the table's rows are filtered.")
        return filter_rows(table, keep, note)
    doc["payload"]["provenance"]["simulate_filter"] = note
    return CascadeTable(make_document(doc["payload"], created_at=table.document["created_at"]))


# --------------------------------------------------------------------------- plan -> assignment


def spread_spare(
    ctx: Context, workers: dict[int, int], batch: dict[int, int], offered: dict
) -> None:
    """Give each unplanned GPU to the plan model with the least capacity per offered query."""
    if ctx.spare != "spread" or not workers:
        return
    spare = ctx.gpus - sum(workers.values())
    for _ in range(max(spare, 0)):

        def ratio(m: int) -> tuple[float, int]:
            cap = workers[m] * batch[m] / ctx.lat[m][batch[m]]
            load = offered.get(m, 0.0)
            return (cap / load if load > 0 else math.inf, m)

        m = min(workers, key=ratio)
        workers[m] += 1


def _plan_assignment(ctx: Context, policy: str, table: CascadeTable, plan: Plan, qps: float):
    """Turn a resolve() plan (or its fallback) into an Assignment; None when there is none."""
    status = "ok"
    if not plan.feasible:
        if plan.fallback is None:
            return None
        plan = plan.fallback
        status = "fallback-no-slo" if "slo_s" in plan.relaxed else "fallback"
    idx = ctx.index
    workers: dict[int, int] = {}
    batch: dict[int, int] = {}
    offered: dict[int, float] = {}
    for a in plan.allocations:
        if a.gpus > 0 and a.batch_size is not None:
            m = idx[a.model]
            workers[m] = a.gpus
            batch[m] = a.batch_size
            offered[m] = qps * a.load_fraction
    spread_spare(ctx, workers, batch, offered)
    row = table.rows[plan.row]
    light = idx[plan.light]
    heavy = idx[plan.heavy] if plan.heavy is not None else None
    if heavy is not None and heavy not in workers:
        heavy = None  # the row sends it nothing
    if light not in workers and heavy is not None:
        light = heavy  # r = 1: everything goes straight to heavy
        heavy = None
    rt = plan.router_threshold if heavy is not None else None
    ct = plan.confidence_threshold if heavy is not None else None
    pair = ctx.models[light] if heavy is None else f"{ctx.models[light]}->{ctx.models[heavy]}"
    label = pair if heavy is None else f"{pair} r={plan.r:g} d={plan.d:g}"
    return Assignment(
        policy=policy,
        workers=workers,
        batch=batch,
        light=light,
        heavy=heavy,
        router_threshold=rt,
        confidence_threshold=ct,
        qkey=ctx.qkey((table.sha256, plan.row), row["quality"]),
        row=plan.row,
        r=plan.r,
        d=plan.d,
        plan_qps=plan.qps,
        status=status,
        label=label,
    )


def _single_assignment(ctx: Context, policy: str, m: int, qps: float, status: str = "ok"):
    b = ctx.best_batch(m)
    return Assignment(
        policy=policy,
        workers={m: ctx.gpus},
        batch={m: b},
        light=m,
        qkey=ctx.single_qkey(m),
        plan_qps=qps,
        status=status,
        label=ctx.models[m],
    )


# --------------------------------------------------------------------------- policies


class Policy:
    """A decision rule; ``plan`` runs at every re-plan, ``tick`` every tick (rarely used)."""

    name = "policy"

    #: HADIS's admission multiple of the SLO for this policy (None: the run's setting)
    admission_factor: float | None = None
    #: how the HADIS authors' analysis scores its quality: "config" (table FID of the plan
    #: in force), "mix" (from the share each model served), "dominant" (its main model)
    authors_fid = "mix"

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        """The assignment for the estimated load ``qps``; ``tel``: the controller's telemetry."""
        raise NotImplementedError

    def tick(self, t: float, qps: float, backlog: list[int], current: Assignment):
        return None


class ResolvePolicy(Policy):
    """resolve() on a (possibly restricted) table, at the estimated load."""

    def __init__(self, ctx: Context, name: str, table: CascadeTable) -> None:
        self.ctx, self.name, self.table = ctx, name, table
        self._last: Assignment | None = None
        self.authors_fid = "mix" if name == "diffserve" else "config"

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        ctx = self.ctx
        plan = resolve(
            self.table, qps=max(qps, 1e-9), slo_s=ctx.slo_s, gpus=ctx.gpus, headroom=ctx.headroom
        )
        a = _plan_assignment(ctx, self.name, self.table, plan, qps)
        if a is None:
            if self._last is None:
                raise HadisError(
                    f"Policy '{self.name}' finds no plan that fits {ctx.gpus} GPU(s) at all."
                )
            return self._last
        self._last = a
        return a


class SinglePolicy(Policy):
    """Clipper: one fixed model on every GPU."""

    def __init__(self, ctx: Context, name: str, model: int) -> None:
        self.ctx, self.name, self.model = ctx, name, model

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        return _single_assignment(self.ctx, self.name, self.model, qps)


class ProteusPolicy(Policy):
    """Mix single models over the GPUs to maximise mean quality at the load (see module doc)."""

    name = "proteus"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        metric = ctx.quality_metric
        sign = 1.0 if ctx.higher_is_better[metric] else -1.0
        self.batch = [ctx.best_batch(m) for m in range(len(ctx.models))]
        self.cost = [ctx.lat[m][b] / b for m, b in enumerate(self.batch)]
        self.value = []
        for m in range(len(ctx.models)):
            q = ctx.qrows[ctx.single_qkey(m)].get(metric)
            self.value.append(-math.inf if q is None else sign * q)
        fits = [
            m
            for m in range(len(ctx.models))
            if 2 * ctx.lat[m][self.batch[m]] <= ctx.slo_s + 1e-9 and self.value[m] > -math.inf
        ]
        self.slo_ok = bool(fits)
        if not fits:  # no model meets the SLO: serve as fast as possible
            fits = [min(range(len(ctx.models)), key=lambda m: (self.cost[m], m))]
        self.cands = fits

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        ctx, G = self.ctx, self.ctx.gpus
        lam = max(qps, 0.0) * ctx.headroom
        cands, c, v = self.cands, self.cost, self.value
        status = "ok" if self.slo_ok else "fallback-no-slo"
        best: tuple[float, ...] | None = None  # (value, -models, -cost, i, j, xj)
        budget = G / lam if lam > 0 else math.inf
        for i in cands:
            if c[i] <= budget:
                key = (v[i], -1, -c[i], i, i, 0.0)
                best = key if best is None or key[:3] > best[:3] else best
        if G >= 2 and lam > 0:
            for i in cands:
                for j in cands:
                    if c[i] <= budget < c[j] and v[j] > v[i]:
                        xj = (budget - c[i]) / (c[j] - c[i])
                        key = (
                            v[i] + xj * (v[j] - v[i]),
                            -2,
                            -(c[i] + xj * (c[j] - c[i])),
                            i,
                            j,
                            xj,
                        )
                        best = key if best is None or key[:3] > best[:3] else best
        if best is None:  # overloaded: everything on the cheapest model
            i = min(cands, key=lambda m: (c[m], m))
            best = (v[i], -1, -c[i], i, i, 0.0)
            status = "overloaded"
        _, _, _, i, j, xj = best
        if i == j:
            return _single_assignment(ctx, self.name, i, qps, status)
        ni = math.ceil(lam * (1.0 - xj) * c[i] * (1.0 - 1e-12))
        ni = min(max(ni, 1), G - 1)
        nj = G - ni
        xj = min(xj, nj / (lam * c[j]))
        return Assignment(
            policy=self.name,
            workers={i: ni, j: nj},
            batch={i: self.batch[i], j: self.batch[j]},
            mode="split",
            light=i,
            split=(i, j),
            weights=(1.0 - xj, xj),
            plan_qps=qps,
            status=status,
            label=f"{ctx.models[i]} {1 - xj:.0%} + {ctx.models[j]} {xj:.0%}",
        )


class InfaasPolicy(Policy):
    """One model at a time, stepped down/up on expected latency (see module doc)."""

    name = "infaas"
    authors_fid = "dominant"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.current: int | None = None

    def expected_latency(self, m: int, qps: float, backlog: int) -> float:
        """Batch latency + time to drain the backlog + an M/D/c heavy-traffic wait."""
        ctx = self.ctx
        b = ctx.best_batch(m)
        lat = ctx.lat[m][b]
        mu = ctx.gpus * b / lat
        rho = qps / mu
        if rho >= 1:
            return math.inf
        return lat + backlog / mu + lat * rho / (2 * ctx.gpus * (1 - rho))

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        if self.current is None:
            slo = self.ctx.slo_s
            fits = [
                m
                for m in range(len(self.ctx.models))
                if self.expected_latency(m, qps, 0) < INFAAS_UP * slo
            ]
            self.current = max(fits) if fits else 0
        return _single_assignment(self.ctx, self.name, self.current, qps)

    def tick(self, t: float, qps: float, backlog: list[int], current: Assignment):
        m = self.current
        if m is None:
            return None
        slo = self.ctx.slo_s
        e = self.expected_latency(m, qps, backlog[m])
        new = m
        if e > slo and m > 0:
            new = m - 1
        elif (
            e < INFAAS_UP * slo
            and m + 1 < len(self.ctx.models)
            and self.expected_latency(m + 1, qps, backlog[m]) <= slo
        ):
            new = m + 1
        if new == m:
            return None
        self.current = new
        return _single_assignment(self.ctx, self.name, new, qps)


def make_policy(
    name: str, ctx: Context, *, mean_qps: float, pair: tuple[str, str] | None = None
) -> Policy:
    """Build one named policy (restricted tables are compiled here, once)."""
    if name not in POLICIES:
        raise HadisError(f"Unknown policy '{name}': choose from {', '.join(POLICIES)}.")
    if name in CASCADE_POLICIES and ctx.gpus < 2:
        raise HadisError(
            f"Policy '{name}' runs a two-model cascade and needs at least 2 GPUs, "
            f"but only {ctx.gpus} was given."
        )
    if name == "hadis":
        return ResolvePolicy(ctx, name, ctx.table)
    if name == "router-only":
        t = restricted_table(ctx, router=True, discriminator=False, note="router-only (d = 0)")
        return ResolvePolicy(ctx, name, t)
    if name == "disc-only":
        t = restricted_table(ctx, router=False, discriminator=True, note="disc-only (r = 0)")
        return ResolvePolicy(ctx, name, t)
    if name == "diffserve":
        return ResolvePolicy(ctx, name, _diffserve_table(ctx, mean_qps, pair))
    if name == "clipper-light":
        return SinglePolicy(ctx, name, 0)
    if name == "clipper-heavy":
        return SinglePolicy(ctx, name, len(ctx.models) - 1)
    if name == "proteus":
        return ProteusPolicy(ctx)
    return InfaasPolicy(ctx)


def _diffserve_table(ctx: Context, mean_qps: float, pair: tuple[str, str] | None) -> CascadeTable:
    """Discriminator-only rows of one pair, plus the pair's single-model rows."""
    disc = restricted_table(ctx, router=False, discriminator=True, note="disc-only (r = 0)")
    if pair is None:
        cascades = filter_rows(disc, lambda r: r["kind"] == "cascade", "diffserve pair choice")
        plan = resolve(
            cascades,
            qps=max(mean_qps, 1e-9),
            slo_s=ctx.slo_s,
            gpus=ctx.gpus,
            headroom=ctx.headroom,
        )
        chosen = plan if plan.feasible else plan.fallback
        if chosen is None:
            raise ParameterError(
                "pair", "No discriminator-only cascade fits the GPUs for diffserve; give {param}."
            )
        pair = (chosen.light, chosen.heavy)
        how = "at the mean load" if plan.feasible else "as the fallback at the mean load"
        ctx.notes.append(f"diffserve: pair {pair[0]} -> {pair[1]} (resolve's pick {how}).")
    light, heavy = pair
    for m in pair:
        if m not in ctx.table.models:
            raise ParameterError(
                "pair",
                f"{{param}} names model '{m}', which is not in the table "
                f"({', '.join(ctx.models)}).",
            )
    if ctx.index[light] >= ctx.index[heavy]:
        raise ParameterError(
            "pair", f"{{param}} {light},{heavy}: the light model must be the cheaper one."
        )
    return restricted_table(
        ctx,
        router=False,
        discriminator=True,
        note=f"diffserve {light} -> {heavy} (r = 0)",
        only=(light, heavy),
    )
