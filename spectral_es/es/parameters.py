"""Default population sizes, recombination weights and learning rates.

Everything here is a function of the dimension ``n`` and the population size
``lam`` alone, computed once when a run starts. Two families are provided:

* ``"cma"`` (the default): the weights, cumulation constants and learning
  rates of CMA-ES as given in Hansen (2016), "The CMA Evolution Strategy: A
  Tutorial", including negative ("active") weights for the worst samples.
* ``"xnes"``: the utilities and learning rates of xNES, Glasmachers et al.
  (2010), "Exponential Natural Evolution Strategies".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Parameters", "default_popsize", "xnes_utilities"]


def default_popsize(n: int) -> int:
    """Return ``4 + floor(3 ln n)``, the usual population size for dimension n."""
    return 4 + int(3 * math.log(n))


def xnes_utilities(lam: int) -> np.ndarray:
    """Return the xNES utilities for ranks 1 (best) .. lam, summing to zero.

    ``u_k = max(0, ln(lam/2 + 1) - ln k)``, normalised to sum 1, minus
    ``1/lam``; better ranks get larger utilities.
    """
    ranks = np.arange(1, lam + 1)
    raw = np.maximum(0.0, math.log(lam / 2 + 1) - np.log(ranks))
    return raw / raw.sum() - 1.0 / lam


def _cma_weights(n: int, lam: int, c1: float, cmu: float) -> np.ndarray:
    """Return the active CMA-ES weights of the ranks, best first.

    The best ``lam // 2`` weights are positive and sum to 1; the others are
    negative, scaled so that the shape update stays positive definite.
    """
    mu = lam // 2
    raw = math.log((lam + 1) / 2) - np.log(np.arange(1, lam + 1))
    positive, negative = raw[:mu], raw[mu:]
    mueff = positive.sum() ** 2 / (positive**2).sum()
    weights = np.zeros(lam)
    weights[:mu] = positive / positive.sum()
    if negative.size and negative.sum() < 0 and cmu > 0:
        mueff_minus = negative.sum() ** 2 / (negative**2).sum()
        alpha_mu = 1 + c1 / cmu
        alpha_mueff = 1 + 2 * mueff_minus / (mueff + 2)
        alpha_posdef = (1 - c1 - cmu) / (n * cmu)
        scale = min(alpha_mu, alpha_mueff, alpha_posdef) / -negative.sum()
        weights[mu:] = negative * scale
    return weights


@dataclass(frozen=True)
class Parameters:
    """Constants of one run, derived from ``n``, ``lam`` and the options.

    Attributes:
        n: Dimension.
        lam: Population size.
        mu: Number of samples with positive weight (the better half).
        mean_weights: Weights of the ranks (best first) in the mean update,
            shape (lam,). CMA: the best ``mu`` are positive and sum to 1, the
            rest zero. xNES: the utilities, which sum to 0.
        shape_weights: Weights of the ranks in the rank-mu shape update, with
            the learning rate included, shape (lam,). CMA: ``c_mu`` times the
            active weights, negative for the worst half.
        mueff: Variance-effective number of selected samples.
        c_sigma: Cumulation constant of the step-size path (0 disables it).
        d_sigma: Damping of the step-size update.
        c_c: Cumulation constant of the rank-one evolution path.
        c1: Learning rate of the rank-one (evolution path) shape update.
        eta_sigma: Learning rate of the natural-gradient step size (xNES);
            only used when ``c_sigma == 0``.
        chi_n: Expected norm of an n-dimensional standard normal vector.
        rescale_negative: Rescale samples with negative shape weight to
            length ``sqrt(n)`` (active CMA-ES); off for xNES.
    """

    n: int
    lam: int
    mu: int
    mean_weights: np.ndarray
    shape_weights: np.ndarray
    mueff: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c1: float
    eta_sigma: float
    chi_n: float
    rescale_negative: bool = False

    @classmethod
    def cma(cls, n: int, lam: int, *, diagonal: bool = False, active: bool = True) -> Parameters:
        """Return the CMA-ES constants, Hansen (2016), Table 1."""
        mu = lam // 2
        raw = math.log((lam + 1) / 2) - np.log(np.arange(1, mu + 1))
        mueff = raw.sum() ** 2 / (raw**2).sum()
        c_sigma = (mueff + 2) / (n + mueff + 5)
        d_sigma = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + c_sigma
        c_c = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
        c1 = 2 / ((n + 1.3) ** 2 + mueff)
        c_mu = min(1 - c1, 2 * (0.25 + mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
        if diagonal:
            # A diagonal model has n free shape parameters instead of
            # n(n+1)/2, so it can learn (n + 2) / 3 times faster
            # (Ros and Hansen 2008, sep-CMA-ES).
            factor = (n + 2) / 3
            c1 = min(1.0, c1 * factor)
            c_mu = min(1 - c1, c_mu * factor)
        weights = _cma_weights(n, lam, c1, c_mu)
        if not active:
            weights = np.maximum(weights, 0.0)
        return cls(
            n=n,
            lam=lam,
            mu=mu,
            mean_weights=np.maximum(weights, 0.0),
            shape_weights=c_mu * weights,
            mueff=float(mueff),
            c_sigma=c_sigma,
            d_sigma=d_sigma,
            c_c=c_c,
            c1=c1,
            eta_sigma=0.0,
            chi_n=_chi(n),
            rescale_negative=active,
        )

    @classmethod
    def xnes(cls, n: int, lam: int, *, diagonal: bool = False) -> Parameters:
        """Return the xNES constants (the SNES learning rate when ``diagonal``).

        The mean moves by the zero-sum utilities themselves, as in xNES, and
        the step size by the natural gradient (``c_sigma = 0``).
        """
        utilities = xnes_utilities(lam)
        if diagonal:
            eta = (3 + math.log(n)) / (5 * math.sqrt(n))
        else:
            eta = 3 * (3 + math.log(n)) / (5 * n * math.sqrt(n))
        selected = utilities[utilities > 0]
        return cls(
            n=n,
            lam=lam,
            mu=int(selected.size),
            mean_weights=utilities,
            shape_weights=eta * utilities,
            mueff=float(selected.sum() ** 2 / (selected**2).sum()),
            c_sigma=0.0,
            d_sigma=1.0,
            c_c=0.0,
            c1=0.0,
            eta_sigma=eta,
            chi_n=_chi(n),
        )


def _chi(n: int) -> float:
    """Return E||N(0, I_n)||, by the usual three-term expansion."""
    return math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
