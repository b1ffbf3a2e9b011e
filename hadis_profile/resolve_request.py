"""The arguments of a resolve call, checked: each bad one is a ParameterError naming it.

A serving stack calls the resolver with numbers computed elsewhere (a load
estimate, an SLO from a config file), so every argument is checked for type,
finiteness and range before any work, and the message names the argument:
``headroom must be at most 100, not 1e+308.`` The upper limits are far beyond
any real deployment; they exist so that an absurd value gets a sentence about
itself instead of an overflow that surfaces as a misleading reason (an
``inf`` GPU demand reads as "no configuration meets the SLO"). ``slo_s``,
``queue_delay_s`` and ``overhead_s`` share the table's bound on seconds,
:data:`hadis_profile.table_schema.MAX_SECONDS`.
"""

from __future__ import annotations

import math
import numbers
from itertools import islice
from typing import Any, NamedTuple

from hadis_profile.errors import ParameterError
from hadis_profile.table_schema import MAX_BATCH_SIZE, MAX_BATCH_SIZES, MAX_SECONDS

MAX_QPS = 1e9
"""Largest offered load, queries per second."""
MAX_GPUS = 1_000_000
"""Largest GPU budget."""
MAX_HEADROOM = 100.0
"""Largest capacity factor over the offered load."""


class Request(NamedTuple):
    """A checked request (``batch_sizes`` sorted and deduplicated, or None for all)."""

    qps: float
    slo_s: float
    gpus: int
    reserved_gpus: int
    headroom: float
    batch_sizes: tuple[int, ...] | None
    queue_delay_s: float | None
    overhead_s: float | None


def _show(value: Any) -> str:
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # a caller's object whose repr fails still gets a sentence
        text = f"a {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def check_real(
    value: Any, param: str, *, minimum: float, maximum: float, positive: bool = False
) -> float:
    """A finite float in [minimum, maximum] (``positive``: also > 0)."""
    kind = type(value)
    fast = (kind is float or kind is int) and minimum <= value <= maximum  # the usual case
    if fast and (value > 0 or not positive):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(param, f"{{param}} must be a number, not {_show(value)}.")
    try:
        v = float(value)
    except (ArithmeticError, TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise ParameterError(param, f"{{param}} must be a finite number, not {_show(value)}.")
    if positive and v <= 0:
        raise ParameterError(param, f"{{param}} must be positive, not {v:g}.")
    if v < minimum:
        raise ParameterError(param, f"{{param}} must be at least {minimum:g}, not {v:g}.")
    if v > maximum:
        raise ParameterError(param, f"{{param}} must be at most {maximum:g}, not {v:g}.")
    return v


def check_int(value: Any, param: str, *, minimum: int, maximum: int) -> int:
    """A whole number in [minimum, maximum] (an integral float such as 4.0 counts)."""
    if type(value) is int and minimum <= value <= maximum:  # the usual case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(param, f"{{param}} must be a whole number, not {_show(value)}.")
    if not isinstance(value, numbers.Integral):
        try:
            whole = float(value).is_integer()
        except (ArithmeticError, TypeError, ValueError):
            whole = False
        if not whole:
            raise ParameterError(param, f"{{param}} must be a whole number, not {_show(value)}.")
    n = int(value)
    if n < minimum:
        raise ParameterError(param, f"{{param}} must be at least {minimum}, not {_show(n)}.")
    if n > maximum:
        raise ParameterError(param, f"{{param}} must be at most {maximum:,}, not {_show(n)}.")
    return n


def check_batch_sizes(batch_sizes: Any) -> tuple[int, ...] | None:
    """None, or a non-empty collection of batch sizes (at most ``MAX_BATCH_SIZES`` distinct)."""
    if batch_sizes is None:
        return None
    param = "batch_sizes"
    if isinstance(batch_sizes, (str, bytes, dict)) or not hasattr(batch_sizes, "__iter__"):
        raise ParameterError(
            param, f"{{param}} must be a list of whole numbers or None, not {_show(batch_sizes)}."
        )
    try:
        items = list(islice(iter(batch_sizes), 4 * MAX_BATCH_SIZES + 1))
    except Exception:  # an iterable that fails while iterating
        raise ParameterError(param, "{param} could not be read as a list of numbers.") from None
    if len(items) > 4 * MAX_BATCH_SIZES:
        raise ParameterError(
            param, f"{{param}} lists more than {4 * MAX_BATCH_SIZES} entries; give each size once."
        )
    sizes = set()
    for b in items:
        if isinstance(b, bool) or not isinstance(b, numbers.Real):
            raise ParameterError(param, f"{{param}} holds {_show(b)}, which is not a whole number.")
        try:
            sizes.add(check_int(b, param, minimum=1, maximum=MAX_BATCH_SIZE))
        except ParameterError:
            raise ParameterError(
                param,
                f"{{param}} holds {_show(b)}; every batch size must be a whole number "
                f"from 1 to {MAX_BATCH_SIZE:,}.",
            ) from None
    if not sizes:
        raise ParameterError(
            param, "{param} is empty; give at least one batch size, or None for all."
        )
    return tuple(sorted(sizes))


def check_request(
    *,
    qps: Any,
    slo_s: Any,
    gpus: Any,
    reserved_gpus: Any,
    headroom: Any,
    batch_sizes: Any,
    queue_delay_s: Any,
    overhead_s: Any,
) -> Request:
    """Every argument checked (see the module doc), or a ParameterError naming the first bad one."""
    qps = check_real(qps, "qps", minimum=0, maximum=MAX_QPS, positive=True)
    slo_s = check_real(slo_s, "slo_s", minimum=0, maximum=MAX_SECONDS, positive=True)
    gpus = check_int(gpus, "gpus", minimum=1, maximum=MAX_GPUS)
    reserved_gpus = check_int(reserved_gpus, "reserved_gpus", minimum=0, maximum=MAX_GPUS)
    if reserved_gpus >= gpus:
        raise ParameterError(
            "reserved_gpus",
            f"{{param}} ({reserved_gpus}) must be smaller than gpus ({gpus}) "
            "so at least one GPU is left to serve.",
        )
    headroom = check_real(headroom, "headroom", minimum=1.0, maximum=MAX_HEADROOM)
    if queue_delay_s is not None:
        queue_delay_s = check_real(queue_delay_s, "queue_delay_s", minimum=0, maximum=MAX_SECONDS)
    if overhead_s is not None:
        overhead_s = check_real(overhead_s, "overhead_s", minimum=0, maximum=MAX_SECONDS)
    return Request(
        qps=qps,
        slo_s=slo_s,
        gpus=gpus,
        reserved_gpus=reserved_gpus,
        headroom=headroom,
        batch_sizes=check_batch_sizes(batch_sizes),
        queue_delay_s=queue_delay_s,
        overhead_s=overhead_s,
    )
