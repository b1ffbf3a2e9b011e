"""Tiny random-weight pipelines of real diffusion families, built offline in seconds.

No weights can be downloaded in tests or on CI, yet the loading, timing,
generation and scoring code must run the *real* diffusers code paths. So we
build, from configs alone, miniature versions of three families and save them
with ``save_pretrained`` exactly as a Hub checkpoint is laid out:

* ``sd1/``   StableDiffusionPipeline (UNet + one CLIP text encoder), SD 1.x layout
* ``sdxl/``  StableDiffusionXLPipeline (two text encoders, text-time conditioning)
* ``sd3/``   StableDiffusion3Pipeline (MMDiT transformer, two CLIP encoders + T5)
* ``extra/unet_alt.safetensors``  a second SD1 UNet state dict, to exercise
  single-file component overrides (the SDXL-Lightning pattern)
* ``clip/`` and ``pickscore/``    tiny ``CLIPModel`` + ``CLIPProcessor`` metric backbones

plus ``model_zoo.tiny.yaml`` whose light and heavy entries differ in step count
and guidance, so they really differ in cost.

Tokenizers are the real classes with real algorithms, built offline: the CLIP
tokenizer is a byte-level BPE in CLIP's exact file layout, by default learned
here from a built-in word list (``mini``: ~800 tokens, no dependency, identical
on every machine); with ``clip_vocab="openai"`` it is rebuilt from the BPE file
the ``open_clip_torch`` wheel ships (install it with ``--no-deps``: its
torchvision requirement would pull a second torch), giving the same ids as
``openai/clip-vit-large-patch14``. The T5 tokenizer is a small Unigram model
built with ``tokenizers`` (T5's Metaspace pre-tokenisation and ``</s>``).
Everything is seeded, so two builds produce identical weights.
"""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError

#: Image size of every tiny model (a multiple of 8, as the zoo requires).
TINY_SIZE = 32
#: OpenAI CLIP's BPE: 256 byte symbols x2 (with and without ``</w>``), merges, 2 specials.
CLIP_VOCAB_SIZE = 49408
CLIP_VOCABS = ("mini", "openai")
#: Merges of the built-in vocabulary: ~800 tokens, so tiny text encoders stay tiny.
MINI_MERGES = 320
CLIP_MAX_LENGTH = 77
ZOO_FILE = "model_zoo.tiny.yaml"

#: name, source folder, pipeline, steps, guidance, scheduler, component overrides, tags.
TINY_MODELS: tuple[dict[str, Any], ...] = (
    {
        "name": "tiny-sd1-light",
        "source": "./sd1",
        "pipeline": "StableDiffusionPipeline",
        "steps": 2,
        "guidance_scale": 0.0,
        "family": "sd1",
        "tags": ["tiny", "light"],
    },
    {
        "name": "tiny-sdxl-mid",
        "source": "./sdxl",
        "pipeline": "StableDiffusionXLPipeline",
        "steps": 4,
        "guidance_scale": 5.0,
        "family": "sdxl",
        "tags": ["tiny"],
    },
    {
        "name": "tiny-sd3-heavy",
        "source": "./sd3",
        "pipeline": "StableDiffusion3Pipeline",
        "steps": 12,
        "guidance_scale": 5.0,
        "family": "sd3",
        "tags": ["tiny", "heavy"],
    },
    {
        "name": "tiny-sd1-heavy",
        "source": "./sd1",
        "pipeline": "StableDiffusionPipeline",
        "components": [{"component": "unet", "repo": "./extra", "file": "unet_alt.safetensors"}],
        "scheduler": {"class": "DDIMScheduler", "kwargs": {"timestep_spacing": "trailing"}},
        "steps": 16,
        "guidance_scale": 7.5,
        "family": "sd1",
        "tags": ["tiny", "heavy"],
    },
)


@dataclass(frozen=True)
class TinyZoo:
    """Where :func:`build_tiny_zoo` put things."""

    root: Path
    zoo_path: Path
    clip_path: Path
    pickscore_path: Path

    @property
    def model_names(self) -> list[str]:
        return [m["name"] for m in TINY_MODELS]


# --------------------------------------------------------------------------- tokenizers


def clip_bpe_path() -> Path:
    """The OpenAI CLIP BPE merges file shipped inside the open_clip wheel (located, not
    imported: importing open_clip would need torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise HadisError(
            "The OpenAI CLIP vocabulary comes from the open_clip_torch wheel; install it with "
            "`pip install open_clip_torch --no-deps` or use the built-in 'mini' vocabulary."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise HadisError(f"open_clip_torch is installed but {path} is missing; reinstall it.")
    return path


def _openai_merges() -> list[str]:
    with gzip.open(clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    n_merges = CLIP_VOCAB_SIZE - 2 * 256 - 2
    return lines[1 : 1 + n_merges]  # line 0 is the header


def _mini_merges(n_merges: int = MINI_MERGES) -> list[str]:
    """Byte-level BPE merges learned (Sennrich et al.) from a fixed built-in word list.

    Deterministic everywhere (ties broken by the pair's text) and dependency-free,
    so the tiny zoo is byte-identical on every machine. Every byte stays in the
    vocabulary, so any text tokenises; unseen words just split into more pieces.
    """
    from collections import Counter

    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    b2u = bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for w in (_T5_WORDS_TEXT + " " + _MINI_EXTRA_TEXT).split():
        chars = [b2u[b] for b in w.lower().encode("utf-8")]
        words[(*chars[:-1], chars[-1] + "</w>")] += 1
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            for a, b in itertools.pairwise(word):
                pairs[a, b] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(f"{best[0]} {best[1]}")
        merged: Counter[tuple[str, ...]] = Counter()
        for word, freq in words.items():
            out, k = [], 0
            while k < len(word):
                if k + 1 < len(word) and (word[k], word[k + 1]) == best:
                    out.append(word[k] + word[k + 1])
                    k += 2
                else:
                    out.append(word[k])
                    k += 1
            merged[tuple(out)] += freq
        words = merged
    return merges


def write_clip_vocab(out_dir: Path, vocab: str = "mini") -> tuple[Path, Path]:
    """Write ``vocab.json`` + ``merges.txt`` in the Hugging Face CLIP layout.

    Ids follow CLIP's order (256 byte symbols, the same with ``</w>``, one token
    per merge, then ``<|startoftext|>`` and ``<|endoftext|>``), so with
    ``vocab="openai"`` they equal the real checkpoints' ids.
    """
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    if vocab not in CLIP_VOCABS:
        raise HadisError(f"Unknown CLIP vocabulary '{vocab}'; use one of {', '.join(CLIP_VOCABS)}.")
    merges = _openai_merges() if vocab == "openai" else _mini_merges()
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    seen = set(tokens)
    for m in merges:
        t = "".join(m.split())
        if t not in seen:  # two merge paths can build the same token
            tokens.append(t)
            seen.add(t)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if vocab == "openai" and len(tokens) != CLIP_VOCAB_SIZE:  # pragma: no cover - changed wheel
        raise HadisError(f"open_clip's BPE file gave {len(tokens)} tokens, expected 49408.")
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_clip_tokenizer(vocab: str = "mini") -> Any:
    """A ``CLIPTokenizer`` (``model_max_length=77``) with the built-in ``mini`` BPE or,
    when the open_clip wheel is installed, the real ``openai`` CLIP vocabulary."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = write_clip_vocab(Path(tmp), vocab)
        return CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=CLIP_MAX_LENGTH)


_T5_WORDS_TEXT = (
    "a an the of and in on with at by to from is are photo painting portrait drawing city "
    "street cat dog horse bird astronaut robot man woman child riding sitting standing red "
    "blue green yellow black white big small old new sunset night forest mountain sea"
)
_T5_WORDS = _T5_WORDS_TEXT.split()
#: More words for the mini CLIP BPE to learn merges from (original text).
_MINI_EXTRA_TEXT = (
    "a photograph of a small wooden house in the mountains at sunrise with snow on the roof "
    "an oil painting of a quiet harbour with boats and seagulls under a cloudy sky "
    "a close up portrait of an old fisherman wearing a yellow raincoat detailed lighting "
    "a futuristic city skyline at night with neon signs flying cars and reflections "
    "two cats playing with a ball of wool on a sofa in a cosy living room "
    "a bowl of fresh fruit apples oranges bananas and grapes on a kitchen table "
    "a watercolor illustration of a fox sleeping under a tree in an autumn forest "
    "an astronaut standing on the moon looking back at the earth high resolution "
    "a street market full of people selling flowers vegetables and spices "
    "a sports car driving along a coastal road beside the ocean during golden hour"
)


def build_t5_tokenizer() -> Any:
    """A small Unigram ``T5TokenizerFast``: T5's Metaspace pre-tokeniser, ``</s>`` appended,
    ``<pad>``=0, ``</s>``=1, ``<unk>``=2, whole-word pieces for common words and a
    character fallback, so any ASCII prompt tokenises deterministically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -2.0 - 0.01 * i) for i, w in enumerate(_T5_WORDS)]
    vocab += [("▁", -3.0)]
    vocab += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=512,
    )


# --------------------------------------------------------------------------- components


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _clip_text_config(vocab_size: int, projection_dim: int = 32) -> Any:
    """CLIP text config for a tokenizer of ``vocab_size`` (last two ids: bos, eos=pad)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=projection_dim,
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _vae(seed: int, **kwargs: Any) -> Any:
    """Two blocks: latents are 2x smaller than images (real SD VAEs: 8x)."""
    from diffusers import AutoencoderKL

    _seed(seed)
    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=TINY_SIZE,
        **kwargs,
    )


def _sd_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )


def tiny_sd1_unet(seed: int) -> Any:
    from diffusers import UNet2DConditionModel

    _seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def tiny_sd1(seed: int = 0, tokenizer: Any = None) -> Any:
    """SD 1.x layout: UNet2DConditionModel, CLIPTextModel, AutoencoderKL, Euler."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    tokenizer = tokenizer or build_clip_tokenizer()
    _seed(seed + 1)
    text_encoder = CLIPTextModel(_clip_text_config(len(tokenizer)))
    return StableDiffusionPipeline(
        vae=_vae(seed + 2),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_sd1_unet(seed + 3),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl(seed: int = 0, tokenizer: Any = None) -> Any:
    """SDXL layout: two text encoders (the second with projection) and text-time embeds."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tokenizer or build_clip_tokenizer()
    _seed(seed + 1)
    text_encoder = CLIPTextModel(_clip_text_config(len(tokenizer)))
    _seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer)))
    _seed(seed + 3)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
        attention_head_dim=4,
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids + pooled text
    )
    return StableDiffusionXLPipeline(
        vae=_vae(seed + 4),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_sd_scheduler(),
    )


def tiny_sd3(seed: int = 0, tokenizer: Any = None, t5_tokenizer: Any = None) -> Any:
    """SD3 layout: SD3Transformer2DModel, CLIP-L/CLIP-G-style encoders + T5, flow matching."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    tokenizer = tokenizer or build_clip_tokenizer()
    t5_tokenizer = t5_tokenizer or build_t5_tokenizer()
    _seed(seed + 1)
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer)))
    _seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer)))
    _seed(seed + 3)
    text_encoder_3 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=64,  # = the two CLIP hidden sizes concatenated, as in SD3
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    _seed(seed + 4)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_SIZE // 2,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=64,
        out_channels=4,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(
            seed + 5,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        ),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )


def tiny_clip(seed: int = 0, tokenizer: Any = None) -> tuple[Any, Any]:
    """A tiny ``CLIPModel`` + ``CLIPProcessor`` (32 px images) for metric tests."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    tokenizer = tokenizer or build_clip_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=TINY_SIZE,
        patch_size=8,
        projection_dim=16,
    )
    text = _clip_text_config(len(tokenizer), projection_dim=16)
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    _seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_SIZE}, crop_size={"height": TINY_SIZE, "width": TINY_SIZE}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


# --------------------------------------------------------------------------- the zoo


def tiny_zoo_yaml() -> str:
    """The YAML text of ``model_zoo.tiny.yaml`` (sources relative to the file's folder)."""
    import yaml

    header = (
        "# Tiny random-weight pipelines built by `hadis-profile zoo tiny` (not real models).\n"
        "# Relative sources resolve against this file's folder. Light and heavy entries\n"
        "# differ in steps and guidance, so their latencies really differ.\n"
    )
    data = {
        "defaults": {"dtype": "fp32", "height": TINY_SIZE, "width": TINY_SIZE},
        "models": [dict(m) for m in TINY_MODELS],
        # The tiny zoo ships its own metric backbones, so `run` needs no --scorer.
        "scorers": ["clip_score:./clip", "pick_score:./pickscore,./clip"],
    }
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def build_tiny_zoo(out: str | Path, seed: int = 0, clip_vocab: str = "mini") -> TinyZoo:
    """Build and save every tiny pipeline and metric backbone under ``out``.

    Deterministic: the same ``seed`` (and ``clip_vocab``) gives byte-identical
    weight files on every machine. ``clip_vocab="openai"`` uses the real CLIP
    vocabulary from the open_clip wheel instead of the built-in mini BPE.
    Existing folders are overwritten.
    """
    from safetensors.torch import save_file

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    tok = build_clip_tokenizer(clip_vocab)
    t5_tok = build_t5_tokenizer()
    tiny_sd1(seed, tok).save_pretrained(root / "sd1")
    tiny_sdxl(seed + 10, tok).save_pretrained(root / "sdxl")
    tiny_sd3(seed + 20, tok, t5_tok).save_pretrained(root / "sd3")
    (root / "extra").mkdir(exist_ok=True)
    alt = {k: v.contiguous() for k, v in tiny_sd1_unet(seed + 30).state_dict().items()}
    save_file(alt, str(root / "extra" / "unet_alt.safetensors"))
    for name, offset in (("clip", 40), ("pickscore", 50)):
        model, processor = tiny_clip(seed + offset, tok)
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    zoo_path = root / ZOO_FILE
    zoo_path.write_text(tiny_zoo_yaml(), encoding="utf-8")
    return TinyZoo(root, zoo_path, root / "clip", root / "pickscore")
