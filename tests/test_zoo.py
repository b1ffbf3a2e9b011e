"""The model zoo: the shipped file, every kind of bad entry, hashing, selection and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hadis_profile.cli import app
from hadis_profile.errors import InputError
from hadis_profile.zoo import ModelSpec, Zoo, load_zoo, parse_zoo, zoo_hash

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "model_zoo.yaml"


def entry(**overrides: Any) -> dict[str, Any]:
    """A valid SDXL-Lightning-like entry; keyword arguments replace or add fields."""
    base: dict[str, Any] = {
        "name": "lightning",
        "source": "stabilityai/stable-diffusion-xl-base-1.0",
        "pipeline": "StableDiffusionXLPipeline",
        "components": [
            {
                "component": "unet",
                "repo": "ByteDance/SDXL-Lightning",
                "file": "sdxl_lightning_2step_unet.safetensors",
            }
        ],
        "scheduler": {
            "class": "EulerDiscreteScheduler",
            "kwargs": {"timestep_spacing": "trailing"},
        },
        "steps": 2,
        "guidance_scale": 0.0,
        "height": 1024,
        "width": 1024,
        "dtype": "fp16",
        "variant": "fp16",
        "family": "sdxl",
        "tags": ["light"],
    }
    base.update(overrides)
    return base


def spec(**overrides: Any) -> ModelSpec:
    return ModelSpec.model_validate(entry(**overrides))


def error_of(data: Any) -> str:
    with pytest.raises(InputError) as info:
        parse_zoo(data, origin="zoo.yaml")
    message = str(info.value)
    assert "\n" not in message, "a zoo error must be one line"
    assert message.endswith(".")
    assert info.value.exit_code == 2
    return message


# ---------------------------------------------------------------------- shipped zoo


def test_shipped_zoo_validates_with_published_settings() -> None:
    zoo = load_zoo(SHIPPED)
    assert len(zoo) == 10
    assert len({m.spec_hash() for m in zoo}) == len(zoo)

    turbo = zoo.get("sd-turbo")
    assert (turbo.source, turbo.steps, turbo.guidance_scale, turbo.size) == (
        "stabilityai/sd-turbo",
        1,
        0.0,
        "512x512",
    )
    assert zoo.get("sdxl-turbo").size == "512x512"
    assert zoo.get("sdxs-512").variant is None  # the repo ships no fp16 files

    for steps in (2, 4):
        light = zoo.get(f"sdxl-lightning-{steps}step")
        assert light.steps == steps and light.guidance_scale == 0.0 and light.size == "1024x1024"
        assert light.source == "stabilityai/stable-diffusion-xl-base-1.0"
        (unet,) = light.components
        assert (unet.component, unet.repo) == ("unet", "ByteDance/SDXL-Lightning")
        assert unet.file == f"sdxl_lightning_{steps}step_unet.safetensors"
        assert light.scheduler is not None
        assert light.scheduler.class_name == "EulerDiscreteScheduler"
        assert light.scheduler.kwargs == {"timestep_spacing": "trailing"}

    assert (zoo.get("sd15").steps, zoo.get("sd15").guidance_scale) == (50, 7.5)
    assert (zoo.get("sdxl-base").steps, zoo.get("sdxl-base").guidance_scale) == (50, 5.0)
    large_turbo = zoo.get("sd35-large-turbo")
    assert (large_turbo.steps, large_turbo.guidance_scale, large_turbo.dtype) == (4, 0.0, "bf16")
    for name in ("sd35-medium", "sd35-large"):
        m = zoo.get(name)
        assert (m.steps, m.guidance_scale, m.dtype, m.family) == (50, 7.0, "bf16", "sd3")

    hadis = zoo.select(tags=["hadis"]).names
    assert hadis == ["sdxl-lightning-2step", "sd35-large-turbo", "sd35-medium", "sd35-large"]
    assert all({"light", "heavy"} & set(m.tags) for m in zoo)


# ---------------------------------------------------------------------- bad entries


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"steps": 0}, ["field 'steps'", "greater than or equal to 1", "got 0"]),
        ({"steps": "4"}, ["field 'steps'", "valid integer", "got '4'"]),
        ({"steps": True}, ["field 'steps'", "valid integer"]),
        ({"guidance_scale": -1.0}, ["field 'guidance_scale'", "greater than or equal to 0"]),
        ({"guidance_scale": float("nan")}, ["field 'guidance_scale'", "finite"]),
        ({"dtype": "float16"}, ["field 'dtype'", "'fp16', 'bf16' or 'fp32'", "got 'float16'"]),
        ({"height": 500}, ["field 'height'", "positive multiple of 8", "got 500"]),
        ({"width": -8}, ["field 'width'", "positive multiple of 8"]),
        ({"stepz": 4}, ["field 'stepz'", "not a known field", "did you mean 'steps'?"]),
        ({"source": "sdxl base"}, ["field 'source'", "'org/name'", "local path"]),
        ({"pipeline": "StableDiffusionXL"}, ["field 'pipeline'", "'auto'"]),
        ({"variant": "fp 16"}, ["field 'variant'", "variant"]),
        ({"tags": "light"}, ["field 'tags'", "valid list"]),
        ({"tags": ["Light Model"]}, ["field 'tags'", "lowercase"]),
        ({"family": "SDXL"}, ["field 'family'", "lowercase"]),
        ({"name": "my model"}, ["field 'name'", "letters, digits"]),
        ({"negative_prompt": "blurry"}, ["model 'lightning'", "'negative_prompt'", "no effect"]),
        ({"source": "./weights/sdxl", "revision": "abc123"}, ["'revision'", "local path"]),
        (
            {"scheduler": {"class": "Euler", "kwargs": {}}},
            ["field 'scheduler.class'", "scheduler class"],
        ),
        (
            {"scheduler": {"class": "EulerDiscreteScheduler", "kwrgs": {}}},
            ["field 'scheduler.kwrgs'", "did you mean 'kwargs'?", "allowed: class, kwargs"],
        ),
        ({"components": [{"component": "unet"}]}, ["field 'components[0].repo'", "is required"]),
        (
            {"components": [{"component": "unet", "repo": "a/b", "filename": "x.safetensors"}]},
            ["field 'components[0].filename'", "did you mean 'file'?"],
        ),
        (
            {"components": [{"component": "unet", "repo": "./local", "revision": "main"}]},
            ["field 'components[0]'", "'revision'", "local path"],
        ),
        (
            {"components": [{"component": "unet", "repo": "a/b", "file": "../x.safetensors"}]},
            ["field 'components[0].file'", "relative"],
        ),
        (
            {
                "components": [
                    {"component": "unet", "repo": "a/b"},
                    {"component": "unet", "repo": "c/d"},
                ]
            },
            ["model 'lightning'", "overrides component 'unet' more than once"],
        ),
    ],
)
def test_bad_entry_names_entry_field_and_what_is_allowed(
    overrides: dict[str, Any], expected: list[str]
) -> None:
    message = error_of({"models": [entry(**overrides)]})
    assert message.startswith("zoo.yaml: ")
    if "name" not in overrides:
        assert "model 'lightning'" in message
    for part in expected:
        assert part in message


def test_missing_fields_are_grouped_and_nameless_entries_numbered() -> None:
    one = entry()
    del one["steps"]
    assert error_of({"models": [one]}) == "zoo.yaml: model 'lightning' field 'steps' is required."
    message = error_of({"models": [entry(), {"source": "a/b"}]})
    assert "entry #2 is missing the required fields 'name', 'steps'" in message


def test_several_problems_are_listed_in_one_line() -> None:
    message = error_of({"models": [entry(steps=0), entry(name="other", dtype="fp8")]})
    assert message.startswith("zoo.yaml has 2 problems: ")
    assert "model 'lightning' field 'steps'" in message and "model 'other' field 'dtype'" in message


def test_duplicate_names_are_rejected() -> None:
    message = error_of({"models": [entry(), entry(steps=4)]})
    assert "model name 'lightning' is used by entries #1 and #2" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "is empty"),
        ([entry()], "must be a mapping with a 'models:' list, not a list"),
        ({"defaults": {}}, "has no 'models:' list"),
        ({"models": []}, "non-empty list"),
        ({"models": [entry()], "model": []}, "top-level key 'model' is not allowed"),
        ({"models": ["sd-turbo"]}, "entry #1 must be a mapping"),
        ({"defaults": {"name": "x"}, "models": [entry()]}, "defaults field 'name' is not allowed"),
    ],
)
def test_malformed_structure_gives_one_sentence(data: Any, expected: str) -> None:
    assert expected in error_of(data)


def test_defaults_apply_and_a_bad_default_is_reported_once() -> None:
    plain = {k: v for k, v in entry().items() if k != "dtype"}
    zoo = parse_zoo(
        {"defaults": {"dtype": "bf16"}, "models": [plain, {**plain, "name": "b", "dtype": "fp32"}]}
    )
    assert [m.dtype for m in zoo] == ["bf16", "fp32"]
    message = error_of({"defaults": {"dtype": "fp8"}, "models": [plain, {**plain, "name": "b"}]})
    assert (
        message == "zoo.yaml: defaults field 'dtype' must be 'fp16', 'bf16' or 'fp32' (got 'fp8')."
    )


def test_load_zoo_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_zoo(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.yaml is empty"):
        load_zoo(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("models:\n  - name: a\n   steps: 2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"is not valid YAML at line 3, column \d+"):
        load_zoo(broken)
    dup = tmp_path / "dup.yaml"
    text = yaml.safe_dump({"models": [entry()]}).replace("steps: 2\n", "steps: 2\n  steps: 4\n")
    dup.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="duplicate key 'steps'"):
        load_zoo(dup)


def test_local_source_is_allowed() -> None:
    m = spec(source="./weights/tiny-sd", components=[], scheduler=None)
    assert m.is_local and not spec().is_local


# ---------------------------------------------------------------------- hashing


def test_spec_hash_tracks_outputs_not_labels() -> None:
    base = spec()
    assert spec(steps=4).spec_hash() != base.spec_hash()
    assert spec(guidance_scale=1.0).spec_hash() != base.spec_hash()
    assert spec(scheduler={"class": "EulerDiscreteScheduler"}).spec_hash() != base.spec_hash()
    assert spec(revision="abc123").spec_hash() != base.spec_hash()
    assert spec(tags=["heavy", "x"]).spec_hash() == base.spec_hash()
    assert spec(family=None).spec_hash() == base.spec_hash()
    assert spec(name="renamed").spec_hash() == base.spec_hash()


def test_spec_hash_ignores_override_order_and_is_pinned() -> None:
    a = {"component": "unet", "repo": "a/unet", "file": "u.safetensors"}
    b = {"component": "vae", "repo": "b/vae"}
    assert spec(components=[a, b]).spec_hash() == spec(components=[b, a]).spec_hash()
    # Pinned: a change to the hash definition would silently invalidate every stored run.
    minimal = ModelSpec.model_validate(
        {
            "name": "m",
            "source": "org/model",
            "steps": 1,
            "guidance_scale": 0,
            "height": 8,
            "width": 8,
        }
    )
    assert minimal.hash_payload() == {
        "format": "hadis-profile/model-spec/1",
        "source": "org/model",
        "pipeline": "auto",
        "steps": 1,
        "guidance_scale": 0.0,
        "height": 8,
        "width": 8,
        "dtype": "fp16",
    }
    assert minimal.spec_hash() == "11802f4851f4b9fe4798df451abcf9eb505e62b922b75d907818fbe47dd47e2c"


def test_zoo_hash_changes_with_one_model_only() -> None:
    a, b = spec(name="a"), spec(name="b", steps=4)
    zoo = Zoo(models=(a, b))
    assert zoo_hash(zoo) == zoo.hash() == zoo_hash(Zoo(models=(b, a)))
    assert zoo_hash(Zoo(models=(a, spec(name="b", steps=8)))) != zoo_hash(zoo)
    assert zoo_hash(Zoo(models=(a, spec(name="b", steps=4, tags=["heavy"])))) == zoo_hash(zoo)
    assert zoo_hash(Zoo(models=(a,))) != zoo_hash(zoo)


PINNED_ZOO = """\
defaults: {dtype: fp16, height: 1024, width: 1024}
models:
  - name: lightning-2step
    source: stabilityai/stable-diffusion-xl-base-1.0
    pipeline: StableDiffusionXLPipeline
    components:
      - component: unet
        repo: ByteDance/SDXL-Lightning
        file: sdxl_lightning_2step_unet.safetensors
    scheduler: {class: EulerDiscreteScheduler, kwargs: {timestep_spacing: trailing}}
    steps: 2
    guidance_scale: 0.0
    variant: fp16
    family: sdxl
    tags: [light]
  - name: sd35-medium
    source: stabilityai/stable-diffusion-3.5-medium
    steps: 40
    guidance_scale: 4.5
    negative_prompt: "flou, déformé"
    tags: [heavy]
"""


def test_zoo_hashes_are_unchanged_and_follow_their_definition(tmp_path: Path) -> None:
    """Every run is keyed by these hashes, so their bytes must never drift.

    The literals were computed by the zoo module before it shared
    ``fileio``'s canonical JSON; the payloads are written out by hand and
    hashed with hashlib and json directly (sorted keys, compact, UTF-8).
    """
    import hashlib
    import json

    def sha(obj: Any) -> str:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    path = tmp_path / "zoo.yaml"
    path.write_text(PINNED_ZOO, encoding="utf-8")
    zoo = load_zoo(path)
    common = {"format": "hadis-profile/model-spec/1", "height": 1024, "width": 1024}
    lightning = {
        **common,
        "source": "stabilityai/stable-diffusion-xl-base-1.0",
        "pipeline": "StableDiffusionXLPipeline",
        "components": [
            {
                "component": "unet",
                "repo": "ByteDance/SDXL-Lightning",
                "file": "sdxl_lightning_2step_unet.safetensors",
            }
        ],
        "scheduler": {
            "class": "EulerDiscreteScheduler",
            "kwargs": {"timestep_spacing": "trailing"},
        },
        "steps": 2,
        "guidance_scale": 0.0,
        "dtype": "fp16",
        "variant": "fp16",
    }
    medium = {
        **common,
        "source": "stabilityai/stable-diffusion-3.5-medium",
        "pipeline": "auto",
        "steps": 40,
        "guidance_scale": 4.5,
        "dtype": "fp16",
        "negative_prompt": "flou, déformé",
    }
    specs = {"lightning-2step": sha(lightning), "sd35-medium": sha(medium)}
    assert (
        {m.name: m.spec_hash() for m in zoo}
        == specs
        == {
            "lightning-2step": "0c22d9ba9d97bf6350b034084c46cf0ce926a866007c642976ba2ba15664bee5",
            "sd35-medium": "99b21dd14129368e8c4806398439a70a052f70526865812b2f08d517a59543f6",
        }
    )
    expected = sha({"format": "hadis-profile/zoo/1", "models": specs})
    assert zoo.hash() == expected
    assert expected == "bacc54a9b3e2fc00c3ac0c9c53f064fff934ba3730895287860e5e1035d9ea15"


def test_store_record_matches_upsert_model_signature() -> None:
    record = spec().store_record()
    assert set(record) == {"spec_hash", "steps", "height", "width", "dtype", "spec"}
    assert record["spec_hash"] == spec().spec_hash()
    assert record["spec"]["components"][0]["file"] == "sdxl_lightning_2step_unet.safetensors"


# ---------------------------------------------------------------------- selection


def test_get_and_select() -> None:
    zoo = parse_zoo(
        {
            "models": [
                entry(name="fast", tags=["light"]),
                entry(name="slow", steps=50, guidance_scale=5.0, tags=["heavy"]),
            ]
        }
    )
    assert "fast" in zoo and zoo.names == ["fast", "slow"]
    with pytest.raises(InputError, match="did you mean 'fast'"):
        zoo.get("fsat")
    assert zoo.select(names=["slow", "fast"]).names == ["slow", "fast"]
    assert zoo.select(tags=["heavy"]).names == ["slow"]
    assert zoo.select(tags=["sdxl"]).names == ["fast", "slow"]  # family counts as a tag
    assert zoo.select(tags=["light", "sdxl"]).names == ["fast"]
    with pytest.raises(InputError, match="No selected model carries all of the tags"):
        zoo.select(tags=["sd3"])


# ---------------------------------------------------------------------- CLI


def test_cli_zoo_validate_and_list_shipped() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["zoo", "validate", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    for name in ("sd-turbo", "sdxl-lightning-2step", "sd35-large"):
        assert name in result.output
    assert "is valid: 10 models" in result.output
    listed = runner.invoke(app, ["zoo", "list", str(SHIPPED), "--tag", "heavy", "--tag", "sd3"])
    assert listed.exit_code == 0 and listed.output.split() == ["sd35-medium", "sd35-large"]


def test_cli_bad_zoo_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "zoo.yaml"
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data["models"][0]["dtype"] = "float16"
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "COLUMNS": "1000"}  # Rich wraps stderr at the terminal width
    proc = subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", "zoo", "validate", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "model 'sd-turbo' field 'dtype' must be 'fp16', 'bf16' or 'fp32'" in lines[0]


def test_zoo_scorers_are_kept_through_selection_and_validated():
    entry = {
        "name": "m",
        "source": "org/m",
        "steps": 1,
        "guidance_scale": 0.0,
        "height": 64,
        "width": 64,
    }
    zoo = parse_zoo({"models": [entry], "scorers": ["clip_score:./clip"]})
    assert zoo.select(["m"]).scorers == ("clip_score:./clip",)
    with pytest.raises(InputError, match="'scorers' must be a list"):
        parse_zoo({"models": [entry], "scorers": "clip_score"})


def test_relative_zoo_scorers_resolve_against_the_zoo_folder(tmp_path):
    pytest.importorskip("torch")
    from hadis_profile.measure.quality import zoo_scorers

    entry = {
        "name": "m",
        "source": "org/m",
        "steps": 1,
        "guidance_scale": 0.0,
        "height": 64,
        "width": 64,
    }
    zoo = parse_zoo({"models": [entry], "scorers": ["pick_score:./p,./c", "clip_score"]})
    assert zoo_scorers(zoo, tmp_path) == [
        f"pick_score:{tmp_path / 'p'},{tmp_path / 'c'}",
        "clip_score",
    ]
    assert zoo_scorers(parse_zoo({"models": [entry]}), tmp_path) == ["clip_score"]
