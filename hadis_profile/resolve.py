"""Resolve a serving plan from a cascade table: what serving stacks import.

Given a request (load, SLO, GPU budget) :func:`resolve` picks one table row (a
model or a light/heavy cascade with its router and discriminator thresholds),
one profiled batch size per model and an integer GPU count per model. It solves
HADIS's allocation MILP exactly, without a MILP solver:

* **Batch latency** ``lat_m(b)`` is the profile's ``p99_s`` (conservative: the
  plan must hold for slow batches too); throughput ``thr_m(b) = b / lat_m(b)``
  queries/s per GPU. Only points that are not ``infeasible``, have a positive
  finite ``p99_s`` and ``b <= max_batch`` (when given) are usable, optionally
  restricted to ``batch_sizes``.
* **GPUs**: ``n_m`` is the smallest integer with ``n_m * thr_m(b_m) >= qps * f_m *
  headroom`` (a relative ``1e-12`` slack absorbs float rounding); a model with
  load fraction ``f_m = 0`` gets 0 GPUs and imposes no latency.
  ``sum n_m <= gpus - reserved_gpus``.
* **Latency** (Clipper/DiffServe-style worst case): a query can arrive just after
  a batch started, so each stage costs ``lat_m + q_m`` with ``q_m = queue_delay_s``
  if given, else ``lat_m``. Worst case = max over the paths that occur
  (``fractions.light > 0``: light stage; ``direct > 0``: heavy stage;
  ``escalated > 0``: light + heavy stages) and must be ``<= slo_s`` (1 ns slack).
  Fractions at or below ``1e-12`` count as zero (float residue of ``1 - x - y``).
* **Routing overheads** are constants added to a path's latency. The router's
  ``o_r`` (``table.router.overhead_s_per_query``, else that key of
  ``provenance.router``; 0 when absent) is paid on every path of a cascade row
  with ``r > 0`` (it runs before any generation); the discriminator's ``o_d``
  (``provenance.run.scorer_overhead_s_per_image[provenance.discriminator.scorer_id]``,
  0 when absent) on the light-only and escalated paths of a cascade row with
  ``d > 0``. Single-model rows pay neither. ``resolve(..., overhead_s=x)`` replaces
  both with ``x`` seconds on every path of every cascade row. ``Plan.overhead_s``
  reports what was used; ``worst_case_latency_s`` includes it.
* **Objective**, lexicographic: best quality on the table's quality metric
  (direction from :mod:`hadis_profile.metrics`; rows without a value rank last),
  then fewest GPUs, then lowest worst-case latency, then lowest row index, then
  smallest light batch size, then smallest heavy batch size.

Speed: the table is compiled once into numpy arrays (cached on the
``CascadeTable`` object, or per document dict) with rows sorted best quality
first. A call scans the rows in two blocks (the top ~64 rows, then the rest) and
stops at the first quality level with a feasible row; per row it needs only
``O(K)`` work for ``K`` batch sizes: the heavy batch sizes that fit after a given
light one are a prefix of that model's latency order, and since ``ceil(kp * x)``
is monotone, the fewest heavy GPUs over that prefix is ``ceil(kp * m)`` of a
running minimum ``m`` of the per-GPU cost precomputed at compile time. The
winning level is then resolved exactly over all ``rows x (b_light, b_heavy)``
pairs. What depends only on (batch restriction, queue delay, SLO) is cached too,
so repeated SLOs cost nothing extra. The overheads are folded into per-pattern path
constants at compile time (an ``overhead_s`` override gets its own cached copy of the
pattern arrays, keyed by its value). Caches only ever hold complete arrays that
are never written after creation, so concurrent calls from threads are safe.

If no plan meets the request, the returned plan is infeasible, says why in one
sentence and carries a ``fallback``: the plan that sustains the highest load
within the GPU budget. The fallback ignores the requested ``qps`` (it serves as
much as it can, shedding the rest) and keeps the SLO when any configuration can
meet it; only when none can does it also ignore the SLO. ``Plan.relaxed`` names
what was ignored. Among plans with that highest load it follows the same
lexicographic objective (quality, GPUs, latency, row, batch sizes).

Imports: numpy and :mod:`hadis_profile.table` only (no scipy, torch, pandas).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np

from hadis_profile import metrics
from hadis_profile.errors import HadisError
from hadis_profile.table import CascadeTable, load_table

__all__ = [
    "FRACTION_EPS",
    "GPU_REL_TOL",
    "LATENCY_TOL_S",
    "ModelAllocation",
    "Plan",
    "load_table",
    "resolve",
]

FRACTION_EPS = 1e-12
"""Load/path fractions at or below this are zero (float residue, not traffic)."""
LATENCY_TOL_S = 1e-9
"""Slack on the SLO comparison, so float rounding never flips a tight plan."""
GPU_REL_TOL = 1e-12
"""Relative slack on GPU demand: ``n = ceil(demand / thr * (1 - GPU_REL_TOL))``."""

_FIRST_BLOCK = 64
_NO_SLO = 1e300  # "no SLO" stays finite so t - latency never becomes inf - inf
_CACHE_ATTR = "_hadis_resolve_compiled"
# document dicts by id; the entry holds the dict itself, so the id stays unique
_DOC_CACHE: dict[int, tuple[dict, _Compiled]] = {}
_DOC_CACHE_MAX = 16
_DERIVED_MAX = 32
_CALLS_MAX = 256
_VARIANTS_MAX = 16


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ModelAllocation:
    """One model's share of a plan; a model with no load has 0 GPUs and no batch size."""

    model: str
    role: str
    load_fraction: float
    offered_qps: float
    gpus: int
    batch_size: int | None
    batch_latency_s: float | None
    queue_delay_s: float | None
    throughput_qps: float

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "role": self.role,
            "load_fraction": self.load_fraction,
            "offered_qps": self.offered_qps,
            "gpus": self.gpus,
            "batch_size": self.batch_size,
            "batch_latency_s": self.batch_latency_s,
            "queue_delay_s": self.queue_delay_s,
            "throughput_qps": self.throughput_qps,
        }


@dataclass(frozen=True)
class Plan:
    """A resolved serving plan (or why there is none, with a fallback).

    ``row`` indexes ``table.rows``. ``qps`` is the load the plan is sized for (the
    request, or for a fallback the highest sustainable load). ``slo_s`` is the SLO
    it honours (``None`` when a fallback dropped it). ``relaxed`` names request
    fields a fallback ignores. ``overhead_s`` holds the routing overheads in force:
    ``router`` (s/query) and ``discriminator`` (s/image) read from the table, or
    ``override``, the ``overhead_s`` argument (the other two are then ``None``);
    ``worst_case_latency_s`` includes what the chosen row pays of them.
    """

    feasible: bool
    reason: str | None
    qps: float
    slo_s: float | None
    gpu_budget: int
    reserved_gpus: int
    headroom: float
    quality_metric: str
    row: int | None = None
    kind: str | None = None
    light: str | None = None
    heavy: str | None = None
    r: float | None = None
    d: float | None = None
    router_threshold: float | None = None
    confidence_threshold: float | None = None
    fractions: dict[str, float] | None = field(default=None, hash=False)
    allocations: tuple[ModelAllocation, ...] = ()
    total_gpus: int = 0
    quality: float | None = None
    worst_case_latency_s: float | None = None
    relaxed: tuple[str, ...] = ()
    fallback: Plan | None = None
    table_sha256: str | None = None
    overhead_s: dict[str, float | None] | None = field(default=None, hash=False)

    @property
    def pair(self) -> tuple[str | None, str | None]:
        return (self.light, self.heavy)

    def allocation(self, model: str) -> ModelAllocation:
        for a in self.allocations:
            if a.model == model:
                return a
        raise KeyError(model)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (no NaN or infinity)."""
        return {
            "feasible": self.feasible,
            "reason": self.reason,
            "qps": self.qps,
            "slo_s": self.slo_s,
            "gpu_budget": self.gpu_budget,
            "reserved_gpus": self.reserved_gpus,
            "headroom": self.headroom,
            "row": self.row,
            "kind": self.kind,
            "light": self.light,
            "heavy": self.heavy,
            "r": self.r,
            "d": self.d,
            "router_threshold": self.router_threshold,
            "confidence_threshold": self.confidence_threshold,
            "fractions": dict(self.fractions) if self.fractions is not None else None,
            "allocations": [a.to_dict() for a in self.allocations],
            "total_gpus": self.total_gpus,
            "quality_metric": self.quality_metric,
            "quality": self.quality,
            "worst_case_latency_s": self.worst_case_latency_s,
            "relaxed": list(self.relaxed),
            "fallback": self.fallback.to_dict() if self.fallback is not None else None,
            "table_sha256": self.table_sha256,
            "overhead_s": dict(self.overhead_s) if self.overhead_s is not None else None,
        }


# ------------------------------------------------------------------ compilation
#
# Layout: per-row arrays are stored transposed, [K, rows], because numpy reduces
# and combines fast across a long contiguous axis and slowly along a short one
# (a min over axis 1 of a [1000, 6] array costs ~13x a min over axis 0 of [6, 1000]).


@dataclass
class _Block:
    """A contiguous run of sorted rows [a, b) (a union of whole quality levels)."""

    a: int
    b: int
    cl: np.ndarray  # [K, nb] f_light * lat / b (0: light unused, inf: point unusable)
    # [K+1, nb] running minimum of f_heavy * lat / b over the heavy model's batch sizes in
    # latency order, after a leading inf ("no heavy batch size fits"). ceil(kp * x) is
    # monotone, so the fewest heavy GPUs among the j fastest batch sizes is ceil(kp * pm[j]).
    pm: np.ndarray
    pat_flat: np.ndarray  # [K, nb] index into _Call.scaled: (slot * K + k) * U + pattern
    col: np.ndarray  # [nb] arange


@dataclass
class _Derived:
    """Arrays for one batch-size restriction (``lat`` is inf where not allowed)."""

    lat: np.ndarray  # [M+1, K] p99 seconds; row M is the "no model" dummy (zeros)
    sizes: np.ndarray  # [slots, 1] row count of each block, then of ``whole``
    rows_coef: np.ndarray  # [N, 2K] light then heavy coefficients, row-major (exact step)
    blocks: tuple[_Block, ...]
    whole: _Block  # all rows, for the fallback's max-throughput pass
    any_usable: bool
    calls: dict[tuple[float | None, float], _Call] = field(default_factory=dict)
    worst: dict[float | None, np.ndarray] = field(default_factory=dict)


@dataclass
class _Compiled:
    """A table flattened into arrays, rows sorted best quality first."""

    document: dict
    sha256: str
    metric: str
    models: tuple[str, ...]
    batch: np.ndarray  # [K] union of usable batch sizes, ascending
    base_lat: np.ndarray  # [M+1, K]
    order: np.ndarray  # [N] original row index at each sorted position
    level_end: np.ndarray  # [N] exclusive end of the position's quality level
    lsel: np.ndarray  # [N] light model index, M when light carries no load
    hsel: np.ndarray  # [N] heavy model index, M when heavy is absent or unused
    fl: np.ndarray  # [N]
    fh: np.ndarray  # [N]
    flags: np.ndarray  # [N, 3] bool: light path, direct path, escalated path
    ocls: np.ndarray  # [N] overhead class: 0 single, else 1 + (r > 0) + 2 (d > 0)
    overhead_s: dict[str, float | None]  # the overheads in force (Plan.overhead_s)
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
    bounds: tuple[int, ...]  # block boundaries in sorted positions
    derived: dict[tuple[int, ...] | None, _Derived] = field(default_factory=dict)
    variants: dict[float, _Compiled] = field(default_factory=dict)  # per overhead_s override

    @property
    def n(self) -> int:
        return len(self.order)


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HadisError(f"The table's {what} is {value!r}, expected a number.")
    v = float(value)
    if not math.isfinite(v):
        raise HadisError(f"The table's {what} is {v}, expected a finite number.")
    return v


def _usable_points(name: str, spec: dict) -> dict[int, float]:
    """batch size -> p99 seconds for the points a plan may use."""
    max_batch = spec.get("max_batch")
    out: dict[int, float] = {}
    for key, point in (spec.get("latency") or {}).items():
        if not isinstance(point, dict) or point.get("infeasible"):
            continue
        b = point.get("batch_size", key)
        try:
            b = int(b)
        except (TypeError, ValueError):
            raise HadisError(f"Model '{name}' has a latency point with batch size {b!r}.") from None
        p99 = point.get("p99_s")
        if b < 1 or isinstance(p99, bool) or not isinstance(p99, numbers.Real):
            continue
        p99 = float(p99)
        if not (math.isfinite(p99) and p99 > 0):
            continue
        if max_batch is not None and b > max_batch:
            continue
        out[b] = p99
    return out


def _direction(table_doc: dict, metric: str) -> bool:
    try:
        return metrics.higher_is_better(metric)
    except HadisError:
        spec = table_doc["payload"]["provenance"].get("metrics", {}).get(metric)
        if isinstance(spec, dict) and isinstance(spec.get("higher_is_better"), bool):
            return spec["higher_is_better"]
        raise


def _compile(doc: dict) -> _Compiled:
    """Flatten a verified table document into arrays (once per table)."""
    payload = doc["payload"]
    metric = payload["provenance"]["quality_metric"]
    hib = _direction(doc, metric)
    rows = payload["rows"]
    if not rows:
        raise HadisError("The table has no rows to resolve a plan from.")
    names: list[str] = []
    index: dict[str, int] = {}
    for row in rows:
        for name in (row["light"], row["heavy"]):
            if name is not None and name not in index:
                index[name] = len(names)
                names.append(name)
    points = {name: _usable_points(name, payload["models"][name]) for name in names}
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
    for i, row in enumerate(rows):
        fr = row["fractions"]
        vals = {}
        for key in ("direct", "escalated", "light", "load_light", "load_heavy"):
            v = _num(fr[key], f"row {i} fractions.{key}")
            if v < 0:
                raise HadisError(f"The table's row {i} has a negative fractions.{key} ({v}).")
            vals[key] = v if v > FRACTION_EPS else 0.0
        cascade = row["heavy"] is not None
        if cascade and row["heavy"] == row["light"]:
            raise HadisError(f"The table's row {i} uses model '{row['light']}' as light and heavy.")
        p_light = vals["light"] > 0
        p_direct = cascade and vals["direct"] > 0
        p_esc = cascade and vals["escalated"] > 0
        f_l = vals["load_light"]
        f_h = vals["load_heavy"] if cascade else 0.0
        if (f_l > 0) != (p_light or p_esc) or (f_h > 0) != (p_direct or p_esc):
            raise HadisError(
                f"The table's row {i} has inconsistent fractions: a model carries load "
                "exactly when a path through it occurs."
            )
        if f_l == 0 and f_h == 0:
            raise HadisError(f"The table's row {i} sends no load to any model.")
        lsel[i] = index[row["light"]] if f_l > 0 else m
        hsel[i] = index[row["heavy"]] if f_h > 0 else m
        fl[i], fh[i] = f_l, f_h
        flags[i] = (p_light, p_direct, p_esc)
        if cascade:
            r_pos = _num(row["r"], f"row {i} r") > 0
            ocls[i] = 1 + r_pos + 2 * (_num(row["d"], f"row {i} d") > 0)
        q = (row.get("quality") or {}).get(metric)
        if isinstance(q, numbers.Real) and not isinstance(q, bool) and math.isfinite(q):
            qkey[i] = -float(q) if hib else float(q)
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
    first = int(level_end[min(_FIRST_BLOCK, n) - 1])
    return _Compiled(
        document=doc,
        sha256=doc["sha256"],
        metric=metric,
        models=tuple(names),
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
    """
    prov = payload["provenance"]
    o_r = None
    for spec in (payload.get("router"), prov.get("router")):
        if isinstance(spec, dict) and spec.get("overhead_s_per_query") is not None:
            o_r = _num(spec["overhead_s_per_query"], "router overhead_s_per_query")
            break
    o_d = None
    disc, run = prov.get("discriminator"), prov.get("run")
    if isinstance(disc, dict) and isinstance(run, dict):
        per_image, sid = run.get("scorer_overhead_s_per_image"), disc.get("scorer_id")
        if isinstance(per_image, dict) and isinstance(sid, str) and per_image.get(sid) is not None:
            o_d = _num(per_image[sid], f"scorer_overhead_s_per_image of '{sid}'")
    for v, what in ((o_r, "router overhead_s_per_query"), (o_d, "discriminator overhead")):
        if v is not None and v < 0:
            raise HadisError(f"The table's {what} is {v:g}, expected a number >= 0.")
    return o_r or 0.0, o_d or 0.0


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


def _with_override(c: _Compiled, overhead_s: float) -> _Compiled:
    """``c`` with one per-query overhead on every path of cascade rows (cached per value)."""
    v = c.variants.get(overhead_s)
    if v is not None:
        return v
    m, k = len(c.models), len(c.batch)
    pats = _patterns(c.lsel, c.hsel, c.flags, c.ocls, _class_overheads(0, 0, overhead_s), m, k)
    v = replace(
        c,
        overhead_s={"router": None, "discriminator": None, "override": overhead_s},
        derived={},
        variants={},
        **pats,
    )
    if len(c.variants) >= _VARIANTS_MAX:
        c.variants.clear()
    c.variants[overhead_s] = v
    return v


def _block(c: _Compiled, cl: np.ndarray, pm: np.ndarray, a: int, b: int, slot: int) -> _Block:
    k, u = len(c.batch), len(c.pat_light)
    return _Block(
        a,
        b,
        np.ascontiguousarray(cl[:, a:b]),
        np.ascontiguousarray(pm[:, a:b]),
        (slot * k + np.arange(k))[:, None] * u + c.pat_idx[a:b],
        np.arange(b - a),
    )


def _derive(c: _Compiled, allowed: tuple[int, ...] | None) -> _Derived:
    """Arrays for a batch-size restriction, cached per restriction."""
    d = c.derived.get(allowed)
    if d is not None:
        return d
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
    d = _Derived(
        lat=lat,
        sizes=np.array([*np.diff(c.bounds), c.n])[:, None],
        rows_coef=np.hstack([cl_rows, ch_rows]),
        blocks=tuple(
            _block(c, cl, pm, a, b, slot) for slot, (a, b) in enumerate(pairwise(c.bounds))
        ),
        whole=_block(c, cl, pm, 0, c.n, len(c.bounds) - 1),
        any_usable=bool(np.isfinite(lat[:-1]).any()),
    )
    if len(c.derived) >= _DERIVED_MAX:
        c.derived.clear()
    c.derived[allowed] = d
    return d


def _compiled(table: CascadeTable | dict) -> _Compiled:
    """The cached compilation of a table (compiled on first use)."""
    if isinstance(table, CascadeTable) and hasattr(table, "__dict__"):
        c = table.__dict__.get(_CACHE_ATTR)
        if c is None or c.document is not table.document or c.sha256 != table.sha256:
            c = _compile(table.document)
            table.__dict__[_CACHE_ATTR] = c
        return c
    if isinstance(table, CascadeTable):  # no instance dict to cache on (slots)
        table = table.document
    if isinstance(table, dict):
        hit = _DOC_CACHE.get(id(table))
        if hit is not None and hit[0] is table and hit[1].sha256 == table.get("sha256"):
            return hit[1]
        CascadeTable.from_document(table)  # verify format and hash once
        c = _compile(table)
        if len(_DOC_CACHE) >= _DOC_CACHE_MAX:
            _DOC_CACHE.clear()
        _DOC_CACHE[id(table)] = (table, c)
        return c
    raise HadisError(
        f"resolve() needs a CascadeTable or a table document dict, not {type(table).__name__}."
    )


# ------------------------------------------------------------------------ search


@dataclass
class _Call:
    """Per (restriction, queue delay, SLO) state shared by the search steps; cached."""

    s: np.ndarray  # [(M+1) * K] stage latency (batch + queueing), flat; dummy row 0
    scaled: np.ndarray  # [slots * K * U] SLO-fitting heavy batch sizes * block row count
    fits: np.ndarray  # [U, K, K] bool: the (b_l, b_h) pair meets the SLO
    worst: np.ndarray  # [U, K, K] worst-case latency of each pair


def _prepare(c: _Compiled, d: _Derived, queue_delay_s: float | None, t: float) -> _Call:
    """Stage latencies and, per latency pattern, which batch pairs fit the SLO."""
    key = (queue_delay_s, t)
    call = d.calls.get(key)
    if call is not None:
        return call
    s = d.lat + (d.lat if queue_delay_s is None else queue_delay_s)
    s[-1] = 0.0
    s = s.ravel()
    sl = s[c.pat_l_flat]
    sh = s[c.pat_h_flat]
    lim = (t + c.pat_esc_off) - sl  # the latest heavy stage that may follow each light one
    lim[c.pat_no_esc] = np.inf
    np.minimum(lim, t + c.pat_direct_off, out=lim)
    lim[sl > t + c.pat_light_off] = -np.inf  # the light stage alone breaks the SLO
    fits = sh[:, None, :] <= lim[:, :, None]
    cnt = fits @ np.ones(fits.shape[2], dtype=np.int64)  # order-free: same as a sorted prefix
    worst = d.worst.get(queue_delay_s)
    if worst is None:
        a_l, a_d, a_e = c.pat_add
        worst = np.maximum(
            np.where(c.pat_light[:, None], sl + a_l, 0.0)[:, :, None],
            np.where(c.pat_direct[:, None], sh + a_d, 0.0)[:, None, :],
        )
        esc = np.where(~c.pat_no_esc[:, :, None], sl[:, :, None] + sh[:, None, :] + a_e, 0.0)
        np.maximum(worst, esc, out=worst)
        d.worst[queue_delay_s] = worst
    call = _Call(s, (cnt.T.ravel() * d.sizes).ravel(), fits, worst)
    if len(d.calls) >= _CALLS_MAX:
        d.calls.clear()
        d.worst.clear()
    d.calls[key] = call
    return call


def _scan(blk: _Block, call: _Call, kp: float) -> np.ndarray:
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


def _exact(c: _Compiled, d: _Derived, call: _Call, kp: float, budget: int, pos: np.ndarray):
    """Lexicographic best (GPUs, latency, row, b_l, b_h) among rows at sorted ``pos``.

    ``pos`` ascends and a level is sorted by row index, so the flat [row, b_l, b_h]
    order is the tie-break order and argmin's first hit is the winner.
    """
    k = len(c.batch)
    n = d.rows_coef[pos] * kp
    np.ceil(n, out=n)
    pat = c.pat_idx[pos]
    tot = np.where(call.fits[pat], n[:, :k, None] + n[:, None, k:], np.inf)
    g = tot.min()
    if not g <= budget:
        return None
    w = np.where(tot == g, call.worst[pat], np.inf)
    flat = int(w.argmin())
    i, rest = divmod(flat, k * k)
    jl, jh = divmod(rest, k)
    return int(pos[i]), jl, jh, int(n[i, jl]), int(n[i, k + jh]), float(w.flat[flat])


def _search(c: _Compiled, d: _Derived, call: _Call, kp: float, budget: int):
    """First quality level with a feasible row, resolved exactly; else (None, min GPUs)."""
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


def _max_sustainable(d: _Derived, call: _Call, g: int, h: float) -> float:
    """Highest offered qps any row/batch pair sustains on ``g`` GPUs within the call's SLO.

    Per pair the best integer split of ``g`` GPUs maximises ``min(n a, (g - n) b)`` (a, b:
    qps per GPU), attained at floor or ceil of ``g b / (a + b)``. That value grows with
    ``b``, so per light batch size only the heavy batch size with the most qps per GPU
    among those that fit the SLO counts (the block's running minimum ``pm``).
    """
    w = d.whole
    with np.errstate(divide="ignore", invalid="ignore"):
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


def _fastest(call: _Call) -> float:
    """Lowest worst-case latency any row/batch pair achieves (GPUs ignored)."""
    return float(call.worst.min()) if call.worst.size else math.inf


# ----------------------------------------------------------------------- request


def _check_real(value: Any, name: str, *, positive: bool = True, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HadisError(f"{name} must be a number, not {value!r}.")
    v = float(value)
    if not math.isfinite(v):
        raise HadisError(f"{name} must be a finite number, not {v}.")
    if positive and v <= 0:
        raise HadisError(f"{name} must be positive, not {v:g}.")
    if v < minimum:
        raise HadisError(f"{name} must be at least {minimum:g}, not {v:g}.")
    return v


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise HadisError(f"{name} must be a whole number, not {value!r}.")
    if value < minimum:
        raise HadisError(f"{name} must be at least {minimum}, not {value}.")
    return int(value)


def _allowed(c: _Compiled, batch_sizes: Any) -> tuple[int, ...] | None:
    if batch_sizes is None:
        return None
    if isinstance(batch_sizes, (str, bytes)) or not hasattr(batch_sizes, "__iter__"):
        raise HadisError(f"batch_sizes must be a list of whole numbers, not {batch_sizes!r}.")
    sizes = sorted({_check_int(b, "Every batch size", 1) for b in batch_sizes})
    if not sizes:
        raise HadisError("batch_sizes is empty; give at least one batch size or None for all.")
    known = {int(b) for b in c.batch}
    unknown = [b for b in sizes if b not in known]
    if unknown:
        listed = ", ".join(str(b) for b in sorted(known)) or "none"
        raise HadisError(
            f"Batch size {unknown[0]} is not profiled (feasibly) for any model the table's "
            f"rows use (profiled: {listed})."
        )
    return tuple(sizes)


def _make_plan(c, d, res, *, qps, slo, budget, reserved, headroom, queue_delay, relaxed=()):
    pos, jl, jh, nl, nh, worst = res
    row_i = int(c.order[pos])
    row = c.document["payload"]["rows"][row_i]
    fr = row["fractions"]
    m = len(c.models)
    allocs = []
    for role, name, sel, f, j, n in (
        ("light", row["light"], c.lsel[pos], c.fl[pos], jl, nl),
        ("heavy", row["heavy"], c.hsel[pos], c.fh[pos], jh, nh),
    ):
        if name is None:
            continue
        if sel == m:  # carries no load: no GPUs, no batch
            allocs.append(ModelAllocation(name, role, 0.0, 0.0, 0, None, None, None, 0.0))
            continue
        lat = float(d.lat[sel, j])
        b = int(c.batch[j])
        allocs.append(
            ModelAllocation(
                model=name,
                role=role,
                load_fraction=float(f),
                offered_qps=qps * float(f),
                gpus=n,
                batch_size=b,
                batch_latency_s=lat,
                queue_delay_s=lat if queue_delay is None else queue_delay,
                throughput_qps=n * b / lat,
            )
        )
    q = (row.get("quality") or {}).get(c.metric)
    valid_q = isinstance(q, numbers.Real) and not isinstance(q, bool) and math.isfinite(q)
    return Plan(
        feasible=True,
        reason=None,
        qps=qps,
        slo_s=slo,
        gpu_budget=budget,
        reserved_gpus=reserved,
        headroom=headroom,
        quality_metric=c.metric,
        row=row_i,
        kind=row["kind"],
        light=row["light"],
        heavy=row["heavy"],
        r=row["r"],
        d=row["d"],
        router_threshold=row["router_threshold"],
        confidence_threshold=row["confidence_threshold"],
        fractions={k: fr[k] for k in ("direct", "escalated", "light", "load_light", "load_heavy")},
        allocations=tuple(allocs),
        total_gpus=nl + nh,
        quality=float(q) if valid_q else None,
        worst_case_latency_s=worst,
        relaxed=relaxed,
        table_sha256=c.sha256,
        overhead_s=c.overhead_s,
    )


def resolve(
    table: CascadeTable | dict,
    *,
    qps: float,
    slo_s: float,
    gpus: int,
    reserved_gpus: int = 0,
    headroom: float = 1.05,
    batch_sizes: list[int] | tuple[int, ...] | None = None,
    queue_delay_s: float | None = None,
    overhead_s: float | None = None,
) -> Plan:
    """The best plan for ``qps`` queries/s within ``slo_s`` s on ``gpus - reserved_gpus`` GPUs.

    ``overhead_s=None`` budgets the router and discriminator overheads the table
    records; a number replaces both with that many seconds per query on every path
    of every cascade row (single-model rows pay nothing either way).

    Exact for the model in the module docstring. Bad input raises
    :class:`~hadis_profile.errors.HadisError`; an unmeetable request returns a plan
    with ``feasible=False``, a one-sentence ``reason`` and a ``fallback``.
    """
    qps = _check_real(qps, "qps")
    slo_s = _check_real(slo_s, "slo_s")
    gpus = _check_int(gpus, "gpus", 1)
    reserved_gpus = _check_int(reserved_gpus, "reserved_gpus", 0)
    if reserved_gpus >= gpus:
        raise HadisError(
            f"reserved_gpus ({reserved_gpus}) must be smaller than gpus ({gpus}) "
            "so at least one GPU is left to serve."
        )
    headroom = _check_real(headroom, "headroom", minimum=1.0)
    if queue_delay_s is not None:
        queue_delay_s = _check_real(queue_delay_s, "queue_delay_s", positive=False)
    c = _compiled(table)
    if overhead_s is not None:
        c = _with_override(c, _check_real(overhead_s, "overhead_s", positive=False))
    d = _derive(c, _allowed(c, batch_sizes))
    budget = gpus - reserved_gpus
    common = dict(
        budget=budget, reserved=reserved_gpus, headroom=headroom, queue_delay=queue_delay_s
    )
    if not d.any_usable:
        return _infeasible(
            c, qps, slo_s, common, "No model has a usable profiled latency at these batch sizes."
        )
    call = _prepare(c, d, queue_delay_s, slo_s + LATENCY_TOL_S)
    res, need = _search(c, d, call, qps * headroom * (1.0 - GPU_REL_TOL), budget)
    if res is not None:
        return _make_plan(c, d, res, qps=qps, slo=slo_s, **common)

    if math.isfinite(need):
        reason = (
            f"Serving {qps:g} qps within the {slo_s:g} s SLO needs at least {int(need)} GPUs, "
            f"but only {budget} are available ({gpus} minus {reserved_gpus} reserved)."
        )
        fb_slo, relaxed = slo_s, ("qps",)
    else:
        fastest = _fastest(call)
        if math.isfinite(fastest):
            reason = (
                f"The {slo_s:g} s SLO is below every configuration's worst-case latency "
                f"(batch latency plus queueing per stage{_extra(c)}); the fastest needs "
                f"{fastest:.4g} s."
            )
        else:
            reason = "No table row has usable profiled latencies at the allowed batch sizes."
        fb_slo, relaxed = None, ("qps", "slo_s")
        call = _prepare(c, d, queue_delay_s, _NO_SLO)
    fallback = None
    q_max = _max_sustainable(d, call, budget, headroom)
    if q_max > 0:
        fb, _ = _search(c, d, call, q_max * headroom * (1.0 - GPU_REL_TOL), budget)
        if fb is not None:
            fallback = _make_plan(c, d, fb, qps=q_max, slo=fb_slo, relaxed=relaxed, **common)
    return _infeasible(c, qps, slo_s, common, reason, fallback)


def _extra(c: _Compiled) -> str:
    return ", plus routing overheads" if any(c.overhead_s.values()) else ""


def _infeasible(c: _Compiled, qps, slo_s, common: dict, reason: str, fallback=None) -> Plan:
    return Plan(
        feasible=False,
        reason=reason,
        qps=qps,
        slo_s=slo_s,
        gpu_budget=common["budget"],
        reserved_gpus=common["reserved"],
        headroom=common["headroom"],
        quality_metric=c.metric,
        fallback=fallback,
        table_sha256=c.sha256,
        overhead_s=c.overhead_s,
    )
