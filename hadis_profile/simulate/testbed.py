"""HADIS's E1 testbed mechanics, which the engine reproduces when asked to.

The authors' controller (controller.py) and worker (worker/model.py) differ
from our model in details that change the results; each is stated here once:
the controller's EWMA over ticks, the telemetry it plans with, and the worker's
lookup of a batch's duration.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadis_profile.errors import HadisError

#: HADIS's controller: pandas ewm(halflife=3, adjust=False) over the last 20 samples.
HALFLIFE_TICKS = 3.0
EWMA_WINDOW = 20
#: Batch sizes HADIS's worker looks up directly; any other count costs batch 4's time.
HADIS_WORKER_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)


@dataclass
class Telemetry:
    """What HADIS's controller knows at a re-plan, besides the demand estimate.

    Both are EWMAs over ticks (the controller's rule, updated only while queries
    are in the system): queries registered at each model's workers per second,
    and queries waiting in each model's queues.
    """

    tick_s: float
    model_rate: list[float]
    model_queue: list[float]
    in_flight: int = 0


def ewma_tail(values: list[float], alpha: float) -> float:
    """pandas ``ewm(alpha, adjust=False).mean()[-1]``: starts at the first value."""
    y = values[0]
    for x in values[1:]:
        y += alpha * (x - y)
    return y


def batch_time_row(pts: dict[int, float], rule: str) -> list[float]:
    """Seconds for a batch of k = 0..max queries on a model profiled at ``pts``.

    ``ceil``: the smallest profiled size >= k. ``hadis-worker``: the authors'
    worker (worker/model.py, config.get_model_runtimes): sizes 3, 5, 6, 7 are
    the means of (2, 4), (2, 8), (4, 8), (6, 8); any count other than 1-8, 16
    and 32 is looked up as batch size 4.
    """
    top = max(pts)
    if rule == "ceil":
        sizes = sorted(pts)
        return [0.0] + [pts[next(b for b in sizes if b >= k)] for k in range(1, top + 1)]
    table = dict(pts)
    for lo, hi in ((2, 4), (2, 8), (4, 8), (6, 8)):
        if lo in table and hi in table and (lo + hi) // 2 not in pts:
            table[(lo + hi) // 2] = (table[lo] + table[hi]) / 2
    row = [0.0]
    for k in range(1, top + 1):
        key = k if k in HADIS_WORKER_SIZES else 4
        if key not in table:
            raise HadisError(
                f"HADIS's worker batch timing needs batch size {key} profiled; the profile "
                f"has {', '.join(str(b) for b in sorted(pts))}."
            )
        row.append(table[key])
    return row
