"""Input checks of the spectral core: array library, dtype, shape and scalar options.

The checks read only types, dtypes, shapes and Python numbers, never the
values inside an array, so they cost microseconds and no GPU
synchronisation. Properties that need the values (``d`` positive, ``Q``
symmetric, ``B`` orthogonal, ``N`` skew-symmetric) are preconditions stated
in the docstrings and not checked.
"""

from __future__ import annotations

import math
import numbers
import sys
from types import ModuleType
from typing import Any, cast

import numpy as np

from spectral_es.core._backend import is_torch

__all__ = [
    "check_arrays",
    "check_integer",
    "check_matrix",
    "check_method",
    "check_same_dtype",
    "check_scalar",
    "check_solver_dtype",
    "check_square",
    "check_vector",
]

# numpy has no bfloat16, so its hint names only the three IEEE dtypes.
_TORCH_FLOATING_DTYPES = "float64, float32, float16 or bfloat16"
_NUMPY_FLOATING_DTYPES = "float64, float32 or float16"
_BATCH_NOTE = "batch dimensions are not supported"


def check_arrays(caller: str, **arrays: Any) -> ModuleType:
    """Return the array module (numpy or torch) of ``arrays``, named by keyword.

    Raises:
        TypeError: if an argument is not a numpy array or torch tensor (a
            Python list, say), if numpy arrays and torch tensors are mixed,
            or if a dtype is not real floating point (integer, bool,
            complex). numpy's ``longdouble`` raises too, because torch
            lacks it and numpy's linear algebra rejects it.
    """
    torch = sys.modules.get("torch")  # torch is never imported here, so the core runs without it
    tensor_type = torch.Tensor if torch is not None else ()
    torch_names = []
    numpy_names = []
    for name, x in arrays.items():
        if isinstance(x, tensor_type):
            torch_names.append(name)
            floating = x.dtype.is_floating_point
            supported = _TORCH_FLOATING_DTYPES
        elif isinstance(x, (np.ndarray, np.generic)):
            numpy_names.append(name)
            floating = x.dtype.kind == "f"
            supported = _NUMPY_FLOATING_DTYPES
            if floating and x.dtype.itemsize > 8:
                raise TypeError(
                    f"{caller}: {name} has dtype {x.dtype} (numpy.longdouble), which the spectral core does not "
                    "support; cast it to float64 first"
                )
        else:
            raise TypeError(
                f"{caller}: {name} is a {type(x).__name__}; pass a numpy array or a torch tensor "
                f"(for example numpy.asarray({name}, dtype=float))"
            )
        if not floating:
            raise TypeError(
                f"{caller}: {name} has dtype {x.dtype}, which is not real floating point; cast it to {supported} first"
            )
    if torch_names and numpy_names:
        raise TypeError(
            f"{caller}: the spectral core got both numpy arrays and torch tensors "
            f"(numpy: {', '.join(numpy_names)}; torch: {', '.join(torch_names)}); "
            "convert all inputs to one library first"
        )
    # A tensor was found only if torch is imported.
    return cast(ModuleType, torch) if torch_names else np


def check_same_dtype(caller: str, **arrays: Any) -> None:
    """Raise ``TypeError`` unless all ``arrays`` have one dtype (the core does not promote)."""
    names = iter(arrays)
    first_name = next(names)
    dtype = arrays[first_name].dtype
    for name in names:
        if arrays[name].dtype != dtype:
            raise TypeError(
                f"{caller}: {name} has dtype {arrays[name].dtype} but {first_name} has dtype {dtype}; "
                "cast them to one dtype first"
            )


def check_solver_dtype(caller: str, name: str, x: Any, fix: str) -> None:
    """Raise ``TypeError`` if ``x`` is in a dtype without a dense linear solver (float16, bfloat16).

    numpy 2.4 and torch 2.13 (on the CPU) solve only in float32 and float64
    among the real dtypes.
    """
    if is_torch(x):
        torch = sys.modules["torch"]
        solvable = x.dtype in (torch.float32, torch.float64)
    else:
        solvable = x.dtype in (np.float32, np.float64)
    if not solvable:
        raise TypeError(
            f"{caller}: {name} has dtype {x.dtype}, which has no dense solver for the exact Cayley map; {fix}"
        )


def check_method(caller: str, method: Any) -> None:
    """Raise ``ValueError`` unless ``method`` names a Cayley map ("exact" or "truncated")."""
    if method not in ("exact", "truncated"):
        raise ValueError(f"{caller}: unknown Cayley method {method!r}; use 'exact' or 'truncated'")


def check_square(caller: str, name: str, x: Any, n: int | None = None, source: str = "another input") -> int:
    """Return ``n`` for an (n, n) ``x``; raise ``ValueError`` for any other shape.

    With ``n`` given, ``x`` must be (n, n); ``source`` names where ``n`` came
    from in the message.
    """
    shape = tuple(x.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{caller}: {name} has shape {shape}; expected a square matrix (n, n) ({_BATCH_NOTE})")
    if n is not None and shape[0] != n:
        raise ValueError(
            f"{caller}: {name} has shape {shape}, but {source} requires ({n}, {n}); give all inputs matching sizes"
        )
    return shape[0]


def check_vector(caller: str, name: str, x: Any, n: int | None = None, source: str = "another input") -> int:
    """Return ``n`` for an (n,) ``x``; raise ``ValueError`` for any other shape.

    With ``n`` given, ``x`` must be (n,); ``source`` names where ``n`` came
    from in the message.
    """
    shape = tuple(x.shape)
    if len(shape) != 1:
        raise ValueError(f"{caller}: {name} has shape {shape}; expected a vector (n,) ({_BATCH_NOTE})")
    if n is not None and shape[0] != n:
        raise ValueError(
            f"{caller}: {name} has shape {shape}, but {source} requires ({n},); give all inputs matching sizes"
        )
    return shape[0]


def check_matrix(caller: str, name: str, x: Any) -> tuple[int, int]:
    """Return the shape (n, m) of a 2-D ``x``; raise ``ValueError`` for any other number of dimensions."""
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"{caller}: {name} has shape {shape}; expected a matrix (n, m) ({_BATCH_NOTE})")
    return shape


def check_scalar(
    caller: str,
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    inclusive: bool = True,
    finite: bool = True,
    hint: str = "",
) -> Any:
    """Return a Python or numpy scalar option as a Python ``float`` after checking its range.

    A Python float takes the dtype of the arrays it meets, where a numpy
    float64 scalar would turn float32 results into float64 (NEP 50), so
    every scalar option is converted at entry. ``minimum`` is a strict bound
    unless ``inclusive``; ``maximum`` is always inclusive. A NaN never
    passes, and infinity only with ``finite=False``. A torch tensor is
    returned unchanged after checking its shape (0-d) and dtype (real
    floating point or integer). Its value is not checked, because reading
    it would synchronise with a GPU.

    Raises:
        TypeError: for a value that is neither a real number nor a 0-d array,
            or a tensor of another dtype (bool, complex).
        ValueError: for a value outside the range, naming the value and
            ``hint``, or a tensor that is not 0-d.
    """
    if type(value) is float or type(value) is int:  # the common case, without the slower checks below
        number = float(value)
    elif is_torch(value):
        _check_scalar_tensor(caller, name, value)
        return value
    else:
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{caller}: {name} must be a real number, got {type(value).__name__} {value!r}")
        number = float(value)
    valid = not math.isnan(number) and (not finite or math.isfinite(number))
    if minimum is not None:
        valid = valid and (number >= minimum if inclusive else number > minimum)
    if maximum is not None:
        valid = valid and number <= maximum
    if not valid:
        raise ValueError(f"{caller}: invalid {name} {value!r}; {hint}")
    return number


def _check_scalar_tensor(caller: str, name: str, value: Any) -> None:
    """Raise unless the torch tensor ``value`` is 0-d with a real floating point or integer dtype.

    Reads only metadata, so a GPU tensor costs no synchronisation.
    """
    if value.ndim != 0:
        raise ValueError(f"{caller}: {name} has shape {tuple(value.shape)}; expected a number or a 0-d tensor")
    dtype = value.dtype
    if dtype.is_complex or dtype == sys.modules["torch"].bool:
        raise TypeError(f"{caller}: {name} has dtype {dtype}; expected a real floating point or integer tensor")


def check_integer(caller: str, name: str, value: Any, *, minimum: int, hint: str) -> int:
    """Return ``value`` as a Python ``int`` after checking that it is an integer >= ``minimum``.

    Raises:
        TypeError: for a value that is not a Python or numpy integer (a
            float such as ``4.0``, a bool or a string).
        ValueError: for an integer below ``minimum``, naming the value and ``hint``.
    """
    if type(value) is not int and (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{caller}: {name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{caller}: invalid {name} {value!r}; {hint}")
    return int(value)
