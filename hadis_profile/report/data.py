"""The numbers behind ``hadis-profile report``: one plain, JSON-ready document (``report.json``).

:func:`collect` reads a run (and optionally a table and a simulation folder) and
returns every number a figure or a table of the report shows, so a script can
read ``report.json`` instead of the pictures: latency points with their raw
samples, throughput, memory and the OOM point, stage breakdowns, quality and
confidence distributions, the heavy-minus-light gain against the router score
with its Spearman correlation, the table's rows, the capacity map (what
:func:`hadis_profile.resolve.resolve` picks over a grid of load and SLO for a GPU
budget), the simulation's summary and timelines, the contact sheet's choice of
images, and the provenance. numpy and the store only; nothing is drawn here.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from hadis_profile import __version__
from hadis_profile.errors import HadisError
from hadis_profile.fileio import jsonable
from hadis_profile.metrics import info as metric_info

FORMAT = "hadis-profile/report"
#: Quantiles drawn by the distribution figures (box from 25 to 75 %, whiskers 5 to 95 %).
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
#: The capacity map's grid: load values x SLO values, each log-spaced.
GRID = (32, 24)
MAX_PAIRS = 12
SHEET_PROMPTS, SHEET_MODELS = 4, 8


def collect(
    run_dir: str | Path,
    *,
    table: Any = None,
    table_note: str | None = None,
    sim_dir: str | Path | None = None,
    gpus: int = 8,
    hardware: str | None = None,
) -> dict:
    """Everything the report shows, as one JSON-ready dict (see the module docstring).

    ``table`` is a :class:`~hadis_profile.table.CascadeTable` or None (no table
    sections; ``table_note`` says why, see :func:`table_for`). ``gpus`` is the budget
    of the capacity map; ``hardware`` the label whose latencies to show (needed only
    when the run holds several).
    """
    from hadis_profile.store import RunStore
    from hadis_profile.store.export import export_tables

    run_dir = Path(run_dir)
    notes: list[str] = []
    with RunStore.open(run_dir) as store:
        hw = store._pick_hardware(hardware)
        models = _models(store, hw)
        flat = export_tables(store)
        router = store.router()
        prov = store.provenance
        ident = {
            "run_id": store.run_id,
            "path": str(run_dir),
            "created_at": store._meta("created_at"),
            "tool_version": store._meta("tool_version"),
            "n_prompts": store.n_prompts(),
            "prompt_set_hash": store.prompt_set_hash(),
            "hardware_label": hw,
        }
        hardware_rows = store.hardware()
        prompts = store.prompts()
        spec = {n: m["spec"] for n, m in store.models().items()}
    if table is None and table_note:
        notes.append(f"No table: {table_note}")
    per_image = _per_image(flat, [m["name"] for m in models], len(prompts))
    metric = _gain_metric(per_image, table)
    doc = {
        "format": FORMAT,
        "tool_version": __version__,
        "run": ident,
        "models": models,
        "quality": _distributions(per_image),
        "gains": _gains(per_image, metric, router, models, table, notes),
        "table": _table(table),
        "capacity": _capacity(table, gpus) if table is not None else None,
        "simulation": read_simulation(sim_dir) if sim_dir is not None else None,
        "contact_sheet": _sheet(flat, run_dir, prompts, per_image, metric, models),
        "provenance": {
            "run": prov,
            "hardware": hardware_rows,
            "checkpoints": {n: _checkpoint(spec[n]) for n in spec},
            "seeds": prov.get("seeds"),
            "table": None if table is None else {"sha256": table.sha256, **table.provenance},
        },
        "notes": notes,
    }
    return jsonable(doc)


# --------------------------------------------------------------------------- per model


def _models(store: Any, hw: str | None) -> list[dict]:
    """Each model's latency points (raw samples included), cheapest at batch 1 first."""
    info = store.models()
    stages = store.provenance.get("stages") or {}
    out = []
    for name, m in info.items():
        stats = store.latency(name, hw) if hw else {}
        samples = store.latency_samples(name, hw) if hw else {}
        details = store.latency_details(name, hw) if hw else {}
        points = []
        for b, s in sorted(stats.items()):
            raw = samples.get(b, [])
            ok = not s.infeasible
            points.append(
                {
                    "batch_size": b,
                    "infeasible": s.infeasible,
                    "p50_s": s.p50_s if ok else None,
                    "p99_s": s.p99_s if ok else None,
                    "mean_s": s.mean_s if ok else None,
                    "reps": s.reps,
                    "images_per_s": b / s.p50_s if ok and s.p50_s > 0 else None,
                    "peak_mem_bytes": s.peak_mem_bytes,
                    **details.get(b, {}),
                    "samples_s": [x for x, _ in raw],
                    "sample_sources": sorted({src for _, src in raw}),
                }
            )
        feasible = [p["batch_size"] for p in points if not p["infeasible"]]
        oom = [p["batch_size"] for p in points if p["infeasible"]]
        out.append(
            {
                "name": name,
                "steps": m["steps"],
                "points": points,
                "max_feasible_batch": max(feasible) if feasible else None,
                "oom_batch": min(oom) if oom else None,
                "stages_s": stages.get(name),
            }
        )

    def cost(model: dict) -> tuple:
        b1 = next((p for p in model["points"] if p["batch_size"] == 1 and p["p50_s"]), None)
        return (b1 is None, b1["p50_s"] if b1 else 0.0, model["name"])

    return sorted(out, key=cost)


def _checkpoint(spec: dict) -> dict:
    return {
        "source": spec.get("source"),
        "revision": spec.get("revision"),
        "identity": spec.get("checkpoint"),
        "weights": spec.get("weights"),
        "components": spec.get("components") or [],
    }


# --------------------------------------------------------------------------- quality


def _per_image(flat: dict, models: list[str], n_prompts: int) -> dict[str, dict]:
    """signal -> model -> {"values": per-image values, "per_prompt": mean per prompt (NaN:
    none)}, for every per-image metric and confidence scorer (``confidence:<id>``)."""
    image_model = {r[0]: (r[1], r[2]) for r in flat["images"][2]}
    raw: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for image_id, metric, value in flat["scores"][2]:
        raw[metric][image_model[image_id][0]].append((image_model[image_id][1], value))
    for image_id, scorer, value in flat["confidence"][2]:
        raw[f"confidence:{scorer}"][image_model[image_id][0]].append(
            (image_model[image_id][1], value)
        )
    out: dict[str, dict] = {}
    for signal, by_model in sorted(raw.items()):
        out[signal] = {}
        for model in models:
            pairs = by_model.get(model, [])
            if not pairs:
                continue
            pid = np.array([p for p, _ in pairs], dtype=np.int64)
            val = np.array([v for _, v in pairs], dtype=np.float64)
            sums = np.bincount(pid, val, minlength=n_prompts)
            counts = np.bincount(pid, minlength=n_prompts)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_prompt = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            out[signal][model] = {"values": val, "per_prompt": per_prompt}
    return out


def _higher(signal: str) -> bool:
    if signal.startswith("confidence:"):
        return True
    try:
        return metric_info(signal).higher_is_better
    except HadisError:
        return True


def _distributions(per_image: dict) -> list[dict]:
    """Per signal and model: count, mean, std and :data:`QUANTILES` (what the boxes draw)."""
    out = []
    for signal, by_model in per_image.items():
        rows = []
        for model, v in by_model.items():
            x = v["values"]
            rows.append(
                {
                    "model": model,
                    "n": int(x.size),
                    "mean": float(x.mean()),
                    "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
                    "quantiles": dict(
                        zip(map(str, QUANTILES), np.quantile(x, QUANTILES).tolist(), strict=True)
                    ),
                }
            )
        kind = "confidence" if signal.startswith("confidence:") else "score"
        out.append(
            {"signal": signal, "kind": kind, "higher_is_better": _higher(signal), "models": rows}
        )
    return out


def _gain_metric(per_image: dict, table: Any) -> str | None:
    """The per-prompt quality the gains and the contact sheet use: the table's ranking
    metric when it is per image, else the first per-image score, else a confidence."""
    if table is not None and table.quality_metric in per_image:
        return table.quality_metric
    scores = [s for s in per_image if not s.startswith("confidence:")]
    return (scores or list(per_image) or [None])[0]


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when undefined."""
    if x.size < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.arange(1, a.size + 1)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, ranks)
    return (sums / counts)[inverse]


def _pairs(models: list[dict], table: Any) -> list[tuple[str, str]]:
    names = [m["name"] for m in models]
    if table is not None:
        order = {n: table.models[n].get("order", 0) for n in table.models}
        found = {(r["light"], r["heavy"]) for r in table.rows if r["kind"] == "cascade"}
        pairs = sorted(found, key=lambda p: (order.get(p[0], 0), order.get(p[1], 0)))
    else:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        if len(pairs) > MAX_PAIRS:
            pairs = list(pairwise(names))
    return pairs[:MAX_PAIRS]


def _gains(per_image, metric, router, models, table, notes) -> dict | None:
    """Per pair: heavy-minus-light per-prompt quality (positive: heavy better) against the
    router score, its Spearman correlation, and the mean gain in ten router-score bins."""
    if metric is None:
        notes.append("No per-image quality or confidence: no quality sections.")
        return None
    if router is None:
        notes.append("The run has no router scores: no gain-against-router figure.")
        return None
    scores = router[2]
    sign = 1.0 if _higher(metric) else -1.0
    out = []
    for light, heavy in _pairs(models, table):
        by = per_image[metric]
        if light not in by or heavy not in by:
            continue
        gain = sign * (by[heavy]["per_prompt"] - by[light]["per_prompt"])
        keep = np.isfinite(gain) & np.isfinite(scores)
        s, g = scores[keep], gain[keep]
        edges = np.unique(np.quantile(s, np.linspace(0, 1, 11))) if s.size else np.array([])
        bins = []
        for lo, hi in pairwise(edges):
            sel = (s >= lo) & ((s < hi) if hi < edges[-1] else (s <= hi))
            if sel.any():
                bins.append(
                    {"lo": lo, "hi": hi, "n": int(sel.sum()), "mean_gain": float(g[sel].mean())}
                )
        out.append(
            {
                "light": light,
                "heavy": heavy,
                "n": int(s.size),
                "spearman": spearman(s, g),
                "mean_gain": float(g.mean()) if g.size else None,
                "bins": bins,
                "router_score": s,
                "gain": g,
            }
        )
    return {"metric": metric, "higher_is_better": _higher(metric), "pairs": out}


# --------------------------------------------------------------------------- the table


def table_for(run_dir: str | Path) -> tuple[Any, str | None]:
    """The run compiled in memory as ``pareto`` would (defaults), or (None, why not)."""
    from hadis_profile.pareto import compile_run
    from hadis_profile.table import CascadeTable

    try:
        doc = compile_run(run_dir)
        return CascadeTable.from_document(
            doc, "the run compiled in memory with pareto's defaults"
        ), None
    except HadisError as e:
        return None, str(e)


def _table(table: Any) -> dict | None:
    if table is None:
        return None
    return {
        "source": table.source,
        "sha256": table.sha256,
        "quality_metric": table.quality_metric,
        "higher_is_better": _table_higher(table),
        "rows": [{"index": i, **r} for i, r in enumerate(table.rows)],
    }


def _table_higher(table: Any) -> bool:
    info = table.provenance.get("metrics", {}).get(table.quality_metric, {})
    return bool(info.get("higher_is_better", True))


def _capacity(table: Any, gpus: int) -> dict | None:
    """The quality of the plan ``resolve`` picks at each (load, SLO) of a log grid.

    SLOs run from half the fastest model's batch-1 p99 to 8x the slowest's; loads from
    1 % to 150 % of what ``gpus`` GPUs of the fastest model carry at its best batch.
    A cell is None (infeasible) when no plan meets the load within the SLO.
    """
    from hadis_profile.resolve import resolve

    b1, best = [], []
    for m in table.models.values():
        pts = {
            int(b): p
            for b, p in m.get("latency", {}).items()
            if not p.get("infeasible") and p.get("p99_s")
        }
        if 1 in pts:
            b1.append(pts[1]["p99_s"])
        if pts:
            best.append(max(b / p["p99_s"] for b, p in pts.items()))
    if not b1 or not best:
        return None
    q_hi = 1.5 * gpus * max(best)
    loads = np.geomspace(q_hi / 100, q_hi, GRID[0])
    slos = np.geomspace(0.5 * min(b1), 8 * max(b1), GRID[1])
    quality = np.full((slos.size, loads.size), np.nan)
    rows = np.full((slos.size, loads.size), -1, dtype=np.int64)
    for i, slo in enumerate(slos):
        for j, qps in enumerate(loads):
            plan = resolve(table, qps=float(qps), slo_s=float(slo), gpus=gpus)
            if plan.feasible:
                quality[i, j] = np.nan if plan.quality is None else plan.quality
                rows[i, j] = plan.row
    pairs = {
        int(r): table.rows[r]["light"]
        + ("" if table.rows[r]["heavy"] is None else f" → {table.rows[r]['heavy']}")
        for r in np.unique(rows[rows >= 0])
    }
    return {
        "gpus": gpus,
        "quality_metric": table.quality_metric,
        "higher_is_better": _table_higher(table),
        "qps": loads,
        "slo_s": slos,
        "quality": quality,  # [slo, qps]; None where infeasible
        "row": rows,  # [slo, qps]; -1 where infeasible
        "pairs": pairs,
        "feasible_cells": int((rows >= 0).sum()),
    }


# --------------------------------------------------------------------------- simulation


def read_simulation(sim_dir: str | Path) -> dict:
    """A ``simulate --out`` folder (or a ``--scenario`` one): summary and window timelines."""
    root = Path(sim_dir)
    try:
        summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    except OSError as e:
        raise HadisError(f"{root} is not a simulation folder ({e.strerror or e}).") from None
    except json.JSONDecodeError:
        raise HadisError(f"{root / 'summary.json'} is not valid JSON.") from None
    if "blocks" in summary:
        blocks = {name: (b, root / name) for name, b in summary["blocks"].items()}
        title = summary.get("scenario")
    elif "policies" in summary:
        blocks, title = {"": (summary, root)}, None
    else:
        raise HadisError(f"{root / 'summary.json'} is not a simulation summary.")
    out = []
    for name, (block, folder) in blocks.items():
        metric = block.get("quality_metric") or summary.get("quality_metric")
        out.append(
            {
                "block": name,
                "quality_metric": metric,
                "workload": block.get("workload"),
                "notes": block.get("notes", []),
                "policies": block["policies"],
                "windows": _windows(folder / "windows.csv", metric),
            }
        )
    return {"path": str(root), "scenario": title, "blocks": out}


def _windows(path: Path, metric: str | None) -> dict[str, dict[str, list]]:
    """policy -> column -> values over time, from a simulation's windows.csv."""
    cols = ("window_start_s", "demand_qps", "violation_ratio", "gpus", "served")
    out: dict[str, dict[str, list]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                series = out.setdefault(row["policy"], {c: [] for c in (*cols, "quality")})
                for c in cols:
                    series[c].append(_float(row.get(c)))
                series["quality"].append(_float(row.get(f"quality:{metric}")))
    except OSError:
        return {}
    return out


def _float(text: str | None) -> float | None:
    try:
        x = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- images


def _sheet(flat, run_dir, prompts, per_image, metric, models) -> dict | None:
    """A few prompts (spread over the quality range) x models, one saved image each."""
    saved = [r for r in flat["images"][2] if r[5] is not None]
    if not saved:
        return None
    names = [m["name"] for m in models]
    by: dict[tuple[str, int], tuple[int, str]] = {}
    for image_id, model, pid, _seed_index, _seed, path in sorted(saved, key=lambda r: r[3]):
        by.setdefault((model, pid), (image_id, path))
    cover = defaultdict(int)
    for _model, pid in by:
        cover[pid] += 1
    best = max(cover.values())
    candidates = sorted(p for p, c in cover.items() if c == best)
    cols = [n for n in names if any((n, p) in by for p in candidates)][:SHEET_MODELS]
    quality = per_image.get(metric, {}) if metric else {}

    def mean_quality(pid: int) -> float:
        v = [quality[m]["per_prompt"][pid] for m in cols if m in quality]
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else 0.0

    candidates.sort(key=mean_quality)
    k = min(SHEET_PROMPTS, len(candidates))
    picks = [candidates[round(i * (len(candidates) - 1) / max(k - 1, 1))] for i in range(k)]
    picks = list(dict.fromkeys(picks))
    cells = []
    for pid in picks:
        for m in cols:
            if (m, pid) not in by:
                continue
            image_id, path = by[(m, pid)]
            p = Path(path)
            q = quality.get(m, {}).get("per_prompt")
            cells.append(
                {
                    "prompt_id": pid,
                    "model": m,
                    "image_id": image_id,
                    "path": str(p if p.is_absolute() else run_dir / p),
                    "quality": None if q is None else float(q[pid]),
                }
            )
    return {
        "metric": metric,
        "models": cols,
        "prompts": [{"prompt_id": p, "text": prompts[p]} for p in picks],
        "cells": cells,
    }
