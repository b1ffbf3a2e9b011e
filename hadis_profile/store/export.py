"""Exporting a run to plain files: one CSV or parquet file per table, plus ``.npz`` matrices.

The flat, tool-friendly view for pandas, DuckDB or a spreadsheet. Floats are
written with ``repr`` (CSV) or as float64 (parquet), so they round-trip
exactly. The files are built in a temporary folder and moved into the target
only once all of them are complete (:func:`hadis_profile.fileio.atomic_dir`),
so a failed export leaves the target as it was. pyarrow is imported only when
parquet is asked for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.fileio import atomic_dir, atomic_write_bytes, atomic_write_via
from hadis_profile.store.core import RUN_JSON
from hadis_profile.store.values import decode_vector

if TYPE_CHECKING:
    from hadis_profile.store.run_store import RunStore

EXPORT_FORMATS = ("csv", "parquet")


def export_run(store: RunStore, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
    """Write one file per table (CSV or parquet), all or nothing; return the paths.

    Feature vectors and FID reference statistics are binary matrices, so
    they go to ``features__<extractor>.npz`` / ``reference_stats.npz``
    whatever the format. ``run.json`` (provenance, router spec) comes along.
    Other files already in ``out_dir`` are kept; same-named ones are replaced.
    """
    if fmt not in EXPORT_FORMATS:
        raise ParameterError(
            "fmt", f"{{param}} is {fmt!r}, not one of {', '.join(EXPORT_FORMATS)}."
        )
    if fmt == "parquet":
        _pyarrow()  # fail before writing anything
    target = Path(out_dir)
    with atomic_dir(target) as tmp:
        names = [p.name for p in _export_into(store, tmp, fmt)]
    return [target / name for name in names]


def _export_into(store: RunStore, out: Path, fmt: str) -> list[Path]:
    written: list[Path] = []
    for name, (cols, types, rows) in export_tables(store).items():
        if fmt == "csv":
            path = out / f"{name}.csv"
            _atomic_csv(path, cols, rows)
        else:
            path = out / f"{name}.parquet"
            _atomic_parquet(path, cols, types, rows)
        written.append(path)
    written += _export_binary(store, out)
    summary = json.dumps(store.summary(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(out / RUN_JSON, summary.encode("utf-8"))
    written.append(out / RUN_JSON)
    return written


def export_tables(store: RunStore) -> dict[str, tuple[list[str], list[str], list[tuple]]]:
    """table name -> (columns, arrow types, rows): the flat, tool-friendly view (also what
    :meth:`hadis_profile.store.frames.Run.frames` turns into DataFrames)."""
    tables = {}
    for name, (columns, sql) in _EXPORTS.items():
        cols, types = zip(*(c.split(":") for c in columns.split()), strict=True)
        rows = store._db.execute(sql).fetchall()
        if "bool" in types:
            flags = [i for i, t in enumerate(types) if t == "bool"]
            rows = [
                tuple(bool(v) if i in flags and v is not None else v for i, v in enumerate(r))
                for r in rows
            ]
        tables[name] = (list(cols), list(types), rows)
    router = store.router()
    if router is not None:
        feats, names, scores, _ = router
        tables["router"] = (
            ["prompt_id", "score", *names],
            ["int", "float", *(["float"] * len(names))],
            [(i, float(scores[i]), *feats[i].tolist()) for i in range(len(scores))],
        )
    return tables


def _export_binary(store: RunStore, out: Path) -> list[Path]:
    written = []
    extractors = [r[0] for r in store._db.execute("SELECT DISTINCT extractor FROM features")]
    for ext in extractors:
        rows = store._db.execute(
            "SELECT f.image_id, f.dtype, f.vector FROM features f WHERE f.extractor=? "
            "ORDER BY f.image_id",
            (ext,),
        ).fetchall()
        vecs = np.stack([decode_vector(r[2], r[1], what=f"feature vector '{ext}'") for r in rows])
        path = out / f"features__{_safe_name(ext)}.npz"
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        atomic_write_via(path, lambda p, i=ids, v=vecs: _savez(p, image_id=i, vectors=v))
        written.append(path)
    stats = store.reference_stats()
    if stats:
        path = out / "reference_stats.npz"
        arrays = {}
        for ext, (mu, sigma) in stats.items():
            arrays[f"{_safe_name(ext)}__mu"] = mu
            arrays[f"{_safe_name(ext)}__sigma"] = sigma
        atomic_write_via(path, lambda p: _savez(p, **arrays))
        written.append(path)
    return written


# --------------------------------------------------------------------------- export layout

#: Exported table -> ("column:type ...", SQL). Types map to Arrow types for parquet.
_EXPORTS: dict[str, tuple[str, str]] = {
    "models": (
        "name:str spec_hash:str steps:int height:int width:int dtype:str spec_json:str",
        "SELECT name, spec_hash, steps, height, width, dtype, spec_json FROM models ORDER BY rowid",
    ),
    "hardware": (
        "label:str device_name:str driver:str libraries_json:str",
        "SELECT label, device_name, driver, libraries_json FROM hardware ORDER BY label",
    ),
    "latency": (
        "model:str hardware:str batch_size:int warmup:int reps:int mean_s:float std_s:float "
        "p50_s:float p90_s:float p95_s:float p99_s:float peak_mem_bytes:int infeasible:bool "
        "peak_allocated_bytes:int peak_reserved_bytes:int ci_rel:float converged:bool "
        "budget_cut:bool",
        "SELECT model, hardware, batch_size, warmup, reps, mean_s, std_s, p50_s, p90_s, p95_s, "
        "p99_s, peak_mem_bytes, infeasible, peak_allocated_bytes, peak_reserved_bytes, ci_rel, "
        "converged, budget_cut FROM latency ORDER BY model, hardware, batch_size",
    ),
    "latency_samples": (
        "model:str hardware:str batch_size:int seq:int seconds:float source:str",
        "SELECT model, hardware, batch_size, seq, seconds, source FROM latency_samples "
        "ORDER BY model, hardware, batch_size, seq",
    ),
    "prompts": (
        "prompt_id:int text:str sha256:str",
        "SELECT id, text, sha256 FROM prompts ORDER BY id",
    ),
    "images": (
        "image_id:int model:str prompt_id:int seed_index:int seed:int path:str",
        "SELECT id, model, prompt_id, seed_index, seed, path FROM images ORDER BY id",
    ),
    "scores": (
        "image_id:int metric:str value:float",
        "SELECT image_id, metric, value FROM scores ORDER BY image_id, metric",
    ),
    "confidence": (
        "image_id:int scorer:str value:float",
        "SELECT image_id, scorer, value FROM confidences ORDER BY image_id, scorer",
    ),
    "external": (
        "light:str heavy:str r:float d:float metric:str value:float",
        "SELECT light, heavy, r, d, metric, value FROM external ORDER BY rowid",
    ),
}


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _savez(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _atomic_csv(path: Path, columns: list[str], rows: list[tuple]) -> None:
    def write(tmp: Path) -> None:
        # floats are written with repr(), which round-trips exactly.
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(rows)

    atomic_write_via(path, write)


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow is optional: imported only when parquet is asked for."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise HadisError(
            "Parquet export needs pyarrow; install it with pip install 'hadis-profile[parquet]'."
        ) from None
    return pa, pq


def _atomic_parquet(path: Path, columns: list[str], types: list[str], rows: list[tuple]) -> None:
    pa, pq = _pyarrow()
    arrow = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(c, arrow[t]) for c, t in zip(columns, types, strict=True)])
    data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    table = pa.Table.from_arrays(
        [pa.array(list(col), type=f.type) for col, f in zip(data, schema, strict=True)],
        schema=schema,
    )
    atomic_write_via(path, lambda tmp: pq.write_table(table, tmp))
