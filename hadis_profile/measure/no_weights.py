"""Real diffusion architectures with random weights, built from shipped configs on the device.

Capacity planning comes before a 10-20 GB download or a licence click-through:
how fast is SDXL at batch 8 on this GPU, where does SD3.5 Large run out of
memory? Latency and memory depend on the architecture, the dtype and the
shapes, not on the weight values, so a pipeline assembled from the published
configs with random weights answers those questions (optimum-benchmark's
``no_weights`` does the same). Its images are noise: never use its scores.

The published configs ship in ``architectures/`` (one folder per architecture:
a diffusers-style ``model_index.json`` plus one JSON per component, each with a
``_source`` note; ``index.json`` maps Hub repo ids to architectures). Three rules
keep a build honest at full size:

* **Straight onto the device, in the target dtype.** Every component is
  constructed under ``torch.device(device)`` with the default dtype set to the
  target dtype, so an 8B-parameter transformer never exists on the CPU and never
  exists in fp32 (``device="meta"`` builds shapes only, for counting).
* **Cheap, finite random weights.** PyTorch's per-layer initialisers are
  skipped during construction; afterwards each weight of two or more dimensions
  is drawn once from N(0, 1/fan_in) (variance-preserving, so activations stay far
  from fp16's limit), biases are zero and norm scales one, all seeded, on the device.
* **Real tokenizers, real lengths.** Tokenizers cannot be downloaded, so they are
  built locally (the tiny zoo's byte-level BPE and Unigram builders) and padded
  to the real vocabulary sizes: CLIP 49408 ids with ``<|startoftext|>``/
  ``<|endoftext|>`` at 49406/49407 and 77 positions; T5 32100 ids. Prompts are
  padded to the real maximum lengths, so the encoders do the real amount of work.
"""

from __future__ import annotations

import importlib
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadis_profile.errors import InputError, ParameterError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hadis_profile.zoo import ModelSpec

__all__ = [
    "ARCHITECTURES_DIR",
    "Architecture",
    "architecture_for_repo",
    "architecture_for_spec",
    "architectures",
    "build_clip_tokenizer",
    "build_component",
    "build_pipeline",
    "build_scheduler",
    "build_t5_tokenizer",
    "checkpoint_numel",
    "get_architecture",
]

ARCHITECTURES_DIR = Path(__file__).with_name("architectures")
#: OpenAI CLIP's BPE vocabulary size; the last two ids are the start and end tokens.
CLIP_VOCAB_SIZE = 49408
#: T5's SentencePiece vocabulary (32000) plus its 100 sentinel ids; the model's
#: embedding has 32128 rows (padded to a multiple of 128).
T5_VOCAB_SIZE = 32100
T5_MODEL_MAX_LENGTH = 512
_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
#: Initialisers PyTorch layers call from ``reset_parameters``; skipped while building
#: because every parameter is drawn again afterwards (one pass instead of two).
_TORCH_INITS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Architecture:
    """One shipped architecture: its pipeline class and per-component configs."""

    name: str
    family: str
    repo: str
    folder: Path
    pipeline: str
    #: component -> (library, class); ``(None, None)`` for a slot left empty (safety checker).
    components: dict[str, tuple[str | None, str | None]]
    #: Non-component keyword arguments of the pipeline's constructor.
    pipeline_kwargs: dict[str, Any]

    @property
    def modules(self) -> list[str]:
        """Components built from a shipped config (not tokenizers, schedulers or empty slots)."""
        return [
            c
            for c, (lib, _) in self.components.items()
            if lib is not None and c != "scheduler" and not c.startswith("tokenizer")
        ]

    def _load(self, component: str) -> dict[str, Any]:
        if component != "scheduler" and component not in self.modules:
            raise ParameterError(
                "component",
                f"{{param}} must be one of {', '.join([*self.modules, 'scheduler'])} for "
                f"architecture '{self.name}', not '{component}'.",
            )
        return json.loads((self.folder / f"{component}.json").read_text(encoding="utf-8"))

    def config(self, component: str) -> dict[str, Any]:
        """The published config of ``component``, as its class consumes it."""
        return {k: v for k, v in self._load(component).items() if k != "_source"}

    def source(self, component: str) -> dict[str, str]:
        """Where the shipped config of ``component`` comes from."""
        return self._load(component)["_source"]


@lru_cache(maxsize=1)
def _index() -> dict[str, Any]:
    return json.loads((ARCHITECTURES_DIR / "index.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def architectures() -> dict[str, Architecture]:
    """Every shipped architecture by name."""
    out = {}
    for name, meta in _index()["architectures"].items():
        folder = ARCHITECTURES_DIR / name
        model_index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        components = {k: tuple(v) for k, v in model_index.items() if isinstance(v, list)}
        kwargs = {
            k: v for k, v in model_index.items() if not k.startswith("_") and k not in components
        }
        out[name] = Architecture(
            name=name,
            family=meta["family"],
            repo=meta["repo"],
            folder=folder,
            pipeline=model_index["_class_name"],
            components=components,
            pipeline_kwargs=kwargs,
        )
    return out


def get_architecture(name: str) -> Architecture:
    """The shipped architecture called ``name``."""
    try:
        return architectures()[name]
    except KeyError:
        raise ParameterError(
            "architecture",
            f"{{param}} must be one of {', '.join(architectures())}, not '{name}'.",
        ) from None


def architecture_for_repo(repo: str) -> Architecture | None:
    """The architecture of Hub repo ``repo``, or None when no shipped config covers it."""
    name = _index()["repos"].get(repo)
    return None if name is None else architectures()[name]


def architecture_for_spec(spec: ModelSpec) -> Architecture:
    """The architecture a zoo entry runs, or one :class:`InputError` sentence naming the model.

    The entry's ``source`` picks the architecture. A component override that
    loads a weights ``file`` into the source's own component (SDXL-Lightning's
    UNets) keeps the architecture; one that brings a separately configured
    folder or class could change it, so it is refused, as are local sources.
    """
    where = f"Model '{spec.name}'"
    if spec.is_local:
        raise InputError(
            f"{where} loads from the local folder {spec.source}, which no shipped "
            "architecture config describes; profile it with its weights."
        )
    arch = architecture_for_repo(spec.source)
    if arch is None:
        known = ", ".join(sorted(_index()["repos"]))
        raise InputError(
            f"{where} comes from {spec.source}, which has no shipped architecture config "
            f"(known: {known}); profile it with its weights."
        )
    for override in spec.components:
        if override.component not in arch.modules:
            raise InputError(
                f"{where} overrides component '{override.component}', which architecture "
                f"'{arch.name}' does not have."
            )
        if override.file is None or override.class_name is not None:
            raise InputError(
                f"{where} replaces its {override.component} with a separately configured model "
                f"from {override.repo}, which no shipped architecture config describes."
            )
    if spec.pipeline not in ("auto", arch.pipeline):
        raise InputError(
            f"{where} asks for {spec.pipeline}, but its architecture '{arch.name}' runs "
            f"{arch.pipeline}."
        )
    if spec.family is not None and spec.family != arch.family:
        raise InputError(
            f"{where} is marked family '{spec.family}', but {spec.source} is the "
            f"'{arch.family}' architecture '{arch.name}'."
        )
    return arch


def _as_architecture(arch: Architecture | str) -> Architecture:
    return arch if isinstance(arch, Architecture) else get_architecture(arch)


# --------------------------------------------------------------------------- modules


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _TORCH_DTYPES:
        raise ParameterError("dtype", f"{{param}} must be one of fp16, bf16, fp32, not '{dtype}'.")
    return getattr(torch, _TORCH_DTYPES[dtype])


@contextmanager
def _constructed_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Allocate every new tensor on ``device`` in ``dtype``, skipping layer initialisers."""
    import torch
    import torch.nn.init as init

    saved = {n: getattr(init, n) for n in _TORCH_INITS if hasattr(init, n)}
    old_dtype = torch.get_default_dtype()
    try:
        for n in saved:
            setattr(init, n, _keep)
        torch.set_default_dtype(dtype)
        with device:
            yield
    finally:
        torch.set_default_dtype(old_dtype)
        for n, fn in saved.items():
            setattr(init, n, fn)


def _keep(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    return tensor


def _random_init(module: torch.nn.Module, seed: int) -> None:
    """Weights ~ N(0, 1/fan_in), biases 0, norm scales 1.

    Variance-preserving: at full size SD 1.5's activations peak around 20
    (tests/test_architectures.py), far below fp16's 65504.
    """
    import torch

    params = list(module.named_parameters())
    if not params:
        return
    generator = torch.Generator(device=params[0][1].device).manual_seed(seed)
    with torch.no_grad():
        for name, p in params:
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=generator)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def build_component(
    arch: Architecture | str,
    component: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "fp32",
    seed: int = 0,
) -> torch.nn.Module:
    """``component`` of ``arch`` from its published config, random weights, in eval mode.

    Constructed directly on ``device`` in ``dtype`` (see the module docstring);
    ``device="meta"`` allocates nothing, for counting parameters of models too
    big for this machine.
    """
    import torch

    arch = _as_architecture(arch)
    config = arch.config(component)
    library, class_name = arch.components[component]
    cls = getattr(importlib.import_module(str(library)), str(class_name))
    target = torch.device(device)
    torch_dtype = _torch_dtype(dtype)
    with _constructed_on(target, torch_dtype):
        if library == "diffusers":
            module = cls.from_config(config)
        else:
            module = cls(cls.config_class.from_dict(config))
    with torch.no_grad():
        for buffer in module.buffers():  # some layers compute theirs in fp32 (SD3's pos_embed)
            if buffer.is_floating_point():
                buffer.data = buffer.data.to(torch_dtype)
    _keep_in_fp32(module, str(library), torch_dtype)
    if target.type != "meta":
        _random_init(module, seed)
    return module.eval().requires_grad_(False)


def _keep_in_fp32(module: torch.nn.Module, library: str, dtype: torch.dtype) -> None:
    """Leave in fp32 the layers ``from_pretrained`` would (T5's ``wo`` in fp16).

    Mirrors transformers' rule (``_keep_in_fp32_modules`` for fp16 only, the
    ``_strict`` list for fp16 and bf16, matched as whole dotted names) and
    diffusers' (``_keep_in_fp32_modules`` for any dtype, matched as substrings).
    """
    import re

    import torch

    if dtype == torch.float32:
        return
    names: list[str] = []
    if library == "transformers":
        if dtype == torch.float16:
            names += getattr(module, "_keep_in_fp32_modules", None) or []
        names += getattr(module, "_keep_in_fp32_modules_strict", None) or []
        pattern = re.compile("|".join(rf"((^|\.){re.escape(n)}($|\.))" for n in names))
        matches = pattern.search
    else:
        names += getattr(type(module), "_keep_in_fp32_modules", None) or []
        matches = lambda name: any(n in name for n in names)  # noqa: E731
    if names:
        with torch.no_grad():
            for name, param in module.named_parameters():
                if matches(name):
                    param.data = param.data.float()


def checkpoint_numel(module: torch.nn.Module) -> int:
    """Numbers a checkpoint of ``module`` holds: parameters plus persistent buffers.

    That is what model cards count: SD3's positional table is a buffer here but
    a tensor in the released weights. Tied tensors (T5's embeddings) count once.
    """
    tensors = {id(t): t for t in module.state_dict(keep_vars=True).values()}
    return sum(t.numel() for t in tensors.values())


def build_scheduler(arch: Architecture | str) -> Any:
    """The architecture's published scheduler."""
    import diffusers

    config = _as_architecture(arch).config("scheduler")
    return getattr(diffusers, config["_class_name"]).from_config(config)


# --------------------------------------------------------------------------- tokenizers


@lru_cache(maxsize=1)
def _clip_vocab_files() -> tuple[str, str]:
    """``vocab.json`` and ``merges.txt`` text: the tiny zoo's BPE, ids padded to CLIP's."""
    from hadis_profile.measure.tiny import write_clip_vocab

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = write_clip_vocab(Path(tmp), "mini")
        vocab: dict[str, int] = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = merges_path.read_text(encoding="utf-8")
    specials = ("<|startoftext|>", "<|endoftext|>")
    learned = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    # Unreachable placeholders (no merge produces them) fill the ids the real BPE uses,
    # so the special tokens get their real ids and pooling finds <|endoftext|> as the max.
    fillers = [f"<|unused{i}|>" for i in range(len(learned), CLIP_VOCAB_SIZE - len(specials))]
    tokens = [*learned, *fillers, *specials]
    return json.dumps({t: i for i, t in enumerate(tokens)}), merges


def build_clip_tokenizer() -> Any:
    """A ``CLIPTokenizer`` with CLIP's 49408 ids and 77 positions, built offline."""
    from transformers import CLIPTokenizer

    from hadis_profile.measure.tiny import CLIP_MAX_LENGTH

    vocab_text, merges_text = _clip_vocab_files()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_path.write_text(vocab_text, encoding="utf-8")
        merges_path.write_text(merges_text, encoding="utf-8")
        return CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=CLIP_MAX_LENGTH)


def build_t5_tokenizer() -> Any:
    """A ``T5TokenizerFast`` with T5's 32100 ids, built offline.

    The tiny zoo's Unigram model (real words, character fallback, ``</s>``
    appended) plus unreachable placeholder pieces: private-use characters no
    prompt contains, at a score no segmentation would pick.
    """
    from tokenizers import Tokenizer
    from transformers import T5TokenizerFast

    from hadis_profile.measure.tiny import build_t5_tokenizer as tiny_t5

    state = json.loads(tiny_t5().backend_tokenizer.to_str())
    pieces = state["model"]["vocab"]
    pieces += [[f"\ue000{i}", -100.0] for i in range(T5_VOCAB_SIZE - len(pieces))]
    return T5TokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=T5_MODEL_MAX_LENGTH,
    )


# --------------------------------------------------------------------------- pipelines


def build_pipeline(
    arch_or_spec: Architecture | str | ModelSpec,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
) -> Any:
    """A ready-to-call diffusers pipeline of a real architecture with random weights.

    ``arch_or_spec`` is an architecture (or its name) or a zoo ``ModelSpec``;
    a spec picks the architecture through :func:`architecture_for_spec`, sets the
    dtype (unless ``dtype`` is given) and applies its scheduler override the way
    weight-loading runs do. The height and width stay call arguments:
    ``pipe(prompt, num_inference_steps=..., height=..., width=..., guidance_scale=...)``.
    """
    import diffusers

    from hadis_profile.zoo import ModelSpec

    spec = arch_or_spec if isinstance(arch_or_spec, ModelSpec) else None
    if spec is not None:
        arch = architecture_for_spec(spec)
        dtype = spec.dtype if dtype is None else dtype
    else:
        arch = _as_architecture(arch_or_spec)  # type: ignore[arg-type]
    dtype = "fp32" if dtype is None else dtype
    _torch_dtype(dtype)  # a bad dtype fails before minutes of construction
    clip_tokenizer = None
    parts: dict[str, Any] = {}
    for i, (name, (library, class_name)) in enumerate(arch.components.items()):
        if library is None:
            parts[name] = None
        elif name == "scheduler":
            parts[name] = build_scheduler(arch)
        elif class_name == "CLIPTokenizer":
            clip_tokenizer = clip_tokenizer or build_clip_tokenizer()
            parts[name] = clip_tokenizer
        elif class_name == "T5TokenizerFast":
            parts[name] = build_t5_tokenizer()
        else:
            parts[name] = build_component(arch, name, device=device, dtype=dtype, seed=seed + i)
    pipe = getattr(diffusers, arch.pipeline)(**parts, **arch.pipeline_kwargs)
    if spec is not None and spec.scheduler is not None:
        sched_cls = getattr(diffusers, spec.scheduler.class_name, None)
        if sched_cls is None:
            raise InputError(
                f"Model '{spec.name}' asks for scheduler {spec.scheduler.class_name}, which this "
                f"diffusers ({diffusers.__version__}) does not have."
            )
        pipe.scheduler = sched_cls.from_config(pipe.scheduler.config, **spec.scheduler.kwargs)
    return pipe


def load_random(spec: ModelSpec, *, device: str = "cpu", seed: int = 0) -> Any:
    """``spec`` as :func:`~.pipelines.load_pipeline` returns it, but built from its shipped
    architecture with random weights: what ``run --no-weights`` times. Its images are noise.

    fp16 on the CPU becomes fp32, exactly as when loading the checkpoint.
    """
    import time

    from hadis_profile.measure.pipelines import pick_device, quiet_libraries, ready, torch_dtype

    quiet_libraries()
    t0 = time.perf_counter()
    dev = pick_device(device)
    dtype = torch_dtype(spec.dtype, dev)
    notes = [
        f"random weights (architecture '{architecture_for_spec(spec).name}'): latency and "
        "memory only"
    ]
    return ready(
        spec, build_pipeline(spec, device=dev, dtype=dtype, seed=seed), dev, dtype, t0, notes
    )
