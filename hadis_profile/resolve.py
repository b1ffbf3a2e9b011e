"""Resolve a serving plan from a cascade table: what serving stacks import.

Given a request (load, SLO, GPU budget) :meth:`Resolver.resolve` picks one table row (a
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
  (direction from ``provenance.metrics``, which the loader holds to
  :mod:`hadis_profile.metrics` for known scorers; rows without a value rank last),
  then fewest GPUs, then lowest worst-case latency, then lowest row index, then
  smallest light batch size, then smallest heavy batch size.

Speed: :class:`Resolver` compiles a table once into numpy arrays (rows sorted best
quality first; see :mod:`hadis_profile.resolve_engine` for how a call stays at
~100 µs on 1,000 rows) and keeps, bounded, what depends only on the batch
restriction, the queue delay, the SLO or an ``overhead_s`` override, so repeated
values cost nothing extra. Build one per table and call :meth:`Resolver.resolve`
per request; :func:`resolve` does the same through a small cache of resolvers keyed
by the table's sha256. The same rules, stated as a slow brute-force enumeration,
are :mod:`hadis_profile.resolve_reference`; the tests compare the two.

If no plan meets the request, the returned plan is infeasible, says why in one
sentence and carries a ``fallback``: the plan that sustains the highest load
within the GPU budget. The fallback ignores the requested ``qps`` (it serves as
much as it can, shedding the rest) and keeps the SLO when any configuration can
meet it; only when none can does it also ignore the SLO. ``Plan.relaxed`` names
what was ignored. Among plans with that highest load it follows the same
lexicographic objective (quality, GPUs, latency, row, batch sizes).

Bad input is refused before any work, in one sentence: a table by the one strict
loader of :mod:`hadis_profile.table` (also for a document dict passed here), an
argument by :mod:`hadis_profile.resolve_request` (a
:class:`~hadis_profile.errors.ParameterError` naming it). An infeasible request is
not an error: it is a plan with ``feasible=False``.

Imports: numpy, :mod:`hadis_profile.table` and its stdlib-only helpers (no scipy,
torch, pandas, jsonschema).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hadis_profile import resolve_engine as engine
from hadis_profile.errors import ParameterError
from hadis_profile.resolve_engine import Compiled, Derived
from hadis_profile.resolve_request import (
    MAX_GPUS,
    MAX_HEADROOM,
    MAX_QPS,
    MAX_SECONDS,
    check_request,
)
from hadis_profile.table import CascadeTable, check_document, load_table
from hadis_profile.table_schema import FRACTION_EPS

__all__ = [
    "CACHE_BYTES",
    "FRACTION_EPS",
    "GPU_REL_TOL",
    "LATENCY_TOL_S",
    "MAX_GPUS",
    "MAX_HEADROOM",
    "MAX_QPS",
    "MAX_SECONDS",
    "ModelAllocation",
    "Plan",
    "Resolver",
    "load_table",
    "resolve",
]

LATENCY_TOL_S = 1e-9
"""Slack on the SLO comparison, so float rounding never flips a tight plan."""
GPU_REL_TOL = 1e-12
"""Relative slack on GPU demand: ``n = ceil(demand / thr * (1 - GPU_REL_TOL))``."""
CACHE_BYTES = 256 * 2**20
"""Most bytes one :class:`Resolver` keeps in per-request caches (it clears them beyond)."""
WRAPPER_RESOLVERS = 8
"""Resolvers :func:`resolve` keeps, least recently used first out, keyed by table sha256."""

_NO_SLO = 1e300  # "no SLO" stays finite so t - latency never becomes inf - inf
_DERIVED_MAX = 32  # batch restrictions (x overrides) kept per resolver
_STAGES_MAX = 64  # queue delays (x restrictions x overrides)
_CALLS_MAX = 256  # SLOs (x queue delays x restrictions x overrides)
_VARIANTS_MAX = 16  # overhead_s overrides


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


# ----------------------------------------------------------------------- resolver


class _Cache:
    """One bounded store of a resolver (count-bounded; bytes counted for the shared budget)."""

    __slots__ = ("items", "limit", "nbytes")

    def __init__(self, limit: int) -> None:
        self.items: dict[Any, Any] = {}
        self.nbytes = 0
        self.limit = limit

    def clear(self) -> None:
        self.items = {}
        self.nbytes = 0


class Resolver:
    """A table compiled for resolving: build once per table, then :meth:`resolve` per request.

    ``table`` is a :class:`~hadis_profile.table.CascadeTable` (verified when it was
    made) or a table document dict (verified here by the same loader checks). The
    compiled arrays copy what plans report, so later changes to the document do
    not reach this object. Per-request intermediate arrays are cached here, at most
    :data:`CACHE_BYTES` in all; concurrent calls from threads are safe (cached
    objects are complete before they are stored and never written afterwards).
    """

    def __init__(self, table: CascadeTable | dict) -> None:
        verified = _verified(table)
        try:
            self._base: Compiled = engine.compile_document(verified.document)
        except (ArithmeticError, AttributeError, KeyError, IndexError, TypeError, ValueError):
            # the document was changed after it was verified: say what is wrong with it now
            check_document(verified.document, verified.source)
            raise
        self._lock = threading.Lock()
        self._variants = _Cache(_VARIANTS_MAX)
        self._derived = _Cache(_DERIVED_MAX)
        self._stages = _Cache(_STAGES_MAX)
        self._calls = _Cache(_CALLS_MAX)

    @property
    def sha256(self) -> str:
        """The sha256 of the table's payload (``Plan.table_sha256``)."""
        return self._base.sha256

    @property
    def quality_metric(self) -> str:
        return self._base.metric

    @property
    def models(self) -> tuple[str, ...]:
        """The models the table's rows use, in order of first use."""
        return self._base.models

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Every batch size some used model can run (what ``batch_sizes`` may name)."""
        return tuple(int(b) for b in self._base.batch)

    def __repr__(self) -> str:
        return (
            f"Resolver(sha256={self.sha256[:12]!r}, rows={self._base.n}, "
            f"models={len(self.models)}, batch_sizes={self.batch_sizes})"
        )

    def resolve(
        self,
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

        Exact for the model in the module docstring. A bad argument raises
        :class:`~hadis_profile.errors.ParameterError` naming it (limits:
        :mod:`hadis_profile.resolve_request`); an unmeetable request is not an error
        but a plan with ``feasible=False``, a one-sentence ``reason`` and a ``fallback``.
        """
        req = check_request(
            qps=qps,
            slo_s=slo_s,
            gpus=gpus,
            reserved_gpus=reserved_gpus,
            headroom=headroom,
            batch_sizes=batch_sizes,
            queue_delay_s=queue_delay_s,
            overhead_s=overhead_s,
        )
        qps, slo_s, gpus, reserved_gpus = req.qps, req.slo_s, req.gpus, req.reserved_gpus
        headroom, queue_delay_s, overhead_s = req.headroom, req.queue_delay_s, req.overhead_s
        c = self._compiled(overhead_s)
        allowed = _allowed(c, req.batch_sizes)
        key = (overhead_s, allowed)
        d = self._get(self._derived, key, lambda: engine.derive(c, allowed))
        budget = gpus - reserved_gpus
        common = dict(
            budget=budget, reserved=reserved_gpus, headroom=headroom, queue_delay=queue_delay_s
        )
        if not d.any_usable:
            return _infeasible(
                c,
                qps,
                slo_s,
                common,
                "No model has a usable profiled latency at these batch sizes.",
            )
        call = self._call(c, d, key, queue_delay_s, slo_s + LATENCY_TOL_S)
        res, need = engine.search(c, d, call, qps * headroom * (1.0 - GPU_REL_TOL), budget)
        if res is not None:
            return _make_plan(c, d, res, qps=qps, slo=slo_s, **common)

        if math.isfinite(need):
            reason = (
                f"Serving {qps:g} qps within the {slo_s:g} s SLO needs at least {int(need)} GPUs, "
                f"but only {budget} are available ({gpus} minus {reserved_gpus} reserved)."
            )
            fb_slo, relaxed = slo_s, ("qps",)
        else:
            fastest = engine.fastest(call.stage)
            if math.isfinite(fastest):
                reason = (
                    f"The {slo_s:g} s SLO is below every configuration's worst-case latency "
                    f"(batch latency plus queueing per stage{_extra(c)}); the fastest needs "
                    f"{fastest:.4g} s."
                )
            else:
                reason = "No table row has usable profiled latencies at the allowed batch sizes."
            fb_slo, relaxed = None, ("qps", "slo_s")
            call = self._call(c, d, key, queue_delay_s, _NO_SLO)
        fallback = None
        q_max = engine.max_sustainable(d, call, budget, headroom)
        if q_max > 0:
            fb, _ = engine.search(c, d, call, q_max * headroom * (1.0 - GPU_REL_TOL), budget)
            if fb is not None:
                fallback = _make_plan(c, d, fb, qps=q_max, slo=fb_slo, relaxed=relaxed, **common)
        return _infeasible(c, qps, slo_s, common, reason, fallback)

    # ---------------------------------------------------------------- caches

    def _compiled(self, overhead_s: float | None) -> Compiled:
        if overhead_s is None:
            return self._base
        return self._get(
            self._variants, overhead_s, lambda: engine.with_override(self._base, overhead_s)
        )

    def _call(self, c: Compiled, d: Derived, key: tuple, queue_delay_s, t: float) -> engine.Call:
        skey = (*key, queue_delay_s)
        call = self._calls.items.get((*skey, t))
        if call is not None:
            return call
        st = self._get(self._stages, skey, lambda: engine.stage(c, d, queue_delay_s))
        return self._get(self._calls, (*skey, t), lambda: engine.prepare(c, d, st, t))

    def _get(self, cache: _Cache, key: Any, make: Callable[[], Any]) -> Any:
        """``cache[key]``, made and stored on a miss within the count and byte bounds."""
        value = cache.items.get(key)
        if value is not None:
            return value
        value = make()
        size = value.nbytes
        with self._lock:
            caches = (self._variants, self._derived, self._stages, self._calls)
            if sum(x.nbytes for x in caches) + size > CACHE_BYTES:
                for x in caches:
                    x.clear()
            elif len(cache.items) >= cache.limit:
                cache.clear()
            if size <= CACHE_BYTES:
                cache.items[key] = value
                cache.nbytes += size
        return value


def _verified(table: Any) -> CascadeTable:
    if isinstance(table, CascadeTable):
        return table
    if isinstance(table, dict):
        return CascadeTable.from_document(table)
    raise ParameterError(
        "table",
        f"{{param}} must be a CascadeTable or a table document dict, not a {type(table).__name__}.",
    )


class _ResolverCache:
    """The resolvers :func:`resolve` reuses: least recently used out, keyed by table sha256.

    A :class:`CascadeTable` was verified when it was made, so its sha256 names its
    content. A document dict is reused only when it is the very dict verified last
    for that sha256; any other dict is verified first (hash and structure), then
    shares the resolver compiled for the same content.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, tuple[Resolver, dict | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, table: Any) -> Resolver:
        key = _sha_of(table)
        hit = self._items.get(key) if key is not None else None
        if hit is not None and (not isinstance(table, dict) or hit[1] is table):
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
            return hit[0]
        verified = _verified(table)
        key = verified.sha256
        doc = table if isinstance(table, dict) else None
        hit = self._items.get(key)
        resolver = hit[0] if hit is not None else Resolver(verified)
        with self._lock:
            self._items[key] = (resolver, doc)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return resolver

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _sha_of(table: Any) -> str | None:
    if isinstance(table, CascadeTable):
        return table.sha256
    if isinstance(table, dict):
        sha = table.get("sha256")
        return sha if isinstance(sha, str) else None
    return None


_RESOLVERS = _ResolverCache(WRAPPER_RESOLVERS)


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
    """:meth:`Resolver.resolve` on ``table``, reusing a cached :class:`Resolver` for it.

    The convenience form for one-off calls and for callers that switch between a
    few tables; a serving loop can as well keep its own ``Resolver(table)``.
    """
    return _RESOLVERS.get(table).resolve(
        qps=qps,
        slo_s=slo_s,
        gpus=gpus,
        reserved_gpus=reserved_gpus,
        headroom=headroom,
        batch_sizes=batch_sizes,
        queue_delay_s=queue_delay_s,
        overhead_s=overhead_s,
    )


# ----------------------------------------------------------------------- request


def _allowed(c: Compiled, sizes: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The checked ``batch_sizes``, each of which some model of the table must run."""
    if sizes is None:
        return None
    known = {int(b) for b in c.batch}
    unknown = [b for b in sizes if b not in known]
    if unknown:
        listed = ", ".join(str(b) for b in sorted(known)) or "none"
        raise ParameterError(
            "batch_sizes",
            f"{{param}} names batch size {unknown[0]}, which is not profiled (feasibly) for any "
            f"model the table's rows use (profiled: {listed}).",
        )
    return sizes


# -------------------------------------------------------------------------- plans


def _make_plan(
    c: Compiled, d: Derived, res, *, qps, slo, budget, reserved, headroom, queue_delay, relaxed=()
):
    pos, jl, jh, nl, nh, worst = res
    row_i = int(c.order[pos])
    row = c.rows[row_i]
    m = len(c.models)
    allocs = []
    for role, name, sel, f, j, n in (
        ("light", row.light, c.lsel[pos], c.fl[pos], jl, nl),
        ("heavy", row.heavy, c.hsel[pos], c.fh[pos], jh, nh),
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
        kind=row.kind,
        light=row.light,
        heavy=row.heavy,
        r=row.r,
        d=row.d,
        router_threshold=row.router_threshold,
        confidence_threshold=row.confidence_threshold,
        fractions=dict(row.fractions),
        allocations=tuple(allocs),
        total_gpus=nl + nh,
        quality=row.quality,
        worst_case_latency_s=worst,
        relaxed=relaxed,
        table_sha256=c.sha256,
        overhead_s=dict(c.overhead_s),
    )


def _extra(c: Compiled) -> str:
    return ", plus routing overheads" if any(c.overhead_s.values()) else ""


def _infeasible(c: Compiled, qps, slo_s, common: dict, reason: str, fallback=None) -> Plan:
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
        overhead_s=dict(c.overhead_s),
    )
