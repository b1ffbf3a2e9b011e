"""The store's core: the connection, WAL, schema upgrades, transactions, meta and provenance.

A run lives in ``outputs/<run-id>/``:

* ``store.sqlite`` in WAL mode, so a reader (a progress view, an export) never
  blocks the profiler, and a crash loses at most the unit of work in flight:
  writers commit one transaction per finished unit of work.
* ``run.json``, a human-readable snapshot of the provenance, rewritten
  atomically whenever it changes (after the transaction that changed it
  commits). The database is the source of truth; ``run.json`` is for people
  and for ``git diff``.

:class:`StoreCore` is the base every record mixin builds on; the composed
:class:`~hadis_profile.store.RunStore` supplies :meth:`StoreCore.summary`.

Opening modes:

* ``open(root, readonly=True)``: what every command that only reads uses
  (``export``, ``pareto``, ``simulate --run``, ``router fit --dry-run``...).
  SQLite itself refuses to create a missing store, to write a schema into an
  empty file or to run any write (:func:`_connect_readonly`), and no upgrade
  is attempted: a store that needs one is refused with a sentence pointing at
  ``hadis-profile migrate RUN``.
* ``open(root)`` / ``create(root)``: read-write, upgrading an old schema.
  ``write_lock="run"`` (any writer's name) first takes the run folder's
  exclusive lock (:mod:`hadis_profile.store.lock`), held until :meth:`close`;
  a second writer is refused with the holder's PID and host.

Any SQLite failure of a write (a full disk, a read-only file) is one
:class:`~hadis_profile.errors.HadisError` sentence naming the store.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from hadis_profile import __version__
from hadis_profile.errors import HadisError, InputError
from hadis_profile.fileio import atomic_write_bytes, canonical_json
from hadis_profile.store.lock import RunLock
from hadis_profile.store.schema import MIGRATIONS, SCHEMA_VERSION, schema_version
from hadis_profile.store.values import decode_json

DB_NAME = "store.sqlite"
RUN_JSON = "run.json"
RUN_FORMAT = "hadis-profile/run"
#: Seconds a writer waits for another's lock before "database is locked": the
#: workers of a multi-device run write one store from several processes.
BUSY_TIMEOUT_S = 60.0

_S = TypeVar("_S", bound="StoreCore")


def now_utc() -> str:
    """The timestamps the store records: UTC, seconds, ISO 8601 with ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lock(root: Path, write_lock: bool | str) -> RunLock | None:
    """The folder's write lock, taken, when ``write_lock`` asks for it (True or a writer's name)."""
    if not write_lock:
        return None
    return RunLock(root, write_lock if isinstance(write_lock, str) else "").acquire()


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot create, initialise or change the store.

    ``mode=rw`` never creates a missing file and ``query_only`` makes SQLite
    refuse every write statement; unlike ``mode=ro`` it lets SQLite remove its
    ``-wal``/``-shm`` files on close, so reading leaves the folder as it was. A
    store this user cannot write is opened ``mode=ro``.
    """
    base = "file:" + urllib.parse.quote(str(path.resolve()))
    try:
        db = sqlite3.connect(
            base + "?mode=rw", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
    except sqlite3.OperationalError:
        db = sqlite3.connect(
            base + "?mode=ro", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
    db.execute("PRAGMA query_only=ON")
    return db


def _write_failure(path: Path, error: sqlite3.Error) -> HadisError:
    """One sentence for a write SQLite refused (full disk, read-only file, busy)."""
    text = str(error).rstrip(".")
    if "disk is full" in text or "database or disk is full" in text:
        return HadisError(f"Cannot write run store {path}: the disk is full.")
    if "readonly" in text or "read-only" in text:
        return HadisError(f"Cannot write run store {path}: it is read-only ({text}).")
    if "locked" in text or "busy" in text:
        return HadisError(
            f"Cannot write run store {path}: another process kept it locked for more than "
            f"{BUSY_TIMEOUT_S:g} s."
        )
    return HadisError(f"Cannot write run store {path}: {text}.")


class StoreCore:
    """Connection, transactions and meta of one run's store (see the module docstring).

    Every write method is its own transaction unless called inside
    :meth:`transaction`, which groups several writes into one unit of work.
    """

    def __init__(self, root: Path, db: sqlite3.Connection, *, readonly: bool = False) -> None:
        self.root = root
        self._db = db
        self._depth = 0
        self._run_json_dirty = False
        self.readonly = readonly
        #: The schema version this open upgraded the store from (None: it was current).
        self.upgraded_from: int | None = None
        self._lock: RunLock | None = None

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls: type[_S],
        root: str | Path,
        provenance: dict | None = None,
        *,
        run_id: str | None = None,
        exist_ok: bool = False,
        write_lock: bool | str = False,
    ) -> _S:
        """Start a new run in ``root`` (the run folder, e.g. ``outputs/<run-id>``).

        ``run_id`` defaults to the folder name; pass it when building in a
        temporary folder that will be renamed. With ``exist_ok`` an existing run
        is opened (and its provenance updated) so an interrupted profile resumes.
        ``write_lock`` takes the folder's lock first (see the module docstring).
        """
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from hadis_profile.fileio import os_error

            raise os_error(root, e, "create the run folder") from None
        lock = _lock(root, write_lock)
        try:
            if (root / DB_NAME).exists():
                if not exist_ok:
                    raise HadisError(
                        f"A run already exists in {root}; resume it, or reset it to start afresh."
                    )
                store = cls.open(root, write_lock=write_lock)
                if provenance:
                    store.update_provenance(provenance)
                return store
            store = cls._connect(root)
            store._lock = lock
            lock = None  # the store releases it on close
            try:
                store._migrate()
                with store.transaction():
                    store._set_meta("run_id", run_id or root.name)
                    store._set_meta("created_at", now_utc())
                    store._set_meta("tool_version", __version__)
                    store._set_meta("provenance", canonical_json(provenance or {}))
                    store._run_json_dirty = True
            except BaseException:
                store.close()
                raise
            return store
        finally:
            if lock is not None:
                lock.release()

    @classmethod
    def open(
        cls: type[_S], root: str | Path, *, readonly: bool = False, write_lock: bool | str = False
    ) -> _S:
        """Open an existing run: read-only, or read-write upgrading an older schema.

        See the module docstring for ``readonly`` and ``write_lock``.
        """
        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise InputError(f"No run store found in {root} (expected {root / DB_NAME}).")
        if readonly and write_lock:
            raise ValueError("a read-only store takes no write lock")
        lock = _lock(root, write_lock)
        try:
            store = cls._connect(root, readonly=readonly)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        try:
            if readonly:
                store._check_readable()
            else:
                store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _connect(cls: type[_S], root: Path, *, readonly: bool = False) -> _S:
        path = root / DB_NAME
        try:
            if readonly:
                db = _connect_readonly(path)
            else:
                # isolation_level=None: we issue BEGIN/COMMIT ourselves so that a
                # transaction is exactly one unit of work, never implicit.
                db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # durable at commit boundaries in WAL
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise HadisError(f"Cannot open run store {path}: {e}.") from None
        return cls(root, db, readonly=readonly)

    def close(self) -> None:
        """Close the connection (SQLite checkpoints and removes the WAL on last close),
        then give back the write lock if this store holds it."""
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- schema

    def schema_version(self) -> int:
        return schema_version(self._db)

    def _version(self) -> int:
        try:
            return schema_version(self._db)
        except (sqlite3.DatabaseError, ValueError) as e:
            raise InputError(f"{self.root / DB_NAME} is not a readable run store: {e}.") from None

    def _check_readable(self) -> None:
        """A read-only store must already be a run store of this schema version."""
        version = self._version()
        path = self.root / DB_NAME
        if version == 0:
            raise InputError(f"{path} is empty or not a run store; there is nothing to read.")
        if version < SCHEMA_VERSION:
            raise HadisError(
                f"Run store {path} has schema version {version}, older than {SCHEMA_VERSION}; "
                f"upgrade it once with 'hadis-profile migrate {self.root}' (this command only "
                "reads)."
            )
        self._check_not_newer(version)

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise HadisError(
                f"Run store {self.root / DB_NAME} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this hadis-profile {__version__} understands; upgrade "
                "hadis-profile to read it."
            )

    def _migrate(self) -> None:
        version = self._version()
        self._check_not_newer(version)
        if 0 < version < SCHEMA_VERSION:
            self.upgraded_from = version
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
    def transaction(self: _S) -> Iterator[_S]:
        """One unit of work: everything inside commits together or not at all.

        Nested use becomes a SAVEPOINT, so an inner failure that the caller
        catches rolls back only the inner block. A SQLite error of the unit
        (full disk...) is rolled back and raised as one :class:`HadisError`.
        """
        db = self._db
        if db is None:
            raise HadisError("The run store is closed.")
        if self.readonly:
            raise HadisError(f"The run store {self.root / DB_NAME} is open read-only.")
        outer = self._depth == 0
        name = f"sp{self._depth}"
        try:
            db.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
        except sqlite3.Error as e:
            raise _write_failure(self.root / DB_NAME, e) from None
        self._depth += 1
        try:
            yield self
        except BaseException as e:
            self._depth -= 1
            # SQLite may already have rolled back on some errors (e.g. disk full).
            with contextlib.suppress(sqlite3.Error):
                if outer:
                    self._run_json_dirty = False
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                else:
                    db.execute(f"ROLLBACK TO {name}")
                    db.execute(f"RELEASE {name}")
            if outer and isinstance(e, sqlite3.OperationalError):
                raise _write_failure(self.root / DB_NAME, e) from None
            raise
        self._depth -= 1
        if outer:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                raise _write_failure(self.root / DB_NAME, e) from None
            if self._run_json_dirty:
                self._write_run_json()
        else:
            db.execute(f"RELEASE {name}")

    @contextlib.contextmanager
    def _decoding(self, what: str) -> Iterator[None]:
        """Read ``what`` from the store: a value SQLite kept but numpy cannot use (text in
        a number column: SQLite columns are not strictly typed) is one sentence."""
        try:
            yield
        except (ValueError, TypeError) as e:
            raise InputError(
                f"The run store {self.root / DB_NAME} holds {what} that cannot be read ({e})."
            ) from None

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
        return decode_json(self._meta("provenance", "{}") or "{}", "provenance")

    def update_provenance(self, values: dict) -> None:
        """Merge ``values`` into the run's provenance (e.g. on resume)."""
        with self.transaction():
            merged = {**self.provenance, **values}
            self._set_meta("provenance", canonical_json(merged))
            self._run_json_dirty = True

    def summary(self) -> dict:
        """The run.json payload; the composed store knows what every record holds."""
        raise NotImplementedError

    def _write_run_json(self) -> None:
        self._run_json_dirty = False
        text = json.dumps(self.summary(), indent=2, sort_keys=True, allow_nan=False)
        atomic_write_bytes(self.root / RUN_JSON, (text + "\n").encode("utf-8"))
