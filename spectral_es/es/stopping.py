"""Termination criteria of SpectralES.

:func:`check_stop` adds every criterion that is met to the strategy's stop
dictionary, keyed by the option that sets its threshold. The strategy calls
it once per iteration.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["all_std_below", "check_stop"]


def check_stop(es: Any) -> None:
    """Add the termination criteria that ``es`` meets to its stop dictionary."""
    options, stop = es.options, es._stop
    if es.nfev >= options["max_evals"]:
        stop["max_evals"] = options["max_evals"]
    if es.nit >= options["max_iter"]:
        stop["max_iter"] = options["max_iter"]
    if es.fbest <= options["f_target"]:
        stop["f_target"] = options["f_target"]
    if es._flat_iterations >= options["tol_flat"]:
        # Equal values that are all NaN or infinite are no flat function:
        # the objective failed everywhere it was evaluated.
        reason = "tol_flat" if np.isfinite(es._last_f[0]) else "non_finite_objective"
        stop[reason] = options["tol_flat"]
    history = es._best_history
    if len(history) == history.maxlen:
        values = np.concatenate([es._last_f, np.asarray(history)])
        if np.all(np.isfinite(values)) and np.ptp(values) < options["tol_f"]:
            stop["tol_f"] = options["tol_f"]
    if all_std_below(es, options["tol_x"]):
        stop["tol_x"] = options["tol_x"]
    if es.condition_number > options["tol_condition"]:
        stop["tol_condition"] = options["tol_condition"]
    # The largest standard deviation of the shape S^{-1} is 1 / sqrt(min(d)).
    if es.sigma > options["tol_up_sigma"] * es.sigma0 / math.sqrt(es.d.min()):
        stop["tol_up_sigma"] = options["tol_up_sigma"]
    lag = int(options["tol_stagnation"]) if math.isfinite(options["tol_stagnation"]) else es.nit
    if es.nit > lag + 20 and len(es._stagnation_best) >= lag + 20:
        best, median = np.asarray(es._stagnation_best), np.asarray(es._stagnation_median)
        if np.median(best[-20:]) >= np.median(best[:20]) and np.median(median[-20:]) >= np.median(median[:20]):
            stop["tol_stagnation"] = options["tol_stagnation"]


def all_std_below(es: Any, threshold: float) -> bool:
    """Return whether every coordinate standard deviation is below ``threshold``.

    Each variance ``sigma^2 sum_k B_ik^2 / d_k`` lies between
    ``sigma^2 / max(d)`` and ``sigma^2 / min(d)``, so the O(n^2) exact
    check runs only when those bounds do not decide. With integer
    variables only the other variables count (none left: ``False``).
    """
    if es._scaling is not None:
        continuous = np.ones(es.n, dtype=bool)
        continuous[es.domain.integer] = False
        return bool(continuous.any() and np.all(es.coordinate_std()[continuous] < threshold))
    if es.sigma / math.sqrt(es.d.min()) < threshold:
        return True
    if es.sigma / math.sqrt(es.d.max()) >= threshold:
        return False
    return bool(np.all(es.coordinate_std() < threshold))
