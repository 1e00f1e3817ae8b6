"""Tests of the Kronecker baselines: nearest Kronecker product and the structured Cholesky step."""

from __future__ import annotations

import numpy as np
import pytest
from kron_baselines import kron_cholesky_matrix, kron_cholesky_step, nearest_kronecker, projection_step
from paper_common import random_spd

N, M = 3, 4


def partial_traces(A: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(tr_K A, tr_C A)``: the n x n and m x m partial traces of an (nm x nm) matrix."""
    blocks = A.reshape(n, m, n, m)
    return np.einsum("ikjk->ij", blocks), np.einsum("kikj->ij", blocks)


def test_nearest_kronecker_recovers_product():
    rng = np.random.default_rng(30)
    X, Y = random_spd(rng, np.linspace(0.5, 2.0, N)), random_spd(rng, np.linspace(0.3, 3.0, M))
    X_hat, Y_hat = nearest_kronecker(np.kron(X, Y), N, M)
    # One SVD of a 9 x 16 matrix: rounding at the 1e-15 level of ‖X ⊗ Y‖.
    np.testing.assert_allclose(np.kron(X_hat, Y_hat), np.kron(X, Y), atol=1e-13)
    assert np.linalg.eigvalsh(X_hat).min() > 0
    assert np.linalg.eigvalsh(Y_hat).min() > 0


def test_nearest_kronecker_is_stationary():
    # At the minimiser of ‖S - X ⊗ Y‖^2 the residual is orthogonal to every
    # tangent direction dX ⊗ Y + X ⊗ dY, to the rounding of the SVD.
    rng = np.random.default_rng(31)
    S = random_spd(rng, np.logspace(0, -1, N * M))
    X, Y = nearest_kronecker(S, N, M)
    residual = S - np.kron(X, Y)
    for _ in range(5):
        dX, dY = rng.standard_normal((N, N)), rng.standard_normal((M, M))
        tangent = np.kron(dX, Y) + np.kron(X, dY)
        assert abs(np.sum(residual * tangent)) < 1e-12 * np.linalg.norm(S) * np.linalg.norm(tangent)


def test_projection_step_exact_on_product():
    # With S_C ⊗ S_K = (a a^T) ⊗ (b b^T) and G = a b^T, g g^T = (a a^T) ⊗ (b b^T)
    # too, so the full update is already a Kronecker product and the
    # projection must return it unchanged.
    rng = np.random.default_rng(32)
    a, b = rng.standard_normal(N), rng.standard_normal(M)
    target = np.kron(np.outer(a, a), np.outer(b, b))
    X, Y = projection_step(np.outer(a, a), np.outer(b, b), np.outer(a, b), 0.1, 1.0)
    np.testing.assert_allclose(np.kron(X, Y), target, atol=1e-12 * np.linalg.norm(target))


def test_kron_cholesky_stays_triangular_positive():
    rng = np.random.default_rng(33)
    K_C, K_K = np.eye(N), np.eye(M)
    for _ in range(200):
        K_C, K_K = kron_cholesky_step(K_C, K_K, rng.standard_normal((N, M)), 0.01, 1.0)
    for K in (K_C, K_K):
        assert np.array_equal(K, np.tril(K))
        assert np.all(np.diag(K) > 0)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_kron_cholesky_is_fisher_projection(gamma):
    # At K_C = I, K_K = I the step moves S^{-1} = I by -beta (P_C ⊗ I + I ⊗ P_K)
    # to first order, and P_C ⊗ I + I ⊗ P_K must be the orthogonal projection
    # of A = g g^T - gamma I onto that family: the residual has zero partial
    # traces, i.e. it is orthogonal to every X ⊗ I and I ⊗ Y.
    rng = np.random.default_rng(34)
    G = rng.standard_normal((N, M))
    g = G.reshape(-1)
    A = np.outer(g, g) - gamma * np.eye(N * M)
    beta = 1e-7
    K_C, K_K = kron_cholesky_step(np.eye(N), np.eye(M), G, beta, gamma)
    change = (np.eye(N * M) - np.kron(K_C @ K_C.T, K_K @ K_K.T)) / beta
    # change = P + O(beta ‖A‖^2): about 1e-6 relative here.
    residual = A - change
    trace_C, trace_K = partial_traces(residual, N, M)
    scale = np.linalg.norm(A)
    assert np.abs(trace_C).max() < 1e-5 * scale
    assert np.abs(trace_K).max() < 1e-5 * scale


def test_kron_cholesky_matrix_inverts_factors():
    rng = np.random.default_rng(35)
    S_C, S_K = random_spd(rng, np.linspace(0.5, 2.0, N)), random_spd(rng, np.linspace(0.5, 2.0, M))
    K_C, K_K = np.linalg.cholesky(np.linalg.inv(S_C)), np.linalg.cholesky(np.linalg.inv(S_K))
    np.testing.assert_allclose(kron_cholesky_matrix(K_C, K_K), np.kron(S_C, S_K), rtol=1e-12, atol=1e-13)
