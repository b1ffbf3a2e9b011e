"""Independent references for ``hadis_profile.resolve``: brute force and a HiGHS MILP.

Both read the table document themselves (plain Python, no shared code with the
resolver) and implement the model the resolver documents: p99 batch latency,
throughput ``b / p99``, minimal integer GPUs with a relative 1e-12 slack, stage
latency ``lat + queue`` (queue = lat unless given), path-aware worst case with a
1 ns slack plus each path's routing overhead (router s/query on every path of a
cascade row with r > 0, discriminator s/image on its light-only and escalated paths
when d > 0; or one ``overhead_s`` override on every cascade path), fractions
<= 1e-12 treated as zero, lexicographic objective (quality, GPUs, latency, row,
light batch, heavy batch).

The benchmark imports this module too (``benchmarks/bench_resolve.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from hadis_profile import metrics

EPS_F = 1e-12
TOL_LAT = 1e-9
TOL_GPU = 1e-12


@dataclass
class Row:
    index: int
    light: str
    heavy: str | None
    f_light: float  # 0 when light carries no load
    f_heavy: float
    p_light: bool
    p_direct: bool
    p_esc: bool
    qkey: tuple[int, float]  # (missing, oriented quality): smaller is better
    a_light: float = 0.0  # routing overhead added to the light-only path
    a_direct: float = 0.0  # ... to the direct (heavy-only) path
    a_esc: float = 0.0  # ... to the escalated path


@dataclass
class Problem:
    rows: list[Row]
    points: dict[str, dict[int, float]]  # model -> batch -> p99 (usable, allowed)
    qps: float
    slo: float
    budget: int
    headroom: float
    queue: float | None


def parse(
    doc: dict,
    *,
    qps: float,
    slo_s: float,
    gpus: int,
    reserved_gpus: int = 0,
    headroom: float = 1.05,
    batch_sizes=None,
    queue_delay_s: float | None = None,
    overhead_s: float | None = None,
) -> Problem:
    payload = doc["payload"]
    metric = payload["provenance"]["quality_metric"]
    hib = metrics.higher_is_better(metric)
    points: dict[str, dict[int, float]] = {}
    for name, spec in payload["models"].items():
        pts = {}
        for key, p in spec["latency"].items():
            b = int(p.get("batch_size", key))
            p99 = p.get("p99_s")
            if p.get("infeasible") or p99 is None or not (p99 > 0) or not math.isfinite(p99):
                continue
            if spec.get("max_batch") is not None and b > spec["max_batch"]:
                continue
            if batch_sizes is not None and b not in batch_sizes:
                continue
            pts[b] = float(p99)
        points[name] = pts
    prov = payload["provenance"]
    o_r = 0.0
    for spec in (payload.get("router"), prov.get("router")):
        if spec and spec.get("overhead_s_per_query") is not None:
            o_r = float(spec["overhead_s_per_query"])
            break
    o_d = 0.0
    disc, run = prov.get("discriminator") or {}, prov.get("run") or {}
    per_image = run.get("scorer_overhead_s_per_image") or {}
    if per_image.get(disc.get("scorer_id")) is not None:
        o_d = float(per_image[disc["scorer_id"]])
    rows = []
    for i, row in enumerate(payload["rows"]):
        fr = {k: (v if v > EPS_F else 0.0) for k, v in row["fractions"].items()}
        cascade = row["heavy"] is not None
        q = row["quality"].get(metric)
        qkey = (1, 0.0) if q is None else (0, -q if hib else q)
        if not cascade:
            a_l = a_d = a_e = 0.0
        elif overhead_s is not None:
            a_l = a_d = a_e = float(overhead_s)
        else:
            router = o_r if row["r"] > 0 else 0.0
            a_d = router
            a_l = a_e = router + (o_d if row["d"] > 0 else 0.0)
        rows.append(
            Row(
                index=i,
                light=row["light"],
                heavy=row["heavy"],
                f_light=fr["load_light"],
                f_heavy=fr["load_heavy"] if cascade else 0.0,
                p_light=fr["light"] > 0,
                p_direct=cascade and fr["direct"] > 0,
                p_esc=cascade and fr["escalated"] > 0,
                qkey=qkey,
                a_light=a_l,
                a_direct=a_d,
                a_esc=a_e,
            )
        )
    return Problem(rows, points, qps, slo_s, gpus - reserved_gpus, headroom, queue_delay_s)


def _gpus(qps: float, f: float, headroom: float, b: int, lat: float) -> int:
    return math.ceil(qps * f * headroom / (b / lat) * (1 - TOL_GPU))


def _stage(prob: Problem, lat: float) -> float:
    return lat + (lat if prob.queue is None else prob.queue)


def _options(prob: Problem, model: str | None, f: float):
    if model is None or f == 0:
        return [None]
    return sorted(prob.points[model].items())


def _worst(row: Row, sl: float, sh: float) -> float:
    paths = []
    if row.p_light:
        paths.append(sl + row.a_light)
    if row.p_direct:
        paths.append(sh + row.a_direct)
    if row.p_esc:
        paths.append(sl + sh + row.a_esc)
    return max(paths, default=0.0)


def brute_force(prob: Problem, slo: float | None = "same"):
    """Best plan as a dict, or None; ``slo=None`` ignores the SLO."""
    slo = prob.slo if slo == "same" else slo
    best = None
    for row in prob.rows:
        for ol in _options(prob, row.light, row.f_light):
            for oh in _options(prob, row.heavy, row.f_heavy):
                nl = _gpus(prob.qps, row.f_light, prob.headroom, *ol) if ol else 0
                nh = _gpus(prob.qps, row.f_heavy, prob.headroom, *oh) if oh else 0
                if nl + nh > prob.budget:
                    continue
                sl = _stage(prob, ol[1]) if ol else 0.0
                sh = _stage(prob, oh[1]) if oh else 0.0
                worst = _worst(row, sl, sh)
                if slo is not None and worst > slo + TOL_LAT:
                    continue
                key = (*row.qkey, nl + nh, worst, row.index, ol[0] if ol else 0, oh[0] if oh else 0)
                if best is None or key < best[0]:
                    best = (
                        key,
                        dict(
                            row=row.index,
                            qkey=row.qkey,
                            gpus=nl + nh,
                            latency=worst,
                            gpus_light=nl,
                            gpus_heavy=nh,
                            batch_light=ol[0] if ol else None,
                            batch_heavy=oh[0] if oh else None,
                        ),
                    )
    return None if best is None else best[1]


def min_gpus(prob: Problem) -> int | None:
    """Fewest GPUs any row/batch pair needs for the load within the SLO (budget ignored)."""
    best = None
    for row in prob.rows:
        for ol in _options(prob, row.light, row.f_light):
            for oh in _options(prob, row.heavy, row.f_heavy):
                sl = _stage(prob, ol[1]) if ol else 0.0
                sh = _stage(prob, oh[1]) if oh else 0.0
                if _worst(row, sl, sh) > prob.slo + TOL_LAT:
                    continue
                n = (_gpus(prob.qps, row.f_light, prob.headroom, *ol) if ol else 0) + (
                    _gpus(prob.qps, row.f_heavy, prob.headroom, *oh) if oh else 0
                )
                best = n if best is None else min(best, n)
    return best


def meets_slo_somewhere(prob: Problem) -> bool:
    """Whether any row/batch pair meets the SLO when GPUs are unlimited."""
    for row in prob.rows:
        for ol in _options(prob, row.light, row.f_light):
            for oh in _options(prob, row.heavy, row.f_heavy):
                sl = _stage(prob, ol[1]) if ol else 0.0
                sh = _stage(prob, oh[1]) if oh else 0.0
                if _worst(row, sl, sh) <= prob.slo + TOL_LAT:
                    return True
    return False


def brute_max_sustainable(prob: Problem, slo: float | None) -> float:
    """Highest offered qps any row/batch pair/GPU split sustains (``slo=None``: no SLO)."""
    g = prob.budget
    best = 0.0
    for row in prob.rows:
        for ol in _options(prob, row.light, row.f_light):
            for oh in _options(prob, row.heavy, row.f_heavy):
                sl = _stage(prob, ol[1]) if ol else 0.0
                sh = _stage(prob, oh[1]) if oh else 0.0
                if slo is not None and _worst(row, sl, sh) > slo + TOL_LAT:
                    continue
                rate_l = ol[0] / ol[1] / (row.f_light * prob.headroom) if ol else None
                rate_h = oh[0] / oh[1] / (row.f_heavy * prob.headroom) if oh else None
                if rate_l is not None and rate_h is not None:
                    for n in range(1, g):
                        best = max(best, min(n * rate_l, (g - n) * rate_h))
                else:
                    best = max(best, g * (rate_l if rate_l is not None else rate_h))
    return best


def milp_solve(prob: Problem, *, stages: int = 4):
    """Lexicographic optimum by staged HiGHS MILPs (scipy.optimize.milp).

    Variables: z_r (row chosen), y_{m,b} (model m runs batch b), x_{m,b} (GPUs,
    integer, <= G y_{m,b}), W (worst-case latency, stage 3). Stages: min quality
    key; fix the level, min sum x; fix it, min W; fix it, min row index.
    Returns dict(qkey, gpus, latency, row, seconds) or None when infeasible.
    """
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    t0 = time.perf_counter()
    rows = prob.rows
    n_rows = len(rows)
    yx = [(m, b, lat) for m, pts in prob.points.items() for b, lat in sorted(pts.items())]
    ny = len(yx)
    iz, iy, ix, iw = 0, n_rows, n_rows + ny, n_rows + 2 * ny
    nv = iw + 1
    g = prob.budget
    by_model: dict[str, list[int]] = {}
    for j, (m, _, _) in enumerate(yx):
        by_model.setdefault(m, []).append(j)
    stage_s = [_stage(prob, lat) for _, _, lat in yx]
    a_max = max((max(r.a_light, r.a_direct, r.a_esc) for r in rows), default=0.0)
    big = 2 * max(stage_s, default=0.0) + a_max + 1.0
    t_slo = prob.slo + TOL_LAT

    data, ri, ci, lo, hi = [], [], [], [], []
    nc = 0

    def add(coefs: dict[int, float], lb: float, ub: float) -> None:
        nonlocal nc
        for c, v in coefs.items():
            data.append(v)
            ri.append(nc)
            ci.append(c)
        lo.append(lb)
        hi.append(ub)
        nc += 1

    add({iz + r: 1.0 for r in range(n_rows)}, 1, 1)
    add({ix + j: 1.0 for j in range(ny)}, -np.inf, g)
    for m, js in by_model.items():
        add({iy + j: 1.0 for j in js}, -np.inf, 1)
        demand = {}
        for row in rows:
            f = (row.f_light if row.light == m else 0.0) + (row.f_heavy if row.heavy == m else 0.0)
            if f > 0:
                demand[iz + row.index] = -prob.qps * prob.headroom * f * (1 - TOL_GPU)
        add({**{ix + j: yx[j][1] / yx[j][2] for j in js}, **demand}, 0, np.inf)
    for j in range(ny):
        add({ix + j: 1.0, iy + j: -float(g)}, -np.inf, 0)

    def lat_terms(models: list[str]) -> dict[int, float]:
        out: dict[int, float] = {}
        for m in models:
            for j in by_model.get(m, []):
                out[iy + j] = stage_s[j]
        return out

    w_rows = []
    for row in rows:
        used = [m for m, f in ((row.light, row.f_light), (row.heavy, row.f_heavy)) if m and f > 0]
        for m in used:  # a used model must pick a batch size (none usable: row impossible)
            add({**{iy + j: 1.0 for j in by_model.get(m, [])}, iz + row.index: -1.0}, 0, np.inf)
        paths = []
        if row.p_light:
            paths.append(([row.light], row.a_light))
        if row.p_direct:
            paths.append(([row.heavy], row.a_direct))
        if row.p_esc:
            paths.append(([row.light, row.heavy], row.a_esc))
        for p, a in paths:  # the path's constant overhead moves to the right-hand side
            terms = lat_terms(p)
            add({**terms, iz + row.index: big}, -np.inf, t_slo - a + big)
            w_rows.append((terms, row.index, a))

    integrality = np.zeros(nv)
    integrality[:iw] = 1
    lb = np.zeros(nv)
    ub = np.concatenate([np.ones(n_rows + ny), np.full(ny, float(g)), [np.inf]])

    def solve(c, extra=()):
        a = coo_array((data, (ri, ci)), shape=(nc, nv)).tocsr()
        cons = [LinearConstraint(a, lo, hi), *extra]
        return milp(
            c,
            integrality=integrality,
            bounds=Bounds(lb, ub),
            constraints=cons,
            options={"mip_rel_gap": 0.0},
        )

    known = [r.qkey[1] for r in rows if r.qkey[0] == 0]
    worst_known = max(known, default=0.0) + abs(max(known, default=0.0)) + 1.0
    c1 = np.zeros(nv)
    for r in rows:
        c1[iz + r.index] = r.qkey[1] if r.qkey[0] == 0 else worst_known
    res = solve(c1)
    if res.status != 0:
        return None
    chosen = rows[int(np.argmax(res.x[iz : iz + n_rows]))]
    for r in rows:
        if r.qkey != chosen.qkey:
            ub[iz + r.index] = 0.0
    out = dict(qkey=chosen.qkey, row=chosen.index)
    if stages >= 2:
        c2 = np.zeros(nv)
        c2[ix : ix + ny] = 1.0
        res = solve(c2)
        out["gpus"] = round(res.fun)
        out["row"] = int(np.argmax(res.x[iz : iz + n_rows]))
        add({ix + j: 1.0 for j in range(ny)}, -np.inf, out["gpus"])
    if stages >= 3:
        for terms, r, a in w_rows:  # W >= path latency + a when row r is chosen
            add({iw: 1.0, **{k: -v for k, v in terms.items()}, iz + r: -big}, a - big, np.inf)
        c3 = np.zeros(nv)
        c3[iw] = 1.0
        res = solve(c3)
        out["latency"] = float(res.fun)
        out["row"] = int(np.argmax(res.x[iz : iz + n_rows]))
    if stages >= 4:
        ub[iw] = out["latency"] + 1e-7
        c4 = np.zeros(nv)
        c4[iz : iz + n_rows] = np.arange(n_rows)
        res = solve(c4)
        out["row"] = round(res.fun)
    out["seconds"] = time.perf_counter() - t0
    return out
