"""The run store: round trips, WAL, migrations, atomicity, invalidation, export.

Expected values are computed here from the inputs (numpy means, hashlib,
independent sqlite3 connections, csv/pyarrow readers), never read back through
the store's own helpers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.measurements import ExternalConfig, LatencyStats
from hadis_profile.store import DB_NAME, RUN_JSON, SCHEMA_VERSION, RunStore, spec_hash_of

N_PROMPTS = 3
K = 2
PROMPTS = ["a red ball", 'a "quoted", comma prompt', "ünïcode prompt\nwith a newline"]
CLIP = "clip_score:openai/clip-vit-large-patch14"
FID = "fid:clean-fid-imagenet1k"


def _stats(b: int, mean: float) -> LatencyStats:
    return LatencyStats(b, mean, 0.1 * mean, mean, 1.1 * mean, 1.2 * mean, 2**30 * b, False, 2, 10)


@pytest.fixture
def data() -> dict:
    rng = np.random.default_rng(7)
    return {
        "clip": {m: rng.uniform(20, 35, (N_PROMPTS, K)) for m in ("slow", "fast")},
        "conf": {m: rng.uniform(0, 1, (N_PROMPTS, K)) for m in ("slow", "fast")},
        "feat": {
            m: rng.normal(size=(N_PROMPTS, K, 5)).astype(np.float32) for m in ("slow", "fast")
        },
        "router_x": rng.normal(size=(N_PROMPTS, 2)),
        "router_s": rng.normal(size=N_PROMPTS),
        "mu": rng.normal(size=5),
        "sigma": np.eye(5) * 2.0,
    }


def _fill(store: RunStore, data: dict) -> None:
    """A complete small run written through the per-image API (the profiler's path)."""
    store.upsert_hardware(
        "a100", device_name="NVIDIA A100-SXM4-80GB", driver="550.54", libraries={"torch": "2.4.0"}
    )
    store.add_prompts(PROMPTS)
    # "slow" first, so ordering by latency is observable.
    for name, steps, lat in (("slow", 50, 13.0), ("fast", 2, 0.5)):
        store.upsert_model(
            name,
            spec_hash=f"h-{name}",
            steps=steps,
            height=1024,
            width=1024,
            dtype="fp16",
            spec={"repo": f"org/{name}", "steps": steps},
        )
        store.put_latency(name, "a100", _stats(1, lat))
        store.put_latency(name, "a100", _stats(4, 3.5 * lat))
        for p in range(N_PROMPTS):
            with store.transaction():
                for k in range(K):
                    iid = store.put_image(
                        name, p, k, seed=1000 * p + k, path=f"img/{name}/{p}_{k}.png"
                    )
                    store.put_scores(iid, {CLIP: data["clip"][name][p, k]})
                    store.put_confidence(iid, data["conf"][name][p, k], scorer="disc:v1")
                    store.put_feature_vector(iid, "inception", data["feat"][name][p, k])
    store.put_router(
        data["router_x"],
        ["len", "rarity"],
        data["router_s"],
        spec={"weights": [0.85, 0.32], "mean": [0, 0], "std": [1, 1]},
    )
    store.put_reference_stats("inception", data["mu"], data["sigma"])
    store.put_external_configs(
        [
            ExternalConfig("fast", "slow", 0.1, 0.2, {FID: 21.5}),
            ExternalConfig("fast", "slow", 0.0, 0.0, {FID: 29.75}),
        ]
    )


@pytest.fixture
def filled(tmp_path: Path, data: dict) -> RunStore:
    store = RunStore.create(tmp_path / "run-1", provenance={"zoo_hash": "z1", "seeds": [1, 2]})
    _fill(store, data)
    yield store
    store.close()


# --------------------------------------------------------------------------- basics


def test_create_uses_wal_and_writes_run_json(filled: RunStore) -> None:
    root = filled.root
    with sqlite3.connect(root / DB_NAME) as other:  # an independent connection
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == N_PROMPTS
    doc = json.loads((root / RUN_JSON).read_text())
    assert doc["format"] == "hadis-profile/run"
    assert doc["run_id"] == "run-1"
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["provenance"] == {"zoo_hash": "z1", "seeds": [1, 2]}
    assert doc["n_prompts"] == N_PROMPTS
    assert doc["models"] == {"slow": "h-slow", "fast": "h-fast"}
    assert doc["hardware"][0]["device_name"] == "NVIDIA A100-SXM4-80GB"
    assert doc["router"]["features"] == ["len", "rarity"]
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_create_refuses_existing_run_unless_exist_ok(filled: RunStore) -> None:
    with pytest.raises(HadisError, match="already exists") as e:
        RunStore.create(filled.root)
    assert "--" not in str(e.value)  # the library names no CLI flag
    again = RunStore.create(filled.root, provenance={"resumed": True}, exist_ok=True)
    assert again.prompts() == PROMPTS
    assert again.provenance == {"zoo_hash": "z1", "seeds": [1, 2], "resumed": True}
    again.close()


def test_open_missing_run_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(HadisError, match="No run store found") as e:
        RunStore.open(tmp_path / "nope")
    assert "\n" not in str(e.value)


def test_prompt_set_hash_and_ids(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "r")
    assert store.add_prompts(PROMPTS) == [0, 1, 2]
    shas = [hashlib.sha256(p.encode()).hexdigest() for p in PROMPTS]
    expected = hashlib.sha256("\n".join(shas).encode()).hexdigest()
    assert store.prompt_set_hash() == expected
    assert store.add_prompts(PROMPTS) == [0, 1, 2]  # resume: idempotent
    assert store.add_prompts([*PROMPTS, "more"]) == [0, 1, 2, 3]  # extension keeps ids
    assert store.prompt_set_hash() != expected
    with pytest.raises(HadisError, match="Prompt 1 differs") as e:
        store.add_prompts(["a red ball", "changed"])
    assert "--" not in str(e.value)
    with pytest.raises(HadisError, match="holds 4 prompts but only 1") as e:
        store.add_prompts(["a red ball"])
    assert "--" not in str(e.value)
    assert store.prompts() == [*PROMPTS, "more"]
    store.close()
    with sqlite3.connect(store.root / DB_NAME) as db:  # the per-prompt column, read directly
        stored = [r[0] for r in db.execute("SELECT sha256 FROM prompts ORDER BY id")]
    assert stored == [hashlib.sha256(p.encode("utf-8")).hexdigest() for p in [*PROMPTS, "more"]]


def test_spec_hash_is_sha256_of_canonical_json(tmp_path: Path) -> None:
    """The model spec hash invalidates old measurements, so its bytes must never drift:
    sha256 of sorted-key, compact, non-ASCII-preserving JSON, computed here by hand."""
    spec = {"repo": "org/ünïcode", "steps": 4, "guidance": 7.5, "extra": {"b": [1, 2], "a": None}}
    by_hand = '{"extra":{"a":null,"b":[1,2]},"guidance":7.5,"repo":"org/ünïcode","steps":4}'
    assert spec_hash_of(spec) == hashlib.sha256(by_hand.encode("utf-8")).hexdigest()
    with RunStore.create(tmp_path / "r") as store:
        store.upsert_model("m", spec=spec)
        assert store.models()["m"]["spec_hash"] == spec_hash_of(spec)


def test_put_image_is_stable_on_rewrite(filled: RunStore) -> None:
    first = filled.put_image("fast", 0, 0)
    assert filled.put_image("fast", 0, 0, seed=5) == first
    with pytest.raises(HadisError, match="Prompt 99"):
        filled.put_image("fast", 99, 0)
    with pytest.raises(HadisError, match="Model 'ghost'"):
        filled.put_image("ghost", 0, 0)


# --------------------------------------------------------------------------- round trip


def test_load_measurements_round_trip(filled: RunStore, data: dict) -> None:
    m = filled.load_measurements()
    assert m.prompts == PROMPTS
    assert list(m.models) == ["fast", "slow"]  # by batch-1 latency, not insertion order
    for name in ("fast", "slow"):
        mm = m.models[name]
        np.testing.assert_allclose(mm.quality[CLIP], data["clip"][name].mean(axis=1), rtol=1e-15)
        np.testing.assert_allclose(mm.confidence, data["conf"][name].mean(axis=1), rtol=1e-15)
        assert mm.features["inception"].dtype == np.float32
        np.testing.assert_array_equal(mm.features["inception"], data["feat"][name])
        assert mm.latency[4] == _stats(4, 3.5 * (0.5 if name == "fast" else 13.0))
    assert m.models["fast"].steps == 2 and m.models["slow"].spec_hash == "h-slow"
    np.testing.assert_array_equal(m.router_scores, data["router_s"])
    assert m.router_spec["features"] == ["len", "rarity"]
    assert m.router_spec["weights"] == [0.85, 0.32]
    mu, sigma = m.reference_stats["inception"]
    np.testing.assert_array_equal(mu, data["mu"])
    np.testing.assert_array_equal(sigma, data["sigma"])
    assert m.external == [
        ExternalConfig("fast", "slow", 0.1, 0.2, {FID: 21.5}),
        ExternalConfig("fast", "slow", 0.0, 0.0, {FID: 29.75}),
    ]
    assert m.provenance["run_id"] == "run-1"
    assert m.provenance["zoo_hash"] == "z1"
    assert m.provenance["hardware"]["label"] == "a100"
    assert m.provenance["n_prompts"] == N_PROMPTS
    assert m.provenance["prompt_set_hash"] == filled.prompt_set_hash()


def test_reopen_sees_the_same_data(filled: RunStore, data: dict) -> None:
    root = filled.root
    filled.close()
    with RunStore.open(root) as again:
        m = again.load_measurements()
        np.testing.assert_array_equal(m.models["slow"].confidence, data["conf"]["slow"].mean(1))
        feats, names, scores, _ = again.router()
        np.testing.assert_array_equal(feats, data["router_x"])
        np.testing.assert_array_equal(scores, data["router_s"])
        assert names == ["len", "rarity"]
        assert again.latency("fast")[1].mean_s == 0.5


def test_infeasible_latency_round_trips(filled: RunStore) -> None:
    oom = LatencyStats(32, math.nan, math.nan, math.nan, math.nan, math.nan, None, True, 1, 0)
    filled.put_latency("slow", "a100", oom)
    got = filled.latency("slow")[32]
    assert got.infeasible and math.isnan(got.mean_s) and got.peak_mem_bytes is None
    assert filled.has_latency("slow", "a100", 32)
    assert not filled.has_latency("slow", "a100", 64)
    filled.load_measurements()  # an infeasible point is not an error


def test_several_hardware_labels_need_a_choice(filled: RunStore) -> None:
    filled.upsert_hardware("h100")
    filled.put_latency("fast", "h100", _stats(1, 0.3))
    with pytest.raises(HadisError, match="several devices"):
        filled.load_measurements()
    assert filled.load_measurements(hardware="h100").models["fast"].latency[1].mean_s == 0.3


def test_bulk_20k_rows_are_exact(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "bulk")
    store.add_prompts([f"p{i}" for i in range(5000)])
    store.upsert_model("m", spec={"x": 1})
    store.upsert_hardware("gpu")
    store.put_latency("m", "gpu", LatencyStats.constant(1, 1.0))
    values = np.random.default_rng(0).uniform(size=(5000, 4))
    ids = store.put_confidences_bulk("m", values, scorer="disc")
    assert ids.shape == (5000, 4) and len(np.unique(ids)) == 20000
    np.testing.assert_array_equal(
        store.load_measurements().models["m"].confidence, values.mean(axis=1)
    )
    with sqlite3.connect(store.root / DB_NAME) as other:
        rows = other.execute("SELECT COUNT(*) FROM confidences").fetchone()[0]
    assert rows == 20000
    store.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_bulk_feature_vectors_round_trip_with_their_dtype(tmp_path: Path, dtype) -> None:
    """put_features_bulk stores what the per-image path stores: float32 stays float32
    (read back here from the raw blob), anything else becomes float64."""
    rng = np.random.default_rng(1)
    vectors = (rng.normal(size=(N_PROMPTS, K, 5)) * 100).astype(dtype)
    with RunStore.create(tmp_path / "r") as store:
        store.add_prompts(PROMPTS)
        store.upsert_model("m", spec={})
        ids = store.put_features_bulk("m", "inception", vectors)
        got = store.load_measurements().models["m"].features["inception"]
    stored = np.float32 if dtype == np.float32 else np.float64
    assert got.dtype == stored and got.shape == (N_PROMPTS, K, 5)
    np.testing.assert_array_equal(got, vectors.astype(stored))
    with sqlite3.connect(tmp_path / "r" / DB_NAME) as db:
        blob, name = db.execute(
            "SELECT vector, dtype FROM features WHERE image_id=?", (int(ids[2, 1]),)
        ).fetchone()
    assert name == np.dtype(stored).name
    np.testing.assert_array_equal(
        np.frombuffer(blob, np.dtype(stored).newbyteorder("<")), vectors[2, 1]
    )


# --------------------------------------------------------------------------- atomicity


def test_exception_inside_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "r")
    with pytest.raises(RuntimeError), store.transaction():
        store.add_prompts(PROMPTS)
        store.upsert_model("m", spec={})
        raise RuntimeError("crash mid unit of work")
    assert store.prompts() == []
    assert store.models() == {}
    with sqlite3.connect(store.root / DB_NAME) as other:
        assert other.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 0
    store.close()


def test_nested_failure_rolls_back_only_the_inner_block(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "r")
    with store.transaction():
        store.add_prompts(PROMPTS)
        store.upsert_model("m", spec={})
        try:
            with store.transaction():
                store.put_image("m", 0, 0)
                store.put_image("m", 0, 99_999_999)  # fine ...
                store.put_scores(store.put_image("m", 1, 0), {CLIP: math.nan})  # ... refused
        except HadisError:
            pass
    assert store.prompts() == PROMPTS
    assert store.done_prompts("m") == set()  # the inner block's images are gone
    store.close()


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.put_scores(s.put_image("fast", 0, 5), {CLIP: math.nan}),
        lambda s: s.put_confidence(s.put_image("fast", 0, 5), math.inf, scorer="d"),
        lambda s: s.put_feature_vector(
            s.put_image("fast", 0, 5), "inception", np.array([1.0, math.nan])
        ),
        lambda s: s.put_latency("fast", "a100", LatencyStats.constant(8, math.nan)),
        lambda s: s.put_latency("fast", "a100", LatencyStats.constant(8, -1.0)),
        lambda s: s.put_confidences_bulk("fast", np.full((N_PROMPTS, 7), math.nan), scorer="d"),
        lambda s: s.put_router(np.full((N_PROMPTS, 1), math.nan), ["x"], np.zeros(N_PROMPTS)),
        lambda s: s.put_reference_stats("inc2", np.array([math.nan]), np.eye(1)),
        lambda s: s.put_external_configs(
            [ExternalConfig("fast", "slow", 0.3, 0.3, {FID: math.nan})]
        ),
    ],
)
def test_nan_is_refused_and_nothing_is_written(filled: RunStore, write) -> None:
    before = _table_counts(filled.root)
    with pytest.raises(HadisError) as e, filled.transaction():
        write(filled)
    assert "\n" not in str(e.value)
    assert _table_counts(filled.root) == before


def _table_counts(root: Path) -> dict[str, int]:
    with sqlite3.connect(root / DB_NAME) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


# --------------------------------------------------------------------------- invalidation


def test_changed_spec_hash_deletes_only_that_models_records(filled: RunStore, data: dict) -> None:
    filled.upsert_model("third", spec_hash="h-third")
    filled.put_latency("third", "a100", _stats(1, 27.0))
    filled.put_external_configs([ExternalConfig("slow", "third", 0.5, 0.5, {FID: 19.0})])
    before = _per_model_counts(filled.root)

    assert filled.upsert_model("slow", spec_hash="h-slow", steps=50) is False  # unchanged
    assert _per_model_counts(filled.root) == before

    assert filled.upsert_model("fast", spec_hash="h-fast-v2", steps=4) is True
    after = _per_model_counts(filled.root)
    assert after["fast"] == {
        "latency": 0,
        "images": 0,
        "scores": 0,
        "confidences": 0,
        "features": 0,
    }
    assert after["slow"] == before["slow"]
    assert after["third"] == before["third"]
    with sqlite3.connect(filled.root / DB_NAME) as db:
        ext = db.execute("SELECT light, heavy FROM external ORDER BY light").fetchall()
        spec = db.execute("SELECT spec_hash, steps FROM models WHERE name='fast'").fetchone()
    assert ext == [("slow", "third")]  # the rows naming 'fast' went, the other stayed
    assert spec == ("h-fast-v2", 4)
    assert json.loads((filled.root / RUN_JSON).read_text())["models"]["fast"] == "h-fast-v2"


def _per_model_counts(root: Path) -> dict[str, dict[str, int]]:
    q = {
        "latency": "SELECT COUNT(*) FROM latency WHERE model=?",
        "images": "SELECT COUNT(*) FROM images WHERE model=?",
        "scores": "SELECT COUNT(*) FROM scores s JOIN images i ON i.id=s.image_id WHERE model=?",
        "confidences": "SELECT COUNT(*) FROM confidences c JOIN images i ON i.id=c.image_id "
        "WHERE model=?",
        "features": "SELECT COUNT(*) FROM features f JOIN images i ON i.id=f.image_id "
        "WHERE model=?",
    }
    with sqlite3.connect(root / DB_NAME) as db:
        return {
            m: {k: db.execute(s, (m,)).fetchone()[0] for k, s in q.items()}
            for m in ("fast", "slow", "third")
        }


# --------------------------------------------------------------------------- load errors


def test_empty_run_is_refused(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "r")
    with pytest.raises(HadisError, match="no prompts"):
        store.load_measurements()
    store.add_prompts(PROMPTS)
    with pytest.raises(HadisError, match="no models"):
        store.load_measurements()
    store.close()


def test_missing_prompts_for_a_metric_are_refused(filled: RunStore) -> None:
    filled.add_prompts([*PROMPTS, "a fourth prompt nobody scored"])
    with pytest.raises(HadisError, match=r"missing for 1 of 4 prompts, first at prompt 3"):
        filled.load_measurements()


def test_uneven_feature_counts_are_refused(filled: RunStore) -> None:
    filled.put_feature_vector(filled.put_image("fast", 1, 7), "inception", np.zeros(5, np.float32))
    with pytest.raises(HadisError, match="per prompt"):
        filled.load_measurements()


def test_resume_helpers_and_reset(filled: RunStore) -> None:
    assert filled.done_prompts("fast") == {0, 1, 2}
    assert filled.done_prompts("fast", images_per_prompt=3) == set()
    filled.put_image("fast", 2, 2)
    assert filled.done_prompts("fast", images_per_prompt=3) == {2}
    assert filled.has_latency("fast", "a100", 4)
    filled.reset()
    assert _table_counts(filled.root)["prompts"] == 0
    assert sum(v for k, v in _table_counts(filled.root).items() if k != "meta") == 0
    assert filled.provenance == {"zoo_hash": "z1", "seeds": [1, 2]}
    assert filled.prompt_set_hash() is None and filled.router() is None


# --------------------------------------------------------------------------- migrations

# The version-1 layout, written out here by hand (independent of store/schema.py):
# latency had no hardware, warmup or reps columns.
V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (name TEXT PRIMARY KEY, spec_hash TEXT NOT NULL, steps INTEGER,
    height INTEGER, width INTEGER, dtype TEXT, spec_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE hardware (label TEXT PRIMARY KEY, device_name TEXT, driver TEXT,
    libraries_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE latency (model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    batch_size INTEGER NOT NULL, mean_s REAL, std_s REAL, p50_s REAL, p90_s REAL, p99_s REAL,
    peak_mem_bytes INTEGER, infeasible INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, batch_size));
CREATE TABLE prompts (id INTEGER PRIMARY KEY, text TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY,
    model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    seed_index INTEGER NOT NULL, seed INTEGER, path TEXT, UNIQUE (model, prompt_id, seed_index));
CREATE TABLE scores (image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    metric TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (image_id, metric));
CREATE TABLE confidences (image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    scorer TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (image_id, scorer));
CREATE TABLE features (image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    extractor TEXT NOT NULL, dtype TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (image_id, extractor));
CREATE TABLE reference_stats (extractor TEXT PRIMARY KEY, dim INTEGER NOT NULL,
    mu BLOB NOT NULL, sigma BLOB NOT NULL);
CREATE TABLE router (prompt_id INTEGER PRIMARY KEY REFERENCES prompts(id) ON DELETE CASCADE,
    score REAL NOT NULL, features BLOB NOT NULL);
CREATE TABLE external (light TEXT NOT NULL, heavy TEXT NOT NULL, r REAL NOT NULL,
    d REAL NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (light, heavy, r, d, metric));
INSERT INTO meta VALUES ('schema_version', '1'), ('run_id', 'old-run'), ('provenance', '{}');
INSERT INTO models (name, spec_hash, steps) VALUES ('m', 'h', 2);
INSERT INTO latency VALUES ('m', 1, 0.5, 0.01, 0.5, 0.51, 0.52, 1000, 0);
INSERT INTO latency VALUES ('m', 64, NULL, NULL, NULL, NULL, NULL, NULL, 1);
INSERT INTO prompts VALUES (0, 'only prompt', 'x');
INSERT INTO images (id, model, prompt_id, seed_index) VALUES (1, 'm', 0, 0);
INSERT INTO confidences VALUES (1, 'disc', 0.25);
"""


def _columns(db_path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(db_path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [r[1:] for r in db.execute(f"PRAGMA table_info({t})")] for t in sorted(tables)}


def test_v1_store_is_migrated_step_by_step(tmp_path: Path) -> None:
    root = tmp_path / "old-run"
    root.mkdir()
    with sqlite3.connect(root / DB_NAME) as db:
        db.executescript(V1_DDL)
    with RunStore.open(root) as store:
        assert store.schema_version() == SCHEMA_VERSION
        lat = store.latency("m")
        assert lat[1] == LatencyStats(1, 0.5, 0.01, 0.5, 0.51, 0.52, 1000, False, 0, 0)
        assert lat[64].infeasible
        assert store.hardware() == [
            {"label": "unknown", "device_name": None, "driver": None, "libraries": {}}
        ]
        m = store.load_measurements()
        assert m.models["m"].confidence.tolist() == [0.25]
        assert m.provenance["run_id"] == "old-run"
    # The migrated layout is exactly what a fresh store gets.
    fresh = RunStore.create(tmp_path / "fresh")
    fresh.close()
    assert _columns(root / DB_NAME) == _columns(tmp_path / "fresh" / DB_NAME)
    assert json.loads((root / RUN_JSON).read_text())["schema_version"] == SCHEMA_VERSION


def test_failed_migration_step_leaves_the_old_version(tmp_path: Path, monkeypatch) -> None:
    from hadis_profile.store import schema as store_schema

    root = tmp_path / "old-run"
    root.mkdir()
    with sqlite3.connect(root / DB_NAME) as db:
        db.executescript(V1_DDL)

    def broken(db: sqlite3.Connection) -> None:
        store_schema._migrate_1_to_2(db)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(store_schema.MIGRATIONS, 1, broken)
    with pytest.raises(HadisError, match=r"Cannot migrate .* from schema version 1"):
        RunStore.open(root)
    with sqlite3.connect(root / DB_NAME) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        assert db.execute("SELECT COUNT(*) FROM latency").fetchone() == (2,)


def test_newer_schema_is_refused_in_one_sentence(filled: RunStore) -> None:
    root = filled.root
    filled.close()
    with sqlite3.connect(root / DB_NAME) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(HadisError) as e:
        RunStore.open(root)
    msg = str(e.value)
    assert "schema version 99" in msg and "upgrade hadis-profile" in msg
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HadisError, match="store"):
        RunStore.open(tmp_path / "r")


# --------------------------------------------------------------------------- export


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_csv_contents_equal_what_was_written(
    filled: RunStore, data: dict, tmp_path: Path
) -> None:
    out = tmp_path / "csv"
    paths = filled.export(out, "csv")
    names = {p.name for p in paths}
    for table in (
        "models",
        "hardware",
        "latency",
        "prompts",
        "images",
        "scores",
        "confidence",
        "router",
        "external",
    ):
        assert f"{table}.csv" in names
    assert "features__inception.npz" in names and "reference_stats.npz" in names

    prompts = _read_csv(out / "prompts.csv")
    assert [r["text"] for r in prompts] == PROMPTS  # commas, quotes, newline survive
    assert [r["sha256"] for r in prompts] == [
        hashlib.sha256(p.encode()).hexdigest() for p in PROMPTS
    ]

    images = {
        int(r["image_id"]): (r["model"], int(r["prompt_id"]), int(r["seed_index"]))
        for r in _read_csv(out / "images.csv")
    }
    assert len(images) == 2 * N_PROMPTS * K
    for r in _read_csv(out / "scores.csv"):
        model, p, k = images[int(r["image_id"])]
        assert r["metric"] == CLIP
        assert float(r["value"]) == data["clip"][model][p, k]  # exact: repr round-trips
    for r in _read_csv(out / "confidence.csv"):
        model, p, k = images[int(r["image_id"])]
        assert float(r["value"]) == data["conf"][model][p, k] and r["scorer"] == "disc:v1"

    lat = {(r["model"], int(r["batch_size"])): r for r in _read_csv(out / "latency.csv")}
    assert float(lat[("slow", 4)]["mean_s"]) == 3.5 * 13.0
    assert lat[("slow", 4)]["hardware"] == "a100" and lat[("fast", 1)]["infeasible"] == "False"

    router = _read_csv(out / "router.csv")
    got = np.array([[float(r["len"]), float(r["rarity"])] for r in router])
    np.testing.assert_array_equal(got, data["router_x"])
    np.testing.assert_array_equal([float(r["score"]) for r in router], data["router_s"])

    ext = _read_csv(out / "external.csv")
    assert [
        (r["light"], r["heavy"], float(r["r"]), float(r["d"]), float(r["value"])) for r in ext
    ] == [("fast", "slow", 0.1, 0.2, 21.5), ("fast", "slow", 0.0, 0.0, 29.75)]

    feats = np.load(out / "features__inception.npz")
    by_id = dict(zip(feats["image_id"].tolist(), feats["vectors"], strict=True))
    for iid, (model, p, k) in images.items():
        np.testing.assert_array_equal(by_id[iid], data["feat"][model][p, k])
    assert json.loads((out / "run.json").read_text())["run_id"] == "run-1"
    assert not list(out.glob(".*.tmp"))


def test_export_parquet_reads_back_with_pyarrow(
    filled: RunStore, data: dict, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "pq"
    filled.export(out, "parquet")
    prompts = pq.read_table(out / "prompts.parquet").to_pydict()
    assert prompts["text"] == PROMPTS and prompts["prompt_id"] == [0, 1, 2]
    images = pq.read_table(out / "images.parquet").to_pydict()
    key = {
        i: (m, p, k)
        for i, m, p, k in zip(
            images["image_id"],
            images["model"],
            images["prompt_id"],
            images["seed_index"],
            strict=True,
        )
    }
    conf = pq.read_table(out / "confidence.parquet").to_pydict()
    for iid, v in zip(conf["image_id"], conf["value"], strict=True):
        model, p, k = key[iid]
        assert v == data["conf"][model][p, k]
    lat = pq.read_table(out / "latency.parquet")
    assert str(lat.schema.field("infeasible").type) == "bool"
    assert str(lat.schema.field("mean_s").type) == "double"
    router = pq.read_table(out / "router.parquet").to_pydict()
    np.testing.assert_array_equal(router["rarity"], data["router_x"][:, 1])


def test_parquet_without_pyarrow_is_a_clear_error(
    filled: RunStore, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(HadisError, match="pip install 'hadis-profile\\[parquet\\]'"):
        filled.export(tmp_path / "pq", "parquet")
    assert not (tmp_path / "pq").exists() or not list((tmp_path / "pq").iterdir())


def test_unknown_export_format_names_the_parameter(filled: RunStore, tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as e:
        filled.export(tmp_path / "x", "xlsx")
    assert e.value.param == "fmt" and str(e.value) == "fmt is 'xlsx', not one of csv, parquet."
    assert e.value.for_flag("--format").startswith("--format is 'xlsx'")
    assert not (tmp_path / "x").exists()


def test_export_cli(filled: RunStore, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hadis_profile.cli import app

    out = tmp_path / "cli-out"
    res = CliRunner().invoke(
        app, ["export", str(filled.root), "--format", "csv", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert [r["text"] for r in _read_csv(out / "prompts.csv")] == PROMPTS
    res = CliRunner().invoke(app, ["export", str(filled.root), "--format", "xlsx"])
    assert res.exit_code != 0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1,
        ),
        min_size=1,
        max_size=5,
    ),
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=5, max_size=5
    ),
)
def test_export_csv_round_trips_arbitrary_text_and_floats(tmp_path_factory, texts, values) -> None:
    root = tmp_path_factory.mktemp("prop")
    store = RunStore.create(root / "r")
    store.add_prompts(texts)
    store.upsert_model("m", spec={})
    vals = np.array([values[i % 5] for i in range(len(texts))]).reshape(-1, 1)
    store.put_scores_bulk("m", CLIP, vals)
    store.export(root / "out", "csv")
    store.close()
    assert [r["text"] for r in _read_csv(root / "out" / "prompts.csv")] == texts
    got = [float(r["value"]) for r in _read_csv(root / "out" / "scores.csv")]
    assert got == vals.ravel().tolist()
