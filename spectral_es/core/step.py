"""The spectral step: move the factors of ``S = B diag(d) B^T`` directly.

Given curvature information in the current eigenbasis, ``Q = B^T H B``
(symmetric, possibly indefinite), one step with step size ``beta`` and
``gamma`` in [0, 1] moves the factors so that, to first order in ``beta``,

    S_new = (1 - beta * gamma) S + beta * H.

``gamma = 0`` accumulates curvature (AdaGrad-like; evolution strategies);
``gamma = 1`` keeps an exponential moving average (RMSprop-like); values in
between forget at the rate ``beta * gamma``. The update
is the one of Lin et al. (2025), "Spectral-factorized positive-definite
curvature learning for NN training":

    d_new = d * exp(beta * (diag(Q) - gamma * d) / d)
    U_ij  = -Q_ij / (d_i - d_j)                        for i > j
    B_new = B Cayley((beta / 2) * (L - L^T)),        L = strictly lower part of U

The factor 1/2 in the Cayley argument is what makes the step first-order
exact (the box of Fig. 1 in that paper omits it; its appendices keep it).
``d`` stays positive because it moves multiplicatively.

Near-equal entries of ``d`` make ``U_ij`` unbounded. This module replaces the
first-order rotation angle ``beta * Q_ij / (d_j - d_i)`` by the Jacobi angle
that diagonalises the 2 x 2 block of the updated matrix,

    theta_ij = atan(2 beta Q_ij / gap_ij) / 2,
    gap_ij   = (1 - beta gamma)(d_j - d_i) + beta (Q_jj - Q_ii),

which agrees with it to first order, never exceeds pi/4, and is zero where
both the gap and the coupling vanish (the Moore-Penrose choice for repeated
entries). The Cayley generator of a rotation by ``theta`` is ``tan(theta/2)``,
so every generator entry is at most ``tan(pi/8) ≈ 0.414`` in magnitude.

NOTE: where many entries of ``d`` are equal, as at an isotropic start
``S = c I``, no single rotation can carry the off-diagonal curvature. The
exact new eigenvectors inside the degenerate block are eigenvectors of that
block of ``H``, and only an eigensolver finds them. There the step keeps the
diagonal of ``H`` and only part of its off-diagonal. From ``S = I`` with a
symmetric Gaussian ``H``, the error of one step is 97.5% of the default
update's change at n = 60, against 98.7% without any rotation, and at
n = 100 the rotation no longer helps (99.2% against 98.9%). The scheme lags
the default update for the first steps until ``d`` spreads out. A start with distinct
eigenvalues avoids the lag.
"""

from __future__ import annotations

import math
from typing import Any

from spectral_es.core._backend import (
    arange_like,
    astype_like,
    at_least_float32,
    is_torch,
    namespace,
    per_matrix,
    per_vector,
)
from spectral_es.core._checks import (
    check_arrays,
    check_integer,
    check_method,
    check_same_dtype,
    check_scalar,
    check_solver_dtype,
    check_square,
    check_vector,
)
from spectral_es.core.cayley import _rotate

__all__ = [
    "cap_frobenius_norm",
    "cap_generator_norm",
    "eigenvalue_step",
    "generator_norm",
    "rotation_generator",
    "spectral_norm_estimate",
    "spectral_step",
    "squarings_needed",
]

GENERATOR_NORMS = ("frobenius", "spectral")
_GOLDEN_RATIO = (1 + math.sqrt(5)) / 2


def eigenvalue_step(d: Any, q: Any, beta: float, gamma: float = 0.0) -> Any:
    """Return ``d * exp(beta * (q - gamma * d) / d)``.

    NOTE: nothing bounds the log-step ``beta (q_i / d_i - gamma)``, so a
    curvature spike can underflow or overflow ``d``. Clip ``q`` first: to
    at most ``d (gamma + max_log_step / beta)`` as the ``max_log_step``
    option of :func:`spectral_step` does, and from below where ``q`` can be
    strongly negative.

    Args:
        d: Current eigenvalues, shape (n,), positive (not checked).
        q: Curvature on the eigenbasis diagonal, ``diag(B^T H B)``, shape (n,),
            in the dtype of ``d``.
        beta: Step size, > 0.
        gamma: Forgetting rate in [0, 1]: 0 to accumulate curvature, 1 for
            a moving average.

    Returns:
        The new eigenvalues, positive for positive ``d`` while the exponent
        is finite; same array type, dtype and device as ``d``. With ``B``
        fixed to the identity this is the whole diagonal (AdaGrad / RMSprop
        / SNES) step.
    """
    check_arrays("eigenvalue_step", d=d, q=q)
    n = check_vector("eigenvalue_step", "d", d)
    check_vector("eigenvalue_step", "q", q, n, source=f"d of shape ({n},)")
    check_same_dtype("eigenvalue_step", d=d, q=q)
    beta, gamma = _check_rates("eigenvalue_step", beta, gamma)
    return _eigenvalue_step(d, q, beta, gamma)


def _eigenvalue_step(d: Any, q: Any, beta: Any, gamma: Any) -> Any:
    """Return :func:`eigenvalue_step` for inputs already checked."""
    xp = namespace(d, q)
    return d * xp.exp(beta * (q - gamma * d) / d)


def _check_rates(caller: str, beta: Any, gamma: Any) -> tuple[Any, Any]:
    """Return ``beta`` (> 0, finite) and ``gamma`` (in [0, 1]) as Python floats, or raise ``ValueError``."""
    beta = check_scalar(caller, "beta", beta, minimum=0.0, inclusive=False, hint="use a finite step size > 0")
    gamma = check_scalar(
        caller,
        "gamma",
        gamma,
        minimum=0.0,
        maximum=1.0,
        hint="use a number in [0, 1] (0 accumulates curvature, 1 keeps a moving average)",
    )
    return beta, gamma


def rotation_generator(d: Any, Q: Any, beta: float, gamma: float = 0.0) -> Any:
    """Return the skew-symmetric Cayley generator ``N`` of one spectral step.

    To first order ``N_ij = (beta / 2) * Q_ij / (d_j - d_i)``; see the module
    docstring for the saturating Jacobi form used here and why.

    Args:
        d: Current eigenvalues, shape (n,), positive (not checked).
        Q: Curvature in the eigenbasis, ``B^T H B``, shape (n, n), in the
            dtype of ``d``. It must be symmetric (not checked): only its
            diagonal and strict lower triangle are read.
        beta: Step size, > 0.
        gamma: Forgetting rate in [0, 1]: 0 to accumulate curvature, 1 for
            a moving average.

    Returns:
        ``N``, shape (n, n), exactly skew-symmetric, entries bounded by
        ``tan(pi/8)``; same array type, dtype and device as ``Q``. A NaN in
        ``d`` or ``Q`` gives NaN entries in ``N`` (an infinite ``Q_ij`` too).
    """
    check_arrays("rotation_generator", d=d, Q=Q)
    n = check_vector("rotation_generator", "d", d)
    check_square("rotation_generator", "Q", Q, n, source=f"d of shape ({n},)")
    check_same_dtype("rotation_generator", d=d, Q=Q)
    beta, gamma = _check_rates("rotation_generator", beta, gamma)
    return _rotation_generator(d, Q, beta, gamma)


def _rotation_generator(d: Any, Q: Any, beta: Any, gamma: Any, scale: Any = 1.0) -> Any:
    """Return :func:`rotation_generator` of ``scale * Q`` for inputs already checked.

    ``scale`` (a number or a 0-d array) lets a caller pass an unnormalised
    curvature without first dividing the whole matrix by its normaliser.
    """
    xp = namespace(d, Q)
    n = Q.shape[-1]
    q = Q.diagonal(0, -2, -1) * per_vector(scale)
    a = (1 - beta * gamma) * d + beta * q  # diagonal of the updated matrix
    coupling = per_matrix(2 * beta * scale)

    # Only the strict lower triangle is needed. Row blocks [start, stop) up to
    # column stop cover it with about half the elementwise work of the full
    # matrix (contiguous slices, where gathering the triangle's indices costs
    # more than it saves). Each block's entries on and above the diagonal are
    # then zeroed, which touches n^2 / blocks entries instead of all n^2.
    lower = xp.zeros_like(Q)
    blocks = max(1, min(16, n // 64))
    edges = [n * k // blocks for k in range(blocks + 1)]
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        gap = a[..., None, :stop] - a[..., start:stop, None]  # gap[i, j] = a_j - a_i
        lower[..., start:stop, :stop] = _generator_entries(gap, coupling * Q[..., start:stop, :stop], xp)
        lower[..., start:stop, start:stop] = xp.tril(lower[..., start:stop, start:stop], -1)
    upper = lower.swapaxes(-1, -2)
    if is_torch(upper) and upper.device.type == "cpu":
        # torch's CPU kernels read a transposed operand across its rows: at
        # n = 1024 on one thread of an Intel Xeon, lower - lower.T took 5.1 ms
        # and lower - lower.T.contiguous() (a tiled transpose first) 1.7 ms.
        upper = upper.contiguous()
    return lower - upper


def _generator_entries(gap: Any, c: Any, xp: Any) -> Any:
    """Return ``tan(atan(sign(gap) c / |gap|) / 4)`` elementwise, 0 where ``gap = c = 0``.

    ``c`` is the coupling ``2 beta Q_ij`` up to the sign of the gap, in the
    dtype of ``gap``. With
    ``t = sign(gap) c / |gap|``, theta = atan(t) / 2 and the generator is
    tan(theta / 2) = tan(atan(t) / 4). Two half-angle steps give it with
    square roots only: ``u = tan(atan(t) / 2) = c / (|g| + sqrt(g^2 + c^2))``,
    ``|u| <= 1``, then ``tan(atan(t) / 4) = u / (1 + sqrt(1 + u^2))``. A zero
    gap gives ``u = +-1`` (a quarter turn of the pair), and zero gap and
    coupling give 0 (the Moore-Penrose choice). Both maps are odd, so the
    sign of the gap (+1 for a zero gap, which ``a_j - a_i`` returns as +0)
    is copied onto the denominator of ``u``. In-place updates of fresh
    temporaries keep the elementwise passes few. ``copysign`` replaces a
    comparison, a negation and a ``where``. ``hypot`` would avoid the
    underflow of ``g^2``, but it took five times as long in numpy.

    A zero denominator is replaced by 1, so ``u = c`` there. That is 0 for
    a zero coupling, and a tiny turn instead of the quarter turn where the
    gap is 0 and ``c^2`` underflows (``|c|`` below about 1e-22 in float32,
    1e-19 with denormals flushed). The pair's eigenvalues are then equal
    to within ``c``, so either turn leaves ``S`` as it is to that accuracy.
    ``denominator == 0`` is False for NaN, so a NaN gap or coupling gives
    NaN (and an infinite coupling ``inf / inf = NaN``) instead of the zero
    of "no rotation".

    A float16 or bfloat16 ``gap`` or ``c`` is widened to float32 first. In
    float16 ``g^2 + c^2`` is subnormal below about 6e-5 and rounds to a few
    bits, so ``|u|`` exceeded its bound 1 (an entry of 0.468 for couplings
    near 1e-3 and a zero gap).
    """
    gap, c = at_least_float32(gap), at_least_float32(c)
    denominator = xp.sqrt(gap * gap + c * c)
    denominator += xp.abs(gap)
    denominator += denominator == 0
    u = c / xp.copysign(denominator, gap)
    root = xp.sqrt(u * u + 1)
    root += 1
    u /= root
    return u


def spectral_step(
    d: Any,
    B: Any,
    Q: Any,
    beta: float,
    gamma: float = 0.0,
    *,
    method: str = "exact",
    max_generator_norm: float | None = None,
    max_log_step: float | None = None,
) -> tuple[Any, Any]:
    """Move ``S = B diag(d) B^T`` one step towards ``(1 - beta gamma) S + beta H``.

    The preconditions on the values (``d`` positive, ``B`` orthogonal, ``Q``
    symmetric) are not checked, because checking them would cost a pass over
    the data and a host synchronisation on a GPU.

    Args:
        d: Eigenvalues, shape (n,), positive.
        B: Orthogonal eigenbasis, shape (n, n), eigenvectors as columns.
        Q: Curvature in the eigenbasis, ``B^T H B``, shape (n, n), symmetric;
            it may be indefinite. Only its diagonal and strict lower
            triangle are read.
        beta: Step size, > 0.
        gamma: Forgetting rate in [0, 1]: 0 to accumulate curvature, 1 for
            a moving average.
        method: ``"exact"`` (one linear solve, float32 or float64 only) or
            ``"truncated"`` (four matrix products, any floating dtype) Cayley
            map.
        max_generator_norm: Cap (> 0) on the Frobenius norm of the Cayley
            generator; a larger generator is scaled down, which shortens the
            rotation but keeps its direction. Defaults to no cap for the
            exact map and to 0.25 for the truncated one, whose orthogonality
            defect at that norm is at most 2.7e-6 (see
            :func:`spectral_es.core.cayley_truncated`).
        max_log_step: Upper bound (> 0) on the log-change
            ``beta (q_i / d_i - gamma)`` of one eigenvalue, as in
            :func:`spectral_es.core.kron.kron_factor_step`; ``None`` (the
            default) for none. Without it a curvature spike ``q_i = 200 d_i``
            at ``beta = 1`` grows ``d_i`` by ``exp(200)``. The rotation
            still uses the whole ``Q``. NOTE: shrinking is not bounded, so
            ``q_i = -200 d_i`` still scales ``d_i`` by ``exp(-200)``; a
            caller that needs a floor clips ``diag(Q)`` from below first.

    Returns:
        ``(d_new, B_new)`` with the dtype and device of the inputs. ``d_new``
        is positive for positive ``d`` while the exponent is finite;
        ``B_new`` is orthogonal to rounding (exact map) or to the truncation
        error (truncated map). NaN in ``d`` or ``Q`` propagates into both.
        Cost O(n^3): one solve with n right-hand sides (exact map) or five
        matrix products (truncated).

    Raises:
        TypeError: for inputs that mix numpy and torch or dtypes, are not
            real floating point, or are float16 or bfloat16 with the exact
            map.
        ValueError: for a shape other than (n,), (n, n), (n, n), or an
            option out of range.
    """
    caller = "spectral_step"
    xp = check_arrays(caller, d=d, B=B, Q=Q)
    n = check_vector(caller, "d", d)
    check_square(caller, "B", B, n, source=f"d of shape ({n},)")
    check_square(caller, "Q", Q, n, source=f"d of shape ({n},)")
    check_same_dtype(caller, d=d, B=B, Q=Q)
    beta, gamma = _check_rates(caller, beta, gamma)
    check_method(caller, method)
    if method == "exact":
        check_solver_dtype(caller, "B", B, 'use method="truncated" or cast d, B and Q to float32')
    if max_generator_norm is None and method == "truncated":
        max_generator_norm = 0.25
    if max_generator_norm is not None:
        max_generator_norm = _check_max_norm(caller, "max_generator_norm", max_generator_norm)
    if max_log_step is not None:
        max_log_step = check_scalar(
            caller, "max_log_step", max_log_step, minimum=0.0, inclusive=False, hint="use a number > 0, or None"
        )

    q = xp.diagonal(Q)
    if max_log_step is not None:
        q = xp.minimum(q, d * (gamma + max_log_step / beta))
    d_new = _eigenvalue_step(d, q, beta, gamma)
    N = _rotation_generator(d, Q, beta, gamma)
    if max_generator_norm is not None:
        N = _cap_generator_norm(N, max_generator_norm, "frobenius")
    return d_new, _rotate(B, N, method, order=8, squarings=0)


def _check_max_norm(caller: str, name: str, value: Any) -> Any:
    """Return a norm cap as a Python float if it is > 0 (infinity allowed); raise ``ValueError`` otherwise."""
    return check_scalar(
        caller,
        name,
        value,
        minimum=0.0,
        inclusive=False,
        finite=False,
        hint="use a number > 0 (a cap <= 0 would reverse or drop the rotation)",
    )


def cap_frobenius_norm(N: Any, max_norm: float) -> Any:
    """Return ``N`` scaled down to Frobenius norm ``max_norm`` (> 0) if it is longer.

    Array operations only, so a GPU tensor needs no host synchronisation.
    """
    return cap_generator_norm(N, max_norm, "frobenius")


def spectral_norm_estimate(N: Any, iterations: int = 10) -> Any:
    """Estimate ``‖N‖_2``, the largest singular value of ``N``, by power iteration.

    Runs ``iterations`` steps of ``v <- N^T N v / ‖N^T N v‖`` and returns
    ``‖N v‖``. The start ``v_i = cos(2 pi g i + 1)``, with ``g`` the golden
    ratio, spreads its weight over all coordinates like a random vector but
    is computed on the device of ``N`` and is the same for every call, so
    the estimate is deterministic. The result is a lower bound on ``‖N‖_2``
    that approaches it as the iteration converges. Cost: ``2 iterations``
    matrix-vector products, O(n^2) each, and no host synchronisation.

    Returns:
        A 0-d array in the dtype and on the device of ``N``.
    """
    check_arrays("spectral_norm_estimate", N=N)
    check_square("spectral_norm_estimate", "N", N)
    return _spectral_norm_estimate(N, iterations)


def _spectral_norm_estimate(N: Any, iterations: int = 10) -> Any:
    """Return :func:`spectral_norm_estimate` for an ``N`` already checked, in the dtype of ``N``."""
    return astype_like(_wide_spectral_norm_estimate(N, iterations), N)


def _wide_spectral_norm_estimate(N: Any, iterations: int) -> Any:
    """Return :func:`spectral_norm_estimate` of ``N`` in at least float32.

    A float16 or bfloat16 ``N`` is copied to float32 first, because in
    float16 the iteration gives NaN. The squares of ``N^T N v`` underflow to
    0 once ``‖N‖`` is below about 1e-2, the floor 1e-30 rounds to 0, and the
    start vector's arguments overflow for n above 6443.
    """
    xp = namespace(N)
    N = at_least_float32(N)
    v = xp.cos(arange_like(N.shape[-1], N) * (2 * math.pi * _GOLDEN_RATIO) + 1.0)
    v = v / xp.sqrt(xp.sum(v * v))
    if N.ndim > 2:
        # A stack of matrices: v becomes a stack of columns, one per matrix.
        v = v[:, None]
        for _ in range(iterations):
            w = N.swapaxes(-1, -2) @ (N @ v)
            v = w / per_matrix(xp.clip(xp.sqrt(xp.sum(w * w, axis=(-2, -1))), 1e-30, None))
        Nv = N @ v
        return xp.sqrt(xp.sum(Nv * Nv, axis=(-2, -1)))
    for _ in range(iterations):
        w = N.T @ (N @ v)
        v = w / xp.clip(xp.sqrt(xp.sum(w * w)), 1e-30, None)
    Nv = N @ v
    return xp.sqrt(xp.sum(Nv * Nv))


def generator_norm(N: Any, norm: str = "frobenius") -> Any:
    """Return ``‖N‖_F`` (``norm="frobenius"``) or the estimate of ``‖N‖_2`` (``"spectral"``).

    The spectral norm comes from :func:`spectral_norm_estimate` and is
    smaller than the Frobenius norm by up to a factor ``sqrt(n)``. Either
    result is a 0-d array.
    """
    check_arrays("generator_norm", N=N)
    check_square("generator_norm", "N", N)
    _check_generator_norm("generator_norm", "norm", norm)
    return _generator_norm(N, norm)


def _check_generator_norm(caller: str, name: str, norm: Any) -> None:
    """Raise ``ValueError`` unless ``norm`` is one of ``GENERATOR_NORMS``."""
    if norm not in GENERATOR_NORMS:
        raise ValueError(f"{caller}: invalid {name} {norm!r}; use one of {GENERATOR_NORMS}")


def _generator_norm(N: Any, norm: str) -> Any:
    """Return :func:`generator_norm` for inputs already checked, in the dtype of ``N``."""
    return astype_like(_wide_generator_norm(N, norm), N)


def _wide_generator_norm(N: Any, norm: str) -> Any:
    """Return :func:`generator_norm` of ``N`` in at least float32.

    In float16 the sum of squares overflows past 65504. A generator whose
    entries all saturate at ``tan(pi/8)``, as at an isotropic start, reaches
    that from about n = 620, and a cap then scales it to zero.
    """
    if norm == "spectral":
        return _wide_spectral_norm_estimate(N, 10)
    xp = namespace(N)
    wide = at_least_float32(N)
    return xp.sqrt(xp.sum(wide * wide, axis=(-2, -1)))


def cap_generator_norm(N: Any, max_norm: float, norm: str = "frobenius") -> Any:
    """Return ``N`` scaled down so that its ``norm`` (see :func:`generator_norm`) is at most ``max_norm``.

    ``max_norm`` must be > 0; infinity leaves ``N`` unchanged. A NaN entry
    of ``N`` makes the whole result NaN, and an infinite one gives NaN there
    and zeros elsewhere. Array operations only, so a GPU tensor needs no
    host synchronisation.
    """
    check_arrays("cap_generator_norm", N=N)
    check_square("cap_generator_norm", "N", N)
    max_norm = _check_max_norm("cap_generator_norm", "max_norm", max_norm)
    _check_generator_norm("cap_generator_norm", "norm", norm)
    return _cap_generator_norm(N, max_norm, norm)


def _cap_generator_norm(N: Any, max_norm: Any, norm: str) -> Any:
    """Return :func:`cap_generator_norm` for inputs already checked."""
    xp = namespace(N)
    scale = xp.clip(max_norm / xp.clip(_wide_generator_norm(N, norm), 1e-30, None), None, 1.0)
    return N * per_matrix(astype_like(scale, N))


def squarings_needed(N: Any, max_norm: float, max_squarings: int, norm: str = "frobenius") -> int:
    """Return the smallest ``s <= max_squarings`` with ``‖N‖ / 2^s <= max_norm``.

    The number of squarings that lets :func:`spectral_es.core.cayley_truncated`
    rotate by the whole generator ``N``; a longer ``N`` still needs
    :func:`cap_generator_norm` at ``max_norm * 2^s``. ``norm`` is that of
    :func:`generator_norm`. Reads the norm on the host, so a GPU tensor
    costs one synchronisation. A NaN norm gives 0 and an infinite norm
    ``max_squarings``; either way the capped generator then contains NaN.

    Raises:
        TypeError: for a ``max_squarings`` that is not an integer.
        ValueError: unless ``max_norm`` is a finite number > 0,
            ``max_squarings`` >= 0 and ``norm`` one of ``GENERATOR_NORMS``.
    """
    caller = "squarings_needed"
    check_arrays(caller, N=N)
    check_square(caller, "N", N)
    max_norm = check_scalar(caller, "max_norm", max_norm, minimum=0.0, inclusive=False, hint="use a finite number > 0")
    max_squarings = check_integer(caller, "max_squarings", max_squarings, minimum=0, hint="use an integer >= 0")
    _check_generator_norm(caller, "norm", norm)
    return _squarings_needed(N, max_norm, max_squarings, norm)


def _squarings_needed(N: Any, max_norm: float, max_squarings: int, norm: str) -> Any:
    """Return :func:`squarings_needed` for inputs already checked.

    For a stack of matrices (``N.ndim > 2``) the result is a list of
    counts, one per matrix, read on the host in one synchronisation.
    """
    values = _wide_generator_norm(N, norm)
    if N.ndim > 2:
        return [_squarings_for(value, max_norm, max_squarings) for value in values.reshape(-1).tolist()]
    return _squarings_for(float(values), max_norm, max_squarings)


def _squarings_for(value: float, max_norm: float, max_squarings: int) -> int:
    """Return the smallest ``s <= max_squarings`` with ``value / 2^s <= max_norm``."""
    if not value > max_norm:
        return 0
    if math.isinf(value):
        return max_squarings
    return min(max_squarings, math.ceil(math.log2(value / max_norm)))


# Used by docstrings and tests: the bound on any single generator entry.
MAX_GENERATOR_ENTRY = math.tan(math.pi / 8)
