"""Exactly what was measured: checkpoint identities (and invalidation when they change), the
environment, and `run --no-weights` on real architectures."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from measure_helpers import tiny_zoo  # noqa: E402

from hadis_profile.errors import HadisError  # noqa: E402
from hadis_profile.measure import profiler as P  # noqa: E402
from hadis_profile.measure.pipelines import checkpoint_identity, content_hash  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402
from hadis_profile.store.catalogue import same_checkpoint  # noqa: E402
from hadis_profile.zoo import parse_zoo  # noqa: E402

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _spec(source: str, **extra):
    entry = {"name": "m", "source": source, "steps": 1, "guidance_scale": 0.0, **extra}
    zoo = parse_zoo({"defaults": {"height": 64, "width": 64}, "models": [entry]})
    return zoo.get("m")


def _hub_cache(root, repo: str, commit: str, files=("model_index.json",), ref: str = "main"):
    """A Hugging Face cache laid out as huggingface_hub writes it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    for f in files:
        path = folder / "snapshots" / commit / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_a_hub_checkpoint_is_identified_by_the_commit_its_branch_resolved_to(tmp_path):
    cache = tmp_path / "hub"
    _hub_cache(cache, "org/model", COMMIT_A)
    ident = checkpoint_identity(_spec("org/model"), cache_dir=cache)
    assert ident == {"source": "org/model", "revision": None, "commit": COMMIT_A}
    _hub_cache(cache, "org/model", COMMIT_B)  # main moved on
    assert checkpoint_identity(_spec("org/model"), cache_dir=cache)["commit"] == COMMIT_B
    # a component file from another repo (how SDXL-Lightning ships its UNet)
    _hub_cache(cache, "org/unets", COMMIT_A, files=("unet_2step.safetensors",))
    spec = _spec(
        "org/model",
        components=[{"component": "unet", "repo": "org/unets", "file": "unet_2step.safetensors"}],
    )
    ident = checkpoint_identity(spec, cache_dir=cache)
    assert ident["components"] == [
        {"component": "unet", "repo": "org/unets", "revision": None, "commit": COMMIT_A}
    ]
    # not in the cache: unknown, not an error
    assert checkpoint_identity(_spec("org/absent"), cache_dir=cache)["commit"] is None


def test_a_local_checkpoint_is_identified_by_its_content(tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "w.bin").write_bytes(b"\x00\x01")

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    expected = sha(f"model_index.json\t{sha(b'{}')}\nunet/w.bin\t{sha(bytes([0, 1]))}".encode())
    assert content_hash(folder) == expected
    assert checkpoint_identity(_spec(str(folder)))["sha256"] == expected
    (folder / "unet" / "w.bin").write_bytes(b"\x00\x02")
    assert content_hash(folder) != expected


def test_other_weights_behind_the_same_spec_invalidate_the_model(tmp_path):
    from hadis_profile.measurements import LatencyStats

    a = {"commit": COMMIT_A}
    assert same_checkpoint(a, {"commit": COMMIT_A}) and not same_checkpoint(a, {"commit": COMMIT_B})
    assert same_checkpoint(a, {"commit": None}) and same_checkpoint(None, a)  # unknown: keep
    with RunStore.create(tmp_path / "run") as store:
        store.upsert_hardware("cpu")
        assert not store.upsert_model("m", spec_hash="h", spec={"checkpoint": a})
        store.put_latency("m", "cpu", LatencyStats(1, 1.0, 0.0, 1.0, 1.0, 1.0))
        assert not store.upsert_model("m", spec_hash="h", spec={"checkpoint": {"commit": None}})
        assert store.latency("m", "cpu")
        assert store.upsert_model("m", spec_hash="h", spec={"checkpoint": {"commit": COMMIT_B}})
        assert not store.has_latency("m", "cpu", 1)


def test_a_run_records_its_environment_and_checkpoints(tmp_path):
    tz = tiny_zoo()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    opts = P.RunOptions(
        zoo=tz.zoo_path,
        prompts=prompts,
        out=tmp_path / "run",
        models=["tiny-sd1-light"],
        images_per_prompt=1,
        batch_sizes=(1,),
        warmup=0,
        reps=2,
        device="cpu",
        scorers=[f"clip_score:{tz.clip_path}"],
        router=False,
    )
    P.run_profile(opts)
    with RunStore.open(opts.out) as store:
        env = store.provenance["environment"]
        assert env["libraries"]["torch"] == torch.__version__
        assert env["libraries"]["python"].count(".") == 2
        assert env["devices"][0]["torch_threads"] >= 1
        assert store.hardware()[0]["libraries"]["diffusers"]
        spec = store.models()["tiny-sd1-light"]["spec"]
        assert spec["checkpoint"]["sha256"] == content_hash(tz.root / "sd1")
        meas = store.load_measurements()
        assert meas.provenance["checkpoints"]["tiny-sd1-light"]["sha256"] == content_hash(
            tz.root / "sd1"
        )
        assert meas.provenance["random_weights"] == []
    # the table says exactly which weights and which software its numbers come from
    from hadis_profile.pareto import compile_run

    run_prov = compile_run(opts.out)["payload"]["provenance"]["run"]
    assert run_prov["checkpoints"]["tiny-sd1-light"]["sha256"] == content_hash(tz.root / "sd1")
    assert run_prov["environment"]["libraries"]["diffusers"]


# --------------------------------------------------------------------------- --no-weights


SD15 = textwrap.dedent(
    """\
    models:
      - name: sd15
        source: stable-diffusion-v1-5/stable-diffusion-v1-5
        pipeline: StableDiffusionPipeline
        family: sd1
        steps: 1
        guidance_scale: 0.0
        height: 64
        width: 64
        dtype: fp32
      - name: local
        source: ./nowhere
        steps: 1
        guidance_scale: 0.0
        height: 64
        width: 64
    """
)


def test_no_weights_profiles_the_real_sd15_architecture_on_the_cpu(tmp_path):
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(SD15)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    base = {
        "zoo": zoo,
        "prompts": prompts,
        "out": tmp_path / "run",
        "batch_sizes": (1,),
        "warmup": 0,
        "reps": 1,
        "min_reps": 1,
        "device": "cpu",
        "no_weights": True,
    }
    # A model with no shipped architecture is refused by name, before anything runs.
    with pytest.raises(HadisError, match="Model 'local' loads from the local folder"):
        P.run_profile(P.RunOptions(**base))
    assert not (tmp_path / "run").exists()
    # No checkpoint anywhere on this machine: the architecture alone is timed.
    report = P.run_profile(P.RunOptions(**base, models=["sd15"]))
    assert any("quality skipped" in n for n in report.notes)
    with RunStore.open(tmp_path / "run") as store:
        lat = store.latency("sd15", "cpu")
        assert list(lat) == [1] and not lat[1].infeasible and lat[1].p50_s > 0
        # (The CPU's peak RSS cannot show the weights when the process reuses pages it freed
        # earlier; scripts/gpu_check.py asserts the CUDA allocator's peaks at full size.)
        assert lat[1].peak_mem_bytes is not None
        assert store.done_prompts("sd15") == set()
        assert store.models()["sd15"]["spec"]["weights"] == "random"
        assert store.load_measurements().provenance["random_weights"] == ["sd15"]


def test_dry_run_probes_a_shipped_architecture_with_random_weights(tmp_path):
    """No checkpoint on this machine: the estimate still comes from timing the real
    architecture, built with random weights."""
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(SD15)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\nthree ducks\n")
    opts = P.RunOptions(
        zoo=zoo,
        prompts=prompts,
        out=tmp_path / "run",
        models=["sd15"],
        batch_sizes=(1, 2),
        images_per_prompt=1,
        device="cpu",
        dry_run=True,
    )
    report = P.run_profile(opts)
    (m,) = report.models
    assert m.per_image_source == "probe" and m.per_image_s > 0
    assert any("hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in w for w in m.warnings)
    assert m.estimate_s is not None and not (tmp_path / "run").exists()


def test_diffusers_is_required_from_the_first_release_that_runs_sd35():
    """diffusers 0.30 loads SD3.5 without its QK-norm and dual attention (a silenced warning,
    wrong images); 0.31 is the first with both (diffusers#9734)."""
    import re
    from pathlib import Path

    import diffusers
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    for extra in ("measure", "test"):
        pins = [d for d in extras[extra] if d.startswith("diffusers")]
        for pin in pins:
            low = re.search(r">=\s*([0-9.]+)", pin).group(1)
            assert tuple(int(x) for x in low.split(".")) >= (0, 31), pin
    from inspect import signature

    params = signature(diffusers.SD3Transformer2DModel.__init__).parameters
    assert "qk_norm" in params and "dual_attention_layers" in params
