"""Noise handling: the noisy sphere runs its budget instead of stopping on noise."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_es import SpectralES, minimize, optimize
from spectral_es.es.minimize import step
from spectral_es.es.noise import UncertaintyHandler, rank_change_measure

F_BASED = {"tol_f", "tol_flat", "tol_stagnation"}
BUDGET = 30_000


def noisy_sphere(seed, level=1e-2):
    """Vectorised sphere plus Gaussian noise of standard deviation ``level``."""
    noise = np.random.default_rng(seed)

    def f(X):
        return (X**2).sum(axis=1) + level * noise.standard_normal(len(X))

    return f


def distance(result):
    return float((result.mean**2).sum())  # the mean is the estimate under noise, not xbest


def test_noisy_sphere_runs_its_budget():
    x0 = np.full(10, 3.0)
    plain_distances, handled_distances = [], []
    for seed in range(3):
        plain = minimize(noisy_sphere(seed), x0, 1.0, seed=seed, vectorized=True, max_evals=BUDGET)
        handled = minimize(
            noisy_sphere(seed), x0, 1.0, seed=seed, vectorized=True, max_evals=BUDGET, noise_handling=True
        )
        # Without handling, an f-based criterion fires on the noise early on.
        assert set(plain.stop) & F_BASED, plain.stop
        assert plain.nfev < BUDGET / 2
        # With it, only the budget ends the run.
        assert set(handled.stop) == {"max_evals"}
        assert handled.nfev >= BUDGET
        plain_distances.append(distance(plain))
        handled_distances.append(distance(handled))
    # At the noise floor, averaging k evaluations divides the noise variance
    # by k, so the mean gets closer. The distances vary by about a factor of
    # 5 from seed to seed, so the check compares medians over seeds.
    assert np.median(handled_distances) < np.median(plain_distances) / 2


def test_noise_raises_evaluations_per_point():
    es = SpectralES(np.full(10, 3.0), 1.0, seed=0, noise_handling=True, max_evals=BUDGET)
    result = optimize(es, noisy_sphere(0), vectorized=True)
    assert es.noise.uncertainty > 0  # noise dominates the ranking near the optimum
    assert es.noise.evaluations_per_point > 5
    assert result.nfev >= BUDGET


def test_noise_free_function_keeps_one_evaluation():
    es = SpectralES(np.full(5, 3.0), 1.0, seed=0, noise_handling=True, max_evals=20_000)
    result = optimize(es, lambda X: (X**2).sum(axis=1), vectorized=True)
    assert es.noise.evaluations_per_point == 1
    assert es.noise.uncertainty < 0
    assert "tol_x" in result.stop  # convergence still ends the run


def test_noise_keeps_passed_f_options():
    default = SpectralES(np.full(5, 3.0), 1.0, noise_handling=True)
    assert default.options["tol_f"] == 0
    assert default.options["tol_flat"] == np.inf
    assert default.options["tol_stagnation"] == np.inf
    passed = SpectralES(np.full(5, 3.0), 1.0, noise_handling=True, tol_f=1e-3, tol_flat=5, tol_stagnation=200)
    assert passed.options["tol_f"] == 1e-3
    assert passed.options["tol_flat"] == 5
    assert passed.options["tol_stagnation"] == 200


def test_noise_restarts_on_passed_stagnation():
    # Without tol_stagnation the first run of each seed spends the whole budget. With it,
    # each first run ends at the noise floor after 93 to 140 iterations, so restarts follow.
    x0 = np.full(4, 3.0)
    for seed in range(3):
        result = minimize(
            noisy_sphere(seed),
            x0,
            1.0,
            seed=seed,
            vectorized=True,
            max_evals=20_000,
            noise_handling=True,
            tol_stagnation=30,
            restarts=1,
        )
        assert len(result.restarts) == 2
        assert set(result.restarts[0]["stop"]) == {"tol_stagnation"}
        assert set(result.stop) == {"max_evals"}


def test_evaluation_count_includes_reevaluations():
    es = SpectralES(np.full(4, 1.0), 1.0, seed=0, noise_handling=True, noise_max_evaluations=1)
    calls = []

    def f(X):
        calls.append(len(X))
        return (X**2).sum(axis=1)

    for _ in range(5):
        step(es, f, vectorized=True)
    assert es.nfev == sum(calls) == 5 * (es.popsize + es.noise.n_reevaluated)


def test_rank_change_measure_separates_noise_from_signal(rng):
    lam = 12
    index = np.arange(3)
    same = [rank_change_measure(f, f[index], index) for f in rng.random((200, lam))]
    shuffled = [rank_change_measure(f, rng.random(3), index) for f in rng.random((200, lam))]
    # Identical values move by 0 ranks, below the limit of at least 1: s <= -1.
    assert max(same) <= -1
    # Independent values move by about a third of the ranks on average, more
    # than the 25th-percentile limit, so the mean measurement is positive.
    assert np.mean(shuffled) > 0


def test_handler_rejects_bad_maximum():
    with pytest.raises(ValueError, match="noise_max_evaluations must be an integer >= 1"):
        UncertaintyHandler(5, 8, max_evaluations=0)


def test_handler_rejects_wrong_reevaluation_shape():
    handler = UncertaintyHandler(5, 8)
    with pytest.raises(ValueError, match=r"f_again has shape \(3,\), expected \(2,\)"):
        handler.update(np.zeros(8), np.zeros(3))


def test_update_averages_reevaluated_rows():
    handler = UncertaintyHandler(5, 8)
    f = np.arange(8.0)
    f_again = np.array([2.0, -1.0])
    averaged = handler.update(f, f_again)
    # Rows 0 and 1 (the indices) get the mean of both values, the others keep theirs.
    np.testing.assert_array_equal(handler.indices, [0, 1])
    np.testing.assert_array_equal(averaged, [1.0, 0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    np.testing.assert_array_equal(f, np.arange(8.0))  # the caller's array is unchanged


def test_evaluations_stay_within_limits(rng):
    # Independent values make the measurement positive and identical ones
    # negative. Either way the evaluations per point stay in [1, max_evaluations].
    handler = UncertaintyHandler(2, 12, max_evaluations=3)
    for _ in range(100):
        handler.update(rng.random(12), rng.random(handler.n_reevaluated))
        assert 1.0 <= handler.evaluations <= 3.0
    assert handler.evaluations_per_point == 3
    for _ in range(200):
        f = rng.random(12)
        handler.update(f, f[handler.indices])
        assert 1.0 <= handler.evaluations <= 3.0
    assert handler.evaluations_per_point == 1


def test_update_smooths_and_scales_evaluations():
    # n = 5 gives alpha = 1 + 2 / (5 + 10). The test repeats the handler's
    # few floating-point operations, so only a handful of roundings of
    # 2**-53 each separate the two sides: rel=1e-12 leaves a wide margin.
    handler = UncertaintyHandler(5, 8, max_evaluations=20)
    alpha = 1 + 2 / 15
    f = np.arange(8.0)

    # A reordering measures s > 0: the smoothed S moves 0.3 of the way to s
    # and the evaluations grow by alpha.
    moved = np.array([7.5, -1.0])
    s_moved = rank_change_measure(f, moved, handler.indices)
    assert s_moved > 0
    handler.update(f, moved)
    assert handler.uncertainty == pytest.approx(0.3 * s_moved, rel=1e-12)
    assert handler.evaluations == pytest.approx(alpha, rel=1e-12)

    # Identical values measure s < 0. While S < 0 the evaluations shrink by
    # alpha**-0.25 per update, four times slower than they grow.
    s_same = rank_change_measure(f, f[handler.indices], handler.indices)
    expected = 0.3 * s_moved
    while expected >= 0:
        handler.update(f, f[handler.indices])
        expected += 0.3 * (s_same - expected)
    assert handler.uncertainty == pytest.approx(expected, rel=1e-12)
    handler.evaluations = 4.0
    handler.update(f, f[handler.indices])
    assert handler.evaluations == pytest.approx(4.0 * alpha**-0.25, rel=1e-12)


def test_non_finite_values_skip_measurement():
    handler = UncertaintyHandler(5, 8)
    f = np.arange(8.0)
    handler.update(f, f[handler.indices])
    before = handler.uncertainty
    assert before < 0
    handler.update(np.where(np.arange(8) == 5, np.inf, f), f[handler.indices])
    handler.update(f, np.array([np.nan, 1.0]))
    assert handler.uncertainty == before


def test_rank_change_measure_small_cases():
    # lam = 2, sample 0 re-evaluated to the same value: the sorted values are
    # 1 (first copy), 1 (second copy), 2, 2, so the copies are adjacent and
    # Delta = 1 - 1 = 0. Each copy sits at position 1 among the 3 others, with
    # distances [0, 1, 2] to them, whose 25th percentile is 0.5, so
    # s = 0 - max(1, 0.5) = -1.
    assert rank_change_measure(np.array([1.0, 2.0]), np.array([1.0]), np.arange(1)) == -1.0
    # lam = 4, sample 0 moves from rank 0 to rank 7 of 8: Delta = 7 - 1 = 6.
    # Among the 7 others its copies sit at positions 1 and 7, each with
    # distances 0..6, whose 25th percentile is 1.5, so s = 6 - 1.5 = 4.5.
    f = np.array([1.0, 2.0, 3.0, 4.0])
    assert rank_change_measure(f, np.array([4.5]), np.arange(1)) == 4.5
    # The mirror image, from rank 7 to rank 0, gives the same s: the first
    # copy's position among the others is 7, not 8, since its own second copy
    # ranks below it.
    f = np.array([5.0, 1.0, 2.0, 3.0])
    assert rank_change_measure(f, np.array([0.0]), np.arange(1)) == 4.5


def test_state_dict_keeps_pending_count():
    # A state saved between update() and tell() must count the re-evaluations
    # after loading: 1 evaluation per point times (8 + 2) points.
    handler = UncertaintyHandler(5, 8)
    f = np.arange(8.0)
    handler.update(f, f[handler.indices])
    restored = UncertaintyHandler(5, 8)
    restored.load_state_dict(handler.state_dict())
    assert restored.take_evaluation_count(8) == 10
    assert handler.take_evaluation_count(8) == 10
