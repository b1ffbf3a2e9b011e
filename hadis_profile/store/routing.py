"""Routing records: the router's per-prompt features, scores and spec, and cascade
configurations (light, heavy, router ratio r, discriminator ratio d) measured elsewhere.

The router spec (weights, normalisation, source) travels into ``table.json`` so
a serving stack can score new prompts exactly as the profiled ones were scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, InputError
from hadis_profile.fileio import canonical_json
from hadis_profile.measurements import ExternalConfig
from hadis_profile.store.catalogue import Catalogue
from hadis_profile.store.values import (
    check_metric_id,
    decode_json,
    decode_vector,
    finite,
    finite_array,
)


class RoutingRecords(Catalogue):
    """The stored router and the externally measured (r, d) configurations."""

    def put_router(
        self, features: Any, names: Sequence[str], scores: Any, spec: dict | None = None
    ) -> None:
        """Per-prompt router features [n, k] and scores [n] (higher = harder), plus its spec.

        The spec (weights, normalisation, source) travels into table.json so a
        serving stack can score new prompts the same way.
        """
        n = self.n_prompts()
        feats = finite_array(features, "router features", ndim=2).astype(np.float64)
        s = finite_array(scores, "router scores", ndim=1).astype(np.float64)
        names = [str(x) for x in names]
        if feats.shape != (n, len(names)):
            raise HadisError(
                f"The router features have shape {feats.shape}, expected ({n}, {len(names)}) "
                "for the run's prompts and the given feature names."
            )
        if s.shape != (n,):
            raise HadisError(f"The router scores have shape {s.shape}, expected ({n},).")
        spec = dict(spec or {})
        if "features" in spec and list(spec["features"]) != names:
            raise HadisError("The router spec names other features than the ones given.")
        spec["features"] = names
        feats = np.ascontiguousarray(feats, dtype="<f8")
        with self.transaction():
            self._db.execute("DELETE FROM router")
            self._db.executemany(
                "INSERT INTO router (prompt_id, score, features) VALUES (?, ?, ?)",
                ((i, float(s[i]), feats[i].tobytes()) for i in range(n)),
            )
            self._set_meta("router_spec", canonical_json(spec))
            self._run_json_dirty = True

    def router_spec(self) -> dict | None:
        raw = self._meta("router_spec")
        if not raw:
            return None
        spec = decode_json(raw, "router spec")
        names = spec.get("features")
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise InputError("The run store holds a router spec without a list of feature names.")
        return spec

    def router(self) -> tuple[np.ndarray, list[str], np.ndarray, dict] | None:
        """(features [n, k], names, scores [n], spec) or None when no router was stored."""
        spec = self.router_spec()
        if spec is None:
            return None
        rows = self._db.execute("SELECT score, features FROM router ORDER BY prompt_id").fetchall()
        names = list(spec["features"])
        blobs = [decode_vector(r[1], "float64", len(names), "router feature row") for r in rows]
        feats = np.stack(blobs) if blobs else np.empty((0, len(names)))
        with self._decoding("router scores"):
            scores = np.array([r[0] for r in rows], dtype=np.float64)
        return feats.copy(), names, scores, spec

    # ---------------------------------------------------------------- external configurations

    def put_external_configs(self, configs: Iterable[ExternalConfig]) -> int:
        """Configurations measured elsewhere (e.g. HADIS's FID sweep); returns the row count."""
        rows = []
        for c in configs:
            where = f"external configuration ({c.light}, {c.heavy}, r={c.r}, d={c.d})"
            r = finite(c.r, f"router ratio of the {where}")
            d = finite(c.d, f"discriminator ratio of the {where}")
            if not (0.0 <= r <= 1.0 and 0.0 <= d <= 1.0):
                raise HadisError(f"The {where} has a ratio outside [0, 1].")
            if not c.values:
                raise HadisError(f"The {where} has no metric values.")
            for metric, v in c.values.items():
                rows.append(
                    (
                        c.light,
                        c.heavy,
                        r,
                        d,
                        check_metric_id(metric),
                        finite(v, f"value '{metric}' of the {where}"),
                    )
                )
        with self.transaction():
            for name in sorted({x[0] for x in rows} | {x[1] for x in rows}):
                self._require_model(name)
            self._db.executemany(
                "INSERT OR REPLACE INTO external (light, heavy, r, d, metric, value) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def external_configs(self) -> list[ExternalConfig]:
        grouped: dict[tuple, dict[str, float]] = {}
        for light, heavy, r, d, metric, value in self._db.execute(
            "SELECT light, heavy, r, d, metric, value FROM external ORDER BY rowid"
        ):
            grouped.setdefault((light, heavy, r, d), {})[metric] = value
        return [ExternalConfig(k[0], k[1], k[2], k[3], v) for k, v in grouped.items()]
