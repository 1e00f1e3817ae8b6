"""Cayley maps from skew-symmetric generators to rotations.

For a real skew-symmetric ``N`` the Cayley map ``(I + N)(I - N)^{-1}`` is an
orthogonal matrix with determinant +1, and ``I - N`` is always invertible
because the eigenvalues of ``N`` are purely imaginary. The truncated map
replaces the inverse by the first terms of the Neumann product
``(I - N)^{-1} = (I + N)(I + N^2)(I + N^4)...``, so it needs only matrix
products and works in bfloat16, where no dense solver exists on CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spectral_es.core._backend import (
    add_product,
    astype_like,
    at_least_float32,
    eye_like,
    is_narrow,
    is_torch,
    namespace,
    per_matrix,
)
from spectral_es.core._checks import (
    check_arrays,
    check_integer,
    check_matrix,
    check_method,
    check_same_dtype,
    check_solver_dtype,
    check_square,
)

__all__ = [
    "bjorck_orthogonalize",
    "cayley",
    "cayley_exact",
    "cayley_truncated",
    "orthogonality_defect",
    "rotate",
    "skew",
]


def skew(A: Any) -> Any:
    """Return ``A - A^T``, the skew-symmetric part of ``A`` times two, for a square ``A``."""
    check_arrays("skew", A=A)
    check_square("skew", "A", A)
    return A - A.T


def cayley_exact(N: Any) -> Any:
    """Map a skew-symmetric ``N`` to the rotation ``(I + N)(I - N)^{-1}``.

    ``I + N`` and ``(I - N)^{-1}`` commute, so the result is one linear solve
    of ``(I - N) R = I + N``. Cost O(n^3). ``N`` (n, n) must be
    skew-symmetric, which is not checked: another ``N`` gives a matrix that
    is not orthogonal.

    Raises:
        TypeError: for a float16 or bfloat16 ``N``, which has no dense
            solver; :func:`cayley_truncated` works in those dtypes.
    """
    xp = check_arrays("cayley_exact", N=N)
    check_square("cayley_exact", "N", N)
    check_solver_dtype("cayley_exact", "N", N, 'use cayley_truncated (method="truncated") or cast N to float32')
    eye = eye_like(N.shape[0], N)
    return xp.linalg.solve(eye - N, eye + N)


def cayley_truncated(N: Any, *, order: int = 8, squarings: int = 0) -> Any:
    """Approximate the Cayley map with matrix products only.

    Cuts the Neumann series of ``(I - N)^{-1}`` before the ``N^order`` term,
    ``(I - N)^{-1} ≈ (I + N)(I + N^2)...(I + N^(order/2))``, and returns

        R = (I + N)^2 (I + N^2) ... (I + N^(order/2)) = Cayley(N) (I - N^order).

    ``N^order`` is symmetric (``order`` is even), so
    ``R^T R - I = -2 N^order + N^(2 order)``, and the caller must keep
    ``‖N‖_F`` well below 1. A skew ``N`` has singular values in pairs
    ``sigma_k``, with ``‖N‖_F^2 = 2 sum sigma_k^2``, so for ``‖N‖_2 <= 1``
    the orthogonality defect ``‖R^T R - I‖_F`` is at most
    ``2^(1.5 - order/2) ‖N‖_F^order``, reached when ``N`` has rank 2. In
    spectral norm it is at most ``2 ‖N‖_2^order``. The default
    ``order = 8``, ``(I + N)^2 (I + N^2)(I + N^4)``, takes four matrix
    products, and its defect is at most ``0.18 ‖N‖_F^8``: 1.8e-9 at
    ``‖N‖_F = 0.1`` and 2.7e-6 at 0.25. ``order = 4``,
    ``(I + N)^2 (I + N^2)``, takes two products, and its defect is at most
    ``0.71 ‖N‖_F^4``, 2.8e-3 at 0.25. A generator whose norm is spread
    over many singular values stays far below the bound: for random
    Gaussian skew ``N`` scaled to ``‖N‖_F = 0.25``, the order-8 defect had
    a median of 9e-7 at n = 6, 7e-9 at n = 30 and 1.2e-10 at n = 100 (50
    draws each, numpy float64). The bounds hold in exact arithmetic, and
    products in bfloat16 add rounding of their own. Works in any floating
    dtype, bfloat16 included.

    With ``squarings = s > 0`` the map returns ``R(N / 2^s)^(2^s)``, for
    ``s`` more products, so that ``‖N‖_F`` may be ``2^s`` times larger for
    the same truncation error. Because ``Cayley(X) = exp(2X) + O(‖X‖^3)``,
    this is ``exp(2N) + O(‖N‖^3 / 4^s)``: another rotation that agrees with
    ``Cayley(N)`` up to second order in ``N``. The defect of the result is
    that of ``(I - M^order)^(2^(s+1)) - I`` with ``M = N / 2^s``, at most
    ``2^(s+1)`` times ``‖M^order‖``, so each squaring at most doubles the
    bound: ``2^(s + 1.5 - order/2) ‖N / 2^s‖_F^order``.

    Args:
        N: Skew-symmetric generator, shape (n, n); skew symmetry is not
            checked.
        order: Power of two >= 2, the degree of the first dropped term.
        squarings: Number ``s >= 0`` of squarings.

    Returns:
        ``R``, shape (n, n), in the dtype and on the device of ``N``.
    """
    check_arrays("cayley_truncated", N=N)
    check_square("cayley_truncated", "N", N)
    order, squarings = _check_truncation("cayley_truncated", order, squarings)
    return eye_like(N.shape[0], N) + _truncated_increment(N, order, squarings)


def _check_truncation(caller: str, order: Any, squarings: Any) -> tuple[int, int]:
    """Return ``order`` (a power of two >= 2) and ``squarings`` (>= 0) as Python ints.

    Raises ``TypeError`` for a value that is not an integer and
    ``ValueError`` for an integer out of range.
    """
    hint = "use a power of two >= 2 (default 8)"
    order = check_integer(caller, "order", order, minimum=2, hint=hint)
    if order & (order - 1):
        raise ValueError(f"{caller}: invalid order {order!r}; {hint}")
    squarings = check_integer(caller, "squarings", squarings, minimum=0, hint="use an integer >= 0 (default 0)")
    return order, squarings


def _truncated_increment(N: Any, order: int, squarings: Any) -> Any:
    """Return ``R - I`` for the map ``R`` of :func:`cayley_truncated`, never forming ``I + small``.

    For a stack of torch matrices (k, n, n), ``squarings`` may be a list
    of k counts: each matrix is then divided by 2 and squared its own
    number of times, so the stack gives what k separate calls would.

    In bfloat16 an entry near 1 rounds with an absolute error of up to 2^-8,
    as large as the rounding floor of an orthogonal matrix itself. An entry
    of the increment, of size about ``‖N‖``, rounds with an error about
    ``‖N‖`` times smaller. Each factor is therefore applied to the
    increment, ``(I + P)(I + X) - I = P + X + P X``, with the same products
    as the plain form.
    """
    counts = None
    if isinstance(squarings, list):
        torch = namespace(N)
        counts = torch.tensor(squarings, device=N.device)
        N = N / per_matrix(torch.pow(2.0, counts).to(N.dtype))
        squarings = max(squarings, default=0)
    elif squarings:
        N = N / 2**squarings
    power = N @ N

    # (I + N)^2 - I = 2N + N^2 reuses N^2 instead of one more product.
    P = 2 * N + power
    degree = 2
    while degree < order:
        P = add_product(P + power, P, power)
        degree *= 2
        if degree < order:
            power = power @ power

    # (I + P)^2 - I = 2P + P^2 per squaring.
    for done in range(squarings):
        squared = add_product(2 * P, P, P)
        P = squared if counts is None else namespace(P).where(per_matrix(counts > done), squared, P)
    return P


def cayley(N: Any, *, method: str = "exact", order: int = 8, squarings: int = 0) -> Any:
    """Apply the exact or truncated Cayley map (``method`` names which).

    ``order`` and ``squarings`` are those of :func:`cayley_truncated`; the
    exact map ignores them.
    """
    check_method("cayley", method)
    if method == "exact":
        return cayley_exact(N)
    return cayley_truncated(N, order=order, squarings=squarings)


def rotate(B: Any, N: Any, *, method: str = "exact", order: int = 8, squarings: int = 0) -> Any:
    """Return ``B @ Cayley(N)`` without forming the rotation (exact map).

    Because ``(I + N)(I - N)^{-1} = 2 (I - N)^{-1} - I``, the product is
    ``2 X - B`` with ``X (I - N) = B``: one LU factorisation and its
    triangular solves, about 2.7 n^3 flops, where forming Cayley(N) first
    and multiplying costs 4.7 n^3. torch solves ``X (I - N) = B`` directly
    (``left=False``, about 30% faster on one CPU thread at n = 1024
    than the transposed system); numpy solves ``(I + N) X^T = B^T``, the
    same system for skew ``N``. The truncated map of truncation ``order``
    with ``squarings`` (see :func:`cayley_truncated`) has no such shortcut
    and costs five products at the default order 8, three at order 4, plus
    one per squaring; the exact map ignores ``order`` and ``squarings``.
    The truncated map is applied as ``B + B (R - I)`` with ``R - I`` built
    without ``I``, so in bfloat16 no matrix near ``I`` is rounded; that
    halved the defect a bfloat16 ``B`` gathers between Björck steps.

    ``B`` has shape (m, n), usually (n, n), and ``N`` (n, n) the dtype of
    ``B``; ``N`` must be skew-symmetric (not checked). Only an ``N`` that
    is not can make the system singular, and torch then returns inf or NaN
    where numpy raises, because torch solves without the check that would
    wait for a GPU.

    Raises:
        TypeError: for float16 or bfloat16 inputs with the exact map.
    """
    check_arrays("rotate", B=B, N=N)
    check_matrix("rotate", "B", B)
    check_square("rotate", "N", N, B.shape[1], source=f"B of shape {tuple(B.shape)}")
    check_same_dtype("rotate", B=B, N=N)
    check_method("rotate", method)
    if method == "truncated":
        order, squarings = _check_truncation("rotate", order, squarings)
    else:
        check_solver_dtype("rotate", "B", B, 'use method="truncated" or cast B and N to float32')
    return _rotate(B, N, method, order, squarings)


def _rotate(B: Any, N: Any, method: str, order: int, squarings: int) -> Any:
    """Return ``B @ Cayley(N)`` as :func:`rotate` does, for inputs already checked."""
    if method == "truncated":
        return add_product(B, B, _truncated_increment(N, order, squarings))
    # I - N (torch) or I + N (numpy) as a copy of N with 1 added to its
    # diagonal, which saves building an identity matrix and a pass over it.
    if is_torch(B):
        torch = namespace(B, N)
        A = -N
        A.diagonal(0, -2, -1).add_(1)
        # solve_ex skips the singularity check, which on a GPU waits for the
        # device: I - N is never singular for a skew N, and a NaN in N gives
        # NaN either way.
        X = torch.linalg.solve_ex(A, B, left=False).result
        return torch.lerp(B, X, 2.0)  # 2 X - B in one pass
    A = N.copy()
    A.flat[:: N.shape[0] + 1] += 1
    X = np.linalg.solve(A, B.T).T
    return 2 * X - B


def orthogonality_defect(B: Any) -> float:
    """Return ``‖B^T B - I‖_F``, zero for an exactly orthogonal ``B``.

    ``B^T B`` is formed in at least float32, as in
    :func:`bjorck_orthogonalize`: in bfloat16 or float16 the Gram matrix
    would round its entries near 1 by as much as the defect being measured,
    and a float16 product overflows for entries above about 256. Reads the
    result on the host, so a GPU tensor costs one synchronisation.
    """
    xp = check_arrays("orthogonality_defect", B=B)
    check_matrix("orthogonality_defect", "B", B)
    wide = at_least_float32(B)
    residual = wide.T @ wide - eye_like(B.shape[1], wide)
    return float(xp.sqrt(xp.sum(residual * residual)))


def bjorck_orthogonalize(B: Any) -> Any:
    """Move ``B`` towards the nearest orthogonal matrix by one Björck step.

    Computes ``B (3I - B^T B) / 2``, one Newton-Schulz iteration for the
    orthogonal polar factor. A defect ``e = ‖B^T B - I‖`` becomes about
    ``(3/4) e^2``, so one step every few updates keeps a low-precision ``B``
    at its rounding floor. Matrix products only.

    The step is evaluated as ``B - B E / 2`` with the residual
    ``E = B^T B - I`` formed so that no number near 1 is ever rounded to
    the dtype of ``B``. In bfloat16 the entries near 1 of
    ``(3I - B^T B) / 2`` or ``B^T B`` round with an error of 2^-9 to 2^-8,
    as large as the floor itself: the defect of an orthogonal matrix
    rounded to bfloat16. After 200 refreshes of a 64 x 64 SpectralKron
    weight, the plain form left the eigenbases at about twice the floor,
    ``B - B E / 2`` with a bfloat16 Gram matrix at 1.25 times it, and this
    form at 1.00 to 1.10 times it. For a bfloat16 or float16 torch ``B``
    only the diagonal of ``B^T B`` is formed in float32 (see
    :func:`_narrow_residual`), so the step costs two products in the dtype
    of ``B``. Otherwise (float32, float64, NumPy arrays) ``E`` comes from a
    product in at least float32.
    """
    check_arrays("bjorck_orthogonalize", B=B)
    check_matrix("bjorck_orthogonalize", "B", B)
    return _bjorck_orthogonalize(B)


def _bjorck_orthogonalize(B: Any) -> Any:
    """Return :func:`bjorck_orthogonalize` of ``B``, or of each matrix of a stack ``B`` (k, m, n)."""
    if is_torch(B) and is_narrow(B):
        return B - B @ (_narrow_residual(B) / 2)
    wide = at_least_float32(B)
    residual = wide.swapaxes(-1, -2) @ wide - eye_like(B.shape[-1], wide)
    return B - B @ astype_like(residual / 2, B)


def _narrow_residual(B: Any) -> Any:
    """Return ``B^T B - I`` for a bfloat16 or float16 torch ``B``, in its dtype, without rounding a number near 1.

    The off-diagonal entries come from the product in ``B``'s dtype. They
    are small, so rounding them is an error relative to the residual itself.
    On the CPU torch sums the product in float32 and rounds once, which the
    tests check entry by entry. Only the diagonal of ``B^T B`` is near 1, and it
    is replaced by the squared column norms less 1, formed in float32. No
    float32 matrix is formed. At n = 1024 on one thread of an Intel Xeon
    with bfloat16 matrix units the step then took 9 ms instead of 25 ms,
    14 ms of which had gone to the float32 product.
    """
    torch = namespace(B)
    residual = B.swapaxes(-1, -2) @ B
    norms = torch.linalg.vector_norm(B, dim=-2, dtype=torch.float32)
    residual.diagonal(0, -2, -1).copy_(norms.square_().sub_(1))
    return residual
