"""Fill a run from measurements made elsewhere (``hadis-profile import``).

The main user is the HADIS reference data (arXiv 2509.00642): per-image
discriminator confidences, the router's prompt features, published per-image
latencies and the authors' FID sweep. Importing them lets the whole pipeline
(pareto, resolve, simulate) run on real measurements without a GPU.

Everything is parsed and validated in memory first (the readers are in
:mod:`hadis_profile.import_files`), then written into a temporary run folder
that is renamed into place, so a bad input never leaves a half-written run
behind. Replacing a run (``fresh``) holds its write lock, so a ``run`` writing
there is never clobbered. Row ``i`` of every per-prompt file is prompt ``i``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hadis_profile.errors import HadisError, InputError, ParameterError
from hadis_profile.fileio import sha256_file

# The readers live in import_files; they are re-exported here, where callers find them.
from hadis_profile.import_files import (
    HADIS_BATCH_SIZES,
    batch_latencies,
    nominal_latency,
    parse_latency_spec,
    read_confidences,
    read_external_csv,
    read_latency_yaml,
    read_prompt_features,
    read_prompts,
    router_scores,
)
from hadis_profile.measurements import ExternalConfig, LatencyStats
from hadis_profile.metrics import info as metric_info
from hadis_profile.router import DEFAULT_WEIGHTS, FEATURES
from hadis_profile.store import DB_NAME, RunStore
from hadis_profile.store.lock import write_lock

__all__ = [
    "HADIS_BATCH_SIZES",
    "HADIS_FID_METRIC",
    "ImportSpec",
    "ImportSummary",
    "ModelSource",
    "batch_latencies",
    "hadis_reference_spec",
    "import_hadis_reference",
    "nominal_latency",
    "parse_latency_spec",
    "read_confidences",
    "read_external_csv",
    "read_latency_yaml",
    "read_prompt_features",
    "read_prompts",
    "router_scores",
    "run_import",
]

# --------------------------------------------------------------------------- the HADIS preset

HADIS_FID_METRIC = "fid:clean-fid-imagenet1k"
HADIS_SCORER = "hadis-reference-discriminator"
HADIS_HARDWARE = "l40s"
HADIS_DEVICE_NAME = "NVIDIA L40S"
HADIS_IMAGES_PER_PROMPT = 4
HADIS_N_PROMPTS = 5000


@dataclass(frozen=True)
class ModelSource:
    """One model to import: its name, spec (hashed), and optional confidence file."""

    name: str
    spec: dict = field(default_factory=dict)
    steps: int | None = None
    confidence_file: Path | None = None


#: The four HADIS models by index (the index used in config_results_hybrid.csv), with
#: the per-image batch-1 latencies the authors used on an NVIDIA L40S.
HADIS_MODELS: tuple[tuple[str, str, int, float], ...] = (
    ("sdxl-lightning", "ByteDance/SDXL-Lightning", 2, 0.5),
    ("sd3.5-large-turbo", "stabilityai/stable-diffusion-3.5-large-turbo", 4, 1.3),
    ("sd3.5-medium", "stabilityai/stable-diffusion-3.5-medium", 50, 13.0),
    ("sd3.5-large", "stabilityai/stable-diffusion-3.5-large", 50, 27.0),
)


# --------------------------------------------------------------------------- the import plan


@dataclass
class ImportSpec:
    """What to import; paths are read and validated before anything is written.

    models:     in index order (external CSVs may name models by index).
    latencies:  model -> {batch size: seconds per batch}.
    external_metrics: external CSV column -> metric id it holds.
    """

    prompts_file: Path
    models: list[ModelSource]
    prompts_ascii: bool = False
    features_file: Path | None = None
    router_weights: list[float] | None = None
    router_source: str = ""
    expected_features: list[str] | None = None
    latencies: dict[str, dict[int, float]] = field(default_factory=dict)
    hardware_label: str = "unknown"
    device_name: str | None = None
    external_file: Path | None = None
    external_metrics: dict[str, str] = field(default_factory=lambda: {"fid": HADIS_FID_METRIC})
    scorer: str = "imported-discriminator"
    images_per_prompt: int | None = None
    expected_prompts: int | None = None
    provenance: dict = field(default_factory=dict)


@dataclass
class ImportSummary:
    """What landed in the run, for the CLI to print and tests to check."""

    run_dir: Path
    run_id: str
    n_prompts: int
    prompt_set_hash: str | None
    models: list[str]
    images_per_prompt: int | None
    confidence_rows: int
    latency_points: int
    router_features: list[str]
    external_rows: int
    external_latency_max_dev_s: float | None = None


# --------------------------------------------------------------------------- the import


def run_import(spec: ImportSpec, out: Path, *, fresh: bool = False) -> ImportSummary:
    """Validate every input, then write the run into ``out`` all at once.

    The run is built in a sibling temp folder and renamed into place; with
    ``fresh`` an existing run in ``out`` is replaced only after the new one is
    complete.
    """
    out = Path(out)
    if out.exists() and not fresh:
        raise ParameterError("fresh", f"{out} already exists; use {{param}} to replace it.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the run.")
    if out.is_dir() and any(out.iterdir()) and not (out / DB_NAME).is_file():
        raise ParameterError(
            "out", f"{{param}} {out} is a folder that holds no run; only a run is replaced."
        )
    with contextlib.ExitStack() as held:
        if out.is_dir():  # replacing a run: no other writer may be using it meanwhile
            held.enter_context(write_lock(out, "import"))
        return _import(spec, out, fresh=fresh, locked=out.is_dir())


def _import(spec: ImportSpec, out: Path, *, fresh: bool, locked: bool) -> ImportSummary:
    if not spec.models:
        raise HadisError("Nothing to import: no models were given.")
    names = [m.name for m in spec.models]
    if len(set(names)) != len(names):
        raise InputError(f"Model names must be unique, got {', '.join(names)}.")
    unknown = sorted(set(spec.latencies) - set(names))
    if unknown:
        raise InputError(
            f"Latency given for unknown model '{unknown[0]}'; the models are {', '.join(names)}."
        )
    for metric in spec.external_metrics.values():
        metric_info(metric)  # an unknown scorer is refused now, not at compile time

    # ---- read and validate everything in memory
    prompts = read_prompts(spec.prompts_file, ascii_only=spec.prompts_ascii)
    n = len(prompts)
    if spec.expected_prompts is not None and n != spec.expected_prompts:
        raise HadisError(
            f"The prompts file {spec.prompts_file} has {n} prompts, expected "
            f"{spec.expected_prompts}."
        )
    confidences = {
        m.name: read_confidences(m.confidence_file, n, spec.images_per_prompt)
        for m in spec.models
        if m.confidence_file is not None
    }
    router = None
    if spec.features_file is not None:
        feat_names, feats = read_prompt_features(
            spec.features_file, prompts, ascii_only=spec.prompts_ascii
        )
        if spec.expected_features is not None and feat_names != list(spec.expected_features):
            raise HadisError(
                f"The prompt features file {spec.features_file} has columns "
                f"{', '.join(feat_names)}, expected {', '.join(spec.expected_features)}."
            )
        if spec.router_weights is None:
            raise ParameterError("router_weights", "Prompt features were given without {param}.")
        scores, router_spec = router_scores(
            feats, spec.router_weights, feat_names, source=spec.router_source
        )
        router = (feats, feat_names, scores, router_spec)
    external: list[ExternalConfig] = []
    max_dev = None
    if spec.external_file is not None:
        external, ext_latency = read_external_csv(spec.external_file, names, spec.external_metrics)
        b1 = {m: p[1] for m, p in spec.latencies.items() if 1 in p}
        devs = [
            abs(nominal_latency(r, d, b1[lo], b1[hi]) - lat)
            for lo, hi, r, d, lat in ext_latency
            if lo in b1 and hi in b1
        ]
        max_dev = max(devs) if devs else None

    # Input hashes, keyed relative to the inputs' common folder so the
    # provenance does not depend on where the data sits on this machine.
    inputs = [spec.prompts_file, spec.features_file, spec.external_file]
    inputs = [Path(p).resolve() for p in [*inputs, *(m.confidence_file for m in spec.models)] if p]
    root = Path(os.path.commonpath([p.parent for p in inputs]))
    provenance = {
        **spec.provenance,
        "imported_from": {p.relative_to(root).as_posix(): sha256_file(p) for p in inputs},
    }

    # ---- write into a temp folder, then rename into place
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        store = RunStore.create(tmp, provenance=provenance, run_id=out.name)
        try:
            with store.transaction():
                store.add_prompts(prompts)
                store.upsert_hardware(spec.hardware_label, device_name=spec.device_name)
                for m in spec.models:
                    store.upsert_model(m.name, spec=m.spec, steps=m.steps)
                    for b, secs in sorted(spec.latencies.get(m.name, {}).items()):
                        store.put_latency(
                            m.name, spec.hardware_label, LatencyStats.constant(b, secs)
                        )
                    if m.name in confidences:
                        store.put_confidences_bulk(m.name, confidences[m.name], scorer=spec.scorer)
                if router is not None:
                    store.put_router(router[0], router[1], router[2], router[3])
                if external:
                    store.put_external_configs(external)
            summary = ImportSummary(
                run_dir=out,
                run_id=store.run_id,
                n_prompts=n,
                prompt_set_hash=store.prompt_set_hash(),
                models=names,
                images_per_prompt=next((c.shape[1] for c in confidences.values()), None),
                confidence_rows=sum(c.size for c in confidences.values()),
                latency_points=sum(len(p) for p in spec.latencies.values()),
                router_features=router[1] if router else [],
                external_rows=len(external),
                external_latency_max_dev_s=max_dev,
            )
        finally:
            store.close()  # checkpoints the WAL so the folder is self-contained
        with contextlib.ExitStack() as held:
            if out.exists():  # another process created it while this one was importing
                if not fresh:
                    raise HadisError(
                        f"{out} was created by another process during the import; nothing "
                        "was written."
                    )
                if not locked:
                    held.enter_context(write_lock(out, "import"))
            _replace_dir(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if type(e) is HadisError and str(tmp) in str(e):  # name the run, not the temp folder
            raise HadisError(str(e).replace(str(tmp), str(out))) from None
        raise
    return summary


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an old ``target`` is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def hadis_reference_spec(
    data_dir: Path,
    *,
    latencies: dict[str, dict[int, float]] | None = None,
    hardware_label: str = HADIS_HARDWARE,
    device_name: str | None = HADIS_DEVICE_NAME,
    external: bool = True,
    batch_latency: str | None = None,
) -> ImportSpec:
    """The HADIS reference data set as an :class:`ImportSpec`.

    ``batch_latency`` (see :func:`batch_latencies`, e.g. ``"linear:0.9"``) derives
    batch sizes 1-32 from the published batch-1 L40S numbers; ``latencies``
    overrides them per model and batch size (models named by name or index 0..3).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"The HADIS reference folder {data_dir} does not exist.")
    names = [m[0] for m in HADIS_MODELS]
    merged: dict[str, dict[int, float]] = {
        name: batch_latencies(secs, batch_latency) if batch_latency else {1: secs}
        for name, _, _, secs in HADIS_MODELS
    }
    for key, points in (latencies or {}).items():
        name = names[int(key)] if key.isdigit() and int(key) < len(names) else key
        if name not in merged:
            raise InputError(
                f"Latency given for unknown model '{key}'; the HADIS models are {', '.join(names)}."
            )
        merged[name] = {**merged[name], **points}
    models = [
        ModelSource(
            name=name,
            spec={"name": name, "repo": repo, "steps": steps, "source": "hadis-reference"},
            steps=steps,
            confidence_file=data_dir / "confidence_scores" / f"scores_model_{i}.txt",
        )
        for i, (name, repo, steps, _) in enumerate(HADIS_MODELS)
    ]
    return ImportSpec(
        prompts_file=data_dir / "prompts_imagenet1k_5k.txt",
        prompts_ascii=True,
        models=models,
        features_file=data_dir / "prompt_features.csv",
        router_weights=list(DEFAULT_WEIGHTS),
        router_source="HADIS published router weights (arXiv 2509.00642), prompt_features.csv",
        expected_features=list(FEATURES),
        latencies=merged,
        hardware_label=hardware_label,
        device_name=device_name,
        external_file=data_dir / "config_results_hybrid.csv" if external else None,
        external_metrics={"fid": HADIS_FID_METRIC},
        scorer=HADIS_SCORER,
        images_per_prompt=HADIS_IMAGES_PER_PROMPT,
        expected_prompts=HADIS_N_PROMPTS,
        provenance={
            "source": "hadis-reference",
            "paper": "arXiv 2509.00642",
            "latency_note": "published per-image batch-1 latencies on an NVIDIA L40S",
            **(
                {"batch_latency": batch_latency, "batch_sizes": list(HADIS_BATCH_SIZES)}
                if batch_latency
                else {}
            ),
            **({"latency_overrides": latencies} if latencies else {}),
        },
    )


def import_hadis_reference(
    data_dir: Path,
    out: Path,
    *,
    fresh: bool = False,
    latencies: dict[str, dict[int, float]] | None = None,
    hardware_label: str = HADIS_HARDWARE,
    device_name: str | None = HADIS_DEVICE_NAME,
    external: bool = True,
    batch_latency: str | None = None,
) -> ImportSummary:
    """Import the HADIS reference data set into run folder ``out``."""
    spec = hadis_reference_spec(
        data_dir,
        latencies=latencies,
        hardware_label=hardware_label,
        device_name=device_name,
        external=external,
        batch_latency=batch_latency,
    )
    return run_import(spec, out, fresh=fresh)
