"""Termination criteria, the callback and progress display."""

from __future__ import annotations

import math
import pickle
import re
import warnings

import numpy as np
import pytest

from spectral_es import SpectralES, minimize
from spectral_es.es.stopping import all_std_below
from spectral_es.functions import ellipsoid, rastrigin, sphere


def test_max_evals_and_max_iter():
    result = minimize(sphere, np.ones(5), 1.0, seed=0, max_evals=95)
    assert result.stop == {"max_evals": 95}
    assert 95 <= result.nfev < 95 + 8  # stops after the generation that crosses it
    result = minimize(sphere, np.ones(5), 1.0, seed=0, max_iter=7)
    assert result.stop == {"max_iter": 7}
    assert result.nit == 7


def test_limits_stop_at_equality():
    # max_evals = 2 popsize is reached exactly after two iterations, and
    # max_iter = 2 after the same two: each limit stops at equality, not one
    # generation later.
    for limits in ({"max_evals": 12}, {"max_iter": 2}):
        es = SpectralES(np.ones(4), 1.0, popsize=6, seed=0, **limits)
        X = es.ask()
        es.tell(X, sphere(X))
        assert es.stop() == {}
        X = es.ask()
        es.tell(X, sphere(X))
        assert es.stop() == limits
        assert es.nfev == 12


def test_target_met_with_equality():
    # The target stops the run once a value is at it, not only below it.
    es = SpectralES(np.zeros(3), 1.0, popsize=4, seed=0, f_target=1.0)
    es.tell(es.ask(), [3.0, 1.0, 2.0, 4.0])
    assert es.stop() == {"f_target": 1.0}
    assert es.fbest == 1.0


def test_target_reached():
    result = minimize(sphere, np.ones(5), 1.0, seed=0, f_target=1e-3)
    assert result.stop == {"f_target": 1e-3}
    assert result.fbest <= 1e-3
    assert result.success


def test_missed_target_is_no_success():
    # From 3 in every coordinate, all three runs on 4-D Rastrigin converge to
    # local minima (f near 6, 2 and 2 for this seed).
    result = minimize(rastrigin, [3.0] * 4, 2.0, seed=0, restarts=2, f_target=1e-8)
    assert result.stop == {"tol_f": 1e-11}
    assert result.fbest > 1
    assert result.f_target == 1e-8
    assert not result.success
    assert result.message == "tol_f=1e-11 (f_target=1e-08 not reached)"


def test_target_reached_in_later_restart():
    result = minimize(rastrigin, [3.0] * 3, 2.0, seed=0, restarts=6, f_target=1e-8)
    assert result.restarts[0]["stop"] == {"tol_f": 1e-11}  # the first run missed the target
    assert result.stop == {"f_target": 1e-8}
    assert result.success
    assert result.message == "f_target=1e-08"


def test_success_without_target_means_converged():
    result = minimize(rastrigin, [3.0] * 4, 2.0, seed=0)
    assert result.f_target is None
    assert result.stop == {"tol_f": 1e-11}
    assert result.success  # converged, although to a local minimum
    assert result.message == "tol_f=1e-11"
    assert not minimize(sphere, np.ones(3), 1.0, seed=0, max_iter=5).success


def test_ask_tell_result_keeps_target():
    es = SpectralES(np.ones(3), 1.0, seed=0, f_target=-1.0)  # below the sphere's minimum 0
    es.optimize(sphere)
    assert "f_target" not in es.stop()
    assert es.result.f_target == -1.0
    assert not es.result.success
    assert es.result.message.endswith(" (f_target=-1.0 not reached)")
    running = SpectralES(np.ones(3), 1.0, seed=0, f_target=-math.inf)  # -inf means no target
    assert running.result.f_target is None
    assert running.result.message == "running"
    assert not running.result.success


def test_tolerances_end_converged_run():
    result = minimize(sphere, np.ones(3), 1.0, seed=0, tol_x=1e-6)
    assert "tol_x" in result.stop or "tol_f" in result.stop
    es_result = result
    assert es_result.fbest < 1e-9  # f ~ (n * std)^2 when std ~ 1e-6


def test_condition_limit():
    result = minimize(ellipsoid, np.ones(6), 1.0, seed=0, tol_condition=1e3)
    assert "tol_condition" in result.stop
    assert result.fbest > 1e-8  # it stopped long before converging


@pytest.mark.parametrize("diagonal", [False, True])
def test_all_std_below_matches_exact_check(rng, diagonal):
    # The shortcut through sigma / sqrt(max(d)) and sigma / sqrt(min(d)) must
    # agree with the exact check, above all for thresholds between those bounds,
    # where only some coordinates are below. Thresholds at 1e-9 relative
    # distance from an exact deviation could round either way, so they are skipped.
    for _ in range(50):
        es = SpectralES(np.zeros(4), 1.0, seed=0, diagonal=diagonal)
        es.sigma = 10 ** rng.uniform(-3, 3)
        es.d = 10 ** rng.uniform(-4, 4, size=4)
        if not diagonal:
            es.B = np.linalg.qr(rng.standard_normal((4, 4)))[0]
        std = es.coordinate_std()
        low, high = es.sigma / np.sqrt(es.d.max()), es.sigma / np.sqrt(es.d.min())
        for threshold in np.concatenate([[low / 2, high * 2], rng.uniform(low, high, size=5)]):
            if np.min(np.abs(std / threshold - 1)) < 1e-9:
                continue
            assert all_std_below(es, threshold) == bool(np.all(std < threshold))


def test_stagnation_on_pure_noise():
    noise = np.random.default_rng(0)
    result = minimize(lambda x: noise.random(), np.zeros(2), 1.0, seed=0, tol_stagnation=30, max_iter=5000)
    assert "tol_stagnation" in result.stop
    assert result.nit < 200


def test_diverging_search_stops_on_tol_up_sigma():
    # -|x|^2 has no minimum, so sigma grows by orders of magnitude per dozen
    # iterations. The run ends once sigma passes 1e20 times sigma0 times the
    # shape's largest deviation. One iteration multiplies sigma by far less
    # than 1e10, so the run stops well before sigma reaches 1e30.
    es = SpectralES(np.ones(3), 0.5, seed=0)
    while not es.stop():
        X = es.ask()
        es.tell(X, -np.sum(X**2, axis=1))

    assert "tol_up_sigma" in es.stop()
    assert 1e20 * 0.5 / np.sqrt(es.d.min()) < es.sigma < 1e30


def test_unbounded_function_ends_with_a_reason():
    # Without tol_up_sigma, the run must still end by a criterion with a
    # finite state.
    es = SpectralES(np.ones(3), 1.0, seed=0, tol_up_sigma=math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # f overflows to -inf
        while not es.stop():
            X = es.ask()
            es.tell(X, -np.sum(X**2, axis=1))
    assert es.sigma > 1e100
    assert np.isfinite(es.sigma)
    assert np.all(np.isfinite(es.mean))
    assert np.all(np.isfinite(es.d))


def test_overflowing_update_stops_and_keeps_state():
    es = SpectralES(np.ones(3), 1.0, seed=0)
    # sigma / sqrt(d) = 1e350 overflows: the mean update m + sigma * step is inf.
    es.sigma = 1e200
    es.d = np.full(3, 1e-300)
    mean = es.mean.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow itself
        X = es.ask()
        with pytest.warns(RuntimeWarning, match="non-finite or non-positive state"):
            es.tell(X, np.arange(es.popsize, dtype=float))
    assert "non_finite_state" in es.stop()
    np.testing.assert_array_equal(es.mean, mean)


@pytest.mark.parametrize("mode", ["return", "numpy", "raise"])
def test_callback_stops_the_run(mode):
    seen = []

    def callback(result):
        seen.append(result.nit)
        if mode == "numpy":
            # A comparison on numpy values gives np.True_, not True.
            return np.int64(result.nit) == 4
        if result.nit == 4:
            if mode == "raise":
                raise StopIteration
            return True
        return None

    result = minimize(sphere, np.ones(3), 1.0, seed=0, callback=callback, restarts=2)
    assert result.stop == {"callback": True}
    assert seen == [1, 2, 3, 4]
    assert result.nit == 4


def test_disp_prints_header_and_lines(capsys):
    minimize(sphere, np.ones(3), 1.0, seed=0, max_iter=25, disp=10)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["iter", "evals", "f"]
    iterations = [int(line.split()[0]) for line in lines[1:]]
    assert iterations == [10, 20, 25]  # every 10th, then the final one
    assert all(re.match(r"\s*\d+\s+\d+\s+\S+e[+-]\d+", line) for line in lines[1:])


@pytest.mark.parametrize("copy_strategy", ["save", "pickle"])
def test_loaded_strategy_prints_header_first(tmp_path, capsys, copy_strategy):
    es = SpectralES(np.ones(3), 1.0, seed=0)
    for _ in range(3):
        X = es.ask()
        es.tell(X, [sphere(x) for x in X])
        es.disp()
    capsys.readouterr()
    if copy_strategy == "save":
        es.save(tmp_path / "es.npz")
        loaded = SpectralES.load(tmp_path / "es.npz")
    else:
        loaded = pickle.loads(pickle.dumps(es))
    loaded.disp()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:3] == ["iter", "evals", "f"]
    assert lines[1].split()[0] == "3"


def test_restarts_grow_population():
    result = minimize(sphere, np.ones(4), 1.0, seed=0, tol_x=1e-3, restarts=2)
    sizes = [run["popsize"] for run in result.restarts]
    assert sizes == [8, 16, 32]
    assert result.nfev == sum(run["nfev"] for run in result.restarts)


def test_restarts_share_the_evaluation_budget():
    result = minimize(sphere, np.ones(4), 1.0, seed=0, tol_x=1e-3, restarts=5, max_evals=300)
    assert result.nfev < 300 + 64
    assert result.stop.get("max_evals") == 300


def test_restart_progress_counts_all_evaluations(capsys):
    result = minimize(sphere, np.ones(3), 1.0, seed=0, tol_x=1e-2, restarts=2, disp=1)
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if re.match(r"\s*\d+\s+\d+\s+\S+e[+-]\d+", line)]
    evaluations = [int(row[1]) for row in rows]
    # One line per iteration of the three runs, with the history's cumulative
    # evaluations: the CSV log, the table and the summary agree.
    assert evaluations == result.history["evaluations"].astype(int).tolist()
    assert evaluations == sorted(evaluations)
    assert evaluations[-1] == result.nfev
    starts = [line for line in lines if line.startswith("run ")]
    assert [line.split(",")[0] for line in starts] == ["run 0 (default)", "run 1 (large)", "run 2 (large)"]
    assert starts[1].endswith(f"after {result.restarts[0]['nfev']} evaluations")
    # One numbering, from 0, in the progress lines, the summaries and the history.
    numbers = [int(line.split()[1]) for line in starts]
    assert numbers == [run["run"] for run in result.restarts]
    assert numbers == np.unique(result.history["run"]).tolist()
