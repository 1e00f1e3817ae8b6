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

from spectral_es.core._backend import eye_like, namespace

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
    """Return ``A - A^T``, the skew-symmetric part of ``A`` times two."""
    return A - A.T


def cayley_exact(N: Any) -> Any:
    """Map a skew-symmetric ``N`` to the rotation ``(I + N)(I - N)^{-1}``.

    ``I + N`` and ``(I - N)^{-1}`` commute, so the result is one linear solve
    of ``(I - N) R = I + N``. Cost O(n^3). Needs a dtype that has a dense
    solver (float32 or float64).
    """
    xp = namespace(N)
    eye = eye_like(N.shape[0], N)
    return xp.linalg.solve(eye - N, eye + N)


def cayley_truncated(N: Any) -> Any:
    """Approximate the Cayley map with matrix products only.

    Computes ``(I + N)^2 (I + N^2)(I + N^4)``, the Cayley map with the Neumann
    series of ``(I - N)^{-1}`` cut after the ``N^7`` term. The error is
    O(‖N‖^8) and the result is orthogonal only up to that error, so the
    caller must keep ``‖N‖_F`` well below 1 (the orthogonality defect
    ``‖R^T R - I‖_F`` is about 1e-6 at ``‖N‖_F = 0.1``). Four matrix
    products; works in any floating dtype, bfloat16 included.
    """
    eye = eye_like(N.shape[0], N)
    N2 = N @ N
    N4 = N2 @ N2
    # (I + N)^2 = I + 2N + N^2 reuses N^2 instead of a fifth product.
    return (eye + 2 * N + N2) @ (eye + N2) @ (eye + N4)


def cayley(N: Any, *, method: str = "exact") -> Any:
    """Apply the exact or truncated Cayley map (``method`` names which)."""
    if method == "exact":
        return cayley_exact(N)
    if method == "truncated":
        return cayley_truncated(N)
    raise ValueError(f"unknown Cayley method {method!r}; use 'exact' or 'truncated'")


def rotate(B: Any, N: Any, *, method: str = "exact") -> Any:
    """Return ``B @ Cayley(N)`` without forming the rotation (exact map).

    Because ``(I + N)(I - N)^{-1} = 2 (I - N)^{-1} - I``, the product is
    ``2 X - B`` with ``X (I - N) = B``, i.e. ``(I + N) X^T = B^T`` for skew
    ``N``: one LU factorisation and its triangular solves, about 2.7 n^3
    flops, where forming Cayley(N) first and multiplying costs 4.7 n^3.
    The truncated map has no such shortcut and costs five products.
    """
    if method == "truncated":
        return B @ cayley_truncated(N)
    if method != "exact":
        raise ValueError(f"unknown Cayley method {method!r}; use 'exact' or 'truncated'")
    xp = namespace(B, N)
    X = xp.linalg.solve(eye_like(N.shape[0], N) + N, B.T).T
    return 2 * X - B


def orthogonality_defect(B: Any) -> float:
    """Return ``‖B^T B - I‖_F``, zero for an exactly orthogonal ``B``."""
    xp = namespace(B)
    residual = B.T @ B - eye_like(B.shape[1], B)
    return float(xp.sqrt(xp.sum(residual * residual)))


def bjorck_orthogonalize(B: Any) -> Any:
    """Move ``B`` towards the nearest orthogonal matrix by one Björck step.

    Computes ``B (3I - B^T B) / 2``, one Newton-Schulz iteration for the
    orthogonal polar factor. A defect ``e = ‖B^T B - I‖`` becomes about
    ``(3/4) e^2``, so one step every few updates keeps a low-precision ``B``
    at its rounding floor. Matrix products only.
    """
    eye = eye_like(B.shape[1], B)
    return B @ (3 * eye - B.T @ B) / 2
