"""The run store: one profiling run as a SQLite database plus a ``run.json`` summary.

This is the durable contract between measuring (``run``, ``import``) and
compiling (``pareto``). A run lives in ``outputs/<run-id>/``:

* ``store.sqlite`` in WAL mode, so a reader (a progress view, an export) never
  blocks the profiler, and a crash loses at most the unit of work in flight:
  writers commit one transaction per finished unit of work.
* ``run.json``, a human-readable snapshot of the provenance, rewritten
  atomically (temp file + ``os.replace``) whenever it changes. The database is
  the source of truth; ``run.json`` is for people and for ``git diff``.

The schema is only ever built by the migration registry (:data:`MIGRATIONS`),
so a fresh store and one migrated from an old version cannot drift apart.

Only stdlib ``sqlite3`` and numpy here: the compiler and the serving side must
not pay for pandas or torch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile import __version__
from hadis_profile.errors import HadisError
from hadis_profile.fileio import atomic_write_bytes, atomic_write_via, canonical_json
from hadis_profile.measurements import (
    ExternalConfig,
    LatencyStats,
    Measurements,
    ModelMeasurements,
)

#: The schema version this code writes. Bump it together with a new migration.
SCHEMA_VERSION = 2
DB_NAME = "store.sqlite"
RUN_JSON = "run.json"
RUN_FORMAT = "hadis-profile/run"
EXPORT_FORMATS = ("csv", "parquet")
#: Seconds a writer waits for another's lock before "database is locked": the
#: workers of ``run --devices`` write one store from several processes.
BUSY_TIMEOUT_S = 60.0

_FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


# --------------------------------------------------------------------------- migrations


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the caller's transaction.

    ``executescript`` would COMMIT first, breaking the one-transaction-per-step
    guarantee of a migration; these scripts hold no ``;`` inside literals.
    """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


#
# MIGRATIONS[v] upgrades a database at schema version v to v + 1. Each step runs
# in its own transaction and bumps meta.schema_version as its last statement, so
# an interrupted upgrade resumes from the last finished step.


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    """Version 0 is an empty file: create the first layout.

    In version 1 latency was keyed by (model, batch size) only, without the
    hardware it was measured on and without the warm-up / repetition counts.
    """
    _run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            spec_hash TEXT NOT NULL,
            steps INTEGER,
            height INTEGER,
            width INTEGER,
            dtype TEXT,
            spec_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE hardware (
            label TEXT PRIMARY KEY,
            device_name TEXT,
            driver TEXT,
            libraries_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE latency (
            model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            batch_size INTEGER NOT NULL,
            mean_s REAL, std_s REAL, p50_s REAL, p90_s REAL, p99_s REAL,
            peak_mem_bytes INTEGER,
            infeasible INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (model, batch_size)
        );
        CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            sha256 TEXT NOT NULL
        );
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
            seed_index INTEGER NOT NULL,
            seed INTEGER,
            path TEXT,
            UNIQUE (model, prompt_id, seed_index)
        );
        CREATE TABLE scores (
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            metric TEXT NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (image_id, metric)
        );
        CREATE TABLE confidences (
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            scorer TEXT NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (image_id, scorer)
        );
        CREATE TABLE features (
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            extractor TEXT NOT NULL,
            dtype TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (image_id, extractor)
        );
        CREATE TABLE reference_stats (
            extractor TEXT PRIMARY KEY,
            dim INTEGER NOT NULL,
            mu BLOB NOT NULL,
            sigma BLOB NOT NULL
        );
        CREATE TABLE router (
            prompt_id INTEGER PRIMARY KEY REFERENCES prompts(id) ON DELETE CASCADE,
            score REAL NOT NULL,
            features BLOB NOT NULL
        );
        CREATE TABLE external (
            light TEXT NOT NULL,
            heavy TEXT NOT NULL,
            r REAL NOT NULL,
            d REAL NOT NULL,
            metric TEXT NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (light, heavy, r, d, metric)
        );
        """,
    )


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Key latency by hardware and keep warm-up / repetition counts.

    Version-1 rows were measured on an unrecorded device; they move to the
    hardware label ``unknown`` rather than being dropped.
    """
    _run_script(
        db,
        """
        CREATE TABLE latency_v2 (
            model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            hardware TEXT NOT NULL REFERENCES hardware(label) ON DELETE CASCADE,
            batch_size INTEGER NOT NULL,
            warmup INTEGER NOT NULL DEFAULT 0,
            reps INTEGER NOT NULL DEFAULT 0,
            mean_s REAL, std_s REAL, p50_s REAL, p90_s REAL, p99_s REAL,
            peak_mem_bytes INTEGER,
            infeasible INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (model, hardware, batch_size)
        );
        INSERT OR IGNORE INTO hardware (label, device_name, driver, libraries_json)
            SELECT 'unknown', NULL, NULL, '{}' WHERE EXISTS (SELECT 1 FROM latency);
        INSERT INTO latency_v2 (model, hardware, batch_size, mean_s, std_s, p50_s, p90_s,
                                p99_s, peak_mem_bytes, infeasible)
            SELECT model, 'unknown', batch_size, mean_s, std_s, p50_s, p90_s, p99_s,
                   peak_mem_bytes, infeasible FROM latency;
        DROP TABLE latency;
        ALTER TABLE latency_v2 RENAME TO latency;
        """,
    )


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
}


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_hash_of(spec: dict) -> str:
    """The hash that identifies a model spec: any change invalidates its measurements."""
    return hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()


def _finite(value: float, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise HadisError(f"The {what} is {value!r}, expected a number.") from None
    if not math.isfinite(v):
        raise HadisError(f"The {what} is {v}, expected a finite number.")
    return v


def _finite_array(values: Any, what: str, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise HadisError(f"The {what} have dtype {arr.dtype}, expected numbers.")
    if ndim is not None and arr.ndim != ndim:
        raise HadisError(f"The {what} have shape {arr.shape}, expected {ndim} dimension(s).")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise HadisError(
            f"The {what} contain {int(bad.sum())} NaN or infinite value(s), first at index "
            f"{first if len(first) != 1 else first[0]}."
        )
    return arr


def _vector_blob(vector: Any, what: str) -> tuple[str, int, bytes]:
    """(dtype name, dim, bytes) of a 1-D float vector; float32 stays float32 to halve storage."""
    arr = _finite_array(vector, what, ndim=1)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return arr.dtype.name, int(arr.shape[0]), arr.tobytes()


# --------------------------------------------------------------------------- the store


class RunStore:
    """One run's SQLite store; see docs/architecture.md for the contract.

    Every write method is its own transaction unless called inside
    :meth:`transaction`, which groups several writes into one unit of work.
    """

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self._db = db
        self._depth = 0
        self._run_json_dirty = False

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls,
        root: str | Path,
        provenance: dict | None = None,
        *,
        run_id: str | None = None,
        exist_ok: bool = False,
    ) -> RunStore:
        """Start a new run in ``root`` (the run folder, e.g. ``outputs/<run-id>``).

        ``run_id`` defaults to the folder name; pass it when building in a
        temporary folder that will be renamed. With ``exist_ok`` an existing run
        is opened (and its provenance updated) so an interrupted profile resumes.
        """
        root = Path(root)
        if (root / DB_NAME).exists():
            if not exist_ok:
                raise HadisError(
                    f"A run already exists in {root}; resume it or start afresh with --fresh."
                )
            store = cls.open(root)
            if provenance:
                store.update_provenance(provenance)
            return store
        root.mkdir(parents=True, exist_ok=True)
        store = cls._connect(root)
        store._migrate()
        with store.transaction():
            store._set_meta("run_id", run_id or root.name)
            store._set_meta("created_at", _now())
            store._set_meta("tool_version", __version__)
            store._set_meta("provenance", canonical_json(provenance or {}))
            store._run_json_dirty = True
        return store

    @classmethod
    def open(cls, root: str | Path) -> RunStore:
        """Open an existing run, upgrading an older schema step by step."""
        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise HadisError(f"No run store found in {root} (expected {root / DB_NAME}).")
        store = cls._connect(root)
        try:
            store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _connect(cls, root: Path) -> RunStore:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so that a
            # transaction is exactly one unit of work, never implicit.
            db = sqlite3.connect(root / DB_NAME, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable at commit boundaries in WAL
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            raise HadisError(f"Cannot open run store {root / DB_NAME}: {e}.") from None
        return cls(root, db)

    def close(self) -> None:
        """Close the connection; SQLite checkpoints and removes the WAL on last close."""
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- schema

    def schema_version(self) -> int:
        return self._schema_version(self._db)

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int:
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        try:
            version = self._schema_version(self._db)
        except sqlite3.DatabaseError as e:
            raise HadisError(f"{self.root / DB_NAME} is not a readable run store: {e}.") from None
        if version > SCHEMA_VERSION:
            raise HadisError(
                f"Run store {self.root / DB_NAME} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this hadis-profile {__version__} understands; upgrade "
                "hadis-profile to read it."
            )
        # Foreign keys must be off while tables are rebuilt (SQLite's documented
        # ALTER procedure); they are re-checked after each step.
        self._db.execute("PRAGMA foreign_keys=OFF")
        upgrading = version > 0
        try:
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version)
                if step is None:
                    raise HadisError(
                        f"No migration from schema version {version} of {self.root / DB_NAME}."
                    )
                with self.transaction():
                    try:
                        step(self._db)
                    except sqlite3.DatabaseError as e:
                        raise HadisError(
                            f"Cannot migrate {self.root / DB_NAME} from schema version "
                            f"{version}: {e}."
                        ) from None
                    problems = self._db.execute("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise HadisError(
                            f"Migrating {self.root / DB_NAME} to version {version + 1} left "
                            f"{len(problems)} dangling reference(s), first in table "
                            f"'{problems[0][0]}'."
                        )
                    self._set_meta("schema_version", str(version + 1))
                    self._run_json_dirty = upgrading  # an old run: refresh its run.json
                version += 1
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    # ---------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator[RunStore]:
        """One unit of work: everything inside commits together or not at all.

        Nested use becomes a SAVEPOINT, so an inner failure that the caller
        catches rolls back only the inner block.
        """
        db = self._db
        if db is None:
            raise HadisError("The run store is closed.")
        outer = self._depth == 0
        name = f"sp{self._depth}"
        db.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            # SQLite may already have rolled back on some errors (e.g. disk full).
            with contextlib.suppress(sqlite3.OperationalError):
                if outer:
                    self._run_json_dirty = False
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                else:
                    db.execute(f"ROLLBACK TO {name}")
                    db.execute(f"RELEASE {name}")
            raise
        self._depth -= 1
        if outer:
            db.execute("COMMIT")
            if self._run_json_dirty:
                self._write_run_json()
        else:
            db.execute(f"RELEASE {name}")

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    # ---------------------------------------------------------------- provenance

    @property
    def run_id(self) -> str:
        return self._meta("run_id") or self.root.name

    @property
    def provenance(self) -> dict:
        """What the creator recorded (zoo hash, seeds, command line, source ...)."""
        return json.loads(self._meta("provenance", "{}") or "{}")

    def update_provenance(self, values: dict) -> None:
        """Merge ``values`` into the run's provenance (e.g. on resume)."""
        with self.transaction():
            merged = {**self.provenance, **values}
            self._set_meta("provenance", canonical_json(merged))
            self._run_json_dirty = True

    def summary(self) -> dict:
        """The run.json payload: provenance plus what the store currently holds."""
        q = self._db.execute
        return {
            "format": RUN_FORMAT,
            "run_id": self.run_id,
            "schema_version": self.schema_version(),
            "tool_version": self._meta("tool_version", __version__),
            "created_at": self._meta("created_at"),
            "updated_at": _now(),
            "provenance": self.provenance,
            "prompt_set_hash": self.prompt_set_hash(),
            "n_prompts": q("SELECT COUNT(*) FROM prompts").fetchone()[0],
            "models": {
                name: h for name, h in q("SELECT name, spec_hash FROM models ORDER BY name")
            },
            "hardware": self.hardware(),
            "router": self.router_spec(),
        }

    def _write_run_json(self) -> None:
        self._run_json_dirty = False
        text = json.dumps(self.summary(), indent=2, sort_keys=True, allow_nan=False)
        atomic_write_bytes(self.root / RUN_JSON, (text + "\n").encode("utf-8"))

    # ---------------------------------------------------------------- models and hardware

    def upsert_model(
        self,
        name: str,
        *,
        spec_hash: str | None = None,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        dtype: str | None = None,
        spec: dict | None = None,
    ) -> bool:
        """Record a model; True when its spec hash changed and its old records were deleted.

        A changed spec (other checkpoint, steps, resolution ...) makes every
        earlier measurement of that model meaningless, so latency, images (with
        their scores, confidences and features) and external rows naming it go.
        Other models are untouched. ``spec_hash`` defaults to the hash of ``spec``.
        """
        if not name:
            raise HadisError("A model needs a non-empty name.")
        spec = spec or {}
        new_hash = spec_hash or spec_hash_of(spec)
        with self.transaction():
            row = self._db.execute("SELECT spec_hash FROM models WHERE name=?", (name,)).fetchone()
            changed = row is not None and row[0] != new_hash
            if changed:
                self._delete_model_records(name)
            self._db.execute(
                "INSERT INTO models (name, spec_hash, steps, height, width, dtype, spec_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "spec_hash=excluded.spec_hash, steps=excluded.steps, height=excluded.height, "
                "width=excluded.width, dtype=excluded.dtype, spec_json=excluded.spec_json",
                (name, new_hash, steps, height, width, dtype, canonical_json(spec)),
            )
            if row is None or changed:
                self._run_json_dirty = True
        return changed

    def _delete_model_records(self, name: str) -> None:
        # images cascade to scores, confidences and features.
        self._db.execute("DELETE FROM latency WHERE model=?", (name,))
        self._db.execute("DELETE FROM images WHERE model=?", (name,))
        self._db.execute("DELETE FROM external WHERE light=? OR heavy=?", (name, name))

    def models(self) -> dict[str, dict]:
        """name -> {spec_hash, steps, height, width, dtype, spec}, in insertion order."""
        rows = self._db.execute(
            "SELECT name, spec_hash, steps, height, width, dtype, spec_json FROM models "
            "ORDER BY rowid"
        )
        return {
            r[0]: {
                "spec_hash": r[1],
                "steps": r[2],
                "height": r[3],
                "width": r[4],
                "dtype": r[5],
                "spec": json.loads(r[6]),
            }
            for r in rows
        }

    def _require_model(self, name: str) -> None:
        if not self._db.execute("SELECT 1 FROM models WHERE name=?", (name,)).fetchone():
            raise HadisError(f"Model '{name}' is not in the run; call upsert_model first.")

    def upsert_hardware(
        self,
        label: str,
        *,
        device_name: str | None = None,
        driver: str | None = None,
        libraries: dict | None = None,
    ) -> None:
        """Record the device a latency was measured on (label like ``a100``)."""
        if not label:
            raise HadisError("A hardware entry needs a non-empty label.")
        with self.transaction():
            self._db.execute(
                "INSERT INTO hardware (label, device_name, driver, libraries_json) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(label) DO UPDATE SET "
                "device_name=excluded.device_name, driver=excluded.driver, "
                "libraries_json=excluded.libraries_json",
                (label, device_name, driver, canonical_json(libraries or {})),
            )
            self._run_json_dirty = True

    def hardware(self) -> list[dict]:
        rows = self._db.execute(
            "SELECT label, device_name, driver, libraries_json FROM hardware ORDER BY label"
        )
        return [
            {"label": r[0], "device_name": r[1], "driver": r[2], "libraries": json.loads(r[3])}
            for r in rows
        ]

    def _pick_hardware(self, hardware: str | None) -> str | None:
        """The hardware label to read latencies for: the given one, or the only one."""
        labels = [
            r[0] for r in self._db.execute("SELECT DISTINCT hardware FROM latency ORDER BY 1")
        ]
        if hardware is not None:
            if hardware not in labels:
                have = ", ".join(labels) or "none"
                raise HadisError(
                    f"The run has no latencies on hardware '{hardware}' (it has {have})."
                )
            return hardware
        if len(labels) > 1:
            raise HadisError(
                f"The run has latencies on several devices ({', '.join(labels)}); choose one."
            )
        return labels[0] if labels else None

    # ---------------------------------------------------------------- latency

    def put_latency(self, model: str, hardware_label: str, stats: LatencyStats) -> None:
        """Record one (model, hardware, batch size) point; re-measuring replaces it."""
        b = int(stats.batch_size)
        if b < 1:
            raise HadisError(f"Latency of model '{model}' has batch size {b}, expected >= 1.")
        times = [stats.mean_s, stats.std_s, stats.p50_s, stats.p90_s, stats.p99_s]
        if stats.infeasible:
            # An OOM point has no meaningful times; SQLite would turn NaN into NULL anyway.
            times = [t if t is not None and math.isfinite(t) else None for t in times]
        else:
            what = f"latency of model '{model}' at batch size {b}"
            times = [_finite(t, what) for t in times]
            if times[0] <= 0 or min(times) < 0:
                raise HadisError(f"The {what} has mean {times[0]} s, expected a positive number.")
        with self.transaction():
            self._require_model(model)
            if not self._db.execute(
                "SELECT 1 FROM hardware WHERE label=?", (hardware_label,)
            ).fetchone():
                raise HadisError(
                    f"Hardware '{hardware_label}' is not in the run; call upsert_hardware first."
                )
            self._db.execute(
                "INSERT OR REPLACE INTO latency (model, hardware, batch_size, warmup, reps, "
                "mean_s, std_s, p50_s, p90_s, p99_s, peak_mem_bytes, infeasible) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    hardware_label,
                    b,
                    int(stats.warmup),
                    int(stats.reps),
                    *times,
                    None if stats.peak_mem_bytes is None else int(stats.peak_mem_bytes),
                    int(bool(stats.infeasible)),
                ),
            )

    def latency(self, model: str, hardware: str | None = None) -> dict[int, LatencyStats]:
        """batch size -> LatencyStats for one model (on the given or the only hardware)."""
        hw = self._pick_hardware(hardware)
        rows = self._db.execute(
            "SELECT batch_size, mean_s, std_s, p50_s, p90_s, p99_s, peak_mem_bytes, infeasible, "
            "warmup, reps FROM latency WHERE model=? AND hardware=? ORDER BY batch_size",
            (model, hw),
        )
        nan = math.nan
        return {
            r[0]: LatencyStats(
                r[0],
                *(nan if t is None else t for t in r[1:6]),
                peak_mem_bytes=r[6],
                infeasible=bool(r[7]),
                warmup=r[8],
                reps=r[9],
            )
            for r in rows
        }

    def has_latency(self, model: str, hardware_label: str, batch_size: int) -> bool:
        """Resume: was this point already measured (feasible or not)?"""
        return (
            self._db.execute(
                "SELECT 1 FROM latency WHERE model=? AND hardware=? AND batch_size=?",
                (model, hardware_label, int(batch_size)),
            ).fetchone()
            is not None
        )

    # ---------------------------------------------------------------- prompts

    def add_prompts(self, texts: Sequence[str]) -> list[int]:
        """Store the prompt set; prompt ``i`` gets id ``i``.

        Re-adding the same set (resume) is a no-op, and a longer list whose start
        is the stored set extends it. Changing a stored prompt is refused: its
        images would silently answer a different prompt.
        """
        texts = [str(t) for t in texts]
        with self.transaction():
            stored = self.prompts()
            for i, (old, new) in enumerate(zip(stored, texts, strict=False)):
                if old != new:
                    raise HadisError(
                        f"Prompt {i} differs from the one stored in the run; start afresh "
                        "with --fresh to change the prompt set."
                    )
            if len(texts) < len(stored):
                raise HadisError(
                    f"The run holds {len(stored)} prompts but only {len(texts)} were given; "
                    "start afresh with --fresh to shrink the prompt set."
                )
            new = [(i, t, _sha256(t)) for i, t in enumerate(texts) if i >= len(stored)]
            if new:
                self._db.executemany("INSERT INTO prompts (id, text, sha256) VALUES (?, ?, ?)", new)
                self._set_meta("prompt_set_hash", self._compute_prompt_set_hash())
                self._run_json_dirty = True
        return list(range(len(texts)))

    def prompts(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT text FROM prompts ORDER BY id")]

    def n_prompts(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM prompts").fetchone()[0]

    def _compute_prompt_set_hash(self) -> str:
        shas = [r[0] for r in self._db.execute("SELECT sha256 FROM prompts ORDER BY id")]
        return hashlib.sha256("\n".join(shas).encode("ascii")).hexdigest()

    def prompt_set_hash(self) -> str | None:
        """sha256 over the ordered per-prompt sha256s (hex, newline-joined); None if empty."""
        return self._meta("prompt_set_hash")

    # ---------------------------------------------------------------- images and per-image data

    def put_image(
        self,
        model: str,
        prompt_id: int,
        seed_index: int,
        seed: int | None = None,
        path: str | None = None,
    ) -> int:
        """Record one generated image and return its id (stable when re-recorded)."""
        with self.transaction():
            self._require_model(model)
            self._require_prompt(prompt_id)
            row = self._db.execute(
                "INSERT INTO images (model, prompt_id, seed_index, seed, path) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(model, prompt_id, seed_index) DO UPDATE SET "
                "seed=excluded.seed, path=excluded.path RETURNING id",
                (model, int(prompt_id), int(seed_index), seed, None if path is None else str(path)),
            ).fetchone()
        return int(row[0])

    def _require_prompt(self, prompt_id: int) -> None:
        if not self._db.execute("SELECT 1 FROM prompts WHERE id=?", (int(prompt_id),)).fetchone():
            raise HadisError(f"Prompt {prompt_id} is not in the run; call add_prompts first.")

    def _require_image(self, image_id: int) -> None:
        if not self._db.execute("SELECT 1 FROM images WHERE id=?", (int(image_id),)).fetchone():
            raise HadisError(f"Image {image_id} is not in the run; call put_image first.")

    def put_scores(self, image_id: int, scores: dict[str, float]) -> None:
        """Per-image metric values, metric id like ``clip_score:openai/clip-vit-large-patch14``."""
        rows = [
            (int(image_id), _check_metric_id(m), _finite(v, f"score '{m}' of image {image_id}"))
            for m, v in scores.items()
        ]
        with self.transaction():
            self._require_image(image_id)
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (image_id, metric, value) VALUES (?, ?, ?)", rows
            )

    def put_confidence(self, image_id: int, value: float, *, scorer: str) -> None:
        """The discriminator's P(real) for one image, under the scorer that produced it."""
        v = _finite(value, f"confidence of image {image_id}")
        with self.transaction():
            self._require_image(image_id)
            self._db.execute(
                "INSERT OR REPLACE INTO confidences (image_id, scorer, value) VALUES (?, ?, ?)",
                (int(image_id), _check_scorer(scorer), v),
            )

    def put_feature_vector(self, image_id: int, extractor: str, vector: Any) -> None:
        """One image's feature vector (float32 or float64) for set-level metrics like FID."""
        dtype, dim, blob = _vector_blob(vector, f"feature vector of image {image_id}")
        with self.transaction():
            self._require_image(image_id)
            self._db.execute(
                "INSERT OR REPLACE INTO features (image_id, extractor, dtype, dim, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                (int(image_id), _check_scorer(extractor), dtype, dim, blob),
            )

    def put_reference_stats(self, extractor: str, mu: Any, sigma: Any) -> None:
        """The FID reference set's mean [dim] and covariance [dim, dim] for one extractor."""
        mu = _finite_array(mu, f"reference mean of '{extractor}'", ndim=1).astype(np.float64)
        sigma = _finite_array(sigma, f"reference covariance of '{extractor}'", ndim=2)
        d = mu.shape[0]
        if sigma.shape != (d, d):
            raise HadisError(
                f"The reference covariance of '{extractor}' has shape {sigma.shape}, "
                f"expected ({d}, {d})."
            )
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO reference_stats (extractor, dim, mu, sigma) "
                "VALUES (?, ?, ?, ?)",
                (
                    _check_scorer(extractor),
                    d,
                    mu.astype("<f8").tobytes(),
                    sigma.astype("<f8").tobytes(),
                ),
            )

    def reference_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for ext, d, mu, sigma in self._db.execute(
            "SELECT extractor, dim, mu, sigma FROM reference_stats ORDER BY extractor"
        ):
            out[ext] = (
                np.frombuffer(mu, "<f8").copy(),
                np.frombuffer(sigma, "<f8").reshape(d, d).copy(),
            )
        return out

    # ---------------------------------------------------------------- bulk fast paths

    def put_images_bulk(
        self,
        model: str,
        images_per_prompt: int,
        *,
        seeds: Any = None,
        paths: Sequence[Sequence[str | None]] | None = None,
    ) -> np.ndarray:
        """Record ``images_per_prompt`` images for every prompt; return ids [n_prompts, k].

        Existing images keep their ids (their seed/path are updated only when given).
        One executemany instead of n*k round trips: imports of 20,000 images take
        milliseconds.
        """
        k = int(images_per_prompt)
        if k < 1:
            raise HadisError(f"images_per_prompt is {k}, expected at least 1.")
        n = self.n_prompts()
        if n == 0:
            raise HadisError("The run has no prompts; call add_prompts before adding images.")
        seed_arr = None
        if seeds is not None:
            seed_arr = np.asarray(seeds)
            if seed_arr.shape != (n, k) or seed_arr.dtype.kind not in "iu":
                raise HadisError(
                    f"Seeds have shape {seed_arr.shape}, expected integers ({n}, {k})."
                )
        if paths is not None and (len(paths) != n or any(len(p) != k for p in paths)):
            raise HadisError(f"Image paths must be a list of {n} lists of {k} paths.")
        rows = (
            (
                model,
                p,
                s,
                None if seed_arr is None else int(seed_arr[p, s]),
                None if paths is None or paths[p][s] is None else str(paths[p][s]),
            )
            for p in range(n)
            for s in range(k)
        )
        with self.transaction():
            self._require_model(model)
            self._db.executemany(
                "INSERT INTO images (model, prompt_id, seed_index, seed, path) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(model, prompt_id, seed_index) DO UPDATE SET "
                "seed=coalesce(excluded.seed, seed), path=coalesce(excluded.path, path)",
                rows,
            )
            return self.image_ids(model, k)

    def image_ids(self, model: str, images_per_prompt: int | None = None) -> np.ndarray:
        """Image ids as [n_prompts, k] (k = the per-prompt count; every prompt must have k)."""
        rows = np.array(
            self._db.execute(
                "SELECT prompt_id, seed_index, id FROM images WHERE model=?", (model,)
            ).fetchall(),
            dtype=np.int64,
        ).reshape(-1, 3)
        n = self.n_prompts()
        k = (
            int(images_per_prompt)
            if images_per_prompt
            else (int(rows[:, 1].max()) + 1 if len(rows) else 0)
        )
        ids = np.full((n, k), -1, dtype=np.int64)
        inside = rows[:, 1] < k
        ids[rows[inside, 0], rows[inside, 1]] = rows[inside, 2]
        missing = ids < 0
        if missing.any():
            p, s = (int(x) for x in np.argwhere(missing)[0])
            raise HadisError(
                f"Model '{model}' has {int(missing.sum())} missing image(s) of {n}x{k}, "
                f"first at prompt {p} seed index {s}."
            )
        return ids

    def _bulk_values(self, model: str, values: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
        arr = _finite_array(values, f"{what} of model '{model}'", ndim=2).astype(np.float64)
        n = self.n_prompts()
        if arr.shape[0] != n:
            raise HadisError(
                f"The {what} of model '{model}' have {arr.shape[0]} rows, expected one per "
                f"prompt ({n})."
            )
        ids = self.put_images_bulk(model, arr.shape[1])
        return ids, arr

    def put_confidences_bulk(self, model: str, values: Any, *, scorer: str) -> np.ndarray:
        """Confidences [n_prompts, k] for image (prompt, seed index); creates missing images."""
        scorer = _check_scorer(scorer)
        with self.transaction():
            ids, arr = self._bulk_values(model, values, "confidences")
            self._db.executemany(
                "INSERT OR REPLACE INTO confidences (image_id, scorer, value) VALUES (?, ?, ?)",
                zip(ids.ravel().tolist(), [scorer] * ids.size, arr.ravel().tolist(), strict=True),
            )
        return ids

    def put_scores_bulk(self, model: str, metric_id: str, values: Any) -> np.ndarray:
        """One metric's per-image values [n_prompts, k]; creates missing images."""
        metric_id = _check_metric_id(metric_id)
        with self.transaction():
            ids, arr = self._bulk_values(model, values, f"scores '{metric_id}'")
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (image_id, metric, value) VALUES (?, ?, ?)",
                zip(
                    ids.ravel().tolist(), [metric_id] * ids.size, arr.ravel().tolist(), strict=True
                ),
            )
        return ids

    def put_features_bulk(self, model: str, extractor: str, vectors: Any) -> np.ndarray:
        """Feature vectors [n_prompts, k, dim] (float32 kept as float32); creates missing images."""
        extractor = _check_scorer(extractor)
        arr = _finite_array(vectors, f"feature vectors '{extractor}' of model '{model}'", ndim=3)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float64)
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        n, k, dim = arr.shape
        if n != self.n_prompts():
            raise HadisError(
                f"Feature vectors '{extractor}' of model '{model}' have {n} rows, expected one "
                f"per prompt ({self.n_prompts()})."
            )
        with self.transaction():
            ids = self.put_images_bulk(model, k)
            dtype = arr.dtype.name
            self._db.executemany(
                "INSERT OR REPLACE INTO features (image_id, extractor, dtype, dim, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    (int(ids[p, s]), extractor, dtype, dim, arr[p, s].tobytes())
                    for p in range(n)
                    for s in range(k)
                ),
            )
        return ids

    # ---------------------------------------------------------------- resume helpers

    def done_prompts(self, model: str, images_per_prompt: int | None = None) -> set[int]:
        """Resume: prompts whose images for ``model`` are all recorded.

        With ``images_per_prompt`` a prompt counts only when that many images
        exist; without it any image counts (writers commit a prompt's images as
        one unit of work, so a prompt is either complete or absent).
        """
        need = 1 if images_per_prompt is None else int(images_per_prompt)
        rows = self._db.execute(
            "SELECT prompt_id FROM images WHERE model=? GROUP BY prompt_id HAVING COUNT(*) >= ?",
            (model, need),
        )
        return {r[0] for r in rows}

    def reset(self) -> None:
        """``--fresh``: delete every measurement and prompt, keep schema and provenance."""
        with self.transaction():
            for table in (
                "features",
                "scores",
                "confidences",
                "images",
                "router",
                "external",
                "reference_stats",
                "latency",
                "prompts",
                "models",
                "hardware",
            ):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("DELETE FROM meta WHERE key IN ('prompt_set_hash', 'router_spec')")
            self._run_json_dirty = True

    # ---------------------------------------------------------------- router

    def put_router(
        self, features: Any, names: Sequence[str], scores: Any, spec: dict | None = None
    ) -> None:
        """Per-prompt router features [n, k] and scores [n] (higher = harder), plus its spec.

        The spec (weights, normalisation, source) travels into table.json so a
        serving stack can score new prompts the same way.
        """
        n = self.n_prompts()
        feats = _finite_array(features, "router features", ndim=2).astype(np.float64)
        s = _finite_array(scores, "router scores", ndim=1).astype(np.float64)
        names = [str(x) for x in names]
        if feats.shape != (n, len(names)):
            raise HadisError(
                f"The router features have shape {feats.shape}, expected ({n}, {len(names)}) "
                "for the run's prompts and the given feature names."
            )
        if s.shape != (n,):
            raise HadisError(f"The router scores have shape {s.shape}, expected ({n},).")
        spec = dict(spec or {})
        if "features" in spec and list(spec["features"]) != names:
            raise HadisError("The router spec names other features than the ones given.")
        spec["features"] = names
        feats = np.ascontiguousarray(feats, dtype="<f8")
        with self.transaction():
            self._db.execute("DELETE FROM router")
            self._db.executemany(
                "INSERT INTO router (prompt_id, score, features) VALUES (?, ?, ?)",
                ((i, float(s[i]), feats[i].tobytes()) for i in range(n)),
            )
            self._set_meta("router_spec", canonical_json(spec))
            self._run_json_dirty = True

    def router_spec(self) -> dict | None:
        raw = self._meta("router_spec")
        return json.loads(raw) if raw else None

    def router(self) -> tuple[np.ndarray, list[str], np.ndarray, dict] | None:
        """(features [n, k], names, scores [n], spec) or None when no router was stored."""
        spec = self.router_spec()
        if spec is None:
            return None
        rows = self._db.execute("SELECT score, features FROM router ORDER BY prompt_id").fetchall()
        names = list(spec["features"])
        feats = np.frombuffer(b"".join(r[1] for r in rows), "<f8").reshape(len(rows), len(names))
        return feats.copy(), names, np.array([r[0] for r in rows], dtype=np.float64), spec

    # ---------------------------------------------------------------- external configurations

    def put_external_configs(self, configs: Iterable[ExternalConfig]) -> int:
        """Configurations measured elsewhere (e.g. HADIS's FID sweep); returns the row count."""
        rows = []
        for c in configs:
            where = f"external configuration ({c.light}, {c.heavy}, r={c.r}, d={c.d})"
            r = _finite(c.r, f"router ratio of the {where}")
            d = _finite(c.d, f"discriminator ratio of the {where}")
            if not (0.0 <= r <= 1.0 and 0.0 <= d <= 1.0):
                raise HadisError(f"The {where} has a ratio outside [0, 1].")
            if not c.values:
                raise HadisError(f"The {where} has no metric values.")
            for metric, v in c.values.items():
                rows.append(
                    (
                        c.light,
                        c.heavy,
                        r,
                        d,
                        _check_metric_id(metric),
                        _finite(v, f"value '{metric}' of the {where}"),
                    )
                )
        with self.transaction():
            for name in sorted({x[0] for x in rows} | {x[1] for x in rows}):
                self._require_model(name)
            self._db.executemany(
                "INSERT OR REPLACE INTO external (light, heavy, r, d, metric, value) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def external_configs(self) -> list[ExternalConfig]:
        grouped: dict[tuple, dict[str, float]] = {}
        for light, heavy, r, d, metric, value in self._db.execute(
            "SELECT light, heavy, r, d, metric, value FROM external ORDER BY rowid"
        ):
            grouped.setdefault((light, heavy, r, d), {})[metric] = value
        return [ExternalConfig(k[0], k[1], k[2], k[3], v) for k, v in grouped.items()]

    # ---------------------------------------------------------------- loading

    def _per_prompt_mean(self, sql: str, args: tuple, n: int, what: str) -> np.ndarray | None:
        """Mean over each prompt's images; None when there are no rows at all."""
        rows = self._db.execute(sql, args).fetchall()
        if not rows:
            return None
        data = np.array(rows, dtype=np.float64)
        pid = data[:, 0].astype(np.int64)
        counts = np.bincount(pid, minlength=n)
        sums = np.bincount(pid, weights=data[:, 1], minlength=n)
        missing = np.flatnonzero(counts == 0)
        if len(missing):
            raise HadisError(
                f"The {what} are missing for {len(missing)} of {n} prompts, first at prompt "
                f"{int(missing[0])}."
            )
        return sums / counts

    def confidence_scorers(self) -> list[str]:
        """Every confidence scorer the run holds values of, sorted."""
        return [
            r[0] for r in self._db.execute("SELECT DISTINCT scorer FROM confidences ORDER BY 1")
        ]

    def default_confidence_scorer(self, requested: str | None = None) -> str | None:
        """The scorer tables are calibrated on: ``requested`` (an id or a unique prefix such
        as ``confidence:hadis-head``), else the only one, else the discriminator the run
        recorded last (``provenance.discriminator.scorer_id``)."""
        found = self.confidence_scorers()
        if requested is not None:
            if requested in found:
                return requested
            matches = [s for s in found if s.startswith(requested)]
            if len(matches) == 1:
                return matches[0]
            what = "matches several of" if matches else "is not among"
            raise HadisError(
                f"Confidence scorer '{requested}' {what} the run's confidence scorers "
                f"({', '.join(matches or found) or 'none'})."
            )
        if len(found) <= 1:
            return found[0] if found else None
        latest = (self.provenance.get("discriminator") or {}).get("scorer_id")
        if latest in found:
            return latest
        raise HadisError(
            f"The run has confidences from several scorers ({', '.join(found)}); choose one "
            "with --confidence."
        )

    def saved_images(self) -> list[tuple[int, str, int, int, str]]:
        """(image id, model, prompt id, seed index, path) of every image saved to disk."""
        return [
            tuple(r)
            for r in self._db.execute(
                "SELECT id, model, prompt_id, seed_index, path FROM images "
                "WHERE path IS NOT NULL ORDER BY id"
            )
        ]

    def scored_image_ids(self, scorer: str) -> set[int]:
        """Images that already have a confidence from ``scorer`` (for resuming)."""
        rows = self._db.execute("SELECT image_id FROM confidences WHERE scorer=?", (scorer,))
        return {r[0] for r in rows}

    def confidence_means(self, scorer: str) -> dict[str, float]:
        """Mean confidence per model under ``scorer``."""
        rows = self._db.execute(
            "SELECT i.model, AVG(c.value) FROM confidences c JOIN images i ON i.id = c.image_id "
            "WHERE c.scorer=? GROUP BY i.model ORDER BY i.model",
            (scorer,),
        )
        return {m: float(v) for m, v in rows}

    def _pick_scorer(self, model: str, scorer: str | None) -> str | None:
        scorers = [
            r[0]
            for r in self._db.execute(
                "SELECT DISTINCT c.scorer FROM confidences c JOIN images i ON i.id = c.image_id "
                "WHERE i.model=? ORDER BY 1",
                (model,),
            )
        ]
        if scorer is not None:
            return scorer if scorer in scorers else None
        if len(scorers) > 1:
            raise HadisError(
                f"Model '{model}' has confidences from several scorers ({', '.join(scorers)}); "
                "choose one."
            )
        return scorers[0] if scorers else None

    def _features(self, model: str, n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        extractors = [
            r[0]
            for r in self._db.execute(
                "SELECT DISTINCT f.extractor FROM features f JOIN images i ON i.id = f.image_id "
                "WHERE i.model=? ORDER BY 1",
                (model,),
            )
        ]
        for ext in extractors:
            rows = self._db.execute(
                "SELECT i.prompt_id, f.dtype, f.dim, f.vector FROM features f "
                "JOIN images i ON i.id = f.image_id WHERE i.model=? AND f.extractor=? "
                "ORDER BY i.prompt_id, i.seed_index",
                (model, ext),
            ).fetchall()
            what = f"Feature vectors '{ext}' of model '{model}'"
            dims = {r[2] for r in rows}
            if len(dims) != 1:
                raise HadisError(f"{what} have mixed dimensions {sorted(dims)}.")
            counts = np.bincount(np.array([r[0] for r in rows]), minlength=n)
            if counts.min() != counts.max():
                raise HadisError(
                    f"{what} number {counts.min()} to {counts.max()} per prompt, expected the "
                    f"same count for all {n} prompts (first short prompt "
                    f"{int(np.argmin(counts))})."
                )
            dim, k = dims.pop(), int(counts[0])
            dtypes = {r[1] for r in rows}
            target = np.float32 if dtypes == {"float32"} else np.float64
            arr = np.empty((n * k, dim), dtype=target)
            for j, r in enumerate(rows):
                arr[j] = np.frombuffer(r[3], np.dtype(_FLOAT_DTYPES[r[1]]).newbyteorder("<"))
            out[ext] = arr.reshape(n, k, dim)
        return out

    def load_measurements(
        self, *, hardware: str | None = None, confidence_scorer: str | None = None
    ) -> Measurements:
        """The run as :class:`Measurements`, models ordered by batch-1 latency.

        ``hardware`` is needed only when the run holds several; the confidence
        scorer defaults to :meth:`default_confidence_scorer`. Incomplete or
        non-finite data is refused with one sentence.
        """
        confidence_scorer = self.default_confidence_scorer(confidence_scorer)
        prompts = self.prompts()
        n = len(prompts)
        if n == 0:
            raise HadisError(f"The run in {self.root} has no prompts; nothing was measured yet.")
        names = list(self.models())
        if not names:
            raise HadisError(f"The run in {self.root} has no models; nothing was measured yet.")
        hw = self._pick_hardware(hardware)
        info = self.models()
        models: dict[str, ModelMeasurements] = {}
        for name in names:
            m = ModelMeasurements(
                name=name, steps=info[name]["steps"], spec_hash=info[name]["spec_hash"]
            )
            if hw is not None:
                m.latency = self.latency(name, hw)
            metrics = [
                r[0]
                for r in self._db.execute(
                    "SELECT DISTINCT s.metric FROM scores s JOIN images i ON i.id = s.image_id "
                    "WHERE i.model=? ORDER BY 1",
                    (name,),
                )
            ]
            for metric in metrics:
                m.quality[metric] = self._per_prompt_mean(
                    "SELECT i.prompt_id, s.value FROM scores s JOIN images i ON i.id = s.image_id "
                    "WHERE i.model=? AND s.metric=?",
                    (name, metric),
                    n,
                    f"scores '{metric}' of model '{name}'",
                )
            scorer = self._pick_scorer(name, confidence_scorer)
            if scorer is not None:
                m.confidence = self._per_prompt_mean(
                    "SELECT i.prompt_id, c.value FROM confidences c "
                    "JOIN images i ON i.id = c.image_id WHERE i.model=? AND c.scorer=?",
                    (name, scorer),
                    n,
                    f"confidences of model '{name}'",
                )
            m.features = self._features(name, n)
            models[name] = m

        def order(name: str) -> tuple:
            p = models[name].latency.get(1)
            feasible = p is not None and not p.infeasible
            return (not feasible, p.mean_s if feasible else 0.0, name)

        models = {k: models[k] for k in sorted(models, key=order)}

        router_scores, router_spec = None, None
        router = self.router()
        if router is not None:
            _, _, router_scores, router_spec = router
            if router_scores.shape != (n,):
                raise HadisError(
                    f"The router scores cover {router_scores.shape[0]} of the run's {n} prompts."
                )
        hw_info = next((h for h in self.hardware() if h["label"] == hw), None)
        provenance = {
            **self.provenance,
            "run_id": self.run_id,
            "hardware": hw_info,
            "prompt_set_hash": self.prompt_set_hash(),
            "n_prompts": n,
            "schema_version": self.schema_version(),
        }
        meas = Measurements(
            prompts=prompts,
            models=models,
            router_scores=router_scores,
            router_spec=router_spec,
            reference_stats=self.reference_stats(),
            external=self.external_configs(),
            provenance=provenance,
        )
        meas.check()
        return meas

    # ---------------------------------------------------------------- export

    def _export_tables(self) -> dict[str, tuple[list[str], list[str], list[tuple]]]:
        """table name -> (columns, arrow types, rows): the flat, tool-friendly view."""
        tables = {}
        for name, (columns, sql) in _EXPORTS.items():
            cols, types = zip(*(c.split(":") for c in columns.split()), strict=True)
            rows = self._db.execute(sql).fetchall()
            if "bool" in types:
                flags = [i for i, t in enumerate(types) if t == "bool"]
                rows = [tuple(bool(v) if i in flags else v for i, v in enumerate(r)) for r in rows]
            tables[name] = (list(cols), list(types), rows)
        router = self.router()
        if router is not None:
            feats, names, scores, _ = router
            tables["router"] = (
                ["prompt_id", "score", *names],
                ["int", "float", *(["float"] * len(names))],
                [(i, float(scores[i]), *feats[i].tolist()) for i in range(len(scores))],
            )
        return tables

    def export(self, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
        """Write one file per table (CSV or parquet), each atomically; return the paths.

        Feature vectors and FID reference statistics are binary matrices, so
        they go to ``features__<extractor>.npz`` / ``reference_stats.npz``
        whatever the format. ``run.json`` (provenance, router spec) comes along.
        """
        if fmt not in EXPORT_FORMATS:
            raise HadisError(f"Unknown export format '{fmt}'; choose csv or parquet.")
        if fmt == "parquet":
            _pyarrow()  # fail before writing anything
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name, (cols, types, rows) in self._export_tables().items():
            if fmt == "csv":
                path = out / f"{name}.csv"
                _atomic_csv(path, cols, rows)
            else:
                path = out / f"{name}.parquet"
                _atomic_parquet(path, cols, types, rows)
            written.append(path)
        written += self._export_binary(out)
        summary = json.dumps(self.summary(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic_write_bytes(out / RUN_JSON, summary.encode("utf-8"))
        written.append(out / RUN_JSON)
        return written

    def _export_binary(self, out: Path) -> list[Path]:
        written = []
        extractors = [r[0] for r in self._db.execute("SELECT DISTINCT extractor FROM features")]
        for ext in extractors:
            rows = self._db.execute(
                "SELECT f.image_id, f.dtype, f.vector FROM features f WHERE f.extractor=? "
                "ORDER BY f.image_id",
                (ext,),
            ).fetchall()
            vecs = np.stack(
                [np.frombuffer(r[2], np.dtype(_FLOAT_DTYPES[r[1]]).newbyteorder("<")) for r in rows]
            )
            path = out / f"features__{_safe_name(ext)}.npz"
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            atomic_write_via(path, lambda p, i=ids, v=vecs: _savez(p, image_id=i, vectors=v))
            written.append(path)
        stats = self.reference_stats()
        if stats:
            path = out / "reference_stats.npz"
            arrays = {}
            for ext, (mu, sigma) in stats.items():
                arrays[f"{_safe_name(ext)}__mu"] = mu
                arrays[f"{_safe_name(ext)}__sigma"] = sigma
            atomic_write_via(path, lambda p: _savez(p, **arrays))
            written.append(path)
        return written


# --------------------------------------------------------------------------- export layout

#: Exported table -> ("column:type ...", SQL). Types map to Arrow types for parquet.
_EXPORTS: dict[str, tuple[str, str]] = {
    "models": (
        "name:str spec_hash:str steps:int height:int width:int dtype:str spec_json:str",
        "SELECT name, spec_hash, steps, height, width, dtype, spec_json FROM models ORDER BY rowid",
    ),
    "hardware": (
        "label:str device_name:str driver:str libraries_json:str",
        "SELECT label, device_name, driver, libraries_json FROM hardware ORDER BY label",
    ),
    "latency": (
        "model:str hardware:str batch_size:int warmup:int reps:int mean_s:float std_s:float "
        "p50_s:float p90_s:float p99_s:float peak_mem_bytes:int infeasible:bool",
        "SELECT model, hardware, batch_size, warmup, reps, mean_s, std_s, p50_s, p90_s, p99_s, "
        "peak_mem_bytes, infeasible FROM latency ORDER BY model, hardware, batch_size",
    ),
    "prompts": (
        "prompt_id:int text:str sha256:str",
        "SELECT id, text, sha256 FROM prompts ORDER BY id",
    ),
    "images": (
        "image_id:int model:str prompt_id:int seed_index:int seed:int path:str",
        "SELECT id, model, prompt_id, seed_index, seed, path FROM images ORDER BY id",
    ),
    "scores": (
        "image_id:int metric:str value:float",
        "SELECT image_id, metric, value FROM scores ORDER BY image_id, metric",
    ),
    "confidence": (
        "image_id:int scorer:str value:float",
        "SELECT image_id, scorer, value FROM confidences ORDER BY image_id, scorer",
    ),
    "external": (
        "light:str heavy:str r:float d:float metric:str value:float",
        "SELECT light, heavy, r, d, metric, value FROM external ORDER BY rowid",
    ),
}


# --------------------------------------------------------------------------- module helpers


def _check_metric_id(metric_id: str) -> str:
    if not isinstance(metric_id, str) or not metric_id.strip():
        raise HadisError(f"Metric id {metric_id!r} is empty; use '<scorer>:<checkpoint>'.")
    return metric_id


def _check_scorer(scorer: str) -> str:
    if not isinstance(scorer, str) or not scorer.strip():
        raise HadisError(f"Scorer or extractor id {scorer!r} is empty.")
    return scorer


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _savez(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _atomic_csv(path: Path, columns: list[str], rows: list[tuple]) -> None:
    def write(tmp: Path) -> None:
        # floats are written with repr(), which round-trips exactly.
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(rows)

    atomic_write_via(path, write)


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow is optional: imported only when parquet is asked for."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise HadisError(
            "Parquet export needs pyarrow; install it with pip install 'hadis-profile[parquet]'."
        ) from None
    return pa, pq


def _atomic_parquet(path: Path, columns: list[str], types: list[str], rows: list[tuple]) -> None:
    pa, pq = _pyarrow()
    arrow = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(c, arrow[t]) for c, t in zip(columns, types, strict=True)])
    data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    table = pa.Table.from_arrays(
        [pa.array(list(col), type=f.type) for col, f in zip(data, schema, strict=True)],
        schema=schema,
    )
    atomic_write_via(path, lambda tmp: pq.write_table(table, tmp))
