"""Statistics of timing samples: the latency point, the median's interval, outlier warnings.

Pure numpy, so the profiler that measures and the run store that keeps raw
samples (and adds the generation calls' timings to them) compute a point's
statistics the same way, from the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hadis_profile.measurements import LatencyStats

#: hyperfine's threshold on the modified Z-score (10 x the 1.4826 MAD-to-sigma factor).
OUTLIER_ZSCORE = 14.826
NOISY_CV = 0.10
SLOW_MAX_OVER_MEDIAN = 2.0


def summarize(
    batch_size: int, samples: Sequence[float], *, warmup: int = 0, peak_mem: int | None = None
) -> LatencyStats:
    """LatencyStats from raw per-call seconds (sample std, linear-interpolated percentiles)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return LatencyStats(
        batch_size=int(batch_size),
        mean_s=float(a.mean()),
        std_s=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        p50_s=float(p50),
        p90_s=float(p90),
        p99_s=float(p99),
        p95_s=float(p95),
        peak_mem_bytes=peak_mem,
        infeasible=False,
        warmup=int(warmup),
        reps=int(a.size),
    )


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval for the median: order statistics ``(x_(k), x_(n-k+1))``
    with the largest ``k`` whose binomial coverage is at least ``confidence``.

    No assumption on the shape of the timing distribution (they are skewed,
    with a long right tail); it needs 6 samples for 95% ([min, max] of 6 covers
    the median with probability 1 - 2/64). None when there are too few.
    """
    a = sorted(float(x) for x in samples)
    n = len(a)
    tail = (1.0 - confidence) / 2.0
    k, cdf = 0, 0.0
    for j in range(n):
        cdf += math.comb(n, j) / 2.0**n  # P(B <= j), B ~ Binomial(n, 1/2)
        if cdf > tail:
            break
        k = j + 1
    if k == 0:
        return None
    return a[k - 1], a[n - k]


def median_ci_rel(samples: Sequence[float], confidence: float = 0.95) -> float | None:
    """Half-width of :func:`median_ci` relative to the median (None: too few samples)."""
    ci = median_ci(samples, confidence)
    med = float(np.median(samples)) if len(samples) else 0.0
    if ci is None or med <= 0:
        return None
    return max(med - ci[0], ci[1] - med) / med


def outlier_warning(samples: Sequence[float]) -> str | None:
    """A hyperfine-style warning when the samples look disturbed, else None.

    Flags statistical outliers (modified Z-score above 14.826, as hyperfine), a
    coefficient of variation above 10%, or a maximum above 2x the median.
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.size < 3:
        return None
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    problems = []
    if mad > 0:
        z = 0.6745 * (a - med) / mad
        n_out = int((np.abs(z) > OUTLIER_ZSCORE).sum())
        if n_out:
            problems.append(f"{n_out} statistical outlier(s)")
    cv = float(a.std(ddof=1) / a.mean()) if a.mean() > 0 else 0.0
    if cv > NOISY_CV:
        problems.append(f"CV {cv:.0%}")
    if med > 0 and a.max() > SLOW_MAX_OVER_MEDIAN * med:
        problems.append(f"max {a.max() / med:.1f}x the median")
    if not problems:
        return None
    return (
        "Timings look disturbed (" + ", ".join(problems) + "); other load on the machine or "
        "too few warm-up runs may have interfered. Consider more --warmup or --reps."
    )
