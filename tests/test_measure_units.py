"""hadis_profile.measure: the parts that need torch but no diffusion model."""

from __future__ import annotations

import math
import sys
import types
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hadis_profile import samples as SA  # noqa: E402
from hadis_profile.errors import HadisError  # noqa: E402
from hadis_profile.measure import latency as L  # noqa: E402
from hadis_profile.measure import memory as M  # noqa: E402
from hadis_profile.measure import plugins as PL  # noqa: E402
from hadis_profile.measure import scorers as S  # noqa: E402
from hadis_profile.measure.generate import image_seed  # noqa: E402

# ----------------------------------------------------------------------------- statistics


def test_summarize_matches_numpy():
    samples = [0.10, 0.12, 0.11, 0.30, 0.105]
    s = SA.summarize(4, samples, warmup=2, peak_mem=123)
    a = np.array(samples)
    assert s.batch_size == 4 and s.reps == 5 and s.warmup == 2 and s.peak_mem_bytes == 123
    assert s.mean_s == pytest.approx(a.mean())
    assert s.std_s == pytest.approx(a.std(ddof=1))
    assert s.p50_s == pytest.approx(np.median(a))
    assert s.p90_s == pytest.approx(np.percentile(a, 90))
    assert s.p99_s == pytest.approx(np.percentile(a, 99))
    assert s.cv == pytest.approx(a.std(ddof=1) / a.mean())
    assert not s.infeasible
    one = SA.summarize(1, [0.5])
    assert one.std_s == 0.0 and one.p99_s == 0.5


def test_outlier_warning():
    steady = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    assert SA.outlier_warning(steady) is None
    assert SA.outlier_warning([1.0, 5.0]) is None  # too few samples to judge
    msg = SA.outlier_warning([*steady, 3.0])
    assert msg is not None and "outlier" in msg and "median" in msg
    noisy = SA.outlier_warning([1.0, 1.3, 0.8, 1.25, 0.75, 1.1])
    assert noisy is not None and "CV" in noisy


def test_is_oom():
    assert M.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert M.is_oom(RuntimeError("CUDA error: out of memory"))
    assert M.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert M.is_oom(MemoryError())
    assert not M.is_oom(RuntimeError("shape mismatch"))
    assert not M.is_oom(ValueError("out of memory"))  # not an allocator error


def _fake_model(
    limit: int, calls: list[int], exc: type[BaseException] = torch.cuda.OutOfMemoryError
):
    def fn(b: int) -> None:
        calls.append(b)
        if b > limit:
            raise exc("CUDA out of memory. Tried to allocate 80.00 GiB")

    return fn


def test_sweep_stops_at_first_oom_and_records_it():
    calls: list[int] = []
    seen: list[L.LatencyPoint] = []
    points = L.latency_sweep(
        _fake_model(4, calls), [32, 1, 2, 4, 8, 16], warmup=1, reps=3, on_point=seen.append
    )
    assert [p.stats.batch_size for p in points] == [1, 2, 4, 8]
    assert seen == points  # committed one by one, the OOM point included
    assert [p.infeasible for p in points] == [False, False, False, True]
    bad = points[-1]
    assert math.isnan(bad.stats.mean_s) and bad.stats.reps == 0 and "out of memory" in bad.error
    assert 16 not in calls and 32 not in calls  # the batch stopped growing
    assert all(p.stats.reps == 3 and p.stats.warmup == 1 for p in points[:3])
    assert all(p.stats.peak_mem_bytes and p.stats.peak_mem_bytes > 0 for p in points[:3])


def test_sweep_oom_as_plain_runtime_error_and_other_errors_propagate():
    calls: list[int] = []
    points = L.latency_sweep(_fake_model(1, calls, RuntimeError), [1, 2, 4], warmup=0, reps=2)
    assert [p.infeasible for p in points] == [False, True]

    def broken(b: int) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        L.latency_sweep(broken, [1])


def test_enough_is_asked_once_at_min_reps_and_may_end_the_point():
    asked: list[int] = []

    def enough(answer: bool):
        def ask(samples: list[float]) -> bool:
            asked.append(len(samples))
            return answer

        return ask

    calls: list[int] = []
    done = L.measure_point(
        _fake_model(8, calls), 2, warmup=1, reps=8, min_reps=3, enough=enough(True)
    )
    assert done.stats.reps == 3 and asked == [3] and len(calls) == 1 + 3
    asked.clear()
    full = L.measure_point(
        _fake_model(8, calls), 2, warmup=0, reps=8, min_reps=3, enough=enough(False)
    )
    assert full.stats.reps == 8 and asked == [3]  # asked once, then every call it asked for


def test_time_budget_reduces_reps_but_not_below_min():
    import time

    def slow(b: int) -> None:
        time.sleep(0.02)

    p = L.measure_point(slow, 1, warmup=1, reps=50, min_reps=3, time_budget_s=0.05)
    assert p.stats.reps == 3
    p = L.measure_point(slow, 1, warmup=1, reps=4, time_budget_s=100.0)
    assert p.stats.reps == 4


def test_overhead_helpers_report_per_item_seconds():
    import time

    def router(prompt: str) -> float:
        time.sleep(0.002)
        return len(prompt)

    stats = L.router_overhead(router, ["a", "bb", "ccc"], reps=2)
    assert stats.reps == 6 and 0.0015 < stats.p50_s < 0.05

    class Sleepy(S.Scorer):
        metric_id = "clip_score:sleepy"

        def _score_batch(self, images, prompts):
            time.sleep(0.004)
            return np.zeros(len(images))

    imgs = torch.zeros(8, 3, 8, 8)
    st = L.scorer_overhead(Sleepy(), imgs, ["p"] * 8, batch_size=4, reps=2)
    assert st.batch_size == 4 and st.reps == 4
    assert 0.0008 < st.p50_s < 0.01  # ~4 ms per batch of 4 -> ~1 ms per image


def test_peak_rss_is_positive():
    M.reset_peak_rss()
    assert M.peak_rss() > 1_000_000


# ----------------------------------------------------------------------------- seeds


def test_image_seed_is_stable_distinct_and_sqlite_safe():
    s = image_seed(0, 0, 0)
    assert s == image_seed(0, 0, 0)
    assert s == 3077249627704155155  # fixed forever: changing it breaks resumed runs
    seeds = {image_seed(b, p, i) for b in range(3) for p in range(50) for i in range(4)}
    assert len(seeds) == 600
    assert all(0 <= x < 2**63 for x in seeds)


# ----------------------------------------------------------------------------- images


def test_image_conversions_agree():
    from PIL import Image

    rng = np.random.default_rng(0)
    floats = rng.random((2, 3, 6, 5)).astype(np.float32)
    as_tensor = S.to_uint8_chw(torch.from_numpy(floats))
    as_hwc = S.to_uint8_chw(list(floats.transpose(0, 2, 3, 1)))
    expected = (floats * 255).round().astype(np.uint8)  # diffusers' numpy_to_pil
    for t, h, e in zip(as_tensor, as_hwc, expected, strict=True):
        assert t.dtype == torch.uint8 and tuple(t.shape) == (3, 6, 5)
        np.testing.assert_array_equal(t.numpy(), e)
        np.testing.assert_array_equal(h.numpy(), e)
    pil = S.to_pil(as_tensor)
    assert isinstance(pil[0], Image.Image) and pil[0].size == (5, 6)
    back = S.to_uint8_chw(pil)
    np.testing.assert_array_equal(back[1].numpy(), expected[1])
    gray = S.to_uint8_chw([np.zeros((4, 4), dtype=np.uint8)])
    assert tuple(gray[0].shape) == (3, 4, 4)


# ----------------------------------------------------------------------------- plug-ins


@pytest.fixture()
def plugin_module(monkeypatch):
    mod = types.ModuleType("hadis_test_plugins")

    def brightness(images, prompts):
        return [float(im.float().mean()) for im in images]

    class Constant(S.Scorer):
        metric_id = "pick_score:constant"

        def __init__(self, value: float = 1.0) -> None:
            self.value = value

        def _score_batch(self, images, prompts):
            return np.full(len(images), self.value)

    def make_constant():
        return Constant(2.0)

    class Flat(S.FeatureExtractor):
        extractor_id = "flat"

        def _features_batch(self, images):
            return np.stack([im.float().flatten().numpy()[:4] for im in images])

    mod.brightness = brightness
    mod.Constant = Constant
    mod.make_constant = make_constant
    mod.Flat = Flat
    mod.flat_factory = lambda: Flat()
    mod.half = lambda images, prompts: [0.5] * len(images)
    monkeypatch.setitem(sys.modules, "hadis_test_plugins", mod)
    return mod


def test_plugin_scorers(plugin_module):
    imgs = torch.full((3, 3, 4, 4), 0.5)
    fn = PL.load_scorer("hadis_test_plugins:brightness", metric_id="clip_score:brightness")
    assert fn.metric_id == "clip_score:brightness"
    np.testing.assert_allclose(fn.score(imgs, ["a", "b", "c"]), [128.0] * 3)
    cls = PL.load_scorer("hadis_test_plugins:Constant", value=3.0)
    np.testing.assert_allclose(cls.score(imgs, ["a"] * 3), [3.0] * 3)
    factory = PL.load_scorer("hadis_test_plugins:make_constant")
    np.testing.assert_allclose(factory.score(imgs, ["a"] * 3), [2.0] * 3)
    via_name = PL.make_scorer("hadis_test_plugins:Constant")
    assert via_name.metric_id == "pick_score:constant"
    disc = PL.load_discriminator("hadis_test_plugins:half", scorer_id="half")
    np.testing.assert_allclose(disc.confidence(imgs, ["a"] * 3), [0.5] * 3)
    ext = PL.load_extractor("hadis_test_plugins:Flat")
    assert ext.features(imgs).shape == (3, 4)
    made = PL.load_extractor("hadis_test_plugins:flat_factory")
    assert isinstance(made, plugin_module.Flat)
    with pytest.raises(HadisError, match="does not give a FeatureExtractor"):
        PL.load_extractor("hadis_test_plugins:make_constant")  # a factory of something else


def test_plugin_errors(plugin_module):
    with pytest.raises(HadisError, match="metric id"):
        PL.load_scorer("hadis_test_plugins:brightness")
    with pytest.raises(HadisError, match="Unknown metric"):
        PL.load_scorer("hadis_test_plugins:brightness", metric_id="sharpness:x")
    with pytest.raises(HadisError, match="has no 'nope'"):
        PL.load_scorer("hadis_test_plugins:nope")
    with pytest.raises(HadisError, match="Cannot import"):
        PL.load_scorer("no_such_module_xyz:fn")
    with pytest.raises(HadisError, match=r"package\.module:callable"):
        PL.load_scorer("just-a-name")
    with pytest.raises(HadisError, match="Unknown scorer"):
        PL.make_scorer("sharpness")
    with pytest.raises(HadisError, match="2 prompts"):
        PL.load_scorer("hadis_test_plugins:Constant").score(torch.zeros(3, 3, 4, 4), ["a", "b"])


# ----------------------------------------------------------------------------- FID features


def test_module_extractor_and_reference_stats():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
    )
    ext = S.TorchModuleExtractor(net, "tiny-cnn", image_size=16, batch_size=3)
    imgs = torch.rand(7, 3, 20, 20)
    feats = ext.features(imgs)
    assert feats.shape == (7, 4) and feats.dtype == np.float32
    # batching does not change features
    np.testing.assert_allclose(
        feats,
        S.TorchModuleExtractor(net, "x", image_size=16, batch_size=7).features(imgs),
        rtol=1e-5,
        atol=1e-6,
    )
    mu, sigma = S.reference_stats(feats)
    np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False))
    with pytest.raises(HadisError):
        S.reference_stats(feats[:1])


def test_inception_extractor_explains_what_is_missing(tmp_path):
    with pytest.raises(HadisError, match=r"torch-fidelity|Inception weights"):
        S.InceptionExtractor(tmp_path / "missing.pth")


def test_cli_import_stays_light():
    import subprocess

    code = (
        "import sys, hadis_profile.cli, hadis_profile.measure; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- adaptive repetitions


def test_median_interval_has_the_binomial_coverage_it_claims():
    """The order-statistic interval against scipy's binomial distribution, for n = 1..60."""
    from scipy.stats import binom

    for n in range(1, 61):
        xs = list(range(n))  # the values are their own ranks
        ci = SA.median_ci(xs)
        # the largest k with coverage P(k <= B <= n - k) >= 95%, B ~ Binomial(n, 1/2)
        ks = [k for k in range(1, n // 2 + 1) if 1 - 2 * binom.cdf(k - 1, n, 0.5) >= 0.95]
        if not ks:
            assert ci is None, n
            continue
        k = max(ks)
        assert ci == (k - 1, n - k), n  # 0-based order statistics x_(k), x_(n-k+1)
    assert SA.median_ci([5.0] * 5) is None and SA.median_ci([5.0] * 6) == (5.0, 5.0)
    assert SA.median_ci_rel([1.0, 1.01, 0.99, 1.0, 1.02, 0.98]) == pytest.approx(0.02)


class FakeTimer:
    """Stands in for latency.Timer: returns scripted durations (and calls the function)."""

    script: ClassVar[list[float]] = []

    def __init__(self, device: str = "cpu") -> None:
        self.i = 0

    def __call__(self, fn):
        fn()
        t = FakeTimer.script[self.i % len(FakeTimer.script)]
        self.i += 1
        return t


def test_a_stable_point_stops_at_the_minimum_and_a_noisy_one_runs_to_the_maximum(monkeypatch):
    monkeypatch.setattr(L, "Timer", FakeTimer)
    FakeTimer.script = [1.0, 1.0, 1.001, 0.999, 1.0, 1.0005] * 10
    p = L.measure_point(lambda b: None, 1, warmup=0, reps=30, min_reps=6, tolerance=0.02)
    assert p.stats.reps == 6 and p.converged and not p.budget_cut and p.ci_rel <= 0.02
    FakeTimer.script = [1.0, 1.5, 0.7, 1.2, 0.9, 1.4, 0.8, 1.1]
    p = L.measure_point(lambda b: None, 1, warmup=0, reps=30, min_reps=6, tolerance=0.02)
    assert p.stats.reps == 30 and p.converged is False and not p.budget_cut
    assert p.ci_rel == pytest.approx(SA.median_ci_rel(p.samples_s))
    # without a tolerance: exactly `reps` calls, as before
    p = L.measure_point(lambda b: None, 1, warmup=0, reps=7, min_reps=6, tolerance=None)
    assert p.stats.reps == 7 and p.converged is None


def test_a_time_budget_cuts_a_point_short_and_says_so(monkeypatch):
    monkeypatch.setattr(L, "Timer", FakeTimer)
    FakeTimer.script = [10.0, 15.0, 7.0, 12.0, 9.0, 14.0]  # noisy and slow
    p = L.measure_point(
        lambda b: None, 1, warmup=0, reps=30, min_reps=3, tolerance=0.02, time_budget_s=30.0
    )
    assert p.stats.reps == 3 and p.budget_cut and not p.converged  # 10 + 15 + 7 >= 30 s
    p = L.measure_point(lambda b: None, 1, warmup=0, reps=3, min_reps=3, time_budget_s=1e9)
    assert p.stats.reps == 3 and not p.budget_cut  # reps, not the budget, ended it
