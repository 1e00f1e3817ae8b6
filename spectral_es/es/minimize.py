"""``minimize``: run SpectralES on a function, with optional IPOP restarts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from spectral_es.es.strategy import ESResult, SpectralES

__all__ = ["evaluate", "minimize", "optimize"]

# Stop reasons after which a restart cannot help or was not asked for.
_FINAL_STOPS = frozenset({"f_target", "max_evals", "callback", "non_finite_state"})


def evaluate(fun: Callable, X: np.ndarray, args: tuple = (), vectorized: bool = False) -> np.ndarray:
    """Return the objective values of the rows of ``X``, shape (len(X),).

    With ``vectorized`` the function is called once on the whole array and
    must return one value per row; otherwise it is called once per row and
    must return a scalar.
    """
    if vectorized:
        values = np.asarray(fun(X, *args), dtype=float)
        if values.shape not in ((len(X),), (len(X), 1)):
            raise ValueError(
                f"a vectorized objective must return one value per row, shape ({len(X)},), "
                f"got shape {values.shape}; pass vectorized=False for a function of one point"
            )
        return values.reshape(len(X))
    values = np.empty(len(X))
    for k, x in enumerate(X):
        value = fun(x, *args)
        try:
            values[k] = value
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"the objective must return a scalar, got {value!r} at x = {x!r}; "
                "pass vectorized=True if it takes the whole population at once"
            ) from error
    return values


def optimize(
    es: SpectralES,
    fun: Callable,
    *,
    args: tuple = (),
    vectorized: bool = False,
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
) -> ESResult:
    """Run ask/evaluate/tell on ``es`` until :meth:`SpectralES.stop` is non-empty.

    ``callback(result)`` is called after every iteration with the current
    :class:`ESResult`; returning ``True`` or raising ``StopIteration`` stops
    the run with the reason ``"callback"``. ``disp`` prints a progress line
    every ``disp`` iterations (``True``: every 10) and the final one.
    """
    every = 10 if disp is True else int(disp)
    while not es.stop():
        X = es.ask()
        es.tell(X, evaluate(fun, X, args, vectorized))
        if callback is not None:
            try:
                halt = callback(es.result)
            except StopIteration:
                halt = True
            if halt is True:
                es.request_stop("callback", True)
        if every > 0:
            es.disp(every)
    return es.result


def minimize(
    fun: Callable,
    x0: Any,
    sigma0: float,
    *,
    args: tuple = (),
    vectorized: bool = False,
    restarts: int = 0,
    incpopsize: float = 2,
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
    seed: int | None = None,
    **options: Any,
) -> ESResult:
    """Minimise ``fun`` with SpectralES, restarting with larger populations (IPOP).

    Args:
        fun: Objective, ``fun(x, *args) -> float`` for ``x`` of shape (n,),
            or with ``vectorized=True``, ``fun(X, *args)`` for the whole
            population ``X`` of shape (popsize, n), returning shape (popsize,).
        x0: Initial mean, shape (n,).
        sigma0: Initial step size, > 0.
        args: Extra positional arguments of ``fun``.
        vectorized: Evaluate the whole population in one call.
        restarts: Number of restarts after a stop that is not final (the
            final ones are ``f_target``, ``max_evals``, ``callback`` and
            ``non_finite_state``). Each restart begins again at ``x0`` with
            ``sigma0`` and the population size multiplied by ``incpopsize``
            (Auger and Hansen 2005, IPOP-CMA-ES). ``max_evals`` bounds the
            evaluations of all runs together.
        incpopsize: Population growth factor per restart, >= 1.
        callback: Called with the current :class:`ESResult` after every
            iteration; returning ``True`` or raising ``StopIteration`` ends
            the run (and all restarts).
        disp: Print progress every ``disp`` iterations (``True``: every 10).
        seed: Seed of the whole run, restarts included; 0 is valid.
        **options: Further :class:`SpectralES` options (``popsize``,
            ``diagonal``, ``max_evals``, ``f_target``, ``tol_x``, ...).

    Returns:
        ESResult: The best solution over all runs; ``stop`` holds the last
        run's reasons, and ``restarts`` one summary per run when
        ``restarts > 0``.
    """
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
        raise ValueError(f"restarts must be an integer >= 0, got {restarts!r}")
    if not incpopsize >= 1:
        raise ValueError(f"incpopsize must be >= 1, got {incpopsize!r}")
    seeds = np.random.SeedSequence(seed).spawn(restarts + 1)
    max_evals = options.pop("max_evals", None)
    budget = math.inf if max_evals is None else max_evals
    popsize = options.pop("popsize", None)
    best = None
    summaries: list[dict[str, Any]] = []
    nfev = nit = n_nonfinite = 0
    for run in range(restarts + 1):
        remaining = budget - nfev
        es = SpectralES(
            x0,
            sigma0,
            popsize=popsize,
            seed=seeds[run],
            max_evals=None if math.isinf(remaining) else remaining,
            **options,
        )
        if disp and restarts:
            print(f"run {run + 1} of at most {restarts + 1}, popsize {es.popsize}", flush=True)
        result = optimize(es, fun, args=args, vectorized=vectorized, callback=callback, disp=disp)
        nfev += result.nfev
        nit += result.nit
        n_nonfinite += result.n_nonfinite
        summaries.append(
            {"run": run, "popsize": es.popsize, "fbest": result.fbest, "nfev": result.nfev, "nit": result.nit, "stop": result.stop}
        )
        if best is None or result.fbest < best.fbest:
            best = result
        popsize = int(math.ceil(es.popsize * incpopsize))
        if set(result.stop) & _FINAL_STOPS or nfev >= budget:
            break
    stop = result.stop
    if "max_evals" in stop:
        stop["max_evals"] = budget  # the whole budget, not the last run's share
    return ESResult(
        xbest=best.xbest,
        fbest=best.fbest,
        mean=result.mean,
        sigma=result.sigma,
        nfev=nfev,
        nit=nit,
        stop=stop,
        n_nonfinite=n_nonfinite,
        restarts=tuple(summaries) if restarts else (),
    )
