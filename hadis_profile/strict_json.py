"""Strict, bounded JSON: what may reach a parser, and what counts as a JSON value.

Python's ``json`` is permissive in ways a file anyone can edit must not be: it
reads ``NaN`` and ``Infinity``, keeps the last of two equal keys (another parser
may keep the first, so two readers would see different documents), recurses
once per nesting level (a 100,000-deep array raises ``RecursionError``), and
converts integers of any length (Python refuses more than 4,300 digits with a
``ValueError``). :func:`parse_json` refuses each of these with one sentence, and
bounds the work before any of it is done. :func:`check_json_value` applies the
same limits to a document built in memory (a dict handed to a library call),
so a value that would not survive a round trip through a file is refused too.

The limits are far above what the files this package reads hold (a table of
1,000 rows is about 1 MB, at most 6 levels deep, with integers of a few digits).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from hadis_profile.errors import HadisError

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (the table format uses 6 levels)."""

MAX_INT_DIGITS = 30
"""Most digits in an integer (batch sizes and byte counts have at most 20)."""

MAX_NUMBER_CHARS = 64
"""Longest number literal in a file (a float's shortest repr has at most 24 characters)."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Duplicated(dict):
    """An object whose text repeated a key (kept only until the path is reported)."""

    duplicate: str = ""


def describe(value: Any, limit: int = 40) -> str:
    """A short, single-line, ASCII rendering of a JSON value for a message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    except (TypeError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_path(parts: tuple | list, root: str = "") -> str:
    """``payload.rows[3].max_batch``; keys that are not short plain names are quoted (and
    cut to 40 characters), so a message stays one short line whatever the document holds."""
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", part):
            out += f".{part}" if out else part
        else:
            out += f"[{describe(part)}]"
    return out or "the top level"


def _int_hook(source: str):
    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise HadisError(
                f"{source} holds an integer of {len(text.lstrip('-'))} digits "
                f"(at most {MAX_INT_DIGITS} are accepted)."
            )
        return int(text)

    return parse_int


def _float_hook(source: str):
    def parse_float(text: str) -> float:
        if len(text) > MAX_NUMBER_CHARS:
            raise HadisError(
                f"{source} holds a number written with {len(text)} characters "
                f"(at most {MAX_NUMBER_CHARS} are accepted)."
            )
        value = float(text)
        if not math.isfinite(value):
            raise HadisError(f"{source} holds the number {text}, which is out of range.")
        return value

    return parse_float


def _refuse_constant(source: str):
    def parse_constant(name: str) -> Any:
        raise HadisError(f"{source} contains {name}, which is not JSON (use null).")

    return parse_constant


def _pairs_hook(seen: list[bool]):
    def object_pairs(pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        keys: set[str] = set()
        marked = _Duplicated(obj)
        for key, _ in pairs:
            if key in keys:
                marked.duplicate = key
                break
            keys.add(key)
        seen[0] = True
        return marked

    return object_pairs


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, strings skipped (linear, no recursion)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def parse_json(data: bytes | str, source: str = "<memory>") -> Any:
    """Parse strict JSON within the limits above; any problem is one HadisError sentence.

    Refused: an empty document, bytes that are not UTF-8 (a byte order mark
    included), invalid JSON, nesting deeper than :data:`MAX_DEPTH`, an integer
    longer than :data:`MAX_INT_DIGITS` digits, a number literal longer than
    :data:`MAX_NUMBER_CHARS` or out of the float range, ``NaN``/``Infinity``, an
    escaped unpaired surrogate (``"\\ud800"``, not Unicode), and an object that
    repeats a key (the message names its JSON path).
    """
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            raise HadisError(f"{source} starts with a byte order mark, which JSON does not allow.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HadisError(f"{source} is not UTF-8 text (byte {e.start} is invalid).") from None
    else:
        text = data
    if not text.strip():
        raise HadisError(f"{source} is empty.")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise HadisError(
            f"{source} nests arrays and objects {depth} levels deep "
            f"(at most {MAX_DEPTH} are accepted)."
        )
    seen = [False]
    try:
        doc = json.loads(
            text,
            parse_int=_int_hook(source),
            parse_float=_float_hook(source),
            parse_constant=_refuse_constant(source),
            object_pairs_hook=_pairs_hook(seen),
        )
    except json.JSONDecodeError as e:
        msg = f"{source} is not valid JSON (line {e.lineno}, column {e.colno})."
        raise HadisError(msg) from None
    except RecursionError:  # only if MAX_DEPTH were raised past the interpreter's limit
        raise HadisError(f"{source} nests arrays and objects too deeply.") from None
    if seen[0] or _SURROGATE_ESCAPE.search(text) or not (text.isascii() or _is_unicode(text)):
        check_json_value(doc, source)  # names the repeated key or the lone surrogate's path
    return doc


def check_json_value(value: Any, source: str = "<memory>") -> None:
    """Refuse anything a JSON file could not hold, or that :func:`parse_json` would refuse.

    Allowed: dicts with string keys, lists, strings, booleans, None, integers of at
    most :data:`MAX_INT_DIGITS` digits and finite floats, nested at most
    :data:`MAX_DEPTH` deep. Iterative, so any depth gives a sentence, not a
    ``RecursionError``.
    """
    limit = 10**MAX_INT_DIGITS
    stack: list[tuple[Any, tuple, int]] = [(value, (), 0)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                _too_deep(source, path)
            if isinstance(v, _Duplicated):
                raise HadisError(
                    f"{source} repeats the key {json.dumps(v.duplicate, ensure_ascii=True)} "
                    f"in one object at {json_path(path)}, so readers could disagree on its value."
                )
            for k, item in v.items():
                if not isinstance(k, str):
                    raise HadisError(
                        f"{source} has a key {describe(k)} at {json_path(path)}; "
                        "JSON keys are strings."
                    )
                if not (k.isascii() or _is_unicode(k)):
                    _surrogate(source, path)
                stack.append((item, (*path, k), depth + 1))
        elif isinstance(v, list):
            if depth >= MAX_DEPTH:
                _too_deep(source, path)
            stack.extend((item, (*path, i), depth + 1) for i, item in enumerate(v))
        elif isinstance(v, float):
            if not math.isfinite(v):
                what = "NaN" if math.isnan(v) else "an infinity"
                raise HadisError(
                    f"{source} holds {what} at {json_path(path)}, which JSON cannot represent."
                )
        elif isinstance(v, int) and not isinstance(v, bool):
            if not -limit < v < limit:
                raise HadisError(
                    f"{source} holds an integer of more than {MAX_INT_DIGITS} digits "
                    f"at {json_path(path)}."
                )
        elif isinstance(v, str):
            if not (v.isascii() or _is_unicode(v)):
                _surrogate(source, path)
        elif not (v is None or isinstance(v, bool)):
            raise HadisError(
                f"{source} holds a Python {type(v).__name__} at {json_path(path)}, "
                "which is not a JSON value."
            )


def _is_unicode(text: str) -> bool:
    """False for a string holding an unpaired surrogate (JSON's "\\ud800" escape allows one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate(source: str, path: tuple) -> None:
    raise HadisError(
        f"{source} holds a string with an unpaired surrogate at or under {json_path(path)}, "
        "which is not valid Unicode."
    )


def _too_deep(source: str, path: tuple) -> None:
    raise HadisError(
        f"{source} nests arrays and objects more than {MAX_DEPTH} levels deep "
        f"(at {json_path(path[:8])}...)."
    )
