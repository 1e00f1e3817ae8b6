"""Spectral core: keep an SPD matrix as ``S = B diag(d) B^T`` and move the factors.

``d`` (positive eigenvalues) moves by an elementwise exponential and ``B``
(orthogonal, eigenvectors as columns) by a Cayley map, so roots of ``S`` are
elementwise powers of ``d`` and no eigendecomposition is ever run. Every
function here accepts numpy arrays or torch tensors and returns results of
the same type, dtype and device.

Input rules, checked at every public entry point without reading array
values (no host synchronisation on a GPU):

* All arrays of one call come from one library; a Python list, or numpy
  mixed with torch, raises ``TypeError``.
* Arrays are real floating point (float64, float32 or float16, and for
  torch also bfloat16) and share one dtype: the core does not promote, and
  a mix, an integer array or numpy's ``longdouble`` raises ``TypeError``
  naming the dtypes. :mod:`spectral_es.core.kron`
  lets the eigenvalues be wider than the bases (see there).
* The exact Cayley map needs a dense solver, which exists only for float32
  and float64; float16 and bfloat16 with ``method="exact"`` raise
  ``TypeError``, and ``method="truncated"`` works in every dtype.
* Scalar options (``beta``, ``gamma``, caps, roots) are converted to Python
  floats, so a numpy float64 scalar never turns float32 results into
  float64, and an option out of range raises ``ValueError``. A torch tensor
  option must be 0-d (else ``ValueError``) with a real floating point or
  integer dtype (else ``TypeError``). Its value is passed on unchecked,
  because reading it would synchronise with a GPU.
* Shapes are ``(n,)`` and ``(n, n)``: batch dimensions are not supported,
  and any other shape raises ``ValueError``.

The properties of the values are preconditions that are not checked: ``d``
positive, ``B`` orthogonal, ``Q`` symmetric, ``N`` skew-symmetric. NaN in
the inputs propagates into the results.

The functions are meant for values without autograd history: call them
under ``torch.no_grad()`` or on detached tensors. The forward pass runs on
tensors that require gradients, but the backward pass through the rotation
generator fails, because the generator updates temporaries in place to
save memory passes. Its saturating angle also has no derivative where a
gap and its coupling both vanish.

:mod:`spectral_es.core.kron` applies the same step to each factor of a
Kronecker product ``alpha (S_C kron S_K)``, the preconditioner of a weight
matrix.

Symbols: ``d`` eigenvalues (n,), ``B`` eigenbasis (n, n), ``Q = B^T H B``
curvature in the eigenbasis, ``beta`` step size, ``gamma`` in [0, 1] (0
accumulates, 1 keeps a moving average), ``N`` skew-symmetric Cayley
generator.
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
from spectral_es.core.step import (
    cap_generator_norm,
    eigenvalue_step,
    generator_norm,
    rotation_generator,
    spectral_norm_estimate,
    spectral_step,
    squarings_needed,
)

__all__ = [
    "apply_inverse_root",
    "apply_power",
    "bjorck_orthogonalize",
    "cap_generator_norm",
    "cayley",
    "cayley_exact",
    "cayley_truncated",
    "eigenvalue_step",
    "generator_norm",
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
    "spectral_norm_estimate",
    "spectral_step",
    "squarings_needed",
]
