"""Test functions: minima, batch evaluation and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectral_es.functions import FUNCTIONS, OPTIMA, rotation


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("n", [1, 2, 10])
def test_minimum_is_zero_at_optimum(name, n):
    value = FUNCTIONS[name](np.full(n, OPTIMA[name]))
    # Ackley's e - exp(1) and Griewank's 1 - prod(cos 0) cancel to rounding.
    assert value == pytest.approx(0.0, abs=1e-14)
    assert isinstance(value, float)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_batch_matches_points(name, rng):
    X = rng.uniform(-3, 3, (5, 7))
    batch = FUNCTIONS[name](X)
    assert batch.shape == (5,)
    np.testing.assert_allclose(batch, [FUNCTIONS[name](x) for x in X], rtol=1e-14)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_positive_away_from_optimum(name, rng):
    X = rng.uniform(-3, 3, (20, 6))
    X[np.abs(X - OPTIMA[name]) < 1e-3] += 0.1
    assert np.all(FUNCTIONS[name](X) > 0)


def test_known_values():
    assert FUNCTIONS["rosenbrock"](np.zeros(3)) == 2.0  # (0 - 1)^2 twice
    assert FUNCTIONS["ellipsoid"](np.array([0.0, 1.0])) == 1e6
    assert FUNCTIONS["rastrigin"](np.full(2, 0.5)) == pytest.approx(20 + 2 * (0.25 + 10))
    assert FUNCTIONS["ackley"](np.zeros(4)) == pytest.approx(0.0, abs=1e-15)
    assert FUNCTIONS["schaffer"](np.array([1.0, 0.0])) == pytest.approx(math.sin(50) ** 2 + 1)


def test_rotated_ellipsoid_is_a_rotation(rng):
    x = rng.standard_normal(6)
    R = rotation(6, seed=0)
    np.testing.assert_allclose(R @ R.T, np.eye(6), atol=1e-14)
    assert FUNCTIONS["rotated_ellipsoid"](x) == pytest.approx(FUNCTIONS["ellipsoid"](R @ x), rel=1e-14)


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
        FUNCTIONS["sphere"](np.zeros((2, 2, 2)))
