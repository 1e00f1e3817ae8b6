"""Powers and roots applied through the factors."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_es.core import apply_inverse_root, apply_power, matrix_power
from tests.conftest import random_orthogonal


@pytest.fixture
def factors(rng):
    n = 12
    return np.exp(rng.standard_normal(n)), random_orthogonal(rng, n)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_inverse_root_undoes_root_power(factors, rng, p):
    d, B = factors
    V = rng.standard_normal((12, 3))
    W = apply_inverse_root(d, B, V, p)
    # S^{1/p} S^{-1/p} V = V up to a few roundings per product.
    np.testing.assert_allclose(apply_power(d, B, W, 1.0 / p), V, rtol=1e-12, atol=1e-12)


def test_inverse_root_matches_dense_solve(factors, rng):
    d, B = factors
    v = rng.standard_normal(12)
    S = matrix_power(d, B)
    # Both sides round at about cond(S) eps relative. The fixture's
    # eigenvalues are exp of standard normals, so cond(S) is in the tens to
    # hundreds and the error near 1e-14, far below 1e-10.
    np.testing.assert_allclose(apply_inverse_root(d, B, v, 1), np.linalg.solve(S, v), rtol=1e-10)
    root = apply_inverse_root(d, B, np.eye(12), 2)
    np.testing.assert_allclose(root @ root @ S, np.eye(12), atol=1e-10)


def test_vector_and_matrix_inputs_agree(factors, rng):
    d, B = factors
    V = rng.standard_normal((12, 4))
    columns = np.stack([apply_power(d, B, V[:, k], -0.5) for k in range(4)], axis=1)
    np.testing.assert_allclose(apply_power(d, B, V, -0.5), columns, rtol=1e-13)
