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
