"""The frozen image encoder of the learned discriminator, and its feature cache.

* Encoder features (projected image embeddings, L2-normalised) are cached in
  one ``.npz`` per encoder, keyed by each image file's sha256 and by the
  encoder's id and weights fingerprint, so retraining the head and scoring the
  training images again cost no encoder passes.
* Unreadable image files are kept with their error instead of raising, so the
  callers decide whether to skip or report them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.discriminator import DEFAULT_ENCODER, FEATURE_FORMAT, IMAGE_SUFFIXES
from hadis_profile.errors import HadisError
from hadis_profile.fileio import sha256_file


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its class name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


def load_pil(path: Path) -> Any:
    """Decode an image file to RGB; raises whatever PIL raises on a corrupt file."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


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
            f.sha256 = sha256_file(f.path)
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
    ``encode_fn(module, device, images)`` runs one batch; :meth:`to` moves the
    module (the profiler keeps it off the GPU while it times a model).
    """

    encoder_id: str
    fingerprint: str
    dim: int
    encode_fn: Any = field(repr=False)
    batch_size: int = 32
    module: Any = field(default=None, repr=False)
    device: str = "cpu"

    def to(self, device: str) -> ImageEncoder:
        if self.module is not None:
            self.module = self.module.to(device)
        self.device = device
        return self

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        parts = [
            np.asarray(
                self.encode_fn(self.module, self.device, list(images[i : i + self.batch_size])),
                dtype=np.float32,
            )
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
    from hadis_profile.measure.devices import pick_device

    device = pick_device(device)
    local = Path(encoder_id).expanduser()
    if local.is_dir():  # a folder: record where it is, not where the command ran from
        encoder_id = str(local.resolve())
    if encoder_id.startswith("open_clip:"):
        return _load_open_clip(encoder_id, device=device, batch_size=batch_size)
    import torch

    from hadis_profile.measure.scorers import embeds, load_clip

    model, processor = load_clip(
        encoder_id, device="cpu", cache_dir=cache_dir, online=online, what="CLIP encoder"
    )
    h = hashlib.sha256(FEATURE_FORMAT.encode())
    _hash_tensors(h, sorted(model.vision_model.state_dict().items()))
    _hash_tensors(h, sorted(model.visual_projection.state_dict().items()))
    pre = processor.image_processor.to_dict()
    h.update(json.dumps({k: pre.get(k) for k in _PREPROCESS_KEYS}, sort_keys=True).encode())

    def encode(model: Any, device: str, images: list[Any]) -> np.ndarray:
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            return embeds(model.get_image_features(pixels.to(device))).float().cpu().numpy()

    dim = int(model.config.projection_dim)
    return ImageEncoder(encoder_id, h.hexdigest(), dim, encode, batch_size, model).to(device)


def _load_open_clip(encoder_id: str, *, device: str, batch_size: int) -> ImageEncoder:
    arch, _, pretrained = encoder_id.removeprefix("open_clip:").partition(",")
    try:
        import open_clip
        import torch
    except Exception as e:  # open_clip imports torchvision, which may be missing or broken
        raise HadisError(
            f"Encoder '{encoder_id}' needs open_clip and torchvision ({first_line(e)})."
        ) from None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained or None
        )
    except Exception as e:
        raise HadisError(
            f"Cannot load open_clip encoder '{encoder_id}' ({first_line(e)})."
        ) from None
    model = model.eval()
    h = hashlib.sha256(FEATURE_FORMAT.encode())
    _hash_tensors(h, sorted(model.visual.state_dict().items()))
    h.update(repr(preprocess).encode())

    def encode(model: Any, device: str, images: list[Any]) -> np.ndarray:
        with torch.inference_mode():
            x = torch.stack([preprocess(im) for im in images]).to(device)
            return model.encode_image(x).float().cpu().numpy()

    model = model.to(device)
    dim = int(encode(model, device, [_blank()]).shape[1])
    return ImageEncoder(encoder_id, h.hexdigest(), dim, encode, batch_size, model, device)


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
                    images.append(load_pil(files[i].path))
                    chunk.append(i)
                except Exception as e:  # PIL raises many types on a corrupt file
                    files[i].error = first_line(e)
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
