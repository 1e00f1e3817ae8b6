"""Powers and roots of ``S = B diag(d) B^T`` from its factors.

Any power of ``S`` is ``B diag(d^t) B^T``, so roots are elementwise powers of
``d``: no eigendecomposition or iterative matrix root is needed.
"""

from __future__ import annotations

from typing import Any

from spectral_es.core._checks import check_arrays, check_same_dtype, check_scalar, check_square, check_vector

__all__ = ["apply_inverse_root", "apply_power", "matrix_power"]


def apply_power(d: Any, B: Any, V: Any, exponent: float) -> Any:
    """Return ``S^exponent V`` for a vector or matrix ``V``.

    Computes ``B (d^exponent * (B^T V))`` with two products with ``B``; ``S``
    is never formed. ``d`` (n,) must be positive for a fractional or
    negative exponent (not checked), and ``B`` (n, n) orthogonal. ``V`` has
    shape (n,) or (n, k) and the dtype of ``d`` and ``B``; the result has
    the same shape, array type, dtype and device.
    """
    _check_factors("apply_power", d, B, V)
    exponent = check_scalar("apply_power", "exponent", exponent, hint="use a finite number")
    return _apply_power(d, B, V, exponent)


def _apply_power(d: Any, B: Any, V: Any, exponent: float) -> Any:
    """Return :func:`apply_power` for inputs already checked."""
    scale = d**exponent
    coefficients = B.T @ V
    if V.ndim == 1:
        return B @ (scale * coefficients)
    return B @ (scale[:, None] * coefficients)


def _check_factors(caller: str, d: Any, B: Any, V: Any | None = None) -> None:
    """Raise unless ``d`` (n,), ``B`` (n, n) and ``V`` ((n,) or (n, k)) are arrays of one library and dtype."""
    arrays = {"d": d, "B": B} if V is None else {"d": d, "B": B, "V": V}
    check_arrays(caller, **arrays)
    n = check_vector(caller, "d", d)
    check_square(caller, "B", B, n)
    if V is not None and (V.ndim not in (1, 2) or V.shape[0] != n):
        raise ValueError(
            f"{caller}: V has shape {tuple(V.shape)}; expected ({n},) or ({n}, k) "
            "(batch dimensions beyond k columns are not supported)"
        )
    check_same_dtype(caller, **arrays)


def apply_inverse_root(d: Any, B: Any, V: Any, p: float) -> Any:
    """Return ``S^{-1/p} V`` for a root ``p > 0``, for example the preconditioned gradient."""
    _check_factors("apply_inverse_root", d, B, V)
    hint = "use a finite root > 0 (2: inverse square root)"
    p = check_scalar("apply_inverse_root", "p", p, minimum=0.0, inclusive=False, hint=hint)
    return _apply_power(d, B, V, -1.0 / p)


def matrix_power(d: Any, B: Any, exponent: float = 1.0) -> Any:
    """Return the dense matrix ``S^exponent = B diag(d^exponent) B^T``.

    Meant for tests, diagnostics and small n; prefer :func:`apply_power`,
    which costs O(n^2 k) instead of O(n^3).
    """
    _check_factors("matrix_power", d, B)
    exponent = check_scalar("matrix_power", "exponent", exponent, hint="use a finite number")
    return (B * d**exponent) @ B.T
