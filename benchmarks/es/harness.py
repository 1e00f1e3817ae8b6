"""Problems, budgets and a counting objective shared by every method of the benchmarks.

Every method receives the same :class:`Problem` (function, dimension, start
``x0``, ``sigma0``, target, evaluation budget and seed) and evaluates it only
through an :class:`Objective`, which counts evaluations, records the best
value after every call and raises :class:`BudgetExceededError` before a call
would exceed the budget. Evaluations to target are therefore counted the same
way for every method: the evaluations made up to the end of the call (one
generation) in which a value first reached the target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from spectral_es.functions import FUNCTIONS

__all__ = [
    "MULTIMODAL",
    "UNIMODAL",
    "BudgetExceededError",
    "Objective",
    "Problem",
    "RunRecord",
    "make_problem",
    "run",
    "start_bound",
    "thin_trace",
]

UNIMODAL = ("sphere", "ellipsoid", "rotated_ellipsoid", "rosenbrock")
MULTIMODAL = ("ackley", "griewank", "rastrigin", "bohachevsky", "schaffer")

# Schaffer's function grows like |x|^(1/2) near its minimum, so reaching
# 1e-8 would need |x| ~ 1e-16; 1e-4 is the usual target for it.
_TARGETS = {"schaffer": 1e-4}
_DEFAULT_TARGET = 1e-8


class BudgetExceededError(Exception):
    """Raised by :class:`Objective` instead of exceeding the evaluation budget."""


@dataclass(frozen=True)
class Problem:
    """One benchmark instance, handed unchanged to every method.

    Attributes:
        function: Name of a function in :data:`spectral_es.functions.FUNCTIONS`.
        n: Dimension.
        seed: Seed of the run (>= 1, since pycma treats 0 as "use the clock").
        x0: Start, shape (n,), drawn from ``U[-bound, bound]^n`` with ``seed``.
        sigma0: Initial step size.
        f_target: A run succeeds once a value is ``<= f_target``.
        budget: Maximum number of evaluations, restarts included.
    """

    function: str
    n: int
    seed: int
    x0: np.ndarray = field(repr=False)
    sigma0: float
    f_target: float
    budget: int

    @property
    def key(self) -> tuple[str, int]:
        """``(function, n)``, the cell of the result tables."""
        return (self.function, self.n)


def start_bound(function: str) -> float:
    """Return ``b`` of the start box ``[-b, b]^n`` of ``function``: 5 for multimodal, 3 for unimodal ones."""
    return 5.0 if function in MULTIMODAL else 3.0


def make_problem(
    function: str, n: int, seed: int, *, budget_per_dimension: Sequence[int] = (10_000, 100_000)
) -> Problem:
    """Return the problem ``(function, n, seed)`` with its start, step size, target and budget.

    Unimodal functions start from ``x0 ~ U[-3, 3]^n`` with ``sigma0 = 1``,
    multimodal ones from ``x0 ~ U[-5, 5]^n`` with ``sigma0 = 2``. The start
    depends only on ``seed`` and ``n``, so all functions of one seed share it.
    The budget is ``budget_per_dimension[0] * n`` evaluations for unimodal and
    ``budget_per_dimension[1] * n`` for multimodal functions.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; use one of {sorted(FUNCTIONS)}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n!r}")
    if seed < 1:
        raise ValueError(f"seed must be >= 1 (pycma reads seed 0 as 'seed from the clock'), got {seed!r}")
    multimodal = function in MULTIMODAL
    sigma0 = 2.0 if multimodal else 1.0
    bound = start_bound(function)
    x0 = np.random.default_rng(seed).uniform(-bound, bound, n)
    return Problem(
        function=function,
        n=n,
        seed=seed,
        x0=x0,
        sigma0=sigma0,
        f_target=_TARGETS.get(function, _DEFAULT_TARGET),
        budget=int(budget_per_dimension[int(multimodal)] * n),
    )


class Objective:
    """Counting, budget-enforcing wrapper of a test function.

    Call it with one point, shape (n,), or rows, shape (k, n). It raises
    :class:`BudgetExceededError` when ``nfev + k`` would exceed ``budget``, and
    records ``(nfev, best value so far)`` after every call that improves.

    Attributes:
        nfev: Evaluations made so far.
        fbest: Best value so far.
        nfev_to_target: ``nfev`` at the end of the first call whose best value
            reached ``f_target``, or ``None``.
        trace: ``[(nfev, fbest)]`` after each improving call.
    """

    def __init__(self, function: Callable, budget: int, f_target: float) -> None:
        self.function = function
        self.budget = budget
        self.f_target = f_target
        self.nfev = 0
        self.fbest = math.inf
        self.nfev_to_target: int | None = None
        self.trace: list[tuple[int, float]] = []

    def __call__(self, x):
        X = np.asarray(x, dtype=float)
        rows = np.atleast_2d(X)
        if self.nfev + len(rows) > self.budget:
            raise BudgetExceededError(f"{self.nfev} + {len(rows)} evaluations would exceed the budget {self.budget}")
        values = np.asarray(self.function(rows), dtype=float)
        self.nfev += len(rows)
        best = float(np.nanmin(values)) if np.any(~np.isnan(values)) else math.inf
        if best < self.fbest:
            self.fbest = best
            self.trace.append((self.nfev, best))
        if self.nfev_to_target is None and self.fbest <= self.f_target:
            self.nfev_to_target = self.nfev
        return values if X.ndim == 2 else float(values[0])


@dataclass
class RunRecord:
    """Outcome of one method on one problem.

    Attributes:
        method: Method name.
        function, n, seed: The problem.
        success: Whether a value reached the target within the budget.
        evals: Evaluations to target if ``success``, else all evaluations made.
        fbest: Best value found.
        stop: The method's stop reason, ``"budget"``, or ``"error: ..."`` when
            the method raised an exception.
        seconds: Wall-clock time of the run, evaluations included.
        trace: ``[(nfev, fbest)]`` after each improvement.
    """

    method: str
    function: str
    n: int
    seed: int
    success: bool
    evals: int
    fbest: float
    stop: str
    seconds: float
    trace: list[tuple[int, float]]


def thin_trace(trace: Sequence[tuple[int, float]], drop: float = 0.01) -> list[tuple[int, float]]:
    """Return the points of ``trace`` where the best value fell by at least ``drop`` of the last kept one.

    The first and last points are always kept, so the result starts and ends
    where ``trace`` does. A long run's trace has a point per improvement, up
    to millions of them. On the logarithmic axes of the convergence figures
    a fall of 1% is far below a pixel, and the page's cells use
    ``RunRecord.evals``, not traces.
    """
    if len(trace) <= 2:
        return list(trace)
    thinned = [trace[0]]
    for point in trace[1:-1]:
        last = thinned[-1][1]
        # After an infinite or NaN value, any finite one is a fall.
        if not math.isfinite(last) or point[1] <= last - drop * abs(last):
            thinned.append(point)
    thinned.append(trace[-1])
    return thinned


def _caused_by_budget(error: BaseException | None) -> bool:
    """Return whether ``error`` or an exception in its ``__cause__`` chain is a BudgetExceededError."""
    while error is not None:
        if isinstance(error, BudgetExceededError):
            return True
        error = error.__cause__
    return False


Runner = Callable[[Problem, Objective], str]
"""A method: runs on ``(problem, objective)`` and returns its stop reason."""


def run(method: str, runner: Runner, problem: Problem) -> RunRecord:
    """Run ``runner`` on ``problem`` through a fresh :class:`Objective`."""
    objective = Objective(FUNCTIONS[problem.function], problem.budget, problem.f_target)
    start = time.perf_counter()
    try:
        stop = runner(problem, objective)
    except Exception as error:
        # A method may wrap the objective's exception in its own. Any other
        # exception is the method failing on this run: it is recorded as the
        # stop reason, so that one crash does not end the whole comparison.
        stop = "budget" if _caused_by_budget(error) else f"error: {type(error).__name__}: {error}"
    seconds = time.perf_counter() - start
    success = objective.nfev_to_target is not None
    return RunRecord(
        method=method,
        function=problem.function,
        n=problem.n,
        seed=problem.seed,
        success=success,
        evals=objective.nfev_to_target if success else objective.nfev,
        fbest=objective.fbest,
        stop=stop,
        seconds=seconds,
        trace=objective.trace,
    )
