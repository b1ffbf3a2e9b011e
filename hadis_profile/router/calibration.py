"""Calibrating the router's weights, and judging any router on held-out prompts.

HADIS chose its weights by random search over 400 vectors and gained little over
random routing (FID 21.10 vs 21.27 at a 50/50 split). Here the weights are fitted
to what routing is for: predicting, per prompt, how much the heavy model improves
on the light one, and judged on prompts the fit never saw, against HADIS's
weights, random routing (over many seeds) and the oracle.

numpy only; the run-facing entry point is :func:`hadis_profile.router_run.fit_run_router`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.limits import MAX_RANDOM_SEEDS, at_most
from hadis_profile.router.features import FEATURES
from hadis_profile.router.model import DEFAULT_WEIGHTS

CALIBRATION_METHODS: tuple[str, ...] = ("ridge", "rank")
DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
DEFAULT_TRAIN_FRACTION = 0.7
DEFAULT_RANDOM_SEEDS = 200
DEFAULT_MAX_PAIRS = 50_000
MIN_CALIBRATION_PROMPTS = 10
#: Two-sided 95% normal quantile, for the random-routing confidence interval.
Z95 = 1.959963984540054


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (scipy's ``rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(x)])
    avg = starts + (counts - 1) / 2.0 + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[np.cumsum(new) - 1]
    return ranks


def spearman(a: Any, b: Any) -> float | None:
    """Spearman's rho (tie-averaged ranks); ``None`` when either side is constant."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise HadisError(f"Spearman needs two equal-length vectors, got {x.shape} and {y.shape}.")
    if len(x) < 2:
        return None
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else None


def _check_fit_inputs(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        Z = np.asarray(X, dtype=np.float64)
        g = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise HadisError("Calibration needs a numeric [n, k] matrix and an [n] gain.") from None
    if Z.ndim != 2 or g.shape != (Z.shape[0],):
        raise HadisError(
            f"Calibration needs features [n, k] and gain [n]; got {Z.shape} and {g.shape}."
        )
    if Z.shape[0] < 2:
        raise HadisError("Calibration needs at least two prompts.")
    if not (np.isfinite(Z).all() and np.isfinite(g).all()):
        raise HadisError("Calibration features or gains contain a NaN or infinity.")
    if np.ptp(g) == 0:
        raise HadisError(
            "The quality gain is the same for every training prompt, so there is nothing to fit."
        )
    return Z, g


class RouterCalibrator:
    """Fit router weights so that ``w · z`` orders prompts by their gain from the heavy model.

    Scikit-learn style: constructor holds settings, :meth:`fit` sets ``weights_``
    (and ``intercept_``, ``n_train_``), :meth:`score` gives router scores.
    ``X`` is the *z-normalised* feature matrix (the router's normalisation), so
    ``weights_`` drop straight into a router spec.

    * ``"ridge"``: least squares on the gain with an L2 penalty ``alpha`` (features
      centred, intercept unpenalised). Scores are then the predicted gain minus
      its mean, in quality units.
    * ``"rank"``: a pairwise logistic (RankNet-style) objective over prompt pairs
      with different gains, each pair weighted by its gain difference (swapping
      two near-equal prompts barely changes routed quality), penalty
      ``alpha / (2 n) ||w||^2``, solved by damped Newton. Robust to outlying
      gains; pairs are all of them up to ``max_pairs``, else a seeded sample.
    """

    def __init__(
        self,
        method: str = "ridge",
        alpha: float = 1.0,
        *,
        seed: int = 0,
        max_pairs: int = DEFAULT_MAX_PAIRS,
        max_iter: int = 100,
    ) -> None:
        if method not in CALIBRATION_METHODS:
            raise ParameterError(
                "method",
                f"Unknown calibration method '{method}' for {{param}}; use one of "
                f"{', '.join(CALIBRATION_METHODS)}.",
            )
        if not (math.isfinite(float(alpha)) and float(alpha) >= 0):
            raise ParameterError("alpha", f"{{param}} must be a finite number >= 0, not {alpha}.")
        if method == "rank" and float(alpha) == 0:
            raise ParameterError(
                "alpha", "The rank method needs {param} > 0 (separable pairs diverge without)."
            )
        self.method = method
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.max_pairs = int(max_pairs)
        self.max_iter = int(max_iter)
        self.weights_: np.ndarray | None = None
        self.intercept_: float | None = None
        self.n_train_: int | None = None
        self.n_pairs_: int | None = None

    def fit(self, X: Any, gain: Any) -> RouterCalibrator:
        Z, g = _check_fit_inputs(X, gain)
        self.n_train_ = int(Z.shape[0])
        if self.method == "ridge":
            self._fit_ridge(Z, g)
        else:
            self._fit_rank(Z, g)
        return self

    def _fit_ridge(self, Z: np.ndarray, g: np.ndarray) -> None:
        zm, gm = Z.mean(axis=0), g.mean()
        Zc, gc = Z - zm, g - gm
        if self.alpha > 0:
            A = Zc.T @ Zc + self.alpha * np.eye(Z.shape[1])
            w = np.linalg.solve(A, Zc.T @ gc)
        else:
            w = np.linalg.lstsq(Zc, gc, rcond=None)[0]
        self.weights_ = w
        self.intercept_ = float(gm - zm @ w)

    def _pairs(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(g)
        total = n * (n - 1) // 2
        if total <= self.max_pairs:
            i, j = np.triu_indices(n, k=1)
        else:
            rng = np.random.default_rng(self.seed)
            i = rng.integers(0, n, self.max_pairs)
            j = rng.integers(0, n - 1, self.max_pairs)
            j = j + (j >= i)  # uniform over j != i
        keep = g[i] != g[j]
        return i[keep], j[keep]

    def _fit_rank(self, Z: np.ndarray, g: np.ndarray) -> None:
        i, j = self._pairs(g)
        sign = np.sign(g[i] - g[j])
        D = sign[:, None] * (Z[i] - Z[j])  # want D @ w > 0
        weight = np.abs(g[i] - g[j])
        weight = weight / weight.sum()
        lam = self.alpha / Z.shape[0]
        k = Z.shape[1]

        def objective(w: np.ndarray) -> float:
            return float(weight @ np.logaddexp(0.0, -(D @ w))) + 0.5 * lam * float(w @ w)

        w = np.zeros(k)
        f = objective(w)
        for _ in range(self.max_iter):
            m = D @ w
            p = 0.5 * (1.0 + np.tanh(-0.5 * m))  # sigmoid(-m), overflow-free
            grad = -(D.T @ (weight * p)) + lam * w
            H = (D.T * (weight * p * (1.0 - p))) @ D + lam * np.eye(k)
            step = np.linalg.solve(H, grad)
            t = 1.0
            while t > 1e-8:
                w_new = w - t * step
                f_new = objective(w_new)
                if f_new <= f - 1e-4 * t * float(grad @ step):
                    break
                t *= 0.5
            else:
                break
            converged = f - f_new < 1e-12 * max(1.0, abs(f))
            w, f = w_new, f_new
            if converged:
                break
        self.weights_ = w
        self.intercept_ = 0.0
        self.n_pairs_ = len(D)

    def score(self, X: Any) -> np.ndarray:
        """Router scores ``X @ weights_`` (higher = more to gain from the heavy model)."""
        if self.weights_ is None:
            raise HadisError("The calibrator is not fitted yet; call fit() first.")
        Z = np.asarray(X, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != len(self.weights_):
            raise HadisError(f"Features must have shape [n, {len(self.weights_)}], got {Z.shape}.")
        return Z @ self.weights_

    def __repr__(self) -> str:
        return f"RouterCalibrator(method={self.method!r}, alpha={self.alpha}, seed={self.seed})"


@dataclass(frozen=True)
class RoutingEvaluation:
    """Mean quality when the top ``round(r n)`` prompts by score go heavy, per fraction r.

    Ties at the cut are split in expectation (every tied prompt goes heavy with the
    same probability), so a constant score is exactly random routing, not "all heavy".
    ``spearman`` is between score and improvement (heavy over light, in the
    metric's better direction); ``None`` when either is constant.
    """

    fractions: tuple[float, ...]
    n_heavy: tuple[int, ...]
    quality: tuple[float, ...]
    spearman: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spearman": self.spearman,
            "quality": {
                _fraction_key(r): q for r, q in zip(self.fractions, self.quality, strict=True)
            },
            "n_heavy": {
                _fraction_key(r): k for r, k in zip(self.fractions, self.n_heavy, strict=True)
            },
        }


@dataclass(frozen=True)
class RandomRoutingEvaluation:
    """Random routing over ``n_seeds`` seeds: means and 95% CI half-widths (normal approx.)."""

    fractions: tuple[float, ...]
    n_seeds: int
    quality_mean: tuple[float, ...]
    quality_ci: tuple[float, ...]
    spearman_mean: float
    spearman_ci: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_seeds": self.n_seeds,
            "spearman": {"mean": self.spearman_mean, "ci95": self.spearman_ci},
            "quality": {
                _fraction_key(r): {"mean": m, "ci95": c}
                for r, m, c in zip(self.fractions, self.quality_mean, self.quality_ci, strict=True)
            },
        }


def _fraction_key(r: float) -> str:
    return f"{r:g}"


def _check_fractions(fractions: Iterable[float]) -> tuple[float, ...]:
    out = tuple(float(r) for r in fractions)
    if not out or not all(0.0 <= r <= 1.0 for r in out):
        raise ParameterError("fractions", f"{{param}} must lie in [0, 1]; got {list(out)}.")
    return out


def _check_qualities(q_light: Any, q_heavy: Any, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    ql = np.asarray(q_light, dtype=np.float64)
    qh = np.asarray(q_heavy, dtype=np.float64)
    if ql.ndim != 1 or qh.shape != ql.shape or (n is not None and ql.shape != (n,)):
        raise HadisError(
            f"Light and heavy qualities must be two [n] vectors matching the scores; got "
            f"{ql.shape} and {qh.shape}."
        )
    if len(ql) == 0:
        raise HadisError("Cannot evaluate routing on zero prompts.")
    if not (np.isfinite(ql).all() and np.isfinite(qh).all()):
        raise HadisError("The light or heavy qualities contain a NaN or infinity.")
    return ql, qh


def evaluate_routing(
    scores: Any,
    q_light: Any,
    q_heavy: Any,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    *,
    higher_is_better: bool = True,
) -> RoutingEvaluation:
    """Mean quality with the top-``round(r n)`` prompts by score on heavy, the rest on light."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise HadisError("Routing scores must be a finite [n] vector.")
    ql, qh = _check_qualities(q_light, q_heavy, len(s))
    fr = _check_fractions(fractions)
    n = len(s)
    diff = qh - ql
    order = np.argsort(-s, kind="stable")
    ss, ds = s[order], diff[order]
    csum = np.r_[0.0, np.cumsum(ds)]
    base = float(ql.mean())
    ks, qs = [], []
    for r in fr:
        k = int(np.round(r * n))  # as the sweep rounds
        if k == 0:
            heavy = 0.0
        else:
            v = ss[k - 1]
            first = int(np.searchsorted(-ss, -v, side="left"))  # ss is descending
            last = int(np.searchsorted(-ss, -v, side="right"))
            tied = csum[last] - csum[first]
            heavy = csum[first] + (k - first) / (last - first) * tied
        ks.append(k)
        qs.append(base + float(heavy) / n)
    improvement = diff if higher_is_better else -diff
    return RoutingEvaluation(fr, tuple(ks), tuple(qs), spearman(s, improvement))


def random_routing(
    q_light: Any,
    q_heavy: Any,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    *,
    n_seeds: int = DEFAULT_RANDOM_SEEDS,
    seed: int = 0,
    higher_is_better: bool = True,
) -> RandomRoutingEvaluation:
    """Routing by uniformly random scores, repeated over seeds: the baseline to beat.

    Its expected quality at fraction r is exactly ``mean(q_light) + k/n mean(q_heavy -
    q_light)``; the seeds show how far one random draw strays from it.
    """
    ql, qh = _check_qualities(q_light, q_heavy, None)
    fr = _check_fractions(fractions)
    if int(n_seeds) < 2:
        raise ParameterError(
            "n_seeds", "Random routing needs {param} >= 2 seeds for a confidence interval."
        )
    rng = np.random.default_rng(seed)
    Q = np.empty((int(n_seeds), len(fr)))
    rho = np.empty(int(n_seeds))
    for t in range(int(n_seeds)):
        ev = evaluate_routing(rng.random(len(ql)), ql, qh, fr, higher_is_better=higher_is_better)
        Q[t] = ev.quality
        rho[t] = 0.0 if ev.spearman is None else ev.spearman
    half = Z95 / math.sqrt(len(Q))
    return RandomRoutingEvaluation(
        fractions=fr,
        n_seeds=int(n_seeds),
        quality_mean=tuple(float(x) for x in Q.mean(axis=0)),
        quality_ci=tuple(float(x) for x in Q.std(axis=0, ddof=1) * half),
        spearman_mean=float(rho.mean()),
        spearman_ci=float(rho.std(ddof=1) * half),
    )


@dataclass
class CalibrationResult:
    """A fit and its held-out evaluation against HADIS's weights, random routing and the oracle."""

    method: str
    alpha: float
    seed: int
    train_fraction: float
    features: list[str]
    weights: np.ndarray
    intercept: float
    n_train: int
    n_test: int
    higher_is_better: bool
    fitted: RoutingEvaluation
    default: RoutingEvaluation | None
    random: RandomRoutingEvaluation
    oracle: RoutingEvaluation
    light_only: float
    heavy_only: float
    metric: str | None = None
    pair: tuple[str, str] | None = None
    previous_weights: list[float] | None = None
    stored: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def held_out(self) -> dict[str, Any]:
        return {
            "n": self.n_test,
            "fitted": self.fitted.to_dict(),
            "default": None if self.default is None else self.default.to_dict(),
            "random": self.random.to_dict(),
            "oracle": self.oracle.to_dict(),
            "light_only": self.light_only,
            "heavy_only": self.heavy_only,
        }

    def spec_record(self) -> dict[str, Any]:
        """The ``fitted`` entry of the stored router spec: how to reproduce and judge it."""
        return {
            "method": self.method,
            "alpha": self.alpha,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "pair": list(self.pair) if self.pair else None,
            "train_fraction": self.train_fraction,
            "seed": self.seed,
            "n_train": self.n_train,
            "target": "per-prompt improvement of heavy over light",
            "previous_weights": self.previous_weights,
            "held_out": self.held_out(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.spec_record(),
            "features": list(self.features),
            "weights": [float(x) for x in self.weights],
            "default_weights": list(DEFAULT_WEIGHTS) if self.default is not None else None,
            "intercept": self.intercept,
            "stored": self.stored,
            **self.extra,
        }


class CalibrationOptions(TypedDict, total=False):
    """How :func:`calibrate` fits and evaluates, as callers that forward them spell them."""

    method: str
    alpha: float
    train_fraction: float
    seed: int
    fractions: Iterable[float]
    random_seeds: int


def calibrate(
    Z: Any,
    q_light: Any,
    q_heavy: Any,
    *,
    features: Sequence[str] = FEATURES,
    higher_is_better: bool = True,
    method: str = "ridge",
    alpha: float = 1.0,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = 0,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    random_seeds: int = DEFAULT_RANDOM_SEEDS,
    default_weights: Sequence[float] | None = DEFAULT_WEIGHTS,
) -> CalibrationResult:
    """Fit on a seeded train split of z-scores ``Z``, evaluate everything on the rest.

    ``default_weights`` is the comparison router (HADIS's by default; ``None`` skips
    it, e.g. when the run's features are not HADIS's eight).
    """
    Zm = np.asarray(Z, dtype=np.float64)
    ql, qh = _check_qualities(q_light, q_heavy, None)
    if Zm.ndim != 2 or Zm.shape[0] != len(ql) or Zm.shape[1] != len(features):
        raise HadisError(
            f"Calibration features have shape {Zm.shape}, expected ({len(ql)}, {len(features)})."
        )
    n = len(ql)
    if n < MIN_CALIBRATION_PROMPTS:
        raise HadisError(
            f"Calibration needs at least {MIN_CALIBRATION_PROMPTS} prompts; the run has {n}."
        )
    tf = float(train_fraction)
    if not 0.0 < tf < 1.0:
        raise ParameterError(
            "train_fraction", f"{{param}} must lie strictly between 0 and 1, not {tf}."
        )
    if int(random_seeds) < 2:
        raise ParameterError(
            "random_seeds", "Random routing needs {param} >= 2 seeds for a confidence interval."
        )
    at_most("random_seeds", int(random_seeds), MAX_RANDOM_SEEDS, "seeds")
    fr = _check_fractions(fractions)
    n_train = min(max(round(tf * n), 2), n - 2)
    perm = np.random.default_rng(seed).permutation(n)
    train, test = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    improvement = (qh - ql) if higher_is_better else (ql - qh)
    cal = RouterCalibrator(method, alpha, seed=seed).fit(Zm[train], improvement[train])
    assert cal.weights_ is not None and cal.intercept_ is not None
    Zt, lt, ht = Zm[test], ql[test], qh[test]

    def ev(scores: np.ndarray) -> RoutingEvaluation:
        return evaluate_routing(scores, lt, ht, fr, higher_is_better=higher_is_better)

    default = None
    if default_weights is not None:
        dw = np.asarray(default_weights, dtype=np.float64)
        if dw.shape == (Zm.shape[1],):
            default = ev(Zt @ dw)
    return CalibrationResult(
        method=method,
        alpha=float(alpha),
        seed=int(seed),
        train_fraction=tf,
        features=list(features),
        weights=cal.weights_,
        intercept=float(cal.intercept_),
        n_train=len(train),
        n_test=len(test),
        higher_is_better=higher_is_better,
        fitted=ev(cal.score(Zt)),
        default=default,
        random=random_routing(
            lt, ht, fr, n_seeds=random_seeds, seed=seed, higher_is_better=higher_is_better
        ),
        oracle=ev(improvement[test]),
        light_only=float(lt.mean()),
        heavy_only=float(ht.mean()),
    )
