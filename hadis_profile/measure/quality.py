"""The quality side of a run: scorers, the discriminator and FID extractors, loaded once.

They are built before any diffusion model (a missing checkpoint fails at once,
not after hours of generation) and shared by every model a worker profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError


@dataclass
class QualityTools:
    """The run's scorers, discriminator and FID extractors, shared by every model."""

    scorers: list[Any]  # Scorer
    discriminator: Any | None  # Discriminator
    extractors: list[Any]  # FeatureExtractor

    def to(self, device: str) -> QualityTools:
        """Move every tool to ``device``: the profiler keeps them on the CPU while it
        times a model (so neither its peak memory nor its largest feasible batch pays
        for them) and brings them back for scoring."""
        seen: set[int] = set()
        for tool in [*self.scorers, self.discriminator, *self.extractors]:
            if tool is not None and id(tool) not in seen and callable(getattr(tool, "to", None)):
                seen.add(id(tool))
                tool.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "scorers": [s.metric_id for s in self.scorers],
            "discriminator": getattr(self.discriminator, "scorer_id", None),
            "feature_extractors": [e.extractor_id for e in self.extractors],
        }


def zoo_scorers(zoo: Any, base_dir: Path) -> list[str]:
    """The zoo's ``scorers:`` with ``./`` paths made absolute; ``clip_score`` if it has none."""

    def absolute(part: str) -> str:
        return str(base_dir / part[2:]) if part.startswith("./") else part

    out = []
    for name in zoo.scorers or ("clip_score",):
        kind, sep, args = name.partition(":")
        out.append(kind + sep + ",".join(absolute(a) for a in args.split(",")) if sep else name)
    return out


def build_quality_tools(opts: Any, device: str) -> QualityTools:  # opts: RunOptions
    """Load scorers, the discriminator and FID extractors (all before any diffusion model)."""
    from hadis_profile.measure import plugins as PL
    from hadis_profile.measure import scorers as S

    common = {"device": device, "cache_dir": opts.cache_dir, "online": opts.online}
    scorers = [PL.make_scorer(name, **common) for name in dict.fromkeys(opts.scorers)]
    disc = None
    choice = opts.discriminator
    if choice == "clip":
        clip = next((s for s in scorers if isinstance(s, S.CLIPScorer)), None)
        disc = S.CLIPConfidence(clip or S.CLIPScorer(**common))
    elif choice.startswith("learned:"):  # a head from `hadis-profile discriminator train`
        from hadis_profile.measure.discriminator import LearnedDiscriminator

        disc = LearnedDiscriminator(choice.split(":", 1)[1], **common)
    elif choice not in ("none", ""):
        disc = PL.load_discriminator(choice)
    extractors = []
    kind, _, arg = opts.fid.partition(":")
    if kind == "clip":
        clip = next(
            (
                s
                for s in scorers
                if isinstance(s, S.CLIPScorer) and (not arg or s.checkpoint == arg)
            ),
            None,
        )
        if clip is not None:
            extractors.append(
                S.CLIPImageExtractor(
                    clip.checkpoint, model=clip.model, processor=clip.processor, device=device
                )
            )
        else:
            extractors.append(S.CLIPImageExtractor(arg or S.DEFAULT_CLIP, **common))
    elif kind == "inception":
        extractors.append(S.InceptionExtractor(arg or None, device=device))
    elif opts.fid not in ("none", ""):
        extractors.append(PL.load_extractor(opts.fid))
    return QualityTools(scorers, disc, extractors)


def reference_stats(opts: Any, tools: QualityTools) -> dict[str, tuple]:
    """FID reference (mu, sigma): an .npz with mu/sigma, or a folder of images to encode."""
    if opts.fid_reference is None or not tools.extractors:
        return {}
    from hadis_profile.measure.scorers import reference_stats as stats_of

    ref = Path(opts.fid_reference)
    ext = tools.extractors[0]
    if ref.is_file() and ref.suffix == ".npz":
        with np.load(ref) as z:
            if "mu" not in z or "sigma" not in z:
                raise HadisError(f"FID reference {ref} must hold arrays 'mu' and 'sigma'.")
            return {ext.extractor_id: (z["mu"], z["sigma"])}
    if ref.is_dir():
        from PIL import Image

        files = sorted(
            p for p in ref.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
        )
        if len(files) < 2:
            raise HadisError(f"FID reference folder {ref} holds fewer than 2 images.")
        feats = []
        for i in range(0, len(files), 64):
            imgs = [Image.open(p).convert("RGB") for p in files[i : i + 64]]
            feats.append(ext.features(imgs))
        return {ext.extractor_id: stats_of(np.concatenate(feats))}
    raise HadisError(f"FID reference {ref} is neither an .npz file nor a folder of images.")
