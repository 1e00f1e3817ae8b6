"""Uncertainty handling for noisy objectives.

A noisy objective returns different values for the same point. Selection
then ranks partly by chance, the f-based termination criteria fire on
noise, and progress stalls at the level where the differences between
samples drown in the noise. :class:`UncertaintyHandler` measures how much
the ranking is due to noise and raises the number of evaluations averaged
per point while it is, following the measurement of Hansen, Niederberger,
Guzzella and Koumoutsakos (2009), "A method for handling uncertainty in
evolutionary optimization with an application to feedback control of
combustion", IEEE Transactions on Evolutionary Computation 13(1).

Each iteration, the first ``n_reevaluated`` samples (a random subset, since
samples are independent) are evaluated a second time. Ranking the ``lam``
first values together with the second values, each re-evaluated sample ``i``
moves by ``Delta_i`` ranks (not counting its own other copy). A random
reordering would move it by about ``Delta_lim``, the 25th percentile of the
distances from its rank to all ``2 lam - 1`` other ranks. The measurement

    s = mean_i(|Delta_i| - max(1, Delta_lim_i)),   S <- (1 - c_s) S + c_s s,

with ``c_s = 0.3`` is negative when the ranking is reproducible and positive
when noise dominates it. While ``S > 0`` the number of evaluations per point
grows by ``alpha = 1 + 2 / (n + 10)`` per iteration, up to
``max_evaluations``; otherwise it shrinks by ``alpha^(-1/4)``, down to 1.

NOTE: pycma's ``NoiseHandler`` also multiplies sigma by ``alpha`` while
``S > 0``. On the noisy spheres of the tests (10-D, additive noise 1e-2 and
multiplicative ``exp(N(0, 1))`` noise) that made sigma grow without bound,
so this handler adapts only the evaluations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["UncertaintyHandler", "rank_change_measure"]

# Smoothing constant of the measurement (c_s); pycma 4.x uses the same.
_SMOOTHING = 0.3
# Percentile of the rank distances that a random reordering reaches (theta = 0.5).
_LIMIT_PERCENTILE = 25.0


class UncertaintyHandler:
    """Measure rank changes under re-evaluation and adapt evaluations per point.

    Use it around :meth:`SpectralES.tell`; :func:`spectral_es.minimize` with
    ``noise_handling=True`` does this for you::

        X = es.ask()
        k = es.noise.evaluations_per_point
        f = mean of k evaluations of each row of X
        f_again = mean of k further evaluations of each row of X[es.noise.indices]
        es.tell(X, es.noise.update(f, f_again))

    Args:
        n: Dimension.
        popsize: Samples per iteration, >= 2.
        max_evaluations: Upper limit of evaluations averaged per point, >= 1.

    Attributes:
        evaluations: Evaluations averaged per point, a float in
            ``[1, max_evaluations]``; :attr:`evaluations_per_point` rounds it.
        uncertainty: The smoothed measurement ``S``; positive while noise
            dominates the ranking.
    """

    def __init__(self, n: int, popsize: int, max_evaluations: int = 20) -> None:
        integral = isinstance(max_evaluations, (int, np.integer)) and not isinstance(max_evaluations, bool)
        if not integral or max_evaluations < 1:
            raise ValueError(
                f"noise_max_evaluations must be an integer >= 1, got {max_evaluations!r}; "
                "1 measures the noise without averaging repeated evaluations"
            )
        self.n_reevaluated = min(popsize, 2 + popsize // 20)
        self.alpha = 1 + 2 / (n + 10)
        self.max_evaluations = int(max_evaluations)
        self.evaluations = 1.0
        self.uncertainty = 0.0
        self._spent: int | None = None

    @property
    def evaluations_per_point(self) -> int:
        """Number of evaluations to average for each point this iteration."""
        return int(round(self.evaluations))

    @property
    def indices(self) -> np.ndarray:
        """Rows of the population to evaluate a second time, shape (n_reevaluated,)."""
        return np.arange(self.n_reevaluated)

    def update(self, f: Any, f_again: Any) -> np.ndarray:
        """Measure the noise, adapt the evaluations and return the values to tell.

        Args:
            f: Objective values of the population, shape (popsize,), each the
                mean of :attr:`evaluations_per_point` evaluations.
            f_again: Values of the re-evaluated rows :attr:`indices`, shape
                (n_reevaluated,), computed the same way.

        Returns:
            Shape (popsize,): ``f`` with the re-evaluated rows replaced by the
            mean of both values.
        """
        f = np.asarray(f, dtype=float)
        f_again = np.asarray(f_again, dtype=float)
        index = self.indices
        if f_again.shape != index.shape:
            raise ValueError(
                f"f_again has shape {f_again.shape}, expected ({index.size},): one value per row of indices"
            )
        self._spent = self.evaluations_per_point * (f.size + index.size)

        # Measure and smooth; non-finite values carry no rank information.
        if np.all(np.isfinite(f)) and np.all(np.isfinite(f_again)):
            self.uncertainty += _SMOOTHING * (rank_change_measure(f, f_again, index) - self.uncertainty)

        # More evaluations while noise dominates the ranking, fewer otherwise.
        if self.uncertainty > 0:
            self.evaluations = min(self.evaluations * self.alpha, float(self.max_evaluations))
        else:
            self.evaluations = max(self.evaluations * self.alpha**-0.25, 1.0)

        told = f.copy()
        told[index] = 0.5 * (f[index] + f_again)
        return told

    def take_evaluation_count(self, popsize: int) -> int:
        """Return the evaluations spent since the last call and reset the count.

        Without an :meth:`update` since the last call, ``popsize`` times the
        evaluations per point.
        """
        spent = self._spent if self._spent is not None else popsize * self.evaluations_per_point
        self._spent = None
        return spent

    def state_dict(self) -> dict[str, Any]:
        """Return the adaptive state, for checkpoints."""
        return {
            "max_evaluations": self.max_evaluations,
            "evaluations": self.evaluations,
            "uncertainty": self.uncertainty,
            "spent": self._spent,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        self.max_evaluations = int(state["max_evaluations"])
        self.evaluations = float(state["evaluations"])
        self.uncertainty = float(state["uncertainty"])
        self._spent = None if state["spent"] is None else int(state["spent"])


def rank_change_measure(f: np.ndarray, f_again: np.ndarray, index: np.ndarray) -> float:
    """Return ``s = mean_i(|Delta_i| - max(1, Delta_lim_i))`` over the re-evaluated rows ``index``.

    Ranks are 0-based positions in the ascending order of all ``2 lam``
    values (the ``lam`` values ``f`` and ``f`` with ``f_again`` in place at
    ``index``); ties keep input order. ``Delta_lim_i`` averages, over the two
    copies of sample ``i``, the 25th percentile of the distances from its
    position among the ``2 lam - 1`` other values to every such position.
    """
    lam = f.size
    second = f.copy()
    second[index] = f_again
    order = np.argsort(np.concatenate([f, second]), kind="stable")
    ranks = np.empty(2 * lam, dtype=int)
    ranks[order] = np.arange(2 * lam)
    first_rank, second_rank = ranks[:lam][index], ranks[lam:][index]

    # Rank change, not counting the sample's own other copy.
    change = np.abs(first_rank - second_rank) - 1

    # Rank change that a random reordering would produce.
    positions = np.arange(1, 2 * lam)
    limits = np.empty(index.size)
    for k, (r1, r2) in enumerate(zip(first_rank, second_rank, strict=True)):
        own1 = r1 + 1 - (r1 > r2)  # 1-based position among the other 2 lam - 1 values
        own2 = r2 + 1 - (r2 > r1)
        limits[k] = 0.5 * (
            np.percentile(np.abs(positions - own1), _LIMIT_PERCENTILE)
            + np.percentile(np.abs(positions - own2), _LIMIT_PERCENTILE)
        )
    return float(np.mean(change - np.maximum(1.0, limits)))
