"""Box bounds and integer variables for SpectralES.

The strategy keeps sampling in an unbounded space ``y``; :class:`BoxBounds`
maps every sample into the box ``lower <= x <= upper`` before it is
evaluated. The objective is therefore evaluated only at feasible points, and
the Gaussian model never has to be truncated or repaired.

The map acts on each coordinate separately. With ``a_l`` and ``a_u`` the
widths of the quadratic zones next to the lower bound ``l`` and the upper
bound ``u``, it is

* the identity on ``[l + a_l, u - a_u]``,
* ``x = l + (y - (l - a_l))^2 / (4 a_l)`` on ``[l - a_l, l + a_l]``, and
  the mirror image of this next to ``u``,
* mirrored at ``l - a_l`` and at ``u + a_u``, so periodic with period
  ``2 (u - l + a_l + a_u)`` when both bounds are finite.

The map is continuously differentiable, with slope 0 exactly at the points
that land on a bound. An objective that grows linearly away from a bound
is therefore quadratic in ``y`` around its preimage, and the strategy
converges there as it would on an interior optimum instead of stalling at
the bound (Hansen's ``BoundTransform`` in pycma uses the same idea). The
zone widths follow pycma 4.x: ``a = min((u - l) / 2, (1 + |bound|) / 20)``.

NOTE: a box much narrower than the sampling deviation in its coordinate
(width 1e-3 against ``sigma0 = 1``, say) aliases: many periods of the map
fall inside one standard deviation, so the objective looks like noise in
that coordinate until the deviation shrinks, and about one run in six
stagnates on such a problem. Scale the variables so that the box widths
are comparable and ``sigma0`` is about a fifth of them, as pycma advises.

Integer variables are rounded after the map, to the nearest whole number
inside the box; :func:`integer_min_std` gives the lower bound on their
sampling standard deviation that keeps rounded values from freezing.

The ``bounds`` argument is read by :func:`parse_bounds`: a pair
``(lower, upper)``, or an object with ``lb`` and ``ub`` attributes
(:class:`Bounds`, ``scipy.optimize.Bounds``). One ``(low, high)`` pair
per variable, scipy's other form, is never read as bounds; convert it with
:meth:`Bounds.from_pairs`.
"""

from __future__ import annotations

import reprlib
from statistics import NormalDist
from typing import Any, NamedTuple, cast, overload

import numpy as np

from spectral_es.es.options import numeric_values

__all__ = [
    "Bounds",
    "BoxBounds",
    "Domain",
    "integer_min_std",
    "parse_bounds",
    "round_integers",
    "validate_integer_variables",
]


class Bounds(NamedTuple):
    """Box bounds ``lb <= x <= ub`` given side by side, like ``scipy.optimize.Bounds``.

    Unlike a plain pair, it cannot be mistaken for one ``(low, high)`` pair
    per variable when n = 2.

    Attributes:
        lb: Lower bounds, a scalar or shape (n,); ``-inf`` or ``None`` for none.
        ub: Upper bounds, a scalar or shape (n,); ``inf`` or ``None`` for none.
    """

    lb: Any
    ub: Any

    @classmethod
    def from_pairs(cls, pairs: Any) -> Bounds:
        """Return the bounds of one ``(low, high)`` pair per variable, shape (n, 2), as in scipy.

        Example: ``Bounds.from_pairs([(0, 5), (1, 6)])`` is ``0 <= x[0] <= 5``
        and ``1 <= x[1] <= 6``. ``None`` leaves a side open, as in scipy:
        ``(None, 5)`` is ``x <= 5``.
        """
        message = f"pairs must be one (low, high) pair of numbers or None per variable, got {pairs!r}"
        try:
            array = np.asarray(pairs)
        except (TypeError, ValueError) as error:  # ragged nesting
            raise ValueError(message) from error
        if array.ndim != 2 or array.shape[1] != 2:
            raise ValueError(
                f"pairs must have shape (n, 2), one (low, high) pair per variable, got shape {array.shape}"
            )
        lows, highs = _real_array(array[:, 0], -np.inf), _real_array(array[:, 1], np.inf)
        if lows is None or highs is None:
            raise ValueError(message)
        return cls(lows, highs)


@overload
def parse_bounds(bounds: None, n: int) -> None: ...
@overload
def parse_bounds(bounds: Any, n: int) -> tuple[np.ndarray, np.ndarray]: ...
def parse_bounds(bounds: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(lower, upper)``, each shape (n,), from the ``bounds`` argument (``None`` stays ``None``).

    ``bounds`` is an object with ``lb`` and ``ub`` attributes (:class:`Bounds`,
    ``scipy.optimize.Bounds``) or a pair ``(lower, upper)``. Each side is a
    scalar, shape (1,) (how ``scipy.optimize.Bounds`` stores a scalar) or
    shape (n,). ``None``, for a side or an entry, means no bound, as in
    scipy: ``-inf`` for a lower and ``inf`` for an upper bound. Other
    attributes, such as scipy's ``keep_feasible``, are ignored: every point
    that the strategy evaluates lies in the box anyway.

    Raises:
        ValueError: for one ``(low, high)`` pair per variable, shape (n, 2)
            with n != 2, naming the conversion. For n = 2 a 2 x 2 pair reads
            the same both ways, so it is rejected when both readings give a
            valid but different box, and when only the pair reading is a
            valid box, with the ``(lower, upper)`` to write instead. Also for
            a bound with the wrong shape or NaN entries.
    """
    if bounds is None:
        return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        return _broadcast_bound("lower", bounds.lb, n), _broadcast_bound("upper", bounds.ub, n)
    _reject_pairs(bounds, n)
    try:
        lower, upper = bounds
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"bounds must be a pair (lower, upper) of scalars or length-{n} arrays, or Bounds(lb, ub), got {bounds!r}"
        ) from error
    return _broadcast_bound("lower", lower, n), _broadcast_bound("upper", upper, n)


def _reject_pairs(bounds: Any, n: int) -> None:
    """Raise ValueError if ``bounds`` is, or may be, one ``(low, high)`` pair per variable."""
    try:
        array = np.asarray(bounds)
    except (TypeError, ValueError):
        return  # ragged: not pairs, and the pair check reports it
    if array.shape != (n, 2):
        return
    pair_low, pair_high = _real_array(array[:, 0], -np.inf), _real_array(array[:, 1], np.inf)
    if pair_low is None or pair_high is None:
        return  # not numbers: the bound check reports it
    conversion = (
        "pass bounds=Bounds.from_pairs(pairs) (from spectral_es import Bounds), or bounds=(lower, upper) with "
        "lower = [low for low, high in pairs] and upper = [high for low, high in pairs]"
    )
    if n != 2:
        raise ValueError(f"bounds has shape ({n}, 2), one (low, high) pair per variable as in scipy; {conversion}")

    # n = 2: the rows are (lower, upper) or the two pairs. The first reading
    # is taken unless the second is a different valid box.
    rows = array.tolist()
    # The column check found every entry real or None, so both rows convert too.
    side_low = cast(np.ndarray, _real_array(array[0], -np.inf))
    side_high = cast(np.ndarray, _real_array(array[1], np.inf))
    same_box = np.array_equal(side_low, pair_low) and np.array_equal(side_high, pair_high)
    if not np.all(pair_low < pair_high) or same_box:
        return
    if not np.all(side_low < side_high):
        i = int(np.flatnonzero(~(side_low < side_high))[0])
        lows, highs = [low for low, _ in rows], [high for _, high in rows]
        raise ValueError(
            f"bounds {rows} is invalid: its two rows are read as (lower, upper), which gives lower[{i}] = {rows[0][i]} "
            f">= upper[{i}] = {rows[1][i]}. It is never read as one (low, high) pair per variable, because at "
            f"n = 2 the two forms have the same shape. For those pairs, pass bounds=({lows}, {highs}) or "
            f"bounds=Bounds.from_pairs({rows}) (from spectral_es import Bounds)"
        )
    raise ValueError(
        f"bounds {rows} is ambiguous for n = 2: as (lower, upper) it is the box "
        f"[{side_low[0]}, {side_high[0]}] x [{side_low[1]}, {side_high[1]}], as one (low, high) pair per "
        f"variable [{pair_low[0]}, {pair_high[0]}] x [{pair_low[1]}, {pair_high[1]}]; pass "
        f"Bounds(lb={rows[0]}, ub={rows[1]}) for the first or Bounds.from_pairs({rows}) for the second "
        "(from spectral_es import Bounds; scipy.optimize.Bounds works too)"
    )


class BoxBounds:
    """Box constraints ``lower <= x <= upper``, met by a smooth periodic map.

    Args:
        lower: Lower bounds, a scalar or shape (n,); ``-inf`` leaves a
            coordinate unbounded below.
        upper: Upper bounds, a scalar or shape (n,); ``inf`` leaves a
            coordinate unbounded above.
        n: Dimension of the search space.

    Raises:
        ValueError: if a bound is NaN, has the wrong shape, or
            ``lower >= upper`` in some coordinate.
    """

    def __init__(self, lower: Any, upper: Any, n: int) -> None:
        self.lower = _broadcast_bound("lower", lower, n)
        self.upper = _broadcast_bound("upper", upper, n)
        bad = np.flatnonzero(~(self.lower < self.upper))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"bounds need lower < upper in every coordinate, got lower[{i}] = {self.lower[i]} "
                f">= upper[{i}] = {self.upper[i]}; widen the interval, or drop a fixed variable from the problem"
            )
        self.has_lower = np.isfinite(self.lower)
        self.has_upper = np.isfinite(self.upper)

        # Finite stand-ins keep the arithmetic free of inf - inf; the masks
        # decide which branch applies, so the stand-in values never show.
        width = np.where(self.has_lower & self.has_upper, self.upper - self.lower, np.inf)
        self._lower = np.where(self.has_lower, self.lower, 0.0)
        self._upper = np.where(self.has_upper, self.upper, 0.0)
        self._margin_lower = np.minimum(width / 2, (1 + np.abs(self._lower)) / 20)
        self._margin_upper = np.minimum(width / 2, (1 + np.abs(self._upper)) / 20)

    @property
    def n(self) -> int:
        """Dimension of the box."""
        return self.lower.size

    def __repr__(self) -> str:
        return f"BoxBounds(lower={self.lower.tolist()}, upper={self.upper.tolist()})"

    def contains(self, X: Any) -> np.ndarray:
        """Return whether each point (the last axis of ``X``) lies in the box."""
        X = np.asarray(X, dtype=float)
        return np.all((X >= self.lower) & (X <= self.upper), axis=-1)

    def check_start(self, x0: np.ndarray) -> None:
        """Raise ValueError naming the first coordinate of ``x0`` outside the box."""
        outside = np.flatnonzero(~((x0 >= self.lower) & (x0 <= self.upper)))
        if outside.size:
            i = int(outside[0])
            raise ValueError(
                f"x0[{i}] = {x0[i]} lies outside the bounds [{self.lower[i]}, {self.upper[i]}] "
                f"({outside.size} coordinate(s) outside in all); start inside the box, "
                "for example at np.clip(x0, lower, upper)"
            )

    def transform(self, Y: np.ndarray) -> np.ndarray:
        """Map unbounded points into the box, shape kept; every row ends up feasible.

        Args:
            Y: Points of the unbounded search space, shape (..., n).

        Returns:
            X: Points with ``lower <= X <= upper``, same shape, float64.
        """
        Y = np.asarray(Y, dtype=float)
        lower, upper = self._lower, self._upper
        low_edge = lower - self._margin_lower  # y that lands on the lower bound
        high_edge = upper + self._margin_upper  # y that lands on the upper bound

        # Fold y into [low_edge, high_edge] (both bounds) or past one edge
        # (one bound) by reflections; two reflections make one period.
        both = self.has_lower & self.has_upper
        period = np.where(both, 2 * (high_edge - low_edge), 1.0)
        folded = low_edge + np.mod(Y - low_edge, period)
        folded = np.where(folded > high_edge, 2 * high_edge - folded, folded)
        only_lower = self.has_lower & ~self.has_upper
        only_upper = self.has_upper & ~self.has_lower
        Y = np.where(both, folded, Y)
        Y = np.where(only_lower & (Y < low_edge), 2 * low_edge - Y, Y)
        Y = np.where(only_upper & (Y > high_edge), 2 * high_edge - Y, Y)

        # Quadratic zones next to each finite bound, identity in between.
        near_lower = self.has_lower & (Y < lower + self._margin_lower)
        near_upper = self.has_upper & (Y > upper - self._margin_upper)
        X = np.where(near_lower, lower + (Y - low_edge) ** 2 / (4 * self._margin_lower), Y)
        X = np.where(near_upper, upper - (high_edge - Y) ** 2 / (4 * self._margin_upper), X)

        # The zones reach the bounds exactly in real arithmetic; the clip
        # only absorbs rounding in the fold.
        return np.clip(X, self.lower, self.upper)

    def inverse(self, x: Any) -> np.ndarray:
        """Return the preimage of a feasible point in ``[lower - a_l, upper + a_u]``.

        ``transform(inverse(x))`` equals ``x`` to rounding for every ``x`` in
        the box; the strategy starts its mean at ``inverse(x0)``.
        """
        x = np.asarray(x, dtype=float)
        lower, upper = self._lower, self._upper
        near_lower = self.has_lower & (x < lower + self._margin_lower)
        near_upper = self.has_upper & (x > upper - self._margin_upper)
        below = np.sqrt(4 * self._margin_lower * np.maximum(x - lower, 0.0))
        above = np.sqrt(4 * self._margin_upper * np.maximum(upper - x, 0.0))
        y = np.where(near_lower, lower - self._margin_lower + below, x)
        return np.where(near_upper, upper + self._margin_upper - above, y)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the bounds as arrays, for checkpoints."""
        return {"lower": self.lower.copy(), "upper": self.upper.copy()}


class Domain:
    """The feasible set of a run: optional box bounds and integer variables.

    It maps the strategy's unbounded samples ``Y`` to the points that are
    evaluated, :meth:`feasible`, and validates the start point.

    Args:
        n: Dimension.
        bounds: ``None``, ``(lower, upper)`` or an object with ``lb`` and
            ``ub`` (:class:`Bounds`, ``scipy.optimize.Bounds``). Each side is
            a scalar or shape (n,), and infinite entries leave a side open.
            :func:`parse_bounds` gives the rules.
        integer_variables: Indices of the variables that take whole numbers,
            ints from 0 to n - 1, or a boolean mask of length n.

    Attributes:
        box: The :class:`BoxBounds`, or ``None`` without bounds.
        integer: Sorted indices of the integer variables, shape (k,).
    """

    def __init__(self, n: int, bounds: Any = None, integer_variables: Any = None) -> None:
        sides: tuple[np.ndarray, np.ndarray] | None = parse_bounds(bounds, n)
        self.box = None if sides is None else BoxBounds(*sides, n)
        self.integer = validate_integer_variables(integer_variables, n, self.box)

    @property
    def is_identity(self) -> bool:
        """Whether every sample is evaluated as it is (no bounds, no integers)."""
        return self.box is None and not self.integer.size

    def start(self, x0: np.ndarray) -> np.ndarray:
        """Check that ``x0`` is feasible and return the mean that maps to it."""
        if self.box is None:
            return x0.copy()
        self.box.check_start(x0)
        return self.box.inverse(x0)

    def feasible(self, Y: np.ndarray) -> np.ndarray:
        """Map samples, shape (..., n), into the box and round the integer variables."""
        if self.is_identity:
            return Y
        X = Y if self.box is None else self.box.transform(Y)
        if self.integer.size:
            X = round_integers(X.copy() if X is Y else X, self.integer, self.box)
        return X

    def state_dict(self) -> dict[str, Any]:
        """Return the bounds and integer indices, for checkpoints."""
        state: dict[str, Any] = {"integer_variables": self.integer.tolist()}
        if self.box is not None:
            state.update(self.box.state_dict())
        return state


def validate_integer_variables(indices: Any, n: int, bounds: BoxBounds | None) -> np.ndarray:
    """Return sorted integer-variable indices, shape (k,), validated against n and the box.

    ``indices`` is a sequence of int indices from 0 to n - 1, or a boolean
    mask of length n whose True entries mark the integer variables. Each
    integer variable needs a whole number inside its bounds.

    Raises:
        ValueError: for a negative index (``-1`` is more often a placeholder
            or an off-by-one error than a request for the last variable), an
            index >= n, a repeated index, a float index (whole ones such as
            ``1.0`` too) or a boolean mask of another length. Repeats and
            floats are rejected because a 0/1 mask given as ints or floats,
            such as ``[0, 1, 0]``, would otherwise read as indices.
    """
    result = _integer_indices(indices, n)
    outside = result[(result < 0) | (result >= n)]
    if outside.size:
        raise ValueError(
            f"integer_variables {indices!r} has the index {int(outside[0])} outside 0..{n - 1} for dimension {n}; "
            f"count from 0, so the last variable is {n - 1}"
        )
    unique, counts = np.unique(result, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"integer_variables {indices!r} lists the index {int(unique[counts > 1][0])} more than once; "
            "list each index once, or pass a boolean mask of length n (dtype bool) if this is a 0/1 mask"
        )
    if bounds is not None and unique.size:
        empty = unique[np.ceil(bounds.lower[unique]) > np.floor(bounds.upper[unique])]
        if empty.size:
            i = int(empty[0])
            raise ValueError(
                f"integer variable {i} has no whole number in its bounds "
                f"[{bounds.lower[i]}, {bounds.upper[i]}]; widen them to include one"
            )
    return unique


def _integer_indices(indices: Any, n: int) -> np.ndarray:
    """Return ``integer_variables`` as an int array of indices, shape (k,), not yet range-checked."""
    if indices is None:
        return np.zeros(0, dtype=int)
    message = f"integer_variables must be int indices from 0 to {n - 1} or a boolean mask of length {n}"
    try:
        array = np.asarray(indices).ravel()
    except (TypeError, ValueError) as error:  # ragged nesting
        raise ValueError(f"{message}, got {indices!r}") from error

    # A boolean mask marks the True positions.
    if array.dtype.kind == "b":
        if array.size != n:
            raise ValueError(
                f"integer_variables is a boolean mask of length {array.size}, but the dimension is {n}; "
                "pass one True or False per variable, or int indices"
            )
        return np.flatnonzero(array)
    if array.size == 0:
        return np.zeros(0, dtype=int)

    # numpy reads [True, 2] as the ints [1, 2], so look at the entries of a list.
    if isinstance(indices, (list, tuple)) and any(
        isinstance(entry, (bool, np.bool_)) for entry in np.asarray(indices, dtype=object).ravel().tolist()
    ):
        raise ValueError(f"{message}, got {indices!r}, which mixes bools and numbers")
    if array.dtype.kind == "f":
        raise ValueError(
            f"{message}, got the floats {indices!r}; floats are rejected even when whole, such as 1.0, "
            "because a 0/1 mask of floats would read as indices: pass ints, or a mask of dtype bool"
        )
    if array.dtype.kind not in "iu":
        raise ValueError(f"{message}, got {indices!r}")
    return array.astype(int)


def round_integers(X: np.ndarray, indices: np.ndarray, bounds: BoxBounds | None) -> np.ndarray:
    """Round the ``indices`` columns of ``X`` in place to whole numbers inside the bounds; return X."""
    values = np.round(X[..., indices])
    if bounds is not None:
        values = np.clip(values, np.ceil(bounds.lower[indices]), np.floor(bounds.upper[indices]))
    X[..., indices] = values + 0.0  # turns the -0.0 that rounding gives for (-0.5, 0) into 0.0
    return X


def integer_min_std(n: int, n_integer: int, mueff: float) -> float:
    """Return the lower bound on the standard deviation of integer variables.

    ``min(0.2, mueff / n, 1 / (2 q))`` with ``q`` the standard normal
    quantile at ``1 - 1 / (2 + n + n_integer)``: with the mean at the centre
    of a unit cell, each integer variable then leaves its cell with
    probability at most ``2 / (2 + n + n_integer)``, so about a third of
    the samples or more keep all integer values, while rounded values still
    change often enough for selection to move them. The three bounds and the
    probability follow pycma 4.x (``integer_std_lower_bound``), after Marty
    et al. (2024), "LB+IC-CMA-ES".
    """
    quantile = NormalDist().inv_cdf(1 - 1 / (2 + n + n_integer))
    return min(0.2, mueff / n, 0.5 / quantile)


def _broadcast_bound(name: str, value: Any, n: int) -> np.ndarray:
    """Return one side of the bounds as shape (n,), ``None`` entries read as no bound."""
    array = _real_array(value, -np.inf if name == "lower" else np.inf)
    if array is None:
        raise ValueError(
            f"{name} bound must be a number, None or a sequence of n = {n} of them, got {reprlib.repr(value)}"
        )

    # A scalar, or shape (1,) as scipy.optimize.Bounds stores one, applies
    # to every variable.
    if array.ndim == 0 or array.shape == (1,):
        array = np.full(n, array.item())
    if array.shape != (n,):
        raise ValueError(
            f"{name} bound has shape {array.shape}, expected a scalar or shape ({n},), one entry per variable"
        )
    if np.any(np.isnan(array)):
        raise ValueError(
            f"{name} bound has NaN at indices {np.flatnonzero(np.isnan(array)).tolist()}; "
            "use -inf, inf or None for no bound"
        )
    return array


def _real_array(value: Any, missing: float) -> np.ndarray | None:
    """Return ``value`` as a float array with ``None`` entries set to ``missing``, or ``None`` unless real numbers.

    Strings are rejected as :func:`~spectral_es.es.options.numeric_values`
    rejects them.
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged nesting
        return None
    if array.dtype.kind == "O":
        array = array.copy()
        for index, entry in np.ndenumerate(array):
            if entry is None:
                array[index] = missing
    return numeric_values(array)
