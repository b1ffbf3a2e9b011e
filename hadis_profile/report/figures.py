"""The report's figures (matplotlib, Agg canvas, no pyplot): PNG bytes drawn from ``report.json``.

Each function takes one section of the document :func:`hadis_profile.report.data.collect`
returns and draws exactly those numbers, so the picture and ``report.json`` cannot
disagree; it returns None when the section has nothing to draw. matplotlib is
imported inside the functions (importing this module costs nothing).
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

import numpy as np

DPI = 110
STAGES = ("text_encoding", "denoising", "vae_decode")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _grid(fig: Any, n: int, cols: int) -> list[Any]:
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def _batch_axis(ax: Any, batches: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.grid(True, alpha=0.25)


def _feasible(model: dict) -> list[dict]:
    return [p for p in model["points"] if not p["infeasible"]]


# --------------------------------------------------------------------------- per model


def latency_png(models: list[dict]) -> bytes | None:
    """Per model: p50 and p99 seconds per batch against batch size, every raw sample as a
    dot, the OOM point as a red cross on the top edge."""
    drawn = [m for m in models if m["points"]]
    if not drawn:
        return None
    cols = 4 if len(drawn) > 6 else 3
    fig = _figure(4.0 * min(cols, len(drawn)), 3.0 * -(-len(drawn) // cols) + 0.3)
    rng = np.random.default_rng(0)
    for ax, m in zip(_grid(fig, len(drawn), cols), drawn, strict=True):
        ok = _feasible(m)
        b = [p["batch_size"] for p in ok]
        for p in ok:
            xs = np.asarray(p["samples_s"], dtype=float)
            if xs.size:
                jitter = p["batch_size"] * 2 ** rng.uniform(-0.12, 0.12, xs.size)
                ax.scatter(jitter, xs, s=6, color="0.55", alpha=0.5, linewidths=0, zorder=1)
        if ok:
            ax.plot(b, [p["p50_s"] for p in ok], "o-", color="C0", ms=4, label="p50", zorder=3)
            ax.plot(b, [p["p99_s"] for p in ok], "s--", color="C3", ms=3, label="p99", zorder=3)
        for p in m["points"]:
            if p["infeasible"]:
                ax.plot([p["batch_size"]], [1], "x", color="red", ms=9, mew=2,
                        transform=ax.get_xaxis_transform(), clip_on=False, label="OOM")  # fmt: skip
        _batch_axis(ax, [p["batch_size"] for p in m["points"]])
        ax.set_title(f"{m['name']} ({m['steps']} steps)", fontsize=9)
        ax.set_ylabel("seconds per batch")
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def throughput_png(models: list[dict]) -> bytes | None:
    """Images per second on one GPU (batch / p50) against batch size, one line per model."""
    drawn = [m for m in models if _feasible(m)]
    if not drawn:
        return None
    fig = _figure(7.5, 4.2)
    ax = fig.subplots()
    batches = sorted({p["batch_size"] for m in models for p in m["points"]})
    for i, m in enumerate(drawn):
        ok = _feasible(m)
        ax.plot([p["batch_size"] for p in ok], [p["images_per_s"] for p in ok], "o-",
                color=f"C{i % 10}", ms=4, label=m["name"])  # fmt: skip
    from matplotlib.ticker import FuncFormatter

    _batch_axis(ax, batches)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.set_ylabel("images / s per GPU (batch / p50)")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def memory_png(models: list[dict]) -> bytes | None:
    """Peak memory (GiB) against batch size per model; a cross where the batch ran out of
    memory (drawn at the last feasible peak, labelled OOM)."""
    drawn = [m for m in models if any(p.get("peak_mem_bytes") for p in m["points"])]
    if not drawn:
        return None
    fig = _figure(7.5, 4.2)
    ax = fig.subplots()
    batches = sorted({p["batch_size"] for m in drawn for p in m["points"]})
    for i, m in enumerate(drawn):
        ok = [p for p in _feasible(m) if p.get("peak_mem_bytes")]
        x = [p["batch_size"] for p in ok]
        y = [p["peak_mem_bytes"] / 2**30 for p in ok]
        ax.plot(x, y, "o-", color=f"C{i % 10}", ms=4, label=m["name"])
        if m["oom_batch"] is not None and y:
            ax.plot([m["oom_batch"]], [y[-1]], "x", color=f"C{i % 10}", ms=10, mew=2.5)
            ax.annotate(f"OOM at {m['oom_batch']}", (m["oom_batch"], y[-1]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    _batch_axis(ax, batches)
    ax.set_ylabel("peak memory (GiB)")
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def stages_png(models: list[dict]) -> bytes | None:
    """Where a batch-1 call spends its time: text encoding, denoising, VAE decode, rest."""
    drawn = [m for m in models if m.get("stages_s")]
    if not drawn:
        return None
    fig = _figure(7.5, 0.5 * len(drawn) + 1.4)
    ax = fig.subplots()
    names = [m["name"] for m in drawn]
    left = np.zeros(len(drawn))
    keys = [*STAGES, *sorted({k for m in drawn for k in m["stages_s"]} - set(STAGES))]
    for i, k in enumerate(keys):
        w = np.array([float(m["stages_s"].get(k) or 0.0) for m in drawn])
        ax.barh(names, w, left=left, color=f"C{i}", label=k.replace("_", " "))
        left += w
    ax.invert_yaxis()
    ax.set_xlabel("seconds per call at batch size 1")
    ax.legend(fontsize=7, ncols=min(4, len(keys)), loc="lower right")
    return _png(fig)


# --------------------------------------------------------------------------- quality


def quality_png(quality: list[dict]) -> bytes | None:
    """Per score and confidence: one box per model (box 25-75 %, whiskers 5-95 %, line the
    median, triangle the mean), drawn from the quantiles in report.json."""
    if not quality:
        return None
    n_models = max(len(q["models"]) for q in quality)
    cols = 2 if len(quality) > 1 else 1
    fig = _figure(6.0 * cols if n_models > 4 else 4.8 * cols, 3.4 * -(-len(quality) // cols))
    for ax, q in zip(_grid(fig, len(quality), cols), quality, strict=True):
        stats = [
            {
                "label": m["model"], "med": m["quantiles"]["0.5"], "q1": m["quantiles"]["0.25"],
                "q3": m["quantiles"]["0.75"], "whislo": m["quantiles"]["0.05"],
                "whishi": m["quantiles"]["0.95"], "mean": m["mean"],
            }
            for m in q["models"]
        ]  # fmt: skip
        ax.bxp(stats, showmeans=True, showfliers=False, patch_artist=True,
               boxprops={"facecolor": "#cfe0f3"})  # fmt: skip
        ax.tick_params(axis="x", labelrotation=25, labelsize=7)
        arrow = "↑" if q["higher_is_better"] else "↓"
        ax.set_title(f"{q['signal']} {arrow}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.25)
    return _png(fig)


def gains_png(gains: dict | None) -> bytes | None:
    """Per pair: heavy-minus-light quality per prompt against the router score, the mean in
    ten router-score bins, and Spearman's rho in the title."""
    if not gains or not gains["pairs"]:
        return None
    pairs = gains["pairs"]
    cols = 3 if len(pairs) > 4 else 2
    fig = _figure(4.2 * min(cols, len(pairs)), 3.2 * -(-len(pairs) // cols) + 0.3)
    for ax, p in zip(_grid(fig, len(pairs), cols), pairs, strict=True):
        s, g = np.asarray(p["router_score"], float), np.asarray(p["gain"], float)
        alpha = float(np.clip(30 / max(s.size, 1), 0.05, 0.8))
        ax.scatter(s, g, s=18 if s.size < 300 else 5, alpha=alpha, color="C0", linewidths=0)
        mids = [(b["lo"] + b["hi"]) / 2 for b in p["bins"]]
        ax.plot(mids, [b["mean_gain"] for b in p["bins"]], "o-", color="C3", ms=4,
                label="mean per score decile")  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        rho = "n/a" if p["spearman"] is None else f"{p['spearman']:.3f}"
        ax.set_title(f"{p['light']} → {p['heavy']}\nSpearman ρ = {rho} (n = {p['n']})", fontsize=8)
        ax.set_xlabel("router score (higher: harder)")
        ax.set_ylabel(f"gain in {gains['metric'].split(':', 1)[0]}", fontsize=8)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=6, loc="best")
    return _png(fig)


# --------------------------------------------------------------------------- the table


def pareto_png(table_doc: dict, table: Any) -> tuple[bytes, list[dict]]:
    """The Pareto plot of :mod:`hadis_profile.report.plots` and, per row drawn, its pixel
    position in the PNG (``x``, ``y`` from the top left) for the page's image map."""
    from hadis_profile.report.plots import pareto_figure

    fig, ax = pareto_figure(table)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    height = fig.bbox.height
    metric = table_doc["quality_metric"]
    spots = []
    for row in table_doc["rows"]:
        q = row["quality"].get(metric)
        if q is None:
            continue
        x, y = ax.transData.transform((row["gpu_s_per_query"], q))
        spots.append({"index": row["index"], "x": round(float(x)), "y": round(float(height - y))})
    return _png(fig), spots


def capacity_png(cap: dict | None) -> bytes | None:
    """Left: the quality of ``resolve``'s plan over load x SLO (hatched grey: infeasible).
    Right: which pair (or single model) that plan serves."""
    if not cap:
        return None
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    qps, slo = np.asarray(cap["qps"], float), np.asarray(cap["slo_s"], float)
    q = np.array([[np.nan if v is None else v for v in r] for r in cap["quality"]], float)
    rows = np.asarray(cap["row"], dtype=int)
    fig = _figure(13.0, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    for ax in (ax1, ax2):
        ax.set_facecolor("0.85")
        ax.add_patch(_hatch(ax))
    cmap = "viridis" if cap["higher_is_better"] else "viridis_r"
    mesh = ax1.pcolormesh(qps, slo, np.ma.masked_invalid(q), cmap=cmap, shading="nearest")
    better = "higher is better" if cap["higher_is_better"] else "lower is better"
    fig.colorbar(mesh, ax=ax1, label=f"{cap['quality_metric']} ({better})")
    # One colour per pair (or single model), in the order the rows reach them.
    labels = list(dict.fromkeys(cap["pairs"][k] for k in sorted(cap["pairs"], key=int)))
    of_row = {int(k): labels.index(v) for k, v in cap["pairs"].items()}
    cat = np.array([[of_row.get(int(r), -1) for r in line] for line in rows])
    colours = [f"C{i % 10}" for i in range(len(labels))] or ["C0"]
    ax2.pcolormesh(qps, slo, np.ma.masked_less(cat, 0), cmap=ListedColormap(colours),
                   vmin=-0.5, vmax=len(colours) - 0.5, shading="nearest")  # fmt: skip
    handles = [Patch(color=colours[i], label=label) for i, label in enumerate(labels)]
    handles.append(Patch(facecolor="0.85", hatch="///", label="infeasible"))
    ax2.legend(handles=handles[:12], fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    for ax, title in ((ax1, "plan quality"), (ax2, "plan served (row's pair)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("load (queries / s)")
        ax.set_ylabel("SLO (s)")
        ax.set_title(f"{title}, {cap['gpus']} GPUs", fontsize=9)
    return _png(fig)


def _hatch(ax: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="none",
                     edgecolor="0.6", hatch="///", lw=0, zorder=0)  # fmt: skip


# --------------------------------------------------------------------------- simulation, images


def simulation_png(block: dict) -> bytes | None:
    """Demand, SLO violations and quality per window over time, one line per policy."""
    wins = block.get("windows") or {}
    if not wins:
        return None
    fig = _figure(10.0, 7.0)
    axes = fig.subplots(3, 1, sharex=True)
    arrow = ""
    for i, (policy, w) in enumerate(wins.items()):
        t = np.asarray(w["window_start_s"], float)
        kw = {"color": f"C{i % 10}", "lw": 1.1, "label": policy}
        if i == 0:
            axes[0].plot(t, _nan(w["demand_qps"]), color="black", lw=1.2, label="demand")
        axes[1].plot(t, 100 * _nan(w["violation_ratio"]), **kw)
        axes[2].plot(t, _nan(w["quality"]), **kw)
        arrow = block.get("quality_metric") or ""
    axes[0].set_ylabel("queries / s")
    axes[1].set_ylabel("SLO violations (%)")
    axes[2].set_ylabel(arrow.split(":", 1)[0] or "quality")
    axes[2].set_xlabel("time (s)")
    axes[1].legend(fontsize=7, ncols=4, loc="upper left")
    for ax in axes:
        ax.grid(True, alpha=0.25)
    return _png(fig)


def _nan(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def contact_sheet_png(sheet: dict | None) -> bytes | None:
    """A few prompts (rows) across models (columns), each with its quality under the image."""
    if not sheet or not sheet["cells"]:
        return None
    from PIL import Image

    models, prompts = sheet["models"], sheet["prompts"]
    fig = _figure(1.9 * len(models) + 2.2, 2.1 * len(prompts) + 0.4)
    axes = fig.subplots(len(prompts), len(models), squeeze=False)
    cells = {(c["prompt_id"], c["model"]): c for c in sheet["cells"]}
    metric = (sheet.get("metric") or "quality").split(":", 1)[0]
    for i, p in enumerate(prompts):
        for j, m in enumerate(models):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            c = cells.get((p["prompt_id"], m))
            if c is not None:
                try:
                    with Image.open(c["path"]) as im:
                        im.thumbnail((256, 256))
                        ax.imshow(np.asarray(im.convert("RGB")))
                except OSError:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
                q = c["quality"]
                ax.set_xlabel(f"{metric} {q:.3g}" if q is not None else "", fontsize=7)
            if i == 0:
                ax.set_title(m, fontsize=8)
            if j == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(p["text"], 28)[:4]), fontsize=7,
                              rotation=0, ha="right", va="center")  # fmt: skip
    return _png(fig)
