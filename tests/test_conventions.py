"""What users of a Python CLI expect: ``python -m``, completion, one version, types, extras."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hadis_profile

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)


def test_python_dash_m_is_the_command_and_the_version_has_one_source():
    res = run("-m", "hadis_profile", "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"hadis-profile {hadis_profile.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # pyproject reads the version from the package (setuptools' dynamic attr), nowhere else.
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "hadis_profile.__version__"


def test_shell_completion_is_offered():
    res = run("-m", "hadis_profile", "--help")
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_HADIS_PROFILE_COMPLETE": "complete_bash",
           "COMP_WORDS": "hadis-profile res", "COMP_CWORD": "1"}  # fmt: skip
    # Click's completion protocol, as the installed bash script calls it.
    code = "import sys; sys.argv[0] = 'hadis-profile'; from hadis_profile.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "resolve" in out.stdout.split()


def test_package_is_typed_and_ships_the_marker():
    assert (ROOT / "hadis_profile" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["hadis_profile"]


def test_extras_reuse_each_other_instead_of_repeating():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=\[;! ]", r, maxsplit=1)[0].lower() for r in reqs}

    # measure brings the router's dependencies: `run` computes router features.
    assert "hadis-profile[router]" in extras["measure"]
    (self_ref,) = [r for r in extras["test"] if r.startswith("hadis-profile[")]
    reused = set(self_ref[len("hadis-profile[") : -1].split(","))
    assert {"measure", "router", "parquet", "frames"} <= reused
    for extra in reused:  # nothing the reused extras bring is listed again
        assert not (names(extras[extra]) - {"hadis-profile"}) & names(extras["test"])


def test_importing_the_package_stays_cheap():
    code = (
        "import sys, hadis_profile; hadis_profile.load_run; "
        "print(sorted(m for m in ('pandas', 'rich', 'matplotlib', 'torch', 'typer') "
        "if m in sys.modules))"
    )
    res = run("-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    res = run("-X", "importtime", "-c", "import hadis_profile.resolve")
    heavy = {"pandas", "rich", "matplotlib", "torch"}
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in res.stderr.splitlines()}
    assert not heavy & imported


def test_metric_ids_name_local_checkpoints_portably(tmp_path):
    """A local checkpoint is named by folder and content hash: the same id wherever the folder
    is, another id when its bytes change, and never the machine path."""
    from hadis_profile.measure.scorers import checkpoint_label

    for where in ("a", "b/deeper"):
        ckpt = tmp_path / where / "clip"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text('{"dim": 8}')
        (ckpt / "weights.bin").write_bytes(bytes(range(64)))
    first, second = (checkpoint_label(str(tmp_path / w / "clip")) for w in ("a", "b/deeper"))
    assert first == second and re.fullmatch(r"clip@[0-9a-f]{12}", first)
    assert str(tmp_path) not in first
    (tmp_path / "b" / "deeper" / "clip" / "weights.bin").write_bytes(bytes(range(1, 65)))
    moved = tmp_path / "c"
    (tmp_path / "b" / "deeper" / "clip").rename(moved)  # a new path: not served from the cache
    assert checkpoint_label(str(moved)).split("@")[1] != first.split("@")[1]
    assert checkpoint_label("openai/clip-vit-large-patch14") == "openai/clip-vit-large-patch14"


def test_dry_run_plan_is_readable_at_80_columns():
    """Long warnings (a checkpoint to fetch) go below the table, which keeps a model a line."""
    from rich.console import Console

    from hadis_profile.measure.summary import ModelReport, RunReport
    from hadis_profile.report.runs import render_run

    warning = ("Model 'sd35-large': checkpoint 'stabilityai/stable-diffusion-3.5-large' is not in "
               "the local Hugging Face cache; fetch it with `hf download "
               "stabilityai/stable-diffusion-3.5-large` or rerun with --online.")  # fmt: skip
    batches = {b: None for b in (1, 2, 4, 8, 16, 32)}
    models = [
        ModelReport(
            name=f"sdxl-lightning-{i}step", steps=i, latency=batches, prompts_total=300,
            warnings=[warning], per_image_s=0.5, estimate_s=3600.0 * i,
        )
        for i in (2, 4)
    ]  # fmt: skip
    report = RunReport(
        run_dir=Path("outputs/a100"), hardware_label="a100", device="cuda",
        device_name="NVIDIA A100-SXM4-80GB", models=models, dry_run=True,
        notes=["a note that is long enough to need wrapping on a narrow terminal"],
    )  # fmt: skip
    console = Console(width=80, record=True, color_system=None)
    render_run(report, console)
    lines = console.export_text().splitlines()
    table = [line for line in lines if line.startswith(" sdxl-lightning")]
    assert len(table) == 2  # one line per model, nothing wrapped into a column
    assert all(len(line) <= 80 for line in table)
    assert any(warning in line for line in lines)  # below the table, whole
