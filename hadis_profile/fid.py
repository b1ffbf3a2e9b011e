"""Frechet distance (FID) from cached feature vectors, for any light/heavy mixture.

The sweep evaluates FID for many mixtures of the same two image sets, so images
are never re-encoded: every mixture's mean and covariance follow from sums and
Gram matrices of the cached per-image feature vectors, updated only for the
prompts whose choice changed. Conventions follow pytorch-fid and clean-fid:
float64, covariance with ``ddof=1`` (``np.cov``).

Instead of ``scipy.linalg.sqrtm`` (slow, and complex-valued on rounding noise),
``tr sqrt(S1 S2)`` is the sum of square roots of the eigenvalues of the
symmetric PSD matrix ``sqrt(S1) S2 sqrt(S1)``, which has the same spectrum as
``S1 S2``; negative rounding noise is clipped to zero.
"""

from __future__ import annotations

import numpy as np


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a PSD matrix (negative eigenvalues clipped to 0)."""
    sym = _symmetrize(np.asarray(sigma, dtype=np.float64))
    w, v = np.linalg.eigh(sym)
    return _symmetrize((v * np.sqrt(np.clip(w, 0.0, None))) @ v.T)


def trace_sqrt_product(sqrt_sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2)`` given ``sqrt(S1)``: eigenvalues of ``sqrt(S1) S2 sqrt(S1)``."""
    m = _symmetrize(sqrt_sigma1 @ np.asarray(sigma2, dtype=np.float64) @ sqrt_sigma1)
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)``, clipped at 0 (a distance)."""
    return FrechetReference(mu1, sigma1).distance(mu2, sigma2)


class FrechetReference:
    """A fixed reference distribution with ``sqrt(sigma)`` computed once.

    Every distance to it then costs two matrix products and one ``eigvalsh``.
    """

    def __init__(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        self.mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        dim = self.mu.shape[0]
        if self.sigma.shape != (dim, dim):
            raise ValueError(
                f"Reference sigma has shape {self.sigma.shape}, expected ({dim}, {dim})."
            )
        self.sqrt_sigma = sqrt_psd(self.sigma)
        self.trace = float(np.trace(self.sigma))

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    def distance(self, mu: np.ndarray, sigma: np.ndarray) -> float:
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        sigma = np.asarray(sigma, dtype=np.float64)
        diff = mu - self.mu
        tr_covmean = trace_sqrt_product(self.sqrt_sigma, sigma)
        value = float(diff @ diff) + float(np.trace(sigma)) + self.trace - 2.0 * tr_covmean
        return max(value, 0.0)


class MixtureFID:
    """FID of mixtures of two cached image sets against one reference.

    light, heavy: feature vectors ``[n_prompts, images_per_prompt, dim]`` (the
    two models may have different images per prompt). A mixture is a boolean
    ``choice[n_prompts]``: True takes that prompt's heavy images, False its light
    ones. The all-light sum and Gram matrix are precomputed (on features shifted
    by the all-light mean, to avoid cancellation in ``Q - N mu mu^T``); each
    evaluation applies low-rank updates for the prompts that differ either from
    all-light or from the previous mixture, whichever is fewer, so a sweep
    walking through nested mixtures touches each prompt about once per row.
    """

    #: incremental updates allowed before re-deriving from the all-light state, to bound drift
    MAX_INCREMENTAL = 64

    def __init__(
        self,
        light: np.ndarray,
        heavy: np.ndarray,
        ref_mu: np.ndarray,
        ref_sigma: np.ndarray,
    ) -> None:
        if light.ndim != 3 or heavy.ndim != 3:
            raise ValueError("Feature arrays must have shape [n_prompts, images, dim].")
        if light.shape[0] != heavy.shape[0] or light.shape[2] != heavy.shape[2]:
            raise ValueError(
                f"Light features {light.shape} and heavy features {heavy.shape} "
                "disagree on prompts or dimension."
            )
        self.reference = FrechetReference(ref_mu, ref_sigma)
        if self.reference.dim != light.shape[2]:
            raise ValueError(
                f"Reference statistics have dimension {self.reference.dim}, "
                f"features have {light.shape[2]}."
            )
        self.light = light
        self.heavy = heavy
        self.n_prompts, self.k_light, self.dim = light.shape
        self.k_heavy = heavy.shape[1]
        flat = light.reshape(-1, self.dim).astype(np.float64)
        self.n_base = flat.shape[0]
        if self.n_base + self.n_prompts * max(0, self.k_heavy - self.k_light) < 2:
            raise ValueError("FID needs at least two feature vectors.")
        self.shift = flat.mean(axis=0)
        flat -= self.shift
        self._s0 = flat.sum(axis=0)
        self._q0 = flat.T @ flat
        self._reset()

    def _reset(self) -> None:
        self._choice = np.zeros(self.n_prompts, dtype=bool)
        self._s = self._s0.copy()
        self._q = self._q0.copy()
        self._updates = 0

    def _delta(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Change in (sum, Gram) when prompts ``idx`` switch from light to heavy."""
        h = self.heavy[idx].reshape(-1, self.dim).astype(np.float64) - self.shift
        lt = self.light[idx].reshape(-1, self.dim).astype(np.float64) - self.shift
        return h.sum(axis=0) - lt.sum(axis=0), h.T @ h - lt.T @ lt

    def _move_to(self, choice: np.ndarray) -> None:
        added = choice & ~self._choice
        removed = self._choice & ~choice
        n_incremental = int(added.sum() + removed.sum())
        n_from_base = int(choice.sum())
        if n_from_base <= n_incremental or self._updates >= self.MAX_INCREMENTAL:
            self._reset()
            added, removed = choice, None
        else:
            self._updates += 1
        if added.any():
            ds, dq = self._delta(np.flatnonzero(added))
            self._s += ds
            self._q += dq
        if removed is not None and removed.any():
            ds, dq = self._delta(np.flatnonzero(removed))
            self._s -= ds
            self._q -= dq
        self._choice = choice.copy()

    def stats(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance (``ddof=1``) of the mixture ``choice``."""
        choice = np.asarray(choice, dtype=bool)
        if choice.shape != (self.n_prompts,):
            raise ValueError(f"choice has shape {choice.shape}, expected ({self.n_prompts},).")
        self._move_to(choice)
        n = self.n_base + int(choice.sum()) * (self.k_heavy - self.k_light)
        mean_c = self._s / n
        cov = (self._q - n * np.outer(mean_c, mean_c)) / (n - 1)
        return mean_c + self.shift, _symmetrize(cov)

    def __call__(self, choice: np.ndarray) -> float:
        """FID of the mixture ``choice`` against the reference."""
        mu, sigma = self.stats(choice)
        return self.reference.distance(mu, sigma)

    def many(self, choices: np.ndarray) -> np.ndarray:
        """FID for each row of ``choices[m, n_prompts]``; order rows so neighbours are similar."""
        return np.array([self(row) for row in np.asarray(choices, dtype=bool)], dtype=np.float64)


def _symmetrize(m: np.ndarray) -> np.ndarray:
    return (m + m.T) * 0.5
