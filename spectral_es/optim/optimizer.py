"""SpectralKron: a torch optimizer with Kronecker spectral preconditioning."""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, NamedTuple, cast, overload

import torch

from spectral_es._keywords import hint_unknown_keywords
from spectral_es._warnings import outside_stacklevel
from spectral_es.optim._options import (
    LATER_OPTIONS,
    cayley_method,
    check_distinct_params,
    check_graft_state,
    check_group,
    check_kron_route,
    check_routing,
    check_saved_groups,
    check_saved_sizes,
    check_state_dtype,
    checked_process_group,
    dtype_name,
    parameter_label,
    peer_option_advice,
    peer_option_hint,
    resolve_state_dtype,
    rotation_options,
    uses_kron,
)
from spectral_es.optim.functional import (
    _PENDING_KEYS,
    adam_update,
    adam_update_foreach,
    init_adam_state,
    init_kron_state,
    kron_initialize_scale,
    kron_orthogonalize_stack,
    kron_refresh,
    kron_refresh_stack,
    kron_rotate_pending,
    kron_rotate_pending_stack,
    kron_update,
    kron_update_stack,
    matrix_shape,
    pending_sides,
)

__all__ = ["PreconditionerWarning", "SpectralKron"]

# State entries kept in float32 (float64 for a float64 state) whatever the state dtype.
_FLOAT32_KEYS = ("d_C", "d_K", "alpha", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col")
# Modules whose frames a warning skips to reach the user's code. A new group
# arrives through SpectralKron.__init__ and torch.optim.Optimizer.__init__ or
# through a direct add_param_group call, and step runs inside the wrappers of
# torch.no_grad and of torch.optim's step hooks, and perhaps inside
# torch.amp.GradScaler.step.
_INNER_MODULES = ("spectral_es.", "torch.optim", "torch.utils._contextlib", "torch.amp")
# Weights of at most this many entries that share a group, matrix shape,
# state layout, dtypes and device take their update as one stack, and their
# refresh too where they share its schedule (see kron_update_stack). The step of a 64 x 64 weight runs a few hundred
# torch operations, each costing more in fixed overhead than in arithmetic,
# and a stack pays that overhead once for all its weights. On one thread of
# an AMD EPYC CPU a stacked step took 0.44 of the separate steps for 20
# weights of 64 x 64 and 0.73 for 8 of 128 x 128. It took 0.94 for 8 of
# 256 x 256 and 1.17 for 4 of 512 x 512, so larger weights are stepped alone
# (benchmarks/optimizer/small_models.py).
_STACK_MAX_ELEMENTS = 128 * 128

# The shortest refresh period whose refreshes leave their rotations to the
# next step (kron_refresh's defer_rotation). Below it the step after a
# refresh of the row factor refreshes the column factor, and would take
# that refresh's curvature and the row factor's rotation together.
_DEFER_MIN_PERIOD = 4


class PreconditionerWarning(UserWarning):
    """Warning that a gradient was unusable and a refresh or update was skipped."""


class SpectralKron(torch.optim.Optimizer):
    r"""Kronecker spectral preconditioning, matmul-only, with float32 or bfloat16 state.

    Each weight viewed as a matrix (n, m) keeps the curvature of its gradient
    as ``S = alpha (S_C kron S_K)``, each factor ``S_l = B_l diag(d_l) B_l^T``
    with ``prod(d_l) = 1``, and moves the factors directly, as in Lin et al.
    (2025), "Spectral-factorized positive-definite curvature learning for NN
    training": ``d`` by an exponential, ``B`` by a Cayley map, so any root
    ``S^{-1/p}`` is elementwise and no eigendecomposition, QR, Cholesky or
    solve is needed (the exact Cayley map uses one solve where the dtype has
    one). At step ``t`` with gradient ``G``::

        M     <- beta1 M + (1 - beta1) G
        every T steps: one Kronecker spectral step of size precond_lr with
              gradient outer-product curvature and gamma = 1
              (spectral_es.core.kron.kron_step)
        D     <- B_C [(B_C^T M_hat B_K) / ((alpha d_C d_K^T)^{1/p} + eps)] B_K^T,
                 M_hat = M / (1 - beta1^t)
        D     <- graft(D), then clip(D)
        W     <- W (1 - lr * weight_decay) - lr * D

    With ``p = 2`` the direction has Adam's units, because ``S`` estimates
    ``E[g g^T]``. Grafting rescales ``D`` layer by layer, so that a learning
    rate tuned for AdamW is a sensible start for any ``p``.

    Routing (decided when a parameter's state is created):

    * 1-D and 0-D parameters (biases, norm scales), and every parameter of a
      group with ``route="adam"``, take AdamW steps with the same ``lr``,
      ``betas``, ``eps`` and ``weight_decay``.
    * A parameter with 2 or more dimensions is viewed as (shape[0], rest): a
      conv kernel (out, in, kh, kw) as (out, in * kh * kw). ``route="kron"``
      raises for a 1-D parameter instead of sending it to Adam.
    * A side longer than ``max_precond_dim`` gets a diagonal factor (only
      ``d``, O(n) memory), so a 50k-row embedding never gets a 50k x 50k
      matrix. Its other side keeps a full factor if it fits.
    * So does a side more than ``max_side_ratio`` (16) times as long as the
      other. A classifier head of shape (10, 2048) would otherwise get a
      2048 x 2048 factor for its 20k weights, whose refreshes (an LU solve
      and a product of that size) made its median step several hundred
      times slower than with the diagonal factor (250-470 ms against
      0.6 ms in two measurements on one thread of an AMD EPYC CPU; AdamW:
      0.1 ms).
    * Parameters with no elements are skipped.

    ``route``, ``max_precond_dim`` and ``max_side_ratio`` edited in
    ``param_groups`` after a parameter's state exists raise at the next
    step if they would change its path or factors; deleting its state
    (``del optimizer.state[param]``) starts it again under the new routing.

    Stacks: weights of at most 128 x 128 entries that share a group, a
    matrix shape, a state layout, dtypes and a device take their step
    together (each with its own bias correction, so a weight that missed
    steps still joins in). Their states are stacked into (k, ...) tensors,
    and each state entry then views one row of its stack, so later steps
    copy only the gradients (and the factors of weights that refresh while
    their stack's neighbours do not). The batched products pay the fixed cost of each operation
    once per stack instead of once per weight. The results equal those of
    separate steps up to the rounding of batched against single products.

    Schedule: the row factor refreshes at steps ``t = 1, 1 + T, ...`` and the
    column factor at ``t = 1 + T // 2, 1 + T + T // 2, ...`` (both at once
    for ``T = 1``), which halves the refresh work of the worst step. The
    first usable gradient initialises ``alpha = mean(G^2)`` and refreshes
    both. Each eigenbasis takes one Björck step (see
    :func:`spectral_es.core.bjorck_orthogonalize`) with every
    ``orthogonalize_every``-th refresh of its factor.

    For ``T >= 4`` every refresh after the first is spread over two steps.
    Its own step forms the curvature (3 products for a full side), moves
    ``d`` and ``alpha``, and stores the Cayley generator. The next step,
    which refreshes nothing, rotates ``B`` (5 products: the order-8 map, or
    for the exact map a solve, and the product with ``B``). Every step also
    takes the 4 products of the preconditioning, so the costliest step takes
    about 9 products instead of 12. In ``benchmarks/optimizer/step_time.py``
    (a 1024 x 1024 float32 weight, bfloat16 state, ``T = 10``, one thread of
    an AMD EPYC CPU) the slowest step took 2.4 times as long as the median
    step, against about 3 times before the split. For the one step in
    between, the preconditioner pairs the new ``d`` with the old ``B``. A
    Björck step comes before the curvature, on the refresh's own step, so
    that it cleans the eigenbasis that the curvature is formed in. The
    generator, a matrix the size of ``B`` in the state dtype, is kept in the
    state (``N_C`` or ``N_K``) until the rotation, and a ``state_dict``
    saved in between contains it. A weight that misses the next step (no
    gradient, or one that the gradient guard rejects) keeps it until it
    steps again.

    For ``T < 4`` the step after the row factor's refresh refreshes the
    column factor, so each refresh rotates at once, and its Björck step
    follows the rotation.

    Cayley map: ``cayley="auto"`` takes the exact map (one LU solve) when the
    state dtype has a dense solver (float32, float64) and the truncated,
    matmul-only map otherwise (bfloat16, float16, where torch has no
    solver). The truncated map's series needs a short generator ``N``,
    because its orthogonality defect after one map is about
    ``2 ‖N‖_2^order``. The defaults::

        state dtype                        map        norm capped  cap   order  squarings
        float32, float64                   exact      none         none  -      -
        float32, float64 with "truncated"  truncated  Frobenius    0.25  8      up to 4
        bfloat16, float16                  truncated  spectral     0.5   8      0

    The options ``cayley`` (map), ``generator_norm`` (norm),
    ``max_generator_norm`` (cap) and ``max_cayley_squarings`` change them.
    The map has order 8, ``(I + N)^2 (I + N^2)(I + N^4)``: four products
    for the polynomial and one with ``B``.

    * Frobenius cap: ``‖N‖_F <= 0.25``, which bounds one map's defect by
      2^(-2.5) * 0.25^8 = 2.7e-6 (see :func:`spectral_es.core.cayley_truncated`).
      A longer generator is halved up to
      ``max_cayley_squarings`` times and the map of the halved one squared
      as often, so generators up to 0.25 * 2^4 = 4 rotate in full and only
      longer ones are cut to that length.
    * Spectral cap: ``‖N‖_2 <= 0.5``, the spectral norm estimated by 10
      power iterations (matrix-vector products). The spectral norm of a
      generator is up to ``sqrt(n)`` times smaller than its Frobenius
      norm, so much longer rotations pass the cap. In exact arithmetic
      one map's defect is then at most 2 * 0.5^8 = 8e-3 in spectral norm,
      about 1.7 times the spectral-norm rounding error of an orthogonal
      matrix stored in bfloat16 (about 4.7e-3 at n = 64 to 1024), and
      only a generator at the cap reaches it: the bound falls as the 8th
      power of the norm, 5e-4 at 0.35. The bfloat16 products add
      rounding of their own to every map, whatever the norm. Power
      iteration can only underestimate the norm, and the next Björck step
      removes the excess of a low estimate along with the rounding.

    A cap alone needs no host synchronisation. Squarings read the norm on
    the host, once per refreshed factor, to choose their number. With the
    exact map a ``max_generator_norm`` given explicitly caps the generator
    too, and squarings do not apply.

    In bfloat16 each Björck step returns the eigenbases to the rounding
    floor, because it takes the diagonal of ``B^T B`` from float32 column
    norms (see :func:`spectral_es.core.bjorck_orthogonalize`). Each refresh
    between two steps adds rounding again.
    ``benchmarks/optimizer/orthogonality.py`` refreshes one
    weight 1,000 times (``precondition_frequency=1``, other options at
    their defaults) and reports ``||B^T B - I||_F`` against the floor, the
    defect of an orthogonal matrix rounded to bfloat16. On one thread of an
    Intel Xeon CPU with AMX, at n = 64, 256 and 1024, the defect after
    refresh 1,000, a Björck step, was 0.020, 0.038 and 0.075, 1.00 to 1.02
    times the floor. Over the last 100 refreshes its mean was 3.1 to 3.4
    times the floor and its maximum, just before a step, 4.8 to 5.7 times.
    Without Björck steps it reached 76 to 105 times.
    At n = 2048, the default ``max_precond_dim``, 200 refreshes
    (``--sizes 2048 --refreshes 200``) gave the same pattern: 1.00, 3.4 and
    5.2 times the floor.

    Cutting every generator to Frobenius norm 0.25 slows the eigenbases. On
    the digits convnet (``benchmarks/optimizer``, 10 seeds) that variant
    trained no better than the default: the latest check ranked it last of
    the SpectralKron variants in float32 and in bfloat16, with a median test
    loss 13 to 27% above theirs, within that benchmark's noise.

    A bfloat16 or float16 state gets no squarings by default: the spectral
    cap lets long rotations through without the host synchronisation that
    squarings need. The map is applied as ``B + B (R - I)`` with ``R - I``
    formed without ``I`` (see :func:`spectral_es.core.rotate`), so squarings
    add little rounding. With the gradients of
    ``benchmarks/optimizer/orthogonality.py`` and 500 refreshes (a separate
    run, not on its results page), 4 squarings with the Frobenius cap gave
    a mean defect over the last 100 refreshes of 3.1 and 4.0 times the
    floor at n = 64 and 256, against 3.3 and 3.6 with the defaults.

    Gradient guard: a gradient with NaN or infinite entries, or one so large
    that its squares could overflow (an L1 norm of at least the square root
    of the largest float32 number, 1.8e19, or of the largest float64 number
    for a float64 state), skips that parameter's whole update and leaves its
    state untouched. An
    all-zero gradient skips a scheduled refresh and keeps the previous
    preconditioner. Before the first nonzero gradient there is none yet, so
    a zero gradient then only applies the weight decay. All three warn
    with :class:`PreconditionerWarning`. The check costs one host
    synchronisation per step for all parameters of a device together.

    ``torch.compile`` and autocast: a compiled model and autocast (bfloat16,
    or float16 with a ``GradScaler``) train as usual, because the optimizer
    only receives the parameters and their gradients. The step itself is not
    written for ``torch.compile``: compiling it breaks the graph where the
    schedule reads the step count on the host, and each weight shape is
    compiled anew. Compiling a training step that includes ``step()`` thus
    costs far more than with AdamW, and past torch's recompile limit (8 by
    default) further shapes run eagerly. Compile the model, not the step.

    Distributed data parallel: the step is deterministic given the gradients,
    so under ``DistributedDataParallel`` (which averages gradients before
    ``step``) every rank computes the same update and keeps the same state.
    By default no extra communication is needed, and every rank does all
    the factor work. With ``distributed_refresh=True`` and an initialised
    process group (``torch.distributed``), each scheduled refresh
    runs on one rank only, chosen so that the ranks share the refresh work
    of the step about evenly, and that rank broadcasts the new ``d``, ``B``
    and ``alpha``. A refresh that leaves its rotation to the next step
    broadcasts the generator in place of ``B``, and the rotation, too,
    runs on one rank, which broadcasts the rotated ``B``. The ranks then
    still hold bitwise the same state as
    without the option. The refreshes (a solve or a truncated map, and 3
    products per side) are most of a step's factor work; the 4 products of
    the preconditioning still run on every rank. Every rank must have every
    parameter and call ``step`` with the same gradients, as
    ``DistributedDataParallel`` ensures. Where ranks hold different
    parameters (``ZeroRedundancyOptimizer``, FSDP, tensor parallelism) a
    check at each step raises ``RuntimeError`` instead. The ranks that
    share the refreshes are those of ``process_group``: the default group,
    or under hybrid parallelism the data-parallel group that was given to
    ``DistributedDataParallel``. Its backend must handle the parameters'
    device (gloo for CPU, NCCL for CUDA, or ``"cpu:gloo,cuda:nccl"`` for
    both). Without a process group the option changes nothing.

    NOTE: wide sides fall back to a diagonal factor, not to blocks of full
    factors.

    Args:
        params: Parameters or parameter groups; every option below may be set
            per group.
        lr: Learning rate, finite and >= 0: a float or, as in
            ``torch.optim.AdamW``, a one-element tensor.
        betas: ``(beta1, beta2)``: momentum and Adam second-moment decay, each
            in [0, 1) and a float or a one-element tensor.
        eps: Damping of ``S^{1/p}`` (and of Adam's ``sqrt(v)``), finite and >= 0.
        weight_decay: Decoupled weight decay, finite and >= 0, multiplied by ``lr``.
            Default 0.0, whereas ``torch.optim.AdamW`` defaults to 0.01, so
            pass ``weight_decay=0.01`` when replacing a bare ``AdamW(params)``
            to keep its decay.
        root: The root ``p`` in ``S^{-1/p}``, finite and > 0; 2 whitens, 1 is
            Newton-like.
        precond_lr: Step size ``beta_2`` of the factor update in (0, 1]: to
            first order each refresh moves ``S`` to
            ``(1 - precond_lr) S + precond_lr g g^T`` projected on
            Kronecker matrices.
        precondition_frequency: ``T`` >= 1, steps between refreshes of a factor.
        max_precond_dim: Longest side that gets a full factor, >= 1.
        max_side_ratio: Largest ratio of a side to the other side for which
            it gets a full factor, >= 1, or ``None`` for no limit.
        graft: ``"adafactor"``, ``"adam"``, ``"rms"`` or ``"none"``.
            ``"adafactor"`` gives the step the Frobenius norm of the AdamW
            step with Adafactor's factored second moment
            ``V = r c^T / mean(r)``, built from moving averages of the row
            and column means of ``G^2`` (n + m float32 numbers of state).
            ``"adam"`` does the same with Adam's full second moment (n m
            numbers). ``"rms"`` gives the step the fixed RMS ``graft_rms``
            (no state), and ``"none"`` leaves it. The factored moment is
            exact when the squared gradients have rank one, and on the
            digits convnet both grafts gave test losses within 5% of each
            other at the same learning rate.
        graft_rms: Target RMS of the step for ``graft="rms"``, finite and
            > 0. The default 0.2 is the RMS that AdamW steps typically settle
            at.
        max_update_rms: Cap on the RMS of each parameter's step (before
            ``lr``), or ``None``: preconditioned-gradient clipping.
        damping: Added to each factor's curvature diagonal, in units of its
            eigenvalues (geometric mean 1), finite and >= 0. A direction the
            gradient never reaches settles near ``damping`` instead of
            decaying to 0.
        state_dtype: ``None`` (the parameter's dtype), ``torch.float32``,
            ``torch.bfloat16``, ``torch.float16`` or ``torch.float64`` (or
            their names and torch's aliases such as ``"half"``): dtype of the
            momentum and the eigenbases. The eigenvalues, ``alpha`` and the
            graft's second moments are float32, or float64 with a float64
            state. A ``state_dtype`` set in ``param_groups`` after the state
            exists raises at the next step, until
            ``optimizer.load_state_dict(optimizer.state_dict())`` casts the
            state to it.
        cayley: ``"auto"``, ``"exact"`` or ``"truncated"``.
        max_generator_norm: Cap in (0, 1) on the Cayley generator's norm (the
            one ``generator_norm`` names), or ``None``: for the truncated map
            0.25 (Frobenius) or 0.5 (spectral), none for the exact map.
        generator_norm: ``"auto"``, ``"frobenius"`` or ``"spectral"``, the
            norm that ``max_generator_norm`` caps (see above); ``"auto"`` is
            ``"spectral"`` for the truncated map with a bfloat16 or float16
            state and ``"frobenius"`` otherwise.
        max_cayley_squarings: Most squarings of the truncated map, >= 0, or
            ``None``: 4 for a float32 or float64 state (with
            ``cayley="truncated"``), 0 for bfloat16 and float16. Each
            doubles the generator length the map takes before the cap and
            costs one product of the factor's size.
        orthogonalize_every: Refreshes between Björck steps, >= 0 (0: never).
        route: ``"auto"``, ``"kron"`` or ``"adam"``, as described above.
        maximize: Maximise the objective: step along the gradient, as the
            ``maximize`` of ``torch.optim.AdamW`` does.
        distributed_refresh: Under ``torch.distributed``, refresh each
            weight's factors on one rank and broadcast them (see above).
        process_group: The ``torch.distributed`` group whose ranks share the
            refreshes under ``distributed_refresh``, or ``None`` for the
            default group. It applies to the whole optimizer, not per
            param group. ``state_dict``, pickling and ``copy.deepcopy`` do
            not keep it (a copy uses the default group), so pass it again to
            the optimizer that loads a checkpoint.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> optimizer = SpectralKron(model.parameters(), lr=1e-3, weight_decay=0.01)
        >>> loss = model(torch.randn(4, 8)).square().mean()
        >>> loss.backward()
        >>> optimizer.step()
    """

    @hint_unknown_keywords(peer_option_hint)
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        root: float = 2.0,
        precond_lr: float = 0.1,
        precondition_frequency: int = 2,
        max_precond_dim: int = 2048,
        max_side_ratio: float | None = 16.0,
        graft: str = "adafactor",
        graft_rms: float = 0.2,
        max_update_rms: float | None = None,
        damping: float = 1e-4,
        state_dtype: torch.dtype | str | None = None,
        cayley: str = "auto",
        max_generator_norm: float | None = None,
        generator_norm: str = "auto",
        max_cayley_squarings: int | None = None,
        orthogonalize_every: int = 10,
        route: str = "auto",
        maximize: bool = False,
        distributed_refresh: bool = False,
        process_group: Any = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "root": root,
            "precond_lr": precond_lr,
            "precondition_frequency": precondition_frequency,
            "max_precond_dim": max_precond_dim,
            "max_side_ratio": max_side_ratio,
            "graft": graft,
            "graft_rms": graft_rms,
            "max_update_rms": max_update_rms,
            "damping": damping,
            "state_dtype": state_dtype,
            "cayley": cayley,
            "max_generator_norm": max_generator_norm,
            "generator_norm": generator_norm,
            "max_cayley_squarings": max_cayley_squarings,
            "orthogonalize_every": orthogonalize_every,
            "route": route,
            "maximize": maximize,
            "distributed_refresh": distributed_refresh,
        }
        super().__init__(params, defaults)
        self.process_group = checked_process_group(process_group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group after checking its options (see the class docstring).

        Raises:
            ValueError: for an invalid option or a parameter listed twice;
                the optimizer is then unchanged.
        """
        where = f" in param group {len(self.param_groups)}"
        if isinstance(param_group, dict):
            options = {key: value for key, value in param_group.items() if key != "params"}
            check_group({**self.defaults, **options}, where)
            _warn_unknown_options(options, self.defaults, where)
        super().add_param_group(param_group)
        try:
            check_group(self.param_groups[-1], where)
            check_distinct_params(self.param_groups[-1], where)
            check_kron_route(self.param_groups[-1], where)
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # torch.optim pickles only defaults, state and param_groups, and a process group cannot be pickled.
        self.__dict__.setdefault("process_group", None)
        for group in self.param_groups:
            group["state_dtype"] = dtype_name(group["state_dtype"])
            # Saved before the option existed: take its value in LATER_OPTIONS, as torch.optim takes new defaults.
            for name, default in LATER_OPTIONS.items():
                group.setdefault(name, default)

    # These overloads copy those of torch.optim.Optimizer.step, which returns a loss only when given a closure.
    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Take one optimisation step; ``closure`` re-evaluates the loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        refreshes, updates, adam_updates = _plan_step(self._collect_work())
        # The refreshes read only the gradients and the factors, and the
        # updates read the factors only after them, so running all refreshes
        # first computes what refreshing each weight inside its update would.
        # Under maximize each loop negates a gradient only when it uses it,
        # so the step keeps one negated gradient alive at a time.
        check_plan = any(group["distributed_refresh"] for group in self.param_groups)
        _refresh_factors(refreshes, check_plan=check_plan, process_group=self.process_group)
        _run_updates(updates, adam_updates)
        return loss

    def _collect_work(self) -> list[tuple[dict[str, Any], torch.Tensor, dict[str, Any], str]]:
        """Return ``(group, param, state, name)`` for each parameter that steps now, after checking it.

        Groups are checked again, since options may have been edited since
        construction (as schedulers edit ``lr``). A parameter's state is
        created at its first step.
        """
        work = []
        for group_index, group in enumerate(self.param_groups):
            check_group(group, f" in param group {group_index}")
            for index, param in enumerate(group["params"]):
                if param.grad is None or param.numel() == 0:
                    # A weight that misses steps (frozen, or unused in the forward
                    # pass) would otherwise keep its whole former stack in memory.
                    _release_stack(self.state.get(param, {}))
                    continue
                name = f"parameter {parameter_label(group, index)} of group {group_index}"
                _check_steppable(param, name)
                state = self.state[param]
                if not state:
                    state.update(self._init_state(param, group))
                else:
                    check_state_dtype(group, state, name)
                    check_routing(group, state, param, name)
                work.append((group, param, state, name))
        return work

    def state_dict(self) -> dict[str, Any]:
        """Return the state as ``torch.optim.Optimizer.state_dict`` does, with each stacked entry copied.

        The state tensors of stacked weights (see "Stacks" above) are rows
        of shared stacks. ``torch.save`` writes a tensor's whole storage, so
        one parameter's entry saved alone, as a per-parameter or sharded
        checkpoint saves it, would contain the whole stack. Such rows are
        returned as copies, and the other tensors, as in ``torch.optim``,
        as references to the live state. The copies are made before the
        ``register_state_dict_post_hook`` hooks run, so the hooks see them
        and may return a state dict of any layout, as with ``torch.optim``.
        While the returned dict lives, the copies take as much memory as the
        stacked part of the state, on its device.
        """
        # Registered during this call and prepended, the copy runs before every post-hook.
        handle = self.register_state_dict_post_hook(_copy_stacked_rows, prepend=True)
        try:
            return super().state_dict()
        finally:
            handle.remove()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, in the saved state dtypes.

        As in ``torch.optim``, the saved group options replace this
        optimizer's, ``state_dtype`` included. ``torch.optim.Optimizer``
        casts every floating state tensor to its parameter's dtype. Here the
        eigenvalues, ``alpha`` and the second moment stay float32 and the
        momentum and eigenbases take the loaded group's ``state_dtype``, so
        the saved tensors are cast again from the originals (a bfloat16
        state round-trips exactly), onto each parameter's device.

        Hooks behave as with ``torch.optim``: the checks and the casts apply
        to the state dict that the ``register_load_state_dict_pre_hook``
        hooks return, and ``register_load_state_dict_post_hook`` hooks see
        the cast state.

        Raises:
            ValueError: if ``state_dict`` was not saved by ``SpectralKron``,
                has an invalid option, has groups with other numbers of
                parameters, or has a state whose shape differs from its
                parameter's. The optimizer is then unchanged.
        """
        hooked: dict[str, Any] = {}

        def check_saved(optimizer: torch.optim.Optimizer, loaded: dict[str, Any]) -> None:
            check_saved_groups(loaded, self.defaults)
            check_saved_sizes(loaded, self.param_groups)
            hooked["state_dict"] = loaded

        def cast_saved(optimizer: torch.optim.Optimizer) -> None:
            self._cast_loaded_state(hooked["state_dict"])

        # Registered during this call, the check runs after every pre-hook
        # registered before it, and the prepended cast before every post-hook.
        handles = [
            self.register_load_state_dict_pre_hook(check_saved),
            self.register_load_state_dict_post_hook(cast_saved, prepend=True),
        ]
        previous = self.state, self.param_groups
        try:
            super().load_state_dict(state_dict)
        except Exception:
            # torch.optim builds new state and groups, so the old ones are intact.
            self.state, self.param_groups = previous
            raise
        finally:
            for handle in handles:
                handle.remove()

    def _cast_loaded_state(self, state_dict: dict[str, Any]) -> None:
        """Replace the state that ``torch.optim`` loaded with the saved tensors, cast to the state dtypes."""
        saved_state = state_dict["state"]
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        owners = [(param, group) for group in self.param_groups for param in group["params"]]
        for saved_id, (param, group) in zip(saved_ids, owners, strict=True):
            if saved_id in saved_state:
                _check_saved_shape(saved_state[saved_id], param, saved_id)
                self.state[param] = {
                    key: _cast_state(key, value, param, resolve_state_dtype(group, param))
                    for key, value in saved_state[saved_id].items()
                }

    def _init_state(self, param: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """Route ``param`` and return its initial state."""
        state_dtype = resolve_state_dtype(group, param)
        if not uses_kron(group, param):
            return init_adam_state(param, state_dtype)
        if param.ndim < 2:
            raise ValueError(
                f"route='kron' needs parameters with at least 2 dimensions, got shape {tuple(param.shape)}; "
                "put 0-D and 1-D parameters in a group with route='auto' or 'adam'"
            )
        cayley_method(group, state_dtype)
        return init_kron_state(param, state_dtype, group["max_precond_dim"], group["graft"], group["max_side_ratio"])


def _check_steppable(param: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` for a parameter that SpectralKron cannot step: sparse gradient, meta or complex."""
    grad = cast(torch.Tensor, param.grad)
    if grad.is_sparse:
        raise ValueError(
            f"{name} has a sparse gradient, which SpectralKron does not support; "
            "use torch.optim.SparseAdam for it (nn.Embedding(sparse=True) gives sparse gradients)"
        )
    if param.is_meta:
        raise ValueError(f"{name} is on the meta device and has no values; materialize the model first")
    if torch.is_complex(param):
        # torch.view_as_real(param) is not a leaf, so it cannot be passed as a parameter instead.
        raise ValueError(
            f"{name} is complex ({param.dtype}, shape {tuple(param.shape)}), which SpectralKron does not "
            "support; store it as a real parameter with a last dimension of 2 and call "
            "torch.view_as_complex on it in forward, or optimise it with torch.optim.AdamW"
        )


class _Refresh(NamedTuple):
    """A factor refresh that a step schedules for one weight on the Kronecker path."""

    group: dict[str, Any]
    param: torch.Tensor
    state: dict[str, Any]
    sides: str  # "C", "K", "CK", or "" for no refresh (pending rotations or Björck steps alone)
    initialize: bool  # whether alpha = mean(G^2) is set first (the first usable gradient)
    orthogonalize: str  # the sides whose eigenbases take a Björck step ("" for none)
    rotation: dict[str, Any]  # the Cayley-map options of kron_refresh
    pending: str  # the sides whose rotation, left by the last refresh, comes first ("" for none)
    defer: bool  # whether the refresh leaves its rotations to the next step (kron_refresh's defer_rotation)


def _plan_step(work: list[tuple]) -> tuple[list[_Refresh], list[tuple], list[tuple]]:
    """Return the refreshes, Kronecker updates and Adam updates of the parameters in ``work``.

    Parameters with an unusable gradient are left out with a warning (see
    the gradient guard in :class:`SpectralKron`), and so is a zero gradient
    before the first refresh, which takes only the weight decay here.
    """
    refreshes: list[_Refresh] = []
    updates = []
    adam_updates = []
    for (group, param, state, name), (finite, bounded, nonzero, initialized) in zip(
        work, _gradient_flags(work), strict=True
    ):
        # A non-finite L1 norm is rare: only then are the entries checked, to name the cause.
        if not finite and not bool(torch.isfinite(param.grad).all()):
            _warn(name, param, "has NaN or infinite entries", "skipped its update and kept its state")
            _release_stack(state)
            continue
        if not bounded:
            # Rare, so the norm is computed again for the message only.
            wide = _wide_dtype(state)
            l1 = torch.linalg.vector_norm(param.grad, ord=1, dtype=torch.float64).item()
            _warn(
                name,
                param,
                f"has an L1 norm of {l1:.2g}, at or above {_max_gradient_l1(wide):.2g}, so its squares can "
                f"overflow {str(wide).removeprefix('torch.')}",
                "skipped its update and kept its state; clip the gradients (torch.nn.utils.clip_grad_norm_) "
                "to step on such gradients",
            )
            _release_stack(state)
            continue
        if "d_C" not in state:
            adam_updates.append((group, param, state))
            continue
        check_graft_state(group, state, name)
        refresh, orthogonalize = _schedule(state, group)
        pending = pending_sides(state)
        if not nonzero and not initialized:
            # No preconditioner and no momentum yet: the step is the weight decay alone.
            action = "applied only the weight decay (no preconditioner exists yet)"
            _warn(name, param, "is all zeros", action + _frozen_hint(param))
            param.mul_(1 - group["lr"] * group["weight_decay"])
            continue
        if not nonzero:
            if refresh:
                action = "skipped the preconditioner refresh and kept the previous one"
                _warn(name, param, "is all zeros", action + _frozen_hint(param))
            # A Björck step scheduled with the refresh, and a rotation left
            # by the last one, need no gradient and still run.
            refresh = ""
        if not initialized:
            refresh = "CK"
        if refresh or orthogonalize or pending:
            # Every rank computes the Cayley options, so an invalid one raises
            # everywhere and never leaves other ranks waiting in a broadcast.
            rotation = rotation_options(group, state["exp_avg"].dtype)
            # The first refresh rotates at once, so the first update has a
            # whole preconditioner.
            defer = initialized and group["precondition_frequency"] >= _DEFER_MIN_PERIOD
            refreshes.append(
                _Refresh(group, param, state, refresh, not initialized, orthogonalize, rotation, pending, defer)
            )
        updates.append((group, param, state))
    return refreshes, updates, adam_updates


def _run_updates(updates: list[tuple], adam_updates: list[tuple]) -> None:
    """Step the parameters: Kronecker updates one by one or as stacks, Adam updates with ``_foreach`` operations."""
    for stack in _stacks(updates, _update_key):
        group = stack[0][0]
        if len(stack) == 1:
            _, param, state = stack[0]
            _release_stack(state)
            grad = _signed_gradient(param, group)
            kron_update(param, grad, state, group, refresh="", initialize=False, rotation={}, orthogonalize=False)
        else:
            params = [param for _, param, _ in stack]
            grads = [_signed_gradient(param, group) for param in params]
            kron_update_stack(params, grads, [state for _, _, state in stack], group)
    for stack in _stacks(adam_updates, _adam_key):
        group = stack[0][0]
        params = [param for _, param, _ in stack]
        grads = [_signed_gradient(param, group) for param in params]
        if len(stack) == 1:
            adam_update(params[0], grads[0], stack[0][2], group)
        else:
            adam_update_foreach(params, grads, [state for _, _, state in stack], group)


def _refresh_factors(refreshes: list[_Refresh], *, check_plan: bool, process_group: Any = None) -> None:
    """Run the scheduled refreshes: all on this rank, or under ``distributed_refresh`` each on its owner rank.

    Every rank of ``process_group`` (``None``: the default group) must pass
    the same list in the same order, so that the broadcasts that follow pair
    up across ranks. With ``check_plan`` (some group has
    ``distributed_refresh``) one small collective first checks that, and
    raises ``RuntimeError`` on every rank where the ranks differ.
    """
    rank, world_size = _group_rank(process_group)
    stacks, stack_owners = _refresh_plan(refreshes, world_size)
    refreshes = [refresh for stack in stacks for refresh in stack]
    owners = [owner for stack, owner in zip(stacks, stack_owners, strict=True) for _ in stack]
    if check_plan and world_size > 1:
        _check_same_plan(refreshes, owners, process_group)
    for stack, owner in zip(stacks, stack_owners, strict=True):
        if owner is None or owner == rank:
            _run_refreshes(stack)
    _broadcast_refreshed(refreshes, owners, rank, process_group)


def _group_rank(process_group: Any) -> tuple[int, int]:
    """Return this process's rank in ``process_group`` and the group's size; ``(0, 1)`` without torch.distributed.

    A rank outside a group never has it: ``torch.distributed.new_group``
    gives such a rank a sentinel, which the constructor rejects.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0, 1
    return torch.distributed.get_rank(process_group), torch.distributed.get_world_size(process_group)


def _refresh_plan(refreshes: list[_Refresh], world_size: int) -> tuple[list[list[_Refresh]], list[int | None]]:
    """Return the refreshes split into stacks, and the rank of ``world_size`` ranks that runs each stack.

    Under ``distributed_refresh`` a stack is cut into one part per rank
    (fewer if it is shorter), so that many small weights of one shape
    still spread over the ranks.
    """
    stacks = _stacks(refreshes, _refresh_key)
    if world_size > 1:
        parts: list[list[_Refresh]] = []
        for stack in stacks:
            count = min(world_size, len(stack)) if stack[0].group["distributed_refresh"] else 1
            parts.extend(stack[len(stack) * part // count : len(stack) * (part + 1) // count] for part in range(count))
        stacks = parts
    return stacks, _refresh_owners(stacks, world_size)


def _run_refreshes(stack: list[_Refresh]) -> None:
    """Run the refreshes of one stack (see :func:`_stacks`): one weight alone, several at once.

    Pending rotations come first, then the Björck steps and the refresh.
    """
    first = stack[0]
    states = [refresh.state for refresh in stack]
    if first.pending:
        if len(stack) > 1:
            kron_rotate_pending_stack(states, rotation=first.rotation)
        else:
            kron_rotate_pending(first.state, rotation=first.rotation)
    if not first.sides:
        if first.orthogonalize:
            kron_orthogonalize_stack(states, first.orthogonalize)
        return
    options = {
        "sides": first.sides,
        "beta": first.group["precond_lr"],
        "rotation": first.rotation,
        "damping": first.group["damping"],
        "orthogonalize": bool(first.orthogonalize),
        "defer_rotation": first.defer,
    }
    if len(stack) > 1:
        grads = [_signed_gradient(refresh.param, refresh.group) for refresh in stack]
        kron_refresh_stack(states, grads, initialize=first.initialize, **options)
        return
    # The state may still be rows of the weight's update stack (its schedule
    # lags the others', or it is a one-weight part under distributed_refresh).
    # The refresh moves those rows in place, and the update releases them if
    # the weight steps alone. Copies made here would make the update restack
    # every weight of its stack.
    state = first.state
    grad = _signed_gradient(first.param, first.group)
    if first.initialize:
        kron_initialize_scale(state, grad)
    kron_refresh(state, grad.reshape(matrix_shape(first.param)).to(state["exp_avg"].dtype), **options)


def _release_stack(state: dict[str, Any]) -> None:
    """Replace the state tensors that are rows of a stack by copies, for a weight stepped alone or skipped.

    A weight leaves its stack (see ``stack_state``) when it misses a step,
    for example. As long as it kept its view of one row, the stack's other
    rows would stay in memory and in every saved ``state_dict``. A copy is
    made once, because a copy has a storage of its own. The check is on the
    storage and not on ``_base``, because ``copy.deepcopy`` and unpickling
    (``torch.load`` of a whole optimizer) give rows without a ``_base``.
    """
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.untyped_storage().nbytes() > value.nbytes:
            state[key] = value.clone()


def _copy_stacked_rows(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """Replace the per-parameter entries of ``state_dict["state"]`` by new dicts in which rows of stacks are copies."""
    state_dict["state"] = {
        index: {key: _own_copy(value) for key, value in state.items()} for index, state in state_dict["state"].items()
    }


def _own_copy(value: Any) -> Any:
    """Return ``value`` copied if it is a tensor that views part of a larger storage (a row of a stack), else itself."""
    if isinstance(value, torch.Tensor) and value.untyped_storage().nbytes() > value.nbytes:
        return value.clone()
    return value


def _stacks(items: list, key: Callable[[Any], Hashable | None]) -> list[list]:
    """Split ``items`` into lists of equal ``key``, in order of first appearance; a ``None`` key stays alone."""
    stacks: dict[Hashable, list] = {}
    for position, item in enumerate(items):
        value = key(item)
        stacks.setdefault(("alone", position) if value is None else value, []).append(item)
    return list(stacks.values())


def _stack_key(group: dict[str, Any], param: torch.Tensor, state: dict[str, Any]) -> tuple | None:
    """Return what weights must share to be stacked, or ``None`` for a weight stepped alone."""
    if param.numel() > _STACK_MAX_ELEMENTS:
        return None
    grad = cast(torch.Tensor, param.grad)
    # A pending generator does not enter the update, so it does not split update stacks.
    layout = tuple(
        (key, value.dtype, tuple(value.shape))
        for key, value in state.items()
        if key != "step" and key not in _PENDING_KEYS
    )
    return id(group), matrix_shape(param), param.dtype, grad.dtype, param.device, layout


def _update_key(update: tuple[dict[str, Any], torch.Tensor, dict[str, Any]]) -> tuple | None:
    """Return the stack key of a weight's update, :func:`_stack_key`.

    Weights that have taken different numbers of steps (one was frozen for
    a while, say) still share a stack: each gets its own bias correction.
    """
    group, param, state = update
    return _stack_key(group, param, state)


def _adam_key(update: tuple[dict[str, Any], torch.Tensor, dict[str, Any]]) -> tuple:
    """Return what tensors on the Adam path must share to take one ``_foreach`` step together."""
    group, param, state = update
    grad = cast(torch.Tensor, param.grad)
    dtypes = (param.dtype, grad.dtype, state["exp_avg"].dtype, state["exp_avg_sq"].dtype)
    return id(group), param.device, dtypes


def _refresh_key(refresh: _Refresh) -> tuple | None:
    """Return the stack key of a refresh: :func:`_stack_key` and the refresh's schedule."""
    key = _stack_key(refresh.group, refresh.param, refresh.state)
    return None if key is None else (*key, refresh.sides, refresh.initialize, refresh.orthogonalize, refresh.pending)


def _check_same_plan(refreshes: list[_Refresh], owners: list[int | None], process_group: Any = None) -> None:
    """Raise ``RuntimeError`` on every rank unless all ranks scheduled the same distributed refreshes.

    Under ``DistributedDataParallel`` every rank has every parameter and
    the same gradients, so the plans agree. Where ranks have different
    parameters (``ZeroRedundancyOptimizer``, FSDP, tensor parallelism) they
    would not, and a rank would overwrite its factors with another
    parameter's. One all-reduce of the plan's size and checksum, and of
    their negatives, gives each rank the largest and smallest of both.
    """
    plan = [
        (position, *matrix_shape(refresh.param), refresh.sides, refresh.pending, refresh.defer, sorted(refresh.state))
        for position, (refresh, owner) in enumerate(zip(refreshes, owners, strict=True))
        if owner is not None
    ]
    checksum = zlib.crc32(repr(plan).encode())
    device = _collective_device(process_group, [refresh.param.device for refresh in refreshes])
    summary = torch.tensor([len(plan), checksum, -len(plan), -checksum], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(summary, op=torch.distributed.ReduceOp.MAX, group=process_group)
    if summary[0] != -summary[2] or summary[1] != -summary[3]:
        raise RuntimeError(
            "SpectralKron: the ranks scheduled different factor refreshes, so distributed_refresh cannot split them; "
            "it needs every rank to hold every parameter and the same gradients, as under DistributedDataParallel "
            "(not ZeroRedundancyOptimizer, FSDP or tensor parallelism). Set distributed_refresh=False"
        )


def _collective_device(process_group: Any, devices: Sequence[torch.device]) -> torch.device:
    """Return the device of a tensor that ``process_group`` can reduce: for NCCL a GPU of this rank, else the CPU.

    NCCL needs each rank's tensor on that rank's own GPU. The first CUDA
    device among ``devices`` (those of the parameters) is one even where
    ``torch.cuda.set_device`` was never called, as with
    ``DistributedDataParallel(model, device_ids=[local_rank])`` alone, and
    the current device is the fallback for a rank with no CUDA parameter.
    """
    # NOTE: the NCCL branch has run only in a unit test without GPUs, never with NCCL itself.
    if torch.distributed.get_backend(process_group) != "nccl":
        return torch.device("cpu")
    for device in devices:
        if device.type == "cuda":
            return device
    return torch.device("cuda", torch.cuda.current_device())


def _broadcast_refreshed(
    refreshes: list[_Refresh], owners: list[int | None], rank: int, process_group: Any = None
) -> None:
    """Send the factors each owner refreshed to the other ranks, one broadcast per owner, dtype and device.

    A collective per tensor would cost its fixed latency once per ``d``,
    ``B`` and ``alpha`` of every refreshed weight, so each owner's tensors
    of one dtype and device travel as one flat buffer. Every rank builds
    the buffers in the same order from the same shapes, so the broadcasts
    pair up, and copying in and out is exact.
    """
    buffers: dict[tuple[int, torch.dtype, torch.device], list[torch.Tensor]] = {}
    for refresh, owner in zip(refreshes, owners, strict=True):
        if owner is None:
            continue
        state = refresh.state
        if owner != rank:
            for side in refresh.pending:  # the owner rotated by them and removed its own
                state.pop(f"N_{side}", None)
        for name in _refreshed_keys(refresh):
            if name.startswith("N_") and owner != rank and f"B_{name[2:]}" in state:
                state[name] = torch.empty_like(state[f"B_{name[2:]}"])  # to receive the owner's generator
            if name in state:  # a diagonal side has no B and no generator
                tensor = state[name]
                buffers.setdefault((owner, tensor.dtype, tensor.device), []).append(tensor)

    # Blocking broadcasts, issued in the same order on every rank. Asynchronous
    # ones saved little with a few buffers per step. With them a gloo rank now
    # and then aborted at interpreter exit, likely because work objects still
    # held by gloo's threads were torn down there.
    for (owner, dtype, device), tensors in buffers.items():
        if owner == rank:
            flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        else:
            flat = torch.empty(sum(tensor.numel() for tensor in tensors), dtype=dtype, device=device)
        torch.distributed.broadcast(flat, group=process_group, group_src=owner)
        if owner != rank:
            for tensor, part in zip(tensors, flat.split([tensor.numel() for tensor in tensors]), strict=True):
                tensor.copy_(part.view_as(tensor))


def _refreshed_keys(refresh: _Refresh) -> list[str]:
    """Return the state keys that ``refresh`` changes, in a fixed order: what its owner broadcasts."""
    keys = [f"B_{side}" for side in refresh.pending]
    if refresh.sides:
        keys.append("alpha")
        for side in refresh.sides:
            keys += [f"d_{side}", f"N_{side}" if refresh.defer else f"B_{side}"]
    # A deferred refresh takes its Björck steps before the curvature, and a
    # zero gradient leaves them without a refresh, so their eigenbases are
    # not among the keys above.
    keys += [f"B_{side}" for side in refresh.orthogonalize]
    return list(dict.fromkeys(keys))


def _signed_gradient(param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    """Return the gradient that the step descends: ``param.grad``, negated under ``maximize``."""
    grad = cast(torch.Tensor, param.grad)
    return -grad if group["maximize"] else grad


def _refresh_owners(stacks: list[list[_Refresh]], world_size: int) -> list[int | None]:
    """Return the rank of ``world_size`` ranks that runs each stack of refreshes (``None``: every rank runs it).

    Stacks of groups with ``distributed_refresh`` go to ranks greedily:
    the most expensive first, each to the rank with the least work so far.
    The cost is estimated in multiply-adds. Scaling the gradient and forming
    its squares costs ``n m``, and rotating it into each full eigenbasis of
    length ``k`` costs ``n m k``. Each refreshed full side adds ``k^2 l``
    for its curvature, where ``l`` is the other side's length, and ``k^3``
    for its Cayley map, whether the map runs now or, deferred, at the next
    step. Without the ``n m`` term a weight with two diagonal
    sides would cost nothing, and all such refreshes would go to one rank.
    A stack costs the sum of its weights' costs. The estimate uses only
    shapes and the schedule, which every rank shares, so all ranks agree on
    the owners.
    """
    owners: list[int | None] = [None] * len(stacks)
    if world_size == 1:
        return owners

    costs = {}
    for position, stack in enumerate(stacks):
        refresh = stack[0]
        if not refresh.group["distributed_refresh"] or not (refresh.sides or refresh.pending):
            # Björck steps alone cost 2 products per eigenbasis and need no
            # gradient, so every rank takes them rather than wait for a broadcast.
            continue
        n, m = matrix_shape(refresh.param)
        full = {"C": "B_C" in refresh.state, "K": "B_K" in refresh.state}
        cost = n * m * (1 + n * full["C"] + m * full["K"]) if refresh.sides else 0
        for side, (k, other) in (("C", (n, m)), ("K", (m, n))):
            if side in refresh.sides and full[side]:
                cost += k * k * other + (0 if refresh.defer else k**3)
            if side in refresh.pending:
                cost += k**3
        costs[position] = cost * len(stack)
    loads = [0] * world_size
    for position in sorted(costs, key=lambda position: (-costs[position], position)):
        owner = min(range(world_size), key=lambda rank: (loads[rank], rank))
        owners[position] = owner
        loads[owner] += costs[position]
    return owners


def _check_saved_shape(saved: dict[str, Any], param: torch.Tensor, saved_id: Any) -> None:
    """Raise ``ValueError`` if a saved momentum does not have its parameter's shape."""
    momentum = saved.get("exp_avg")
    if torch.is_tensor(momentum) and momentum.shape != param.shape:
        raise ValueError(
            f"state_dict's state {saved_id!r} has shape {tuple(momentum.shape)}, but its parameter has shape "
            f"{tuple(param.shape)}; load a state_dict saved for this model"
        )


def _warn_unknown_options(options: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
    """Warn about a key of a new parameter group that looks like a misspelt or another optimizer's option.

    torch.optim keeps unknown group keys, because schedulers and users store
    their own values there (``initial_lr``, ``max_lr``, ...), so they are
    not errors. A key that is not an option is ignored by the step, so a
    typo such as ``weight_decy`` would otherwise silently train without decay.
    """
    for key in options.keys() - defaults.keys():
        # A cutoff of 0.8 still catches weight_decy (0.96) and lrr (0.8). It lets
        # users' own keys pass, such as no_decay (0.6 to weight_decay) or scale (0.73 to cayley).
        advice = peer_option_advice(key, defaults, cutoff=0.8)
        if advice is None:
            continue
        message = f"SpectralKron ignores the key {key!r}{where}, which is not one of its options; {advice}"
        warnings.warn(message, stacklevel=outside_stacklevel(_INNER_MODULES))


def _schedule(state: dict[str, Any], group: dict[str, Any]) -> tuple[str, str]:
    """Return the factors to refresh at the coming step and those whose eigenbases take a Björck step.

    With period ``T`` the row factor refreshes at phase 0 and the column
    factor at phase ``T // 2``. In every ``orthogonalize_every``-th period
    each refresh comes with a Björck step of its factor's eigenbasis.
    """
    T = group["precondition_frequency"]
    t = int(state["step"].item()) + 1
    phase = (t - 1) % T
    refresh = ""
    if phase == 0:
        refresh += "C"
    if phase == T // 2:
        refresh += "K"
    every = group["orthogonalize_every"]
    if every == 0 or ((t - 1) // T + 1) % every != 0:
        return refresh, ""
    return refresh, refresh


def _gradient_flags(work: list[tuple]) -> list[tuple[bool, bool, bool, bool]]:
    """Return ``(finite, bounded, nonzero, initialized)`` per entry, with one host sync per device.

    All but ``initialized`` come from the L1 norm of the gradient,
    accumulated in float32 or wider: ``finite`` is whether it is finite
    (it overflows for NaN or infinite entries, and for finite ones that
    are large enough), ``bounded`` whether it is below
    :func:`_max_gradient_l1` of the state's float32 or float64 dtype.
    ``initialized`` is whether the factors have an ``alpha`` yet, and always
    true on the Adam path. The norms of the gradients that share a device
    and dtype come from one ``torch._foreach_norm`` call, and the flags of
    a device from a few operations on the stacked norms, so the number of
    torch operations, like that of host synchronisations, does not grow
    with the number of parameters.
    """
    flags: list[tuple[bool, bool, bool, bool]] = [(False, False, False, False)] * len(work)
    by_device: dict[torch.device, dict[torch.dtype, list[int]]] = {}
    for position, (_, param, _, _) in enumerate(work):
        wide = torch.promote_types(param.grad.dtype, torch.float32)
        by_device.setdefault(param.grad.device, {}).setdefault(wide, []).append(position)
    for device, by_dtype in by_device.items():
        positions = [position for members in by_dtype.values() for position in members]
        norms = [
            norm
            for wide, members in by_dtype.items()
            for norm in torch._foreach_norm([work[position][1].grad for position in members], ord=1, dtype=wide)
        ]
        l1 = torch.stack(norms).to(torch.float64)
        limits = torch.tensor(
            [_max_gradient_l1(_wide_dtype(work[position][2])) for position in positions],
            dtype=torch.float64,
            device=device,
        )
        alphas = [work[position][2].get("alpha") for position in positions]
        scales = torch.stack([torch.ones((), device=device) if alpha is None else alpha for alpha in alphas])
        rows = torch.stack([torch.isfinite(l1), l1 < limits, l1 > 0, scales > 0], dim=1).tolist()
        for position, row in zip(positions, rows, strict=True):
            flags[position] = tuple(row)
    return flags


def _wide_dtype(state: dict[str, Any]) -> torch.dtype:
    """Return the dtype of the squares in the curvature and second moments: float32 or float64."""
    return torch.promote_types(state["exp_avg"].dtype, torch.float32)


def _max_gradient_l1(dtype: torch.dtype) -> float:
    """Return the largest usable L1 norm of a gradient whose squares are formed in ``dtype``.

    The limit is the square root of ``dtype``'s largest number. The sum of
    the squared entries is at most the squared L1 norm, so below the limit
    neither the squares nor their sums overflow. The Frobenius norm would
    be the tight bound for the sum, but the refresh scales the squares
    further (by ``1 / d`` and ``1 / alpha``): entries of 5e17 on a (6, 64)
    weight, a Frobenius norm of 1e19 and an L1 norm of 1.9e20, made the
    state non-finite in float32.
    """
    return math.sqrt(torch.finfo(dtype).max)


def _cast_state(key: str, value: Any, param: torch.Tensor, state_dtype: torch.dtype) -> Any:
    """Return a copy of a saved state entry in the dtype and on the device it is kept in."""
    if not torch.is_tensor(value):
        return value
    if key == "step":
        return value.to(dtype=torch.float32, device="cpu", copy=True)
    dtype = torch.promote_types(state_dtype, torch.float32) if key in _FLOAT32_KEYS else state_dtype
    return value.to(dtype=dtype, device=param.device, copy=True)


def _frozen_hint(param: torch.Tensor) -> str:
    """Return the advice for an all-zero gradient of a frozen parameter, or ``""`` for a trainable one."""
    if param.requires_grad:
        return ""
    return (
        ". The parameter has requires_grad=False, so backward() leaves its zeroed gradient at zero and this "
        "warning repeats at its refreshes. zero_grad() with the default set_to_none=True sets the gradient to "
        "None instead, and the step then skips the parameter without a warning"
    )


def _warn(name: str, param: torch.Tensor, problem: str, action: str) -> None:
    warnings.warn(
        f"SpectralKron: the gradient of {name} (shape {tuple(param.shape)}) {problem}; {action}",
        PreconditionerWarning,
        stacklevel=outside_stacklevel(_INNER_MODULES),
    )
