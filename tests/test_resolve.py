"""Resolver and resolve(): exact against the reference enumeration and a HiGHS MILP; edges; API."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import resolve_oracles as oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hadis_profile import resolve_engine
from hadis_profile import resolve_reference as reference
from hadis_profile.errors import EXIT_INFEASIBLE, HadisError, ParameterError
from hadis_profile.resolve import Plan, Resolver, load_table, resolve
from hadis_profile.table import CascadeTable, make_document, write_table

FID = "fid:inception-v3-compat"
CLIP = "clip_score:openai/clip-vit-large-patch14"


# ----------------------------------------------------------------------- factory


def latency_point(b: int, p99: float, infeasible: bool = False) -> dict:
    mean = p99 / 1.1
    return {
        "batch_size": b,
        "mean_s": mean,
        "std_s": 0.01 * mean,
        "p50_s": mean,
        "p90_s": 1.05 * mean,
        "p99_s": p99,
        "peak_mem_bytes": None,
        "infeasible": infeasible,
        "warmup": 1,
        "reps": 5,
    }


def fractions(r: float, d: float) -> dict:
    """Nominal-mode fractions (docs/architecture.md)."""
    direct, escalated = r, (1 - r) * d
    return {
        "direct": direct,
        "escalated": escalated,
        "light": max(1 - direct - escalated, 0.0),
        "load_light": 1 - direct,
        "load_heavy": direct + escalated,
    }


def make_row(light, heavy, r, d, quality, metric=FID) -> dict:
    fr = fractions(r, d) if heavy else fractions(0.0, 0.0)
    return {
        "light": light,
        "heavy": heavy,
        "kind": "cascade" if heavy else "single",
        "r": r if heavy else 0.0,
        "d": d if heavy else 0.0,
        "router_threshold": 1.0 if heavy and r > 0 else None,
        "confidence_threshold": 0.5 if heavy else None,
        "fractions": fr,
        "quality": {metric: quality},
        "gpu_s_per_query": 1.0,
        "latency_s": 1.0,
        "on_front": True,
    }


def make_table(
    models: dict[str, dict],
    rows: list[dict],
    metric: str = FID,
    *,
    router_s=None,
    disc_s=None,
    router_in_provenance: bool = False,
) -> CascadeTable:
    """models: name -> {"latency": {b: p99 or None (OOM)}, "max_batch": int|None}.

    ``router_s``: the router's ``overhead_s_per_query`` (in ``payload.router``, or in
    ``provenance.router`` as ``pareto`` writes it); ``disc_s``: the discriminator's
    per-image cost in ``provenance.run.scorer_overhead_s_per_image``.
    """
    payload = {
        "provenance": {
            "run_id": "test",
            "hardware": {"label": "cpu", "device_name": "x", "driver": None, "libraries": {}},
            "zoo_hash": "z",
            "prompt_set_hash": "p",
            "n_prompts": 100,
            "metrics": {metric: {"higher_is_better": metric != FID, "set_level": metric == FID}},
            "quality_metric": metric,
            "seeds": {},
            "grid": {"mode": "grid", "steps": 10},
            "pairs": "adjacent",
            "per_pair": False,
            "router": {},
            "discriminator": {},
        },
        "models": {
            name: {
                "order": i,
                "steps": 2,
                "latency": {
                    str(b): latency_point(b, p if p is not None else 1.0, p is None)
                    for b, p in spec["latency"].items()
                },
                "max_batch": spec.get("max_batch"),
                "peak_mem_bytes": None,
            }
            for i, (name, spec) in enumerate(models.items())
        },
        "router": {"features": ["prompt_length"], "weights": [1.0], "mean": [0.0], "std": [1.0]},
        "rows": rows,
    }
    prov = payload["provenance"]
    if router_s is not None:
        spec = prov["router"] if router_in_provenance else payload["router"]
        spec["overhead_s_per_query"] = router_s
    if disc_s is not None:
        prov["discriminator"] = {"kind": "clip", "scorer_id": "conf:test"}
        prov["run"] = {"scorer_overhead_s_per_image": {"other:scorer": 99.0, "conf:test": disc_s}}
    return CascadeTable.from_document(make_document(payload, created_at="2026-01-01T00:00:00Z"))


def random_overheads(rng: random.Random) -> dict:
    """Router / discriminator overheads recorded in a random table (absent, zero or not)."""
    return dict(
        router_s=rng.choice([None, 0.0, rng.uniform(0, 1.0)]),
        disc_s=rng.choice([None, 0.0, rng.uniform(0, 1.0)]),
        router_in_provenance=rng.random() < 0.5,
    )


def random_table(rng: random.Random, n_models=None, n_cascade=None) -> CascadeTable:
    n_models = n_models or rng.randint(1, 4)
    metric = rng.choice([FID, CLIP])
    models = {}
    for i in range(n_models):
        base = rng.uniform(0.05, 2.0)
        lat = {}
        for b in rng.sample([1, 2, 4, 8], rng.randint(1, 4)):
            roll = rng.random()
            lat[b] = None if roll < 0.1 else base * (0.4 + 0.6 * b) * rng.uniform(0.8, 1.2)
        max_batch = rng.choice([None, None, None, 4])
        models[f"m{i}"] = {"latency": lat, "max_batch": max_batch}
    names = list(models)
    qualities = [20.0, 21.5, 23.0, 24.5, 26.0, 27.5]

    def quality():
        return rng.choice(qualities)

    # a single row may lack a quality value (it then ranks last); cascade rows never do
    rows = [
        make_row(m, None, 0, 0, None if rng.random() < 0.05 else quality(), metric) for m in names
    ]
    if n_models >= 2 and rng.random() < 0.25:
        rows = []  # cascades only: the fallback must split GPUs between two models
    if n_models >= 2:
        at_least = 0 if rows else 1
        for _ in range(n_cascade if n_cascade is not None else rng.randint(at_least, 8)):
            light, heavy = sorted(rng.sample(names, 2))  # light is the cheaper (lower order)
            r = rng.choice([0.0, 1.0, rng.random(), rng.random()])
            d = rng.choice([0.0, 1.0, rng.random(), rng.random()])
            rows.append(make_row(light, heavy, r, d, quality(), metric))
    rng.shuffle(rows)
    return make_table(models, rows, metric, **random_overheads(rng))


def random_request(rng: random.Random, table: CascadeTable) -> dict:
    gpus = rng.randint(1, 12)
    req = dict(
        qps=math.exp(rng.uniform(math.log(0.1), math.log(40))),
        slo_s=rng.uniform(0.1, 12),
        gpus=gpus,
        reserved_gpus=rng.choice([0, 0, rng.randint(0, gpus - 1)]),
        headroom=rng.choice([1.0, 1.05, rng.uniform(1, 1.5)]),
    )
    if rng.random() < 0.3:
        req["queue_delay_s"] = rng.choice([0.0, rng.uniform(0, 2)])
    if rng.random() < 0.25:
        req["overhead_s"] = rng.choice([0.0, rng.uniform(0, 1.5)])
    used = {r[role] for r in table.rows for role in ("light", "heavy")} - {None}
    profiled = sorted(
        {
            p["batch_size"]
            for name, m in table.models.items()
            if name in used
            for p in m["latency"].values()
            if not p["infeasible"] and (m["max_batch"] is None or p["batch_size"] <= m["max_batch"])
        }
    )
    if profiled and rng.random() < 0.25:
        req["batch_sizes"] = rng.sample(profiled, rng.randint(1, len(profiled)))
    return req


def plan_key(plan: Plan) -> dict:
    """The plan in the oracle's terms."""
    by_role = {a.role: a for a in plan.allocations}
    light, heavy = by_role.get("light"), by_role.get("heavy")
    return dict(
        row=plan.row,
        gpus=plan.total_gpus,
        latency=plan.worst_case_latency_s,
        gpus_light=light.gpus,
        gpus_heavy=heavy.gpus if heavy else 0,
        batch_light=light.batch_size,
        batch_heavy=heavy.batch_size if heavy else None,
    )


def check_against_reference(table: CascadeTable, req: dict, resolver: Resolver | None = None):
    """Resolver, resolve() and the reference enumeration agree on ``req``."""
    plan = (resolver or Resolver(table)).resolve(**req)
    assert resolve(table, **req) == plan
    truth = reference.reference(table.document, **req)
    assert plan.feasible == truth.feasible, (req, plan.reason)
    if req.get("overhead_s") is not None:
        want = {"router": None, "discriminator": None, "override": req["overhead_s"]}
        assert plan.overhead_s == want
    else:
        assert plan.overhead_s["override"] is None
    if not truth.feasible:
        assert plan.reason
        if truth.min_gpus is not None:
            assert f"needs at least {truth.min_gpus} GPUs" in plan.reason
        if plan.fallback is None:
            assert truth.fallback_qps == 0 and truth.fallback is None
        else:
            fb = plan.fallback
            assert fb.qps == pytest.approx(truth.fallback_qps, rel=1e-9)
            assert fb.total_gpus <= req["gpus"] - req.get("reserved_gpus", 0)
            assert fb.relaxed == truth.relaxed
            # the fallback is the best plan at its own load (same objective)
            assert truth.fallback is not None
            assert (fb.row, fb.total_gpus) == (truth.fallback.row, truth.fallback.gpus)
        return plan
    got = plan_key(plan)
    choice = truth.choice
    assert got.pop("latency") == pytest.approx(choice.latency, rel=1e-12, abs=1e-12)
    assert plan.quality_metric == table.quality_metric
    want = {k: getattr(choice, k) for k in got}
    assert got == want, req
    q = plan.quality
    if choice.qkey[0] == 1:
        assert q is None
    else:
        assert abs(q) == abs(choice.qkey[1])
    return plan


# ---------------------------------------------------------------- oracle checks


def test_matches_reference_on_random_instances():
    rng = random.Random(1234)
    feasible = infeasible = 0
    for _ in range(300):
        table = random_table(rng)
        resolver = Resolver(table)
        for _ in range(4):
            ok = check_against_reference(table, random_request(rng, table), resolver).feasible
            feasible += ok
            infeasible += not ok
    assert feasible > 300 and infeasible > 150  # both branches exercised


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), calls=st.integers(1, 3))
def test_matches_reference_hypothesis(seed: int, calls: int):
    rng = random.Random(seed)
    table = random_table(rng)
    for _ in range(calls):
        check_against_reference(table, random_request(rng, table))


def test_large_table_blocks_match_reference():
    """More rows than the first scan block, so the two-block search and levels are exercised."""
    rng = random.Random(99)
    for _ in range(6):
        table = random_table(rng, n_models=4, n_cascade=150)
        resolver = Resolver(table)
        for _ in range(8):
            check_against_reference(table, random_request(rng, table), resolver)


def test_exact_step_in_chunks_and_tiny_cache_match_reference(monkeypatch):
    """Quality levels resolved a few rows at a time, and caches that keep nothing."""
    monkeypatch.setattr(resolve_engine, "EXACT_CHUNK_CELLS", 20)  # 1 to 5 rows at a time
    monkeypatch.setattr("hadis_profile.resolve.CACHE_BYTES", 1)
    rng = random.Random(5)
    for _ in range(40):
        table = random_table(rng, n_models=3, n_cascade=rng.randint(1, 30))
        resolver = Resolver(table)
        for _ in range(4):
            check_against_reference(table, random_request(rng, table), resolver)
        assert all(not c.items for c in (resolver._calls, resolver._stages, resolver._derived))


def test_reference_states_the_resolver_tolerances():
    from hadis_profile import resolve as resolve_mod

    for name in ("FRACTION_EPS", "LATENCY_TOL_S", "GPU_REL_TOL"):
        assert getattr(reference, name) == getattr(resolve_mod, name)


def test_matches_highs_milp():
    pytest.importorskip("scipy")
    rng = random.Random(7)
    compared = feasible = 0
    while compared < 300:
        table = random_table(rng, n_models=rng.randint(2, 3), n_cascade=rng.randint(1, 5))
        req = random_request(rng, table)
        prob = reference.parse(table.document, **req)
        truth = oracle.milp_solve(prob)
        plan = resolve(table, **req)
        compared += 1
        assert plan.feasible == (truth is not None), req
        if truth is None:
            continue
        feasible += 1
        row = table.rows[plan.row]
        q = row["quality"].get(table.quality_metric)
        assert truth["qkey"][0] == (q is None)
        if q is not None:
            assert abs(truth["qkey"][1]) == q
        assert plan.total_gpus == truth["gpus"], req
        assert plan.worst_case_latency_s == pytest.approx(truth["latency"], abs=1e-6), req
        assert plan.row == truth["row"], req
    assert feasible > 120


# ------------------------------------------------------------------ edge cases


def two_model_table(**kw) -> CascadeTable:
    models = {
        "small": {"latency": {1: 0.5, 2: 0.8, 4: 1.4, 8: None}},
        "big": {"latency": {1: 2.0, 2: 3.5, 4: 6.0, 8: None}},
    }
    rows = [
        make_row("small", None, 0, 0, 30.0),
        make_row("big", None, 0, 0, 20.0),
        make_row("small", "big", 0.3, 0.2, 22.0),
        make_row("small", "big", 1.0, 0.0, 21.0),  # everything routed to heavy
        make_row("small", "big", 0.0, 0.0, 29.0),  # nothing routed or escalated
    ]
    return make_table(models, rows, **kw)


def test_best_quality_plan_and_fields():
    table = two_model_table()
    plan = resolve(table, qps=2, slo_s=100, gpus=64)
    assert plan.feasible and plan.reason is None and plan.fallback is None
    assert (plan.row, plan.kind, plan.pair) == (1, "single", ("big", None))
    assert plan.quality == 20.0 and plan.quality_metric == FID
    (a,) = plan.allocations
    # batch 1: ceil(2*1.05*2/1) = 5 GPUs; batch 2: ceil(3.675) = 4; batch 4: ceil(3.15) = 4;
    # 4 GPUs tie, so the lower worst case wins: batch 2 (3.5 s batch + 3.5 s queueing)
    assert (a.batch_size, a.gpus, a.load_fraction, a.offered_qps) == (2, 4, 1.0, 2.0)
    assert a.throughput_qps == pytest.approx(4 * 2 / 3.5)
    assert plan.worst_case_latency_s == pytest.approx(7.0)
    json.dumps(plan.to_dict(), allow_nan=False)


def test_impossible_slo_is_infeasible_with_reason_and_fallback():
    table = two_model_table()
    plan = resolve(table, qps=2, slo_s=0.5, gpus=8)
    assert not plan.feasible
    assert "below every configuration" in plan.reason and "1 s" in plan.reason
    fb = plan.fallback
    assert fb is not None and fb.feasible and fb.relaxed == ("qps", "slo_s") and fb.slo_s is None
    # max throughput on 8 GPUs: small at batch 4 (4/1.4 per GPU) on all 8 GPUs
    # (row 4, a cascade whose heavy gets no traffic, ties on load and has better FID than row 0)
    assert fb.row == 4 and fb.total_gpus == 8 and fb.allocation("big").gpus == 0
    assert fb.allocation("small").batch_size == 4
    assert fb.qps == pytest.approx(8 * 4 / 1.4 / 1.05)
    d = plan.to_dict()
    assert d["fallback"]["relaxed"] == ["qps", "slo_s"]
    json.dumps(d, allow_nan=False)


def test_not_enough_gpus_reason_names_minimum_and_fallback_keeps_slo():
    table = two_model_table()
    plan = resolve(table, qps=50, slo_s=100, gpus=4)
    assert not plan.feasible
    assert "needs at least" in plan.reason and "only 4 are available" in plan.reason
    need = reference.min_gpus(reference.parse(table.document, qps=50, slo_s=100, gpus=4))
    assert f"at least {need} GPUs" in plan.reason
    fb = plan.fallback
    assert fb.relaxed == ("qps",) and fb.slo_s == 100 and fb.total_gpus <= 4
    assert fb.worst_case_latency_s <= 100


def test_zero_load_model_gets_zero_gpus():
    table = two_model_table()
    # rows 3 (all direct: light unused) and 4 (no routing: heavy unused)
    for row, unused in ((3, "small"), (4, "big")):
        only = make_table(
            {
                "small": {"latency": {1: 0.5, 2: 0.8}},
                "big": {"latency": {1: 2.0, 2: 3.5}},
            },
            [table.rows[row]],
        )
        plan = resolve(only, qps=3, slo_s=20, gpus=16)
        assert plan.feasible and plan.kind == "cascade"
        a = plan.allocation(unused)
        assert (a.gpus, a.batch_size, a.offered_qps) == (0, None, 0.0)
        assert plan.total_gpus == sum(x.gpus for x in plan.allocations)
    # the unused model's latency does not count: an SLO only the heavy meets alone
    only = make_table(
        {"small": {"latency": {1: 5.0}}, "big": {"latency": {1: 2.0}}}, [table.rows[3]]
    )
    assert resolve(only, qps=1, slo_s=4.5, gpus=8).feasible


def test_escalation_sums_both_stages():
    models = {"a": {"latency": {1: 1.0}}, "b": {"latency": {1: 2.0}}}
    table = make_table(models, [make_row("a", "b", 0.0, 0.5, 10.0)])
    assert resolve(table, qps=0.1, slo_s=6.0, gpus=4).feasible  # 2*1 + 2*2 = 6
    assert not resolve(table, qps=0.1, slo_s=5.99, gpus=4).feasible
    plan = resolve(table, qps=0.1, slo_s=3.5, gpus=4, queue_delay_s=0.25)  # 1.25 + 2.25
    assert plan.feasible and plan.worst_case_latency_s == pytest.approx(3.5)


# ------------------------------------------------------------- routing overheads


@pytest.mark.parametrize("in_provenance", [False, True])
def test_overheads_add_to_the_binding_path(in_provenance):
    models = {"a": {"latency": {1: 1.0}}, "b": {"latency": {1: 2.0}}}
    # r = d = 0.5: light-only 2 s, direct 4 s, escalated 2 + 4 = 6 s (binding)
    rows = [make_row("a", "b", 0.5, 0.5, 10.0)]
    o_r, o_d = 0.3, 0.2
    bare = make_table(models, rows)
    table = make_table(models, rows, router_s=o_r, disc_s=o_d, router_in_provenance=in_provenance)
    req = dict(qps=0.1, gpus=4)
    plan = resolve(bare, slo_s=6.0, **req)
    assert plan.feasible and plan.worst_case_latency_s == 6.0
    assert plan.overhead_s == {"router": 0.0, "discriminator": 0.0, "override": None}
    late = resolve(table, slo_s=6.0, **req)
    assert not late.feasible and "routing overheads" in late.reason and "6.5 s" in late.reason
    assert late.overhead_s == {"router": o_r, "discriminator": o_d, "override": None}
    ok = resolve(table, slo_s=6.0 + o_r + o_d + 1e-6, **req)
    assert ok.feasible and ok.worst_case_latency_s == 6.0 + o_r + o_d
    assert ok.to_dict()["overhead_s"] == {"router": o_r, "discriminator": o_d, "override": None}
    # the override replaces both, with its own cache entry at the same SLO
    assert resolve(table, slo_s=6.0, overhead_s=0, **req).worst_case_latency_s == 6.0
    assert not resolve(bare, slo_s=6.0, overhead_s=0.5, **req).feasible
    over = resolve(bare, slo_s=6.5 + 1e-6, overhead_s=0.5, **req)
    assert over.feasible and over.worst_case_latency_s == 6.0 + 0.5
    assert over.overhead_s == {"router": None, "discriminator": None, "override": 0.5}
    assert not resolve(table, slo_s=6.0, **req).feasible  # table overheads still cached apart


def test_router_and_discriminator_pay_only_on_their_paths():
    models = {"a": {"latency": {1: 1.0}}, "b": {"latency": {1: 2.0}}}
    o_r, o_d = 0.3, 0.2
    # r = 1, d = 0: direct path only (4 s), router only
    t = make_table(models, [make_row("a", "b", 1.0, 0.0, 10.0)], router_s=o_r, disc_s=o_d)
    assert resolve(t, qps=0.1, slo_s=10, gpus=4).worst_case_latency_s == 4.0 + o_r
    # r = 0, d = 0.5: light-only (2 s) and escalated (6 s), discriminator only
    t = make_table(models, [make_row("a", "b", 0.0, 0.5, 10.0)], router_s=o_r, disc_s=o_d)
    assert resolve(t, qps=0.1, slo_s=10, gpus=4).worst_case_latency_s == 6.0 + o_d
    # r = 0.5, d = 0: light-only 2 + o_r, direct 4 + o_r (the discriminator is never run)
    t = make_table(models, [make_row("a", "b", 0.5, 0.0, 10.0)], router_s=o_r, disc_s=3.0)
    assert resolve(t, qps=0.1, slo_s=10, gpus=4).worst_case_latency_s == 4.0 + o_r
    # r = 0.5, d = 0 with a slow light model: the light-only path binds, pays the router only
    slow = {"a": {"latency": {1: 3.0}}, "b": {"latency": {1: 2.0}}}
    t = make_table(slow, [make_row("a", "b", 0.5, 0.0, 10.0)], router_s=o_r, disc_s=3.0)
    assert resolve(t, qps=0.1, slo_s=10, gpus=4).worst_case_latency_s == 6.0 + o_r


def test_single_rows_ignore_overheads():
    models = {"a": {"latency": {1: 1.0, 2: 1.5}}}
    table = make_table(models, [make_row("a", None, 0, 0, 10.0)], router_s=5.0, disc_s=5.0)
    for kw in ({}, {"overhead_s": 7.0}):
        plan = resolve(table, qps=1, slo_s=3.0, gpus=4, **kw)
        assert plan.feasible and plan.worst_case_latency_s == 3.0  # batch 2: 1.5 + 1.5
        assert plan.kind == "single"


@pytest.mark.parametrize(
    "kw, path, found",
    [
        (dict(router_s=-0.1), "payload.router.overhead_s_per_query", "-0.1"),
        (
            dict(router_s=-0.1, router_in_provenance=True),
            "provenance.router.overhead_s_per_query",
            "-0.1",
        ),
        (dict(router_s="fast"), "payload.router.overhead_s_per_query", '"fast"'),
        (dict(disc_s=-1.0), 'scorer_overhead_s_per_image["conf:test"]', "-1.0"),
        (dict(disc_s=True), 'scorer_overhead_s_per_image["conf:test"]', "true"),
    ],
)
def test_bad_table_overheads(kw, path, found):
    """The loader refuses them (before any resolve), naming the field."""
    with pytest.raises(HadisError) as e:
        make_table({"a": {"latency": {1: 1.0}}}, [make_row("a", None, 0, 0, 10.0)], **kw)
    msg = str(e.value)
    assert path in msg and f"found {found}, expected a number >= 0 and <= 1e+06 or null" in msg
    assert msg.endswith(".") and "\n" not in msg


def test_reserved_gpus_honoured():
    table = two_model_table()
    free = resolve(table, qps=2, slo_s=100, gpus=64)
    assert free.total_gpus == 4
    assert resolve(table, qps=2, slo_s=100, gpus=8, reserved_gpus=4).total_gpus == 4
    tight = resolve(table, qps=2, slo_s=100, gpus=8, reserved_gpus=5)
    assert tight.gpu_budget == 3 and tight.total_gpus <= 3
    assert tight.quality != 20.0 or tight.total_gpus <= 3


def test_batch_sizes_restriction_honoured():
    table = two_model_table()
    plan = resolve(table, qps=2, slo_s=100, gpus=64, batch_sizes=[1, 2])
    assert all(a.batch_size in (1, 2) for a in plan.allocations if a.gpus)
    assert plan.allocations[0].batch_size == 2  # best throughput among {1, 2}
    with pytest.raises(ParameterError, match="batch size 3, which is not profiled"):
        resolve(table, qps=2, slo_s=100, gpus=64, batch_sizes=[1, 3])


def test_oom_and_infeasible_points_never_chosen():
    models = {
        "a": {"latency": {1: 1.0, 2: 1.1, 4: None, 8: 1.2}, "max_batch": 4},
    }
    table = make_table(models, [make_row("a", None, 0, 0, 10.0)])
    for gpus in (1, 4, 32):
        for qps in (0.5, 2, 7):
            plan = resolve(table, qps=qps, slo_s=50, gpus=gpus)
            chosen = [plan] + ([plan.fallback] if plan.fallback else [])
            for p in chosen:
                if p.row is not None:
                    assert p.allocations[0].batch_size in (1, 2)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(qps=0), "qps must be positive"),
        (dict(qps=-1), "qps must be positive"),
        (dict(qps=float("nan")), "qps must be a finite number"),
        (dict(qps=10**400), "qps must be a finite number, not an integer of about 401 digits"),
        (dict(qps=2e9), "qps must be at most 1e[+]09"),
        (dict(slo_s=0), "slo_s must be positive"),
        (dict(slo_s=float("inf")), "slo_s must be a finite"),
        (dict(slo_s=1e7), "slo_s must be at most 1e[+]06"),
        (dict(gpus=0), "gpus must be at least 1"),
        (dict(gpus=2.5), "gpus must be a whole number"),
        (dict(gpus=float("nan")), "gpus must be a whole number"),
        (dict(gpus=10**50), "gpus must be at most 1,000,000"),
        (dict(gpus="4"), "gpus must be a whole number, not '4'"),
        (dict(reserved_gpus=4), "reserved_gpus .4. must be smaller than gpus .4."),
        (dict(reserved_gpus=-1), "reserved_gpus must be at least 0"),
        (dict(headroom=0.9), "headroom must be at least 1"),
        (dict(headroom=float("nan")), "headroom must be a finite"),
        (dict(headroom=1e308), "headroom must be at most 100, not 1e[+]308"),
        (dict(queue_delay_s=-0.1), "queue_delay_s must be at least 0"),
        (dict(queue_delay_s=[1]), "queue_delay_s must be a number, not .1."),
        (dict(batch_sizes=[]), "batch_sizes is empty"),
        (dict(batch_sizes=[0]), "batch_sizes holds 0; every batch size must be a whole number"),
        (dict(batch_sizes=[1, None]), "batch_sizes holds None, which is not a whole number"),
        (dict(batch_sizes=[2**40]), "every batch size must be a whole number from 1 to 1,048,576"),
        (dict(batch_sizes="1,2"), "batch_sizes must be a list"),
        (dict(batch_sizes=range(10**9)), "batch_sizes lists more than 256 entries"),
        (dict(batch_sizes=[1, 3]), "batch_sizes names batch size 3, which is not profiled"),
        (dict(batch_sizes=[8]), "batch_sizes names batch size 8, which is not profiled"),  # OOM
        (dict(qps=True), "qps must be a number"),
        (dict(overhead_s=-0.5), "overhead_s must be at least 0"),
        (dict(overhead_s=float("nan")), "overhead_s must be a finite number"),
        (dict(overhead_s=float("inf")), "overhead_s must be a finite number"),
        (dict(overhead_s="1"), "overhead_s must be a number"),
        (dict(overhead_s=True), "overhead_s must be a number"),
    ],
)
def test_bad_inputs(kw, match):
    req = dict(qps=1.0, slo_s=10.0, gpus=4) | kw
    with pytest.raises(ParameterError, match=match) as e:
        resolve(two_model_table(), **req)
    assert str(e.value).endswith(".") and "\n" not in str(e.value)
    assert e.value.param == next(iter(kw))
    assert e.value.for_flag("--x").startswith("--x") or "--x" in e.value.for_flag("--x")


def test_absurd_headroom_is_named_not_blamed_on_the_slo():
    """Issue 13: headroom=1e308 used to overflow the GPU demand and blame the SLO."""
    table = two_model_table()
    with pytest.raises(ParameterError) as e:
        resolve(table, qps=2, slo_s=100, gpus=64, headroom=1e308)
    assert e.value.param == "headroom" and "SLO" not in str(e.value)
    # the largest allowed values still give a plan or an honest reason, never an overflow
    plan = resolve(table, qps=1e9, slo_s=1e6, gpus=10**6, headroom=100)
    assert not plan.feasible and "needs at least" in plan.reason and plan.fallback is not None


def test_accepts_document_dict_and_file(tmp_path):
    table = two_model_table()
    via_doc = resolve(table.document, qps=2, slo_s=100, gpus=64)
    path = tmp_path / "table.json"
    write_table(path, table.document)
    via_file = resolve(load_table(path), qps=2, slo_s=100, gpus=64)
    assert via_doc == via_file == resolve(table, qps=2, slo_s=100, gpus=64)
    with pytest.raises(ParameterError, match="table must be a CascadeTable or a table document"):
        resolve([1, 2], qps=1, slo_s=1, gpus=1)
    bad = dict(table.document, sha256="0" * 64)
    with pytest.raises(HadisError, match="integrity check"):
        resolve(bad, qps=1, slo_s=1, gpus=1)


def test_resolver_state_is_its_own():
    """Nothing is attached to the table, and later edits of its document change nothing."""
    import copy

    table = two_model_table()
    before = dict(vars(table))
    resolver = Resolver(table)
    plan = resolver.resolve(qps=2, slo_s=100, gpus=64)
    assert vars(table) == before  # no cache hidden on the caller's object
    assert (resolver.sha256, resolver.quality_metric) == (table.sha256, FID)
    assert resolver.models == ("small", "big") and resolver.batch_sizes == (1, 2, 4)
    assert "rows=5" in repr(resolver)
    doc = copy.deepcopy(table.document)
    table.document["payload"]["rows"][1]["light"] = "small"
    table.document["payload"]["rows"][1]["quality"][FID] = 99.0
    assert resolver.resolve(qps=2, slo_s=100, gpus=64) == plan
    assert plan.light == "big" and plan.quality == 20.0
    table.document.clear()
    table.document.update(doc)
    doc["payload"]["rows"][1]["fractions"] = 5  # changed after verification, then compiled
    with pytest.raises(HadisError, match="fails its integrity check"):
        Resolver(_unverified(table, doc))


def _unverified(table: CascadeTable, doc: dict) -> CascadeTable:
    """``table`` whose document is swapped for ``doc`` behind the verification's back."""
    object.__setattr__(table, "document", doc)
    return table


def test_wrapper_cache_never_trusts_an_unverified_dict():
    """A dict carrying a cached table's sha256 is verified, not served from the cache."""
    table = two_model_table()
    doc = table.document
    want = resolve(doc, qps=2, slo_s=100, gpus=64)
    assert resolve(doc, qps=2, slo_s=100, gpus=64) == want  # the very dict: cached
    forged = json.loads(json.dumps(doc))
    forged["payload"]["rows"][1]["light"] = "small"  # same sha256 field, other payload
    with pytest.raises(HadisError, match="integrity check"):
        resolve(forged, qps=2, slo_s=100, gpus=64)
    same = json.loads(json.dumps(doc))  # another dict with the same content: verified, reused
    assert resolve(same, qps=2, slo_s=100, gpus=64) == want
    for seed in range(12):  # more tables than the cache holds: still right
        t = random_table(random.Random(seed))
        req = random_request(random.Random(seed), t)
        assert resolve(t, **req) == Resolver(t).resolve(**req)
    assert resolve(doc, qps=2, slo_s=100, gpus=64) == want


def test_clip_metric_prefers_higher_and_missing_quality_ranks_last():
    models = {"a": {"latency": {1: 1.0}}, "b": {"latency": {1: 2.0}}, "c": {"latency": {1: 0.1}}}
    rows = [
        make_row("a", None, 0, 0, 30.0, CLIP),
        make_row("b", None, 0, 0, 31.0, CLIP),
        make_row("c", None, 0, 0, None, CLIP),
    ]
    table = make_table(models, rows, CLIP)
    assert resolve(table, qps=1, slo_s=10, gpus=8).light == "b"
    assert resolve(table, qps=1, slo_s=3, gpus=8).light == "a"  # b needs 4 s
    plan = resolve(table, qps=1, slo_s=1, gpus=8)
    assert plan.light == "c" and plan.quality is None


def test_equal_quality_rows_tie_break_on_gpus_then_latency_then_row():
    models = {"a": {"latency": {1: 1.0}}, "b": {"latency": {1: 0.5}}, "c": {"latency": {1: 0.5}}}
    rows = [
        make_row("a", None, 0, 0, 10.0),
        make_row("c", None, 0, 0, 10.0),
        make_row("b", None, 0, 0, 10.0),
    ]
    table = make_table(models, rows)
    plan = resolve(table, qps=1, slo_s=10, gpus=8)
    assert (plan.row, plan.light, plan.total_gpus) == (1, "c", 1)


def test_inconsistent_fractions_rejected():
    row = make_row("a", "b", 0.5, 0.0, 10.0)
    row["fractions"]["load_heavy"] = 0.0  # direct traffic but no heavy load
    with pytest.raises(HadisError, match="row 0 has inconsistent fractions"):  # by the loader
        make_table({"a": {"latency": {1: 1.0}}, "b": {"latency": {1: 2.0}}}, [row])


def test_concurrent_calls_match_sequential_ones(monkeypatch):
    """Threads share one Resolver whose caches keep being cleared: same plans as one by one."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr("hadis_profile.resolve.CACHE_BYTES", 20_000)
    rng = random.Random(11)
    table = random_table(rng, n_models=4, n_cascade=60)
    reqs = [random_request(rng, table) for _ in range(200)]
    want = [Resolver(table).resolve(**r) for r in reqs]
    shared = Resolver(table)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: shared.resolve(**r), reqs))
    assert got == want


def test_import_is_light():
    code = (
        "import sys, hadis_profile.resolve; "
        "heavy = ['torch', 'pandas', 'scipy', 'jsonschema', 'spacy', 'transformers', "
        "'diffusers', 'matplotlib', 'typer', 'rich']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, hadis_profile.resolve_reference; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the reference is stdlib only


# ------------------------------------------------------------------------- CLI


def test_cli_resolve(tmp_path):
    from typer.testing import CliRunner

    from hadis_profile.cli import app

    path = tmp_path / "table.json"
    write_table(path, two_model_table().document)
    runner = CliRunner()
    ok = runner.invoke(app, ["resolve", str(path), "--qps", "2", "--slo", "100", "--gpus", "64"])
    assert ok.exit_code == 0, ok.output
    assert "serving plan" in ok.output and "big" in ok.output
    js = runner.invoke(
        app, ["resolve", str(path), "--qps", "2", "--slo", "100", "--gpus", "8", "--json"]
    )
    assert js.exit_code == 0
    expected = resolve(two_model_table(), qps=2, slo_s=100, gpus=8).to_dict()
    assert json.loads(js.stdout) == expected
    ov = ["resolve", str(path), "--qps", "2", "--slo", "100", "--gpus", "8", "--json"]
    js = runner.invoke(app, [*ov, "--overhead", "0.25"])
    assert js.exit_code == 0, js.output
    expected = resolve(two_model_table(), qps=2, slo_s=100, gpus=8, overhead_s=0.25).to_dict()
    assert json.loads(js.stdout) == expected and expected["overhead_s"]["override"] == 0.25
    bad = runner.invoke(
        app,
        ["resolve", str(path), "--qps", "2", "--slo", "0.5", "--gpus", "8", "--batch-sizes", "1,2"],
    )
    assert bad.exit_code == EXIT_INFEASIBLE == 3  # its own code, distinct from errors (1, 2)
    assert "below every configuration" in bad.output and "fallback" in bad.output
