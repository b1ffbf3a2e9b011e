"""The resolver's rules as a slow, obviously correct enumeration (stdlib only).

:mod:`hadis_profile.resolve` solves the allocation problem fast, with numpy
arrays, blocks and running minima; this module states the same problem in the
plainest way, by trying every row, every pair of batch sizes and, for the
fallback, every split of the GPUs. It is documentation that runs: the tests
compare :class:`~hadis_profile.resolve.Resolver` with it on random tables, and
:func:`reference` answers any request on a small table (seconds, not
microseconds: use it to check, never to serve). It shares no code with the
resolver; it reads a verified table document itself.

The rules, for a request (``qps``, ``slo_s``, ``gpus``, ``reserved_gpus``,
``headroom``, ``batch_sizes``, ``queue_delay_s``, ``overhead_s``):

1. A model's **usable points** are its latency points that are not
   ``infeasible``, have a positive finite ``p99_s``, respect ``max_batch`` and,
   if given, ``batch_sizes``. Batch latency is ``p99_s``.
2. A row's **fractions** at or below ``FRACTION_EPS`` are zero. The light model
   carries ``load_light`` of the queries, the heavy one ``load_heavy`` (single
   rows: none); the paths that occur are light-only (``light > 0``), direct to
   heavy (``direct > 0``) and escalated (``escalated > 0``, light then heavy).
3. A model with load needs ``ceil(qps * load * headroom / (b / p99) * (1 -
   GPU_REL_TOL))`` GPUs at batch size ``b``; a model without load needs none and
   adds no latency. The GPUs of a row add up to at most ``gpus - reserved_gpus``.
4. A stage costs ``p99 + queue`` (``queue = p99`` unless ``queue_delay_s``); a
   path costs its stages plus its routing overhead (router on every path of a
   cascade row with ``r > 0``, discriminator on its light-only and escalated paths
   when ``d > 0``; ``overhead_s`` replaces both on every cascade path). The worst
   path must be at most ``slo_s + LATENCY_TOL_S``.
5. Among all (row, light batch, heavy batch) that pass 3 and 4, the plan is the
   lexicographic minimum of (quality rank, GPUs, worst-case latency, row index,
   light batch, heavy batch); rows without a quality value rank last.
6. With no plan: if some configuration meets the SLO with unlimited GPUs, the
   reason is the fewest GPUs any needs and the fallback keeps the SLO; otherwise
   the fallback ignores it too. The fallback serves the highest load any
   configuration sustains on the budget (best split of the GPUs between the two
   models), chosen by rule 5 at that load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

FRACTION_EPS = 1e-12
"""Fractions at or below this are zero (same value as ``hadis_profile.resolve``)."""
LATENCY_TOL_S = 1e-9
"""Slack on the SLO comparison (same value as ``hadis_profile.resolve``)."""
GPU_REL_TOL = 1e-12
"""Relative slack on GPU demand (same value as ``hadis_profile.resolve``)."""


@dataclass
class Row:
    """One table row in the terms of the rules."""

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
    """A table and a request, as the rules see them."""

    rows: list[Row]
    points: dict[str, dict[int, float]]  # model -> batch -> p99 (usable, allowed)
    qps: float
    slo: float
    budget: int
    headroom: float
    queue: float | None


@dataclass
class Choice:
    """One configuration: a row, a batch size and GPUs per model, its worst case."""

    row: int
    qkey: tuple[int, float]
    gpus: int
    latency: float
    gpus_light: int
    gpus_heavy: int
    batch_light: int | None
    batch_heavy: int | None


@dataclass
class Answer:
    """What the rules say about a request (compare with a :class:`~hadis_profile.resolve.Plan`).

    ``choice`` is the plan when feasible. Otherwise ``min_gpus`` is the fewest GPUs
    any configuration meeting the SLO needs (``None``: none meets it at all),
    ``fallback_qps`` the highest sustainable load and ``fallback`` its plan (``None``
    when nothing runs on the budget), ``relaxed`` what the fallback ignores.
    """

    feasible: bool
    choice: Choice | None = None
    min_gpus: int | None = None
    fallback_qps: float = 0.0
    fallback: Choice | None = None
    relaxed: tuple[str, ...] = ()


def parse(
    doc: dict,
    *,
    qps: float,
    slo_s: float,
    gpus: int,
    reserved_gpus: int = 0,
    headroom: float = 1.05,
    batch_sizes: Any = None,
    queue_delay_s: float | None = None,
    overhead_s: float | None = None,
) -> Problem:
    """Rules 1, 2 and the path overheads of rule 4 applied to a verified table document."""
    payload = doc["payload"]
    prov = payload["provenance"]
    metric = prov["quality_metric"]
    hib = prov["metrics"][metric]["higher_is_better"]
    points: dict[str, dict[int, float]] = {}
    for name, spec in payload["models"].items():
        pts = {}
        for p in spec["latency"].values():
            b, p99 = int(p["batch_size"]), p["p99_s"]
            if p["infeasible"] or p99 is None or not (0 < p99 < math.inf):
                continue
            if spec["max_batch"] is not None and b > spec["max_batch"]:
                continue
            if batch_sizes is not None and b not in batch_sizes:
                continue
            pts[b] = float(p99)
        points[name] = pts
    o_r = 0.0
    for spec in (payload["router"], prov["router"]):
        if spec and spec.get("overhead_s_per_query") is not None:
            o_r = float(spec["overhead_s_per_query"])
            break
    o_d = 0.0
    disc, run = prov["discriminator"] or {}, prov.get("run") or {}
    per_image = run.get("scorer_overhead_s_per_image") or {}
    if per_image.get(disc.get("scorer_id")) is not None:
        o_d = float(per_image[disc["scorer_id"]])
    rows = []
    for i, row in enumerate(payload["rows"]):
        fr = {k: (v if v > FRACTION_EPS else 0.0) for k, v in row["fractions"].items()}
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


def gpus_for(qps: float, f: float, headroom: float, b: int, lat: float) -> int:
    """Rule 3: the fewest GPUs serving load fraction ``f`` at batch ``b`` (latency ``lat``)."""
    return math.ceil(qps * f * headroom / (b / lat) * (1 - GPU_REL_TOL))


def stage(prob: Problem, lat: float) -> float:
    """Rule 4: one stage's cost, batch latency plus queueing."""
    return lat + (lat if prob.queue is None else prob.queue)


def options(prob: Problem, model: str | None, f: float) -> list:
    """(batch, p99) a model may run at; ``[None]`` when it carries no load."""
    if model is None or f == 0:
        return [None]
    return sorted(prob.points[model].items())


def worst(row: Row, sl: float, sh: float) -> float:
    """Rule 4: the slowest path that occurs, overheads included."""
    paths = []
    if row.p_light:
        paths.append(sl + row.a_light)
    if row.p_direct:
        paths.append(sh + row.a_direct)
    if row.p_esc:
        paths.append(sl + sh + row.a_esc)
    return max(paths, default=0.0)


def configurations(prob: Problem, slo: float | None):
    """Every (row, light option, heavy option, worst case) meeting ``slo`` (None: any)."""
    for row in prob.rows:
        for ol in options(prob, row.light, row.f_light):
            for oh in options(prob, row.heavy, row.f_heavy):
                sl = stage(prob, ol[1]) if ol else 0.0
                sh = stage(prob, oh[1]) if oh else 0.0
                w = worst(row, sl, sh)
                if slo is None or w <= slo + LATENCY_TOL_S:
                    yield row, ol, oh, w


def best(prob: Problem, slo: float | None) -> Choice | None:
    """Rule 5: the best configuration within the budget that meets ``slo`` (None: any)."""
    found = None
    for row, ol, oh, w in configurations(prob, slo):
        nl = gpus_for(prob.qps, row.f_light, prob.headroom, *ol) if ol else 0
        nh = gpus_for(prob.qps, row.f_heavy, prob.headroom, *oh) if oh else 0
        if nl + nh > prob.budget:
            continue
        key = (*row.qkey, nl + nh, w, row.index, ol[0] if ol else 0, oh[0] if oh else 0)
        if found is None or key < found[0]:
            choice = Choice(
                row.index,
                row.qkey,
                nl + nh,
                w,
                nl,
                nh,
                ol[0] if ol else None,
                oh[0] if oh else None,
            )
            found = (key, choice)
    return None if found is None else found[1]


def min_gpus(prob: Problem) -> int | None:
    """Fewest GPUs any configuration meeting the SLO needs (budget ignored)."""
    counts = [
        (gpus_for(prob.qps, row.f_light, prob.headroom, *ol) if ol else 0)
        + (gpus_for(prob.qps, row.f_heavy, prob.headroom, *oh) if oh else 0)
        for row, ol, oh, _ in configurations(prob, prob.slo)
    ]
    return min(counts, default=None)


def max_sustainable(prob: Problem, slo: float | None) -> float:
    """Highest offered qps any configuration and GPU split sustains (``slo=None``: no SLO)."""
    g = prob.budget
    top = 0.0
    for row, ol, oh, _ in configurations(prob, slo):
        rate_l = ol[0] / ol[1] / (row.f_light * prob.headroom) if ol else None
        rate_h = oh[0] / oh[1] / (row.f_heavy * prob.headroom) if oh else None
        if rate_l is not None and rate_h is not None:
            for n in range(1, g):
                top = max(top, min(n * rate_l, (g - n) * rate_h))
        else:
            top = max(top, g * (rate_l if rate_l is not None else rate_h))
    return top


def reference(doc: dict, **request: Any) -> Answer:
    """What the rules say about ``request`` on a verified table document (rules 1-6)."""
    prob = parse(doc, **request)
    choice = best(prob, prob.slo)
    if choice is not None:
        return Answer(True, choice)
    need = min_gpus(prob)
    slo = prob.slo if need is not None else None  # keep the SLO when anything meets it
    q_max = max_sustainable(prob, slo)
    fallback = best(replace(prob, qps=q_max), slo) if q_max > 0 else None
    relaxed = ("qps",) if slo is not None else ("qps", "slo_s")
    return Answer(False, None, need, q_max, fallback, relaxed)
