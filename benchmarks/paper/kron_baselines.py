"""Kronecker-structured baselines for learning ``S ≈ S_C ⊗ S_K`` from gradient outer products (numpy only).

The gradient of an (n x m) weight is ``G`` and ``g = vec(G)`` concatenates its
rows, so ``(A ⊗ B) g = vec(A G B^T)`` and ``np.kron(S_C, S_K)`` is the
structured ``S``. Two baselines, written independently of ``spectral_es``:

* :func:`kron_cholesky_step`, a structured inverse-free update in the spirit
  of Lin et al. (2024): ``S^{-1} = (K_C K_C^T) ⊗ (K_K K_K^T)`` with lower-
  triangular ``K_C``, ``K_K``. The full inverse-free step moves
  ``C = K_C ⊗ K_K`` by ``C (I - beta tril-split(A))`` with
  ``A = C^T g g^T C - gamma I``. Here ``A`` is first projected, in the
  Frobenius (whitened Fisher) metric, onto the tangent directions
  ``P_C ⊗ I + I ⊗ P_K`` a Kronecker factor can move in. With
  ``Z = K_C^T G K_K`` that projection is

      P_C = Z Z^T / m - (‖Z‖^2 / (2 n m) + gamma / 2) I,
      P_K = Z^T Z / n - (‖Z‖^2 / (2 n m) + gamma / 2) I,

  the trace split evenly between the factors, and then
  ``K_l <- K_l (I - beta tril-split(P_l))``. To first order ``S`` moves by
  the Fisher-metric projection of ``beta (g g^T - gamma S)``, as in the
  spectral Kronecker scheme.
* :func:`projection_step`, the impractical projection baseline: form the
  full default update ``(1 - beta gamma)(S_C ⊗ S_K) + beta g g^T`` and
  replace it by its nearest Kronecker product in the Frobenius norm
  (Van Loan and Pitsianis 1993), :func:`nearest_kronecker`.
"""

from __future__ import annotations

import numpy as np
from gop_baselines import triangular_natural_gradient


def kron_cholesky_step(
    K_C: np.ndarray, K_K: np.ndarray, G: np.ndarray, beta: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Move the lower-triangular factors of ``S^{-1} = (K_C K_C^T) ⊗ (K_K K_K^T)`` one step.

    Args:
        K_C: Row factor, shape (n, n), lower triangular, positive diagonal.
        K_K: Column factor, shape (m, m), likewise.
        G: Gradient, shape (n, m).
        beta: Step size.
        gamma: 0 to accumulate, 1 for a moving average.

    Returns:
        The new ``(K_C, K_K)``, lower triangular. Matrix products only.
    """
    n, m = G.shape
    Z = K_C.T @ G @ K_K
    shift = np.sum(Z * Z) / (2 * n * m) + gamma / 2
    P_C = Z @ Z.T / m - shift * np.eye(n)
    P_K = Z.T @ Z / n - shift * np.eye(m)
    return K_C - beta * (K_C @ triangular_natural_gradient(P_C)), K_K - beta * (K_K @ triangular_natural_gradient(P_K))


def kron_cholesky_matrix(K_C: np.ndarray, K_K: np.ndarray) -> np.ndarray:
    """Return ``S = (K_C K_C^T)^{-1} ⊗ (K_K K_K^T)^{-1}``, shape (nm, nm)."""
    inverse_C = np.linalg.solve(K_C, np.eye(K_C.shape[0]))
    inverse_K = np.linalg.solve(K_K, np.eye(K_K.shape[0]))
    return np.kron(inverse_C.T @ inverse_C, inverse_K.T @ inverse_K)


def nearest_kronecker(S: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(X, Y)`` minimising ``‖S - X ⊗ Y‖_F``, X (n, n), Y (m, m) (Van Loan and Pitsianis 1993).

    The rearrangement ``R[(i, j), (k, l)] = S[i m + k, j m + l]`` turns
    ``X ⊗ Y`` into the rank-one ``vec(X) vec(Y)^T``, so the minimiser is the
    leading singular pair of ``R``. For symmetric positive-definite ``S`` both
    factors are symmetric and definite; their sign is chosen positive.
    """
    R = S.reshape(n, m, n, m).transpose(0, 2, 1, 3).reshape(n * n, m * m)
    U, s, Vt = np.linalg.svd(R, full_matrices=False)
    X = np.sqrt(s[0]) * U[:, 0].reshape(n, n)
    Y = np.sqrt(s[0]) * Vt[0].reshape(m, m)
    if np.trace(X) < 0:
        X, Y = -X, -Y
    return (X + X.T) / 2, (Y + Y.T) / 2


def projection_step(
    S_C: np.ndarray, S_K: np.ndarray, G: np.ndarray, beta: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the nearest Kronecker product of ``(1 - beta gamma)(S_C ⊗ S_K) + beta g g^T``.

    Stores and decomposes the full (nm x nm) matrix every step, which is what
    makes this baseline impractical for real layers.
    """
    n, m = G.shape
    g = G.reshape(-1)
    full = (1 - beta * gamma) * np.kron(S_C, S_K) + beta * np.outer(g, g)
    return nearest_kronecker(full, n, m)
