"""The HADIS authors' accounting of an E1 run (analysis/parse_logs.py, plot_e1_end2end.py).

Our summary counts per query: violations are (late + dropped) / queries and
quality is the mean over served queries. The authors' figure averages over
time instead, from the controller's one-row-per-tick logs:

* a row counts completions (on time or late) at the tick that reports them and
  drops at the tick their 2 x SLO expiry is noticed; rows start at the first
  tick with a query in flight, and ``MAX_ROWS`` of them are used (the plotting
  script's ``--length``; it starts at row 0 when fewer exist, as in E1);
* each point is 5 rows; its violation ratio is (late + dropped) / outcomes;
* quality per point is, for HADIS ("config"), the table FID of the
  configuration in force at each row, a shed row (no feasible plan) counting as
  the table's worst FID (29.75); for INFaaS ("dominant"), the single-model FID
  of the model most queries went to; for the others ("mix"), a lookup of the
  two lightest models that received queries on the discriminator-only sweep at
  the heavier one's share (rounded to 0.05), or one model's single FID;
* both series are smoothed by a 5-point moving average ('valid'), then averaged.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from hadis_profile.simulate.engine import DROPPED, SERVED, PolicyRun

ROWS_PER_POINT = 5
SMOOTH_WINDOW = 5
MAX_ROWS = 360
SHARE_STEP = 0.05


@dataclass(frozen=True)
class MixCurves:
    """parse_logs.FID_SINGLE and FID_CASCADE: single-model quality, and each pair's
    quality against the share served by the heavier model (0, 0.05, ..., 1)."""

    single: dict[int, float]
    pairs: dict[tuple[int, int], list[float]]

    @classmethod
    def from_sweep(
        cls, single: dict[int, float], pairs: dict[tuple[int, int], list[float]]
    ) -> MixCurves:
        """From 11-point curves (share 0, 0.1, ..., 1), densified with rounded midpoints."""
        dense = {}
        for key, values in pairs.items():
            out: list[float] = []
            for a, b in itertools.pairwise(values):
                out += [a, round((a + b) / 2, 2)]
            dense[key] = [*out, values[-1]]
        return cls(dict(single), dense)


@dataclass
class AuthorsAccounting:
    """One policy's E1 numbers as the authors' plotting script would report them."""

    violation_ratio: float
    quality: float | None
    points: int
    rows: int
    shed_rows: int
    violation_curve: list[float]  # the smoothed series the figure draws
    quality_curve: list[float]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _smooth(x: np.ndarray) -> np.ndarray:
    if len(x) < SMOOTH_WINDOW:
        return x
    return np.convolve(x, np.ones(SMOOTH_WINDOW) / SMOOTH_WINDOW, mode="valid")


def outcome_rows(run: PolicyRun, slo_s: float, expire_after_s: float, row_s: float) -> np.ndarray:
    """Per controller tick of ``row_s`` from tick 1: [on time, late, dropped] as it logs them."""
    tick = row_s
    served = run.status == SERVED
    dropped = run.status == DROPPED
    lat = run.finish - run.arrival
    row_served = np.maximum(np.ceil(run.finish[served] / tick - 1e-9), 1).astype(np.int64)
    late = lat[served] > slo_s + 1e-9
    horizon = expire_after_s if math.isfinite(expire_after_s) else 0.0
    row_drop = (np.floor((run.arrival[dropped] + horizon) / tick + 1e-9) + 1).astype(np.int64)
    n = int(max(row_served.max(initial=0), row_drop.max(initial=0)))
    rows = np.zeros((n + 1, 3), dtype=np.int64)
    np.add.at(rows[:, 0], row_served[~late], 1)
    np.add.at(rows[:, 1], row_served[late], 1)
    np.add.at(rows[:, 2], row_drop, 1)
    return rows[1:]


def authors_accounting(
    run: PolicyRun,
    *,
    slo_s: float,
    expire_after_s: float,
    quality_metric: str,
    worst_quality: float,
    curves: MixCurves,
    row_s: float | None = None,
    max_rows: int = MAX_ROWS,
) -> AuthorsAccounting:
    """The average violation ratio and quality plot_e1_end2end.py prints for ``run``.

    ``row_s`` is the authors' controller tick in this run's time unit (10 s for
    E1 in paper units), whatever tick the simulation itself used.
    """
    tick = run.tick_s if row_s is None else row_s
    rows = outcome_rows(run, slo_s, expire_after_s, tick)
    first = max(math.ceil(float(run.arrival.min()) / tick - 1e-9), 1) - 1  # first row logged
    rows = rows[first:]
    totals = rows.sum(axis=1)
    nonzero = np.flatnonzero(totals)
    offset = 0 if not len(nonzero) else min(int(nonzero[0]), max(len(rows) - max_rows, 0))
    usable = min(max_rows, (len(rows) - offset) // ROWS_PER_POINT * ROWS_PER_POINT)
    sel = rows[offset : offset + usable]
    n_pts = usable // ROWS_PER_POINT
    per = sel.reshape(n_pts, ROWS_PER_POINT, 3).sum(axis=1)
    tot = per.sum(axis=1)
    viol = np.divide(per[:, 1] + per[:, 2], tot, out=np.zeros(n_pts), where=tot != 0)

    start = first + offset  # row index of the first row used (its tick is start + 1)
    M = len(curves.single)
    # registrations per model, from the simulation's ticks into the controller's rows
    counts = np.zeros((usable, M), dtype=np.int64)
    if run.tick_models:
        reg = np.asarray(run.tick_models, dtype=np.int64)
        t_end = np.arange(1, len(reg) + 1) * run.tick_s
        row = np.ceil(t_end / tick - 1e-9).astype(np.int64) - 1 - start
        ok = (row >= 0) & (row < usable)
        np.add.at(counts, row[ok], reg[ok, :M])
    counts = counts.reshape(n_pts, ROWS_PER_POINT, M).sum(axis=1)
    shed = 0
    if run.fid_accounting == "config":
        times = np.array([d["time_s"] for d in run.decisions])
        vals = []
        for j in range(usable):
            now = (start + j + 1) * tick
            i = int(np.searchsorted(times, now + 1e-9, side="right")) - 1
            dec = run.decisions[max(i, 0)]
            q = (dec.get("quality") or {}).get(quality_metric)
            if dec["status"] == "shed" or q is None:
                shed += 1
                q = worst_quality
            vals.append(q)
        fid = np.asarray(vals).reshape(n_pts, ROWS_PER_POINT).mean(axis=1)
    elif run.fid_accounting == "dominant":
        fid = np.array([curves.single[int(np.argmax(c))] for c in counts])
    else:
        fid = np.array([_mix_quality(c, curves) for c in counts])
    v_curve, q_curve = _smooth(viol), _smooth(fid)
    return AuthorsAccounting(
        violation_ratio=float(v_curve.mean()) if n_pts else 0.0,
        quality=float(q_curve.mean()) if n_pts else None,
        points=n_pts,
        rows=usable,
        shed_rows=shed,
        violation_curve=v_curve.tolist(),
        quality_curve=q_curve.tolist(),
    )


def _mix_quality(counts: np.ndarray, curves: MixCurves) -> float:
    """parse_logs.parse_mix_fid for one point."""
    total = counts.sum()
    shares = counts / total if total else np.zeros(len(counts))
    shares = np.round(shares / SHARE_STEP) * SHARE_STEP
    active = np.flatnonzero(shares > 0)
    if len(active) == 0:
        return curves.single[0]
    if len(active) == 1:
        return curves.single[int(active[0])]
    lo, hi = (int(x) for x in sorted(active)[:2])
    share = round(float(shares[max(lo, hi)]), 2)
    return curves.pairs[(lo, hi)][round(share / SHARE_STEP)]
