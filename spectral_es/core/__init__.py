"""Spectral core: keep an SPD matrix as ``S = B diag(d) B^T`` and move the factors.

``d`` (positive eigenvalues) moves by an elementwise exponential and ``B``
(orthogonal, eigenvectors as columns) by a Cayley map, so roots of ``S`` are
elementwise powers of ``d`` and no eigendecomposition is ever run. Every
function here accepts numpy arrays or torch tensors and returns results of
the same type, dtype and device.

:mod:`spectral_es.core.kron` applies the same step to each factor of a
Kronecker product ``alpha (S_C kron S_K)``, the preconditioner of a weight
matrix.

Symbols: ``d`` eigenvalues (n,), ``B`` eigenbasis (n, n), ``Q = B^T H B``
curvature in the eigenbasis, ``beta`` step size, ``gamma`` 0 (accumulate) or
1 (moving average), ``N`` skew-symmetric Cayley generator.
"""

from spectral_es.core.cayley import (
    bjorck_orthogonalize,
    cayley,
    cayley_exact,
    cayley_truncated,
    orthogonality_defect,
    rotate,
    skew,
)
from spectral_es.core.kron import (
    kron_curvature,
    kron_factor_step,
    kron_precondition,
    kron_rotate,
    kron_step,
    kron_unrotate,
)
from spectral_es.core.roots import apply_inverse_root, apply_power, matrix_power
from spectral_es.core.step import eigenvalue_step, rotation_generator, spectral_step, squarings_needed

__all__ = [
    "apply_inverse_root",
    "apply_power",
    "bjorck_orthogonalize",
    "cayley",
    "cayley_exact",
    "cayley_truncated",
    "eigenvalue_step",
    "kron_curvature",
    "kron_factor_step",
    "kron_precondition",
    "kron_rotate",
    "kron_step",
    "kron_unrotate",
    "matrix_power",
    "orthogonality_defect",
    "rotate",
    "rotation_generator",
    "skew",
    "spectral_step",
    "squarings_needed",
]
