"""Load a zoo :class:`~hadis_profile.zoo.ModelSpec` into a ready-to-call diffusers pipeline.

Offline first: profiling runs on GPU boxes that often have no (or slow) Hub
access, and a profiler that hangs on an ETag request for minutes is worse than
one that fails at once. So unless ``online=True`` every load passes
``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` is set before huggingface_hub
is imported; a checkpoint missing from the cache becomes one :class:`HadisError`
sentence naming the model and the ``huggingface-cli download`` command that
fetches it. Online, the ETag timeout is short so a dead network fails fast.

What a spec can say, and how it maps to diffusers:

* ``source`` + ``revision`` + ``variant`` + ``dtype``: ``<Pipeline>.from_pretrained``
  (``pipeline: auto`` -> ``AutoPipelineForText2Image``); relative local paths
  resolve against the zoo file's folder.
* ``components`` with ``file``: a single state-dict file (Hub via
  ``hf_hub_download`` or local) loaded with ``load_state_dict(strict=True)`` into
  the component the base checkpoint configured (how SDXL-Lightning ships UNets).
* ``components`` without ``file``: a diffusers/transformers component folder
  (``repo`` + ``subfolder``) loaded with its own ``from_pretrained`` and passed to
  the pipeline in place of the base one.
* ``scheduler``: ``SchedulerClass.from_config(pipe.scheduler.config, **kwargs)``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadis_profile.errors import HadisError
from hadis_profile.measure.devices import pick_device

if TYPE_CHECKING:  # pragma: no cover
    from hadis_profile.zoo import ComponentOverride, ModelSpec

#: Seconds huggingface_hub waits for a metadata (ETag) answer when online.
DEFAULT_ETAG_TIMEOUT = 10
_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def configure_hub(online: bool = False, etag_timeout: int = DEFAULT_ETAG_TIMEOUT) -> None:
    """Make Hub access fail fast: offline unless asked, short timeouts, no telemetry.

    huggingface_hub reads these variables at import time, so this must run
    before diffusers/transformers are imported; if they already are, the
    module-level constants are patched too (``local_files_only`` is passed on
    every call anyway, so offline loads never touch the network).
    """
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(etag_timeout))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    if online:
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = not online
        constants.HF_HUB_ETAG_TIMEOUT = int(os.environ["HF_HUB_ETAG_TIMEOUT"])
        constants.HF_HUB_DISABLE_TELEMETRY = True


def quiet_libraries() -> None:
    """Errors only from diffusers and transformers, and no progress bars: a profiling log
    must show progress and problems, not a tokenizer notice per prompt longer than 77
    tokens (the pipelines truncate them, as serving does) or a bar per denoising loop."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def torch_dtype(name: str, device: str) -> Any:
    """The torch dtype for a zoo dtype; fp16 on CPU becomes fp32 (CPU fp16 kernels are
    missing or far slower than fp32, so a CPU profile of fp16 would measure nothing)."""
    import torch

    if name not in _DTYPES:
        raise HadisError(f"Unknown dtype '{name}'; use one of {', '.join(_DTYPES)}.")
    if name == "fp16" and device == "cpu":
        return torch.float32
    return getattr(torch, _DTYPES[name])


def resolve_source(source: str, base_dir: str | Path | None = None) -> str:
    """A Hub id unchanged, or an absolute local path (relative ones against ``base_dir``)."""
    from hadis_profile.zoo import _is_local_path

    if not _is_local_path(source):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or ".") / path
    return str(path.resolve())


def fetch_hint(repo: str, revision: str | None = None, filename: str | None = None) -> str:
    """The command that puts a Hub checkpoint in the cache (the current ``hf`` CLI of
    huggingface_hub; ``huggingface-cli`` is deprecated)."""
    cmd = f"hf download {repo}"
    if filename:
        cmd += f" {filename}"
    if revision:
        cmd += f" --revision {revision}"
    return f"`{cmd}`"


# --------------------------------------------------------------------------- identity


def _snapshot_commit(repo: str, filename: str, revision: str | None, cache_dir: Any) -> str | None:
    """The commit of the cached Hub snapshot holding ``filename`` (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision)
    except Exception:  # an unusual cache layout or a bad repo id: unknown, not an error
        return None
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    if "snapshots" not in parts:
        return None
    commit = parts[parts.index("snapshots") + 1]
    return commit if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit) else None


def content_hash(path: str | Path) -> str:
    """sha256 over a file's bytes, or over a folder's files (relative path and sha256 of
    each, in path order): what a local checkpoint is, whatever its mtime."""
    from hadis_profile.fileio import sha256_file, sha256_text

    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    lines = [
        f"{f.relative_to(p).as_posix()}\t{sha256_file(f)}"
        for f in sorted(x for x in p.rglob("*") if x.is_file())
    ]
    return sha256_text("\n".join(lines))


def _identity(
    source: str, revision: str | None, filename: str, cache_dir: Any, *, whole: bool
) -> dict[str, Any]:
    """A local source's content hash (the whole folder, or just ``filename`` in it), or a Hub
    repo's requested revision and the commit its cached ``filename`` comes from."""
    if os.path.isabs(source):
        where = Path(source) if whole else Path(source, filename)
        return {"sha256": content_hash(where) if where.exists() else None}
    return {
        "revision": revision,
        "commit": _snapshot_commit(source, filename, revision, cache_dir),
    }


def checkpoint_identity(
    spec: ModelSpec, *, cache_dir: str | Path | None = None, base_dir: str | Path | None = None
) -> dict[str, Any]:
    """Exactly which weights ``spec`` loads: the resolved snapshot commit of each Hub repo
    (a moving branch such as ``main`` becomes the commit it pointed to), a content hash of
    each local folder or file; unknown values are None (not in the cache yet).
    """
    source = resolve_source(spec.source, base_dir)
    main = _identity(source, spec.revision, "model_index.json", cache_dir, whole=True)
    out: dict[str, Any] = {"source": spec.source, **main}
    parts = []
    for ov in spec.components:
        repo = resolve_source(ov.repo, base_dir)
        folder = ov.subfolder or ""
        name = ov.file if ov.file is not None else "config.json"
        filename = f"{folder}/{name}" if folder else name
        if ov.file is None and os.path.isabs(repo):  # a whole component folder
            where = Path(repo, folder)
            ident: dict[str, Any] = {"sha256": content_hash(where) if where.exists() else None}
        else:
            ident = _identity(repo, ov.revision, filename, cache_dir, whole=False)
        parts.append({"component": ov.component, "repo": ov.repo, **ident})
    if parts:
        out["components"] = parts
    return out


@dataclass
class LoadedPipeline:
    """A pipeline placed on its device plus what was actually used to load it."""

    spec: Any  # ModelSpec
    pipe: Any
    device: str
    dtype: str  # the effective torch dtype name, e.g. "float32"
    load_s: float
    notes: list[str] = field(default_factory=list)

    def call_kwargs(self) -> dict[str, Any]:
        return call_kwargs(self.spec)


def call_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """The sampling arguments a spec fixes (steps, guidance, size, negative prompt)."""
    kwargs: dict[str, Any] = {
        "num_inference_steps": spec.steps,
        "guidance_scale": spec.guidance_scale,
        "height": spec.height,
        "width": spec.width,
    }
    if spec.negative_prompt is not None:
        kwargs["negative_prompt"] = spec.negative_prompt
    return kwargs


def _hub_kwargs(cache_dir: str | Path | None, online: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"local_files_only": not online}
    if cache_dir is not None:
        out["cache_dir"] = str(cache_dir)
    return out


def _missing(
    model: str,
    what: str,
    repo: str,
    revision: str | None,
    cause: BaseException,
    online: bool,
    filename: str | None = None,
) -> HadisError:
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if online:
        return HadisError(f"Model '{model}': cannot load {what} '{repo}' ({first}).")
    return HadisError(
        f"Model '{model}': {what} '{repo}'"
        + (f" (revision {revision})" if revision else "")
        + " is not in the local Hugging Face cache; fetch it with "
        + fetch_hint(repo, revision, filename)
        + " or rerun with --online."
    )


def _find_class(name: str, model: str, what: str) -> Any:
    import diffusers

    obj = getattr(diffusers, name, None)
    if obj is None:
        import transformers

        obj = getattr(transformers, name, None)
    if obj is None:
        raise HadisError(
            f"Model '{model}': {what} class '{name}' exists neither in diffusers "
            f"{diffusers.__version__} nor in transformers."
        )
    return obj


def _read_json(
    repo: str, filename: str, subfolder: str | None, revision: str | None, hub: dict
) -> dict:
    if os.path.isdir(repo):
        path = Path(repo, subfolder or "", filename)
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo, filename, subfolder=subfolder, revision=revision, **hub))
    return json.loads(path.read_text(encoding="utf-8"))


def _component_class(ov: ComponentOverride, repo: str, hub: dict, model: str) -> Any:
    """The override's class: explicit ``class``, else the folder's config says it."""
    if ov.class_name:
        return _find_class(ov.class_name, model, f"component '{ov.component}'")
    try:
        config = _read_json(repo, "config.json", ov.subfolder, ov.revision, hub)
    except (OSError, ValueError) as e:
        raise _missing(
            model,
            f"component '{ov.component}' from",
            ov.repo,
            ov.revision,
            e,
            not hub["local_files_only"],
        ) from None
    name = config.get("_class_name") or (config.get("architectures") or [None])[0]
    if not name:
        raise HadisError(
            f"Model '{model}': component '{ov.component}' from '{ov.repo}' has no class "
            "name in its config.json; set 'class' in the zoo entry."
        )
    return _find_class(name, model, f"component '{ov.component}'")


def _weights_path(ov: ComponentOverride, repo: str, hub: dict, model: str) -> Path:
    assert ov.file is not None
    if os.path.isdir(repo) or Path(repo).is_absolute():
        path = Path(repo, ov.subfolder or "", ov.file)
        if not path.is_file():
            raise HadisError(
                f"Model '{model}': component '{ov.component}' weights file {path} does not exist."
            )
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(repo, ov.file, subfolder=ov.subfolder, revision=ov.revision, **hub)
        )
    except (OSError, ValueError) as e:
        filename = f"{ov.subfolder}/{ov.file}" if ov.subfolder else ov.file
        raise _missing(
            model,
            f"component '{ov.component}' file from",
            ov.repo,
            ov.revision,
            e,
            not hub["local_files_only"],
            filename,
        ) from None


def load_state_dict_file(path: Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a torch pickle (``weights_only``)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise HadisError(f"Weights file {path} is neither .safetensors nor a torch checkpoint.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _apply_file_override(pipe: Any, ov: ComponentOverride, path: Path, model: str) -> None:
    module = getattr(pipe, ov.component, None)
    if module is None or not hasattr(module, "load_state_dict"):
        raise HadisError(
            f"Model '{model}': the pipeline has no torch component '{ov.component}' to load "
            f"{path.name} into."
        )
    state = load_state_dict_file(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise HadisError(
            f"Model '{model}': {path.name} does not fit component '{ov.component}' of "
            f"'{model}' ({first})."
        ) from None


def _pipeline_index(spec: ModelSpec, source: str, hub: dict, online: bool) -> dict:
    """The checkpoint's ``model_index.json``: proves it is there before any weight loads."""
    import diffusers

    local = os.path.isabs(source)
    if local and not Path(source).is_dir():
        raise HadisError(f"Model '{spec.name}': local checkpoint folder {source} does not exist.")
    try:
        return dict(diffusers.DiffusionPipeline.load_config(source, revision=spec.revision, **hub))
    except (OSError, ValueError) as e:
        if local:
            raise HadisError(
                f"Model '{spec.name}': {source} is not a diffusers pipeline folder "
                "(no model_index.json)."
            ) from None
        raise _missing(spec.name, "checkpoint", spec.source, spec.revision, e, online) from None


def preflight(
    spec: ModelSpec,
    *,
    cache_dir: str | Path | None = None,
    online: bool = False,
    base_dir: str | Path | None = None,
) -> str | None:
    """Why ``spec`` cannot be loaded (one sentence), or None when it looks loadable.

    Checks the pipeline index and every override's file or config without
    loading weights, so a long run can refuse a missing model up front
    instead of failing hours in. Online, missing files would be downloaded, so
    only local paths are checked.
    """
    configure_hub(online)
    hub = _hub_kwargs(cache_dir, online)
    source = resolve_source(spec.source, base_dir)
    if online and not os.path.isabs(source):
        return None
    try:
        _pipeline_index(spec, source, hub, online)
        for ov in spec.components:
            repo = resolve_source(ov.repo, base_dir)
            if ov.file is not None:
                _weights_path(ov, repo, hub, spec.name)
            else:
                _component_class(ov, repo, hub, spec.name)
    except HadisError as e:
        return str(e)
    return None


def load_pipeline(
    spec: ModelSpec,
    *,
    device: str | None = "auto",
    cache_dir: str | Path | None = None,
    online: bool = False,
    base_dir: str | Path | None = None,
    keep_safety_checker: bool = False,
) -> LoadedPipeline:
    """Load ``spec`` ready to call, on ``device`` (``auto``: CUDA when present).

    ``base_dir`` is where relative local sources are resolved (the zoo file's
    folder). The SD 1.x/2.x safety checker is dropped unless
    ``keep_safety_checker``: it is not part of the model being profiled, adds
    its own latency and blacks out images, which would corrupt quality scores.
    """
    configure_hub(online)
    t0 = time.perf_counter()
    dev = pick_device(device)
    dtype = torch_dtype(spec.dtype, dev)
    notes: list[str] = []
    if spec.dtype == "fp16" and dev == "cpu":
        notes.append("fp16 requested; loaded as fp32 on the CPU")
    import diffusers

    quiet_libraries()
    hub = _hub_kwargs(cache_dir, online)
    source = resolve_source(spec.source, base_dir)
    local = os.path.isabs(source)
    index = _pipeline_index(spec, source, hub, online)

    kwargs: dict[str, Any] = {"torch_dtype": dtype, **hub}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.variant:
        kwargs["variant"] = spec.variant
    if "safety_checker" in index and not keep_safety_checker:
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False

    file_overrides: list[tuple[ComponentOverride, Path]] = []
    for ov in spec.components:
        repo = resolve_source(ov.repo, base_dir)
        if ov.file is not None:
            file_overrides.append((ov, _weights_path(ov, repo, hub, spec.name)))
            continue
        cls = _component_class(ov, repo, hub, spec.name)
        extra = {"subfolder": ov.subfolder} if ov.subfolder else {}
        if ov.revision:
            extra["revision"] = ov.revision
        try:
            kwargs[ov.component] = cls.from_pretrained(repo, torch_dtype=dtype, **extra, **hub)
        except (OSError, ValueError) as e:
            raise _missing(
                spec.name, f"component '{ov.component}' from", ov.repo, ov.revision, e, online
            ) from None

    if spec.pipeline == "auto":
        cls = diffusers.AutoPipelineForText2Image
    else:
        cls = _find_class(spec.pipeline, spec.name, "pipeline")
    try:
        pipe = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        if local:
            first = str(e).strip().splitlines()[0]
            raise HadisError(f"Model '{spec.name}': cannot load {source} ({first}).") from None
        raise _missing(spec.name, "checkpoint", spec.source, spec.revision, e, online) from None

    for ov, path in file_overrides:
        _apply_file_override(pipe, ov, path, spec.name)
    if spec.scheduler is not None:
        sched_cls = _find_class(spec.scheduler.class_name, spec.name, "scheduler")
        pipe.scheduler = sched_cls.from_config(pipe.scheduler.config, **spec.scheduler.kwargs)
    return ready(spec, pipe.to(dev), dev, dtype, t0, notes)


def ready(spec: ModelSpec, pipe: Any, device: str, dtype: Any, t0: float, notes: list[str]):
    """A pipeline placed on ``device`` as :class:`LoadedPipeline`: progress bars off (they
    would print inside timed calls), the dtype it really runs in and the load time."""
    pipe.set_progress_bar_config(disable=True)
    return LoadedPipeline(
        spec=spec,
        pipe=pipe,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        load_s=time.perf_counter() - t0,
        notes=notes,
    )
