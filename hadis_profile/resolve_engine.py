"""The resolver's compiled form of a table and the exact search over it (numpy only).

:class:`hadis_profile.resolve.Resolver` owns the objects built here and caches
them; every function in this module is pure (it builds new arrays and never
writes into arrays it was given), so a cached object is never modified after
it is created and concurrent calls from threads are safe. The rules themselves
are stated in :mod:`hadis_profile.resolve` and, as a brute-force enumeration,
in :mod:`hadis_profile.resolve_reference`.

How a call stays at ~100 µs on 1,000 rows: rows are sorted best quality first
and scanned in two blocks (the top ~64 rows, then the rest); the search stops at
the first quality level with a feasible row. Per row it needs only ``O(K)`` work
for ``K`` batch sizes: the heavy batch sizes that fit after a given light one are
a prefix of that model's latency order, and since ``ceil(kp * x)`` is monotone, the
fewest heavy GPUs over that prefix is ``ceil(kp * m)`` of a running minimum ``m``
of the per-GPU cost precomputed per batch restriction. The winning level is then
resolved exactly over all ``rows x (b_light, b_heavy)`` pairs.

Layout: per-row arrays are stored transposed, ``[K, rows]``, because numpy reduces
and combines fast across a long contiguous axis and slowly along a short one
(a min over axis 1 of a [1000, 6] array costs ~13x a min over axis 0 of [6, 1000]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np

from hadis_profile.table_schema import FRACTION_EPS

FIRST_BLOCK = 64
"""Rows (rounded up to whole quality levels) in the first scan block."""

_FRACTIONS = ("direct", "escalated", "light", "load_light", "load_heavy")

EXACT_CHUNK_CELLS = 2**20
"""Bound on ``rows x K x K`` resolved exactly at once (a long quality level goes in chunks)."""


# ------------------------------------------------------------------ compiled form


@dataclass(frozen=True)
class RowInfo:
    """What a plan reports of a table row, copied at compile time."""

    kind: str
    light: str
    heavy: str | None
    r: float
    d: float
    router_threshold: float | None
    confidence_threshold: float | None
    fractions: tuple[tuple[str, float], ...]
    quality: float | None


@dataclass(frozen=True)
class Compiled:
    """A table flattened into arrays, rows sorted best quality first."""

    sha256: str
    metric: str
    models: tuple[str, ...]
    rows: tuple[RowInfo, ...]  # by original row index
    batch: np.ndarray  # [K] union of usable batch sizes, ascending
    base_lat: np.ndarray  # [M+1, K]; row M is the "no model" dummy (zeros)
    order: np.ndarray  # [N] original row index at each sorted position
    level_end: np.ndarray  # [N] exclusive end of the position's quality level
    lsel: np.ndarray  # [N] light model index, M when light carries no load
    hsel: np.ndarray  # [N] heavy model index, M when heavy is absent or unused
    fl: np.ndarray  # [N]
    fh: np.ndarray  # [N]
    flags: np.ndarray  # [N, 3] bool: light path, direct path, escalated path
    ocls: np.ndarray  # [N] overhead class: 0 single, else 1 + (r > 0) + 2 (d > 0)
    overhead_s: dict[str, float | None]  # the overheads in force (Plan.overhead_s)
    bounds: tuple[int, ...]  # block boundaries in sorted positions
    pat_idx: np.ndarray  # [N] latency pattern = (lsel, hsel, flags, path constants)
    pat_l_flat: np.ndarray  # [U, K] flat index of the pattern's light stage latencies
    pat_h_flat: np.ndarray  # [U, K] same for the heavy stage
    pat_light: np.ndarray  # [U] bool
    pat_direct: np.ndarray  # [U] bool
    pat_direct_off: np.ndarray  # [U, 1] -overhead with a direct path, else inf
    pat_light_off: np.ndarray  # [U, 1] -overhead with a light-only path, else inf
    pat_esc_off: np.ndarray  # [U, 1] -overhead of the escalated path
    pat_add: tuple[np.ndarray, np.ndarray, np.ndarray]  # path overheads, [U, 1], [U, 1], [U, 1, 1]
    pat_no_esc: np.ndarray  # [U, K] bool: no escalated path

    @property
    def n(self) -> int:
        return len(self.order)

    @property
    def nbytes(self) -> int:
        """Bytes of the pattern arrays (what an ``overhead_s`` variant adds to its base)."""
        pats = (self.pat_idx, self.pat_l_flat, self.pat_h_flat, self.pat_no_esc)
        return sum(a.nbytes for a in pats)


@dataclass(frozen=True)
class Block:
    """A contiguous run of sorted rows [a, b) (a union of whole quality levels)."""

    a: int
    b: int
    cl: np.ndarray  # [K, nb] f_light * lat / b (0: light unused, inf: point unusable)
    # [K+1, nb] running minimum of f_heavy * lat / b over the heavy model's batch sizes in
    # latency order, after a leading inf ("no heavy batch size fits"). ceil(kp * x) is
    # monotone, so the fewest heavy GPUs among the j fastest batch sizes is ceil(kp * pm[j]).
    pm: np.ndarray
    pat_flat: np.ndarray  # [K, nb] index into Call.scaled: (slot * K + k) * U + pattern
    col: np.ndarray  # [nb] arange


@dataclass(frozen=True)
class Derived:
    """Arrays for one batch-size restriction (``lat`` is inf where not allowed)."""

    lat: np.ndarray  # [M+1, K] p99 seconds; row M is the "no model" dummy (zeros)
    sizes: np.ndarray  # [slots, 1] row count of each block, then of ``whole``
    rows_coef: np.ndarray  # [N, 2K] light then heavy coefficients, row-major (exact step)
    blocks: tuple[Block, ...]
    whole: Block  # all rows, for the fallback's max-throughput pass
    any_usable: bool

    @property
    def nbytes(self) -> int:
        arrays = [self.lat, self.rows_coef]
        for blk in (*self.blocks, self.whole):
            arrays += [blk.cl, blk.pm, blk.pat_flat]
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True)
class Stage:
    """Per (restriction, queue delay): stage latencies and every pair's worst case."""

    s: np.ndarray  # [(M+1) * K] stage latency (batch + queueing), flat; dummy row 0
    sl: np.ndarray  # [U, K] light stage latency per pattern
    sh: np.ndarray  # [U, K] heavy stage latency per pattern
    worst: np.ndarray  # [U, K, K] worst-case latency of each (b_light, b_heavy) pair

    @property
    def nbytes(self) -> int:
        return self.s.nbytes + self.sl.nbytes + self.sh.nbytes + self.worst.nbytes


@dataclass(frozen=True)
class Call:
    """Per (restriction, queue delay, SLO): which batch pairs fit, for the search steps."""

    stage: Stage
    scaled: np.ndarray  # [slots * K * U] SLO-fitting heavy batch sizes * block row count
    fits: np.ndarray  # [U, K, K] bool: the (b_l, b_h) pair meets the SLO

    @property
    def nbytes(self) -> int:
        return self.scaled.nbytes + self.fits.nbytes


# ------------------------------------------------------------------------ compile


def _usable_points(spec: dict) -> dict[int, float]:
    """batch size -> p99 seconds for the points a plan may use (the loader checked types)."""
    max_batch = spec["max_batch"]
    out: dict[int, float] = {}
    for point in spec["latency"].values():
        b, p99 = int(point["batch_size"]), point["p99_s"]
        if point["infeasible"] or p99 is None or (max_batch is not None and b > max_batch):
            continue
        out[b] = float(p99)
    return out


def _row_info(row: dict, metric: str) -> RowInfo:
    fr = row["fractions"]
    q = row["quality"][metric]
    return RowInfo(
        kind=row["kind"],
        light=row["light"],
        heavy=row["heavy"],
        r=row["r"],
        d=row["d"],
        router_threshold=row["router_threshold"],
        confidence_threshold=row["confidence_threshold"],
        fractions=tuple((k, fr[k]) for k in _FRACTIONS),
        quality=None if q is None else float(q),
    )


def compile_document(doc: dict) -> Compiled:
    """Flatten a table document verified by the loader into arrays (once per table).

    Relies on what :func:`hadis_profile.table.check_document` guarantees: every
    field has its schema type, rows name profiled models, a model carries load
    exactly when a path through it occurs, the quality metric has a direction.
    """
    payload = doc["payload"]
    prov = payload["provenance"]
    metric = prov["quality_metric"]
    hib = prov["metrics"][metric]["higher_is_better"]
    rows = payload["rows"]
    names: list[str] = []
    index: dict[str, int] = {}
    for row in rows:
        for name in (row["light"], row["heavy"]):
            if name is not None and name not in index:
                index[name] = len(names)
                names.append(name)
    points = {name: _usable_points(payload["models"][name]) for name in names}
    batch = np.array(sorted({b for p in points.values() for b in p}), dtype=np.int64)
    m, k, n = len(names), len(batch), len(rows)
    col = {int(b): j for j, b in enumerate(batch)}
    base_lat = np.full((m + 1, k), np.inf)
    base_lat[m] = 0.0
    for i, name in enumerate(names):
        for b, p99 in points[name].items():
            base_lat[i, col[b]] = p99

    lsel = np.empty(n, dtype=np.int64)
    hsel = np.empty(n, dtype=np.int64)
    fl = np.empty(n)
    fh = np.empty(n)
    flags = np.zeros((n, 3), dtype=bool)
    ocls = np.zeros(n, dtype=np.int64)
    qkey = np.zeros(n)
    missing = np.zeros(n, dtype=bool)
    infos = []
    for i, row in enumerate(rows):
        fr = {key: row["fractions"][key] for key in _FRACTIONS}
        fr = {key: (v if v > FRACTION_EPS else 0.0) for key, v in fr.items()}
        cascade = row["heavy"] is not None
        f_l = float(fr["load_light"])
        f_h = float(fr["load_heavy"]) if cascade else 0.0
        lsel[i] = index[row["light"]] if f_l > 0 else m
        hsel[i] = index[row["heavy"]] if f_h > 0 else m
        fl[i], fh[i] = f_l, f_h
        flags[i] = (fr["light"] > 0, cascade and fr["direct"] > 0, cascade and fr["escalated"] > 0)
        if cascade:
            ocls[i] = 1 + (row["r"] > 0) + 2 * (row["d"] > 0)
        info = _row_info(row, metric)
        infos.append(info)
        if info.quality is not None:
            qkey[i] = -info.quality if hib else info.quality
        else:
            missing[i] = True

    order = np.lexsort((np.arange(n), qkey, missing))
    sq, sm = qkey[order], missing[order]
    new_level = np.ones(n, dtype=bool)
    new_level[1:] = (sq[1:] != sq[:-1]) | (sm[1:] != sm[:-1])
    starts = np.flatnonzero(new_level)
    level_end = np.append(starts[1:], n)[np.cumsum(new_level) - 1]

    lsel, hsel, fl, fh, flags = lsel[order], hsel[order], fl[order], fh[order], flags[order]
    ocls = ocls[order]
    o_r, o_d = _table_overheads(payload)
    first = int(level_end[min(FIRST_BLOCK, n) - 1])
    return Compiled(
        sha256=doc["sha256"],
        metric=metric,
        models=tuple(names),
        rows=tuple(infos),
        batch=batch,
        base_lat=base_lat,
        order=order,
        level_end=level_end,
        lsel=lsel,
        hsel=hsel,
        fl=fl,
        fh=fh,
        flags=flags,
        ocls=ocls,
        overhead_s={"router": o_r, "discriminator": o_d, "override": None},
        bounds=(0, first, n) if first < n else (0, n),
        **_patterns(lsel, hsel, flags, ocls, _class_overheads(o_r, o_d, None), m, k),
    )


def _table_overheads(payload: dict) -> tuple[float, float]:
    """(router s/query, discriminator s/image) recorded in the table; 0 when absent.

    The router's is ``payload.router.overhead_s_per_query``, else the same key of the
    full spec in ``provenance.router`` (``pareto`` keeps only the scoring weights in
    ``payload.router``); the discriminator's is
    ``provenance.run.scorer_overhead_s_per_image[provenance.discriminator.scorer_id]``.
    The loader checked that each is a number >= 0 or null.
    """
    prov = payload["provenance"]
    o_r = None
    for spec in (payload["router"], prov["router"]):
        if spec is not None and spec.get("overhead_s_per_query") is not None:
            o_r = float(spec["overhead_s_per_query"])
            break
    disc, run = prov["discriminator"] or {}, prov.get("run") or {}
    per_image = run.get("scorer_overhead_s_per_image") or {}
    o_d = per_image.get(disc.get("scorer_id"))
    return o_r or 0.0, float(o_d or 0.0)


def _class_overheads(o_r: float, o_d: float, override: float | None) -> np.ndarray:
    """[5, 3] overhead (light-only, direct, escalated path) of each overhead class."""
    if override is not None:
        return np.array([[0.0] * 3] + [[override] * 3] * 4)
    o_rd = o_r + o_d
    return np.array([[0.0] * 3, [0.0] * 3, [o_r] * 3, [o_d, 0.0, o_d], [o_rd, o_r, o_rd]])


def _patterns(lsel, hsel, flags, ocls, const: np.ndarray, m: int, k: int) -> dict[str, Any]:
    """Latency patterns: rows with the same models, paths and path overheads share one."""
    uconst, inv = np.unique(const, axis=0, return_inverse=True)
    ne = len(uconst)
    pat_keys = ((lsel * (m + 1) + hsel) * 8 + flags @ np.array([1, 2, 4])) * ne
    pat_keys += inv.reshape(-1)[ocls]
    uniq, pat_idx = np.unique(pat_keys, return_inverse=True)
    a_l, a_d, a_e = uconst[uniq % ne].T
    uniq = uniq // ne
    bits = uniq % 8
    light, direct = (bits & 1) > 0, (bits & 2) > 0
    return dict(
        pat_idx=pat_idx.reshape(-1).astype(np.int64),
        pat_l_flat=(uniq // (8 * (m + 1)))[:, None] * k + np.arange(k),
        pat_h_flat=((uniq // 8) % (m + 1))[:, None] * k + np.arange(k),
        pat_light=light,
        pat_direct=direct,
        pat_direct_off=np.where(direct, -a_d, np.inf)[:, None],
        pat_light_off=np.where(light, -a_l, np.inf)[:, None],
        pat_esc_off=-a_e[:, None],
        pat_add=(a_l[:, None], a_d[:, None], a_e[:, None, None]),
        pat_no_esc=np.repeat(((bits & 4) == 0)[:, None], k, axis=1),
    )


def with_override(c: Compiled, overhead_s: float) -> Compiled:
    """``c`` with one per-query overhead on every path of cascade rows."""
    m, k = len(c.models), len(c.batch)
    pats = _patterns(c.lsel, c.hsel, c.flags, c.ocls, _class_overheads(0, 0, overhead_s), m, k)
    return replace(
        c, overhead_s={"router": None, "discriminator": None, "override": overhead_s}, **pats
    )


def _block(c: Compiled, cl: np.ndarray, pm: np.ndarray, a: int, b: int, slot: int) -> Block:
    k, u = len(c.batch), len(c.pat_light)
    return Block(
        a,
        b,
        np.ascontiguousarray(cl[:, a:b]),
        np.ascontiguousarray(pm[:, a:b]),
        (slot * k + np.arange(k))[:, None] * u + c.pat_idx[a:b],
        np.arange(b - a),
    )


def derive(c: Compiled, allowed: tuple[int, ...] | None) -> Derived:
    """Arrays for a batch-size restriction (``None``: every usable batch size)."""
    lat = c.base_lat.copy()
    if allowed is not None:
        lat[:-1, ~np.isin(c.batch, allowed)] = np.inf
    k = len(c.batch)
    horder = np.argsort(lat, axis=1, kind="stable")  # same order for lat + q and 2 lat
    per_b = lat / c.batch if k else lat  # inf stays inf; the dummy row stays 0
    cl_rows = c.fl[:, None] * per_b[c.lsel]  # f = 0 only with the dummy row: never 0 * inf
    ch_rows = c.fh[:, None] * per_b[c.hsel]
    pm = np.empty((k + 1, c.n))
    pm[0] = np.inf
    pm[1:] = np.minimum.accumulate(np.take_along_axis(ch_rows, horder[c.hsel], axis=1), axis=1).T
    cl = cl_rows.T
    return Derived(
        lat=lat,
        sizes=np.array([*np.diff(c.bounds), c.n])[:, None],
        rows_coef=np.hstack([cl_rows, ch_rows]),
        blocks=tuple(
            _block(c, cl, pm, a, b, slot) for slot, (a, b) in enumerate(pairwise(c.bounds))
        ),
        whole=_block(c, cl, pm, 0, c.n, len(c.bounds) - 1),
        any_usable=bool(np.isfinite(lat[:-1]).any()),
    )


# ------------------------------------------------------------------------ search


def stage(c: Compiled, d: Derived, queue_delay_s: float | None) -> Stage:
    """Stage latencies (batch + queueing) and the worst case of every pattern and pair."""
    s = d.lat + (d.lat if queue_delay_s is None else queue_delay_s)
    s[-1] = 0.0
    s = s.ravel()
    sl = s[c.pat_l_flat]
    sh = s[c.pat_h_flat]
    a_l, a_d, a_e = c.pat_add
    worst = np.maximum(
        np.where(c.pat_light[:, None], sl + a_l, 0.0)[:, :, None],
        np.where(c.pat_direct[:, None], sh + a_d, 0.0)[:, None, :],
    )
    esc = np.where(~c.pat_no_esc[:, :, None], sl[:, :, None] + sh[:, None, :] + a_e, 0.0)
    np.maximum(worst, esc, out=worst)
    return Stage(s, sl, sh, worst)


def prepare(c: Compiled, d: Derived, st: Stage, t: float) -> Call:
    """Per latency pattern, which batch pairs fit the SLO ``t`` (slack included)."""
    sl, sh = st.sl, st.sh
    lim = (t + c.pat_esc_off) - sl  # the latest heavy stage that may follow each light one
    lim[c.pat_no_esc] = np.inf
    np.minimum(lim, t + c.pat_direct_off, out=lim)
    lim[sl > t + c.pat_light_off] = -np.inf  # the light stage alone breaks the SLO
    fits = sh[:, None, :] <= lim[:, :, None]
    cnt = fits @ np.ones(fits.shape[2], dtype=np.int64)  # order-free: same as a sorted prefix
    return Call(st, (cnt.T.ravel() * d.sizes).ravel(), fits)


def _scan(blk: Block, call: Call, kp: float) -> np.ndarray:
    """Fewest GPUs per row of a block over SLO-feasible batch pairs (inf: none fits)."""
    idx = call.scaled[blk.pat_flat]
    idx += blk.col
    nh = blk.pm.ravel()[idx]
    nh *= kp
    np.ceil(nh, out=nh)
    nl = blk.cl * kp
    np.ceil(nl, out=nl)
    nl += nh
    return nl.min(axis=0)


def _exact(c: Compiled, d: Derived, call: Call, kp: float, budget: int, pos: np.ndarray):
    """Lexicographic best (GPUs, latency, row, b_l, b_h) among rows at sorted ``pos``.

    ``pos`` ascends and a level is sorted by row index, so the flat [row, b_l, b_h]
    order is the tie-break order and argmin's first hit is the winner. Long levels go
    in chunks of ``EXACT_CHUNK_CELLS / K**2`` rows (a later chunk wins only when
    strictly better).
    """
    step = max(1, EXACT_CHUNK_CELLS // max(1, len(c.batch)) ** 2)
    best, best_key = None, None
    for start in range(0, len(pos), step):
        res = _exact_chunk(c, d, call, kp, budget, pos[start : start + step])
        if res is not None and (best_key is None or (res[3] + res[4], res[5]) < best_key):
            best, best_key = res, (res[3] + res[4], res[5])
    return best


def _exact_chunk(c: Compiled, d: Derived, call: Call, kp: float, budget: int, pos: np.ndarray):
    k = len(c.batch)
    n = d.rows_coef[pos] * kp
    np.ceil(n, out=n)
    pat = c.pat_idx[pos]
    tot = np.where(call.fits[pat], n[:, :k, None] + n[:, None, k:], np.inf)
    g = tot.min()
    if not g <= budget:
        return None
    w = np.where(tot == g, call.stage.worst[pat], np.inf)
    flat = int(w.argmin())
    i, rest = divmod(flat, k * k)
    jl, jh = divmod(rest, k)
    return int(pos[i]), jl, jh, int(n[i, jl]), int(n[i, k + jh]), float(w.flat[flat])


def search(c: Compiled, d: Derived, call: Call, kp: float, budget: int):
    """First quality level with a feasible row, resolved exactly; else (None, min GPUs).

    ``kp`` is the offered load times headroom (times ``1 - GPU_REL_TOL``); a result is
    ``(sorted position, light batch index, heavy batch index, light GPUs, heavy GPUs,
    worst-case latency)``.
    """
    need = math.inf
    for blk in d.blocks:
        rowmin = _scan(blk, call, kp)
        ok = rowmin <= budget
        j = int(ok.argmax())
        while ok[j]:
            end = int(c.level_end[blk.a + j]) - blk.a
            res = _exact(c, d, call, kp, budget, blk.a + j + np.flatnonzero(ok[j:end]))
            if res is not None:
                return res, need
            if end >= len(ok):
                break
            j = end + int(ok[end:].argmax())
        need = min(need, float(rowmin.min()))
    return None, need


def max_sustainable(d: Derived, call: Call, g: int, h: float) -> float:
    """Highest offered qps any row/batch pair sustains on ``g`` GPUs within the call's SLO.

    Per pair the best integer split of ``g`` GPUs maximises ``min(n a, (g - n) b)`` (a, b:
    qps per GPU), attained at floor or ceil of ``g b / (a + b)``. That value grows with
    ``b``, so per light batch size only the heavy batch size with the most qps per GPU
    among those that fit the SLO counts (the block's running minimum ``pm``).
    """
    w = d.whole
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = 1.0 / (h * w.cl)  # qps per GPU; inf: model unused; 0: unusable point
        # the fastest-per-GPU heavy batch size that fits (0 when none does)
        b = 1.0 / (h * w.pm.ravel()[call.scaled[w.pat_flat] + w.col])
        single = np.where(np.isinf(a), g * b, g * a)
        q = np.zeros_like(a)
        if g >= 2:
            x = np.floor(g * b / (a + b))
            for n1 in (np.clip(x, 1, g - 1), np.clip(x + 1, 1, g - 1)):
                np.maximum(q, np.minimum(n1 * a, (g - n1) * b), out=q)
        q = np.where(np.isfinite(a) & np.isfinite(b), q, single)
        q = np.where(np.isfinite(q) & (q > 0), q, 0.0)
    return float(q.max()) if q.size else 0.0


def fastest(st: Stage) -> float:
    """Lowest worst-case latency any row/batch pair achieves (GPUs ignored)."""
    return float(st.worst.min()) if st.worst.size else math.inf
