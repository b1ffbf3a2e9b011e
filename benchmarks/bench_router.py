"""Benchmark: router feature extraction, prompts per second in one process.

Compares :meth:`Router.features` (``nlp.pipe`` batches, lemmatizer/senter not
loaded, per-token lexical flags cached) against a HADIS-style baseline that runs
the full pipeline prompt by prompt and looks every token up afresh. Also reports
the single-prompt ``route()`` latency a serving stack sees. Target: >= 300
prompts/s batched on a 2-core machine. Each batched run uses a fresh Router (cold
token cache) on the already-loaded pipeline; the figure is the median of runs.

Run: ``python benchmarks/bench_router.py [--n 2000] [--baseline-n 300] [--repeats 5]``.
Uses the HADIS ImageNet prompts from ../shared/data when present, else synthetic ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py

from hadis_profile.prompts import load_prompts as read_prompt_set
from hadis_profile.router import (
    DEFAULT_BATCH_SIZE,
    Lexicon,
    Router,
    load_nlp,
    load_spatial_terms,
)

REF = Path(__file__).resolve().parents[2] / "shared" / "data" / "hadis-reference"


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    adj = ["red", "small", "ancient", "shiny", "wooden", "surreal", "happy", "giant"]
    noun = ["cat", "castle", "robot", "bicycle", "forest", "teapot", "dragon", "city"]
    verb = ["sits", "runs", "floats", "glows", "rests", "stands"]
    prep = ["on", "behind", "next to", "in front of", "under", "near"]
    return [
        f"a {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} {rng.choice(prep)} "
        f"the {rng.choice(adj)} {rng.choice(noun)} in Paris"
        for _ in range(n)
    ]


def load_prompts(n: int) -> tuple[list[str], str]:
    f = REF / "prompts_imagenet1k_5k.txt"
    if f.is_file():
        prompts = list(read_prompt_set(f, encoding="ascii", errors="ignore", dedup=False))
        reps = -(-n // len(prompts))
        return (prompts * reps)[:n], f"HADIS ImageNet prompts ({f})"
    return synthetic_prompts(n), "synthetic prompts (../shared/data absent)"


def baseline_features(nlp, word_frequency, prompt: str, abstract, single, multi) -> list[int]:
    """HADIS's way: one nlp() call per prompt, full pipeline, a lookup per token."""
    doc = nlp(prompt)
    lowers = [t.text.lower() for t in doc]
    joined = " ".join(lowers)
    return [
        sum(not t.is_punct for t in doc),
        sum(word_frequency(w, "en") < 1e-5 for w in lowers),
        sum(t.dep_ in {"nsubj", "dobj", "pobj"} for t in doc),
        sum(w in abstract for w in lowers),
        sum(t.pos_ == "ADJ" or t.dep_ in {"amod", "acomp"} for t in doc),
        sum(lowers.count(p) for p in single) + sum(joined.count(p) for p in multi),
        sum(t.pos_ == "VERB" for t in doc),
        sum(e.label_ in {"PERSON", "ORG", "GPE"} for e in doc.ents),
    ]


def pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="prompts per batched run")
    ap.add_argument("--baseline-n", type=int, default=300, help="prompts per baseline run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--route-n", type=int, default=200, help="single-prompt route() calls")
    args = ap.parse_args()

    prompts, source = load_prompts(max(args.n, args.baseline_n, args.route_n))
    if (REF / "concreteness.csv").is_file():
        lexicon, spatial = Lexicon.from_csv(REF / "concreteness.csv"), REF / "spatial_terms.txt"
    else:
        lexicon, spatial = Lexicon.builtin(), None
    t0 = time.perf_counter()
    _, info = load_nlp()
    load_s = time.perf_counter() - t0

    print(f"machine : {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"python  : {platform.python_version()}, numpy {np.__version__}")
    print(
        f"nlp     : spaCy {info['spacy_version']}, {info['package']} {info['version']} "
        f"({', '.join(info['components'])}); wordfreq {pkg('wordfreq')}; "
        f"torch {pkg('torch')} (imported by thinc if installed)"
    )
    print(f"prompts : {source}; lexicon {lexicon.name}; pipeline load {load_s:.2f} s")
    print()

    def batched() -> float:
        r = Router(lexicon=lexicon, spatial_terms=spatial, batch_size=args.batch_size)
        t = time.perf_counter()
        r.features(prompts[: args.n])
        return args.n / (time.perf_counter() - t)

    batched()  # warm-up (first batch allocations)
    fast = [batched() for _ in range(args.repeats)]

    import spacy
    from wordfreq import word_frequency

    full = spacy.load(info["package"])  # every component, as HADIS loads it
    terms = load_spatial_terms(spatial)
    single = [t for t in terms if " " not in t]
    multi = [t for t in terms if " " in t]
    abstract = lexicon.abstract_words

    def baseline() -> float:
        t = time.perf_counter()
        for p in prompts[: args.baseline_n]:
            baseline_features(full, word_frequency, p, abstract, single, multi)
        return args.baseline_n / (time.perf_counter() - t)

    baseline()
    slow = [baseline() for _ in range(max(3, args.repeats // 2))]

    r = Router(lexicon=lexicon, spatial_terms=spatial)
    r.fit_normalisation(r.features(prompts[:500]))
    lat = []
    for p in prompts[: args.route_n]:
        t = time.perf_counter()
        r.route(p, 0.0)
        lat.append(time.perf_counter() - t)

    med_fast, med_slow = statistics.median(fast), statistics.median(slow)
    print(f"{'method':<44}{'prompts/s (median)':>20}{'runs':>8}")
    print(
        f"{'Router.features, nlp.pipe batch ' + str(args.batch_size):<44}{med_fast:>20.0f}"
        f"{len(fast):>8}"
    )
    print(f"{'baseline: full pipeline, prompt by prompt':<44}{med_slow:>20.0f}{len(slow):>8}")
    print(
        f"speed-up x{med_fast / med_slow:.1f}; target >= 300 prompts/s: "
        f"{'met' if med_fast >= 300 else 'NOT met'}"
    )
    print(
        f"route() one prompt: p50 {1000 * statistics.median(lat):.2f} ms, "
        f"p99 {1000 * float(np.quantile(lat, 0.99)):.2f} ms over {len(lat)} calls"
    )


if __name__ == "__main__":
    main()
