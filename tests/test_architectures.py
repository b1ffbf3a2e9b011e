"""Real architectures without weights: shipped configs, parameter counts, CPU runs, mapping.

Parameter counts are checked on the meta device (nothing is allocated) against
published figures; the full-size SD 1.5 runs use fp32 on the CPU at 64x64 px.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from hadis_profile.errors import InputError, ParameterError  # noqa: E402
from hadis_profile.measure import no_weights as nw  # noqa: E402
from hadis_profile.zoo import load_zoo, parse_zoo  # noqa: E402

ZOO_PATH = Path(__file__).resolve().parents[1] / "model_zoo.yaml"
#: Largest magnitude fp16 can hold; activations must stay far below it.
FP16_MAX = 65504.0


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(ZOO_PATH)


def _spec(**fields):
    base = {"name": "probe", "source": "stabilityai/stable-diffusion-xl-base-1.0", "steps": 1}
    base.update({"guidance_scale": 0.0, "height": 1024, "width": 1024}, **fields)
    return parse_zoo({"models": [base]}).models[0]


# --------------------------------------------------------------------------- configs


SHIPPED = [(a.name, c) for a in nw.architectures().values() for c in a.modules]
DIFFUSERS_SHIPPED = [
    (a.name, c)
    for a in nw.architectures().values()
    for c in a.modules
    if a.components[c][0] == "diffusers"
]


@pytest.mark.parametrize(("arch", "component"), SHIPPED)
def test_every_shipped_component_builds_and_cites_its_source(arch, component):
    module = nw.build_component(arch, component, device="meta", dtype="bf16")
    assert type(module).__name__ == nw.get_architecture(arch).components[component][1]
    assert nw.get_architecture(arch).source(component)["file"].startswith("https://huggingface.co/")


@pytest.mark.parametrize(("arch", "component"), DIFFUSERS_SHIPPED)
def test_every_diffusers_config_key_reaches_the_model(arch, component):
    """diffusers' from_config ignores an unknown (misspelt) key with a mere warning."""
    module = nw.build_component(arch, component, device="meta", dtype="bf16")
    accepted = inspect.signature(type(module).__init__).parameters
    for key, value in nw.get_architecture(arch).config(component).items():
        if not key.startswith("_"):
            assert key in accepted, (arch, component, key)
            assert _plain(module.config[key]) == _plain(value), (arch, component, key)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_every_architecture_has_a_scheduler_and_a_pipeline_class():
    import diffusers

    for arch in nw.architectures().values():
        assert hasattr(diffusers, arch.pipeline)
        assert type(nw.build_scheduler(arch)).__name__ == arch.components["scheduler"][1]


# --------------------------------------------------------------------------- parameter counts

M, B = 1e6, 1e9

#: (architecture, component, published count, where it is published). Within 1%.
PUBLISHED = [
    # SDXL paper (Podell et al. 2023, arXiv 2307.01952) Table 1: SD 1.4/1.5 UNet 860M,
    # SD 2.0/2.1 865M, SDXL 2.6B; issue 9 quotes the exact 859.5M and 2.567B.
    ("sd15", "unet", 859.5 * M, "SDXL paper Table 1 / issue 9"),
    ("sd-turbo", "unet", 865 * M, "SDXL paper Table 1 (SD 2.x UNet)"),
    ("sdxl-base", "unet", 2.567 * B, "SDXL paper Table 1 / issue 9"),
    ("sdxl-turbo", "unet", 2.567 * B, "SDXL-Turbo keeps SDXL's UNet"),
    # CLIP ViT-L/14 text tower 123M; OpenCLIP ViT-bigG/14 text tower 695M (open_clip's
    # model profile table); T5 v1.1 XXL encoder 4.76B (issue 9).
    ("sd15", "text_encoder", 123 * M, "CLIP ViT-L/14 text encoder"),
    ("sdxl-base", "text_encoder", 123 * M, "CLIP ViT-L/14 text encoder"),
    ("sd35-large", "text_encoder", 123 * M, "CLIP ViT-L/14 text encoder (+ projection)"),
    ("sdxl-base", "text_encoder_2", 695 * M, "OpenCLIP ViT-bigG/14 text encoder"),
    ("sd35-medium", "text_encoder_2", 695 * M, "OpenCLIP ViT-bigG/14 text encoder"),
    ("sd35-large", "text_encoder_3", 4.76 * B, "T5 v1.1 XXL encoder"),
]


@pytest.mark.parametrize(("arch", "component", "published", "where"), PUBLISHED)
def test_parameter_count_matches_published_figure(arch, component, published, where):
    module = nw.build_component(arch, component, device="meta")
    assert nw.checkpoint_numel(module) == pytest.approx(published, rel=0.01), where


@pytest.mark.parametrize(
    ("arch", "published"),
    [
        # Stability AI's SD3.5 model cards and release post: "Stable Diffusion 3.5 Large:
        # At 8.1 billion parameters"; "Stable Diffusion 3.5 Medium: At 2.5 billion
        # parameters, with improved MMDiT-X architecture". Two significant digits, so the
        # count must round to them (half a unit: 0.05B); no exact figure is published.
        ("sd35-large", 8.1 * B),
        ("sd35-medium", 2.5 * B),
    ],
)
def test_sd35_transformer_count_rounds_to_model_card(arch, published):
    module = nw.build_component(arch, "transformer", device="meta")
    assert abs(nw.checkpoint_numel(module) - published) <= 0.05 * B


def test_checkpoint_count_includes_sd3_positional_table_and_counts_tied_tensors_once():
    medium = nw.build_component("sd35-medium", "transformer", device="meta")
    params = sum(p.numel() for p in medium.parameters())
    # The released checkpoint stores pos_embed (384*384 positions x 1536) as a tensor.
    assert nw.checkpoint_numel(medium) == params + 384 * 384 * 1536
    t5 = nw.build_component("sd35-medium", "text_encoder_3", device="meta")
    assert t5.shared.weight is t5.encoder.embed_tokens.weight
    assert nw.checkpoint_numel(t5) == sum(p.numel() for p in t5.parameters())


def test_large_turbo_and_large_share_one_architecture(zoo):
    turbo = nw.architecture_for_spec(zoo.get("sd35-large-turbo"))
    assert turbo is nw.architecture_for_spec(zoo.get("sd35-large"))


# --------------------------------------------------------------------------- no CPU copy


class CpuAllocations(TorchDispatchMode):
    """Bytes of every new (non-view) CPU tensor produced while active."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                    self.bytes += t.numel() * t.element_size()
        return out


def test_the_allocation_probe_sees_a_model_built_on_the_cpu_first():
    """The probe below can fail: constructing then moving a model is caught."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**nw.get_architecture("sd15").config("text_encoder"))
    with CpuAllocations() as probe:
        model = CLIPTextModel(config).to("meta")
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert probe.bytes >= fp32_bytes


def test_components_are_constructed_on_the_target_device_not_on_the_cpu():
    """Built for another device (meta stands in for a GPU), bigG allocates nothing on the CPU."""
    with CpuAllocations() as probe:
        model = nw.build_component("sdxl-base", "text_encoder_2", device="meta", dtype="fp16")
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert fp32_bytes > 2.5e9
    assert probe.bytes < 0.01 * fp32_bytes
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.float16}


# --------------------------------------------------------------------------- tokenizers


def test_clip_tokenizer_has_clip_ids_and_length():
    tok = nw.build_clip_tokenizer()
    assert len(tok) == 49408
    ids = tok("a photo of a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    assert tok.model_max_length == 77 and len(ids) == 77
    assert ids[0] == 49406 and tok.eos_token_id == 49407 and 49407 in ids
    # CLIP pools at the highest id (eos) when the config's eos_token_id is the legacy 2.
    assert max(ids) == 49407


def test_t5_tokenizer_has_t5_ids_and_pads_to_the_sd3_sequence_length():
    tok = nw.build_t5_tokenizer()
    assert len(tok) == 32100
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    ids = tok("a photo of a cat", padding="max_length", max_length=256, truncation=True).input_ids
    assert len(ids) == 256 and ids[ids.index(1) + 1 :] == [0] * (255 - ids.index(1))
    assert max(ids) < 32128  # the encoder's embedding rows


# --------------------------------------------------------------------------- zoo mapping


EXPECTED = {
    "sd-turbo": "sd-turbo",
    "sdxl-turbo": "sdxl-turbo",
    "sdxl-lightning-2step": "sdxl-base",
    "sdxl-lightning-4step": "sdxl-base",
    "sd35-large-turbo": "sd35-large",
    "sd15": "sd15",
    "sdxl-base": "sdxl-base",
    "sd35-medium": "sd35-medium",
    "sd35-large": "sd35-large",
}


def test_every_zoo_model_maps_to_its_architecture_or_is_refused_by_name(zoo):
    for spec in zoo.models:
        if spec.name in EXPECTED:
            arch = nw.architecture_for_spec(spec)
            assert arch.name == EXPECTED[spec.name]
            assert arch.family == spec.family  # the zoo's own, independent label
        else:
            with pytest.raises(InputError, match=f"Model '{spec.name}'"):
                nw.architecture_for_spec(spec)
    assert {s.name for s in zoo.models} >= set(EXPECTED)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"source": "./local/sdxl"}, "local folder"),
        ({"source": "someone/else"}, "no shipped architecture config"),
        ({"components": [{"component": "unet", "repo": "a/b", "subfolder": "unet"}]}, "unet"),
        ({"components": [{"component": "transformer", "repo": "a/b", "file": "t.bin"}]}, "have"),
        ({"pipeline": "StableDiffusionPipeline"}, "StableDiffusionXLPipeline"),
        ({"family": "sd2"}, "'sdxl'"),
    ],
)
def test_specs_no_config_covers_are_refused_in_one_sentence(fields, says):
    with pytest.raises(InputError, match=says) as err:
        nw.architecture_for_spec(_spec(**fields))
    assert "Model 'probe'" in str(err.value) and str(err.value).count(". ") == 0


def test_unknown_architecture_and_dtype_name_the_parameter():
    with pytest.raises(ParameterError, match="architecture"):
        nw.get_architecture("sd4")
    with pytest.raises(ParameterError, match="dtype"):
        nw.build_component("sd15", "vae", device="meta", dtype="int8")
    with pytest.raises(ParameterError, match="component"):
        nw.build_component("sd15", "transformer", device="meta")


@pytest.mark.parametrize("arch", list(nw.architectures()))
def test_every_architecture_assembles_its_pipeline_on_meta(arch):
    pipe = nw.build_pipeline(arch, device="meta", dtype="fp16")
    architecture = nw.get_architecture(arch)
    assert type(pipe).__name__ == architecture.pipeline
    for name, (_library, class_name) in architecture.components.items():
        part = getattr(pipe, name)
        assert (part is None) if class_name is None else type(part).__name__ == class_name


def test_zoo_specs_build_their_pipelines_with_their_scheduler_override(zoo):
    """On meta: the whole pipeline is assembled (tokenizers included) without allocating."""
    import diffusers

    lightning = nw.build_pipeline(zoo.get("sdxl-lightning-2step"), device="meta")
    assert isinstance(lightning, diffusers.StableDiffusionXLPipeline)
    assert type(lightning.scheduler).__name__ == "EulerDiscreteScheduler"
    assert lightning.scheduler.config.timestep_spacing == "trailing"
    assert lightning.unet.dtype == torch.float16  # the zoo's dtype
    large = nw.build_pipeline(zoo.get("sd35-large-turbo"), device="meta")
    assert isinstance(large, diffusers.StableDiffusion3Pipeline)
    assert large.transformer.dtype == torch.bfloat16
    assert large.tokenizer_3.model_max_length >= 256


# --------------------------------------------------------------------------- full size on CPU


@pytest.fixture(scope="module")
def sd15(zoo):
    """The zoo's SD 1.5 at full size, random weights, fp32 on the CPU (~4.3 GB)."""
    pipe = nw.build_pipeline(zoo.get("sd15"), device="cpu", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _track_max_activation(modules):
    peak = {"value": 0.0}

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            peak["value"] = max(peak["value"], out.detach().abs().max().item())

    handles = [m.register_forward_hook(hook) for root in modules for m in root.modules()]
    return peak, handles


def test_full_size_sd15_unet_step_on_cpu(sd15):
    unet = sd15.unet
    assert nw.checkpoint_numel(unet) == 859_520_964
    # The documented random init: N(0, 1/fan_in) weights, zero biases, unit norm scales.
    fan_in = 4 * 3 * 3
    assert float(unet.conv_in.weight.std()) == pytest.approx(fan_in**-0.5, rel=0.05)
    assert bool((unet.conv_norm_out.weight == 1).all() and (unet.conv_norm_out.bias == 0).all())
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1))
    peak, handles = _track_max_activation([unet])
    try:
        with torch.no_grad():
            out = unet(latents, 981, encoder_hidden_states=context).sample
    finally:
        for h in handles:
            h.remove()
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert 0 < peak["value"] < FP16_MAX / 64  # random init leaves fp16 ample headroom


def test_sd15_pipeline_runs_end_to_end_like_a_no_weights_run(sd15, zoo):
    spec = zoo.get("sd15")
    peak, handles = _track_max_activation([sd15.text_encoder, sd15.unet, sd15.vae])
    try:
        out = sd15(
            "a photo of a cat",
            num_inference_steps=1,
            height=64,
            width=64,
            guidance_scale=spec.guidance_scale,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        for h in handles:
            h.remove()
    images = out.images
    assert images.shape == (1, 64, 64, 3)
    assert float(images.std()) > 0  # noise, but not a constant image
    assert 0 < peak["value"] < FP16_MAX / 64
