"""The command line as a newcomer meets it: fast help, usage errors, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hadis_profile.cli import app, options
from hadis_profile.errors import ParameterError, UsageError

HEAVY = ("torch", "diffusers", "transformers", "pandas", "spacy", "scipy", "matplotlib")
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    if cwd is not None:  # the package must still come from this checkout
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )


def test_help_lists_every_verb_without_importing_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from hadis_profile.cli import app\n"
        "res = CliRunner().invoke(app, ['--help'], env={'COLUMNS': '200'})\n"
        "assert res.exit_code == 0, res.output\n"
        "print(res.output)\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    for verb in (
        "run",
        "import",
        "export",
        "pareto",
        "validate",
        "show",
        "resolve",
        "simulate",
        "demo",
        "zoo",
        "prompts",
        "router",
        "discriminator",
    ):
        assert f" {verb} " in out.stdout, verb


def test_usage_errors_exit_2_and_user_errors_exit_1_in_one_line(tmp_path):
    res = run("no-such-verb")
    assert res.returncode == 2
    # a missing input file is a mistake on the command line, like a bad flag: exit 2
    res = run("resolve", str(tmp_path / "missing.json"), "--qps", "1", "--slo", "1", "--gpus", "1")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr


def test_error_text_with_rich_markup_characters_is_printed_verbatim(tmp_path):
    bad = tmp_path / "[bold]x[red].json"
    bad.write_text("{not json")
    res = run("validate", str(bad))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "[bold]x[red].json" in res.stderr


# --------------------------------------------------------------------------- choices are types


def help_text(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_choices_come_from_the_library_registries():
    """The CLI's choice types list exactly what the library accepts."""
    from typing import get_args

    from hadis_profile import demo, pareto
    from hadis_profile.router import CALIBRATION_METHODS
    from hadis_profile.simulate import ALL_POLICIES
    from hadis_profile.simulate.context import LATENCY_STATS
    from hadis_profile.store import EXPORT_FORMATS

    assert get_args(options.PairSelection) == pareto.PAIR_SELECTIONS
    assert get_args(options.ExportFormat) == tuple(EXPORT_FORMATS)
    assert get_args(options.DemoSource) == demo.SOURCES
    assert tuple(p.value for p in options.Policy) == tuple(ALL_POLICIES)
    assert get_args(options.LatencyStat) == LATENCY_STATS
    assert get_args(options.FitMethod) == CALIBRATION_METHODS


@pytest.mark.parametrize(
    ("command", "flag", "choices"),
    [
        (["pareto"], "--pairs", "all|adjacent"),
        (["export"], "--format", "csv|parquet"),
        (["demo"], "--source", "auto|tiny|synthetic"),
        (["router", "fit"], "--method", "ridge|rank"),
        (["prompts", "inspect"], "--errors", "strict|replace|ignore"),
        (["zoo", "tiny"], "--clip-vocab", "mini|openai"),
        (["simulate"], "--latency-stat", "p99|mean|p50|p90"),
        (["simulate"], "--spare", "spread|idle"),
        (["run"], "--fid", "none|clip[:CKPT]|inception[:WEIGHTS]|MODULE:FN"),
        (["run"], "--discriminator", "clip|none|learned:HEAD|MODULE:FN"),
        (["run"], "--scorer", "clip_score[:CKPT]|pick_score[:MODEL[,PROCESSOR]]|MODULE:FN"),
        (["discriminator", "score"], "--kind", "learned[:HEAD]|clip[:CKPT]|pick[:MODEL"),
    ],
)
def test_help_lists_the_choices(command, flag, choices):
    text = help_text(*command)
    line = text[text.index(flag + " ") :][:200]
    assert choices in line, line


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (["pareto", "--run", "r", "--pairs", "neighbours"], "--pairs", "neighbours"),
        (["export", "r", "--format", "xlsx"], "--format", "xlsx"),
        (["demo", "--source", "gpu"], "--source", "gpu"),
        (["simulate", "t", "--run", "r", "--gpus", "1", "--slo", "1", "-p", "hadiss"], "--policy",
         "hadiss"),
        (["run", "--fid", "fdi", "--dry-run"], "--fid", "fdi"),
        (["discriminator", "score", "--run", "r", "--kind", "clp"], "--kind", "clp"),
    ],
)  # fmt: skip
def test_an_invalid_choice_is_one_line_exit_2(tmp_path, args, flag, value):
    res = subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    line = res.stderr.strip()
    assert line.count("\n") == 0, line
    assert line.startswith("error: Invalid value for") and f"'{flag}" in line
    assert f"'{value}' is not one of" in line and "Value error" not in line
    assert not any(tmp_path.iterdir())  # refused before the command ran


def test_malformed_lists_are_refused_alike_by_every_command(tmp_path):
    """One parser per list: --batch-sizes says the same on resolve and run."""
    res = run(
        "resolve", "t.json", "--qps", "1", "--slo", "1", "--gpus", "1", "--batch-sizes", "2,0"
    )
    res2 = run("run", "--dry-run", "--batch-sizes", "2,0")
    for r in (res, res2):
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "'--batch-sizes': '2,0' must list batch sizes of at least 1" in r.stderr
    assert res.stderr.split(" See ")[0] == res2.stderr.split(" See ")[0]
    assert options.parse_batch_sizes("1, 2,4") == (1, 2, 4)
    for bad in ("", "1,x", "-1", "1.5"):
        with pytest.raises(typer.BadParameter):
            options.parse_batch_sizes(bad)
    assert options.parse_numbers("1,-0.5,2e1") == (1.0, -0.5, 20.0)
    with pytest.raises(typer.BadParameter):
        options.parse_numbers("1,,2")


# --------------------------------------------------------------------------- flags in errors


@pytest.fixture
def synthetic_run(tmp_path):
    from hadis_profile.synthetic import write_synthetic_run

    write_synthetic_run(tmp_path / "outputs" / "syn", n_prompts=20).close()
    return tmp_path / "outputs" / "syn"


def test_every_command_names_flags_in_library_errors():
    def leaves(cmd, path=()):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield path, cmd
            return
        for name, sub in subs.items():
            yield from leaves(sub, (*path, name))

    found = dict(leaves(typer.main.get_command(app)))
    assert {" ".join(p) for p in found} == {
        *("run", "export", "migrate", "pareto", "validate", "show", "resolve", "simulate"),
        *("report", "demo", "merge"),
        *("import hadis-reference", "import files", "prompts inspect"),
        *("router features", "router score", "router fit", "discriminator train"),
        *("discriminator score", "zoo validate", "zoo list", "zoo tiny"),
    }
    for path, cmd in found.items():
        assert isinstance(cmd, options.HadisCommand), path
    pareto, inspect = found[("pareto",)], found[("prompts", "inspect")]
    assert pareto.flag_for("grid") == "--grid"  # -- + the parameter
    assert pareto.flag_for("quality_metric") == "--quality"  # the command's override
    assert pareto.flag_for("run_dir") == "--run"
    assert pareto.flag_for("images_per_prompt") is None  # no such flag here: keep the name
    assert inspect.flag_for("path") == "FILE" and inspect.flag_for("column") == "--column"
    assert found[("export",)].flag_for("fmt") == "--format"  # via the CLI parameter's name
    assert found[("resolve",)].flag_for("slo_s") == "--slo"
    assert found[("merge",)].flag_for("sources") == "RUNS"


def test_a_library_parameter_error_names_the_flag(synthetic_run, tmp_path):
    res = run("pareto", "--run", str(synthetic_run), "--confidence", "nope", "-o", "t.json")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        "error: --confidence 'nope' is not among the run's confidence scorers "
        "(confidence:synthetic)."
    )
    # The flag differs from the parameter (n_prompts): the command's override names it.
    res = run("demo", "--source", "tiny", "--prompts", "1", "--out", str(tmp_path / "demo"))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --prompts must be from 2 to 12 for the tiny demo, not 1."
    assert not (tmp_path / "demo").exists()
    # In process (CliRunner bypasses main), the command already raised the flag's sentence.
    res = CliRunner().invoke(app, ["pareto", "--run", str(synthetic_run), "--grid", "0"])
    assert isinstance(res.exception, UsageError) and res.exception.exit_code == 2
    assert str(res.exception) == "--grid must be a whole number of at least 1, not 0."
    assert isinstance(res.exception.__cause__, ParameterError)


def test_a_run_id_means_the_folder_under_outputs(synthetic_run, tmp_path):
    res = run("pareto", "--run", "syn", "--out", "t.json", "--grid", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "wrote t.json" in res.stdout and (tmp_path / "t.json").is_file()
    res = run("export", "syn", "--format", "csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (synthetic_run / "export" / "prompts.csv").is_file()


def test_kind_arg_choices_accept_what_the_library_reads():
    fid, disc = options.FID_FEATURES, options.RUN_DISCRIMINATOR
    for ok in ("none", "clip", "clip:openai/clip-vit-large-patch14", "inception:./w.pth",
               "my_pkg.features:extract"):  # fmt: skip
        assert fid(ok) == ok
    for ok in ("clip", "none", "learned:runs/head.safetensors", "pkg:make_disc"):
        assert disc(ok) == ok
    for bad, choice in (("fdi", fid), ("clip:", fid), ("learned", disc), ("x.y", disc),
                        ("pkg:", disc), ("1pkg:fn", disc)):  # fmt: skip
        with pytest.raises(typer.BadParameter, match="is not one of"):
            choice(bad)
