"""``hadis-profile discriminator train|score``: the discriminator applied to a run store.

* ``train``: the head on real images (label 1) vs the run's saved images (label 0).
* ``score``: one confidence per saved image of the run, resumably; the scorer's
  spec becomes the run's current discriminator, which ``pareto`` copies into
  the table.
* Unreadable image files are skipped and counted: training goes on without
  them (each class still needs 2 readable images), scoring writes every
  readable image and then fails with one sentence naming the first bad file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile.discriminator import (
    DEFAULT_ENCODER,
    FEATURE_FORMAT,
    HEAD_FORMAT,
    HIDDEN,
    LEARNED_PREFIX,
    RUN_SUBDIR,
    roc_auc,
    set_hash,
    stratified_split,
)
from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.measure.discriminator import (
    build_discriminator,
    head_probabilities,
    save_head,
    train_head,
)
from hadis_profile.measure.encoder import (
    FeatureCache,
    ImageEncoder,
    first_line,
    list_images,
    load_encoder,
    load_pil,
    read_files,
)
from hadis_profile.progress import bar


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


# --------------------------------------------------------------------------- score


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
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ParameterError(name, f"{{param}} must be at least 1, not {value}.")
    if not (lr > 0 and np.isfinite(lr)):
        raise ParameterError("lr", f"{{param}} must be a positive number, not {lr}.")
    if not 0 < val_fraction < 1:
        raise ParameterError(
            "val_fraction", f"{{param}} must lie strictly between 0 and 1, not {val_fraction}."
        )


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
        raise ParameterError(
            "out", f"{{param}} {out_path} must not end in .json (that is the metadata file)."
        )
    real_paths = list_images(real_dir)
    _need_two(len(real_paths), f"The real image folder {real_dir} holds")
    with RunStore.open(run_dir, readonly=True) as store:
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
        raise ParameterError("batch_size", "{param} must be at least 1.")
    with RunStore.open(run_dir, write_lock="discriminator score") as store:
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
                    pil.append(load_pil(f.path))
                    ok.append(i)
                except Exception as e:  # PIL raises many types on a corrupt file
                    f.error = first_line(e)
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
