"""Cayley maps, skew parts and Björck re-orthogonalisation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import linalg as scipy_linalg

from spectral_es.core import (
    bjorck_orthogonalize,
    cayley,
    cayley_exact,
    cayley_truncated,
    orthogonality_defect,
    rotate,
    skew,
)
from spectral_es.core.cayley import _narrow_residual
from tests.conftest import random_orthogonal, requires_torch, torch

EPS64 = np.finfo(np.float64).eps


def random_skew(rng, n, norm):
    """Skew-symmetric matrix with the given Frobenius norm."""
    N = skew(rng.standard_normal((n, n)))
    return N * (norm / np.linalg.norm(N))


@pytest.mark.parametrize("norm", [1e-3, 0.3, 3.0, 100.0])
def test_exact_cayley_orthogonal(rng, norm):
    n = 20
    R = cayley_exact(random_skew(rng, n, norm))
    # One LU solve with I - N, whose singular values lie in [1, 1 + ||N||_2],
    # so the defect is a modest multiple of n * eps * cond(I - N).
    bound = 10 * n * EPS64 * (1 + norm)
    assert orthogonality_defect(R) < bound
    # det(R)^2 = det(R^T R) = det(I + E) = 1 + tr(E) + O(|E|^2), so |det R - 1|
    # is about |tr(E)| / 2 <= sqrt(n) / 2 * ||E||_F, which is under 2.3 times the
    # bound at n = 20, plus a few n eps from the LU behind det.
    assert np.linalg.det(R) == pytest.approx(1.0, abs=3 * bound)


def test_exact_cayley_rotation_angle():
    # For a 2 x 2 generator [[0, -v], [v, 0]] the Cayley map rotates by 2 atan(v).
    v = 0.37
    R = cayley_exact(np.array([[0.0, -v], [v, 0.0]]))
    angle = 2 * np.arctan(v)
    expected = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(R, expected, atol=10 * EPS64)


def test_cayley_of_zero_is_identity():
    np.testing.assert_array_equal(cayley(np.zeros((4, 4)), method="truncated"), np.eye(4))
    np.testing.assert_allclose(cayley(np.zeros((4, 4))), np.eye(4))


@pytest.mark.parametrize("norm", [0.05, 0.1, 0.3, 0.5])
def test_truncated_cayley_defect_bound(rng, norm):
    n = 30
    N = random_skew(rng, n, norm)
    R = cayley_truncated(N)
    # (I+N)^2 (I+N^2)(I+N^4) = Cayley(N) (I - N^8), and N^8 is symmetric, so
    # R^T R - I = -2 N^8 + N^16 exactly. Its eigenvalues are
    # -(2 sigma^8 - sigma^16) for the singular-value pairs sigma_k of N, and
    # sum sigma_k^16 <= (sum sigma_k^2)^8 = (||N||_F^2 / 2)^8, so the defect
    # is at most 2 sqrt(2) (||N||_F^2 / 2)^4 = 2^-2.5 ||N||_F^8, plus rounding.
    bound = truncation_defect_bound(norm, 8) + 100 * n * EPS64
    assert orthogonality_defect(R) <= bound
    N8 = np.linalg.matrix_power(N, 8)
    np.testing.assert_allclose(R, cayley_exact(N) @ (np.eye(n) - N8), atol=100 * n * EPS64)


def truncation_defect_bound(norm, order, squarings=0):
    """Bound on the Frobenius defect of the truncated map at ``‖N‖_F = norm`` (see cayley_truncated)."""
    return 2 ** (squarings + 1.5 - order / 2) * (norm / 2**squarings) ** order


@pytest.mark.parametrize("order", [4, 8])
@pytest.mark.parametrize("norm", [0.1, 0.25])
def test_truncated_defect_bound_is_reached_at_rank_two(order, norm):
    # A rank-2 N (one rotation plane) puts all of ||N||_F into one pair of
    # singular values sigma = norm / sqrt(2), where the bound is tight up to
    # the N^(2 order) term, a relative 0.5 sigma^order, at most
    # 0.5 (0.25 / sqrt(2))^4 = 4.9e-4 here.
    N = np.zeros((5, 5))
    N[1, 3], N[3, 1] = norm / np.sqrt(2), -norm / np.sqrt(2)
    defect = orthogonality_defect(cayley_truncated(N, order=order))
    assert defect <= truncation_defect_bound(norm, order)
    assert defect == pytest.approx(truncation_defect_bound(norm, order), rel=1e-3)


def test_random_generator_stays_far_below_defect_bound(rng):
    # With ||N||_F spread over 15 singular-value pairs the sum of sigma^16
    # is far below its bound; the docstring quotes a median of 7e-9 at
    # n = 30 against the bound 2.7e-6.
    N = random_skew(rng, 30, 0.25)
    assert orthogonality_defect(cayley_truncated(N)) < 0.1 * truncation_defect_bound(0.25, 8)


@pytest.mark.parametrize("order", [2, 4, 8, 16])
@pytest.mark.parametrize("norm", [0.1, 0.25, 0.5])
def test_truncated_cayley_order_identity(rng, order, norm):
    n = 30
    N = random_skew(rng, n, norm)
    R = cayley_truncated(N, order=order)
    # Cutting the Neumann series before N^order gives
    # (I + N)^2 (I + N^2) ... (I + N^(order/2)) = Cayley(N) (I - N^order)
    # exactly; both sides are a few products and one solve away, so they
    # agree to rounding.
    N_order = np.linalg.matrix_power(N, order)
    np.testing.assert_allclose(R, cayley_exact(N) @ (np.eye(n) - N_order), atol=100 * n * EPS64)
    # N^order is symmetric, so R^T R - I = -2 N^order + N^(2 order): the
    # defect is at most 2^(1.5 - order/2) ||N||_F^order in Frobenius norm.
    assert orthogonality_defect(R) <= truncation_defect_bound(norm, order) + 100 * n * EPS64


def test_order_four_defect_is_leading_term(rng):
    n = 30
    N = random_skew(rng, n, 0.25)
    # At order 4 the defect is -2 N^4 + N^8. With ||N^4||_2 <= ||N||_F^4 =
    # 1/256, ||N^8||_F <= ||N^4||_F / 256, so the measured defect lies within
    # 1% of ||2 N^4||_F: the leading term is the whole error.
    expected = np.linalg.norm(2 * np.linalg.matrix_power(N, 4))
    assert orthogonality_defect(cayley_truncated(N, order=4)) == pytest.approx(expected, rel=0.01)


def test_default_truncation_order_is_eight(rng):
    N = random_skew(rng, 12, 0.3)
    np.testing.assert_array_equal(cayley_truncated(N), cayley_truncated(N, order=8))
    np.testing.assert_array_equal(rotate(np.eye(12), N, method="truncated"), np.eye(12) @ cayley_truncated(N))


@pytest.mark.parametrize("squarings", [1, 3, 6])
def test_squared_truncated_map_defect_bound(rng, squarings):
    n = 30
    N = random_skew(rng, n, 0.25 * 2**squarings)
    R = cayley_truncated(N, squarings=squarings)
    # The map of X = N / 2^s is Cayley(X) (I - X^8), and X^8 commutes with
    # Cayley(X), so R^T R - I = (I - X^8)^(2^(s+1)) - I. Its eigenvalues
    # (1 - sigma^8)^(2^(s+1)) - 1 are at most 2^(s+1) sigma^8 in size, which
    # gives 2^(s + 1.5 - 4) ||X||_F^8 as for one map.
    bound = truncation_defect_bound(0.25 * 2**squarings, 8, squarings)
    assert orthogonality_defect(R) <= bound + 100 * n * EPS64 * 2**squarings


def test_squared_truncated_map_tends_to_exponential(rng):
    n = 12
    N = random_skew(rng, n, 1.0)
    target = scipy_linalg.expm(2 * N)
    errors = [np.linalg.norm(cayley_truncated(N, squarings=s) - target) for s in (4, 5, 6)]
    # Cayley(X) = exp(2X) + (2/3) X^3 + O(X^5), so 2^s maps of X = N / 2^s
    # miss exp(2N) by about 2^s (2/3) ||N / 2^s||^3: a factor 4 per squaring
    # (the truncation error, about 2 ||X||^8, is far smaller here).
    assert 3.5 < errors[0] / errors[1] < 4.5
    assert 3.5 < errors[1] / errors[2] < 4.5


def test_squared_truncated_map_matches_cayley_to_second_order(rng):
    n = 12
    N = random_skew(rng, n, 1.0)
    # Both maps are I + 2N + 2N^2 + O(N^3), so halving N divides their gap by 8.
    gaps = [np.linalg.norm(cayley_truncated(t * N, squarings=3) - cayley_exact(t * N)) for t in (0.02, 0.01)]
    assert gaps[0] / gaps[1] == pytest.approx(8, rel=0.05)


def test_truncated_cayley_rejects_bad_squarings():
    with pytest.raises(ValueError, match="cayley_truncated: invalid squarings -1; use an integer >= 0"):
        cayley_truncated(np.zeros((2, 2)), squarings=-1)


@pytest.mark.parametrize("squarings", [1.0, True, "1"])
def test_truncated_cayley_rejects_squarings_type(squarings):
    with pytest.raises(TypeError, match="cayley_truncated: squarings must be an integer"):
        cayley_truncated(np.zeros((2, 2)), squarings=squarings)


@pytest.mark.parametrize("order", [0, 1, 3, 6])
def test_truncated_cayley_rejects_bad_order(order):
    with pytest.raises(ValueError, match=f"cayley_truncated: invalid order {order}; use a power of two >= 2"):
        cayley_truncated(np.zeros((2, 2)), order=order)


def test_truncation_options_accept_numpy_integers():
    N = np.zeros((2, 2))
    np.testing.assert_array_equal(cayley_truncated(N, order=np.int64(8), squarings=np.int64(1)), np.eye(2))
    with pytest.raises(TypeError, match="rotate: order must be an integer, got float 8.0"):
        rotate(np.eye(2), N, method="truncated", order=8.0)


def test_cayley_rejects_unknown_method():
    with pytest.raises(ValueError, match="'cholesky'"):
        cayley(np.zeros((2, 2)), method="cholesky")


def test_bjorck_step_squares_defect(rng):
    n = 25
    Q = random_orthogonal(rng, n)
    E = rng.standard_normal((n, n))
    B = Q @ (np.eye(n) + 1e-4 * (E + E.T))
    before = orthogonality_defect(B)
    after = orthogonality_defect(bjorck_orthogonalize(B))
    # With B^T B = I + D, one step gives B'^T B' - I = -(3/4) D^2 + D^3 / 4.
    assert after <= 0.75 * before**2 + 0.25 * before**3 + 100 * n * EPS64
    assert after < before / 100


@requires_torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_narrow_bjorck_residual_keeps_its_own_precision(rng, dtype):
    # A 2-byte B takes the off-diagonal of its Gram matrix from a product in
    # its own dtype (accumulated in float32, rounded once) and the diagonal
    # from squared column norms in float32. Every entry of B^T B - I then
    # carries one rounding relative to itself: 2^-8 in bfloat16, 2^-11 in
    # float16, and 2^-6 of the largest entry covers the float32 sums of 64
    # terms. A Gram diagonal rounded near 1 would be off by up to 2^-8
    # absolute, as much as the diagonal entries themselves (1e-3 to 1e-2).
    n = 64
    narrow = getattr(torch, dtype)
    E = rng.standard_normal((n, n)) * 1e-3
    B = torch.from_numpy(random_orthogonal(rng, n) @ (np.eye(n) + E + E.T)).to(narrow)
    wide = B.float()
    expected = wide.T @ wide - torch.eye(n)
    unit = 2.0**-8 if narrow == torch.bfloat16 else 2.0**-11
    residual = _narrow_residual(B)
    assert residual.dtype == narrow
    error = (residual.float() - expected).abs()
    assert (error <= unit * expected.abs() + 2.0**-6 * unit * expected.abs().max()).all()

    step = bjorck_orthogonalize(B)
    assert step.dtype == narrow
    assert orthogonality_defect(step) < 0.5 * orthogonality_defect(B)


@pytest.mark.parametrize(("method", "order"), [("exact", 8), ("truncated", 8), ("truncated", 4)])
def test_rotate_equals_product_with_cayley(rng, method, order):
    n = 15
    B = random_orthogonal(rng, n)
    N = random_skew(rng, n, 0.2)
    # rotate() solves with I + N instead of forming Cayley(N); both are one
    # LU solve away from the same matrix, so they agree to rounding.
    expected = B @ cayley(N, method=method, order=order)
    np.testing.assert_allclose(rotate(B, N, method=method, order=order), expected, atol=100 * n * EPS64)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=requires_torch)])
@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_rotate_leaves_inputs_unchanged(rng, backend, method):
    # The exact map adds 1 to the diagonal of a copy of N, never of N itself.
    B, N = random_orthogonal(rng, 6), random_skew(rng, 6, 0.2)
    if backend == "torch":
        B, N = torch.from_numpy(B), torch.from_numpy(N)
    B_before, N_before = copy.deepcopy(B), copy.deepcopy(N)
    rotate(B, N, method=method)
    assert (B == B_before).all()
    assert (N == N_before).all()


@pytest.mark.parametrize("squarings", [1, 3])
def test_truncated_rotate_with_squarings_equals_product(rng, squarings):
    n = 15
    B = random_orthogonal(rng, n)
    N = random_skew(rng, n, 0.8)
    # rotate() squares the increment R - I as 2P + P^2 instead of squaring
    # R; in exact arithmetic both give R(N / 2^s)^(2^s).
    eye, M = np.eye(n), N / 2**squarings
    R = (eye + M) @ (eye + M) @ (eye + M @ M) @ (eye + np.linalg.matrix_power(M, 4))
    expected = B @ np.linalg.matrix_power(R, 2**squarings)
    actual = rotate(B, N, method="truncated", squarings=squarings)
    np.testing.assert_allclose(actual, expected, atol=100 * n * EPS64)


def test_orthogonality_defect_of_tall_matrix(rng):
    # For B of shape (m, n) the defect is ||B^T B - I_n||_F, so orthonormal
    # columns give 0 up to the rounding of the product, a few eps, and 2 B
    # gives ||3 I_4||_F = 6.
    B = random_orthogonal(rng, 7)[:, :4]
    assert orthogonality_defect(B) < 1e-14
    assert orthogonality_defect(2 * B) == pytest.approx(3 * np.sqrt(4), rel=1e-13)
