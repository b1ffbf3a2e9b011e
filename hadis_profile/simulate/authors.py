"""The six systems of HADIS's end-to-end experiment (E1), as the authors' code defines them.

Our default policies (``policies.py``) are our reading of each system; these
variants follow the authors' controller (qizhengyang98/HADIS, ``hadis/src/
controller/``) rule by rule, so the paper's experiment can be re-run. Every
difference is listed in docs/simulate.md. Common to all of them:

* They plan on the controller's latency table (config.get_controller_runtimes):
  with ``planner_clock`` (0.1 for E1 replayed in paper units) batch latencies
  are rounded to 0.1 s on the authors' compressed clock, i.e. to 1 s here.
* The demand they are given is the engine's estimate times ``ctx.headroom``
  (the controller's OVER_PROVISION_FACTOR, 1.05); with the engine's
  ``demand="in-flight"`` that is exactly the controller's ``system_ewma``.
* Queueing delay of model m (Little's law on the controller's EWMAs) is
  ``1.2 * queue_m / rate_m`` seconds.
* HADIS, DiffServe and Proteus solve an MILP with Gurobi. Their optima are
  unique in quality but not in GPUs or batch sizes (nothing in the objective
  prefers one), so Gurobi's pick is not reproducible: we take the fewest GPUs,
  then the lowest latency, and spread the GPUs left over like our own plans.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.simulate.context import Assignment, Context
from hadis_profile.simulate.policies import Policy, spread_spare

if TYPE_CHECKING:
    from hadis_profile.simulate.testbed import Telemetry
    from hadis_profile.table import CascadeTable

AUTHORS_POLICIES = (
    "clipper-light-fit",
    "clipper-heavy-fit",
    "infaas-acc",
    "proteus-milp",
    "diffserve-fixed",
    "hadis-milp",
)
#: config.ALLOWED_BATCH_SIZES
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
#: Little's-law safety factor of the HADIS, DiffServe and Proteus planners
QUEUE_SAFETY = 1.2
#: proteus: throughput >= 1.25 x demand (solve_proteus_milp demand_weight)
PROTEUS_DEMAND_WEIGHT = 1.25
#: infaas.py with QUALITY_BIAS = 0.5
INFAAS_QUEUE_WEIGHT = 0.225
INFAAS_STEP_UP = 0.89
INFAAS_CRITICAL_QUEUE = 60
#: DiffServe's escalation-fraction grid (diffserve_cascade_ILP.py t_values)
DIFFSERVE_GRID = tuple(round(0.005 * i, 4) for i in range(201))
_EPS = 1e-9


def planner_latency(ctx: Context, clock: float | None) -> list[dict[int, float]]:
    """Per model: batch size -> seconds, as the authors' planners see them.

    config._batch_latency rounds to 0.1 s on the controller's clock, which runs
    ``clock`` times this simulation's (0.1 when E1's compressed trace is
    replayed in paper units), so a 0.5 s batch is planned as 1 s.
    """
    out = []
    for pts in ctx.lat:
        row = {b: s for b, s in pts.items() if b in BATCH_SIZES}
        if clock is not None:
            row = {b: round(s * clock, 1) / clock for b, s in row.items()}
        if not row or any(s <= 0 for s in row.values()):
            raise HadisError("The authors' planners need positive latencies at batch sizes 1-32.")
        out.append(row)
    return out


def _need(demand: float, per_gpu: float) -> int:
    """Whole GPUs so that gpus * per_gpu >= demand (Gurobi's integrality, its tolerance)."""
    return max(0, math.ceil(demand / per_gpu - _EPS)) if demand > 0 else 0


def worker_cut(values: np.ndarray, fraction: float) -> float:
    """The value at the ``fraction`` quantile, by HADIS's worker rule (worker/model.py).

    ``sorted(values)[max(int(len * fraction) - 1, 0)]``: the discriminator
    re-routes what scores below it; the router (with 1 - r) sends what scores
    at or above it straight to the heavy model.
    """
    s = np.sort(np.asarray(values, dtype=np.float64))
    return float(s[max(int(len(s) * fraction) - 1, 0)])


class AuthorsPolicy(Policy):
    """Shared state: the planner's latency table, FIDs, and the controller's telemetry."""

    uses_telemetry = True
    authors_fid = "mix"  # how parse_logs.py scores this system's quality

    def __init__(self, ctx: Context, name: str, clock: float | None) -> None:
        self.ctx, self.name = ctx, name
        self.lat = planner_latency(ctx, clock)
        self.M, self.G = len(ctx.models), ctx.gpus

    def demand(self, qps: float) -> float:
        return max(qps, 0.0) * self.ctx.headroom

    def delays(self, tel: Telemetry | None, *, guard: bool) -> list[float]:
        """Seconds of queueing per model; ``guard``: HADIS ignores a queue EWMA below 1."""
        if tel is None:
            return [0.0] * self.M
        out = []
        for rate, q in zip(tel.model_rate, tel.model_queue, strict=True):
            if rate <= 0 or (guard and q < 1):
                out.append(0.0)
            else:
                out.append(QUEUE_SAFETY * q / rate)
        return out

    def fits(self, m: int) -> int:
        """The largest batch whose planned latency fits the SLO, else 1 (Clipper, INFaaS)."""
        ok = [b for b, s in self.lat[m].items() if s <= self.ctx.slo_s + _EPS]
        return max(ok) if ok else 1

    def single(self, m: int, batch: int, status: str = "ok") -> Assignment:
        return Assignment(
            policy=self.name,
            workers={m: self.G},
            batch={m: batch},
            light=m,
            qkey=self.ctx.single_qkey(m),
            status=status,
            label=self.ctx.models[m],
        )

    def round_robin(self, qps: float) -> Assignment:
        """The controller's fallback for Proteus and INFaaS: model i % 4 on worker i, batch 1."""
        counts = [0] * self.M
        for w in range(self.G):
            counts[w % self.M] += 1
        ms = tuple(m for m in range(self.M) if counts[m])
        return Assignment(
            policy=self.name,
            workers={m: counts[m] for m in ms},
            batch=dict.fromkeys(ms, 1),
            mode="split",
            light=ms[0],
            split=ms,
            weights=tuple(counts[m] / self.G for m in ms),
            plan_qps=qps,
            status="fallback",
            label="round robin, batch 1",
        )


class ClipperFit(AuthorsPolicy):
    """controller.allocateByStaticModel: one model on every worker, the largest batch that
    fits the SLO; Clipper-Heavy's workers admit a query only if it can finish within the
    SLO (SLO_ADMISSION_FACTOR)."""

    def __init__(self, ctx: Context, name: str, clock: float | None, model: int) -> None:
        super().__init__(ctx, name, clock)
        self.model = model
        self.admission_factor = 1.0 if model == self.M - 1 else None

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        return self.single(self.model, self.fits(self.model))


class InfaasAcc(AuthorsPolicy):
    """infaas.solve_infaas_accuracy: one model on all workers, starting from the best FID;
    each re-plan, jump to the lightest when the queue EWMA passes 60, else step one FID
    level down when lat + 0.225 * queue / throughput exceeds the SLO, up when below 0.89x."""

    authors_fid = "dominant"

    def __init__(self, ctx: Context, name: str, clock: float | None) -> None:
        super().__init__(ctx, name, clock)
        q = [ctx.qrows[ctx.single_qkey(m)].get(ctx.quality_metric) for m in range(self.M)]
        sign = -1.0 if ctx.higher_is_better[ctx.quality_metric] else 1.0
        rank = [math.inf if v is None else sign * v for v in q]
        self.by_quality = sorted(range(self.M), key=lambda m: (rank[m], m))  # best first
        self.idx = 0

    def expected_latency(self, m: int, bs: int, queue: float) -> float:
        lat = self.lat[m][bs]
        return lat + INFAAS_QUEUE_WEIGHT * queue / (self.G * bs / lat)

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        if qps <= 0:
            return self.round_robin(qps)
        slo, worst = self.ctx.slo_s, self.M - 1
        best_bs = {m: max((b for b, s in self.lat[m].items() if s <= slo), default=None)
                   for m in range(self.M)}  # fmt: skip
        m = self.by_quality[self.idx]
        if best_bs[m] is None:  # raw execution already misses the SLO
            self.idx = min(self.idx + 1, worst)
            m = self.by_quality[self.idx]
            if best_bs[m] is None:
                return self.round_robin(qps)
        queue = sum(tel.model_queue) if tel is not None else 0.0
        e = self.expected_latency(m, best_bs[m], queue)
        if queue > INFAAS_CRITICAL_QUEUE:
            self.idx = worst
        elif e > slo:
            self.idx = min(self.idx + 1, worst)
        elif e < INFAAS_STEP_UP * slo:
            self.idx = max(self.idx - 1, 0)
        m = self.by_quality[self.idx]
        if best_bs[m] is None:
            return self.round_robin(qps)
        return self.single(m, best_bs[m])


class ProteusMilp(AuthorsPolicy):
    """solve_proteus_milp: maximise sum(normalised inverse FID x workers) subject to total
    throughput >= 1.25 x demand and latency x (1 + queue delay) <= SLO for each model's batch;
    every worker gets an equal share of the traffic (one load-balancer stage)."""

    def __init__(self, ctx: Context, name: str, clock: float | None) -> None:
        super().__init__(ctx, name, clock)
        metric = ctx.quality_metric
        q = [ctx.qrows[ctx.single_qkey(m)].get(metric) for m in range(self.M)]
        if any(v is None for v in q):
            raise HadisError(f"proteus-milp needs every model's single-model '{metric}'.")
        if ctx.higher_is_better[metric]:
            q = [-v for v in q]
        lo, hi = min(q), max(q)
        self.weight = [(hi - v) / (hi - lo + 1e-9) if hi - lo >= 1e-9 else 1.0 for v in q]
        combos = [c for c in itertools.product(range(self.G + 1), repeat=self.M)
                  if sum(c) <= self.G]  # fmt: skip
        self.combos = np.asarray(combos, dtype=np.float64)
        self.last: Assignment | None = None

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        d = self.demand(qps)
        if d <= 0:
            return self.round_robin(qps)
        slo = self.ctx.slo_s
        tick = tel.tick_s if tel is not None else 1.0
        delay = [x / tick for x in self.delays(tel, guard=False)]  # in controller ticks
        batch, cap = [0] * self.M, np.zeros(self.M)
        for m in range(self.M):
            ok = [(b / s, -s, b) for b, s in self.lat[m].items() if s * (1 + delay[m]) <= slo]
            if ok:
                cap[m], _, batch[m] = max(ok)
        usable = np.all((self.combos == 0) | (cap > 0), axis=1)
        thr = self.combos @ cap
        feasible = usable & (thr >= PROTEUS_DEMAND_WEIGHT * d - _EPS)
        if not feasible.any():  # the authors' code raises here; the plan in force stays
            return self.last or self.round_robin(qps)
        obj = self.combos @ np.asarray(self.weight)
        key = np.where(feasible, obj, -np.inf)
        best = np.flatnonzero(key >= key.max() - 1e-9)
        pick = best[np.argmax(thr[best])]
        w = {m: int(n) for m, n in enumerate(self.combos[pick]) if n > 0}
        ms = tuple(sorted(w))
        names = self.ctx.models
        self.last = Assignment(
            policy=self.name,
            workers=w,
            batch={m: batch[m] for m in ms},
            mode="split",
            light=ms[0],
            split=ms,
            weights=tuple(w[m] / sum(w.values()) for m in ms),
            plan_qps=qps,
            label=" + ".join(f"{names[m]} x{w[m]}" for m in ms),
        )
        return self.last


class DiffServeFixed(AuthorsPolicy):
    """DiffServeILPAllocator: a fixed pair, discriminator only; maximise the escalated
    fraction t on a 0.005 grid s.t. each stage's throughput covers its load and
    L1 + Q1 + L2 + Q2 <= SLO; infeasible: everything on the light model at batch 16.
    The first plan, and any at zero demand, is its initialize(): 9 + 7 workers, batch 8, t = 1."""

    def __init__(self, ctx: Context, name: str, clock: float | None, pair: tuple[int, int]) -> None:
        super().__init__(ctx, name, clock)
        self.light, self.heavy = pair
        self.conf = ctx.meas.models[ctx.models[self.light]].confidence
        if self.conf is None:
            raise HadisError(f"diffserve-fixed escalates on '{ctx.models[self.light]}' "
                             "confidences, which the run lacks.")  # fmt: skip
        self.started = False

    def _cascade(self, x1: int, x2: int, b1: int, b2: int, t: float, qps: float, status: str):
        workers = {self.light: x1, **({self.heavy: x2} if x2 > 0 else {})}
        batch = {self.light: b1, **({self.heavy: b2} if x2 > 0 else {})}
        d = self.demand(qps)
        spread_spare(self.ctx, workers, batch, {self.light: d, self.heavy: d * t})
        heavy = self.heavy if x2 > 0 else None
        names = self.ctx.models
        return Assignment(
            policy=self.name,
            workers=workers,
            batch=batch,
            light=self.light,
            heavy=heavy,
            confidence_threshold=worker_cut(self.conf, t) if heavy is not None else None,
            qkey=(
                self.ctx.qkey(("diffserve-fixed", t), self.quality(t))
                if heavy is not None
                else self.ctx.single_qkey(self.light)
            ),
            d=t,
            plan_qps=qps,
            status=status,
            label=f"{names[self.light]}->{names[self.heavy]} t={t:g}",
        )

    def quality(self, t: float) -> dict[str, float]:
        """The set-level quality of (r = 0, d = t), interpolated on the run's external sweep."""
        names = self.ctx.models
        pts = sorted(
            (c.d, c.values)
            for c in self.ctx.meas.external
            if (c.light, c.heavy, c.r) == (names[self.light], names[self.heavy], 0.0)
        )
        if not pts:  # fmt: skip
            return {}
        ds = [p[0] for p in pts]
        out = {}
        for metric in pts[0][1]:
            out[metric] = float(np.interp(t, ds, [p[1].get(metric, np.nan) for p in pts]))
        return out

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        d = self.demand(qps)
        if not self.started or d <= 0:
            self.started = True
            x1 = math.ceil((self.G + 1) / 2)  # the authors count the sink as a server
            return self._cascade(x1, max(self.G - x1, 0), 8, 8, 1.0, qps, "init")
        lat1, lat2 = self.lat[self.light], self.lat[self.heavy]
        q = self.delays(tel, guard=False)
        budget = self.ctx.slo_s - q[self.light] - q[self.heavy] + _EPS
        options = []  # (t, -gpus, -latency, x1, x2, b1, b2): the largest t, then fewest GPUs
        for b1, s1 in lat1.items():
            x1 = _need(d, b1 / s1)
            if x1 > self.G:
                continue
            if s1 <= budget:  # no heavy batch chosen: t = 0
                options.append((0.0, -x1, -s1, x1, 0, b1, 1))
            for b2, s2 in lat2.items():
                if s1 + s2 > budget:
                    continue
                room = (self.G - x1) * b2 / s2
                tv = max(v for v in DIFFSERVE_GRID if d * v <= room + _EPS)
                x2 = _need(d * tv, b2 / s2)
                options.append((tv, -(x1 + x2), -(s1 + s2), x1, x2, b1, b2))
        best = max(options, default=None)
        if best is None:
            return self._cascade(self.G, 0, 16, 1, 0.0, qps, "fallback")
        tv, _, _, x1, x2, b1, b2 = best
        return self._cascade(x1, x2, b1, b2, tv, qps, "ok")


class HadisMilp(AuthorsPolicy):
    """qaware_multi_cascade_ILP.solve_milp_loop: one MILP per adjacent pair of the table;
    minimise FID s.t. GPUs <= budget, light throughput >= demand, heavy throughput >=
    demand x t, and the sum over both stages of (batch latency + queue delay) <= SLO;
    the lowest FID over pairs wins (ties: the heavier pair). Infeasible, or no demand:
    shed load, every worker on the table's lightest model at batch 1."""

    authors_fid = "config"

    def __init__(self, ctx: Context, name: str, clock: float | None, table: CascadeTable) -> None:
        super().__init__(ctx, name, clock)
        if ctx.meas.router_scores is None:
            raise HadisError("hadis-milp routes by router score, but the run has no router scores.")
        self.table = table
        idx, metric = ctx.index, ctx.quality_metric
        sign = -1.0 if ctx.higher_is_better[metric] else 1.0
        rows: dict[tuple[int, int], list] = {}
        for k, row in enumerate(table.rows):
            if row["kind"] != "cascade" or row["light"] not in idx or row["heavy"] not in idx:
                continue
            lo, hi = idx[row["light"]], idx[row["heavy"]]
            q = row["quality"].get(metric)
            if hi != lo + 1 or q is None:
                continue  # the authors plan over adjacent pairs
            if row["r"] == 0 and row["d"] == 0 and lo != 0:
                continue  # their table has no light-model-alone row but the cheapest pair's
            t = round(row["r"] + (1 - row["r"]) * row["d"], 2)
            rows.setdefault((lo, hi), []).append((sign * q, k, row["r"], row["d"], t))
        if not rows:
            raise HadisError("hadis-milp found no cascade row over adjacent pairs in the table.")
        # Gurobi loop order: groupby on the 0/1 model tuple, so the heavier pair comes first
        self.pairs = sorted(rows, key=lambda p: tuple(int(i in p) for i in range(self.M)))
        self.rows = {p: sorted(rows[p]) for p in self.pairs}
        self.lightest = min(p[0] for p in self.pairs)
        self.scores = ctx.meas.router_scores
        self.conf = {lo: ctx.meas.models[ctx.models[lo]].confidence for lo, _ in self.pairs}
        if any(c is None for c in self.conf.values()):
            raise HadisError("hadis-milp escalates on confidences, which the run lacks.")

    def solve_pair(self, pair: tuple[int, int], d: float, q: list[float]):
        """The best (row, GPUs, batches) of one pair, or None."""
        lo, hi = pair
        budget = self.ctx.slo_s - q[lo] - q[hi] + _EPS
        options = []  # (light GPUs, batch, latency, heavy throughput per GPU, batch, latency)
        for b1, s1 in self.lat[lo].items():
            x1 = _need(d, b1 / s1)
            if x1 <= self.G:
                for b2, s2 in self.lat[hi].items():
                    if s1 + s2 <= budget:
                        options.append((x1, b1, s1, b2 / s2, b2, s2))
        for value, k, r, dd, t in self.rows[pair]:  # best quality first
            fits = []  # (gpus, latency, b1, b2, x1, x2): fewest GPUs, then the fastest
            for x1, b1, s1, p2, b2, s2 in options:
                x2 = _need(d * t, p2)
                if x1 + x2 <= self.G:
                    fits.append((x1 + x2, s1 + s2, b1, b2, x1, x2))
            if fits:
                return value, k, r, dd, t, min(fits)
        return None

    def shed(self, qps: float) -> Assignment:
        a = self.single(self.lightest, 1, status="shed")
        a.plan_qps, a.label = qps, f"shed: all on {self.ctx.models[self.lightest]}"
        return a

    def plan(self, t: float, qps: float, tel: Telemetry | None = None) -> Assignment:
        d = self.demand(qps)
        if d <= 0:
            return self.shed(qps)
        q = self.delays(tel, guard=True)
        best = None
        for pair in self.pairs:
            sol = self.solve_pair(pair, d, q)
            if sol is not None and (best is None or sol[0] < best[1][0] - 1e-12):
                best = (pair, sol)
        if best is None:
            return self.shed(qps)
        (lo, hi), (_, k, r, dd, tv, (_, _, b1, b2, x1, x2)) = best
        workers = {lo: x1, **({hi: x2} if x2 > 0 else {})}
        batch = {lo: b1, **({hi: b2} if x2 > 0 else {})}
        spread_spare(self.ctx, workers, batch, {lo: d, hi: d * tv})
        heavy = hi if x2 > 0 else None
        row = self.table.rows[k]
        names = self.ctx.models
        return Assignment(
            policy=self.name,
            workers=workers,
            batch=batch,
            light=lo,
            heavy=heavy,
            router_threshold=worker_cut(self.scores, 1 - r) if heavy is not None else None,
            confidence_threshold=worker_cut(self.conf[lo], dd) if heavy is not None else None,
            qkey=self.ctx.qkey((self.table.sha256, k), row["quality"]),
            row=k,
            r=r,
            d=dd,
            plan_qps=qps,
            label=f"{names[lo]}->{names[hi]} r={r:g} d={dd:g}",
        )


def make_authors_policy(
    name: str,
    ctx: Context,
    *,
    clock: float | None = None,
    pair: tuple[str, str] | None = None,
) -> Policy:
    """Build one of :data:`AUTHORS_POLICIES` on ``ctx``."""
    M = len(ctx.models)
    if name == "clipper-light-fit":
        return ClipperFit(ctx, name, clock, 0)
    if name == "clipper-heavy-fit":
        return ClipperFit(ctx, name, clock, M - 1)
    if name == "infaas-acc":
        return InfaasAcc(ctx, name, clock)
    if name == "proteus-milp":
        return ProteusMilp(ctx, name, clock)
    if M < 2 or ctx.gpus < 2:
        raise HadisError(f"Policy '{name}' runs a two-model cascade: it needs 2 models and 2 GPUs.")
    if name == "diffserve-fixed":
        if pair is None:  # the authors' (sd35turbo, sd35large): 2nd cheapest -> most expensive
            lo, hi = (1 if M > 2 else 0), M - 1
        else:
            idx = ctx.index
            missing = [m for m in pair if m not in idx]
            if missing:
                raise HadisError(f"The pair names model '{missing[0]}', which is not in the table.")
            lo, hi = idx[pair[0]], idx[pair[1]]
            if lo >= hi:
                raise HadisError(f"The pair {pair[0]},{pair[1]}: the light model must be cheaper.")
        return DiffServeFixed(ctx, name, clock, (lo, hi))
    if name == "hadis-milp":
        return HadisMilp(ctx, name, clock, ctx.table)
    raise HadisError(f"Unknown policy '{name}': choose from {', '.join(AUTHORS_POLICIES)}.")
