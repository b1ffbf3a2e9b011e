"""The GPU path's defects, reproduced on the CPU (fp16 CPU tensors, faults injected into the
real diffusers modules), and what `run` does about them.

Each test here failed before its fix:
* an OOM inside SDXL's fp32-upcast VAE decode left the VAE in fp32, so the next call
  died on ``Input type (c10::Half) and bias type (float)``;
* the generation batch was not clamped to the largest feasible batch, and an OOM
  while generating was not caught;
* peak memory counted whatever else the process held (the scorer models);
* an unexpected error in one model aborted the whole run.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from measure_helpers import tiny_zoo  # noqa: E402

from hadis_profile.measure import pipelines  # noqa: E402
from hadis_profile.measure import profiler as P  # noqa: E402
from hadis_profile.measure.generate import generate_images, image_seed  # noqa: E402
from hadis_profile.measure.job import ModelJob, component_dtypes  # noqa: E402
from hadis_profile.measure.quality import QualityTools  # noqa: E402
from hadis_profile.measure.summary import RunFailed  # noqa: E402
from hadis_profile.measure.units import ModelWork, generation_batch  # noqa: E402
from hadis_profile.measurements import LatencyStats  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402
from hadis_profile.zoo import load_zoo  # noqa: E402

OOM = "CUDA out of memory. Tried to allocate 20.00 GiB"


class Sink:
    """Collects what a job sends, as the recorder would commit it."""

    def __init__(self) -> None:
        self.points, self.records, self.timed, self.logs = [], [], [], []

    def begin(self, work):
        pass

    def loaded(self, model, load_s, notes):
        pass

    def latency(self, model, point):
        self.points.append(point)

    def samples(self, model, batch_size, seconds):
        self.timed.append((batch_size, len(seconds)))

    def stages(self, model, stages):
        pass

    def prompt(self, record):
        self.records.append(record)

    def log(self, text):
        self.logs.append(text)


def _half_sdxl(monkeypatch):
    """The tiny SDXL loaded as the GPU would run it: fp16 weights, VAE upcast for decoding."""
    real = pipelines.load_pipeline

    def load(spec, **kw):
        lp = real(spec, **kw)
        lp.pipe.to(torch.float16)
        lp.pipe.vae.config.force_upcast = True
        return lp

    monkeypatch.setattr(pipelines, "load_pipeline", load)


def _oom_in_decode_from(batch: int, calls: list):
    """Wrap the real ``AutoencoderKL.decode``: out of memory from ``batch`` latents on."""
    from diffusers import AutoencoderKL

    real = AutoencoderKL.decode

    def decode(self, z, *args, **kwargs):
        calls.append((z.shape[0], self.dtype))
        if z.shape[0] >= batch:
            raise torch.OutOfMemoryError(OOM)
        return real(self, z, *args, **kwargs)

    return decode


def _opts(**kw):
    base = {
        "zoo": tiny_zoo().zoo_path,
        "prompts": "unused",
        "out": "unused",
        "images_per_prompt": 2,
        "warmup": 0,
        "reps": 2,
        "min_reps": 2,
        "tolerance": None,
        "device": "cpu",
    }
    return P.RunOptions(**{**base, **kw})


def test_oom_in_the_upcast_vae_decode_leaves_the_next_point_and_the_images_working(monkeypatch):
    from diffusers import AutoencoderKL

    _half_sdxl(monkeypatch)
    calls: list = []
    monkeypatch.setattr(AutoencoderKL, "decode", _oom_in_decode_from(2, calls))
    tz = tiny_zoo()
    spec = load_zoo(tz.zoo_path).get("tiny-sdxl-mid")
    opts = _opts(gen_batch=4)  # a request above what fits: clamped to the feasible batch 1
    tools = QualityTools([], None, [])
    sink = Sink()
    work = ModelWork(spec, (1, 2, 4), (0, 1))
    with ModelJob(spec, opts, "cpu", tools, tz.zoo_path.parent) as job:
        assert job.loaded.pipe.vae.dtype == torch.float16
        job.run(work, ["a red apple", "a blue door"], sink)
        # after the failed decode the VAE is fp16 again, and another point runs
        assert job.loaded.pipe.vae.dtype == torch.float16
        again = job.latency([1], lambda p: None)
    assert [(p.stats.batch_size, p.infeasible) for p in sink.points] == [(1, False), (2, True)]
    assert OOM in sink.points[1].error
    assert (2, torch.float32) in calls  # the decode really ran upcast, then failed
    assert not again[0].infeasible
    assert [r.prompt_id for r in sink.records] == [0, 1]
    assert all(len(r.seeds) == 2 for r in sink.records)
    assert sink.timed and {b for b, _ in sink.timed} == {1}  # generation calls were timed


def test_restore_puts_every_component_back_in_its_loaded_dtype():
    from hadis_profile.measure.tiny import tiny_sdxl

    pipe = tiny_sdxl(0).to(torch.float16)
    before = component_dtypes(pipe)
    assert before["vae"] == before["unet"] == torch.float16
    job = ModelJob(None, None, "cpu", None, ".")
    job.loaded = type("L", (), {"pipe": pipe})()
    job._dtypes = before
    pipe.upcast_vae()  # what SDXL does before decoding
    assert pipe.vae.dtype == torch.float32
    assert job.restore() == ["vae"]
    assert component_dtypes(pipe) == before and job.restore() == []


def _stats(b: int, p50: float, infeasible: bool = False) -> LatencyStats:
    nan = float("nan")
    if infeasible:
        return LatencyStats(b, nan, nan, nan, nan, nan, None, True)
    return LatencyStats(b, p50, 0.0, p50, p50, p50)


def test_generation_batch_is_the_best_throughput_feasible_batch_and_requests_are_clamped():
    lat = {1: _stats(1, 1.0), 2: _stats(2, 1.5), 4: _stats(4, 2.0), 8: _stats(8, 0, True)}
    assert generation_batch(lat, None) == 4  # 2 images/s beats 1.33 and 1
    assert generation_batch(lat, 16) == 4  # 8 ran out of memory: 16 cannot fit
    assert generation_batch(lat, 2) == 2
    flat = {1: _stats(1, 1.0), 2: _stats(2, 2.0)}
    assert generation_batch(flat, None) == 1  # a tie goes to the smaller batch
    assert generation_batch({}, None) == 4 and generation_batch({}, 3) == 3


class FakePipe:
    """Images that depend on their seed only; out of memory above ``limit`` images."""

    def __init__(self, limit: int) -> None:
        self.limit, self.calls = limit, []

    def __call__(self, prompt, generator, output_type, **kwargs):
        self.calls.append(len(prompt))
        if len(prompt) > self.limit:
            raise torch.OutOfMemoryError(OOM)
        images = [torch.rand(3, 2, 2, generator=g) for g in generator]
        return type("Out", (), {"images": images})()


def test_generation_halves_the_batch_on_oom_and_makes_the_same_images():
    prompts = ["a", "b", "c"]
    ref = list(generate_images(FakePipe(99), prompts, {}, images_per_prompt=2, batch_size=1))
    pipe, ooms = FakePipe(2), []
    got = list(
        generate_images(
            pipe,
            prompts,
            {},
            images_per_prompt=2,
            batch_size=8,
            on_oom=lambda size, msg: ooms.append(size),
        )
    )
    assert ooms == [4, 2] and pipe.calls == [6, 4, 2, 2, 2]
    assert [u.seeds for u in got] == [u.seeds for u in ref]
    assert got[0].seeds == [image_seed(0, 0, 0), image_seed(0, 0, 1)]
    for a, b in zip(got, ref, strict=True):
        for x, y in zip(a.images, b.images, strict=True):
            assert torch.equal(x, y)
    with pytest.raises(torch.OutOfMemoryError):  # at batch 1 there is nothing left to halve
        list(generate_images(FakePipe(0), prompts, {}, images_per_prompt=1, batch_size=2))


def test_quality_tools_move_every_module_they_hold(tmp_path):
    from hadis_profile.measure import scorers as S

    tz = tiny_zoo()
    clip = S.CLIPScorer(str(tz.clip_path))
    disc = S.CLIPConfidence(clip)
    ext = S.TorchModuleExtractor(torch.nn.Linear(4, 2), "tiny:lin")
    tools = QualityTools([clip], disc, [ext])
    tools.to("meta")
    assert {p.device.type for p in clip.model.parameters()} == {"meta"}
    assert {p.device.type for p in ext.module.parameters()} == {"meta"}
    assert clip.device == ext.device == "meta" and disc.clip is clip


# --------------------------------------------------------------------------- through `run`


PROMPTS = ["a red apple on a white table", "three yellow rubber ducks"]


class Hog:
    """A plug-in scorer that keeps ~400 MB resident, as a large metric model would."""

    metric_id = "clip_score:hog"

    def __init__(self) -> None:
        self.ballast = np.ones(400 * 2**20 // 8)

    def __call__(self, images, prompts):
        return [0.5] * len(prompts)


def _run(tmp_path, name, prompts_file, **kw):
    tz = tiny_zoo()
    kw = {"scorers": [f"clip_score:{tz.clip_path}"], **kw}
    opts = P.RunOptions(
        zoo=tz.zoo_path,
        prompts=prompts_file,
        out=tmp_path / name,
        models=["tiny-sd1-light"],
        images_per_prompt=1,
        batch_sizes=(1,),
        warmup=0,
        reps=3,
        min_reps=3,
        tolerance=None,
        device="cpu",
        discriminator="none",
        router=False,
        **kw,
    )
    P.run_profile(opts)
    with RunStore.open(opts.out) as store:
        return store.latency("tiny-sd1-light", "cpu")[1].peak_mem_bytes


def test_peak_memory_counts_the_model_not_the_scorers_beside_it(tmp_path, monkeypatch):
    import sys
    import types

    prompts_file = tmp_path / "p.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n")
    mod = types.ModuleType("hog_scorer")
    hog = Hog()
    mod.hog = hog
    monkeypatch.setitem(sys.modules, "hog_scorer", mod)
    plain = _run(tmp_path, "plain", prompts_file)
    tz = tiny_zoo()
    with_hog = _run(
        tmp_path, "hog", prompts_file, scorers=[f"clip_score:{tz.clip_path}", "hog_scorer:hog"]
    )
    assert plain is not None and with_hog is not None
    # The 400 MB the scorer holds are not the model's: both runs see the same model.
    assert abs(with_hog - plain) < 100 * 2**20, (plain, with_hog)
    assert with_hog < 400 * 2**20


def test_one_failing_model_does_not_stop_the_others(tmp_path, monkeypatch):
    tz = tiny_zoo()
    prompts_file = tmp_path / "p.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n")
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(
        textwrap.dedent(
            f"""\
            defaults: {{dtype: fp32, height: 32, width: 32}}
            models:
              - {{name: broken, source: {tmp_path / "gone"}, pipeline: StableDiffusionPipeline,
                 steps: 2, guidance_scale: 0.0}}
              - {{name: flaky, source: {tz.root / "sd1"}, pipeline: StableDiffusionPipeline,
                 steps: 3, guidance_scale: 0.0}}
              - {{name: fine, source: {tz.root / "sd1"}, pipeline: StableDiffusionPipeline,
                 steps: 2, guidance_scale: 0.0}}
            """
        )
    )
    real = pipelines.preflight
    # "broken" vanishes after the preflight check; "flaky" fails while generating
    monkeypatch.setattr(
        pipelines,
        "preflight",
        lambda spec, **kw: None if spec.name == "broken" else real(spec, **kw),
    )
    from hadis_profile.measure import job as J

    real_prompts = J.ModelJob.prompts

    def prompts(self, *args, **kwargs):
        if self.name == "flaky":
            raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")
        return real_prompts(self, *args, **kwargs)

    monkeypatch.setattr(J.ModelJob, "prompts", prompts)
    opts = P.RunOptions(
        zoo=zoo,
        prompts=prompts_file,
        out=tmp_path / "run",
        images_per_prompt=1,
        batch_sizes=(1, 2),
        warmup=0,
        reps=2,
        min_reps=2,
        tolerance=None,
        device="cpu",
        scorers=[f"clip_score:{tz.clip_path}"],
        router=False,
    )
    with pytest.raises(RunFailed) as err:
        P.run_profile(opts)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("2 of 3 models failed: broken during loading")
    assert "flaky during image generation and scoring (RuntimeError: CUBLAS" in msg
    assert "rerunning the same command retries what is missing" in msg
    report = err.value.report
    assert [f.model for f in report.failures] == ["broken", "flaky"]
    with RunStore.open(opts.out) as store:
        assert sorted(store.latency("fine", "cpu")) == [1, 2]
        assert store.done_prompts("fine", 1) == {0, 1}
        assert sorted(store.latency("flaky", "cpu")) == [1, 2]  # its sweep was committed
        assert store.done_prompts("flaky", 1) == set()
