"""Latency records: one (model, hardware, batch size) point each, as the profiler measures
them; infeasible (out-of-memory) points are kept so a resumed run does not retry them.
"""

from __future__ import annotations

import math

from hadis_profile.errors import HadisError
from hadis_profile.measurements import LatencyStats
from hadis_profile.store.catalogue import Catalogue
from hadis_profile.store.values import finite


class LatencyRecords(Catalogue):
    """Per-hardware latency of each model and batch size."""

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

    def put_latency(self, model: str, hardware_label: str, stats: LatencyStats) -> None:
        """Record one (model, hardware, batch size) point; re-measuring replaces it."""
        b = int(stats.batch_size)
        if b < 1:
            raise HadisError(f"Latency of model '{model}' has batch size {b}, expected >= 1.")
        times = [stats.mean_s, stats.std_s, stats.p50_s, stats.p90_s, stats.p99_s]
        if stats.infeasible:
            # An OOM point has no meaningful times; SQLite would turn NaN into NULL anyway.
            times = [t if t is not None and math.isfinite(t) else None for t in times]
        else:
            what = f"latency of model '{model}' at batch size {b}"
            times = [finite(t, what) for t in times]
            if times[0] <= 0 or min(times) < 0:
                raise HadisError(f"The {what} has mean {times[0]} s, expected a positive number.")
        with self.transaction():
            self._require_model(model)
            if not self._db.execute(
                "SELECT 1 FROM hardware WHERE label=?", (hardware_label,)
            ).fetchone():
                raise HadisError(
                    f"Hardware '{hardware_label}' is not in the run; call upsert_hardware first."
                )
            self._db.execute(
                "INSERT OR REPLACE INTO latency (model, hardware, batch_size, warmup, reps, "
                "mean_s, std_s, p50_s, p90_s, p99_s, peak_mem_bytes, infeasible) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    hardware_label,
                    b,
                    int(stats.warmup),
                    int(stats.reps),
                    *times,
                    None if stats.peak_mem_bytes is None else int(stats.peak_mem_bytes),
                    int(bool(stats.infeasible)),
                ),
            )

    def latency(self, model: str, hardware: str | None = None) -> dict[int, LatencyStats]:
        """batch size -> LatencyStats for one model (on the given or the only hardware)."""
        hw = self._pick_hardware(hardware)
        rows = self._db.execute(
            "SELECT batch_size, mean_s, std_s, p50_s, p90_s, p99_s, peak_mem_bytes, infeasible, "
            "warmup, reps FROM latency WHERE model=? AND hardware=? ORDER BY batch_size",
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
