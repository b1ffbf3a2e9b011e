"""The model zoo: ``model_zoo.yaml`` parsed into validated, hashable model specs.

Every measurement in a run is keyed by a model's :meth:`ModelSpec.spec_hash`,
so the zoo is validated strictly up front (unknown fields, typos in enums,
sizes the VAE cannot produce) rather than failing hours into a profile. Each
problem is reported as one sentence naming the file, the entry and the field.

File format::

    defaults:            # optional; any model field except ``name``
      dtype: fp16
    models:
      - name: sdxl-lightning-2step
        source: stabilityai/stable-diffusion-xl-base-1.0   # Hub repo id or ./local/path
        revision: null                                     # branch, tag or commit (Hub only)
        pipeline: StableDiffusionXLPipeline                # or "auto"
        components:                                        # replace pipeline parts
          - {component: unet, repo: ByteDance/SDXL-Lightning,
             file: sdxl_lightning_2step_unet.safetensors}
        scheduler: {class: EulerDiscreteScheduler, kwargs: {timestep_spacing: trailing}}
        steps: 2
        guidance_scale: 0.0
        height: 1024
        width: 1024
        variant: fp16
        family: sdxl
        tags: [light]

An entry's own value replaces the default wholesale (nested mappings are not
merged). Only pydantic and PyYAML are imported; nothing here touches torch.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from hadis_profile.errors import InputError
from hadis_profile.fileio import canonical_json, sha256_text

__all__ = [
    "DTYPES",
    "ComponentOverride",
    "ModelSpec",
    "SchedulerSpec",
    "Zoo",
    "load_zoo",
    "parse_zoo",
    "zoo_hash",
]

DTYPES = ("fp16", "bf16", "fp32")
SPEC_HASH_FORMAT = "hadis-profile/model-spec/1"
ZOO_HASH_FORMAT = "hadis-profile/zoo/1"
#: Fields that describe or group a model but change neither its images nor its latency.
HASH_EXCLUDED_FIELDS = frozenset({"name", "family", "tags"})
MAX_LISTED_PROBLEMS = 5

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_LOCAL_PREFIXES = ("/", "./", "../", "~/", ".\\", "..\\")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _is_local_path(value: str) -> bool:
    return value.startswith(_LOCAL_PREFIXES) or value in (".", "..", "~")


def _check_source(value: str) -> str:
    """Accept a Hub repo id (``org/name``) or an explicit local path."""
    if _is_local_path(value) or _HUB_ID.match(value):
        return value
    raise ValueError(
        "must be a Hub repo id like 'org/name' or a local path starting with "
        "'/', './', '../' or '~/'"
    )


class _Strict(BaseModel):
    """Shared config: unknown keys are errors; numbers are strict (see ``_Int``/``_Float``)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


# Strict so that YAML ``"4"`` or ``true`` is reported instead of silently becoming 4 or 1.
_Int = Annotated[int, Strict()]
_Float = Annotated[float, Strict()]


class ComponentOverride(_Strict):
    """Replace one pipeline component (e.g. the UNet) with weights from another repo.

    ``file`` names a single weights file (a state dict) loaded into the component
    as configured by the base ``source`` -- how SDXL-Lightning ships its UNets.
    ``subfolder`` names a diffusers-format component folder loaded with
    ``from_pretrained``. Both may be given (a weights file inside a subfolder).
    """

    component: str = Field(description="pipeline attribute to replace: unet, vae, transformer...")
    repo: str = Field(description="Hub repo id or local path holding the weights")
    file: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    class_name: str | None = Field(default=None, alias="class")

    @field_validator("component")
    @classmethod
    def _component_identifier(cls, v: str) -> str:
        if not _IDENTIFIER.match(v):
            raise ValueError("must be a pipeline attribute name such as 'unet' or 'vae'")
        return v

    @field_validator("repo")
    @classmethod
    def _repo_source(cls, v: str) -> str:
        return _check_source(v)

    @field_validator("file", "subfolder")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or v.startswith(("/", "\\")) or ".." in Path(v).parts):
            raise ValueError("must be a non-empty path relative to the repo, without '..'")
        return v

    @field_validator("class_name")
    @classmethod
    def _class_identifier(cls, v: str | None) -> str | None:
        if v is not None and not _IDENTIFIER.match(v):
            raise ValueError("must be a diffusers class name such as 'UNet2DConditionModel'")
        return v

    @model_validator(mode="after")
    def _revision_needs_hub(self) -> ComponentOverride:
        if self.revision is not None and _is_local_path(self.repo):
            raise ValueError("sets 'revision', which applies only to a Hub repo, not a local path")
        return self


class SchedulerSpec(_Strict):
    """A diffusers scheduler class built from the pipeline's config plus ``kwargs``."""

    class_name: str = Field(alias="class")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_name")
    @classmethod
    def _scheduler_class(cls, v: str) -> str:
        if not (_IDENTIFIER.match(v) and v.endswith("Scheduler")):
            raise ValueError("must be a diffusers scheduler class such as 'EulerDiscreteScheduler'")
        return v

    @field_validator("kwargs")
    @classmethod
    def _json_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            canonical_json(v)
        except (TypeError, ValueError):
            raise ValueError(
                "must hold only JSON values (strings, numbers, booleans, lists, null)"
            ) from None
        return v


class ModelSpec(_Strict):
    """One candidate model: where its weights come from and how it is sampled."""

    name: str
    source: str
    revision: str | None = None
    pipeline: str = "auto"
    components: list[ComponentOverride] = Field(default_factory=list)
    scheduler: SchedulerSpec | None = None
    steps: _Int = Field(ge=1)
    guidance_scale: _Float = Field(ge=0.0)
    height: _Int
    width: _Int
    dtype: Literal["fp16", "bf16", "fp32"] = "fp16"
    variant: str | None = None
    negative_prompt: str | None = None
    family: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_pattern(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '.', '_', '+' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("source")
    @classmethod
    def _source_kind(cls, v: str) -> str:
        return _check_source(v)

    @field_validator("pipeline")
    @classmethod
    def _pipeline_class(cls, v: str) -> str:
        if v != "auto" and not (_IDENTIFIER.match(v) and v.endswith("Pipeline")):
            raise ValueError(
                "must be 'auto' or a diffusers pipeline class such as 'StableDiffusionXLPipeline'"
            )
        return v

    @field_validator("height", "width")
    @classmethod
    def _latent_multiple(cls, v: int) -> int:
        if v <= 0 or v % 8:
            raise ValueError("must be a positive multiple of 8")
        return v

    @field_validator("variant")
    @classmethod
    def _variant_token(cls, v: str | None) -> str | None:
        if v is not None and not _VARIANT.match(v):
            raise ValueError("must be a weight-file variant such as 'fp16', or null")
        return v

    @field_validator("family")
    @classmethod
    def _family_token(cls, v: str | None) -> str | None:
        if v is not None and not _TAG.match(v):
            raise ValueError("must be a lowercase token such as 'sd1', 'sdxl' or 'sd3'")
        return v

    @field_validator("tags")
    @classmethod
    def _tag_tokens(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not _TAG.match(t)]
        if bad:
            raise ValueError(
                f"must be lowercase tokens without spaces, e.g. 'light' (bad: {bad[0]!r})"
            )
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a tag")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> ModelSpec:
        if self.revision is not None and _is_local_path(self.source):
            raise ValueError(
                "sets 'revision', which applies only to a Hub source, not a local path"
            )
        seen = [c.component for c in self.components]
        dup = next((c for c in seen if seen.count(c) > 1), None)
        if dup is not None:
            raise ValueError(f"overrides component {dup!r} more than once")
        if self.negative_prompt is not None and self.guidance_scale <= 1.0:
            raise ValueError(
                "sets 'negative_prompt', which has no effect when 'guidance_scale' <= 1 "
                "(classifier-free guidance is off)"
            )
        return self

    # ------------------------------------------------------------------ derived

    @property
    def is_local(self) -> bool:
        """True when ``source`` is a local folder rather than a Hub repo id."""
        return _is_local_path(self.source)

    @property
    def size(self) -> str:
        """``"WIDTHxHEIGHT"``, the way resolutions are usually written."""
        return f"{self.width}x{self.height}"

    def hash_payload(self) -> dict[str, Any]:
        """The fields that change a model's images or latency, in canonical form.

        ``name``, ``family`` and ``tags`` are left out (renaming or regrouping
        keeps the measurements), unset fields are omitted (so adding a new
        optional field later leaves existing hashes alone) and component
        overrides are sorted by component.
        """
        data = self.model_dump(mode="json", by_alias=True, exclude=set(HASH_EXCLUDED_FIELDS))
        data["components"] = sorted(
            ({k: v for k, v in c.items() if v is not None} for c in data["components"]),
            key=lambda c: c["component"],
        )
        payload = {k: v for k, v in data.items() if v is not None and v != [] and v != {}}
        payload["format"] = SPEC_HASH_FORMAT
        return payload

    def spec_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`hash_payload`."""
        return sha256_text(canonical_json(self.hash_payload()))

    def store_record(self) -> dict[str, Any]:
        """Keyword arguments for ``RunStore.upsert_model(name, **record)``."""
        return {
            "spec_hash": self.spec_hash(),
            "steps": self.steps,
            "height": self.height,
            "width": self.width,
            "dtype": self.dtype,
            "spec": self.model_dump(mode="json", by_alias=True),
        }


_FIELDS_BY_MODEL: dict[str, tuple[str, ...]] = {
    "model": tuple(f.alias or n for n, f in ModelSpec.model_fields.items()),
    "components": tuple(f.alias or n for n, f in ComponentOverride.model_fields.items()),
    "scheduler": tuple(f.alias or n for n, f in SchedulerSpec.model_fields.items()),
}
DEFAULTABLE_FIELDS = tuple(f for f in _FIELDS_BY_MODEL["model"] if f != "name")


@dataclass(frozen=True)
class Zoo:
    """A validated, ordered set of model specs with unique names."""

    models: tuple[ModelSpec, ...]
    path: Path | None = None
    #: Default quality scorers for ``run`` (``--scorer`` syntax); a path starting with
    #: ``./`` is relative to the zoo file, so a zoo can ship its own metric backbones.
    scorers: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.models)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> ModelSpec:
        """The model called ``name``; a one-sentence error (with a suggestion) otherwise."""
        for m in self.models:
            if m.name == name:
                return m
        close = difflib.get_close_matches(name, self.names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(self.names)}."
        raise InputError(f"The zoo has no model named {name!r}{hint}")

    def select(self, names: Sequence[str] | None = None, tags: Iterable[str] | None = None) -> Zoo:
        """A sub-zoo: the named models (in the order given) that carry *all* ``tags``.

        A model's ``family`` counts as one of its tags. With neither argument
        the whole zoo comes back; an empty selection is an error.
        """
        picked = [self.get(n) for n in dict.fromkeys(names)] if names else list(self.models)
        wanted = set(tags or ())
        if wanted:
            picked = [m for m in picked if wanted <= {*m.tags, *([m.family] if m.family else [])}]
            if not picked:
                raise InputError(
                    f"No selected model carries all of the tags {', '.join(sorted(wanted))}."
                )
        return Zoo(models=tuple(picked), path=self.path, scorers=self.scorers)

    def hash(self) -> str:
        """Shorthand for :func:`zoo_hash`."""
        return zoo_hash(self)


def zoo_hash(zoo: Zoo | Iterable[ModelSpec]) -> str:
    """sha256 over ``{"format": ..., "models": {name: spec_hash}}`` in canonical JSON.

    Independent of entry order, tags and family; changes whenever a model is
    added, removed, renamed or changes anything that affects its outputs.
    """
    models = {m.name: m.spec_hash() for m in zoo}
    return sha256_text(canonical_json({"format": ZOO_HASH_FORMAT, "models": models}))


# ---------------------------------------------------------------------- parsing


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field_path(loc: tuple[Any, ...]) -> tuple[str, str]:
    """(dotted field name, which model's field list applies) for a pydantic ``loc``."""
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] = f"{parts[-1]}[{p}]"
        else:
            parts.append(str(p))
    owner = "model"
    if len(loc) > 1 and loc[0] in ("components", "scheduler"):
        owner = str(loc[0])
    return ".".join(parts), owner


def _problem(err: dict[str, Any]) -> tuple[str, str]:
    """(field, what is wrong and what is allowed) for one pydantic error."""
    loc = tuple(err.get("loc", ()))
    field, owner = _field_path(loc)
    kind = err.get("type", "")
    msg = str(err.get("msg", "is invalid"))
    value = err.get("input")
    if kind == "missing":
        return field, "is required"
    if kind == "extra_forbidden":
        allowed = ", ".join(_FIELDS_BY_MODEL[owner])
        close = difflib.get_close_matches(str(loc[-1]), _FIELDS_BY_MODEL[owner], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return field, f"is not a known field ({hint}allowed: {allowed})"
    if msg.startswith("Value error, "):
        text = msg[len("Value error, ") :]
    elif msg.startswith("Input should be "):
        text = "must be " + msg[len("Input should be ") :]
    else:
        text = msg[0].lower() + msg[1:] if msg else "is invalid"
    if kind == "value_error" and isinstance(value, dict):
        return field, text  # a cross-field check: the message names its own fields
    return field, f"{text} (got {_describe(value)})"


def _entry_label(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name:
        return f"model {name!r}"
    return f"entry #{index + 1}"


def _sentence(origin: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{origin}: {problems[0]}."
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"; and {more} more" if more else ""
    return f"{origin} has {len(problems)} problems: " + "; ".join(shown) + tail + "."


def _entry_problems(
    label: str, error: ValidationError, defaults: dict[str, Any], entry: dict[str, Any]
) -> list[str]:
    """One phrase per problem; missing fields are grouped, bad defaults named once."""
    missing: list[str] = []
    out: list[str] = []
    for err in error.errors(include_url=False):
        field, text = _problem(dict(err))
        if err.get("type") == "missing" and "." not in field and "[" not in field:
            missing.append(field)
            continue
        top = field.split(".")[0].split("[")[0]
        if top and top in defaults and top not in entry:
            out.append(f"defaults field {field!r} {text}")
        elif field:
            out.append(f"{label} field {field!r} {text}")
        else:  # a cross-field check names its own fields
            out.append(f"{label} {text}")
    if len(missing) == 1:
        out.insert(0, f"{label} field {missing[0]!r} is required")
    elif missing:
        out.insert(0, f"{label} is missing the required fields {', '.join(map(repr, missing))}")
    return out


def parse_zoo(data: Any, origin: str = "the zoo", path: Path | None = None) -> Zoo:
    """Validate already-loaded YAML data (a mapping with ``models`` and optional ``defaults``)."""
    if data is None:
        raise InputError(f"{origin} is empty; it needs a 'models:' list of model entries.")
    if not isinstance(data, dict):
        raise InputError(
            f"{origin} must be a mapping with a 'models:' list, not a {type(data).__name__}."
        )
    unknown = [k for k in data if k not in ("defaults", "models", "scorers")]
    if unknown:
        raise InputError(
            f"{origin}: top-level key {unknown[0]!r} is not allowed "
            "(allowed: defaults, models, scorers)."
        )
    scorers = data.get("scorers") or []
    if not isinstance(scorers, list) or not all(isinstance(x, str) and x for x in scorers):
        raise InputError(f"{origin}: 'scorers' must be a list of scorer names such as clip_score.")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{origin}: 'defaults' must be a mapping of model fields.")
    bad_default = [k for k in defaults if k not in DEFAULTABLE_FIELDS]
    if bad_default:
        raise InputError(
            f"{origin}: defaults field {bad_default[0]!r} is not allowed "
            f"(allowed: {', '.join(DEFAULTABLE_FIELDS)})."
        )
    entries = data.get("models")
    if entries is None:
        raise InputError(f"{origin} has no 'models:' list.")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{origin}: 'models' must be a non-empty list of model entries.")

    problems: list[str] = []  # ordered, without repeats (a bad default hits every entry)
    specs: list[ModelSpec] = []
    first_index: dict[str, int] = {}
    for i, entry in enumerate(entries):
        label = _entry_label(i, entry)
        if not isinstance(entry, dict):
            problems.append(f"{label} must be a mapping of fields, not a {type(entry).__name__}")
            continue
        merged = {**defaults, **entry}
        try:
            spec = ModelSpec.model_validate(merged)
        except ValidationError as e:
            problems.extend(_entry_problems(label, e, defaults, entry))
            continue
        if spec.name in first_index:
            problems.append(
                f"model name {spec.name!r} is used by entries #{first_index[spec.name] + 1} "
                f"and #{i + 1}; names must be unique"
            )
            continue
        first_index[spec.name] = i
        specs.append(spec)
    if problems:
        raise InputError(_sentence(origin, list(dict.fromkeys(problems))))
    return Zoo(models=tuple(specs), path=path, scorers=tuple(scorers))


def load_zoo(path: str | Path) -> Zoo:
    """Read and validate a zoo YAML file; every problem becomes one ``InputError`` sentence.

    The YAML is read within the bounds of :func:`hadis_profile.yamlio.load_yaml`
    (file size, nesting depth, aliases), so a hostile file costs nothing.
    """
    from hadis_profile.yamlio import read_yaml_file

    p = Path(path)
    data = read_yaml_file(p, "zoo file")
    return parse_zoo(data, origin=str(p), path=p)
