"""The run store: one profiling run as a SQLite database plus a ``run.json`` summary.

This is the durable contract between measuring (``run``, ``import``) and
compiling (``pareto``); see :mod:`hadis_profile.store.core` for the files of a
run and their guarantees. The package holds one concept per module:

* ``schema``: the SQLite layout, its version and the migrations that build it.
* ``values``: checking and encoding values before they reach SQLite.
* ``core``: connection, WAL, schema upgrades, transactions, meta, provenance,
  read-only and write-locked opening.
* ``lock``: one writer per run folder (``write_lock``; ``RunLocked`` names the holder).
* ``catalogue``, ``latency``, ``images``, ``bulk``, ``routing``: the records,
  one mixin each, composed into :class:`RunStore` in ``run_store``.
* ``measurements``: assembling :class:`~hadis_profile.measurements.Measurements`.
* ``export``: CSV / parquet / ``.npz`` export.

Only stdlib ``sqlite3`` and numpy here: the compiler and the serving side must
not pay for pandas or torch.
"""

from __future__ import annotations

from hadis_profile.store.catalogue import spec_hash_of
from hadis_profile.store.core import BUSY_TIMEOUT_S, DB_NAME, RUN_FORMAT, RUN_JSON
from hadis_profile.store.export import EXPORT_FORMATS
from hadis_profile.store.lock import LOCK_NAME, RunLocked, write_lock
from hadis_profile.store.run_store import RunStore
from hadis_profile.store.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "BUSY_TIMEOUT_S",
    "DB_NAME",
    "EXPORT_FORMATS",
    "LOCK_NAME",
    "MIGRATIONS",
    "RUN_FORMAT",
    "RUN_JSON",
    "SCHEMA_VERSION",
    "RunLocked",
    "RunStore",
    "spec_hash_of",
    "write_lock",
]
