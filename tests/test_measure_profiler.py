"""hadis-profile run: the profiler on the tiny zoo (resume, OOM, labels, dry run, CLI)."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from measure_helpers import tiny_zoo  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from hadis_profile.cli import app  # noqa: E402
from hadis_profile.errors import HadisError  # noqa: E402
from hadis_profile.measure import profiler as P  # noqa: E402
from hadis_profile.measure.generate import image_seed  # noqa: E402
from hadis_profile.measure.pipelines import content_hash  # noqa: E402
from hadis_profile.report.runs import render_run  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402

MODELS = ["tiny-sd1-light", "tiny-sd1-heavy"]
PROMPTS = ["a red apple on a white table", "three yellow rubber ducks", "a lighthouse at night"]


@pytest.fixture()
def prompts_file(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


def _opts(tmp_path, prompts_file, **kw):
    tz = tiny_zoo()
    base = {
        "zoo": tz.zoo_path,
        "prompts": prompts_file,
        "out": tmp_path / "run",
        "models": MODELS,
        "images_per_prompt": 2,
        "batch_sizes": (1, 2),
        "warmup": 0,
        "reps": 2,
        "gen_batch": 3,
        "device": "cpu",
        "scorers": [f"clip_score:{tz.clip_path}"],
        "discriminator": "clip",
        "fid": f"clip:{tz.clip_path}",
        "router": importlib.util.find_spec("spacy") is not None,
    }
    return P.RunOptions(**{**base, **kw})


def report_disc_id(store: RunStore) -> str:
    (scorer,) = store.confidence_scorers()
    return scorer


def test_full_run_fills_the_store_and_compiles(tmp_path, prompts_file):
    from hadis_profile.pareto import compile_table

    tz = tiny_zoo()
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(16), sigma=np.eye(16))
    opts = _opts(tmp_path, prompts_file, fid_reference=ref, save_images=True, stages=True)
    report = P.run_profile(opts)
    assert report.hardware_label == "cpu" and report.device == "cpu"
    assert report.units_done == 2 * (2 + 3) and report.units_skipped == 0
    with RunStore.open(opts.out) as store:
        assert store.prompts() == PROMPTS
        assert [h["label"] for h in store.hardware()] == ["cpu"]
        assert "torch" in store.hardware()[0]["libraries"]
        prov = store.provenance
        assert prov["seeds"]["images_per_prompt"] == 2 and prov["zoo_hash"]
        assert set(prov["stages"]) == set(MODELS)
        # Every scorer and the discriminator have a measured per-image cost.
        overhead = prov["scorer_overhead_s_per_image"]
        clip = f"clip@{content_hash(tz.clip_path)[:12]}"  # portable: folder name + content
        assert set(overhead) == {f"clip_score:{clip}", report_disc_id(store)}
        assert all(0 < v < 10 for v in overhead.values())
        for name in MODELS:
            lat = store.latency(name, "cpu")
            # gen_batch 3 is clamped to the largest feasible batch, 2; the 3 calls that
            # made the 6 images at batch 2 joined that point's 2 timed sweep calls.
            assert sorted(lat) == [1, 2] and lat[1].reps == 2 and lat[2].reps == 2 + 3
            samples = store.latency_samples(name, "cpu")
            assert [src for _, src in samples[1]] == ["sweep"] * 2
            assert [src for _, src in samples[2]] == ["sweep"] * 2 + ["generation"] * 3
            every = [x for x, _ in samples[2]]
            assert lat[2].p50_s == pytest.approx(float(np.median(every)), rel=1e-12)
            assert lat[2].p95_s == pytest.approx(float(np.percentile(every, 95)), rel=1e-12)
            assert store.done_prompts(name, 2) == {0, 1, 2}
        meas = store.load_measurements()
        assert set(meas.reference_stats) == {f"clip:{clip}"}
        store.export(tmp_path / "export")
    with open(tmp_path / "export" / "images.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["model"] == MODELS[0]]
    assert len(rows) == 6
    for r in rows:
        assert int(r["seed"]) == image_seed(0, int(r["prompt_id"]), int(r["seed_index"]))
        assert (opts.out / r["path"]).is_file()
    m = meas.models[MODELS[0]]
    assert m.quality[f"clip_score:{clip}"].shape == (3,)
    assert m.confidence.shape == (3,) and m.features[f"clip:{clip}"].shape == (3, 2, 16)
    assert meas.ordered_models() == MODELS  # 2 steps is cheaper than 16 CFG steps
    doc = compile_table(meas)
    assert doc["payload"]["rows"]
    assert doc["payload"]["provenance"]["run"]["scorer_overhead_s_per_image"] == overhead
    assert report.models[0].mean_scores and report.models[0].mean_confidence is not None


def test_resume_after_a_crash_completes_only_what_is_missing(tmp_path, prompts_file, monkeypatch):
    from hadis_profile.measure import scorers as S

    opts = _opts(tmp_path, prompts_file, models=MODELS[:1], fid="none", stages=False)
    real = S.CLIPScorer.score

    def flaky(self, images, prompts):
        if prompts[0] == PROMPTS[1]:  # the second prompt's scoring dies
            raise KeyboardInterrupt
        return real(self, images, prompts)

    monkeypatch.setattr(S.CLIPScorer, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        P.run_profile(opts)
    with RunStore.open(opts.out) as store:
        assert store.done_prompts(MODELS[0], 2) == {0}  # unit 0 committed, unit 1 not
        assert sorted(store.latency(MODELS[0], "cpu")) == [1, 2]
    monkeypatch.setattr(S.CLIPScorer, "score", real)
    report = P.run_profile(opts)
    assert report.units_done == 2 and report.units_skipped == 3  # prompts 1, 2 vs 2 lat + 1
    fresh = P.run_profile(
        _opts(tmp_path, prompts_file, models=MODELS[:1], fid="none", out=tmp_path / "fresh")
    )
    assert fresh.units_done == 5
    with RunStore.open(opts.out) as a, RunStore.open(tmp_path / "fresh") as b:
        qa = a.load_measurements().models[MODELS[0]].quality
        qb = b.load_measurements().models[MODELS[0]].quality
    for k in qa:
        np.testing.assert_allclose(qa[k], qb[k], atol=1e-3)  # resumed == uninterrupted
    again = P.run_profile(opts)
    assert again.units_done == 0 and again.units_skipped == 5


def test_resume_with_other_seeds_is_refused_and_fresh_starts_over(tmp_path, prompts_file):
    opts = _opts(tmp_path, prompts_file, models=MODELS[:1], fid="none", latency=False)
    P.run_profile(opts)
    with pytest.raises(HadisError, match="other seeds"):
        P.run_profile(
            _opts(tmp_path, prompts_file, models=MODELS[:1], fid="none", latency=False, seed=1)
        )
    report = P.run_profile(
        _opts(
            tmp_path, prompts_file, models=MODELS[:1], fid="none", latency=False, seed=1, fresh=True
        )
    )
    assert report.units_done == 3 and report.units_skipped == 0


def test_oom_point_is_recorded_and_the_batch_stops_growing(tmp_path, prompts_file, monkeypatch):
    from hadis_profile.measure import latency as L

    real_runner = L.pipeline_runner
    seen: list[int] = []

    def runner(*args, **kwargs):
        fn = real_runner(*args, **kwargs)

        def run(b):
            seen.append(b)
            if b >= 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
            return fn(b)

        return run

    monkeypatch.setattr(L, "pipeline_runner", runner)
    opts = _opts(tmp_path, prompts_file, models=MODELS[:1], quality=False, batch_sizes=(1, 2, 4))
    report = P.run_profile(opts)
    assert 4 not in seen
    with RunStore.open(opts.out) as store:
        lat = store.latency(MODELS[0], "cpu")
    assert sorted(lat) == [1, 2] and lat[2].infeasible and not lat[1].infeasible
    assert any("out of memory" in w for w in report.models[0].warnings)
    seen.clear()
    again = P.run_profile(opts)  # resume: nothing left, b=4 is never tried
    assert seen == [] and again.units_done == 0


def test_dry_run_writes_nothing(tmp_path, prompts_file):
    opts = _opts(tmp_path, prompts_file, dry_run=True)
    report = P.run_profile(opts)
    assert report.dry_run and not opts.out.exists()
    assert report.units_done == 2 * (2 + 3)
    assert [m.warnings for m in report.models] == [[], []]


def test_hardware_label_must_match_the_device():
    h100 = P.DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", "550.54", "h100-80gb-hbm3")
    cpu = P.DeviceInfo("cpu", "AMD EPYC 7B13, 2 torch threads", None, "cpu")
    assert P.check_hardware_label(None, h100, False) == "h100-80gb-hbm3"
    assert P.check_hardware_label("h100", h100, False) == "h100"
    assert P.check_hardware_label("H100-80GB", h100, False) == "H100-80GB"
    with pytest.raises(HadisError, match="does not match the detected device NVIDIA H100"):
        P.check_hardware_label("a100", h100, False)
    assert P.check_hardware_label("a100", h100, True) == "a100"
    with pytest.raises(HadisError, match="uses the CPU"):
        P.check_hardware_label("l40s", cpu, False)
    assert P.check_hardware_label("cpu", cpu, False) == "cpu"
    assert P.check_hardware_label("epyc", cpu, False) == "epyc"
    with pytest.raises(HadisError, match="short label"):
        P.check_hardware_label("a 100", cpu, True)


def test_run_and_demo_cli(tmp_path, prompts_file):
    tz = tiny_zoo()
    runner = CliRunner()
    base = [
        "run",
        "--zoo",
        str(tz.zoo_path),
        "--prompts",
        str(prompts_file),
        "--out",
        str(tmp_path / "r"),
        "--device",
        "cpu",
    ]
    res = runner.invoke(app, [*base, "--dry-run", "-m", "tiny-sd1-light"])
    assert res.exit_code == 0, res.output
    assert "tiny-sd1-light" in res.output and not (tmp_path / "r").exists()
    res = runner.invoke(app, [*base, "--gpu", "a100"])
    assert res.exit_code == 1 and isinstance(res.exception, HadisError)
    res = runner.invoke(
        app,
        [
            *base,
            "-m",
            "tiny-sd1-light",
            "--skip-quality",
            "--batch-sizes",
            "1",
            "--reps",
            "2",
            "--warmup",
            "0",
            "--no-router",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "tiny-sd1-light" in res.output
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--source", "tiny"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo" / "table.json").is_file()


def test_missing_model_fails_before_anything_runs(tmp_path, prompts_file):
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(
        "models:\n"
        "  - {name: ok, source: %s, steps: 1, guidance_scale: 0.0, height: 32, width: 32,\n"
        "     dtype: fp32}\n"
        "  - {name: absent, source: org-x/not-cached, steps: 1, guidance_scale: 0.0,\n"
        "     height: 32, width: 32}\n" % (tiny_zoo().root / "sd1")
    )
    opts = P.RunOptions(
        zoo=zoo,
        prompts=prompts_file,
        out=tmp_path / "run",
        device="cpu",
        scorers=[f"clip_score:{tiny_zoo().clip_path}"],
        cache_dir=tmp_path,
    )
    with pytest.raises(HadisError, match="hf download org-x/not-cached"):
        P.run_profile(opts)
    assert not (tmp_path / "run").exists()


def _render(report) -> str:
    from rich.console import Console

    console = Console(record=True, width=200)
    render_run(report, console)
    return console.export_text()


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_loading(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("load_pipeline must not be called")

    monkeypatch.setattr("hadis_profile.measure.pipelines.load_pipeline", boom)


def test_dry_run_estimates_gpu_time_from_a_probe(tmp_path, prompts_file, monkeypatch):
    from hadis_profile.measure import latency as L

    real, calls = L.measure_point, []

    def spy(fn, batch_size, **kw):
        calls.append((batch_size, kw["warmup"], kw["reps"]))
        return real(fn, batch_size, **kw)

    monkeypatch.setattr(L, "measure_point", spy)
    opts = _opts(tmp_path, prompts_file, dry_run=True, warmup=1, reps=3)
    report = P.run_profile(opts)
    assert not opts.out.exists()
    assert calls == [(1, 1, 2)] * len(MODELS)  # one warm-up + 2 timed batch-1 calls each
    for m in report.models:
        assert m.per_image_source == "probe" and m.per_image_s > 0 and m.load_s > 0
        images_left = len(PROMPTS) * opts.images_per_prompt
        sweep = sum((opts.warmup + opts.reps) * b for b in opts.batch_sizes) * m.per_image_s
        expected = images_left * m.per_image_s + sweep + m.load_s
        assert m.estimate_s == pytest.approx(expected, rel=1e-9)
    assert report.estimate_s == pytest.approx(sum(m.estimate_s for m in report.models))
    text = _render(report)
    assert "s/img" in text and "est. h" in text
    assert f"Estimated GPU time: {report.estimate_s / 3600:.3g} h" in text
    assert f"upper bound at batch size 1; from a probe on {report.device_name})" in text


def test_dry_run_uses_a_stored_batch1_latency_instead_of_probing(
    tmp_path, prompts_file, monkeypatch
):
    name = MODELS[0]
    P.run_profile(
        _opts(tmp_path, prompts_file, models=[name], quality=False, batch_sizes=(1,), router=False)
    )
    with RunStore.open(tmp_path / "run") as store:
        b1 = store.latency(name, "cpu")[1].p50_s
    before = _snapshot(tmp_path / "run")
    _no_loading(monkeypatch)
    opts = _opts(tmp_path, prompts_file, models=[name], dry_run=True, warmup=1, reps=3)
    report = P.run_profile(opts)
    (m,) = report.models
    assert m.per_image_source == "stored" and m.per_image_s == b1 and m.load_s is None
    assert list(m.latency) == [2]  # batch 1 is done
    expected = len(PROMPTS) * 2 * b1 + (1 + 3) * 2 * b1
    assert m.estimate_s == pytest.approx(expected, rel=1e-9)
    assert _snapshot(tmp_path / "run") == before  # nothing written
    text = _render(report)
    assert "(stored)" in text and "from stored batch-1 latencies under label 'cpu'" in text


def test_dry_run_no_probe_gives_no_estimate_for_unmeasured_models(
    tmp_path, prompts_file, monkeypatch
):
    _no_loading(monkeypatch)
    report = P.run_profile(_opts(tmp_path, prompts_file, dry_run=True, probe=False))
    assert [(m.per_image_s, m.estimate_s) for m in report.models] == [(None, None)] * 2
    assert report.estimate_s is None and not (tmp_path / "run").exists()
    tz = tiny_zoo()
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--zoo",
            str(tz.zoo_path),
            "--prompts",
            str(prompts_file),
            "--out",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "-m",
            MODELS[0],
            "--dry-run",
            "--no-probe",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Estimated GPU time: unknown" in res.output and not (tmp_path / "r").exists()


def _slow_sweep_at(monkeypatch, batch: int, seconds: float) -> None:
    """Make the latency sweep's calls at ``batch`` slower by ``seconds`` (not the image
    generation's), so which batch has the best throughput does not depend on timing noise."""
    import time

    from hadis_profile.measure.job import ModelJob

    original = ModelJob._runner

    def runner(self):
        run = original(self)

        def call(b):
            if b == batch:
                time.sleep(seconds)
            return run(b)

        return call

    monkeypatch.setattr(ModelJob, "_runner", runner)


def _sweep_and_generation_calls(tmp_path, prompts_file):
    opts = _opts(
        tmp_path,
        prompts_file,
        models=MODELS[:1],
        images_per_prompt=4,  # 3 prompts x 4 images: 6 calls at batch 2, 12 at batch 1
        gen_batch=None,
        reps=6,
        min_reps=3,
        tolerance=None,
        fid="none",
    )
    P.run_profile(opts)
    with RunStore.open(opts.out) as store:
        samples = store.latency_samples(MODELS[0], "cpu")
        lat = store.latency(MODELS[0], "cpu")
    for b, s in samples.items():
        assert lat[b].reps == len(s)
    return {b: [src for _, src in s] for b, s in samples.items()}


def test_the_batch_that_makes_the_images_is_finished_by_their_calls(
    tmp_path, prompts_file, monkeypatch
):
    """When the largest batch size has the best throughput, the images are made at it:
    it takes only min_reps sweep calls and the generation calls complete it."""
    _slow_sweep_at(monkeypatch, 1, 0.3)
    sources = _sweep_and_generation_calls(tmp_path, prompts_file)
    assert sources[1] == ["sweep"] * 6  # a smaller batch: every sweep call it asked for
    assert sources[2].count("sweep") == 3 and sources[2].count("generation") == 6


def test_the_largest_batch_is_measured_in_full_when_the_images_are_made_elsewhere(
    tmp_path, prompts_file, monkeypatch
):
    """When a smaller batch has the best throughput, no generation call will add to the
    largest one, so the sweep gives it every call it asked for (CI once saw it left at
    min_reps when timing noise made batch 1 the faster)."""
    _slow_sweep_at(monkeypatch, 2, 0.5)
    sources = _sweep_and_generation_calls(tmp_path, prompts_file)
    assert sources[2] == ["sweep"] * 6
    assert sources[1].count("sweep") == 6 and sources[1].count("generation") == 12
