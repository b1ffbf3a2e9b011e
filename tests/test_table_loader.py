"""The one strict table loader: hostile files, mutated tables, fuzzed resolve() arguments.

Truths: the audit's hostile inputs (issue 13) each give one sentence of the
right class; ``jsonschema`` on the shipped schema file judges the hand-written
checks; ``validate`` judges load + resolve and vice versa (they must agree).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from table_mutants import (
    base_documents,
    check_mutant,
    check_resolve_arguments,
    mutants,
    rehash,
    resolve_arguments,
)

from hadis_profile import strict_json, table_schema
from hadis_profile import table as table_mod
from hadis_profile.errors import HadisError
from hadis_profile.resolve import resolve
from hadis_profile.table import CascadeTable, load_table, validate_document, validate_file

EXAMPLES = int(os.environ.get("HADIS_FUZZ_EXAMPLES", "150"))
pytestmark = pytest.mark.filterwarnings("error")  # a numpy overflow warning is a failure here


def base() -> dict:
    return json.loads(base_documents()[1])


def edited(edit) -> bytes:
    """A valid table changed by ``edit(doc)``, hash recomputed, as file bytes."""
    doc = base()
    edit(doc)
    return json.dumps(rehash(doc)).encode()


def rows(doc: dict) -> list:
    return doc["payload"]["rows"]


def cascade(doc: dict) -> dict:
    return next(r for r in rows(doc) if r["kind"] == "cascade")


def model(doc: dict) -> dict:
    return doc["payload"]["models"]["a"]


def text_edit(old: str, new: str):
    def make() -> bytes:
        text = json.dumps(base())
        assert old in text
        return text.replace(old, new, 1).encode()

    return make


HOSTILE = {
    # the audit's examples: types trusted once the hash matched
    "rows is a number": (lambda: edited(lambda d: d["payload"].update(rows=5)), "payload.rows"),
    "cascade row with light null": (
        lambda: edited(lambda d: cascade(d).update(light=None)),
        "payload.rows[",
    ),
    "max_batch is a string": (
        lambda: edited(lambda d: model(d).update(max_batch="8")),
        'payload.models.a.max_batch: found "8", expected an integer >= 1 or null',
    ),
    "latency is a list": (
        lambda: edited(lambda d: model(d).update(latency=[1, 2])),
        "payload.models.a.latency: found an array, expected an object",
    ),
    "negative p99_s": (
        lambda: edited(lambda d: model(d)["latency"]["1"].update(p99_s=-0.5)),
        'payload.models.a.latency["1"].p99_s: found -0.5',
    ),
    "kind bogus": (
        lambda: edited(lambda d: rows(d)[1].update(kind="bogus")),
        'payload.rows[1].kind: found "bogus", expected one of "single", "cascade"',
    ),
    "unknown model in a row": (
        lambda: edited(lambda d: cascade(d).update(heavy="zz")),
        'names model "zz", which has no profile',
    ),
    "batch size key disagrees": (
        lambda: edited(lambda d: model(d)["latency"]["1"].update(batch_size=2)),
        'latency["1"].batch_size is 2, not its key "1"',
    ),
    "p99 below a nanosecond": (
        lambda: edited(lambda d: model(d)["latency"]["1"].update(p99_s=5e-324)),
        "p99_s: found 5e-324, expected a number >= 1e-09 and <= 1e+06 or null",
    ),
    "metric direction flipped": (
        lambda: edited(
            lambda d: d["payload"]["provenance"]["metrics"][table_mutants_metric()].update(
                higher_is_better=False
            )
        ),
        "says the wrong direction",
    ),
    # before the hash: parsing
    "100k-deep array": (lambda: b"[" * 100_000 + b"]" * 100_000, "nests arrays and objects 100000"),
    "5,000-digit integer": (
        text_edit('"n_prompts": 12', '"n_prompts": ' + "9" * 5000),
        "an integer of 5000 digits",
    ),
    "5,000-digit float": (text_edit('"n_prompts": 12', '"n_prompts": 0.' + "1" * 5000), "5002"),
    "float out of range": (text_edit('"n_prompts": 12', '"n_prompts": 1e999'), "out of range"),
    "NaN": (text_edit('"n_prompts": 12', '"n_prompts": NaN'), "contains NaN, which is not JSON"),
    "duplicate payload": (
        lambda: json.dumps(base())[:-1].encode() + b', "payload": {}}',
        'repeats the key "payload" in one object at the top level',
    ),
    "duplicate key deep inside": (
        text_edit('"light": "a"', '"light": "a", "light": "b"'),
        'repeats the key "light" in one object at payload.rows[',
    ),
    "lone surrogate escape": (
        text_edit('"run_id": "t"', '"run_id": "\\ud800"'),
        "holds a string with an unpaired surrogate at or under payload.provenance.run_id",
    ),
    "not UTF-8": (lambda: b'{"format": "\xff\xfe"}', "is not UTF-8 text (byte 12 is invalid)"),
    "byte order mark": (lambda: b"\xef\xbb\xbf{}", "starts with a byte order mark"),
    "empty file": (lambda: b"", "is empty"),
    "only whitespace": (lambda: b" \n\t", "is empty"),
    "not JSON": (lambda: b"{not json", "is not valid JSON (line 1, column 2)"),
    "a JSON array": (lambda: b"[]", "is not a cascade table (expected a JSON object)"),
    "another format": (lambda: b'{"format": "x"}', "is not a cascade table: its format is 'x'"),
    "tampered, not rehashed": (
        lambda: json.dumps(base()).replace('"n_prompts": 12', '"n_prompts": 13').encode(),
        "fails its integrity check",
    ),
}


def table_mutants_metric() -> str:
    return base()["payload"]["provenance"]["quality_metric"]


def one_sentence(e: BaseException) -> str:
    msg = str(e)
    assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_table_files_get_one_sentence(name, tmp_path):
    make, expected = HOSTILE[name]
    path = tmp_path / "table.json"
    path.write_bytes(make())
    for load in (load_table, validate_file):
        with pytest.raises(HadisError) as e:
            load(path)
        assert type(e.value) is HadisError
        msg = one_sentence(e.value)
        assert expected in msg and str(path) in msg, msg
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        return  # not JSON that Python's parser could hand to the in-memory paths
    for check in (
        lambda: validate_document(doc, "t.json"),
        lambda: resolve(doc, qps=1, slo_s=10, gpus=4),
    ):
        with pytest.raises(HadisError) as e:
            check()
        one_sentence(e.value)


_CLI_DRIVER = """
import contextlib, io, json, sys
from hadis_profile.cli import main
out = {}
for name, path in json.loads(sys.argv[1]).items():
    for verb in (["validate", path], ["show", path], ["resolve", path, "--qps", "1", "--slo", "9",
                                                       "--gpus", "4"]):
        err = io.StringIO()
        sys.argv = ["hadis-profile", *verb]
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                main()
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # a traceback would reach the user
            code = "uncaught " + type(e).__name__
        out[name + " / " + verb[0]] = [code, err.getvalue()]
print(json.dumps(out))
"""


def test_hostile_table_files_through_the_cli(tmp_path):
    """``validate``, ``show`` and ``resolve`` print one line on every hostile file: exit 1 for a
    table that fails its checks, 2 for a path that is no file at all (docs/limits.md)."""
    import subprocess
    import sys

    paths = {}
    for i, (name, (make, _)) in enumerate(HOSTILE.items()):
        paths[name] = str(tmp_path / f"t{i}.json")
        Path(paths[name]).write_bytes(make())
    paths["a folder"] = str(tmp_path)
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_DRIVER, json.dumps(paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    results = json.loads(proc.stdout)
    assert len(results) == 3 * len(paths)
    for case, (code, err) in results.items():
        assert code == (2 if case.startswith("a folder") else 1), (case, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
        assert "Traceback" not in err, case


def test_unreadable_paths_get_one_sentence(tmp_path, monkeypatch):
    cases = [
        (tmp_path, "is a folder, not a file"),
        (tmp_path / "absent.json", "does not exist"),
    ]
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    monkeypatch.setattr(table_mod, "MAX_TABLE_BYTES", 1000)
    cases.append((big, "is larger than the limit of 1,000 bytes"))
    if Path("/dev/zero").exists():
        cases.append((Path("/dev/zero"), "is larger than the limit of 1,000 bytes"))  # endless
    for path, expected in cases:
        for load in (load_table, validate_file):
            with pytest.raises(HadisError) as e:
                load(path)
            assert expected in one_sentence(e.value)


def test_in_memory_documents_get_the_same_limits():
    doc = base()
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    hostile = [
        (lambda d: d["payload"]["provenance"].update(seeds={"x": deep}), "more than 64 levels"),
        (lambda d: d["payload"]["provenance"].update(seeds={"x": 10**40}), "more than 30 digits"),
        (lambda d: d["payload"]["provenance"].update(seeds={"x": {1, 2}}), "holds a Python set"),
        (lambda d: d["payload"]["provenance"].update(seeds={1: 2}), "JSON keys are strings"),
        (lambda d: d["payload"]["provenance"].update(seeds={"x": math.inf}), "an infinity"),
        (lambda d: d["payload"]["provenance"].update(seeds={"x": (1, 2)}), "a Python tuple"),
    ]
    for edit, expected in hostile:
        d = copy.deepcopy(doc)
        edit(d)
        for check in (CascadeTable, validate_document):
            with pytest.raises(HadisError) as e:
                check(d)
            assert expected in one_sentence(e.value)


def test_size_limits(monkeypatch):
    doc = base()
    for name, value, expected in (
        ("MAX_ROWS", 3, "rows; at most 3 are accepted"),
        ("MAX_MODELS", 2, "profiles 3 models; at most 2"),
        ("MAX_BATCH_SIZES", 2, "3 distinct batch sizes; at most 2"),
        ("MAX_SHAPE_CELLS", 10, "too large to resolve"),
    ):
        with monkeypatch.context() as m:
            m.setattr(table_schema, name, value)
            for check in (CascadeTable, validate_document):
                with pytest.raises(HadisError, match=expected):
                    check(copy.deepcopy(doc))
    CascadeTable(doc)


def test_nesting_depth_skips_strings():
    assert strict_json.nesting_depth('{"a": "[[[[{{", "b": [[1]]}') == 3
    assert strict_json.nesting_depth('["\\"[[", [] ]') == 2
    deep = "[" * (strict_json.MAX_DEPTH + 1) + "]" * (strict_json.MAX_DEPTH + 1)
    with pytest.raises(HadisError, match="65 levels deep"):
        strict_json.parse_json(deep)
    ok = "[" * strict_json.MAX_DEPTH + "]" * strict_json.MAX_DEPTH
    assert strict_json.parse_json(ok) is not None


# ------------------------------------------------------------------ properties


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutants())
def test_mutated_tables_validate_and_load_agree(mutant):
    """One field changed, hash recomputed: only HadisError, and every reader agrees."""
    doc, what = mutant
    check_mutant(doc, what)


def test_mutants_reach_both_verdicts():
    """The mutator is not vacuous: it produces accepted and refused tables."""
    import random

    from hypothesis import find

    seen = set()
    for want in (True, False):
        find(
            mutants(),
            lambda m, want=want: check_mutant(*m) == want,
            settings=settings(max_examples=500, database=None),
            random=random.Random(0),
        )
        seen.add(want)
    assert seen == {True, False}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resolve_arguments())
def test_resolve_arguments_fuzzed(kwargs):
    """Any argument values: a Plan, or a ParameterError naming one of them."""
    check_resolve_arguments(kwargs)
