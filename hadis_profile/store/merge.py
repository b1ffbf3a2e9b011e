"""Join run stores of one run into one: the shards of ``run --shard``, or runs on several
machines or GPU types that measured the same zoo on the same prompts.

Stores merge only when they describe one run: the same zoo (hash), prompt set
(hash), seeds and scorers, the same spec for every model they share, and one
device name per hardware label. Anything else is refused with one sentence,
before anything is written.

Everything each store holds is copied once: prompts, models, hardware,
latency points with their raw samples, images with their seeds, scores,
confidences, feature vectors and saved PNGs, FID reference statistics, the
router, external configurations. A record held by several stores (the same
image, latency point, ...) is kept once; where the copies differ the first
store listed wins and the difference is reported (:class:`MergeReport`), never
silently averaged. Shards hold disjoint units, so their merge equals the store
of one unsharded run.

The merged run is built in a temporary folder next to ``out`` and renamed into
place at the end: an interrupted merge leaves no half-written run.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.fileio import atomic_dir
from hadis_profile.store.catalogue import same_checkpoint
from hadis_profile.store.core import now_utc
from hadis_profile.store.lock import LOCK_NAME, write_lock
from hadis_profile.store.run_store import RunStore

#: Provenance entries that are one dictionary per model or scorer: merged key by key.
_KEYED = ("stages", "load_s", "scorer_overhead_s_per_image")


@dataclass
class MergeReport:
    """What a merge did: rows copied per table, duplicates kept once, and differences."""

    out: Path
    sources: list[Path]
    copied: dict[str, int] = field(default_factory=dict)
    #: Records several stores held identically (kept once).
    duplicates: int = 0
    #: Records several stores held with different values: one sentence each (first kept).
    conflicts: list[str] = field(default_factory=list)
    #: Saved images a store lists but whose PNG is missing from its folder.
    missing_files: list[str] = field(default_factory=list)


def merge_runs(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> MergeReport:
    """Merge the run stores in ``sources`` into a new run in ``out`` (see the module doc)."""
    paths = [Path(s) for s in sources]
    target = Path(out)
    if not paths:
        raise ParameterError("sources", "{param} must name at least one run to merge.")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ParameterError("sources", "{param} names one run twice.")
    if target.exists() and (target.is_file() or any(e.name != LOCK_NAME for e in target.iterdir())):
        raise ParameterError("out", f"{{param}} {target} already exists; merge into a new folder.")
    stores: list[RunStore] = []
    created = not target.exists()
    try:
        for p in paths:
            stores.append(RunStore.open(p, readonly=True))  # sources stay exactly as they are
        _check_agreement(paths, stores)
        report = MergeReport(target, paths)
        target.mkdir(parents=True, exist_ok=True)
        # One writer per run folder (store.lock), then the whole run appears at once or
        # not at all (fileio.atomic_dir): a failed merge leaves no half-merged store.
        with write_lock(target, "merge"), atomic_dir(target) as tmp:
            merged = RunStore.create(tmp, provenance=_provenance(paths, stores), run_id=target.name)
            try:
                with merged.transaction():
                    _Copier(merged, report).copy(paths, stores)
            finally:
                merged.close()
    except BaseException:
        if created and target.is_dir():
            shutil.rmtree(target, ignore_errors=True)  # the empty folder made for the merge
        raise
    finally:
        for s in stores:
            s.close()
    return report


# --------------------------------------------------------------------------- agreement


def _check_agreement(paths: list[Path], stores: list[RunStore]) -> None:
    """Refuse stores that do not describe one run; one sentence naming two of them."""

    def same(what: str, values: list[Any], show: Any = str) -> None:
        for i in range(1, len(values)):
            if values[i] != values[0]:
                raise HadisError(
                    f"{paths[0]} and {paths[i]} disagree on the {what} ({show(values[0])} vs "
                    f"{show(values[i])}); only stores of one run merge."
                )

    def short(h: Any) -> str:
        return str(h)[:12] if h else "none"

    for p, s in zip(paths, stores, strict=True):
        if s.prompt_set_hash() is None:
            raise HadisError(f"{p} holds no prompts; there is nothing to merge.")
    provs = [s.provenance for s in stores]
    same("zoo hash", [p.get("zoo_hash") for p in provs], short)
    same("prompt-set hash", [s.prompt_set_hash() for s in stores], short)
    same("seeds", [p.get("seeds") for p in provs], json.dumps)
    tools = [p.get("quality_tools") for p in provs]
    same("scorers", [t for t in tools if t is not None], json.dumps)
    devices: dict[str, tuple[str | None, Path]] = {}
    models: dict[str, tuple[dict, Path]] = {}
    for p, s in zip(paths, stores, strict=True):
        for h in s.hardware():
            first = devices.setdefault(h["label"], (h["device_name"], p))
            if first[0] != h["device_name"]:
                raise HadisError(
                    f"{first[1]} and {p} file different devices under hardware label "
                    f"'{h['label']}' ({first[0]} vs {h['device_name']}); only stores of one "
                    "run merge."
                )
        for name, m in s.models().items():
            first_m = models.setdefault(name, (m, p))
            a, b = first_m[0], m
            if a["spec_hash"] != b["spec_hash"] or not same_checkpoint(
                a["spec"].get("checkpoint"), b["spec"].get("checkpoint")
            ):
                raise HadisError(
                    f"{first_m[1]} and {p} measured model '{name}' with different specs or "
                    "weights; only stores of one run merge."
                )


def _provenance(paths: list[Path], stores: list[RunStore]) -> dict:
    """The first store's provenance, per-model entries joined, and where the parts came from."""
    provs = [s.provenance for s in stores]
    merged = {k: v for k, v in provs[0].items() if k != "shard"}
    for key in _KEYED:
        joined: dict = {}
        for prov in reversed(provs):  # the first store listed wins a shared key
            joined.update(prov.get(key) or {})
        if joined:
            merged[key] = joined
    devices = []
    for prov in provs:
        for d in (prov.get("environment") or {}).get("devices", []):
            if d not in devices:
                devices.append(d)
    if devices:
        merged["environment"] = {**(merged.get("environment") or {}), "devices": devices}
    merged["merged_from"] = [
        {"run_id": s.run_id, "path": str(p), "shard": prov.get("shard")}
        for p, s, prov in zip(paths, stores, provs, strict=True)
    ]
    merged["merged_at"] = now_utc()
    return merged


# --------------------------------------------------------------------------- copying


class _Copier:
    """Copies every source's records into the merged store, keeping the first of duplicates."""

    def __init__(self, merged: RunStore, report: MergeReport) -> None:
        self.db: sqlite3.Connection = merged._db
        self.merged, self.report = merged, report

    def copy(self, paths: list[Path], stores: list[RunStore]) -> None:
        self.merged.add_prompts(stores[0].prompts())
        for p, s in zip(paths, stores, strict=True):
            src = s._db
            self._models(src)
            self._hardware(src)
            self._latency(src, p)
            self._images(src, p, s.root)
            self._reference(src, p)
            self._router(s, p)
            self._external(src, p)

    def _count(self, table: str, n: int = 1) -> None:
        self.report.copied[table] = self.report.copied.get(table, 0) + n

    def _differs(self, what: str, source: Path) -> None:
        self.report.conflicts.append(
            f"{what} differs in {source} from the store merged before it; the earlier one is kept"
        )

    def _models(self, src: sqlite3.Connection) -> None:
        for row in src.execute(
            "SELECT name, spec_hash, steps, height, width, dtype, spec_json FROM models "
            "ORDER BY rowid"
        ):
            if self.db.execute("SELECT 1 FROM models WHERE name=?", (row[0],)).fetchone():
                continue
            self.db.execute(
                "INSERT INTO models (name, spec_hash, steps, height, width, dtype, spec_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            self._count("models")

    def _hardware(self, src: sqlite3.Connection) -> None:
        for row in src.execute("SELECT label, device_name, driver, libraries_json FROM hardware"):
            self.db.execute(
                "INSERT OR IGNORE INTO hardware (label, device_name, driver, libraries_json) "
                "VALUES (?, ?, ?, ?)",
                row,
            )

    def _latency(self, src: sqlite3.Connection, source: Path) -> None:
        cols = (
            "model, hardware, batch_size, warmup, reps, mean_s, std_s, p50_s, p90_s, p99_s, "
            "p95_s, peak_mem_bytes, infeasible, peak_allocated_bytes, peak_reserved_bytes, "
            "ci_rel, converged, budget_cut"
        )
        marks = ", ".join("?" * len(cols.split(",")))
        for row in src.execute(f"SELECT {cols} FROM latency ORDER BY model, hardware, batch_size"):
            key = row[:3]
            have = self.db.execute(
                f"SELECT {cols} FROM latency WHERE model=? AND hardware=? AND batch_size=?", key
            ).fetchone()
            if have is not None:
                self._duplicate(
                    have == tuple(row),
                    f"The latency of {key[0]} on '{key[1]}' at batch {key[2]}",
                    source,
                )
                continue
            self.db.execute(f"INSERT INTO latency ({cols}) VALUES ({marks})", row)
            samples = src.execute(
                "SELECT model, hardware, batch_size, seq, seconds, source FROM latency_samples "
                "WHERE model=? AND hardware=? AND batch_size=?",
                key,
            ).fetchall()
            self.db.executemany(
                "INSERT INTO latency_samples (model, hardware, batch_size, seq, seconds, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                samples,
            )
            self._count("latency")

    def _duplicate(self, equal: bool, what: str, source: Path) -> None:
        if equal:
            self.report.duplicates += 1
        else:
            self._differs(what, source)

    def _images(self, src: sqlite3.Connection, source: Path, root: Path) -> None:
        out_root = self.merged.root
        for iid, model, prompt, index, seed, path in src.execute(
            "SELECT id, model, prompt_id, seed_index, seed, path FROM images ORDER BY id"
        ):
            found = _image_record(src, iid, seed)
            png = (root / path) if path else None
            have = self.db.execute(
                "SELECT id, seed, path FROM images WHERE model=? AND prompt_id=? AND seed_index=?",
                (model, prompt, index),
            ).fetchone()
            if have is not None:
                mine = _image_record(self.db, have[0], have[1])
                same_png = (
                    png is None
                    or have[2] is None
                    or not png.is_file()
                    or png.read_bytes() == (out_root / have[2]).read_bytes()
                )
                self._duplicate(
                    mine == found and same_png,
                    f"Image {index} of prompt {prompt} of {model}",
                    source,
                )
                continue
            if png is not None and not png.is_file():
                self.report.missing_files.append(str(png))
            elif png is not None:
                dest = out_root / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, dest)
            new_id = self.db.execute(
                "INSERT INTO images (model, prompt_id, seed_index, seed, path) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (model, prompt, index, seed, path),
            ).fetchone()[0]
            for table, cols in _PER_IMAGE.items():
                rows = src.execute(f"SELECT {cols} FROM {table} WHERE image_id=?", (iid,))
                marks = ", ".join("?" * (len(cols.split(",")) + 1))
                self.db.executemany(
                    f"INSERT INTO {table} (image_id, {cols}) VALUES ({marks})",
                    [(new_id, *r) for r in rows],
                )
            self._count("images")

    def _reference(self, src: sqlite3.Connection, source: Path) -> None:
        for row in src.execute("SELECT extractor, dim, mu, sigma FROM reference_stats"):
            have = self.db.execute(
                "SELECT extractor, dim, mu, sigma FROM reference_stats WHERE extractor=?",
                (row[0],),
            ).fetchone()
            if have is not None:
                self._duplicate(have == tuple(row), f"The FID reference of '{row[0]}'", source)
                continue
            self.db.execute(
                "INSERT INTO reference_stats (extractor, dim, mu, sigma) VALUES (?, ?, ?, ?)", row
            )

    def _router(self, store: RunStore, source: Path) -> None:
        spec = store.router_spec()
        if spec is None:
            return
        rows = store._db.execute(
            "SELECT prompt_id, score, features FROM router ORDER BY prompt_id"
        ).fetchall()
        mine = self.merged.router_spec()
        if mine is not None:
            have = self.db.execute(
                "SELECT prompt_id, score, features FROM router ORDER BY prompt_id"
            ).fetchall()
            self._duplicate(mine == spec and have == rows, "The router", source)
            return
        self.db.executemany(
            "INSERT INTO router (prompt_id, score, features) VALUES (?, ?, ?)", rows
        )
        self.merged._set_meta("router_spec", store._meta("router_spec") or "{}")
        self.merged._run_json_dirty = True

    def _external(self, src: sqlite3.Connection, source: Path) -> None:
        for row in src.execute("SELECT light, heavy, r, d, metric, value FROM external"):
            have = self.db.execute(
                "SELECT value FROM external WHERE light=? AND heavy=? AND r=? AND d=? AND metric=?",
                row[:5],
            ).fetchone()
            if have is not None:
                self._duplicate(
                    have[0] == row[5],
                    f"The external '{row[4]}' of ({row[0]}, {row[1]}, r={row[2]}, d={row[3]})",
                    source,
                )
                continue
            self.db.execute(
                "INSERT INTO external (light, heavy, r, d, metric, value) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )


#: The per-image tables and their columns besides ``image_id``.
_PER_IMAGE = {
    "scores": "metric, value",
    "confidences": "scorer, value",
    "features": "extractor, dtype, dim, vector",
}


def _image_record(db: sqlite3.Connection, image_id: int, seed: Any) -> tuple:
    """An image's seed and everything measured on it, comparable across stores."""
    parts: list[Any] = [seed]
    for table, cols in _PER_IMAGE.items():
        rows = db.execute(f"SELECT {cols} FROM {table} WHERE image_id=? ORDER BY 1", (image_id,))
        parts.append(tuple(map(tuple, rows)))
    return tuple(parts)
