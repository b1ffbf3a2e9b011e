"""Scorers, discriminators and feature extractors by name or from user code.

``clip_score[:ckpt]`` and ``pick_score[:model[,processor]]`` name the built-in
scorers (:mod:`.scorers`); ``package.module:callable`` loads a user's own: an
instance or subclass of the interface, a factory returning one, or a plain
``fn(images, prompts)`` (wrapped in :class:`FunctionScorer` /
:class:`FunctionDiscriminator`). Loading is the only thing here: what a scorer
computes lives with it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.measure.scorers import (
    DEFAULT_CLIP,
    DEFAULT_PICKSCORE,
    DEFAULT_PICKSCORE_PROCESSOR,
    CLIPScorer,
    Discriminator,
    FeatureExtractor,
    PickScorer,
    Scorer,
    check_pairs,
    to_uint8_chw,
)
from hadis_profile.metrics import info


class FunctionScorer(Scorer):
    """A plain ``fn(images, prompts) -> array`` as a :class:`Scorer`."""

    def __init__(self, fn: Callable[..., Any], metric_id: str, batch_size: int = 16) -> None:
        self.fn, self.metric_id, self.batch_size = fn, metric_id, batch_size

    def _score_batch(self, images: list[Any], prompts: list[str]) -> np.ndarray:
        return np.asarray(self.fn(images, prompts), dtype=np.float64)


class FunctionDiscriminator(Discriminator):
    """A plain ``fn(images, prompts) -> array`` as a :class:`Discriminator`."""

    def __init__(self, fn: Callable[..., Any], scorer_id: str) -> None:
        self.fn, self.scorer_id = fn, scorer_id

    def confidence(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        imgs = to_uint8_chw(images)
        check_pairs(imgs, prompts)
        return np.asarray(self.fn(imgs, list(prompts)), dtype=np.float64).reshape(-1)


def import_object(ref: str) -> Any:
    """``package.module:attr.path`` -> the object; one sentence if it is not there."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise HadisError(f"Plug-in '{ref}' must look like 'package.module:callable'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise HadisError(f"Cannot import plug-in module '{module_name}' ({e}).") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HadisError(f"Plug-in module '{module_name}' has no '{attr}'.") from None
    return obj


def _instantiate(
    obj: Any, base: type, kwargs: dict[str, Any], *, any_callable: bool = False
) -> Any:
    """``obj`` as a ``base``: itself, its subclass instantiated with ``kwargs``, or what a
    factory returns; None otherwise. A factory is a callable without required positional
    parameters (:func:`_is_factory`), or any callable with ``any_callable``: scorers and
    discriminators may be plain ``fn(images, prompts)`` functions, extractors may not."""
    if isinstance(obj, base):
        return obj
    if inspect.isclass(obj) and issubclass(obj, base):
        return obj(**kwargs)
    if callable(obj) and (any_callable or _is_factory(obj)):
        made = obj(**kwargs)
        return made if isinstance(made, base) else None
    return None


def load_scorer(ref: str, *, metric_id: str | None = None, **kwargs: Any) -> Scorer:
    """A :class:`Scorer` from ``module:callable`` (an instance, a subclass, a factory
    returning one, or a plain ``fn(images, prompts)`` given a ``metric_id``)."""
    obj = import_object(ref)
    scorer = _instantiate(obj, Scorer, kwargs)
    if scorer is None:
        if not callable(obj):
            raise HadisError(f"Plug-in '{ref}' is neither a Scorer nor a callable.")
        mid = metric_id or getattr(obj, "metric_id", None)
        if not mid:
            raise HadisError(
                f"Plug-in '{ref}' is a plain function; give it a metric id such as "
                "'clip_score:my-checkpoint'."
            )
        scorer = FunctionScorer(obj, mid)
    elif metric_id:
        scorer.metric_id = metric_id
    info(scorer.metric_id)  # an unknown scorer prefix is one clear sentence
    return scorer


def load_discriminator(ref: str, *, scorer_id: str | None = None, **kwargs: Any) -> Discriminator:
    """A :class:`Discriminator` from ``module:callable`` (as :func:`load_scorer`)."""
    obj = import_object(ref)
    disc = _instantiate(obj, Discriminator, kwargs)
    if disc is None:
        if not callable(obj):
            raise HadisError(f"Plug-in '{ref}' is neither a Discriminator nor a callable.")
        disc = FunctionDiscriminator(obj, scorer_id or getattr(obj, "scorer_id", None) or ref)
    elif scorer_id:
        disc.scorer_id = scorer_id
    return disc


def load_extractor(ref: str, **kwargs: Any) -> FeatureExtractor:
    """A :class:`FeatureExtractor` from ``module:callable`` (instance, subclass or factory)."""
    obj = import_object(ref)
    ext = _instantiate(obj, FeatureExtractor, kwargs, any_callable=True)
    if ext is None:
        raise HadisError(f"Plug-in '{ref}' does not give a FeatureExtractor.")
    return ext


def _is_factory(fn: Callable[..., Any]) -> bool:
    """A callable with no required positional parameters is taken as a factory."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in params
    )


# --------------------------------------------------------------------------- by name


def make_scorer(
    name: str,
    *,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    online: bool = False,
    batch_size: int = 16,
) -> Scorer:
    """``clip_score[:ckpt]``, ``pick_score[:model[,processor]]`` or ``module:callable``."""
    kind, _, ckpt = name.partition(":")
    common = {"device": device, "cache_dir": cache_dir, "online": online, "batch_size": batch_size}
    if kind == "clip_score":
        return CLIPScorer(ckpt or DEFAULT_CLIP, **common)
    if kind == "pick_score":
        model, _, proc = (ckpt or DEFAULT_PICKSCORE).partition(",")
        return PickScorer(model, proc or DEFAULT_PICKSCORE_PROCESSOR, **common)
    if ckpt:
        return load_scorer(name)
    raise HadisError(
        f"Unknown scorer '{name}'; use clip_score[:checkpoint], pick_score[:model[,processor]] "
        "or a module:callable plug-in."
    )
