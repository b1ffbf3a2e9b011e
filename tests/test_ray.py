"""run --launcher ray on a real local Ray instance: the tiny zoo on CPU workers.

One Ray instance serves the module (starting one costs seconds); custom resources
stand in for GPUs. Every store is compared with an in-process run of the same
command: prompts, images (seeds and PNG bytes), scores, confidences and latency
points must agree (not repetitions or timings, which vary run to run).
"""

from __future__ import annotations

import os
import sqlite3
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
ray = pytest.importorskip("ray")

from measure_helpers import tiny_zoo  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from hadis_profile.cli import app  # noqa: E402
from hadis_profile.errors import ParameterError  # noqa: E402
from hadis_profile.measure import devices as D  # noqa: E402
from hadis_profile.progress import ProgressBoard  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402
from hadis_profile.store.values import decode_vector  # noqa: E402

MODELS = ["tiny-sd1-light", "tiny-sd1-heavy"]
PROMPTS = ["a red apple on a white table", "three yellow rubber ducks", "a lighthouse at night"]
K = 2

#: A discriminator plug-in every run here uses: a deterministic confidence per image (its
#: mean brightness), and, once the folder holds an ``armed`` file, the first worker process
#: to reach its second call dies on the spot (os._exit: no exception, no goodbye).
PROBE = """
import os
from pathlib import Path

import numpy as np

from hadis_profile.measure.plugins import FunctionDiscriminator

HERE = Path(__file__).parent
CALLS = 0


def _brightness(images, prompts):
    global CALLS
    CALLS += 1
    if CALLS == 2 and (HERE / "armed").exists():
        try:
            os.close(os.open(HERE / "fired", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os._exit(1)
    return [float(np.asarray(img, dtype=np.float64).mean()) / 255.0 for img in images]


def probe():
    return FunctionDiscriminator(_brightness, "confidence:brightness")
"""


# --------------------------------------------------------------------------- labels (no Ray)


def test_labels_map_devices_and_never_mix_two_device_names():
    h = D.DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", None, "h100-80gb-hbm3")
    a = D.DeviceInfo("cuda", "NVIDIA A100-SXM4-80GB", None, "a100-sxm4-80gb")
    mapping = "NVIDIA H100 80GB HBM3=h100,NVIDIA A100-SXM4-80GB=a100"
    assert D.parse_label_map(mapping) == {h.name: "h100", a.name: "a100"}
    assert D.worker_labels(mapping, [h, a, h]) == ["h100", "a100", "h100"]
    assert D.worker_labels(None, [h, a]) == ["h100-80gb-hbm3", "a100-sxm4-80gb"]  # derived
    assert D.worker_labels("nvidia h100 80gb hbm3=h100", [h, a]) == ["h100", "a100-sxm4-80gb"]
    assert D.worker_labels("h100", [h]) == ["h100"]  # one label still checks the device
    bad = [
        ("h100", [h, a], "does not match the detected device NVIDIA A100"),
        ("h100", [h, a], None),  # forced: one label, two devices: still refused
        (f"{h.name}=gpu,{a.name}=gpu", [h, a], "file NVIDIA H100 80GB HBM3 and NVIDIA A100"),
        ("a=b=c,nope", [h], "DEVICE NAME=LABEL pairs"),
        (f"{h.name}=bad label", [h], "must be short"),
        (f"{h.name}=x,{h.name}=y", [h], "to two labels"),
    ]
    for gpu, infos, msg in bad:
        with pytest.raises(ParameterError, match=msg or "under one label 'h100'") as err:
            D.worker_labels(gpu, infos, force=msg is None)
        assert err.value.param == "gpu" and "--" not in str(err.value)
    # ... and a store that already files the label under another device
    with pytest.raises(ParameterError, match="file NVIDIA A100-SXM4-80GB and NVIDIA H100"):
        D.worker_labels(mapping, [h], known={"h100": a.name})
    assert D.worker_labels(mapping, [h], known={"h100": h.name, "cpu": None}) == ["h100"]


# --------------------------------------------------------------------------- the Ray runs


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """The probe plug-in's folder, importable here and (through PYTHONPATH) in Ray workers."""
    folder = tmp_path_factory.mktemp("ray-plugins")
    (folder / "hadis_ray_probe.py").write_text(PROBE)
    return folder


@pytest.fixture(scope="module")
def cluster(plugins):
    """One local Ray instance for the module: 2 CPUs, two stand-in GPUs of one kind and one
    each of two other kinds."""
    import sys

    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugins), old_path]))
    sys.path.insert(0, str(plugins))
    ray.init(
        num_cpus=2,
        resources={"fake_gpu": 2, "fake_h100": 1, "fake_a100": 1},
        include_dashboard=False,
        object_store_memory=80 * 2**20,
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        sys.path.remove(str(plugins))
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


def _cli(out, prompts_file, *extra):
    tz = tiny_zoo()
    args = ["run", "--zoo", str(tz.zoo_path), "--prompts", str(prompts_file), "--out", str(out)]
    args += ["-m", MODELS[0], "-m", MODELS[1], "-k", str(K), "--batch-sizes", "1,2"]
    # --gen-batch 2: the images' batch does not hang on which batch timed fastest
    args += ["--reps", "2", "--warmup", "0", "--gen-batch", "2", "--no-router", "--save-images"]
    args += ["--scorer", f"clip_score:{tz.clip_path}", "--discriminator", "hadis_ray_probe:probe"]
    args += ["--fid", f"clip:{tz.clip_path}"]  # feature vectors travel back too
    return CliRunner().invoke(app, [*args, *extra])


def _ray_cli(out, prompts_file, *extra):
    return _cli(
        out,
        prompts_file,
        "--launcher",
        "ray",
        "--ray-resource",
        "fake_gpu",
        "--gpu",
        "fake_gpu=cpu",  # the stand-in GPU's label: the in-process run's, to compare
        "--prompt-chunk",
        "1",
        *extra,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prompts_file, plugins):
    """The same command in one process."""
    import sys

    sys.path.insert(0, str(plugins))
    try:
        out = tmp_path_factory.mktemp("inprocess") / "run"
        res = _cli(out, prompts_file, "--device", "cpu")
    finally:
        sys.path.remove(str(plugins))
    assert res.exit_code == 0, res.output
    return out


def units_of(run, label: str | None = None) -> dict:
    """What a run store holds that must not depend on where it was measured."""
    db = sqlite3.connect(run / "store.sqlite")
    try:
        q = db.execute
        hw = "" if label is None else f" WHERE hardware = '{label}'"
        out = {
            "prompts": q("SELECT id, text FROM prompts ORDER BY id").fetchall(),
            "latency": set(q(f"SELECT model, hardware, batch_size, infeasible FROM latency{hw}")),
            "images": {
                r[:3]: (r[3], (run / r[4]).read_bytes())
                for r in q("SELECT model, prompt_id, seed_index, seed, path FROM images")
            },
            "values": {
                r[:4]: r[4]
                for r in q(
                    "SELECT i.model, i.prompt_id, i.seed_index, 's:' || s.metric, s.value "
                    "FROM images i JOIN scores s ON s.image_id = i.id UNION ALL "
                    "SELECT i.model, i.prompt_id, i.seed_index, 'c:' || c.scorer, c.value "
                    "FROM images i JOIN confidences c ON c.image_id = i.id"
                )
            },
            "features": {
                r[:4]: decode_vector(r[5], r[4])
                for r in q(
                    "SELECT i.model, i.prompt_id, i.seed_index, f.extractor, f.dtype, f.vector "
                    "FROM images i JOIN features f ON f.image_id = i.id"
                )
            },
        }
    finally:
        db.close()
    return out


def assert_same_units(a, b, label: str | None = None):
    ua, ub = units_of(a, label), units_of(b, label)
    assert ua["prompts"] == ub["prompts"]
    assert ua["latency"] == ub["latency"] and ua["latency"]
    assert ua["images"] == ub["images"]  # seeds and PNG bytes
    (extractor,) = {k[3] for k in ua["features"]}
    assert extractor.startswith("clip:")
    assert (
        ua["features"].keys()
        == ub["features"].keys()
        == {(*k[:3], extractor) for k in ua["images"]}
    )
    for key, vector in ua["features"].items():
        np.testing.assert_allclose(vector, ub["features"][key], atol=1e-6)
    assert ua["values"].keys() == ub["values"].keys()
    for key, v in ua["values"].items():
        assert v == pytest.approx(ub["values"][key], abs=1e-6), key
    assert len(ua["images"]) == len(MODELS) * len(PROMPTS) * K
    (score, confidence) = sorted({k[3] for k in ua["values"]}, reverse=True)
    assert score.startswith("s:clip_score:") and confidence == "c:confidence:brightness"


def _free(cluster, resource: str, n: int) -> bool:
    """Whether ``n`` of ``resource`` are free again (killed actors free theirs shortly)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if cluster.available_resources().get(resource, 0) >= n:
            return True
        time.sleep(0.2)
    return False


def test_a_ray_run_equals_the_in_process_run_even_when_a_worker_dies(
    cluster, plugins, tmp_path, prompts_file, reference
):
    """One run checks both (a Ray run costs seconds of worker start-up): the store equals the
    in-process one although a worker process died mid-run, and nothing of it was lost."""
    (plugins / "armed").touch()
    try:
        out = tmp_path / "run"
        res = _ray_cli(out, prompts_file)
    finally:
        (plugins / "armed").unlink()
    assert (plugins / "fired").exists()  # a worker process really died, on its 2nd prompt
    (plugins / "fired").unlink()
    assert res.exit_code == 0, res.output
    assert "Starting 2 Ray workers." in res.output
    assert "was lost (its process or node died" in res.output
    assert "its unfinished units go back in the queue" in res.output
    assert "Measured 10 units now, 0 were already done" in res.output
    # a log (not a terminal) gets plain progress lines, per model and per node
    assert "done: 10/10 units (100%)" in res.output and "node " in res.output
    assert_same_units(reference, out)
    with RunStore.open(out) as store:
        (hw,) = store.hardware()
        assert hw["label"] == "cpu" and hw["device_name"] == "fake_gpu"
        devices = store.provenance["environment"]["devices"]
        assert [d["ray_resource"] for d in devices] == ["fake_gpu", "fake_gpu"]
    assert _free(cluster, "fake_gpu", 2)  # the workers are gone, their "GPUs" free


def test_an_interrupted_driver_frees_the_workers_and_a_rerun_completes(
    cluster, tmp_path, prompts_file, reference, monkeypatch
):
    ticks = []
    advance = ProgressBoard.advance

    def interrupt(self, task, n=1):  # Ctrl-C once three units are committed
        advance(self, task, n)
        ticks.append(task)
        if len(ticks) == 6:  # each unit ticks its model's bar and its node's
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBoard, "advance", interrupt)
    out = tmp_path / "run"
    res = _ray_cli(out, prompts_file)
    assert res.exit_code == 130
    assert _free(cluster, "fake_gpu", 2)
    db = sqlite3.connect(out / "store.sqlite")
    per_prompt = db.execute("SELECT COUNT(*) FROM images GROUP BY model, prompt_id").fetchall()
    n_latency = db.execute("SELECT COUNT(*) FROM latency").fetchone()[0]
    db.close()
    assert all(n == K for (n,) in per_prompt)  # whole units only
    assert len(per_prompt) + n_latency == 3
    monkeypatch.undo()
    res = _ray_cli(out, prompts_file)
    assert res.exit_code == 0, res.output
    assert "Measured 7 units now, 3 were already done" in res.output
    assert_same_units(reference, out)


def test_two_gpu_types_file_latency_under_their_labels_and_compile_one_table_each(
    cluster, tmp_path, prompts_file, reference
):
    from hadis_profile.table import load_table

    out = tmp_path / "run"
    res = _cli(
        out,
        prompts_file,
        "--launcher",
        "ray",
        "--ray-resource",
        "fake_h100",
        "--ray-resource",
        "fake_a100",
        "--gpu",
        "fake_h100=h100,fake_a100=a100",
    )
    assert res.exit_code == 0, res.output
    assert "2 hardware labels (a100, h100)" in res.output
    with RunStore.open(out) as store:
        assert {(h["label"], h["device_name"]) for h in store.hardware()} == {
            ("h100", "fake_h100"),
            ("a100", "fake_a100"),
        }
        stored = {lab: {m: store.latency(m, lab) for m in MODELS} for lab in ("h100", "a100")}
    ref = units_of(reference)["latency"]
    for lab in ("h100", "a100"):  # every model swept on each GPU type, as one device does
        got = units_of(out, lab)["latency"]
        assert got == {(m, lab, b, inf) for m, _, b, inf in ref}
    # the quality side is measured once, and equals the in-process run's
    ua, ub = units_of(reference), units_of(out)
    assert ua["images"] == ub["images"] and ua["values"].keys() == ub["values"].keys()

    runner = CliRunner()
    res = runner.invoke(app, ["pareto", "--run", str(out), "-o", str(tmp_path / "t.json")])
    assert res.exit_code != 0 and "--hardware" in str(res.exception)
    for lab in ("h100", "a100"):
        table = tmp_path / f"{lab}.json"
        res = runner.invoke(app, ["pareto", "--run", str(out), "--hardware", lab, "-o", str(table)])
        assert res.exit_code == 0, res.output
        doc = load_table(table)
        assert doc.provenance["hardware"]["label"] == lab
        assert set(doc.models) == set(MODELS)
        for name, m in doc.models.items():
            p50 = {int(b): s["p50_s"] for b, s in m["latency"].items()}
            assert p50 == pytest.approx({b: s.p50_s for b, s in stored[lab][name].items()})


def test_workers_that_cannot_start_give_their_reason_in_one_sentence(cluster, tmp_path):
    from hadis_profile.errors import HadisError
    from hadis_profile.measure.launchers import RunContext
    from hadis_profile.measure.launchers.ray import RayLauncher
    from hadis_profile.measure.options import RunOptions

    tz = tiny_zoo()
    missing = tmp_path / "no-such-clip"  # the node lacks the scorer's checkpoint
    opts = RunOptions(
        zoo=tz.zoo_path, prompts=tmp_path, out=tmp_path, scorers=[f"clip_score:{missing}"]
    )
    launcher = RayLauncher(resources=["fake_h100"], threads=1)
    try:
        with pytest.raises(HadisError) as err:
            launcher.start(RunContext(opts, PROMPTS, tz.zoo_path.parent), lambda i: ["x"] * len(i))
    finally:
        launcher.close()
    msg = str(err.value)
    assert msg.startswith(f"No Ray worker started: CLIP checkpoint '{missing}' is not in the local")
    assert "\n" not in msg and "Traceback" not in msg
    assert _free(cluster, "fake_h100", 1)
