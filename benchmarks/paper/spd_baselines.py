"""SPD matrix optimisation: the two test problems and two Riemannian baselines (numpy only).

Problems (``S* = Q^{-1}`` for both):

* :class:`MetricNearness`, ``l(S) = (1/2N) sum_i ‖S Q x_i - x_i‖^2``, with a
  stochastic gradient from a mini-batch of the ``x_i``;
* :class:`LogDet`, ``l(S) = tr(S Q) - log det S``, with the exact gradient
  ``Q - S^{-1}``.

Both baselines follow the natural gradient of ``S`` viewed as the precision of
a zero-mean Gaussian, whose Fisher metric is ``<U, V>_S = tr(S^{-1} U S^{-1} V) / 2``
(the affine-invariant metric up to the factor 1/2). Its Riemannian gradient is
``2 S grad(S) S``, so one step of size ``beta`` moves ``S`` along

    xi = -2 beta S grad(S) S,

the same direction, to first order, as the spectral scheme with curvature
``Q = -2 D B^T grad B D`` and ``gamma = 0``. They differ in how they stay on
the SPD cone:

* :func:`riemannian_step`, Riemannian gradient descent with a retraction
  (Absil et al. 2009; Boumal et al. 2014, Manopt's ``sympositivedefinitefactory``):
  the exponential map ``S^{1/2} expm(S^{-1/2} xi S^{-1/2}) S^{1/2}`` or the
  second-order retraction ``S + xi + xi S^{-1} xi / 2``; both are SPD for any
  symmetric ``xi``. Both use ``eigh`` or a solve, which the spectral scheme avoids.
* :func:`cholesky_ngd_step`, natural-gradient descent on a lower-triangular
  factor ``A`` of ``S = A A^T`` in the local coordinate ``A h(M)``,
  ``h(M) = I + M + M^2 / 2`` (Lin et al. 2023, "Simplifying momentum-based
  positive-definite submanifold optimization"). With ``X = A^T grad A`` the
  Fisher metric at ``M = 0`` weighs off-diagonal entries of ``M`` by 1 and
  diagonal ones by 2, so the natural-gradient step is
  ``M = -2 beta (tril(X, -1) + diag(X) / 2)``. ``h(M)`` keeps ``A`` lower
  triangular with a positive diagonal (``1 + m + m^2/2 > 0``).
"""

from __future__ import annotations

import numpy as np


def symmetrize(A: np.ndarray) -> np.ndarray:
    """Return ``(A + A^T) / 2``."""
    return (A + A.T) / 2


class MetricNearness:
    """``l(S) = (1/2N) sum_i ‖S Q x_i - x_i‖^2`` with mini-batch gradients.

    Args:
        Q: The known SPD matrix, shape (n, n).
        X: The data ``x_i`` as rows, shape (N, n), N >= n so that ``S* = Q^{-1}``
            is the unique minimiser with ``l(S*) = 0``.
        batch: Rows per stochastic gradient.
    """

    name = "metric nearness"

    def __init__(self, Q: np.ndarray, X: np.ndarray, batch: int) -> None:
        if not 1 <= batch <= X.shape[0]:
            raise ValueError(f"batch must be in [1, {X.shape[0]}], got {batch}")
        self.Q, self.X, self.batch = Q, X, batch
        self.optimum = np.linalg.inv(Q)
        self.optimal_loss = 0.0

    def loss(self, S: np.ndarray) -> float:
        """Return ``l(S)`` over all N points."""
        residual = self.X @ self.Q @ S - self.X  # row i: (S Q x_i - x_i)^T, as S and Q are symmetric
        return float((residual**2).sum() / (2 * self.X.shape[0]))

    def gradient(self, S: np.ndarray, rng: np.random.Generator, S_inv: np.ndarray | None = None) -> np.ndarray:
        """Return the symmetric gradient of the mini-batch loss, ``sym(sum_i r_i (Q x_i)^T) / b``."""
        rows = self.X[rng.choice(self.X.shape[0], self.batch, replace=False)]
        Y = rows @ self.Q  # rows (Q x_i)^T
        residual = Y @ S - rows
        return symmetrize(residual.T @ Y) / self.batch


class LogDet:
    """``l(S) = tr(S Q) - log det S``, minimised at ``S* = Q^{-1}`` with ``l(S*) = n + log det Q``."""

    name = "log-det"

    def __init__(self, Q: np.ndarray) -> None:
        self.Q = Q
        self.optimum = np.linalg.inv(Q)
        self.optimal_loss = float(Q.shape[0] + np.linalg.slogdet(Q)[1])

    def loss(self, S: np.ndarray) -> float:
        """Return ``tr(S Q) - log det S`` (``inf`` if ``S`` is not positive definite)."""
        sign, logdet = np.linalg.slogdet(S)
        if sign <= 0:
            return float("inf")
        return float(np.sum(S * self.Q) - logdet)

    def gradient(self, S: np.ndarray, rng: np.random.Generator, S_inv: np.ndarray | None = None) -> np.ndarray:
        """Return ``Q - S^{-1}``; pass ``S_inv`` when the caller has it without a solve."""
        if S_inv is None:
            S_inv = np.linalg.inv(S)
        return self.Q - symmetrize(S_inv)


def _symmetric_function(A: np.ndarray, function) -> np.ndarray:
    """Return ``V diag(function(w)) V^T`` for ``A = V diag(w) V^T`` (by ``eigh``)."""
    w, V = np.linalg.eigh(symmetrize(A))
    return (V * function(w)) @ V.T


def riemannian_step(S: np.ndarray, gradient: np.ndarray, beta: float, retraction: str = "exp") -> np.ndarray:
    """Take one Riemannian gradient step ``xi = -2 beta S grad S`` and retract it onto the SPD cone.

    Args:
        S: Current SPD matrix, shape (n, n).
        gradient: Euclidean gradient, shape (n, n), symmetric.
        beta: Step size.
        retraction: ``"exp"`` for the exponential map of the affine-invariant
            metric, ``"second_order"`` for ``S + xi + xi S^{-1} xi / 2``.

    Returns:
        The new SPD matrix (symmetrised against rounding).
    """
    if retraction == "exp":
        # S^{1/2} expm(S^{-1/2} xi S^{-1/2}) S^{1/2} with S^{-1/2} xi S^{-1/2} = -2 beta S^{1/2} grad S^{1/2}.
        root = _symmetric_function(S, np.sqrt)
        return symmetrize(root @ _symmetric_function(-2 * beta * root @ gradient @ root, np.exp) @ root)
    if retraction == "second_order":
        xi = -2 * beta * symmetrize(S @ gradient @ S)
        return symmetrize(S + xi + xi @ np.linalg.solve(S, xi) / 2)
    raise ValueError(f"unknown retraction {retraction!r}; use 'exp' or 'second_order'")


def cholesky_ngd_step(A: np.ndarray, gradient: np.ndarray, beta: float) -> np.ndarray:
    """Take one natural-gradient step on the lower-triangular factor ``A`` of ``S = A A^T``.

    Returns ``A h(M)`` with ``M = -2 beta (tril(X, -1) + diag(X)/2)``,
    ``X = A^T grad A`` and ``h(M) = I + M + M^2/2``; lower triangular with a
    positive diagonal for any step size. Matrix products only.
    """
    X = A.T @ gradient @ A
    M = -2 * beta * (np.tril(X, -1) + np.diag(np.diag(X)) / 2)
    return A @ (np.eye(A.shape[0]) + M + M @ M / 2)
