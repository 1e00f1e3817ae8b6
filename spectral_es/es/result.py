"""The result of a SpectralES run and the warning for non-finite objective values."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from spectral_es._keywords import handle_missing_attribute

if TYPE_CHECKING:
    from spectral_es.es.history import History

__all__ = ["ESResult", "NonFiniteObjectiveWarning", "format_stop", "target_of"]


class NonFiniteObjectiveWarning(RuntimeWarning):
    """Warning for NaN or infinite objective values, which rank as worst."""


# pycma's and scipy's names of result attributes that have other names here, with the fix.
_FOREIGN_ATTRIBUTES = {
    "evaluations": "pycma's evaluations is nfev here",
    "iterations": "pycma's iterations is nit here",
    "xfavorite": "pycma's xfavorite is mean here",
    "stds": "pycma's stds are the strategy's es.coordinate_std(), or result.history['std'][-1]",
    "status": "scipy's status: success says whether the run reached its target, stop and message say why it ended",
}


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
        f_target: The run's ``f_target`` option, or ``None`` for a run
            without a target (``None`` or ``-inf``). It decides
            :attr:`success`.

    The ``scipy.optimize.OptimizeResult`` names are properties:

    * ``x`` is :attr:`xbest` and ``fun`` is :attr:`fbest`.
    * ``success``: with a target, whether ``fbest <= f_target``, so a
      restarting run succeeds if any of its runs reached the target.
      Without a target, whether the run stopped on ``tol_f`` or ``tol_x``
      (a converged search, though perhaps in a local minimum). ``False``
      while the run continues.
    * ``message``: the stop reasons as one line, such as
      ``"tol_f=1e-11 (f_target=1e-08 not reached)"``, or ``"running"``.
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
    f_target: float | None = None

    if not TYPE_CHECKING:  # a __getattr__ that type checkers see would let them accept any attribute

        def __getattr__(self, name: str) -> Any:
            return handle_missing_attribute(self, name, _FOREIGN_ATTRIBUTES)

    def __getitem__(self, key: str) -> Any:
        """Return the field or property named ``key``, as ``scipy.optimize.OptimizeResult`` (a dict) does.

        ``result["x"]`` is ``result.x``. An unknown name raises ``KeyError``,
        which lists the names, or for a pycma or scipy name says which to
        use. A position (pycma's ``result[0]``) raises ``TypeError``, because
        a result is not a tuple.
        """
        if not isinstance(key, str):
            raise TypeError(
                f"ESResult is not a sequence, so result[{key!r}] has no meaning; read the fields by name, such as "
                "result.xbest or result['x'] (pycma's result[0]) and result.fbest or result['fun'] (result[1])"
            )
        names = [item.name for item in fields(self)] + ["x", "fun", "success", "message"]
        if key in names:
            return getattr(self, key)
        hint = _FOREIGN_ATTRIBUTES.get(key, f"the names are {', '.join(names)}")
        raise KeyError(f"ESResult has no field {key!r}; {hint}")

    def __iter__(self) -> Iterator[Any]:
        """Raise ``TypeError``: a result unpacks by name, not by position as pycma's named tuple does."""
        raise TypeError(
            "ESResult is not iterable, so it does not unpack as pycma's result tuple does; read the fields by "
            "name, such as x, f = result.xbest, result.fbest"
        )

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
        """Whether the run reached ``f_target``, or, for a run without a target, stopped on ``tol_f`` or ``tol_x``."""
        if self.f_target is not None:
            return bool(self.fbest <= self.f_target)
        return bool(set(self.stop) & {"f_target", "tol_f", "tol_x"})

    @property
    def message(self) -> str:
        """The stop reasons as one line, followed by a missed target; ``"running"`` while the run continues."""
        if not self.stop:
            return "running"
        reasons = format_stop(self.stop)
        if self.f_target is not None and not self.success:
            reasons += f" (f_target={self.f_target} not reached)"
        return reasons


def format_stop(stop: dict[str, Any]) -> str:
    """Return stop reasons as one line, such as ``"tol_f=1e-11, max_iter=500"``."""
    return ", ".join(f"{key}={value}" for key, value in stop.items())


def target_of(options: dict[str, Any]) -> float | None:
    """Return the ``f_target`` option, or ``None`` for no target, which the options store as ``-inf``."""
    target = options["f_target"]
    return None if target == -math.inf else target
