"""Latency records: one (model, hardware, batch size) point each, as the profiler measures
them; infeasible (out-of-memory) points are kept so a resumed run does not retry them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hadis_profile.errors import HadisError
from hadis_profile.measurements import LatencyStats
from hadis_profile.samples import median_ci_rel, summarize
from hadis_profile.store.catalogue import Catalogue
from hadis_profile.store.values import finite


class LatencyRecords(Catalogue):
    """Per-hardware latency of each model and batch size, with the raw samples behind it."""

    def _require_hardware(self, label: str) -> None:
        if not self._db.execute("SELECT 1 FROM hardware WHERE label=?", (label,)).fetchone():
            raise HadisError(f"Hardware '{label}' is not in the run; call upsert_hardware first.")

    def _pick_hardware(self, hardware: str | None) -> str | None:
        """The hardware label to read latencies for: the given one, or the only one."""
        labels = [
            r[0] for r in self._db.execute("SELECT DISTINCT hardware FROM latency ORDER BY 1")
        ]
        if hardware is not None:
            if hardware not in labels:
                have = ", ".join(labels) or "none"
                raise HadisError(
                    f"The run has no latencies on hardware '{hardware}' (it has {have})."
                )
            return hardware
        if len(labels) > 1:
            raise HadisError(
                f"The run has latencies on several devices ({', '.join(labels)}); choose one."
            )
        return labels[0] if labels else None

    def put_latency(
        self,
        model: str,
        hardware_label: str,
        stats: LatencyStats,
        *,
        samples: Sequence[float] | None = None,
        peak_allocated: int | None = None,
        peak_reserved: int | None = None,
        ci_rel: float | None = None,
        converged: bool | None = None,
        budget_cut: bool = False,
    ) -> None:
        """Record one (model, hardware, batch size) point; re-measuring replaces it.

        ``samples`` are the raw per-call seconds the stats come from (kept, so a
        reader sees the evidence behind a p99 and later samples can join them).
        """
        b = int(stats.batch_size)
        if b < 1:
            raise HadisError(f"Latency of model '{model}' has batch size {b}, expected >= 1.")
        times = [stats.mean_s, stats.std_s, stats.p50_s, stats.p90_s, stats.p99_s, stats.p95_s]
        what = f"latency of model '{model}' at batch size {b}"
        if stats.infeasible:
            # An OOM point has no meaningful times; SQLite would turn NaN into NULL anyway.
            times = [t if t is not None and math.isfinite(t) else None for t in times]
        else:
            times = [finite(t, what) if t is not None else None for t in times]
            if times[0] is None or times[0] <= 0 or min(t for t in times if t is not None) < 0:
                raise HadisError(f"The {what} has mean {times[0]} s, expected a positive number.")
        raw = [finite(x, what) for x in samples or ()]
        if any(x <= 0 for x in raw):
            raise HadisError(f"The {what} has a sample that is not a positive number of seconds.")
        with self.transaction():
            self._require_model(model)
            self._require_hardware(hardware_label)
            self._db.execute(
                "INSERT OR REPLACE INTO latency (model, hardware, batch_size, warmup, reps, "
                "mean_s, std_s, p50_s, p90_s, p99_s, p95_s, peak_mem_bytes, infeasible, "
                "peak_allocated_bytes, peak_reserved_bytes, ci_rel, converged, budget_cut) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    hardware_label,
                    b,
                    int(stats.warmup),
                    int(stats.reps),
                    *times,
                    _int_or_none(stats.peak_mem_bytes),
                    int(bool(stats.infeasible)),
                    _int_or_none(peak_allocated),
                    _int_or_none(peak_reserved),
                    None if ci_rel is None else float(ci_rel),
                    None if converged is None else int(bool(converged)),
                    int(bool(budget_cut)),
                ),
            )
            key = (model, hardware_label, b)
            self._db.execute(
                "DELETE FROM latency_samples WHERE model=? AND hardware=? AND batch_size=?", key
            )
            self._db.executemany(
                "INSERT INTO latency_samples (model, hardware, batch_size, seq, seconds, source) "
                "VALUES (?, ?, ?, ?, ?, 'sweep')",
                [(*key, i, x) for i, x in enumerate(raw)],
            )

    def add_latency_samples(
        self,
        model: str,
        hardware_label: str,
        batch_size: int,
        seconds: Sequence[float],
        *,
        source: str = "generation",
    ) -> LatencyStats:
        """Append timed calls to a measured point and recompute its statistics from all of
        its samples (the profiler's image-generation calls at that batch size); the new stats.
        """
        b = int(batch_size)
        what = f"latency of model '{model}' at batch size {b}"
        new = [finite(x, what) for x in seconds]
        if any(x <= 0 for x in new):
            raise HadisError(f"The {what} has a sample that is not a positive number of seconds.")
        with self.transaction():
            row = self._db.execute(
                "SELECT warmup, peak_mem_bytes, infeasible FROM latency "
                "WHERE model=? AND hardware=? AND batch_size=?",
                (model, hardware_label, b),
            ).fetchone()
            if row is None or row[2]:
                raise HadisError(f"The {what} on '{hardware_label}' is not a measured point.")
            key = (model, hardware_label, b)
            start = self._db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM latency_samples "
                "WHERE model=? AND hardware=? AND batch_size=?",
                key,
            ).fetchone()[0]
            self._db.executemany(
                "INSERT INTO latency_samples (model, hardware, batch_size, seq, seconds, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(*key, start + i, x, source) for i, x in enumerate(new)],
            )
            every = self._samples(*key)
            stats = summarize(b, every, warmup=row[0], peak_mem=row[1])
            self._db.execute(
                "UPDATE latency SET reps=?, mean_s=?, std_s=?, p50_s=?, p90_s=?, p99_s=?, "
                "p95_s=?, ci_rel=? WHERE model=? AND hardware=? AND batch_size=?",
                (
                    stats.reps,
                    stats.mean_s,
                    stats.std_s,
                    stats.p50_s,
                    stats.p90_s,
                    stats.p99_s,
                    stats.p95_s,
                    median_ci_rel(every),
                    *key,
                ),
            )
        return stats

    def _samples(self, model: str, hardware: str, batch_size: int) -> list[float]:
        rows = self._db.execute(
            "SELECT seconds FROM latency_samples WHERE model=? AND hardware=? AND batch_size=? "
            "ORDER BY seq",
            (model, hardware, batch_size),
        )
        return [r[0] for r in rows]

    def latency_samples(
        self, model: str, hardware: str | None = None
    ) -> dict[int, list[tuple[float, str]]]:
        """batch size -> [(seconds, source)] in the order they were taken ("sweep" calls,
        then "generation" calls made at that batch size)."""
        hw = self._pick_hardware(hardware)
        out: dict[int, list[tuple[float, str]]] = {}
        for b, x, src in self._db.execute(
            "SELECT batch_size, seconds, source FROM latency_samples WHERE model=? AND "
            "hardware=? ORDER BY batch_size, seq",
            (model, hw),
        ):
            out.setdefault(b, []).append((x, src))
        return out

    def latency_details(self, model: str, hardware: str | None = None) -> dict[int, dict]:
        """batch size -> what a point holds beyond its stats: both CUDA memory peaks, the
        median's relative 95% interval, whether it converged, whether a budget cut it."""
        hw = self._pick_hardware(hardware)
        rows = self._db.execute(
            "SELECT batch_size, peak_allocated_bytes, peak_reserved_bytes, ci_rel, converged, "
            "budget_cut FROM latency WHERE model=? AND hardware=? ORDER BY batch_size",
            (model, hw),
        )
        return {
            r[0]: {
                "peak_allocated_bytes": r[1],
                "peak_reserved_bytes": r[2],
                "ci_rel": r[3],
                "converged": None if r[4] is None else bool(r[4]),
                "budget_cut": bool(r[5]),
            }
            for r in rows
        }

    def latency(self, model: str, hardware: str | None = None) -> dict[int, LatencyStats]:
        """batch size -> LatencyStats for one model (on the given or the only hardware)."""
        hw = self._pick_hardware(hardware)
        rows = self._db.execute(
            "SELECT batch_size, mean_s, std_s, p50_s, p90_s, p99_s, peak_mem_bytes, infeasible, "
            "warmup, reps, p95_s FROM latency WHERE model=? AND hardware=? ORDER BY batch_size",
            (model, hw),
        )
        nan = math.nan
        return {
            r[0]: LatencyStats(
                r[0],
                *(nan if t is None else t for t in r[1:6]),
                peak_mem_bytes=r[6],
                infeasible=bool(r[7]),
                warmup=r[8],
                reps=r[9],
                p95_s=r[10],
            )
            for r in rows
        }

    def has_latency(self, model: str, hardware_label: str, batch_size: int) -> bool:
        """Resume: was this point already measured (feasible or not)?"""
        return (
            self._db.execute(
                "SELECT 1 FROM latency WHERE model=? AND hardware=? AND batch_size=?",
                (model, hardware_label, int(batch_size)),
            ).fetchone()
            is not None
        )


def _int_or_none(value: int | None) -> int | None:
    return None if value is None else int(value)
