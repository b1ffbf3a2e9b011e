"""hadis_profile.measure on tiny random-weight pipelines of real families (no downloads)."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from measure_helpers import loaded, tiny_zoo  # noqa: E402

from hadis_profile.errors import HadisError  # noqa: E402
from hadis_profile.measure import latency as L  # noqa: E402
from hadis_profile.measure import scorers as S  # noqa: E402
from hadis_profile.measure.generate import generate_images, image_seed  # noqa: E402
from hadis_profile.measure.pipelines import call_kwargs, content_hash, load_pipeline  # noqa: E402
from hadis_profile.zoo import load_zoo, parse_zoo  # noqa: E402

PROMPTS = ["a photo of a cat", "an astronaut riding a horse on the moon, detailed", "red"]


def _spec(**fields):
    base = {"name": "x", "steps": 1, "guidance_scale": 0.0, "height": 32, "width": 32}
    return parse_zoo({"models": [{**base, **fields}]}).models[0]


# ----------------------------------------------------------------------------- tiny zoo


def test_mini_clip_tokenizer_is_a_working_clip_bpe():
    from hadis_profile.measure.tiny import build_clip_tokenizer

    tok = build_clip_tokenizer()
    assert len(tok) == 834 and tok.model_max_length == 77  # fixed: the zoo depends on it
    ids = tok("a photo of an astronaut riding a horse")["input_ids"]
    assert ids[0] == 832 and ids[-1] == 833  # <|startoftext|>, <|endoftext|>
    assert len(ids) < 12  # whole-word merges, not characters
    text = "Zebra! 42 naive cafe"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == "zebra ! 4 2 naive cafe"


@pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None, reason="open_clip_torch not installed"
)
def test_openai_clip_tokenizer_has_the_real_ids():
    from hadis_profile.measure.tiny import build_clip_tokenizer

    tok = build_clip_tokenizer("openai")
    assert len(tok) == 49408
    ids = tok("a photo of an astronaut riding a horse")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_t5_tokenizer_round_trips():
    from hadis_profile.measure.tiny import build_t5_tokenizer

    tok = build_t5_tokenizer()
    enc = tok(
        ["a photo of a cat", "Zebra 42!"], padding="max_length", max_length=12, truncation=True
    )
    assert all(ids[-1] == 0 for ids in enc["input_ids"])  # <pad>
    assert 1 in enc["input_ids"][0]  # </s>
    assert tok.batch_decode(enc["input_ids"], skip_special_tokens=True) == [
        "a photo of a cat",
        "Zebra 42!",
    ]


def test_tiny_zoo_is_valid_and_seeded():
    from hadis_profile.measure.tiny import tiny_sd1_unet

    tz = tiny_zoo()
    zoo = load_zoo(tz.zoo_path)
    assert zoo.names == tz.model_names
    assert {m.family for m in zoo} == {"sd1", "sdxl", "sd3"}
    for folder in ("sd1", "sdxl", "sd3"):
        assert (tz.root / folder / "model_index.json").is_file()
    a, b = tiny_sd1_unet(7).state_dict(), tiny_sd1_unet(7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = tiny_sd1_unet(8).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_zoo_tiny_cli(tmp_path):
    from typer.testing import CliRunner

    from hadis_profile.cli import app

    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["zoo", "tiny", "--out", str(tmp_path / "z")])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - t0 < 60
    assert len(load_zoo(tmp_path / "z" / "model_zoo.tiny.yaml")) == 4
    # same seed, same bytes as the shared build
    ref = tiny_zoo().root
    for rel in ("sd1/unet/diffusion_pytorch_model.safetensors", "extra/unet_alt.safetensors"):
        assert (tmp_path / "z" / rel).read_bytes() == (ref / rel).read_bytes()


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("name", "pipeline", "scheduler", "denoiser"),
    [
        ("tiny-sd1-light", "StableDiffusionPipeline", "EulerDiscreteScheduler", "unet"),
        ("tiny-sdxl-mid", "StableDiffusionXLPipeline", "EulerDiscreteScheduler", "unet"),
        (
            "tiny-sd3-heavy",
            "StableDiffusion3Pipeline",
            "FlowMatchEulerDiscreteScheduler",
            "transformer",
        ),
        ("tiny-sd1-heavy", "StableDiffusionPipeline", "DDIMScheduler", "unet"),
    ],
)
def test_every_family_loads_and_runs_fast(name, pipeline, scheduler, denoiser):
    lp = loaded(name)
    assert type(lp.pipe).__name__ == pipeline
    assert type(lp.pipe.scheduler).__name__ == scheduler
    assert getattr(lp.pipe, denoiser) is not None
    assert lp.device == "cpu" and lp.dtype == "float32"
    run = L.pipeline_runner(lp.pipe, call_kwargs(lp.spec))
    run(1)
    t0 = time.perf_counter()
    out = run(2)
    assert time.perf_counter() - t0 < 1.0
    assert tuple(out.images.shape) == (2, 3, 32, 32)


def test_scheduler_kwargs_and_single_file_override_are_applied():
    from safetensors.torch import load_file

    lp = loaded("tiny-sd1-heavy")
    assert lp.pipe.scheduler.config.timestep_spacing == "trailing"
    alt = load_file(str(tiny_zoo().root / "extra" / "unet_alt.safetensors"))
    state = lp.pipe.unet.state_dict()
    assert all(torch.equal(state[k], alt[k]) for k in alt)
    light = loaded("tiny-sd1-light").pipe.unet.state_dict()
    assert not all(torch.equal(state[k], light[k]) for k in alt)


def test_folder_override_and_auto_pipeline():
    root = tiny_zoo().root
    spec = _spec(
        source="./sd1",
        pipeline="auto",
        components=[{"component": "vae", "repo": "./sdxl", "subfolder": "vae"}],
    )
    lp = load_pipeline(spec, device="cpu", base_dir=root)
    assert type(lp.pipe).__name__ == "StableDiffusionPipeline"
    sdxl_vae = loaded("tiny-sdxl-mid").pipe.vae.state_dict()
    assert all(torch.equal(v, sdxl_vae[k]) for k, v in lp.pipe.vae.state_dict().items())


def test_missing_checkpoints_fail_fast_with_a_fetch_hint(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(HadisError, match="hf download org-x/model-y --revision abc"):
        load_pipeline(
            _spec(source="org-x/model-y", revision="abc"), device="cpu", cache_dir=tmp_path
        )
    assert time.perf_counter() - t0 < 5  # offline: no network wait
    over = [{"component": "unet", "repo": "org-x/lightning", "file": "unet.safetensors"}]
    with pytest.raises(HadisError, match=r"download org-x/lightning unet\.safetensors"):
        load_pipeline(
            _spec(source="./sd1", components=over),
            device="cpu",
            base_dir=tiny_zoo().root,
            cache_dir=tmp_path,
        )
    with pytest.raises(HadisError, match="does not exist"):
        load_pipeline(_spec(source="./nowhere"), device="cpu", base_dir=tmp_path)
    with pytest.raises(HadisError, match="not a diffusers pipeline folder"):
        load_pipeline(_spec(source=str(tiny_zoo().root / "clip")), device="cpu")
    wrong = [
        {"component": "unet", "repo": "./sdxl", "file": "unet/diffusion_pytorch_model.safetensors"}
    ]
    with pytest.raises(HadisError, match="does not fit component 'unet'"):
        load_pipeline(
            _spec(source="./sd1", components=wrong), device="cpu", base_dir=tiny_zoo().root
        )


# ----------------------------------------------------------------------------- generation


def test_generation_is_reproducible_and_batch_invariant():
    lp = loaded("tiny-sd1-light")
    kw = call_kwargs(lp.spec)

    def gen(prompts, bs, ids=None):
        return list(
            generate_images(
                lp.pipe,
                prompts,
                kw,
                prompt_ids=ids,
                images_per_prompt=2,
                base_seed=5,
                batch_size=bs,
                output_type="np",
            )
        )

    one = gen(PROMPTS, 1)
    three = gen(PROMPTS, 3)
    again = gen(PROMPTS, 3)
    subset = gen(PROMPTS[1:], 4, ids=[1, 2])  # a resumed run generating the rest
    assert [p.prompt_id for p in three] == [0, 1, 2]
    assert three[1].seeds == [image_seed(5, 1, 0), image_seed(5, 1, 1)]
    for a, b, c in zip(one, three, again, strict=True):
        np.testing.assert_allclose(np.stack(a.images), np.stack(b.images), atol=1e-4)
        np.testing.assert_array_equal(np.stack(b.images), np.stack(c.images))
    for a, d in zip(one[1:], subset, strict=True):
        np.testing.assert_allclose(np.stack(a.images), np.stack(d.images), atol=1e-4)
    assert np.abs(one[0].images[0] - one[0].images[1]).max() > 0.05  # distinct seeds
    pil = next(generate_images(lp.pipe, PROMPTS[:1], kw, images_per_prompt=1))
    assert pil.images[0].size == (32, 32)


# ----------------------------------------------------------------------------- latency


def test_latency_sweep_and_light_is_cheaper_than_heavy():
    light, heavy = loaded("tiny-sd1-light"), loaded("tiny-sd1-heavy")
    pts = L.latency_sweep(
        L.pipeline_runner(light.pipe, call_kwargs(light.spec)), [1, 2], warmup=1, reps=3
    )
    assert [p.stats.batch_size for p in pts] == [1, 2]
    for p in pts:
        s = p.stats
        assert not s.infeasible and s.reps == 3 and s.warmup == 1
        assert 0 < s.p50_s <= s.p90_s <= s.p99_s and s.mean_s > 0
        assert s.peak_mem_bytes > 10_000_000 and len(p.samples_s) == 3
    hv = L.measure_point(
        L.pipeline_runner(heavy.pipe, call_kwargs(heavy.spec)), 1, warmup=1, reps=3
    )
    assert hv.stats.p50_s > 2 * pts[0].stats.p50_s  # 16 CFG steps vs 2 plain steps


def test_stage_breakdown_covers_the_three_stages():
    for name in ("tiny-sd1-light", "tiny-sd3-heavy"):
        lp = loaded(name)
        run = L.pipeline_runner(lp.pipe, call_kwargs(lp.spec))
        stages = L.stage_breakdown(lp.pipe, lambda run=run: run(1), reps=2)
        assert set(stages) == {"text_encoding", "denoising", "vae_decode", "other", "total"}
        assert all(stages[k] > 0 for k in ("text_encoding", "denoising", "vae_decode"))
        parts = stages["text_encoding"] + stages["denoising"] + stages["vae_decode"]
        assert parts <= stages["total"] * 1.05
        assert "decode" not in vars(lp.pipe.vae)  # the wrapper is gone again


# ----------------------------------------------------------------------------- scorers


@pytest.fixture(scope="module")
def clip_scorer():
    return S.CLIPScorer(str(tiny_zoo().clip_path), batch_size=4)


def _images(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_clip_score_equals_torchmetrics(clip_scorer):
    pytest.importorskip("torchmetrics")
    from torchmetrics.functional.multimodal import clip_score
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    imgs = _images(6)
    prompts = [*PROMPTS, "x", "a b c d e f g", "a dog " * 60]  # the last one is truncated
    m, p = clip_scorer.model, clip_scorer.processor
    ours = clip_scorer.score(S.to_pil(imgs), prompts)
    for i in range(len(prompts)):
        ref = clip_score(imgs[i], prompts[i], lambda: (m, p))
        assert ours[i] == pytest.approx(float(ref), abs=1e-3)
    # unclamped, one batch: bit-for-bit the same computation
    raw, _ = _clip_score_update(list(imgs), prompts, m, p)
    np.testing.assert_allclose(
        100 * clip_scorer.cosine(list(imgs), prompts), raw.detach().numpy(), rtol=0, atol=1e-5
    )
    # A local checkpoint is named by its folder and content hash, not its machine path.
    clip_hash = content_hash(tiny_zoo().clip_path)[:12]
    assert clip_scorer.metric_id == f"clip_score:clip@{clip_hash}"
    assert (ours >= 0).all() and (ours == 0).any() and (ours > 0).any()


def test_pickscore_equals_hand_computation():
    tz = tiny_zoo()
    scorer = S.PickScorer(str(tz.pickscore_path), str(tz.clip_path), batch_size=2)
    imgs, prompts = _images(3, seed=1), PROMPTS
    ours = scorer.score(imgs, prompts)
    model, proc = scorer.model, scorer.processor
    with torch.no_grad():
        for i in range(3):
            im = proc(images=S.to_pil(imgs[i : i + 1]), return_tensors="pt")
            tx = proc(
                text=[prompts[i]], padding=True, truncation=True, max_length=77, return_tensors="pt"
            )
            ie = model.get_image_features(**im)
            te = model.get_text_features(**tx)
            cos = float((ie / ie.norm()) @ (te / te.norm()).T)
            assert ours[i] == pytest.approx(float(model.logit_scale.exp()) * cos, abs=1e-4)
    assert scorer.metric_id == f"pick_score:pickscore@{content_hash(tz.pickscore_path)[:12]}"


def test_confidence_overhead_and_clip_features(clip_scorer):
    imgs = _images(4, seed=2)
    disc = S.CLIPConfidence(clip_scorer)
    np.testing.assert_allclose(
        disc.confidence(imgs, ["a cat"] * 4), clip_scorer.score(imgs, ["a cat"] * 4) / 100
    )
    assert disc.scorer_id.startswith("clip_confidence:")
    ext = S.CLIPImageExtractor(
        str(tiny_zoo().clip_path), model=clip_scorer.model, processor=clip_scorer.processor
    )
    assert ext.features(imgs).shape == (4, 16)
    stats = L.scorer_overhead(clip_scorer, list(imgs), ["a cat"] * 4, batch_size=2, reps=1)
    assert stats.p50_s > 0 and stats.reps == 2


def test_scorer_checkpoint_missing_offline(tmp_path):
    with pytest.raises(HadisError, match="hf download org-x/clip-y"):
        S.CLIPScorer("org-x/clip-y", cache_dir=tmp_path)
