"""Frechet distance and mixture FID against the standard from-scratch computation (scipy sqrtm)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from hadis_profile.fid import FrechetReference, MixtureFID, frechet_distance, sqrt_psd


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, verbatim in substance."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_stats(rng, dim, n=None, scale=1.0, shift=0.0):
    n = n or 4 * dim
    x = rng.normal(shift, scale, size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def materialised(light, heavy, choice):
    """The mixture's images, concatenated: the ground truth MixtureFID must match."""
    parts = [heavy[p] if choice[p] else light[p] for p in range(light.shape[0])]
    x = np.concatenate(parts, axis=0).astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("dim", [16, 32, 64])
def test_frechet_distance_matches_sqrtm(dim):
    rng = np.random.default_rng(dim)
    mu1, s1 = random_stats(rng, dim)
    mu2, s2 = random_stats(rng, dim, scale=1.5, shift=0.3)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(pytorch_fid_distance(mu1, s1, mu2, s2), rel=1e-6)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_identical_distributions_are_at_distance_zero():
    rng = np.random.default_rng(1)
    mu, s = random_stats(rng, 24)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu, s, mu, s) >= 0.0


def test_singular_covariance_is_handled():
    """Fewer samples than dimensions: rank-deficient sigma, still finite and close to sqrtm."""
    rng = np.random.default_rng(2)
    mu1, s1 = random_stats(rng, 32, n=10)
    mu2, s2 = random_stats(rng, 32, n=200)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours)
    assert ours == pytest.approx(pytorch_fid_distance(mu1, s1, mu2, s2), rel=1e-5)


def test_sqrt_psd_squares_back():
    rng = np.random.default_rng(3)
    _, s = random_stats(rng, 20)
    root = sqrt_psd(s)
    np.testing.assert_allclose(root @ root, s, atol=1e-10)
    np.testing.assert_allclose(root, root.T)


@pytest.mark.parametrize(("dim", "k_light", "k_heavy"), [(16, 4, 4), (40, 3, 2), (64, 2, 5)])
def test_mixture_matches_materialised(dim, k_light, k_heavy):
    rng = np.random.default_rng(dim + k_light)
    n = 30
    light = rng.normal(size=(n, k_light, dim)).astype(np.float32)
    heavy = (rng.normal(size=(n, k_heavy, dim)) * 1.3 + 0.2).astype(np.float32)
    ref_mu, ref_sigma = random_stats(rng, dim, n=8 * dim, scale=1.2, shift=0.5)
    ev = MixtureFID(light, heavy, ref_mu, ref_sigma)
    ref = FrechetReference(ref_mu, ref_sigma)
    # all-light, all-heavy, random mixtures, and a nested walk (incremental updates, resets)
    choices = [np.zeros(n, bool), np.ones(n, bool)]
    choices += [rng.random(n) < p for p in (0.1, 0.5, 0.9)]
    order = rng.permutation(n)
    for j in range(n + 1):
        c = np.zeros(n, bool)
        c[order[:j]] = True
        choices.append(c)
    choices += [rng.random(n) < 0.5 for _ in range(MixtureFID.MAX_INCREMENTAL + 5)]
    for choice in choices:
        mu_true, sigma_true = materialised(light, heavy, choice)
        mu, sigma = ev.stats(choice)
        np.testing.assert_allclose(mu, mu_true, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sigma, sigma_true, rtol=1e-9, atol=1e-11)
        want = pytorch_fid_distance(mu_true, sigma_true, ref.mu, ref.sigma)
        assert ev(choice) == pytest.approx(want, rel=1e-6)
    many = ev.many(np.array(choices[:5]))
    assert many.shape == (5,)
    assert many[0] == pytest.approx(ev(choices[0]), rel=1e-12)


def test_mixture_rejects_mismatched_shapes():
    rng = np.random.default_rng(4)
    mu, s = random_stats(rng, 8)
    with pytest.raises(ValueError):
        MixtureFID(rng.normal(size=(5, 2, 8)), rng.normal(size=(6, 2, 8)), mu, s)
    with pytest.raises(ValueError):
        MixtureFID(rng.normal(size=(5, 2, 9)), rng.normal(size=(5, 2, 9)), mu, s)
    ev = MixtureFID(rng.normal(size=(5, 2, 8)), rng.normal(size=(5, 2, 8)), mu, s)
    with pytest.raises(ValueError):
        ev(np.zeros(4, bool))
