"""The command line as a newcomer meets it: fast help, usage errors, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "pandas", "spacy", "scipy", "matplotlib")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
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
    res = run("resolve", str(tmp_path / "missing.json"), "--qps", "1", "--slo", "1", "--gpus", "1")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr


def test_error_text_with_rich_markup_characters_is_printed_verbatim(tmp_path):
    bad = tmp_path / "[bold]x[red].json"
    bad.write_text("{not json")
    res = run("validate", str(bad))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "[bold]x[red].json" in res.stderr
