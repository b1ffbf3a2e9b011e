"""Metric identities: which way is better, and whether a metric is per image or per set.

A metric id is ``<scorer>:<checkpoint>``, e.g. ``clip_score:openai/clip-vit-large-patch14``
or ``fid:inception-v3-compat``. The scorer prefix fixes the direction, so a
table compiled on any checkpoint of a known scorer is ranked correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

from hadis_profile.errors import HadisError, InputError


@dataclass(frozen=True)
class MetricInfo:
    scorer: str
    higher_is_better: bool
    set_level: bool
    description: str


KNOWN_SCORERS: dict[str, MetricInfo] = {
    "clip_score": MetricInfo("clip_score", True, False, "100 x max(cos(image, text), 0)"),
    "pick_score": MetricInfo("pick_score", True, False, "PickScore preference logit"),
    "confidence": MetricInfo("confidence", True, False, "discriminator P(real)"),
    "fid": MetricInfo("fid", False, True, "Frechet distance to a reference set"),
}


def scorer_of(metric_id: str) -> str:
    return metric_id.split(":", 1)[0]


def info(metric_id: str) -> MetricInfo:
    """The metric's direction and kind; an unknown scorer is a clear error."""
    try:
        return KNOWN_SCORERS[scorer_of(metric_id)]
    except KeyError:
        known = ", ".join(sorted(KNOWN_SCORERS))
        raise InputError(
            f"Unknown metric '{metric_id}': its scorer must be one of {known}."
        ) from None


def higher_is_better(metric_id: str) -> bool:
    return info(metric_id).higher_is_better


def resolve_metric(requested: str | None, available: list[str]) -> str:
    """Pick the metric a user named (exact id or bare scorer name) among those measured."""
    if not available:
        raise HadisError("The run has no quality metric to rank configurations by.")
    if requested is None:
        return available[0]
    if requested in available:
        return requested
    matches = [m for m in available if scorer_of(m) == requested]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"Metric '{requested}' is ambiguous; choose one of {', '.join(matches)}.")
    raise InputError(f"Unknown metric '{requested}': this run has {', '.join(available)}.")
