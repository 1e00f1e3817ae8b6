"""Convergence to 1e-8 in 10-D within stated budgets, and rotation invariance."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_es import minimize
from spectral_es.functions import ellipsoid, rosenbrock, rotated_ellipsoid, sphere

TARGET = 1e-8


def evaluations_to_target(function, seed, n=10, **options):
    x0 = np.random.default_rng(1000 + seed).uniform(-3, 3, n)
    result = minimize(function, x0, 1.0, seed=seed, f_target=TARGET, max_evals=50_000, **options)
    assert result.fbest <= TARGET, f"seed {seed}: stopped at f = {result.fbest:.3e} by {result.stop}"
    return result.nfev


# Budgets are about 1.5 times the largest count over 10 seeds measured when
# the test was written (sphere 1550, ellipsoid 4990, rosenbrock 7480), and
# near 1.5 times pycma's median on the same problems (1420, 4074, 5119).
@pytest.mark.parametrize(
    ("function", "budget", "restarts"),
    [(sphere, 2_300, 0), (ellipsoid, 7_500, 0), (rosenbrock, 11_000, 0)],
)
def test_converges_within_budget(function, budget, restarts):
    for seed in range(3):
        assert evaluations_to_target(function, seed, restarts=restarts) <= budget


def test_rosenbrock_local_minimum_escaped_by_restart():
    # About one run in five on 10-D Rosenbrock ends in the local minimum
    # near x_1 = -1; an IPOP restart reaches the global one.
    result = minimize(rosenbrock, np.full(10, 3.0), 1.0, seed=0, f_target=TARGET, restarts=3)
    assert result.fbest <= TARGET
    assert result.restarts and result.restarts[-1]["stop"] == {"f_target": TARGET}


def test_diagonal_variant_converges_on_separable_ellipsoid():
    for seed in range(2):
        # sep-CMA learning rates: about 3x faster than full on this problem.
        assert evaluations_to_target(ellipsoid, seed, diagonal=True) <= 4_000


def test_rotation_invariance_from_isotropic_start():
    # Same seeds, same start: the ellipsoid and the same ellipsoid rotated.
    # Seed-to-seed spread of evaluations is about +-8% on this problem, so
    # medians of 5 seeds agree within 20% when the rotation is learned.
    plain = np.median([evaluations_to_target(ellipsoid, seed) for seed in range(5)])
    rotated = np.median([evaluations_to_target(rotated_ellipsoid, seed) for seed in range(5)])
    assert 1 / 1.2 < rotated / plain < 1.2


def test_diagonal_model_is_not_rotation_invariant():
    # The check above can fail: a diagonal model cannot learn the rotation
    # and needs many times more evaluations on the rotated ellipsoid.
    x0 = np.random.default_rng(1000).uniform(-3, 3, 10)
    result = minimize(rotated_ellipsoid, x0, 1.0, seed=0, f_target=TARGET, diagonal=True, max_evals=20_000)
    assert result.fbest > TARGET or result.nfev > 2 * 4_600


@pytest.mark.slow
@pytest.mark.parametrize("function", [sphere, ellipsoid, rotated_ellipsoid, rosenbrock])
def test_forty_dimensions(function):
    x0 = np.random.default_rng(1).uniform(-3, 3, 40)
    result = minimize(function, x0, 1.0, seed=1, f_target=TARGET, max_evals=150_000, restarts=2)
    assert result.fbest <= TARGET


@pytest.mark.parametrize("function", [sphere, rotated_ellipsoid])
def test_truncated_cayley_converges(function):
    # The matmul-only map, with its generator capped and a Björck step after
    # each rotation, must learn the shape like the exact map (same budgets).
    budget = {sphere: 2_300, rotated_ellipsoid: 7_500}[function]
    for seed in range(2):
        assert evaluations_to_target(function, seed, cayley="truncated") <= budget
