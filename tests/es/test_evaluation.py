"""Serial, vectorised, executor and Dask evaluation: same results, failures named."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from spectral_es import SpectralES, minimize, optimize
from spectral_es.es import EvaluationError, ObjectiveValueError, evaluate, resume
from spectral_es.functions import rosenbrock, sphere

X = np.random.default_rng(7).normal(size=(9, 4))


def same_run(first, second):
    """Whether two results followed the same path (every iteration's f and the end state)."""
    return (
        first.fbest == second.fbest
        and np.array_equal(first.xbest, second.xbest)
        and first.nfev == second.nfev
        and np.array_equal(first.history["f_min"], second.history["f_min"])
        and np.array_equal(first.mean, second.mean)
    )


def test_evaluate_paths_agree():
    serial = evaluate(rosenbrock, X)
    with ThreadPoolExecutor(3) as pool:
        threaded = evaluate(rosenbrock, X, executor=pool)
        batched = evaluate(rosenbrock, X, vectorized=True, executor=pool)
    assert np.array_equal(serial, threaded)
    assert np.array_equal(serial, evaluate(rosenbrock, X, vectorized=True))
    assert np.array_equal(serial, batched)


def test_executor_values_keep_row_order():
    # The first rows take longest, so tasks finish in reverse order.
    def slow_first(x):
        time.sleep(0.02 * (x[0] < 0))
        return float(x[0])

    X_ordered = np.column_stack([np.linspace(-1, 1, 8), np.zeros(8)])
    with ThreadPoolExecutor(8) as pool:
        assert np.array_equal(evaluate(slow_first, X_ordered, executor=pool), X_ordered[:, 0])


def test_vectorized_batch_is_one_task():
    class CountingExecutor(ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn, /, *args, **kwargs):
            CountingExecutor.submitted += 1
            return super().submit(fn, *args, **kwargs)

    with CountingExecutor(2) as pool:
        evaluate(sphere, X, vectorized=True, executor=pool)
        assert CountingExecutor.submitted == 1
        evaluate(sphere, X, executor=pool, repeats=2)
        assert CountingExecutor.submitted == 1 + 2 * len(X)


def test_repeats_return_means():
    calls = iter(range(1000))
    values = evaluate(lambda x: float(next(calls)), X[:3], repeats=4)
    # Serial order: row 0 gets calls 0..3, row 1 gets 4..7, row 2 gets 8..11.
    assert np.array_equal(values, [1.5, 5.5, 9.5])


@pytest.mark.parametrize("executor_type", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_minimize_on_executor_matches_serial(executor_type):
    serial = minimize(rosenbrock, np.zeros(5), 0.5, seed=3, max_evals=600)
    with executor_type(2) as pool:
        parallel = minimize(rosenbrock, np.zeros(5), 0.5, seed=3, max_evals=600, executor=pool)
    assert same_run(serial, parallel)


def fails_beyond(limit):
    """Sphere that raises for points with x[0] > limit, as a crashing simulation would."""

    def f(x):
        if x[0] > limit:
            raise FloatingPointError(f"simulation diverged at x[0] = {x[0]:.3f}")
        return sphere(x)

    return f


@pytest.mark.parametrize("use_pool", [False, True])
def test_failure_names_point_and_keeps_strategy(use_pool):
    es = SpectralES(np.full(3, 1.0), 1.0, seed=4, max_evals=2000)
    with ThreadPoolExecutor(3) as pool, pytest.raises(EvaluationError) as caught:
        optimize(es, fails_beyond(2.0), executor=pool if use_pool else None)
    error = caught.value
    assert isinstance(error.__cause__, FloatingPointError)
    assert error.x[0] > 2.0
    assert np.array_equal(error.x, es.pending[error.index])
    assert f"row {error.index}" in str(error)
    assert "FloatingPointError" in str(error)
    assert error.strategy is es


def sphere_with_extra_argument(x, unused):
    return sphere(x)


def test_unpicklable_task_named_as_not_sent():
    def nested(x):
        return sphere(x)

    # Python refuses each of these with another exception type: PicklingError,
    # AttributeError and TypeError; none of them ran the objective.
    tasks = {
        "lambda": (lambda x: sphere(x), ()),
        "nested function": (nested, ()),
        "unpicklable argument": (sphere_with_extra_argument, (threading.Lock(),)),
    }
    with ProcessPoolExecutor(1) as pool:
        for name, (fun, args) in tasks.items():
            with pytest.raises(EvaluationError) as caught:
                evaluate(fun, X[:2], args, executor=pool)
            message = str(caught.value)
            assert "could not be sent to the executor" in message, name
            assert "objective did not run" in message and "module level" in message, name
            assert "the objective raised" not in message, name


def test_local_pickling_error_blamed_on_objective():
    def pickles_a_lock(x):
        return pickle.dumps(threading.Lock())

    with pytest.raises(EvaluationError, match="the objective raised TypeError: cannot pickle"):
        evaluate(pickles_a_lock, X[:1])


@pytest.mark.filterwarnings("ignore::spectral_es.NonFiniteObjectiveWarning")
def test_run_continues_after_failure_as_if_none_happened():
    # Continuing with a fixed objective re-evaluates the failed population,
    # so the run matches one that used the fixed objective from the start.
    def fixed(x):
        return sphere(x) if x[0] <= 2.0 else np.inf

    reference = optimize(SpectralES(np.full(3, 1.0), 1.0, seed=4, max_evals=2000), fixed)
    es = SpectralES(np.full(3, 1.0), 1.0, seed=4, max_evals=2000)
    with pytest.raises(EvaluationError):
        optimize(es, fails_beyond(2.0))
    continued = optimize(es, fixed)
    assert same_run(reference, continued)


def test_failure_hint_fits_the_caller(tmp_path):
    es = SpectralES(np.full(3, 1.0), 1.0, seed=4)
    with pytest.raises(EvaluationError) as caught:
        optimize(es, fails_beyond(2.0))
    assert caught.value.message.startswith("the objective raised FloatingPointError: simulation diverged")
    assert "error.strategy can be saved" in str(caught.value)

    # minimize without a checkpoint has nothing to resume from; the hint names checkpoint=FILE.
    with pytest.raises(EvaluationError) as caught:
        minimize(fails_beyond(2.0), np.full(3, 1.0), 1.0, seed=4)
    assert "no checkpoint was written; pass checkpoint=FILE" in str(caught.value)
    assert "can be saved" not in str(caught.value)

    path = tmp_path / "run.npz"
    with pytest.raises(EvaluationError) as caught:
        minimize(fails_beyond(2.0), np.full(3, 1.0), 1.0, seed=4, checkpoint=path)
    assert f"the state before this population is saved in {path}" in str(caught.value)
    assert path.exists()


def test_non_scalar_return_named():
    with pytest.raises(ValueError, match=r"must return a scalar, got ndarray of shape \(2,\) at x = \["):
        evaluate(lambda x: np.array([1.0, 2.0]), X)
    with pytest.raises(ValueError, match="must return a real number, got None"):
        evaluate(lambda x: None, X)
    with pytest.raises(ValueError, match=r"must return a real number, got '1.0' \(type str\) at x = \["):
        evaluate(lambda x: "1.0", X)
    with pytest.raises(ValueError, match=r"vectorized objective must return real numbers, one per row, got \["):
        evaluate(lambda X: ["1.0"] * len(X), X, vectorized=True)


@pytest.mark.parametrize("use_pool", [False, True])
def test_invalid_value_names_row(use_pool):
    def none_at_row_4(x):
        return None if np.array_equal(x, X[4]) else sphere(x)

    with ThreadPoolExecutor(2) as pool, pytest.raises(ObjectiveValueError) as caught:
        evaluate(none_at_row_4, X, executor=pool if use_pool else None)
    assert isinstance(caught.value, EvaluationError)
    assert isinstance(caught.value, ValueError)  # what an invalid value raised before ObjectiveValueError
    assert caught.value.index == 4
    assert np.array_equal(caught.value.x, X[4])

    with pytest.raises(ObjectiveValueError) as caught:
        evaluate(lambda rows: sphere(rows)[:-1], X, vectorized=True)
    assert caught.value.index is None
    assert np.array_equal(caught.value.x, X)


def returns_none_on_call(number):
    """Sphere that returns None on its ``number``-th call, as an objective with a missing return would."""
    calls = {"count": 0}

    def f(x):
        calls["count"] += 1
        return None if calls["count"] == number else sphere(x)

    return f


def test_invalid_value_mid_run_is_resumable(tmp_path):
    reference = minimize(sphere, np.full(3, 1.0), 1.0, seed=4, max_evals=500)
    path = tmp_path / "run.npz"
    with pytest.raises(ObjectiveValueError) as caught:
        minimize(returns_none_on_call(50), np.full(3, 1.0), 1.0, seed=4, max_evals=500, checkpoint=path)
    assert caught.value.message.startswith("the objective must return a real number, got None")
    assert f"the state before this population is saved in {path}" in str(caught.value)
    assert caught.value.strategy.pending is not None
    assert caught.value.strategy.nfev < 50

    continued = resume(sphere, path, check_function=False)
    assert same_run(reference, continued)


def test_unknown_executor_rejected():
    with pytest.raises(ValueError, match="executor must be a concurrent.futures.Executor or a dask"):
        minimize(sphere, np.zeros(2), 1.0, executor=object())


def test_interrupt_cancels_queued_tasks():
    class InterruptingExecutor(Executor):
        """One worker thread; Ctrl-C arrives while the last task is submitted."""

        def __init__(self):
            self.pool = ThreadPoolExecutor(1)
            self.futures = []

        def submit(self, fn, /, *args, **kwargs):
            if len(self.futures) == len(X) - 1:
                raise KeyboardInterrupt
            future = self.pool.submit(fn, *args, **kwargs)
            self.futures.append(future)
            return future

    executor = InterruptingExecutor()
    with pytest.raises(KeyboardInterrupt):
        evaluate(lambda x: time.sleep(0.05) or 0.0, X, executor=executor)
    executor.pool.shutdown(wait=True)
    # The one worker had started at most the first task; the rest were queued.
    assert sum(future.cancelled() for future in executor.futures) >= len(X) - 2


class InlineExecutor(Executor):
    """Run each task inside submit, so every task has finished before evaluate waits."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


def fails_on_rows(X, rows):
    """Return an objective that raises ValueError at the given rows of X and returns 0.0 elsewhere."""
    bad = {tuple(X[k]) for k in rows}

    def objective(x):
        if tuple(x) in bad:
            raise ValueError("bad row")
        return 0.0

    return objective


@pytest.mark.parametrize("executor", [None, InlineExecutor()], ids=["serial", "executor"])
def test_repeated_rows_failure_names_row(executor):
    # With repeats = 3 the evaluated array contains each row three times, and
    # the error must name the row of X, not the position among the repeats.
    with pytest.raises(EvaluationError) as caught:
        evaluate(fails_on_rows(X, [2]), X[:4], repeats=3, executor=executor)
    assert caught.value.index == 2
    np.testing.assert_array_equal(caught.value.x, X[2])


def test_executor_reports_first_failed_row():
    # Every task has finished when evaluate waits, so rows 1 and 3 have
    # both failed, and the first in row order is reported.
    with pytest.raises(EvaluationError) as caught:
        evaluate(fails_on_rows(X, [1, 3]), X[:5], executor=InlineExecutor())
    assert caught.value.index == 1


def test_failure_cancels_queued_tasks():
    # One worker: row 0 fails at once, and row 1, if the worker starts it,
    # waits until evaluate has returned. Rows 2 to 8 are therefore still
    # queued when the failure is seen, and must never run.
    calls = []
    release = threading.Event()

    def objective(x):
        calls.append(x[0])
        if x[0] == X[0, 0]:
            raise ValueError("bad row")
        release.wait(timeout=30)
        return 0.0

    pool = ThreadPoolExecutor(1)
    with pytest.raises(EvaluationError):
        evaluate(objective, X, executor=pool)
    release.set()
    pool.shutdown(wait=True)
    assert calls[0] == X[0, 0]
    assert len(calls) <= 2


def test_vectorized_column_of_values_accepted():
    values = evaluate(lambda A: sphere(A)[:, None], X, vectorized=True)
    np.testing.assert_array_equal(values, evaluate(sphere, X))


def test_vectorized_row_of_values_rejected():
    with pytest.raises(ObjectiveValueError, match=r"one value per row, shape \(9,\), got shape \(1, 9\)"):
        evaluate(lambda A: sphere(A)[None, :], X, vectorized=True)


class PicklingErrorExecutor(Executor):
    """Raise pickle.PicklingError on submit, as an executor that cannot send the task does."""

    def submit(self, fn, /, *args, **kwargs):
        raise pickle.PicklingError("task rejected by the test executor")


@pytest.mark.parametrize("vectorized", [False, True])
def test_pickling_error_named_as_not_sent(vectorized):
    # A PicklingError counts as a failure to send, whatever its message is,
    # also when submit raises it for one row of the population.
    with pytest.raises(EvaluationError, match="could not be sent to the executor") as caught:
        evaluate(sphere, X[:2], vectorized=vectorized, executor=PicklingErrorExecutor())
    assert caught.value.index == (None if vectorized else 0)


def test_error_point_is_a_copy():
    # error.x must keep the failed point even when the caller reuses the array.
    points = X[:3].copy()
    with pytest.raises(EvaluationError) as caught:
        evaluate(fails_on_rows(points, [1]), points)
    points[:] = 0.0
    np.testing.assert_array_equal(caught.value.x, X[1])


# ---------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    # Two worker threads in this process, talking TCP on the loopback
    # interface only; no dashboard.
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_client_matches_serial(dask_client):
    serial = minimize(rosenbrock, np.zeros(4), 0.5, seed=8, max_evals=160)
    on_dask = minimize(rosenbrock, np.zeros(4), 0.5, seed=8, max_evals=160, executor=dask_client)
    assert dask_client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert same_run(serial, on_dask)


def test_dask_executor_matches_serial(dask_client):
    serial = minimize(sphere, np.ones(4), 0.5, seed=9, max_evals=80, vectorized=True)
    on_dask = minimize(
        sphere, np.ones(4), 0.5, seed=9, max_evals=80, vectorized=True, executor=dask_client.get_executor()
    )
    assert same_run(serial, on_dask)


def test_dask_worker_failure_names_point(dask_client):
    es = SpectralES(np.full(3, 1.0), 1.0, seed=4, max_evals=400)
    with pytest.raises(EvaluationError) as caught:
        optimize(es, fails_beyond(2.0), executor=dask_client)
    assert isinstance(caught.value.__cause__, FloatingPointError)
    assert caught.value.x[0] > 2.0
    assert np.array_equal(caught.value.x, es.pending[caught.value.index])


def test_dask_repeats_are_not_cached(dask_client):
    # Dask's default pure=True would return one cached value for identical
    # tasks; a noisy objective needs every repeat evaluated.
    def noisy(x):
        return float(np.random.default_rng().random())

    values = evaluate(noisy, np.zeros((6, 2)), executor=dask_client)
    assert len(set(values.tolist())) == 6


def clip_in_place(x):
    """Sphere of the point clipped to [-1, 1], clipped in place as a careless objective might."""
    np.clip(x, -1, 1, out=x)
    return float(x @ x)


def clip_rows_in_place(X):
    np.clip(X, -1, 1, out=X)
    return np.array([float(x @ x) for x in X])


def clipped_sphere(x):
    """The value of both objectives above, computed without touching ``x``."""
    clipped = np.clip(x, -1, 1)
    return float(clipped @ clipped)


@pytest.mark.parametrize(
    ("objective", "options"),
    [
        (clip_in_place, {}),
        (clip_in_place, {"repeats": 2}),
        (clip_rows_in_place, {"vectorized": True}),
        (clip_in_place, {"executor": "threads"}),
        (clip_rows_in_place, {"vectorized": True, "executor": "threads"}),
    ],
)
def test_objective_editing_input_leaves_points_unchanged(objective, options):
    points = 3 * X
    before = points.copy()
    with ThreadPoolExecutor(2) as pool:
        if options.get("executor") == "threads":
            options = {**options, "executor": pool}
        values = evaluate(objective, points, **options)
    assert np.array_equal(points, before)
    assert np.array_equal(values, [clipped_sphere(x) for x in before])


@pytest.mark.parametrize(
    ("objective", "options"),
    [
        (clip_in_place, {}),
        (clip_rows_in_place, {"vectorized": True}),
        (clip_in_place, {"executor": "threads"}),
        (clip_in_place, {"noise_handling": True, "max_iter": 30}),
    ],
)
def test_minimize_with_objective_editing_input(objective, options):
    # The objective receives copies, so the run follows the same path as one
    # of the same function without the in-place edit.
    settings = {"seed": 1, "max_evals": 300, **options}
    serial = {key: value for key, value in settings.items() if key not in ("vectorized", "executor")}
    reference = minimize(clipped_sphere, [1.0, 2.0], 0.5, **serial)
    with ThreadPoolExecutor(2) as pool:
        if settings.get("executor") == "threads":
            settings["executor"] = pool
        result = minimize(objective, [1.0, 2.0], 0.5, **settings)
    assert same_run(result, reference)


def test_failure_names_point_before_objective_edited_it():
    def zero_then_fail(x):
        x[:] = 0.0
        raise RuntimeError("simulation failed")

    points = X.copy()
    with pytest.raises(EvaluationError) as caught:
        evaluate(zero_then_fail, points)
    assert np.array_equal(caught.value.x, X[0])
    assert np.array_equal(points, X)


def test_method_optimize_matches_function():
    # es.optimize(fun) is optimize(es, fun): the same run, and the method
    # returns the strategy, as pycma's does.
    function_form = optimize(SpectralES(np.full(4, 2.0), 0.5, seed=3, f_target=1e-8), sphere)
    es = SpectralES(np.full(4, 2.0), 0.5, seed=3, f_target=1e-8)

    assert es.optimize(sphere, vectorized=False) is es
    assert es.result.nfev == function_form.nfev
    np.testing.assert_array_equal(es.result.xbest, function_form.xbest)
    assert "f_target" in es.stop()


def test_evaluation_errors_pickle():
    # A worker process sends its exception back pickled; one that cannot be
    # unpickled breaks the whole process pool.
    for error_class in (EvaluationError, ObjectiveValueError):
        error = error_class("the objective returned None", np.arange(3.0), 2)
        error.hint = "continue with resume"
        error.strategy = SpectralES(np.zeros(3), 1.0, seed=0)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is error_class
        assert str(copy) == str(error)
        np.testing.assert_array_equal(copy.x, error.x)
        assert copy.index == 2
        assert copy.strategy.mean.tolist() == [0.0, 0.0, 0.0]


def return_none(x):
    return None


def test_invalid_value_in_process_pool_reported():
    # minimize itself running in a worker: its ObjectiveValueError reaches
    # the parent as that error, not as a broken pool. Spawned, because torch,
    # imported by other tests, leaves threads that fork() may deadlock on.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(minimize, return_none, np.zeros(2), 1.0, seed=0)
        with pytest.raises(ObjectiveValueError, match="must return a real number, got None"):
            future.result(timeout=120)
