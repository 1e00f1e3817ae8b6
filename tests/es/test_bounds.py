"""Box bounds and integer variables: feasibility, boundary optima, whole numbers."""

from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np
import pytest

from spectral_es import SpectralES, minimize
from spectral_es.es import EvaluationError, resume
from spectral_es.es.bounds import Bounds, BoxBounds, Domain, integer_min_std
from spectral_es.functions import sphere

# Lower and upper bounds with every kind of coordinate: a box, a narrow box,
# one side open in either direction, and no bound at all.
LOWER = np.array([-1.0, 0.0, -np.inf, 2.0, -np.inf, 0.0])
UPPER = np.array([1.0, 1e-3, 5.0, np.inf, np.inf, 10.0])


def test_transform_keeps_every_point_in_box(rng):
    box = BoxBounds(LOWER, UPPER, 6)
    for scale in (1.0, 1e3, 1e12):  # far-away points fold back too
        X = box.transform(scale * rng.standard_normal((2000, 6)))
        assert np.all(box.contains(X))


def test_transform_is_identity_in_interior():
    box = BoxBounds(LOWER, UPPER, 6)
    # Points well inside, away from the quadratic zones of width <= (1 + |bound|) / 20.
    x = np.array([0.0, 5e-4, 0.0, 10.0, -7.0, 5.0])
    interior = np.array([True, False, True, True, True, True])  # the 1e-3 box is all quadratic zone
    assert np.array_equal(box.transform(x)[interior], x[interior])


def test_transform_is_continuous_with_slope_at_most_one():
    box = BoxBounds(LOWER, UPPER, 6)
    y = np.linspace(-30, 30, 600_001)[:, None] * np.ones(6)
    steps = np.abs(np.diff(box.transform(y), axis=0))
    # Slope <= 1 everywhere: a step of h moves x by at most h (+ rounding).
    assert np.all(steps <= (y[1, 0] - y[0, 0]) * (1 + 1e-9))


def test_inverse_round_trips_feasible_points(rng):
    box = BoxBounds(LOWER, UPPER, 6)
    finite_lower = np.where(np.isfinite(LOWER), LOWER, -50)
    finite_upper = np.where(np.isfinite(UPPER), UPPER, 50)
    x = rng.uniform(finite_lower, finite_upper, (1000, 6))
    x[:6] = np.where(np.isfinite(LOWER), LOWER, 0)  # exactly on the lower bounds
    # Square root then square: relative rounding of a few ulps of the bound magnitudes.
    assert np.allclose(box.transform(box.inverse(x)), x, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    ("lower", "upper", "message"),
    [
        ([0, 1, 0], [1, 1, 2], r"lower\[1\] = 1.0 >= upper\[1\] = 1.0"),
        ([0, 2, 0], 1.0, r"lower\[1\] = 2.0 >= upper\[1\] = 1.0"),
        ([0, np.nan, 0], 1.0, "NaN at indices \\[1\\]"),
        ([0, 0], 1.0, r"shape \(2,\), expected a scalar or shape \(3,\)"),
        ("low", 1.0, "lower bound must be a number, None or a sequence"),
        ([0, "1", 0], 1.0, "lower bound must be a number, None or a sequence"),
    ],
)
def test_bad_bounds_rejected(lower, upper, message):
    with pytest.raises(ValueError, match=message):
        SpectralES(np.zeros(3) + 0.5, 0.1, bounds=(lower, upper))


def test_start_outside_box_names_coordinate():
    with pytest.raises(ValueError, match=r"x0\[2\] = 3.0 lies outside the bounds \[-1.0, 1.0\].*np.clip"):
        SpectralES([0.0, 1.0, 3.0], 0.1, bounds=(-1, 1))


def test_bounds_must_be_a_pair():
    with pytest.raises(ValueError, match="pair \\(lower, upper\\)"):
        SpectralES(np.zeros(3), 0.1, bounds=(-1, 0, 1))


def test_sigma0_wider_than_box_warns():
    # As pycma does: samples then fold across the whole interval of that variable.
    with pytest.warns(
        UserWarning, match=r"sigma0=2 exceeds the width of the bounds in 1 variable\(s\) \(narrowest width 1,"
    ):
        SpectralES(np.full(3, 0.5), 2.0, bounds=([0, -np.inf, 0], [1, np.inf, 10]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpectralES(np.full(3, 0.5), 1.0, bounds=([0, -np.inf, 0], [1, np.inf, 10]))


@pytest.mark.filterwarnings("ignore:sigma0=.* exceeds the width of the bounds:UserWarning")
def test_every_asked_point_is_feasible_and_told_back():
    x0 = np.clip(np.full(6, 0.5), LOWER, UPPER)
    es = SpectralES(x0, 2.0, seed=1, bounds=(LOWER, UPPER), max_iter=200)
    while not es.stop():
        X = es.ask()
        assert np.all((X >= LOWER) & (X <= UPPER))
        es.tell(X, ((X - 3.0) ** 2).sum(axis=1))
    assert np.all((es.result.mean >= LOWER) & (es.result.mean <= UPPER))


@pytest.mark.filterwarnings("ignore:sigma0=.* exceeds the width of the bounds:UserWarning")
@pytest.mark.parametrize("seed", range(3))
def test_boundary_optimum_reached(seed):
    # The unconstrained optimum c lies outside the box in four coordinates,
    # so the constrained optimum is clip(c, lower, upper), on the boundary.
    # Coordinate 1 has a box of width 1e-3 against sigma0 = 1, so its
    # samples alias through the periodic map until its deviation shrinks;
    # about one run in six stagnates there (seed 2 of 6), hence a restart.
    c = np.array([-3.0, 0.5, 7.0, 0.0, 2.0, 12.0])
    optimum = np.clip(c, LOWER, UPPER)
    f_star = float(((optimum - c) ** 2).sum())
    result = minimize(
        lambda x: float(((x - c) ** 2).sum()),
        np.clip(np.full(6, 0.5), LOWER, UPPER),
        1.0,
        seed=seed,
        bounds=(LOWER, UPPER),
        f_target=f_star + 1e-10,
        max_evals=20_000,
        restarts=2,
    )
    assert "f_target" in result.stop, result.stop
    # On a coordinate whose optimum is on a bound, f grows at least linearly,
    # by 2 |c_i - optimum_i| |x_i - optimum_i| >= 0.998 |x_i - optimum_i|, so
    # f - f* <= 1e-10 puts x_i within about 1e-10 of the bound; on the
    # interior coordinate 4, f grows quadratically: |x_4 - 2| <= 1e-5.
    on_bound = optimum != c
    assert np.all(np.abs(result.xbest - optimum)[on_bound] <= 2e-10)
    assert abs(result.xbest[4] - 2.0) <= 1e-5


def shifted_mixed_sphere(x):
    """Optimum at whole numbers 3 and -2 in x[0], x[1] and at 0.5 elsewhere; f* = 0."""
    return float((x[0] - 3) ** 2 + (x[1] + 2) ** 2 + ((x[2:] - 0.5) ** 2).sum())


def test_integer_variables_are_whole_numbers():
    es = SpectralES(np.full(5, 0.3), 1.0, seed=0, integer_variables=[1, 0], bounds=(-10.5, 10.5))
    for _ in range(50):
        X = es.ask()
        assert np.array_equal(X[:, [0, 1]], np.round(X[:, [0, 1]]))
        assert np.all(np.abs(X) <= 10.5)
        es.tell(X, [shifted_mixed_sphere(x) for x in X])
    assert np.array_equal(es.result.mean[:2], np.round(es.result.mean[:2]))


@pytest.mark.filterwarnings("ignore:sigma0=.* exceeds the width of the bounds:UserWarning")
def test_integer_rounding_respects_fractional_bounds():
    # Whole numbers in [0.2, 2.7] are 1 and 2: rounding must not give 0 or 3.
    es = SpectralES([1.0, 0.0], 5.0, seed=2, integer_variables=[0], bounds=([0.2, -1], [2.7, 1]))
    values = np.concatenate([es.ask()[:, 0] for _ in range(40)])
    assert set(np.unique(values)) == {1.0, 2.0}


def test_integer_zero_has_no_sign():
    # Rounding values in (-0.5, 0) gives -0.0, which prints as "-0." in results.
    es = SpectralES([0.0, 0.0], 0.3, seed=1, integer_variables=[0])
    values = np.concatenate([es.ask()[:, 0] for _ in range(20)])

    assert np.any(values == 0.0)
    assert not np.any(np.signbit(values[values == 0.0]))


@pytest.mark.parametrize("seed", range(4))
def test_mixed_integer_problem_converges(seed):
    result = minimize(shifted_mixed_sphere, np.full(5, 1.0), 1.0, seed=seed, integer_variables=[0, 1], f_target=1e-10)
    assert "f_target" in result.stop, result.stop
    assert np.array_equal(result.xbest[:2], [3.0, -2.0])


def test_integer_deviation_stays_above_floor():
    es = SpectralES(np.full(5, 1.0), 1.0, seed=0, integer_variables=[0, 1])
    floor = integer_min_std(5, 2, es.params.mueff)
    for _ in range(300):
        X = es.ask()
        es.tell(X, [shifted_mixed_sphere(x) for x in X])
    std = es.coordinate_std()
    assert np.all(std[:2] >= floor * (1 - 1e-12))
    assert np.all(std[2:] < 1e-3)  # the continuous variables converged meanwhile


def test_all_integer_variables_skip_tol_x():
    # tol_x looks only at continuous variables. With none, it never fires,
    # even with a threshold of 10 that every deviation here is below (they
    # start at sigma0 = 1, and five iterations move sigma by far less than 10x).
    es = SpectralES(np.full(3, 2.0), 1.0, seed=0, integer_variables=[0, 1, 2], tol_x=10.0)
    for _ in range(5):
        X = es.ask()
        es.tell(X, [shifted_mixed_sphere(x) for x in X])
    assert np.all(es.coordinate_std() < 10.0)
    assert "tol_x" not in es.stop()


def test_integer_min_std_matches_pycma_bound():
    # pycma 4.x: min(0.2, mueff / n, 0.5 / -ppf(p / 2)) with p = 2 / (2 + n + n_int).
    cma_options = pytest.importorskip("cma.options_parameters")
    for n, n_int, mueff in [(5, 2, 3.2), (40, 40, 5.0), (200, 50, 12.0)]:
        expected = cma_options.integer_std_lower_bound(n, mueff, n_int)
        assert integer_min_std(n, n_int, mueff) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([5], "index 5 outside 0..4"),
        ([-1], r"index -1 outside 0..4 .*the last variable is 4"),
        ([0, -5], "index -5 outside 0..4"),
        ([1.5], r"got the floats \[1.5\]; floats are rejected even when whole"),
        ([0.0, 2.0], r"got the floats \[0.0, 2.0\]; floats are rejected even when whole"),
        (np.array([0.0, 1.0, 0.0, 0.0, 1.0]), "floats are rejected.*mask of dtype bool"),
        (["a"], "int indices from 0 to 4 or a boolean mask of length 5"),
        ([True, 2], "mixes bools and numbers"),
        ([0, 1, 0, 0, 1], r"lists the index 0 more than once.*boolean mask"),
        ([False, True, False], r"boolean mask of length 3, but the dimension is 5"),
        ([True] * 6, r"boolean mask of length 6, but the dimension is 5"),
    ],
)
def test_bad_integer_indices_rejected(indices, message):
    with pytest.raises(ValueError, match=message):
        SpectralES(np.zeros(5), 1.0, integer_variables=indices)
    with pytest.raises(ValueError, match=message):
        minimize(sphere, np.zeros(5), 1.0, integer_variables=indices)


@pytest.mark.parametrize("mask", [[False, True, False, False, True], np.array([0, 1, 0, 0, 1], dtype=bool)])
def test_integer_mask_marks_true_positions(mask):
    assert SpectralES(np.zeros(5), 1.0, integer_variables=mask).domain.integer.tolist() == [1, 4]
    result = minimize(sphere, np.full(5, 0.3), 1.0, seed=0, max_iter=3, integer_variables=mask)
    assert np.array_equal(result.xbest[[1, 4]], np.round(result.xbest[[1, 4]]))
    assert not np.array_equal(result.xbest[[0, 2, 3]], np.round(result.xbest[[0, 2, 3]]))


def test_integer_variable_without_whole_number_in_bounds_rejected():
    with pytest.raises(ValueError, match="integer variable 1 has no whole number"):
        SpectralES([0.5, 0.5], 0.1, integer_variables=[1], bounds=(0.2, 0.8))


def box_of(bounds, x0):
    """The (lower, upper) that a strategy built with ``bounds`` uses."""
    box = SpectralES(x0, 0.1, bounds=bounds).domain.box
    return box.lower.tolist(), box.upper.tolist()


def test_bounds_object_with_lb_ub_accepted():
    assert box_of(Bounds([0, 1, 2], [5, 6, 7]), [1.0, 2.0, 3.0]) == ([0, 1, 2], [5, 6, 7])
    assert box_of(Bounds(-1, [1, 2]), [0.0, 0.0]) == ([-1, -1], [1, 2])
    optimize = pytest.importorskip("scipy.optimize")
    assert box_of(optimize.Bounds([0, 1, 2], [5, 6, 7]), [1.0, 2.0, 3.0]) == ([0, 1, 2], [5, 6, 7])


def test_scipy_scalar_bounds_broadcast():
    # scipy stores Bounds(0, 2) as arrays of shape (1,); keep_feasible is ignored.
    optimize = pytest.importorskip("scipy.optimize")
    for bounds in (optimize.Bounds(0, 2), optimize.Bounds(0, 2, keep_feasible=True), Bounds([0], [2]), ([0], 2)):
        assert box_of(bounds, [1.0, 1.0, 1.0]) == ([0, 0, 0], [2, 2, 2])
    result = minimize(sphere, [1.0, 1.0, 1.0], 0.5, seed=1, bounds=optimize.Bounds(0, 2, keep_feasible=True))
    assert result.success
    assert np.all((result.xbest >= 0) & (result.xbest <= 2))


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ((None, 2), ([-np.inf] * 3, [2, 2, 2])),
        ((0, None), ([0, 0, 0], [np.inf] * 3)),
        (([None, 0, 0], [1, None, 2]), ([-np.inf, 0, 0], [1, np.inf, 2])),
        (Bounds.from_pairs([(None, 5), (1, None), (0, 1)]), ([-np.inf, 1, 0], [5, np.inf, 1])),
        (Bounds(None, [None, 3, None]), ([-np.inf] * 3, [np.inf, 3, np.inf])),
    ],
)
def test_none_means_no_bound(bounds, expected):
    assert box_of(bounds, [0.5, 1.5, 0.5]) == expected


def test_none_in_scipy_bounds_and_pairs():
    optimize = pytest.importorskip("scipy.optimize")
    assert box_of(optimize.Bounds([None, 0], [5, None]), [1.0, 2.0]) == ([-np.inf, 0], [5, np.inf])
    # The minimum of the sphere on x[0] <= 5, x[1] >= 1 is (0, 1).
    result = minimize(sphere, [1.0, 2.0], 0.5, seed=1, bounds=Bounds.from_pairs([(None, 5), (1, None)]))
    assert np.allclose(result.xbest, [0.0, 1.0], atol=1e-4)


def test_none_pairs_still_need_conversion():
    with pytest.raises(ValueError, match=r"shape \(3, 2\), one \(low, high\) pair per variable"):
        SpectralES([1.0, 2.0, 3.0], 0.1, bounds=[(None, 5), (1, None), (2, 7)])
    # For n = 2 both readings are valid boxes once None means no bound.
    with pytest.raises(ValueError, match=r"ambiguous for n = 2.*\[-inf, 1.0\] x \[5.0, inf\]"):
        SpectralES([0.5, 5.5], 0.1, bounds=[(None, 5), (1, None)])


def test_per_variable_pairs_rejected_with_conversion():
    pairs = [(0, 5), (1, 6), (2, 7)]
    with pytest.raises(ValueError, match=r"shape \(3, 2\), one \(low, high\) pair per variable.*Bounds.from_pairs"):
        SpectralES([1.0, 2.0, 3.0], 0.1, bounds=pairs)
    assert box_of(Bounds.from_pairs(pairs), [1.0, 2.0, 3.0]) == ([0, 1, 2], [5, 6, 7])
    with pytest.raises(ValueError, match=r"pair per variable"):
        SpectralES([1.0], 0.1, bounds=[(0, 5)])  # n = 1


def test_two_pairs_never_silently_read_as_sides():
    # For n = 2 both readings of [(0, 5), (1, 6)] are valid boxes.
    with pytest.raises(ValueError, match=r"ambiguous for n = 2.*Bounds\(lb=.*Bounds.from_pairs"):
        SpectralES([0.5, 5.5], 0.1, bounds=[(0, 5), (1, 6)])
    # Read as sides, [(0, 5), (-1, 1)] has lower > upper: it can only be pairs.
    with pytest.raises(ValueError, match=r"never read as one \(low, high\) pair per variable.*Bounds.from_pairs"):
        SpectralES([0.5, 0.5], 0.1, bounds=[(0, 5), (-1, 1)])
    assert box_of(Bounds.from_pairs([(0, 5), (1, 6)]), [1.0, 2.0]) == ([0, 1], [5, 6])
    assert box_of(Bounds([0, 5], [1, 6]), [0.5, 5.5]) == ([0, 5], [1, 6])


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ((np.zeros(2), np.ones(2)), ([0, 0], [1, 1])),  # as pairs (0, 0) and (1, 1) would be empty
        (([-5, -np.inf], [5, np.inf]), ([-5, -np.inf], [5, np.inf])),
        (([0, 1], [1, 2]), ([0, 1], [1, 2])),  # both readings give the same box
        ((-1, 1), ([-1, -1], [1, 1])),
    ],
)
def test_unambiguous_sides_accepted_for_two_variables(bounds, expected):
    assert box_of(bounds, [0.5, 1.0]) == expected


def test_pairs_read_as_sides_explained():
    with pytest.raises(ValueError) as caught:
        minimize(sphere, [1.0, 1.0], 0.5, bounds=[(0, 2), (0, 2)])
    message = str(caught.value)
    assert message.startswith(
        "bounds [[0, 2], [0, 2]] is invalid: its two rows are read as (lower, upper), which gives "
    )
    assert "lower[0] = 0 >= upper[0] = 0" in message
    assert "because at n = 2 the two forms have the same shape" in message
    assert message.endswith(
        "pass bounds=([0, 0], [2, 2]) or bounds=Bounds.from_pairs([[0, 2], [0, 2]]) (from spectral_es import Bounds)"
    )
    # The suggested form is the box the pairs meant.
    assert box_of(([0, 0], [2, 2]), [1.0, 1.0]) == ([0, 0], [2, 2])


@pytest.mark.parametrize("bounds", [[(0, 2), (0, 2)], [(0, 2), (1, 3)], [(0, 1)] * 3])
def test_pair_errors_name_public_import(bounds):
    with pytest.raises(ValueError) as caught:
        minimize(sphere, [0.5] * len(bounds), 0.1, bounds=bounds)
    assert "from spectral_es import Bounds" in str(caught.value)
    assert "spectral_es.es.bounds" not in str(caught.value)


@pytest.mark.parametrize("pairs", [[0, 5], [(0, 1, 2)], "ab", [(0, "5")], [(0, 1), (2,)]])
def test_from_pairs_rejects_other_shapes(pairs):
    with pytest.raises(ValueError, match="pair"):
        Bounds.from_pairs(pairs)


def test_two_variable_box_survives_checkpoint_and_restart(tmp_path):
    # The plan stores the box as [lower, upper]; the restarted and resumed
    # strategies must read it as sides, never as the pairs (0, 2), (1, 3).
    calls = {"count": 0}

    def crashes_once(x):
        calls["count"] += 1
        if calls["count"] == 40:
            raise RuntimeError("lost")
        return sphere(x)

    settings = {"seed": 1, "restarts": 1, "tol_x": 1e-3, "bounds": Bounds([0, 1], [2, 3])}
    with pytest.raises(EvaluationError):
        minimize(crashes_once, [1.0, 2.0], 0.5, checkpoint=tmp_path / "run.npz", checkpoint_every=1, **settings)
    result = resume(crashes_once, tmp_path / "run.npz")
    assert len(result.restarts) == 2
    assert np.allclose(result.xbest, [0.0, 1.0], atol=1e-2)  # the corner of the box nearest 0
    reference = minimize(sphere, [1.0, 2.0], 0.5, **settings)
    assert result.fbest == reference.fbest


@pytest.mark.parametrize(("lower", "upper"), [(0.0, 10.0), (-3.0, 7.0), (0.0, 0.04)])
def test_zone_widths_follow_pycma_rule(lower, upper):
    # a = min((u - l) / 2, (1 + |bound|) / 20) on each side: y = l - a_l
    # lands on l, y = u + a_u on u, and l + a_l and u - a_u are the ends of
    # the identity part. In the box of width 0.04 the width bounds both
    # zones, so they meet at the midpoint. The periodic fold moves y by a
    # few ulps of the bounds (below 1e-14 for bounds up to 10), and a wrong
    # zone width moves these points by 1e-3 or more.
    box = BoxBounds(lower, upper, 1)
    width = upper - lower
    a_lower = min(width / 2, (1 + abs(lower)) / 20)
    a_upper = min(width / 2, (1 + abs(upper)) / 20)
    y = np.array([lower - a_lower, upper + a_upper, lower + a_lower, upper - a_upper])
    expected = [lower, upper, lower + a_lower, upper - a_upper]
    np.testing.assert_allclose(box.transform(y[:, None])[:, 0], expected, rtol=0, atol=1e-14)


def test_contains_includes_the_bounds():
    box = BoxBounds([0.0, -1.0], [1.0, 2.0], 2)
    assert box.contains(np.array([[0.0, 2.0], [1.0, -1.0]])).tolist() == [True, True]
    assert box.contains(np.array([[1.0 + 1e-12, 0.0], [0.5, -1.0 - 1e-12]])).tolist() == [False, False]


def test_start_maps_to_x0_near_bound():
    # The mean starts at the preimage of x0. In the quadratic zone (width
    # 0.05 at the bound 0) that differs from x0 itself, which would map to
    # 0.0125 for x0 = 0. Square root then square rounds to a few ulps of x0.
    domain = Domain(2, bounds=(0.0, 10.0))
    x0 = np.array([0.0, 0.01])
    mean = domain.start(x0)
    assert np.all(mean < x0)
    np.testing.assert_allclose(domain.feasible(mean), x0, rtol=0, atol=1e-15)


def test_integer_variable_with_one_whole_number():
    # [0.5, 1.5] contains the single whole number 1, which is a valid domain.
    es = SpectralES([1.0, 0.5], 0.1, integer_variables=[0], bounds=(0.5, 1.5), seed=0)
    X = es.ask()
    assert np.all(X[:, 0] == 1.0)


def test_integer_rounding_leaves_samples_unchanged(rng):
    # Without bounds the samples Y are the strategy's own, so rounding must
    # work on a copy. Otherwise the update would learn from rounded points.
    domain = Domain(3, integer_variables=[1])
    Y = rng.standard_normal((5, 3))
    original = Y.copy()
    X = domain.feasible(Y)
    np.testing.assert_array_equal(Y, original)
    np.testing.assert_array_equal(X[:, 1], np.round(original[:, 1]))


def test_integer_min_std_bounds_cell_exit_probability():
    # With mueff = n the quantile term is the smallest of the three (0.178
    # against 0.2 and 1). At that deviation a variable whose mean is at the
    # centre of its unit cell leaves the cell, |std Z| > 1/2, with
    # probability 2 / (2 + n + n_integer). pycma 4.x takes an approximate
    # quantile there and gets a bound about 0.6% smaller. 1 - cdf near
    # 0.9975 loses about three digits of float64, so 1e-9 is ample.
    n, n_integer = 200, 200
    std = integer_min_std(n, n_integer, float(n))
    assert std < 0.2
    exit_probability = 2 * (1 - NormalDist().cdf(0.5 / std))
    assert exit_probability == pytest.approx(2 / (2 + n + n_integer), rel=1e-9)
