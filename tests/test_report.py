"""``hadis-profile report``: every number the page shows is the library's own answer.

Checked against independent computations: latency against the store, quantiles
against numpy on the exported per-image values, the router's rank correlation
against ``scipy.stats.spearmanr`` on per-prompt means from ``load_measurements``,
every capacity-map cell against ``resolve()``, the image map against the Pareto
PNG's own pixels, the simulation against its ``summary.json``. The page is also
checked to load nothing from outside and to escape user text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_helpers import SIM_ARGS, synthetic_run

from hadis_profile.report.data import spearman
from hadis_profile.resolve import load_table, resolve
from hadis_profile.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
scipy_stats = pytest.importorskip("scipy.stats")


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "hadis_profile", *args], capture_output=True,
                          text=True, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic run with images, its table, a simulation, and the report of all three."""
    root = tmp_path_factory.mktemp("report")
    run = synthetic_run(root)
    table = root / "table.json"
    assert cli("pareto", "--run", str(run), "--out", str(table)).returncode == 0
    res = cli("simulate", str(table), "--run", str(run), *SIM_ARGS, "--out", str(root / "sim"))
    assert res.returncode == 0, res.stderr
    out = root / "report"
    res = cli("report", str(run), "--table", str(table), "--sim", str(root / "sim"),
              "--gpus", "6", "--out", str(out), "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    doc = json.loads((out / "report.json").read_text())
    return root, run, table, out, doc, listing


def test_files_and_figures(built):
    _, _, _, out, _, listing = built
    assert listing["index"] == str(out / "index.html")
    expected = {"latency", "throughput", "memory", "stages", "quality", "gains", "pareto",
                "capacity", "simulation-0", "contact-sheet"}  # fmt: skip
    assert set(listing["figures"]) == expected
    for path in listing["figures"].values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "index.html").read_text()
    assert sorted(re.findall(r'data-figure="([^"]+)"', html)) == sorted(expected)


def test_the_page_loads_nothing_from_outside(built):
    html = (built[3] / "index.html").read_text()
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)  # only data: URIs and anchors
    assert not re.search(r"https?://", html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_latency_points_are_the_store_s(built):
    _, run, _, _, doc, _ = built
    with RunStore.open(run) as store:
        for m in doc["models"]:
            stored = store.latency(m["name"])
            samples = store.latency_samples(m["name"])
            for p in m["points"]:
                s = stored[p["batch_size"]]
                assert p["infeasible"] == s.infeasible
                if not s.infeasible:
                    assert p["p50_s"] == s.p50_s and p["p99_s"] == s.p99_s
                    assert p["images_per_s"] == pytest.approx(p["batch_size"] / s.p50_s)
                assert p["samples_s"] == [x for x, _ in samples.get(p["batch_size"], [])]
            oom = [b for b, s in stored.items() if s.infeasible]
            assert m["oom_batch"] == (min(oom) if oom else None)
    assert any(m["oom_batch"] for m in doc["models"])  # the synthetic 40 GB limit bites
    assert len(doc["models"][0]["points"][0]["samples_s"]) == 8


def test_quality_quantiles_are_numpy_s(built, tmp_path):
    _, run, _, _, doc, _ = built
    with RunStore.open(run) as store:
        store.export(tmp_path, "csv")
    import csv

    with open(tmp_path / "images.csv") as f:
        model_of = {r["image_id"]: r["model"] for r in csv.DictReader(f)}
    values: dict[tuple[str, str], list[float]] = {}
    with open(tmp_path / "scores.csv") as f:
        for r in csv.DictReader(f):
            values.setdefault((r["metric"], model_of[r["image_id"]]), []).append(float(r["value"]))
    for q in doc["quality"]:
        if q["kind"] != "score":
            continue
        for m in q["models"]:
            x = np.array(values[(q["signal"], m["model"])])
            assert m["n"] == x.size and m["mean"] == pytest.approx(x.mean())
            assert m["quantiles"]["0.05"] == pytest.approx(np.quantile(x, 0.05))
            assert m["quantiles"]["0.5"] == pytest.approx(np.median(x))


def test_router_gain_correlation_is_scipy_s(built):
    _, run, _, _, doc, _ = built
    with RunStore.open(run) as store:
        meas = store.load_measurements()
    gains = doc["gains"]
    metric = gains["metric"]
    assert gains["pairs"], "the table's pairs must each get a gain panel"
    for p in gains["pairs"]:
        gain = meas.models[p["heavy"]].quality[metric] - meas.models[p["light"]].quality[metric]
        rho = scipy_stats.spearmanr(meas.router_scores, gain).statistic
        assert p["spearman"] == pytest.approx(rho, abs=1e-12)
        np.testing.assert_allclose(p["gain"], gain)
    # The synthetic router is noisy-correlated with difficulty: heavy helps hard prompts.
    assert all(p["spearman"] > 0.1 for p in gains["pairs"])


def test_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 200).astype(float), rng.integers(0, 7, 200).astype(float)
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(np.ones(10), y[:10]) is None


def test_capacity_map_is_what_resolve_picks(built):
    _, _, table_path, _, doc, _ = built
    cap = doc["capacity"]
    table = load_table(table_path)
    assert cap["gpus"] == 6
    infeasible = 0
    for i, slo in enumerate(cap["slo_s"]):
        for j, qps in enumerate(cap["qps"]):
            plan = resolve(table, qps=qps, slo_s=slo, gpus=6)
            assert cap["row"][i][j] == (plan.row if plan.feasible else -1)
            assert cap["quality"][i][j] == (plan.quality if plan.feasible else None)
            infeasible += not plan.feasible
    assert 0 < infeasible < len(cap["qps"]) * len(cap["slo_s"])  # both regions are drawn


def test_pareto_image_map_points_at_the_drawn_markers(built):
    from PIL import Image

    _, _, table_path, out, _, _ = built
    html = (out / "index.html").read_text()
    areas = re.findall(r'<area shape="circle" coords="(\d+),(\d+),\d+" href="#row-(\d+)"', html)
    table = load_table(table_path)
    assert len(areas) == sum(r["quality"].get(table.quality_metric) is not None for r in table.rows)
    png = np.asarray(Image.open(out / "figures" / "pareto.png").convert("RGB")).astype(int)
    for x, y, row in areas:
        assert f'id="row-{row}"' in html  # the linked table row exists
        patch = png[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
        assert (patch.sum(axis=2) < 600).any(), f"no marker under row {row}'s area"


def test_simulation_section_is_its_summary(built):
    root, _, _, _, doc, _ = built
    summary = json.loads((root / "sim" / "summary.json").read_text())
    (block,) = doc["simulation"]["blocks"]
    assert block["policies"] == summary["policies"]
    assert set(block["windows"]) == {"hadis", "clipper-light"}


def test_contact_sheet_spans_the_quality_range(built):
    _, run, _, _, doc, _ = built
    sheet = doc["contact_sheet"]
    with RunStore.open(run) as store:
        meas = store.load_measurements()
    metric = sheet["metric"]
    mean = np.mean([meas.models[m].quality[metric] for m in sheet["models"]], axis=0)
    picked = [p["prompt_id"] for p in sheet["prompts"]]
    assert len(picked) == 4 and picked[0] == int(np.argmin(mean))
    assert picked[-1] == int(np.argmax(mean))
    assert all(Path(c["path"]).is_file() for c in sheet["cells"])


def test_report_without_images_or_table_or_memory(tmp_path):
    """A run with no saved images: no contact sheet, and the table is compiled in memory."""
    run = synthetic_run(tmp_path, n_prompts=30, images=False)
    res = cli("report", str(run), "--out", str(tmp_path / "r"), "--json")
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)["figures"]
    assert "contact-sheet" not in figures and "stages" not in figures
    assert {"latency", "pareto", "capacity", "gains"} <= set(figures)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["contact_sheet"] is None and doc["table"]["source"].startswith("the run compiled")


def test_user_text_is_escaped(tmp_path):
    from hadis_profile.report.html import write_report

    run = synthetic_run(tmp_path, n_prompts=12)
    with RunStore.open(run) as store:
        store._db.execute("UPDATE prompts SET text = '<script>alert(' || id || ')</script>'")
        store.update_provenance({"note": "<img src=x onerror=alert(2)>"})
    rep = write_report(run, tmp_path / "r")
    html = rep.index.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html


def test_hadis_reference_report_with_a_scenario(shared_data, tmp_path):
    """The HADIS reference import: no memory or samples, a FID table, confidences only."""
    ref = tmp_path / "ref"
    res = cli("import", "hadis-reference", str(shared_data / "hadis-reference"), "--out", str(ref))
    assert res.returncode == 0, res.stderr
    table = tmp_path / "table.json"
    assert cli("pareto", "--run", str(ref), "--nominal", "--out", str(table)).returncode == 0
    sim = tmp_path / "sim"
    res = cli("simulate", str(table), "--run", str(ref), "--rate", "1:8", "--duration", "120",
              "--gpus", "16", "--slo", "60", "--out", str(sim))  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = tmp_path / "report"
    res = cli("report", str(ref), "--table", str(table), "--sim", str(sim), "--gpus", "16",
              "--out", str(out), "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    figures = set(json.loads(res.stdout)["figures"])
    assert {"latency", "throughput", "quality", "gains", "pareto", "capacity"} <= figures
    assert "memory" not in figures and "contact-sheet" not in figures
    doc = json.loads((out / "report.json").read_text())
    assert doc["table"]["quality_metric"].startswith("fid") and not doc["table"]["higher_is_better"]
    assert doc["gains"]["metric"].startswith("confidence:")  # no per-image scores in the data
    assert len(doc["gains"]["pairs"]) >= 3 and doc["gains"]["pairs"][0]["n"] == 5000
