"""The (router ratio r, discriminator ratio d) threshold sweep, vectorised.

Semantics are those of docs/architecture.md, "Sweep semantics". For a pair
(light, heavy) over n prompts with router score ``s`` and light confidence ``c``:

* router: ``k = round(r n)``; threshold = k-th largest ``s`` (NaN = never, k = 0);
  routed ``R = {s >= threshold}``. Because of ties ``R`` is always a prefix of the
  prompts sorted by descending ``s``, of length ``K = |R|``.
* discriminator: threshold ``np.quantile(c, d)`` over all prompts; the candidate
  escalation set ``E = {c < threshold}`` is a prefix of the prompts sorted by
  ascending ``c``, of length ``C = |E|``; escalated = ``E \\ R``.
* heavy set ``H = R | E``; ``|R & E|`` and sums of any per-prompt weight over
  ``R & E`` are 2-D dominance sums over points ``(position by s, rank by c)``.
  One weighted ``bincount`` into a (router cuts x confidence cuts) histogram plus
  two cumulative sums gives them for every configuration at once:
  O(n + configurations) per pair and metric, no loop over configurations.

Modes:

* grid (default): r and d over ``np.linspace(0, 1, grid + 1)`` rounded to 12
  decimals (grid=10 is HADIS's 0.1 steps).
* ``exact=True``: every distinct (router set, escalation set) the data allows:
  router sets "never" and ``{s >= v}`` for each distinct score v; escalation
  sets ``{c < v}`` for each distinct confidence v (the smallest is "none") and
  "all" (threshold ``nextafter(max c, inf)``, which no quantile reaches). r and d
  are then the realised ratios ``|R|/n`` and ``|E|/n`` (``|E|`` counted over all
  prompts, like the quantile). Up to (n+1)^2 configurations: use ``iter_sweep``.
* ``nominal=True``: fractions and latency are HADIS's published columns
  (``direct = r``, ``escalated = (1 - r) d``, ``t = r + (1 - r) d``,
  ``latency = (1 - t) L_l + r L_h + (1 - r) d (L_l + L_h)``), so a grid=10
  nominal sweep reproduces config_results_hybrid.csv. Thresholds and quality
  still come from the realised per-prompt choices (quality cannot be nominal).

Missing inputs: without router scores only r = 0 is swept (the grid's r axis
collapses to 0, giving HADIS's discriminator-only sweep); without the light
model's confidence only d = 0. Neither is an error: both are what the data can
support, and the realised r/d columns say so.

Quality: per-image metrics (``ModelMeasurements.quality``, per-prompt means) are
averaged over prompts with each prompt's serving model. Set-level ``fid:<ext>``
is computed from cached feature vectors (``fid.MixtureFID``) for every
configuration: one eigendecomposition each, so prefer grids for FID. External
values (``Measurements.external``) are joined on ``(light, heavy, r, d)``
rounded to 1e-9; a metric computed here wins over an external one of the same
id. Every selected metric must have a value for every configuration: a missing
external value is a ``HadisError`` naming the metric, and the fix is to sweep
on the grid it was measured on or to leave it out via ``metrics=``.
``metrics=None`` means every metric this pair has (per-image metrics measured
on both models, ``fid:<ext>`` with features on both and reference statistics,
external ids of this pair). ``missing="nan"`` is the opt-in for callers that
rank only configurations with a value (e.g. ``metrics=available_metrics(meas)``
across pairs): a requested metric this pair cannot have, or an external value
absent at some configuration, becomes NaN instead of an error.

Multi-pair results: a sweep over several pairs is a sequence of
:class:`SweepResult` chunks, one pair each (``iter_sweep``); ``concat`` joins
chunks of one pair. Within a pair, configurations are ordered r-major then d
(like HADIS's CSV), and chunks split along r.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.fid import MixtureFID
from hadis_profile.measurements import Measurements

if TYPE_CHECKING:
    from typing_extensions import Unpack

Missing = Literal["error", "nan"]
FID_PREFIX = "fid:"
DEFAULT_CHUNK_ROWS = 1 << 20
#: refuse to evaluate set-level metrics on more configurations than this (one eigh each)
MAX_SET_LEVEL_CONFIGS = 100_000

_ARRAY_FIELDS = (
    "r",
    "d",
    "router_threshold",
    "confidence_threshold",
    "direct",
    "escalated",
    "light_frac",
    "load_light",
    "load_heavy",
    "gpu_s_per_query",
    "latency_s",
)


@dataclass
class SweepResult:
    """One pair's configurations as a structure of arrays (one entry per configuration).

    router_threshold is NaN for "never route" (k = 0); confidence_threshold is
    NaN only where no confidence exists (d collapsed to 0). Fractions are of all
    prompts: direct (routed to heavy), escalated (light, then heavy), light_frac
    (light alone); load_light = 1 - direct, load_heavy = direct + escalated.
    Costs are seconds of GPU time per query from batch-1 latencies.
    """

    light: str
    heavy: str
    r: np.ndarray
    d: np.ndarray
    router_threshold: np.ndarray
    confidence_threshold: np.ndarray
    direct: np.ndarray
    escalated: np.ndarray
    light_frac: np.ndarray
    load_light: np.ndarray
    load_heavy: np.ndarray
    gpu_s_per_query: np.ndarray
    latency_s: np.ndarray
    quality: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.r.shape[0])

    @property
    def pair(self) -> tuple[str, str]:
        return (self.light, self.heavy)

    def take(self, idx: np.ndarray) -> SweepResult:
        """The configurations at ``idx`` (integer indices or a boolean mask)."""
        return SweepResult(
            light=self.light,
            heavy=self.heavy,
            **{f: getattr(self, f)[idx] for f in _ARRAY_FIELDS},
            quality={m: v[idx] for m, v in self.quality.items()},
        )

    @staticmethod
    def concat(parts: Sequence[SweepResult]) -> SweepResult:
        """Join chunks of one pair with the same metrics (a multi-pair sweep stays a list)."""
        if not parts:
            raise HadisError("There are no sweep results to concatenate.")
        first = parts[0]
        for p in parts[1:]:
            if p.pair != first.pair:
                raise HadisError(
                    f"Cannot concatenate sweeps of pairs {first.pair} and {p.pair}; "
                    "keep one SweepResult per pair."
                )
            if list(p.quality) != list(first.quality):
                raise HadisError(
                    f"Cannot concatenate sweeps with metrics {list(first.quality)} "
                    f"and {list(p.quality)}."
                )
        return SweepResult(
            light=first.light,
            heavy=first.heavy,
            **{f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAY_FIELDS},
            quality={m: np.concatenate([p.quality[m] for p in parts]) for m in first.quality},
        )


def available_metrics(meas: Measurements) -> list[str]:
    """Every metric id the sweep can produce for at least one pair of this run."""
    found: set[str] = set()
    for m in meas.models.values():
        found.update(q for q in m.quality if not q.startswith(FID_PREFIX))
        found.update(FID_PREFIX + e for e in m.features if e in meas.reference_stats)
    for cfg in meas.external:
        found.update(cfg.values)
    return sorted(found)


def candidate_pairs(meas: Measurements, pairs: str = "all") -> list[tuple[str, str]]:
    """Ordered (light, heavy) pairs whose light model is strictly faster at batch size 1.

    "all": every such pair; "adjacent": consecutive models in cost order only.
    """
    order = meas.ordered_models()
    lat = {m: meas.models[m].batch1_latency() for m in order}
    if pairs == "all":
        cands = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    elif pairs == "adjacent":
        cands = list(itertools.pairwise(order))
    else:
        raise HadisError(f"Unknown pair selection '{pairs}': use 'all' or 'adjacent'.")
    return [(a, b) for a, b in cands if lat[a] < lat[b]]


class SweepOptions(TypedDict, total=False):
    """The keyword options :func:`sweep_pair` passes on to :func:`iter_sweep`."""

    grid: int
    exact: bool
    nominal: bool
    metrics: list[str] | None
    missing: Missing


def sweep_pair(
    meas: Measurements, light: str, heavy: str, **options: Unpack[SweepOptions]
) -> SweepResult:
    """Every configuration of one pair in one :class:`SweepResult`.

    The one-chunk form of :func:`iter_sweep` (same options: ``grid``, ``exact``,
    ``nominal``, ``metrics``, ``missing``; see the module doc).
    """
    return SweepResult.concat(list(iter_sweep(meas, [(light, heavy)], chunk_rows=None, **options)))


def iter_sweep(
    meas: Measurements,
    pairs: str | Sequence[tuple[str, str]],
    *,
    grid: int = 10,
    exact: bool = False,
    nominal: bool = False,
    metrics: list[str] | None = None,
    missing: Missing = "error",
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> Iterator[SweepResult]:
    """Sweep several pairs lazily, yielding chunks of one pair each.

    pairs: "all" / "adjacent" (see :func:`candidate_pairs`) or explicit pairs.
    Each chunk holds whole router cuts and at most ``max(chunk_rows, number of
    confidence cuts)`` configurations, so an exact sweep of 5,000 prompts (25M
    configurations) can be Pareto-reduced chunk by chunk in bounded memory;
    ``chunk_rows=None`` yields each pair whole.
    """
    if isinstance(pairs, str):
        pairs = candidate_pairs(meas, pairs)
    if chunk_rows is not None and chunk_rows < 1:
        raise HadisError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    for light, heavy in pairs:
        yield from _pair_chunks(
            meas,
            light,
            heavy,
            grid=grid,
            exact=exact,
            nominal=nominal,
            metrics=metrics,
            missing=missing,
            chunk_rows=chunk_rows,
        )


# ---------------------------------------------------------------------------- internals


def _vector(values: np.ndarray, n: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,):
        raise HadisError(f"The {what} have shape {v.shape}, expected ({n},).")
    if not np.isfinite(v).all():
        raise HadisError(f"The {what} contain NaN or infinite values.")
    return v


def _select_metrics(
    meas: Measurements, light: str, heavy: str, metrics: list[str] | None, missing: Missing
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Split the wanted metrics into (per-image, fid, external, absent) ids.

    A requested metric this pair cannot have is an error, or "absent" (all NaN)
    with ``missing="nan"``.
    """
    ml, mh = meas.models[light], meas.models[heavy]
    per_image = [m for m in ml.quality if m in mh.quality and not m.startswith(FID_PREFIX)]
    fid = [FID_PREFIX + e for e in ml.features if e in mh.features and e in meas.reference_stats]
    computed = set(per_image) | set(fid)
    external: list[str] = []
    for cfg in meas.external:
        if cfg.light == light and cfg.heavy == heavy:
            external.extend(m for m in cfg.values if m not in computed and m not in external)
    if metrics is None:
        return sorted(per_image), sorted(fid), sorted(external), []
    if len(set(metrics)) != len(metrics):
        raise HadisError(f"Metrics {metrics} name a metric twice.")
    available = set(per_image) | set(fid) | set(external)
    for m in metrics:
        if m in available or missing == "nan":
            continue
        if m.startswith(FID_PREFIX):
            ext = m[len(FID_PREFIX) :]
            lacking = [
                what
                for what, ok in (
                    (f"features of '{light}'", ext in ml.features),
                    (f"features of '{heavy}'", ext in mh.features),
                    ("reference statistics", ext in meas.reference_stats),
                )
                if not ok
            ]
            raise HadisError(
                f"Metric '{m}' cannot be computed for pair ({light}, {heavy}): no "
                f"{', '.join(lacking)} for extractor '{ext}' and no external values "
                "(leave it out, or pass missing='nan')."
            )
        have = ", ".join(sorted(available)) or "none"
        raise HadisError(
            f"Metric '{m}' is not measured on both '{light}' and '{heavy}' "
            f"(available for this pair: {have}; or pass missing='nan')."
        )
    return (
        [m for m in metrics if m in per_image],
        [m for m in metrics if m in fid],
        [m for m in metrics if m in external],
        [m for m in metrics if m not in available],
    )


def _grid_values(grid: int) -> np.ndarray:
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise HadisError(f"The grid must be a positive whole number of steps, got {grid!r}.")
    return np.round(np.linspace(0.0, 1.0, int(grid) + 1), 12)


def _pair_chunks(
    meas: Measurements,
    light: str,
    heavy: str,
    *,
    grid: int,
    exact: bool,
    nominal: bool,
    metrics: list[str] | None,
    missing: Missing,
    chunk_rows: int | None,
) -> Iterator[SweepResult]:
    for m in (light, heavy):
        if m not in meas.models:
            raise HadisError(f"Unknown model '{m}': the run has {', '.join(meas.models)}.")
    if light == heavy:
        raise HadisError(f"A cascade needs two different models, got '{light}' twice.")
    lat_l = meas.models[light].batch1_latency()
    lat_h = meas.models[heavy].batch1_latency()
    if not lat_l < lat_h:
        raise HadisError(
            f"Model '{light}' ({lat_l:g} s) is not faster than '{heavy}' ({lat_h:g} s) at "
            "batch size 1; the light model must be the faster one."
        )
    n = meas.n_prompts
    if n == 0:
        raise HadisError("The run has no prompts.")
    if missing not in ("error", "nan"):
        raise HadisError(f"missing must be 'error' or 'nan', not '{missing}'.")
    per_image, fid_ids, ext_ids, absent = _select_metrics(meas, light, heavy, metrics, missing)
    ml, mh = meas.models[light], meas.models[heavy]

    # --- router cuts: K[a] = |R_a|, a prefix length in descending-s order (non-decreasing in a)
    if meas.router_scores is None:
        s = np.zeros(n)
        order_s = np.arange(n)
        K = np.zeros(1, dtype=np.int64)
        r_thr = np.full(1, np.nan)
        r_rec = np.zeros(1)
    else:
        s = _vector(meas.router_scores, n, "router scores")
        order_s = np.argsort(-s, kind="stable")
        s_desc = s[order_s]
        if exact:
            bounds = np.flatnonzero(s_desc[1:] != s_desc[:-1]) + 1
            K = np.concatenate([[0], bounds, [n]]).astype(np.int64)
            r_thr = np.concatenate([[np.nan], s_desc[K[1:] - 1]])
            r_rec = K / n
        else:
            r_rec = _grid_values(grid)
            k = np.round(r_rec * n).astype(np.int64)
            r_thr = np.where(k > 0, s_desc[np.maximum(k - 1, 0)], np.nan)
            # |{s >= thr}|: ascending -s_desc, count of -s <= -thr
            K = np.where(k > 0, np.searchsorted(-s_desc, -r_thr, side="right"), 0)
    # --- confidence cuts: C[b] = |E_b|, a prefix length in ascending-c order
    if ml.confidence is None:
        c = np.zeros(n)
        C = np.zeros(1, dtype=np.int64)
        c_thr = np.full(1, np.nan)
        d_rec = np.zeros(1)
    else:
        c = _vector(ml.confidence, n, f"confidence of model '{light}'")
        c_asc = np.sort(c, kind="stable")
        if exact:
            bounds = np.flatnonzero(c_asc[1:] != c_asc[:-1]) + 1
            C = np.concatenate([[0], bounds, [n]]).astype(np.int64)
            c_thr = np.concatenate([c_asc[C[:-1]], [np.nextafter(c_asc[-1], np.inf)]])
            d_rec = C / n
        else:
            d_rec = _grid_values(grid)
            c_thr = np.quantile(c, d_rec)
            C = np.searchsorted(c_asc, c_thr, side="left")
    order_c = np.argsort(c, kind="stable")
    rank_c = np.empty(n, dtype=np.int64)
    rank_c[order_c] = np.arange(n)

    A, B = K.shape[0], C.shape[0]
    n_configs = A * B
    if fid_ids and n_configs > MAX_SET_LEVEL_CONFIGS:
        raise HadisError(
            f"Computing {', '.join(fid_ids)} on {n_configs} configurations of pair "
            f"({light}, {heavy}) needs one eigendecomposition each; use a grid or leave "
            "the set-level metrics out via metrics=."
        )

    # --- per-prompt weights (in descending-s order) and their prefix sums in both orders
    q_light = {m: _vector(ml.quality[m], n, f"quality '{m}' of model '{light}'") for m in per_image}
    q_heavy = {m: _vector(mh.quality[m], n, f"quality '{m}' of model '{heavy}'") for m in per_image}
    deltas = {m: q_heavy[m] - q_light[m] for m in per_image}
    mean_light = {m: float(np.mean(q_light[m])) for m in per_image}
    prefix_s = {m: np.concatenate([[0.0], np.cumsum(deltas[m][order_s])]) for m in per_image}
    prefix_c = {m: np.concatenate([[0.0], np.cumsum(deltas[m][order_c])]) for m in per_image}
    delta_s = {m: deltas[m][order_s] for m in per_image}

    # each prompt's confidence-cut column: prompt in E_b iff iy <= c_index[b]
    uC, c_index = np.unique(C, return_inverse=True)
    iy_s = np.searchsorted(uC, rank_c[order_s], side="right")  # in descending-s order
    n_cols = uC.shape[0] + 1

    fid_eval: dict[str, MixtureFID] = {}
    for m in fid_ids:
        ext = m[len(FID_PREFIX) :]
        try:
            fid_eval[m] = MixtureFID(ml.features[ext], mh.features[ext], *meas.reference_stats[ext])
        except ValueError as e:
            raise HadisError(f"Cannot compute '{m}' for pair ({light}, {heavy}): {e}") from None
    ext_lookup = _external_lookup(meas, light, heavy, ext_ids)

    pos_s = np.empty(n, dtype=np.int64)
    pos_s[order_s] = np.arange(n)
    rows_per_chunk = A if chunk_rows is None else max(1, chunk_rows // B)
    # points with position < K[a0] have been folded into `base` (per weight, per column)
    base_count = np.zeros(n_cols, dtype=np.int64)
    base_w = {m: np.zeros(n_cols) for m in per_image}
    done = 0  # prompts (in s order) already folded into base
    for a0 in range(0, A, rows_per_chunk):
        a1 = min(A, a0 + rows_per_chunk)
        Kb = K[a0:a1]
        na = a1 - a0
        lo, hi = int(Kb[0]), int(Kb[-1])
        # fold prompts [done, lo) into the base
        pre = slice(done, lo)
        base_count += np.bincount(iy_s[pre], minlength=n_cols)
        for m in per_image:
            base_w[m] += np.bincount(iy_s[pre], weights=delta_s[m][pre], minlength=n_cols)
        # prompts [lo, hi) enter at the first local cut with K > position
        row = np.searchsorted(Kb, np.arange(lo, hi), side="right")
        flat = row * n_cols + iy_s[lo:hi]
        size = na * n_cols
        inter = _dominance(np.bincount(flat, minlength=size), base_count, na, c_index)
        direct_cnt = np.broadcast_to(Kb[:, None], (na, B))
        esc_cnt = C[None, :] - inter
        quality: dict[str, np.ndarray] = {}
        for m in per_image:
            hist = np.bincount(flat, weights=delta_s[m][lo:hi], minlength=size)
            inter_w = _dominance(hist, base_w[m], na, c_index)
            heavy_sum = prefix_s[m][Kb][:, None] + prefix_c[m][C][None, :] - inter_w
            quality[m] = (mean_light[m] + heavy_sum / n).reshape(-1)
        # fold this chunk's prompts into the base for the next chunk
        base_count += np.bincount(iy_s[lo:hi], minlength=n_cols)
        for m in per_image:
            base_w[m] += np.bincount(iy_s[lo:hi], weights=delta_s[m][lo:hi], minlength=n_cols)
        done = hi

        r_cfg = np.repeat(r_rec[a0:a1], B)
        d_cfg = np.tile(d_rec, na)
        if nominal:
            t = r_cfg + (1 - r_cfg) * d_cfg
            direct = r_cfg.copy()
            escalated = (1 - r_cfg) * d_cfg
            light_frac = 1 - t
            load_light = 1 - r_cfg
            load_heavy = t
            latency = (1 - t) * lat_l + r_cfg * lat_h + (1 - r_cfg) * d_cfg * (lat_l + lat_h)
        else:
            direct = (direct_cnt / n).reshape(-1)
            escalated = (esc_cnt / n).reshape(-1)
            light_frac = ((n - direct_cnt - esc_cnt) / n).reshape(-1)
            load_light = 1 - direct
            load_heavy = direct + escalated
            latency = light_frac * lat_l + direct * lat_h + escalated * (lat_l + lat_h)
        gpu_s = load_light * lat_l + load_heavy * lat_h

        if fid_eval:
            for m, ev in fid_eval.items():
                vals = np.empty(na * B)
                i = 0
                for a in range(na):  # set-level metrics: one eigendecomposition per config
                    routed = pos_s < Kb[a]
                    for b in range(B):
                        vals[i] = ev(routed | (rank_c < C[b]))
                        i += 1
                quality[m] = vals
        for m in ext_ids:
            quality[m] = _join_external(ext_lookup[m], r_cfg, d_cfg, m, light, heavy, missing)
        for m in absent:
            quality[m] = np.full(na * B, np.nan)
        ordered = metrics if metrics is not None else [*per_image, *fid_ids, *ext_ids]
        yield SweepResult(
            light=light,
            heavy=heavy,
            r=r_cfg,
            d=d_cfg,
            router_threshold=np.repeat(r_thr[a0:a1], B),
            confidence_threshold=np.tile(c_thr, na),
            direct=direct,
            escalated=escalated,
            light_frac=light_frac,
            load_light=load_light,
            load_heavy=load_heavy,
            gpu_s_per_query=gpu_s,
            latency_s=latency,
            quality={m: quality[m] for m in ordered},
        )


def _dominance(hist: np.ndarray, base: np.ndarray, na: int, c_index: np.ndarray) -> np.ndarray:
    """Sum over prompts with position < K[a] and confidence-cut index <= b, for every (a, b).

    hist[row, col] holds prompts entering at local router cut ``row``; base holds
    (per column) those already routed at the chunk's first cut.
    """
    cum = np.cumsum(np.cumsum(hist.reshape(na, -1), axis=0), axis=1)
    return (cum + np.cumsum(base)[None, :])[:, c_index]


def _key(r: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Join key of (r, d) rounded to 1e-9 (both in [0, 1]) packed into one int64."""
    ri = np.rint(np.asarray(r, dtype=np.float64) * 1e9).astype(np.int64)
    di = np.rint(np.asarray(d, dtype=np.float64) * 1e9).astype(np.int64)
    return ri * (1 << 31) + di


def _external_lookup(
    meas: Measurements, light: str, heavy: str, ext_ids: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per external metric: (sorted join keys, values) over this pair's external configs."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in ext_ids:
        rows = [
            (cfg.r, cfg.d, float(cfg.values[m]))
            for cfg in meas.external
            if cfg.light == light and cfg.heavy == heavy and m in cfg.values
        ]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        if not ((arr[:, :2] >= -1e-9) & (arr[:, :2] <= 1 + 1e-9)).all():
            raise HadisError(
                f"External configurations of pair ({light}, {heavy}) have r or d outside [0, 1]."
            )
        keys = _key(arr[:, 0], arr[:, 1])
        order = np.argsort(keys, kind="stable")
        keys, vals = keys[order], arr[order, 2]
        dup = keys[1:] == keys[:-1]
        if (dup & (vals[1:] != vals[:-1])).any():
            i = int(np.flatnonzero(dup & (vals[1:] != vals[:-1]))[0])
            raise HadisError(
                f"External metric '{m}' has conflicting values for pair ({light}, {heavy}) "
                f"at r={arr[order[i], 0]:g}, d={arr[order[i], 1]:g}."
            )
        keep = np.concatenate([[True], ~dup])
        out[m] = (keys[keep], vals[keep])
    return out


def _join_external(
    lookup: tuple[np.ndarray, np.ndarray],
    r: np.ndarray,
    d: np.ndarray,
    metric: str,
    light: str,
    heavy: str,
    missing: Missing,
) -> np.ndarray:
    keys, vals = lookup
    want = _key(r, d)
    pos = np.minimum(np.searchsorted(keys, want), max(keys.shape[0] - 1, 0))
    found = keys[pos] == want if keys.shape[0] else np.zeros(want.shape, dtype=bool)
    if missing == "nan":
        return np.where(found, vals[pos] if keys.shape[0] else np.nan, np.nan)
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise HadisError(
            f"External metric '{metric}' is missing for {int((~found).sum())} of {found.size} "
            f"configurations of pair ({light}, {heavy}), first at r={r[i]:.9g}, d={d[i]:.9g}; "
            "sweep on the grid it was measured on or leave it out with metrics=."
        )
    return vals[pos]
