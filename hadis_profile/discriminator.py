"""HADIS's quality discriminator, the parts a serving stack and the compiler need.

HADIS escalates a prompt to the heavy model when the light model's images look
worse than a threshold; the signal is a discriminator trained to tell real
images (label 1) from generated ones (label 0), and the confidence is P(real).
The table records which scorer its thresholds were calibrated on, because
serving must use that very scorer.

This module is numpy-only: the head's file format and identifiers, the
evaluation statistics, and the spec the table carries. Training, the frozen
CLIP encoder and scoring a run's images need torch and live in
:mod:`hadis_profile.measure.discriminator` (the head and the scorers),
:mod:`hadis_profile.measure.encoder` (the encoder and its feature cache) and
:mod:`hadis_profile.measure.discriminator_run` (``discriminator train|score``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from hadis_profile.fileio import sha256_text

DEFAULT_ENCODER = "openai/clip-vit-base-patch32"
HIDDEN = 256
HEAD_FORMAT = "hadis-profile/discriminator-head/1"
FEATURE_FORMAT = "hadis-profile/clip-image-embeds-l2/1"
LEARNED_PREFIX = "confidence:hadis-head"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: Where, inside a run folder, heads and the feature cache go by default.
RUN_SUBDIR = "discriminator"
META_KEY = "hadis_profile"
HEAD_SHAPES = {"0.weight": (HIDDEN, None), "0.bias": (HIDDEN,), "2.weight": (2, HIDDEN)}


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties counted half.

    ``labels`` are 1 (positive) / 0; needs at least one of each.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) over each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def stratified_split(labels: Any, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: per class a seeded shuffle, ``round(f * n)`` held out,
    at least one per class on each side (every class needs 2 or more samples)."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(1, round(val_fraction * len(idx))), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def set_hash(hashes: Iterable[str]) -> str:
    """sha256 of a set of file hashes (sorted, newline-joined): the data's identity."""
    return sha256_text("\n".join(sorted(hashes)))


def discriminator_for_table(provenance: dict, scorer: str) -> dict:
    """The spec of ``scorer`` as the run recorded it (or just its id) for the table."""
    known = provenance.get("discriminators") or {}
    if scorer in known:
        return known[scorer]
    current = provenance.get("discriminator")
    if isinstance(current, dict) and current.get("scorer_id") == scorer:
        return current
    return {"scorer_id": scorer}
