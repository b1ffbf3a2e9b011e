"""HADIS's rule-based prompt router: eight linguistic features, z-normalised, weighted.

* ``features``: the NLP features (lexicon, spatial phrases, spaCy loading, the
  extractor) and :data:`FEATURES`.
* ``model``: :class:`Router` (normalisation, scoring, routing, the spec that
  ``table.json`` carries, :meth:`Router.from_table`) and :func:`zscores`.
* ``calibration``: :class:`RouterCalibrator`, rank statistics and held-out
  evaluation against HADIS's weights, random routing and the oracle.

The router never touches a run store; :mod:`hadis_profile.router_run` applies it
to one. Only numpy and stdlib at import time (spaCy and wordfreq load lazily).
"""

from __future__ import annotations

from hadis_profile.router.calibration import (
    CALIBRATION_METHODS,
    DEFAULT_FRACTIONS,
    DEFAULT_MAX_PAIRS,
    DEFAULT_RANDOM_SEEDS,
    DEFAULT_TRAIN_FRACTION,
    MIN_CALIBRATION_PROMPTS,
    Z95,
    CalibrationResult,
    RandomRoutingEvaluation,
    RouterCalibrator,
    RoutingEvaluation,
    calibrate,
    evaluate_routing,
    random_routing,
    spearman,
)
from hadis_profile.router.features import (
    ABSTRACT_BELOW,
    ATTRIBUTE_DEPS,
    BUILTIN_ABSTRACT_WORDS,
    BUILTIN_LEXICON_NAME,
    BUILTIN_SPATIAL_TERMS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CHARS,
    DEFAULT_MODEL,
    ENTITY_LABELS,
    FEATURES,
    MISSING_RATING,
    MODEL_ALIASES,
    NEEDED_PIPES,
    OBJECT_DEPS,
    RARE_BELOW,
    UNUSED_PIPES,
    Lexicon,
    load_lexicon,
    load_nlp,
    load_spatial_terms,
    write_features_csv,
)
from hadis_profile.router.model import (
    DDOF,
    DEFAULT_WEIGHTS,
    SPEC_VERSION,
    Router,
    normalisation_stats,
    zscores,
)

__all__ = [
    "ABSTRACT_BELOW",
    "ATTRIBUTE_DEPS",
    "BUILTIN_ABSTRACT_WORDS",
    "BUILTIN_LEXICON_NAME",
    "BUILTIN_SPATIAL_TERMS",
    "CALIBRATION_METHODS",
    "DDOF",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_FRACTIONS",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_PAIRS",
    "DEFAULT_MODEL",
    "DEFAULT_RANDOM_SEEDS",
    "DEFAULT_TRAIN_FRACTION",
    "DEFAULT_WEIGHTS",
    "ENTITY_LABELS",
    "FEATURES",
    "MIN_CALIBRATION_PROMPTS",
    "MISSING_RATING",
    "MODEL_ALIASES",
    "NEEDED_PIPES",
    "OBJECT_DEPS",
    "RARE_BELOW",
    "SPEC_VERSION",
    "UNUSED_PIPES",
    "Z95",
    "CalibrationResult",
    "Lexicon",
    "RandomRoutingEvaluation",
    "Router",
    "RouterCalibrator",
    "RoutingEvaluation",
    "calibrate",
    "evaluate_routing",
    "load_lexicon",
    "load_nlp",
    "load_spatial_terms",
    "normalisation_stats",
    "random_routing",
    "spearman",
    "write_features_csv",
    "zscores",
]
