"""The Kronecker spectral step against the full-matrix update it approximates."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import spectral_es.core.kron as kron_module
from spectral_es.core import (
    cayley_exact,
    cayley_truncated,
    matrix_power,
    orthogonality_defect,
    rotation_generator,
    squarings_needed,
)
from spectral_es.core.kron import (
    kron_curvature,
    kron_factor_step,
    kron_precondition,
    kron_rotate,
    kron_step,
)
from spectral_es.core.step import spectral_norm_estimate
from tests.conftest import random_orthogonal, requires_torch, torch

EPS64 = np.finfo(np.float64).eps


def random_factors(rng, n, m):
    """Distinct eigenvalues with prod(d) = 1 per factor, random bases, a scale."""
    d_C = np.exp(rng.uniform(-1, 1, n))
    d_K = np.exp(rng.uniform(-1, 1, m))
    d_C /= np.exp(np.mean(np.log(d_C)))
    d_K /= np.exp(np.mean(np.log(d_K)))
    return d_C, random_orthogonal(rng, n), d_K, random_orthogonal(rng, m), 0.7


def dense(d_C, B_C, d_K, B_K, alpha):
    """S = alpha (S_C kron S_K), acting on the rows of G concatenated."""
    return alpha * np.kron(matrix_power(d_C, B_C), matrix_power(d_K, B_K))


def projected_default(factors, G, beta, gamma):
    """S + beta P_S(g g^T - gamma S): the default update projected on Kronecker matrices.

    P_S is the orthogonal projection in the Fisher metric <U, V> = tr(S^-1 U S^-1 V) / 2
    onto the tangent space {a S + alpha (X_C kron S_K + S_C kron X_K)}. In whitened
    coordinates (V -> S^-1/2 V S^-1/2) that space is span{A kron I, I kron B}, whose
    projection is the sum of the two partial-trace projections minus their overlap,
    the multiples of the identity.
    """
    d_C, B_C, d_K, B_K, alpha = factors
    n, m = G.shape
    S = dense(*factors)
    S_sqrt = np.sqrt(alpha) * np.kron(matrix_power(d_C, B_C, 0.5), matrix_power(d_K, B_K, 0.5))
    S_inv_sqrt = np.linalg.inv(S_sqrt)
    g = G.reshape(-1)
    V = S_inv_sqrt @ (np.outer(g, g) - gamma * S) @ S_inv_sqrt
    V4 = V.reshape(n, m, n, m)
    rows = np.einsum("iaja->ij", V4) / m
    cols = np.einsum("iaib->ab", V4) / n
    P = np.kron(rows, np.eye(m)) + np.kron(np.eye(n), cols) - np.trace(V) / (n * m) * np.eye(n * m)
    return S + beta * S_sqrt @ P @ S_sqrt


def kron_error(factors, G, beta, gamma):
    """||S_kron - S_projected||_F after one step of size beta."""
    return np.linalg.norm(dense(*kron_step(*factors, G, beta, gamma)) - projected_default(factors, G, beta, gamma))


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_kron_step_matches_projected_default(rng, gamma):
    factors = random_factors(rng, 4, 5)
    G = rng.standard_normal((4, 5))
    ratio = kron_error(factors, G, 1e-3, gamma) / kron_error(factors, G, 1e-4, gamma)
    # Shrinking beta tenfold shrinks an O(beta^2) error a hundredfold and an
    # O(beta) error tenfold; 50 separates the two with room for O(beta^3)
    # terms. Rounding (~1e-15 * ||S||) is far below the 1e-8 errors at 1e-4.
    assert ratio > 50


def test_kron_step_without_half_is_first_order(rng, monkeypatch):
    # Doubling the generator drops the 1/2 of the Cayley argument, as in the
    # box of Fig. 1 of Lin et al. (2025): the rotation of each factor is then
    # twice too fast and the check above must fail. This is what pins the 1/2.
    original = kron_module._rotation_generator
    monkeypatch.setattr(kron_module, "_rotation_generator", lambda *args: 2 * original(*args))
    factors = random_factors(rng, 4, 5)
    G = rng.standard_normal((4, 5))
    ratio = kron_error(factors, G, 1e-3, 1.0) / kron_error(factors, G, 1e-4, 1.0)
    assert ratio < 15


def test_factor_rates_agree(rng):
    # mean(m_C) = mean(m_K) = -gamma + g^T S^-1 g / (alpha n m) analytically,
    # so the two factors ask for the same change of alpha.
    d_C, B_C, d_K, B_K, alpha = factors = random_factors(rng, 6, 3)
    G = rng.standard_normal((6, 3))
    Y = kron_rotate(B_C, G, B_K)
    W_C = kron_curvature(Y, d_K)
    W_K = kron_curvature(Y.T, d_C)
    _, _, rate_C = kron_factor_step(d_C, B_C, W_C, alpha, 3, 0.1)
    _, _, rate_K = kron_factor_step(d_K, B_K, W_K, alpha, 6, 0.1)
    g = G.reshape(-1)
    quadratic = g @ np.linalg.solve(dense(*factors), g) / (6 * 3)
    # Each rate is beta * mean(m) up to rounding of n logarithms.
    np.testing.assert_allclose(rate_C, 0.1 * (quadratic - 1), rtol=1e-12)
    np.testing.assert_allclose(rate_K, rate_C, rtol=1e-12)


@pytest.mark.parametrize(("method", "defect_bound"), [("exact", 1e-12), ("truncated", 1e-3)])
def test_factor_invariants_over_many_steps(rng, method, defect_bound):
    d_C, B_C, d_K, B_K, alpha = np.ones(8), np.eye(8), np.ones(5), np.eye(5), 1.0
    mixing = rng.standard_normal((8, 8))
    for _ in range(200):
        G = mixing @ rng.standard_normal((8, 5))
        d_C, B_C, d_K, B_K, alpha = kron_step(d_C, B_C, d_K, B_K, alpha, G, 0.1, method=method, max_generator_norm=0.25)
        assert alpha > 0
        assert np.all(d_C > 0)
        assert np.all(d_K > 0)
    # prod(d) = 1 is restored every step, so the log-sum is one step's rounding.
    assert abs(np.sum(np.log(d_C))) < 100 * EPS64
    assert abs(np.sum(np.log(d_K))) < 100 * EPS64
    # Exact: 200 products of orthogonal matrices, a few eps each. Truncated:
    # for an eigenvalue pair +-i lam of N the map scales singular values by
    # 1 - lam^8; ||N||_F <= 0.25 allows lam <= 0.177, a defect of at most
    # 2 sqrt(2) lam^8 ~ 3e-6 per step, and 200 steps add up to at most 6e-4.
    assert orthogonality_defect(B_C) < defect_bound
    assert orthogonality_defect(B_K) < defect_bound


def test_isotropic_start_learns_kronecker_covariance(rng):
    # Gradients g ~ N(0, Sigma_C kron Sigma_K) with gamma = 1: the fixed point
    # of the moving average is Sigma itself. From the isotropic start (all
    # eigenvalues equal, so every rotation pair starts degenerate) the factors
    # must learn both eigenbases and the scale. This is the 9 x 11 case of
    # Fig. 2 of Lin et al. (2025).
    n, m, beta = 9, 11, 0.02
    L_C = random_orthogonal(rng, n) * np.exp(rng.uniform(-1, 1, n))
    L_K = random_orthogonal(rng, m) * np.exp(rng.uniform(-1, 1, m))
    sigma = np.kron(L_C @ L_C.T, L_K @ L_K.T)
    factors = (np.ones(n), np.eye(n), np.ones(m), np.eye(m), 1.0)
    default = np.eye(n * m)
    for _ in range(1000):
        G = L_C @ rng.standard_normal((n, m)) @ L_K.T
        factors = kron_step(*factors, G, beta)
        g = G.reshape(-1)
        default = (1 - beta) * default + beta * np.outer(g, g)
    kron_error = np.linalg.norm(dense(*factors) - sigma) / np.linalg.norm(sigma)
    default_error = np.linalg.norm(default - sigma) / np.linalg.norm(sigma)
    # A moving average of weight beta averages about 2 / beta = 100 outer
    # products, so the full 99 x 99 estimate keeps a relative error near
    # sqrt(99 / 100) / sqrt(2) ~ 0.5-0.7 (measured on 3 seeds). The Kronecker
    # estimate has 9^2 + 11^2 free numbers instead of 99^2 and settles near
    # 0.1 after about 500 steps. Both see the same gradients.
    assert kron_error < 0.5 * default_error
    assert kron_error < 0.25


def test_precondition_matches_dense_root(rng):
    factors = random_factors(rng, 4, 3)
    V = rng.standard_normal((4, 3))
    eigenvalues, vectors = np.linalg.eigh(dense(*factors))
    for p in (1.0, 2.0, 4.0):
        for eps in (0.0, 0.3):
            root = vectors @ np.diag(1 / (eigenvalues ** (1 / p) + eps)) @ vectors.T
            expected = (root @ V.reshape(-1)).reshape(4, 3)
            got = kron_precondition(*factors, V, p, eps)
            # A dense eigendecomposition of a 12 x 12 matrix with condition
            # number below 1e2: agreement to ~1e2 * eps64 relative.
            np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


def test_diagonal_factor_matches_full_eigenvalues(rng):
    # A diagonal factor (B = I, never stored) uses only diag(W), and the
    # eigenvalue part of a full step depends on nothing else.
    d_C, _, d_K, B_K, alpha = random_factors(rng, 5, 4)
    G = rng.standard_normal((5, 4))
    Y = kron_rotate(None, G, B_K)
    W_full = kron_curvature(Y, d_K)
    W_diag = kron_curvature(Y, d_K, full=False)
    np.testing.assert_allclose(W_diag, np.diag(W_full), rtol=1e-13)
    d_full, _, rate_full = kron_factor_step(d_C, np.eye(5), W_full, alpha, 4, 0.1)
    d_diag, B_diag, rate_diag = kron_factor_step(d_C, None, W_diag, alpha, 4, 0.1)
    assert B_diag is None
    np.testing.assert_allclose(d_diag, d_full, rtol=1e-13)
    np.testing.assert_allclose(rate_diag, rate_full, rtol=1e-13)


def test_log_step_cap_bounds_gradient_spike(rng):
    d_C, B_C, d_K, B_K, alpha = random_factors(rng, 4, 3)
    G = 1e8 * rng.standard_normal((4, 3))  # curvature ~1e16 times the current S
    new = kron_step(d_C, B_C, d_K, B_K, alpha, G, 0.1, max_log_step=1.0)
    assert all(np.all(np.isfinite(x)) for x in new)
    # Each factor's rate is at most max_log_step, and alpha moves by their mean.
    assert new[4] <= alpha * np.exp(1.0) * (1 + 1e-12)
    # Without the cap the exponent is ~1e15: the step overflows.
    with np.errstate(over="ignore", invalid="ignore"):
        uncapped = kron_step(d_C, B_C, d_K, B_K, alpha, G, 0.1)
    assert not np.isfinite(uncapped[4])


def long_generator_problem(rng, n=8, kappa=5):
    """Return ``(d, W, N)``: close eigenvalues and strong coupling, so the generator N is long."""
    d = np.exp(rng.uniform(-0.1, 0.1, n))
    d /= np.exp(np.mean(np.log(d)))
    W = rng.standard_normal((n, n))
    W = kappa * (W + W.T)
    return d, W, rotation_generator(d, W / kappa, 1.0, 1.0)


@pytest.mark.parametrize(("max_squarings", "squarings"), [(0, 0), (1, 1), (4, 3)])
def test_long_generator_squared_before_capped(rng, max_squarings, squarings):
    n, kappa, alpha, beta = 8, 5, 1.0, 1.0
    d, W, N = long_generator_problem(rng, n, kappa)
    # Close eigenvalues saturate the angles, so N is long: between 1 and 2
    # here, where 3 squarings bring it under the cap of 0.25.
    norm = np.linalg.norm(N)
    assert 1.0 < norm <= 2.0
    _, B, _ = kron_factor_step(
        d, np.eye(n), W, alpha, kappa, beta, method="truncated", max_generator_norm=0.25, max_squarings=max_squarings
    )
    # The smallest s <= max_squarings with ||N|| / 2^s <= 0.25, and the rest capped.
    capped = N * min(1.0, 0.25 * 2**squarings / norm)
    np.testing.assert_allclose(B, cayley_truncated(capped, squarings=squarings), atol=100 * n * EPS64)


@pytest.mark.parametrize("order", [8, 16])
def test_spectral_cap_bounds_the_map_defect(rng, order):
    # Same long generator as above (Frobenius norm 1 to 2). The spectral cap
    # scales it to spectral norm 0.5 (estimated by power iteration), and the
    # order-k map has R^T R - I = -2 N^k + N^(2k), of spectral norm at most
    # 2 * 0.5^k + 0.5^(2k) (8e-3 at k = 8, 3e-5 at k = 16) and Frobenius
    # norm at most sqrt(n) times that.
    n, kappa, alpha, beta = 8, 5, 1.0, 1.0
    d, W, N = long_generator_problem(rng, n, kappa)
    spectral = np.linalg.norm(N, 2)
    assert spectral > 0.5
    _, B, _ = kron_factor_step(
        d,
        np.eye(n),
        W,
        alpha,
        kappa,
        beta,
        method="truncated",
        order=order,
        max_generator_norm=0.5,
        cap_norm="spectral",
    )
    capped = N * 0.5 / float(spectral_norm_estimate(N))
    np.testing.assert_allclose(B, cayley_truncated(capped, order=order), atol=100 * n * EPS64)
    # Power iteration never overestimates, so the capped spectral norm is
    # >= 0.5; at n = 8 ten iterations find it to within 2%.
    assert 0.5 - 1e-12 <= np.linalg.norm(capped, 2) <= 0.51
    defect_limit = 2 * 0.51**order + 0.51 ** (2 * order)
    assert orthogonality_defect(B) <= math.sqrt(n) * defect_limit + 100 * n * EPS64


def test_damping_keeps_unused_direction_bounded(rng):
    # Column 0 of the gradient is always zero: without damping its eigenvalue
    # in S_K decays geometrically towards 0 (by about exp(-beta / 2) per step
    # here, as the others grow to keep prod(d) = 1); with damping it
    # settles where the damped curvature balances the decay, near damping.
    n, m, beta, damping = 4, 3, 0.1, 1e-3
    factors = (np.ones(n), np.eye(n), np.ones(m), np.eye(m), 1.0)
    undamped = factors
    for _ in range(600):
        G = rng.standard_normal((n, m))
        G[:, 0] = 0
        factors = kron_step(*factors, G, beta, damping=damping)
        undamped = kron_step(*undamped, G, beta)
    assert undamped[2][0] < 1e-12
    assert 0.2 * damping < factors[2][0] < 5 * damping


@requires_torch
@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_numpy_torch_float64_parity(rng, method):
    factors = random_factors(rng, 6, 4)
    G = rng.standard_normal((6, 4))
    expected = kron_step(*factors, G, 0.05, method=method, max_generator_norm=0.25)
    torch_factors = [torch.from_numpy(np.asarray(x)) for x in factors]
    got = kron_step(*torch_factors, torch.from_numpy(G), 0.05, method=method, max_generator_norm=0.25)
    # Same operations in float64; only the BLAS and LAPACK kernels differ.
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=1e-13)


@requires_torch
def test_bfloat16_bases_with_float32_eigenvalues(rng):
    d_C, B_C, d_K, B_K, alpha = random_factors(rng, 16, 8)
    to32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    to16 = lambda a: torch.tensor(a, dtype=torch.bfloat16)  # noqa: E731
    G = to16(rng.standard_normal((16, 8)))
    new = kron_step(
        to32(d_C), to16(B_C), to32(d_K), to16(B_K), to32(alpha), G, 0.05, method="truncated", max_generator_norm=0.25
    )
    assert [x.dtype for x in new] == [torch.float32, torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]
    assert torch.all(torch.isfinite(new[1].float()))
    # The same step in float64 from the same gradient. bfloat16 rounds to
    # 2^-8 relative, and products of 16 terms to about sqrt(16) * 2^-8 =
    # 0.016 (torch 2.13 on CPU: 3e-3). The step moves d by up to 27% and
    # the bases by up to 0.11 per entry, so a step that skipped either fails.
    expected = kron_step(
        d_C, B_C, d_K, B_K, alpha, G.double().numpy(), 0.05, method="truncated", max_generator_norm=0.25
    )
    for name, got, want in zip(("d_C", "B_C", "d_K", "B_K", "alpha"), new, expected, strict=True):
        tolerance = {"rtol": 0.0, "atol": 0.02} if name.startswith("B") else {"rtol": 0.02, "atol": 0.0}
        np.testing.assert_allclose(got.double().numpy(), want, **tolerance, err_msg=name)
    # bfloat16 keeps 8 significant bits: a rounded orthogonal 16 x 16 matrix
    # has a defect near sqrt(16 * 16) * 2^-9 ~ 0.03; the step adds far less.
    assert orthogonality_defect(new[1].float()) < 0.1
    V = to16(rng.standard_normal((16, 8)))
    assert kron_precondition(*new, V, 2.0, 1e-8).dtype == torch.bfloat16


@requires_torch
def test_precondition_float16_with_large_alpha():
    # alpha^{1/2} (d_C d_K)^{1/2} >= 3.2e5 / e = 1.2e5 overflows float16 (largest
    # number 65504) if the roots are formed before dividing, which zeroes the
    # whole result; relative to alpha nothing overflows.
    rng = np.random.default_rng(5)
    n, m = 6, 4
    d_C, d_K = np.exp(rng.uniform(-1, 1, n)), np.exp(rng.uniform(-1, 1, m))
    B_C = np.linalg.qr(rng.standard_normal((n, n)))[0]
    B_K = np.linalg.qr(rng.standard_normal((m, m)))[0]
    alpha, V = 1e11, 1e4 * rng.standard_normal((n, m))
    expected = kron_precondition(d_C, B_C, d_K, B_K, alpha, V, 2.0)
    half = [torch.tensor(d_C), torch.tensor(B_C, dtype=torch.float16), torch.tensor(d_K)]
    half += [torch.tensor(B_K, dtype=torch.float16), torch.tensor(alpha)]
    got = kron_precondition(*half, torch.tensor(V, dtype=torch.float16), 2.0)
    assert got.dtype == torch.float16
    # float16 rounds to 2^-11 relative. The bases, four products and the
    # division each add about that, summed over up to 6 terms, so 1% of the
    # largest entry is a wide margin.
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=1e-2 * np.abs(expected).max())


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=requires_torch)])
@pytest.mark.parametrize("full", [(True, True), (True, False), (False, True), (False, False)])
def test_inputs_left_unchanged(rng, backend, full):
    # The step and the preconditioner work in place on their own
    # temporaries only; a caller's arrays keep their values.
    n, m = 5, 4
    d_C, B_C, d_K, B_K, alpha = random_factors(rng, n, m)
    B_C, B_K = (B_C if full[0] else None), (B_K if full[1] else None)
    G = rng.standard_normal((n, m))
    inputs = [d_C, B_C, d_K, B_K, G]
    if backend == "torch":
        inputs = [None if x is None else torch.from_numpy(x) for x in inputs]
    copies = copy.deepcopy(inputs)
    d_C, B_C, d_K, B_K, G = inputs
    kron_precondition(d_C, B_C, d_K, B_K, alpha, G, 2.0, 1e-8)
    kron_step(d_C, B_C, d_K, B_K, alpha, G, 0.1)
    kron_step(d_C, B_C, d_K, B_K, alpha, G, 0.1, method="truncated", max_generator_norm=0.25)
    for name, x, original in zip(("d_C", "B_C", "d_K", "B_K", "G"), inputs, copies, strict=True):
        if x is not None:
            assert (x == original).all(), name


def _stack_cases(rng, k, n, m):
    """Stack k sets of float64 factors and gradients, each with its own alpha, for the stack tests."""
    cases = []
    for _ in range(k):
        d_C, B_C, d_K, B_K, alpha = random_factors(rng, n, m)
        cases.append({"d_C": d_C, "B_C": B_C, "d_K": d_K, "B_K": B_K, "alpha": alpha, "G": rng.standard_normal((n, m))})
    stack = {key: torch.from_numpy(np.stack([np.asarray(case[key]) for case in cases])) for key in cases[0]}
    stack["alpha"] = stack["alpha"] * torch.linspace(0.5, 2.0, k, dtype=torch.float64)  # a different scale each
    return stack


@requires_torch
@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_private_steps_accept_stacks(method):
    # The optimizer moves same-shape factors as one stack through the
    # private functions. Each matrix of the stack must get what its own
    # call gives; in float64 batched and single products differ by rounding
    # only (1e-12 leaves room for n = 6 products of unit-norm factors).
    rng = np.random.default_rng(5)
    n, m = 6, 4
    stack = _stack_cases(rng, 3, n, m)
    # Gradients of very different sizes give generators of different norms,
    # so the truncated map needs 0, some and the most squarings in one stack.
    stack["G"] *= torch.tensor([0.01, 0.2, 1.0], dtype=torch.float64)[:, None, None]
    options = kron_module._FactorOptions(method, 8, 0.05, "frobenius", 4, 1e-4, 1.0)

    Y = kron_module._kron_rotate(stack["B_C"], stack["G"], stack["B_K"])
    W = kron_module._kron_curvature(Y, stack["d_K"], full=True)
    d_new, B_new, rate = kron_module._kron_factor_step(
        stack["d_C"], stack["B_C"], W, stack["alpha"], m, 0.3, 1.0, options
    )
    D = kron_module._kron_precondition(
        stack["d_C"], stack["B_C"], stack["d_K"], stack["B_K"], stack["alpha"], stack["G"], 4.0, 1e-3
    )
    counts = set()
    for i in range(3):
        single = {key: value[i] for key, value in stack.items()}
        Y_i = kron_rotate(single["B_C"], single["G"], single["B_K"])
        W_i = kron_curvature(Y_i, single["d_K"])
        N_i = kron_module._rotation_generator(single["d_C"], W_i, 0.3, 1.0, 1 / (single["alpha"] * m))
        counts.add(kron_module._squarings_needed(N_i, 0.05, 4, "frobenius"))
        expected = kron_factor_step(
            single["d_C"],
            single["B_C"],
            W_i,
            single["alpha"],
            m,
            0.3,
            1.0,
            method=method,
            max_generator_norm=0.05,
            max_squarings=4,
            damping=1e-4,
            max_log_step=1.0,
        )
        torch.testing.assert_close(d_new[i], expected[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(B_new[i], expected[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(rate[i], expected[2], rtol=1e-12, atol=1e-15)
        expected_D = kron_precondition(
            single["d_C"], single["B_C"], single["d_K"], single["B_K"], single["alpha"], single["G"], 4.0, 1e-3
        )
        torch.testing.assert_close(D[i], expected_D, rtol=1e-12, atol=0)
    if method == "truncated":
        assert len(counts) == 3, counts  # the case the per-matrix squarings exist for


@requires_torch
def test_float16_preconditioning_accepts_stacks():
    # float16 takes the rescaled path of kron_precondition, whose scalar
    # alpha must broadcast per matrix. Its products round to 2^-11 relative;
    # 4e-3 allows a few roundings on entries of unit size.
    stack = _stack_cases(np.random.default_rng(6), 3, 5, 4)
    stack["alpha"] *= torch.tensor([1e-4, 1.0, 1e3], dtype=torch.float64)
    half = {key: stack[key].to(torch.float16) for key in ("B_C", "B_K", "G")}
    D = kron_module._kron_precondition(
        stack["d_C"].float(),
        half["B_C"],
        stack["d_K"].float(),
        half["B_K"],
        stack["alpha"].float(),
        half["G"],
        2.0,
        0.0,
    )
    for i in range(3):
        expected = kron_precondition(
            stack["d_C"][i], stack["B_C"][i], stack["d_K"][i], stack["B_K"][i], stack["alpha"][i], stack["G"][i], 2.0
        )
        torch.testing.assert_close(D[i].double(), expected, rtol=4e-3, atol=4e-3 * expected.abs().max().item())


def test_factor_pair_rotation_diagonalises_update():
    # Two eigenvalues and B = I: with Q = W / (alpha kappa) the generator's
    # Jacobi angle, taken from the current d, diagonalises the updated
    # matrix (1 - beta gamma) diag(d) + beta Q exactly, as in spectral_step.
    # A generator built from the recentred new d misses that angle by about
    # 0.05 rad here. Rounding of a 2 x 2 solve and products of entries below
    # 2 stays within a few eps.
    d = np.array([0.8, 1.25])
    alpha, kappa, beta, gamma = 0.7, 3, 0.4, 1.0
    Q = np.array([[0.3, 0.8], [0.8, 1.2]])
    _, B_new, _ = kron_factor_step(d, np.eye(2), alpha * kappa * Q, alpha, kappa, beta, gamma)
    target = (1 - beta * gamma) * np.diag(d) + beta * Q
    off_diagonal = (B_new.T @ target @ B_new)[0, 1]
    assert abs(off_diagonal) < 1e-14


def test_damping_shifts_curvature_diagonal(rng):
    # damping is added to the diagonal of Q = W / (alpha kappa), so it must
    # act as W + alpha kappa damping I. The shift is the same on every
    # diagonal entry and cancels in the generator's gaps, so the two calls
    # differ by rounding of the shifted diagonal only, a few eps relative.
    n, alpha, kappa, beta, damping = 5, 0.7, 3, 0.2, 0.5
    d, B, _, _, _ = random_factors(rng, n, 2)
    X = rng.standard_normal((n, n))
    W = X @ X.T
    damped = kron_factor_step(d, B, W, alpha, kappa, beta, damping=damping)
    shifted = kron_factor_step(d, B, W + alpha * kappa * damping * np.eye(n), alpha, kappa, beta)
    np.testing.assert_allclose(damped[0], shifted[0], rtol=1e-13)
    np.testing.assert_allclose(damped[1], shifted[1], rtol=0, atol=1e-13)
    np.testing.assert_allclose(damped[2], shifted[2], rtol=1e-13)


def test_factor_log_step_cap_with_forgetting():
    # A diagonal factor with alpha = kappa = 1, so q = W. With beta = 0.5
    # and gamma = 1 the log-changes beta (q_i / d_i - gamma) are 19.5, 0.5
    # and 0.1. The cap 0.2 cuts the first two, and recentring then
    # subtracts their mean 0.5 / 3 (mean(log d) is 0 here). A clip without
    # gamma would give 0.2 - beta gamma = -0.3 and one without 1 / beta
    # gives beta * 0.2 = 0.1. Logs and exps round to a few eps.
    d = np.array([0.5, 1.0, 2.0])
    W = np.array([20.0, 2.0, 2.4])
    d_new, _, rate = kron_factor_step(d, None, W, 1.0, 1, 0.5, 1.0, max_log_step=0.2)
    assert float(rate) == pytest.approx(0.5 / 3, rel=1e-13)
    np.testing.assert_allclose(np.log(d_new / d), np.array([0.2, 0.2, 0.1]) - 0.5 / 3, rtol=0, atol=1e-14)


def test_factor_rate_for_unnormalised_eigenvalues():
    # The rate is the change of mean(log d) before recentring, beta mean(m),
    # also when prod(d) = 8 instead of 1, and d_new has prod 1 again. Each
    # quantity is a few logs and exps of numbers of order 1, a few eps each.
    d = np.array([1.0, 2.0, 4.0])
    W = np.array([1.5, 1.0, 6.0])
    beta, gamma = 0.3, 1.0
    d_new, _, rate = kron_factor_step(d, None, W, 1.0, 1, beta, gamma)
    m = (W - gamma * d) / d
    assert float(rate) == pytest.approx(beta * np.mean(m), rel=1e-13)
    assert abs(np.sum(np.log(d_new))) < 1e-14
    np.testing.assert_allclose(d_new, d * np.exp(beta * m) / np.exp(np.mean(np.log(d)) + rate), rtol=1e-14)


def test_exact_map_ignores_squarings(rng):
    # Squarings belong to the truncated map only: the exact map caps the
    # long generator (norm 1 to 2) at 0.25 for any max_squarings, and
    # does not let it through at 0.25 * 2^s. Both sides solve the same
    # 8 x 8 system, so they agree to a few rounding steps per entry.
    n, kappa = 8, 5
    d, W, N = long_generator_problem(rng, n, kappa)
    _, B, _ = kron_factor_step(
        d, np.eye(n), W, 1.0, kappa, 1.0, method="exact", max_generator_norm=0.25, max_squarings=4
    )
    np.testing.assert_allclose(B, cayley_exact(N * 0.25 / np.linalg.norm(N)), atol=100 * n * EPS64)


def test_spectral_cap_counts_squarings_in_spectral_norm(rng):
    # With cap_norm="spectral" the number of squarings comes from the
    # spectral norm estimate too. This generator has Frobenius norm 1.79 and
    # spectral norm 1.09, so at the cap 0.3 it needs 2 squarings, not the
    # 3 that the Frobenius norm would need. Same tolerance as the tests above.
    n, kappa, cap = 8, 5, 0.3
    d, W, N = long_generator_problem(rng, n, kappa)
    squarings = squarings_needed(N, cap, 4, "spectral")
    assert squarings < squarings_needed(N, cap, 4, "frobenius")
    _, B, _ = kron_factor_step(
        d,
        np.eye(n),
        W,
        1.0,
        kappa,
        1.0,
        method="truncated",
        max_generator_norm=cap,
        cap_norm="spectral",
        max_squarings=4,
    )
    capped = N * min(1.0, cap * 2**squarings / float(spectral_norm_estimate(N)))
    np.testing.assert_allclose(B, cayley_truncated(capped, squarings=squarings), atol=100 * n * EPS64)


def test_kron_step_composes_factor_steps(rng):
    # kron_step is one kron_factor_step per factor, both curvatures from the
    # current factors, and alpha moved by the mean of the two rates. With
    # damping the rates differ (mean(damping / d) differs between the
    # factors), so a step that used one rate for both shows. The same
    # operations run in the same order, so 1e-14 leaves room for rounding.
    n, m, beta, damping = 5, 3, 0.2, 0.3
    d_C, B_C, d_K, B_K, alpha = random_factors(rng, n, m)
    G = rng.standard_normal((n, m))
    Y = kron_rotate(B_C, G, B_K)
    W_C = kron_curvature(Y, d_K)
    W_K = kron_curvature(Y.T, d_C)
    expected_C = kron_factor_step(d_C, B_C, W_C, alpha, m, beta, damping=damping)
    expected_K = kron_factor_step(d_K, B_K, W_K, alpha, n, beta, damping=damping)
    assert abs(float(expected_C[2]) - float(expected_K[2])) > 1e-3

    new = kron_step(d_C, B_C, d_K, B_K, alpha, G, beta, damping=damping)
    expected = (*expected_C[:2], *expected_K[:2], alpha * np.exp((expected_C[2] + expected_K[2]) / 2))
    for name, got, want in zip(("d_C", "B_C", "d_K", "B_K", "alpha"), new, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("full", [(True, True), (True, False), (False, True), (False, False)])
def test_precondition_diagonal_factor_is_identity(rng, full):
    # A None basis stands for the identity, so it must precondition as an
    # explicit identity matrix does. Products with I are exact, and the
    # paths differ only in the order of the scaling, a few eps relative.
    d_C, _, d_K, _, alpha = random_factors(rng, 4, 3)
    V = rng.standard_normal((4, 3))
    B_C, B_K = (np.eye(4) if full[0] else None), (np.eye(3) if full[1] else None)
    expected = kron_precondition(d_C, np.eye(4), d_K, np.eye(3), alpha, V, 4.0, 0.3)
    np.testing.assert_allclose(kron_precondition(d_C, B_C, d_K, B_K, alpha, V, 4.0, 0.3), expected, rtol=1e-14)


@requires_torch
def test_precondition_float16_root_and_eps(rng):
    # The float16 path divides V by alpha^(1/p) first, so eps enters as
    # eps alpha^(-1/p) next to the relative roots (d_C,i d_K,j)^(1/p). Here
    # p = 4, alpha = 1e4 and eps = 1 make eps about a tenth of each
    # eigenvalue root, and d ranges over e^(+-1). In float64, eps not scaled
    # by alpha^(-1/p) moved the result by 47% of its largest entry and the
    # square root of d_C in place of the 4th root by 14%. float16 rounds to
    # 2^-11 relative per operation, and 1% of the largest entry covers a few.
    d_C, B_C, d_K, B_K, _ = random_factors(rng, 6, 4)
    alpha, V = 1e4, rng.standard_normal((6, 4))
    expected = kron_precondition(d_C, B_C, d_K, B_K, alpha, V, 4.0, 1.0)
    half = lambda a: torch.tensor(a, dtype=torch.float16)  # noqa: E731
    got = kron_precondition(
        torch.tensor(d_C), half(B_C), torch.tensor(d_K), half(B_K), torch.tensor(alpha), half(V), 4.0, 1.0
    )
    assert got.dtype == torch.float16
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=1e-2 * np.abs(expected).max())
