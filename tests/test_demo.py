"""The README's journey: measurements -> run store -> table.json -> serving plan.

The synthetic demo needs no torch; the tiny end-to-end test runs the real
profiler on the tiny zoo with `prompts/smoke.txt`, as CI must.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hadis_profile.resolve import load_table, resolve
from hadis_profile.store import RunStore
from hadis_profile.table import validate_file

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_synthetic_demo_writes_a_valid_table_and_a_feasible_plan(tmp_path):
    res = cli("demo", "--out", str(tmp_path), "--source", "synthetic")
    assert res.returncode == 0, res.stderr
    table_path = tmp_path / "table.json"
    validate_file(table_path)
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The printed plan is what the library resolves for the printed request.
    nxt = next(line for line in res.stdout.splitlines() if line.startswith("Next:"))
    words = nxt.split()
    qps, slo, gpus = (float(words[words.index(f) + 1]) for f in ("--qps", "--slo", "--gpus"))
    plan = resolve(load_table(table_path), qps=qps, slo_s=slo, gpus=int(gpus))
    assert plan.feasible
    assert plan.kind == "cascade"  # the demo's load is beyond the best single model
    # The table's single-model rows carry the store's own per-prompt means.
    with RunStore.open(tmp_path / "run") as store:
        meas = store.load_measurements()
    table = load_table(table_path)
    for row in table.rows:
        if row["kind"] == "single":
            expected = meas.models[row["light"]].quality[table.quality_metric].mean()
            assert row["quality"][table.quality_metric] == pytest.approx(expected, rel=1e-12)


def test_tiny_zoo_run_pareto_resolve_end_to_end(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    zoo_dir = tmp_path / "zoo"
    assert cli("zoo", "tiny", "--out", str(zoo_dir)).returncode == 0
    run = tmp_path / "run"
    res = cli(
        "run",
        "--zoo",
        str(zoo_dir / "model_zoo.tiny.yaml"),
        "--prompts",
        str(ROOT / "prompts" / "smoke.txt"),
        "--limit",
        "3",
        "-k",
        "2",
        "--batch-sizes",
        "1,2",
        "--warmup",
        "1",
        "--reps",
        "3",
        "--device",
        "cpu",
        "--no-router",
        "--out",
        str(run),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    table_path = tmp_path / "table.json"
    res = cli("pareto", "--run", str(run), "--out", str(table_path))
    assert res.returncode == 0, res.stderr
    validate_file(table_path)
    table = load_table(table_path)
    assert len(table.models) == 4
    # 3 timed sweep calls per point; the best-throughput batch also has the generation calls
    with RunStore.open(run) as store:
        for name in table.models:
            for b, samples in store.latency_samples(name, "cpu").items():
                assert [src for _, src in samples].count("sweep") == 3
                assert table.models[name]["latency"][str(b)]["reps"] == len(samples)
    res = cli("resolve", str(table_path), "--qps", "1", "--slo", "60", "--gpus", "4", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["feasible"] and plan["total_gpus"] <= 4


def test_demo_refuses_bad_arguments_before_touching_anything(tmp_path):
    not_a_run = tmp_path / "run"
    not_a_run.mkdir()
    (not_a_run / "keep.txt").write_text("mine")
    res = cli("demo", "--out", str(tmp_path), "--source", "synthetic")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {not_a_run} exists and is not a run folder; choose another --out."
    )
    assert (not_a_run / "keep.txt").read_text() == "mine"
    res = cli("demo", "--out", str(tmp_path / "other"), "--source", "synthetic", "--prompts", "0")
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "error: --prompts must be from 1 to 100000 for the synthetic demo, not 0."
    )
    assert not (tmp_path / "other").exists()


def test_demo_table_is_what_pareto_compiles_from_its_run(tmp_path):
    """The demo compiles its run exactly as `hadis-profile pareto` would."""
    res = cli("demo", "--out", str(tmp_path / "d"), "--source", "synthetic", "--prompts", "40")
    assert res.returncode == 0, res.stderr
    again = tmp_path / "again.json"
    res = cli("pareto", "--run", str(tmp_path / "d" / "run"), "--quality", "clip_score:synthetic",
              "--out", str(again))  # fmt: skip
    assert res.returncode == 0, res.stderr
    demo_doc = json.loads((tmp_path / "d" / "table.json").read_text())
    assert json.loads(again.read_text())["payload"] == demo_doc["payload"]
    assert demo_doc["payload"]["provenance"]["discriminator"] == {
        "scorer_id": "confidence:synthetic"
    }


def test_tiny_demo_shows_the_hybrid_and_ends_with_its_report(tmp_path):
    """The README's first command: the router runs (spaCy from the measure extra), the table
    has cascades using router and discriminator together, and the last line names the report."""
    pytest.importorskip("diffusers")
    pytest.importorskip("spacy")
    res = cli("demo", "--out", str(tmp_path), "--source", "tiny")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "router skipped" not in res.stdout + res.stderr
    with RunStore.open(tmp_path / "run") as store:
        assert store.router() is not None
        assert len(store.saved_images()) == 4 * 8 * 2  # models x prompts x images
    table = load_table(tmp_path / "table.json")
    assert any(r["r"] > 0 and r["d"] > 0 for r in table.rows)
    assert all("/" not in m and str(tmp_path) not in m for m in table.provenance["metrics"])
    index = tmp_path / "report" / "index.html"
    assert res.stdout.strip().splitlines()[-1].endswith(str(index))
    assert {"contact-sheet.png", "gains.png", "pareto.png"} <= {
        p.name for p in (tmp_path / "report" / "figures").iterdir()
    }
