"""``minimize`` and ``optimize``: run SpectralES on a function.

:func:`optimize` runs the ask/evaluate/tell loop on one strategy.
:func:`minimize` adds IPOP restarts, parallel or distributed evaluation,
a CSV log and checkpoints, and :func:`resume` continues a :func:`minimize`
run from its checkpoint exactly where it was saved.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spectral_es.es import checkpoint as checkpoints
from spectral_es.es.evaluation import EvaluationError, evaluate, resolve_executor
from spectral_es.es.history import CSVLog
from spectral_es.es.strategy import ESResult, SpectralES

__all__ = ["EvaluationError", "evaluate", "minimize", "optimize", "resume", "step"]

# Stop reasons after which a restart cannot help or was not asked for.
_FINAL_STOPS = frozenset({"f_target", "max_evals", "callback", "non_finite_state"})


def step(es: SpectralES, fun: Callable, args: tuple = (), vectorized: bool = False, executor: Any = None) -> None:
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
    try:
        if es.noise is None:
            f = evaluate(fun, X, args, vectorized, executor)
        else:
            batch = np.concatenate([X, X[es.noise.indices]])
            values = evaluate(fun, batch, args, vectorized, executor, repeats=es.noise.evaluations_per_point)
            f = es.noise.update(values[: len(X)], values[len(X) :])
    except EvaluationError as error:
        error.strategy = es
        raise
    es.tell(X, f)


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
    :class:`ESResult`; returning ``True`` or raising ``StopIteration`` stops
    the run with the reason ``"callback"``. ``disp`` prints a progress line
    every ``disp`` iterations (``True``: every 10) and the final one.
    ``executor`` is as in :func:`minimize`.
    """
    every = 10 if disp is True else int(disp)
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
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
    seed: int | None = None,
    log: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
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
        callback: Called with the current :class:`ESResult` after every
            iteration; returning ``True`` or raising ``StopIteration`` ends
            the run (and all restarts).
        disp: Print progress every ``disp`` iterations (``True``: every 10).
        seed: Seed of the whole run, restarts included; 0 is valid.
        log: CSV file that receives one row per iteration as the run goes
            (format in :mod:`spectral_es.es.history`); the last row of each
            run holds its stop reasons.
        checkpoint: File (``.npz``) that receives the complete state every
            ``checkpoint_every`` iterations, when the run ends and when an
            evaluation fails; :func:`resume` continues from it.
        checkpoint_every: Iterations between checkpoints, >= 1.
        **options: Further :class:`SpectralES` options (``popsize``,
            ``diagonal``, ``max_evals``, ``f_target``, ``bounds``,
            ``integer_variables``, ``noise_handling``, ...).

    Returns:
        ESResult: The best solution over all runs; ``stop`` holds the last
        run's reasons, ``restarts`` one summary per run when
        ``restarts > 0``, and ``history`` the rows of all runs.

    Raises:
        EvaluationError: if ``fun`` raises. The checkpoint (if any) is
            written first, and ``error.strategy`` is the current strategy.
    """
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
        raise ValueError(f"restarts must be an integer >= 0, got {restarts!r}")
    if not incpopsize >= 1:
        raise ValueError(f"incpopsize must be >= 1, got {incpopsize!r}")
    max_evals = options.pop("max_evals", None)
    progress = _progress(options.pop("popsize", None))
    plan = {
        "x0": np.array(x0, dtype=float),
        "sigma0": float(sigma0),
        "options": options,
        "seed": np.random.SeedSequence(seed).entropy,
        "restarts": int(restarts),
        "incpopsize": float(incpopsize),
        "budget": math.inf if max_evals is None else float(max_evals),
        "function": _name(fun),
    }
    driver = _RestartDriver(plan, progress)
    driver.configure(fun, args, vectorized, executor, callback, disp, log, checkpoint, checkpoint_every)
    return driver.run()


def resume(
    fun: Callable,
    path: str | os.PathLike,
    *,
    args: tuple = (),
    vectorized: bool = False,
    executor: Any = None,
    callback: Callable[[ESResult], Any] | None = None,
    disp: bool | int = False,
    log: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
) -> ESResult:
    """Continue the :func:`minimize` run saved in the checkpoint ``path``.

    The strategy, the restart plan (start point, options, seed, budget) and
    the progress over restarts come from the file, so the continuation is
    identical to the uninterrupted run. A population whose evaluation
    failed is evaluated again first. ``log`` is truncated to the rows that
    existed when the checkpoint was written and then appended to;
    ``checkpoint`` defaults to ``path``.
    """
    es, extra = checkpoints.load(SpectralES, path)
    if "minimize" not in extra:
        raise ValueError(f"{os.fspath(path)!r} was saved by SpectralES.save, not minimize; run it with optimize()")
    plan, progress = extra["minimize"]["plan"], extra["minimize"]["progress"]
    if plan["function"] != _name(fun):
        warnings.warn(
            f"the checkpoint was written for the objective {plan['function']}, resuming with {_name(fun)}",
            UserWarning,
            stacklevel=2,
        )
    driver = _RestartDriver(plan, progress)
    checkpoint = path if checkpoint is None else checkpoint
    driver.configure(fun, args, vectorized, executor, callback, disp, log, checkpoint, checkpoint_every)
    return driver.run(es)


class _RestartDriver:
    """The restart loop of :func:`minimize`, with its log and checkpoints.

    ``plan`` fixes the run (start, options, seed, restarts, budget);
    ``progress`` is what finished runs left behind (evaluations, best
    point, summaries) plus the log size at the last checkpoint. Both are
    plain dictionaries, saved with the strategy in every checkpoint.
    """

    def __init__(self, plan: dict[str, Any], progress: dict[str, Any]) -> None:
        self.plan = plan
        self.progress = progress
        self.seeds = np.random.SeedSequence(plan["seed"]).spawn(plan["restarts"] + 1)

    def configure(self, fun, args, vectorized, executor, callback, disp, log, checkpoint, checkpoint_every) -> None:
        """Set how to evaluate, report and save; none of this is saved in checkpoints."""
        integral = isinstance(checkpoint_every, (int, np.integer)) and not isinstance(checkpoint_every, bool)
        if not integral or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        self.fun, self.args, self.vectorized = fun, args, vectorized
        self.executor = resolve_executor(executor)
        self.callback = callback
        self.every = 10 if disp is True else int(disp)
        self.log_path = log
        self.checkpoint = checkpoint
        self.checkpoint_every = int(checkpoint_every)

    def run(self, es: SpectralES | None = None) -> ESResult:
        """Run (or, given the restored ``es``, continue) all runs and return the combined result."""
        self.log = self._open_log(es)
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
        remaining = plan["budget"] - progress["nfev"]
        es = SpectralES(
            plan["x0"],
            plan["sigma0"],
            popsize=progress["popsize"],
            seed=self.seeds[progress["run"]],
            max_evals=None if math.isinf(remaining) else remaining,
            **plan["options"],
        )
        if progress["history"] is not None:
            es.history = progress["history"]  # one history for all runs
        es.history.start_run(progress["run"], progress["nfev"], progress["time"])
        if self.every and plan["restarts"]:
            print(f"run {progress['run'] + 1} of at most {plan['restarts'] + 1}, popsize {es.popsize}", flush=True)
        return es

    def _run_strategy(self, es: SpectralES) -> None:
        while not es.stop():
            try:
                step(es, self.fun, self.args, self.vectorized, self.executor)
            except BaseException:
                # A pending population means tell() has not started, so the
                # state is consistent and worth keeping.
                if es.pending is not None:
                    self._save(es)
                raise
            _run_callback(es, self.callback)
            if self.log is not None:
                self.log.write(es.history.row(-1), es.result.message if es.stop() else "")
            if es.nit % self.checkpoint_every == 0 or es.stop():
                self._save(es)
            if self.every > 0:
                es.disp(self.every)

    def _finish_run(self, es: SpectralES) -> bool:
        """Fold the finished run into the progress; return whether to restart."""
        progress, result = self.progress, es.result
        summary = {"run": progress["run"], "popsize": es.popsize, "fbest": result.fbest, "nfev": result.nfev}
        summary.update(nit=result.nit, stop=result.stop)
        progress["summaries"].append(summary)
        if progress["best_x"] is None or result.fbest < progress["best_f"]:
            progress["best_x"], progress["best_f"] = result.xbest, result.fbest
        progress["nfev"] += result.nfev
        progress["nit"] += result.nit
        progress["n_nonfinite"] += result.n_nonfinite
        progress["time"] = es.history.time_offset + es.elapsed
        progress["history"] = es.history
        es.history.stops[progress["run"]] = result.message
        progress["popsize"] = int(math.ceil(es.popsize * self.plan["incpopsize"]))
        final = set(result.stop) & _FINAL_STOPS or progress["nfev"] >= self.plan["budget"]
        if final or progress["run"] == self.plan["restarts"]:
            return False
        progress["run"] += 1
        return True

    def _result(self, es: SpectralES) -> ESResult:
        progress, stop = self.progress, es.stop()
        if "max_evals" in stop:
            stop["max_evals"] = self.plan["budget"]  # the whole budget, not the last run's share
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
        checkpoints.save(es, self.checkpoint, extra={"minimize": {"plan": self.plan, "progress": progress}})

    def _open_log(self, es: SpectralES | None) -> CSVLog | None:
        """Open the CSV log; on resume, cut it back to the rows written before the checkpoint."""
        if self.log_path is None:
            return None
        path, n = Path(self.log_path), len(self.plan["x0"])
        if es is None:
            return CSVLog(path, n, append=False)
        offset = self.progress.get("log_offset")
        if offset is not None and path.exists():
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
    }


def _run_callback(es: SpectralES, callback: Callable[[ESResult], Any] | None) -> None:
    """Call ``callback(es.result)``; ``True`` or ``StopIteration`` requests the stop ``"callback"``."""
    if callback is None:
        return
    try:
        halt = callback(es.result)
    except StopIteration:
        halt = True
    if halt is True:
        es.request_stop("callback", True)


def _name(fun: Callable) -> str:
    """Return ``module:qualified name`` of a function, to recognise it on resume."""
    return f"{getattr(fun, '__module__', '?')}:{getattr(fun, '__qualname__', type(fun).__name__)}"
