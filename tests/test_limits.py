"""Every input that sizes work or memory is bounded (hadis_profile.limits), refused in one
sentence with exit code 2 before the work starts; the examples of issue 13 first."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hostile_helpers import REPO, assert_refused, invoke, synthetic_files

from hadis_profile import limits
from hadis_profile.errors import HadisError, InputError, ParameterError
from hadis_profile.yamlio import load_yaml


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    return synthetic_files(tmp_path_factory.mktemp("limits"))


def sim(synthetic, *extra: object) -> list[object]:
    run, table = synthetic
    return ["simulate", table, "--run", run, "--gpus", 4, "--slo", 60, *extra]


# --------------------------------------------------------------------------- YAML


def laughs(levels: int, fan: int = 9) -> str:
    """A billion-laughs document: each level is ``fan`` aliases of the one below."""
    lines = [f"l0: &l0 [{', '.join(['x'] * fan)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]")
    return "\n".join(lines) + "\n"


def expanded_nodes(obj) -> int:
    """Brute force: every node of the fully expanded document (mapping keys count)."""
    if isinstance(obj, dict):
        return 1 + sum(expanded_nodes(k) + expanded_nodes(v) for k, v in obj.items())
    if isinstance(obj, list):
        return 1 + sum(expanded_nodes(v) for v in obj)
    return 1


def test_a_600_byte_billion_laughs_zoo_is_refused_at_once(tmp_path, capsys):
    text = laughs(9) + "models: *l8\n"  # 9^9 = 387 million strings once expanded
    assert len(text) < 700
    zoo = tmp_path / "laughs.yaml"
    zoo.write_text(text)
    t0 = time.perf_counter()
    res = invoke(capsys, "zoo", "validate", zoo)
    assert time.perf_counter() - t0 < 5  # refused from the event stream, nothing built
    assert_refused(res, 2, str(zoo), "more than 100,000 values once its aliases are expanded")


@pytest.mark.parametrize("pad,over", [(94, False), (95, True)])
def test_the_alias_bound_counts_exactly_the_expanded_nodes(pad, over):
    """Exactly at the limit loads, one node more is refused; the count is the brute force's."""
    text = (
        f"a: &a [{', '.join(['0'] * 99)}]\nb: [{', '.join(['*a'] * 998)}]\n"
        f"c: [{', '.join(['0'] * pad)}]\n"
    )
    n = expanded_nodes(yaml.safe_load(text))
    assert n == limits.MAX_YAML_NODES + over
    if over:
        with pytest.raises(InputError, match="more than 100,000 values"):
            load_yaml(text, "doc")
    else:
        assert load_yaml(text, "doc") == yaml.safe_load(text)


def test_deep_and_recursive_yaml_are_refused_without_recursion(tmp_path):
    with pytest.raises(InputError, match="more than 32 levels deep"):
        load_yaml("[" * 200_000, "deep.yaml")  # PyYAML's composer would hit RecursionError
    assert load_yaml("[" * 32 + "]" * 32, "ok") is not None
    with pytest.raises(InputError, match=r"alias \*a inside its own anchor"):
        load_yaml("a: &a [1, *a]\n", "self.yaml")
    with pytest.raises(InputError, match="duplicate key 'a'"):
        load_yaml("a: 1\na: 2\n", "dup.yaml")
    with pytest.raises(InputError, match="a mapping key is a list"):
        load_yaml("? [a, b]\n: 1\n", "key.yaml")
    for bad in ("a: " + "1" * 5000, "a: 2001-13-45"):  # PyYAML raises plain ValueError
        with pytest.raises(InputError, match="holds a value that cannot be read"):
            load_yaml(bad, "v.yaml")


def test_a_zoo_using_anchors_and_merge_keys_still_loads(tmp_path):
    from hadis_profile.zoo import load_zoo

    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(
        "models:\n"
        "  - &m1 {name: a, source: org/m, steps: 4, guidance_scale: 0.0, height: 512, width: 512}\n"
        "  - {<<: *m1, name: b, steps: 8}\n"
    )
    assert [m.steps for m in load_zoo(zoo)] == [4, 8]


def test_yaml_file_size_is_bounded(tmp_path, monkeypatch):
    from hadis_profile import yamlio

    monkeypatch.setattr(yamlio, "MAX_YAML_BYTES", 64)
    path = tmp_path / "big.yaml"
    path.write_text("models: []\n" + "# padding\n" * 20)
    with pytest.raises(InputError, match=r"big.yaml is 0.0 MiB, more than the limit"):
        yamlio.read_yaml_file(path, "zoo file")


# --------------------------------------------------------------------------- prompts


def test_prompt_files_are_bounded_in_size_count_and_length(tmp_path, monkeypatch):
    from hadis_profile import prompts as P

    long = tmp_path / "long.txt"
    long.write_text("short\n" + "x" * (limits.MAX_PROMPT_CHARS + 1) + "\n")
    with pytest.raises(InputError, match="prompt of 10,001 characters \\(prompt 2\\)"):
        P.load_prompts(long)
    ok = tmp_path / "ok.txt"
    ok.write_text("x" * limits.MAX_PROMPT_CHARS + "\n")
    assert len(P.load_prompts(ok)[0]) == limits.MAX_PROMPT_CHARS

    monkeypatch.setattr(P, "MAX_PROMPTS", 3)
    many = tmp_path / "many.txt"
    many.write_text("a\nb\nc\nd\n")
    with pytest.raises(InputError, match="4 records, more than the limit of 3"):
        P.load_prompts(many)
    monkeypatch.setattr(P, "MAX_PROMPT_FILE_BYTES", 4)
    with pytest.raises(InputError, match=r"many.txt is 0.0 MiB, more than the limit"):
        P.load_prompts(many)


def test_hostile_jsonl_and_csv_prompt_files_are_one_sentence(tmp_path):
    from hadis_profile.prompts import load_prompts

    cases = {
        "digits.jsonl": '{"prompt": ' + "9" * 5000 + "}\n",
        "deep.jsonl": "[" * 100_000 + "]" * 100_000 + "\n",
        "field.csv": 'prompt\n"' + "x" * 200_000 + '"\n',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError) as e:
            load_prompts(path)
        assert name in str(e.value) and "\n" not in str(e.value)


def test_prompt_limit_and_sample_are_bounded():
    from hadis_profile.prompts import load_prompts

    with pytest.raises(ParameterError, match="limit is 10,000,000, more than the limit"):
        load_prompts(REPO / "prompts" / "smoke.txt", limit=10_000_000)


# --------------------------------------------------------------------------- traces and simulate


def test_a_two_line_trace_reaching_1e15_ms_is_refused_before_simulating(
    synthetic, tmp_path, capsys
):
    trace = tmp_path / "trace.csv"
    trace.write_text("0,1\n1e15,2\n")
    t0 = time.perf_counter()
    res = invoke(capsys, *sim(synthetic, "--trace", trace))
    assert time.perf_counter() - t0 < 30
    assert_refused(res, 2, "spans 1e+12 s", "1e+12 controller ticks", "--tick")


def test_a_31_digit_prompt_id_is_refused_and_the_largest_id_replays(synthetic, tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_text("0,1\n5," + "1" * 31 + "\n")
    res = invoke(capsys, *sim(synthetic, "--trace", trace))
    assert_refused(res, 2, "Line 2 of the trace", "31 digits")
    trace.write_text(f"0,1\n5,{limits.MAX_PROMPT_ID + 1}\n")
    assert_refused(invoke(capsys, *sim(synthetic, "--trace", trace)), 2, "ids go up to")
    trace.write_text(f"0,1\n5,{limits.MAX_PROMPT_ID}\n")
    res = invoke(capsys, *sim(synthetic, "--trace", trace, "-p", "clipper-light"))
    assert res.code == 0 and "1 of 2 ids were >= 40" in res.out, res.err


def test_rate_times_duration_is_bounded(synthetic, capsys):
    res = invoke(capsys, *sim(synthetic, "--rate", "1e12", "--duration", 1))
    assert_refused(res, 2, "1,000,000,000,000 queries", "limit of 5,000,000", "--duration")
    res = invoke(capsys, *sim(synthetic, "--rate", "1e308:1e308"))
    assert_refused(res, 2, "--duration")  # inf queries: still one sentence


def test_window_and_tick_counts_are_bounded(synthetic, capsys):
    res = invoke(capsys, *sim(synthetic, "--rate", 1, "--duration", 100, "--window", "1e-6"))
    assert_refused(res, 2, "windows, more than the limit of 100,000", "--window")
    res = invoke(capsys, *sim(synthetic, "--rate", 1, "--duration", 100, "--tick", "1e-6"))
    assert_refused(res, 2, "controller ticks", "--tick")


def test_trace_query_count_is_bounded(tmp_path, monkeypatch):
    from hadis_profile.simulate import workload as W

    monkeypatch.setattr(W, "MAX_QUERIES", 3)
    trace = tmp_path / "t.csv"
    trace.write_text("1,0\n2,0\n3,0\n4,0\n")
    with pytest.raises(InputError, match="more than 3 queries"):
        W.load_trace(trace)
    assert len(W.load_trace(trace, limit=3)) == 3  # a limit replays part of it


def test_a_cluster_that_never_drains_stops_at_the_tick_limit(synthetic, monkeypatch):
    """Two queries at t=0 on one GPU, tick 10 us, no drops: the span check passes (span 0)
    but draining takes >10^6 ticks; the engine stops with a sentence instead of looping."""
    from hadis_profile.simulate import engine
    from hadis_profile.simulate.run import SimConfig, simulate
    from hadis_profile.simulate.workload import Workload
    from hadis_profile.store import RunStore
    from hadis_profile.table import load_table

    monkeypatch.setattr(engine, "MAX_TICKS", 10_000)
    with RunStore.open(synthetic[0], readonly=True) as store:
        meas = store.load_measurements()
    table = load_table(synthetic[1])
    wl = Workload(np.zeros(2), np.zeros(2, dtype=np.int64), "two at once")
    cfg = SimConfig(gpus=1, slo_s=60, tick_s=1e-5, drop_factor=None)
    with pytest.raises(HadisError, match="reached 10,000 controller ticks"):
        simulate(table, meas, wl, ["clipper-heavy"], cfg)


def test_simulated_gpus_and_seed_are_checked_as_parameters(synthetic, capsys):
    res = invoke(
        capsys, "simulate", synthetic[1], "--run", synthetic[0], "--gpus", 10**6, "--slo", 60,
        "--rate", 1, "--duration", 10,
    )  # fmt: skip
    assert_refused(res, 2, "--gpus is 1,000,000, more than the limit of 10,000 GPUs")
    res = invoke(capsys, *sim(synthetic, "--rate", 1, "--duration", 10, "--seed", -1))
    assert_refused(res, 2, "Invalid value for '--seed'", "greater than or equal to 0")


# --------------------------------------------------------------------------- run, pareto, router


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--time-budget", "nan"], "--time-budget must be a positive number"),
        (["--time-budget", "-5"], "--time-budget must be a positive number"),
        (["--batch-sizes", "1,100000"], "--batch-sizes is 100,000, more than the limit"),
        (["-k", "100000"], "--images-per-prompt is 100,000, more than the limit of 1,000"),
        (["--reps", "10000000"], "--reps is 10,000,000, more than the limit"),
        (["--gen-batch", "5000"], "--gen-batch is 5,000, more than the limit of 1,024"),
    ],
)
def test_run_refuses_unbounded_settings_before_creating_the_run_folder(
    tmp_path, capsys, flags, fragment
):
    out = tmp_path / "outputs" / "run"
    res = invoke(
        capsys, "run", "--zoo", REPO / "model_zoo.yaml", "--model", "sd-turbo",
        "--prompts", REPO / "prompts" / "smoke.txt", "--out", out, "--no-weights", *flags,
    )  # fmt: skip
    assert_refused(res, 2, fragment)
    assert not out.exists() and not out.parent.exists()


def test_pareto_grid_is_bounded(synthetic, tmp_path, capsys):
    res = invoke(capsys, "pareto", "--run", synthetic[0], "--out", tmp_path / "t.json",
                 "--grid", 100_000)  # fmt: skip
    assert_refused(res, 2, "--grid is 100,000, more than the limit of 1,000 steps per axis")
    assert not (tmp_path / "t.json").exists()


def test_router_fit_random_seeds_are_bounded(synthetic, capsys):
    res = invoke(capsys, "router", "fit", "--run", synthetic[0], "--dry-run",
                 "--random-seeds", 10**9)  # fmt: skip
    assert_refused(res, 2, "--random-seeds is 1,000,000,000, more than the limit of 100,000")


# --------------------------------------------------------------------------- the documentation


def test_docs_limits_lists_every_limit_with_its_value():
    """docs/limits.md is the user's copy of hadis_profile.limits: it must not drift."""
    doc = (REPO / "docs" / "limits.md").read_text()
    constants = {k: v for k, v in vars(limits).items() if k.startswith("MAX_")}
    assert len(constants) >= 15
    for name, value in constants.items():
        row = next((line for line in doc.splitlines() if f"`{name}`" in line), None)
        assert row is not None, f"docs/limits.md does not list {name}"
        shown = re.sub(r"[,_ ]", "", row)
        if value % limits.MIB == 0 and value >= limits.MIB:
            assert f"{value // limits.MIB}MiB" in shown, (name, row)
        else:
            assert str(value) in shown, (name, row)


def test_reading_an_endless_file_stops_at_the_limit():
    """A size check by stat() alone passes /dev/zero (size 0); the read itself is bounded."""
    from hadis_profile.fileio import read_bytes

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(InputError, match="larger than the limit"):
        read_bytes("/dev/zero", "the trace file", 1 << 20)
    assert read_bytes(REPO / "prompts" / "smoke.txt", "x", 1 << 20).startswith(b"a")
