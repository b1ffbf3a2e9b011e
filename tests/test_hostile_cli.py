"""Hostile input through every command: one sentence and a documented exit code, never a
traceback (issue 13).

Two halves:

* a fixed list of hostile files (empty, binary, huge numbers, deep nesting, billion
  laughs, wrong types, control characters, a folder, a symlink loop) and hostile run
  stores (0 bytes, junk, another SQLite database, an old schema) run through every
  command that reads such a file;
* property-based tests (hypothesis): random command lines for ``resolve`` and
  ``simulate``.

Everything runs in this process through the real entry point (``hadis_profile.cli.main``),
a few cases end to end in a subprocess. CI runs 60 derandomized examples per property
(~6 s each on 2 cores); ``HADIS_FUZZ_EXAMPLES=500`` explores 500 random ones instead.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hostile_helpers import REPO, Outcome, cli, invoke, synthetic_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hadis_profile.errors import EXIT_ERROR, EXIT_INFEASIBLE, EXIT_OK, EXIT_USAGE
from hadis_profile.store import DB_NAME

FUZZ_EXAMPLES = int(os.environ.get("HADIS_FUZZ_EXAMPLES", "60"))
DOCUMENTED = {EXIT_OK, EXIT_ERROR, EXIT_USAGE}


def laughs(levels: int = 9) -> bytes:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("\n".join(lines) + f"\nmodels: *l{levels - 1}\n").encode()


#: name -> bytes; each is written with whatever extension the command wants.
HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "binary": bytes(range(256)) * 8,
    "bom-only": b"\xef\xbb\xbf",
    "huge-number": b"9" * 5000 + b"\n",
    "deep": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n",
    "laughs": laughs(),
    "wrong-types": b'{"payload": 5, "models": "x", "rows": [1, [2]], "prompt": 3}\n',
    "null": b"null\n",
    "long-line": b"x" * 300_000 + b"\n",
    "controls": b"\x1b[31mred\x1b[0m,[/x]\r\n[link=http://e]x\x07\n\xe2\x80\xaeevil,3\n",
    "commas": b"a,b,c\r\n1,2,3\r\n,,\r\n",
    "trace-like": b"0,1\n1e308,2\n-5,3\nnan,4\n",
}
#: paths that are not regular files
SPECIAL = ("folder", "missing", "loop")
FILE_KINDS = (*HOSTILE, *SPECIAL)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-cli")
    run, table = synthetic_files(root / "good")
    prompts = root / "good" / "prompts.txt"
    prompts.write_text("a red cat\ntwo dogs on a sofa\n")
    trace = root / "good" / "trace.csv"
    trace.write_text("0,1\n500,2\n1500,3\n")
    return {"root": root, "run": run, "table": table, "prompts": prompts, "trace": trace}


def hostile_file(env: dict[str, Path], kind: str, ext: str) -> Path:
    folder = env["root"] / "files"
    folder.mkdir(exist_ok=True)
    path = folder / f"{kind}{ext}"
    if kind == "folder":
        path.mkdir(exist_ok=True)
    elif kind == "loop":
        if not path.is_symlink():
            path.symlink_to(path.name)
    elif kind != "missing":
        path.write_bytes(HOSTILE[kind])
    return path


def hostile_store(env: dict[str, Path], kind: str) -> Path:
    """A run folder whose store is hostile."""
    from test_store import V1_DDL

    run = env["root"] / "stores" / kind
    if run.exists():
        return run
    run.mkdir(parents=True)
    db = run / DB_NAME
    if kind == "zero-bytes":
        db.write_bytes(b"")
    elif kind == "junk":
        db.write_bytes(HOSTILE["binary"] * 4)
    elif kind == "other-sqlite":
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE meta (key TEXT, value TEXT)")
            c.execute("INSERT INTO meta VALUES ('schema_version', 'banana')")
    elif kind == "future":
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            c.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    elif kind == "v1":
        with sqlite3.connect(db) as c:
            c.executescript(V1_DDL)
    elif kind == "store-is-a-folder":
        db.mkdir()
    elif kind == "no-store":
        (run / "notes.txt").write_text("not a run")
    return run


STORE_KINDS = (
    "zero-bytes",
    "junk",
    "other-sqlite",
    "future",
    "v1",
    "store-is-a-folder",
    "no-store",
)


def check(res: Outcome, allowed: set[int] = DOCUMENTED, *, data_out: bool = False) -> str:
    """The promise: no traceback, a documented code, one ``error:`` line on failure, no
    control character on the terminal (``data_out``: stdout is CSV data, kept exact)."""
    problems = []
    if res.crash or "Traceback" in res.err:
        problems.append("traceback:\n" + (res.crash or res.err)[-3000:])
    elif res.code not in allowed:
        problems.append(f"exit code {res.code}")
    elif res.code not in (EXIT_OK, EXIT_INFEASIBLE):
        lines = [line for line in res.err.strip().splitlines() if line.strip()]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"not one error line: {res.err[-1500:]!r}")
    shown = res.err if data_out else res.out + res.err
    if "\x1b" in shown or "\x07" in shown:
        problems.append("a control character reached the terminal")
    return "; ".join(problems)


def sweep(capsys, cases: list[tuple[str, list[object]]], *, data_out: bool = False) -> None:
    """Run every case, then report all that broke the promise at once."""
    broken = []
    for label, args in cases:
        problem = check(invoke(capsys, *args), data_out=data_out)
        if problem:
            broken.append(f"{label}: {problem}")
    assert not broken, "\n".join(broken)


# --------------------------------------------------------------------------- hostile files


def test_hostile_zoo_files(env, capsys):
    cases = []
    for kind in FILE_KINDS:
        f = hostile_file(env, kind, ".yaml")
        cases += [
            (f"zoo validate {kind}", ["zoo", "validate", f]),
            (f"zoo list {kind}", ["zoo", "list", f]),
            (f"run --zoo {kind}", ["run", "--zoo", f, "--prompts", env["prompts"], "--out",
                                   env["root"] / "never", "--no-weights", "--dry-run",
                                   "--no-probe"]),
        ]  # fmt: skip
    sweep(capsys, cases)
    assert not (env["root"] / "never").exists()


@pytest.mark.parametrize("ext", [".txt", ".jsonl", ".csv", ".tsv", ".parquet"])
def test_hostile_prompt_files(env, capsys, ext):
    cases = []
    for kind in FILE_KINDS:
        f = hostile_file(env, kind, ext)
        cases.append((f"prompts inspect {kind}{ext}", ["prompts", "inspect", f]))
        if ext == ".txt":
            cases.append((f"run --prompts {kind}", [
                "run", "--zoo", REPO / "model_zoo.yaml", "--model", "sd-turbo", "--prompts", f,
                "--out", env["root"] / "never", "--no-weights", "--dry-run", "--no-probe",
            ]))  # fmt: skip
    sweep(capsys, cases)


def test_hostile_prompt_files_through_the_router(env, capsys):
    pytest.importorskip("spacy")
    cases = []
    for kind in ("empty", "binary", "long-line", "controls", "deep", "folder", "missing"):
        f = hostile_file(env, kind, ".txt")
        cases.append((f"router features {kind}", ["router", "features", f]))
        cases.append((f"router score {kind}", ["router", "score", f]))
    sweep(capsys, cases, data_out=True)  # the CSV on stdout is data (cleaned on a terminal)


def test_csv_on_a_terminal_is_cleaned_and_piped_csv_is_exact(env, capsys, monkeypatch):
    pytest.importorskip("spacy")
    f = hostile_file(env, "controls", ".txt")
    piped = invoke(capsys, "router", "features", f)
    assert piped.code == 0 and "\x1b[31mred" in piped.out
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    shown = invoke(capsys, "router", "features", f)
    assert shown.code == 0 and "[31mred" in shown.out and "\x1b" not in shown.out


def test_hostile_import_inputs(env, capsys):
    out = env["root"] / "imported"
    base = ["import", "files", "--out", out, "--prompts", env["prompts"]]
    cases = []
    for kind in FILE_KINDS:
        txt, csv, yml = (hostile_file(env, kind, e) for e in (".txt", ".csv", ".yaml"))
        cases += [
            (f"--prompts {kind}", ["import", "files", "--out", out, "--prompts", txt,
                                   "--model", "a", "--model", "b"]),
            (f"--model a={kind}", [*base, "--model", f"a={txt}", "--model", "b"]),
            (f"--features {kind}", [*base, "--model", "a", "--model", "b", "--features", csv,
                                    "--weights", "1"]),
            (f"--latency-yaml {kind}", [*base, "--model", "a", "--model", "b",
                                        "--latency-yaml", yml]),
            (f"--external {kind}", [*base, "--model", "a", "--model", "b", "--external", csv]),
        ]  # fmt: skip
    broken = []
    for label, args in cases:
        res = invoke(capsys, *args)
        problem = check(res)
        if problem:
            broken.append(f"{label}: {problem}")
        if out.exists():  # a hostile input that happens to be valid: start afresh
            import shutil

            shutil.rmtree(out)
    assert not broken, "\n".join(broken)
    assert not [p.name for p in out.parent.iterdir() if ".importing-" in p.name]


def test_hostile_traces(env, capsys):
    cases = []
    for kind in FILE_KINDS:
        f = hostile_file(env, kind, ".csv")
        cases.append((f"simulate --trace {kind}", [
            "simulate", env["table"], "--run", env["run"], "--gpus", 4, "--slo", 60,
            "--trace", f, "-p", "clipper-light",
        ]))  # fmt: skip
    sweep(capsys, cases)


def test_hostile_tables(env, capsys):
    cases = []
    for kind in FILE_KINDS:
        f = hostile_file(env, kind, ".json")
        cases += [
            (f"validate {kind}", ["validate", f]),
            (f"show {kind}", ["show", f]),
            (f"resolve {kind}", ["resolve", f, "--qps", 1, "--slo", 60, "--gpus", 4]),
            (f"simulate {kind}", ["simulate", f, "--run", env["run"], "--gpus", 4, "--slo", 60,
                                  "--rate", 1, "--duration", 10]),
        ]  # fmt: skip
    sweep(capsys, cases)


def test_hostile_run_stores(env, capsys):
    cases = []
    for kind in STORE_KINDS:
        run = hostile_store(env, kind)
        before = sorted((p.name, p.stat().st_size) for p in run.iterdir() if p.is_file())
        cases += [
            (f"export {kind}", ["export", run, "--out", env["root"] / "exports" / kind]),
            (f"pareto {kind}", ["pareto", "--run", run, "--out", env["root"] / f"{kind}.json"]),
            (f"simulate --run {kind}", ["simulate", env["table"], "--run", run, "--gpus", 4,
                                        "--slo", 60, "--rate", 1, "--duration", 10]),
            (f"router fit {kind}", ["router", "fit", "--run", run, "--dry-run"]),
        ]  # fmt: skip
        sweep(capsys, cases[-4:])
        after = sorted((p.name, p.stat().st_size) for p in run.iterdir() if p.is_file())
        assert after == before, f"a read-only command changed the {kind} store"
    for kind in STORE_KINDS:  # writers: refused or upgraded, never a traceback
        run = hostile_store(env, kind)
        writers = [("migrate", ["migrate", run]), ("score", ["router", "score", "--run", run])]
        sweep(capsys, [(f"{name} {kind}", args) for name, args in writers])
    assert not (env["root"] / "exports").exists()


def test_end_to_end_examples_of_the_issue(env, tmp_path):
    """Three examples through a real process: stderr is exactly one sentence."""
    zoo = hostile_file(env, "laughs", ".yaml")
    trace = tmp_path / "t.csv"
    trace.write_text("0,1\n1e15,2\n")
    for args, code in (
        (["zoo", "validate", zoo], EXIT_USAGE),
        (["simulate", env["table"], "--run", env["run"], "--gpus", 4, "--slo", 60,
          "--trace", trace], EXIT_USAGE),
        (["import", "files", "--out", tmp_path / "r", "--prompts", env["prompts"], "--model",
          "light[/x]", "--model", "b"], EXIT_OK),
    ):  # fmt: skip
        res = cli(*args, timeout=120)
        assert not check(res) and res.code == code, (args, res.err)


# --------------------------------------------------------------------------- property-based

NUMBERS = st.sampled_from(
    ["0", "1", "-1", "2.5", "60", "nan", "inf", "-inf", "1e308", "1e-308", "1e12", "-0", "",
     " ", "1e999", "9" * 30, "0x10", "1_000", "3/4", "NaN", "+5", "1e-6", "0.01", "4"]
)  # fmt: skip
ANY_TEXT = st.text(max_size=12)  # every code point: markup, control characters, surrogates
VALUES = st.one_of(
    NUMBERS,
    NUMBERS,
    ANY_TEXT,
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    # CI: the same examples on every run; HADIS_FUZZ_EXAMPLES=N explores N random ones
    derandomize="HADIS_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def flag_lists(flags: list[str], extra: st.SearchStrategy[str] | None = None):
    """0-6 (flag, value) pairs, flags from ``flags`` (or an unknown one)."""
    names = st.sampled_from([*flags, "--no-such-flag"])
    pair = st.tuples(names, extra if extra is not None else VALUES)
    return st.lists(pair, max_size=6).map(lambda ps: [x for p in ps for x in p])


RESOLVE_FLAGS = ["--qps", "--slo", "--gpus", "--reserved-gpus", "--headroom", "--batch-sizes",
                 "--queue-delay", "--overhead"]  # fmt: skip


@FUZZ
@given(args=flag_lists(RESOLVE_FLAGS), base=st.booleans(), as_json=st.booleans())
def test_random_resolve_command_lines(env, capsys, args, base, as_json):
    head = ["resolve", env["table"]]
    if base:  # a well-formed request the random flags then override or break
        head += ["--qps", "1", "--slo", "60", "--gpus", "4"]
    res = invoke(capsys, *head, *args, *(["--json"] if as_json else []))
    problem = check(res, DOCUMENTED | {EXIT_INFEASIBLE})
    assert not problem, (args, problem)


SIM_VALUES = {
    "--rate": st.sampled_from(["0.5", "2", "1:3", "1e12", "nan", "-1", "0", "1e308:1", "x", ""]),
    "--duration": st.sampled_from(["1", "30", "1e300", "nan", "-5", "0", "1e-300", "inf"]),
    "--gpus": st.sampled_from(["1", "2", "4", "0", "-1", "100000", "1e3", "x"]),
    "--policy": st.sampled_from(["hadis", "clipper-light", "infaas", "diffserve", "bogus", ""]),
    "--dispatch": st.sampled_from(["shared", "random", "x"]),
    "--demand": st.sampled_from(["arrivals", "in-flight", "x"]),
    "--batch-time": st.sampled_from(["ceil", "hadis-worker", "x"]),
    "--latency-stat": st.sampled_from(["p99", "mean", "p42"]),
    "--spare": st.sampled_from(["spread", "idle", "x"]),
    "--pair": ANY_TEXT,
    "--scenario": st.sampled_from(["bogus", ""]),
}
SIM_NUMERIC = ["--slo", "--replan", "--switch-s", "--drop-factor", "--admission", "--headroom",
               "--tick", "--window", "--ewma-alpha", "--batch-overhead", "--planner-clock",
               "--time-scale", "--limit", "--seed"]  # fmt: skip


@st.composite
def simulate_lines(draw):
    pairs = []
    for _ in range(draw(st.integers(0, 6))):
        flag = draw(st.sampled_from([*SIM_VALUES, *SIM_NUMERIC, "--no-such-flag"]))
        value = draw(SIM_VALUES.get(flag, VALUES))
        pairs += [flag, value]
    return pairs


@FUZZ
@given(args=simulate_lines(), workload=st.sampled_from(["rate", "trace", "both", "none"]))
def test_random_simulate_command_lines(env, capsys, args, workload):
    head = ["simulate", env["table"], "--run", env["run"], "--gpus", "4", "--slo", "60"]
    head += {"rate": ["--rate", "1", "--duration", "20"], "trace": ["--trace", env["trace"]],
             "both": ["--rate", "1", "--trace", env["trace"]], "none": []}[workload]  # fmt: skip
    res = invoke(capsys, *head, *args)
    problem = check(res)
    assert not problem, (args, problem)
