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
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.fileio import read_bytes


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
        return dataclasses.replace(
            self,
            arrivals_s=self.arrivals_s * float(factor),
            source=f"{self.source}, times x{factor:g}",
            time_scale=self.time_scale * float(factor),
        )

    def mapped_prompts(self, n_prompts: int) -> tuple[np.ndarray, int]:
        """(prompt index modulo ``n_prompts``, how many ids were >= ``n_prompts``)."""
        if n_prompts < 1:
            raise HadisError("The run has no prompts to map the workload's prompt ids onto.")
        wrapped = int(np.count_nonzero(self.prompt_ids >= n_prompts))
        return self.prompt_ids % n_prompts, wrapped


def load_trace(
    path: str | os.PathLike, *, limit: int | None = None, strict_order: bool = False
) -> Workload:
    """Read an ``arrival_time_ms,prompt_id`` trace; any bad line is one HadisError sentence.

    Blank lines are skipped; a first line starting with a letter is a header.
    ``limit`` keeps the first N queries (in file order), e.g. a short CI trace.
    """
    p = Path(path)
    try:
        text = read_bytes(p, "the trace file").decode("utf-8")
    except UnicodeDecodeError as e:
        raise HadisError(f"Cannot read the trace file {p}: {e}.") from None
    if limit is not None and limit < 1:
        raise HadisError(f"The trace limit must be at least 1, not {limit}.")
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
            raise HadisError(
                f"Line {lineno} of the trace {p} has {len(parts)} field(s); expected "
                "'arrival_time_ms,prompt_id'."
            )
        try:
            t = float(parts[0])
        except ValueError:
            raise HadisError(
                f"Line {lineno} of the trace {p} has a non-numeric arrival time {parts[0]!r}."
            ) from None
        if not math.isfinite(t) or t < 0:
            raise HadisError(
                f"Line {lineno} of the trace {p} has arrival time {parts[0]!r}; expected a "
                "finite, non-negative number of milliseconds."
            )
        raw = parts[1].strip()
        try:
            pid = int(raw)
        except ValueError:
            try:
                f = float(raw)
            except ValueError:
                f = math.nan
            if not f.is_integer():
                raise HadisError(
                    f"Line {lineno} of the trace {p} has prompt id {raw!r}, which is not an "
                    "integer."
                ) from None
            pid = int(f)  # "17.0" is an integer written as a float
        if pid < 0:
            raise HadisError(f"Line {lineno} of the trace {p} has a negative prompt id ({pid}).")
        times.append(t / 1000.0)
        ids.append(pid)
        if limit is not None and len(times) >= limit:
            break
    if not times:
        raise HadisError(f"The trace {p} has no queries.")
    arr = np.asarray(times, dtype=np.float64)
    pids = np.asarray(ids, dtype=np.int64)
    back = np.flatnonzero(np.diff(arr) < 0)
    if back.size:
        if strict_order:
            i = int(back[0]) + 1
            raise HadisError(
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
        raise HadisError(
            f"The rate '{text}' is not RATE or START:END in queries per second (e.g. 1:20)."
        )
    if max(values) <= 0:
        raise HadisError(f"The rate '{text}' is zero; give a positive rate.")
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
        raise HadisError(f"The duration must be a positive number of seconds, not {duration_s}.")
    if min(a, b) < 0 or max(a, b) <= 0:
        raise HadisError(f"The rates {a:g}:{b:g} must be non-negative and not both zero.")
    if n_prompts < 1:
        raise HadisError("The run has no prompts to draw the Poisson workload's queries from.")
    rng = np.random.default_rng(seed)
    total = (a + b) * T / 2.0
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
