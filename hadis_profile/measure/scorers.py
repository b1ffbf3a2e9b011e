"""Per-image quality scorers, FID feature extractors and discriminators.

Three plug-in points, each a small interface so that a user's own model fits
without touching the profiler:

* :class:`Scorer` -- ``score(images, prompts) -> [n]`` per-image quality, stored under a
  metric id ``<scorer>:<checkpoint>`` whose scorer prefix (``metrics.py``) fixes
  the direction. A local checkpoint is named portably, by its folder name and
  content hash (``clip_score:clip@3f2a9c1b02de``, :func:`checkpoint_label`), never
  by the machine path it was loaded from. Built in: :class:`CLIPScorer`
  (``clip_score``: 100 x max(cos, 0), torchmetrics' definition, reproduced exactly)
  and :class:`PickScorer`
  (``pick_score``: ``logit_scale.exp() * cos`` as in the PickScore model card).
* :class:`FeatureExtractor` -- ``features(images) -> [n, dim]`` for set-level FID
  (``fid:<extractor id>``). The standard Inception-v3 (torch-fidelity's
  ``inception-v3-compat``, what torchmetrics' FID uses) needs its weights file
  and torch-fidelity + torchvision, none of which can be fetched on an offline
  box, so it is one implementation among others: :class:`CLIPImageExtractor`
  (FD on CLIP embeddings) and :class:`TorchModuleExtractor` (any ``nn.Module``;
  the tests use a tiny random CNN).
* :class:`Discriminator` -- ``confidence(images, prompts) -> [n]`` in [0, 1], higher =
  more likely a good image; HADIS's escalation signal. The default
  :class:`CLIPConfidence` is CLIP score / 100.

A ``module:callable`` string loads any of them from user code, and ``make_scorer``
builds one by name: both in :mod:`.plugins`.

Images may be PIL images, uint8 or float ([0, 1]) numpy arrays (HWC) or torch
tensors (CHW or NCHW, as a diffusers ``output_type="pt"`` returns); floats are
quantised to uint8 exactly as diffusers' ``numpy_to_pil`` does, so a score does
not depend on which output type generated the image.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_PICKSCORE = "yuvalkirstain/PickScore_v1"
DEFAULT_PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
#: torch-fidelity's Inception weights (the TF FID graph ported to PyTorch).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_ID = "inception-v3-compat"


# --------------------------------------------------------------------------- metric ids


def checkpoint_label(checkpoint: str) -> str:
    """How a metric id names a checkpoint: a Hub id as it is, a local file or folder as
    ``<name>@<first 12 hex of its content sha256>``, the same wherever it is copied.

    The content hash is :func:`hadis_profile.measure.pipelines.content_hash` (the same
    identity a local model checkpoint gets); computed once per path and process.
    """
    path = Path(checkpoint).expanduser()
    if not path.exists():
        return checkpoint
    return _local_label(str(path.resolve()))


@functools.lru_cache(maxsize=64)
def _local_label(path: str) -> str:
    from hadis_profile.measure.pipelines import content_hash

    return f"{Path(path).name}@{content_hash(path)[:12]}"


# --------------------------------------------------------------------------- images


def to_uint8_chw(images: Any) -> list[Any]:
    """Any supported image batch -> a list of uint8 CHW torch tensors (torchmetrics' input)."""
    import torch

    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        batch = [t] if t.ndim == 3 else list(t)
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        batch = list(images)
    else:
        batch = list(images)
    out = []
    for img in batch:
        if isinstance(img, torch.Tensor):
            t = img.detach().cpu()
            if t.ndim != 3:
                raise HadisError(f"An image tensor has shape {tuple(t.shape)}, expected CHW.")
            if t.dtype != torch.uint8:
                t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
            out.append(t.contiguous())
            continue
        a = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3:
            raise HadisError(f"An image array has shape {a.shape}, expected HWC.")
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
        out.append(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
    return out


def to_pil(images: Any) -> list[Any]:
    """Any supported image batch -> a list of RGB PIL images."""
    from PIL import Image

    return [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in to_uint8_chw(images)]


def check_pairs(images: Sequence[Any], prompts: Sequence[str]) -> None:
    if len(images) != len(prompts):
        raise HadisError(f"Got {len(images)} images but {len(prompts)} prompts to score.")


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, max(1, size))]


def move_modules(obj: Any, device: str) -> None:
    """Move the torch modules a scorer holds (``model``, ``module``) and the scorers it
    wraps (``clip``, ``pick``, ``encoder``) to ``device``, and update its ``device``."""
    for attr in ("model", "module"):
        value = getattr(obj, attr, None)
        if value is not None and callable(getattr(value, "to", None)):
            setattr(obj, attr, value.to(device))
    for attr in ("clip", "pick", "encoder"):
        inner = getattr(obj, attr, None)
        if inner is not None and callable(getattr(inner, "to", None)):
            inner.to(device)
    if hasattr(obj, "device"):
        obj.device = device


# --------------------------------------------------------------------------- interfaces


class Scorer(ABC):
    """A per-image quality metric; subclasses implement :meth:`_score_batch`."""

    metric_id: str = ""
    batch_size: int = 16

    def to(self, device: str) -> Any:
        """Move to ``device`` (a plug-in holding other torch state overrides this)."""
        move_modules(self, device)
        return self

    def score(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        """Per-image scores [n] (float64), computed in batches of :attr:`batch_size`."""
        imgs = to_uint8_chw(images)
        check_pairs(imgs, prompts)
        if not imgs:
            return np.zeros(0)
        parts = [
            np.asarray(self._score_batch(imgs[s], list(prompts[s])), dtype=np.float64).reshape(-1)
            for s in _batches(len(imgs), self.batch_size)
        ]
        return np.concatenate(parts)

    @abstractmethod
    def _score_batch(self, images: list[Any], prompts: list[str]) -> np.ndarray:
        """Scores for one batch of uint8 CHW tensors and their prompts."""


class Discriminator(ABC):
    """A confidence in [0, 1] that an image is good; low confidence escalates to heavy."""

    scorer_id: str = ""
    batch_size: int = 16

    def to(self, device: str) -> Any:
        """Move to ``device`` (a plug-in holding other torch state overrides this)."""
        move_modules(self, device)
        return self

    @abstractmethod
    def confidence(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        """Per-image confidence [n]."""


class FeatureExtractor(ABC):
    """Per-image feature vectors for set-level metrics (``fid:<extractor_id>``)."""

    extractor_id: str = ""
    batch_size: int = 32

    def to(self, device: str) -> Any:
        """Move to ``device`` (a plug-in holding other torch state overrides this)."""
        move_modules(self, device)
        return self

    def features(self, images: Any) -> np.ndarray:
        """Feature vectors [n, dim] (float32), computed in batches."""
        imgs = to_uint8_chw(images)
        if not imgs:
            return np.zeros((0, 0), dtype=np.float32)
        parts = [
            np.asarray(self._features_batch(imgs[s]), dtype=np.float32)
            for s in _batches(len(imgs), self.batch_size)
        ]
        return np.concatenate(parts).reshape(len(imgs), -1)

    @abstractmethod
    def _features_batch(self, images: list[Any]) -> np.ndarray:
        """Features for one batch of uint8 CHW tensors."""


def reference_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of reference features, pytorch-fid's conventions (float64, ddof=1)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise HadisError(f"Reference features have shape {f.shape}, expected [n >= 2, dim].")
    return f.mean(axis=0), np.cov(f, rowvar=False)


# --------------------------------------------------------------------------- CLIP models


def load_clip(
    checkpoint: str,
    *,
    processor: str | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    online: bool = False,
    what: str = "CLIP",
) -> tuple[Any, Any]:
    """``CLIPModel`` + ``CLIPProcessor`` from a Hub id or a local folder, offline first."""
    from hadis_profile.measure.pipelines import configure_hub, fetch_hint

    configure_hub(online)
    import transformers
    from transformers import CLIPModel, CLIPProcessor

    transformers.utils.logging.set_verbosity_error()  # "slow image processor" notices etc.

    hub: dict[str, Any] = {"local_files_only": not online}
    if cache_dir is not None:
        hub["cache_dir"] = str(cache_dir)
    loaded = []
    for cls, name in ((CLIPModel, checkpoint), (CLIPProcessor, processor or checkpoint)):
        try:
            loaded.append(cls.from_pretrained(name, **hub))
        except (OSError, ValueError) as e:
            if Path(name).expanduser().exists() or online:
                first = str(e).strip().splitlines()[0]
                raise HadisError(f"Cannot load {what} checkpoint '{name}' ({first}).") from None
            raise HadisError(
                f"{what} checkpoint '{name}' is not in the local Hugging Face cache; fetch it "
                f"with {fetch_hint(name)} or rerun with --online."
            ) from None
    model, proc = loaded
    return model.eval().to(device), proc


def clip_on_device(
    checkpoint: str,
    model: Any = None,
    processor: Any = None,
    *,
    processor_checkpoint: str | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    online: bool = False,
    what: str = "CLIP",
) -> tuple[Any, Any]:
    """The CLIP model and processor a scorer runs on: the given pair (a caller that already
    holds the model shares it), else loaded offline-first; in eval mode on ``device``."""
    if model is None or processor is None:
        model, processor = load_clip(
            checkpoint,
            processor=processor_checkpoint,
            device=device,
            cache_dir=cache_dir,
            online=online,
            what=what,
        )
    return model.eval().to(device), processor


def embeds(out: Any) -> Any:
    """The projected features: a tensor before transformers 5, wrapped in an output object
    (``pooler_output``) from 5 on -- the change that breaks torchmetrics 1.9's CLIPScore."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise HadisError(f"get_*_features returned a {type(out).__name__} without embeddings.")


def _clip_text_features(model: Any, processor: Any, prompts: list[str], device: str) -> Any:
    """torchmetrics' text path: pad to the longest, then cut at the position limit."""
    processed = processor(text=prompts, return_tensors="pt", padding=True)
    limit = model.config.text_config.max_position_embeddings
    ids = processed["input_ids"][..., :limit].to(device)
    mask = processed["attention_mask"][..., :limit].to(device)
    return embeds(model.get_text_features(ids, mask))


class CLIPScorer(Scorer):
    """CLIP score: ``100 * max(cos(E_image, E_text), 0)`` per image.

    Identical to torchmetrics' ``clip_score`` for one (image, prompt) pair: same
    processor calls (text padded then truncated to the position limit, as
    torchmetrics does), same normalisation; torchmetrics clamps the *mean* of a
    batch at 0, we clamp each image, which is the per-image definition of
    Hessel et al. (2021).
    """

    def __init__(
        self,
        checkpoint: str = DEFAULT_CLIP,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        cache_dir: str | Path | None = None,
        online: bool = False,
        label: str | None = None,
        model: Any = None,
        processor: Any = None,
    ) -> None:
        self.model, self.processor = clip_on_device(
            checkpoint, model, processor, device=device, cache_dir=cache_dir, online=online
        )
        self.device, self.batch_size = device, batch_size
        self.checkpoint = checkpoint
        self.metric_id = f"clip_score:{label or checkpoint_label(checkpoint)}"

    def cosine(self, images: list[Any], prompts: list[str]) -> np.ndarray:
        """Raw cosine similarities, before scaling and clamping."""
        import torch

        with torch.inference_mode():
            pixels = self.processor(images=images, return_tensors="pt", padding=True)
            img = embeds(self.model.get_image_features(pixels["pixel_values"].to(self.device)))
            txt = _clip_text_features(self.model, self.processor, prompts, self.device)
            img = img / img.norm(p=2, dim=-1, keepdim=True)
            txt = txt / txt.norm(p=2, dim=-1, keepdim=True)
            return (img * txt).sum(dim=-1).float().cpu().numpy()

    def _score_batch(self, images: list[Any], prompts: list[str]) -> np.ndarray:
        return np.maximum(100.0 * self.cosine(images, prompts), 0.0)


class PickScorer(Scorer):
    """PickScore (Kirstain et al., 2023): ``logit_scale.exp() * cos(E_image, E_text)``.

    Follows the model card: processor from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``
    with ``padding=True, truncation=True, max_length=77``, model
    ``yuvalkirstain/PickScore_v1``; here each image is paired with its own prompt.
    """

    def __init__(
        self,
        checkpoint: str = DEFAULT_PICKSCORE,
        processor_checkpoint: str = DEFAULT_PICKSCORE_PROCESSOR,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        cache_dir: str | Path | None = None,
        online: bool = False,
        label: str | None = None,
        model: Any = None,
        processor: Any = None,
    ) -> None:
        self.model, self.processor = clip_on_device(
            checkpoint,
            model,
            processor,
            processor_checkpoint=processor_checkpoint,
            device=device,
            cache_dir=cache_dir,
            online=online,
            what="PickScore",
        )
        self.device, self.batch_size = device, batch_size
        self.metric_id = f"pick_score:{label or checkpoint_label(checkpoint)}"

    def _score_batch(self, images: list[Any], prompts: list[str]) -> np.ndarray:
        import torch

        kw = {"padding": True, "truncation": True, "max_length": 77, "return_tensors": "pt"}
        with torch.inference_mode():
            image_inputs = self.processor(images=to_pil(images), **kw).to(self.device)
            text_inputs = self.processor(text=prompts, **kw).to(self.device)
            img = embeds(self.model.get_image_features(**image_inputs))
            img = img / torch.norm(img, dim=-1, keepdim=True)
            txt = embeds(self.model.get_text_features(**text_inputs))
            txt = txt / torch.norm(txt, dim=-1, keepdim=True)
            scores = self.model.logit_scale.exp() * (txt * img).sum(dim=-1)
            return scores.float().cpu().numpy()


class CLIPConfidence(Discriminator):
    """Default discriminator: CLIP score / 100, a prompt-aware proxy for P(good image).

    HADIS trains an image discriminator; until one is plugged in, text-image
    agreement is a reasonable, reproducible stand-in in [0, 1].
    """

    def __init__(self, clip: CLIPScorer) -> None:
        self.clip = clip
        self.batch_size = clip.batch_size
        self.scorer_id = "clip_confidence:" + clip.metric_id.split(":", 1)[1]

    def confidence(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        return self.clip.score(images, prompts) / 100.0


# --------------------------------------------------------------------------- FID extractors


class CLIPImageExtractor(FeatureExtractor):
    """CLIP image embeddings (unnormalised ``get_image_features``) for FD on CLIP space."""

    def __init__(
        self,
        checkpoint: str = DEFAULT_CLIP,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
        online: bool = False,
        label: str | None = None,
        model: Any = None,
        processor: Any = None,
    ) -> None:
        self.model, self.processor = clip_on_device(
            checkpoint, model, processor, device=device, cache_dir=cache_dir, online=online
        )
        self.device, self.batch_size = device, batch_size
        self.extractor_id = f"clip:{label or checkpoint_label(checkpoint)}"

    def _features_batch(self, images: list[Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            feats = embeds(self.model.get_image_features(pixels.to(self.device)))
            return feats.float().cpu().numpy()


class TorchModuleExtractor(FeatureExtractor):
    """Any ``nn.Module`` mapping float images [n, 3, size, size] in [0, 1] to features.

    Images are resized bilinearly to ``image_size``; the output is flattened
    to [n, dim]. This is how a custom or tiny backbone plugs into FID.
    """

    def __init__(
        self,
        module: Any,
        extractor_id: str,
        *,
        image_size: int | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        self.module = module.eval().to(device)
        self.extractor_id = extractor_id
        self.image_size = image_size
        self.device, self.batch_size = device, batch_size

    def _features_batch(self, images: list[Any]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.stack([im.float() / 255.0 for im in images]).to(self.device)
        if self.image_size is not None and x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        with torch.inference_mode():
            return self.module(x).reshape(len(images), -1).float().cpu().numpy()


class InceptionExtractor(FeatureExtractor):
    """The standard FID Inception-v3 (torch-fidelity ``inception-v3-compat``, 2048-d pool).

    This is what torchmetrics' ``FrechetInceptionDistance`` runs. It needs
    ``torch-fidelity`` (which needs torchvision) and the weights file
    ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's GitHub
    release), which cannot be downloaded offline: pass ``weights_path``.
    """

    def __init__(
        self, weights_path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32
    ) -> None:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as e:
            raise HadisError(
                "The Inception FID extractor needs torch-fidelity and torchvision "
                f"({e}); install them or use --fid clip / a module:callable extractor."
            ) from None
        kwargs: dict[str, Any] = {}
        if weights_path is not None:
            path = Path(weights_path).expanduser()
            if not path.is_file():
                raise HadisError(f"Inception weights file {path} does not exist.")
            kwargs["feature_extractor_weights_path"] = str(path)
        try:
            self.module = FeatureExtractorInceptionV3(INCEPTION_ID, ["2048"], **kwargs)
        except Exception as e:
            raise HadisError(
                f"Cannot load the Inception weights ({str(e).splitlines()[0] if str(e) else e}); "
                f"download {INCEPTION_WEIGHTS_FILE} from torch-fidelity's releases and pass "
                "its path."
            ) from None
        self.module = self.module.eval().to(device)
        self.device, self.batch_size = device, batch_size
        self.extractor_id = INCEPTION_ID

    def _features_batch(self, images: list[Any]) -> np.ndarray:
        import torch

        x = torch.stack(images).to(self.device)  # uint8, resized to 299 inside
        with torch.inference_mode():
            return self.module(x)[0].reshape(len(images), -1).float().cpu().numpy()
