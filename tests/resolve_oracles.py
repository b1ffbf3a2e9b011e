"""A HiGHS MILP oracle for ``hadis_profile.resolve`` (the brute force is in the package).

The brute-force statement of the rules is :mod:`hadis_profile.resolve_reference`;
this module solves the same problem (its :class:`~hadis_profile.resolve_reference.Problem`)
as a mixed-integer program with scipy's HiGHS, a second truth that shares only
the parsed problem with the reference and no code with the resolver.

The benchmark imports this module too (``benchmarks/bench_resolve.py``).
"""

from __future__ import annotations

import time

from hadis_profile.resolve_reference import GPU_REL_TOL, LATENCY_TOL_S, Problem, stage


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
    stage_s = [stage(prob, lat) for _, _, lat in yx]
    a_max = max((max(r.a_light, r.a_direct, r.a_esc) for r in rows), default=0.0)
    big = 2 * max(stage_s, default=0.0) + a_max + 1.0
    t_slo = prob.slo + LATENCY_TOL_S

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
                demand[iz + row.index] = -prob.qps * prob.headroom * f * (1 - GPU_REL_TOL)
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
