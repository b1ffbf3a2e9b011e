"""The rule-based prompt router: HADIS's eight features, z-normalised, weighted.

HADIS sends a prompt straight to the heavy model when ``w · z(features) >=
threshold``; the features are counted in :mod:`hadis_profile.router.features`.

Normalisation uses the profiling set's mean and *sample* std (ddof=1, as the
authors' pandas code does); a feature with zero std contributes z = 0. The
whole router (weights, stats, lexicon, spatial phrases, model) round-trips
through :meth:`Router.to_spec`, which is what ``table.json`` stores under
``payload.router``, so a serving stack rebuilds it from the table alone.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.router.features import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CHARS,
    DEFAULT_MODEL,
    FEATURES,
    RARE_BELOW,
    Lexicon,
    _Extractor,
    _wordfreq_version,
    load_lexicon,
    load_nlp,
    load_spatial_terms,
    prepare_text,
)

#: HADIS's published weights, in the order of :data:`FEATURES`.
DEFAULT_WEIGHTS: tuple[float, ...] = (0.85, 0.32, 0.72, 0.99, 0.76, 0.07, 0.78, 0.01)
SPEC_VERSION = "1.0"
#: Delta degrees of freedom of the normalisation's std (sample std, as HADIS's pandas).
DDOF = 1


def normalisation_stats(X: Any, ddof: int = DDOF) -> tuple[np.ndarray, np.ndarray]:
    """Column means and stds of ``X`` [n, k]; the std is 0 when ``n <= ddof`` (undefined)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0, ddof=ddof) if X.shape[0] > ddof else np.zeros(X.shape[1])
    return mean, std


def zscores(features: Any, mean: Any, std: Any) -> np.ndarray:
    """``(x - mean) / std`` with z = 0 for a zero-std feature, as the router scores."""
    X = np.asarray(features, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sd = np.asarray(std, dtype=np.float64)
    return np.where(sd > 0, (X - mu) / np.where(sd > 0, sd, 1.0), 0.0)


def _float_vector(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise HadisError(f"The router {what} must be {len(FEATURES)} numbers.") from None
    if arr.shape != (len(FEATURES),):
        raise HadisError(
            f"The router {what} must be {len(FEATURES)} numbers (one per feature), "
            f"got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise HadisError(f"The router {what} contain a NaN or infinity.")
    return arr


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, (str, bytes)):
        raise HadisError("Pass a list of prompts, not a single string (use route() for one).")
    try:
        texts = list(prompts)
    except TypeError:
        raise HadisError(
            f"Prompts must be a list of strings, not {type(prompts).__name__}."
        ) from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise HadisError(f"Prompt {i} is a {type(t).__name__}, not a string.")
    return texts


class Router:
    """HADIS's rule-based router; scikit-learn-like, state in trailing-underscore attributes.

    ``mean_``/``std_``/``n_prompts_`` are set by :meth:`fit_normalisation`;
    ``nlp_info_`` once spaCy is loaded (the first call that needs features).
    """

    def __init__(
        self,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        lexicon: Lexicon | str | os.PathLike | None = None,
        spatial_terms: str | os.PathLike | Iterable[str] | None = None,
        model: str = DEFAULT_MODEL,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.weights = _float_vector(weights, "weights")
        self.lexicon = load_lexicon(lexicon)
        self.spatial_terms = load_spatial_terms(spatial_terms)
        if not isinstance(model, str) or not model:
            raise HadisError("The spaCy model must be given by name.")
        self.model = model
        if int(batch_size) < 1 or int(max_chars) < 1:
            raise HadisError("batch_size and max_chars must be positive.")
        self.batch_size = int(batch_size)
        self.max_chars = int(max_chars)
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.n_prompts_: int | None = None
        self.nlp_info_: dict[str, Any] | None = None
        self._expected_nlp: dict[str, Any] | None = None
        self._extractor: _Extractor | None = None

    # ----------------------------------------------------------------- features

    def _get_extractor(self) -> _Extractor:
        if self._extractor is None:
            nlp, info = load_nlp(self.model)
            self._extractor = _Extractor(nlp, self.lexicon, self.spatial_terms)
            self.nlp_info_ = dict(info)
            exp = self._expected_nlp
            if exp and exp.get("version") and exp.get("version") != info["version"]:
                warnings.warn(
                    f"This router was profiled with spaCy model {exp.get('package')} "
                    f"{exp.get('version')}, but {info['package']} {info['version']} is "
                    "installed; parser-based features may differ on a few percent of prompts.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._extractor

    def features(self, prompts: Iterable[str]) -> np.ndarray:
        """The ``[n, 8]`` int64 feature counts, batched through ``nlp.pipe``."""
        texts = _check_prompts(prompts)
        out = np.zeros((len(texts), len(FEATURES)), dtype=np.int64)
        todo = [i for i, t in enumerate(texts) if t.strip()]  # empty -> all zero
        if not todo:
            return out
        long = sum(len(texts[i]) > self.max_chars for i in todo)
        if long:
            warnings.warn(
                f"{long} prompt(s) longer than {self.max_chars} characters were truncated "
                "before feature extraction.",
                RuntimeWarning,
                stacklevel=2,
            )
        ex = self._get_extractor()
        if len(todo) == 1:  # route(): skip pipe()'s batching overhead
            docs: Iterable[Any] = [ex.nlp(prepare_text(texts[todo[0]], self.max_chars))]
        else:
            prepared = (prepare_text(texts[i], self.max_chars) for i in todo)
            docs = ex.nlp.pipe(prepared, batch_size=self.batch_size)
        for i, doc in zip(todo, docs, strict=True):
            out[i] = ex.doc_features(doc)
        return out

    # ----------------------------------------------------------------- normalisation

    def fit_normalisation(
        self, X: Any = None, *, prompts: Iterable[str] | None = None, features: Any = None
    ) -> Router:
        """Fit ``mean_``/``std_`` (ddof=1) on the profiling set's feature matrix ``X`` [n, 8].

        ``prompts=`` counts the features first (the same as :meth:`fit_prompts`).
        ``features=`` is the deprecated name of ``X``, kept while callers move over.
        Returns ``self``.
        """
        if features is not None:
            warnings.warn(
                "Router.fit_normalisation(features=X) is deprecated; pass X as the first argument.",
                DeprecationWarning,
                stacklevel=2,
            )
            if X is not None:
                raise ParameterError("features", "Give X or the deprecated {param}, not both.")
            X = features
        if (X is None) == (prompts is None):
            raise ParameterError(
                "X", "fit_normalisation needs the feature matrix {param} or prompts=, exactly one."
            )
        if prompts is not None:
            X = self.features(prompts)
        elif isinstance(X, str) or (isinstance(X, Sequence) and X and isinstance(X[0], str)):
            raise ParameterError(
                "X", "{param} holds prompts, not features; pass prompts= or call fit_prompts()."
            )
        X = self._check_matrix(X)
        if X.shape[0] == 0:
            raise HadisError("Cannot fit the router's normalisation on zero prompts.")
        self.mean_, self.std_ = normalisation_stats(X)
        self.n_prompts_ = int(X.shape[0])
        return self

    def fit_prompts(self, prompts: Iterable[str]) -> Router:
        """Count the profiling ``prompts``' features and fit the normalisation on them."""
        return self.fit_normalisation(prompts=prompts)

    @property
    def is_fitted(self) -> bool:
        return self.mean_ is not None and self.std_ is not None

    def _check_matrix(self, X: Any) -> np.ndarray:
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise HadisError("Router features must be a numeric [n, 8] array.") from None
        if arr.ndim != 2 or arr.shape[1] != len(FEATURES):
            raise HadisError(f"Router features must have shape [n, 8], got {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            raise HadisError("Router features contain a NaN or infinity.")
        return arr

    def normalise(self, X: Any) -> np.ndarray:
        """z-scores of ``X`` [n, 8]; a zero-std (constant) feature gives z = 0 rather than NaN."""
        if not self.is_fitted:
            raise HadisError(
                "The router has no normalisation yet; call fit_normalisation() on the "
                "profiling prompts first."
            )
        return zscores(self._check_matrix(X), self.mean_, self.std_)

    def score_features(self, X: Any) -> np.ndarray:
        """``w · z`` for a precomputed feature matrix ``X`` [n, 8] (higher = harder)."""
        return self.normalise(X) @ self.weights

    def score(self, prompts: Iterable[str]) -> np.ndarray:
        """Router scores for a batch of prompts (higher = harder)."""
        texts = _check_prompts(prompts)
        if not self.is_fitted:
            self.normalise(np.zeros((0, len(FEATURES))))  # raises the one-sentence error
        return self.score_features(self.features(texts))

    def route(self, prompt: str, threshold: float | None) -> str:
        """``"heavy"`` iff score >= threshold; ``threshold=None`` means never heavy."""
        if not isinstance(prompt, str):
            raise HadisError(f"A prompt must be a string, not {type(prompt).__name__}.")
        if threshold is None:
            return "light"
        try:
            t = float(threshold)
        except (TypeError, ValueError):
            raise HadisError(f"The router threshold {threshold!r} is not a number.") from None
        if math.isnan(t):
            raise HadisError("The router threshold is NaN.")
        return "heavy" if float(self.score([prompt])[0]) >= t else "light"

    # ----------------------------------------------------------------- spec

    def to_spec(self) -> dict[str, Any]:
        """The JSON-able spec stored in ``table.json`` as ``payload.router``."""
        if not self.is_fitted:
            raise HadisError("Fit the router's normalisation before exporting its spec.")
        nlp = self.nlp_info_ or self._expected_nlp or {}
        return {
            "spec_version": SPEC_VERSION,
            "features": list(FEATURES),
            "weights": [float(x) for x in self.weights],
            "mean": [float(x) for x in self.mean_],
            "std": [float(x) for x in self.std_],
            "ddof": DDOF,
            "n_prompts": self.n_prompts_,
            "nlp": {
                "model": self.model,
                "package": nlp.get("package"),
                "version": nlp.get("version"),
                "spacy_version": nlp.get("spacy_version"),
                "components": nlp.get("components"),
            },
            "rarity": {
                "source": "wordfreq",
                "lang": "en",
                "rare_below": RARE_BELOW,
                "wordfreq_version": _wordfreq_version(),
            },
            "lexicon": self.lexicon.to_spec(),
            "spatial_terms": list(self.spatial_terms),
            "max_chars": self.max_chars,
        }

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        lexicon: Lexicon | str | os.PathLike | None = None,
        spatial_terms: str | os.PathLike | Iterable[str] | None = None,
        model: str | None = None,
    ) -> Router:
        """Rebuild the exact router; keyword overrides fill in a minimal (stats-only) spec."""
        if not isinstance(spec, Mapping):
            raise HadisError("The router spec is not a JSON object.")
        for key in ("features", "weights", "mean", "std"):
            if key not in spec:
                raise HadisError(f"The router spec is missing the field '{key}'.")
        version = str(spec.get("spec_version", SPEC_VERSION))
        if not version.split(".", 1)[0].isdigit() or int(version.split(".", 1)[0]) > int(
            SPEC_VERSION.split(".", 1)[0]
        ):
            raise HadisError(
                f"The router spec has version {version}, which this hadis-profile "
                f"({SPEC_VERSION}) does not understand; upgrade hadis-profile."
            )
        if list(spec["features"]) != list(FEATURES):
            raise HadisError(
                f"The router spec's features {list(spec['features'])} are not the ones this "
                f"hadis-profile computes ({list(FEATURES)})."
            )
        rarity = spec.get("rarity") or {}
        if rarity.get("rare_below", RARE_BELOW) != RARE_BELOW:
            raise HadisError(
                f"The router spec uses rare_below={rarity['rare_below']}, but this "
                f"hadis-profile computes rarity below {RARE_BELOW}."
            )
        if lexicon is None:
            if spec.get("lexicon") is not None:
                lexicon = Lexicon.from_spec(spec["lexicon"])
            else:
                warnings.warn(
                    "The router spec records no lexicon; using the built-in abstract-word list.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if spatial_terms is None and spec.get("spatial_terms") is not None:
            spatial_terms = list(spec["spatial_terms"])
        nlp = spec.get("nlp") or {}
        router = cls(
            weights=spec["weights"],
            lexicon=lexicon,
            spatial_terms=spatial_terms,
            model=model or nlp.get("model") or DEFAULT_MODEL,
            max_chars=int(spec.get("max_chars", DEFAULT_MAX_CHARS)),
        )
        router.mean_ = _float_vector(spec["mean"], "mean")
        router.std_ = _float_vector(spec["std"], "std")
        if np.any(router.std_ < 0):
            raise HadisError("The router spec has a negative std.")
        n = spec.get("n_prompts")
        router.n_prompts_ = int(n) if isinstance(n, int) else None
        router._expected_nlp = dict(nlp) if nlp else None
        return router

    @classmethod
    def from_table(cls, table: Any) -> Router:
        """From a ``table.json`` path, a loaded :class:`~hadis_profile.table.CascadeTable`,
        or a table document dict."""
        from hadis_profile.table import CascadeTable, load_table

        if isinstance(table, CascadeTable):
            tbl = table
        elif isinstance(table, Mapping):
            tbl = CascadeTable.from_document(dict(table))
        elif isinstance(table, (str, os.PathLike)):
            tbl = load_table(table)
        else:
            raise HadisError(f"Cannot read a cascade table from a {type(table).__name__}.")
        if not tbl.router:
            raise HadisError(f"{tbl.source} has no router (it was built without one).")
        # payload.router holds what scoring needs (weights, normalisation); the full spec
        # (lexicon, spatial terms, spaCy model) that rebuilds the exact features is the
        # run's, kept in provenance.router. Use it when it describes the same router.
        full = tbl.provenance.get("router")
        keys = ("features", "weights", "mean", "std")
        if isinstance(full, Mapping) and all(full.get(k) == tbl.router[k] for k in keys):
            return cls.from_spec(dict(full))
        return cls.from_spec(tbl.router)

    def __repr__(self) -> str:
        fitted = f"fitted on {self.n_prompts_}" if self.is_fitted else "not fitted"
        return f"Router(model={self.model!r}, lexicon={self.lexicon.name!r}, {fitted})"
