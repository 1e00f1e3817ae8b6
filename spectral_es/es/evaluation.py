"""Objective evaluation: serial, vectorised, on any executor, on Dask.

:func:`evaluate` computes the objective values of a population ``X`` of
shape (popsize, n) in one of three ways:

* serially, one call ``fun(x, *args)`` per row;
* vectorised, one call ``fun(X, *args)`` on the whole array;
* on an executor: any :class:`concurrent.futures.Executor`
  (``ThreadPoolExecutor``, ``ProcessPoolExecutor``, mpi4py's
  ``MPIPoolExecutor``, a small adapter around Ray's ``ObjectRef.future()``)
  or a Dask ``distributed.Client``, one task per row (or one task for the
  whole array when vectorised). Values come back in row order whatever
  order the tasks finish in.

An exception raised by the objective, locally or in a worker, becomes an
:class:`EvaluationError` that names the failing row and point and chains
the original exception; the caller's strategy is untouched by it. So does
a task that could not be sent to the executor because the objective or
its arguments cannot be pickled, and its message names that cause. A
returned value that is not a real number (one per row when vectorised)
raises :class:`ObjectiveValueError`, an :class:`EvaluationError` too.
"""

from __future__ import annotations

import concurrent.futures
import pickle
import re
import reprlib
from collections.abc import Callable
from typing import Any

import numpy as np

from spectral_es.es.options import numeric_values

__all__ = ["EvaluationError", "ObjectiveValueError", "evaluate", "resolve_executor"]


class EvaluationError(RuntimeError):
    """An evaluation of the objective raised an exception or returned an invalid value.

    The original exception, if any, is the ``__cause__``. An invalid value
    raises the subclass :class:`ObjectiveValueError`. Catch this to save or
    continue the run: the strategy has not been told anything about the
    failed population.

    ``str(error)`` is :attr:`message` followed by :attr:`hint`. The message
    names the exception and the point; the hint says how to continue, and
    the layer that knows how (:func:`~spectral_es.es.minimize.optimize`,
    :func:`~spectral_es.es.minimize.minimize`, the command line) sets it.

    Attributes:
        message: What failed: the exception and the point (or batch).
        hint: How to continue, or ``""``.
        x: The point that failed, shape (n,); for a vectorised call, the
            whole batch, shape (k, n).
        index: Row of ``x`` in the evaluated array, or ``None`` for a batch.
            Under noise handling the array is the population followed by the
            rows evaluated a second time.
        strategy: The :class:`~spectral_es.SpectralES` whose population
            failed, set by :func:`~spectral_es.es.minimize.optimize`; it can
            be saved or run on.
    """

    def __init__(self, message: str, x: np.ndarray, index: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = ""
        self.x = x
        self.index = index
        self.strategy: Any = None

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the constructor's arguments and the attributes set later, so
        # the error survives the trip back from a worker process: an
        # exception that cannot be unpickled breaks the whole process pool.
        return type(self), (self.message, self.x, self.index), {"hint": self.hint, "strategy": self.strategy}


class ObjectiveValueError(EvaluationError, ValueError):
    """The objective returned something other than a real number per point.

    Examples are ``None``, a string, a complex number, an array of the wrong
    shape, or with ``vectorized=True`` not one value per row. It is an
    :class:`EvaluationError`, so a run that fails this way is saved and
    continued like one whose objective raised. It is also a ``ValueError``,
    which such a value raised before this class existed.
    """


def resolve_executor(executor: Any) -> concurrent.futures.Executor | None:
    """Return ``executor`` as a :class:`concurrent.futures.Executor`.

    A Dask ``distributed.Client`` (recognised by its ``get_executor``
    method, so Dask is never imported here) becomes
    ``client.get_executor(pure=False)``: Dask's default ``pure=True`` would
    reuse the value of an identical earlier task, which a noisy objective
    must not.
    """
    if executor is None or isinstance(executor, concurrent.futures.Executor):
        return executor
    if callable(getattr(executor, "get_executor", None)):
        return executor.get_executor(pure=False)
    raise ValueError(
        f"executor must be a concurrent.futures.Executor or a dask.distributed.Client, got {type(executor).__name__}; "
        "wrap other pools in an executor, or evaluate in your own loop with ask() and tell()"
    )


def evaluate(
    fun: Callable,
    X: np.ndarray,
    args: tuple = (),
    vectorized: bool = False,
    executor: Any = None,
    repeats: int = 1,
) -> np.ndarray:
    """Return the objective values of the rows of ``X``, shape (len(X),).

    Args:
        fun: ``fun(x, *args) -> float`` for one row, or with ``vectorized``,
            ``fun(X, *args)`` returning one value per row.
        X: Points, shape (k, n). ``fun`` receives a copy, so ``X`` never
            changes.
        args: Extra positional arguments of ``fun``.
        vectorized: Call ``fun`` once on the whole array (one task on an
            executor).
        executor: ``None`` (evaluate here), a
            :class:`concurrent.futures.Executor` or a Dask
            ``distributed.Client``.
        repeats: Evaluate each row this many times and return the means
            (for noisy objectives); all repeats run as separate tasks.

    Raises:
        EvaluationError: if ``fun`` raises; ``x`` and ``index`` name the point.
        ObjectiveValueError: if ``fun`` returns something other than a real
            number per row (a subclass of both EvaluationError and ValueError).
    """
    X = np.asarray(X, dtype=float)
    rows = np.repeat(X, repeats, axis=0) if repeats > 1 else X

    # The objective receives rows of a copy, as in scipy 1.17, which calls
    # fun(np.copy(x), *args). An objective that edits its argument in place,
    # such as np.clip(x, -1, 1, out=x), then changes neither the caller's
    # array, which tell() compares with the last ask(), nor the points that
    # errors name.
    inputs = rows.copy()
    executor = resolve_executor(executor)
    if vectorized:
        values = _evaluate_batch(fun, inputs, rows, args, executor)
    elif executor is None:
        values = np.array([_call(fun, inputs[k], rows[k], k // repeats, args) for k in range(len(rows))], dtype=float)
    else:
        values = _evaluate_on_executor(fun, inputs, rows, args, executor, repeats)
    return values.reshape(len(X), repeats).mean(axis=1) if repeats > 1 else values


def _call(fun: Callable, x_input: np.ndarray, x: np.ndarray, index: int, args: tuple) -> float:
    """Evaluate ``fun`` on ``x_input``, a copy of ``x``, with the error conventions of :func:`evaluate`."""
    try:
        value = fun(x_input, *args)
    except Exception as error:
        raise _failure(error, x, index) from error
    return _scalar(value, x, index)


def _evaluate_batch(fun: Callable, inputs: np.ndarray, X: np.ndarray, args: tuple, executor: Any) -> np.ndarray:
    """Evaluate ``fun`` once on ``inputs``, a copy of ``X``, and check that it returns one value per row."""
    try:
        if executor is None:
            values = fun(inputs, *args)
        else:
            values = executor.submit(fun, inputs, *args).result()
    except Exception as error:
        raise _failure(error, X, None, sent=executor is not None) from error
    numbers = numeric_values(values)
    if numbers is None:
        raise ObjectiveValueError(
            f"a vectorized objective must return real numbers, one per row, got {reprlib.repr(values)} "
            f"for the batch of {len(X)} rows; return a float array of shape ({len(X)},)",
            np.array(X, copy=True),
            None,
        )
    if numbers.shape not in ((len(X),), (len(X), 1)):
        raise ObjectiveValueError(
            f"a vectorized objective must return one value per row, shape ({len(X)},), "
            f"got shape {numbers.shape}; pass vectorized=False for a function of one point",
            np.array(X, copy=True),
            None,
        )
    return numbers.reshape(len(X))


def _evaluate_on_executor(
    fun: Callable, inputs: np.ndarray, X: np.ndarray, args: tuple, executor: Any, repeats: int
) -> np.ndarray:
    """Submit one task per row of ``inputs``, a copy of ``X``; return the values in row order.

    Waits for all tasks or the first failure.
    """
    futures: list[concurrent.futures.Future] = []
    try:
        for x in inputs:
            futures.append(executor.submit(fun, x, *args))
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    except BaseException as exception:
        # Interrupted (Ctrl-C) or the executor failed: drop the queued tasks.
        for future in futures:
            future.cancel()
        # An executor that pickles the task inside submit raises there for a
        # task it cannot send, and that task is the row being submitted.
        k = len(futures)
        if k < len(inputs) and isinstance(exception, Exception) and _is_pickling_error(exception):
            raise _failure(exception, X[k], k // repeats, sent=True) from exception
        raise

    # The first failed row (in row order among the finished tasks) is
    # reported; tasks that have not started are cancelled.
    outcomes = [(k, future.exception()) for k, future in enumerate(futures) if future in done]
    failed = [(k, error) for k, error in outcomes if error is not None]
    if failed:
        for future in futures:
            future.cancel()
        k, error = failed[0]
        raise _failure(error, X[k], k // repeats, sent=True) from error
    return np.array(
        [_scalar(future.result(), X[k], k // repeats) for k, future in enumerate(futures)],
        dtype=float,
    )


def _scalar(value: Any, x: np.ndarray, index: int) -> float:
    """Return the objective's ``value`` at ``x``, row ``index``, as a float.

    Raises:
        ObjectiveValueError: unless ``value`` is one real number.
    """
    array = numeric_values(value)
    if array is None:
        raise ObjectiveValueError(
            f"the objective must return a real number, got {reprlib.repr(value)} "
            f"(type {type(value).__name__}) at x = {_short(x)}; return a float, for example float(value)",
            np.array(x, copy=True),
            index,
        )
    if array.size != 1:
        raise ObjectiveValueError(
            f"the objective must return a scalar, got {type(value).__name__} of shape {array.shape} "
            f"at x = {_short(x)}; return one float per point (for residuals, their sum of squares), or pass "
            "vectorized=True if the function takes the whole population at once",
            np.array(x, copy=True),
            index,
        )
    return float(array.reshape(()))


def _failure(error: BaseException, x: np.ndarray, index: int | None, sent: bool = False) -> EvaluationError:
    """Return the :class:`EvaluationError` for ``error``; ``sent``: the task went to an executor."""
    where = "on the batch of all rows" if index is None else f"at x = {_short(x)} (row {index} of the population)"
    message = f"the objective raised {type(error).__name__}: {error} {where}"
    if sent and _is_pickling_error(error):
        message = (
            f"the objective or its arguments could not be sent to the executor ({type(error).__name__}: {error}) "
            f"{where}, so the objective did not run; a process pool pickles them: pass a function defined at "
            "module level (no lambda or nested function) with picklable args, or use a ThreadPoolExecutor"
        )
    return EvaluationError(message, np.array(x, copy=True), index)


def _is_pickling_error(error: BaseException) -> bool:
    """Return whether ``error`` is pickle's refusal of an object (Python raises one of three types)."""
    if isinstance(error, pickle.PicklingError):
        return True
    # For a lambda or nested function, Python 3.10-3.12 raise "Can't pickle
    # local object" and 3.13 raises "Can't get local object".
    refusal = re.search(r"(can't|cannot) pickle|can't get local object", str(error), re.IGNORECASE)
    return isinstance(error, (AttributeError, TypeError)) and refusal is not None


def _short(x: np.ndarray) -> str:
    return np.array2string(np.asarray(x), precision=6, threshold=12, separator=", ")
