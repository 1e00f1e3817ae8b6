"""Powers and roots of ``S = B diag(d) B^T`` from its factors.

Any power of ``S`` is ``B diag(d^t) B^T``, so roots are elementwise powers of
``d``: no eigendecomposition or iterative matrix root is needed.
"""

from __future__ import annotations

from typing import Any

from spectral_es.core._backend import namespace

__all__ = ["apply_inverse_root", "apply_power", "matrix_power"]


def apply_power(d: Any, B: Any, V: Any, exponent: float) -> Any:
    """Return ``S^exponent V`` for a vector or matrix ``V``.

    Computes ``B (d^exponent * (B^T V))`` with two products with ``B``; ``S``
    is never formed. ``V`` has shape (n,) or (n, k); the result has the same
    shape, array type, dtype and device.
    """
    scale = d**exponent
    coefficients = B.T @ V
    if V.ndim == 1:
        return B @ (scale * coefficients)
    return B @ (scale[:, None] * coefficients)


def apply_inverse_root(d: Any, B: Any, V: Any, p: float) -> Any:
    """Return ``S^{-1/p} V``, for example the preconditioned gradient."""
    return apply_power(d, B, V, -1.0 / p)


def matrix_power(d: Any, B: Any, exponent: float = 1.0) -> Any:
    """Return the dense matrix ``S^exponent = B diag(d^exponent) B^T``.

    Meant for tests, diagnostics and small n; prefer :func:`apply_power`,
    which costs O(n^2 k) instead of O(n^3).
    """
    namespace(d, B)
    return (B * d**exponent) @ B.T
