"""Per-coordinate initial deviations (``stds``, pycma's ``CMA_stds``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spectral_es import SpectralES, minimize, resume
from spectral_es.functions import sphere

SCALES = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])


def scaled_sphere(X):
    """A sphere in x / SCALES: separable, with ranges six orders of magnitude apart."""
    return sphere(np.atleast_2d(X) / SCALES)


def test_initial_deviations_are_sigma0_times_stds():
    stds = np.array([1.0, 10.0, 0.1])
    es = SpectralES(np.zeros(3), 0.5, stds=stds, seed=1)
    # sigma0 * stds[i] with d = 1 and B = I: one product per entry, so exact.
    assert np.array_equal(es.coordinate_std(), 0.5 * stds)
    assert np.array_equal(np.diag(es.covariance()), (0.5 * stds) ** 2)


def test_one_number_scales_like_sigma0():
    # A power of two scales without rounding, so the samples agree bit for bit.
    scaled = SpectralES(np.ones(4), 0.25, stds=4.0, seed=3)
    plain = SpectralES(np.ones(4), 1.0, seed=3)
    for _ in range(3):
        X, Y = scaled.ask(), plain.ask()
        assert np.array_equal(X, Y)
        scaled.tell(X, sphere(X))
        plain.tell(Y, sphere(Y))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matching_stds_save_evaluations(seed):
    # With stds equal to the ranges the problem is a sphere from the start, and
    # the covariance does not have to learn six orders of magnitude first.
    # Measured: 2781-3078 evaluations without, 873-981 with.
    options = {"vectorized": True, "seed": seed, "f_target": 1e-10}
    without = minimize(scaled_sphere, 0.5 * SCALES, 0.3, **options)
    with_stds = minimize(scaled_sphere, 0.5 * SCALES, 0.3, stds=SCALES, **options)
    assert without.success
    assert with_stds.success
    assert with_stds.nfev < 0.5 * without.nfev


def test_restarts_and_checkpoint_keep_stds(tmp_path):
    options = {"vectorized": True, "seed": 4, "restarts": 1, "max_iter": 10, "stds": SCALES}
    result = minimize(scaled_sphere, 0.5 * SCALES, 0.3, checkpoint=tmp_path / "run.npz", **options)
    assert result.nit == 20
    # Each run's strategy scales its coordinates by stds (the second run has a
    # doubled population, the same scaling).
    es = SpectralES.load(tmp_path / "run.npz")
    assert np.array_equal(es._scaling, SCALES)


@pytest.mark.parametrize(
    ("stds", "message"),
    [
        ([1.0, 2.0], r"stds has shape \(2,\), but the problem has 3 variables"),
        ([1.0, -2.0, 1.0], r"stds must be finite and > 0, got stds\[1\] = -2.0"),
        ([1.0, np.nan, 1.0], r"stds must be finite and > 0, got stds\[1\] = nan"),
        (0.0, r"stds must be finite and > 0, got stds\[0\] = 0.0"),
        ("1", "stds must be numbers, got '1'"),
        (np.ones(3, dtype=bool), "stds must be numbers, got array"),
        (np.ones((3, 1)), r"stds has shape \(3, 1\)"),
    ],
)
def test_bad_stds_named(stds, message):
    with pytest.raises(ValueError, match=message):
        SpectralES(np.zeros(3), 1.0, stds=stds)
    with pytest.raises(ValueError, match=message):
        minimize(sphere, np.zeros(3), 1.0, stds=stds)


def test_stds_wider_than_box_warns():
    bounds = ([0.0, 0.0], [1.0, 100.0])
    with pytest.warns(UserWarning, match=r"variable 0: 2 against a width of 1"):
        SpectralES(np.full(2, 0.5), 1.0, stds=[2.0, 30.0], bounds=bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpectralES(np.full(2, 0.5), 1.0, stds=[0.3, 30.0], bounds=bounds)


def test_load_in_narrow_box_does_not_warn(tmp_path):
    # sigma0 = 1 is far wider than the box, but sigma0 * stds = 1e-3 is not,
    # so neither the new strategy nor the loaded one should warn.
    bounds = ([0.0, 0.0], [0.01, 0.01])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        es = SpectralES(np.full(2, 0.005), 1.0, stds=[1e-3, 1e-3], bounds=bounds, seed=1)
        X = es.ask()
        es.tell(X, sphere(X))
        es.save(tmp_path / "es.npz")
        loaded = SpectralES.load(tmp_path / "es.npz")
        copied = SpectralES.from_state_dict(es.state_dict())
    # The loaded strategies keep the box: they sample what the original samples.
    expected = es.ask()
    assert np.array_equal(loaded.ask(), expected)
    assert np.array_equal(copied.ask(), expected)
    assert np.all((expected >= 0.0) & (expected <= 0.01))


def test_resume_in_narrow_box_does_not_warn(tmp_path):
    path = tmp_path / "run.npz"
    options = {"stds": [1e-3, 1e-3], "bounds": ([0.0, 0.0], [0.01, 0.01]), "seed": 1, "disp": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minimize(sphere, np.full(2, 0.005), 1.0, max_evals=30, checkpoint=path, **options)
        result = resume(sphere, path, max_evals=60, disp=0)
    # The resumed run went on to its new budget from the loaded strategy.
    assert "max_evals" in result.stop
