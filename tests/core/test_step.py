"""The spectral step against the default update S <- (1 - beta gamma) S + beta H."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from spectral_es.core import (
    cayley_exact,
    eigenvalue_step,
    matrix_power,
    orthogonality_defect,
    rotation_generator,
    spectral_step,
)
from spectral_es.core.step import MAX_GENERATOR_ENTRY, cap_generator_norm, generator_norm, spectral_norm_estimate
from tests.conftest import random_orthogonal, random_symmetric, requires_torch, torch

EPS64 = np.finfo(np.float64).eps


def random_problem(rng, n=10):
    """Distinct eigenvalues spread over a decade, a random basis and curvature."""
    d = np.exp(rng.uniform(-1.2, 1.2, n))
    B = random_orthogonal(rng, n)
    H = random_symmetric(rng, n)
    return d, B, H


def step_error(d, B, H, beta, gamma, generator_scale=1.0):
    """||S_spectral - S_default||_F after one step of size beta."""
    Q = B.T @ H @ B
    if generator_scale == 1.0:
        d_new, B_new = spectral_step(d, B, Q, beta, gamma)
    else:
        d_new = eigenvalue_step(d, np.diag(Q), beta, gamma)
        B_new = B @ cayley_exact(generator_scale * rotation_generator(d, Q, beta, gamma))
    default = (1 - beta * gamma) * matrix_power(d, B) + beta * H
    return np.linalg.norm(matrix_power(d_new, B_new) - default)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_step_matches_default_to_second_order(rng, gamma):
    d, B, H = random_problem(rng)
    ratio = step_error(d, B, H, 1e-3, gamma) / step_error(d, B, H, 1e-4, gamma)
    # Shrinking beta tenfold shrinks an O(beta^2) error a hundredfold and an
    # O(beta) error tenfold. 50 lies between the two with room for the
    # O(beta^3) terms, which are below 1% of the O(beta^2) ones at beta = 1e-3.
    assert ratio > 50


def test_generator_without_half_is_first_order(rng):
    # The same check with the Cayley argument doubled (the factor 1/2
    # dropped, as in the box of Fig. 1 of Lin et al. 2025) must fail it:
    # this is what makes the test above pin the 1/2.
    d, B, H = random_problem(rng)
    ratio = step_error(d, B, H, 1e-3, 0.0, 2.0) / step_error(d, B, H, 1e-4, 0.0, 2.0)
    assert ratio < 15


def test_eigenvalues_stay_positive_under_indefinite_curvature(rng):
    d, B, _ = random_problem(rng)
    Q = -50 * np.diag(d) + random_symmetric(rng, d.size)
    d_new, B_new = spectral_step(d, B, Q, 0.5, 0.0)
    assert np.all(d_new > 0)
    assert orthogonality_defect(B_new) < 100 * d.size * EPS64


def test_generator_is_skew_and_bounded(rng):
    d, _, H = random_problem(rng, n=15)
    d[3] = d[7] * (1 + 1e-14)  # near-equal pair: first-order U_ij would be ~1e14
    N = rotation_generator(d, 1e3 * H, 0.5, 1.0)
    np.testing.assert_array_equal(N, -N.T)
    assert np.all(np.isfinite(N))
    assert np.max(np.abs(N)) <= MAX_GENERATOR_ENTRY * (1 + 4 * EPS64)


def test_float16_generator_keeps_entry_bound(rng):
    # Equal eigenvalues (a zero gap) and small couplings: in float16 the
    # squares of couplings near 1e-3 are subnormal, and their rounding had
    # pushed entries to 0.468. Computed in float32, each entry is rounded
    # once to float16, a relative error of at most 2^-11.
    n = 200
    Q = rng.standard_normal((n, n)).astype(np.float16)
    Q = Q + Q.T
    np.fill_diagonal(Q, 0)
    N = rotation_generator(np.ones(n, np.float16), Q, 0.1)
    assert N.dtype == np.float16
    assert np.max(np.abs(N)) <= MAX_GENERATOR_ENTRY * (1 + 2.0**-11)


def test_generator_first_order_formula(rng):
    d, _, H = random_problem(rng)
    beta = 1e-7
    N = rotation_generator(d, H, beta)
    gap = d[None, :] - d[:, None] + np.eye(d.size)  # eye avoids 0/0 on the diagonal
    expected = np.tril(beta / 2 * H / gap, -1)
    expected = expected - expected.T
    # The generator differs from the first-order value by the curvature's
    # own share of the gap, beta (q_j - q_i) / (d_j - d_i), and by the
    # O(x^2) terms of atan and tan, x = beta H_ij / gap ~ 1e-5 at most here.
    q = np.diag(H)
    relative_shift = beta * np.abs(q[None, :] - q[:, None]) / np.abs(gap)
    tolerance = np.abs(expected) * (2 * relative_shift + 1e-9) + 1e-22
    assert np.all(np.abs(N - expected) <= tolerance)


def pair_angle_generator(d, Q, beta, gamma):
    """The generator entry by entry from its definition, tan(atan(2 beta Q_ij / gap_ij) / 4)."""
    a = (1 - beta * gamma) * d + beta * np.diag(Q)
    gap = a[None, :] - a[:, None] + np.eye(d.size)  # eye avoids 0/0 on the diagonal
    lower = np.tril(np.tan(np.arctan(2 * beta * Q / gap) / 4), -1)
    return lower - lower.T


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=requires_torch)])
def test_generator_matches_pair_angles(rng, backend):
    # n = 200 splits the lower triangle into three row blocks, so this also
    # covers the blocks' diagonal parts and torch's transposed copy. The
    # half-angle formulas and numpy's arctan and tan each round to a few
    # eps relative to the entry, and the entries are at most 0.414.
    n, beta, gamma = 200, 0.3, 1.0
    d = np.exp(rng.uniform(-1.2, 1.2, n))
    Q = random_symmetric(rng, n)
    expected = pair_angle_generator(d, Q, beta, gamma)
    if backend == "torch":
        N = rotation_generator(torch.from_numpy(d), torch.from_numpy(Q), beta, gamma).numpy()
    else:
        N = rotation_generator(d, Q, beta, gamma)
    np.testing.assert_array_equal(N, -N.T)
    np.testing.assert_allclose(N, expected, rtol=1e-13, atol=1e-15)


def test_repeated_eigenvalues_use_moore_penrose_zero():
    # Equal d and zero coupling: the pair's rotation is undetermined and the
    # Moore-Penrose choice is no rotation.
    d = np.ones(4)
    Q = np.diag([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(rotation_generator(d, Q, 0.1), np.zeros((4, 4)))


def test_equal_eigenvalues_rotate_by_exact_pair_angle():
    # d equal, curvature [[a, c], [c, b]]: the updated matrix d I + beta Q has
    # eigenvectors at angle atan(2c / (a - b)) / 2, and the step must find
    # them instead of dividing by the zero gap.
    d = np.ones(2)
    Q = np.array([[1.0, 0.4], [0.4, 0.2]])
    beta = 0.05
    d_new, B_new = spectral_step(d, np.eye(2), Q, beta)
    target = np.eye(2) + beta * Q
    off_diagonal = (B_new.T @ target @ B_new)[0, 1]
    assert abs(off_diagonal) < 1e-14
    assert np.all(np.isfinite(d_new))


def test_pair_rotation_uses_forgetting_rate():
    # Distinct d, gamma = 1: the updated matrix (1 - beta gamma) diag(d) +
    # beta Q has eigenvectors at the Jacobi angle of its own gap, and the
    # exact Cayley map of the 2 x 2 generator tan(theta / 2) rotates by
    # exactly theta. A gap without the factor 1 - beta gamma turns the pair
    # by 0.065 rad too little here, which leaves an off-diagonal entry of
    # about 0.06. Rounding of a 2 x 2 solve and products of entries below 2
    # stays within a few eps.
    d = np.array([1.0, 1.5])
    Q = np.array([[0.3, 0.8], [0.8, 1.2]])
    beta, gamma = 0.4, 1.0
    _, B_new = spectral_step(d, np.eye(2), Q, beta, gamma)
    target = (1 - beta * gamma) * np.diag(d) + beta * Q
    off_diagonal = (B_new.T @ target @ B_new)[0, 1]
    assert abs(off_diagonal) < 1e-14


def test_near_equal_eigenvalues_stay_sensible(rng):
    # A gap of 1e-12 makes the first-order generator ~1e11 for beta = 1e-3.
    n = 6
    d = np.array([1.0, 1.0 + 1e-12, 2.0, 3.0, 3.0 + 1e-12, 5.0])
    B = random_orthogonal(rng, n)
    H = random_symmetric(rng, n)
    separated = np.ix_([2, 5], [2, 5])
    for beta in (1e-2, 1e-3):
        d_new, B_new = spectral_step(d, B, B.T @ H @ B, beta)
        error = B.T @ (matrix_power(d_new, B_new) - (matrix_power(d, B) + beta * H)) @ B
        relative = np.linalg.norm(error) / np.linalg.norm(beta * H)
        # No single rotation represents a finite turn inside a degenerate
        # pair together with the small turns elsewhere, so the step keeps an
        # O(beta) error (about 0.3-0.45 of the update here, against 1 for
        # not moving at all; zeroing the pair, the Moore-Penrose choice,
        # does slightly worse) ...
        assert np.all(np.isfinite(error))
        assert relative < 0.6
        # ... but the error stays out of the well-separated eigenvalues,
        # whose block is still exact to O(beta^2).
        assert np.linalg.norm(error[separated]) / np.linalg.norm(beta * H) < beta


def test_truncated_step_caps_generator_norm(rng):
    d, B, H = random_problem(rng, n=20)
    Q = B.T @ (100 * H) @ B
    _, B_new = spectral_step(d, B, Q, 1.0, 0.0, method="truncated")
    # The default cap ||N||_F <= 0.25 bounds the defect of the map by
    # 2^-2.5 * 0.25^8 = 2.7e-6 (see cayley_truncated); B adds rounding of a
    # few n * eps = 1e-14.
    assert orthogonality_defect(B_new) < 2**-2.5 * 0.25**8 + 1e-12
    _, B_capped = spectral_step(d, B, Q, 1.0, 0.0, max_generator_norm=1e-3)
    rotation = B.T @ B_capped
    # A generator of norm 1e-3 rotates by about 2e-3 in Frobenius norm.
    assert np.linalg.norm(rotation - np.eye(20)) < 2.1e-3


def test_truncated_step_without_coupling_keeps_basis(rng):
    # A diagonal Q couples no pair, so the generator is zero and the
    # default cap of the truncated map divides by its zero norm. The floor
    # on that norm keeps the step free of a divide-by-zero warning and the
    # basis exactly as it was (B + B 0).
    d, B, _ = random_problem(rng, n=6)
    Q = np.diag(rng.uniform(0.5, 2.0, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d_new, B_new = spectral_step(d, B, Q, 0.1, method="truncated")
        capped = cap_generator_norm(np.zeros((6, 6)), 0.25)
    np.testing.assert_array_equal(B_new, B)
    np.testing.assert_array_equal(capped, np.zeros((6, 6)))
    np.testing.assert_allclose(d_new, eigenvalue_step(d, np.diag(Q), 0.1), rtol=0, atol=0)


def test_spectral_norm_of_general_matrix(rng):
    # spectral_norm_estimate takes any square N, not only a generator. Here
    # N = U diag(s) V^T with unrelated U and V, top singular value 1 and the
    # rest at most 0.5, so 10 power steps on N^T N leave a relative error of
    # about (0.5^2)^10 = 1e-6. Power steps on N N instead, which give the
    # same value for a skew or symmetric N, miss it by far here.
    n = 16
    singular_values = np.concatenate([[1.0], rng.uniform(0.0, 0.5, n - 1)])
    N = random_orthogonal(rng, n) @ np.diag(singular_values) @ random_orthogonal(rng, n).T
    estimate = float(spectral_norm_estimate(N))
    assert estimate <= 1.0 + 1e-12
    assert estimate == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("n", [2, 16, 128])
def test_spectral_norm_close_lower_bound(rng, n):
    # Power iteration's value ||N v|| with ||v|| = 1 never exceeds ||N||_2.
    # A generator with a spectral gap: singular values 1 (the top pair of a
    # skew matrix) and at most 0.5 for the rest, so 10 iterations on N^T N
    # leave a relative error of about (0.5^2)^10 = 1e-6 in the norm.
    U = random_orthogonal(rng, n)
    angles = np.concatenate([[1.0], rng.uniform(0.0, 0.5, n // 2 - 1)])
    blocks = np.zeros((n, n))
    for k, angle in enumerate(angles):
        blocks[2 * k, 2 * k + 1], blocks[2 * k + 1, 2 * k] = angle, -angle
    N = 0.3 * U @ blocks @ U.T
    estimate = float(spectral_norm_estimate(N))
    assert estimate <= np.linalg.norm(N, 2) * (1 + 1e-12)
    assert estimate == pytest.approx(0.3, rel=1e-5)
    # Without a gap (a random skew matrix) it stays a lower bound. At n = 128
    # it is within a few percent.
    A = rng.standard_normal((n, n))
    N = A - A.T
    assert 0.9 * np.linalg.norm(N, 2) <= float(spectral_norm_estimate(N)) <= np.linalg.norm(N, 2) * (1 + 1e-12)


@requires_torch
def test_spectral_norm_numpy_torch_parity(rng):
    A = rng.standard_normal((40, 40))
    N = A - A.T
    estimate = spectral_norm_estimate(torch.from_numpy(N))
    assert estimate.dtype == torch.float64
    # The same start and iteration in float64: equal up to rounding.
    assert float(estimate) == pytest.approx(float(spectral_norm_estimate(N)), rel=1e-12)


def test_spectral_norm_of_zero():
    assert float(spectral_norm_estimate(np.zeros((4, 4)))) == 0.0


def test_float16_norms_of_small_generator(rng):
    # ||N^T N v||^2 is about 3e-9 here, below float16's smallest subnormal
    # (6e-8), where the float16 iteration divided 0 by 0.
    A = rng.standard_normal((10, 10)) * 1e-3
    N = (A - A.T).astype(np.float16)
    exact = np.linalg.norm(N.astype(np.float64), 2)
    estimate = spectral_norm_estimate(N)
    assert estimate.dtype == np.float16
    # float16 rounds the result by up to 2^-11 relative; 1% also covers the
    # convergence of 10 power steps on a random skew matrix of this size.
    assert float(estimate) == pytest.approx(exact, rel=1e-2)
    assert float(spectral_norm_estimate(np.zeros((4, 4), np.float16))) == 0.0
    np.testing.assert_array_equal(cap_generator_norm(N, 0.5, "spectral"), N)


def test_float16_cap_of_saturated_generator(rng):
    # At d = 1 with a zero curvature diagonal every gap is 0, so every entry
    # saturates and sum(N * N) is about 0.17 n^2, beyond float16's 65504 at
    # n = 640. Summed in float16 the norm was inf and the cap zeroed N.
    n = 640
    Q = random_symmetric(rng, n).astype(np.float16)
    np.fill_diagonal(Q, 0.0)
    N = rotation_generator(np.ones(n, np.float16), Q, 0.1)
    exact = np.linalg.norm(N.astype(np.float64))
    assert exact > np.finfo(np.float16).max ** 0.5
    # Rounding the norm to float16 costs up to 2^-11 relative; 1e-3 covers it.
    assert float(generator_norm(N)) == pytest.approx(exact, rel=1e-3)
    np.testing.assert_array_equal(cap_generator_norm(N, 1000.0), N)
    capped = cap_generator_norm(N, exact / 2)
    # float16 rounds each product by up to 2^-11 relative, and entries below
    # its normal range (6.1e-5) to a multiple of 6e-8.
    subnormal = float(np.finfo(np.float16).smallest_subnormal)
    np.testing.assert_allclose(capped.astype(np.float64), N.astype(np.float64) / 2, rtol=1e-3, atol=subnormal)


def test_generator_norms(rng):
    A = rng.standard_normal((12, 12))
    N = A - A.T
    assert float(generator_norm(N)) == pytest.approx(np.linalg.norm(N), rel=1e-14)
    # For any matrix ||N||_2 <= ||N||_F <= sqrt(rank) ||N||_2.
    spectral = float(generator_norm(N, "spectral"))
    assert spectral <= float(generator_norm(N)) <= math.sqrt(12) * np.linalg.norm(N, 2)
    capped = cap_generator_norm(N, 0.5, "spectral")
    # Scaled, not rotated: the same direction with estimated norm 0.5.
    np.testing.assert_allclose(capped, N * 0.5 / spectral, rtol=1e-14)
    np.testing.assert_array_equal(cap_generator_norm(1e-3 * N, 100.0, "spectral"), 1e-3 * N)
    with pytest.raises(ValueError, match="generator_norm: invalid norm 'max'"):
        generator_norm(N, "max")
    with pytest.raises(ValueError, match="cap_generator_norm: invalid norm 'max'"):
        cap_generator_norm(N, 0.5, "max")


def test_diagonal_step_is_rmsprop_to_first_order():
    # With B = I the eigenvalue step is d <- d exp(beta (g^2 - gamma d) / d),
    # whose first-order expansion is RMSprop's (1 - beta) d + beta g^2.
    d = np.array([0.5, 1.0, 2.0])
    g = np.array([1.0, -0.3, 0.7])
    beta = 1e-4
    new = eigenvalue_step(d, g**2, beta, 1.0)
    rmsprop = (1 - beta) * d + beta * g**2
    np.testing.assert_allclose(new, rmsprop, rtol=0, atol=10 * beta**2 * np.max(g**4 / d))
    assert math.isfinite(new.sum())


def nan_problem(rng, n=5):
    """A random problem whose curvature has a NaN coupling between eigenvectors 0 and 2."""
    d, B, H = random_problem(rng, n)
    Q = B.T @ H @ B
    Q[2, 0] = Q[0, 2] = np.nan
    return d, B, Q


def test_generator_keeps_nan_coupling(rng):
    d, _, Q = nan_problem(rng)
    N = rotation_generator(d, Q, 0.1)
    assert np.isnan(N[2, 0])
    assert np.isnan(N[0, 2])
    # The other pairs are untouched by the NaN.
    finite = np.ones_like(N, dtype=bool)
    finite[2, 0] = finite[0, 2] = False
    assert np.all(np.isfinite(N[finite]))


@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_step_propagates_nan_curvature(rng, method):
    d, B, Q = nan_problem(rng)
    _, B_new = spectral_step(d, B, Q, 0.1, method=method)
    assert np.any(np.isnan(B_new))


def test_all_nan_coupling_does_not_return_input_basis(rng):
    d, B, H = random_problem(rng, 4)
    Q = np.full((4, 4), np.nan)
    np.fill_diagonal(Q, np.diag(B.T @ H @ B))
    d_new, B_new = spectral_step(d, B, Q, 0.1)
    assert np.all(np.isfinite(d_new))
    assert np.all(np.isnan(B_new))


def test_nan_eigenvalue_propagates_into_generator(rng):
    d, B, H = random_problem(rng, 4)
    d[1] = np.nan
    N = rotation_generator(d, B.T @ H @ B, 0.1)
    # Every pair with eigenvalue 1 has a NaN gap, and nothing else does.
    assert np.all(np.isnan(N[1, [0, 2, 3]]))
    assert np.all(np.isfinite(N[np.ix_([0, 2, 3], [0, 2, 3])]))


@requires_torch
@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_torch_step_propagates_nan_curvature(rng, method):
    d, B, Q = (torch.from_numpy(a) for a in nan_problem(rng))
    N = rotation_generator(d, Q, 0.1)
    assert torch.isnan(N[2, 0])
    _, B_new = spectral_step(d, B, Q, 0.1, method=method)
    assert torch.isnan(B_new).any()


def test_max_log_step_bounds_eigenvalue_change():
    # A curvature spike of 200 d_0 at beta = 1 grows d_0 by exp(200)
    # without a cap. The cap clips q_i to d_i (gamma + max_log_step / beta),
    # so the log-change beta (q_i / d_i - gamma) is at most max_log_step:
    # 2 for the first two eigenvalues, and 1/3 stays as it is.
    d = np.array([1.0, 2.0, 3.0])
    Q = np.diag([200.0, 10.0, 1.0])
    uncapped, _ = spectral_step(d, np.eye(3), Q, 1.0)
    capped, _ = spectral_step(d, np.eye(3), Q, 1.0, max_log_step=2.0)
    assert np.log(uncapped[0] / d[0]) == pytest.approx(200.0)
    np.testing.assert_allclose(np.log(capped / d), [2.0, 2.0, 1 / 3], rtol=1e-14)
    # The rotation does not depend on the cap, as in kron_factor_step.
    d_full, B_full = spectral_step(d, np.eye(3), Q + 0.1, 1.0)
    d_cut, B_cut = spectral_step(d, np.eye(3), Q + 0.1, 1.0, max_log_step=2.0)
    np.testing.assert_array_equal(B_full, B_cut)
    assert d_cut[0] < d_full[0]


def test_max_log_step_with_forgetting():
    # With beta = 0.5 and gamma = 1 the log-change is beta (q_i / d_i -
    # gamma): 0.5 (40 - 1) = 19.5 and 0.5 (2 - 1) = 0.5 are cut to the cap
    # 0.2, and 0.5 (1.2 - 1) = 0.1 stays. A clip that dropped gamma would
    # give 0.2 - beta gamma = -0.3, and one that dropped 1 / beta gives
    # beta * 0.2 = 0.1. Each log of exp rounds to a few eps of d.
    d = np.array([0.5, 1.0, 2.0])
    Q = np.diag([20.0, 2.0, 2.4])
    capped, _ = spectral_step(d, np.eye(3), Q, 0.5, 1.0, max_log_step=0.2)
    np.testing.assert_allclose(np.log(capped / d), [0.2, 0.2, 0.1], rtol=1e-13)
