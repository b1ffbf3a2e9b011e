"""The report as one offline HTML page, and the folder it lives in.

:func:`write_report` collects the numbers (:mod:`.data`), draws them
(:mod:`.figures`) and writes ``index.html``, ``report.json`` and ``figures/*.png``,
each atomically. The page needs nothing from the network: figures are embedded
as ``data:`` URIs, the style is inline, there is no script, and a Content
Security Policy forbids every other load. The Pareto plot's points are an image
map: hovering a point shows its row, clicking it jumps to the row in the table.
Every piece of user text (model names, prompts, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from hadis_profile.fileio import atomic_write_bytes, atomic_write_text
from hadis_profile.report import figures as F
from hadis_profile.report.data import collect, table_for

INDEX, REPORT_JSON, FIGURES = "index.html", "report.json", "figures"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_ROWS = 500

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232b}
header{background:#1d3557;color:#fff;padding:14px 28px}header h1{margin:0;font-size:21px}
header p{margin:4px 0 0;opacity:.85}nav{margin-top:8px}nav a{color:#cfe0f3;margin-right:14px}
main{padding:6px 28px 40px;max-width:1500px}h2{border-bottom:2px solid #1d3557;padding-top:14px}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #dde3ea}
figcaption{color:#4a5562;font-size:13px;max-width:900px}.wide img{max-width:none}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #dde3ea;padding:3px 7px;text-align:right}th{background:#eef2f6}
td.l,th.l{text-align:left}tr:target{background:#ffe9a8}tr.front td:first-child{font-weight:600}
.note{color:#7a4b00;background:#fff6e0;padding:6px 10px;border-left:3px solid #e0a100}
pre{background:#f5f7f9;padding:8px;overflow-x:auto;font-size:12px;max-height:360px}
"""


@dataclass
class Report:
    """What :func:`write_report` wrote: the page, the numbers, the figures (name -> path)."""

    index: Path
    json: Path
    figures: dict[str, Path]
    data: dict


def write_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    table: Any = None,
    sim_dir: str | Path | None = None,
    gpus: int = 8,
    hardware: str | None = None,
) -> Report:
    """Write ``out/index.html``, ``out/report.json`` and ``out/figures/*.png`` for a run."""
    out = Path(out)
    note = None
    if table is None:
        table, note = table_for(run_dir)
    doc = collect(
        run_dir, table=table, table_note=note, sim_dir=sim_dir, gpus=gpus, hardware=hardware
    )
    pngs, spots = _figures(doc, table)
    paths = {}
    for name, png in pngs.items():
        paths[name] = out / FIGURES / f"{name}.png"
        atomic_write_bytes(paths[name], png)
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    atomic_write_text(out / REPORT_JSON, text)
    atomic_write_text(out / INDEX, page(doc, pngs, spots))
    return Report(out / INDEX, out / REPORT_JSON, paths, doc)


def _figures(doc: dict, table: Any) -> tuple[dict[str, bytes], list[dict]]:
    drawn: dict[str, bytes | None] = {
        "latency": F.latency_png(doc["models"]),
        "throughput": F.throughput_png(doc["models"]),
        "memory": F.memory_png(doc["models"]),
        "stages": F.stages_png(doc["models"]),
        "quality": F.quality_png(doc["quality"]),
        "gains": F.gains_png(doc["gains"]),
    }
    spots: list[dict] = []
    if doc["table"] is not None and table is not None:
        drawn["pareto"], spots = F.pareto_png(doc["table"], table)
        drawn["capacity"] = F.capacity_png(doc["capacity"])
    for i, block in enumerate((doc["simulation"] or {}).get("blocks", [])):
        drawn[f"simulation-{block['block'] or i}"] = F.simulation_png(block)
    drawn["contact-sheet"] = F.contact_sheet_png(doc["contact_sheet"])
    return {k: v for k, v in drawn.items() if v is not None}, spots


# --------------------------------------------------------------------------- the page


def _img(name: str, png: bytes, alt: str, usemap: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    extra = f' usemap="#{usemap}"' if usemap else ""
    return (
        f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}" data-figure="{name}"{extra}>'
    )


def _figure(
    pngs: dict, name: str, caption: str, *, wide: bool = False, usemap: str | None = None
) -> str:
    if name not in pngs:
        return ""
    cls = ' class="wide scroll"' if wide else ""
    return (
        f'<figure id="fig-{name}"{cls}>{_img(name, pngs[name], caption, usemap)}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _num(x: Any, fmt: str = ".4g") -> str:
    return "–" if x is None else format(x, fmt) if isinstance(x, (int, float)) else escape(str(x))


def _table(
    head: list[str], rows: list[list[Any]], *, left: int = 1, attrs: list[str] | None = None
) -> str:
    th = "".join(
        f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>"
        for i, h in enumerate(head)
    )
    body = []
    for k, row in enumerate(rows):
        tds = "".join(
            f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr{attrs[k] if attrs else ''}>{tds}</tr>")
    return f'<div class="scroll"><table><tr>{th}</tr>{"".join(body)}</table></div>'


def _models_section(doc: dict, pngs: dict) -> str:
    rows = []
    for m in doc["models"]:
        b1 = next((p for p in m["points"] if p["batch_size"] == 1 and not p["infeasible"]), None)
        peak = max((p.get("peak_mem_bytes") or 0 for p in m["points"]), default=0)
        n = sum(len(p["samples_s"]) for p in m["points"])
        rows.append(
            [
                escape(m["name"]),
                m["steps"],
                _num(b1 and b1["p50_s"]),
                _num(b1 and b1["p99_s"]),
                _num(m["max_feasible_batch"]),
                _num(m["oom_batch"]),
                _num(peak / 2**30 if peak else None, ".3g"),
                n,
            ]
        )
    head = ["model", "steps", "b1 p50 s", "b1 p99 s", "max batch", "OOM at", "peak GiB", "samples"]
    return "".join(
        [
            '<section id="models"><h2>Per model</h2>',
            f"<p>Hardware <b>{escape(str(doc['run']['hardware_label']))}</b>; models cheapest "
            "first.</p>",
            _table(head, rows),
            _figure(
                pngs,
                "latency",
                "Seconds per batch against batch size: p50 (blue), p99 (red, dashed), every raw "
                "timed call (grey dots; sweep and generation calls); a red cross on the top edge "
                "marks a batch size that ran out of memory.",
            ),
            _figure(
                pngs,
                "throughput",
                "Throughput of one GPU: images per second (batch size / p50) against batch size.",
            ),
            _figure(
                pngs,
                "memory",
                "Peak memory against batch size; a cross marks the OOM point (the first batch "
                "size that did not fit).",
            ),
            _figure(
                pngs, "stages", "Stage breakdown of one batch-1 call (measured with run --stages)."
            ),
            "</section>",
        ]
    )


def _quality_section(doc: dict, pngs: dict) -> str:
    parts = ['<section id="quality"><h2>Quality</h2>']
    if not doc["quality"]:
        parts.append('<p class="note">The run holds no per-image scores or confidences.</p>')
    parts.append(
        _figure(
            pngs,
            "quality",
            "Per-image scores and discriminator confidences per model: box 25-75 %, whiskers "
            "5-95 %, line the median, triangle the mean (↑ higher is better, ↓ lower).",
        )
    )
    g = doc["gains"]
    if g and g["pairs"]:
        parts.append(
            _figure(
                pngs,
                "gains",
                f"What the router sees: per prompt, the heavy model's {escape(g['metric'])} "
                "minus the light model's (positive: heavy is better) against the router score; "
                "red, the mean per score decile. A useful router has a positive rank "
                "correlation.",
            )
        )
        rows = [
            [
                escape(f"{p['light']} → {p['heavy']}"),
                p["n"],
                _num(p["spearman"], ".3f"),
                _num(p["mean_gain"]),
            ]
            for p in g["pairs"]
        ]
        parts.append(_table(["pair", "prompts", "Spearman ρ", "mean gain"], rows))
    parts.append("</section>")
    return "".join(parts)


def _table_section(doc: dict, pngs: dict, spots: list[dict]) -> str:
    t = doc["table"]
    if t is None:
        return (
            '<section id="table"><h2>The table</h2>'
            '<p class="note">No cascade table (see the notes).</p></section>'
        )
    metric = t["quality_metric"]
    rows, attrs = [], []
    for r in t["rows"][:MAX_ROWS]:
        f = r["fractions"]
        pair = r["light"] if r["heavy"] is None else f"{r['light']} → {r['heavy']}"
        rows.append(
            [
                r["index"],
                "★" if r.get("on_front") else "",
                escape(pair),
                _num(r["r"], ".2f"),
                _num(r["d"], ".2f"),
                _num(r["router_threshold"]),
                _num(r["confidence_threshold"]),
                _num(f["direct"], ".1%"),
                _num(f["escalated"], ".1%"),
                _num(f["light"], ".1%"),
                _num(r["quality"].get(metric)),
                _num(r["gpu_s_per_query"]),
                _num(r["latency_s"]),
            ]
        )
        attrs.append(f' id="row-{r["index"]}"' + (' class="front"' if r.get("on_front") else ""))
    by_index = {r["index"]: r for r in t["rows"]}
    areas = []
    for s in spots:
        r = by_index[s["index"]]
        pair = r["light"] if r["heavy"] is None else f"{r['light']} → {r['heavy']}"
        f = r["fractions"]
        tip = (
            f"row {r['index']}: {pair}, r {_num(r['r'], '.2f')}, d {_num(r['d'], '.2f')}, router "
            f"threshold {_num(r['router_threshold'])}, "
            f"confidence threshold {_num(r['confidence_threshold'])}; direct {f['direct']:.1%}, "
            f"escalated {f['escalated']:.1%}, light alone {f['light']:.1%}; "
            f"{metric} {_num(r['quality'].get(metric))}, {_num(r['gpu_s_per_query'])} GPU-s/query"
        )
        areas.append(
            f'<area shape="circle" coords="{s["x"]},{s["y"]},7" href="#row-{r["index"]}" '
            f'title="{escape(tip)}" alt="{escape(tip)}">'
        )
    more = f"<p>First {MAX_ROWS} of {len(t['rows'])} rows.</p>" if len(t["rows"]) > MAX_ROWS else ""
    head = [
        "#",
        "",
        "pair",
        "r",
        "d",
        "router thr",
        "conf thr",
        "direct",
        "escalated",
        "light alone",
        metric,
        "GPU-s/query",
        "latency s",
    ]
    return "".join(
        [
            '<section id="table"><h2>The table</h2>',
            f"<p>{escape(t['source'])} (sha256 {escape(t['sha256'][:16])}), ranked by "
            f"{escape(metric)}.</p>",
            f'<map name="pareto-map">{"".join(areas)}</map>',
            _figure(
                pngs,
                "pareto",
                "The Pareto front: quality against GPU-seconds per query. Hover a point for its "
                "row; click it to jump to the row below.",
                wide=True,
                usemap="pareto-map",
            ),
            _table(head, rows, left=3, attrs=attrs),
            more,
            _capacity(doc, pngs),
            "</section>",
        ]
    )


def _capacity(doc: dict, pngs: dict) -> str:
    c = doc["capacity"]
    if not c:
        return ""
    return "".join(
        [
            f'<h3 id="capacity">Capacity map ({c["gpus"]} GPUs)</h3>',
            _figure(
                pngs,
                "capacity",
                f"For each load and SLO, the plan resolve() picks on {c['gpus']} GPUs: its "
                "quality (left) and the pair it serves (right). Hatched grey: no plan meets the "
                f"load within the SLO ({c['feasible_cells']} of "
                f"{len(c['qps']) * len(c['slo_s'])} cells are feasible).",
            ),
        ]
    )


def _simulation_section(doc: dict, pngs: dict) -> str:
    sim = doc["simulation"]
    if not sim:
        return ""
    parts = [
        '<section id="simulation"><h2>Simulation</h2>',
        f"<p>{escape(sim['path'])}"
        + (f", scenario {escape(sim['scenario'])}" if sim["scenario"] else "")
        + "</p>",
    ]
    for i, b in enumerate(sim["blocks"]):
        metric = b["quality_metric"] or "quality"
        if b["block"]:
            parts.append(f"<h3>{escape(b['block'])}</h3>")
        rows = [
            [
                escape(p["policy"]),
                p["queries"],
                p["served"],
                p["late"],
                p["dropped"],
                _num(p["violation_ratio"], ".2%"),
                _num((p.get("quality") or {}).get(metric)),
                _num(p.get("p50_s")),
                _num(p.get("p99_s")),
                _num(p.get("gpu_s_used"), ".4g"),
            ]
            for p in b["policies"]
        ]
        parts.append(
            _table(
                [
                    "policy",
                    "queries",
                    "served",
                    "late",
                    "dropped",
                    "SLO violations",
                    metric,
                    "p50 s",
                    "p99 s",
                    "GPU-s used",
                ],
                rows,
            )
        )
        parts.append(
            _figure(
                pngs,
                f"simulation-{b['block'] or i}",
                "Per window: demand, SLO violations and the quality served, one line per policy.",
            )
        )
        parts += [f'<p class="note">{escape(n)}</p>' for n in b["notes"]]
    parts.append("</section>")
    return "".join(parts)


def _images_section(doc: dict, pngs: dict) -> str:
    s = doc["contact_sheet"]
    if not s:
        return ""
    listed = "".join(f"<li>prompt {p['prompt_id']}: {escape(p['text'])}</li>" for p in s["prompts"])
    return (
        '<section id="images"><h2>Images</h2>'
        + _figure(
            pngs,
            "contact-sheet",
            "A few prompts across models (the first saved image of each), from the lowest to "
            f"the highest mean {escape(str(s['metric']))}; the number under an image is its "
            "prompt's mean over that model's images.",
        )
        + f"<ol>{listed}</ol></section>"
    )


def _provenance_section(doc: dict) -> str:
    p = doc["provenance"]
    run = doc["run"]
    ident = [[escape(k), escape(str(v))] for k, v in run.items()]
    hw = [
        [
            escape(h["label"]),
            escape(str(h.get("device_name"))),
            escape(str(h.get("driver"))),
            escape(", ".join(f"{k} {v}" for k, v in sorted((h.get("libraries") or {}).items()))),
        ]
        for h in p["hardware"]
    ]
    ck = []
    for name, c in p["checkpoints"].items():
        ident_ = c["identity"] or {}
        who = ident_.get("commit") or ident_.get("sha256")
        ck.append(
            [
                escape(name),
                escape(str(c["source"])),
                escape(str(c["revision"])),
                escape(str(who)[:16] if who else "–"),
                escape(str(c["weights"] or "checkpoint")),
                len(c["components"]),
            ]
        )
    return "".join(
        [
            '<section id="provenance"><h2>Provenance</h2>',
            _table(["run", ""], ident, left=2),
            "<h3>Hardware and libraries</h3>",
            _table(["label", "device", "driver", "libraries"], hw, left=4),
            "<h3>Checkpoints</h3>",
            _table(
                ["model", "source", "revision", "commit / sha256", "weights", "components"],
                ck,
                left=5,
            ),
            "<h3>Seeds</h3>",
            f"<pre>{escape(json.dumps(p['seeds'], indent=1))}</pre>",
            "<h3>Everything the run recorded</h3>",
            f"<pre>{escape(json.dumps(p['run'], indent=1))}</pre>",
            "</section>",
        ]
    )


def page(doc: dict, pngs: dict[str, bytes], spots: list[dict]) -> str:
    """The whole page (no external resource: see the module docstring)."""
    run = doc["run"]
    title = f"hadis-profile report: {run['run_id']}"
    links = [("models", "Per model"), ("quality", "Quality"), ("table", "The table")]
    if doc["capacity"]:
        links.append(("capacity", "Capacity"))
    if doc["simulation"]:
        links.append(("simulation", "Simulation"))
    if doc["contact_sheet"]:
        links.append(("images", "Images"))
    links.append(("provenance", "Provenance"))
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in doc["notes"])
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
            f"<header><h1>{escape(title)}</h1><p>{run['n_prompts']} prompts, "
            f"{len(doc['models'])} models, "
            f"hadis-profile {escape(doc['tool_version'])}; numbers in "
            f"report.json.</p><nav>{nav}</nav></header><main>",
            notes,
            _models_section(doc, pngs),
            _quality_section(doc, pngs),
            _table_section(doc, pngs, spots),
            _simulation_section(doc, pngs),
            _images_section(doc, pngs),
            _provenance_section(doc),
            "</main></body></html>\n",
        ]
    )
