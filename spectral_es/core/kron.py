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
``d``.
"""

from __future__ import annotations

from typing import Any

from spectral_es.core._backend import astype_like, has_short_range, namespace
from spectral_es.core.cayley import rotate
from spectral_es.core.step import cap_generator_norm, eigenvalue_step, rotation_generator, squarings_needed

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

    A ``None`` factor is the identity and costs nothing. Result in the dtype
    of ``V``.
    """
    if B_C is not None:
        V = B_C.T @ V
    if B_K is not None:
        V = V @ B_K
    return V


def kron_unrotate(B_C: Any | None, V: Any, B_K: Any | None) -> Any:
    """Return ``B_C V B_K^T``, the inverse of :func:`kron_rotate`."""
    if B_C is not None:
        V = B_C @ V
    if B_K is not None:
        V = V @ B_K.T
    return V


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
    if full:
        return (Y * astype_like(1 / d_other, Y)[None, :]) @ Y.T
    return (Y * Y * (1 / d_other)[None, :]).sum(1)


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
        d: Eigenvalues, shape (n,), positive; ``prod(d) = 1`` is restored by
            the step even if rounding has moved it.
        B: Orthogonal eigenbasis (n, n), eigenvectors as columns, or ``None``
            for a diagonal factor (``B = I``, kept fixed).
        W: ``B^T X B`` for the factor's raw curvature ``X`` (for example
            ``G S_K^{-1} G^T``), shape (n, n), symmetric; for a diagonal
            factor its diagonal, shape (n,). It is cast to the dtype of
            ``d``, in which the eigenvalue step and the generator run.
        alpha: The Kronecker scale, > 0 (scalar or 0-d array).
        kappa: Size of the other side (``m`` for ``S_C``, ``n`` for ``S_K``).
        beta: Step size, > 0.
        gamma: 1 for a moving average of the curvature, 0 to accumulate.
        method: ``"exact"`` or ``"truncated"`` Cayley map for ``B``.
        order: Truncation order of the truncated map (a power of two; 8:
            ``(I + N)^2 (I + N^2)(I + N^4)``, 4: ``(I + N)^2 (I + N^2)``);
            see :func:`spectral_es.core.cayley_truncated`.
        max_generator_norm: Cap on the norm of the Cayley generator, applied
            with array operations (no host synchronisation); ``None`` for no
            cap. The truncated map needs one well below 1.
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
        damping: Added to the curvature's diagonal, in units of ``d`` (whose
            geometric mean is 1). A direction without curvature then settles
            at ``d`` about ``damping`` instead of decaying towards 0, which
            keeps ``S_l^{-1}`` bounded where the gradient never reaches.
        max_log_step: Upper bound on ``beta * m_i``, the log-change of one
            eigenvalue before recentring; ``None`` for none. The exponential
            step multiplies ``d_i`` by ``exp(beta (q_i / d_i - gamma))``, which
            overflows for a gradient spike where a moving average would
            grow by ``beta q_i / d_i``; the cap bounds that growth.

    Returns:
        ``(d_new, B_new, rate)``: ``d_new`` positive with ``prod = 1`` up to
        rounding, in the dtype of ``d``; ``B_new`` in the dtype of ``B`` (or
        ``None``); ``rate`` a 0-d array in the dtype of ``d``.
    """
    xp = namespace(d, W)
    Q = astype_like(W, d) / (alpha * kappa)
    q = (Q if B is None else xp.diagonal(Q)) + damping
    if max_log_step is not None:
        q = xp.minimum(q, d * (gamma + max_log_step / beta))

    # Eigenvalues: the spectral step, then recentring to prod(d) = 1.
    d_step = eigenvalue_step(d, q, beta, gamma)
    log_d_step = xp.log(d_step)
    center = xp.mean(log_d_step)
    rate = center - xp.mean(xp.log(d))
    d_new = xp.exp(log_d_step - center)
    if B is None:
        return d_new, None, rate

    # Eigenbasis: the Cayley rotation, generator from the current d.
    N = rotation_generator(d, Q, beta, gamma)
    squarings = 0
    if max_generator_norm is not None:
        if method == "truncated" and max_squarings > 0:
            squarings = squarings_needed(N, max_generator_norm, max_squarings, cap_norm)
        N = cap_generator_norm(N, max_generator_norm * 2**squarings, cap_norm)
    return d_new, rotate(B, astype_like(N, B), method=method, order=order, squarings=squarings), rate


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
            ``max_squarings``, ``damping`` and ``max_log_step``, passed to
            :func:`kron_factor_step`.

    Returns:
        ``(d_C, B_C, d_K, B_K, alpha)`` after the step. Cost: two products for
        ``Y``, one per full factor for ``W``, and one Cayley rotation per full
        factor.
    """
    xp = namespace(d_C, d_K)
    n, m = G.shape
    Y = kron_rotate(B_C, G, B_K)
    W_C = kron_curvature(Y, d_K, full=B_C is not None)
    W_K = kron_curvature(Y.T, d_C, full=B_K is not None)
    d_C, B_C, rate_C = kron_factor_step(d_C, B_C, W_C, alpha, m, beta, gamma, **options)
    d_K, B_K, rate_K = kron_factor_step(d_K, B_K, W_K, alpha, n, beta, gamma, **options)
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

    In float16, whose largest number is 65504, ``V`` enters the products
    divided by ``alpha^{1/p}`` and the division by the eigenvalue roots
    runs in the dtype of ``d``: ``alpha`` follows the gradient's scale, so
    both the products of the unscaled ``V`` and ``(alpha d_C,i d_K,j)^{1/p}``
    can overflow there. Other dtypes take the shorter way, which costs two
    passes over ``V`` fewer.
    """
    if has_short_range(V):
        scale = alpha ** (-1 / p)
        relative_root = (d_C ** (1 / p))[:, None] * (d_K ** (1 / p))[None, :] + eps * scale
        rotated = kron_rotate(B_C, V * namespace(V).asarray(scale, dtype=V.dtype), B_K)
        return kron_unrotate(B_C, astype_like(astype_like(rotated, relative_root) / relative_root, V), B_K)

    # (alpha d_C,i d_K,j)^{1/p} as an outer product of roots: n + m powers, not n m.
    root = (alpha ** (1 / p) * d_C ** (1 / p))[:, None] * (d_K ** (1 / p))[None, :]
    return kron_unrotate(B_C, kron_rotate(B_C, V, B_K) / astype_like(root + eps, V), B_K)
