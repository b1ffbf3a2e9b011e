"""run --shard I/N and merge: a deterministic share of the units per shard, and stores of one
run joined back into the store one unsharded run makes."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from hadis_profile.cli import app
from hadis_profile.errors import HadisError, ParameterError, UsageError
from hadis_profile.measurements import ExternalConfig, LatencyStats
from hadis_profile.store import RunStore
from hadis_profile.store.merge import merge_runs
from hadis_profile.synthetic import write_synthetic_run

# --------------------------------------------------------------------------- the plan


def _plan_store(tmp_path: Path, n_prompts: int) -> tuple[RunStore, list]:
    store = RunStore.create(tmp_path / "plan")
    store.add_prompts([f"prompt {i}" for i in range(n_prompts)])
    store.upsert_hardware("cpu", device_name="a CPU")
    zoo = [SimpleNamespace(name=n) for n in ("a", "b", "c")]
    for spec in zoo:
        store.upsert_model(spec.name, spec={"name": spec.name})
    return store, zoo


def _opts(**kw):
    base = {
        "latency": True,
        "quality": True,
        "stages": False,
        "batch_sizes": (1, 2, 4),
        "images_per_prompt": 2,
    }
    return SimpleNamespace(**{**base, **kw})


def _keys(units) -> set:
    """Each unit as what it measures: (model, 'b', batch) and (model, 'p', prompt) items."""
    out = set()
    for u in units:
        out |= {(u.name, "b", b) for b in u.batch_sizes}
        out |= {(u.name, "p", i) for i in u.prompt_ids}
    return out


def _stats(b: int) -> LatencyStats:
    return LatencyStats(b, 0.1 * b, 0.0, 0.1 * b, 0.1 * b, 0.1 * b, reps=3)


def test_shards_deal_every_unit_once_whatever_is_stored(tmp_path):
    from hadis_profile.measure.units import plan_units, plan_work

    store, zoo = _plan_store(tmp_path, n_prompts=10)
    whole, done = plan_units(store, zoo, _opts(), ["cpu"], 10, chunk=4)
    assert done == 0
    # per model: one sweep, then chunks [0-3], [4-7], [8-9]
    assert [(u.name, u.batch_sizes, u.prompt_ids) for u in whole[:4]] == [
        ("a", (1, 2, 4), ()),
        ("a", (), (0, 1, 2, 3)),
        ("a", (), (4, 5, 6, 7)),
        ("a", (), (8, 9)),
    ]
    assert whole[0].label == "cpu" and whole[1].label is None
    shares = [
        plan_units(store, zoo, _opts(), ["cpu"], 10, shard=(i, 3), chunk=4)[0] for i in range(3)
    ]
    keys = [_keys(s) for s in shares]
    assert set().union(*keys) == _keys(whole)
    assert sum(len(k) for k in keys) == len(_keys(whole))  # disjoint
    # round-robin over the 12 slots (a: 0-3, b: 4-7, c: 8-11): shard 1 holds slots 1, 4, 7, 10
    assert [(u.name, u.batch_sizes, u.prompt_ids[:1]) for u in shares[1]] == [
        ("a", (), (0,)),
        ("b", (1, 2, 4), ()),
        ("b", (), (8,)),
        ("c", (), (4,)),
    ]
    # Storing units changes what is left of a share, never which units it holds.
    with store.transaction():
        store.put_latency("b", "cpu", _stats(1))
        for j in range(2):
            store.put_image("a", 0, j, seed=j)
            store.put_image("c", 5, j, seed=j)
        store.put_image("a", 1, 0, seed=0)  # one image of two: prompt 1 is not done
    again = [plan_units(store, zoo, _opts(), ["cpu"], 10, shard=(i, 3), chunk=4) for i in range(3)]
    assert _keys(again[0][0]) == keys[0] and _keys(again[2][0]) == keys[2]
    assert _keys(again[1][0]) == keys[1] - {("a", "p", 0), ("b", "b", 1), ("c", "p", 5)}
    assert [n for _, n in again] == [0, 3, 0]
    # Two labels: one sweep per label, stages on the first only.
    two, _ = plan_units(store, zoo[:1], _opts(stages=True), ["cpu", "gpu"], 10, chunk=4)
    sweeps = [(u.label, u.batch_sizes, u.stages) for u in two if u.batch_sizes or u.stages]
    assert sweeps == [("cpu", (1, 2, 4), True), ("gpu", (1, 2, 4), False)]
    # plan_work: the same share, one ModelWork per model.
    works, skipped = plan_work(store, zoo, _opts(), "cpu", 10, shard=(1, 3), chunk=4)
    assert [w.name for w in works] == ["a", "b", "c"] and skipped == 3
    assert _keys(works) == _keys(again[1][0])
    for bad in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(ParameterError, match=r"must be I/N with 0 <= I < N") as err:
            plan_units(store, zoo, _opts(), ["cpu"], 10, shard=bad)
        assert err.value.param == "shard"
    with pytest.raises(ParameterError, match="at least 1"):
        plan_units(store, zoo, _opts(), ["cpu"], 10, chunk=0)
    store.close()


def test_shard_flag_is_parsed_and_checked():
    from hadis_profile.cli.run import parse_shard

    assert parse_shard("2/8") == (2, 8) and parse_shard("0/1") == (0, 1)
    res = CliRunner().invoke(app, ["run", "--shard", "3/3"])
    assert res.exit_code == 2 and "I/N with 0 <= I < N" in res.output
    res = CliRunner().invoke(app, ["run", "--shard", "x"])
    assert res.exit_code == 2


# --------------------------------------------------------------------------- merge, synthetic


def _dump(run: Path) -> dict:
    """Every table of a run keyed by content (image ids replaced by the image's key)."""
    db = sqlite3.connect(run / "store.sqlite")
    try:
        q = db.execute
        image = (
            "(SELECT model || '/' || prompt_id || '/' || seed_index FROM images "
            "WHERE id = t.image_id)"
        )
        out = {
            "prompts": q("SELECT * FROM prompts ORDER BY id").fetchall(),
            "models": sorted(q("SELECT * FROM models")),
            "hardware": sorted(q("SELECT * FROM hardware")),
            "latency": sorted(q("SELECT * FROM latency")),
            "latency_samples": sorted(q("SELECT * FROM latency_samples")),
            "images": sorted(q("SELECT model, prompt_id, seed_index, seed, path FROM images")),
            "router": q("SELECT * FROM router ORDER BY prompt_id").fetchall(),
            "reference_stats": sorted(q("SELECT * FROM reference_stats")),
            "external": sorted(q("SELECT * FROM external")),
            "meta": dict(
                q("SELECT key, value FROM meta WHERE key IN ('prompt_set_hash', 'router_spec')")
            ),
        }
        for table in ("scores", "confidences", "features"):
            cols = [r[1] for r in q(f"PRAGMA table_info({table})") if r[1] != "image_id"]
            out[table] = sorted(q(f"SELECT {image}, {', '.join(cols)} FROM {table} t"))
    finally:
        db.close()
    return out


@pytest.fixture()
def full_run(tmp_path):
    """A synthetic run with every kind of record: router, features, FID reference, external
    configurations, raw latency samples."""
    store = write_synthetic_run(tmp_path / "full", n_prompts=12, images_per_prompt=2)
    rng = np.random.default_rng(1)
    with store.transaction():
        for iid in range(1, 4 * 12 * 2 + 1):  # every image
            store.put_feature_vector(iid, "clip:test", rng.normal(size=4).astype(np.float32))
        store.put_reference_stats("clip:test", np.zeros(4), np.eye(4))
        store.put_external_configs(
            [
                ExternalConfig(
                    "synthetic-lightning-2step", "synthetic-large-50step", 0.5, 0.2, {"fid:x": 9.5}
                )
            ]
        )
        store.add_latency_samples("synthetic-lightning-2step", "synthetic", 1, [0.49, 0.51])
    store.update_provenance({"zoo_hash": "z" * 64, "seeds": {"base_seed": 0}})
    store.close()
    return tmp_path / "full"


def _split(run: Path, out: Path, keep: str) -> Path:
    """A copy of ``run`` keeping only what ``keep`` (an SQL condition per table) selects."""
    shutil.copytree(run, out)
    db = sqlite3.connect(out / "store.sqlite")
    db.execute("PRAGMA foreign_keys=ON")
    model_col = {"latency": "model", "latency_samples": "model", "images": "model"}
    for table, col in model_col.items():
        db.execute(f"DELETE FROM {table} WHERE NOT ({keep.format(model=col)})")
    db.commit()
    db.close()
    return out


def test_merging_disjoint_parts_gives_back_the_whole_run(full_run, tmp_path):
    half_a = "{model} IN ('synthetic-lightning-2step', 'synthetic-medium-50step')"
    a = _split(full_run, tmp_path / "a", half_a)
    b = _split(full_run, tmp_path / "b", f"NOT ({half_a})")
    assert _dump(a)["images"] and _dump(a)["images"] != _dump(full_run)["images"]
    res = CliRunner().invoke(app, ["merge", str(a), str(b), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    whole = _dump(full_run)
    counts = f"{len(whole['images'])} images, {len(whole['latency'])} latency points"
    assert "Merged 2 runs" in res.output and counts in res.output
    assert _dump(tmp_path / "m") == whole
    with RunStore.open(tmp_path / "m") as merged:
        prov = merged.provenance
        assert [p["path"] for p in prov["merged_from"]] == [str(a), str(b)]
        assert merged.run_id == "m"
    # The merged run compiles like the whole one.
    from hadis_profile.pareto import compile_run

    rows = compile_run(tmp_path / "m")["payload"]["rows"]
    assert rows and rows == compile_run(full_run)["payload"]["rows"]


def test_duplicates_are_kept_once_and_differences_reported(full_run, tmp_path):
    a = _split(full_run, tmp_path / "a", "1")
    b = _split(full_run, tmp_path / "b", "1")
    db = sqlite3.connect(b / "store.sqlite")
    db.execute("UPDATE scores SET value = value + 1 WHERE image_id = 3")
    db.execute(
        "UPDATE latency SET p50_s = p50_s * 2 WHERE model = 'synthetic-large-50step' "
        "AND batch_size = 2"
    )
    db.commit()
    db.close()
    report = merge_runs([a, b], tmp_path / "m")
    whole = _dump(full_run)
    n_images, n_latency = len(whole["images"]), len(whole["latency"])
    assert report.copied == {"models": 4, "latency": n_latency, "images": n_images}
    # every record twice; all but the two changed ones equal (+ FID reference, router, external)
    assert report.duplicates == (n_images - 1) + (n_latency - 1) + 3
    assert sorted(report.conflicts) == [
        f"Image 0 of prompt 1 of synthetic-lightning-2step differs in {b} from the store merged "
        "before it; the earlier one is kept",
        f"The latency of synthetic-large-50step on 'synthetic' at batch 2 differs in {b} from "
        "the store merged before it; the earlier one is kept",
    ]
    assert _dump(tmp_path / "m") == whole  # the first store's values


def test_merge_refuses_stores_of_different_runs(full_run, tmp_path):
    def variant(name: str, sql: str | None = None, provenance: dict | None = None) -> Path:
        out = _split(full_run, tmp_path / name, "1")
        if sql:
            db = sqlite3.connect(out / "store.sqlite")
            db.execute(sql)
            db.commit()
            db.close()
        if provenance:
            with RunStore.open(out) as s:
                s.update_provenance(provenance)
        return out

    cases = [
        (variant("zoo", provenance={"zoo_hash": "y" * 64}), "disagree on the zoo hash"),
        (variant("seeds", provenance={"seeds": {"base_seed": 1}}), "disagree on the seeds"),
        (
            variant("scorers", provenance={"quality_tools": {"scorers": ["x"]}}),
            None,  # only one store says which scorers: nothing to compare
        ),
        (
            variant("prompts", "UPDATE meta SET value = 'x' WHERE key = 'prompt_set_hash'"),
            "disagree on the prompt-set hash",
        ),
        (
            variant("hw", "UPDATE hardware SET device_name = 'another GPU'"),
            "file different devices under hardware label 'synthetic'",
        ),
        (
            variant("spec", "UPDATE models SET spec_hash = 'other' WHERE rowid = 1"),
            "measured model 'synthetic-lightning-2step' with different specs",
        ),
    ]
    for other, msg in cases:
        out = tmp_path / f"m-{other.name}"
        if msg is None:
            merge_runs([full_run, other], out)
            continue
        with pytest.raises(HadisError, match=msg):
            merge_runs([full_run, other], out)
        assert not out.exists()
        assert not list(tmp_path.glob(".m-*"))  # no temporary folder left behind
    res = CliRunner().invoke(
        app, ["merge", str(full_run), str(full_run), "-o", str(tmp_path / "x")]
    )
    # (CliRunner bypasses main(), whose exit code for a UsageError is 2)
    assert (
        isinstance(res.exception, UsageError) and str(res.exception) == "RUNS names one run twice."
    )
    res = CliRunner().invoke(app, ["merge", str(full_run), "-o", str(full_run)])
    assert isinstance(res.exception, UsageError)
    assert str(res.exception) == f"--out {full_run} already exists; merge into a new folder."


# --------------------------------------------------------------------------- shards, for real


MODELS = ["tiny-sd1-light", "tiny-sd1-heavy"]
PROMPTS = ["a red apple on a white table", "three yellow rubber ducks", "a lighthouse at night"]


def _points(run: Path) -> list:
    """(model, label, batch, infeasible) of every latency point: not the timings."""
    db = sqlite3.connect(run / "store.sqlite")
    try:
        q = "SELECT model, hardware, batch_size, infeasible FROM latency ORDER BY 1, 2, 3"
        return db.execute(q).fetchall()
    finally:
        db.close()


def test_three_shards_merge_into_the_unsharded_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from measure_helpers import tiny_zoo

    tz = tiny_zoo()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")

    def run(out: Path, *extra: str):
        args = ["run", "--zoo", str(tz.zoo_path), "--prompts", str(prompts), "--out", str(out)]
        args += ["-m", MODELS[0], "-m", MODELS[1], "-k", "2", "--batch-sizes", "1,2"]
        args += ["--reps", "2", "--warmup", "0", "--gen-batch", "2", "--no-router"]
        args += ["--device", "cpu", "--save-images", "--prompt-chunk", "1"]
        args += ["--scorer", f"clip_score:{tz.clip_path}", "--fid", f"clip:{tz.clip_path}"]
        res = CliRunner().invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
        return res.output

    whole = tmp_path / "whole"
    run(whole)
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    done = [run(s, "--shard", f"{i}/3") for i, s in enumerate(shards)]
    # 8 slots (per model: its sweep of 2 points, then 3 one-prompt chunks) dealt round-robin:
    # shard 0 holds slots 0 (light's sweep), 3, 6; shard 1 slots 1, 4 (heavy's sweep), 7;
    # shard 2 slots 2 and 5: 4, 4 and 2 units.
    assert all(f"Measured {n} units now" in o for n, o in zip((4, 4, 2), done, strict=True))
    assert "Measured 0 units now, 4 were already done" in run(shards[0], "--shard", "0/3")
    # in-process runs log plain progress too when the output is not a terminal
    assert "done: 4/4 units (100%)" in done[0] and "tiny-sd1-light: latency 2/2" in done[0]
    res = CliRunner().invoke(app, ["merge", *map(str, shards), "--out", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    a, b = _dump(whole), _dump(tmp_path / "merged")
    for key in ("prompts", "models", "images", "scores", "confidences", "features", "meta"):
        assert a[key] == b[key], key
    assert _points(whole) == _points(tmp_path / "merged") and len(_points(whole)) == 4
    merged = tmp_path / "merged"
    pngs = sorted(p.relative_to(whole) for p in (whole / "images").rglob("*.png"))
    assert pngs == sorted(p.relative_to(merged) for p in (merged / "images").rglob("*.png"))
    assert len(pngs) == 12
    assert all((whole / p).read_bytes() == (merged / p).read_bytes() for p in pngs)
    with RunStore.open(tmp_path / "merged") as m:
        assert [p["shard"]["index"] for p in m.provenance["merged_from"]] == [0, 1, 2]
        assert "shard" not in m.provenance


def test_merge_leaves_its_sources_untouched_and_waits_for_no_other_writer(full_run, tmp_path):
    """Sources are read read-only (byte for byte the same after); the target is one
    writer's: a process holding its lock makes the merge refuse, leaving nothing behind."""
    import subprocess
    import sys

    half = "{model} IN ('synthetic-lightning-2step', 'synthetic-medium-50step')"
    a = _split(full_run, tmp_path / "a", half)
    b = _split(full_run, tmp_path / "b", f"NOT ({half})")

    def snapshot(run: Path) -> dict:
        return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}

    before = {r: snapshot(r) for r in (a, b)}
    target = tmp_path / "m"
    target.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom hadis_profile.store.lock import write_lock\n"
            "write_lock(sys.argv[1], 'run').acquire()\nprint('held', flush=True)\ntime.sleep(60)",
            str(target),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HadisError, match=f"PID {holder.pid}"):
            merge_runs([a, b], target)
    finally:
        holder.kill()
        holder.wait()
    assert not (target / "store.sqlite").exists()
    merge_runs([a, b], target)  # the lock's holder is gone: the merge goes through
    assert _dump(target) == _dump(full_run)
    assert {r: snapshot(r) for r in (a, b)} == before
