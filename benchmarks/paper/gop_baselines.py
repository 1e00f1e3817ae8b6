"""Baselines for learning an SPD matrix from gradient outer products (numpy only).

Both schemes take a gradient ``g``, curvature ``H = g g^T``, a step size
``beta`` and ``gamma`` in {0, 1} (0 accumulates, 1 keeps a moving average).
They are written from their published update rules and share no code with
``spectral_es``, so that comparing them with the spectral scheme means
something.

* :func:`default_step`, the linear update ``S <- (1 - beta gamma) S + beta g g^T``
  of full-matrix AdaGrad / RMSprop without a root.
* :func:`cholesky_step`, the inverse-free update of Lin et al. (2024), "Can we
  remove the square-root in adaptive gradient methods? A second-order
  perspective", on a lower-triangular factor ``C`` of ``S^{-1} = C C^T``:

      A = C^T H C - gamma I
      C <- C (I - beta (tril_{-1}(A) + diag(A) / 2))

  The projection ``tril_{-1}(A) + diag(A)/2`` is the natural gradient in the
  lower-triangular local coordinate ``C (I + M)``: it is the lower-triangular
  ``P`` with ``P + P^T = A``. So ``C C^T`` moves by ``-beta C A C^T``, which
  equals the first-order change of ``S^{-1}`` under the default update, and
  ``C`` stays lower triangular with no inverse or decomposition.
"""

from __future__ import annotations

import numpy as np


def default_step(S: np.ndarray, g: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """Return ``(1 - beta gamma) S + beta g g^T``."""
    return (1 - beta * gamma) * S + beta * np.outer(g, g)


def triangular_natural_gradient(A: np.ndarray) -> np.ndarray:
    """Return ``tril(A, -1) + diag(A) / 2``, the lower-triangular ``P`` with ``P + P^T = A``."""
    return np.tril(A, -1) + np.diag(np.diag(A)) / 2


def cholesky_step(C: np.ndarray, g: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """Move the lower-triangular factor ``C`` of ``S^{-1} = C C^T`` by one inverse-free step.

    Args:
        C: Lower-triangular factor, shape (n, n), positive diagonal.
        g: Gradient, shape (n,).
        beta: Step size. The diagonal of ``C`` stays positive while
            ``beta ((C^T g)_i^2 - gamma) / 2 < 1`` for every i.
        gamma: 0 to accumulate, 1 for a moving average.

    Returns:
        The new factor, lower triangular. Cost O(n^3) for the product ``C P``.
    """
    c = C.T @ g
    A = np.outer(c, c)
    A[np.diag_indices_from(A)] -= gamma
    return C - beta * (C @ triangular_natural_gradient(A))


def cholesky_matrix(C: np.ndarray) -> np.ndarray:
    """Return ``S = (C C^T)^{-1} = C^{-T} C^{-1}`` by one linear solve."""
    C_inv = np.linalg.solve(C, np.eye(C.shape[0]))
    return C_inv.T @ C_inv


def cholesky_factor_of_inverse(S: np.ndarray) -> np.ndarray:
    """Return the lower-triangular ``C`` with ``C C^T = S^{-1}``, the starting factor."""
    return np.linalg.cholesky(np.linalg.inv(S))
