"""``minimize`` and ``optimize``: run SpectralES on a function.

:func:`optimize` runs the ask/evaluate/tell loop on one strategy.
:func:`minimize` adds IPOP or BIPOP restarts, parallel or distributed evaluation,
a CSV log and checkpoints, and :func:`resume` continues a :func:`minimize`
run from its checkpoint exactly where it was saved.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spectral_es.es import checkpoint as checkpoints
from spectral_es.es.bounds import Bounds, parse_bounds, validate_integer_variables
from spectral_es.es.evaluation import EvaluationError, evaluate, resolve_executor
from spectral_es.es.history import CSVLog, check_new_log
from spectral_es.es.options import validate_positive, validate_seed, validate_x0, whole_number_as_int
from spectral_es.es.restarts import is_last_run, next_run
from spectral_es.es.strategy import ESResult, SpectralES

__all__ = [
    "EvaluationError",
    "check_new_checkpoint",
    "evaluate",
    "minimize",
    "objective_name",
    "optimize",
    "read_plan",
    "resume",
    "step",
]

# Stop reasons after which a restart cannot help or was not asked for.
_FINAL_STOPS = frozenset({"f_target", "max_evals", "callback", "non_finite_state"})

# The SpectralES options that minimize() passes on through **options; x0,
# sigma0 and seed are its own arguments.
_STRATEGY_OPTIONS = tuple(
    name for name in inspect.signature(SpectralES.__init__).parameters if name not in ("self", "x0", "sigma0", "seed")
)


def step(es: SpectralES, fun: Callable, args: Any = (), vectorized: bool = False, executor: Any = None) -> None:
    """Run one iteration on ``es``: ask (or take the pending population), evaluate, tell.

    A population left pending by a failed evaluation is evaluated again
    instead of drawing a new one, so a run continued after the failure
    follows the same path as one that never failed. With
    ``es.noise`` set, each point is evaluated ``es.noise.evaluations_per_point``
    times and a few points once more, all in one batch.

    Raises:
        EvaluationError: if the objective raises; its ``strategy`` is ``es``,
            which has not been told anything, so it can be saved or run on.
    """
    X = es.pending if es.pending is not None else es.ask()
    args = _as_args(args)
    try:
        if es.noise is None:
            f = evaluate(fun, X, args, vectorized, executor)
        else:
            batch = np.concatenate([X, X[es.noise.indices]])
            values = evaluate(fun, batch, args, vectorized, executor, repeats=es.noise.evaluations_per_point)
            f = es.noise.update(values[: len(X)], values[len(X) :])
    except EvaluationError as error:
        error.strategy = es
        error.hint = (
            "the strategy was not told this population: error.strategy can be saved, "
            "or continued with optimize(error.strategy, fixed_fun)"
        )
        raise
    es.tell(X, f)


def _as_args(args: Any) -> tuple:
    """Return ``args`` as a tuple; a single non-tuple value becomes ``(args,)``, as in scipy.optimize."""
    return args if isinstance(args, tuple) else (args,)


def _display_interval(disp: Any) -> int:
    """Return the iterations between progress lines for ``disp`` (``True``: 10, ``False`` or 0: none)."""
    if isinstance(disp, (bool, np.bool_)):
        return 10 if disp else 0
    if not isinstance(disp, (int, np.integer)) or disp < 0:
        raise ValueError(
            f"disp must be True, False or an integer >= 0 (iterations between progress lines), got {disp!r}"
        )
    return int(disp)


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
        ValueError: if ``disp`` is negative or not an integer.
    """
    every, args = _display_interval(disp), _as_args(args)
    executor = resolve_executor(executor)
    while not es.stop():
        step(es, fun, args, vectorized, executor)
        _run_callback(es, callback)
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
        x0: Initial mean, shape (n,).
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
            evaluations of all runs together.
        incpopsize: Population growth factor per restart, >= 1.
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
            evaluation fails; :func:`resume` continues from it. An existing
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
        ``fbest``, ``nfev``, ``nit``, ``stop``), and ``history`` the rows
        of all runs.

    Raises:
        TypeError: if ``fun`` is not callable, or for a keyword argument
            that is neither an argument of ``minimize`` nor a
            :class:`SpectralES` option.
        EvaluationError: if ``fun`` raises. The checkpoint (if any) is
            written first, and ``error.strategy`` is the current strategy.
        ValueError: for invalid arguments, if ``log`` or ``checkpoint``
            cannot be written, would replace a file of another kind or an
            unfinished run's checkpoint, or are the same file, and, with
            ``checkpoint``, for an option that a checkpoint cannot store;
            all are checked before the first evaluation.
    """
    _check_callable(fun)
    unknown = [name for name in options if name not in _STRATEGY_OPTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], _STRATEGY_OPTIONS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TypeError(
            f"minimize() got an unexpected keyword argument {unknown[0]!r}; {hint}"
            f"the SpectralES options it accepts are {', '.join(_STRATEGY_OPTIONS)}"
        )
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
        raise ValueError(f"restarts must be an integer >= 0, got {restarts!r}")
    if not incpopsize >= 1:
        raise ValueError(f"incpopsize must be >= 1, got {incpopsize!r}")
    if not isinstance(bipop, (bool, np.bool_)):
        raise ValueError(f"bipop must be True or False, got {bipop!r}")
    if bipop and restarts == 0:
        raise ValueError("bipop=True interleaves small runs with restarts, but restarts=0; pass restarts >= 1")
    x0 = validate_x0(x0)
    sigma0 = validate_positive("sigma0", sigma0, "pass a step size > 0, e.g. 0.3 * (upper - lower)")
    max_evals = options.pop("max_evals", None)
    if max_evals is not None:
        max_evals = whole_number_as_int(validate_positive("max_evals", max_evals, "pass max_evals > 0 or omit it"))
    if options.get("bounds") is not None:
        # One unambiguous form, which the checkpoint stores as [lower, upper].
        options["bounds"] = Bounds(*parse_bounds(options["bounds"], x0.size))
    if options.get("integer_variables") is not None:
        # A list of ints, which the checkpoint stores (a range or an array would not be).
        options["integer_variables"] = validate_integer_variables(options["integer_variables"], x0.size, None).tolist()
    progress = _progress(options.pop("popsize", None))
    plan = {
        "x0": x0,
        "sigma0": sigma0,
        "options": options,
        "seed": validate_seed(seed).entropy,
        "restarts": int(restarts),
        "incpopsize": float(incpopsize),
        "bipop": bool(bipop),
        "budget": math.inf if max_evals is None else max_evals,
        "function": objective_name(fun),
        "vectorized": bool(vectorized),
    }
    driver = _RestartDriver(plan, progress)
    driver.configure(fun, args, executor, callback, disp, log, checkpoint, checkpoint_every)
    return driver.run()


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
) -> ESResult:
    """Continue the :func:`minimize` run saved in the checkpoint ``path``.

    The strategy, the restart plan (start point, options, seed, budget) and
    the progress over restarts come from the file, so the continuation is
    identical to the uninterrupted run. A population whose evaluation
    failed is evaluated again first. If ``log`` is the file the saved run
    logged to, it is cut back to the rows it had when the checkpoint was
    written and then appended to. Any other file is started afresh, as in
    :func:`minimize` (an existing one must be empty or a spectral_es log),
    and contains the rows from the checkpoint on. ``checkpoint`` defaults to
    ``path``; another existing file is replaced only under the rules of
    :func:`check_new_checkpoint`. ``vectorized`` defaults to the value the
    saved run used (``False`` for checkpoints that do not store it), and
    the other arguments are as in :func:`minimize`.

    The checkpoint stores the objective's ``module:qualified name``
    (:func:`objective_name`). Resuming with a function of another name is
    an error unless ``check_function=False``, for an objective that was
    fixed, renamed or wrapped since.

    Raises:
        TypeError: if ``fun`` is not callable.
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a :func:`minimize` checkpoint or is
            damaged, if ``fun`` is not the stored objective (with
            ``check_function``), if ``log`` or ``checkpoint`` cannot be
            written or would replace a file they must not replace, or if
            ``log`` is ``path`` or ``checkpoint``. Nothing is written before
            these checks.
    """
    _check_callable(fun)
    es, extra = checkpoints.load(SpectralES, path)
    plan, progress = _stored_run(extra, path)
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
    if vectorized is not None:
        plan["vectorized"] = bool(vectorized)  # also for the checkpoints of the continued run
    driver = _RestartDriver(plan, progress)
    driver.configure(fun, args, executor, callback, disp, log, checkpoint, checkpoint_every, resumed=path)
    return driver.run(es)


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Return the plan stored in the :func:`minimize` checkpoint ``path``.

    The plan contains ``function`` (the objective's ``module:qualified
    name``), ``x0``, ``sigma0``, ``options`` (the :class:`SpectralES`
    options), ``seed``, ``restarts``, ``incpopsize``, ``bipop``,
    ``budget`` and ``vectorized``: whether the objective takes the whole
    population, ``None`` (unknown) in checkpoints written before it was
    stored.

    Raises:
        ValueError: if ``path`` is not a :func:`minimize` checkpoint.
    """
    return _stored_run(checkpoints.read_extra(path), path)[0]


def check_new_checkpoint(path: str | os.PathLike, name: str = "checkpoint", continue_with: str | None = None) -> None:
    """Raise ValueError if a new run must not write its checkpoint to ``path``.

    A new run may replace a missing or empty file and the :func:`minimize`
    checkpoint of a finished run, which :func:`resume` would return without
    an evaluation. Such a run stopped for a final reason or used up the
    budget or the restarts, so rerunning a script starts afresh. The
    checkpoint of an unfinished run (stopped by a failure or an
    interruption, or with restarts left) and any other file raise. The
    message starts with ``name`` and names ``continue_with``, the way to
    continue an unfinished run (default: ``resume(fun, path)`` with the path).
    """
    path = Path(path)
    if continue_with is None:
        continue_with = f"resume(fun, {str(path)!r})"
    if not path.is_file() or path.stat().st_size == 0:
        return  # nothing to lose; a directory is check_writable's error
    try:
        tree = checkpoints.read_state(path)
    except (ValueError, OSError):
        tree = None
    fix = "pass another path, or delete the file"
    if tree is None:
        content = "an existing file that is not a readable spectral_es checkpoint"
    elif "minimize" not in tree.get("extra", {}):
        content = "a strategy saved by SpectralES.save"
    else:
        plan, progress = _stored_run(tree["extra"], path)
        stop, nfev = tree["state"]["stop"], progress["nfev"] + int(tree["state"]["nfev"])
        if stop and _ends_minimization(plan, progress, stop, nfev):
            return
        content = f"the checkpoint of an unfinished run of {plan['function']} after {nfev} evaluations"
        fix = f"continue it with {continue_with}, {fix}"
    raise ValueError(f"{name} {str(path)!r} is {content}, which a new run would overwrite; {fix}")


def _stored_run(extra: dict[str, Any], path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the plan and the progress stored in a checkpoint's ``extra`` dictionary.

    Entries that older checkpoints lack get their meaning at the time:
    no BIPOP, IPOP runs after the first one, ``vectorized`` unknown.
    """
    if "minimize" not in extra:
        raise ValueError(f"{os.fspath(path)} was saved by SpectralES.save, not minimize; run it with optimize()")
    plan, progress = extra["minimize"]["plan"], extra["minimize"]["progress"]
    plan.setdefault("bipop", False)
    plan.setdefault("vectorized", None)
    progress.setdefault(
        "current",
        {"regime": "default" if progress["run"] == 0 else "large", "sigma0": plan["sigma0"]},
    )
    return plan, progress


def _ends_minimization(plan: dict[str, Any], progress: dict[str, Any], stop: dict[str, Any], nfev: int) -> bool:
    """Return whether the current run, stopped by ``stop`` with ``nfev`` evaluations of all runs, is the last.

    It is if a stop reason is final, the budget is used up, or the restarts
    are spent once the current run is counted.
    """
    if set(stop) & _FINAL_STOPS or nfev >= plan["budget"]:
        return True
    current = {"run": progress["run"], "regime": progress["current"]["regime"]}
    return is_last_run(plan, [*progress["summaries"], current])


class _RestartDriver:
    """The restart loop of :func:`minimize`, with its log and checkpoints.

    ``plan`` fixes the run (start, options, seed, restarts, budget);
    ``progress`` is what finished runs left behind (evaluations, best
    point, summaries) plus the log's resolved path and size at the last
    checkpoint. Both are
    plain dictionaries, saved with the strategy in every checkpoint.
    """

    def __init__(self, plan: dict[str, Any], progress: dict[str, Any]) -> None:
        self.plan = plan
        self.progress = progress

    def configure(self, fun, args, executor, callback, disp, log, checkpoint, checkpoint_every, resumed=None) -> None:
        """Set how to evaluate, report and save, and check the files before anything is evaluated.

        ``resumed`` is the checkpoint that :func:`resume` continues, and
        ``checkpoint`` defaults to it. Apart from ``plan["vectorized"]``,
        none of this is saved in checkpoints.
        """
        integral = isinstance(checkpoint_every, (int, np.integer)) and not isinstance(checkpoint_every, bool)
        if not integral or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        every = _display_interval(disp)
        if checkpoint is None:
            checkpoint = resumed
        checkpoints.check_distinct({"log": log, "path": resumed})  # the checkpoint may replace its source
        checkpoints.check_distinct({"log": log, "checkpoint": checkpoint})
        if log is not None:
            checkpoints.check_writable(log, "log")
            check_new_log(log)  # also the saved run's log, which resume() cuts back
        if checkpoint is not None:
            checkpoints.check_writable(checkpoint, "checkpoint")
            if resumed is None or not checkpoints.same_file(checkpoint, resumed):
                check_new_checkpoint(checkpoint)
            checkpoints.check_storable(self.plan["options"], "option")
            checkpoints.check_storable({**self.plan, "options": None, **self.progress}, "argument")
        self.fun, self.args = fun, _as_args(args)
        self.vectorized = bool(self.plan["vectorized"])  # None, unknown, for old checkpoints: one point per call
        self.executor = resolve_executor(executor)
        self.callback = callback
        self.progress_table = _ProgressTable(every)
        self.log_path = log
        self.checkpoint = checkpoint
        self.checkpoint_every = int(checkpoint_every)

    def run(self, es: SpectralES | None = None) -> ESResult:
        """Run (or, given the restored ``es``, continue) all runs and return the combined result."""
        # The first strategy validates the options, so an invalid one fails
        # before the log is opened (and an existing log emptied).
        fresh = es is None
        if fresh:
            es = self._new_strategy()
        self.log = self._open_log(fresh)
        try:
            while True:
                if es is None:
                    es = self._new_strategy()
                self._run_strategy(es)
                if not self._finish_run(es):
                    return self._result(es)
                es = None
        finally:
            if self.log is not None:
                self.log.close()

    def _new_strategy(self) -> SpectralES:
        plan, progress = self.plan, self.progress
        settings = next_run(plan, progress)
        remaining = plan["budget"] - progress["nfev"]
        options = dict(plan["options"], max_iter=settings.max_iter)
        if options.get("bounds") is not None:
            options["bounds"] = Bounds(*options["bounds"])  # stored as [lower, upper]
        # Run k's seed is the k-th child that SeedSequence(seed).spawn() gives.
        es = SpectralES(
            plan["x0"],
            settings.sigma0,
            popsize=settings.popsize,
            seed=np.random.SeedSequence(plan["seed"], spawn_key=(progress["run"],)),
            max_evals=None if math.isinf(remaining) else remaining,
            **options,
        )
        progress["current"] = {"regime": settings.regime, "sigma0": settings.sigma0}
        if progress["history"] is not None:
            es.history = progress["history"]  # one history for all runs
        es.history.start_run(progress["run"], progress["nfev"], progress["time"])
        if self.progress_table.every > 0 and plan["restarts"]:
            # The same 0-based index as the history's run column and result.restarts.
            print(
                f"run {progress['run']} ({settings.regime}), popsize {es.popsize}, "
                f"sigma0 {settings.sigma0:.3g}, after {progress['nfev']} evaluations",
                flush=True,
            )
        self.progress_table.restart()
        return es

    def _run_strategy(self, es: SpectralES) -> None:
        while not es.stop():
            try:
                step(es, self.fun, self.args, self.vectorized, self.executor)
            except BaseException as error:
                # A pending population means tell() has not started, so the
                # state is consistent and worth keeping.
                if es.pending is not None:
                    self._save(es)
                if isinstance(error, EvaluationError):
                    error.hint = self._failure_hint()
                raise
            _run_callback(es, self.callback)
            if self.log is not None:
                self.log.write(es.history.row(-1), self._run_result(es).message if es.stop() else "")
            if es.nit % self.checkpoint_every == 0 or es.stop():
                self._save(es)
            self.progress_table.update(es)

    def _failure_hint(self) -> str:
        """Return how to continue after a failed evaluation, for :attr:`EvaluationError.hint`."""
        if self.checkpoint is not None:
            return (
                f"the state before this population is saved in {os.fspath(self.checkpoint)}; "
                "resume(fixed_fun, path) continues the run"
            )
        return (
            "no checkpoint was written; pass checkpoint=FILE to minimize so that resume() can continue "
            "a failed run (error.strategy is the current run's strategy)"
        )

    def _finish_run(self, es: SpectralES) -> bool:
        """Fold the finished run into the progress; return whether to restart."""
        progress, result = self.progress, self._run_result(es)
        summary = {"run": progress["run"], **progress["current"], "popsize": es.popsize}
        summary.update(fbest=result.fbest, nfev=result.nfev, nit=result.nit, stop=result.stop)
        progress["summaries"].append(summary)
        if progress["best_x"] is None or result.fbest < progress["best_f"]:
            progress["best_x"], progress["best_f"] = result.xbest, result.fbest
        progress["nfev"] += result.nfev
        progress["nit"] += result.nit
        progress["n_nonfinite"] += result.n_nonfinite
        progress["time"] = es.history.time_offset + es.elapsed
        progress["history"] = es.history
        es.history.stops[progress["run"]] = result.message
        if progress["current"]["regime"] != "small":
            progress["popsize"] = int(math.ceil(es.popsize * self.plan["incpopsize"]))
        final = set(result.stop) & _FINAL_STOPS or progress["nfev"] >= self.plan["budget"]
        if final or is_last_run(self.plan, progress["summaries"]):
            return False
        progress["run"] += 1
        return True

    def _run_result(self, es: SpectralES) -> ESResult:
        """Return ``es.result``, with a ``max_evals`` stop given as the whole budget, not this run's share."""
        result = es.result
        if "max_evals" not in result.stop:
            return result
        return dataclasses.replace(result, stop={**result.stop, "max_evals": self.plan["budget"]})

    def _result(self, es: SpectralES) -> ESResult:
        progress, stop = self.progress, self._run_result(es).stop
        return ESResult(
            xbest=np.array(progress["best_x"]),
            fbest=progress["best_f"],
            mean=es.feasible_mean,
            sigma=es.sigma,
            nfev=progress["nfev"],
            nit=progress["nit"],
            stop=stop,
            n_nonfinite=progress["n_nonfinite"],
            restarts=tuple(progress["summaries"]) if self.plan["restarts"] else (),
            history=es.history,
        )

    def _save(self, es: SpectralES) -> None:
        """Write the checkpoint: the strategy, the plan and the progress of earlier runs."""
        if self.checkpoint is None:
            return
        progress = {key: value for key, value in self.progress.items() if key != "history"}
        progress["history"] = None  # the strategy's own history contains all runs' rows
        progress["log_offset"] = None if self.log is None else self.log.tell()
        progress["log_path"] = None if self.log is None else os.fspath(Path(self.log_path).resolve())
        checkpoints.save(es, self.checkpoint, extra={"minimize": {"plan": self.plan, "progress": progress}})

    def _open_log(self, fresh: bool) -> CSVLog | None:
        """Open the CSV log; on resume into the saved run's log, cut it back to the checkpoint's rows."""
        if self.log_path is None:
            return None
        path, n = Path(self.log_path), len(self.plan["x0"])
        if fresh:
            return CSVLog(path, n, append=False)
        # The offset belongs to the saved run's log; another file starts afresh.
        offset, saved = self.progress.get("log_offset"), self.progress.get("log_path")
        exist = offset is not None and saved is not None and path.exists() and Path(saved).exists()
        if not (exist and os.path.samefile(path, saved)):
            return CSVLog(path, n, append=False)
        with open(path, "r+b") as file:
            file.truncate(offset)  # rows after the checkpoint are written again
        return CSVLog(path, n, append=True)


def _progress(popsize: int | None) -> dict[str, Any]:
    """Return the progress of a run that has not started."""
    return {
        "run": 0,
        "popsize": popsize,
        "nfev": 0,
        "nit": 0,
        "n_nonfinite": 0,
        "time": 0.0,
        "best_x": None,
        "best_f": math.inf,
        "summaries": [],
        "history": None,
        "log_offset": None,
        "log_path": None,
    }


def _run_callback(es: SpectralES, callback: Callable[[ESResult], Any] | None) -> None:
    """Call ``callback(es.result)``; ``True``, ``np.True_`` or ``StopIteration`` requests the stop ``"callback"``."""
    if callback is None:
        return
    try:
        halt = callback(es.result)
    except StopIteration:
        halt = True
    if halt is True or (isinstance(halt, np.bool_) and bool(halt)):
        es.request_stop("callback", True)


def objective_name(fun: Callable) -> str:
    """Return the ``module:qualified name`` of a function, which checkpoints store to recognise it on resume."""
    return f"{getattr(fun, '__module__', '?')}:{getattr(fun, '__qualname__', type(fun).__name__)}"


class _ProgressTable:
    """Progress lines of a :func:`minimize` run, printed every ``every`` iterations.

    Evaluations and time count over all runs, like the log and the
    summary; the iteration count starts again with each restart. A header
    comes first and every 20 lines.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.lines = 0

    def restart(self) -> None:
        """Start a new table (a new header) for the next run."""
        self.lines = 0

    def update(self, es: SpectralES) -> None:
        """Print the line of the latest iteration if it is due, or if the run has stopped."""
        if self.every <= 0 or (es.nit % self.every and not es.stop()):
            return
        if self.lines % 20 == 0:
            columns = ("iter", 7), ("evals", 8), ("f best", 12), ("f median", 12), ("sigma", 10), ("axis ratio", 10)
            print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'time s':>8}")
        self.lines += 1
        row = es.history.row(-1)
        print(
            f"{es.nit:>7} {int(row['evaluations']):>8} {row['f_best']:>12.5e} {row['f_median']:>12.5e} "
            f"{row['sigma']:>10.3e} {math.sqrt(row['condition']):>10.3e} {row['time']:>8.2f}",
            flush=True,
        )
