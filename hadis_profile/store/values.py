"""Checking and encoding values on their way into SQLite, and decoding them on the way out.

Every writer refuses NaN, infinities and empty ids with one sentence naming
what was wrong, because SQLite would store NaN as NULL and the compiler would
only find out much later. Vectors are stored as little-endian bytes with their
dtype name, so float32 feature vectors stay float32 (half the storage).

Reading trusts nothing either: a store is a file anyone can edit, so a JSON
column that does not parse, a blob of the wrong length or an unknown dtype is
one :class:`~hadis_profile.errors.InputError` sentence (:func:`decode_json`,
:func:`decode_vector`), not a ``ValueError`` from deep inside numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, InputError

#: dtype names a stored vector may have -> numpy type.
FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def finite(value: float, what: str) -> float:
    """``value`` as a finite float, or one sentence naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise HadisError(f"The {what} is {value!r}, expected a number.") from None
    if not math.isfinite(v):
        raise HadisError(f"The {what} is {v}, expected a finite number.")
    return v


def finite_array(values: Any, what: str, ndim: int | None = None) -> np.ndarray:
    """A numeric array of ``ndim`` dimensions with no NaN or infinity, or one sentence."""
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


def storable_floats(values: Any, what: str, ndim: int) -> np.ndarray:
    """Finite floats as stored: float32 stays float32 (half the storage), anything else
    becomes float64; contiguous and little-endian, so ``tobytes`` is the stored blob."""
    arr = finite_array(values, what, ndim=ndim)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def vector_blob(vector: Any, what: str) -> tuple[str, int, bytes]:
    """(dtype name, dim, bytes) of a 1-D float vector."""
    arr = storable_floats(vector, what, ndim=1)
    return arr.dtype.name, int(arr.shape[0]), arr.tobytes()


def decode_vector(
    blob: bytes, dtype: str, dim: int | None = None, what: str = "vector"
) -> np.ndarray:
    """A stored vector back as a (read-only) numpy view of ``blob``, checked against
    its dtype name and, when given, its dimension."""
    if dtype not in FLOAT_DTYPES or not isinstance(blob, bytes):
        raise InputError(f"The run store holds a {what} of unknown type {str(dtype)[:40]!r}.")
    kind = np.dtype(FLOAT_DTYPES[dtype]).newbyteorder("<")
    if len(blob) % kind.itemsize or (dim is not None and len(blob) != dim * kind.itemsize):
        raise InputError(
            f"The run store holds a {what} of {len(blob)} bytes, which is not "
            f"{dim if dim is not None else 'a whole number of'} {dtype} values."
        )
    return np.frombuffer(blob, kind)


def decode_json(text: Any, what: str, kind: type = dict) -> Any:
    """A JSON column or meta value back as ``kind`` (dict or list), or one sentence."""
    import json

    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise InputError(f"The run store holds a {what} that is not valid JSON.") from None
    if not isinstance(value, kind):
        raise InputError(
            f"The run store holds a {what} that is a {type(value).__name__}, not a {kind.__name__}."
        )
    return value


def check_metric_id(metric_id: str) -> str:
    if not isinstance(metric_id, str) or not metric_id.strip():
        raise HadisError(f"Metric id {metric_id!r} is empty; use '<scorer>:<checkpoint>'.")
    return metric_id


def check_scorer(scorer: str) -> str:
    if not isinstance(scorer, str) or not scorer.strip():
        raise HadisError(f"Scorer or extractor id {scorer!r} is empty.")
    return scorer
