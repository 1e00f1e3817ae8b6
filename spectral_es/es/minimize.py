"""``minimize`` and ``optimize``: run SpectralES on a function.

:func:`optimize` runs the ask/evaluate/tell loop on one strategy.
:func:`minimize` adds IPOP or BIPOP restarts, parallel or distributed evaluation,
a CSV log and checkpoints, and :func:`resume` continues a :func:`minimize`
run from its checkpoint exactly where it was saved.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from spectral_es.es import checkpoint as checkpoints
from spectral_es.es.bounds import Bounds, parse_bounds, validate_integer_variables
from spectral_es.es.driver import (
    RestartDriver,
    as_args,
    check_callback,
    check_new_checkpoint,
    display_interval,
    draw_start,
    new_progress,
    run_callback,
    step,
    stored_run,
)
from spectral_es.es.evaluation import EvaluationError, ObjectiveValueError, evaluate, resolve_executor
from spectral_es.es.options import (
    hint_misused_options,
    unknown_option_hint,
    validate_positive,
    validate_real,
    validate_seed,
    validate_sigma0,
    validate_x0,
    whole_number_as_int,
)
from spectral_es.es.strategy import ESResult, SpectralES

__all__ = [
    "EvaluationError",
    "ObjectiveValueError",
    "check_new_checkpoint",
    "evaluate",
    "minimize",
    "objective_name",
    "optimize",
    "read_plan",
    "resume",
    "step",
]

# The start of the warning of a resume without log whose saved run wrote one.
# The command line prints its own note instead and filters this one out.
SAVED_LOG_WARNING = "the saved run logged to"

# The SpectralES options that minimize() passes on through **options; x0,
# sigma0 and seed are its own arguments.
_STRATEGY_OPTIONS = tuple(
    name for name in inspect.signature(SpectralES.__init__).parameters if name not in ("self", "x0", "sigma0", "seed")
)


@hint_misused_options
def optimize(
    es: SpectralES,
    fun: Callable,
    *,
    args: tuple = (),
    vectorized: bool = False,
    executor: Any = None,
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
) -> ESResult:
    """Run :func:`step` on ``es`` until :meth:`SpectralES.stop` is non-empty.

    ``callback(result)`` is called after every iteration with the current
    :class:`ESResult`. Returning ``True`` (or numpy's ``np.True_``) or
    raising ``StopIteration`` stops the run with the reason ``"callback"``.
    Any other return value, truthy or not, lets the run go on. ``disp``
    prints a progress line every ``disp`` iterations (``True``: every 10)
    and the final one.
    ``args`` and ``executor`` are as in :func:`minimize`.

    Raises:
        TypeError: if ``callback`` is neither callable nor ``None``.
        ValueError: if ``disp`` is negative or not an integer.
        EvaluationError: if ``fun`` raises or returns an invalid value, as
            in :func:`step`; ``error.strategy`` is ``es``.
    """
    check_callback(callback)
    every, args = display_interval(disp), as_args(args)
    executor = resolve_executor(executor)
    while not es.stop():
        step(es, fun, args, vectorized, executor)
        run_callback(es, callback)
        if every > 0:
            es.disp(every)
    return es.result


@hint_misused_options
def minimize(
    fun: Callable,
    x0: Any,
    sigma0: float,
    *,
    args: tuple = (),
    vectorized: bool = False,
    executor: Any = None,
    restarts: int = 0,
    incpopsize: float = 2,
    bipop: bool = False,
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
    seed: int | None = None,
    log: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    **options: Any,
) -> ESResult:
    """Minimise ``fun`` with SpectralES, restarting with larger populations (IPOP or BIPOP).

    Args:
        fun: Objective, ``fun(x, *args) -> float`` for ``x`` of shape (n,),
            or with ``vectorized=True``, ``fun(X, *args)`` for the whole
            population ``X`` of shape (popsize, n), returning shape (popsize,).
        x0: Initial mean, shape (n,), where every run starts; or a function
            that draws each run's start, ``x0(rng)`` with a
            ``numpy.random.Generator`` derived from ``seed`` (so runs
            repeat and resume exactly), or ``x0()`` as in pycma. Random
            starts suit restarts, BIPOP's small runs above all.
        sigma0: Initial step size, > 0.
        args: Extra positional arguments of ``fun``, a tuple; any other
            value is one argument, as in ``scipy.optimize``.
        vectorized: Evaluate the whole population in one call. The
            checkpoint stores it, and :func:`resume` uses it by default.
        executor: Where to evaluate. ``None`` evaluates here, one point
            after the other. Any :class:`concurrent.futures.Executor` or a
            Dask ``distributed.Client`` gets one task per point, and the
            values keep the population's order. With ``vectorized``, the
            whole population is one task. The executor is not shut down.
        restarts: Number of restarts after a stop that is not final (the
            final ones are ``f_target``, ``max_evals``, ``callback`` and
            ``non_finite_state``). Each restart begins again at ``x0`` with
            ``sigma0`` and the population size multiplied by ``incpopsize``
            (Auger and Hansen 2005, IPOP-CMA-ES). ``max_evals`` bounds the
            evaluations of all runs together; the population that reaches it
            is completed, so ``nfev`` may exceed it by less than that
            population's evaluations (several per point with noise
            handling), as in pycma.
        incpopsize: Population growth factor per restart, finite and >= 1.
        bipop: Interleave the restarts with short runs of smaller population
            and smaller initial step size, drawn at random (Hansen 2009,
            BIPOP-CMA-ES), for functions whose local optima follow no
            global trend. ``restarts`` then counts only the large runs;
            :mod:`spectral_es.es.restarts` has the rules. Needs ``restarts >= 1``.
        callback: Called with the current :class:`ESResult` after every
            iteration; returning ``True`` (or numpy's ``np.True_``) or
            raising ``StopIteration`` ends the run (and all restarts).
        disp: Print progress every ``disp`` iterations (``True``: every 10;
            ``False`` or 0: never).
        seed: Seed of the whole run, restarts included; 0 is valid. Each
            run's strategy gets a child of ``numpy.random.SeedSequence(seed)``
            (``spawn``), so ``minimize(..., seed=s)`` samples other points
            than an ask/tell loop over ``SpectralES(..., seed=s)``; both
            repeat exactly when run again.
        log: CSV file that receives one row per iteration as the run goes
            (format in :mod:`spectral_es.es.history`); the last row of each
            run contains its stop reasons. An existing file is replaced
            only if it is empty or a spectral_es log.
        checkpoint: File (``.npz``) that receives the complete state every
            ``checkpoint_every`` iterations, when the run ends and when an
            evaluation fails or is interrupted (``KeyboardInterrupt`` there,
            which then carries a note naming the file on Python 3.11 and
            later); :func:`resume` continues from it. An existing
            file is replaced only if it is empty or the checkpoint of a
            finished run (see :func:`check_new_checkpoint`).
        checkpoint_every: Iterations between checkpoints, >= 1.
        **options: Further :class:`SpectralES` options (``popsize``,
            ``diagonal``, ``max_evals``, ``f_target``, ``bounds``,
            ``integer_variables``, ``noise_handling``, ...).

    Returns:
        ESResult: The best solution over all runs; ``stop`` contains the last
        run's reasons, ``restarts`` one summary per run when
        ``restarts > 0`` (``run``, ``regime``, ``sigma0``, ``popsize``,
        ``fbest``, ``mean``, ``nfev``, ``nit``, ``stop``), and ``history``
        the rows of all runs. ``mean`` is the last run's; each summary has
        the final mean of its run, as a list of floats, so that summaries
        stay plain data that compare with ``==`` (``None`` for runs that a
        checkpoint stored without it).

    Raises:
        TypeError: if ``fun`` is not callable, ``callback`` is neither
            callable nor ``None``, or for a keyword argument that is neither
            an argument of ``minimize`` nor a :class:`SpectralES` option.
        EvaluationError: if ``fun`` raises, or returns something other
            than a real number per point, which raises the subclass
            :class:`ObjectiveValueError`. The checkpoint (if any) is
            written first, and ``error.strategy`` is the current strategy.
        ValueError: for invalid arguments, if ``log`` or ``checkpoint``
            cannot be written, would replace a file of another kind or an
            unfinished run's checkpoint, or are the same file, and, with
            ``checkpoint``, for an option that a checkpoint cannot store;
            all are checked before the first evaluation. (An
            :class:`ObjectiveValueError` during the run is a ValueError
            too, so that code which caught the ValueError raised for an
            invalid value before that class existed still catches it.)
    """
    _check_callable(fun)
    check_callback(callback)
    unknown = [name for name in options if name not in _STRATEGY_OPTIONS]
    if unknown:
        hint = unknown_option_hint(unknown[0], _STRATEGY_OPTIONS + _OWN_KEYWORDS)
        raise TypeError(
            f"minimize() got an unexpected keyword argument {unknown[0]!r}; {hint}"
            f"the SpectralES options it accepts are {', '.join(_STRATEGY_OPTIONS)}"
        )
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
        raise ValueError(f"restarts must be an integer >= 0, got {restarts!r}")
    # The first restart multiplies the population size by incpopsize, so
    # infinity or a string would otherwise fail only after the first run.
    growth_fix = "pass a finite number >= 1, such as 2 (the default)"
    growth = validate_real("incpopsize", incpopsize, growth_fix)
    if not (math.isfinite(growth) and growth >= 1):
        raise ValueError(f"incpopsize must be finite and >= 1, got {incpopsize!r}; {growth_fix}")
    if not isinstance(bipop, (bool, np.bool_)):
        raise ValueError(f"bipop must be True or False, got {bipop!r}")
    if bipop and restarts == 0:
        raise ValueError("bipop=True interleaves small runs with restarts, but restarts=0; pass restarts >= 1")
    # numpy types entropy as optional, but an int seed is kept as it is and None draws an int.
    seed = cast(int, validate_seed(seed).entropy)
    x0_function = x0 if callable(x0) else None
    x0 = validate_x0(x0) if x0_function is None else draw_start(x0_function, seed, 0)
    sigma0 = validate_sigma0(sigma0)
    max_evals = options.pop("max_evals", None)
    if max_evals is not None:
        max_evals = whole_number_as_int(validate_positive("max_evals", max_evals, "pass max_evals > 0 or omit it"))
    if options.get("bounds") is not None:
        # One unambiguous form, which the checkpoint stores as [lower, upper].
        options["bounds"] = Bounds(*parse_bounds(options["bounds"], x0.size))
    if options.get("integer_variables") is not None:
        # A list of ints, which the checkpoint stores (a range or an array would not be).
        options["integer_variables"] = validate_integer_variables(options["integer_variables"], x0.size, None).tolist()
    progress = new_progress(options.pop("popsize", None))
    plan = {
        "x0": x0,
        "sigma0": sigma0,
        "options": options,
        "seed": seed,
        "restarts": int(restarts),
        "incpopsize": growth,
        "bipop": bool(bipop),
        "budget": math.inf if max_evals is None else max_evals,
        "function": objective_name(fun),
        "vectorized": bool(vectorized),
        "x0_function": None if x0_function is None else objective_name(x0_function),
    }
    driver = RestartDriver(plan, progress)
    driver.configure(fun, args, executor, callback, disp, log, checkpoint, checkpoint_every, x0=x0_function)
    return driver.run()


# minimize's own keyword arguments, for the hint on a misspelt one such as pycma's verb_disp.
_OWN_KEYWORDS = tuple(
    parameter.name
    for parameter in inspect.signature(minimize).parameters.values()
    if parameter.kind == parameter.KEYWORD_ONLY
)


def _check_callable(fun: Any) -> None:
    if not callable(fun):
        raise TypeError(
            f"fun must be callable, got {fun!r}; pass the objective itself, for example "
            "spectral_es.functions.sphere (the CLI takes function names)"
        )


def resume(
    fun: Callable,
    path: str | os.PathLike,
    *,
    args: tuple = (),
    vectorized: bool | None = None,
    executor: Any = None,
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
    log: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    check_function: bool = True,
    max_evals: float | None = None,
    x0: Callable | None = None,
) -> ESResult:
    """Continue the :func:`minimize` run saved in the checkpoint ``path``.

    The strategy, the restart plan (start point, options, seed, budget) and
    the progress over restarts come from the file, so the continuation is
    identical to the uninterrupted run. A population whose evaluation
    failed is evaluated again first. If ``log`` is the file the saved run
    logged to, also moved or copied (the checkpoint stores a digest of its
    last rows), it is cut back to the rows it had when the checkpoint was
    written and then appended to, unless it was replaced or edited since,
    which raises ValueError. Any other file is started afresh, as in
    :func:`minimize` (an existing one must be empty or a spectral_es log),
    and contains the rows from the checkpoint on. Without ``log`` the
    continued run writes no log, and a ``UserWarning`` names the saved
    run's log if it had one. ``checkpoint`` defaults to
    ``path``; another existing file is replaced only under the rules of
    :func:`check_new_checkpoint`. ``vectorized`` defaults to the value the
    saved run used (``False`` for checkpoints that do not store it), and
    the other arguments are as in :func:`minimize`.

    The checkpoint stores the objective's ``module:qualified name``
    (:func:`objective_name`). Resuming with a function of another name is
    an error unless ``check_function=False``, for an objective that was
    fixed, renamed or wrapped since. The continued run's checkpoints then
    store the new name (and that of a new ``x0`` function).

    ``max_evals`` replaces the stored budget of all runs together. A run
    that stopped because it spent the old budget then goes on, as if it had
    had the new one from the start (see :meth:`SpectralES.set_budget`), and
    so do its restarts. In the log, the row where the old budget stopped the
    run keeps that stop reason.

    The checkpoint stores only the name of a function given as ``x0``, so
    such a run needs the function again as ``x0`` to draw later starts. A
    function of another name is an error, as for the objective, unless
    ``check_function=False``.

    Raises:
        TypeError: if ``fun`` is not callable or ``callback`` is neither
            callable nor ``None``.
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a :func:`minimize` checkpoint or is
            damaged, if ``fun`` is not the stored objective (with
            ``check_function``), if ``log`` or ``checkpoint`` cannot be
            written or would replace a file they must not replace, if
            ``log`` is ``path`` or ``checkpoint``, if ``max_evals`` is not
            above the evaluations already done, or if ``x0`` is missing for
            a run that drew its starts or given for one that did not.
            Nothing is written before these checks.
    """
    _check_callable(fun)
    check_callback(callback)
    es, extra = checkpoints.load(SpectralES, path)
    plan, progress = stored_run(extra, path)
    if len(plan["x0"]) != es.n:
        raise ValueError(
            f"{os.fspath(path)} is damaged: its plan's x0 has {len(plan['x0'])} coordinates, but its strategy has "
            f"n = {es.n}; load an undamaged checkpoint"
        )
    if check_function and plan["function"] != objective_name(fun):
        raise ValueError(
            f"{os.fspath(path)} was written for the objective {plan['function']}, not {objective_name(fun)}; "
            "pass that function, or check_function=False to continue the run with a changed objective"
        )
    if (x0 is None) != (plan["x0_function"] is None):
        raise ValueError(
            f"{os.fspath(path)} draws each run's start with {plan['x0_function']}; pass that function as x0"
            if x0 is None
            else f"{os.fspath(path)} starts every run at its stored x0; drop the x0 argument"
        )
    if x0 is not None and not callable(x0):
        raise TypeError(f"x0 must be the function that draws the starts, got {x0!r}")
    if x0 is not None and check_function and plan["x0_function"] != objective_name(x0):
        raise ValueError(
            f"{os.fspath(path)} draws each run's start with {plan['x0_function']}, not {objective_name(x0)}; "
            "pass that function as x0, or check_function=False to continue with another one"
        )
    # With check_function=False the continued run's checkpoints name the functions it now uses,
    # so that a later resume, or the command line without FUNCTION, does not go back to the old ones.
    plan["function"] = objective_name(fun)
    if x0 is not None:
        plan["x0_function"] = objective_name(x0)
    if vectorized is not None:
        plan["vectorized"] = bool(vectorized)  # also for the checkpoints of the continued run
    if max_evals is not None:
        # The current run's limit is the budget less the earlier runs' evaluations.
        budget = whole_number_as_int(validate_positive("max_evals", max_evals, "pass a larger budget than before"))
        done = progress["nfev"] + es.nfev
        if not budget > done:
            raise ValueError(
                f"max_evals={max_evals!r} is not above the {done} evaluations already done; pass a larger budget"
            )
        es.set_budget(max_evals=budget - progress["nfev"])
        plan["budget"] = budget
    driver = RestartDriver(plan, progress)
    driver.configure(fun, args, executor, callback, disp, log, checkpoint, checkpoint_every, resumed=path, x0=x0)
    if log is None and progress.get("log_path") is not None:
        warnings.warn(
            f"{SAVED_LOG_WARNING} {progress['log_path']}, but this run was given no log, so its rows will not be "
            f"logged; pass log={progress['log_path']!r} to continue that log",
            UserWarning,
            stacklevel=2,
        )
    return driver.run(es)


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Return the plan stored in the :func:`minimize` checkpoint ``path``.

    The plan contains ``function`` (the objective's ``module:qualified
    name``), ``x0``, ``sigma0``, ``options`` (the :class:`SpectralES`
    options), ``seed``, ``restarts``, ``incpopsize``, ``bipop``,
    ``budget``, ``vectorized``: whether the objective takes the whole
    population, ``None`` (unknown) in checkpoints written before it was
    stored, and ``x0_function``: the name of the function that drew the
    starts, or ``None`` when every run starts at ``x0`` (then the first
    run's start).

    Raises:
        ValueError: if ``path`` is not a :func:`minimize` checkpoint.
    """
    return stored_run(checkpoints.read_extra(path), path)[0]


def objective_name(fun: Callable) -> str:
    """Return the ``module:qualified name`` of a function, which checkpoints store to recognise it on resume."""
    return f"{getattr(fun, '__module__', '?')}:{getattr(fun, '__qualname__', type(fun).__name__)}"
