"""``--json``: one JSON document on stdout and nothing else there, holding the library's answer.

Every command runs in a fresh interpreter (as a script would run it), stdout is
parsed whole with strict JSON (NaN refused), and the document is checked
against what the library itself returns for the same input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hadis_profile.errors import EXIT_INFEASIBLE
from hadis_profile.prompts import load_prompts
from hadis_profile.resolve import load_table, resolve
from hadis_profile.zoo import load_zoo

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def strict(text: str):
    """The whole of stdout as one JSON document; NaN or infinity would be a failure."""

    def refuse(name: str):
        raise AssertionError(f"stdout holds {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic run (no torch) and the table `pareto --json` compiled from it."""
    from hadis_profile.synthetic import write_synthetic_run

    root = tmp_path_factory.mktemp("json")
    write_synthetic_run(root / "run", n_prompts=60).close()
    table = root / "table.json"
    res = cli("pareto", "--run", str(root / "run"), "--out", str(table), "--json")
    assert res.returncode == 0, res.stderr
    return root, table, strict(res.stdout)


def test_pareto_json_describes_the_table_it_wrote(synthetic):
    _, table_path, doc = synthetic
    table = load_table(table_path)
    assert doc["table"] == str(table_path)
    assert doc["sha256"] == table.sha256
    assert doc["rows"] == len(table.rows)
    assert doc["single_rows"] == sum(r["kind"] == "single" for r in table.rows) == 4
    assert doc["front_rows"] == sum(bool(r.get("on_front")) for r in table.rows)
    assert doc["quality_metric"] == table.quality_metric
    assert doc["models"] == sorted(table.models, key=lambda m: table.models[m]["order"])
    assert doc["configurations_evaluated"] >= doc["rows"] - doc["single_rows"]


def test_show_json_is_the_table_itself(synthetic):
    _, table_path, _ = synthetic
    table = load_table(table_path)
    res = cli("show", str(table_path), "--json", "--limit", "3")
    assert res.returncode == 0, res.stderr
    doc = strict(res.stdout)
    assert doc["rows"] == table.rows[:3] and doc["n_rows"] == len(table.rows)
    assert doc["sha256"] == table.sha256
    assert doc["provenance"] == table.provenance and doc["models"] == table.models


def test_resolve_json_and_the_infeasible_exit_code(synthetic):
    _, table_path, _ = synthetic
    table = load_table(table_path)
    res = cli("resolve", str(table_path), "--qps", "1", "--slo", "200", "--gpus", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert strict(res.stdout) == resolve(table, qps=1, slo_s=200, gpus=8).to_dict()
    # Infeasible: its own exit code, the plan (with its reason and fallback) still on stdout.
    res = cli("resolve", str(table_path), "--qps", "500", "--slo", "200", "--gpus", "2", "--json")
    assert res.returncode == EXIT_INFEASIBLE == 3, res.stderr
    doc = strict(res.stdout)
    assert doc == resolve(table, qps=500, slo_s=200, gpus=2).to_dict()
    assert doc["feasible"] is False and doc["reason"] and doc["fallback"]["feasible"]
    # A bad request is an error (1 or 2), not an infeasible plan, and prints no JSON.
    res = cli("resolve", str(table_path), "--qps", "-1", "--slo", "200", "--gpus", "2", "--json")
    assert res.returncode in (1, 2) and res.stdout == "" and "error:" in res.stderr


def test_simulate_json_is_its_summary_json(synthetic, tmp_path):
    root, table_path, _ = synthetic
    out = tmp_path / "sim"
    res = cli(
        "simulate", str(table_path), "--run", str(root / "run"), "--rate", "0.5:2",
        "--duration", "60", "--gpus", "8", "--slo", "200", "--policy", "hadis",
        "--policy", "clipper-light", "--out", str(out), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = strict(res.stdout)
    assert doc == json.loads((out / "summary.json").read_text())
    assert [p["policy"] for p in doc["policies"]] == ["hadis", "clipper-light"]
    assert sum(p["queries"] for p in doc["policies"][:1]) == doc["workload"]["queries"]
    assert "Wrote" in res.stderr  # the message went to stderr


def test_zoo_list_json_has_every_selected_model():
    res = cli("zoo", "list", "model_zoo.yaml", "--json", "--tag", "light")
    assert res.returncode == 0, res.stderr
    doc = strict(res.stdout)
    zoo = load_zoo(ROOT / "model_zoo.yaml").select(tags=["light"])
    assert [m["name"] for m in doc["models"]] == zoo.names
    assert [m["spec_hash"] for m in doc["models"]] == [m.spec_hash() for m in zoo]
    assert doc["models"][0]["steps"] == zoo.models[0].steps


def test_prompts_inspect_json_counts_and_hash():
    res = cli("prompts", "inspect", "prompts/smoke.txt", "--json", "--show", "3")
    assert res.returncode == 0, res.stderr
    doc = strict(res.stdout)
    ps = load_prompts(ROOT / "prompts" / "smoke.txt")
    assert doc["sha256"] == ps.sha256 and doc["n_prompts"] == len(ps)
    assert doc["prompts"] == list(ps.texts[:3])


def test_run_json_dry_run_summary(tmp_path):
    """`run --dry-run --json` (no model loaded): the planned work per zoo model."""
    out = tmp_path / "run"
    res = cli(
        "run", "--dry-run", "--no-probe", "--json", "--prompts", "prompts/smoke.txt",
        "--limit", "4", "--model", "sd-turbo", "--model", "sdxl-turbo", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = strict(res.stdout)
    assert doc["dry_run"] is True and doc["run_dir"] == str(out)
    assert [m["name"] for m in doc["models"]] == ["sd-turbo", "sdxl-turbo"]
    assert all(m["prompts_total"] == 4 for m in doc["models"])


def test_run_json_summary_of_a_measured_run(tmp_path):
    """A real (tiny, CPU) run: the JSON holds the latency points the store holds."""
    pytest.importorskip("diffusers")
    from measure_helpers import tiny_zoo

    from hadis_profile.store import RunStore

    tz = tiny_zoo()
    out = tmp_path / "run"
    res = cli(
        "run", "--zoo", str(tz.zoo_path), "--prompts", "prompts/smoke.txt", "--limit", "1",
        "-k", "1", "--model", "tiny-sd1-light", "--batch-sizes", "1,2", "--warmup", "0",
        "--reps", "2", "--min-reps", "2", "--device", "cpu", "--skip-quality", "--no-router",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    doc = strict(res.stdout)
    (model,) = doc["models"]
    with RunStore.open(out) as store:
        stored = store.latency("tiny-sd1-light")
    assert sorted(model["latency"]) == ["1", "2"]
    for b, point in model["latency"].items():
        assert point["p50_s"] == stored[int(b)].p50_s and point["reps"] == 2
