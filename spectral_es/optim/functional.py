r"""One optimizer step on one tensor: the Kronecker path and the Adam path.

These functions contain the arithmetic of
:class:`~spectral_es.optim.SpectralKron` and nothing else. The optimizer
decides routing, schedules and the gradient guard, and calls them with the
result. The update functions change ``param`` and ``state`` in place and
run under ``torch.no_grad()``, so they may be called on parameters that
require grad.

Kronecker path, for a weight viewed as a matrix (n, m) (a conv kernel
(out, in, kh, kw) as (out, in * kh * kw)), at step ``t``:

    M <- beta1 M + (1 - beta1) G                       (momentum, parameter space)
    refresh S_C and/or S_K by the Kronecker spectral step on G  (every T steps)
    D  = alpha^{-1/p} S_C^{-1/p} (M / (1 - beta1^t)) S_K^{-1/p}   (eps-damped)
    D <- graft(D); D <- clip(D)
    W <- W (1 - lr weight_decay) - lr D

The momentum is kept in parameter coordinates, so a rotation of ``B_C`` or
``B_K`` does not invalidate it. Each step applies the current preconditioner
to it, which equals rotating an eigenbasis momentum along with ``B``.
Products with the eigenbases run in the state dtype (bfloat16 or float32).
``d``, ``alpha``, the Cayley generator and the Adam second moment are kept
in float32 or wider (see :func:`init_kron_state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, cast

import torch

from spectral_es.core._backend import is_narrow, per_matrix, per_vector
from spectral_es.core._checks import check_vector
from spectral_es.core.cayley import _bjorck_orthogonalize
from spectral_es.core.kron import (
    _check_bases,
    _check_factor_options,
    _FactorOptions,
    _kron_curvature,
    _kron_factor_generator,
    _kron_factor_step,
    _kron_precondition,
    _kron_rotate,
    _rotate_by_generator,
    _with_default_options,
)

__all__ = [
    "adam_update",
    "adam_update_foreach",
    "full_sides",
    "init_adam_state",
    "init_kron_state",
    "kron_initialize_scale",
    "kron_orthogonalize_stack",
    "kron_refresh",
    "kron_refresh_stack",
    "kron_rotate_pending",
    "kron_rotate_pending_stack",
    "kron_update",
    "kron_update_stack",
    "matrix_shape",
    "pending_sides",
    "stack_state",
]

# Largest log-change of one eigenvalue (and of alpha) per refresh: the
# exponential step would multiply d by exp(beta q / d) after a gradient spike,
# where the moving average it approximates grows by beta q / d.
MAX_LOG_STEP = 1.0

# Lower bound for norms that are divided by, and for the initial alpha.
_TINY = 1e-30

# The sides that a refresh may move: none, the rows' factor C, the columns' K, or both.
_SIDES = ("", "C", "K", "CK")

# The state keys of the generators that a deferred refresh leaves for a later rotation.
_PENDING_KEYS = ("N_C", "N_K")


class _TensorOptions(TypedDict):
    """The ``dtype`` and ``device`` keywords of torch's tensor factories (``torch.zeros``, ...)."""

    dtype: torch.dtype
    device: torch.device


def matrix_shape(param: torch.Tensor) -> tuple[int, int]:
    """Return ``(n, m)``: the first dimension against all the others.

    Raises:
        ValueError: for a 0-d tensor, which has no matrix view.
    """
    if param.ndim == 0:
        raise ValueError("a 0-d tensor has no matrix view; the Kronecker path needs a weight with ndim >= 1")
    n = param.shape[0]
    return n, param.numel() // max(n, 1)


def full_sides(n: int, m: int, max_precond_dim: int, max_side_ratio: float | None) -> tuple[bool, bool]:
    """Return whether the row side (n) and the column side (m) of a weight get full factors.

    A side gets a diagonal factor when it is longer than ``max_precond_dim``
    or more than ``max_side_ratio`` times as long as the other side
    (``None``: no limit on the ratio).
    """
    ratio = math.inf if max_side_ratio is None else max_side_ratio
    return (n <= max_precond_dim and n <= ratio * m, m <= max_precond_dim and m <= ratio * n)


def init_kron_state(
    param: torch.Tensor,
    state_dtype: torch.dtype,
    max_precond_dim: int,
    graft: str,
    max_side_ratio: float | None = None,
) -> dict:
    """Return the initial state of a Kronecker-preconditioned weight.

    ``S = alpha (S_C kron S_K)`` starts isotropic (``d = 1``, ``B = I``) with
    ``alpha = 0``, which marks the factors as not yet initialised: the first
    usable gradient sets ``alpha = mean(G^2)``. A side gets a diagonal factor
    (``d`` only, no ``B``) when it is longer than ``max_precond_dim`` or more
    than ``max_side_ratio`` times as long as the other side (``None``: no
    limit on the ratio).

    Keys and dtypes: ``step`` (float32, CPU), ``exp_avg`` (state dtype, shape
    of ``param``), ``d_C``, ``d_K``, ``alpha`` (float32, or float64 for a
    float64 state), ``B_C``, ``B_K`` (state dtype, only for full sides),
    ``exp_avg_sq`` (like ``d``, shape of ``param``, only for
    ``graft="adam"``), ``exp_avg_sq_row`` (n,) and ``exp_avg_sq_col`` (m,)
    (like ``d``, only for ``graft="adafactor"``). A refresh with
    ``defer_rotation`` (see :func:`kron_refresh`) adds ``N_C`` or ``N_K``
    (like ``B``) until :func:`kron_rotate_pending` applies it. The second moments and
    the eigenvalues are kept at least in float32 because their per-step
    relative changes (1 - beta2 ~ 1e-3) are below bfloat16's resolution of
    2^-8, so a bfloat16 moving average would stall.
    """
    n, m = matrix_shape(param)
    wide: _TensorOptions = {"dtype": torch.promote_types(state_dtype, torch.float32), "device": param.device}
    state = {
        "step": torch.tensor(0.0, dtype=torch.float32),
        "exp_avg": torch.zeros(param.shape, dtype=state_dtype, device=param.device),
        "d_C": torch.ones(n, **wide),
        "d_K": torch.ones(m, **wide),
        "alpha": torch.zeros((), **wide),
    }
    full_C, full_K = full_sides(n, m, max_precond_dim, max_side_ratio)
    if full_C:
        state["B_C"] = torch.eye(n, dtype=state_dtype, device=param.device)
    if full_K:
        state["B_K"] = torch.eye(m, dtype=state_dtype, device=param.device)
    if graft == "adam":
        state["exp_avg_sq"] = torch.zeros(param.shape, **wide)
    elif graft == "adafactor":
        state["exp_avg_sq_row"] = torch.zeros(n, **wide)
        state["exp_avg_sq_col"] = torch.zeros(m, **wide)
    return state


def init_adam_state(param: torch.Tensor, state_dtype: torch.dtype) -> dict:
    """Return the initial state of a weight on the Adam path (1-D and routed)."""
    wide = torch.promote_types(state_dtype, torch.float32)
    return {
        "step": torch.tensor(0.0, dtype=torch.float32),
        "exp_avg": torch.zeros(param.shape, dtype=state_dtype, device=param.device),
        "exp_avg_sq": torch.zeros(param.shape, dtype=wide, device=param.device),
    }


@torch.no_grad()
def kron_initialize_scale(state: dict, grad: torch.Tensor) -> None:
    """Set the Kronecker scale ``alpha = mean(G^2)`` from the first usable gradient ``grad``.

    :func:`init_kron_state` leaves ``alpha = 0`` to mark factors that have
    not seen a gradient yet. The first refresh must follow this call.
    """
    state["alpha"].copy_(grad.to(state["alpha"].dtype).square().mean().clamp_min(_TINY))


@torch.no_grad()
def kron_refresh(
    state: dict,
    G: torch.Tensor,
    *,
    sides: str,
    beta: float,
    rotation: Mapping[str, Any],
    damping: float,
    orthogonalize: bool,
    defer_rotation: bool = False,
) -> None:
    """Move the factors named in ``sides`` ("CK", "C" or "K") one step on ``G``.

    Both curvatures come from the current factors (``Y = B_C^T G B_K``), so
    refreshing "C" and "K" together is exactly
    :func:`spectral_es.core.kron.kron_step`. A single side moves ``alpha``
    by half its rate: the two rates agree analytically, so refreshing the
    sides on alternate steps moves ``alpha`` as much per period as one joint
    refresh. With ``orthogonalize`` each refreshed eigenbasis then takes one
    Björck step (:func:`spectral_es.core.bjorck_orthogonalize`), which
    returns a bfloat16 ``B`` to its rounding floor. ``G`` has shape (n, m)
    and the dtype of the eigenbases.

    With ``defer_rotation`` the refresh moves ``d`` and ``alpha`` but not
    the eigenbases: each refreshed ``B_C`` (``B_K``) keeps its value, and
    its capped Cayley generator is stored as ``state["N_C"]``
    (``state["N_K"]``) in the dtype of ``B``, for
    :func:`kron_rotate_pending` to rotate it by later. A refresh thus costs
    two steps of about equal work instead of one step that costs about
    three times a step without refresh (in bfloat16 at n = m = 1024: 3
    products for the curvature now, 5 for the rotation later, against 4 for
    the preconditioning of every step). ``orthogonalize`` then takes the
    Björck step before the curvature is formed, because the eigenbasis
    does not move after it.
    ``rotation`` holds the Cayley-map options of
    :func:`spectral_es.core.kron.kron_factor_step` (``method``, ``order``,
    ``max_generator_norm``, ``cap_norm``, ``max_squarings``).

    ``state`` may instead hold stacks of k factors of one shape (``d_C``
    (k, n), ``B_C`` (k, n, n), ``alpha`` (k,), ...) with ``G`` (k, n, m):
    each is then moved as by its own call, in one pass of batched products.

    Raises:
        ValueError: for invalid ``sides`` or options, or for a ``state``
            with a pending generator: the refresh would form its curvature
            in an eigenbasis that has not taken that rotation yet, and a
            deferred refresh of the same side would overwrite it.
    """
    if sides not in _SIDES[1:]:
        raise ValueError(f"invalid sides {sides!r}: expected one of {_SIDES[1:]}")
    _check_no_pending("kron_refresh", state)
    B_C, B_K, d_C, d_K, alpha = state.get("B_C"), state.get("B_K"), state["d_C"], state["d_K"], state["alpha"]
    if G.ndim != 3:
        # One weight, perhaps from a caller outside the optimizer: check shapes
        # and dtypes as kron_step does. Stacks come from kron_refresh_stack.
        n, m = _check_bases("kron_refresh", B_C, G, B_K, name="G", d_C=d_C, d_K=d_K)
        check_vector("kron_refresh", "d_C", d_C, n)
        check_vector("kron_refresh", "d_K", d_K, m)
    n, m = G.shape[-2:]
    options = _refresh_options("kron_refresh", rotation, damping, {"B_C": B_C, "B_K": B_K})
    if orthogonalize and defer_rotation:
        for side in sides:
            _orthogonalize(state, f"B_{side}")

    # Both curvatures from the current factors, before either moves. The
    # factor step needs only W / alpha, so G enters divided by sqrt(alpha):
    # the products then stay in float16's range whatever the gradients'
    # typical scale (a sudden spike can still overflow them).
    Y = _kron_rotate(B_C, G * per_matrix(alpha.rsqrt()).to(G.dtype), B_K)
    W_C = _kron_curvature(Y, d_K, full=B_C is not None) if "C" in sides else None
    W_K = _kron_curvature(Y.swapaxes(-1, -2), d_C, full=B_K is not None) if "K" in sides else None

    # Each factor's spectral step (with alpha = 1 for the scaled curvature);
    # alpha moves last, by the mean rate.
    unit = torch.ones_like(alpha)
    rate = torch.zeros_like(alpha)
    for side, W, kappa in (("C", W_C, m), ("K", W_K, n)):
        if W is None:
            continue
        d, B = state[f"d_{side}"], state.get(f"B_{side}")
        if defer_rotation:
            d_new, N, side_rate, _ = _kron_factor_generator(d, B, W, unit, kappa, beta, 1.0, options)
            if N is not None:
                state[f"N_{side}"] = N
        else:
            d_new, B_new, side_rate = _kron_factor_step(d, B, W, unit, kappa, beta, 1.0, options)
            if B is not None:
                # kron_factor_step returns an eigenbasis whenever it is given one.
                B_new = cast(torch.Tensor, B_new)
                B.copy_(_bjorck_orthogonalize(B_new) if orthogonalize else B_new)
        d.copy_(d_new)
        rate += side_rate
    alpha.mul_(torch.exp(rate / 2))


@torch.no_grad()
def kron_rotate_pending(state: dict, *, rotation: Mapping[str, Any]) -> None:
    """Rotate each eigenbasis of ``state`` that has a pending generator, and remove the generator.

    A refresh with ``defer_rotation`` (see :func:`kron_refresh`) leaves the
    capped generator of a refreshed ``B_C`` as ``state["N_C"]`` (and of
    ``B_K`` as ``state["N_K"]``). This moves ``B_C`` to
    ``B_C Cayley(N_C)``, the eigenbasis that the refresh would have given
    without the option, and deletes ``N_C``. ``rotation`` contains the
    Cayley-map options of the refresh. A generator made under other options
    (a state loaded in another dtype, or options edited in between) is
    first capped to ``rotation``'s cap if it exceeds it by more than
    rounding, because the truncated map of a long generator is far from
    orthogonal. A state with no pending generator
    is left as it is. ``state`` may hold stacks of k factors, as for
    :func:`kron_refresh`.
    """
    sides = pending_sides(state)
    if not sides:
        return
    bases = {f"B_{side}": state[f"B_{side}"] for side in sides}
    options = _refresh_options("kron_rotate_pending", rotation, 0.0, bases)
    for side in sides:
        B = state[f"B_{side}"]
        B.copy_(_rotate_by_generator(B, state.pop(f"N_{side}"), options))


@torch.no_grad()
def kron_rotate_pending_stack(states: Sequence[dict], *, rotation: Mapping[str, Any]) -> None:
    """Run :func:`kron_rotate_pending` on k weights' states at once, by batched products.

    The states must share their keys (the same pending sides), shapes and
    dtypes.
    """
    sides = pending_sides(states[0])
    if not sides:
        return
    keys = [f"{kind}_{side}" for side in sides for kind in ("B", "N")]
    stacked, scattered = _refresh_rows(states, keys)
    kron_rotate_pending(stacked, rotation=rotation)
    for base, index, rows in scattered:
        base.index_copy_(0, index, rows)
    for state in states:
        for side in sides:
            del state[f"N_{side}"]


def _check_no_pending(caller: str, state: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``state`` has a generator that a deferred refresh left for a rotation."""
    sides = pending_sides(state)
    if sides:
        keys = " and ".join(f"N_{side}" for side in sides)
        raise ValueError(
            f"{caller}: the state has the pending generator {keys} of an earlier refresh with defer_rotation; "
            "call kron_rotate_pending (kron_rotate_pending_stack for stacks) on it first"
        )


def pending_sides(state: Mapping[str, Any]) -> str:
    """Return the sides ("", "C", "K" or "CK") whose rotation a deferred refresh left pending in ``state``."""
    return "".join(side for side in "CK" if f"N_{side}" in state)


def _refresh_options(
    caller: str, rotation: Mapping[str, Any], damping: float, bases: dict[str, torch.Tensor | None]
) -> _FactorOptions:
    """Return the checked factor options of a refresh with the Cayley-map options ``rotation``."""
    factor_options = {**rotation, "damping": damping, "max_log_step": MAX_LOG_STEP}
    return _check_factor_options(caller, bases, **_with_default_options(caller, factor_options))


def _orthogonalize(state: dict, key: str) -> None:
    """Take one Björck step on ``state[key]`` in place, if the state has that eigenbasis."""
    if key in state:
        state[key].copy_(_bjorck_orthogonalize(state[key]))


def _graft_and_clip(
    D: torch.Tensor, M_hat: torch.Tensor, state: dict, group: Mapping[str, Any], t: float | list[float]
) -> torch.Tensor:
    """Rescale the preconditioned direction ``D`` (grafting, then clipping).

    ``"adam"`` gives ``D`` the Frobenius norm of the Adam step
    ``M_hat / (sqrt(v_hat) + eps)``, and ``"adafactor"`` the same norm with
    a factored second moment (see :func:`_adam_direction`).
    ``"rms"`` gives ``D`` the RMS ``graft_rms``, and ``"none"`` keeps it.
    ``max_update_rms`` then caps the RMS of the result. The scale factors
    stay tensors, so nothing synchronises with the host. A float16 or
    bfloat16 direction is rescaled in float32 and returned in float32:
    there the ratio of two norms cannot overflow as it can in float16, and
    the rescaled step is rounded once, when it is added to the weight, not
    once for the scale and once for the product. ``D`` must be
    a temporary: it is rescaled in place, which saves a pass over memory
    per step. ``D``, ``M_hat`` and the second moments are (n, m) matrices,
    or stacks (k, n, m) whose matrices are rescaled one by one.
    """
    wide = torch.promote_types(D.dtype, torch.float32)
    if is_narrow(D):
        D = D.to(wide)
    size = D.shape[-2] * D.shape[-1]
    if group["graft"] in ("adam", "adafactor"):
        norm = _matrix_norm(D, wide).clamp_min(_TINY)
        D.mul_((_matrix_norm(_adam_direction(M_hat, state, group, t), None) / norm).to(D.dtype))
    elif group["graft"] == "rms":
        norm = _matrix_norm(D, wide).clamp_min(_TINY)
        D.mul_((group["graft_rms"] * math.sqrt(size) / norm).to(D.dtype))
    if group["max_update_rms"] is not None:
        norm = _matrix_norm(D, wide).clamp_min(_TINY)
        limit = group["max_update_rms"] * math.sqrt(size)
        D.mul_((limit / norm).clamp(max=1.0).to(D.dtype))
    return D


def _matrix_norm(X: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Return the Frobenius norm of ``X`` (n, m), 0-d, or of each matrix of a stack, shaped (k, 1, 1)."""
    return per_matrix(torch.linalg.vector_norm(X, dim=(-2, -1), dtype=dtype))


def _adam_direction(M_hat: torch.Tensor, state: dict, group: Mapping[str, Any], t: float | list[float]) -> torch.Tensor:
    """Return the Adam step ``M_hat / (sqrt(v_hat) + eps)`` of the graft, in the dtype of the second moment.

    ``v_hat`` is the bias-corrected second moment: Adam's own
    (``graft="adam"``), or Adafactor's factored ``V = r c^T / mean(r)``
    (Shazeer and Stern, 2018, "Adafactor: adaptive learning rates with
    sublinear memory cost"), where ``r`` and ``c`` are moving averages of
    the row and column means of ``G^2``. ``V`` is exact when ``G^2`` has
    rank one, and it keeps O(n + m) numbers where Adam keeps n m. Every
    pass over the (n, m) matrix writes into one temporary.
    """
    bias_correction = _bias_correction(_betas(group)[1], t, M_hat, 2)
    if group["graft"] == "adam":
        denominator = (state["exp_avg_sq"] / bias_correction).sqrt_()
    else:
        # sqrt(r c^T / (mean(r) bias)) = sqrt(r / (mean(r) bias)) sqrt(c)^T: square roots of vectors only.
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        row_bias = bias_correction if isinstance(bias_correction, float) else bias_correction[..., 0]
        row_root = (row / (per_vector(row.mean(-1)).clamp_min(_TINY) * row_bias)).sqrt()
        denominator = row_root[..., :, None] * col.sqrt()[..., None, :]
    denominator.add_(group["eps"])
    return torch.div(M_hat, denominator, out=denominator)


def _matrix_state(state: dict, shape: tuple[int, ...]) -> dict:
    """Return ``state`` with its moments viewed in ``shape``: (n, m), or (k, n, m) for a stacked state.

    A conv kernel's moments are stored in its own shape.
    """
    views = dict(state)
    for key in ("exp_avg", "exp_avg_sq"):
        if key in views:
            views[key] = views[key].view(shape)
    return views


def _update_moments(state: dict, G: torch.Tensor, group: Mapping[str, Any]) -> None:
    """Move the momentum and the second moments of ``state`` towards the gradient ``G`` (n, m) or (k, n, m)."""
    beta1, beta2 = _betas(group)
    exp_avg = state["exp_avg"]
    exp_avg.lerp_(G.to(exp_avg.dtype), 1 - beta1)
    if "exp_avg_sq" in state:
        grad_wide = G.to(state["exp_avg_sq"].dtype)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad_wide, grad_wide, value=1 - beta2)
    if "exp_avg_sq_row" in state:
        square = G.to(state["exp_avg_sq_row"].dtype).square()
        state["exp_avg_sq_row"].lerp_(square.mean(dim=-1), 1 - beta2)
        state["exp_avg_sq_col"].lerp_(square.mean(dim=-2), 1 - beta2)


def _betas(group: Mapping[str, Any]) -> tuple[float, float]:
    """Return the group's ``betas`` as Python floats.

    ``torch.optim.AdamW`` (torch 2.13) accepts 0-d tensors as betas, and a
    NumPy scalar may arrive too. :func:`_adam_direction` distinguishes a
    single weight's bias correction (a number) from a stack's (a tensor) by
    type, so each beta must be a float.
    """
    beta1, beta2 = group["betas"]
    return float(beta1), float(beta2)


def _bias_correction(beta: float, t: float | list[float], like: torch.Tensor, dims: int) -> float | torch.Tensor:
    """Return ``1 - beta^t``: a number, or for a list of step counts a tensor (k, 1, ..., 1) with ``dims`` ones.

    The tensor is in float32 or wider, the precision in which torch divides
    a tensor of ``like``'s dtype by a number. On the CPU a stack whose
    weights have taken different numbers of steps is therefore corrected
    bitwise as each weight alone would be. On CUDA torch divides by a number as a
    multiplication by its reciprocal (aten's BinaryDivTrueKernel.cu), so
    there the two may differ by one rounding.
    """
    if not isinstance(t, list):
        return 1 - beta**t
    wide = torch.promote_types(like.dtype, torch.float32)
    values = torch.tensor([1 - beta**steps for steps in t], dtype=wide, device=like.device)
    return values.reshape(-1, *[1] * dims)


def _direction(state: dict, group: Mapping[str, Any], t: float | list[float]) -> torch.Tensor:
    """Return the preconditioned, grafted and clipped direction at step ``t``, shaped like ``state["exp_avg"]``.

    For a stacked state ``t`` may list each weight's step count.
    """
    exp_avg = state["exp_avg"]
    M_hat = (exp_avg / _bias_correction(_betas(group)[0], t, exp_avg, 2)).to(exp_avg.dtype)
    D = _kron_precondition(
        state["d_C"],
        state.get("B_C"),
        state["d_K"],
        state.get("B_K"),
        state["alpha"],
        M_hat,
        group["root"],
        group["eps"],
    )
    return _graft_and_clip(D, M_hat, state, group, t)


@torch.no_grad()
def kron_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict,
    group: Mapping[str, Any],
    *,
    refresh: str,
    initialize: bool,
    rotation: Mapping[str, Any],
    orthogonalize: bool,
) -> None:
    """Take one Kronecker-preconditioned step on ``param``.

    Args:
        param: The weight, at least 2-D; updated in place.
        grad: Its finite gradient, shape of ``param``.
        state: From :func:`init_kron_state`; updated in place.
        group: The parameter group (``lr``, ``betas``, ``eps``,
            ``weight_decay``, ``root``, ``precond_lr``, ``damping``,
            ``graft``, ``graft_rms``, ``max_update_rms``).
        refresh: Sides to refresh this step ("", "C", "K" or "CK").
        initialize: Whether to set ``alpha = mean(G^2)`` before the refresh
            (the first usable gradient; ``refresh`` is then "CK"). It must
            be true on the first call for a state from
            :func:`init_kron_state`, whose ``alpha = 0`` would otherwise
            turn the factors into NaN. It is not checked, because reading
            ``alpha`` would wait for the device.
        rotation: Cayley-map options of the eigenbases (see
            :func:`kron_refresh`).
        orthogonalize: Whether refreshed eigenbases take a Björck step.
    """
    if refresh not in _SIDES:
        raise ValueError(f"invalid refresh {refresh!r}: expected one of {_SIDES}")
    state["step"] += 1
    t = state["step"].item()
    shape = matrix_shape(param)
    matrices = _matrix_state(state, shape)
    G = grad.reshape(shape)
    _update_moments(matrices, G, group)

    # Factor refresh on the raw gradient.
    if initialize:
        kron_initialize_scale(state, grad)
    if refresh:
        kron_refresh(
            state,
            G.to(state["exp_avg"].dtype),
            sides=refresh,
            beta=group["precond_lr"],
            rotation=rotation,
            damping=group["damping"],
            orthogonalize=orthogonalize,
        )

    # Decoupled weight decay, then the step.
    D = _direction(matrices, group, t)
    if group["weight_decay"] != 0:
        param.mul_(1 - group["lr"] * group["weight_decay"])
    param.add_(D.view(param.shape).to(param.dtype), alpha=-group["lr"])


def stack_state(states: Sequence[dict], keys: Sequence[str], *, part: bool = False) -> dict[str, torch.Tensor]:
    """Return each of ``keys`` of ``states`` stacked into one (k, ...) tensor whose rows the states view.

    The first call for a set of states stacks their tensors (one copy) and
    replaces each state's tensor by a view of its row. Later calls find the
    views and return their stack without copying, so updating the stack in
    place updates every state. With ``part``, a run of consecutive rows of
    a larger stack (one rank's part of a stack under ``distributed_refresh``)
    is returned as a slice of it, also without copying. Without it, rows of
    a larger stack are stacked afresh, so that a stack whose weights stop
    stepping (frozen layers) is freed rather than kept alive by a slice.
    Tensors that are no longer such rows (a state loaded or replaced since,
    or a set of states that changed) are stacked afresh too. The values are
    the same either way.
    """
    stacked = {}
    for key in keys:
        tensors = [state[key] for state in states]
        rows = _rows_view(tensors, part)
        if rows is None:
            rows = torch.stack(tensors)
            for state, row in zip(states, rows.unbind(0), strict=True):
                state[key] = row
        stacked[key] = rows
    return stacked


def _rows_view(tensors: Sequence[torch.Tensor], part: bool) -> torch.Tensor | None:
    """Return ``tensors`` as the stack whose consecutive rows they are (with ``part``, a slice of it), or ``None``."""
    found = _row_indices(tensors)
    if found is None:
        return None
    base, rows = found
    if rows == list(range(base.shape[0])):
        return base
    if part and rows == list(range(rows[0], rows[0] + len(rows))):
        return base[rows[0] : rows[0] + len(rows)]
    return None


def _row_indices(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]] | None:
    """Return the contiguous stack whose distinct rows ``tensors`` are, and their row numbers; else ``None``."""
    base = tensors[0]._base
    if base is None or not base.is_contiguous() or base.shape[1:] != tensors[0].shape:
        return None
    row_bytes = tensors[0].numel() * tensors[0].element_size()
    if row_bytes == 0:
        return None
    rows = []
    for tensor in tensors:
        offset = tensor.data_ptr() - base.data_ptr()
        row = offset // row_bytes
        if tensor._base is not base or tensor.shape != base.shape[1:] or offset != row * row_bytes:
            return None
        if not 0 <= row < base.shape[0]:
            return None
        rows.append(row)
    return (base, rows) if len(set(rows)) == len(rows) else None


def _refresh_rows(states: Sequence[dict], keys: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """Return the factors of ``states`` stacked for a refresh, and the copies back into stacks that it needs.

    Factors may be scattered rows of one stack, as when every other weight
    of the stack refreshes at this step. They are gathered into a new
    tensor and later written back with ``index_copy_``, so the states stay
    rows of their stack. Other factors come from
    :func:`stack_state` with ``part=True``.
    """
    stacked: dict[str, torch.Tensor] = {}
    scattered = []
    for key in keys:
        tensors = [state[key] for state in states]
        found = _row_indices(tensors)
        if found is not None and _rows_view(tensors, part=True) is None:
            base, rows = found
            index = torch.tensor(rows, device=base.device)
            stacked[key] = base.index_select(0, index)
            scattered.append((base, index, stacked[key]))
        else:
            stacked.update(stack_state(states, [key], part=True))
    return stacked, scattered


@torch.no_grad()
def kron_update_stack(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[dict], group: Mapping[str, Any]
) -> None:
    """Take the step of :func:`kron_update` (no refresh) on k weights at once, stacked.

    The weights must share their matrix shape, dtype and device, their
    states the same keys and dtypes, and they all follow
    ``group``. The states are stacked by :func:`stack_state`, which leaves
    their tensors as views of the stacks, and moved by batched products. On
    small weights, where the fixed cost of each operation outweighs its
    arithmetic, this costs little more than one weight's step. The results
    equal k separate calls up to the rounding of batched against single
    products.
    """
    shape = matrix_shape(params[0])
    torch._foreach_add_([state["step"] for state in states], 1)
    steps = [state["step"].item() for state in states]
    t: float | list[float] = steps[0] if len(set(steps)) == 1 else steps
    # A pending generator (see kron_refresh) is not needed for the update.
    keys = [key for key in states[0] if key != "step" and key not in _PENDING_KEYS]
    stacked = stack_state(states, keys)
    matrices = _matrix_state(stacked, (len(states), *shape))
    _update_moments(matrices, torch.stack([grad.reshape(shape) for grad in grads]), group)

    D = _direction(matrices, group, t).to(params[0].dtype)
    if group["weight_decay"] != 0:
        torch._foreach_mul_(list(params), 1 - group["lr"] * group["weight_decay"])
    torch._foreach_add_(
        list(params),
        [part.view(param.shape) for part, param in zip(D.unbind(0), params, strict=True)],
        alpha=-group["lr"],
    )


@torch.no_grad()
def kron_refresh_stack(
    states: Sequence[dict],
    grads: Sequence[torch.Tensor],
    *,
    sides: str,
    initialize: bool,
    beta: float,
    rotation: Mapping[str, Any],
    damping: float,
    orthogonalize: bool,
    defer_rotation: bool = False,
) -> None:
    """Run :func:`kron_refresh` (after :func:`kron_initialize_scale` with ``initialize``) on k weights at once.

    The states must share their keys, shapes and dtypes; ``grads`` are the
    weights' gradients, in any shape with the states' matrix view. The
    factors are stacked by :func:`_refresh_rows` and refreshed in place by
    batched products. With ``defer_rotation`` each state's pending
    generator is a row of one stack of generators.
    """
    for state in states:
        _check_no_pending("kron_refresh_stack", state)
    keys = [key for key in ("alpha", "d_C", "d_K", "B_C", "B_K") if key in states[0]]
    stacked, scattered = _refresh_rows(states, keys)
    shape = (stacked["d_C"].shape[-1], stacked["d_K"].shape[-1])
    G = torch.stack([grad.reshape(shape) for grad in grads])
    if initialize:
        alpha = stacked["alpha"]
        alpha.copy_(G.to(alpha.dtype).square().mean(dim=(-2, -1)).clamp_min(_TINY))
    kron_refresh(
        stacked,
        G.to(states[0]["exp_avg"].dtype),
        sides=sides,
        beta=beta,
        rotation=rotation,
        damping=damping,
        orthogonalize=orthogonalize,
        defer_rotation=defer_rotation,
    )
    for base, index, rows in scattered:
        base.index_copy_(0, index, rows)
    for side in pending_sides(stacked):
        for state, row in zip(states, stacked[f"N_{side}"].unbind(0), strict=True):
            state[f"N_{side}"] = row


@torch.no_grad()
def kron_orthogonalize_stack(states: Sequence[dict], sides: str) -> None:
    """Take one Björck step on the eigenbases named in ``sides`` ("C", "K" or "CK") of k weights' states.

    This is the step that :func:`kron_refresh` takes with ``orthogonalize``,
    without a refresh: :class:`~spectral_es.optim.SpectralKron` takes it on
    a step that refreshes nothing. Diagonal sides have no eigenbasis and
    are left as they are. The states must share their keys, shapes and
    dtypes. Several states are stacked by :func:`_refresh_rows` and moved
    by batched products, and a single state is moved in place.
    """
    if sides not in _SIDES[1:]:
        raise ValueError(f"invalid sides {sides!r}: expected one of {_SIDES[1:]}")
    keys = [f"B_{side}" for side in sides if f"B_{side}" in states[0]]
    if len(states) == 1:
        for key in keys:
            states[0][key].copy_(_bjorck_orthogonalize(states[0][key]))
        return
    stacked, scattered = _refresh_rows(states, keys)
    for key in keys:
        stacked[key].copy_(_bjorck_orthogonalize(stacked[key]))
    for base, index, rows in scattered:
        base.index_copy_(0, index, rows)


@torch.no_grad()
def adam_update(param: torch.Tensor, grad: torch.Tensor, state: dict, group: Mapping[str, Any]) -> None:
    """Take one AdamW step: ``W <- W (1 - lr wd) - lr M_hat / (sqrt(v_hat) + eps)``.

    The path for 1-D parameters (biases, norm scales) and for weights routed
    to it; the root ``p`` does not apply here. ``max_update_rms`` caps the
    step's RMS as on the Kronecker path.
    """
    beta1, beta2 = _betas(group)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    state["step"] += 1
    t = state["step"].item()

    grad_wide = grad.to(exp_avg_sq.dtype)
    exp_avg.lerp_(grad.to(exp_avg.dtype), 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad_wide, grad_wide, value=1 - beta2)

    M_hat = exp_avg.to(exp_avg_sq.dtype) / (1 - beta1**t)
    D = M_hat / ((exp_avg_sq / (1 - beta2**t)).sqrt() + group["eps"])
    if group["max_update_rms"] is not None:
        limit = group["max_update_rms"] * math.sqrt(D.numel())
        D = D * (limit / torch.linalg.vector_norm(D).clamp_min(_TINY)).clamp(max=1.0)

    if group["weight_decay"] != 0:
        param.mul_(1 - group["lr"] * group["weight_decay"])
    param.add_(D.to(param.dtype), alpha=-group["lr"])


@torch.no_grad()
def adam_update_foreach(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[dict], group: Mapping[str, Any]
) -> None:
    """Take the step of :func:`adam_update` on several tensors, with torch's ``_foreach`` operations.

    The tensors must share their dtype, device and state dtypes, and they
    all follow ``group``; each keeps its own step count. A model's biases
    and norm scales then cost a few operations per step in all, not a few
    per tensor. The elementwise arithmetic is that of :func:`adam_update`:
    on the CPU the results are bitwise equal. On CUDA, where torch divides
    by a number as a multiplication by its reciprocal, they may differ by
    one rounding.
    """
    beta1, beta2 = _betas(group)
    exp_avgs = [state["exp_avg"] for state in states]
    exp_avg_sqs = [state["exp_avg_sq"] for state in states]
    torch._foreach_add_([state["step"] for state in states], 1)
    steps = [state["step"].item() for state in states]

    wide = exp_avg_sqs[0].dtype
    grads_wide = [grad.to(wide) for grad in grads]
    torch._foreach_lerp_(exp_avgs, [grad.to(exp_avgs[0].dtype) for grad in grads], 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads_wide, grads_wide, value=1 - beta2)

    M_hat = torch._foreach_div([exp_avg.to(wide) for exp_avg in exp_avgs], [1 - beta1**t for t in steps])
    denominators = torch._foreach_sqrt(torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in steps]))
    torch._foreach_add_(denominators, group["eps"])
    D = torch._foreach_div(M_hat, denominators)
    if group["max_update_rms"] is not None:
        for direction, norm in zip(D, torch._foreach_norm(D), strict=True):
            limit = group["max_update_rms"] * math.sqrt(direction.numel())
            direction.mul_((limit / norm.clamp_min(_TINY)).clamp(max=1.0))

    if group["weight_decay"] != 0:
        torch._foreach_mul_(list(params), 1 - group["lr"] * group["weight_decay"])
    torch._foreach_add_(list(params), [direction.to(params[0].dtype) for direction in D], alpha=-group["lr"])
