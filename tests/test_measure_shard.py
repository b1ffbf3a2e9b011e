"""run --devices (the local launcher): work division, devices, two CPU workers on the tiny zoo."""

from __future__ import annotations

import multiprocessing
import sqlite3
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from measure_helpers import tiny_zoo  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from hadis_profile.cli import app  # noqa: E402
from hadis_profile.errors import HadisError, ParameterError, UsageError  # noqa: E402
from hadis_profile.measure import devices as D  # noqa: E402
from hadis_profile.measure import profiler as P  # noqa: E402
from hadis_profile.measure.job import one_line  # noqa: E402
from hadis_profile.measure.launchers import local as S  # noqa: E402
from hadis_profile.progress import ProgressBoard  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402

MODELS = ["tiny-sd1-light", "tiny-sd1-heavy"]
PROMPTS = ["a red apple on a white table", "three yellow rubber ducks", "a lighthouse at night"]
K = 2


# --------------------------------------------------------------------------- pure parts


def test_divide_work_is_greedy_longest_first_and_deterministic():
    costs = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 3.0}
    # a->0, b->1, c->1 (4 < 5), d->0 (5 < 7), e->1 (7 < 8); zoo order kept inside a share
    assert S.divide_work(costs, 2) == [["a", "d"], ["b", "c", "e"]]
    assert S.divide_work(costs, 1) == [["a", "b", "c", "d", "e"]]
    # finished models (cost 0) are not assigned; idle workers get empty shares
    assert S.divide_work({"x": 0.0, "y": 2.0, "z": 1.0}, 4) == [["y"], ["z"], [], []]
    # ties: input order among models, lowest index among workers
    assert S.divide_work({"p": 1.0, "q": 1.0, "r": 1.0}, 2) == [["p", "r"], ["q"]]
    assert S.divide_work({}, 3) == [[], [], []]
    with pytest.raises(ValueError):
        S.divide_work(costs, 0)


def test_divide_work_assigns_every_model_once_and_balances():
    costs = {f"m{i}": float((i * 7919) % 13 + 1) for i in range(20)}
    shares = S.divide_work(costs, 3)
    flat = [m for share in shares for m in share]
    assert sorted(flat) == sorted(costs) and len(flat) == len(set(flat))
    loads = [sum(costs[m] for m in share) for share in shares]
    # LPT's bound: the largest load is within 4/3 of the perfect split (+ one job)
    assert max(loads) <= sum(loads) / 3 + max(costs.values())


def test_parse_devices_and_hardware_checks(monkeypatch):
    assert D.parse_devices("0,1,2,3") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert D.parse_devices(" cuda:1 , 2") == ["cuda:1", "cuda:2"]
    assert D.parse_devices("cpu,cpu") == ["cpu", "cpu"]
    for bad, msg in (("0,0", "cuda:0 twice"), ("gpu0", "CUDA indices"), ("", "CUDA indices")):
        with pytest.raises(ParameterError, match=msg) as err:
            D.parse_devices(bad)
        assert err.value.param == "devices" and "--" not in str(err.value)
    # The checks themselves, as the spawned describer runs them:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "names cuda:4 but torch sees only 2 CUDA devices" in D._describe_cuda(
        ["cuda:0", "cuda:4"]
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "torch sees no CUDA device" in D._describe_cuda(["cuda:0"])
    a = D.DeviceInfo("cuda:0", "NVIDIA A100-SXM4-80GB", None, "a100-sxm4-80gb")
    h = D.DeviceInfo("cuda:1", "NVIDIA H100 80GB HBM3", None, "h100-80gb-hbm3")
    assert D.common_device([a, a], force=False) == a
    with pytest.raises(HadisError, match="mix NVIDIA A100-SXM4-80GB and NVIDIA H100"):
        D.common_device([a, h], force=False)
    assert D.common_device([a, h], force=True).name == f"{a.name} + {h.name}"
    assert D.worker_threads(["cpu", "cpu"], 3) == 3
    assert one_line(OSError("no\n  such file")) == "OSError: no such file"


def test_the_parent_never_touches_cuda_to_describe_devices(monkeypatch):
    """Describing CUDA devices happens in a spawned child: the parent's CUDA calls (which
    would open a context holding memory on that GPU) must not run at all."""

    def boom(*args, **kwargs):
        raise AssertionError("the parent process called into torch.cuda")

    for name in ("is_available", "device_count", "get_device_name", "init"):
        monkeypatch.setattr(torch.cuda, name, boom)
    # This machine's child sees no GPU, which is the real answer, reached without the parent.
    with pytest.raises(ParameterError, match="torch sees no CUDA device"):
        D.device_infos(["cuda:0"])
    assert D.device_infos(["cpu", "cpu"], threads=1)[0].device == "cpu"


def test_each_worker_sees_only_its_own_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert S.visible_device("cpu") is None
    assert S.visible_device("cuda:3") == "3"
    # --devices indices count among what this process sees, as torch numbers them
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert S.visible_device("cuda:1") == "6" and S.visible_device("cuda:0") == "4"
    with S._cuda_visible("6"):
        assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == "4,6"


def test_devices_and_device_are_mutually_exclusive(tmp_path):
    runner = CliRunner()
    base = ["run", "--zoo", str(tiny_zoo().zoo_path), "--out", str(tmp_path / "r")]
    # CliRunner bypasses main(), so the UsageError (exit 2 there) surfaces as the exception.
    res = runner.invoke(app, [*base, "--device", "cpu", "--devices", "cpu,cpu"])
    assert isinstance(res.exception, UsageError) and "mutually exclusive" in str(res.exception)
    res = runner.invoke(app, [*base, "--devices", "0,x"])  # the library's sentence, our flag
    assert isinstance(res.exception, UsageError) and str(res.exception).startswith("--devices")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


def _cli(out, prompts_file, *extra):
    tz = tiny_zoo()
    args = ["run", "--zoo", str(tz.zoo_path), "--prompts", str(prompts_file), "--out", str(out)]
    args += ["-m", MODELS[0], "-m", MODELS[1], "-k", str(K), "--batch-sizes", "1,2"]
    args += [
        "--reps",
        "2",
        "--warmup",
        "0",
        "--no-router",
        "--scorer",
        f"clip_score:{tz.clip_path}",
    ]
    return CliRunner().invoke(app, [*args, *extra])


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, prompts_file):
    """The reference: the same command in one process."""
    out = tmp_path_factory.mktemp("single") / "run"
    res = _cli(out, prompts_file, "--device", "cpu")
    assert res.exit_code == 0, res.output
    return out


def _units(run) -> tuple[set, dict]:
    """(latency points, {(model, prompt, seed index, what): value}) of a run store."""
    db = sqlite3.connect(run / "store.sqlite")
    try:
        # (Not reps: the generation calls add samples to the best-throughput batch, which
        # depends on timings, so it can differ between two runs of the same command.)
        lat = db.execute("SELECT model, hardware, batch_size, infeasible FROM latency")
        lat = [tuple(r) for r in lat]
        rows = db.execute(
            "SELECT i.model, i.prompt_id, i.seed_index, i.seed, 's:' || s.metric, s.value "
            "FROM images i JOIN scores s ON s.image_id = i.id UNION ALL "
            "SELECT i.model, i.prompt_id, i.seed_index, i.seed, 'c:' || c.scorer, c.value "
            "FROM images i JOIN confidences c ON c.image_id = i.id"
        ).fetchall()
        n_images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    finally:
        db.close()
    values = {r[:5]: r[5] for r in rows}
    assert len(lat) == len(set(lat)) and len(values) == len(rows)  # no duplicate rows
    assert n_images == len({k[:3] for k in values})  # every image is scored
    return set(lat), values


def _assert_same_units(a, b):
    lat_a, val_a = _units(a)
    lat_b, val_b = _units(b)
    assert lat_a == lat_b
    assert set(val_a) == set(val_b)
    for key, v in val_a.items():
        assert v == pytest.approx(val_b[key], abs=1e-4), key


def test_two_cpu_workers_fill_the_same_units_as_one_process(tmp_path, prompts_file, single_run):
    lat, values = _units(single_run)
    assert len(lat) == 2 * 2 and len({k[:3] for k in values}) == 2 * 3 * K
    out = tmp_path / "run"
    res = _cli(out, prompts_file, "--devices", "cpu,cpu")
    assert res.exit_code == 0, res.output
    assert "Measured 10 units now, 0 were already done" in res.output
    _assert_same_units(single_run, out)
    with RunStore.open(out) as store:
        assert [h["label"] for h in store.hardware()] == ["cpu"]
        assert store.prompts() == PROMPTS
    res = _cli(out, prompts_file, "--devices", "cpu,cpu")  # finished: no worker starts
    assert res.exit_code == 0, res.output
    assert "Measured 0 units now, 10 were already done" in res.output
    _assert_same_units(single_run, out)
    assert multiprocessing.active_children() == []


def test_ctrl_c_stops_the_workers_and_a_rerun_completes(
    tmp_path, prompts_file, single_run, monkeypatch
):
    def interrupt(self, task, n=1):  # the parent's first progress tick: a unit is committed
        raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBoard, "advance", interrupt)
    out = tmp_path / "run"
    res = _cli(out, prompts_file, "--devices", "cpu,cpu")
    assert res.exit_code == 130  # Typer's answer to KeyboardInterrupt
    assert multiprocessing.active_children() == []
    db = sqlite3.connect(out / "store.sqlite")
    per_prompt = db.execute("SELECT COUNT(*) FROM images GROUP BY model, prompt_id").fetchall()
    assert all(n == K for (n,) in per_prompt)  # whole units only
    assert db.execute("SELECT COUNT(*) FROM latency").fetchone()[0] >= 1
    db.close()
    monkeypatch.undo()
    res = _cli(out, prompts_file, "--devices", "cpu,cpu")
    assert res.exit_code == 0, res.output
    _assert_same_units(single_run, out)


WORKER_PROBE = '''
"""Test plug-in: fails if the worker process ever imported the run store."""
import sys

from hadis_profile.measure.plugins import FunctionDiscriminator


def _half(images, prompts):
    assert "hadis_profile.store" not in sys.modules, "a worker opened the run store"
    return [0.5] * len(prompts)


def probe():
    return FunctionDiscriminator(_half, "confidence:half")
'''


def test_a_failing_model_leaves_the_other_workers_and_models_going(
    tmp_path, prompts_file, monkeypatch
):
    from hadis_profile.measure import pipelines
    from hadis_profile.measure.summary import RunFailed

    tz = tiny_zoo()
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(
        textwrap.dedent(
            f"""\
            defaults: {{dtype: fp32, height: 32, width: 32}}
            models:
              - {{name: {MODELS[0]}, source: {tz.root / "sd1"},
                 pipeline: StableDiffusionPipeline, steps: 2, guidance_scale: 0.0}}
              - {{name: broken, source: {tmp_path / "gone"}, pipeline: StableDiffusionPipeline,
                 steps: 16, guidance_scale: 7.5}}
              - {{name: after, source: {tz.root / "sd1"}, pipeline: StableDiffusionPipeline,
                 steps: 1, guidance_scale: 0.0}}
            """
        )
    )
    real = pipelines.preflight
    # The checkpoint "vanishes after preflight": the parent's check passes, the load fails.
    monkeypatch.setattr(
        pipelines,
        "preflight",
        lambda spec, **kw: None if spec.name == "broken" else real(spec, **kw),
    )
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "worker_probe.py").write_text(WORKER_PROBE)
    monkeypatch.syspath_prepend(str(tmp_path / "plug"))  # spawned workers inherit sys.path
    out = tmp_path / "run"
    opts = P.RunOptions(
        zoo=zoo,
        prompts=prompts_file,
        out=out,
        images_per_prompt=K,
        batch_sizes=(1, 2),
        warmup=0,
        reps=2,
        devices=["cpu", "cpu"],
        scorers=[f"clip_score:{tz.clip_path}"],
        discriminator="worker_probe:probe",
        router=False,
    )
    # broken (16 CFG steps) costs most, so worker 0 gets it (then nothing else); worker 1
    # gets the two cheap models.
    with pytest.raises(RunFailed) as err:
        P.run_profile(opts)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith("1 of 3 models failed: broken on cpu#0 during loading (Model 'broken'")
    assert "does not exist" in msg and "rerunning the same command retries" in msg
    assert multiprocessing.active_children() == []
    with RunStore.open(out) as store:
        for name in (MODELS[0], "after"):
            assert sorted(store.latency(name, "cpu")) == [1, 2]
            assert store.done_prompts(name, K) == {0, 1, 2}
        assert store.done_prompts("broken") == set()
        assert set(store.models()) == {MODELS[0], "broken", "after"}
        assert store.confidence_scorers() == ["confidence:half"]
