"""The options of SpectralKron: their checks, the names other optimizers use, and the settings they imply.

:class:`~spectral_es.optim.SpectralKron` checks its options when a group is
added, at every step (schedulers and users edit ``param_groups``) and when
a ``state_dict`` is loaded. The functions here raise ``ValueError`` with the
option, its value and the expected values, and turn the options into the
state dtype and the Cayley-map settings of a parameter.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from spectral_es.optim.functional import full_sides, matrix_shape

ROUTES = ("auto", "kron", "adam")
GRAFTS = ("adam", "adafactor", "rms", "none")
CAYLEY_METHODS = ("auto", "exact", "truncated")
GENERATOR_NORMS = ("auto", "frobenius", "spectral")
STATE_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# dtypes with a dense linear solver (LU) on CPU and CUDA, needed by the exact Cayley map.
SOLVER_DTYPES = (torch.float32, torch.float64)

# Options added after the first release, with the values that older state dicts get.
# max_side_ratio gets None rather than the constructor's 16, because the states in
# such a dict were created without a limit on the side ratio, and check_routing
# would raise for each weight to which 16 gives another layout.
LATER_OPTIONS = {
    "max_cayley_squarings": None,
    "generator_norm": "auto",
    "max_side_ratio": None,
    "maximize": False,
    "distributed_refresh": False,
}

# Defaults that torch.optim adds rather than SpectralKron. Optimizer.__setstate__ (torch
# 2.13) sets differentiable=False in them, so an optimizer that has loaded a state dict,
# or was unpickled or deep-copied, has it while the groups that it saves do not.
TORCH_DEFAULTS = ("differentiable",)

# Keywords of AdamW, SOAP (pytorch-optimizer 4.1), Shampoo (pytorch-optimizer's
# ScalableShampoo and Distributed Shampoo) and torch.optim.Muon for an option
# that has another name here: {their keyword: the keyword here}.
# docs/optimizer.md lists both tables, and tests/optim/test_porting.py checks them.
PEER_OPTION_NAMES = {
    "max_precondition_dim": "max_precond_dim",
    "max_preconditioner_dim": "max_precond_dim",
    "preconditioner_dtype": "state_dtype",
    "preconditioning_compute_steps": "precondition_frequency",
    "grafting_type": "graft",
    "grafting_config": "graft",
    "graft_type": "graft",
}

# Their keywords with no counterpart of the same meaning, and what to pass instead.
PEER_OPTION_HINTS = {
    "epsilon": (
        "Distributed Shampoo's epsilon regularises each factor before its root, which damping does here in units of "
        "the factor's eigenvalues (default 1e-4); eps is Adam's epsilon, added to the root"
    ),
    "momentum": "the momentum decay is betas[0], as in AdamW, e.g. betas=(0.9, 0.999)",
    "beta1": "pass betas=(beta1, beta2)",
    "beta2": "pass betas=(beta1, beta2)",
    "nesterov": "SpectralKron has no Nesterov momentum; its momentum decay is betas[0]",
    "shampoo_beta": (
        "SOAP's 'shampoo_beta' decays its curvature every step, and a factor here refreshes every "
        "precondition_frequency steps: precond_lr = precondition_frequency * (1 - shampoo_beta) averages over "
        "as many steps"
    ),
    "start_preconditioning_step": "SpectralKron preconditions from the first step; there is no warm-up option",
    "precondition_1d": "1-D parameters take AdamW steps (route='auto'); there is no 1-D factor",
    "merge_dims": "a conv kernel (out, in, kh, kw) is always viewed as (out, in * kh * kw)",
    "normalize_grads": "grafting (graft='adafactor', the default) sets the step's norm instead",
    "normalize_gradient": "grafting (graft='adafactor', the default) sets the step's norm instead",
    "correct_bias": "the momentum and the graft's second moments are always bias-corrected, as in AdamW",
    "data_format": "a conv kernel is viewed as (out, in * kh * kw) whatever its memory format, channels_last included",
    "statistics_compute_steps": "each factor's curvature moves at its refreshes, every precondition_frequency steps",
    "inverse_exponent_override": "root sets p in S^(-1/p), any number > 0 (default 2)",
    "block_size": (
        "SpectralKron does not block: a side longer than max_precond_dim, or max_side_ratio times the other "
        "side, gets a diagonal factor"
    ),
    "matrix_eps": "damping adds to each factor's curvature diagonal, in units of its eigenvalues",
    "adjust_lr_fn": "grafting (graft='adafactor', the default) makes an AdamW learning rate a sensible start",
    "ns_steps": "SpectralKron has no Newton-Schulz iteration; it keeps Kronecker factors instead",
    "ns_coefficients": "SpectralKron has no Newton-Schulz iteration; it keeps Kronecker factors instead",
    "amsgrad": "SpectralKron has no AMSGrad variant, so drop the option",
    "decoupled_weight_decay": "weight_decay is always decoupled, as in AdamW",
    "weight_decouple": "weight_decay is always decoupled, as in AdamW",
    "foreach": "SpectralKron has one implementation, so drop the option",
    "fused": "SpectralKron has one implementation, so drop the option",
    "capturable": "SpectralKron's step reads the step count on the host and cannot be captured in a CUDA graph",
    "differentiable": "SpectralKron's step runs under torch.no_grad() and cannot be differentiated through",
}


def peer_option_advice(name: str, accepted: Iterable[str], cutoff: float) -> str | None:
    """Return the fix for a keyword that is not an option: a peer's advice, a rename or a close match, else None.

    ``cutoff`` is the least :func:`difflib.get_close_matches` similarity of a close match.
    """
    if name in PEER_OPTION_HINTS:
        return PEER_OPTION_HINTS[name]
    if name in PEER_OPTION_NAMES:
        return f"did you mean {PEER_OPTION_NAMES[name]!r}?"
    close = difflib.get_close_matches(name, accepted, n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}?" if close else None


def peer_option_hint(name: str, accepted: Sequence[str]) -> str:
    """Return the hint for the unknown keyword ``name`` in the form that :func:`hint_unknown_keywords` expects."""
    advice = peer_option_advice(name, accepted, cutoff=0.6)
    if advice is None:
        return ""
    return f"{advice} " if advice.endswith("?") else f"{advice}; "


def checked_process_group(process_group: Any) -> Any:
    """Return ``process_group`` if it is ``None`` or a ``torch.distributed`` group; raise ``ValueError`` otherwise."""
    if process_group is None:
        return None
    if torch.distributed.is_available() and isinstance(process_group, torch.distributed.ProcessGroup):
        return process_group
    outside = torch.distributed.GroupMember.NON_GROUP_MEMBER if torch.distributed.is_available() else None
    if outside is not None and isinstance(process_group, int) and process_group == outside:
        raise ValueError(
            f"invalid process_group GroupMember.NON_GROUP_MEMBER ({process_group}), which torch.distributed.new_group "
            "returns on the ranks outside the new group; give each rank's optimizer a group that contains that rank"
        )
    raise ValueError(
        f"invalid process_group {process_group!r}: expected None (the default group) or a group made by "
        "torch.distributed.new_group, such as the one given to DistributedDataParallel"
    )


def check_saved_groups(state_dict: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless every saved group has valid ``SpectralKron`` options (those of ``defaults``).

    ``defaults`` may contain the ``TORCH_DEFAULTS`` that torch.optim added, which saved groups need not have.
    """
    required = [name for name in defaults if name not in LATER_OPTIONS and name not in TORCH_DEFAULTS]
    for index, saved in enumerate(state_dict.get("param_groups", [])):
        missing = [name for name in required if name not in saved]
        if missing:
            raise ValueError(
                f"state_dict was not saved by SpectralKron: its group {index} has no option {missing[0]!r}; "
                "load it into the kind of optimizer that saved it"
            )
        options = {**LATER_OPTIONS, **{key: value for key, value in saved.items() if key != "params"}}
        try:
            check_group(options)
        except ValueError as error:
            raise ValueError(f"state_dict has an invalid option in group {index}: {error}") from None


def check_saved_sizes(state_dict: dict[str, Any], groups: list[dict[str, Any]]) -> None:
    """Raise ``ValueError`` unless the saved groups have as many parameters, group by group, as ``groups``.

    torch.optim raises for a mismatch too, but its message gives no counts.
    """
    saved = [len(group.get("params", [])) for group in state_dict.get("param_groups", [])]
    current = [len(group["params"]) for group in groups]
    if saved != current:
        raise ValueError(
            f"the parameter groups of state_dict contain {saved} parameters and those of this optimizer {current}; "
            "build the optimizer with the parameter groups of the one that saved it"
        )


def check_group(group: dict[str, Any], where: str = "") -> None:
    """Raise ``ValueError`` for an invalid option of a parameter group; ``where`` names the group in the message."""
    group["state_dtype"] = dtype_name(group["state_dtype"], where)
    group["lr"] = _one_element_as_scalar(group["lr"])
    betas = group["betas"]
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        betas = tuple(_one_element_as_scalar(beta) for beta in betas)
    if isinstance(betas, tuple) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas):
        group["betas"] = betas
    else:
        raise ValueError(
            f"invalid betas {group['betas']!r}{where}: expected two numbers in [0, 1) (floats or one-element "
            "tensors), e.g. (0.9, 0.999)"
        )
    checks = [
        # Infinity is invalid here: an infinite lr, weight_decay or graft_rms makes the
        # weights inf or NaN at the first step, and an infinite eps zeroes every step.
        # An infinite damping would otherwise raise only in the first refresh, inside step().
        (
            "lr",
            lambda lr: is_number(lr) and 0 <= lr < math.inf,
            "a finite number >= 0, as a float or a one-element tensor",
        ),
        ("eps", lambda eps: is_number(eps) and 0 <= eps < math.inf, "a finite number >= 0"),
        ("weight_decay", lambda decay: is_number(decay) and 0 <= decay < math.inf, "a finite number >= 0"),
        ("root", lambda root: is_number(root) and 0 < root < math.inf, "a finite number > 0 (1, 2, 4, ...)"),
        ("precond_lr", lambda rate: is_number(rate) and 0 < rate <= 1, "a number in (0, 1]"),
        ("precondition_frequency", lambda period: is_int(period, 1), "an integer >= 1"),
        ("max_precond_dim", lambda size: is_int(size, 1), "an integer >= 1"),
        ("max_side_ratio", lambda ratio: ratio is None or (is_number(ratio) and ratio >= 1), "None or a number >= 1"),
        ("graft", lambda graft: graft in GRAFTS, f"one of {GRAFTS}"),
        ("graft_rms", lambda rms: is_number(rms) and 0 < rms < math.inf, "a finite number > 0"),
        ("max_update_rms", lambda cap: cap is None or (is_number(cap) and cap > 0), "None or a number > 0"),
        ("damping", lambda damping: is_number(damping) and 0 <= damping < math.inf, "a finite number >= 0"),
        ("cayley", lambda cayley: cayley in CAYLEY_METHODS, f"one of {CAYLEY_METHODS}"),
        (
            "max_generator_norm",
            lambda cap: cap is None or (is_number(cap) and 0 < cap < 1),
            "None or a number in (0, 1), such as 0.5 for the spectral norm or 0.25 for the Frobenius norm: one "
            "truncated map's orthogonality defect grows like cap^8",
        ),
        ("generator_norm", lambda norm: norm in GENERATOR_NORMS, f"one of {GENERATOR_NORMS}"),
        (
            "max_cayley_squarings",
            lambda squarings: squarings is None or is_int(squarings, 0),
            "None or an integer >= 0",
        ),
        ("orthogonalize_every", lambda every: is_int(every, 0), "an integer >= 0 (0: never)"),
        ("route", lambda route: route in ROUTES, f"one of {ROUTES}"),
        ("maximize", lambda maximize: isinstance(maximize, bool), "True or False"),
        ("distributed_refresh", lambda split: isinstance(split, bool), "True or False"),
    ]
    for name, is_valid, expected in checks:
        if not is_valid(group[name]):
            raise ValueError(f"invalid {name} {group[name]!r}{where}: expected {expected}")
    if group["state_dtype"] is not None:
        # A fixed state dtype decides the Cayley map now; otherwise each parameter's dtype does.
        cayley_method(group, STATE_DTYPES[group["state_dtype"]])


def check_kron_route(group: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` if a group with ``route="kron"`` has a parameter with fewer than 2 dimensions."""
    if group["route"] != "kron":
        return
    for index, param in enumerate(group["params"]):
        if param.ndim < 2:
            raise ValueError(
                f"route='kron' needs parameters with at least 2 dimensions, but parameter "
                f"{parameter_label(group, index)}{where} has shape "
                f"{tuple(param.shape)}; put 0-D and 1-D parameters in a group with route='auto' or 'adam'"
            )


def check_distinct_params(group: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` if a parameter appears twice in ``group``.

    ``torch.optim`` only warns, and ``AdamW`` then steps such a parameter
    twice. Here both entries would be stepped from one shared state, which
    matches neither one step nor two, so the group is rejected.
    """
    seen: set[int] = set()
    for index, param in enumerate(group["params"]):
        if id(param) in seen:
            raise ValueError(
                f"parameter {parameter_label(group, index)}{where} appears twice in the group; list each parameter once"
            )
        seen.add(id(param))


def parameter_label(group: dict[str, Any], index: int) -> str:
    """Return how messages name parameter ``index`` of ``group``: its name from ``named_parameters()``, or the index."""
    names = group.get("param_names")
    if names is not None and index < len(names):
        return repr(names[index])
    return str(index)


def _one_element_as_scalar(value: Any) -> Any:
    """Return a one-element tensor of any shape as a 0-d view of it, and any other value unchanged.

    ``torch.optim.AdamW`` (torch 2.13) accepts such tensors as ``lr`` and
    as betas. The view shares the tensor's storage, so an in-place edit of
    either (a scheduler's ``fill_``, say) changes both.
    """
    if torch.is_tensor(value) and value.ndim > 0 and value.numel() == 1:
        return value.view(())
    return value


def is_number(value: Any) -> bool:
    """Return whether ``value`` is a real number (a 0-d tensor included, a bool not)."""
    if torch.is_tensor(value):
        return value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def dtype_name(dtype: torch.dtype | str | None, where: str = "") -> str | None:
    """Return the name under which a state dtype is stored in a group (or None); ``where`` names the group."""
    if dtype is None:
        return None
    requested = dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
        dtype = getattr(torch, dtype.removeprefix("torch."))  # an alias such as "half" or "float"
    name = str(dtype).removeprefix("torch.")
    if name not in STATE_DTYPES:
        raise ValueError(f"invalid state_dtype {requested!r}{where}: expected None or one of {tuple(STATE_DTYPES)}")
    return name


def resolve_state_dtype(group: dict[str, Any], param: torch.Tensor) -> torch.dtype:
    """Return the dtype of ``param``'s momentum and eigenbases."""
    if group["state_dtype"] is None:
        if param.dtype not in STATE_DTYPES.values():
            raise ValueError(f"cannot keep optimizer state in {param.dtype}; pass state_dtype=torch.float32")
        return param.dtype
    return STATE_DTYPES[group["state_dtype"]]


def cayley_method(group: dict[str, Any], state_dtype: torch.dtype) -> str:
    """Return "exact" or "truncated" for ``state_dtype``, or raise for an impossible choice."""
    if group["cayley"] == "auto":
        return "exact" if state_dtype in SOLVER_DTYPES else "truncated"
    if group["cayley"] == "exact" and state_dtype not in SOLVER_DTYPES:
        raise ValueError(
            f"cayley='exact' needs a dense solver, which torch lacks for {state_dtype}; "
            "use cayley='truncated' or 'auto', or state_dtype=torch.float32"
        )
    return group["cayley"]


def rotation_options(group: dict[str, Any], state_dtype: torch.dtype) -> dict[str, Any]:
    """Return the Cayley-map options of :func:`spectral_es.core.kron.kron_factor_step` for ``state_dtype``."""
    method = cayley_method(group, state_dtype)
    low_precision = state_dtype not in SOLVER_DTYPES
    norm = group["generator_norm"]
    if norm == "auto":
        norm = "spectral" if method == "truncated" and low_precision else "frobenius"
    cap = group["max_generator_norm"]
    if cap is None and method == "truncated":
        cap = 0.5 if norm == "spectral" else 0.25
    squarings = group["max_cayley_squarings"]
    if squarings is None:
        squarings = 0 if low_precision else 4
    return {
        "method": method,
        "order": 8,
        "max_generator_norm": cap,
        "cap_norm": norm,
        "max_squarings": squarings,
    }


def uses_kron(group: dict[str, Any], param: torch.Tensor) -> bool:
    """Return whether the group's ``route`` sends ``param`` to the Kronecker path (else the Adam path)."""
    return group["route"] == "kron" or (group["route"] == "auto" and param.ndim >= 2)


def check_routing(group: dict[str, Any], state: dict[str, Any], param: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if the group's routing options no longer give ``param`` the layout of its ``state``.

    ``route``, ``max_precond_dim`` and ``max_side_ratio`` decide the path
    and the full or diagonal factors when the state is created. Edited in
    ``param_groups`` afterwards they would be ignored, without a word, for
    the rest of the run and after every reload of the state.
    """
    if group["route"] == "kron" and param.ndim < 2:
        # Deleting the state would not help, because route='kron' creates none for a 0-D or 1-D parameter.
        raise ValueError(
            f"route='kron' needs parameters with at least 2 dimensions, but {name} has shape {tuple(param.shape)}; "
            "set its group's route back to 'auto' or 'adam', or move 0-D and 1-D parameters to a group of their own"
        )
    if uses_kron(group, param):
        expected = full_sides(*matrix_shape(param), group["max_precond_dim"], group["max_side_ratio"])
    else:
        expected = None
    actual = ("B_C" in state, "B_K" in state) if "d_C" in state else None
    if expected == actual:
        return
    raise ValueError(
        f"invalid routing for {name} of shape {tuple(param.shape)}: route={group['route']!r}, max_precond_dim="
        f"{group['max_precond_dim']} and max_side_ratio={group['max_side_ratio']} give it {_layout(expected)}, but "
        f"its state was created for {_layout(actual)}; routing is fixed when the state is created, so set these "
        "options back, or delete the parameter's state (del optimizer.state[param]) to start it again"
    )


def _layout(full: tuple[bool, bool] | None) -> str:
    """Describe a state layout: the Adam path (``None``) or which Kronecker factors are full."""
    if full is None:
        return "the Adam path"
    kinds = ["full" if side else "diagonal" for side in full]
    factors = f"{kinds[0]} factors" if kinds[0] == kinds[1] else f"a {kinds[0]} row and a {kinds[1]} column factor"
    return f"the Kronecker path with {factors}"


def check_state_dtype(group: dict[str, Any], state: dict[str, Any], name: str) -> None:
    """Raise ``ValueError`` if the group's ``state_dtype`` differs from that of the existing ``state``.

    The state is created in the group's dtype, and a ``state_dtype`` edited
    in ``param_groups`` afterwards would otherwise take effect only when a
    ``state_dict`` is loaded, so a resumed run would differ from an
    uninterrupted one. With ``state_dtype=None`` the state keeps the dtype
    that the parameter had when the state was created, as in ``torch.optim``.
    """
    if group["state_dtype"] is None:
        return
    expected = STATE_DTYPES[group["state_dtype"]]
    actual = state["exp_avg"].dtype
    if actual == expected:
        return
    raise ValueError(
        f"invalid state_dtype {group['state_dtype']!r} for {name}: its state is in "
        f"{str(actual).removeprefix('torch.')}; set state_dtype back, or cast the state by calling "
        "optimizer.load_state_dict(optimizer.state_dict()) after changing it"
    )


def check_graft_state(group: dict[str, Any], state: dict[str, Any], name: str) -> None:
    """Raise ``ValueError`` if the group's graft needs a second moment that ``state`` lacks.

    The moments are created with the state, so a graft changed in
    ``param_groups`` after the first step may find none.
    """
    needed = {"adam": "exp_avg_sq", "adafactor": "exp_avg_sq_row"}.get(group["graft"])
    if needed is None or needed in state:
        return
    if "exp_avg_sq" in state:
        created_with = "'adam'"
    elif "exp_avg_sq_row" in state:
        created_with = "'adafactor'"
    else:
        created_with = "'rms' or 'none'"
    raise ValueError(
        f"invalid graft {group['graft']!r} for {name}: its state was created with graft={created_with} "
        f"and has no {group['graft']} second moment; set the graft back or create a new optimizer"
    )
