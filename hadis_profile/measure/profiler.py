"""``hadis-profile run``: measure every zoo model into a run store, resumably.

For each model, two phases, each made of small units that are committed as
soon as they finish (so an interrupted run loses at most one unit, and a rerun
skips what is done):

1. **latency**: one unit per batch size (``store.put_latency``); after an
   out-of-memory point the batch stops growing, on this run and on resume.
2. **quality**: one unit per prompt: its K images (fixed per-(prompt, image)
   seeds, :mod:`.generate`), their per-image scores, discriminator confidences
   and FID feature vectors, written in one transaction.

Before the first model, the prompts are stored (a changed prompt set is
refused), the router's features are computed when spaCy is available, every
model's checkpoint is checked (a missing one fails at once, not hours in), and
the hardware is recorded under a label that must agree with the detected device
(``--gpu a100`` on an H100 is refused unless ``--force``).

With ``devices`` (``--devices 0,1,2,3``) this process does all of the above
once, then :mod:`.shard` measures the models in one spawned worker process per
device, writing into the same store.

Settings that decide which images exist (base seed, images per prompt,
scorers) are part of the run's provenance; resuming with different ones is
refused, because mixing them would silently corrupt the comparison.
"""

from __future__ import annotations

import contextlib
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, UsageError
from hadis_profile.measure.generate import DEFAULT_IMAGES_PER_PROMPT, SEED_FORMAT
from hadis_profile.measure.latency import DEFAULT_BATCH_SIZES
from hadis_profile.progress import ProgressBoard

#: Prompt used for the latency sweep (prompt content barely matters: text is padded).
LATENCY_PROMPT = "a photograph of an astronaut riding a horse"


@dataclass
class RunOptions:
    """Everything ``hadis-profile run`` can be told; defaults are the CLI's."""

    zoo: Path
    prompts: Path
    out: Path
    models: list[str] | None = None
    tags: list[str] | None = None
    limit: int | None = None
    images_per_prompt: int = DEFAULT_IMAGES_PER_PROMPT
    seed: int = 0
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    warmup: int = 2
    reps: int = 10
    time_budget_s: float | None = None
    gen_batch: int = 4
    device: str = "auto"
    gpu: str | None = None
    force: bool = False
    #: None: the zoo's own ``scorers:`` list, else ``clip_score`` (default checkpoint).
    scorers: list[str] | None = None
    discriminator: str = "clip"
    fid: str = "none"
    fid_reference: Path | None = None
    save_images: bool = False
    stages: bool = False
    latency: bool = True
    quality: bool = True
    router: bool = True
    fresh: bool = False
    dry_run: bool = False
    #: ``--dry-run`` only: time batch 1 of each model the store has no latency for
    #: (``--no-probe``: estimate only from stored latencies).
    probe: bool = True
    online: bool = False
    cache_dir: Path | None = None
    threads: int | None = None  # torch intra-op threads (CPU runs); None leaves torch's default
    #: ``--devices``: one worker process per entry (``cuda:N`` or ``cpu``); see :mod:`.shard`.
    devices: list[str] | None = None


@dataclass
class ModelReport:
    name: str
    steps: int
    latency: dict[int, Any] = field(default_factory=dict)  # batch -> LatencyStats
    prompts_done: int = 0
    prompts_total: int = 0
    mean_scores: dict[str, float] = field(default_factory=dict)
    mean_confidence: float | None = None
    load_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: Dry run: seconds per image at batch 1, from the store ("stored") or a probe
    #: ("probe"); None when neither was available. See :func:`estimate_seconds`.
    per_image_s: float | None = None
    per_image_source: str | None = None
    estimate_s: float | None = None


@dataclass
class RunReport:
    """What a run did: per-model results plus the units measured now vs. skipped."""

    run_dir: Path
    hardware_label: str
    device: str
    device_name: str
    models: list[ModelReport]
    units_done: int = 0
    units_skipped: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)
    #: scorer id -> [seconds, images]: the per-image cost of each scorer and of the
    #: discriminator, which a serving plan pays on top of generation.
    scorer_time: dict[str, list[float]] = field(default_factory=dict)

    @property
    def estimate_s(self) -> float | None:
        """Dry run: the sum of the per-model estimates (None when no model has one)."""
        parts = [m.estimate_s for m in self.models if m.estimate_s is not None]
        return sum(parts) if parts else None


# --------------------------------------------------------------------------- hardware


@dataclass(frozen=True)
class DeviceInfo:
    device: str  # "cuda", "cuda:1", "cpu"
    name: str
    driver: str | None
    default_label: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def _nvidia_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


def detect_device(device: str = "auto") -> DeviceInfo:
    """The torch device the run will use, its name, driver and a default label."""
    import torch

    from hadis_profile.measure.pipelines import pick_device

    dev = pick_device(device)
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(dev))
        driver = _nvidia_driver()
        cuda = torch.version.cuda
        driver = (
            f"{driver} (CUDA {cuda})"
            if driver and cuda
            else driver or (f"CUDA {cuda}" if cuda else None)
        )
        return DeviceInfo(dev, name, driver, _slug(name.removeprefix("NVIDIA ")))
    threads = torch.get_num_threads()
    name = f"{_cpu_name()}, {threads} torch thread{'s' if threads > 1 else ''}"
    return DeviceInfo(dev, name, None, "cpu")


def check_hardware_label(label: str | None, info: DeviceInfo, force: bool) -> str:
    """The label to record; a ``--gpu`` label that contradicts the device is refused.

    ``a100`` matches ``NVIDIA A100-SXM4-80GB``; ``cpu`` (or words of the CPU's
    name) matches a CPU run. Latencies filed under the wrong label would make
    a table compiled for one GPU silently describe another.
    """
    if not label:
        return info.default_label
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", label):
        raise UsageError(
            f"--gpu '{label}' must be a short label of letters, digits, '.', '_' or '-'."
        )
    if force:
        return label
    want, name = _squash(label), _squash(info.name)
    if info.device == "cpu":
        ok = want == "cpu" or (len(want) >= 3 and want in name)
        if not ok:
            raise HadisError(
                f"--gpu '{label}' names a GPU but this run uses the CPU ({info.name}); "
                "pass --force to record it under that label anyway."
            )
    elif want not in name:
        raise HadisError(
            f"--gpu '{label}' does not match the detected device {info.name}; "
            "pass --force to record it under that label anyway."
        )
    return label


def _libraries() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("torch", "diffusers", "transformers", "safetensors", "accelerate"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


# --------------------------------------------------------------------------- quality tools


@dataclass
class QualityTools:
    scorers: list[Any]  # Scorer
    discriminator: Any | None  # Discriminator
    extractors: list[Any]  # FeatureExtractor

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


def build_quality_tools(opts: RunOptions, device: str) -> QualityTools:
    """Load scorers, the discriminator and FID extractors (all before any diffusion model)."""
    from hadis_profile.measure import scorers as S

    common = {"device": device, "cache_dir": opts.cache_dir, "online": opts.online}
    scorers = [S.make_scorer(name, **common) for name in dict.fromkeys(opts.scorers)]
    disc = None
    choice = opts.discriminator
    if choice == "clip":
        clip = next((s for s in scorers if isinstance(s, S.CLIPScorer)), None)
        disc = S.CLIPConfidence(clip or S.CLIPScorer(**common))
    elif choice.startswith("learned:"):  # a head from `hadis-profile discriminator train`
        from hadis_profile.discriminator import LearnedDiscriminator

        disc = LearnedDiscriminator(choice.split(":", 1)[1], **common)
    elif choice not in ("none", ""):
        disc = S.load_discriminator(choice)
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
        extractors.append(S.load_extractor(opts.fid))
    return QualityTools(scorers, disc, extractors)


def _reference_stats(opts: RunOptions, tools: QualityTools) -> dict[str, tuple]:
    """FID reference (mu, sigma): an .npz with mu/sigma, or a folder of images to encode."""
    if opts.fid_reference is None or not tools.extractors:
        return {}
    from hadis_profile.measure.scorers import reference_stats

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
        return {ext.extractor_id: reference_stats(np.concatenate(feats))}
    raise HadisError(f"FID reference {ref} is neither an .npz file nor a folder of images.")


# --------------------------------------------------------------------------- the run


def _latency_todo(store: Any, model: str, label: str, sizes: Sequence[int]) -> tuple[list, int]:
    """Batch sizes still to measure, and how many are done (an OOM ends the list)."""
    todo, done = [], 0
    stored = _stored_latency(store, model, label)
    for b in sorted(set(int(x) for x in sizes)):
        point = stored.get(b)
        if point is not None:
            done += 1
            if point.infeasible:
                break
            continue
        todo.append(b)
    return todo, done


def _stored_latency(store: Any, model: str, label: str) -> dict:
    """batch -> LatencyStats already stored for (model, label); {} when there are none."""
    try:
        return store.latency(model, label)
    except HadisError:  # no latency on this hardware label yet
        return {}


def _check_resume(store: Any, provenance: dict) -> None:
    old = store.provenance
    for key, what in (("seeds", "seeds"), ("quality_tools", "scorers")):
        if key in old and key in provenance and old[key] != provenance[key]:
            raise HadisError(
                f"The run in {store.root} was measured with other {what} ({old[key]}); rerun "
                "with the same settings to resume, or pass --fresh to start over."
            )


def _open_store(opts: RunOptions, provenance: dict) -> Any:
    from hadis_profile.store import DB_NAME, RunStore

    out = Path(opts.out)
    if opts.fresh and (out / DB_NAME).exists():
        store = RunStore.open(out)
        store.reset()
        store.update_provenance(provenance)
        return store
    if (out / DB_NAME).exists():
        store = RunStore.open(out)
        _check_resume(store, provenance)
        store.update_provenance(provenance)
        return store
    return RunStore.create(out, provenance=provenance)


def _save_image(img: Any, path: Path) -> None:
    from hadis_profile.measure.scorers import to_pil

    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil([img])[0].save(path)


def run_profile(opts: RunOptions, console: Any | None = None) -> RunReport:
    """Measure the selected models into ``opts.out``; see the module docstring."""
    from hadis_profile.measure.pipelines import configure_hub

    configure_hub(opts.online)  # before torch/diffusers pull in huggingface_hub
    from hadis_profile.prompts import load_prompts, prompt_set_hash
    from hadis_profile.zoo import load_zoo

    if opts.images_per_prompt < 1 or opts.gen_batch < 1 or opts.reps < 1 or opts.warmup < 0:
        raise UsageError("--images-per-prompt, --gen-batch and --reps must be at least 1.")
    if not opts.batch_sizes or min(opts.batch_sizes) < 1:
        raise UsageError("--batch-sizes must be positive integers.")
    zoo = load_zoo(opts.zoo).select(opts.models, opts.tags)
    base_dir = Path(opts.zoo).resolve().parent
    if opts.scorers is None:
        opts = replace(opts, scorers=zoo_scorers(zoo, base_dir))
    prompts = list(load_prompts(opts.prompts, limit=opts.limit))
    if not prompts:
        raise HadisError(f"{opts.prompts} holds no prompts.")
    if opts.threads is not None:
        import torch

        torch.set_num_threads(max(1, int(opts.threads)))
    infos: list[DeviceInfo] = []
    if opts.devices:
        from hadis_profile.measure import shard

        infos = shard.device_infos(opts.devices, opts.threads)
        info = shard.common_device(infos, opts.force)
    else:
        info = detect_device(opts.device)
    label = check_hardware_label(opts.gpu, info, opts.force)
    seeds = {
        "format": SEED_FORMAT,
        "base_seed": opts.seed,
        "images_per_prompt": opts.images_per_prompt,
    }

    if opts.dry_run:
        return _dry_run(opts, zoo, prompts, info, label, base_dir, console)

    from hadis_profile.measure.pipelines import preflight

    for spec in zoo:
        problem = preflight(spec, cache_dir=opts.cache_dir, online=opts.online, base_dir=base_dir)
        if problem:
            raise HadisError(problem)
    tools = build_quality_tools(opts, info.device) if opts.quality else QualityTools([], None, [])
    provenance = {
        "source": "hadis-profile run",
        "zoo_path": str(opts.zoo),
        "zoo_hash": zoo.hash(),
        "prompts_path": str(opts.prompts),
        "prompt_set_hash": prompt_set_hash(prompts),
        "seeds": seeds,
        "latency_settings": {
            "batch_sizes": sorted(set(opts.batch_sizes)),
            "warmup": opts.warmup,
            "reps": opts.reps,
            "time_budget_s": opts.time_budget_s,
        },
        "generation": {"batch_size": opts.gen_batch},
    }
    if opts.quality:
        provenance["quality_tools"] = tools.describe()
    store = _open_store(opts, provenance)
    if callable(getattr(tools.discriminator, "spec", None)):  # pareto copies it to the table
        from hadis_profile.discriminator import record_discriminator

        record_discriminator(store, tools.discriminator.spec())
    report = RunReport(Path(opts.out), label, info.device, info.name, [])
    try:
        store.upsert_hardware(
            label, device_name=info.name, driver=info.driver, libraries=_libraries()
        )
        store.add_prompts(prompts)
        if opts.router and store.router_spec() is None:
            _router(store, prompts, report, console)
        for extractor, (mu, sigma) in _reference_stats(opts, tools).items():
            store.put_reference_stats(extractor, mu, sigma)
        scorer_id = getattr(tools.discriminator, "scorer_id", None)
        if infos:  # --devices: the parent's setup is done; the workers measure
            from hadis_profile.measure.latency import free_memory
            from hadis_profile.measure.shard import profile_sharded

            del tools  # the workers load their own; free this copy's memory first
            free_memory(info.device)
            report.models = profile_sharded(
                store, zoo, opts, label, infos, base_dir, prompts, report, console
            )
        else:
            with ProgressBoard(console) as progress:
                for spec in zoo:
                    report.models.append(
                        _profile_model(
                            store,
                            spec,
                            opts,
                            tools,
                            info,
                            label,
                            base_dir,
                            prompts,
                            report,
                            progress,
                        )
                    )
        _record_overheads(store, report)
        if opts.quality:
            _fill_means(store, report, label, scorer_id)
    finally:
        store.close()
    return report


def _router(store: Any, prompts: list[str], report: RunReport, console: Any | None) -> None:
    """Router features and scores for the prompt set, when spaCy is installed."""
    from hadis_profile.router import FEATURES, Router

    router = Router()
    t0 = time.perf_counter()
    try:
        X = router.features(prompts)
    except HadisError as e:
        report.notes.append(f"router skipped: {e}")
        return
    per_query = (time.perf_counter() - t0) / len(prompts)
    scores = router.fit_normalisation(features=X).score_features(X)
    spec = router.to_spec()
    spec["overhead_s_per_query"] = per_query
    store.put_router(X, list(FEATURES), scores, spec=spec)


def _record_overheads(store: Any, report: RunReport) -> None:
    """Model load times and per-image scorer costs, kept in the run's provenance
    (``pareto`` carries them into the table) for plans that budget for them."""
    loads = {m.name: round(m.load_s, 3) for m in report.models if m.load_s is not None}
    if loads:
        store.update_provenance({"load_s": {**store.provenance.get("load_s", {}), **loads}})
    per_image = {k: t / n for k, (t, n) in report.scorer_time.items() if n}
    if per_image:
        known = store.provenance.get("scorer_overhead_s_per_image", {})
        store.update_provenance({"scorer_overhead_s_per_image": {**known, **per_image}})


def _profile_model(
    store: Any,
    spec: Any,
    opts: RunOptions,
    tools: QualityTools,
    info: DeviceInfo,
    label: str,
    base_dir: Path,
    prompts: list[str],
    report: RunReport,
    progress: Any,  # ProgressBoard, or a --devices worker's queue-backed stand-in
    *,
    register: bool = True,
) -> ModelReport:
    """Measure what is left of one model; ``register=False`` when the parent of a
    ``--devices`` run already recorded the model (workers must not rewrite setup)."""
    from hadis_profile.measure.latency import free_memory

    name = spec.name
    if register and store.upsert_model(name, **spec.store_record()):
        progress.log(f"{name}: the spec changed since the last run; its old records are gone.")
    k = opts.images_per_prompt
    lat_todo, lat_done = (
        _latency_todo(store, name, label, opts.batch_sizes) if opts.latency else ([], 0)
    )
    done_prompts = store.done_prompts(name, k) if opts.quality else set(range(len(prompts)))
    todo_ids = [i for i in range(len(prompts)) if i not in done_prompts]
    report.units_skipped += lat_done + (len(done_prompts) if opts.quality else 0)
    mrep = ModelReport(name, spec.steps, prompts_total=len(prompts) if opts.quality else 0)
    if lat_todo or todo_ids or opts.stages:
        from hadis_profile.measure.pipelines import load_pipeline

        lp = load_pipeline(
            spec,
            device=info.device,
            cache_dir=opts.cache_dir,
            online=opts.online,
            base_dir=base_dir,
        )
        mrep.load_s = lp.load_s
        mrep.warnings.extend(lp.notes)
        try:
            if lat_todo:
                _latency_phase(store, lp, lat_todo, opts, info, label, report, mrep, progress)
            if opts.stages:
                _stages(store, lp, opts, info)
            if todo_ids:
                _quality_phase(store, lp, todo_ids, prompts, opts, tools, report, progress)
        finally:
            del lp
            free_memory(info.device)
    mrep.latency = _stored_latency(store, name, label)
    mrep.prompts_done = len(store.done_prompts(name, k)) if opts.quality else 0
    return mrep


def _latency_phase(store, lp, todo, opts, info, label, report, mrep, progress) -> None:
    from hadis_profile.measure.latency import latency_sweep, pipeline_runner

    task = progress.task(f"{lp.spec.name}: latency", len(todo))

    def commit(point: Any) -> None:
        store.put_latency(lp.spec.name, label, point.stats)
        report.units_done += 1
        progress.advance(task)
        if point.infeasible:
            msg = (
                f"{lp.spec.name}: batch {point.stats.batch_size} ran out of memory ({point.error})"
            )
            mrep.warnings.append(msg)
            progress.log(msg + "; larger batches skipped.")
        elif point.warning:
            mrep.warnings.append(f"batch {point.stats.batch_size}: {point.warning}")
            progress.log(f"{lp.spec.name}, batch {point.stats.batch_size}: {point.warning}")

    runner = pipeline_runner(lp.pipe, lp.call_kwargs(), LATENCY_PROMPT, seed=opts.seed)
    latency_sweep(
        runner,
        todo,
        warmup=opts.warmup,
        reps=opts.reps,
        device=info.device,
        time_budget_s=opts.time_budget_s,
        on_point=commit,
    )


def _stages(store, lp, opts, info) -> None:
    from hadis_profile.measure.latency import pipeline_runner, stage_breakdown

    runner = pipeline_runner(lp.pipe, lp.call_kwargs(), LATENCY_PROMPT, seed=opts.seed)
    stages = stage_breakdown(
        lp.pipe, lambda: runner(1), reps=max(1, min(opts.reps, 3)), device=info.device
    )
    with store.transaction():  # read and write under one lock: --devices workers share it
        old = store.provenance.get("stages", {})
        store.update_provenance({"stages": {**old, lp.spec.name: stages}})


def _quality_phase(store, lp, todo_ids, prompts, opts, tools, report, progress) -> None:
    from hadis_profile.measure.generate import generate_images

    name = lp.spec.name
    task = progress.task(f"{name}: images", len(todo_ids))
    stream = generate_images(
        lp.pipe,
        [prompts[i] for i in todo_ids],
        lp.call_kwargs(),
        prompt_ids=todo_ids,
        images_per_prompt=opts.images_per_prompt,
        base_seed=opts.seed,
        batch_size=opts.gen_batch,
        output_type="pt",
    )
    for unit in stream:
        texts = [unit.prompt] * len(unit.images)
        scores = {}
        for s in tools.scorers:
            with _timed(report, s.metric_id, len(unit.images)):
                scores[s.metric_id] = s.score(unit.images, texts)
        conf = None
        if tools.discriminator:
            with _timed(report, tools.discriminator.scorer_id, len(unit.images)):
                conf = tools.discriminator.confidence(unit.images, texts)
        feats = {e.extractor_id: e.features(unit.images) for e in tools.extractors}
        paths: list[str | None] = [None] * len(unit.images)
        if opts.save_images:
            for j, img in enumerate(unit.images):
                rel = Path("images") / name / f"{unit.prompt_id:06d}_{j}.png"
                _save_image(img, Path(opts.out) / rel)
                paths[j] = str(rel)
        with store.transaction():
            for j, seed in enumerate(unit.seeds):
                iid = store.put_image(name, unit.prompt_id, j, seed=seed, path=paths[j])
                if scores:
                    store.put_scores(iid, {m: float(v[j]) for m, v in scores.items()})
                if conf is not None:
                    store.put_confidence(iid, float(conf[j]), scorer=tools.discriminator.scorer_id)
                for ext_id, f in feats.items():
                    store.put_feature_vector(iid, ext_id, f[j])
        report.units_done += 1
        progress.advance(task)


@contextlib.contextmanager
def _timed(report: RunReport, scorer_id: str, n_images: int):
    """Add one scorer call's wall time to ``report.scorer_time`` (results come back as
    numpy, so the device has finished by then)."""
    t0 = time.perf_counter()
    yield
    acc = report.scorer_time.setdefault(scorer_id, [0.0, 0])
    acc[0] += time.perf_counter() - t0
    acc[1] += n_images


def _fill_means(store: Any, report: RunReport, label: str, scorer: str | None) -> None:
    """Mean score per metric and mean confidence per model, once every prompt is done."""
    try:
        meas = store.load_measurements(hardware=label, confidence_scorer=scorer)
    except HadisError as e:  # incomplete (e.g. --skip-latency): the table shows "-"
        report.notes.append(f"no quality summary: {e}")
        return
    for m in report.models:
        mm = meas.models.get(m.name)
        if mm is None:
            continue
        m.mean_scores = {k: float(v.mean()) for k, v in mm.quality.items()}
        if mm.confidence is not None:
            m.mean_confidence = float(mm.confidence.mean())


# --------------------------------------------------------------------------- dry run


def estimate_seconds(
    per_image_s: float,
    *,
    images_left: int,
    batch_sizes_left: Sequence[int],
    warmup: int,
    reps: int,
    stage_calls: int = 0,
    load_s: float = 0.0,
) -> float:
    """Device seconds the rest of one model's run should take at most.

    With ``t`` the per-image seconds at batch 1 (a stored batch-1 p50, or the
    median of a probe's 2 timed calls)::

        generation = images_left * t            # images_left = prompts left x K
        sweep      = sum(b in batch_sizes_left) (warmup + reps) * b * t
        stages     = stage_calls * t            # --stages: 1 warm-up + min(reps, 3)
        estimate   = generation + sweep + stages + load_s

    Both terms charge every image at the batch-1 rate, so the result is an
    upper bound: a batched call costs at most ``b`` single calls (usually much
    less), and ``--time-budget`` only lowers ``reps``. ``load_s`` is the
    probe's own model-load time when one ran (the real run loads the model
    again). Scoring, FID features and the router are not included.
    """
    sweep = sum((warmup + reps) * int(b) for b in batch_sizes_left)
    return (images_left + sweep + stage_calls) * per_image_s + load_s


def _probe(spec, opts, info, base_dir, console) -> tuple[float | None, float | None, list[str]]:
    """(seconds per image at batch 1, load seconds, notes) from loading ``spec`` on the
    run's device and timing 1 warm-up + 2 batch-1 calls; the model is freed after."""
    from hadis_profile.measure.latency import free_memory, is_oom, measure_point, pipeline_runner
    from hadis_profile.measure.pipelines import load_pipeline

    if console is not None:
        console.print(f"probing {spec.name} on {info.device} ...", highlight=False)
    lp = runner = None
    try:
        lp = load_pipeline(
            spec,
            device=info.device,
            cache_dir=opts.cache_dir,
            online=opts.online,
            base_dir=base_dir,
        )
        load_s, notes = lp.load_s, [f"{spec.name}: {n}" for n in lp.notes]
        runner = pipeline_runner(lp.pipe, lp.call_kwargs(), LATENCY_PROMPT, seed=opts.seed)
        point = measure_point(runner, 1, warmup=1, reps=2, device=info.device)
    except Exception as e:
        if not (isinstance(e, HadisError) or is_oom(e)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, None, [f"{spec.name}: probe failed, no estimate ({first})"]
    finally:
        del lp, runner
        free_memory(info.device)
    if point.infeasible:
        notes.append(f"{spec.name}: probe ran out of memory at batch 1 ({point.error})")
        return None, load_s, notes
    return point.stats.p50_s, load_s, notes


def _dry_run(opts, zoo, prompts, info, label, base_dir, console) -> RunReport:
    """What a run would do: per model, latency points and prompts left, and an
    estimate of its device time (:func:`estimate_seconds`) from a stored batch-1
    latency or, failing that, a quick probe (``opts.probe``). Nothing is written."""
    from hadis_profile.measure.pipelines import preflight
    from hadis_profile.store import DB_NAME, RunStore

    report = RunReport(Path(opts.out), label, info.device, info.name, [], dry_run=True)
    store = None
    if (Path(opts.out) / DB_NAME).exists() and not opts.fresh:
        store = RunStore.open(opts.out)
    try:
        for spec in zoo:
            m = ModelReport(spec.name, spec.steps, prompts_total=len(prompts))
            unchanged = (
                store is not None
                and store.models().get(spec.name, {}).get("spec_hash") == spec.spec_hash()
            )
            b1 = None
            if unchanged:
                todo, done = _latency_todo(store, spec.name, label, opts.batch_sizes)
                m.prompts_done = len(store.done_prompts(spec.name, opts.images_per_prompt))
                b1 = _stored_latency(store, spec.name, label).get(1)
            else:
                todo, done = sorted(set(opts.batch_sizes)), 0
            m.latency = {b: None for b in todo} if opts.latency else {}
            if not opts.quality:
                m.prompts_total = 0
            problem = preflight(
                spec, cache_dir=opts.cache_dir, online=opts.online, base_dir=base_dir
            )
            if problem:
                m.warnings.append(problem)
            images_left = max(m.prompts_total - m.prompts_done, 0) * opts.images_per_prompt
            stage_calls = 1 + max(1, min(opts.reps, 3)) if opts.stages else 0
            work_left = bool(images_left or m.latency or stage_calls)
            load_s = 0.0
            if b1 is not None and not b1.infeasible:
                m.per_image_s, m.per_image_source = b1.p50_s, "stored"
            elif work_left and opts.probe and not problem:
                per_image, m.load_s, notes = _probe(spec, opts, info, base_dir, console)
                report.notes.extend(notes)
                if per_image is not None:
                    m.per_image_s, m.per_image_source = per_image, "probe"
                    load_s = m.load_s or 0.0
            if m.per_image_s is not None:
                m.estimate_s = estimate_seconds(
                    m.per_image_s,
                    images_left=images_left,
                    batch_sizes_left=list(m.latency),
                    warmup=opts.warmup,
                    reps=opts.reps,
                    stage_calls=stage_calls,
                    load_s=load_s,
                )
            elif not work_left:
                m.estimate_s = 0.0
            report.units_skipped += done + (m.prompts_done if opts.quality else 0)
            report.units_done += len(m.latency) + max(m.prompts_total - m.prompts_done, 0)
            report.models.append(m)
    finally:
        if store is not None:
            store.close()
    return report


# --------------------------------------------------------------------------- rendering


_SHORT = {"clip_score": "clip", "pick_score": "pick"}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g}"


def _secs(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 100 else f"{seconds:.3g}"


def _estimate_line(report: RunReport) -> str:
    """The dry run's footer: total estimated device time and where it comes from."""
    total = report.estimate_s
    sources = {m.per_image_source for m in report.models if m.per_image_source}
    missing = sum(1 for m in report.models if m.estimate_s is None)
    if total is None:
        return "Estimated GPU time: unknown (no model has a stored batch-1 latency or a probe)"
    if not sources:
        return "Estimated GPU time: 0 h (nothing left to measure)"
    if "probe" in sources:
        origin = f"from a probe on {report.device_name}"
        if "stored" in sources:
            origin += " and stored batch-1 latencies"
    else:
        origin = f"from stored batch-1 latencies under label '{report.hardware_label}'"
    line = (
        f"Estimated GPU time: {_hours(total)} h ({_secs(total)} s; upper bound at batch size 1; "
        f"{origin})"
    )
    if missing:
        line += f"; {missing} model{'s' if missing > 1 else ''} without an estimate (-) not counted"
    return line


def render_report(report: RunReport, console: Any) -> None:
    """The summary table after a run (or the plan of a dry run)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    if report.dry_run:
        t = Table(
            title=f"Plan for {report.run_dir} on {report.device_name} "
            f"(label '{report.hardware_label}'); nothing was run",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        t.add_column("model", no_wrap=True)
        t.add_column("steps", justify="right")
        t.add_column("batch sizes to time")
        t.add_column("prompts to generate", justify="right")
        t.add_column("probe s/img", justify="right")
        t.add_column("est. hours", justify="right")
        t.add_column("checkpoint")
        for m in report.models:
            per_image = est = "-"
            if m.per_image_s is not None:
                stored = " (stored)" if m.per_image_source == "stored" else ""
                per_image = f"{m.per_image_s:.3g}{stored}"
            if m.estimate_s is not None:
                est = f"{_hours(m.estimate_s)} ({_secs(m.estimate_s)} s)"
            t.add_row(
                escape(m.name),
                str(m.steps),
                ",".join(map(str, m.latency)) or "-",
                f"{m.prompts_total - m.prompts_done}/{m.prompts_total}",
                per_image,
                est,
                "[red]" + escape(m.warnings[0]) + "[/]" if m.warnings else "[green]ok[/]",
            )
        console.print(t)
        for note in report.notes:
            console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        console.print(
            f"{report.units_done} units to measure, {report.units_skipped} already done.",
            highlight=False,
        )
        console.print(_estimate_line(report), highlight=False, soft_wrap=True)
        return
    metrics = sorted({k for m in report.models for k in m.mean_scores})
    t = Table(
        title=f"Run {report.run_dir} on {report.device_name} (label '{report.hardware_label}')",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
        caption="b1 ms: p50 at batch 1; max b: largest feasible batch; ms/img: p50 per "
        "image there; mem: peak memory (GiB); done: prompts with all images; scores and "
        "conf: means over images.",
        caption_justify="left",
    )
    t.add_column("model", no_wrap=True, overflow="fold")
    for head in ("steps", "b1 ms", "max b", "ms/img", "mem", "done"):
        t.add_column(head, justify="right", no_wrap=True)
    for metric in metrics:
        scorer = metric.split(":", 1)[0]
        t.add_column(escape(_SHORT.get(scorer, scorer[:8])), justify="right", no_wrap=True)
    t.add_column("conf", justify="right", no_wrap=True)
    for m in report.models:
        feasible = {b: s for b, s in m.latency.items() if s is not None and not s.infeasible}
        b1 = feasible.get(1)
        top = max(feasible) if feasible else None
        peak = max((s.peak_mem_bytes or 0) for s in feasible.values()) if feasible else 0
        t.add_row(
            escape(m.name),
            str(m.steps),
            _ms(b1.p50_s) if b1 else "-",
            str(top) if top else "-",
            _ms(feasible[top].p50_s / top) if top else "-",
            f"{peak / 2**30:.2f}" if peak else "-",
            f"{m.prompts_done}/{m.prompts_total}" if m.prompts_total else "-",
            *(f"{m.mean_scores[x]:.3g}" if x in m.mean_scores else "-" for x in metrics),
            f"{m.mean_confidence:.3g}" if m.mean_confidence is not None else "-",
        )
    console.print(t)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    console.print(
        f"Measured {report.units_done} units now, {report.units_skipped} were already done; "
        f"the run is in {report.run_dir}.",
        highlight=False,
        soft_wrap=True,
    )
