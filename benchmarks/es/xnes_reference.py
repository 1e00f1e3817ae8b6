"""Exponential natural evolution strategies (xNES), the baseline of the benchmarks.

A reference implementation of Glasmachers, Schaul, Sun, Wierstra and
Schmidhuber (2010), "Exponential Natural Evolution Strategies", GECCO,
Algorithm 1, written from the paper and independent of ``spectral_es``. The
search distribution is ``N(m, A A^T)`` with ``A = sigma * B`` and
``det(B) = 1``. One generation:

    s_k ~ N(0, I),   x_k = m + sigma * B s_k,                k = 1..lam
    rank the x_k by f, best first, and give rank k the utility u_k
    G_delta = sum_k u_k s_k
    G_M     = sum_k u_k (s_k s_k^T - I)
    G_sigma = tr(G_M) / n,   G_B = G_M - G_sigma I
    m     <- m + eta_mu * sigma * B G_delta
    sigma <- sigma * exp(eta_sigma / 2 * G_sigma)
    B     <- B expm(eta_B / 2 * G_B)

with the defaults of the paper

    lam       = 4 + floor(3 ln n)
    u_k       = max(0, ln(lam/2 + 1) - ln k) / sum_j max(0, ln(lam/2 + 1) - ln j) - 1/lam
    eta_mu    = 1
    eta_sigma = eta_B = 3 (3 + ln n) / (5 n sqrt(n)).

``G_B`` is symmetric and trace-free, so ``expm`` is computed from its
eigendecomposition and ``det(B)`` stays 1 up to rounding. Importance mixing
and adaptation sampling, optional in the paper, are not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["XNES", "default_popsize", "expm_symmetric", "learning_rate", "minimize", "utilities"]


def default_popsize(n: int) -> int:
    """Return the default population size ``4 + floor(3 ln n)``."""
    return 4 + int(math.floor(3 * math.log(n)))


def learning_rate(n: int) -> float:
    """Return the default ``eta_sigma = eta_B = 3 (3 + ln n) / (5 n sqrt(n))``."""
    return 3 * (3 + math.log(n)) / (5 * n * math.sqrt(n))


def utilities(lam: int) -> np.ndarray:
    """Return the utilities of ranks 1 (best) .. lam, shape (lam,), summing to 0."""
    ranks = np.arange(1, lam + 1)
    raw = np.maximum(0.0, math.log(lam / 2 + 1) - np.log(ranks))
    return raw / raw.sum() - 1.0 / lam


def expm_symmetric(M: np.ndarray) -> np.ndarray:
    """Return the matrix exponential of a symmetric ``M`` via ``M = V diag(w) V^T``."""
    w, V = np.linalg.eigh(M)
    return (V * np.exp(w)) @ V.T


class XNES:
    """Ask/tell xNES with the default parameters of Glasmachers et al. (2010).

    Args:
        x0: Initial mean ``m``, shape (n,).
        sigma0: Initial step size ``sigma`` (> 0); ``B`` starts as the identity.
        seed: Seed of the private ``numpy.random.Generator``.
        popsize: Population size ``lam``; default :func:`default_popsize`.
        eta_sigma: Learning rate of ``sigma``; default :func:`learning_rate`.
        eta_B: Learning rate of ``B``; default :func:`learning_rate`.
        eta_mu: Learning rate of the mean, default 1.
    """

    def __init__(
        self,
        x0,
        sigma0: float,
        *,
        seed: int | None = None,
        popsize: int | None = None,
        eta_sigma: float | None = None,
        eta_B: float | None = None,
        eta_mu: float = 1.0,
    ) -> None:
        self.mean = np.array(x0, dtype=float)
        if self.mean.ndim != 1 or self.mean.size < 2:
            raise ValueError(f"x0 must be a vector of at least 2 entries, got shape {self.mean.shape}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0!r}")
        n = self.mean.size
        self.sigma = float(sigma0)
        self.B = np.eye(n)
        self.lam = default_popsize(n) if popsize is None else int(popsize)
        if self.lam < 2:
            raise ValueError(f"popsize must be >= 2, got {popsize!r}; omit it for the default {default_popsize(n)}")
        self.u = utilities(self.lam)
        self.eta_mu = eta_mu
        self.eta_sigma = learning_rate(n) if eta_sigma is None else eta_sigma
        self.eta_B = learning_rate(n) if eta_B is None else eta_B
        self.rng = np.random.default_rng(seed)
        self.nfev = 0
        self.nit = 0
        self._s: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Dimension of the search space."""
        return self.mean.size

    def ask(self) -> np.ndarray:
        """Return ``lam`` samples ``x_k = m + sigma B s_k`` as rows, shape (lam, n)."""
        self._s = self.rng.standard_normal((self.lam, self.n))
        return self.mean + self.sigma * self._s @ self.B.T

    def tell(self, f) -> None:
        """Update ``m``, ``sigma`` and ``B`` from the objective values of the last ``ask``."""
        if self._s is None:
            raise ValueError("tell() needs a preceding ask()")
        f = np.asarray(f, dtype=float)
        if f.shape != (self.lam,):
            raise ValueError(f"tell() expects {self.lam} objective values, got shape {f.shape}")
        s = self._s[np.argsort(f, kind="stable")]
        self._s = None
        self.nfev += self.lam
        self.nit += 1

        # Natural gradients in the local coordinates s.
        G_delta = self.u @ s
        G_M = (s.T * self.u) @ s - self.u.sum() * np.eye(self.n)
        G_sigma = np.trace(G_M) / self.n
        G_B = G_M - G_sigma * np.eye(self.n)

        # Exponential-map updates of the mean, the scale and the shape.
        self.mean = self.mean + self.eta_mu * self.sigma * (self.B @ G_delta)
        self.sigma *= math.exp(self.eta_sigma / 2 * G_sigma)
        self.B = self.B @ expm_symmetric(self.eta_B / 2 * G_B)


def minimize(
    fun: Callable[[np.ndarray], np.ndarray],
    x0,
    sigma0: float,
    *,
    seed: int | None = None,
    max_evals: float = math.inf,
    f_target: float = -math.inf,
    tol_x: float = 1e-12,
) -> dict:
    """Run :class:`XNES` on a row-wise ``fun`` until the target, the budget or ``tol_x``.

    ``fun`` takes the population, shape (lam, n), and returns shape (lam,).
    The run stops after the generation in which a value reaches ``f_target``,
    before a generation that would exceed ``max_evals``, or when
    ``sigma * max|B|`` falls below ``tol_x``.

    Returns:
        ``{"xbest", "fbest", "nfev", "nit", "stop"}``.
    """
    es = XNES(x0, sigma0, seed=seed)
    xbest, fbest, stop = es.mean.copy(), math.inf, ""
    while not stop:
        if es.nfev + es.lam > max_evals:
            stop = "max_evals"
            break
        X = es.ask()
        f = np.asarray(fun(X), dtype=float)
        es.tell(f)
        k = int(np.argmin(f))
        if f[k] < fbest:
            xbest, fbest = X[k].copy(), float(f[k])
        if fbest <= f_target:
            stop = "f_target"
        elif es.sigma * np.abs(es.B).max() < tol_x:
            stop = "tol_x"
    return {"xbest": xbest, "fbest": fbest, "nfev": es.nfev, "nit": es.nit, "stop": stop}
