"""The versioned cascade-table artifact (``table.json``): hash, atomic write, the one loader.

The table is what crosses from the offline phase into production, so it is
self-describing (format + schema version), tamper-evident (sha256 over a
canonical serialisation of the payload) and loaded by one strict loader:
:func:`load_table`, :func:`validate_file`, :func:`validate_document` and the
resolver all accept exactly the same documents. The hash detects accidents,
not attackers (anyone can recompute it), so every field is checked after the
hash matches too. Each refusal is one :class:`~hadis_profile.errors.HadisError`
sentence naming the JSON path. In order:

1. reading (a file): at most :data:`MAX_TABLE_BYTES`; UTF-8; bounded nesting,
   bounded numbers, no NaN, no repeated key (:mod:`hadis_profile.strict_json`);
2. JSON values only (a document built in memory gets the same limits);
3. the header: format, schema version (a newer major version asks for an
   upgrade), the payload's top-level fields;
4. the sha256 of the payload;
5. the JSON Schema ``schema/table.schema.json``, checked by hand-written stdlib
   code (:func:`hadis_profile.table_schema.check_structure`);
6. the cross-field rules and size limits (:func:`hadis_profile.table_schema.check_rules`).

A :class:`CascadeTable` is verified when it is made, so holding one means
holding a valid table. This module stays numpy/stdlib-only because ``resolve``
imports it; ``jsonschema`` is imported only by :func:`validate_document` and
:func:`validate_file`, which run it as a second opinion on step 5.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hadis_profile import __version__
from hadis_profile.errors import HadisError
from hadis_profile.fileio import atomic_write_text, canonical_json, read_bytes, sha256_text
from hadis_profile.strict_json import check_json_value, json_path, parse_json
from hadis_profile.table_schema import FORMAT, check_rules, check_structure

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).parent / "schema" / "table.schema.json"

MAX_TABLE_BYTES = 32 * 2**20
"""Largest ``table.json`` read (32 MiB; a table of 1,000 rows is about 0.5 MB). Parsed JSON
takes up to ~25x its size in memory, so this also bounds the loader's memory."""

REQUIRED_TOP = ("format", "schema_version", "tool_version", "created_at", "sha256", "payload")
REQUIRED_PAYLOAD = ("provenance", "models", "router", "rows")

__all__ = [
    "FORMAT",
    "MAX_TABLE_BYTES",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "CascadeTable",
    "check_document",
    "load_table",
    "make_document",
    "payload_hash",
    "validate_document",
    "validate_file",
    "write_table",
]


def payload_hash(payload: Any) -> str:
    """sha256 of the payload's canonical JSON (:func:`hadis_profile.fileio.canonical_json`)."""
    try:
        return sha256_text(canonical_json(payload))
    except (TypeError, ValueError) as e:
        check_json_value(payload, "The table payload")  # names the value and where it is
        raise HadisError(f"The table payload cannot be serialised ({e}).") from None


def make_document(payload: dict, *, created_at: str | None = None) -> dict:
    """Wrap a payload with its format header and hash."""
    if created_at is None:
        created_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "created_at": created_at,
        "sha256": payload_hash(payload),
        "payload": payload,
    }


@dataclass(frozen=True)
class CascadeTable:
    """A verified table (checked by :func:`check_document` when made). ``payload`` is plain JSON.

    Made by :func:`load_table`, :meth:`from_document` or ``CascadeTable(document)``;
    an invalid document raises :class:`~hadis_profile.errors.HadisError` instead.
    """

    document: dict
    source: str = "<memory>"

    def __post_init__(self) -> None:
        check_document(self.document, self.source)

    @property
    def payload(self) -> dict:
        return self.document["payload"]

    @property
    def rows(self) -> list[dict]:
        return self.payload["rows"]

    @property
    def models(self) -> dict[str, dict]:
        return self.payload["models"]

    @property
    def router(self) -> dict | None:
        return self.payload["router"]

    @property
    def provenance(self) -> dict:
        return self.payload["provenance"]

    @property
    def quality_metric(self) -> str:
        return self.provenance["quality_metric"]

    @property
    def sha256(self) -> str:
        return self.document["sha256"]

    @classmethod
    def from_document(cls, document: Any, source: str = "<memory>") -> CascadeTable:
        return cls(document, source)

    def to_frame(self) -> Any:
        """The rows as a pandas DataFrame, cheapest first (pandas imported here only).

        One column per row field; ``fractions`` flattened to ``fraction_direct``,
        ``fraction_escalated``, ``fraction_light``, ``fraction_load_light`` and
        ``fraction_load_heavy``; one column per quality metric, named by its id.
        """
        try:
            import pandas as pd
        except ImportError:
            raise HadisError(
                "CascadeTable.to_frame needs pandas; install it with "
                "pip install 'hadis-profile[frames]'."
            ) from None
        metrics = list(dict.fromkeys(m for r in self.rows for m in r["quality"]))
        records = []
        for r in self.rows:
            rec = {k: v for k, v in r.items() if k not in ("fractions", "quality")}
            rec.update({f"fraction_{k}": v for k, v in r["fractions"].items()})
            rec.update({m: r["quality"].get(m) for m in metrics})
            records.append(rec)
        return pd.DataFrame.from_records(records)


def check_document(doc: Any, source: str = "<memory>") -> None:
    """The one table check (steps 2-6 of the module doc); one sentence naming the problem."""
    check_json_value(doc, source)
    if not isinstance(doc, dict):
        raise HadisError(f"{source} is not a cascade table (expected a JSON object).")
    if doc.get("format") != FORMAT:
        raise HadisError(
            f"{source} is not a cascade table: its format is {_short(doc.get('format'))}, "
            f"expected {FORMAT!r}."
        )
    for key in REQUIRED_TOP:
        if key not in doc:
            raise HadisError(f"{source} is missing the field '{key}'.")
    version = doc["schema_version"]
    major = re.match(r"([0-9]{1,9})\.", version) if isinstance(version, str) else None
    if major is not None and int(major[1]) > int(SCHEMA_VERSION.split(".")[0]):
        raise HadisError(
            f"{source} has schema version {_short(version)}, newer than this "
            f"hadis-profile ({__version__}) understands ({SCHEMA_VERSION}); upgrade hadis-profile."
        )
    payload = doc["payload"]
    if not isinstance(payload, dict):
        raise HadisError(f"{source}: the payload is not a JSON object.")
    for key in REQUIRED_PAYLOAD:
        if key not in payload:
            raise HadisError(f"{source} is missing the field 'payload.{key}'.")
    if payload_hash(payload) != doc["sha256"]:
        raise HadisError(
            f"{source} fails its integrity check: the sha256 of its payload does not match; "
            "the file was modified after it was written."
        )
    check_structure(doc, source)
    check_rules(doc, source)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_table(path: str | os.PathLike) -> CascadeTable:
    """Read and verify a table file (the module doc's steps 1-6); any problem is one sentence."""
    p = Path(path)
    data = read_bytes(p, "table file", MAX_TABLE_BYTES)
    return CascadeTable(parse_json(data, str(p)), str(p))


def write_table(path: str | os.PathLike, document: dict) -> None:
    """Verify, then write atomically with a stable, diff-friendly layout."""
    check_document(document, str(path))
    try:
        text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise HadisError(f"Cannot serialise the table for {path}: {e}.") from None
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise HadisError(f"Cannot write {path}: {e.strerror or e}.") from None


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """The jsonschema validator of the shipped schema (built once; jsonschema imported here)."""
    import jsonschema  # lazy: heavy, and not needed to load a table

    try:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except OSError:
        msg = f"The table schema {SCHEMA_PATH} is missing; reinstall hadis-profile."
        raise HadisError(msg) from None
    return jsonschema.Draft202012Validator(schema)


def _check_with_jsonschema(doc: dict, source: str) -> None:
    """Step 5 again, by ``jsonschema`` (draft 2020-12) on the shipped schema file.

    :func:`check_document` already refused whatever this refuses (a test holds the
    two to the same verdicts); running both is what `hadis-profile validate` and CI
    add over loading.
    """
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(doc))
    if error is not None:
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        message = " ".join(message.split())
        raise HadisError(
            f"{source} does not match the table schema at "
            f"{json_path(tuple(error.absolute_path))}: {message}."
        )


def validate_document(doc: Any, source: str = "<memory>") -> None:
    """Full validation for `hadis-profile validate` and CI: the loader's checks, then
    ``jsonschema`` on the shipped schema as a second opinion. One sentence on failure.

    Accepts and refuses exactly what :func:`load_table` / :class:`CascadeTable` do.
    """
    CascadeTable(doc, source)
    _check_with_jsonschema(doc, source)


def validate_file(path: str | os.PathLike) -> CascadeTable:
    """:func:`load_table`, then the ``jsonschema`` second opinion of :func:`validate_document`."""
    table = load_table(path)
    _check_with_jsonschema(table.document, table.source)
    return table
