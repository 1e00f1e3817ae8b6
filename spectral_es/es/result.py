"""The result of a SpectralES run and the warning for non-finite objective values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spectral_es.es.history import History

__all__ = ["ESResult", "NonFiniteObjectiveWarning"]


class NonFiniteObjectiveWarning(RuntimeWarning):
    """Warning for NaN or infinite objective values, which rank as worst."""


@dataclass(frozen=True, eq=False)
class ESResult:
    """Outcome of a run, also usable while it is in progress.

    Results compare and hash by identity: ``a == b`` only for the same
    object, and a result can be a dict key or a set member. A field-wise
    ``==`` would raise on the arrays, as it does for
    ``scipy.optimize.OptimizeResult`` (a dict, so also unhashable). Compare
    fields instead, such as ``a.fbest == b.fbest`` and
    ``np.array_equal(a.xbest, b.xbest)``.

    Attributes:
        xbest: Best solution evaluated so far, shape (n,).
        fbest: Its objective value (``inf`` before the first finite value).
        mean: Current mean of the search distribution, shape (n,), mapped
            into the bounds and rounded in the integer variables like a sample.
        sigma: Current global step size.
        nfev: Number of objective evaluations passed to ``tell`` so far.
        nit: Number of completed iterations (generations), summed over all
            runs for a restarting :func:`spectral_es.minimize`.
        stop: Triggered termination criteria, ``{name: threshold or value}``;
            empty while the run continues.
        n_nonfinite: Number of NaN or infinite objective values seen.
        restarts: Per-restart summaries when produced by a restarting
            :func:`spectral_es.minimize`, else empty.
        history: The :class:`~spectral_es.es.history.History` of the run
            (of all runs, for a restarting :func:`spectral_es.minimize`).
    """

    xbest: np.ndarray
    fbest: float
    mean: np.ndarray
    sigma: float
    nfev: int
    nit: int
    stop: dict[str, Any]
    n_nonfinite: int = 0
    restarts: tuple[dict[str, Any], ...] = field(default=())
    history: History | None = field(default=None, repr=False)

    @property
    def x(self) -> np.ndarray:
        """Best solution, under its ``scipy.optimize.OptimizeResult`` name."""
        return self.xbest

    @property
    def fun(self) -> float:
        """Best objective value, under its ``scipy.optimize`` name."""
        return self.fbest

    @property
    def success(self) -> bool:
        """Whether the run stopped on the target or a convergence tolerance."""
        return bool(set(self.stop) & {"f_target", "tol_f", "tol_x"})

    @property
    def message(self) -> str:
        """The stop reasons as one line."""
        if not self.stop:
            return "running"
        return ", ".join(f"{key}={value}" for key, value in self.stop.items())
