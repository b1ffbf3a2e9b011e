"""``hadis_profile.load_run(path).frames()`` and ``CascadeTable.to_frame()``.

The run is built by hand with known values (raw latency samples from a sweep and
from generation, one OOM point, scores, confidences, router features), so every
frame is checked against the numbers that went in, not against the code that
reads them back. The export's CSV files, read by pandas itself, must agree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import hadis_profile  # noqa: E402
from hadis_profile.errors import HadisError  # noqa: E402
from hadis_profile.measurements import LatencyStats  # noqa: E402
from hadis_profile.samples import summarize  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red cube", "two cats on a sofa", "the feeling of Monday"]
SWEEP = {1: [0.10, 0.12, 0.11], 2: [0.18, 0.20, 0.19]}
GENERATION = [0.105, 0.115]  # timed image-generation calls at batch size 1
FEATURES = np.array([[1.0, 0.0], [2.0, 1.0], [3.5, 0.5]])
SCORES = np.array([0.5, -0.25, 1.5])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames") / "run"
    with RunStore.create(root, provenance={"seeds": {"base_seed": 7}}) as s:
        s.add_prompts(PROMPTS)
        s.upsert_hardware("gpu0", device_name="Test GPU", libraries={"torch": "9.9"})
        for name, steps in (("light", 2), ("heavy", 8)):
            s.upsert_model(name, steps=steps, spec={"name": name, "checkpoint": {"sha256": name}})
            for b, xs in SWEEP.items():
                scale = 1.0 if name == "light" else 4.0
                xs = [x * scale for x in xs]
                s.put_latency(name, "gpu0", summarize(b, xs, peak_mem=b * 2**30), samples=xs)
            oom = LatencyStats(4, *[float("nan")] * 5, infeasible=True)
            s.put_latency(name, "gpu0", oom)
            for p in range(len(PROMPTS)):
                for k in range(2):
                    img = s.put_image(name, p, k, seed=100 * p + k)
                    s.put_scores(
                        img, {"clip_score:test": 10.0 * p + k + (5 if name == "heavy" else 0)}
                    )
                    s.put_confidence(img, 0.1 * (p + 1) + 0.01 * k, scorer="confidence:test")
        s.add_latency_samples("light", "gpu0", 1, GENERATION)
        s.put_router(FEATURES, ["length", "rare"], SCORES, spec={"weights": [1.0, 1.0]})
    return root


def test_load_run_reads_the_identity_of_the_run(run_dir):
    run = hadis_profile.load_run(run_dir)
    assert run.run_id == "run" and run.prompts == PROMPTS
    assert set(run.models) == {"light", "heavy"}
    assert run.models["heavy"]["spec"]["checkpoint"] == {"sha256": "heavy"}
    assert run.hardware[0]["label"] == "gpu0" and run.provenance["seeds"]["base_seed"] == 7
    assert run.measurements().n_prompts == 3
    with pytest.raises(HadisError, match="No run store"):
        hadis_profile.load_run(run_dir.parent / "nowhere")


def test_latency_frames_keep_every_raw_sample(run_dir):
    f = hadis_profile.load_run(run_dir).frames()
    s = f.latency_samples
    light1 = s[(s.model == "light") & (s.batch_size == 1)]
    assert light1.seconds.tolist() == SWEEP[1] + GENERATION
    assert light1.source.tolist() == ["sweep"] * 3 + ["generation"] * 2
    heavy2 = s[(s.model == "heavy") & (s.batch_size == 2)].seconds.to_numpy()
    np.testing.assert_allclose(heavy2, np.array(SWEEP[2]) * 4.0)
    lat = f.latency.set_index(["model", "batch_size"])
    # The stats are recomputed from all five samples once generation joined the sweep.
    assert lat.loc[("light", 1), "p50_s"] == pytest.approx(np.median(SWEEP[1] + GENERATION))
    assert lat.loc[("light", 1), "reps"] == 5
    assert lat.loc[("heavy", 2), "images_per_s"] == pytest.approx(2 / np.median(SWEEP[2]) / 4)
    assert bool(lat.loc[("heavy", 4), "infeasible"]) and pd.isna(lat.loc[("heavy", 4), "p50_s"])
    assert pd.isna(lat.loc[("heavy", 4), "images_per_s"])
    assert lat.loc[("light", 2), "peak_mem_bytes"] == 2 * 2**30


def test_image_frames_join_model_prompt_and_seed(run_dir):
    f = hadis_profile.load_run(run_dir).frames()
    assert len(f.images) == 2 * 3 * 2 and f.images.seed.tolist()[:2] == [0, 1]
    sc = f.scores
    assert set(sc.columns) >= {"image_id", "model", "prompt_id", "seed_index", "metric", "value"}
    expected = {(m, p, k): 10.0 * p + k + (5 if m == "heavy" else 0)
                for m in ("light", "heavy") for p in range(3) for k in range(2)}  # fmt: skip
    got = {(r.model, r.prompt_id, r.seed_index): r.value for r in sc.itertuples()}
    assert got == expected
    conf = f.confidences.groupby("prompt_id").value.mean()
    np.testing.assert_allclose(conf.to_numpy(), [0.105, 0.205, 0.305])
    r = f.router.set_index("prompt_id")
    np.testing.assert_array_equal(r[["length", "rare"]].to_numpy(), FEATURES)
    np.testing.assert_array_equal(r.score.to_numpy(), SCORES)
    assert f["prompts"].text.tolist() == PROMPTS


def test_frames_agree_with_the_csv_export(run_dir, tmp_path):
    f = hadis_profile.load_run(run_dir).frames()
    with RunStore.open(run_dir) as store:
        store.export(tmp_path, "csv")
    samples = pd.read_csv(tmp_path / "latency_samples.csv")
    pd.testing.assert_frame_equal(samples, f.latency_samples, check_dtype=False)
    images = pd.read_csv(tmp_path / "images.csv")
    assert images.image_id.tolist() == f.images.image_id.astype("int64").tolist()


def test_table_to_frame(tmp_path):
    from hadis_profile.pareto import compile_run
    from hadis_profile.synthetic import METRIC, write_synthetic_run
    from hadis_profile.table import CascadeTable

    write_synthetic_run(tmp_path / "run", n_prompts=40).close()
    table = CascadeTable.from_document(compile_run(tmp_path / "run", quality=METRIC))
    df = table.to_frame()
    assert len(df) == len(table.rows)
    for i, row in enumerate(table.rows):
        assert df.loc[i, "light"] == row["light"] and df.loc[i, METRIC] == row["quality"][METRIC]
        assert df.loc[i, "fraction_escalated"] == row["fractions"]["escalated"]
    assert df.gpu_s_per_query.is_monotonic_increasing  # rows stay cheapest first
    assert (df[df.kind == "single"].r == 0).all()


def test_loading_a_run_does_not_import_pandas(run_dir):
    code = (
        "import sys, hadis_profile; "
        f"run = hadis_profile.load_run({str(run_dir)!r}); "
        "print(len(run.prompts), 'pandas' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )  # fmt: skip
    assert out.stdout.split() == ["3", "False"]
