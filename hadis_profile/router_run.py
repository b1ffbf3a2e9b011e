"""The router applied to a run store: scoring a run's prompts, fitting its weights on the run.

These are the store-facing halves of :mod:`hadis_profile.router` (which never
imports the store): they read a run's prompts or measurements, call the
router's features, normalisation or calibration, and write the result back
into the run's store in one transaction, where ``pareto`` picks it up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hadis_profile import metrics as metric_ids
from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.pareto import measurements_for
from hadis_profile.router import (
    DEFAULT_WEIGHTS,
    FEATURES,
    CalibrationResult,
    Router,
    calibrate,
    normalisation_stats,
    zscores,
)
from hadis_profile.router.calibration import CalibrationOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hadis_profile.measurements import Measurements
    from hadis_profile.store import RunStore


def score_run(
    store: RunStore, router: Router | None = None, *, fit_normalisation: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Compute a run's router features and scores and store them in one transaction.

    ``store`` is an open :class:`~hadis_profile.store.RunStore`. With
    ``fit_normalisation`` the z-statistics
    come from the run's own prompts, as HADIS profiles them; without it (a router
    taken from a table) the router's own statistics are kept.
    Returns ``(features [n, 8], scores [n])``.
    """
    prompts = store.prompts()
    if not prompts:
        raise HadisError(f"The run in {store.root} has no prompts to score.")
    router = router if router is not None else Router()
    t0 = time.perf_counter()
    X = router.features(prompts)
    per_query = (time.perf_counter() - t0) / len(prompts)
    if fit_normalisation:
        router.fit_normalisation(X)
    scores = router.score_features(X)
    spec = router.to_spec()
    spec["overhead_s_per_query"] = per_query
    with store.transaction():
        store.put_router(X, list(FEATURES), scores, spec=spec)
    return X, scores


def _pick_pair(models: Sequence[str], light: str | None, heavy: str | None) -> tuple[str, str]:
    if len(models) < 2:
        raise HadisError("Fitting the router needs a run with at least two models.")
    for param, name in (("light", light), ("heavy", heavy)):
        if name is not None and name not in models:
            raise ParameterError(
                param, f"Unknown model '{name}' for {{param}}: the run has {', '.join(models)}."
            )
    lo = light if light is not None else models[0]
    hi = heavy if heavy is not None else models[-1]
    if lo == hi:
        raise ParameterError(
            "heavy", f"The light and heavy model are both '{lo}'; pick another {{param}} model."
        )
    return lo, hi


def _pick_metric(meas: Measurements, lo: str, hi: str, metric: str | None) -> str:
    """The per-image metric both models were scored on; set-level ones are refused clearly."""
    common = sorted(set(meas.models[lo].quality) & set(meas.models[hi].quality))
    per_image = [m for m in common if not metric_ids.info(m).set_level]
    external = sorted({m for ext in meas.external for m in ext.values} - set(common))
    if not per_image:
        set_level = [*common, *external]
        what = f" (its quality is set-level only: {', '.join(set_level)})" if set_level else ""
        raise HadisError(
            f"The run has no per-prompt quality for '{lo}' and '{hi}'{what}, so the router "
            "cannot be fitted per prompt; score each image with a per-image metric such as "
            "clip_score first."
        )
    if metric is None:
        return per_image[0]
    chosen = metric_ids.resolve_metric(metric, [*common, *external])
    if chosen not in per_image:
        raise HadisError(
            f"Metric '{chosen}' is set-level (one value per image set), so the router cannot "
            f"be fitted to it per prompt; use one of {', '.join(per_image)}."
        )
    return chosen


def fit_run_router(
    store: RunStore,
    *,
    light: str | None = None,
    heavy: str | None = None,
    metric: str | None = None,
    write: bool = True,
    **options: Unpack[CalibrationOptions],
) -> CalibrationResult:
    """Fit a run's router weights on (light, heavy) per-prompt quality; store them unless told not.

    Defaults: the cheapest model as light, the most expensive as heavy, the run's
    first per-image metric. The stored router keeps the run's features and
    normalisation (mean, std) and replaces the weights and scores, so ``pareto``
    picks it up; its spec's ``fitted`` records the split and held-out results.
    The weights stored are the train-split fit that was evaluated, and the sweep
    then scores all prompts, 70% of them in-sample: held-out numbers are the
    honest ones.
    """
    stored = store.router()
    if stored is None:
        raise HadisError(
            f"The run in {store.root} has no router features; score its prompts with the "
            "router first."
        )
    X, names, _, spec = stored
    meas = measurements_for(store)
    lo, hi = _pick_pair(list(meas.models), light, heavy)
    chosen = _pick_metric(meas, lo, hi, metric)
    hib = metric_ids.higher_is_better(chosen)
    if "mean" in spec and "std" in spec:
        mean = np.asarray(spec["mean"], dtype=np.float64)
        std = np.asarray(spec["std"], dtype=np.float64)
    else:  # a spec without statistics: normalise as the router does (ddof=1)
        mean, std = normalisation_stats(X)
    if mean.shape != (len(names),) or std.shape != (len(names),):
        raise HadisError("The stored router spec's mean/std do not match its feature count.")
    Z = zscores(X, mean, std)
    res = calibrate(
        Z,
        meas.models[lo].quality[chosen],
        meas.models[hi].quality[chosen],
        features=names,
        higher_is_better=hib,
        default_weights=DEFAULT_WEIGHTS if list(names) == list(FEATURES) else None,
        **options,
    )
    res.metric = chosen
    res.pair = (lo, hi)
    prev = spec.get("weights")
    res.previous_weights = [float(x) for x in prev] if prev is not None else None
    if write:
        new_spec = dict(spec)
        new_spec.update(
            weights=[float(x) for x in res.weights],
            mean=[float(x) for x in mean],
            std=[float(x) for x in std],
            fitted=res.spec_record(),
        )
        with store.transaction():
            store.put_router(X, names, Z @ res.weights, spec=new_spec)
        res.stored = True
    return res
