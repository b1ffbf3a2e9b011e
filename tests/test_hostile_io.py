"""Writes that fail leave nothing partial and say so in one sentence; reads never change a
run; user text reaches the terminal as written (issue 13)."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from hostile_helpers import assert_refused, invoke, synthetic_files

from hadis_profile import fileio
from hadis_profile.errors import HadisError, InputError
from hadis_profile.fileio import atomic_dir, os_error
from hadis_profile.store import DB_NAME, SCHEMA_VERSION, RunStore


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    return synthetic_files(tmp_path_factory.mktemp("hostile-io"))


def listing(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256: what 'unchanged' means."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def disk_full(monkeypatch) -> None:
    """Every fsync fails as a full disk does (ENOSPC): deterministic, no tmpfs needed."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)


# --------------------------------------------------------------------------- atomic folders


def test_atomic_dir_creates_a_new_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.csv").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.csv").write_text("b")
        assert not target.exists()  # nothing visible until the block succeeds
    assert listing(target).keys() == {"a.csv", "sub/b.csv"}
    assert target.stat().st_mode & 0o777 != 0o700  # not mkdtemp's private mode

    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "new") as tmp:
        (tmp / "a.csv").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left


def test_atomic_dir_into_an_existing_folder_keeps_other_files(tmp_path):
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    (target / "a.csv").write_text("old")
    (target / "sub" / "stale.csv").write_text("old block")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.csv").write_text("new")
        raise RuntimeError("boom")
    assert listing(target) == {
        "a.csv": hashlib.sha256(b"old").hexdigest(),
        "keep.txt": hashlib.sha256(b"mine").hexdigest(),
        "sub/stale.csv": hashlib.sha256(b"old block").hexdigest(),
    }
    with atomic_dir(target) as tmp:
        (tmp / "a.csv").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "fresh.csv").write_text("new block")
    assert (target / "a.csv").read_text() == "new" and (target / "keep.txt").exists()
    assert sorted(p.name for p in (target / "sub").iterdir()) == ["fresh.csv"]  # replaced
    assert sorted(p.name for p in target.iterdir()) == ["a.csv", "keep.txt", "sub"]


def test_os_errors_are_one_sentence_naming_the_path(tmp_path):
    p = tmp_path / "x" / "table.json"
    cases = [
        (errno.EISDIR, InputError, "it is a folder; give a file name"),
        (errno.ENOSPC, HadisError, "No space left on device"),
        (errno.EACCES, HadisError, "Permission denied"),
    ]
    for code, kind, text in cases:
        e = os_error(p, OSError(code, __import__("os").strerror(code)))
        assert type(e) is kind and str(p) in str(e) and text in str(e)
    (tmp_path / "file").write_text("")
    e = os_error(tmp_path / "file" / "t.json", OSError(errno.ENOTDIR, "Not a directory"))
    assert isinstance(e, InputError) and f"{tmp_path / 'file'} is a file, not a folder" in str(e)


# --------------------------------------------------------------------------- full disk


def test_full_disk_during_export_leaves_no_folder(synthetic, tmp_path, capsys, monkeypatch):
    disk_full(monkeypatch)
    res = invoke(capsys, "export", synthetic[0], "--out", tmp_path / "exp")
    assert_refused(res, 1, str(tmp_path / "exp"), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_simulate_leaves_none_of_its_files(
    synthetic, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "summary.csv").write_text("an older result\n")
    disk_full(monkeypatch)
    run, table = synthetic
    res = invoke(
        capsys, "simulate", table, "--run", run, "--gpus", 4, "--slo", 60, "--rate", 2,
        "--duration", 60, "-p", "clipper-light", "--out", out,
    )  # fmt: skip
    assert_refused(res, 1, "No space left on device")
    assert listing(out) == {"summary.csv": hashlib.sha256(b"an older result\n").hexdigest()}


def test_full_disk_during_pareto_plot_writes_no_table(synthetic, tmp_path, capsys, monkeypatch):
    disk_full(monkeypatch)
    res = invoke(
        capsys, "pareto", "--run", synthetic[0], "--out", tmp_path / "t.json",
        "--plot", tmp_path / "p.png",
    )  # fmt: skip
    assert_refused(res, 1, str(tmp_path / "p.png"), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_import_leaves_no_run_and_names_the_target(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    disk_full(monkeypatch)  # run.json is fsynced when the import's transaction commits
    res = invoke(capsys, "import", "files", "--out", tmp_path / "run", "--prompts", prompts,
                 "--model", "m1", "--model", "m2")  # fmt: skip
    line = assert_refused(res, 1, "No space left on device", str(tmp_path / "run"))
    assert "importing" not in line  # the temp folder is not what the user asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_a_full_sqlite_store_is_one_sentence_and_rolls_back(tmp_path):
    """SQLITE_FULL, made deterministic with max_page_count: the unit of work is rolled back."""
    store = RunStore.create(tmp_path / "run")
    store.add_prompts(["first"])
    store._db.execute("PRAGMA max_page_count = 8")
    with pytest.raises(
        HadisError, match=r"Cannot write run store .*store.sqlite: the disk is full"
    ):
        store.add_prompts(["first", *("x" * 3000 + str(i) for i in range(200))])
    assert store.prompts() == ["first"]
    store.close()


# --------------------------------------------------------------------------- wrong targets


def test_outputs_pointing_at_the_wrong_kind_of_path_are_usage_errors(synthetic, tmp_path, capsys):
    run, table = synthetic
    folder = tmp_path / "adir"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("")
    sim = ["simulate", table, "--run", run, "--gpus", 4, "--slo", 60, "--rate", 1]
    cases = [
        (["pareto", "--run", run, "--out", folder], "it is a folder"),
        (["pareto", "--run", run, "--out", tmp_path / "t.json", "--plot", folder], "a folder"),
        (["pareto", "--run", run, "--out", afile / "t.json"], f"{afile} is a file"),
        (["show", table, "--plot", folder], "it is a folder"),
        (["export", run, "--out", afile], "it is a file; give a folder"),
        ([*sim, "--out", afile], "it is a file; give a folder"),
        (["router", "features", run / "missing.txt", "--out", folder], "it is a folder"),
    ]
    for args, fragment in cases:
        assert_refused(invoke(capsys, *args), 2, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert list(folder.iterdir()) == [] and afile.read_text() == ""


def test_an_unwritable_target_folder_is_one_sentence(synthetic, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(fileio.tempfile, "mkdtemp", refuse)
    res = invoke(capsys, "pareto", "--run", synthetic[0], "--out", tmp_path / "t.json")
    assert_refused(res, 1, str(tmp_path / "t.json"), "Permission denied")
    res = invoke(capsys, "export", synthetic[0], "--out", tmp_path / "exp")
    assert_refused(res, 1, str(tmp_path / "exp"), "Permission denied")


# --------------------------------------------------------------------------- read-only opens


def test_read_only_commands_leave_the_run_byte_for_byte(synthetic, tmp_path, capsys):
    run, table = synthetic
    before = listing(run)
    for args in (
        ["export", run, "--out", tmp_path / "exp"],
        ["pareto", "--run", run, "--out", tmp_path / "t.json"],
        ["simulate", table, "--run", run, "--gpus", 4, "--slo", 60, "--rate", 1, "-p", "hadis"],
        ["router", "fit", "--run", run, "--dry-run"],
    ):
        res = invoke(capsys, *args)
        assert res.code == 0, (args, res.err)
    assert listing(run) == before


def test_a_zero_byte_store_is_refused_and_stays_zero_bytes(synthetic, tmp_path, capsys):
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / DB_NAME).write_bytes(b"")
    table = synthetic[1]
    for args in (
        ["export", run],
        ["pareto", "--run", run, "--out", tmp_path / "t.json"],
        ["simulate", table, "--run", run, "--gpus", 4, "--slo", 60, "--rate", 1],
        ["router", "fit", "--run", run, "--dry-run"],
    ):
        assert_refused(invoke(capsys, *args), 2, "is empty or not a run store")
    assert listing(run) == {DB_NAME: hashlib.sha256(b"").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-run"]


def test_an_old_store_is_not_upgraded_by_a_reader_and_migrate_upgrades_it(tmp_path, capsys):
    from test_store import V1_DDL

    run = tmp_path / "old-run"
    run.mkdir()
    with sqlite3.connect(run / DB_NAME) as db:
        db.executescript(V1_DDL)
    before = listing(run)
    res = invoke(capsys, "export", run)
    assert_refused(res, 1, "schema version 1", f"hadis-profile migrate {run}")
    assert listing(run) == before
    res = invoke(capsys, "migrate", run)
    assert res.code == 0 and f"from schema version 1 to {SCHEMA_VERSION}" in res.out, res.err
    res = invoke(capsys, "migrate", run)
    assert res.code == 0 and "already at schema version" in res.out
    res = invoke(capsys, "export", run)
    assert res.code == 0, res.err


def test_a_store_that_is_not_sqlite_is_one_sentence(tmp_path, capsys):
    run = tmp_path / "junk"
    run.mkdir()
    (run / DB_NAME).write_bytes(b"\x89PNG this is not a database" * 100)
    assert_refused(invoke(capsys, "export", run), 2, "not a readable run store")


# --------------------------------------------------------------------------- user text


def renamed_table(table: Path, new: str, out: Path) -> Path:
    """``table`` with its cheapest model renamed to ``new`` (hash recomputed)."""
    from hadis_profile.table import make_document

    doc = json.loads(table.read_text())
    payload = doc["payload"]
    old = min(payload["models"], key=lambda m: payload["models"][m].get("order", 0))
    payload["models"][new] = payload["models"].pop(old)
    for row in payload["rows"]:
        for key in ("light", "heavy"):
            if row.get(key) == old:
                row[key] = new
    out.write_text(json.dumps(make_document(payload, created_at=doc["created_at"])))
    return out


@pytest.mark.parametrize(
    "name,shown",
    [
        ("light[/x]", "light[/x]"),
        ("[link=https://evil.example]x[/link]", "[link=https://evil.example]x[/link]"),
        ("\x1b[31mred\x1b[0m\u202eevil\r", "[31mred[0mevil"),
    ],
)
def test_model_names_print_as_written_in_show_and_resolve(
    synthetic, tmp_path, capsys, monkeypatch, name, shown
):
    monkeypatch.setenv("COLUMNS", "200")  # wide: rows name models, not their rank
    table = renamed_table(synthetic[1], name, tmp_path / "t.json")
    res = invoke(capsys, "show", table)
    assert res.code == 0 and not res.crash, res.err + res.crash
    assert shown in res.out and "\x1b" not in res.out and "\r" not in res.out
    assert "\u202e" not in res.out
    res = invoke(capsys, "resolve", table, "--qps", 0.05, "--slo", 300, "--gpus", 8)
    assert res.code in (0, 3) and not res.crash, res.err + res.crash
    assert "\x1b" not in res.out + res.err


def test_model_names_with_markup_import_and_error_lines_are_cleaned(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    res = invoke(capsys, "import", "files", "--out", tmp_path / "run", "--prompts", prompts,
                 "--model", "light[/x]", "--model", "[bold]heavy")  # fmt: skip
    assert res.code == 0 and not res.crash, res.err + res.crash
    assert "light[/x]" in res.out and "[bold]heavy" in res.out
    res = invoke(capsys, "import", "files", "--out", tmp_path / "r2", "--prompts",
                 tmp_path / "\x1b[2Jgone[/]\r.txt", "--model", "a")  # fmt: skip
    line = assert_refused(res, 2, "[2Jgone[/].txt")
    assert "\x1b" not in line and "\r" not in line


def test_prompts_with_control_characters_are_shown_cleaned(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a \x1b]8;;https://x\x07link\x1b]8;;\x07 cat"}) + "\n")
    res = invoke(capsys, "prompts", "inspect", path)
    assert res.code == 0 and "]8;;https://xlink]8;; cat" in res.out
    assert "\x1b" not in res.out and "\x07" not in res.out
