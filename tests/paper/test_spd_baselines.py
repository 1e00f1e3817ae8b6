"""Tests of the SPD-optimisation problems and the Riemannian and Cholesky baselines."""

from __future__ import annotations

import numpy as np
import pytest
from paper_common import random_orthogonal, random_spd
from spd_baselines import LogDet, MetricNearness, cholesky_ngd_step, riemannian_step, symmetrize


@pytest.fixture
def problems():
    rng = np.random.default_rng(10)
    n = 8
    Q = random_spd(rng, np.logspace(-0.5, 0.5, n))
    return [MetricNearness(Q, rng.standard_normal((40, n)), batch=40), LogDet(Q)]


def random_symmetric(rng, n):
    A = rng.standard_normal((n, n))
    return (A + A.T) / 2


def test_problem_gradients_match_finite_differences(problems):
    # Central differences have error O(h^2) ~ 1e-10 relative at h = 1e-5.
    rng = np.random.default_rng(11)
    for problem in problems:
        n = problem.Q.shape[0]
        S = random_spd(rng, np.linspace(0.5, 2.0, n))
        direction = random_symmetric(rng, n)
        h = 1e-5
        numeric = (problem.loss(S + h * direction) - problem.loss(S - h * direction)) / (2 * h)
        analytic = np.sum(problem.gradient(S, rng) * direction)
        assert analytic == pytest.approx(numeric, rel=1e-6), problem.name


def test_problem_optimum(problems):
    rng = np.random.default_rng(12)
    for problem in problems:
        assert problem.loss(problem.optimum) == pytest.approx(problem.optimal_loss, abs=1e-10), problem.name
        # Relative to ‖Q‖ ~ 3, the gradient at S* = Q^{-1} vanishes to rounding.
        assert np.abs(problem.gradient(problem.optimum, rng)).max() < 1e-12, problem.name


def test_metric_nearness_rejects_bad_batch():
    with pytest.raises(ValueError, match="batch"):
        MetricNearness(np.eye(3), np.ones((5, 3)), batch=6)


@pytest.mark.parametrize("retraction", ["exp", "second_order"])
def test_retraction_stays_spd(retraction):
    # A step whose linear update S + xi is indefinite: with
    # grad = S^{-1/2} W S^{-1/2}, S + xi = S^{1/2} (I - 2 beta W) S^{1/2}, and W
    # has eigenvalues up to 1.5. Both retractions must still return a
    # symmetric positive-definite matrix (condition at most e^6 here, so
    # positivity is not lost to rounding).
    rng = np.random.default_rng(13)
    n = 10
    S = random_spd(rng, np.linspace(0.1, 1.0, n))
    U = random_orthogonal(rng, n)
    W = (U * np.linspace(-1.5, 1.5, n)) @ U.T
    inverse_root = np.linalg.inv(np.linalg.cholesky(S))
    gradient = inverse_root.T @ W @ inverse_root
    beta = 1.0
    linear = S - 2 * beta * S @ gradient @ S
    assert np.linalg.eigvalsh(linear).min() < 0
    S_new = riemannian_step(S, gradient, beta, retraction)
    np.testing.assert_array_equal(S_new, S_new.T)
    assert np.linalg.eigvalsh(S_new).min() > 0


def test_cholesky_ngd_stays_triangular_positive():
    # A step far too large for descent (‖M‖ ~ 10): h(M) = I + M + M^2/2 must
    # still keep A lower triangular with a positive diagonal, because each
    # diagonal entry of h(M) is 1 + m + m^2/2 >= 1/2.
    rng = np.random.default_rng(14)
    n = 10
    A = np.linalg.cholesky(random_spd(rng, np.linspace(0.5, 2.0, n)))
    A = cholesky_ngd_step(A, 5 * random_symmetric(rng, n), 1.0)
    assert np.all(np.isfinite(A))
    assert np.array_equal(A, np.tril(A))
    assert np.all(np.diag(A) > 0)


@pytest.mark.parametrize("method", ["exp", "second_order", "cholesky"])
def test_baselines_first_order(method):
    # Every baseline moves S along the natural gradient -2 beta S grad S to
    # first order, so its one-step difference from the linear step is
    # c beta^2 + O(beta^3). A tenfold smaller beta must give a hundredfold
    # smaller difference, within the O(beta) correction (under 2% here).
    rng = np.random.default_rng(15)
    n = 8
    S = random_spd(rng, np.linspace(0.5, 2.0, n))
    gradient = random_symmetric(rng, n)

    def one_step_error(beta):
        linear = S - 2 * beta * symmetrize(S @ gradient @ S)
        if method == "cholesky":
            A = cholesky_ngd_step(np.linalg.cholesky(S), gradient, beta)
            new = A @ A.T
        else:
            new = riemannian_step(S, gradient, beta, method)
        return np.linalg.norm(new - linear)

    assert one_step_error(1e-3) / one_step_error(1e-4) == pytest.approx(100, rel=0.05)


def test_riemannian_step_rejects_unknown_retraction():
    with pytest.raises(ValueError, match="retraction"):
        riemannian_step(np.eye(2), np.eye(2), 0.1, "qr")
