"""Tests of the two NES baselines (plain covariance and Cholesky factor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nes_baselines import CholeskyNES, FullCovarianceNES, nes_utilities


def sphere(X):
    return np.sum(X**2, axis=1)


@pytest.mark.parametrize("lam", [4, 10, 17])
def test_utilities_zero_sum_and_ordered(lam):
    u = nes_utilities(lam)
    assert u.sum() == pytest.approx(0.0, abs=1e-15)
    assert np.all(np.diff(u) <= 0)
    assert u[0] > 0


def test_covariance_updates_first_order():
    # Both strategies move Sigma by eta A G A^T to first order; the plain one
    # exactly, the Cholesky one with an O(eta^2) remainder. A tenfold smaller
    # rate must therefore shrink their difference a hundredfold, up to the
    # O(eta) relative correction (under 2% here).
    rng = np.random.default_rng(20)
    n = 6
    z = rng.standard_normal((40, n))
    u = nes_utilities(40)
    G = (z.T * u) @ z

    def difference(eta):
        covariances = []
        for strategy in (FullCovarianceNES, CholeskyNES):
            es = strategy(np.zeros(n), 1.5, seed=0, eta_cov=eta)
            es._update_covariance(G)
            covariances.append(es.A @ es.A.T)
        return np.linalg.norm(covariances[0] - covariances[1])

    assert difference(1e-3) / difference(1e-4) == pytest.approx(100, rel=0.05)


def test_cholesky_factor_stays_triangular():
    es = CholeskyNES(np.full(5, 2.0), 1.0, seed=1)
    for _ in range(100):
        es.step(sphere)
    assert np.array_equal(es.A, np.tril(es.A))
    assert np.all(np.diag(es.A) > 0)


def test_full_covariance_halving_keeps_spd():
    # A covariance rate of 5 makes the additive step leave the SPD cone at
    # once (the worst samples' weights are -1/lam each, times eta 5 over
    # lam = 8 samples); the safeguard must halve until Sigma is SPD again.
    es = FullCovarianceNES(np.full(4, 3.0), 1.0, seed=2, eta_cov=5.0)
    for _ in range(20):
        es.step(sphere)
    assert es.halvings > 0
    assert np.linalg.eigvalsh(es.cov).min() > 0
    np.testing.assert_allclose(es.A @ es.A.T, es.cov, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("strategy", [FullCovarianceNES, CholeskyNES])
def test_sphere_converges(strategy):
    # On the 5-D sphere from distance ~4.5 with the xNES rates, both reach
    # 1e-8 in about 4000 evaluations (measured); 10000 leaves room for seeds.
    es = strategy(np.full(5, 2.0), 1.0, seed=3)
    evals, best = es.run(sphere, 10000, 1e-8)
    assert best[-1] <= 1e-8
    assert evals[-1] < 10000


def test_default_rates_match_xnes():
    es = CholeskyNES(np.zeros(10), 1.0, seed=4)
    assert es.lam == 4 + int(3 * math.log(10))
    assert es.eta_cov == pytest.approx(3 * (3 + math.log(10)) / (5 * 10 * math.sqrt(10)))


def test_rejects_bad_start():
    with pytest.raises(ValueError, match="sigma0"):
        CholeskyNES(np.zeros(3), 0.0, seed=0)
    with pytest.raises(ValueError, match="x0"):
        FullCovarianceNES(np.array([np.nan, 1.0]), 1.0, seed=0)
