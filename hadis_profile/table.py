"""The versioned cascade-table artifact (``table.json``): hash, atomic write, load.

The table is what crosses from the offline phase into production, so it is
self-describing (format + schema version), tamper-evident (sha256 over a
canonical serialisation of the payload) and loaded with one clear sentence on
any problem. This module stays numpy/stdlib-only because ``resolve`` imports it;
``jsonschema`` is imported only by :func:`validate_document`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hadis_profile import __version__
from hadis_profile.errors import HadisError
from hadis_profile.fileio import atomic_write_text, read_bytes
from hadis_profile.fileio import canonical_json as _canonical_json

FORMAT = "hadis-profile/cascade-table"
SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).parent / "schema" / "table.schema.json"

REQUIRED_TOP = ("format", "schema_version", "tool_version", "created_at", "sha256", "payload")
REQUIRED_PAYLOAD = ("provenance", "models", "router", "rows")
REQUIRED_ROW = (
    "light",
    "heavy",
    "kind",
    "r",
    "d",
    "router_threshold",
    "confidence_threshold",
    "fractions",
    "quality",
    "gpu_s_per_query",
    "latency_s",
)
REQUIRED_FRACTIONS = ("direct", "escalated", "light", "load_light", "load_heavy")


def canonical_json(payload: Any) -> str:
    """The one serialisation the hash is taken over (sorted keys, no NaN, compact)."""
    try:
        return _canonical_json(payload)
    except ValueError as e:
        raise HadisError(f"The table payload contains a NaN or infinity ({e}).") from None
    except TypeError as e:
        raise HadisError(f"The table payload holds a value JSON cannot represent ({e}).") from None


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


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


@dataclass
class CascadeTable:
    """A loaded, verified table. ``payload`` is the plain JSON payload."""

    document: dict
    source: str = "<memory>"

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
        check_document(document, source)
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


def _major(version: str) -> int:
    try:
        return int(str(version).split(".", 1)[0])
    except ValueError:
        msg = f"The schema_version '{version}' is not of the form MAJOR.MINOR."
        raise HadisError(msg) from None


def check_document(doc: Any, source: str = "<memory>") -> None:
    """Structural checks and the hash; each failure is one sentence naming the problem."""
    if not isinstance(doc, dict):
        raise HadisError(f"{source} is not a cascade table (expected a JSON object).")
    if doc.get("format") != FORMAT:
        raise HadisError(
            f"{source} is not a cascade table: its format is {doc.get('format')!r}, "
            f"expected {FORMAT!r}."
        )
    for key in REQUIRED_TOP:
        if key not in doc:
            raise HadisError(f"{source} is missing the field '{key}'.")
    if _major(doc["schema_version"]) > _major(SCHEMA_VERSION):
        raise HadisError(
            f"{source} has schema version {doc['schema_version']}, newer than this "
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
    if "quality_metric" not in payload["provenance"]:
        raise HadisError(f"{source} is missing the field 'payload.provenance.quality_metric'.")
    for i, row in enumerate(payload["rows"]):
        for key in REQUIRED_ROW:
            if key not in row:
                raise HadisError(f"{source}: row {i} is missing the field '{key}'.")
        for key in REQUIRED_FRACTIONS:
            if key not in row["fractions"]:
                raise HadisError(f"{source}: row {i} is missing the field 'fractions.{key}'.")
        for name in (row["light"], row["heavy"]):
            if name is not None and name not in payload["models"]:
                raise HadisError(f"{source}: row {i} names model '{name}', which has no profile.")


def load_table(path: str | os.PathLike) -> CascadeTable:
    """Read and verify a table file; any problem is one HadisError sentence."""
    p = Path(path)
    text = read_bytes(p, "table file").decode("utf-8", errors="replace")
    return CascadeTable.from_document(parse_json(text, str(p)), str(p))


def _refuse_constant(name: str) -> Any:
    raise HadisError(f"contains {name}, which a cascade table never holds (use null)")


def parse_json(text: str, source: str = "<memory>") -> Any:
    """Strict JSON: NaN and Infinity are refused, not silently read as floats."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        msg = f"{source} is not valid JSON (line {e.lineno}, column {e.colno})."
        raise HadisError(msg) from None
    except HadisError as e:
        raise HadisError(f"{source} {e}.") from None


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


def jsonable(obj: Any) -> Any:
    """Plain JSON values from numpy scalars/arrays and tuples; NaN and infinity become None.

    The compiler builds payloads from numpy results; converting here, once, is
    what guarantees the "no NaN anywhere" rule of the format.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _schema() -> dict:
    try:
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except OSError:
        msg = f"The table schema {SCHEMA_PATH} is missing; reinstall hadis-profile."
        raise HadisError(msg) from None


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"


def _semantic_checks(doc: dict, source: str) -> None:
    """What JSON Schema cannot say: cross-field rules the resolver relies on."""
    payload = doc["payload"]
    metric = payload["provenance"]["quality_metric"]
    models = payload["models"]
    if metric not in payload["provenance"].get("metrics", {metric: None}):
        raise HadisError(
            f"{source}: the quality metric '{metric}' is not among provenance.metrics."
        )
    singles: dict[str, int] = {}
    previous = -math.inf
    for i, row in enumerate(payload["rows"]):
        if metric not in row["quality"]:
            raise HadisError(f"{source}: row {i} has no value for the quality metric '{metric}'.")
        if row["kind"] == "cascade" and row["quality"][metric] is None:
            raise HadisError(f"{source}: cascade row {i} has a null '{metric}'.")
        if row["gpu_s_per_query"] < previous:
            raise HadisError(f"{source}: rows are not sorted by gpu_s_per_query (row {i}).")
        previous = row["gpu_s_per_query"]
        if row["kind"] == "single":
            singles[row["light"]] = singles.get(row["light"], 0) + 1
        elif models[row["light"]]["order"] >= models[row["heavy"]]["order"]:
            raise HadisError(
                f"{source}: row {i} cascades '{row['light']}' into '{row['heavy']}', "
                "which is not more expensive."
            )
    for name in models:
        if singles.get(name, 0) != 1:
            raise HadisError(
                f"{source} has {singles.get(name, 0)} single-model rows for '{name}', expected 1."
            )


def validate_document(doc: Any, source: str = "<memory>") -> None:
    """Full validation for `hadis-profile validate` and CI: structure + hash, JSON Schema
    (draft 2020-12, shipped in the package) and cross-field rules. One sentence on failure.

    jsonschema is imported here only, so ``load_table`` (the serving path) stays light.
    """
    check_document(doc, source)
    import jsonschema  # lazy: heavy, and not needed to load a table

    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        raise HadisError(
            f"{source} does not match the table schema at {_json_path(error.absolute_path)}: "
            f"{message}."
        )
    _semantic_checks(doc, source)


def validate_file(path: str | os.PathLike) -> CascadeTable:
    """Load ``path`` and run :func:`validate_document` on it."""
    table = load_table(path)
    validate_document(table.document, table.source)
    return table
