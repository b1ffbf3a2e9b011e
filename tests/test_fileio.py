"""Atomic writes: old-or-new only, no temp files left, and a readable mode."""

from __future__ import annotations

import os
import stat

import pytest

from hadis_profile.fileio import atomic_write_text, atomic_write_via


def test_written_file_gets_the_umask_mode_not_mkstemps_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "table.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "table.json").stat().st_mode) == 0o644


def test_a_failing_writer_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "out.csv"
    atomic_write_text(target, "old\n")

    def boom(tmp):
        tmp.write_text("half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_via(target, boom)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_jsonable_gives_strict_json_whatever_the_producer_held():
    import dataclasses
    import json
    import math
    from pathlib import Path

    import numpy as np

    from hadis_profile.fileio import jsonable

    @dataclasses.dataclass
    class Point:
        batch: int
        p50: float
        where: Path

    got = jsonable(
        {1: Point(np.int64(2), float("nan"), Path("/x/y")), "a": (np.float32(0.5), math.inf)}
    )
    assert got == {"1": {"batch": 2, "p50": None, "where": "/x/y"}, "a": [0.5, None]}
    assert json.loads(json.dumps(got, allow_nan=False)) == got
    assert jsonable(np.arange(3).reshape(1, 3)) == [[0, 1, 2]]
