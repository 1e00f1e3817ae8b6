"""Non-finite values, flat functions, one-step updates, seeding, pickling, n = 1 and long runs."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from spectral_es import NonFiniteObjectiveWarning, SpectralES, minimize
from spectral_es.core import orthogonality_defect
from spectral_es.functions import rosenbrock, rotated_ellipsoid, sphere


def run(es, function, iterations):
    for _ in range(iterations):
        X = es.ask()
        es.tell(X, function(X))
    return es


def state_of(es):
    """Copies of everything that defines the distribution."""
    B = np.eye(es.n) if es.B is None else es.B
    return es.mean.copy(), es.sigma, es.d.copy(), B.copy(), es.p_sigma.copy(), es.p_c.copy()


def test_nonfinite_values_rank_worst_and_warn_once():
    es = SpectralES(np.full(5, 2.0), 1.0, seed=3)

    def poisoned(X):
        f = sphere(X)
        f[::3] = np.nan
        f[1] = np.inf
        return f

    with pytest.warns(NonFiniteObjectiveWarning) as record:
        run(es, poisoned, 30)
    assert len(record) == 1
    assert es.n_nonfinite == 30 * (len(range(0, es.popsize, 3)) + 1)
    assert np.isfinite(es.fbest)
    # The best of each generation is finite, so the run still makes progress.
    assert es.fbest < sphere(np.full(5, 2.0))


def nan_at_origin_side(X):
    f = sphere(X)
    f[X[:, 0] < 0] = np.nan
    return f


def test_nonfinite_warning_points_at_caller():
    # The warning names the line that called tell or minimize, not a line of the package.
    es = SpectralES(np.zeros(3), 1.0, seed=1)
    with pytest.warns(NonFiniteObjectiveWarning) as record:
        X = es.ask()
        es.tell(X, nan_at_origin_side(X))
    assert record[0].filename == __file__
    with pytest.warns(NonFiniteObjectiveWarning) as record:
        minimize(nan_at_origin_side, np.zeros(3), 1.0, vectorized=True, seed=1, max_evals=50)
    assert record[0].filename == __file__


def test_repr_shows_progress_and_stop():
    es = SpectralES(np.ones(3), 0.5, seed=1, max_iter=3)
    assert repr(es) == "SpectralES(n=3, popsize=7, nit=0, nfev=0, sigma=0.5, fbest=inf)"
    while not es.stop():
        X = es.ask()
        es.tell(X, sphere(X))
    text = repr(es)
    assert text.startswith("SpectralES(n=3, popsize=7, nit=3, nfev=21, ")
    assert f"fbest={es.fbest:.6g}" in text
    assert text.endswith(", stop={'max_iter': 3})")


def test_all_nan_generation_keeps_state():
    es = run(SpectralES(np.ones(4), 1.0, seed=0), sphere, 5)
    before = state_of(es)
    X = es.ask()
    with pytest.warns(NonFiniteObjectiveWarning):
        es.tell(X, np.full(es.popsize, np.nan))
    for old, new in zip(before, state_of(es), strict=True):
        np.testing.assert_array_equal(old, new)
    assert es.nit == 6
    assert es.nfev == 6 * es.popsize
    assert es.result.fbest < np.inf  # the earlier best survives


def test_constant_function_stops_flat():
    result = minimize(lambda x: 1.0, np.zeros(3), 1.0, seed=0)
    assert "tol_flat" in result.stop
    assert result.nit == 3


def test_tied_values_share_mean_weight():
    # With every value tied, each sample gets the mean of the recombination
    # weights, 1 / popsize, so the new mean is the average of the samples
    # (up to rounding of the sum of popsize terms), not the first mu rows.
    es = SpectralES(np.linspace(-1, 1, 6), 0.7, seed=3)
    X = es.ask()
    es.tell(X, np.full(len(X), 2.0))
    np.testing.assert_allclose(es.mean, X.mean(axis=0), rtol=0, atol=1e-14)


def test_path_stalls_above_h_sigma_threshold():
    # In the first iteration p_sigma = sqrt(c_sigma (2 - c_sigma) mueff) z_w
    # and the bias correction divides by sqrt(c_sigma (2 - c_sigma)), so the
    # tested length is sqrt(mueff) ||z_w||. CMA-ES sets h_sigma = 0, and so
    # p_c = 0, when that length reaches (1.4 + 2 / (n + 1)) chi_n. With
    # x0 = 0, sigma0 = 1 and d = 1, the samples X are z themselves.
    n = 10
    threshold = 1.4 + 2 / (n + 1)
    ratios = []
    for seed in range(30):
        es = SpectralES(np.zeros(n), 1.0, seed=seed)
        X = es.ask()
        f = X[:, 0]
        z_w = es.params.mean_weights @ X[np.argsort(f)]
        ratio = np.sqrt(es.params.mueff) * np.linalg.norm(z_w) / es.params.chi_n
        es.tell(X, f)
        # The closest ratio to the threshold is 0.048 away, far beyond rounding.
        assert np.any(es.p_c != 0) == (ratio < threshold), (seed, ratio)
        ratios.append(ratio)
    # Both cases occur, and some ratios lie between 1.2 and the threshold,
    # where the constant 1.0 in place of 1.4 would wrongly stall the path.
    assert max(ratios) > threshold
    assert any(1.2 < ratio < threshold for ratio in ratios)


def test_xnes_step_size_and_unit_determinant():
    # The xNES preset moves log sigma by
    # 0.5 eta_sigma sum_k u_k (||z_k||^2 - n) / n and keeps only the
    # trace-free part of the gradient for the shape, so prod(d) stays 1, and
    # with it det(C) = 1 / prod(d). Both sides are sums of lam * n products,
    # whose rounding is about 1e-14 here, so 1e-12 is a safe tolerance.
    n = 10
    es = SpectralES(np.zeros(n), 1.0, preset="xnes", seed=1)
    X = es.ask()
    f = (X**2).sum(axis=1)
    excess = (X[np.argsort(f)] ** 2).sum(axis=1) - n
    log_step = 0.5 * es.params.eta_sigma * (es.params.mean_weights @ excess) / n
    es.tell(X, f)
    assert es.B is not None
    assert np.log(es.sigma) == pytest.approx(log_step, rel=1e-12, abs=1e-12)
    assert abs(np.log(es.d).sum()) <= 1e-12


def test_truncated_rotations_stay_orthogonal():
    # Each truncated rotation (order 8, generator norm 0.25 per squaring, up
    # to 4 squarings) leaves a defect of about 4e-5 at most, an estimate.
    # The Björck step after it maps a defect e to about (3/4) e^2 = 1.4e-9.
    # Without that step the defects add up: 4.5e-5 after these 200 steps.
    es = SpectralES(np.linspace(-3, 3, 10), 1.0, seed=0, cayley="truncated", rotation_interval=1)
    defects = []
    for _ in range(200):
        X = es.ask()
        es.tell(X, rotated_ellipsoid(X))
        defects.append(orthogonality_defect(es.B))
    assert max(defects) < 2e-9


def test_same_seed_is_bit_identical():
    first = minimize(rosenbrock, np.zeros(6), 0.5, seed=7, max_evals=3000)
    second = minimize(rosenbrock, np.zeros(6), 0.5, seed=7, max_evals=3000)
    np.testing.assert_array_equal(first.xbest, second.xbest)
    np.testing.assert_array_equal(first.mean, second.mean)
    assert first.fbest == second.fbest
    assert first.nfev == second.nfev


def test_seed_zero_is_a_seed():
    a = SpectralES(np.zeros(3), 1.0, seed=0).ask()
    b = SpectralES(np.zeros(3), 1.0, seed=0).ask()
    c = SpectralES(np.zeros(3), 1.0, seed=1).ask()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_global_random_state_untouched():
    state = np.random.get_state()
    minimize(sphere, np.ones(4), 1.0, seed=None, max_evals=500)
    after = np.random.get_state()
    assert state[0] == after[0]
    assert np.array_equal(state[1], after[1])
    assert state[2:] == after[2:]


def test_unseeded_run_records_its_seed():
    es = SpectralES(np.zeros(3), 1.0)
    replay = SpectralES(np.zeros(3), 1.0, seed=es.seed)
    np.testing.assert_array_equal(es.ask(), replay.ask())


def test_pickle_resumes_identically():
    es = run(SpectralES(np.full(8, 1.5), 1.0, seed=11), rosenbrock, 40)
    clone = pickle.loads(pickle.dumps(es))
    run(es, rosenbrock, 60)
    run(clone, rosenbrock, 60)
    for a, b in zip(state_of(es), state_of(clone), strict=True):
        np.testing.assert_array_equal(a, b)
    assert es.fbest == clone.fbest


def test_pickle_between_ask_and_tell():
    es = SpectralES(np.ones(3), 1.0, seed=2)
    X = es.ask()
    clone = pickle.loads(pickle.dumps(es))
    es.tell(X, sphere(X))
    clone.tell(X, sphere(X))
    np.testing.assert_array_equal(es.mean, clone.mean)


@pytest.mark.parametrize("diagonal", [False, True])
def test_one_dimension(diagonal):
    result = minimize(sphere, [3.0], 1.0, seed=0, f_target=1e-10, diagonal=diagonal, max_evals=2000)
    assert result.fbest <= 1e-10
    assert result.xbest.shape == (1,)


@pytest.mark.parametrize("diagonal", [False, True])
def test_long_run_past_convergence_stays_finite(diagonal):
    # No target and no tolerances: the run goes on long after f reached its
    # floor, through underflow of sigma * sqrt(1/d) towards zero.
    es = SpectralES(np.ones(4), 1.0, seed=5, diagonal=diagonal, tol_f=0, tol_x=0, tol_stagnation=10**9, max_iter=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning (overflow, 0/0) fails the test
        while not es.stop():
            X = es.ask()
            es.tell(X, sphere(X))
    assert "non_finite_state" not in es.stop()
    for part in state_of(es):
        assert np.all(np.isfinite(part))
    assert np.all(es.d > 0)
    assert es.sigma > 0


def test_all_nan_objective_names_its_reason():
    with pytest.warns(NonFiniteObjectiveWarning):
        result = minimize(lambda x: np.nan, np.zeros(3), 1.0, seed=0)
    assert result.stop == {"non_finite_objective": 3}
    assert result.nit == 3


def test_results_compare_and_hash_by_identity():
    # Two runs with the same seed give results with equal fields, whose
    # field-wise == would have to compare arrays.
    first = minimize(sphere, np.ones(3), 1.0, seed=1, max_iter=5)
    second = minimize(sphere, np.ones(3), 1.0, seed=1, max_iter=5)
    assert np.array_equal(first.xbest, second.xbest)
    assert first == first
    assert first != second
    assert hash(first) == hash(first)
    assert len({first, second}) == 2
