"""The vectorised sweep against a literal, loop-per-prompt oracle of docs/architecture.md."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg

from hadis_profile.errors import HadisError
from hadis_profile.measurements import (
    ExternalConfig,
    LatencyStats,
    Measurements,
    ModelMeasurements,
)
from hadis_profile.sweep import (
    SweepResult,
    available_metrics,
    candidate_pairs,
    iter_sweep,
    sweep_pair,
)

M1, M2 = "clip_score:test", "pick_score:test"
COLUMNS = (
    "r",
    "d",
    "router_threshold",
    "confidence_threshold",
    "direct",
    "escalated",
    "light_frac",
    "load_light",
    "load_heavy",
    "gpu_s_per_query",
    "latency_s",
)

# ------------------------------------------------------------------------------ helpers


def make_meas(s, c, q_light, q_heavy, lat=(0.5, 13.0), features=None, ref=None, external=()):
    """Two models 'L' (light) and 'H' (heavy); q_* map metric id -> per-prompt values."""
    n = len(c) if c is not None else len(next(iter(q_light.values())))
    feats_l, feats_h = features or ({}, {})
    models = {
        "L": ModelMeasurements(
            "L",
            latency={1: LatencyStats.constant(1, lat[0])},
            quality={m: np.asarray(v, float) for m, v in q_light.items()},
            confidence=None if c is None else np.asarray(c, float),
            features=feats_l,
        ),
        "H": ModelMeasurements(
            "H",
            latency={1: LatencyStats.constant(1, lat[1])},
            quality={m: np.asarray(v, float) for m, v in q_heavy.items()},
            confidence=np.zeros(n),
            features=feats_h,
        ),
    }
    return Measurements(
        prompts=[f"p{i}" for i in range(n)],
        models=models,
        router_scores=None if s is None else np.asarray(s, float),
        reference_stats=ref or {},
        external=list(external),
    )


def oracle_row(s, c, ql, qh, lat, routed, escalate_if, r, d, rt, ct):
    """One configuration, literally: walk the prompts and pick each one's model."""
    n = len(ql[next(iter(ql))])
    direct = escalated = light = 0
    total = dict.fromkeys(ql, 0.0)
    for p in range(n):
        if routed(p):
            direct += 1
            pick = qh
        elif escalate_if(p):
            escalated += 1
            pick = qh
        else:
            light += 1
            pick = ql
        for m in ql:
            total[m] += pick[m][p]
    fd, fe, fl = direct / n, escalated / n, light / n
    return {
        "r": r,
        "d": d,
        "router_threshold": rt,
        "confidence_threshold": ct,
        "direct": fd,
        "escalated": fe,
        "light_frac": fl,
        "load_light": 1 - fd,
        "load_heavy": fd + fe,
        "gpu_s_per_query": (1 - fd) * lat[0] + (fd + fe) * lat[1],
        "latency_s": fl * lat[0] + fd * lat[1] + fe * (lat[0] + lat[1]),
        "quality": {m: total[m] / n for m in ql},
    }


def oracle_grid(s, c, ql, qh, lat, grid):
    """Every grid configuration, r-major then d, by the definitions in the architecture notes."""
    n = len(ql[next(iter(ql))])
    steps = [round(i / grid, 12) for i in range(grid + 1)]
    rows = []
    for r in steps if s is not None else [0.0]:
        k = round(r * n)
        rt = sorted(s, reverse=True)[k - 1] if k > 0 else None
        for d in steps if c is not None else [0.0]:
            ct = float(np.quantile(np.asarray(c, float), d)) if c is not None else None
            rows.append(
                oracle_row(
                    s,
                    c,
                    ql,
                    qh,
                    lat,
                    lambda p, rt=rt: rt is not None and s[p] >= rt,
                    lambda p, ct=ct: ct is not None and c[p] < ct,
                    r,
                    d,
                    math.nan if rt is None else rt,
                    math.nan if ct is None else ct,
                )
            )
    return rows


def assert_matches(res: SweepResult, rows: list[dict]):
    assert len(res) == len(rows)
    for col in COLUMNS:
        want = np.array([row[col] for row in rows], dtype=float)
        np.testing.assert_allclose(
            getattr(res, col), want, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col
        )
    for m in rows[0]["quality"]:
        want = np.array([row["quality"][m] for row in rows])
        np.testing.assert_allclose(res.quality[m], want, rtol=1e-9, atol=1e-12, err_msg=m)


def random_instance(rng, n, ties):
    if ties:
        s = rng.integers(0, 4, n).astype(float)
        c = rng.integers(0, 4, n) / 4
    else:
        s, c = rng.normal(size=n), rng.random(n)
    ql = {M1: rng.normal(size=n), M2: rng.normal(size=n)}
    qh = {M1: rng.normal(size=n) + 0.5, M2: rng.normal(size=n)}
    return s, c, ql, qh


# ------------------------------------------------------------------------ grid vs oracle


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_grid_matches_oracle(seed, ties):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    grid = int(rng.integers(1, 13))
    s, c, ql, qh = random_instance(rng, n, ties)
    res = sweep_pair(make_meas(s, c, ql, qh), "L", "H", grid=grid)
    assert_matches(res, oracle_grid(list(s), list(c), ql, qh, (0.5, 13.0), grid))
    assert res.pair == ("L", "H")
    assert list(res.quality) == [M1, M2]


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 25),
    grid=st.integers(1, 12),
    tie_levels=st.integers(1, 6),
)
def test_grid_matches_oracle_hypothesis(data, n, grid, tie_levels):
    level = st.integers(0, tie_levels - 1).map(float)
    real = st.floats(-5, 5, allow_nan=False, allow_subnormal=False)
    s = data.draw(st.lists(level | real, min_size=n, max_size=n))
    c = data.draw(st.lists(level.map(lambda x: x / 7) | real, min_size=n, max_size=n))
    ql = {M1: np.array(data.draw(st.lists(real, min_size=n, max_size=n)))}
    qh = {M1: np.array(data.draw(st.lists(real, min_size=n, max_size=n)))}
    res = sweep_pair(make_meas(s, c, ql, qh, lat=(1.0, 2.5)), "L", "H", grid=grid)
    assert_matches(res, oracle_grid(s, c, ql, qh, (1.0, 2.5), grid))


def test_corners_all_light_and_all_heavy():
    rng = np.random.default_rng(7)
    s, c, ql, qh = random_instance(rng, 50, ties=True)
    res = sweep_pair(make_meas(s, c, ql, qh), "L", "H", grid=10)
    first = (res.r == 0) & (res.d == 0)
    assert first.sum() == 1
    for m in (M1, M2):
        assert res.quality[m][first][0] == pytest.approx(ql[m].mean(), rel=1e-12)
    assert np.isnan(res.router_threshold[first][0])
    assert res.direct[first][0] == 0 and res.escalated[first][0] == 0
    assert res.latency_s[first][0] == pytest.approx(0.5)
    heavy = res.r == 1.0
    assert heavy.sum() == 11
    for m in (M1, M2):
        np.testing.assert_allclose(res.quality[m][heavy], qh[m].mean(), rtol=1e-12)
    np.testing.assert_allclose(res.direct[heavy], 1.0)
    np.testing.assert_allclose(res.escalated[heavy], 0.0)
    np.testing.assert_allclose(res.latency_s[heavy], 13.0)
    np.testing.assert_allclose(res.gpu_s_per_query, res.latency_s, rtol=1e-12)
    # r values are clean decimals (0.3, not 0.30000000000000004)
    assert 0.3 in set(res.r.tolist()) and 0.7 in set(res.d.tolist())


def test_missing_router_collapses_r_and_missing_confidence_collapses_d():
    rng = np.random.default_rng(8)
    s, c, ql, qh = random_instance(rng, 20, ties=False)
    no_router = sweep_pair(make_meas(None, c, ql, qh), "L", "H", grid=10)
    assert set(no_router.r.tolist()) == {0.0} and len(no_router) == 11
    assert np.isnan(no_router.router_threshold).all()
    assert_matches(no_router, oracle_grid(None, list(c), ql, qh, (0.5, 13.0), 10))
    no_conf = sweep_pair(make_meas(s, None, ql, qh), "L", "H", grid=10)
    assert set(no_conf.d.tolist()) == {0.0} and len(no_conf) == 11
    assert np.isnan(no_conf.confidence_threshold).all()
    assert_matches(no_conf, oracle_grid(list(s), None, ql, qh, (0.5, 13.0), 10))
    neither = sweep_pair(make_meas(None, None, ql, qh), "L", "H", grid=10)
    assert len(neither) == 1 and neither.quality[M1][0] == pytest.approx(ql[M1].mean())


# ------------------------------------------------------------------------------ exact mode


def exact_oracle(s, c):
    """Every distinct (router set, escalation set) the thresholds can realise."""
    n = len(s)
    routers = {frozenset()} | {frozenset(p for p in range(n) if s[p] >= v) for v in s}
    escal = {frozenset(p for p in range(n) if c[p] < v) for v in [*c, math.inf]}
    return {(rs, es) for rs in routers for es in escal}


@pytest.mark.parametrize("seed", range(12))
def test_exact_enumerates_every_distinct_configuration(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 15))
    s, c, ql, qh = random_instance(rng, n, ties=seed % 2 == 0)
    res = sweep_pair(make_meas(s, c, ql, qh), "L", "H", exact=True)
    got = []
    for i in range(len(res)):
        rt, ct = res.router_threshold[i], res.confidence_threshold[i]
        rs = frozenset() if np.isnan(rt) else frozenset(p for p in range(n) if s[p] >= rt)
        es = frozenset(p for p in range(n) if c[p] < ct)
        got.append((rs, es))
        assert res.r[i] == pytest.approx(len(rs) / n)
        assert res.d[i] == pytest.approx(len(es) / n)
        want = oracle_row(s, c, ql, qh, (0.5, 13.0), rs.__contains__, es.__contains__, 0, 0, 0, 0)
        for col in COLUMNS[4:]:
            assert getattr(res, col)[i] == pytest.approx(want[col], rel=1e-9, abs=1e-12)
        for m in (M1, M2):
            assert res.quality[m][i] == pytest.approx(want["quality"][m], rel=1e-9, abs=1e-12)
    assert len(set(got)) == len(got)  # no duplicates
    assert set(got) == exact_oracle(list(s), list(c))


@pytest.mark.parametrize("exact", [False, True])
def test_chunks_concatenate_to_the_whole_sweep(exact):
    rng = np.random.default_rng(11)
    s, c, ql, qh = random_instance(rng, 37, ties=True)
    meas = make_meas(s, c, ql, qh)
    whole = sweep_pair(meas, "L", "H", grid=20, exact=exact)
    for chunk_rows in (1, 5, 40, 10**6):
        chunks = list(iter_sweep(meas, [("L", "H")], grid=20, exact=exact, chunk_rows=chunk_rows))
        n_b = int((whole.r == whole.r[0]).sum())  # configurations per router cut
        assert all(len(ch) <= max(chunk_rows, n_b) for ch in chunks)
        joined = SweepResult.concat(chunks)
        for col in COLUMNS:
            np.testing.assert_array_equal(getattr(joined, col), getattr(whole, col))
        for m in whole.quality:
            np.testing.assert_allclose(joined.quality[m], whole.quality[m], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- FID in the sweep


def test_fid_metric_matches_materialised_mixtures():
    rng = np.random.default_rng(12)
    n, k, dim = 24, 3, 12
    s, c, ql, qh = random_instance(rng, n, ties=True)
    fl = rng.normal(size=(n, k, dim))
    fh = rng.normal(size=(n, k, dim)) * 1.2 + 0.3
    ref_x = rng.normal(0.4, 1.1, size=(300, dim))
    ref = {"toy": (ref_x.mean(0), np.cov(ref_x, rowvar=False))}
    meas = make_meas(s, c, ql, qh, features=({"toy": fl}, {"toy": fh}), ref=ref)
    assert available_metrics(meas) == sorted([M1, M2, "fid:toy"])
    res = sweep_pair(meas, "L", "H", grid=4)
    assert list(res.quality) == [M1, M2, "fid:toy"]
    for i in range(len(res)):
        rt, ct = res.router_threshold[i], res.confidence_threshold[i]
        heavy = [(not np.isnan(rt) and s[p] >= rt) or c[p] < ct for p in range(n)]
        x = np.concatenate([fh[p] if heavy[p] else fl[p] for p in range(n)])
        mu, sigma = x.mean(0), np.cov(x, rowvar=False)
        diff = mu - ref["toy"][0]
        covmean = np.real(linalg.sqrtm(sigma @ ref["toy"][1]))
        want = diff @ diff + np.trace(sigma) + np.trace(ref["toy"][1]) - 2 * np.trace(covmean)
        assert res.quality["fid:toy"][i] == pytest.approx(want, rel=1e-6)
    only = sweep_pair(meas, "L", "H", grid=2, metrics=["fid:toy"])
    assert list(only.quality) == ["fid:toy"]
    with pytest.raises(HadisError, match="reference statistics"):
        sweep_pair(
            make_meas(s, c, ql, qh, features=({"toy": fl}, {"toy": fh})),
            "L",
            "H",
            metrics=["fid:toy"],
        )


# ------------------------------------------------------------------------ external join


def test_external_values_join_on_rounded_r_d():
    rng = np.random.default_rng(13)
    s, c, ql, qh = random_instance(rng, 10, ties=False)
    steps = np.arange(0, 1.1, 0.1)  # HADIS's float dust: 0.30000000000000004
    ext = [
        ExternalConfig("L", "H", float(r), float(d), {"fid:hadis": 100 * float(r) + float(d)})
        for r in steps
        for d in steps
    ]
    meas = make_meas(s, c, ql, qh, external=ext)
    res = sweep_pair(meas, "L", "H", grid=10)
    np.testing.assert_allclose(res.quality["fid:hadis"], 100 * res.r + res.d, rtol=1e-9)
    with pytest.raises(HadisError, match=r"'fid:hadis' is missing for 320 of 441 .* d=0\.05"):
        sweep_pair(meas, "L", "H", grid=20)
    finer = sweep_pair(meas, "L", "H", grid=20, metrics=[M1])
    assert list(finer.quality) == [M1]
    lenient = sweep_pair(meas, "L", "H", grid=20, missing="nan")
    on_grid = np.isclose(np.round(lenient.r * 10), lenient.r * 10) & np.isclose(
        np.round(lenient.d * 10), lenient.d * 10
    )
    assert np.isfinite(lenient.quality["fid:hadis"][on_grid]).all()
    assert np.isnan(lenient.quality["fid:hadis"][~on_grid]).all()
    conflicting = [*ext, ExternalConfig("L", "H", 0.0, 0.0, {"fid:hadis": -1.0})]
    with pytest.raises(HadisError, match="conflicting"):
        sweep_pair(make_meas(s, c, ql, qh, external=conflicting), "L", "H")


# ------------------------------------------------------------------------------- errors


def test_pairs_and_errors():
    rng = np.random.default_rng(14)
    n = 6
    models = {
        name: ModelMeasurements(
            name,
            latency={1: LatencyStats.constant(1, lat)},
            quality={M1: rng.normal(size=n)},
            confidence=rng.random(n),
        )
        for name, lat in [("a", 0.5), ("b", 1.3), ("c", 13.0), ("d", 27.0), ("e", 27.0)]
    }
    meas = Measurements([f"p{i}" for i in range(n)], models, router_scores=rng.normal(size=n))
    assert candidate_pairs(meas, "all") == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("a", "e"),
        ("b", "c"), ("b", "d"), ("b", "e"), ("c", "d"), ("c", "e"),
    ]  # fmt: skip
    assert candidate_pairs(meas, "adjacent") == [("a", "b"), ("b", "c"), ("c", "d")]
    assert len(list(iter_sweep(meas, "adjacent", grid=2))) == 3
    with pytest.raises(HadisError, match="'all' or 'adjacent'"):
        candidate_pairs(meas, "some")
    with pytest.raises(HadisError, match="not faster"):
        sweep_pair(meas, "c", "a")
    with pytest.raises(HadisError, match="not faster"):
        sweep_pair(meas, "d", "e")
    with pytest.raises(HadisError, match="Unknown model 'zz'"):
        sweep_pair(meas, "a", "zz")
    with pytest.raises(HadisError, match="'pick_score:x' is not measured"):
        sweep_pair(meas, "a", "b", metrics=["pick_score:x"])
    assert np.isnan(
        sweep_pair(meas, "a", "b", metrics=["pick_score:x"], missing="nan").quality["pick_score:x"]
    ).all()
    with pytest.raises(HadisError, match="grid"):
        sweep_pair(meas, "a", "b", grid=0)
    meas.router_scores = np.array([1.0, np.nan, 0, 0, 0, 0])
    with pytest.raises(HadisError, match="router scores contain NaN"):
        sweep_pair(meas, "a", "b")
    with pytest.raises(HadisError, match="Cannot concatenate sweeps of pairs"):
        SweepResult.concat([_tiny("a", "b"), _tiny("a", "c")])
    with pytest.raises(HadisError, match="no sweep results"):
        SweepResult.concat([])


def _tiny(light, heavy):
    z = np.zeros(1)
    return SweepResult(light, heavy, *[z] * 11, quality={})


# ------------------------------------------------------------------ HADIS nominal columns


def test_nominal_mode_reproduces_hadis_columns(shared_data):
    path = shared_data / "hadis-reference" / "config_results_hybrid.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    latencies = {"0": 0.5, "1": 1.3, "2": 13.0, "3": 27.0}  # per image, from the data README
    rng = np.random.default_rng(15)
    n = 17
    models = {
        name: ModelMeasurements(
            name,
            latency={1: LatencyStats.constant(1, lat)},
            quality={M1: rng.normal(size=n)},
            confidence=rng.random(n),
        )
        for name, lat in latencies.items()
    }
    ext = [
        ExternalConfig(row["light_model"], row["heavy_model"], float(row["router_ratio"]),
                       float(row["disc_ratio"]), {"fid:clean-fid": float(row["fid"])})
        for row in rows
    ]  # fmt: skip
    meas = Measurements([f"p{i}" for i in range(n)], models, router_scores=rng.normal(size=n),
                        external=ext)  # fmt: skip
    swept = {}
    for light, heavy in candidate_pairs(meas, "all"):
        res = sweep_pair(meas, light, heavy, grid=10, nominal=True)
        for i in range(len(res)):
            key = (light, heavy, round(res.r[i], 9), round(res.d[i], 9))
            swept[key] = (res.load_heavy[i], res.latency_s[i], res.quality["fid:clean-fid"][i])
            assert res.direct[i] == res.r[i]
            assert res.escalated[i] == pytest.approx((1 - res.r[i]) * res.d[i], abs=1e-15)
    assert len(swept) == len(rows) == 726
    t_ours, t_csv, lat_ours, lat_csv, fid_ours, fid_csv = ([] for _ in range(6))
    for row in rows:
        key = (row["light_model"], row["heavy_model"], round(float(row["router_ratio"]), 9),
               round(float(row["disc_ratio"]), 9))  # fmt: skip
        t, lat, fid = swept[key]
        t_ours.append(t)
        t_csv.append(float(row["threshold"]))
        lat_ours.append(lat)
        lat_csv.append(float(row["latency"]))
        fid_ours.append(fid)
        fid_csv.append(float(row["fid"]))
    # threshold t = r + (1 - r) d is published unrounded
    assert np.isclose(t_ours, t_csv, rtol=0, atol=1e-12).all()
    # latency is published rounded to 2 decimals (HADIS's r = 0.7000000000000001 tips the
    # one exact half-cent, 1.255 -> 1.26): every row within half a unit of the last digit
    assert np.isclose(lat_ours, lat_csv, rtol=0, atol=0.005 + 1e-9).all()
    assert (np.round(lat_ours, 2) == np.array(lat_csv)).mean() > 0.99
    np.testing.assert_array_equal(fid_ours, fid_csv)


def test_sweep_pair_takes_exactly_the_options_of_iter_sweep():
    """One parameter list: sweep_pair forwards its options to iter_sweep."""
    import inspect
    import typing

    from hadis_profile.sweep import SweepOptions

    forwarded = set(inspect.signature(iter_sweep).parameters) - {"meas", "pairs", "chunk_rows"}
    assert set(typing.get_type_hints(SweepOptions)) == forwarded
    with pytest.raises(TypeError, match="chunk_rows"):
        s, c, ql, qh = random_instance(np.random.default_rng(0), 8, False)
        sweep_pair(make_meas(s, c, ql, qh), "L", "H", chunk_rows=3)
