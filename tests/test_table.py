"""table.json: round trip, tamper evidence, versioning, schema, atomic writes, CLI, report."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from table_mutants import METRIC, measurements

from hadis_profile import table as table_mod
from hadis_profile.errors import HadisError
from hadis_profile.pareto import compile_table
from hadis_profile.table import (
    CascadeTable,
    load_table,
    make_document,
    payload_hash,
    validate_document,
    validate_file,
    write_table,
)


@pytest.fixture(scope="module")
def doc() -> dict:
    return compile_table(measurements())


def rehash(d: dict) -> dict:
    """A document as a (buggy) writer would produce it: consistent hash, broken content."""
    d["sha256"] = payload_hash(d["payload"])
    return d


# ---------------------------------------------------------------- load / write


def test_round_trip(tmp_path, doc):
    path = tmp_path / "sub" / "table.json"
    write_table(path, doc)
    t = load_table(path)
    assert isinstance(t, CascadeTable)
    assert t.document == doc
    assert t.sha256 == doc["sha256"] == payload_hash(t.payload)
    assert t.quality_metric == METRIC
    assert t.router == doc["payload"]["router"]
    assert [p.name for p in path.parent.iterdir()] == ["table.json"]  # no temp files left


def test_tampered_byte_fails_the_hash(tmp_path, doc):
    path = tmp_path / "table.json"
    write_table(path, doc)
    text = path.read_text()
    i = text.index('"gpu_s_per_query": ') + len('"gpu_s_per_query": ')
    digit = text[i]
    path.write_text(text[:i] + ("7" if digit != "7" else "8") + text[i + 1 :])
    with pytest.raises(HadisError, match="integrity check") as e:
        load_table(path)
    assert "\n" not in str(e.value)


def test_newer_major_version_is_refused(tmp_path, doc):
    d = copy.deepcopy(doc)
    d["schema_version"] = "2.0"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(d))
    with pytest.raises(HadisError, match=r"schema version '2\.0', newer .* upgrade hadis-profile"):
        load_table(path)
    d["schema_version"] = "1.7"  # a newer minor version still loads
    path.write_text(json.dumps(d))
    assert load_table(path).rows == doc["payload"]["rows"]


def test_missing_fields_are_named(doc):
    d = copy.deepcopy(doc)
    del d["sha256"]
    with pytest.raises(HadisError, match="missing the field 'sha256'"):
        CascadeTable.from_document(d)
    d = copy.deepcopy(doc)
    del d["payload"]["rows"][1]["fractions"]["escalated"]
    with pytest.raises(HadisError, match=r"rows\[1\]\.fractions: the required field 'escalated'"):
        CascadeTable.from_document(rehash(d))
    d = copy.deepcopy(doc)
    del d["payload"]["models"]
    with pytest.raises(HadisError, match=r"payload\.models"):
        CascadeTable.from_document(d)


def test_other_format_and_bad_json(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(HadisError, match="not a cascade table"):
        load_table(path)
    path.write_text("{not json")
    with pytest.raises(HadisError, match=r"not valid JSON \(line 1"):
        load_table(path)
    with pytest.raises(HadisError, match="does not exist"):
        load_table(tmp_path / "absent.json")


def test_nan_is_refused_everywhere(tmp_path, doc):
    d = copy.deepcopy(doc)
    d["payload"]["rows"][0]["gpu_s_per_query"] = float("nan")
    with pytest.raises(HadisError, match="NaN"):
        make_document(d["payload"])
    with pytest.raises(HadisError, match="NaN"):
        write_table(tmp_path / "t.json", d)
    # A file holding NaN (Python's json would read it as a float) is refused on load.
    path = tmp_path / "nan.json"
    text = json.dumps(doc).replace('"gpu_s_per_query": ', '"gpu_s_per_query": NaN, "x": ', 1)
    path.write_text(text)
    with pytest.raises(HadisError, match="contains NaN"):
        load_table(path)


def test_failed_write_leaves_the_old_file_intact(tmp_path, doc, monkeypatch):
    path = tmp_path / "table.json"
    write_table(path, doc)
    before = path.read_bytes()
    bad = copy.deepcopy(doc)
    bad["payload"]["rows"][0]["latency_s"] = float("inf")
    with pytest.raises(HadisError):
        write_table(path, bad)
    bad = copy.deepcopy(doc)
    bad["payload"]["rows"][0]["quality"][METRIC] = object()  # not serialisable
    with pytest.raises(HadisError, match=r"holds a Python object at .*, which is not a JSON"):
        write_table(path, bad)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(table_mod.os, "fsync", disk_full)
    other = rehash(copy.deepcopy(doc))
    other["payload"]["provenance"]["run_id"] = "other"
    with pytest.raises(HadisError, match="No space left"):
        write_table(path, rehash(other))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_load_table_does_not_import_jsonschema(tmp_path, doc):
    path = tmp_path / "t.json"
    write_table(path, doc)
    code = (
        "import sys\n"
        "from hadis_profile.table import load_table\n"
        f"load_table({str(path)!r})\n"
        "assert 'jsonschema' not in sys.modules, 'jsonschema imported'\n"
        "assert 'matplotlib' not in sys.modules and 'rich' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- schema


def test_schema_accepts_compiled_tables(doc):
    validate_document(doc)
    meas = measurements()
    for kwargs in ({"exact": True}, {"per_pair": True}, {"nominal": True, "grid": 4}):
        validate_document(compile_table(meas, **kwargs))
    assert table_mod.SCHEMA_PATH.is_file()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["rows"][1].update(kind="bogus"), r"payload\.rows\[1\]\.kind"),
        (lambda p: p["rows"][1].update(r=1.5), r"payload\.rows\[1\]\.r: found 1\.5, expected a n"),
        (lambda p: p["rows"][0].update(heavy="b"), r"payload\.rows\[0\]"),
        (lambda p: p["provenance"].update(pairs="some"), r"provenance\.pairs"),
        (lambda p: p["models"]["a"]["latency"].update(x={}), r"models\.a\.latency"),
        (lambda p: p["rows"][-1].update(on_front="yes"), r'on_front: found "yes", expected true'),
        (lambda p: p.update(router={"features": ["x"]}), r"payload\.router"),
        (lambda p: p["rows"].insert(1, copy.deepcopy(p["rows"][0])), "2 single-model rows"),
        (lambda p: p["rows"].reverse(), "not sorted"),
        (lambda p: p["rows"][1].update(quality={"pick_score:x": 1.0}), "no value for the quality"),
        (lambda p: p["rows"][1].update(quality={}), r"quality: found an empty object"),
    ],
)
def test_schema_rejects_broken_tables(doc, mutate, message):
    d = copy.deepcopy(doc)
    mutate(d["payload"])
    for check in (validate_document, CascadeTable):  # validate and the loader agree
        with pytest.raises(HadisError, match=message) as e:
            check(rehash(d), "t.json")
        assert str(e.value).startswith("t.json") and "\n" not in str(e.value)


def test_hash_is_sha256_of_the_documented_canonical_json(doc):
    """Byte-identical to the format's definition: sorted keys, compact, UTF-8, no NaN."""
    import hashlib

    payload = {"b": [1, 2.5, None], "a": {"é": "ü", "z": True}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert text == '{"a":{"z":true,"é":"ü"},"b":[1,2.5,null]}'
    assert payload_hash(payload) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert payload_hash(doc["payload"]) == doc["sha256"]


def test_a_cascade_table_is_verified_when_made(doc):
    d = copy.deepcopy(doc)
    d["payload"]["rows"][0]["r"] = 0.5
    with pytest.raises(HadisError, match="integrity check"):
        CascadeTable(d)
    with pytest.raises(HadisError, match=r'rows\[0\]\.r: found 0\.5, expected 0 in a "single" row'):
        CascadeTable(rehash(d))
    t = CascadeTable(doc)
    with pytest.raises(AttributeError):
        t.document = d  # frozen: a verified table stays the one verified


def test_validate_file_checks_hash_then_schema(tmp_path, doc):
    path = tmp_path / "t.json"
    write_table(path, doc)
    assert validate_file(path).sha256 == doc["sha256"]
    d = json.loads(path.read_text())
    d["payload"]["rows"][0]["r"] = 0.5
    path.write_text(json.dumps(d))
    with pytest.raises(HadisError, match="integrity check"):
        validate_file(path)


# ---------------------------------------------------------------- report


def test_plot_is_a_png(tmp_path, doc):
    from hadis_profile.report import plot_pareto

    out = tmp_path / "plots" / "pareto.png"
    plot_pareto(doc, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    plot_pareto(CascadeTable.from_document(doc), out)  # overwrites atomically
    assert sorted(p.name for p in out.parent.iterdir()) == ["pareto.png"]


@pytest.mark.parametrize("width", [80, 200])
def test_render(doc, width):
    from rich.console import Console

    from hadis_profile.report import render_table

    console = Console(width=width, record=True, color_system=None)
    render_table(doc, console, limit=3)
    text = console.export_text()
    assert METRIC in text and "more row(s)" in text and "★" in text
    assert ("a → b" in text) == (width >= 150)
    assert max(len(line) for line in text.splitlines()) <= width


# ---------------------------------------------------------------- CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from hadis_profile.synthetic import write_synthetic_run

    root = tmp_path_factory.mktemp("runs") / "syn"
    write_synthetic_run(root, n_prompts=30).close()
    return root


def test_cli_pareto_validate_show(tmp_path, run_dir):
    proc = cli(
        "pareto", "--run", str(run_dir), "--out", "t.json", "--plot", "p.png", "--pairs",
        "adjacent", "--grid", "5", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    t = load_table(tmp_path / "t.json")
    assert f"sha256 {t.sha256[:12]}" in proc.stdout and "configurations" in proc.stdout
    assert t.provenance["pairs"] == "adjacent" and t.provenance["grid"]["steps"] == 5
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

    proc = cli("validate", "t.json", cwd=tmp_path)
    assert proc.returncode == 0 and "is a valid cascade table" in proc.stdout

    proc = cli("show", "t.json", "--limit", "2", "--plot", "q.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "synthetic-lightning-2step" in proc.stdout and (tmp_path / "q.png").is_file()


def test_cli_errors_are_one_sentence(tmp_path, run_dir, doc):
    proc = cli("pareto", "--run", str(run_dir), "--out", "t.json", "--quality", "fid", cwd=tmp_path)
    assert proc.returncode == 2  # a value the run does not have, like --confidence
    assert "Unknown metric 'fid'" in one_line_error(proc)
    assert not (tmp_path / "t.json").exists()  # nothing written on failure

    proc = cli("pareto", "--run", str(tmp_path / "nope"), "--out", "t.json", cwd=tmp_path)
    assert proc.returncode == 2 and "No run store" in one_line_error(proc)

    proc = cli("pareto", "--run", str(run_dir), "--pairs", "some", cwd=tmp_path)
    assert proc.returncode == 2 and "--pairs" in one_line_error(proc)

    d = copy.deepcopy(doc)
    d["payload"]["rows"][0]["d"] = 0.25
    (tmp_path / "bad.json").write_text(json.dumps(d))
    proc = cli("validate", "bad.json", cwd=tmp_path)
    assert proc.returncode == 1 and "integrity check" in one_line_error(proc)

    d["payload"]["rows"][0]["kind"] = "bogus"
    (tmp_path / "bad.json").write_text(json.dumps(rehash(d)))
    proc = cli("validate", "bad.json", cwd=tmp_path)
    assert proc.returncode == 1 and "does not match the table schema" in one_line_error(proc)

    proc = cli("show", "absent.json", cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in one_line_error(proc)
