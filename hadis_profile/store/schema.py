"""The run store's SQLite layout: the schema version and the migrations that build it.

The schema is only ever built by the migration registry (:data:`MIGRATIONS`),
so a fresh store and one migrated from an old version cannot drift apart:
``MIGRATIONS[v]`` upgrades a database at schema version ``v`` to ``v + 1``.
The store (:mod:`hadis_profile.store.core`) runs each step in its own
transaction and bumps ``meta.schema_version`` as the step's last statement, so
an interrupted upgrade resumes from the last finished step.

To change the layout: add ``_migrate_<v>_to_<v+1>``, register it, bump
:data:`SCHEMA_VERSION`, and extend ``tests/test_store.py``'s hand-made old database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

#: The schema version this code writes. Bump it together with a new migration.
SCHEMA_VERSION = 3


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the caller's transaction.

    ``executescript`` would COMMIT first, breaking the one-transaction-per-step
    guarantee of a migration; these scripts hold no ``;`` inside literals.
    """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


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


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """Keep what a latency point is made of: its raw per-call samples, its p95, both CUDA
    memory peaks, the median's interval and whether a time budget cut it short.

    Version-2 points have no samples; their new columns stay NULL (unknown).
    """
    _run_script(
        db,
        """
        ALTER TABLE latency ADD COLUMN p95_s REAL;
        ALTER TABLE latency ADD COLUMN peak_allocated_bytes INTEGER;
        ALTER TABLE latency ADD COLUMN peak_reserved_bytes INTEGER;
        ALTER TABLE latency ADD COLUMN ci_rel REAL;
        ALTER TABLE latency ADD COLUMN converged INTEGER;
        ALTER TABLE latency ADD COLUMN budget_cut INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE latency_samples (
            model TEXT NOT NULL,
            hardware TEXT NOT NULL,
            batch_size INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            seconds REAL NOT NULL,
            source TEXT NOT NULL,
            PRIMARY KEY (model, hardware, batch_size, seq)
        );
        """,
    )


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
}


def schema_version(db: sqlite3.Connection) -> int:
    """The version recorded in ``meta``; 0 for an empty file (no ``meta`` table yet)."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0
