"""The run loop behind :func:`~spectral_es.es.minimize.minimize` and ``resume``.

:func:`step` runs one iteration on a strategy. :class:`RestartDriver` runs
the restarts of a :func:`~spectral_es.es.minimize.minimize` call one after
the other (their schedule is in :mod:`spectral_es.es.restarts`), writes the
CSV log and the checkpoints and prints the progress table. The plan and the
progress that a checkpoint stores, and the rules for which files a new run
may replace, are here too.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spectral_es.es import checkpoint as checkpoints
from spectral_es.es.bounds import Bounds
from spectral_es.es.evaluation import EvaluationError, evaluate, resolve_executor
from spectral_es.es.history import CSVLog, check_new_log, csv_header, log_tail_digest
from spectral_es.es.options import display_interval, validate_x0
from spectral_es.es.restarts import is_last_run, next_run
from spectral_es.es.result import format_stop, target_of
from spectral_es.es.strategy import ESResult, SpectralES, print_progress

__all__ = [
    "FINAL_STOPS",
    "ProgressTable",
    "RestartDriver",
    "as_args",
    "check_callback",
    "check_new_checkpoint",
    "display_interval",
    "draw_start",
    "new_progress",
    "run_callback",
    "step",
    "stored_run",
]

# Stop reasons after which a restart cannot help or was not asked for.
FINAL_STOPS = frozenset({"f_target", "max_evals", "callback", "non_finite_state"})


def step(es: SpectralES, fun: Callable, args: Any = (), vectorized: bool = False, executor: Any = None) -> None:
    """Run one iteration on ``es``: ask (or take the pending population), evaluate, tell.

    A population left pending by a failed evaluation is evaluated again
    instead of drawing a new one, so a run continued after the failure
    follows the same path as one that never failed. With
    ``es.noise`` set, each point is evaluated ``es.noise.evaluations_per_point``
    times and a few points once more, all in one batch.

    Raises:
        EvaluationError: if the objective raises, or returns an invalid value
            (:class:`~spectral_es.es.evaluation.ObjectiveValueError`). Its
            ``strategy`` is ``es``, which has not been told anything, so it
            can be saved or run on.
    """
    X = es.pending if es.pending is not None else es.ask()
    args = as_args(args)
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


def as_args(args: Any) -> tuple:
    """Return ``args`` as a tuple; a single non-tuple value becomes ``(args,)``, as in scipy.optimize."""
    return args if isinstance(args, tuple) else (args,)


def draw_start(x0: Callable, seed: int, run: int, n: int | None = None) -> np.ndarray:
    """Return the start point of run ``run`` that the function ``x0`` draws.

    A function that takes an argument gets a ``numpy.random.Generator``
    from a child of ``SeedSequence(seed)`` of its own for each run, so the
    starts repeat with the seed and after a resume. One without arguments
    is called bare, as pycma calls a callable ``x0``.

    Raises:
        ValueError: if the point is not a finite 1-D array of numbers, or
            not of length ``n`` (when given).
    """
    generator = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(run, 1)))
    try:
        inspect.signature(x0).bind(generator)
        takes_generator = True
    except TypeError:
        takes_generator = False
    except ValueError:  # no signature to inspect, as for some builtins
        takes_generator = True
    point = x0(generator) if takes_generator else x0()
    try:
        start = validate_x0(point)
    except ValueError as error:
        raise ValueError(f"the start that x0 drew for run {run} is invalid: {error}") from None
    if n is not None and start.size != n:
        raise ValueError(
            f"x0 drew a start of length {start.size} for run {run}, but the first run's has {n}; "
            "return points of one length"
        )
    return start


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
        plan, progress = stored_run(tree["extra"], path)
        stop, nfev = tree["state"]["stop"], progress["nfev"] + int(tree["state"]["nfev"])
        if stop and _ends_minimization(plan, progress, stop, nfev):
            return
        content = f"the checkpoint of an unfinished run of {plan['function']} after {nfev} evaluations"
        fix = f"continue it with {continue_with}, {fix}"
    raise ValueError(f"{name} {str(path)!r} is {content}, which a new run would overwrite; {fix}")


def stored_run(extra: dict[str, Any], path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the plan and the progress stored in a checkpoint's ``extra`` dictionary.

    Entries that older checkpoints lack get their meaning at the time:
    no BIPOP, IPOP runs after the first one (in the progress and in each
    run summary), ``vectorized`` unknown, and no final mean (``None``) in
    the summaries of runs that ended before the mean was kept.
    """
    if "minimize" not in extra:
        raise ValueError(f"{os.fspath(path)} was saved by SpectralES.save, not minimize; run it with optimize()")
    plan, progress = extra["minimize"]["plan"], extra["minimize"]["progress"]
    plan.setdefault("bipop", False)
    plan.setdefault("vectorized", None)
    plan.setdefault("x0_function", None)
    progress.setdefault(
        "current",
        {"regime": "default" if progress["run"] == 0 else "large", "sigma0": plan["sigma0"]},
    )
    for summary in progress["summaries"]:
        summary.setdefault("regime", "default" if summary["run"] == 0 else "large")
        summary.setdefault("sigma0", plan["sigma0"])
        summary.setdefault("mean", None)
    return plan, progress


def _ends_minimization(plan: dict[str, Any], progress: dict[str, Any], stop: dict[str, Any], nfev: int) -> bool:
    """Return whether the current run, stopped by ``stop`` with ``nfev`` evaluations of all runs, is the last.

    It is if a stop reason is final, the budget is used up, or the restarts
    are spent once the current run is counted.
    """
    if set(stop) & FINAL_STOPS or nfev >= plan["budget"]:
        return True
    current = {"run": progress["run"], "regime": progress["current"]["regime"]}
    return is_last_run(plan, [*progress["summaries"], current])


class RestartDriver:
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

    def configure(
        self, fun, args, executor, callback, disp, log, checkpoint, checkpoint_every, resumed=None, x0=None
    ) -> None:
        """Set how to evaluate, report and save, and check the files before anything is evaluated.

        ``resumed`` is the checkpoint that :func:`resume` continues, and
        ``checkpoint`` defaults to it. ``x0`` is the function that draws the
        starts when ``plan["x0_function"]`` names one. Apart from
        ``plan["vectorized"]``, none of this is saved in checkpoints.
        """
        self.x0 = x0
        integral = isinstance(checkpoint_every, (int, np.integer)) and not isinstance(checkpoint_every, bool)
        if not integral or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        every = display_interval(disp)
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
        self.fun, self.args = fun, as_args(args)
        self.vectorized = bool(self.plan["vectorized"])  # None, unknown, for old checkpoints: one point per call
        self.executor = resolve_executor(executor)
        self.callback = callback
        self.progress_table = ProgressTable(every)
        self.log_path = log
        self.checkpoint = checkpoint
        self.checkpoint_every = int(checkpoint_every)

    def run(self, es: SpectralES | None = None) -> ESResult:
        """Run (or, given the restored ``es``, continue) all runs and return the combined result."""
        # The first strategy validates the options, so an invalid one fails
        # before the log is opened (and an existing log emptied).
        fresh = es is None
        if es is None:
            es = self._new_strategy()
        else:
            self._announce(es, "resumed ")
        # A finished run evaluates nothing more, so its log stays as it is.
        stop, nfev = es.stop(), self.progress["nfev"] + es.nfev
        finished = not fresh and bool(stop) and _ends_minimization(self.plan, self.progress, stop, nfev)
        self.log = None if finished else self._open_log(fresh)
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
        # Run 0 starts at the plan's x0, also when a function drew it.
        start = plan["x0"]
        if plan["x0_function"] is not None and progress["run"] > 0:
            start = draw_start(self.x0, plan["seed"], progress["run"], len(plan["x0"]))
        # Run k's seed is the k-th child that SeedSequence(seed).spawn() gives.
        es = SpectralES(
            start,
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
        self._announce(es)
        self.progress_table.restart()
        return es

    def _announce(self, es: SpectralES, resumed: str = "") -> None:
        """Print the line that starts a run's progress table (only with restarts and progress lines)."""
        if self.progress_table.every <= 0 or not self.plan["restarts"]:
            return
        progress, current = self.progress, self.progress["current"]
        # The same 0-based index as the history's run column and result.restarts.
        print(
            f"run {progress['run']} ({current['regime']}), popsize {es.popsize}, "
            f"sigma0 {current['sigma0']:.3g}, {resumed}after {progress['nfev'] + es.nfev} evaluations",
            flush=True,
        )

    def _run_strategy(self, es: SpectralES) -> None:
        while not es.stop():
            try:
                step(es, self.fun, self.args, self.vectorized, self.executor)
            except BaseException as error:
                # A pending population means tell() has not started, so the
                # state is consistent and worth keeping.
                if es.pending is not None:
                    self._save(es)
                    if isinstance(error, KeyboardInterrupt):
                        self._note_interrupt(error)
                if isinstance(error, EvaluationError):
                    error.hint = self._failure_hint()
                raise
            run_callback(es, self.callback)
            if self.log is not None:
                self.log.write(es.history.row(-1), format_stop(self._run_result(es).stop))
            if es.nit % self.checkpoint_every == 0 or es.stop():
                self._save(es)
            self.progress_table.update(es)

    def _note_interrupt(self, error: KeyboardInterrupt) -> None:
        """Add to ``error`` a note that names the checkpoint just saved, from which :func:`resume` continues."""
        # BaseException.add_note is new in Python 3.11.
        if self.checkpoint is None or not hasattr(error, "add_note"):
            return
        path = os.fspath(self.checkpoint)
        error.add_note(f"the run is saved in {path}; spectral_es.resume(fun, {path!r}) continues it")

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
        last = _ends_minimization(self.plan, progress, result.stop, progress["nfev"] + result.nfev)
        summary = {"run": progress["run"], **progress["current"], "popsize": es.popsize}
        summary.update(
            fbest=result.fbest, mean=result.mean.tolist(), nfev=result.nfev, nit=result.nit, stop=result.stop
        )
        progress["summaries"].append(summary)
        if progress["best_x"] is None or result.fbest < progress["best_f"]:
            progress["best_x"], progress["best_f"] = result.xbest, result.fbest
        progress["nfev"] += result.nfev
        progress["nit"] += result.nit
        progress["n_nonfinite"] += result.n_nonfinite
        progress["time"] = es.history.time_offset + es.elapsed
        progress["history"] = es.history
        es.history.stops[progress["run"]] = format_stop(result.stop)
        if progress["current"]["regime"] != "small":
            progress["popsize"] = int(math.ceil(es.popsize * self.plan["incpopsize"]))
        if last:
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
            f_target=target_of(es.options),
        )

    def _save(self, es: SpectralES) -> None:
        """Write the checkpoint: the strategy, the plan and the progress of earlier runs."""
        if self.checkpoint is None:
            return
        progress = {key: value for key, value in self.progress.items() if key != "history"}
        progress["history"] = None  # the strategy's own history contains all runs' rows
        progress["log_offset"] = None if self.log is None else self.log.tell()
        progress["log_digest"] = None if self.log is None else self.log.tail_digest()
        progress["log_path"] = None if self.log is None else os.fspath(Path(self.log_path).resolve())
        checkpoints.save(es, self.checkpoint, extra={"minimize": {"plan": self.plan, "progress": progress}})

    def _open_log(self, fresh: bool) -> CSVLog | None:
        """Open the CSV log; on resume into the saved run's log, cut it back to the checkpoint's rows."""
        if self.log_path is None:
            return None
        path, n = Path(self.log_path), len(self.plan["x0"])
        if fresh:
            return CSVLog(path, n, append=False)
        # The offset belongs to the saved run's log, found by its path or, after a
        # move or a copy, by the digest of its rows. Another file starts afresh.
        offset, saved = self.progress.get("log_offset"), self.progress.get("log_path")
        digest = self.progress.get("log_digest")
        if offset is None or saved is None:
            return CSVLog(path, n, append=False)
        if not (path.exists() and Path(saved).exists() and os.path.samefile(path, saved)):
            if not _contains_saved_rows(path, n, offset, digest):
                return CSVLog(path, n, append=False)
            os.truncate(path, offset)  # rows after the checkpoint are written again
            return CSVLog(path, n, append=True)

        # Cutting a log that another run replaced since would extend it with
        # zero bytes or splice two runs, so check its size and header first,
        # then the digest of the bytes before the offset. Checkpoints written
        # before the digest was stored have none.
        with open(path, "r+b") as file:
            header = file.readline().decode("ascii", errors="replace").rstrip("\r\n")
            size = file.seek(0, os.SEEK_END)
            if size < offset or header != ",".join(csv_header(n)):
                raise ValueError(
                    f"log {str(path)!r} changed since the checkpoint was written: it has {size} bytes and "
                    f"{'the' if header == ','.join(csv_header(n)) else 'another'} header, where the checkpoint "
                    f"expects at least {offset} bytes of a log with n = {n}; pass a new log file"
                )
            if digest is not None and log_tail_digest(file, offset) != digest:
                raise ValueError(
                    f"log {str(path)!r} no longer contains the rows that the checkpoint saw before byte {offset}: "
                    "another run has replaced it, or it was edited, since the checkpoint was written; pass a new "
                    "log file, which receives the rows from the checkpoint on"
                )
            file.truncate(offset)  # rows after the checkpoint are written again
        return CSVLog(path, n, append=True)


def _contains_saved_rows(path: Path, n: int, offset: int, digest: str | None) -> bool:
    """Return whether the file at ``path`` begins with the saved run's log up to ``offset``.

    A moved or copied log has the log's header, at least ``offset`` bytes,
    and the ``digest`` of the bytes before ``offset`` that the checkpoint
    stored. Checkpoints written before the digest was stored have none, and
    then only the saved path identifies the log.
    """
    if digest is None or not path.is_file() or path.stat().st_size < offset:
        return False
    header = ",".join(csv_header(n)).encode("ascii")
    with open(path, "rb") as file:
        # A bounded read: the file may be any large file without line breaks.
        start = file.read(len(header) + 2)
        if not (start.startswith(header + b"\n") or start.startswith(header + b"\r\n")):
            return False
        return log_tail_digest(file, offset) == digest


def new_progress(popsize: int | None) -> dict[str, Any]:
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
        "log_digest": None,
        "log_path": None,
    }


def check_callback(callback: Any) -> None:
    """Raise TypeError unless ``callback`` is callable or ``None``, naming the value.

    A function whose one required parameter is named ``xk`` is rejected
    too: scipy passes such a callback the current point, where this one
    would get the ESResult and fail later, far from the cause.
    """
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(
            f"callback must be callable or None, got {callback!r}; pass a function of the current ESResult, "
            "for example lambda result: result.nfev > 1000, which stops the run when it returns True"
        )
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return
    required = [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required == ["xk"]:
        raise TypeError(
            f"callback {getattr(callback, '__name__', callback)!r} takes xk, scipy's current point, but it is "
            "called with the current ESResult; pass the current point by wrapping it, "
            "callback=lambda result: cb(result.mean), or rename the parameter and read the result's fields"
        )


def run_callback(es: SpectralES, callback: Callable[[ESResult], Any] | None) -> None:
    """Call ``callback(es.result)``; ``True``, ``np.True_`` or ``StopIteration`` requests the stop ``"callback"``."""
    if callback is None:
        return
    try:
        halt = callback(es.result)
    except StopIteration:
        halt = True
    if halt is True or (isinstance(halt, np.bool_) and bool(halt)):
        es.request_stop("callback", True)


class ProgressTable:
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
        row = es.history.row(-1)
        print_progress(
            self.lines,
            es.nit,
            int(row["evaluations"]),
            row["f_best"],
            row["f_median"],
            row["sigma"],
            row["condition"],
            row["time"],
        )
        self.lines += 1
