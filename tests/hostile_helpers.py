"""Shared by tests/test_limits.py and tests/test_hostile*.py: run the CLI's real entry
point in-process and check the one promise every command makes on bad input:
one sentence on stderr, the documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    crash: str = ""  # a traceback that escaped main(): always a bug

    def sentence(self) -> str:
        """The error line without its ``error:`` prefix."""
        return self.err.strip().removeprefix("error:").strip()


def invoke(capsys: pytest.CaptureFixture, *args: object) -> Outcome:
    """``hadis-profile ARGS`` through :func:`hadis_profile.cli.main`, in this process."""
    from hadis_profile.cli import main

    argv = sys.argv
    sys.argv = ["hadis-profile", *map(str, args)]
    code: int | None = 0
    crash = ""
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # anything else escaping main() is the bug under test
        crash = traceback.format_exc()
        code = None
    finally:
        sys.argv = argv
    cap = capsys.readouterr()
    return Outcome(code, cap.out, cap.err, crash)


def cli(*args: object, cwd: Path | None = None, timeout: float = 300) -> Outcome:
    """``hadis-profile ARGS`` in a subprocess (end to end, with the real console)."""
    proc = subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=timeout,
    )
    crash = proc.stderr if "Traceback (most recent call last)" in proc.stderr else ""
    return Outcome(proc.returncode, proc.stdout, proc.stderr, crash)


def assert_refused(res: Outcome, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and one error line holding every fragment."""
    assert not res.crash, res.crash
    assert "Traceback" not in res.err, res.err
    assert res.code == code, (res.code, res.err, res.out[-2000:])
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def synthetic_files(root: Path, n_prompts: int = 40) -> tuple[Path, Path]:
    """A synthetic run and its compiled table under ``root``: (run folder, table.json)."""
    from hadis_profile.pareto import compile_table
    from hadis_profile.synthetic import write_synthetic_run
    from hadis_profile.table import write_table

    store = write_synthetic_run(root / "run", n_prompts=n_prompts)
    meas = store.load_measurements()
    store.close()
    write_table(root / "table.json", compile_table(meas))
    return root / "run", root / "table.json"
