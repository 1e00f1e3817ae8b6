"""Fixed-point matching: learning a covariance from gradient outer products."""

from __future__ import annotations

import numpy as np

from spectral_es.core import matrix_power, spectral_step
from tests.conftest import random_orthogonal


def test_fixed_point_matching_full_matrix():
    # g_k ~ N(0, Sigma) and curvature g g^T with gamma = 1: the default
    # scheme S <- (1 - beta) S + beta g g^T has fixed point E[g g^T] = Sigma,
    # and the spectral scheme must approach it as fast. n = 100, condition 100.
    rng = np.random.default_rng(0)
    n, beta = 100, 0.002
    V = random_orthogonal(rng, n)
    Sigma = (V * np.logspace(-1, 1, n)) @ V.T
    L = np.linalg.cholesky(Sigma)
    S = np.eye(n)
    d, B = np.ones(n), np.eye(n)

    def relative_errors():
        scale = np.linalg.norm(Sigma)
        return np.linalg.norm(S - Sigma) / scale, np.linalg.norm(matrix_power(d, B) - Sigma) / scale

    initial, _ = relative_errors()
    errors = {}
    for k in range(1, 4001):
        g = L @ rng.standard_normal(n)
        S = (1 - beta) * S + beta * np.outer(g, g)
        c = B.T @ g
        d, B = spectral_step(d, B, np.outer(c, c), beta, 1.0)
        if k in (400, 800, 4000):
            errors[k] = relative_errors()

    # Both schemes average about 2 / beta = 1000 recent gradients, so both
    # settle at the same sampling-noise floor (about 0.2 here) ...
    default_final, spectral_final = errors[4000]
    assert default_final < 0.35 * initial
    assert spectral_final < 1.15 * default_final
    # ... and the spectral scheme follows the default one on the way. It
    # lags by up to about 30% early on: from the isotropic start S = I every
    # pair of eigenvalues is degenerate, and the off-diagonal curvature of
    # a degenerate pair is only partly represented until d spreads out.
    for k in (400, 800):
        default_error, spectral_error = errors[k]
        assert spectral_error < 1.5 * default_error
        assert spectral_error < 0.8 * initial
