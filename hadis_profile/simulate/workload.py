"""Workloads for the simulator: an arrival trace file, or a seeded Poisson ramp.

A trace is ``arrival_time_ms,prompt_id`` per line (the format of the Azure
Functions derived traces DiffServe and HADIS use). Times are milliseconds from
the trace's origin, which is simulation time 0. Prompt ids index the run's
prompts modulo its prompt count, so a trace written for another prompt set
still replays (the result says how many ids wrapped).

Out-of-order lines are a documented outcome, not an error: the published MAF
traces have ~1% of lines up to ~1.2 s early (jitter from how they were scaled),
so arrivals are stably sorted and the number of such lines is reported;
``strict_order=True`` refuses them instead.

Bounds (:mod:`hadis_profile.limits`): a trace file of at most
:data:`~hadis_profile.limits.MAX_TRACE_BYTES`, a workload of at most
:data:`~hadis_profile.limits.MAX_QUERIES` queries (trace lines, or rate x
duration), prompt ids up to :data:`~hadis_profile.limits.MAX_PROMPT_ID`. How
long a workload may span is bounded where the tick is known
(:func:`hadis_profile.simulate.run.simulate`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis_profile.errors import HadisError, InputError, ParameterError
from hadis_profile.fileio import read_bytes
from hadis_profile.limits import (
    MAX_PROMPT_ID,
    MAX_QUERIES,
    MAX_TRACE_BYTES,
    at_most,
    check_file_size,
)

#: Digits of the largest prompt id: longer id text is refused before it is parsed.
_MAX_ID_DIGITS = len(str(MAX_PROMPT_ID))


@dataclass(frozen=True)
class Workload:
    """Arrivals in seconds (ascending) and raw prompt ids, plus where they came from."""

    arrivals_s: np.ndarray  # float64 [n], non-decreasing
    prompt_ids: np.ndarray  # int64 [n], >= 0, before mapping onto a run's prompts
    source: str
    reordered: int = 0  # lines that arrived earlier than the line before them
    time_scale: float = 1.0  # arrival times were multiplied by this (see time_scaled)

    def __len__(self) -> int:
        return int(self.arrivals_s.shape[0])

    @property
    def duration_s(self) -> float:
        """From time 0 to the last arrival."""
        return float(self.arrivals_s[-1]) if len(self) else 0.0

    @property
    def mean_qps(self) -> float:
        return len(self) / self.duration_s if self.duration_s > 0 else float(len(self))

    def time_scaled(self, factor: float) -> Workload:
        """The same queries with every arrival time multiplied by ``factor``.

        A trace replayed compressed (HADIS's E1 runs its trace 10x faster, with
        latencies and SLO scaled by 0.1) is replayed in the paper's units with
        ``factor=10``: the load in queries/s divides by ten, the schedule is kept.
        """
        if isinstance(factor, bool) or not (
            isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0
        ):
            raise ParameterError(
                "time_scale", f"{{param}} must be a positive number, not {factor!r}."
            )
        if factor == 1:
            return self
        scaled = self.arrivals_s * float(factor)
        if len(scaled) and not math.isfinite(float(scaled[-1])):
            raise ParameterError(
                "time_scale", f"{{param}} {factor!r} pushes the arrival times past infinity."
            )
        return dataclasses.replace(
            self,
            arrivals_s=scaled,
            source=f"{self.source}, times x{factor:g}",
            time_scale=self.time_scale * float(factor),
        )

    def mapped_prompts(self, n_prompts: int) -> tuple[np.ndarray, int]:
        """(prompt index modulo ``n_prompts``, how many ids were >= ``n_prompts``)."""
        if n_prompts < 1:
            raise HadisError("The run has no prompts to map the workload's prompt ids onto.")
        wrapped = int(np.count_nonzero(self.prompt_ids >= n_prompts))
        return self.prompt_ids % n_prompts, wrapped


def _trace_error(p: Path, lineno: int, text: str) -> InputError:
    return InputError(f"Line {lineno} of the trace {p} {text}")


def _prompt_id(p: Path, lineno: int, raw: str) -> int:
    """A trace line's prompt id: a whole number from 0 to :data:`MAX_PROMPT_ID`."""
    digits = raw.lstrip("+-").split(".")[0].split("e")[0].split("E")[0]
    if len(digits) > _MAX_ID_DIGITS:
        raise _trace_error(
            p, lineno, f"has a prompt id of {len(digits)} digits; ids go up to {MAX_PROMPT_ID}."
        )
    try:
        pid = int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            f = math.nan
        if not f.is_integer():
            raise _trace_error(
                p, lineno, f"has prompt id {raw[:40]!r}, which is not an integer."
            ) from None
        pid = int(f)  # "17.0" is an integer written as a float
    if pid < 0:
        raise _trace_error(p, lineno, f"has a negative prompt id ({pid}).")
    if pid > MAX_PROMPT_ID:
        raise _trace_error(p, lineno, f"has prompt id {pid}; ids go up to {MAX_PROMPT_ID}.")
    return pid


def load_trace(
    path: str | os.PathLike, *, limit: int | None = None, strict_order: bool = False
) -> Workload:
    """Read an ``arrival_time_ms,prompt_id`` trace; any bad line is one InputError sentence.

    Blank lines are skipped; a first line starting with a letter is a header.
    ``limit`` keeps the first N queries (in file order), e.g. a short CI trace.
    """
    p = Path(path)
    if limit is not None and limit < 1:
        raise ParameterError("limit", f"{{param}} must be at least 1, not {limit}.")
    if limit is not None:
        at_most("limit", limit, MAX_QUERIES, "queries")
    check_file_size(p, MAX_TRACE_BYTES, "the trace file")
    try:
        text = read_bytes(p, "the trace file", MAX_TRACE_BYTES).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"The trace file {p} is not UTF-8 text (byte {e.start}).") from None
    times: list[float] = []
    ids: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if lineno == 1 and line[0].isalpha():
            continue  # header such as "arrival_time_ms,prompt_id"
        parts = line.split(",")
        if len(parts) != 2:
            raise _trace_error(
                p, lineno, f"has {len(parts)} field(s); expected 'arrival_time_ms,prompt_id'."
            )
        try:
            t = float(parts[0])
        except ValueError:
            raise _trace_error(
                p, lineno, f"has a non-numeric arrival time {parts[0][:40]!r}."
            ) from None
        if not math.isfinite(t) or t < 0:
            raise _trace_error(
                p,
                lineno,
                f"has arrival time {parts[0][:40]!r}; expected a finite, non-negative number "
                "of milliseconds.",
            )
        pid = _prompt_id(p, lineno, parts[1].strip())
        if len(times) >= MAX_QUERIES:
            raise InputError(
                f"The trace {p} has more than {MAX_QUERIES:,} queries, the limit of one "
                "simulation; replay part of it with a limit."
            )
        times.append(t / 1000.0)
        ids.append(pid)
        if limit is not None and len(times) >= limit:
            break
    if not times:
        raise InputError(f"The trace {p} has no queries.")
    arr = np.asarray(times, dtype=np.float64)
    pids = np.asarray(ids, dtype=np.int64)
    back = np.flatnonzero(np.diff(arr) < 0)
    if back.size:
        if strict_order:
            i = int(back[0]) + 1
            raise InputError(
                f"The trace {p} is out of order: query {i + 1} arrives at "
                f"{arr[i] * 1000:g} ms, before the one above it ({arr[i - 1] * 1000:g} ms)."
            )
        order = np.argsort(arr, kind="stable")
        arr, pids = arr[order], pids[order]
    return Workload(arr, pids, str(p), reordered=int(back.size))


def parse_rate(text: str) -> tuple[float, float]:
    """``"20"`` -> (20, 20); ``"1:20"`` -> (1, 20) queries/s (a linear ramp)."""
    parts = text.split(":")
    try:
        values = [float(x) for x in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ParameterError(
            "rate",
            f"{{param}} '{text[:40]}' is not RATE or START:END in queries per second (e.g. 1:20).",
        )
    if max(values) <= 0:
        raise ParameterError("rate", f"{{param}} '{text}' is zero; give a positive rate.")
    return (values[0], values[-1])


def poisson_workload(
    rate_start: float,
    rate_end: float,
    duration_s: float,
    n_prompts: int,
    *,
    seed: int = 0,
) -> Workload:
    """A Poisson process whose rate ramps linearly from ``rate_start`` to ``rate_end`` qps.

    Exact, not thinned: unit-rate arrival epochs are mapped through the inverse
    of the integrated rate ``L(t) = a t + (b - a) t^2 / (2 T)``. Prompts are drawn
    uniformly from ``range(n_prompts)``. Same seed, same workload.
    """
    a, b, T = float(rate_start), float(rate_end), float(duration_s)
    if not (math.isfinite(T) and T > 0):
        raise ParameterError(
            "duration_s", f"{{param}} must be a positive number of seconds, not {duration_s}."
        )
    if not (math.isfinite(a) and math.isfinite(b)) or min(a, b) < 0 or max(a, b) <= 0:
        raise ParameterError(
            "rate_start", f"The rates {a:g}:{b:g} must be finite, non-negative and not both zero."
        )
    if n_prompts < 1:
        raise HadisError("The run has no prompts to draw the Poisson workload's queries from.")
    total = (a + b) * T / 2.0
    if not total <= MAX_QUERIES:
        raise ParameterError(
            "duration_s",
            f"A Poisson load of {a:g}->{b:g} queries/s over {{param}} = {T:g} s is "
            f"{total:,.0f} queries on average, more than the limit of {MAX_QUERIES:,}; lower "
            "the rate or {param}.",
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError("seed", f"{{param}} must be a whole number of at least 0, not {seed}.")
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(total))
    # Given the count, the epochs of a Poisson process are sorted uniforms on [0, total].
    u = np.sort(rng.uniform(0.0, total, n))
    k = (b - a) / T
    # a t + k t^2 / 2 = u  ->  t = (sqrt(a^2 + 2 k u) - a) / k, written stably
    root = np.sqrt(np.maximum(a * a + 2.0 * k * u, 0.0))
    t = u / a if abs(k) < 1e-15 else 2.0 * u / (a + root)
    t = np.minimum(t, T)
    pids = rng.integers(0, n_prompts, n, dtype=np.int64)
    label = f"Poisson {a:g} qps" if a == b else f"Poisson {a:g}->{b:g} qps"
    if n == 0:
        raise HadisError(f"The {label} workload over {T:g} s has no queries; raise the rate.")
    return Workload(t, pids, f"{label} over {T:g} s (seed {seed})")
