"""The non-dominated filter, and compiling a run's sweep into a cascade table.

A configuration is worth serving only if no other one is at least as cheap and
at least as good, and strictly better on one of the two. :func:`pareto_front`
finds those in O(n log n); :func:`compile_table` runs the sweep pair by pair,
keeps each chunk's front (the front of a union equals the front of the union
of the parts' fronts, so memory stays bounded in exact mode) and writes the
survivors, plus one single-model row per model, as a ``table.json`` document.

:func:`compile_run` is the entry point from a run folder: it also decides which
confidence scorer the table is calibrated on (:func:`choose_confidence_scorer`)
and records that scorer in the table's provenance.

numpy only; ``sweep``, ``metrics`` and the run store are imported lazily.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.limits import MAX_GRID_STEPS, at_most

if TYPE_CHECKING:
    from hadis_profile.measurements import Measurements

#: How candidate pairs are chosen: every faster/slower pair, or neighbours in cost order.
PAIR_SELECTIONS = ("all", "adjacent")

# Dominance is decided on values rounded to this many decimals, so that costs
# that are equal in exact arithmetic (0.1 + 0.2 vs 0.3) tie instead of one
# "dominating" the other by one ulp. 1e-9 GPU-seconds or quality points is far
# below any measurement's noise.
DOMINANCE_DECIMALS = 9


def pareto_front(
    cost: Any,
    quality: Any,
    *,
    higher_is_better: bool,
    order_key: Any = None,
) -> np.ndarray:
    """Indices of the non-dominated configurations, in increasing cost.

    Cost is lower-is-better; quality follows ``higher_is_better``. Row ``i`` is
    dominated iff some ``j`` has ``cost[j] <= cost[i]`` and quality at least as
    good, with at least one of the two strictly better.

    Exact ties (identical cost *and* quality) keep exactly one row: the first by
    ``order_key``, then by position. ``order_key`` is one integer/float array of
    length n or a sequence of such arrays, most significant first (compile_table
    passes pair order in the cost-ordered model list, then r, then d), so the
    result never depends on the order rows arrived in.

    Sorts by (cost, quality worst-last, key) and keeps a row iff its quality is
    strictly better than every row before it: O(n log n).
    """
    c = np.asarray(cost, dtype=np.float64).reshape(-1)
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if c.shape != q.shape:
        raise HadisError(f"pareto_front got {c.size} costs but {q.size} quality values.")
    n = c.size
    if n == 0:
        return np.empty(0, dtype=np.intp)
    if not (np.isfinite(c).all() and np.isfinite(q).all()):
        raise HadisError("pareto_front needs finite cost and quality values (found NaN or inf).")
    loss = -q if higher_is_better else q  # lower is better from here on

    keys = [np.arange(n)]  # last resort: position
    for k in reversed(_key_arrays(order_key)):
        if k.size != n:
            raise HadisError(f"pareto_front got an order key of length {k.size}, not {n}.")
        keys.append(k)
    # np.lexsort sorts by the last key first.
    order = np.lexsort((*keys, loss, c))
    ls = loss[order]
    best_before = np.empty(n)
    best_before[0] = np.inf
    np.minimum.accumulate(ls[:-1], out=best_before[1:])
    return order[ls < best_before]


def _key_arrays(order_key: Any) -> list[np.ndarray]:
    """Normalise an order key (None, one array, a 2-D array or a list of arrays)."""
    if order_key is None:
        return []
    if isinstance(order_key, np.ndarray):
        return [order_key] if order_key.ndim <= 1 else list(order_key)
    items = list(order_key)
    if items and np.ndim(items[0]) == 0:
        return [np.asarray(items)]
    return [np.asarray(k).reshape(-1) for k in items]


def _round(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x, dtype=np.float64), DOMINANCE_DECIMALS)


def _finite_or_none(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- compile


class _Pool:
    """Candidate rows kept so far, with the arrays the front is computed on."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.cost: list[float] = []
        self.quality: list[float] = []
        self.keys: list[tuple[int, int, int, float, float]] = []

    def add(self, row: dict, quality: float, key: tuple[int, int, int, float, float]) -> None:
        self.rows.append(row)
        self.cost.append(row["gpu_s_per_query"])
        self.quality.append(quality)
        self.keys.append(key)

    def front(self, higher_is_better: bool) -> list[int]:
        if not self.rows:
            return []
        keys = np.asarray(self.keys, dtype=np.float64).T
        idx = pareto_front(
            _round(np.asarray(self.cost)),
            _round(np.asarray(self.quality)),
            higher_is_better=higher_is_better,
            order_key=keys,
        )
        return idx.tolist()

    def reduced(self, higher_is_better: bool) -> _Pool:
        out = _Pool()
        for i in self.front(higher_is_better):
            out.add(self.rows[i], self.quality[i], self.keys[i])
        return out


def _fraction(x: Any) -> float:
    """Realised fractions, with float dust (1 - 0.7 - 0.3 = -5e-17) clipped to [0, 1]."""
    v = float(x)
    if -1e-9 < v < 0.0:
        return 0.0
    if 1.0 < v < 1.0 + 1e-9:
        return 1.0
    return v


def _available_metrics(meas: Measurements) -> list[str]:
    """Every quality metric the run can rank by: per-image, FID from features, external."""
    from hadis_profile.sweep import FID_PREFIX

    found: set[str] = set()
    for m in meas.models.values():
        found.update(m.quality)
        found.update(FID_PREFIX + e for e in m.features if e in meas.reference_stats)
    for ext in meas.external:
        found.update(ext.values)
    return sorted(found)


def _pair_metrics(meas: Measurements, light: str, heavy: str, metric: str) -> list[str]:
    """The ranking metric first, then the cheap per-image metrics both models have.

    Other set-level or external metrics are left out: they may not cover every
    configuration (exact mode, another grid) and would fail a table that does
    not rank by them.
    """
    from hadis_profile.sweep import FID_PREFIX

    ql, qh = meas.models[light].quality, meas.models[heavy].quality
    extra = sorted(m for m in ql if m in qh and m != metric and not m.startswith(FID_PREFIX))
    return [metric, *extra]


def _single_quality(meas: Measurements, name: str, metric_ids: list[str]) -> dict:
    """A model's quality served alone: per-image means, FID of its own features, or external."""
    from hadis_profile.fid import frechet_distance
    from hadis_profile.sweep import FID_PREFIX

    m = meas.models[name]
    out: dict[str, float | None] = {}
    for mid in metric_ids:
        value: float | None = None
        extractor = mid[len(FID_PREFIX) :]
        if mid in m.quality:
            value = _finite_or_none(np.mean(m.quality[mid]))
        elif mid.startswith(FID_PREFIX) and extractor in m.features:
            if extractor in meas.reference_stats:
                feats = m.features[extractor].reshape(-1, m.features[extractor].shape[-1])
                mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)
                value = _finite_or_none(
                    frechet_distance(mu, sigma, *meas.reference_stats[extractor])
                )
        else:
            value = _external_single(meas, name, mid)
        out[mid] = value
    return out


def _external_single(meas: Measurements, name: str, metric: str) -> float | None:
    """A model's external set-level quality alone, from a row that serves it alone.

    Rows where it is the light model at r = d = 0 are preferred over rows where
    it is the heavy model at r = 1 (published sweeps can disagree slightly
    between the two, having generated separate image sets); the first such row wins.
    """
    as_light = as_heavy = None
    for ext in meas.external:
        if metric not in ext.values:
            continue
        if as_light is None and ext.light == name and abs(ext.r) < 1e-9 and abs(ext.d) < 1e-9:
            as_light = ext.values[metric]
        if as_heavy is None and ext.heavy == name and abs(ext.r - 1.0) < 1e-9:
            as_heavy = ext.values[metric]
    value = as_light if as_light is not None else as_heavy
    return None if value is None else _finite_or_none(value)


def _model_profile(meas: Measurements, name: str, order: int) -> dict:
    m = meas.models[name]
    feasible = [p for p in m.latency.values() if not p.infeasible]
    peaks = [p.peak_mem_bytes for p in feasible if p.peak_mem_bytes is not None]
    return {
        "order": order,
        "steps": m.steps,
        "latency": {str(b): m.latency[b].to_dict() for b in sorted(m.latency)},
        "max_batch": max((p.batch_size for p in feasible), default=None),
        "peak_mem_bytes": max(peaks, default=None),
    }


def _router_payload(spec: dict | None) -> dict | None:
    """What the resolver needs to score a new prompt; None when the run has no usable router."""
    keys = ("features", "weights", "mean", "std")
    if not spec or not all(k in spec for k in keys):
        return None
    return {k: list(spec[k]) for k in keys}


def _hardware(value: Any) -> dict | None:
    if value is None or isinstance(value, dict):
        return value
    return {"label": str(value), "device_name": None, "driver": None, "libraries": {}}


def _single_row(meas: Measurements, name: str, quality: dict[str, float | None]) -> dict:
    cost = meas.models[name].batch1_latency()
    return {
        "light": name,
        "heavy": None,
        "kind": "single",
        "r": 0.0,
        "d": 0.0,
        "router_threshold": None,
        "confidence_threshold": None,
        "fractions": {
            "direct": 0.0,
            "escalated": 0.0,
            "light": 1.0,
            "load_light": 1.0,
            "load_heavy": 0.0,
        },
        "quality": quality,
        "gpu_s_per_query": cost,
        "latency_s": cost,
        "on_front": False,
    }


def _cascade_row(chunk: Any, i: int) -> dict:
    return {
        "light": chunk.light,
        "heavy": chunk.heavy,
        "kind": "cascade",
        "r": float(chunk.r[i]),
        "d": float(chunk.d[i]),
        "router_threshold": _finite_or_none(chunk.router_threshold[i]),
        "confidence_threshold": _finite_or_none(chunk.confidence_threshold[i]),
        "fractions": {
            "direct": _fraction(chunk.direct[i]),
            "escalated": _fraction(chunk.escalated[i]),
            "light": _fraction(chunk.light_frac[i]),
            "load_light": _fraction(chunk.load_light[i]),
            "load_heavy": _fraction(chunk.load_heavy[i]),
        },
        "quality": {mid: _finite_or_none(v[i]) for mid, v in chunk.quality.items()},
        "gpu_s_per_query": float(chunk.gpu_s_per_query[i]),
        "latency_s": float(chunk.latency_s[i]),
        "on_front": False,
    }


# Keys of Measurements.provenance that the table lifts to named fields; the rest
# is kept under provenance.run so nothing the run recorded is lost.
_LIFTED = frozenset(
    {"run_id", "hardware", "zoo_hash", "prompt_set_hash", "seeds", "discriminator", "n_prompts"}
)


def _check_sweep_options(pairs: str, grid: int) -> None:
    if pairs not in PAIR_SELECTIONS:
        raise ParameterError(
            "pairs", f"{{param}} '{pairs}' is not one of {', '.join(PAIR_SELECTIONS)}."
        )
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ParameterError(
            "grid", f"{{param}} must be a whole number of at least 1, not {grid!r}."
        )
    at_most("grid", int(grid), MAX_GRID_STEPS, "steps per axis")


def compile_table(
    meas: Measurements,
    *,
    quality_metric: str | None = None,
    pairs: str = "all",
    per_pair: bool = False,
    grid: int = 10,
    exact: bool = False,
    nominal: bool = False,
) -> dict:
    """Sweep every candidate pair and return the ``table.json`` document.

    Rows: the configurations non-dominated on (gpu_s_per_query, quality) across
    all pairs, or with ``per_pair`` the union of each pair's own front; plus one
    ``single`` row per model, which the resolver needs as its fallbacks.
    ``on_front`` marks membership of the global front (single rows compete too).

    Exact ties keep one row, chosen by (single before cascade, light's cost
    rank, heavy's cost rank, r, d): serving one model beats an identical
    cascade. Dominance is judged on values rounded to ``DOMINANCE_DECIMALS``.
    ``pairs`` defaults to "all": adjacent pairs are HADIS's choice, but a
    non-adjacent pair can be on the front, and a grid sweep is cheap.
    """
    from hadis_profile import metrics as metric_ids
    from hadis_profile import sweep
    from hadis_profile.fileio import jsonable
    from hadis_profile.table import make_document

    _check_sweep_options(pairs, grid)
    meas.check()
    random = meas.provenance.get("random_weights") or []
    if random:
        raise HadisError(
            f"{', '.join(repr(m) for m in random)} {'was' if len(random) == 1 else 'were'} "
            "profiled with random weights: that latency is the architecture's and there is "
            "no real quality to rank by; profile with the checkpoints to compile a table."
        )
    order = meas.ordered_models()
    rank = {name: i for i, name in enumerate(order)}
    metric = metric_ids.resolve_metric(quality_metric, _available_metrics(meas))
    hib = metric_ids.higher_is_better(metric)

    pair_list = [tuple(p) for p in sweep.candidate_pairs(meas, pairs)]
    pools: dict[tuple[str, str], _Pool] = {}
    table_metrics: list[str] = [metric]
    evaluated = 0
    for light, heavy in pair_list:
        wanted = _pair_metrics(meas, light, heavy, metric)
        table_metrics += [m for m in wanted if m not in table_metrics]
        pool = _Pool()
        for chunk in sweep.iter_sweep(
            meas, [(light, heavy)], grid=grid, exact=exact, nominal=nominal, metrics=wanted
        ):
            n = len(chunk)
            evaluated += n
            if n == 0:
                continue
            keys = (
                np.ones(n),
                np.full(n, rank[light]),
                np.full(n, rank[heavy]),
                chunk.r,
                chunk.d,
            )
            front = pareto_front(
                _round(chunk.gpu_s_per_query),
                _round(chunk.quality[metric]),
                higher_is_better=hib,
                order_key=keys,
            )
            for i in front.tolist():
                row = _cascade_row(chunk, i)
                key = (1, rank[light], rank[heavy], row["r"], row["d"])
                pool.add(row, float(chunk.quality[metric][i]), key)
        pools[(light, heavy)] = pool.reduced(hib)  # front of the union of chunk fronts

    singles = [
        _single_row(meas, name, _single_quality(meas, name, table_metrics)) for name in order
    ]
    everything = _Pool()
    for pool in pools.values():
        for row, qv, key in zip(pool.rows, pool.quality, pool.keys, strict=True):
            everything.add(row, qv, key)
    for name, row in zip(order, singles, strict=True):
        qv = row["quality"][metric]
        if qv is not None:
            everything.add(row, qv, (0, rank[name], -1, 0.0, 0.0))
    for i in everything.front(hib):
        everything.rows[i]["on_front"] = True

    cascades = [row for row in everything.rows if row["kind"] == "cascade"]
    if not per_pair:
        cascades = [row for row in cascades if row["on_front"]]
    rows = cascades + singles

    def sort_key(row: dict) -> tuple:
        heavy_rank = -1 if row["heavy"] is None else rank[row["heavy"]]
        kind = 0 if row["kind"] == "single" else 1
        return (row["gpu_s_per_query"], kind, rank[row["light"]], heavy_rank, row["r"], row["d"])

    rows.sort(key=sort_key)

    run = meas.provenance or {}
    seeds = run.get("seeds")
    if seeds is None and "seed" in run:
        seeds = {"seed": run["seed"]}
    provenance = {
        "run_id": run.get("run_id"),
        "hardware": _hardware(run.get("hardware")),
        "zoo_hash": run.get("zoo_hash"),
        "prompt_set_hash": run.get("prompt_set_hash"),
        "n_prompts": meas.n_prompts,
        "metrics": {
            mid: {
                "higher_is_better": metric_ids.info(mid).higher_is_better,
                "set_level": metric_ids.info(mid).set_level,
            }
            for mid in table_metrics
        },
        "quality_metric": metric,
        "seeds": seeds,
        "grid": {
            "mode": "exact" if exact else "grid",
            "steps": None if exact else grid,
            "nominal": nominal,
        },
        "pairs": pairs,
        "per_pair": per_pair,
        "router": meas.router_spec,
        "discriminator": run.get("discriminator"),
        "sweep": {
            "pairs": [list(p) for p in pair_list],
            "configurations_evaluated": evaluated,
            "rows_kept": len(rows),
            "dominance_decimals": DOMINANCE_DECIMALS,
        },
        "run": {k: v for k, v in run.items() if k not in _LIFTED},
    }
    payload = {
        "provenance": provenance,
        "models": {name: _model_profile(meas, name, i) for i, name in enumerate(order)},
        "router": _router_payload(meas.router_spec),
        "rows": rows,
    }
    return make_document(jsonable(payload))


# --------------------------------------------------------------------------- from a run


def choose_confidence_scorer(
    available: Sequence[str], *, latest: str | None = None, requested: str | None = None
) -> str | None:
    """The confidence scorer a table is calibrated on (its thresholds come from it).

    ``requested`` (an id, or a unique prefix such as ``confidence:hadis-head``)
    wins; otherwise the only scorer the run has, else ``latest`` (the
    discriminator the run recorded last), else there is no obvious choice and
    the caller must request one. None when the run has no confidences at all.
    """
    found = list(available)
    if requested is not None:
        if requested in found:
            return requested
        matches = [s for s in found if s.startswith(requested)]
        if len(matches) == 1:
            return matches[0]
        what = "matches several of" if matches else "is not among"
        raise ParameterError(
            "requested",
            f"{{param}} '{requested}' {what} the run's confidence scorers "
            f"({', '.join(matches or found) or 'none'}).",
        )
    if len(found) <= 1:
        return found[0] if found else None
    if latest in found:
        return latest
    raise ParameterError(
        "requested",
        f"The run has confidences from several scorers ({', '.join(found)}); choose one with "
        "{param}.",
    )


def _latency_labels(store: Any) -> list[str]:
    """The hardware labels a run holds latency points under, sorted."""
    labels = []
    for h in store.hardware():
        try:
            if any(store.latency(name, h["label"]) for name in store.models()):
                labels.append(h["label"])
        except HadisError:  # no latency at all under this label
            continue
    return sorted(labels)


def measurements_for(
    store: Any, *, hardware: str | None = None, confidence: str | None = None
) -> Measurements:
    """A run's measurements as the compiler uses them: calibrated on the confidence scorer
    :func:`choose_confidence_scorer` picks, whose spec (as the run recorded it) goes into
    the provenance, so that serving uses the same scorer."""
    from hadis_profile.discriminator import discriminator_for_table

    latest = (store.provenance.get("discriminator") or {}).get("scorer_id")
    try:
        scorer = choose_confidence_scorer(
            store.confidence_scorers(), latest=latest, requested=confidence
        )
    except ParameterError as e:  # the caller passed it as ``confidence``
        raise ParameterError("confidence", e.template) from None
    meas = store.load_measurements(hardware=hardware, confidence_scorer=scorer)
    if scorer is not None:
        meas.provenance["discriminator"] = discriminator_for_table(meas.provenance, scorer)
    return meas


def compile_run(
    run_dir: str | os.PathLike,
    *,
    quality: str | None = None,
    pairs: str = "all",
    per_pair: bool = False,
    grid: int = 10,
    exact: bool = False,
    nominal: bool = False,
    confidence: str | None = None,
    hardware: str | None = None,
) -> dict:
    """Compile the run in ``run_dir`` into a ``table.json`` document (not yet written).

    ``hardware`` is the label whose latencies the table describes, needed when
    the run measured several GPU types (one table per type).

    ``confidence`` picks the scorer whose confidences the discriminator
    thresholds are calibrated on (see :func:`choose_confidence_scorer`); the
    table's provenance then records that scorer's spec as the run stored it, so
    that serving uses the same one. ``quality`` is the metric id (or scorer
    name) to rank by; the rest is passed to :func:`compile_table`.
    """
    from hadis_profile.store import RunStore

    _check_sweep_options(pairs, grid)  # before opening the run: fail fast, touch nothing
    with RunStore.open(run_dir, readonly=True) as store:
        labels = _latency_labels(store)
        if hardware is None and len(labels) > 1:
            raise ParameterError(
                "hardware",
                f"The run has latencies on several kinds of device ({', '.join(labels)}); "
                "choose one with {param}.",
            )
        if hardware is not None and hardware not in labels:
            raise ParameterError(
                "hardware",
                f"{{param}} '{hardware}' is not a label the run has latencies under "
                f"({', '.join(labels) or 'none'}).",
            )
        meas = measurements_for(store, hardware=hardware, confidence=confidence)
    return compile_table(
        meas,
        quality_metric=quality,
        pairs=pairs,
        per_pair=per_pair,
        grid=grid,
        exact=exact,
        nominal=nominal,
    )
