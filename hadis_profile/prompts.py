"""Prompt sets: load, clean, de-duplicate and sample prompts, with a stable hash.

A profile's quality numbers are only comparable across runs on the same prompts
in the same order, so a :class:`PromptSet` carries the sha256 that the run
store records (:func:`prompt_set_hash`, identical to
``RunStore.prompt_set_hash()``).

Formats, chosen by extension:

* ``.txt``  -- one prompt per line (``\\n``, ``\\r\\n`` or ``\\r``).
* ``.tsv``  -- tab-separated with a header row and **no quoting** (PartiPrompts
  contains literal ``"`` characters that a quoting parser would eat).
* ``.csv``  -- comma-separated with a header row, standard ``"`` quoting.
* ``.jsonl`` / ``.ndjson`` -- one JSON object per line (or a bare JSON string).
* ``.parquet`` -- a string column (needs ``pyarrow``, imported only here).

``column`` selects the table column or the JSON key; by default the first of
``prompt``/``text`` (case-insensitive) is used. Processing order: read, strip
whitespace, drop blanks, de-duplicate (first occurrence kept), ``limit`` (keep
the first N), then ``sample`` (N of those at random with ``seed``, kept in file
order).

Bounds (:mod:`hadis_profile.limits`): a file of at most
:data:`~hadis_profile.limits.MAX_PROMPT_FILE_BYTES`, at most
:data:`~hadis_profile.limits.MAX_PROMPTS` records, each prompt at most
:data:`~hadis_profile.limits.MAX_PROMPT_CHARS` characters.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadis_profile.errors import InputError, ParameterError
from hadis_profile.fileio import read_bytes, sha256_text
from hadis_profile.limits import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_FILE_BYTES,
    MAX_PROMPTS,
    at_most,
    check_file_size,
)

__all__ = [
    "DEFAULT_COLUMNS",
    "SUPPORTED_EXTENSIONS",
    "PromptSet",
    "load_prompts",
    "prompt_set_hash",
]

SUPPORTED_EXTENSIONS = (".txt", ".tsv", ".csv", ".jsonl", ".ndjson", ".parquet")
#: Column (or JSON key) names tried, case-insensitively and in order, when none is given.
DEFAULT_COLUMNS = ("prompt", "text")
_TABULAR = (".tsv", ".csv", ".jsonl", ".ndjson", ".parquet")


def prompt_set_hash(texts: Sequence[str]) -> str:
    """sha256 (hex) identifying an ordered prompt list.

    Defined as ``sha256("\\n".join(sha256_hex(utf8(t)) for t in texts))`` -- the
    newline-joined per-prompt hashes, which cannot collide the way joining raw
    prompts (which may contain newlines) could. Order matters; the empty list
    hashes the empty string. Equal to ``RunStore.prompt_set_hash()`` for the
    same prompts.
    """
    return sha256_text("\n".join(sha256_text(t) for t in texts))


@dataclass(frozen=True)
class PromptSet:
    """An ordered, cleaned list of prompts plus where it came from and what was dropped."""

    texts: tuple[str, ...]
    source: Path | None = None
    column: str | None = None
    n_read: int = 0  # records read (lines/rows), blanks included
    n_blank: int = 0  # blank after stripping whitespace, dropped
    n_duplicates: int = 0  # repeats of an earlier prompt, dropped
    n_unique: int = 0  # after de-duplication, before limit/sample
    limit: int | None = None
    sample: int | None = None
    seed: int | None = None
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", prompt_set_hash(self.texts))

    @classmethod
    def from_texts(cls, texts: Sequence[str], source: Path | None = None) -> PromptSet:
        """Wrap prompts already in memory (no cleaning; the hash covers them as given)."""
        texts = tuple(texts)
        return cls(texts=texts, source=source, n_read=len(texts), n_unique=len(set(texts)))

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __getitem__(self, index: int) -> str:
        return self.texts[index]


# ---------------------------------------------------------------------- reading


def _decode(path: Path, encoding: str, errors: str) -> str:
    data = read_bytes(path, "prompt file", MAX_PROMPT_FILE_BYTES)
    if not data:
        raise InputError(f"Prompt file {path} is empty.")
    try:
        text = data.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise ParameterError(
            "encoding",
            f"Prompt file {path} is not valid {encoding} (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); choose another {{param}}, or have undecodable bytes replaced or ignored.",
        ) from None
    return text[1:] if text.startswith("\ufeff") else text  # drop a UTF-8 byte-order mark


def _check_codec(encoding: str, errors: str) -> None:
    """Refuse an unknown encoding or error handler before reading anything."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ParameterError(
            "encoding", f"{{param}} {encoding!r} is not a known text encoding."
        ) from None
    try:
        codecs.lookup_error(errors)
    except LookupError:
        raise ParameterError(
            "errors", f"{{param}} {errors!r} is not an error handler (strict, replace or ignore)."
        ) from None


def _lines(text: str) -> list[str]:
    """Split on \\n, \\r\\n or \\r only (``str.splitlines`` also splits on U+2028 etc.)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return lines


def _pick_column(path: Path, columns: Sequence[str], column: str | None) -> str:
    """The requested column (exact, else case-insensitive) or the default one."""
    if column is not None:
        if column in columns:
            return column
        folded = [c for c in columns if c.lower() == column.lower()]
        if len(folded) == 1:
            return folded[0]
        raise ParameterError(
            "column",
            f"{path.name} has no {{param}} {column!r}; its columns are: "
            f"{', '.join(map(repr, columns))}.",
        )
    for wanted in DEFAULT_COLUMNS:
        for c in columns:
            if c.lower() == wanted:
                return c
    raise ParameterError(
        "column",
        f"{path.name} has no 'prompt' or 'text' column; choose one with {{param}} from: "
        f"{', '.join(map(repr, columns))}.",
    )


def _read_delimited(path: Path, text: str, column: str | None, tsv: bool) -> tuple[list, str]:
    if tsv:
        rows = (line.split("\t") for line in _lines(text))
    else:
        rows = csv.reader(io.StringIO(text, newline=""))
    try:
        return _delimited_values(path, rows, column, tsv)
    except csv.Error as e:  # a NUL byte, a field over csv's size limit, a stray quote
        raise InputError(f"{path.name} is not a readable CSV file ({e}).") from None


def _delimited_values(path: Path, rows: Any, column: str | None, tsv: bool) -> tuple[list, str]:
    header: list[str] | None = None
    idx = 0
    name = ""
    values: list[str | None] = []
    for lineno, row in enumerate(rows, start=1):
        if header is None:
            header = [h.strip() for h in row]
            if not any(header):
                raise InputError(
                    f"{path.name} starts with an empty line; line 1 must be the header."
                )
            name = _pick_column(path, header, column)
            idx = header.index(name)
            continue
        if not row or row == [""]:
            values.append(None)  # a blank line
            continue
        if idx >= len(row):
            kind = "tab-separated fields" if tsv else "fields"
            raise InputError(
                f"{path.name} line {lineno} has {len(row)} {kind} but column {name!r} is "
                f"number {idx + 1}."
            )
        values.append(row[idx])
    if header is None:
        raise InputError(f"Prompt file {path} is empty.")
    return values, name


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "an object"


def _read_jsonl(path: Path, text: str, column: str | None) -> tuple[list, str | None]:
    values: list[str | None] = []
    key: str | None = None
    for lineno, line in enumerate(_lines(text), start=1):
        if not line.strip():
            values.append(None)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path.name} line {lineno} is not valid JSON ({e.msg}).") from None
        except (ValueError, RecursionError):  # a 5,000-digit number, [[[[... nested too deep
            raise InputError(
                f"{path.name} line {lineno} holds a number too long or lists nested too deep."
            ) from None
        if isinstance(obj, str) and column is None:
            values.append(obj)
            continue
        if not isinstance(obj, dict):
            raise InputError(
                f"{path.name} line {lineno} holds {_json_kind(obj)}; each line must be "
                "an object with a prompt field (or a bare string)."
            )
        if key is None or key not in obj:
            key = _pick_column(path, list(obj), column)
        value = obj[key]
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"{path.name} line {lineno}: {key!r} holds {_json_kind(value)}, not a string."
            )
        values.append(value)
    return values, key


def _read_parquet(path: Path, column: str | None) -> tuple[list, str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            "Reading .parquet prompt files needs pyarrow: pip install 'hadis-profile[parquet]'."
        ) from None
    import pyarrow as pa

    try:
        meta = pq.read_metadata(path)
        if meta.num_rows > MAX_PROMPTS:
            raise InputError(
                f"{path.name} has {meta.num_rows:,} rows, more than the limit of "
                f"{MAX_PROMPTS:,} prompts."
            )
        schema = pq.read_schema(path)
        name = _pick_column(path, schema.names, column)
        table = pq.read_table(path, columns=[name])
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path.name} is not a readable parquet file ({e}).") from None
    col = table.column(name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InputError(f"{path.name} column {name!r} holds {col.type}, not strings.")
    return col.to_pylist(), name


# ---------------------------------------------------------------------- loading


def load_prompts(
    path: str | Path,
    *,
    column: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    dedup: bool = True,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> PromptSet:
    """Load a prompt file into a cleaned :class:`PromptSet` (see the module docstring).

    ``encoding``/``errors`` are passed to ``bytes.decode``: HADIS's own prompt
    file, for instance, is read with ``encoding="ascii", errors="ignore"``.
    Every problem is a one-sentence :class:`HadisError`: an :class:`InputError`
    for a missing or unreadable file, a :class:`ParameterError` naming the
    argument that is wrong.
    """
    p = Path(path)
    ext = p.suffix.lower()
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise ParameterError(name, f"{{param}} must be at least 1 (got {value}).")
        if value is not None:
            at_most(name, value, MAX_PROMPTS, "prompts")
    _check_codec(encoding, errors)
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(
            f"Cannot read prompts from {p.name}: unsupported extension {p.suffix or '(none)'!r} "
            f"(supported: {', '.join(SUPPORTED_EXTENSIONS)})."
        )
    if column is not None and ext not in _TABULAR:
        raise ParameterError(
            "column", f"{{param}} applies only to {', '.join(_TABULAR)} files, not {p.name}."
        )
    if not p.exists():
        raise InputError(f"Prompt file {p} does not exist.")
    if not p.is_file():
        raise InputError(f"Prompt path {p} is not a file.")
    check_file_size(p, MAX_PROMPT_FILE_BYTES, "prompt file")

    chosen: str | None = None
    raw: list[Any]
    if ext == ".parquet":
        raw, chosen = _read_parquet(p, column)
    else:
        text = _decode(p, encoding, errors)
        if ext == ".txt":
            raw = list(_lines(text))
        elif ext in (".tsv", ".csv"):
            raw, chosen = _read_delimited(p, text, column, tsv=ext == ".tsv")
        else:
            raw, chosen = _read_jsonl(p, text, column)

    if len(raw) > MAX_PROMPTS:
        raise InputError(
            f"Prompt file {p} has {len(raw):,} records, more than the limit of {MAX_PROMPTS:,}."
        )
    cleaned = [v.strip() for v in raw if v is not None]
    long = next((i for i, v in enumerate(cleaned) if len(v) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise InputError(
            f"Prompt file {p} holds a prompt of {len(cleaned[long]):,} characters (prompt "
            f"{long + 1}), more than the limit of {MAX_PROMPT_CHARS:,}."
        )
    kept_nonblank = [v for v in cleaned if v]
    n_blank = len(raw) - len(kept_nonblank)
    if not kept_nonblank:
        why = " (only blank ones)" if raw else ""
        raise InputError(f"Prompt file {p} has no prompts{why}; there is nothing to profile.")
    unique = list(dict.fromkeys(kept_nonblank)) if dedup else kept_nonblank
    texts = unique[:limit] if limit is not None else unique
    if sample is not None:
        if sample > len(texts):
            scope = "the first" if len(texts) < len(unique) else "the"
            raise ParameterError(
                "sample",
                f"{{param}} {sample} is more than {scope} {len(texts)} prompts in {p.name}.",
            )
        picked = sorted(random.Random(seed).sample(range(len(texts)), sample))
        texts = [texts[i] for i in picked]
    return PromptSet(
        texts=tuple(texts),
        source=p,
        column=chosen,
        n_read=len(raw),
        n_blank=n_blank,
        n_duplicates=len(kept_nonblank) - len(unique),
        n_unique=len(unique),
        limit=limit,
        sample=sample,
        seed=seed if sample is not None else None,
    )
