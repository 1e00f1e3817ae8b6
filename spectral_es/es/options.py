"""Validation of SpectralES arguments and the defaults of its stop criteria."""

from __future__ import annotations

import difflib
import math
import numbers
import reprlib
from collections.abc import Callable, Collection
from typing import Any, ParamSpec, TypeVar

import numpy as np

from spectral_es._keywords import hint_unknown_keywords

__all__ = [
    "default_max_iter",
    "FOREIGN_OPTION_NAMES",
    "display_interval",
    "hint_misused_options",
    "numeric_values",
    "stop_options",
    "unknown_option_hint",
    "validate_bool",
    "validate_integer",
    "validate_positive",
    "validate_real",
    "validate_seed",
    "validate_sigma0",
    "validate_x0",
]

# Names that pycma 4.x (options and fmin2 arguments) and scipy.optimize.minimize
# (method options) use for a SpectralES or minimize argument:
# {their name: (the name here, the library that uses theirs)}.
FOREIGN_OPTION_NAMES = {
    "maxfevals": ("max_evals", "pycma's"),
    "maxfev": ("max_evals", "scipy's"),
    "maxfun": ("max_evals", "scipy's"),
    "ftarget": ("f_target", "pycma's"),
    "maxiter": ("max_iter", "pycma's and scipy's"),
    "tolfun": ("tol_f", "pycma's"),
    "tolx": ("tol_x", "pycma's"),
    "tolconditioncov": ("tol_condition", "pycma's"),
    "tolupsigma": ("tol_up_sigma", "pycma's"),
    "tolflatfitness": ("tol_flat", "pycma's"),
    "tolstagnation": ("tol_stagnation", "pycma's"),
    "CMA_diagonal": ("diagonal", "pycma's"),
    "CMA_active": ("active", "pycma's"),
    "CMA_stds": ("stds", "pycma's"),
    "scaling_of_variables": ("stds", "pycma's"),
    "noise_handler": ("noise_handling", "pycma's"),
    "verb_disp": ("disp", "pycma's"),
    "iterations": ("max_iter", "pycma's"),
}
# pycma and scipy names without a same-named counterpart here, with the fix.
FOREIGN_ARGUMENT_HINTS = {
    "n_jobs": "in place of pycma's 'n_jobs', pass executor=concurrent.futures.ProcessPoolExecutor(n_jobs)",
    "parallel_objective": (
        "in place of pycma's 'parallel_objective', pass the function of the whole population with vectorized=True"
    ),
    "tol": "scipy's 'tol' has no single counterpart here: tol_f bounds the change of f and tol_x the step size",
    "method": "scipy's 'method' has no counterpart here: spectral_es has one method, SpectralES, so drop it",
    "jac": "scipy's 'jac' has no counterpart here: SpectralES uses only objective values, so drop it",
    "hess": "scipy's 'hess' has no counterpart here: SpectralES uses only objective values, so drop it",
    "gradf": "pycma's 'gradf' has no counterpart here: SpectralES uses only objective values, so drop it",
    "constraints": (
        "scipy's and pycma's 'constraints' have no counterpart here: pass a box as bounds=(lower, upper), and "
        "fold other constraints into the objective, for example as a penalty"
    ),
    "fixed_variables": (
        "pycma's 'fixed_variables' has no counterpart here: optimise the free variables only, with an objective "
        "that inserts the fixed values before it evaluates"
    ),
    "minstd": (
        "pycma's 'minstd' has no counterpart here; for integer variables, integer_variables keeps their "
        "standard deviation at or above es.integer_min_std"
    ),
    "maxstd": "pycma's 'maxstd' has no counterpart here; bounds=(lower, upper) keeps every sample inside the box",
    "verbose": "pycma's 'verbose' has no counterpart here: nothing is printed unless disp is given, so drop it",
    "verb_log": (
        "in place of pycma's 'verb_log', pass log='run.csv' to minimize, or write es.history.write_csv(path) "
        "in an ask/tell loop"
    ),
    "verb_filenameprefix": (
        "in place of pycma's 'verb_filenameprefix', pass log='run.csv' to minimize, or write "
        "es.history.write_csv(path) in an ask/tell loop"
    ),
}
# Arguments of a run (minimize and optimize) rather than options of the strategy.
_RUN_ARGUMENTS = ("args", "vectorized", "executor", "callback", "disp")
# Keywords under which pycma (inopts, options) and scipy.optimize.minimize
# (options) take a dictionary of options.
_OPTIONS_DICT_NAMES = ("options", "inopts")

P = ParamSpec("P")
R = TypeVar("R")

# Options that count evaluations or iterations; whole-number values are kept
# as ints, so stop messages read max_evals=30000, not 30000.0.
_COUNT_OPTIONS = ("max_evals", "max_iter", "tol_flat", "tol_stagnation")


def display_interval(disp: Any, name: str = "disp") -> int:
    """Return the iterations between progress lines for ``disp`` (``True``: 10, ``False`` or 0: none).

    ``name`` is the caller's name for the argument in the error message.
    """
    if isinstance(disp, (bool, np.bool_)):
        return 10 if disp else 0
    if not isinstance(disp, (int, np.integer)) or disp < 0:
        raise ValueError(
            f"{name} must be True, False or an integer >= 0 (iterations between progress lines), got {disp!r}"
        )
    return int(disp)


def default_max_iter(n: int, popsize: int) -> int:
    """Return pycma's default iteration limit of a run, ``100 + 150 (n + 3)^2 / sqrt(popsize)`` rounded down."""
    return int(100 + 150 * (n + 3) ** 2 / math.sqrt(popsize))


def stop_options(
    n: int,
    popsize: int,
    *,
    max_evals: float | None,
    max_iter: float | None,
    f_target: float | None,
    tol_f: float | None,
    tol_x: float,
    tol_condition: float,
    tol_up_sigma: float,
    tol_flat: float | None,
    tol_stagnation: float | None,
    noisy: bool = False,
) -> dict[str, float]:
    """Return the thresholds of the stop criteria, defaults filled in and checked.

    ``None`` means no limit for ``max_evals`` and ``f_target``, and pycma's
    defaults for ``max_iter`` (``100 + 150 (n + 3)^2 / sqrt(popsize)``) and
    ``tol_stagnation`` (``100 + 100 n^1.5 / popsize``), both rounded down to
    whole iterations. ``tol_f`` and ``tol_flat`` default to 1e-11 and 3.
    With ``noisy``, a ``None`` for ``tol_f``, ``tol_flat`` or
    ``tol_stagnation`` switches that criterion off instead, because noise
    triggers it, and a given value is kept. Every value must be a real
    number (not a string or a bool). ``f_target`` may be any number but
    NaN, which no objective value reaches; ``-inf`` is accepted and means
    no target, as ``None`` does.

    Raises:
        ValueError: naming the option, its value and the fix.
    """
    if noisy:
        tol_f = 0.0 if tol_f is None else tol_f
        tol_flat = math.inf if tol_flat is None else tol_flat
        tol_stagnation = math.inf if tol_stagnation is None else tol_stagnation
    options = {
        "max_evals": math.inf if max_evals is None else max_evals,
        "max_iter": default_max_iter(n, popsize) if max_iter is None else max_iter,
        "f_target": -math.inf if f_target is None else f_target,
        "tol_f": 1e-11 if tol_f is None else tol_f,
        "tol_x": tol_x,
        "tol_condition": tol_condition,
        "tol_up_sigma": tol_up_sigma,
        "tol_flat": 3 if tol_flat is None else tol_flat,
        "tol_stagnation": int(100 + 100 * n**1.5 / popsize) if tol_stagnation is None else tol_stagnation,
    }
    for name in ("max_evals", "max_iter", "tol_condition", "tol_up_sigma", "tol_flat", "tol_stagnation"):
        number = validate_positive(name, options[name], f"pass {name} > 0 or omit it")
        options[name] = whole_number_as_int(number) if name in _COUNT_OPTIONS else _keep_int(options[name], number)
    for name in ("tol_f", "tol_x"):
        fix = f"pass {name} >= 0, such as 1e-11, or omit it for the default"
        number = validate_real(name, options[name], fix)
        if not number >= 0:
            raise ValueError(f"{name} must be >= 0, got {options[name]!r}; {fix}")
        options[name] = _keep_int(options[name], number)
    fix = "pass a number such as 1e-8, or omit it for no target"
    number = validate_real("f_target", options["f_target"], fix)
    if math.isnan(number):
        raise ValueError(f"f_target must not be NaN, which no objective value reaches; {fix}")
    options["f_target"] = _keep_int(options["f_target"], number)
    return options


def _keep_int(value: Any, number: float) -> int | float:
    """Return an integer ``value`` as a Python int, else ``number``, so stop messages show the value as given."""
    return int(value) if isinstance(value, (int, np.integer)) else number


def whole_number_as_int(value: Any) -> Any:
    """Return a finite whole-number float as an int and any other value unchanged."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def validate_seed(seed: Any) -> np.random.SeedSequence:
    """Return ``seed`` as a :class:`numpy.random.SeedSequence`; raise ValueError naming it otherwise.

    Accepted are ``None`` (fresh entropy), a non-negative integer, a
    sequence of them, or a ``SeedSequence``.
    """
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if not isinstance(seed, bool):
        try:
            return np.random.SeedSequence(seed)
        except (TypeError, ValueError):
            pass
    raise ValueError(
        f"seed must be a non-negative integer, a sequence of them, a numpy.random.SeedSequence or None, "
        f"got {seed!r}; pass for example seed=1"
    )


def numeric_values(values: Any) -> np.ndarray | None:
    """Return ``values`` as a float array, or ``None`` unless it is an array of real numbers.

    Strings (even ``"1.0"``), ``None``, complex numbers, other objects and
    ragged nestings are rejected; NaN and infinity are real numbers here.
    """
    if values is None or isinstance(values, (str, bytes)):
        return None
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):  # ragged nesting
        return None
    if array.dtype.kind == "O":
        entries = array.ravel().tolist()
        if not all(isinstance(entry, numbers.Real) for entry in entries):
            return None
    elif array.dtype.kind not in "biuf":
        return None
    return array.astype(float)


def validate_integer(name: str, value: Any, minimum: int, fix: str) -> int:
    """Return ``value`` as an int >= ``minimum``; raise ValueError naming it and ``fix`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; {fix}")
    return int(value)


def validate_x0(x0: Any) -> np.ndarray:
    """Return ``x0`` as a finite 1-D float array (a copy), or raise ValueError saying what is wrong.

    Entries must be real numbers, as :func:`numeric_values` reads them, so
    strings such as ``"1"`` are rejected although ``float`` would parse them.
    """
    values = numeric_values(x0)
    if values is None:
        raise ValueError(
            f"x0 must be a 1-D array of numbers, got {reprlib.repr(x0)}; pass floats, "
            "for example np.array(x0, dtype=float) for numbers read from text"
        )
    x0 = values
    if x0.ndim != 1:
        raise ValueError(f"x0 must be 1-D, got shape {x0.shape}; pass a flat vector (x0.ravel() for an array)")
    if x0.size == 0:
        raise ValueError("x0 is empty; pass the starting point, one entry per variable")
    if not np.all(np.isfinite(x0)):
        non_finite = np.flatnonzero(~np.isfinite(x0))
        first = non_finite[0]
        # At most 10 indices, so that a large all-NaN x0 gives a short message.
        indices = ", ".join(str(i) for i in non_finite[:10])
        if non_finite.size > 10:
            indices += f", ... ({non_finite.size} in all)"
        raise ValueError(
            f"x0 must be finite, got x0[{first}] = {x0[first]} (non-finite entries at indices [{indices}]); "
            "pass a start point whose every entry is a finite number"
        )
    return x0


def validate_stds(stds: Any, n: int) -> np.ndarray | None:
    """Return ``stds`` as a float array of shape (n,) (a copy), or None; raise ValueError saying what is wrong.

    A single number applies to every coordinate. Each entry must be finite
    and > 0.
    """
    if stds is None:
        return None
    fix = f"pass {n} positive numbers, one factor per variable, or one number for all"
    values = numeric_values(stds)
    if values is None or isinstance(stds, (str, bytes, bool, np.bool_)) or np.asarray(stds).dtype == bool:
        raise ValueError(f"stds must be numbers, got {reprlib.repr(stds)}; {fix}")
    if values.ndim > 1 or (values.ndim == 1 and values.size != n):
        raise ValueError(f"stds has shape {values.shape}, but the problem has {n} variables; {fix}")
    values = np.broadcast_to(values, (n,)).astype(float)
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if bad.size:
        raise ValueError(f"stds must be finite and > 0, got stds[{int(bad[0])}] = {float(values[bad[0]])!r}; {fix}")
    return values


def validate_real(name: str, value: Any, fix: str) -> float:
    """Return ``value`` as a float; raise ValueError naming it and ``fix`` unless it is one real number.

    Strings are rejected although ``float`` would parse them, as objective
    values are, and so are bools, which are not counts or thresholds. NaN
    and infinity pass; the caller decides about them.
    """
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a number, got the string {value!r}; {fix}")
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got the bool {value!r}; {fix}")
    number = numeric_values(value)
    if number is None or number.shape != ():
        raise ValueError(f"{name} must be a number, got {reprlib.repr(value)}; {fix}")
    return float(number)


def validate_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool; raise ValueError unless it is ``True`` or ``False`` (numpy's too).

    Strings such as ``"no"``, numbers and ``None`` are rejected: Python
    would read ``"no"`` and ``"False"`` as true.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def validate_positive(name: str, value: Any, fix: str) -> float:
    """Return ``value`` as a positive float; raise ValueError naming it and ``fix`` otherwise.

    Infinity is accepted (a limit that never triggers) except for ``sigma0``.
    Strings and bools are rejected, see :func:`validate_real`.
    """
    number = validate_real(name, value, fix)
    if name == "sigma0" and not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}; {fix}")
    if not number > 0:
        raise ValueError(f"{name} must be positive (infinity means no limit), got {value!r}; {fix}")
    return number


def validate_sigma0(sigma0: Any) -> float:
    """Return the initial step size ``sigma0`` as a float; raise ValueError unless it is one finite number > 0.

    A vector, meant as one step size per variable, gets the advice to pass
    them as ``stds``, as pycma 4.5 points to its ``CMA_stds``.
    """
    fix = "pass a step size > 0, e.g. 0.3 * (upper - lower)"
    values = numeric_values(sigma0)
    if values is not None and values.ndim > 0:
        fix = (
            "sigma0 is one number here; for a step size per variable, pass sigma0=1.0 and the step sizes as "
            "stds=[...], so that variable i starts with deviation sigma0 * stds[i]"
        )
    return validate_positive("sigma0", sigma0, fix)


def unknown_option_hint(name: str, accepted: Collection[str]) -> str:
    """Return a hint for the unknown keyword argument ``name``, such as ``"did you mean 'max_evals'? "``.

    A pycma or scipy name gets the accepted name of the same option, or
    where it has none here, what to pass instead. A keyword under which
    those libraries take an options dictionary gets the advice to pass the
    options as keywords, and a budget given to a function that takes none
    (``optimize``) gets :meth:`SpectralES.set_budget`. Any other name gets
    the closest accepted one, and ``""`` when nothing comes close.
    """
    if name in FOREIGN_OPTION_NAMES:
        ours, library = FOREIGN_OPTION_NAMES[name]
        if ours in accepted:
            return f"did you mean {ours!r}, the name of {library} {name!r} here? "
        where = "minimize and optimize" if ours in _RUN_ARGUMENTS else "SpectralES and minimize"
        if ours in ("max_evals", "max_iter"):
            where += f", and es.set_budget({ours}=...) changes it on a strategy"
        return f"{library} {name!r} is the argument {ours!r} of {where}; "
    if name in FOREIGN_ARGUMENT_HINTS:
        return f"{FOREIGN_ARGUMENT_HINTS[name]}; "
    if name in ("max_evals", "max_iter"):
        return f"{name!r} is an option of SpectralES and minimize, and es.set_budget({name}=...) changes it; "
    if name in _OPTIONS_DICT_NAMES:
        return "pass the options themselves as keyword arguments, for example **options for a dict; "
    close = difflib.get_close_matches(name, accepted, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def hint_misused_options(function: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``function`` so that three pycma and scipy habits raise a TypeError that names the fix.

    An options dict passed positionally (``SpectralES(x0, sigma0, opts)``)
    gets the advice to pass ``**opts``. An option passed positionally
    (``SpectralES(x0, sigma0, 10)``) gets the list of positional parameters
    and the advice to pass it by keyword. An unknown keyword argument gets
    :func:`unknown_option_hint`. Other calls that do not fit the signature
    raise Python's own TypeError. The wrapper keeps ``function``'s
    signature for ``inspect``, ``help()``, IDEs and type checkers, which a
    ``*args`` or ``**kwargs`` catch-all in the signature would not.
    """
    return hint_unknown_keywords(unknown_option_hint)(function)
