"""The reference xNES follows Glasmachers et al. (2010), Algorithm 1, step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.es import xnes_reference as xnes
from spectral_es.functions import sphere


def test_default_popsize_and_learning_rate():
    # 4 + floor(3 ln n): 3 ln 2 = 2.08, 3 ln 10 = 6.91, 3 ln 100 = 13.8.
    assert xnes.default_popsize(2) == 6
    assert xnes.default_popsize(10) == 10
    assert xnes.default_popsize(100) == 17
    # 3 (3 + ln 10) / (5 * 10 * sqrt(10)) = 15.907755 / 158.113883.
    assert xnes.learning_rate(10) == pytest.approx(0.10060948, rel=1e-7)


def test_utilities_for_six_samples():
    # ln(6/2 + 1) - ln k for k = 1..3 is ln 4, ln 2, ln(4/3); ranks 4..6 get 0.
    # Their sum is ln(32/3) = 2.367124, and 1/6 is subtracted from each share.
    expected = [
        math.log(4) / math.log(32 / 3) - 1 / 6,
        math.log(2) / math.log(32 / 3) - 1 / 6,
        math.log(4 / 3) / math.log(32 / 3) - 1 / 6,
        -1 / 6,
        -1 / 6,
        -1 / 6,
    ]
    np.testing.assert_allclose(xnes.utilities(6), expected, rtol=1e-14)
    assert xnes.utilities(6).sum() == pytest.approx(0.0, abs=1e-15)


def test_expm_symmetric_matches_closed_form_2x2():
    # A trace-free symmetric 2 x 2 matrix M = [[a, b], [b, -a]] has M^2 = r^2 I
    # with r = sqrt(a^2 + b^2), so exp(M) = cosh(r) I + sinh(r) / r M.
    a, b = 0.3, -0.7
    r = math.hypot(a, b)
    M = np.array([[a, b], [b, -a]])
    expected = math.cosh(r) * np.eye(2) + math.sinh(r) / r * M
    np.testing.assert_allclose(xnes.expm_symmetric(M), expected, rtol=1e-13)


def test_one_step_matches_hand_computation():
    es = xnes.XNES(np.array([1.0, -2.0]), 0.5, seed=0)
    theta = 0.4
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    es.B = R  # a rotated shape, so that B expm(.) and expm(.) B differ
    es.ask()
    # Six samples whose ranks follow their order (f = 0, 1, ..., 5).
    es._s = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    es.tell(np.arange(6.0))

    u1, u2, u3, u4 = xnes.utilities(6)[:4]  # u4 = u5 = u6 = -1/6
    eta = xnes.learning_rate(2)
    # G_delta = sum u_k s_k; the last three samples add u4 * (-1, -1).
    G_delta = np.array([u1 + u3 - u4, u2 + u3 - u4])
    # G_M = sum u_k s_k s_k^T (the -I terms cancel since sum u_k = 0):
    # [[u1 + u3 + u4, u3], [u3, u2 + u3 + u4]]; trace / 2 and trace-free part:
    G_sigma = (u1 + u2 + 2 * u3 + 2 * u4) / 2
    a, b = eta / 2 * (u1 - u2) / 2, eta / 2 * u3
    r = math.hypot(a, b)
    expm_G_B = math.cosh(r) * np.eye(2) + math.sinh(r) / r * np.array([[a, b], [b, -a]])

    np.testing.assert_allclose(es.mean, [1.0, -2.0] + 0.5 * R @ G_delta, rtol=1e-14)
    assert es.sigma == pytest.approx(0.5 * math.exp(eta / 2 * G_sigma), rel=1e-14)
    np.testing.assert_allclose(es.B, R @ expm_G_B, rtol=1e-13)
    assert (es.nfev, es.nit) == (6, 1)


def test_shape_keeps_unit_determinant():
    # G_B is trace-free, so det(expm(G_B)) = exp(tr G_B) = 1 in every step;
    # 200 products of matrices near I lose at most ~1e-13 to rounding.
    es = xnes.XNES(np.full(5, 2.0), 1.0, seed=3)
    for _ in range(200):
        X = es.ask()
        es.tell(sphere(X))
    assert np.linalg.det(es.B) == pytest.approx(1.0, abs=1e-10)


def test_sphere_evaluations_match_reference_median():
    # xNES needs a median of about 6024 evaluations to reach 1e-8 on the
    # 10-D sphere from U[-3, 3]^10 with sigma0 = 1 (10 seeds); the runs differ
    # by about 4 % between seeds, so a 5-seed median lies well within 10 %.
    evals = []
    for seed in range(1, 6):
        x0 = np.random.default_rng(seed).uniform(-3, 3, 10)
        result = xnes.minimize(sphere, x0, 1.0, seed=seed, f_target=1e-8, max_evals=100_000)
        assert result["stop"] == "f_target"
        evals.append(result["nfev"])
    assert abs(np.median(evals) / 6024 - 1) < 0.10
