"""The non-dominated filter against brute force, on random data and on HADIS's own sweep."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.measurements import (
    ExternalConfig,
    LatencyStats,
    Measurements,
    ModelMeasurements,
)
from hadis_profile.pareto import (
    choose_confidence_scorer,
    compile_run,
    compile_table,
    pareto_front,
)
from hadis_profile.sweep import candidate_pairs, sweep_pair
from hadis_profile.table import validate_document


def brute_front(cost, quality, higher_is_better, key=None) -> set[int]:
    """O(n^2) definition: drop dominated rows, then keep the first (by key, index) of each tie."""
    n = len(cost)
    key = list(range(n)) if key is None else key

    def at_least_as_good(j, i):
        return quality[j] >= quality[i] if higher_is_better else quality[j] <= quality[i]

    def strictly_better(j, i):
        return quality[j] > quality[i] if higher_is_better else quality[j] < quality[i]

    survivors = [
        i
        for i in range(n)
        if not any(
            cost[j] <= cost[i]
            and at_least_as_good(j, i)
            and (cost[j] < cost[i] or strictly_better(j, i))
            for j in range(n)
        )
    ]
    chosen: dict[tuple[float, float], int] = {}
    for i in survivors:
        point = (cost[i], quality[i])
        if point not in chosen or (key[i], i) < (key[chosen[point]], chosen[point]):
            chosen[point] = i
    return set(chosen.values())


# Small integer ranges make exact ties (same cost, same quality, or both) common.
points = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 3)), min_size=0, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(points, st.booleans())
def test_matches_brute_force_with_ties(rows, higher_is_better):
    cost = [float(c) for c, _, _ in rows]
    quality = [float(q) / 2 for _, q, _ in rows]
    key = [k for _, _, k in rows]
    got = pareto_front(cost, quality, higher_is_better=higher_is_better, order_key=key)
    assert set(got.tolist()) == brute_front(cost, quality, higher_is_better, key)
    assert len(set(got.tolist())) == len(got)
    # Returned in increasing cost, and quality strictly improving along the front.
    c = np.asarray(cost)[got]
    q = np.asarray(quality)[got] * (1 if higher_is_better else -1)
    assert np.all(np.diff(c) > 0) and np.all(np.diff(q) > 0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 100, allow_nan=False, width=32),
            st.floats(-50, 50, allow_nan=False, width=32),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_matches_brute_force_continuous(rows, higher_is_better):
    cost = [c for c, _ in rows]
    quality = [q for _, q in rows]
    got = pareto_front(cost, quality, higher_is_better=higher_is_better)
    assert set(got.tolist()) == brute_front(cost, quality, higher_is_better)


def test_tie_break_is_the_order_key_not_the_input_order():
    cost, quality = [2.0, 1.0, 1.0, 1.0], [5.0, 3.0, 3.0, 3.0]
    lex = [np.array([0, 1, 0, 0]), np.array([0.0, 0.0, 0.5, 0.2])]  # second key breaks the tie
    assert pareto_front(cost, quality, higher_is_better=True, order_key=lex).tolist() == [3, 0]
    assert pareto_front(cost, quality, higher_is_better=True).tolist() == [1, 0]
    # A 2-D array is read as keys, most significant first.
    assert pareto_front(
        cost, quality, higher_is_better=True, order_key=np.vstack(lex)
    ).tolist() == [3, 0]


def test_edge_cases():
    assert pareto_front([], [], higher_is_better=True).tolist() == []
    assert pareto_front([3.0], [1.0], higher_is_better=False).tolist() == [0]
    with pytest.raises(HadisError, match="finite"):
        pareto_front([1.0, np.nan], [1.0, 2.0], higher_is_better=True)
    with pytest.raises(HadisError, match="2 costs but 1"):
        pareto_front([1.0, 2.0], [1.0], higher_is_better=True)


# ---------------------------------------------------------------- HADIS reference sweep

ADJACENT = {(0, 1), (1, 2), (2, 3)}


def read_hybrid(shared_data: Path) -> list[dict]:
    path = shared_data / "hadis-reference" / "config_results_hybrid.csv"
    with path.open(newline="") as f:
        rows = [
            {
                "light": int(r["light_model"]),
                "heavy": int(r["heavy_model"]),
                "r": float(r["router_ratio"]),
                "d": float(r["disc_ratio"]),
                "latency": float(r["latency"]),
                "fid": float(r["fid"]),
            }
            for r in csv.DictReader(f)
        ]
    return [r for r in rows if (r["light"], r["heavy"]) in ADJACENT]


def test_hadis_csv_front_matches_brute_force(shared_data):
    rows = read_hybrid(shared_data)
    assert len(rows) == 3 * 121
    cost = [r["latency"] for r in rows]
    fid = [r["fid"] for r in rows]
    key = [(r["light"], r["heavy"], r["r"], r["d"]) for r in rows]
    order_key = [np.array([k[i] for k in key]) for i in range(4)]
    got = pareto_front(cost, fid, higher_is_better=False, order_key=order_key)
    assert set(got.tolist()) == brute_front(cost, fid, False, key)
    # The published sweep has exact ties on its front (e.g. 11.44 s / 20.54 FID three times):
    # exactly one survives, the first by (pair, r, d).
    kept = {(rows[i]["latency"], rows[i]["fid"]): key[i] for i in got}
    assert kept[(11.44, 20.54)] == (1, 2, 0.6, 0.6)
    # Sanity on the extremes: the cheapest row is model 0 alone, the best FID is in (2, 3).
    assert key[got[0]] == (0, 1, 0.0, 0.0)
    assert rows[got[-1]]["fid"] == min(fid)


# ---------------------------------------------------------------- compile_table

FID = "fid:clean-fid-imagenet1k"
HADIS_LATENCY = (0.5, 1.3, 13.0, 27.0)


def hadis_measurements(shared_data: Path, n_prompts: int = 20) -> Measurements:
    """The four HADIS models (published latencies) with the authors' FID sweep as external rows.

    Router scores and confidences are arbitrary: in nominal mode they only set
    the thresholds, while r, d, fractions, cost and (external) FID are HADIS's.
    """
    rng = np.random.default_rng(0)
    models = {
        f"m{i}": ModelMeasurements(
            name=f"m{i}",
            latency={1: LatencyStats.constant(1, lat)},
            confidence=rng.random(n_prompts),
        )
        for i, lat in enumerate(HADIS_LATENCY)
    }
    path = shared_data / "hadis-reference" / "config_results_hybrid.csv"
    with path.open(newline="") as f:
        external = [
            ExternalConfig(
                f"m{r['light_model']}",
                f"m{r['heavy_model']}",
                float(r["router_ratio"]),
                float(r["disc_ratio"]),
                {FID: float(r["fid"])},
            )
            for r in csv.DictReader(f)
        ]
    return Measurements(
        prompts=[f"p{i}" for i in range(n_prompts)],
        models=models,
        router_scores=rng.normal(size=n_prompts),
        external=external,
        provenance={"run_id": "hadis-test", "hardware": {"label": "l40s"}},
    )


def nominal_latency(light: int, heavy: int, r: float, d: float) -> float:
    """HADIS's nominal per-query latency, from the data README (independent of sweep.py)."""
    ll, lh = HADIS_LATENCY[light], HADIS_LATENCY[heavy]
    t = r + (1 - r) * d
    return (1 - t) * ll + r * lh + (1 - r) * d * (ll + lh)


def test_compile_hadis_adjacent_keeps_exactly_the_non_dominated_rows(shared_data):
    rows = read_hybrid(shared_data)
    # The CSV's latency column is the nominal formula rounded to 2 decimals; the
    # table uses the exact values, so the truth here does too (rounded to 1e-9).
    exact = [round(nominal_latency(r["light"], r["heavy"], r["r"], r["d"]), 9) for r in rows]
    assert max(abs(e - r["latency"]) for e, r in zip(exact, rows, strict=True)) <= 0.005 + 1e-9
    fid = [r["fid"] for r in rows]
    key = [(r["light"], r["heavy"], r["r"], r["d"]) for r in rows]
    truth = brute_front(exact, fid, False, key)
    truth_points = {(exact[i], fid[i]): key[i] for i in truth}

    doc = compile_table(hadis_measurements(shared_data), pairs="adjacent", nominal=True)
    validate_document(doc)
    payload = doc["payload"]
    assert payload["provenance"]["quality_metric"] == FID
    assert payload["provenance"]["sweep"]["configurations_evaluated"] == 3 * 121
    table_rows = payload["rows"]
    front = [r for r in table_rows if r["on_front"]]
    points = {(round(r["gpu_s_per_query"], 9), r["quality"][FID]) for r in front}
    assert points == set(truth_points)
    assert len(front) == len(points)  # one row per tied point
    # Without --per-pair every cascade row is on the front, and is the CSV row it claims.
    by_key = {k: r for k, r in zip(key, rows, strict=True)}
    for r in table_rows:
        if r["kind"] == "single":
            continue
        assert r["on_front"]
        k = (int(r["light"][1:]), int(r["heavy"][1:]), r["r"], r["d"])
        assert r["quality"][FID] == by_key[k]["fid"]
        assert r["fractions"]["direct"] == pytest.approx(r["r"])
        assert r["fractions"]["escalated"] == pytest.approx((1 - r["r"]) * r["d"])
        # Ties keep the first by (pair, r, d), as the brute force does.
        assert k == truth_points[(round(r["gpu_s_per_query"], 9), r["quality"][FID])]
    # One single row per model; model 0 alone ties the (0, 1, r=0, d=0) row and wins the tie.
    singles = {r["light"]: r for r in table_rows if r["kind"] == "single"}
    assert sorted(singles) == ["m0", "m1", "m2", "m3"]
    assert singles["m0"]["on_front"] and singles["m0"]["quality"][FID] == 29.75
    assert not any(r["kind"] == "cascade" and r["gpu_s_per_query"] == 0.5 for r in table_rows)
    assert not singles["m3"]["on_front"]  # 27 s / 19.95 is beaten by (2, 3, 0.2, 0.5)
    costs = [r["gpu_s_per_query"] for r in table_rows]
    assert costs == sorted(costs)


def test_compile_hadis_per_pair_is_the_union_of_pair_fronts(shared_data):
    rows = read_hybrid(shared_data)
    doc = compile_table(
        hadis_measurements(shared_data), pairs="adjacent", nominal=True, per_pair=True
    )
    validate_document(doc)
    got = {
        (int(r["light"][1:]), int(r["heavy"][1:]), r["r"], r["d"])
        for r in doc["payload"]["rows"]
        if r["kind"] == "cascade"
    }
    want = set()
    for pair in sorted(ADJACENT):
        sub = [r for r in rows if (r["light"], r["heavy"]) == pair]
        cost = [round(nominal_latency(*pair, r["r"], r["d"]), 9) for r in sub]
        key = [(r["r"], r["d"]) for r in sub]
        want |= {(*pair, *key[i]) for i in brute_front(cost, [r["fid"] for r in sub], False, key)}
    assert got == want
    assert doc["payload"]["provenance"]["per_pair"] is True


def small_measurements(n: int = 40, seed: int = 0) -> Measurements:
    """Three models with per-prompt CLIP, confidences and router scores (ties on purpose)."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n)
    models = {}
    for i, (name, lat, q0, slope) in enumerate(
        (("fast", 0.5, 30.0, 8.0), ("mid", 1.5, 31.0, 5.0), ("slow", 6.0, 32.0, 2.0))
    ):
        models[name] = ModelMeasurements(
            name=name,
            latency={
                1: LatencyStats.constant(1, lat),
                4: LatencyStats(4, 3 * lat, 0.1, 3 * lat, 3.1 * lat, 3.2 * lat, 2**30),
                8: LatencyStats(8, math.nan, math.nan, math.nan, math.nan, math.nan, None, True),
            },
            quality={"clip_score:test": np.round(q0 - slope * hard + rng.normal(0, 1, n), 1)},
            confidence=np.round(1 - hard + rng.normal(0, 0.2, n), 1) if i < 2 else None,
            steps=2 + 10 * i,
        )
    return Measurements(
        prompts=[f"prompt {i}" for i in range(n)],
        models=models,
        router_scores=np.round(hard + rng.normal(0, 0.3, n), 1),
        router_spec={"features": ["a"], "weights": [1.0], "mean": [0.0], "std": [1.0]},
        provenance={"run_id": "small", "seed": seed},
    )


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("pairs", ["all", "adjacent"])
def test_compile_matches_brute_force_over_the_whole_sweep(exact, pairs):
    meas = small_measurements()
    doc = compile_table(meas, exact=exact, pairs=pairs)
    validate_document(doc)
    rank = {m: i for i, m in enumerate(meas.ordered_models())}
    cost, qual, key = [], [], []
    for light, heavy in candidate_pairs(meas, pairs):
        res = sweep_pair(meas, light, heavy, exact=exact, metrics=["clip_score:test"])
        cost += np.round(res.gpu_s_per_query, 9).tolist()
        qual += np.round(res.quality["clip_score:test"], 9).tolist()
        key += [(1, rank[light], rank[heavy], r, d) for r, d in zip(res.r, res.d, strict=True)]
    for name in meas.ordered_models():
        cost.append(meas.models[name].batch1_latency())
        qual.append(round(float(np.mean(meas.models[name].quality["clip_score:test"])), 9))
        key.append((0, rank[name], -1, 0.0, 0.0))
    truth = brute_front(cost, qual, True, key)
    rows = doc["payload"]["rows"]
    front = [r for r in rows if r["on_front"]]
    assert {
        (round(r["gpu_s_per_query"], 9), round(r["quality"]["clip_score:test"], 9)) for r in front
    } == {(cost[i], qual[i]) for i in truth}
    chosen = {
        (
            0 if r["kind"] == "single" else 1,
            rank[r["light"]],
            -1 if r["heavy"] is None else rank[r["heavy"]],
            r["r"],
            r["d"],
        )
        for r in front
    }
    assert chosen == {key[i] for i in truth}
    assert len([r for r in rows if r["kind"] == "single"]) == 3
    assert all(r["on_front"] for r in rows if r["kind"] == "cascade")


def test_exact_chunks_reduce_to_the_same_table(monkeypatch):
    """Front of a union == front of the union of fronts: tiny chunks change nothing."""
    from hadis_profile import sweep

    meas = small_measurements(n=60, seed=3)
    whole = compile_table(meas, exact=True, per_pair=True)
    real = sweep.iter_sweep

    def tiny_chunks(*args, **kwargs):
        kwargs["chunk_rows"] = 5
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "iter_sweep", tiny_chunks)
    chunked = compile_table(meas, exact=True, per_pair=True)
    assert chunked["payload"]["rows"] == whole["payload"]["rows"]


def test_compile_contents_and_errors():
    meas = small_measurements()
    doc = compile_table(meas, quality_metric="clip_score")
    p = doc["payload"]
    assert p["router"] == {"features": ["a"], "weights": [1.0], "mean": [0.0], "std": [1.0]}
    assert p["models"]["fast"]["max_batch"] == 4 and p["models"]["fast"]["order"] == 0
    assert p["models"]["slow"]["latency"]["8"]["mean_s"] is None  # NaN -> null
    assert p["models"]["fast"]["peak_mem_bytes"] == 2**30
    assert p["provenance"]["metrics"] == {
        "clip_score:test": {"higher_is_better": True, "set_level": False}
    }
    assert p["provenance"]["seeds"] == {"seed": 0}
    assert p["provenance"]["grid"] == {"mode": "grid", "steps": 10, "nominal": False}
    fast = next(r for r in p["rows"] if r["kind"] == "single" and r["light"] == "fast")
    assert fast["quality"]["clip_score:test"] == pytest.approx(
        np.mean(meas.models["fast"].quality["clip_score:test"])
    )
    assert "NaN" not in json.dumps(doc)
    with pytest.raises(HadisError, match=r"Unknown metric 'fid'.*clip_score:test"):
        compile_table(meas, quality_metric="fid")
    with pytest.raises(HadisError, match="adjacent"):
        compile_table(meas, pairs="neighbours")


def test_single_model_run_has_only_its_single_row():
    meas = small_measurements()
    meas.models = {"fast": meas.models["fast"]}
    doc = compile_table(meas)
    validate_document(doc)
    rows = doc["payload"]["rows"]
    assert [(r["kind"], r["light"], r["on_front"]) for r in rows] == [("single", "fast", True)]


# --------------------------------------------------------------------------- from a run folder


def test_sweep_options_are_refused_naming_the_parameter():
    meas = small_measurements()
    for kwargs, param in (({"pairs": "neighbours"}, "pairs"), ({"grid": 0}, "grid")):
        with pytest.raises(ParameterError) as e:
            compile_table(meas, **kwargs)
        assert e.value.param == param and e.value.exit_code == 2
        assert str(e.value).startswith(param) and "--" not in str(e.value)


@pytest.mark.parametrize(
    ("available", "latest", "requested", "expected"),
    [
        ([], None, None, None),
        (["c:a"], None, None, "c:a"),
        (["c:a"], "c:zzz", None, "c:a"),  # the only one, whatever was recorded last
        (["c:a", "c:b"], "c:b", None, "c:b"),  # several: the one recorded last
        (["c:a", "c:b"], "c:b", "c:a", "c:a"),  # asked for wins over the latest
        (["c:head:1", "c:other"], None, "c:h", "c:head:1"),  # unique prefix
        (["c:a", "c:b"], None, None, "several scorers (c:a, c:b); choose one with requested"),
        (["c:a", "c:b"], "c:gone", None, "several scorers"),
        (["c:a", "c:b"], "c:a", "c:", "'c:' matches several of the run's confidence scorers"),
        (["c:a"], None, "x", "requested 'x' is not among the run's confidence scorers (c:a)"),
        ([], None, "x", "is not among the run's confidence scorers (none)"),
    ],
)
def test_choose_confidence_scorer(available, latest, requested, expected):
    if expected is None or expected in available:
        assert choose_confidence_scorer(available, latest=latest, requested=requested) == expected
        return
    with pytest.raises(ParameterError, match=re.escape(expected)) as e:
        choose_confidence_scorer(available, latest=latest, requested=requested)
    assert e.value.param == "requested"


@pytest.fixture
def two_scorer_run(tmp_path):
    """A synthetic run with two more confidence scorers, the first recorded as learned."""
    from hadis_profile.measure.discriminator_run import record_discriminator
    from hadis_profile.synthetic import write_synthetic_run

    store = write_synthetic_run(tmp_path / "run", n_prompts=30)
    rng = np.random.default_rng(5)
    for scorer in ("confidence:hadis-head:a", "confidence:hadis-head:b"):
        for model in store.models():
            k = store.image_ids(model).shape[1]
            store.put_confidences_bulk(model, rng.uniform(size=(30, k)), scorer=scorer)
    spec = {"kind": "learned", "scorer_id": "confidence:hadis-head:a", "encoder": "e"}
    record_discriminator(store, spec)
    store.close()
    return tmp_path / "run", spec


def test_compile_run_equals_compile_table_on_the_chosen_scorer(two_scorer_run):
    from hadis_profile.store import RunStore

    run, spec = two_scorer_run
    for confidence, expected_disc in (
        (None, spec),  # the discriminator recorded last, with its recorded spec
        ("confidence:hadis-head:b", {"scorer_id": "confidence:hadis-head:b"}),
        ("confidence:synthetic", {"scorer_id": "confidence:synthetic"}),
    ):
        chosen = expected_disc["scorer_id"]
        doc = compile_run(run, confidence=confidence, pairs="adjacent", grid=4, nominal=True)
        with RunStore.open(run) as store:
            meas = store.load_measurements(confidence_scorer=chosen)
        meas.provenance["discriminator"] = expected_disc
        expected = compile_table(meas, pairs="adjacent", grid=4, nominal=True)
        assert doc["payload"] == expected["payload"] and doc["sha256"] == expected["sha256"]
        assert doc["payload"]["provenance"]["discriminator"] == expected_disc
    # The scorer matters: the thresholds are calibrated on its confidences.
    a = compile_run(run, confidence="confidence:hadis-head:a", grid=4)["payload"]["rows"]
    b = compile_run(run, confidence="confidence:hadis-head:b", grid=4)["payload"]["rows"]
    assert [r["confidence_threshold"] for r in a] != [r["confidence_threshold"] for r in b]


def test_compile_run_names_its_own_parameters(two_scorer_run, tmp_path):
    run, _ = two_scorer_run
    with pytest.raises(ParameterError, match=r"^confidence 'confidence:hadis-head' matches") as e:
        compile_run(run, confidence="confidence:hadis-head")
    assert e.value.param == "confidence"
    assert e.value.for_flag("--confidence").startswith("--confidence 'confidence:hadis-head'")
    with pytest.raises(ParameterError) as e:  # refused before the run is even opened
        compile_run(tmp_path / "no-such-run", grid=0)
    assert e.value.param == "grid"


def test_a_run_profiled_with_random_weights_is_refused(tmp_path):
    """run --no-weights measures architecture only: its models never reach a table."""
    from hadis_profile.synthetic import write_synthetic_run

    store = write_synthetic_run(tmp_path / "run", n_prompts=10)
    try:
        name, info = next(iter(store.models().items()))
        store.upsert_model(
            name, spec_hash=info["spec_hash"], spec={**info["spec"], "weights": "random"}
        )
        meas = store.load_measurements()
    finally:
        store.close()
    assert meas.provenance["random_weights"] == [name]
    with pytest.raises(HadisError, match=rf"'{name}' was profiled with random weights"):
        compile_table(meas)
    meas.provenance["random_weights"] = []
    assert compile_table(meas)["payload"]["rows"]  # the same data with real weights compiles
