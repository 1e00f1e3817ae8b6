r"""The Kronecker spectral step for a matrix parameter.

For a weight matrix ``M`` (n x m) with gradient ``G`` the curvature of
``g = vec(G)`` (rows of ``G`` concatenated) is kept as

    S = alpha * (S_C kron S_K),    S_l = B_l diag(d_l) B_l^T,    prod(d_l) = 1,

with ``S_C`` (n x n) acting on the rows and ``S_K`` (m x m) on the columns.
The determinant constraints plus the scalar ``alpha > 0`` make the
factorisation unique. One step of size ``beta`` moves every factor directly
(Lin et al. (2025), "Spectral-factorized positive-definite curvature learning
for NN training", Fig. 1 and its appendix on Kronecker factors):

    Y   = B_C^T G B_K                          (gradient in the eigenbases)
    W_C = Y diag(1/d_K) Y^T = B_C^T G S_K^{-1} G^T B_C
    W_K = Y^T diag(1/d_C) Y = B_K^T G^T S_C^{-1} G B_K
    m_l = (diag(W_l) / (alpha kappa_l) - gamma d_l) / d_l,   kappa_C = m, kappa_K = n
    d_l <- d_l * exp(beta (m_l - mean(m_l)))                 (keeps prod(d_l) = 1)
    B_l <- B_l Cayley((beta / 2) Skew(Tril(U_l))),
           U_l,ij = -W_l,ij / (alpha kappa_l (d_l,i - d_l,j))
    alpha <- alpha * exp(beta (mean(m_C) + mean(m_K)) / 2)

and the preconditioned direction of a matrix ``V`` is

    alpha^{-1/p} S_C^{-1/p} V S_K^{-1/p}
        = B_C [(B_C^T V B_K) / (alpha d_C d_K^T)^{1/p}] B_K^T.

Each factor is therefore the spectral step of :mod:`spectral_es.core.step`
applied to the curvature ``Q_l = W_l / (alpha kappa_l)``, with the
eigenvalues recentred so that ``prod(d_l) = 1`` and their common scale moved
into ``alpha``. The 1/2 in the Cayley argument (which the box of Fig. 1 of
that paper omits) is what makes one step match, to first order in ``beta``,
the Fisher-metric projection of the full-matrix update
``S <- (1 - beta gamma) S + beta g g^T`` onto Kronecker-structured matrices;
:func:`spectral_es.core.rotation_generator` builds it in. Analytically
``mean(m_C) = mean(m_K) = -gamma + g^T S^{-1} g / (alpha n m)``.

A factor may be *diagonal*: ``B_l`` is then ``None`` (the identity, never
stored), only ``d_l`` moves, and only ``diag(W_l)`` is computed, in O(nm).
That is the fallback for sides too large for an n x n matrix.

Every function accepts numpy arrays or torch tensors and keeps the dtype and
device of its inputs. ``d`` and ``alpha`` may be held in a wider dtype than
``B`` and ``G`` (float32 next to a bfloat16 eigenbasis, say): products with
``B`` run in the dtype of ``B`` and elementwise work on ``d`` in the dtype of
``d``. So the dtype rule here has two groups: ``d_C`` and ``d_K`` share one
dtype, and ``B_C``, ``B_K``, ``G`` and ``V`` share another; ``W`` may be in
either. A mix within a group raises ``TypeError``. ``alpha`` is a number
(converted to a Python float) or a 0-d torch tensor of any floating dtype:
torch gives a product of a 0-d tensor and a larger floating tensor the
dtype of the larger one.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from spectral_es.core._backend import astype_like, is_narrow, is_torch, namespace, per_matrix, per_vector
from spectral_es.core._checks import (
    check_arrays,
    check_integer,
    check_matrix,
    check_method,
    check_same_dtype,
    check_scalar,
    check_solver_dtype,
    check_square,
    check_vector,
)
from spectral_es.core.cayley import _check_truncation, _rotate
from spectral_es.core.step import (
    _cap_generator_norm,
    _check_generator_norm,
    _check_max_norm,
    _check_rates,
    _eigenvalue_step,
    _rotation_generator,
    _squarings_needed,
    _wide_generator_norm,
)

__all__ = [
    "kron_curvature",
    "kron_factor_step",
    "kron_precondition",
    "kron_rotate",
    "kron_step",
    "kron_unrotate",
]


def kron_rotate(B_C: Any | None, V: Any, B_K: Any | None) -> Any:
    """Return ``B_C^T V B_K``, ``V`` (n, m) expressed in the two eigenbases.

    A ``None`` factor is the identity and costs nothing. ``B_C`` is (n, n)
    and ``B_K`` (m, m), both in the dtype of ``V``, the dtype of the result.
    """
    _check_bases("kron_rotate", B_C, V, B_K)
    return _kron_rotate(B_C, V, B_K)


def _kron_rotate(B_C: Any | None, V: Any, B_K: Any | None) -> Any:
    """Return :func:`kron_rotate` for inputs already checked."""
    if B_C is not None:
        V = B_C.swapaxes(-1, -2) @ V
    if B_K is not None:
        V = V @ B_K
    return V


def kron_unrotate(B_C: Any | None, V: Any, B_K: Any | None) -> Any:
    """Return ``B_C V B_K^T``, the inverse of :func:`kron_rotate`."""
    _check_bases("kron_unrotate", B_C, V, B_K)
    return _kron_unrotate(B_C, V, B_K)


def _kron_unrotate(B_C: Any | None, V: Any, B_K: Any | None) -> Any:
    """Return :func:`kron_unrotate` for inputs already checked."""
    if B_C is not None:
        V = B_C @ V
    if B_K is not None:
        V = V @ B_K.swapaxes(-1, -2)
    return V


def _check_bases(
    caller: str, B_C: Any | None, V: Any, B_K: Any | None, *, name: str = "V", **others: Any
) -> tuple[int, int]:
    """Return the shape (n, m) of ``V`` after checking that ``B_C`` (n, n), ``V`` and ``B_K`` (m, m) fit.

    ``name`` is the caller's name for ``V`` in error messages. ``others`` are
    further arrays of the call, checked for their library and dtype kind in
    the same pass (one pass costs less on every step).
    """
    bases = {name: V}
    if B_C is not None:
        bases["B_C"] = B_C
    if B_K is not None:
        bases["B_K"] = B_K
    check_arrays(caller, **bases, **others)
    n, m = check_matrix(caller, name, V)
    source = f"{name} of shape {(n, m)}"
    if B_C is not None:
        check_square(caller, "B_C", B_C, n, source=source)
    if B_K is not None:
        check_square(caller, "B_K", B_K, m, source=source)
    check_same_dtype(caller, **bases)
    return n, m


def _check_alpha(caller: str, alpha: Any, d: Any) -> Any:
    """Return ``alpha``, a Python float if it was a number, after checking it against ``d``.

    A number must be finite and > 0. A torch tensor must be 0-d, with a
    real dtype, and next to a torch ``d``. Its value is not checked,
    because reading it would synchronise with a GPU.
    """
    if is_torch(alpha) and not is_torch(d):
        check_arrays(caller, d=d, alpha=alpha)  # raises for numpy d next to a torch alpha
    return check_scalar(caller, "alpha", alpha, minimum=0.0, inclusive=False, hint="use a finite scale > 0")


def kron_curvature(Y: Any, d_other: Any, *, full: bool = True) -> Any:
    """Return ``W = Y diag(1/d_other) Y^T``, the curvature of the row factor of ``Y``.

    With ``Y = B_C^T G B_K`` from :func:`kron_rotate`, the row factor's
    curvature is ``W_C = kron_curvature(Y, d_K)`` (n, n) and the column
    factor's is ``W_K = kron_curvature(Y.T, d_C)`` (m, m). For a diagonal
    factor (``full=False``) only the diagonal is returned, at O(nm) cost
    instead of one O(n^2 m) product.

    Args:
        Y: Rotated gradient, shape (r, c).
        d_other: Eigenvalues of the other factor, shape (c,), positive.
        full: Whether to return the whole (r, r) matrix or its diagonal (r,).

    Returns:
        The full matrix in the dtype of ``Y`` (one matrix product), or the
        diagonal in the promoted dtype of ``Y`` and ``d_other`` (float32 for
        a bfloat16 ``Y`` next to a float32 ``d_other``).
    """
    check_arrays("kron_curvature", Y=Y, d_other=d_other)
    _, columns = check_matrix("kron_curvature", "Y", Y)
    check_vector("kron_curvature", "d_other", d_other, columns)
    return _kron_curvature(Y, d_other, full)


def _kron_curvature(Y: Any, d_other: Any, full: bool) -> Any:
    """Return :func:`kron_curvature` for inputs already checked."""
    if full:
        return (Y * astype_like(1 / d_other, Y)[..., None, :]) @ Y.swapaxes(-1, -2)
    return (Y * Y * (1 / d_other)[..., None, :]).sum(-1)


def kron_factor_step(
    d: Any,
    B: Any | None,
    W: Any,
    alpha: Any,
    kappa: int,
    beta: float,
    gamma: float = 1.0,
    *,
    method: str = "exact",
    order: int = 8,
    max_generator_norm: float | None = None,
    cap_norm: str = "frobenius",
    max_squarings: int = 0,
    damping: float = 0.0,
    max_log_step: float | None = None,
) -> tuple[Any, Any | None, Any]:
    """Move one Kronecker factor ``S_l = B diag(d) B^T`` one step.

    With ``Q = W / (alpha kappa) + damping I`` (the factor's curvature in its
    eigenbasis) this is the spectral step of :func:`spectral_step`
    (``d <- d exp(beta (q - gamma d) / d)``, ``B <- B Cayley(N)``), followed
    by recentring ``d`` to ``prod(d) = 1``:

        d_new = d exp(beta m) / exp(mean(log(d exp(beta m)))),
        rate  = mean(log(d exp(beta m))) - mean(log d)  (= beta mean(m)).

    The caller moves ``alpha`` by ``exp(rate)`` shared among the factors
    (half each for a pair); :func:`kron_step` does.

    Args:
        d: Eigenvalues, shape (n,), positive (not checked); ``prod(d) = 1``
            is restored by the step even if rounding has moved it.
        B: Orthogonal eigenbasis (n, n), eigenvectors as columns, or ``None``
            for a diagonal factor (``B = I``, kept fixed).
        W: ``B^T X B`` for the factor's raw curvature ``X`` (for example
            ``G S_K^{-1} G^T``), shape (n, n), symmetric; for a diagonal
            factor its diagonal, shape (n,). It is cast to the dtype of
            ``d``, in which the eigenvalue step and the generator run.
        alpha: The Kronecker scale, > 0: a number or a 0-d tensor.
        kappa: Size of the other side (``m`` for ``S_C``, ``n`` for ``S_K``).
        beta: Step size, > 0.
        gamma: Forgetting rate in [0, 1]: 1 for a moving average of the
            curvature, 0 to accumulate.
        method: ``"exact"`` (``B`` in float32 or float64) or ``"truncated"``
            Cayley map for ``B``.
        order: Truncation order of the truncated map (a power of two; 8:
            ``(I + N)^2 (I + N^2)(I + N^4)``, 4: ``(I + N)^2 (I + N^2)``);
            see :func:`spectral_es.core.cayley_truncated`.
        max_generator_norm: Cap (> 0) on the norm of the Cayley generator,
            applied with array operations (no host synchronisation); ``None``
            for no cap. The truncated map needs one well below 1.
        cap_norm: The norm that ``max_generator_norm`` caps: ``"frobenius"``
            or ``"spectral"`` (estimated by power iteration; see
            :func:`spectral_es.core.step.spectral_norm_estimate`). The
            truncation error of the map depends on the spectral norm, which
            is up to ``sqrt(n)`` times smaller, so a spectral cap lets longer
            generators through for the same error bound.
        max_squarings: For the truncated map with a cap, the most squarings
            ``s`` of :func:`spectral_es.core.cayley_truncated`. A generator
            longer than the cap is rotated by the map of ``N / 2^s`` squared
            ``s`` times, with the smallest ``s`` that brings it under the cap,
            so the cap only bounds ``‖N‖ / 2^max_squarings``. Choosing
            ``s`` reads the norm on the host (one synchronisation), and each
            squaring costs one product.
        damping: Added to the curvature's diagonal, >= 0, in units of ``d`` (whose
            geometric mean is 1). A direction without curvature then settles
            at ``d`` about ``damping`` instead of decaying towards 0, which
            keeps ``S_l^{-1}`` bounded where the gradient never reaches.
        max_log_step: Upper bound (> 0) on ``beta * m_i``, the log-change of
            one eigenvalue before recentring; ``None`` for none. The exponential
            step multiplies ``d_i`` by ``exp(beta (q_i / d_i - gamma))``, which
            overflows for a gradient spike where a moving average would
            grow by ``beta q_i / d_i``; the cap bounds that growth.

    Returns:
        ``(d_new, B_new, rate)``: ``d_new`` positive with ``prod = 1`` up to
        rounding, in the dtype of ``d``; ``B_new`` in the dtype of ``B`` (or
        ``None``); ``rate`` a 0-d array in the dtype of ``d``.
    """
    caller = "kron_factor_step"
    if B is None:
        check_arrays(caller, d=d, W=W)
        n = check_vector(caller, "d", d)
        check_vector(caller, "W", W, n)
    else:
        check_arrays(caller, d=d, B=B, W=W)
        n = check_vector(caller, "d", d)
        check_square(caller, "B", B, n)
        check_square(caller, "W", W, n)
    alpha = _check_alpha(caller, alpha, d)
    kappa = check_integer(caller, "kappa", kappa, minimum=1, hint="use the size of the other side, an integer >= 1")
    beta, gamma = _check_rates(caller, beta, gamma)
    options = _check_factor_options(
        caller,
        {"B": B},
        method=method,
        order=order,
        max_generator_norm=max_generator_norm,
        cap_norm=cap_norm,
        max_squarings=max_squarings,
        damping=damping,
        max_log_step=max_log_step,
    )
    return _kron_factor_step(d, B, W, alpha, kappa, beta, gamma, options)


class _FactorOptions(NamedTuple):
    """The keyword options of :func:`kron_factor_step` after checking, numbers as Python floats and ints."""

    method: str
    order: int
    max_generator_norm: float | None
    cap_norm: str
    max_squarings: int
    damping: float
    max_log_step: float | None


def _check_factor_options(
    caller: str,
    bases: dict[str, Any | None],
    *,
    method: Any,
    order: Any,
    max_generator_norm: Any,
    cap_norm: Any,
    max_squarings: Any,
    damping: Any,
    max_log_step: Any,
) -> _FactorOptions:
    """Check the keyword options of :func:`kron_factor_step` and return them as ``_FactorOptions``.

    ``bases`` maps names to the eigenbases that the exact map would solve in.
    """
    check_method(caller, method)
    if method == "exact":
        for name, B in bases.items():
            if B is not None:
                check_solver_dtype(caller, name, B, f'use method="truncated" or keep {name} in float32')
    else:
        order, _ = _check_truncation(caller, order, 0)
    if max_generator_norm is not None:
        max_generator_norm = _check_max_norm(caller, "max_generator_norm", max_generator_norm)
    _check_generator_norm(caller, "cap_norm", cap_norm)
    max_squarings = check_integer(caller, "max_squarings", max_squarings, minimum=0, hint="use an integer >= 0")
    damping = check_scalar(caller, "damping", damping, minimum=0.0, hint="use a finite number >= 0")
    if max_log_step is not None:
        max_log_step = check_scalar(
            caller, "max_log_step", max_log_step, minimum=0.0, inclusive=False, hint="use a finite number > 0, or None"
        )
    return _FactorOptions(method, order, max_generator_norm, cap_norm, max_squarings, damping, max_log_step)


def _kron_factor_step(
    d: Any, B: Any | None, W: Any, alpha: Any, kappa: int, beta: float, gamma: float, options: _FactorOptions
) -> tuple[Any, Any | None, Any]:
    """Return :func:`kron_factor_step` for inputs already checked."""
    d_new, N, rate, squarings = _kron_factor_generator(d, B, W, alpha, kappa, beta, gamma, options)
    if N is None:
        return d_new, None, rate
    return d_new, _rotate(B, N, options.method, options.order, squarings), rate


def _kron_factor_generator(
    d: Any, B: Any | None, W: Any, alpha: Any, kappa: int, beta: float, gamma: float, options: _FactorOptions
) -> tuple[Any, Any | None, Any, Any]:
    """Return the parts of :func:`kron_factor_step` that precede the rotation of ``B``.

    These are ``(d_new, N, rate, squarings)``: ``d_new`` and ``rate`` as
    :func:`kron_factor_step` returns them, the capped Cayley generator ``N``
    in the dtype of ``B`` (``None`` for a diagonal factor), and the number
    of squarings its map takes (a list for a stack). The step's new
    eigenbasis is ``_rotate(B, N, method, order, squarings)``.
    """
    xp = namespace(d, W)
    # Q = W / (alpha kappa) enters only through its diagonal and the
    # generator, so the scale is applied there and never to the whole matrix.
    W = astype_like(W, d)
    scale = 1 / (alpha * kappa)
    q = (W if B is None else W.diagonal(0, -2, -1)) * per_vector(scale) + options.damping
    if options.max_log_step is not None:
        q = xp.minimum(q, d * (gamma + options.max_log_step / beta))

    # Eigenvalues: the spectral step, then recentring to prod(d) = 1.
    d_step = _eigenvalue_step(d, q, beta, gamma)
    log_d_step = xp.log(d_step)
    center = xp.mean(log_d_step, axis=-1)
    rate = center - xp.mean(xp.log(d), axis=-1)
    d_new = xp.exp(log_d_step - per_vector(center))
    if B is None:
        return d_new, None, rate, 0

    # Eigenbasis: the Cayley rotation, generator from the current d.
    N = _rotation_generator(d, W, beta, gamma, scale)
    squarings = 0
    cap = options.max_generator_norm
    if cap is not None:
        if options.method == "truncated" and options.max_squarings > 0:
            squarings = _squarings_needed(N, cap, options.max_squarings, options.cap_norm)
        if isinstance(squarings, list):  # one count per matrix of a stack
            caps = xp.asarray([cap * 2**s for s in squarings], dtype=N.dtype, device=N.device)
            N = _cap_generator_norm(N, caps, options.cap_norm)
        else:
            N = _cap_generator_norm(N, cap * 2**squarings, options.cap_norm)
    return d_new, astype_like(N, B), rate, squarings


def _rotate_by_generator(B: Any, N: Any, options: _FactorOptions) -> Any:
    """Return ``B Cayley(N)`` for a generator ``N`` that :func:`_kron_factor_generator` returned earlier.

    The squarings and the cap follow ``options`` again. The number of
    squarings is read again from ``N``: the cap leaves the norm of ``N`` at
    most ``max_generator_norm * 2^s`` for the ``s`` that
    :func:`_kron_factor_generator` chose, so the count comes out the same,
    except where rounding moves a norm at the cap across a power of two.
    A generator capped under the same options is otherwise left as it is,
    so the rotation equals that of :func:`_kron_factor_step`. One that
    exceeds the cap by more than :data:`_RECAP_TOLERANCE` was made under
    other options, and it is capped again, because the truncated map of a
    long generator is far from orthogonal. The exact map's generators are
    not capped at all, and squarings admit ``2^s`` times the cap.
    """
    cap = options.max_generator_norm
    if cap is None:
        return _rotate(B, N, options.method, options.order, 0)
    squarings: Any = 0
    if options.method == "truncated" and options.max_squarings > 0:
        squarings = _squarings_needed(N, cap, options.max_squarings, options.cap_norm)
    return _rotate(B, _recap_generator(N, cap, squarings, options.cap_norm), options.method, options.order, squarings)


# How far a stored generator may exceed the cap of the options that rotate
# by it before it is capped again. One capped under the same options
# exceeds it only by the rounding of its cast to the state dtype: at most
# 2^-8 relative per entry in bfloat16, which moves the Frobenius norm by at
# most that factor. 2^-5 leaves room for the spectral norm's estimate, and
# at most adds a factor (1 + 2^-5)^8 = 1.28 to the order-8 map's defect bound.
_RECAP_TOLERANCE = 2**-5


def _recap_generator(N: Any, cap: float, squarings: Any, norm: str) -> Any:
    """Return ``N`` capped at ``cap * 2^squarings`` if it exceeds that by more than :data:`_RECAP_TOLERANCE`.

    ``squarings`` is a number, or a list for a stack. A generator within
    the tolerance is returned unchanged, bit for bit. Array operations
    only, so a GPU tensor needs no host synchronisation.
    """
    xp = namespace(N)
    norms = _wide_generator_norm(N, norm)
    if isinstance(squarings, list):  # one count per matrix of a stack
        limits = xp.asarray([cap * 2**s for s in squarings], dtype=norms.dtype, device=norms.device)
    else:
        limits = cap * 2**squarings
    scale = xp.where(norms > limits * (1 + _RECAP_TOLERANCE), limits / xp.clip(norms, 1e-30, None), 1.0)
    return N * per_matrix(astype_like(scale, N))


def _with_default_options(caller: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return ``options`` completed with the keyword defaults of :func:`kron_factor_step`.

    Raises ``TypeError`` for a name that is not one of its keyword options.
    """
    # kron_factor_step has keyword-only parameters with defaults, so __kwdefaults__ is a dict, not None.
    defaults = cast("dict[str, Any]", kron_factor_step.__kwdefaults__)
    unknown = sorted(options.keys() - defaults.keys())
    if unknown:
        raise TypeError(f"{caller}: unknown option {unknown[0]!r}; the options are {', '.join(defaults)}")
    return {**defaults, **options}


def kron_step(
    d_C: Any,
    B_C: Any | None,
    d_K: Any,
    B_K: Any | None,
    alpha: Any,
    G: Any,
    beta: float,
    gamma: float = 1.0,
    **options: Any,
) -> tuple[Any, Any | None, Any, Any | None, Any]:
    """Move all factors of ``S = alpha (S_C kron S_K)`` one step on gradient ``G``.

    Computes ``Y = B_C^T G B_K``, the curvatures ``W_C`` and ``W_K`` of
    :func:`kron_curvature` (both from the current factors), one
    :func:`kron_factor_step` per factor, and
    ``alpha <- alpha exp((rate_C + rate_K) / 2)``. To first order in
    ``beta`` the new ``S`` is the current one plus ``beta`` times the
    Fisher-metric projection of ``g g^T - gamma S`` (``g = vec(G)``, rows
    concatenated) onto Kronecker-structured matrices.

    Args:
        d_C, B_C: Row factor, shapes (n,) and (n, n) (or ``None``: diagonal).
        d_K, B_K: Column factor, shapes (m,) and (m, m) (or ``None``).
        alpha: Scale, > 0.
        G: Gradient, shape (n, m), in the dtype of the eigenbases.
        beta: Step size, > 0.
        gamma: 1 for a moving average of ``g g^T``, 0 to accumulate.
        **options: ``method``, ``order``, ``max_generator_norm``,
            ``cap_norm``, ``max_squarings``, ``damping`` and
            ``max_log_step``, as in :func:`kron_factor_step` and with its
            defaults. Both factors use them; another name raises
            ``TypeError``.

    Returns:
        ``(d_C, B_C, d_K, B_K, alpha)`` after the step. Cost: two products for
        ``Y``, one per full factor for ``W``, and one Cayley rotation per full
        factor.
    """
    caller = "kron_step"
    n, m = _check_bases(caller, B_C, G, B_K, name="G", d_C=d_C, d_K=d_K)
    xp = namespace(d_C, d_K)
    check_vector(caller, "d_C", d_C, n)
    check_vector(caller, "d_K", d_K, m)
    check_same_dtype(caller, d_C=d_C, d_K=d_K)
    alpha = _check_alpha(caller, alpha, d_C)
    beta, gamma = _check_rates(caller, beta, gamma)
    checked = _check_factor_options(caller, {"B_C": B_C, "B_K": B_K}, **_with_default_options(caller, options))

    # Every input is checked, so the steps below use the unchecked parts.
    Y = _kron_rotate(B_C, G, B_K)
    W_C = _kron_curvature(Y, d_K, full=B_C is not None)
    W_K = _kron_curvature(Y.T, d_C, full=B_K is not None)
    d_C, B_C, rate_C = _kron_factor_step(d_C, B_C, W_C, alpha, m, beta, gamma, checked)
    d_K, B_K, rate_K = _kron_factor_step(d_K, B_K, W_K, alpha, n, beta, gamma, checked)
    return d_C, B_C, d_K, B_K, alpha * xp.exp((rate_C + rate_K) / 2)


def kron_precondition(
    d_C: Any, B_C: Any | None, d_K: Any, B_K: Any | None, alpha: Any, V: Any, p: float, eps: float = 0.0
) -> Any:
    """Return ``B_C [(B_C^T V B_K) / ((alpha d_C d_K^T)^{1/p} + eps)] B_K^T``.

    With ``eps = 0`` this is ``alpha^{-1/p} S_C^{-1/p} V S_K^{-1/p}``, the
    inverse ``p``-th root of ``S`` applied to ``vec(V)``; ``eps > 0`` damps
    every eigenvalue ``(alpha d_C,i d_K,j)^{1/p}`` of ``S^{1/p}`` by ``eps``,
    as Adam's ``eps`` does. Any ``p > 0`` costs the same: four products
    with the eigenbases (two per full factor) and one elementwise scaling.

    Args:
        d_C, B_C, d_K, B_K, alpha: The factors, as in :func:`kron_step`.
        V: Matrix to precondition, shape (n, m), in the dtype of the bases.
        p: Root, > 0 (1: inverse, 2: inverse square root, ...).
        eps: Damping added to the eigenvalues of ``S^{1/p}``, >= 0.

    Returns:
        The preconditioned matrix, shape (n, m), dtype and device of ``V``.

    In float16 and bfloat16, ``V`` enters the products divided by
    ``alpha^{1/p}``, and the division by the eigenvalue roots runs in the
    dtype of ``d``, rounded once to that of ``V``. ``alpha`` follows the
    gradient's scale, so in float16, whose largest number is 65504, both the
    products of the unscaled ``V`` and ``(alpha d_C,i d_K,j)^{1/p}`` could
    overflow. bfloat16 has float32's range and would not; it takes the same
    way, whose two extra passes over ``V`` cost little next to the four
    products. float32 and wider take the shorter way.
    """
    caller = "kron_precondition"
    n, m = _check_bases(caller, B_C, V, B_K, d_C=d_C, d_K=d_K)
    check_vector(caller, "d_C", d_C, n)
    check_vector(caller, "d_K", d_K, m)
    check_same_dtype(caller, d_C=d_C, d_K=d_K)
    alpha = _check_alpha(caller, alpha, d_C)
    p = check_scalar(
        caller, "p", p, minimum=0.0, inclusive=False, hint="use a finite root > 0 (2: inverse square root)"
    )
    eps = check_scalar(caller, "eps", eps, minimum=0.0, hint="use a finite number >= 0")
    return _kron_precondition(d_C, B_C, d_K, B_K, alpha, V, p, eps)


def _kron_precondition(
    d_C: Any, B_C: Any | None, d_K: Any, B_K: Any | None, alpha: Any, V: Any, p: float, eps: float
) -> Any:
    """Return :func:`kron_precondition` for inputs already checked.

    Also takes stacks: ``V`` (k, n, m) with ``d_C`` (k, n), ``B_C``
    (k, n, n), ``d_K`` (k, m), ``B_K`` (k, m, m) and ``alpha`` (k,).
    """
    if is_narrow(V):
        scale = per_matrix(alpha ** (-1 / p))
        relative_root = (d_C ** (1 / p))[..., :, None] * (d_K ** (1 / p))[..., None, :] + eps * scale
        rotated = _kron_rotate(B_C, V * namespace(V).asarray(scale, dtype=V.dtype), B_K)
        return _kron_unrotate(B_C, astype_like(astype_like(rotated, relative_root) / relative_root, V), B_K)

    # (alpha d_C,i d_K,j)^{1/p} as an outer product of roots: n + m powers, not n m.
    root = (per_vector(alpha ** (1 / p)) * d_C ** (1 / p))[..., :, None] * (d_K ** (1 / p))[..., None, :]
    root += eps
    root = astype_like(root, V)
    rotated = _kron_rotate(B_C, V, B_K)
    if rotated is V:  # both factors diagonal: V is the caller's array
        return V / root
    rotated /= root  # in place on the fresh product
    return _kron_unrotate(B_C, rotated, B_K)
