"""The learned discriminator's head, and the discriminators ``discriminator score`` offers.

HADIS's head on a frozen CLIP image encoder: Linear(d, 256), ReLU,
Linear(256, 2), trained on real (1) vs generated (0) images; confidence =
P(real). The head file is safetensors (or a ``torch.save`` state dict for
``.pt``), with its JSON metadata embedded (no timestamps or paths, so the same
data, encoder and seed give a byte-identical file) and a readable ``.json``
beside it. Its scorer id is ``confidence:hadis-head:<first 12 hex of the file's
sha256>``. CLIP score and PickScore serve as training-free proxies, and
``module:callable`` plugs in anything else.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.discriminator import (
    HEAD_FORMAT,
    HEAD_SHAPES,
    HIDDEN,
    LEARNED_PREFIX,
    META_KEY,
)
from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.fileio import read_bytes, sha256_bytes
from hadis_profile.measure.encoder import ImageEncoder, first_line, load_encoder
from hadis_profile.measure.scorers import Discriminator, PickScorer, check_pairs, to_pil


def make_head(dim: int) -> Any:
    """HADIS's head on top of the frozen encoder: Linear(d, 256), ReLU, Linear(256, 2)."""
    from torch import nn

    return nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))


def train_head(
    X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int
) -> dict[str, Any]:
    """Adam on class-balanced cross-entropy, seeded init and shuffles, on the CPU.

    Class weights n / (2 n_c) keep an unbalanced set (say 4 generated images
    per real one) from collapsing onto the majority class.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head(X.shape[1])
    gen = torch.Generator().manual_seed(seed)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    counts = torch.bincount(yt, minlength=2).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts.clamp(min=1)))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=gen)
        for s in range(0, len(yt), batch_size):
            b = perm[s : s + batch_size]
            opt.zero_grad()
            loss_fn(head(Xt[b]), yt[b]).backward()
            opt.step()
    return {k: v.detach().clone().contiguous() for k, v in head.state_dict().items()}


def head_probabilities(state: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """P(real) = softmax column 1, float64 [n]."""
    import torch

    head = make_head(state["0.weight"].shape[1])
    head.load_state_dict(state)
    head.eval()
    with torch.inference_mode():
        logits = head(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
        return torch.softmax(logits.double(), dim=1)[:, 1].numpy()


@dataclass
class HeadFile:
    """A loaded head: weights, the metadata it was saved with, and the file's sha256."""

    path: Path
    state: dict[str, Any]
    metadata: dict
    sha256: str

    @property
    def scorer_id(self) -> str:
        return f"{LEARNED_PREFIX}:{self.sha256[:12]}"


def save_head(path: str | Path, state: dict[str, Any], metadata: dict) -> str:
    """Write the head (safetensors, or torch.save for .pt/.pth) atomically; its sha256."""
    from hadis_profile.fileio import atomic_write_bytes, canonical_json

    path = Path(path)
    meta = canonical_json(metadata)
    if path.suffix.lower() in (".pt", ".pth"):
        import torch

        buf = io.BytesIO()
        torch.save({"format": HEAD_FORMAT, "state_dict": state, "metadata_json": meta}, buf)
        data = buf.getvalue()
    else:
        from safetensors.torch import save

        data = save(state, metadata={META_KEY: meta})
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def load_head(path: str | Path) -> HeadFile:
    """Read and check a head file written by :func:`save_head`."""
    path = Path(path)
    data = read_bytes(path, "the head file")
    bad = f"{path} is not a hadis-profile discriminator head"
    try:
        if data[:2] == b"PK":  # a torch.save zip
            import torch

            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
                raise HadisError(f"{bad} (no '{HEAD_FORMAT}' record).")
            state, meta_text = obj["state_dict"], obj["metadata_json"]
        else:
            from safetensors.torch import load

            state = load(data)
            header_len = int.from_bytes(data[:8], "little")
            meta_text = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}).get(META_KEY)
            if meta_text is None:
                raise HadisError(f"{bad} (its metadata is missing).")
        metadata = json.loads(meta_text)
    except HadisError:
        raise
    except Exception as e:
        raise HadisError(f"{bad} ({first_line(e)}).") from None
    if not isinstance(metadata, dict) or metadata.get("format") != HEAD_FORMAT:
        raise HadisError(f"{bad} (metadata format is not '{HEAD_FORMAT}').")
    dim = metadata.get("dim")
    for key, shape in {**HEAD_SHAPES, "2.bias": (2,)}.items():
        t = state.get(key)
        want = tuple(dim if s is None else s for s in shape)
        if t is None or tuple(t.shape) != want:
            raise HadisError(f"{bad} (tensor '{key}' is missing or not of shape {want}).")
    return HeadFile(path, state, metadata, sha256_bytes(data))


# --------------------------------------------------------------------------- scorers


def _check_encoder(head: HeadFile, encoder: ImageEncoder) -> None:
    meta = head.metadata
    if encoder.fingerprint != meta.get("encoder_fingerprint") or encoder.dim != meta.get("dim"):
        same = encoder.encoder_id == meta.get("encoder")
        raise HadisError(
            f"The head {head.path} was trained on encoder '{meta.get('encoder')}', but "
            + (
                "the copy of it found here has other weights; retrain the head."
                if same
                else f"the requested encoder '{encoder.encoder_id}' differs; score with "
                f"encoder {meta.get('encoder')} or retrain the head."
            )
        )


class LearnedDiscriminator(Discriminator):
    """P(real) from the frozen encoder and a trained head file.

    ``encoder`` defaults to the head's own; another one is accepted only when
    its weights fingerprint equals the head's (e.g. a local copy of the same
    checkpoint), since features of other weights would make the head meaningless.
    """

    def __init__(
        self,
        head: str | Path | HeadFile,
        *,
        encoder: str | ImageEncoder | None = None,
        device: str = "cpu",
        cache_dir: str | Path | None = None,
        online: bool = False,
        batch_size: int = 32,
    ) -> None:
        self.head = head if isinstance(head, HeadFile) else load_head(head)
        if not isinstance(encoder, ImageEncoder):
            encoder = load_encoder(
                encoder or self.head.metadata["encoder"],
                device=device,
                cache_dir=cache_dir,
                online=online,
                batch_size=batch_size,
            )
        _check_encoder(self.head, encoder)
        self.encoder = encoder
        self.scorer_id = self.head.scorer_id
        self.batch_size = batch_size

    def confidence(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        pil = to_pil(images)
        check_pairs(pil, prompts)
        return self.from_features(self.encoder.encode(pil))

    def from_features(self, feats: np.ndarray) -> np.ndarray:
        """P(real) [n] from cached encoder features."""
        return head_probabilities(self.head.state, feats)

    def spec(self) -> dict:
        """What the table records, so serving can rebuild and verify this scorer."""
        meta = self.head.metadata
        return {
            "kind": "learned",
            "scorer_id": self.scorer_id,
            "confidence": "P(real): softmax column 1 of the head",
            "encoder": meta["encoder"],
            "encoder_fingerprint": meta["encoder_fingerprint"],
            "feature": meta["feature"],
            "head": {"sha256": self.head.sha256, "file": self.head.path.name},
            "architecture": meta["architecture"],
            "data": meta["data"],
            "hyperparameters": meta["hyperparameters"],
            "metrics": meta["metrics"],
        }


class PickConfidence(Discriminator):
    """max(cos, 0) in PickScore space: PickScore / its logit scale, clamped to [0, 1]
    (a monotone map of PickScore, so quantile thresholds pick the same images)."""

    def __init__(self, pick: PickScorer) -> None:
        self.pick, self.batch_size = pick, pick.batch_size
        self.scorer_id = "pick_confidence:" + pick.metric_id.split(":", 1)[1]

    def confidence(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        scale = float(self.pick.model.logit_scale.detach().exp())
        return np.clip(self.pick.score(images, prompts) / scale, 0.0, 1.0)


def build_discriminator(
    kind: str,
    *,
    head: str | Path | None = None,
    encoder: str | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    online: bool = False,
    batch_size: int = 32,
) -> tuple[Any, dict]:
    """``learned`` (with ``head``, or ``learned:HEAD``), ``clip[:ckpt]``,
    ``pick[:model[,processor]]`` or a ``module:callable`` plug-in -> (discriminator, spec)."""
    from hadis_profile.measure import plugins as PL
    from hadis_profile.measure import scorers as S
    from hadis_profile.measure.devices import pick_device

    name, _, arg = kind.partition(":")
    device = pick_device(device) if name in ("clip", "pick") else device
    common = {"device": device, "cache_dir": cache_dir, "online": online, "batch_size": batch_size}
    if name == "learned":
        if arg and head is not None and Path(arg) != Path(head):
            raise ParameterError(
                "head", f"kind {kind} and {{param}} {head} name two heads; give one."
            )
        if not (arg or head):
            raise ParameterError("head", "The learned discriminator needs its head file ({param}).")
        disc = LearnedDiscriminator(arg or head, encoder=encoder, **common)  # type: ignore[arg-type]
        return disc, disc.spec()
    if head is not None:
        raise ParameterError("head", f"{{param}} goes with the learned kind, not '{kind}'.")
    if encoder is not None:
        raise ParameterError("encoder", f"{{param}} goes with the learned kind, not '{kind}'.")
    if name == "clip":
        disc = S.CLIPConfidence(S.CLIPScorer(arg or S.DEFAULT_CLIP, **common))
        checkpoint = disc.clip.checkpoint
        definition = "CLIP score / 100 = max(cos(image, prompt), 0)"
    elif name == "pick":
        model, _, proc = (arg or S.DEFAULT_PICKSCORE).partition(",")
        disc = PickConfidence(S.PickScorer(model, proc or S.DEFAULT_PICKSCORE_PROCESSOR, **common))
        checkpoint = model
        definition = "PickScore / logit scale, clamped to [0, 1] = max(cos, 0)"
    elif arg:
        disc = PL.load_discriminator(kind)
        return disc, {"kind": "plugin", "scorer_id": disc.scorer_id, "callable": kind}
    else:
        raise ParameterError(
            "kind",
            f"Unknown discriminator {{param}} '{kind}'; use learned, clip[:checkpoint], "
            "pick[:model[,processor]] or a module:callable plug-in.",
        )
    spec = {"kind": name, "scorer_id": disc.scorer_id, "checkpoint": checkpoint}
    return disc, {**spec, "confidence": definition}
