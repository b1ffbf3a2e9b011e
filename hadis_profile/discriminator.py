"""HADIS's quality discriminator: a frozen CLIP image encoder plus a small learned head.

HADIS escalates a prompt to the heavy model when the light model's images look
worse than a threshold; the signal is a discriminator trained to tell real
images (label 1) from generated ones (label 0), and the confidence is P(real).
This module trains that head (``hadis-profile discriminator train``), applies
it, or a no-training proxy (CLIP score, PickScore) or a user plug-in, to a
run's saved images (``discriminator score``), and records the scorer in the
run's provenance so that ``pareto`` writes it into the table: serving must use
the scorer that the thresholds were calibrated on.

* Encoder features (projected image embeddings, L2-normalised) are cached in
  one ``.npz`` per encoder, keyed by each image file's sha256 and by the
  encoder's id and weights fingerprint, so retraining the head and scoring the
  training images again cost no encoder passes.
* The head file is safetensors (or a ``torch.save`` state dict for ``.pt``),
  with its JSON metadata embedded (no timestamps or paths, so the same data,
  encoder and seed give a byte-identical file) and a readable ``.json`` beside it.
  Its scorer id is ``confidence:hadis-head:<first 12 hex of the file's sha256>``.
* Unreadable image files are skipped and counted: training goes on without
  them (each class still needs 2 readable images), scoring writes every
  readable image and then fails with one sentence naming the first bad file.

Importing this module needs numpy only; torch, transformers and PIL load
inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, UsageError
from hadis_profile.fileio import read_bytes
from hadis_profile.measure.scorers import Discriminator, PickScorer, _check_pairs, to_pil
from hadis_profile.progress import bar

DEFAULT_ENCODER = "openai/clip-vit-base-patch32"
HIDDEN = 256
HEAD_FORMAT = "hadis-profile/discriminator-head/1"
FEATURE_FORMAT = "hadis-profile/clip-image-embeds-l2/1"
LEARNED_PREFIX = "confidence:hadis-head"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: Where, inside a run folder, heads and the feature cache go by default.
RUN_SUBDIR = "discriminator"
_META_KEY = "hadis_profile"
_HEAD_SHAPES = {"0.weight": (HIDDEN, None), "0.bias": (HIDDEN,), "2.weight": (2, HIDDEN)}


# --------------------------------------------------------------------------- pure helpers


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
    return hashlib.sha256("\n".join(sorted(hashes)).encode("ascii")).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_images(folder: str | Path) -> list[Path]:
    """Image files (png/jpg/jpeg/webp) under ``folder``, recursively, in path order."""
    root = Path(folder)
    if not root.exists():
        raise HadisError(f"The real image folder {root} does not exist.")
    if not root.is_dir():
        raise HadisError(f"The real image path {root} is not a folder.")
    try:
        os.listdir(root)
        files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    except OSError as e:
        raise HadisError(f"Cannot read the real image folder {root} ({e.strerror}).") from None
    return sorted(files)


def _load_pil(path: Path) -> Any:
    """Decode an image file to RGB; raises whatever PIL raises on a corrupt file."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclass
class ImageFile:
    """One image on disk: its path, content hash (None if unreadable) and an id."""

    path: Path
    sha256: str | None = None
    error: str | None = None
    key: Any = None  # e.g. the store's image id


def read_files(paths: Sequence[Path], keys: Sequence[Any] | None = None) -> list[ImageFile]:
    """Hash files (streamed: nothing is kept in memory); a missing or unreadable file
    keeps its error instead of raising."""
    out = []
    for i, p in enumerate(paths):
        f = ImageFile(Path(p), key=None if keys is None else keys[i])
        try:
            f.sha256 = file_sha256(f.path)
        except OSError as e:
            f.error = e.strerror or type(e).__name__
        out.append(f)
    return out


# --------------------------------------------------------------------------- encoder


@dataclass
class ImageEncoder:
    """A frozen CLIP image tower: images -> L2-normalised projected embeddings [n, dim].

    ``fingerprint`` hashes the tower's weights and preprocessing, so a head or a
    cache entry can tell whether it was made by these very weights.
    """

    encoder_id: str
    fingerprint: str
    dim: int
    encode_fn: Any = field(repr=False)
    batch_size: int = 32

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        parts = [
            np.asarray(self.encode_fn(list(images[i : i + self.batch_size])), dtype=np.float32)
            for i in range(0, len(images), self.batch_size)
        ]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        feats = np.concatenate(parts).reshape(len(images), -1)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)


def _hash_tensors(h: Any, named: Iterable[tuple[str, Any]]) -> None:
    import torch

    for name, t in named:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bf16 too


_PREPROCESS_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


def load_encoder(
    encoder_id: str = DEFAULT_ENCODER,
    *,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    online: bool = False,
    batch_size: int = 32,
) -> ImageEncoder:
    """A transformers CLIP checkpoint (Hub id or local folder), offline first, or
    ``open_clip:ARCH[,PRETRAINED]`` when open_clip (and torchvision) are installed."""
    from hadis_profile.measure.pipelines import pick_device

    device = pick_device(device)
    local = Path(encoder_id).expanduser()
    if local.is_dir():  # a folder: record where it is, not where the command ran from
        encoder_id = str(local.resolve())
    if encoder_id.startswith("open_clip:"):
        return _load_open_clip(encoder_id, device=device, batch_size=batch_size)
    import torch

    from hadis_profile.measure.scorers import _embeds, load_clip

    model, processor = load_clip(
        encoder_id, device="cpu", cache_dir=cache_dir, online=online, what="CLIP encoder"
    )
    h = hashlib.sha256(FEATURE_FORMAT.encode())
    _hash_tensors(h, sorted(model.vision_model.state_dict().items()))
    _hash_tensors(h, sorted(model.visual_projection.state_dict().items()))
    pre = processor.image_processor.to_dict()
    h.update(json.dumps({k: pre.get(k) for k in _PREPROCESS_KEYS}, sort_keys=True).encode())
    model = model.to(device)

    def encode(images: list[Any]) -> np.ndarray:
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            return _embeds(model.get_image_features(pixels.to(device))).float().cpu().numpy()

    return ImageEncoder(
        encoder_id, h.hexdigest(), int(model.config.projection_dim), encode, batch_size
    )


def _load_open_clip(encoder_id: str, *, device: str, batch_size: int) -> ImageEncoder:
    arch, _, pretrained = encoder_id.removeprefix("open_clip:").partition(",")
    try:
        import open_clip
        import torch
    except Exception as e:  # open_clip imports torchvision, which may be missing or broken
        raise HadisError(
            f"Encoder '{encoder_id}' needs open_clip and torchvision ({_first_line(e)})."
        ) from None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained or None
        )
    except Exception as e:
        raise HadisError(
            f"Cannot load open_clip encoder '{encoder_id}' ({_first_line(e)})."
        ) from None
    model = model.eval()
    h = hashlib.sha256(FEATURE_FORMAT.encode())
    _hash_tensors(h, sorted(model.visual.state_dict().items()))
    h.update(repr(preprocess).encode())
    model = model.to(device)

    def encode(images: list[Any]) -> np.ndarray:
        with torch.inference_mode():
            x = torch.stack([preprocess(im) for im in images]).to(device)
            return model.encode_image(x).float().cpu().numpy()

    dim = int(encode([_blank()]).shape[1])
    return ImageEncoder(encoder_id, h.hexdigest(), dim, encode, batch_size)


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (32, 32))


# --------------------------------------------------------------------------- feature cache


class FeatureCache:
    """Encoder features by image sha256, one ``.npz`` per (encoder id, weights).

    Rewritten whole on :meth:`save`, and every ``autosave`` new entries while
    encoding, so an interrupted encode of a large set keeps most of its work.
    """

    autosave = 4096

    def __init__(self, folder: str | Path, encoder: ImageEncoder) -> None:
        key = hashlib.sha256(f"{encoder.encoder_id}\n{encoder.fingerprint}".encode()).hexdigest()
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder.encoder_id)
        self.path = Path(folder) / f"{slug[-40:]}-{key[:16]}.npz"
        self.key, self.dim = key, encoder.dim
        self.table: dict[str, np.ndarray] = {}
        self.hits = self.encoded = self._saved_at = 0
        self._dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if str(z["key"]) == key and z["features"].shape[1:] == (encoder.dim,):
                        self.table = dict(zip(z["hashes"].tolist(), z["features"], strict=True))
            except (OSError, ValueError, KeyError):
                self.table = {}  # a damaged cache is only a cache: rebuild it

    def features(
        self, encoder: ImageEncoder, files: Sequence[ImageFile], progress: Any = None
    ) -> np.ndarray:
        """Features [n, dim] for readable files (rows of unreadable ones are NaN; their
        ``error`` is set). Misses are decoded, encoded in batches and added."""
        out = np.full((len(files), self.dim), np.nan, dtype=np.float32)
        todo: list[int] = []
        for i, f in enumerate(files):
            if f.sha256 is None:
                continue
            hit = self.table.get(f.sha256)
            if hit is not None:
                out[i] = hit
                self.hits += 1
                if progress is not None:
                    progress(1)
            else:
                todo.append(i)
        for s in range(0, len(todo), encoder.batch_size):
            chunk, images = [], []
            for i in todo[s : s + encoder.batch_size]:
                try:
                    images.append(_load_pil(files[i].path))
                    chunk.append(i)
                except Exception as e:  # PIL raises many types on a corrupt file
                    files[i].error = _first_line(e)
            if chunk:
                feats = encoder.encode(images)
                for i, v in zip(chunk, feats, strict=True):
                    out[i] = v
                    self.table[files[i].sha256] = v  # type: ignore[index]
                self.encoded += len(chunk)
                self._dirty = True
                if self.encoded - self._saved_at >= self.autosave:
                    self.save()
            if progress is not None:
                progress(len(todo[s : s + encoder.batch_size]))
        return out

    def save(self) -> None:
        """Write atomically (only when something was added)."""
        if not self._dirty:
            return
        from hadis_profile.fileio import atomic_write_bytes

        hashes = sorted(self.table)
        buf = io.BytesIO()
        np.savez(
            buf,
            key=np.array(self.key),
            hashes=np.array(hashes),
            features=np.stack([self.table[h] for h in hashes]).astype(np.float32),
        )
        atomic_write_bytes(self.path, buf.getvalue())
        self._dirty, self._saved_at = False, self.encoded


# --------------------------------------------------------------------------- the head


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

        data = save(state, metadata={_META_KEY: meta})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


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
            meta_text = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}).get(_META_KEY)
            if meta_text is None:
                raise HadisError(f"{bad} (its metadata is missing).")
        metadata = json.loads(meta_text)
    except HadisError:
        raise
    except Exception as e:
        raise HadisError(f"{bad} ({_first_line(e)}).") from None
    if not isinstance(metadata, dict) or metadata.get("format") != HEAD_FORMAT:
        raise HadisError(f"{bad} (metadata format is not '{HEAD_FORMAT}').")
    dim = metadata.get("dim")
    for key, shape in {**_HEAD_SHAPES, "2.bias": (2,)}.items():
        t = state.get(key)
        want = tuple(dim if s is None else s for s in shape)
        if t is None or tuple(t.shape) != want:
            raise HadisError(f"{bad} (tensor '{key}' is missing or not of shape {want}).")
    return HeadFile(path, state, metadata, hashlib.sha256(data).hexdigest())


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
                f"--encoder {meta.get('encoder')} or retrain the head."
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
        _check_pairs(pil, prompts)
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
    from hadis_profile.measure import scorers as S
    from hadis_profile.measure.pipelines import pick_device

    name, _, arg = kind.partition(":")
    device = pick_device(device) if name in ("clip", "pick") else device
    common = {"device": device, "cache_dir": cache_dir, "online": online, "batch_size": batch_size}
    if name == "learned":
        if arg and head is not None and Path(arg) != Path(head):
            raise UsageError(f"--kind {kind} and --head {head} name two heads; give one.")
        if not (arg or head):
            raise UsageError("The learned discriminator needs its head file: --head PATH.")
        disc = LearnedDiscriminator(arg or head, encoder=encoder, **common)  # type: ignore[arg-type]
        return disc, disc.spec()
    if head is not None:
        raise UsageError(f"--head goes with --kind learned, not '{kind}'.")
    if encoder is not None:
        raise UsageError(f"--encoder goes with --kind learned, not '{kind}'.")
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
        disc = S.load_discriminator(kind)
        return disc, {"kind": "plugin", "scorer_id": disc.scorer_id, "callable": kind}
    else:
        raise UsageError(
            f"Unknown discriminator kind '{kind}'; use learned, clip[:checkpoint], "
            "pick[:model[,processor]] or a module:callable plug-in."
        )
    spec = {"kind": name, "scorer_id": disc.scorer_id, "checkpoint": checkpoint}
    return disc, {**spec, "confidence": definition}


# --------------------------------------------------------------------------- run helpers


@dataclass
class RunImage:
    image_id: int
    model: str
    prompt_id: int
    seed_index: int
    path: Path


def run_images(store: Any, models: Sequence[str] | None = None) -> list[RunImage]:
    """The run's saved images (path recorded), optionally of some models, by image id."""
    known = list(store.models())
    for m in models or ():
        if m not in known:
            raise HadisError(f"Model '{m}' is not in the run {store.root} ({', '.join(known)}).")
    rows = store.saved_images()
    wanted = set(models) if models else None
    out = [
        RunImage(r[0], r[1], r[2], r[3], _resolve(store.root, r[4]))
        for r in rows
        if wanted is None or r[1] in wanted
    ]
    if not out:
        which = f" of {', '.join(models)}" if models else ""
        raise HadisError(
            f"The run in {store.root} has no saved images{which}; rerun `hadis-profile run` "
            "with --save-images."
        )
    missing = sorted((wanted or set()) - {im.model for im in out})
    if missing:
        raise HadisError(f"Model '{missing[0]}' has no saved images in the run {store.root}.")
    return out


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def record_discriminator(store: Any, spec: dict) -> None:
    """Make ``spec`` the run's current discriminator (``provenance.discriminator``, which
    ``pareto`` copies into the table) and keep every one used (``discriminators``)."""
    known = dict(store.provenance.get("discriminators") or {})
    known[spec["scorer_id"]] = spec
    store.update_provenance({"discriminator": spec, "discriminators": known})


def discriminator_for_table(provenance: dict, scorer: str) -> dict:
    """The spec of ``scorer`` as the run recorded it (or just its id) for the table."""
    known = provenance.get("discriminators") or {}
    if scorer in known:
        return known[scorer]
    current = provenance.get("discriminator")
    if isinstance(current, dict) and current.get("scorer_id") == scorer:
        return current
    return {"scorer_id": scorer}


# --------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    head_path: Path
    metadata_path: Path
    head_sha256: str
    scorer_id: str
    metadata: dict
    cache_path: Path
    cache_hits: int
    encoded: int
    unreadable: list[tuple[Path, str]]
    seconds: float


def _check_hyper(epochs: int, lr: float, batch_size: int, val_fraction: float) -> None:
    if epochs < 1 or batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1.")
    if not (lr > 0 and np.isfinite(lr)):
        raise UsageError(f"--lr must be a positive number, not {lr}.")
    if not 0 < val_fraction < 1:
        raise UsageError(f"--val-fraction must lie strictly between 0 and 1, not {val_fraction}.")


def _need_two(n: int, what: str) -> None:
    if n < 2:
        raise HadisError(
            f"{what} {n} readable image{'s' if n != 1 else ''}; the discriminator needs at "
            "least 2 of each class to train and validate."
        )


def train_discriminator(
    real_dir: str | Path,
    run_dir: str | Path,
    *,
    models: Sequence[str] | None = None,
    encoder: str | ImageEncoder = DEFAULT_ENCODER,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    online: bool = False,
    feature_cache: str | Path | None = None,
    console: Any = None,
) -> TrainResult:
    """Train the head on real images (label 1) vs the run's saved images (label 0).

    Deterministic for a seed: samples are ordered by content hash within each
    class, so neither file names nor image ids change the split or the weights.
    """
    from hadis_profile.fileio import atomic_write_bytes
    from hadis_profile.store import RunStore

    t0 = time.perf_counter()
    _check_hyper(epochs, lr, batch_size, val_fraction)
    out_path = Path(out) if out is not None else Path(run_dir) / RUN_SUBDIR / "head.safetensors"
    if out_path.suffix.lower() == ".json":
        raise UsageError(f"--out {out_path} must not end in .json (that is the metadata file).")
    real_paths = list_images(real_dir)
    _need_two(len(real_paths), f"The real image folder {real_dir} holds")
    with RunStore.open(run_dir) as store:
        gen_images = run_images(store, models)
        run_root = store.root
    _need_two(len(gen_images), f"The run in {run_dir} has")

    if not isinstance(encoder, ImageEncoder):
        encoder = load_encoder(encoder, device=device, cache_dir=cache_dir, online=online)
    cache = FeatureCache(feature_cache or Path(run_root) / RUN_SUBDIR / "features", encoder)
    real = read_files(real_paths)
    gen = read_files([im.path for im in gen_images], [im.image_id for im in gen_images])
    with bar(console, "encoding images", len(real) + len(gen)) as advance:
        X_real = cache.features(encoder, real, advance)
        X_gen = cache.features(encoder, gen, advance)
    cache.save()
    unreadable = [(f.path, f.error or "") for f in real + gen if f.error is not None]
    ok_real = [i for i, f in enumerate(real) if f.error is None]
    ok_gen = [i for i, f in enumerate(gen) if f.error is None]
    _need_two(len(ok_real), f"The real image folder {real_dir} holds")
    _need_two(len(ok_gen), f"The run in {run_dir} has")

    # order by content hash within each class: the split depends on the data only
    ok_real.sort(key=lambda i: real[i].sha256)  # type: ignore[arg-type, return-value]
    ok_gen.sort(key=lambda i: gen[i].sha256)  # type: ignore[arg-type, return-value]
    X = np.concatenate([X_real[ok_real], X_gen[ok_gen]])
    y = np.r_[np.ones(len(ok_real), dtype=np.int64), np.zeros(len(ok_gen), dtype=np.int64)]
    tr, va = stratified_split(y, val_fraction, seed)
    state = train_head(X[tr], y[tr], epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    p_tr, p_va = head_probabilities(state, X[tr]), head_probabilities(state, X[va])
    eps = 1e-12
    val_loss = -np.mean(np.where(y[va] == 1, np.log(p_va + eps), np.log(1 - p_va + eps)))
    metrics = {
        "val_accuracy": float(np.mean((p_va > 0.5) == (y[va] == 1))),
        "val_auc": roc_auc(y[va], p_va),
        "val_loss": float(val_loss),
        "train_accuracy": float(np.mean((p_tr > 0.5) == (y[tr] == 1))),
        "n_train": {"real": int(y[tr].sum()), "generated": int((y[tr] == 0).sum())},
        "n_val": {"real": int(y[va].sum()), "generated": int((y[va] == 0).sum())},
    }
    real_hashes = [real[i].sha256 for i in ok_real]
    gen_hashes = [gen[i].sha256 for i in ok_gen]
    gen_models = sorted({gen_images[i].model for i in ok_gen})
    metadata = {
        "format": HEAD_FORMAT,
        "encoder": encoder.encoder_id,
        "encoder_fingerprint": encoder.fingerprint,
        "feature": FEATURE_FORMAT,
        "dim": encoder.dim,
        "architecture": f"Linear({encoder.dim}, {HIDDEN}), ReLU, Linear({HIDDEN}, 2)",
        "labels": {"0": "generated", "1": "real"},
        "data": {
            "real_sha256": set_hash(real_hashes),
            "n_real": len(real_hashes),
            "generated_sha256": set_hash(gen_hashes),
            "n_generated": len(gen_hashes),
            "generated_models": gen_models,
            "unreadable_skipped": len(unreadable),
        },
        "hyperparameters": {
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "val_fraction": val_fraction,
            "seed": seed,
            "optimizer": "adam",
            "loss": "class-balanced cross-entropy",
            "split": "stratified, seeded, samples ordered by sha256",
        },
        "metrics": metrics,
    }
    sha = save_head(out_path, state, metadata)
    scorer_id = f"{LEARNED_PREFIX}:{sha[:12]}"
    sidecar = {
        **metadata,
        "head_file": out_path.name,
        "head_sha256": sha,
        "scorer_id": scorer_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "real_dir": str(real_dir),
        "run": str(run_dir),
    }
    meta_path = out_path.with_suffix(".json")
    atomic_write_bytes(meta_path, (json.dumps(sidecar, indent=1) + "\n").encode())
    return TrainResult(
        out_path,
        meta_path,
        sha,
        scorer_id,
        metadata,
        cache.path,
        cache.hits,
        cache.encoded,
        unreadable,
        time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- score


@dataclass
class ScoreResult:
    scorer_id: str
    spec: dict
    scored: int
    already: int
    unreadable: list[tuple[Path, str]]
    mean_confidence: dict[str, float]


def score_run(
    run_dir: str | Path,
    kind: str = "learned",
    *,
    head: str | Path | None = None,
    encoder: str | None = None,
    models: Sequence[str] | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    online: bool = False,
    feature_cache: str | Path | None = None,
    console: Any = None,
) -> ScoreResult:
    """Write one confidence per saved image of the run, in batches, each batch one
    transaction; images this scorer already rated are skipped (resume). The
    scorer's spec becomes the run's current discriminator.

    Unreadable images are left out, and reported by a :class:`HadisError` once
    every readable one is written.
    """
    from hadis_profile.store import RunStore

    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    with RunStore.open(run_dir) as store:
        images = run_images(store, models)
        disc, spec = build_discriminator(
            kind,
            head=head,
            encoder=encoder,
            device=device,
            cache_dir=cache_dir,
            online=online,
            batch_size=batch_size,
        )
        scorer = disc.scorer_id
        done = store.scored_image_ids(scorer)
        todo = [im for im in images if im.image_id not in done]
        prompts = store.prompts()
        cache = None
        if spec["kind"] == "learned":
            cache = FeatureCache(
                feature_cache or store.root / RUN_SUBDIR / "features", disc.encoder
            )
        unreadable: list[tuple[Path, str]] = []
        scored = 0
        try:
            with bar(console, f"scoring with {scorer}", len(todo)) as advance:
                for s in range(0, len(todo), batch_size):
                    batch = todo[s : s + batch_size]
                    ids, values = _score_batch(disc, cache, batch, prompts, unreadable)
                    with store.transaction():  # one batch = one unit of work
                        for iid, v in zip(ids, values, strict=True):
                            store.put_confidence(iid, float(v), scorer=scorer)
                    scored += len(ids)
                    advance(len(batch))
        finally:
            if cache is not None:
                cache.save()
        if scored or done:
            record_discriminator(store, spec)
        means = store.confidence_means(scorer)
    if unreadable:
        path, why = unreadable[0]
        raise HadisError(
            f"{len(unreadable)} of {len(images)} saved images could not be read (first "
            f"{path}: {why}); the other {len(images) - len(unreadable)} are scored under "
            f"{scorer}."
        )
    return ScoreResult(scorer, spec, scored, len(images) - len(todo), [], means)


def _score_batch(
    disc: Any,
    cache: FeatureCache | None,
    batch: list[RunImage],
    prompts: list[str],
    unreadable: list[tuple[Path, str]],
) -> tuple[list[int], np.ndarray]:
    files = read_files([im.path for im in batch], [im.image_id for im in batch])
    if cache is not None:
        feats = cache.features(disc.encoder, files)
        ok = [i for i, f in enumerate(files) if f.error is None]
        values = disc.from_features(feats[ok]) if ok else np.zeros(0)
    else:
        ok, pil = [], []
        for i, f in enumerate(files):
            if f.error is None:
                try:
                    pil.append(_load_pil(f.path))
                    ok.append(i)
                except Exception as e:  # PIL raises many types on a corrupt file
                    f.error = _first_line(e)
        texts = [prompts[batch[i].prompt_id] for i in ok]
        values = np.asarray(disc.confidence(pil, texts), dtype=np.float64).reshape(-1)
        if values.shape != (len(ok),):
            raise HadisError(
                f"Discriminator {disc.scorer_id} returned {values.size} values for {len(ok)} "
                "images."
            )
    if not np.all(np.isfinite(values)):
        raise HadisError(f"Discriminator {disc.scorer_id} returned a non-finite confidence.")
    unreadable.extend((f.path, f.error or "") for f in files if f.error is not None)
    return [batch[i].image_id for i in ok], values
