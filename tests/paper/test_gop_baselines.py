"""Tests of the gradient-outer-product baselines and the SPD distances used as their yardstick."""

from __future__ import annotations

import numpy as np
import pytest
from gop_baselines import (
    cholesky_factor_of_inverse,
    cholesky_matrix,
    cholesky_step,
    default_step,
    triangular_natural_gradient,
)
from paper_common import random_spd, spd_sqrt, wasserstein2


def test_default_scheme_stationary_error():
    # Started at Sigma, S - Sigma is an AR(1) process with coefficient
    # (1 - beta) driven by beta (g g^T - Sigma), and for Gaussian g
    # E‖g g^T - Sigma‖_F^2 = ‖Sigma‖_F^2 + (tr Sigma)^2. So the stationary
    # mean of ‖S - Sigma‖_F^2 is beta / (2 - beta) times that. The time average
    # over 6000 steps has a relative spread of about 1.5% (measured over 8
    # seeds), so 10% is a bound the formula must meet and a wrong scheme
    # (for example a missing (1 - beta) factor) cannot.
    rng = np.random.default_rng(1)
    n, beta, steps = 20, 0.05, 6000
    Sigma = random_spd(rng, np.logspace(0, -1, n))
    gradients = rng.standard_normal((steps, n)) @ np.linalg.cholesky(Sigma).T
    S = Sigma.copy()
    squared_errors = np.empty(steps)
    for k, g in enumerate(gradients):
        S = default_step(S, g, beta, 1.0)
        squared_errors[k] = np.sum((S - Sigma) ** 2)
    predicted = beta / (2 - beta) * (np.sum(Sigma**2) + np.trace(Sigma) ** 2)
    assert squared_errors.mean() / predicted == pytest.approx(1.0, abs=0.1)


def test_triangular_projection_is_half_split():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((6, 6))
    A = A + A.T
    P = triangular_natural_gradient(A)
    assert np.array_equal(P, np.tril(P))
    np.testing.assert_allclose(P + P.T, A, rtol=0, atol=1e-15)


def test_cholesky_step_stays_triangular_positive():
    rng = np.random.default_rng(3)
    n = 12
    C = cholesky_factor_of_inverse(random_spd(rng, np.linspace(0.5, 2.0, n)))
    for _ in range(200):
        C = cholesky_step(C, rng.standard_normal(n), 0.01, 1.0)
    assert np.array_equal(C, np.tril(C))
    assert np.all(np.diag(C) > 0)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_cholesky_step_first_order(gamma):
    # Both schemes move S by beta (g g^T - gamma S) to first order, so their
    # one-step difference is c beta^2 + O(beta^3). Shrinking beta tenfold
    # must shrink it a hundredfold, up to the O(beta) relative correction
    # (under 2% at these step sizes). A first-order mismatch gives 10.
    rng = np.random.default_rng(4)
    n = 10
    S = random_spd(rng, np.linspace(0.5, 2.0, n))
    C = cholesky_factor_of_inverse(S)
    g = rng.standard_normal(n)

    def one_step_error(beta):
        return np.linalg.norm(cholesky_matrix(cholesky_step(C, g, beta, gamma)) - default_step(S, g, beta, gamma))

    assert one_step_error(1e-3) / one_step_error(1e-4) == pytest.approx(100, rel=0.05)


def test_cholesky_matrix_inverts_factor():
    rng = np.random.default_rng(5)
    S = random_spd(rng, np.linspace(0.1, 10.0, 8))
    # Round trip through S^{-1} = C C^T: two solves at condition number 100.
    np.testing.assert_allclose(cholesky_matrix(cholesky_factor_of_inverse(S)), S, rtol=1e-10, atol=1e-12)


def test_wasserstein_properties():
    rng = np.random.default_rng(6)
    A = random_spd(rng, np.linspace(0.5, 3.0, 7))
    B = random_spd(rng, np.linspace(0.2, 2.0, 7))
    # Zero on the diagonal up to the rounding of an eigh-based square root.
    assert wasserstein2(A, A) < 1e-6
    assert wasserstein2(A, B) == pytest.approx(wasserstein2(B, A), rel=1e-8)
    assert wasserstein2(A, B, spd_sqrt(A)) == wasserstein2(A, B)


def test_wasserstein_commuting_case():
    # For commuting matrices W2 is the Euclidean distance of the square roots
    # of the eigenvalues: ‖sqrt(a) - sqrt(b)‖.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    expected = np.linalg.norm(np.sqrt(a) - np.sqrt(b))
    assert wasserstein2(np.diag(a), np.diag(b)) == pytest.approx(expected, rel=1e-12)
