"""HADIS's end-to-end experiment (E1): its latency model, time scale, worker rules,
controller telemetry and the authors' six systems, each against hand-computed cases."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hadis_profile.cli import app
from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.importer import batch_latencies
from hadis_profile.measurements import (
    ExternalConfig,
    LatencyStats,
    Measurements,
    ModelMeasurements,
)
from hadis_profile.pareto import compile_table
from hadis_profile.simulate import AUTHORS_POLICIES, SimConfig, Workload, simulate
from hadis_profile.simulate.accounting import MixCurves, authors_accounting
from hadis_profile.simulate.authors import make_authors_policy, planner_latency, worker_cut
from hadis_profile.simulate.context import Assignment, build_context
from hadis_profile.simulate.engine import DROPPED, SERVED, PolicyRun, run_policy
from hadis_profile.simulate.output import write_scenario
from hadis_profile.simulate.policies import Policy
from hadis_profile.simulate.scenarios import e1_config, hadis_e1
from hadis_profile.simulate.testbed import Telemetry, batch_time_row
from hadis_profile.table import CascadeTable

FID = "fid:clean-fid-imagenet1k"
E1_BASE = (0.5, 1.3, 13.0, 27.0)  # the paper's per-image L40S latencies
CLOCK = 0.1  # E1's testbed clock relative to paper units


# --------------------------------------------------------------------------- factories


def e1_meas(n: int = 200, seed: int = 0, spec: str = "linear:0.9") -> Measurements:
    """Four models with E1's latencies; FID per pair (l, l+1) = a - k * t, t = r + (1 - r) d."""
    rng = np.random.default_rng(seed)
    models = {}
    for i, base in enumerate(E1_BASE):
        lat = batch_latencies(base, spec)
        models[f"m{i}"] = ModelMeasurements(
            name=f"m{i}",
            latency={b: LatencyStats.constant(b, s) for b, s in lat.items()},
            confidence=rng.uniform(0, 1, n),
        )
    grid = [k / 10 for k in range(11)]
    external = [
        ExternalConfig(f"m{lo}", f"m{lo + 1}", r, d, {FID: round(a - k * (r + (1 - r) * d), 3)})
        for lo, (a, k) in enumerate(((30.0, 4.0), (26.0, 5.0), (21.0, 2.0)))
        for r in grid
        for d in grid
    ]
    return Measurements(
        prompts=[f"p{i}" for i in range(n)],
        models=models,
        router_scores=rng.normal(0, 1, n),
        external=external,
        provenance={"run_id": "e1-test"},
    )


@pytest.fixture(scope="module")
def e1() -> tuple[Measurements, CascadeTable]:
    m = e1_meas()
    doc = compile_table(m, quality_metric=FID, nominal=True, pairs="adjacent", per_pair=True)
    return m, CascadeTable.from_document(doc)


def e1_ctx(e1, **kw):
    m, t = e1
    return build_context(t, m, gpus=kw.pop("gpus", 16), slo_s=kw.pop("slo_s", 60.0), **kw)


def one_model(latency: dict[int, float], n: int = 20) -> tuple[Measurements, CascadeTable]:
    m = Measurements(
        prompts=[f"p{i}" for i in range(n)],
        models={
            "m0": ModelMeasurements(
                name="m0",
                latency={b: LatencyStats.constant(b, s) for b, s in latency.items()},
                quality={"clip_score:test": np.full(n, 30.0)},
            )
        },
        provenance={"run_id": "one"},
    )
    return m, CascadeTable.from_document(compile_table(m, quality_metric="clip_score:test"))


class Fixed(Policy):
    """Every worker on model 0 with a fixed batch cap; records what the controller saw."""

    def __init__(self, ctx, cap: int, admission_factor: float | None = None) -> None:
        self.ctx, self.cap, self.name = ctx, cap, "fixed"
        self.admission_factor = admission_factor
        self.seen: list[tuple[float, float, Telemetry]] = []

    def plan(self, t, qps, tel=None):
        self.seen.append((t, qps, dataclasses.replace(tel) if tel else None))
        return Assignment(
            policy=self.name,
            workers={0: self.ctx.gpus},
            batch={0: self.cap},
            light=0,
            qkey=self.ctx.single_qkey(0),
        )


def run_fixed(latency, arrivals, *, gpus=1, cap=1, slo=10.0, own=None, **kw):
    m, t = one_model(latency)
    ctx = build_context(t, m, gpus=gpus, slo_s=slo)
    pol = Fixed(ctx, cap, own)
    arr = np.asarray(arrivals, dtype=np.float64)
    run = run_policy(ctx, pol, arr, np.zeros(len(arr), dtype=np.int64), **kw)
    return run, pol


def ewma_closed_form(x: list[float], alpha: float) -> float:
    """pandas ewm(adjust=False): y_n = (1-a)^n x_0 + sum_i a (1-a)^(n-i) x_i."""
    n = len(x) - 1
    return (1 - alpha) ** n * x[0] + sum(
        alpha * (1 - alpha) ** (n - i) * x[i] for i in range(1, n + 1)
    )


# --------------------------------------------------------------------------- latency model


def test_batch_latency_models_hand_computed() -> None:
    lin = batch_latencies(27.0, "linear:0.9")
    assert lin == pytest.approx({1: 27, 2: 48.6, 4: 97.2, 8: 194.4, 16: 388.8, 32: 777.6})
    sup = batch_latencies(27.0, "scale:2=2.21,4=4.47")
    per_image = 27 * 4.47 / 4  # sizes past the last measured one keep its per-image cost
    assert sup == pytest.approx(
        {1: 27, 2: 59.67, 4: 120.69, 8: 8 * per_image, 16: 16 * per_image, 32: 32 * per_image}
    )
    assert batch_latencies(0.5, "linear:1", (1, 3)) == pytest.approx({1: 0.5, 3: 1.5})


@pytest.mark.parametrize(
    "spec", ["linear:0", "linear:-1", "linear:x", "cubic:2", "scale:", "scale:2=x", "scale:8=9"]
)
def test_bad_batch_latency_is_refused_naming_the_parameter(spec: str) -> None:
    with pytest.raises(ParameterError) as e:
        batch_latencies(1.0, spec)
    assert e.value.param == "batch_latency" and "batch_latency" in str(e.value)
    assert e.value.for_flag("--batch-latency").startswith("--batch-latency")


def test_hadis_import_records_the_batch_model(shared_data, tmp_path) -> None:
    from hadis_profile.importer import import_hadis_reference
    from hadis_profile.store import RunStore

    import_hadis_reference(
        shared_data / "hadis-reference", tmp_path / "run", batch_latency="linear:0.9"
    )
    with RunStore.open(tmp_path / "run") as store:
        m = store.load_measurements()
    large = m.models["sd3.5-large"].latency
    assert sorted(large) == [1, 2, 4, 8, 16, 32]
    assert large[2].p99_s == pytest.approx(48.6) and large[32].mean_s == pytest.approx(777.6)
    assert m.models["sdxl-lightning"].latency[1].p99_s == pytest.approx(0.5)
    assert m.provenance["batch_latency"] == "linear:0.9"
    assert m.provenance["batch_sizes"] == [1, 2, 4, 8, 16, 32]


def test_hadis_worker_batch_times() -> None:
    """worker/model.py: 3, 5, 6, 7 interpolated; any other count costs batch 4's time."""
    pts = {1: 1.0, 2: 1.8, 4: 3.6, 8: 7.2, 16: 14.4, 32: 28.8}
    row = batch_time_row(pts, "hadis-worker")
    assert row[1:9] == pytest.approx([1.0, 1.8, 2.7, 3.6, 4.5, 5.4, 6.3, 7.2])
    assert row[9] == row[15] == row[17] == row[31] == 3.6
    assert (row[16], row[32]) == (14.4, 28.8)
    ceil = batch_time_row(pts, "ceil")
    assert (ceil[3], ceil[9], ceil[17]) == (3.6, 14.4, 28.8)
    with pytest.raises(HadisError, match="needs batch size 3 profiled"):
        batch_time_row({1: 1.0, 2: 1.8, 8: 7.2}, "hadis-worker")


def test_discriminator_overhead_is_added_to_every_batch() -> None:
    run, _ = run_fixed({1: 4.0}, [0, 0.5, 1, 1.5, 2], batch_overhead_s=0.1)
    assert run.finish.tolist() == pytest.approx([4.1, 8.2, 12.3, 16.4, 20.5])


# --------------------------------------------------------------------------- time scale


def test_time_scale_multiplies_arrivals() -> None:
    wl = Workload(np.array([0.5, 1.0, 34.7]), np.arange(3, dtype=np.int64), "trace")
    paper = wl.time_scaled(10)
    assert paper.arrivals_s.tolist() == pytest.approx([5.0, 10.0, 347.0])
    assert paper.prompt_ids.tolist() == [0, 1, 2] and paper.time_scale == 10
    assert paper.mean_qps == pytest.approx(wl.mean_qps / 10) and "x10" in paper.source
    assert wl.time_scaled(1) is wl
    for bad in (0, -2, math.inf, True):
        with pytest.raises(ParameterError, match="time_scale"):
            wl.time_scaled(bad)


def test_e1_in_compressed_and_paper_units_agree(e1) -> None:
    """The testbed runs 10x compressed; replayed in paper units nothing may change.

    Static and single-stage systems agree to the float; the cascades agree in total
    (a completion landing exactly on a controller tick may be counted either side).
    """
    m, t = e1
    mc = dataclasses.replace(
        m,
        models={
            k: dataclasses.replace(
                v,
                latency={b: LatencyStats.constant(b, p.p99_s * 0.1) for b, p in v.latency.items()},
            )
            for k, v in m.models.items()
        },
    )
    tc = CascadeTable.from_document(
        compile_table(mc, quality_metric=FID, nominal=True, pairs="adjacent", per_pair=True)
    )
    rng = np.random.default_rng(3)
    compressed = Workload(np.sort(rng.uniform(0, 300, 6000)), rng.integers(0, 200, 6000), "ramp")
    paper = SimConfig(
        gpus=16, slo_s=60, tick_s=10, demand="in-flight", admission=1.5, batch_overhead_s=0.1,
        batch_time="hadis-worker", dispatch="random", planner_clock=0.1,
    )  # fmt: skip
    fast = dataclasses.replace(
        paper, slo_s=6, replan_s=5, tick_s=1, batch_overhead_s=0.01, planner_clock=1.0
    )
    a = simulate(t, m, compressed.time_scaled(10), list(AUTHORS_POLICIES), paper)
    c = simulate(tc, mc, compressed, list(AUTHORS_POLICIES), fast)
    for ra, rc, sa, sc in zip(a.runs, c.runs, a.summaries, c.summaries, strict=True):
        if ra.policy in ("diffserve-fixed", "hadis-milp"):
            assert sa.violation_ratio == pytest.approx(sc.violation_ratio, abs=0.01), ra.policy
            assert sa.quality[FID] == pytest.approx(sc.quality[FID], abs=0.25), ra.policy
            continue
        assert np.array_equal(ra.status, rc.status), ra.policy
        assert np.allclose(ra.finish / 10, rc.finish, atol=1e-9), ra.policy


# --------------------------------------------------------------------------- worker rules


def test_admission_drops_what_would_finish_past_one_and_a_half_slo() -> None:
    """One GPU, 4 s per query, SLO 10: the fifth query would finish 18 s after arriving."""
    arrivals = [0, 0.5, 1, 1.5, 2]
    run, _ = run_fixed({1: 4.0}, arrivals, admission=1.5)
    assert run.status.tolist() == [SERVED] * 4 + [DROPPED]
    assert run.finish.tolist() == pytest.approx([4, 8, 12, 16, 16])
    # no admission: served late at 20 s (18 s after arriving, under the 2x SLO drop)
    run, _ = run_fixed({1: 4.0}, arrivals)
    assert (run.status == SERVED).all() and run.finish[-1] == pytest.approx(20)
    # Clipper-Heavy's workers admit at 1.0x SLO: at 8 s the next two cannot make 10 s
    run, _ = run_fixed({1: 4.0}, arrivals, own=1.0, admission=1.5)
    assert run.status.tolist() == [SERVED, SERVED, DROPPED, DROPPED, SERVED]
    assert run.finish.tolist() == pytest.approx([4, 8, 8, 8, 12])


def test_admission_drops_count_towards_the_batch() -> None:
    """worker/model.py pops batch_size queries, dropped ones included (SLO 4: admit 6 s)."""
    lat, arrivals = {1: 4.0, 2: 5.0}, [0, 0.5, 3.9, 3.95]
    run, _ = run_fixed(lat, arrivals, cap=2, slo=4.0, admission=1.5)
    # at 4 s: q1 (3.5 + 5 > 6) is dropped and uses a pop; q2 (0.1 + 5) alone, batch-1 time
    assert run.status.tolist() == [SERVED, DROPPED, SERVED, DROPPED]
    assert run.finish.tolist() == pytest.approx([4, 4, 8, 8])
    run, _ = run_fixed(lat, arrivals, cap=2, slo=4.0)
    assert run.finish.tolist() == pytest.approx([4, 9, 9, 13])


def test_random_dispatch_gives_each_worker_its_own_queue() -> None:
    """12 queries at once on 2 GPUs: shared, they finish in pairs; random, by the draws."""
    arrivals = [0.0] * 12
    shared, _ = run_fixed({1: 1.0}, arrivals, gpus=2, slo=100)
    assert sorted(shared.finish.tolist()) == [k for k in range(1, 7) for _ in range(2)]
    rand, _ = run_fixed({1: 1.0}, arrivals, gpus=2, slo=100, dispatch="random", seed=5)
    draws = np.random.default_rng(5).random((12, 2))[:, 0]
    expected, served = [], [0, 0]
    for u in draws:  # query i goes to worker int(u * 2), FIFO behind that worker's earlier ones
        w = int(u * 2)
        served[w] += 1
        expected.append(served[w])
    assert rand.finish.tolist() == expected and max(served) > 6


def test_in_flight_demand_counts_queries_in_the_system() -> None:
    """controller.computeSystemEWMA: an EWMA (half-life 3 ticks) of the queries in flight."""
    run, pol = run_fixed({1: 2.5}, [0.2, 0.4, 0.6], slo=100, demand="in-flight", replan_s=7)
    # in flight at ticks 1..7: q0 leaves at 2.7, q1 at 5.2, q2 at 7.7
    samples = [3, 3, 2, 2, 2, 1, 1]
    alpha = 1 - 0.5 ** (1 / 3)
    est = [q for _, q in run.ticks]
    assert est == pytest.approx([ewma_closed_form(samples[: k + 1], alpha) for k in range(7)])
    assert pol.seen[0][1] == 0.0  # the first plan sees no demand
    t, qps, tel = pol.seen[1]
    assert t == 7 and qps == pytest.approx(est[6])
    # registrations and queue lengths per tick (both EWMAs start from a 0 sample)
    assert tel.model_rate[0] == pytest.approx(ewma_closed_form([0, 3, 0, 0, 0, 0, 0, 0], alpha))
    assert tel.model_queue[0] == pytest.approx(ewma_closed_form([0, 2, 2, 1, 1, 1, 0, 0], alpha))
    assert run.tick_models[0] == [3] and run.tick_models[1] == [0]


def test_in_flight_demand_forgets_queries_past_twice_the_slo() -> None:
    """SLO 1: q1 is dropped at 2.7 s and leaves the count at 2 x SLO after arriving (2.4 s),
    so at ticks 3-5 nothing is in flight and the EWMA holds; q2 (5-7.5 s) counts again."""
    run, _ = run_fixed({1: 2.5}, [0.2, 0.4, 5.0], slo=1.0, demand="in-flight")
    assert run.status.tolist() == [SERVED, DROPPED, SERVED]
    alpha = 1 - 0.5 ** (1 / 3)
    expected = [2.0] * 5 + [
        ewma_closed_form([2, 2, 1], alpha),
        ewma_closed_form([2, 2, 1, 1], alpha),
    ]
    assert [q for _, q in run.ticks] == pytest.approx(expected)


# --------------------------------------------------------------------------- the authors' systems


def test_planner_latency_rounds_on_the_testbeds_clock(e1) -> None:
    lat = planner_latency(e1_ctx(e1), CLOCK)
    assert lat[0][1] == 1.0 and lat[1][1] == 1.0  # 0.5 s and 1.3 s planned as 1 s
    assert [lat[1][2], lat[2][4], lat[3][2], lat[0][32]] == pytest.approx([2.0, 47.0, 49.0, 14.0])
    assert planner_latency(e1_ctx(e1), None)[3][2] == pytest.approx(48.6)


def test_worker_cut_is_the_workers_quantile_rule() -> None:
    v = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert worker_cut(v, 0.4) == 2.0  # sorted[int(5 * 0.4) - 1]
    assert worker_cut(v, 0.0) == 1.0 and worker_cut(v, 1.0) == 5.0


def test_clipper_fit_takes_the_largest_batch_within_the_slo(e1) -> None:
    ctx = e1_ctx(e1)
    light = make_authors_policy("clipper-light-fit", ctx, clock=CLOCK)
    heavy = make_authors_policy("clipper-heavy-fit", ctx, clock=CLOCK)
    assert light.plan(0, 1.0).batch == {0: 32} and light.admission_factor is None
    a = heavy.plan(0, 1.0)
    assert a.workers == {3: 16} and a.batch == {3: 2} and heavy.admission_factor == 1.0


def tel(queue: dict[int, float] | None = None, rate: float = 1.0) -> Telemetry:
    q = [0.0] * 4
    for m, v in (queue or {}).items():
        q[m] = v
    return Telemetry(tick_s=10.0, model_rate=[rate] * 4, model_queue=q)


def test_infaas_acc_steps_on_expected_latency(e1) -> None:
    """Best FID first; down when 49 + 0.225 q / (16 * 2 / 49) > 60; lightest past q = 60."""
    p = make_authors_policy("infaas-acc", e1_ctx(e1), clock=CLOCK)
    a = p.plan(50, 1.0, tel())
    assert (a.workers, a.batch) == ({3: 16}, {3: 2})  # 49 s < 0.89 x 60: stays at the best
    a = p.plan(100, 1.0, tel({3: 40}))  # 49 + 0.225 * 40 * 49 / 32 = 62.8 > 60
    assert (a.workers, a.batch) == ({2: 16}, {2: 4})
    a = p.plan(150, 1.0, tel({2: 61}))
    assert (a.workers, a.batch) == ({0: 16}, {0: 32})
    a = p.plan(200, 1.0, tel())  # 14 s < 53.4 s: one level up
    assert (a.workers, a.batch) == ({1: 16}, {1: 32})
    a = p.plan(250, 0.0, tel())  # no demand: the controller's round robin at batch 1
    assert a.status == "fallback" and a.workers == dict.fromkeys(range(4), 4)
    assert set(a.batch.values()) == {1}


def test_proteus_milp_maximises_weighted_workers(e1) -> None:
    """Weights (30 - FID) / 11: m0 0, m1 4/11, m2 9/11, m3 1; throughput >= 1.25 x demand."""
    p = make_authors_policy("proteus-milp", e1_ctx(e1), clock=CLOCK)
    # 1.25 x 0.8 = 1 query/s: 15 x m3 (2/49 each) + 1 x m1 is the best that carries it; m1's
    # fastest batch is 1 (1.3 s planned as 1 s: 1 query/s, more than 32/37 at batch 32)
    a = p.plan(0, 0.8 / 1.05, tel())
    assert a.workers == {1: 1, 3: 15} and a.batch == {1: 1, 3: 2} and a.mode == "split"
    assert a.weights == pytest.approx((1 / 16, 15 / 16))
    # a queue on m3 (0.24 ticks of delay): 49 s x 1.24 > 60, so m3 falls back to batch 1
    a = p.plan(50, 0.8 / 1.05, tel({3: 2}))
    assert a.workers == {1: 1, 3: 15} and a.batch[3] == 1
    assert p.plan(100, 0.001, tel()).workers == {3: 16}
    assert p.plan(150, 29 / 1.05, tel()).workers == {0: 16}  # only m0 carries 36 queries/s
    last = p.plan(200, 45 / 1.05, tel())  # infeasible: the plan in force stays
    assert last.workers == {0: 16}


def test_diffserve_fixed_maximises_the_escalated_fraction(e1) -> None:
    m, _ = e1
    p = make_authors_policy("diffserve-fixed", e1_ctx(e1), clock=CLOCK)
    a = p.plan(0, 0.0, tel())  # initialize(): 9 + 7 workers, batch 8, everything escalated
    assert (a.workers, a.batch, a.d, a.status) == ({1: 9, 3: 7}, {1: 8, 3: 8}, 1.0, "init")
    # demand 4: 4 light GPUs at batch 1 (1 s planned); 12 heavy at 2/49 carry 4t: t <= 0.1224
    a = p.plan(50, 4 / 1.05, tel())
    assert (a.workers, a.batch, a.d) == ({1: 4, 3: 12}, {1: 1, 3: 2}, 0.12)
    assert a.confidence_threshold == worker_cut(m.models["m1"].confidence, 0.12)
    assert a.router_threshold is None
    a = p.plan(100, 0.5 / 1.05, tel())
    assert a.d == 1.0 and a.batch == {1: 1, 3: 2} and sum(a.workers.values()) == 16
    # queue delays eat the SLO: everything on the light model at batch 16, nothing escalated
    a = p.plan(150, 4 / 1.05, tel({1: 30, 3: 30}))
    assert (a.workers, a.batch, a.heavy, a.status) == ({1: 16}, {1: 16}, None, "fallback")


def test_hadis_milp_takes_the_best_feasible_row(e1) -> None:
    """Demand 0.5: m2 at batch 2 needs 6 GPUs; m3 at batch 1 carries 0.5 t on the other 10,
    so t <= 10 / 13.5; pair (m2, m3) has the lowest FID (21 - 2t) among the feasible rows."""
    m, table = e1
    p = make_authors_policy("hadis-milp", e1_ctx(e1), clock=CLOCK)
    a = p.plan(0, 0.0, tel())
    assert (a.status, a.workers, a.batch) == ("shed", {0: 16}, {0: 1})
    a = p.plan(50, 0.5 / 1.05, tel())
    ts = {
        (r["r"], r["d"]): round(r["r"] + (1 - r["r"]) * r["d"], 2)
        for r in table.rows
        if (r["light"], r["heavy"]) == ("m2", "m3")
    }
    best = max(t for t in ts.values() if t <= 10 / 13.5)
    assert (a.light, a.heavy) == (2, 3) and ts[(a.r, a.d)] == best
    assert a.batch == {2: 2, 3: 1} and sum(a.workers.values()) == 16
    assert a.workers[2] >= 6 and a.workers[3] >= math.ceil(0.5 * best * 27)
    assert a.router_threshold == worker_cut(m.router_scores, 1 - a.r)
    assert a.confidence_threshold == worker_cut(m.models["m2"].confidence, a.d)
    # a queue EWMA below 1 is ignored (the controller's guard); a real one eats the SLO
    assert p.plan(100, 0.5 / 1.05, tel({2: 0.9, 3: 0.9})).d == a.d
    b = p.plan(150, 0.5 / 1.05, tel({2: 10, 3: 0}))  # 12 s of delay: m2 at batch 1 only
    assert b.batch[2] == 1
    assert p.plan(200, 100.0, tel()).status == "shed"  # nothing carries 105 queries/s


# --------------------------------------------------------------------------- authors' accounting


def accounting_run(fid_accounting: str) -> PolicyRun:
    """50 controller rows of 10 s, one on-time query per row (4 s); rows 11-15 add a late
    one (8 s > SLO 6); one query arriving at 401 s is dropped (noticed at 2 x SLO)."""
    arr, fin, status = [], [], []
    for j in range(1, 51):
        arr.append(10 * (j - 1) + 1)
        fin.append(10 * (j - 1) + 5)
        status.append(SERVED)
        if 11 <= j <= 15:
            arr.append(10 * (j - 1) + 1)
            fin.append(10 * (j - 1) + 9)
            status.append(SERVED)
    arr.append(401)
    fin.append(402)
    status.append(DROPPED)
    order = np.argsort(arr, kind="stable")
    n = len(arr)
    return PolicyRun(
        policy="p",
        arrival=np.asarray(arr, dtype=float)[order],
        finish=np.asarray(fin, dtype=float)[order],
        status=np.asarray(status, dtype=np.uint8)[order],
        model=np.zeros(n, dtype=np.int64),
        qkey=np.zeros(n, dtype=np.int64),
        prompt=np.zeros(n, dtype=np.int64),
        escalated=np.zeros(n, dtype=bool),
        busy_s=0.0,
        switch_s=0.0,
        switches=0,
        ticks=[],
        decisions=[
            {"time_s": 0.0, "status": "shed", "quality": {FID: 29.0}},
            {"time_s": 200.0, "status": "ok", "quality": {FID: 20.0}},
        ],
        tick_models=[[3, 1, 0, 0]] * 25 + [[0, 0, 0, 2]] * 25,
        tick_s=10.0,
        fid_accounting=fid_accounting,
    )


CURVES = MixCurves.from_sweep(
    {0: 30.0, 1: 26.0, 2: 21.0, 3: 19.0}, {(0, 1): [round(30 - 0.4 * k, 2) for k in range(11)]}
)


def test_mix_curves_are_densified_with_rounded_midpoints() -> None:
    dense = CURVES.pairs[(0, 1)]
    assert len(dense) == 21 and dense[0] == 30.0 and dense[20] == 26.0 and dense[5] == 29.0
    c = MixCurves.from_sweep({0: 1.0}, {(0, 1): [1.0, 1.555] + [2.0] * 9})
    assert c.pairs[(0, 1)][1] == 1.28  # (1 + 1.555) / 2 rounded to 2 decimals


@pytest.mark.parametrize(
    ("mode", "quality", "shed"),
    [
        # per point: 30 x 3, (4 x 30 + 20) / 5, 20 x 6; smoothed and averaged
        ("config", (27.6 + 25.6 + 23.6 + 21.6 + 20 + 20) / 6, 19),
        # rows 1-25: shares 0.75 / 0.25 -> pair (0, 1) at 0.25 -> 29.0; rows 26-50: m3 alone
        ("mix", (29 + 27 + 25 + 23 + 21 + 19) / 6, 0),
        ("dominant", (30 + 27.8 + 25.6 + 23.4 + 21.2 + 19) / 6, 0),
    ],
)
def test_authors_accounting_hand_computed(mode: str, quality: float, shed: int) -> None:
    acc = authors_accounting(
        accounting_run(mode),
        slo_s=6.0,
        expire_after_s=12.0,
        quality_metric=FID,
        worst_quality=30.0,
        curves=CURVES,
    )
    # points: 0, 0, 5/10 late, 0 x 5, 1/6 dropped (row 42), 0; a 5-point moving average has
    # 6 values, point 2 is in three of them, point 8 in two
    assert acc.violation_ratio == pytest.approx((3 * 0.5 / 5 + 2 * (1 / 6) / 5) / 6)
    assert acc.quality == pytest.approx(quality)
    assert (acc.points, acc.rows, acc.shed_rows) == (10, 50, shed)


# --------------------------------------------------------------------------- the E1 scenario


def test_e1_scenario_refuses_bad_requests(tmp_path) -> None:
    with pytest.raises(ParameterError, match="data") as e:
        hadis_e1(tmp_path)
    assert e.value.param == "data"
    with pytest.raises(ParameterError, match="blocks"):
        e1_config("mine")


def test_e1_scenario_on_a_short_trace(shared_data, tmp_path) -> None:
    """The first 2,000 queries of E1 (about 9 minutes of the paper's trace): every system runs,
    queries are conserved, and the static baselines score the published single-model FIDs."""
    res = hadis_e1(shared_data, limit=2000)
    assert set(res.blocks) == {"authors", "ours"}
    authors = {s.policy: s for s in res.blocks["authors"].summaries}
    assert set(authors) == set(AUTHORS_POLICIES)
    for block in res.blocks.values():
        for s in block.summaries:
            assert s.served + s.dropped == s.queries == 2000, s.policy
    acc = res.accounting["authors"]
    assert authors["clipper-light-fit"].violation_ratio == 0
    assert authors["clipper-light-fit"].quality[FID] == pytest.approx(29.75)  # hybrid sweep
    assert acc["clipper-light-fit"].quality == pytest.approx(29.76)  # config_results.csv, t = 0
    assert authors["clipper-heavy-fit"].quality[FID] == pytest.approx(19.95)
    assert authors["clipper-heavy-fit"].violation_ratio > 0.3
    assert authors["clipper-light-fit"].quality[FID] > authors["hadis-milp"].quality[FID] > 19.95
    assert res.settings["time_scale"] == 10 and res.blocks["authors"].config.tick_s == 10
    c = res.claims["authors"]
    assert c["hadis"] == "hadis-milp" and set(c["baselines"]) == {
        "Clipper-Light", "Clipper-Heavy", "INFaaS-Acc", "Proteus", "DiffServe"
    }  # fmt: skip
    h = authors["hadis-milp"].violation_ratio
    heavy = c["baselines"]["Clipper-Heavy"]
    assert heavy["violation_reduction_x"] == pytest.approx(
        authors["clipper-heavy-fit"].violation_ratio / h if h else math.inf
    )
    paths = write_scenario(res, tmp_path / "e1")
    names = {p.relative_to(tmp_path / "e1").as_posix() for p in paths}
    assert {"summary.json", "e1.md", "authors/simulate.png", "ours/windows.csv"} <= names
    doc = json.loads((tmp_path / "e1" / "summary.json").read_text())
    assert doc["scenario"] == "hadis-e1" and doc["settings"]["queries"] == 2000
    first = doc["blocks"]["authors"]["policies"][0]
    assert first["policy"] == "clipper-light-fit" and "authors_accounting" in first
    assert "| Clipper-Heavy | `clipper-heavy-fit` |" in (tmp_path / "e1" / "e1.md").read_text()


# --------------------------------------------------------------------------- command line


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


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


def test_cli_choices_are_the_librarys() -> None:
    from typing import get_args

    from hadis_profile.cli import simulate as cmd
    from hadis_profile.simulate.engine import BATCH_TIMES, DEMANDS, DISPATCHES
    from hadis_profile.simulate.scenarios import SCENARIOS

    assert get_args(cmd.Demand) == DEMANDS and get_args(cmd.Dispatch) == DISPATCHES
    assert get_args(cmd.BatchTime) == BATCH_TIMES and get_args(cmd.Scenario) == SCENARIOS


def test_cli_simulate_with_the_testbeds_rules(synthetic_run, tmp_path) -> None:
    run, table = synthetic_run
    trace = tmp_path / "t.txt"
    trace.write_text("".join(f"{k * 150},{k % 120}\n" for k in range(400)))  # 60 s, 6.7 qps
    res = CliRunner().invoke(
        app,
        ["simulate", str(table), "--run", str(run), "--gpus", "8", "--slo", "60",
         "--trace", str(trace), "--time-scale", "10", "-p", "hadis-milp", "-p", "hadis",
         "--dispatch", "random", "--admission", "1.5", "--demand", "in-flight", "--tick", "10",
         "--batch-time", "hadis-worker", "--batch-overhead", "0.1", "--planner-clock", "0.1",
         "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "hadis-milp" in res.output and "times x10" in res.output
    doc = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert doc["config"]["dispatch"] == "random" and doc["config"]["admission"] == 1.5
    assert doc["workload"]["duration_s"] == pytest.approx(399 * 1.5)
    base = ["simulate", str(table), "--run", str(run), "--gpus", "8", "--slo", "60"]
    proc = cli(*base, "--rate", "2", "--demand", "guess")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--demand" in proc.stderr
    proc = cli(*base, "--trace", str(trace), "--time-scale", "-1")  # the library's check
    assert proc.returncode == 2 and "--time-scale must be a positive number" in proc.stderr
    proc = cli(*base, "--rate", "2", "--tick", "0")
    assert proc.returncode == 2 and "--tick must be a positive number" in proc.stderr


def test_cli_scenario(shared_data, tmp_path) -> None:
    out = tmp_path / "e1"
    res = CliRunner().invoke(
        app,
        ["simulate", "--scenario", "hadis-e1", "--data", str(shared_data), "--limit", "800",
         "--blocks", "authors", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "clipper-heavy-fit" in res.output and "2.7-45x fewer violations" in res.output
    assert (out / "authors" / "simulate.png").is_file() and (out / "e1.md").is_file()
    proc = cli("simulate", "--scenario", "hadis-e1", "--gpus", "4")
    assert proc.returncode == 2 and "drop --gpus" in proc.stderr
    proc = cli("simulate", "--scenario", "hadis-e1", "--data", str(tmp_path))
    assert proc.returncode == 2 and "--data" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("simulate", "--scenario", "hadis-e1", "--data", str(shared_data), "--blocks", "x")
    assert proc.returncode == 2 and "--blocks names 'x'" in proc.stderr


def test_cli_import_batch_latency_flag(shared_data, tmp_path) -> None:
    proc = cli("import", "hadis-reference", str(shared_data / "hadis-reference"),
               "--out", str(tmp_path / "r"), "--batch-latency", "linear:0")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--batch-latency must be 'linear:FACTOR'" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_cli_help_lists_every_policy() -> None:
    from hadis_profile.cli import simulate as cmd
    from hadis_profile.simulate import ALL_POLICIES, POLICIES

    res = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "250"})
    text = " ".join(res.output.split())
    line = text[text.index("--policy") :]
    ours, authors = line.split("; or the HADIS authors' definition of a system: ")
    assert [p for p in ALL_POLICIES if p in ours.split(": ", 1)[1]] == list(POLICIES)
    assert all(p in authors for p in AUTHORS_POLICIES)
    assert frozenset(POLICIES) == cmd._OURS
