"""The cluster simulator: queueing theory, per-prompt truth, policies, bad input, CLI, real data."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hadis_profile.cli import app
from hadis_profile.errors import HadisError
from hadis_profile.measurements import LatencyStats, Measurements, ModelMeasurements
from hadis_profile.pareto import compile_table
from hadis_profile.simulate import (
    POLICIES,
    SimConfig,
    Workload,
    load_trace,
    parse_rate,
    poisson_workload,
    simulate,
)
from hadis_profile.simulate.context import build_context
from hadis_profile.simulate.engine import DROPPED, SERVED, run_policy
from hadis_profile.simulate.output import FIGURE_PNG, WINDOWS_CSV, write_outputs
from hadis_profile.simulate.policies import filter_rows, make_policy
from hadis_profile.table import CascadeTable

CLIP = "clip_score:test"


# --------------------------------------------------------------------------- factories


def make_meas(
    n: int = 200,
    latencies: tuple[dict[int, float], ...] = ({1: 0.5, 4: 1.2}, {1: 2.0, 4: 5.0}),
    *,
    router: bool = True,
    confidence: bool = True,
    seed: int = 0,
) -> Measurements:
    """Models of rising cost and quality; hard prompts hurt the light model more."""
    rng = np.random.default_rng(seed)
    hard = rng.uniform(0, 1, n)
    models = {}
    for i, lat in enumerate(latencies):
        name = f"m{i}"
        models[name] = ModelMeasurements(
            name=name,
            latency={b: LatencyStats.constant(b, s) for b, s in lat.items()},
            quality={CLIP: 25 + 3 * i - (8 - 2 * i) * hard + rng.normal(0, 0.5, n)},
            confidence=(1 - hard + rng.normal(0, 0.1, n)) if confidence else None,
        )
    return Measurements(
        prompts=[f"prompt {i}" for i in range(n)],
        models=models,
        router_scores=(hard + rng.normal(0, 0.2, n)) if router else None,
        provenance={"run_id": "test"},
    )


def make_table(meas: Measurements, **kw) -> CascadeTable:
    return CascadeTable.from_document(compile_table(meas, quality_metric=CLIP, **kw))


def once_each(n: int, gap_s: float = 10.0) -> Workload:
    """Every prompt exactly once, far apart (no queueing)."""
    return Workload(np.arange(1, n + 1) * gap_s, np.arange(n, dtype=np.int64), "each prompt once")


@pytest.fixture(scope="module")
def meas() -> Measurements:
    return make_meas()


@pytest.fixture(scope="module")
def table(meas: Measurements) -> CascadeTable:
    return make_table(meas)


# --------------------------------------------------------------------------- queueing theory


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    """One GPU, batch 1, deterministic service, Poisson arrivals at utilisation 0.5."""
    service, rho = 0.02, 0.5
    mu = 1 / service
    m = make_meas(n=50, latencies=({1: service},), router=False, confidence=False)
    t = make_table(m)
    wl = poisson_workload(rho * mu, rho * mu, 6000.0, m.n_prompts, seed=1)
    cfg = SimConfig(gpus=1, slo_s=1e6, drop_factor=None)
    res = simulate(t, m, wl, ["clipper-light"], cfg)
    run = res.runs[0]
    assert (run.status == SERVED).all()
    wait = (run.finish - run.arrival - service).mean()
    expected = rho / (2 * mu * (1 - rho))
    assert wait == pytest.approx(expected, rel=0.05)


def test_tiny_load_has_no_violations(meas: Measurements, table: CascadeTable) -> None:
    wl = poisson_workload(0.02, 0.02, 3000.0, meas.n_prompts, seed=3)
    res = simulate(table, meas, wl, list(POLICIES), SimConfig(gpus=4, slo_s=12.0))
    for s in res.summaries:
        assert (s.late, s.dropped, s.violation_ratio) == (0, 0, 0.0), s.policy
        assert s.served == len(wl)


# --------------------------------------------------------------------------- per-prompt truth


def test_single_model_quality_is_exact(meas: Measurements, table: CascadeTable) -> None:
    wl = once_each(meas.n_prompts)
    res = simulate(
        table, meas, wl, ["clipper-light", "clipper-heavy"], SimConfig(gpus=2, slo_s=20.0)
    )
    light, heavy = res.summaries
    assert light.quality[CLIP] == pytest.approx(np.mean(meas.models["m0"].quality[CLIP]), 1e-12)
    assert heavy.quality[CLIP] == pytest.approx(np.mean(meas.models["m1"].quality[CLIP]), 1e-12)
    single = {r["light"]: r["quality"][CLIP] for r in table.rows if r["kind"] == "single"}
    assert light.quality[CLIP] == pytest.approx(single["m0"], 1e-12)


def test_no_router_no_discriminator_equals_single_model() -> None:
    m = make_meas(router=False, confidence=False)
    t = make_table(m)
    assert all(r["kind"] == "single" for r in t.rows)
    res = simulate(t, m, once_each(m.n_prompts), ["hadis"], SimConfig(gpus=2, slo_s=20.0))
    # at this load the best single model fits: all of it is served by m1
    assert (res.runs[0].model == 1).all()
    assert res.summaries[0].quality[CLIP] == pytest.approx(np.mean(m.models["m1"].quality[CLIP]))


def test_cascade_routes_each_prompt_by_its_measurements(
    meas: Measurements, table: CascadeTable
) -> None:
    row = next(r for r in table.rows if r["kind"] == "cascade" and r["r"] > 0 and r["d"] > 0)
    one = filter_rows(table, lambda r: r is row, "one cascade row")
    res = simulate(one, meas, once_each(meas.n_prompts), ["hadis"], SimConfig(gpus=4, slo_s=12))
    run = res.runs[0]
    assert len(run.decisions) == 1 and run.decisions[0]["row"] == 0
    s, c = meas.router_scores, meas.models["m0"].confidence
    rt, ct = row["router_threshold"], row["confidence_threshold"]
    direct = (s >= rt) if rt is not None else np.zeros(meas.n_prompts, bool)
    escalate = ~direct & ((c < ct) if ct is not None else False)
    p = run.prompt
    assert np.array_equal(run.model, np.where(direct[p] | escalate[p], 1, 0))
    assert np.array_equal(run.escalated, escalate[p])
    truth = np.where(run.model == 1, meas.models["m1"].quality[CLIP][p], 0)
    truth = np.where(run.model == 0, meas.models["m0"].quality[CLIP][p], truth)
    assert res.summaries[0].quality[CLIP] == pytest.approx(truth.mean(), 1e-12)
    # an escalated query pays both stages
    lat = run.finish - run.arrival
    assert np.allclose(lat[run.escalated], 0.5 + 2.0)


# --------------------------------------------------------------------------- mechanics


def test_deterministic_and_conserving(meas: Measurements, table: CascadeTable) -> None:
    wl = poisson_workload(0.5, 6.0, 600.0, meas.n_prompts, seed=7)
    cfg = SimConfig(gpus=6, slo_s=8.0, switch_s=1.0)
    a = simulate(table, meas, wl, list(POLICIES), cfg)
    b = simulate(
        table, meas, poisson_workload(0.5, 6.0, 600.0, meas.n_prompts, seed=7), list(POLICIES), cfg
    )
    for ra, rb, s in zip(a.runs, b.runs, a.summaries, strict=True):
        assert np.array_equal(ra.finish, rb.finish, equal_nan=True)
        assert np.array_equal(ra.model, rb.model)
        assert s.served + s.dropped == s.queries == len(wl)
        assert s.gpu_s_used == pytest.approx(ra.busy_s + ra.switches * 1.0)
    assert a.windows == b.windows
    c = poisson_workload(0.5, 6.0, 600.0, meas.n_prompts, seed=8)
    assert not np.array_equal(c.arrivals_s[:50], wl.arrivals_s[:50])


def test_overload_drops_at_twice_the_slo(meas: Measurements, table: CascadeTable) -> None:
    wl = poisson_workload(8.0, 8.0, 200.0, meas.n_prompts, seed=2)
    res = simulate(table, meas, wl, ["clipper-heavy"], SimConfig(gpus=2, slo_s=10.0))
    run, s = res.runs[0], res.summaries[0]
    assert s.dropped > 0 and s.violation_ratio > 0.5
    waited = (run.finish - run.arrival)[run.status == DROPPED]
    assert (waited >= 20.0 - 1e-9).all()
    res = simulate(
        table, meas, wl, ["clipper-heavy"], SimConfig(gpus=2, slo_s=10.0, drop_factor=None)
    )
    assert res.summaries[0].dropped == 0 and res.summaries[0].late > 0


def test_batches_use_the_profiled_latency(meas: Measurements, table: CascadeTable) -> None:
    """A burst of 4 queries on one GPU with batch cap 4 finishes as one 1.2 s batch."""
    wl = Workload(np.full(4, 1.0), np.arange(4, dtype=np.int64), "burst")
    ctx = build_context(table, meas, gpus=1, slo_s=100.0)
    run = run_policy(
        ctx, make_policy("clipper-light", ctx, mean_qps=1), wl.arrivals_s, wl.prompt_ids
    )
    # the first arrival starts a batch of one; the other three form one batch of 3 -> size 4's time
    assert sorted(np.round(run.finish - 1.0, 9)) == [0.5, 1.7, 1.7, 1.7]


def test_restricted_tables_and_policies(meas: Measurements, table: CascadeTable) -> None:
    ctx = build_context(table, meas, gpus=6, slo_s=8.0)
    disc = make_policy("disc-only", ctx, mean_qps=2).table
    router = make_policy("router-only", ctx, mean_qps=2).table
    assert all(r["r"] == 0 for r in disc.rows) and any(r["d"] > 0 for r in disc.rows)
    assert all(r["d"] == 0 for r in router.rows) and any(r["r"] > 0 for r in router.rows)
    for t in (disc, router):
        CascadeTable.from_document(t.document)  # the hash was recomputed
    ds = make_policy("diffserve", ctx, mean_qps=2, pair=("m0", "m1")).table
    assert {(r["light"], r["heavy"]) for r in ds.rows} <= {("m0", "m1"), ("m0", None), ("m1", None)}
    a = make_policy("proteus", ctx, mean_qps=2).plan(0.0, 4.0)
    assert a.gpus == 6 and (a.mode == "cascade" or abs(sum(a.weights) - 1) < 1e-12)


def test_infaas_steps_down_under_load(meas: Measurements, table: CascadeTable) -> None:
    wl = poisson_workload(0.2, 6.0, 400.0, meas.n_prompts, seed=4)
    res = simulate(table, meas, wl, ["infaas"], SimConfig(gpus=4, slo_s=8.0))
    plans = [d["plan"] for d in res.runs[0].decisions]
    assert plans[0] == "m1" and "m0" in plans


# --------------------------------------------------------------------------- bad input


def test_trace_parsing_and_bad_traces(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("arrival_time_ms,prompt_id\n1000,3\n500,7\n\n2500.5,12.0\n")
    wl = load_trace(p)
    assert wl.arrivals_s.tolist() == [0.5, 1.0, 2.5005] and wl.prompt_ids.tolist() == [7, 3, 12]
    assert wl.reordered == 1
    assert wl.mapped_prompts(10)[0].tolist() == [7, 3, 2] and wl.mapped_prompts(10)[1] == 1
    with pytest.raises(HadisError, match="out of order"):
        load_trace(p, strict_order=True)
    assert len(load_trace(p, limit=2)) == 2
    for text, match in (
        ("100,1\n200,x\n", "line 2 .*not an integer"),
        ("100,1\n200,2.5\n", "not an integer"),
        ("", "no queries"),
        ("\n\n", "no queries"),
        ("100,1,3\n", "3 field"),
        ("abc,1\n10,2\n", None),  # a header line
        ("10,1\nabc,2\n", "non-numeric arrival"),
        ("10,-1\n", "negative prompt id"),
    ):
        p.write_text(text)
        if match is None:
            assert len(load_trace(p)) == 1
            continue
        with pytest.raises(HadisError, match=f"(?i){match}"):
            load_trace(p)
    with pytest.raises(HadisError, match="does not exist"):
        load_trace(tmp_path / "missing.txt")


def test_rates() -> None:
    assert parse_rate("20") == (20.0, 20.0) and parse_rate("1:20") == (1.0, 20.0)
    for bad in ("x", "1:2:3", "-1:5", "0"):
        with pytest.raises(HadisError):
            parse_rate(bad)
    wl = poisson_workload(1, 20, 600, 100, seed=0)
    assert len(wl) == pytest.approx(6300, rel=0.05)
    early = np.count_nonzero(wl.arrivals_s < 60)
    late = np.count_nonzero(wl.arrivals_s > 540)
    assert early == pytest.approx(60 * 1.95, rel=0.3) and late == pytest.approx(60 * 19.05, rel=0.1)


def test_slo_below_every_latency_means_every_query_late(
    meas: Measurements, table: CascadeTable
) -> None:
    wl = poisson_workload(0.1, 0.1, 300.0, meas.n_prompts, seed=5)
    res = simulate(table, meas, wl, ["hadis", "proteus", "infaas"], SimConfig(gpus=4, slo_s=0.1))
    assert any("below every model's batch latency" in n for n in res.notes)
    for s in res.summaries:
        assert s.violation_ratio == 1.0 and s.dropped == 0


def test_bad_requests(meas: Measurements, table: CascadeTable) -> None:
    wl = once_each(10)
    with pytest.raises(HadisError, match=r"needs? at least 2 GPUs"):
        simulate(table, meas, wl, ["hadis"], SimConfig(gpus=1, slo_s=10.0))
    # single-model policies run on one GPU
    assert simulate(table, meas, wl, ["proteus"], SimConfig(gpus=1, slo_s=10.0)).summaries
    with pytest.raises(HadisError, match="Unknown policy"):
        simulate(table, meas, wl, ["clipper"], SimConfig(gpus=2, slo_s=10.0))
    with pytest.raises(HadisError, match="slo_s"):
        simulate(table, meas, wl, ["hadis"], SimConfig(gpus=2, slo_s=0.0))
    with pytest.raises(HadisError, match="not in the table"):
        simulate(table, meas, wl, ["diffserve"], SimConfig(gpus=2, slo_s=9.0, pair=("m0", "x")))
    with pytest.raises(HadisError, match="cheaper"):
        simulate(table, meas, wl, ["diffserve"], SimConfig(gpus=2, slo_s=9.0, pair=("m1", "m0")))
    other = make_meas(n=150)
    with pytest.raises(HadisError, match=r"150|200"):
        simulate(table, other, wl, ["hadis"], SimConfig(gpus=2, slo_s=9.0))


# --------------------------------------------------------------------------- outputs and CLI


def test_outputs_are_written(meas: Measurements, table: CascadeTable, tmp_path: Path) -> None:
    wl = poisson_workload(1, 5, 200, meas.n_prompts, seed=0)
    res = simulate(table, meas, wl, ["hadis", "clipper-light"], SimConfig(gpus=4, slo_s=8.0))
    paths = write_outputs(res, tmp_path / "out")
    names = {p.name for p in paths}
    assert {WINDOWS_CSV, FIGURE_PNG, "summary.json", "decisions.csv", "summary.csv"} == names
    assert (tmp_path / "out" / FIGURE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "out" / WINDOWS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["policy"] for r in rows} == {"hadis", "clipper-light"}
    assert sum(int(r["arrivals"]) for r in rows if r["policy"] == "hadis") == len(wl)
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [p["policy"] for p in doc["policies"]] == ["hadis", "clipper-light"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from hadis_profile.synthetic import write_synthetic_run
    from hadis_profile.table import write_table

    root = tmp_path_factory.mktemp("syn")
    store = write_synthetic_run(root / "run", n_prompts=120)
    meas = store.load_measurements()
    store.close()
    write_table(root / "table.json", compile_table(meas))
    return root / "run", root / "table.json"


def test_cli_simulate(synthetic_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, table = synthetic_run
    out = tmp_path / "sim"
    args = ["simulate", str(table), "--run", str(run), "--gpus", "8", "--slo", "30"]
    res = CliRunner().invoke(
        app, [*args, "--rate", "1:10", "--duration", "120", "-p", "hadis", "-p", "infaas",
              "--out", str(out), "--switch-s", "2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "hadis" in res.output and "infaas" in res.output and "modulo 120" in res.output
    assert (out / FIGURE_PNG).is_file() and (out / WINDOWS_CSV).is_file()
    res = CliRunner().invoke(app, [*args, "-p", "hadis"])
    assert res.exit_code != 0 and "exactly one workload" in str(res.exception)


def test_cli_bad_trace_is_one_sentence(synthetic_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, table = synthetic_run
    trace = tmp_path / "bad.txt"
    trace.write_text("100,1\n200,two\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", "simulate", str(table), "--run", str(run),
         "--gpus", "4", "--slo", "30", "--trace", str(trace)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2  # a malformed input file, like a malformed flag
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "not an integer" in proc.stderr


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def hadis_scenario(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """The HADIS reference run, its nominal table and the first 4,000 MAF queries."""
    from hadis_profile.importer import import_hadis_reference
    from hadis_profile.store import RunStore

    root = tmp_path_factory.mktemp("hadis")
    import_hadis_reference(shared_data / "hadis-reference", root / "hadis-ref")
    with RunStore.open(root / "hadis-ref") as store:
        m = store.load_measurements()
    t = CascadeTable.from_document(compile_table(m, nominal=True))
    wl = load_trace(shared_data / "traces" / "maf_1to64qps.txt", limit=4000)
    return m, t, wl


def test_hadis_reference_scenario(hadis_scenario) -> None:
    m, t, wl = hadis_scenario
    assert wl.reordered > 0  # the published trace has jittered lines; they are sorted
    res = simulate(t, m, wl, list(POLICIES), SimConfig(gpus=16, slo_s=30.0))
    s = {x.policy: x for x in res.summaries}
    fid = "fid:clean-fid-imagenet1k"
    assert res.quality_metric == fid
    assert any("batch size 1 only" in n for n in res.notes)
    for x in res.summaries:
        assert x.served + x.dropped == len(wl)
        assert x.wall_s < 10
    # the light model alone is the published single-model FID; the heavy one is better
    assert s["clipper-light"].quality[fid] == pytest.approx(29.75)
    assert (
        s["clipper-heavy"].quality[fid] < s["hadis"].quality[fid] < s["clipper-light"].quality[fid]
    )
    # the hybrid cascade beats the discriminator-only baseline on quality at no more violations
    assert s["hadis"].quality[fid] < s["diffserve"].quality[fid]
    assert s["clipper-heavy"].violation_ratio > 0.9
    assert math.isfinite(s["hadis"].p99_s)
