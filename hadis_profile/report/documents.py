"""Command results as plain JSON documents, for ``--json``: what scripts read instead of tables.

Each function turns a finished result into JSON-ready data (str keys, no NaN or
infinity, paths as strings) holding the same facts the terminal view shows, and
decides nothing. The CLI prints one such document on stdout and nothing else
there (:func:`hadis_profile.report.terminal.write_json`); messages go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hadis_profile.fileio import jsonable

if TYPE_CHECKING:
    from hadis_profile.prompts import PromptSet
    from hadis_profile.table import CascadeTable
    from hadis_profile.zoo import Zoo


def compiled_document(doc: dict, out: Path, plot: Path | None = None) -> dict:
    """``pareto --json``: where the table went, its hash, and how many rows of how many."""
    payload = doc["payload"]
    rows = payload["rows"]
    prov = payload["provenance"]
    sweep = prov.get("sweep") or {}
    return jsonable(
        {
            "table": str(out),
            "sha256": doc["sha256"],
            "schema_version": doc["schema_version"],
            "quality_metric": prov["quality_metric"],
            "rows": len(rows),
            "single_rows": sum(1 for r in rows if r["kind"] == "single"),
            "front_rows": sum(1 for r in rows if r.get("on_front")),
            "configurations_evaluated": sweep.get("configurations_evaluated"),
            "models": sorted(payload["models"], key=lambda m: payload["models"][m]["order"]),
            "plot": None if plot is None else str(plot),
        }
    )


def table_document(table: CascadeTable, *, limit: int | None = None) -> dict:
    """``show --json``: the table's header, provenance, model profiles and rows (cheapest
    first, at most ``limit``); ``n_rows`` is the count before the limit."""
    rows = table.rows if limit is None else table.rows[: max(0, limit)]
    d = table.document
    return jsonable(
        {
            "table": table.source,
            "format": d["format"],
            "schema_version": d["schema_version"],
            "tool_version": d["tool_version"],
            "created_at": d["created_at"],
            "sha256": table.sha256,
            "quality_metric": table.quality_metric,
            "n_rows": len(table.rows),
            "n_front": sum(1 for r in table.rows if r.get("on_front")),
            "provenance": table.provenance,
            "models": table.models,
            "router": table.router,
            "rows": rows,
        }
    )


def zoo_document(zoo: Zoo) -> dict:
    """``zoo list --json``: the selected models with every field of their specs, and the hash."""
    return jsonable(
        {
            "zoo": None if zoo.path is None else str(zoo.path),
            "zoo_hash": zoo.hash(),
            "models": [
                {**m.model_dump(mode="json", by_alias=True), "spec_hash": m.spec_hash()}
                for m in zoo
            ],
        }
    )


def prompt_set_document(ps: PromptSet, *, show: int | None = None) -> dict:
    """``prompts inspect --json``: counts, hash, and the first ``show`` prompts (all if None)."""
    texts = list(ps.texts if show is None else ps.texts[:show])
    return jsonable(
        {
            "source": None if ps.source is None else str(ps.source),
            "column": ps.column,
            "n_read": ps.n_read,
            "n_blank": ps.n_blank,
            "n_duplicates": ps.n_duplicates,
            "n_unique": ps.n_unique,
            "n_prompts": len(ps),
            "limit": ps.limit,
            "sample": ps.sample,
            "seed": ps.seed,
            "sha256": ps.sha256,
            "prompts": texts,
        }
    )
