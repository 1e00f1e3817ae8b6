"""Two natural evolution strategies written in numpy, independent of ``spectral_es``.

Both search with ``x = mu + A z``, ``z ~ N(0, I)``, rank the ``lam`` samples,
give them the xNES utilities ``u_k`` (Glasmachers et al. 2010; zero-sum, larger
for better ranks) and follow the natural gradient of the expected utility with
a mean rate ``eta_mu`` and a covariance rate ``eta_cov``. With the whitened
covariance change ``G = sum_k u_k (z_k z_k^T - I)`` they differ only in the
coordinates the covariance moves in:

* :class:`FullCovarianceNES`, NES on the plain covariance (Wierstra et al.
  2008, "Natural evolution strategies"): the natural gradient of ``Sigma`` is
  ``A G A^T = sum_k u_k ((x_k - mu)(x_k - mu)^T - Sigma)``, so
  ``Sigma <- Sigma + eta_cov A G A^T``. This additive step can leave the SPD
  cone; when it does, the step is halved until ``Sigma`` is positive definite
  again, and :attr:`FullCovarianceNES.halvings` counts how often.
* :class:`CholeskyNES`, NES on a lower-triangular factor ``A`` of
  ``Sigma = A A^T`` in the local coordinate ``A h(M)``, ``h(M) = I + M + M^2/2``
  (Glasmachers et al. 2010; Fukushima et al. 2011; Lin et al. 2021). The
  Fisher metric at ``M = 0`` weighs off-diagonal entries by 1 and diagonal
  ones by 2, so ``M = eta_cov (tril(G, -1) + diag(G) / 2)``. ``A`` stays lower
  triangular with a positive diagonal without any safeguard.

To first order in ``eta_cov`` both move ``Sigma`` by ``eta_cov A G A^T``, which
is also the first-order step of xNES and of the spectral scheme with the xNES
preset. The mean moves by ``mu <- mu + eta_mu A sum_k u_k z_k`` in both. The
default rates are those of xNES: ``eta_mu = 1``,
``eta_cov = 3 (3 + ln n) / (5 n sqrt(n))``, population ``4 + floor(3 ln n)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def nes_utilities(lam: int) -> np.ndarray:
    """Return utilities for ranks 1 (best) .. lam: ``max(0, ln(lam/2 + 1) - ln k)``, normalised, minus ``1/lam``."""
    raw = np.maximum(0.0, math.log(lam / 2 + 1) - np.log(np.arange(1, lam + 1)))
    return raw / raw.sum() - 1 / lam


class _NES:
    """Sampling, ranking and the mean step shared by both covariance coordinates."""

    def __init__(
        self,
        x0: np.ndarray,
        sigma0: float,
        *,
        seed: int,
        popsize: int | None = None,
        eta_mu: float = 1.0,
        eta_cov: float | None = None,
    ) -> None:
        x0 = np.asarray(x0, dtype=float)
        if x0.ndim != 1 or not np.all(np.isfinite(x0)):
            raise ValueError(f"x0 must be a finite 1-D array, got {x0!r}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0!r}")
        n = x0.size
        self.n = n
        self.lam = popsize if popsize is not None else 4 + int(3 * math.log(n))
        self.eta_mu = eta_mu
        self.eta_cov = eta_cov if eta_cov is not None else 3 * (3 + math.log(n)) / (5 * n * math.sqrt(n))
        self.utilities = nes_utilities(self.lam)
        self.rng = np.random.default_rng(seed)
        self.mean = x0.copy()
        self.A = sigma0 * np.eye(n)  # sampling factor, Sigma = A A^T
        self.nfev = 0
        self.fbest = math.inf

    def step(self, fun: Callable[[np.ndarray], np.ndarray]) -> None:
        """Sample, evaluate ``fun`` on the rows, and update mean and covariance."""
        z = self.rng.standard_normal((self.lam, self.n))
        X = self.mean + z @ self.A.T
        f = np.asarray(fun(X), dtype=float)
        self.nfev += self.lam
        self.fbest = min(self.fbest, float(np.min(f)))

        # Utilities by rank (best first); G is the whitened covariance change.
        z = z[np.argsort(f, kind="stable")]
        u = self.utilities
        G = (z.T * u) @ z - u.sum() * np.eye(self.n)

        # The mean step uses the factor before the covariance update.
        self.mean = self.mean + self.eta_mu * (self.A @ (u @ z))
        self._update_covariance(G)

    def run(self, fun: Callable, max_evals: int, f_target: float) -> tuple[np.ndarray, np.ndarray]:
        """Step until ``max_evals`` or ``f_target``; return evaluations and best f after each step."""
        evals, best = [], []
        while self.nfev < max_evals and self.fbest > f_target and self._spread() > 1e-14:
            self.step(fun)
            evals.append(self.nfev)
            best.append(self.fbest)
        return np.array(evals), np.array(best)

    def _spread(self) -> float:
        """Return the largest coordinate standard deviation, ``max_i sqrt(Sigma_ii)``."""
        return float(np.sqrt((self.A**2).sum(axis=1)).max())

    def _update_covariance(self, G: np.ndarray) -> None:
        raise NotImplementedError


class FullCovarianceNES(_NES):
    """NES that moves the covariance matrix itself: ``Sigma <- Sigma + eta_cov A G A^T``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cov = self.A @ self.A.T
        self.halvings = 0

    def _update_covariance(self, G: np.ndarray) -> None:
        change = self.eta_cov * (self.A @ G @ self.A.T)
        while True:
            candidate = self.cov + (change + change.T) / 2
            try:
                factor = np.linalg.cholesky(candidate)
            except np.linalg.LinAlgError:
                # Safeguard, not part of the method: the additive step left the SPD cone.
                change = change / 2
                self.halvings += 1
                continue
            self.cov, self.A = candidate, factor
            return


class CholeskyNES(_NES):
    """NES on a lower-triangular ``A``: ``A <- A (I + M + M^2/2)``, ``M = eta_cov (tril(G, -1) + diag(G)/2)``."""

    def _update_covariance(self, G: np.ndarray) -> None:
        M = self.eta_cov * (np.tril(G, -1) + np.diag(np.diag(G)) / 2)
        self.A = self.A @ (np.eye(self.n) + M + M @ M / 2)
