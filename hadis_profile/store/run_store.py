"""The run store as one object: :class:`RunStore` composes the record mixins.

Each mixin holds one concept (see the package docstring); this class adds what
spans all of them (the ``run.json`` summary, resetting a run) and delegates
loading :class:`~hadis_profile.measurements.Measurements` and exporting to
their modules, so callers keep one object with the whole API.
"""

from __future__ import annotations

from pathlib import Path

from hadis_profile import __version__
from hadis_profile.measurements import Measurements
from hadis_profile.store.bulk import BulkWriters
from hadis_profile.store.core import RUN_FORMAT, now_utc
from hadis_profile.store.export import export_run
from hadis_profile.store.images import ImageRecords
from hadis_profile.store.latency import LatencyRecords
from hadis_profile.store.measurements import load_measurements
from hadis_profile.store.routing import RoutingRecords


class RunStore(LatencyRecords, ImageRecords, BulkWriters, RoutingRecords):
    """One run's SQLite store; see docs/architecture.md for the contract.

    Every write method is its own transaction unless called inside
    :meth:`transaction`, which groups several writes into one unit of work.
    """

    def summary(self) -> dict:
        """The run.json payload: provenance plus what the store currently holds."""
        q = self._db.execute
        return {
            "format": RUN_FORMAT,
            "run_id": self.run_id,
            "schema_version": self.schema_version(),
            "tool_version": self._meta("tool_version", __version__),
            "created_at": self._meta("created_at"),
            "updated_at": now_utc(),
            "provenance": self.provenance,
            "prompt_set_hash": self.prompt_set_hash(),
            "n_prompts": q("SELECT COUNT(*) FROM prompts").fetchone()[0],
            "models": {
                name: h for name, h in q("SELECT name, spec_hash FROM models ORDER BY name")
            },
            "hardware": self.hardware(),
            "router": self.router_spec(),
        }

    def reset(self) -> None:
        """Start the run afresh: delete every measurement and prompt, keep schema and provenance."""
        with self.transaction():
            for table in (
                "features",
                "scores",
                "confidences",
                "images",
                "router",
                "external",
                "reference_stats",
                "latency",
                "latency_samples",
                "prompts",
                "models",
                "hardware",
            ):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("DELETE FROM meta WHERE key IN ('prompt_set_hash', 'router_spec')")
            self._run_json_dirty = True

    def load_measurements(
        self, *, hardware: str | None = None, confidence_scorer: str | None = None
    ) -> Measurements:
        """The run as :class:`Measurements`, models ordered by batch-1 latency.

        See :func:`hadis_profile.store.measurements.load_measurements`.
        """
        with self._decoding("measurements"):
            return load_measurements(self, hardware=hardware, confidence_scorer=confidence_scorer)

    def export(self, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
        """One CSV or parquet file per table; see :func:`hadis_profile.store.export.export_run`."""
        with self._decoding("a record"):
            return export_run(self, out_dir, fmt)
