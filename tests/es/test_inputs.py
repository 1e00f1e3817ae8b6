"""Bad input to SpectralES and ask/tell misuse raise clear ValueErrors."""

from __future__ import annotations

import inspect
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from spectral_es import SpectralES, minimize, optimize, resume
from spectral_es.functions import sphere


@pytest.mark.parametrize(
    ("x0", "match"),
    [
        ([], "x0 is empty"),
        (np.zeros((2, 2)), r"x0 must be 1-D, got shape \(2, 2\)"),
        ([0.0, np.nan], r"x0 must be finite, got x0\[1\] = nan .*indices \[1\]\); pass a start point"),
        ([np.inf, 0.0], r"x0 must be finite, got x0\[0\] = inf .*indices \[0\]\); pass a start point"),
        (["a", "b"], "x0 must be a 1-D array of numbers"),
        (["1", "2"], r"x0 must be a 1-D array of numbers, got \['1', '2'\]; pass floats"),
        (np.array(["1", "2"]), "x0 must be a 1-D array of numbers"),
        ([1.0, None], r"x0 must be a 1-D array of numbers, got \[1.0, None\]"),
        ([1j, 0.0], "x0 must be a 1-D array of numbers"),
    ],
)
def test_bad_x0(x0, match):
    with pytest.raises(ValueError, match=match):
        SpectralES(x0, 1.0)
    with pytest.raises(ValueError, match=match):
        minimize(sphere, x0, 1.0)


def test_non_finite_x0_message_is_short():
    # Listing every index made the message of a 100,000-entry NaN start
    # point about 590 kB long. The message names the first 10 and the count.
    with pytest.raises(ValueError) as raised:
        SpectralES(np.full(100_000, np.nan), 1.0)
    message = str(raised.value)
    assert "x0[0] = nan" in message
    assert "indices [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (100000 in all)]" in message
    assert len(message) < 250


@pytest.mark.parametrize("sigma0", [0.0, -1.0, np.nan, np.inf, "big", "0.5", None, [1.0, 1.0, 1.0]])
def test_bad_sigma0(sigma0):
    with pytest.raises(ValueError, match="sigma0 must be"):
        SpectralES(np.zeros(3), sigma0)
    # minimize checks it the same way before any evaluation.
    with pytest.raises(ValueError, match="sigma0 must be"):
        minimize(sphere, np.zeros(3), sigma0)


def test_vector_sigma0_points_to_stds():
    # One step size per variable is sigma0 times the factors stds here.
    with pytest.raises(ValueError, match=r"got \[0\.5, 1\.0, 2\.0\]; sigma0 is one number here") as caught:
        SpectralES(np.zeros(3), [0.5, 1.0, 2.0])
    assert "stds=[...]" in str(caught.value)
    with pytest.raises(ValueError, match=r"sigma0 is one number here.*stds=\[\.\.\.\]"):
        minimize(sphere, np.zeros(3), np.array([0.5, 1.0, 2.0]))
    # A scalar gets the advice on its size, not stds.
    with pytest.raises(ValueError, match=r"got -1\.0; pass a step size > 0"):
        SpectralES(np.zeros(3), -1.0)


@pytest.mark.parametrize("popsize", [1, 0, -4, 2.5, True])
def test_bad_popsize(popsize):
    with pytest.raises(ValueError, match=r"popsize must be an integer >= 2.*default 7"):
        SpectralES(np.zeros(3), 1.0, popsize=popsize)


def test_popsize_two_is_allowed():
    es = SpectralES(np.zeros(3), 1.0, popsize=2, seed=0)
    X = es.ask()
    es.tell(X, sphere(X))
    assert es.nfev == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [("preset", "cmaes"), ("cayley", "lu"), ("max_evals", 0), ("tol_x", -1.0), ("tol_condition", np.nan)],
)
def test_bad_options(option, value):
    with pytest.raises(ValueError, match=option):
        SpectralES(np.zeros(3), 1.0, **{option: value})


@pytest.mark.parametrize("option", ["max_evals", "max_iter", "tol_condition", "tol_up_sigma"])
def test_limit_options_accept_infinity(option):
    es = SpectralES(np.zeros(3), 1.0, **{option: np.inf})
    assert es.options[option] == np.inf
    # The error for a negative limit allows infinity instead of demanding a finite value.
    with pytest.raises(ValueError, match=rf"{option} must be positive \(infinity means no limit\), got -1;"):
        SpectralES(np.zeros(3), 1.0, **{option: -1})


NUMERIC_OPTIONS = ("max_evals", "max_iter", "f_target", "tol_f", "tol_x", "tol_condition", "tol_flat", "tol_stagnation")


class CountingSphere:
    """Sphere that counts its calls, to check that bad options fail before any evaluation."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return sphere(x)


# None is a bad value only for the options whose default is not None.
NON_NUMBERS = [
    (option, value, described)
    for option in NUMERIC_OPTIONS
    for value, described in [("1e-3", "the string '1e-3'"), (True, "the bool True"), ([1.0, 2.0], r"\[1.0, 2.0\]")]
] + [(option, None, "None") for option in ("tol_x", "tol_condition")]


def assert_rejected_before_evaluation(message, **options):
    """Assert that SpectralES and minimize both raise ``message`` and minimize evaluates nothing."""
    with pytest.raises(ValueError, match=message):
        SpectralES(np.zeros(3), 1.0, **options)
    objective = CountingSphere()
    with pytest.raises(ValueError, match=message):
        minimize(objective, np.zeros(3), 1.0, **options)
    assert objective.calls == 0


@pytest.mark.parametrize(("option", "value", "described"), NON_NUMBERS)
def test_numeric_option_must_be_a_number(option, value, described):
    assert_rejected_before_evaluation(rf"{option} must be a number, got {described}; pass ", **{option: value})


def test_nan_target_rejected():
    with pytest.raises(ValueError, match="f_target must not be NaN, which no objective value reaches; pass a number"):
        SpectralES(np.zeros(3), 1.0, f_target=np.nan)


def test_target_minus_infinity_means_no_target():
    es = SpectralES(np.ones(3), 1.0, seed=0, f_target=-np.inf, max_iter=20)
    while not es.stop():
        X = es.ask()
        es.tell(X, sphere(X))
    assert es.stop() == {"max_iter": 20}


def test_integer_thresholds_reported_as_given():
    es = SpectralES(np.ones(3), 1.0, seed=0, f_target=1, tol_x=np.int64(0))
    while not es.stop():
        X = es.ask()
        es.tell(X, sphere(X))
    assert es.result.message == "f_target=1"
    assert type(es.options["tol_x"]) is int


@pytest.mark.parametrize("option", ["diagonal", "active", "noise_handling"])
@pytest.mark.parametrize("value", ["no", "False", "", 1, 0, None])
def test_boolean_option_must_be_a_bool(option, value):
    assert_rejected_before_evaluation(re.escape(f"{option} must be True or False, got {value!r}"), **{option: value})


def test_numpy_bools_accepted_as_options():
    es = SpectralES(np.zeros(3), 1.0, diagonal=np.True_, active=np.False_, noise_handling=np.True_)
    assert es.diagonal is True
    assert es.B is None
    assert np.all(es.params.shape_weights >= 0)  # no negative (active) weights
    assert es.noise is not None


@pytest.mark.parametrize("value", [2.5, "5", True, 0])
def test_bad_noise_max_evaluations_rejected_without_noise_handling(value):
    with pytest.raises(ValueError, match=r"noise_max_evaluations must be an integer >= 1"):
        SpectralES(np.zeros(3), 1.0, noise_max_evaluations=value)


@pytest.fixture
def asked():
    es = SpectralES(np.zeros(4), 1.0, seed=0)
    return es, es.ask()


def test_tell_wrong_number_of_values(asked):
    es, X = asked
    with pytest.raises(ValueError, match=r"shape \(7,\), expected \(8,\)"):
        es.tell(X, sphere(X)[:-1])


def test_tell_wrong_solution_shape(asked):
    es, X = asked
    with pytest.raises(ValueError, match=r"solutions of shape \(8, 3\).*shape \(8, 4\)"):
        es.tell(X[:, :3], sphere(X))


def test_tell_solutions_not_from_last_ask(asked):
    es, X = asked
    with pytest.raises(ValueError, match="differ from those of the last ask"):
        es.tell(X[::-1], sphere(X))
    with pytest.raises(ValueError, match="differ from those of the last ask"):
        es.tell(X + 1e-9, sphere(X))


def test_second_tell_is_rejected(asked):
    es, X = asked
    es.tell(X, sphere(X))
    with pytest.raises(ValueError, match="call ask"):
        es.tell(X, sphere(X))


def test_tell_before_ask_is_rejected():
    es = SpectralES(np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="call ask"):
        es.tell(np.zeros((6, 2)), np.zeros(6))


def test_failed_tell_keeps_state(asked):
    es, X = asked
    with pytest.raises(ValueError, match=r"objective values of shape \(3,\)"):
        es.tell(X, sphere(X)[:3])
    es.tell(X, sphere(X))  # the pending samples survive a rejected call
    assert es.nit == 1


def test_minimize_rejects_non_scalar_objective():
    with pytest.raises(ValueError, match="must return a scalar"):
        minimize(lambda x: x, np.zeros(3), 1.0, max_evals=100)


@pytest.mark.parametrize("restarts", [-1, True])
def test_minimize_rejects_bad_restarts(restarts):
    # bool is a subclass of int, so True would otherwise pass as 1 restart.
    with pytest.raises(ValueError, match=f"restarts must be an integer >= 0, got {restarts}"):
        minimize(sphere, np.zeros(3), 1.0, restarts=restarts, max_evals=100)


@pytest.mark.parametrize(
    ("incpopsize", "match"),
    [
        (np.inf, "incpopsize must be finite and >= 1, got inf"),
        (np.nan, "incpopsize must be finite and >= 1, got nan"),
        (0.5, "incpopsize must be finite and >= 1, got 0.5"),
        ("2", "incpopsize must be a number, got the string '2'"),
        (True, "incpopsize must be a number, got the bool True"),
    ],
)
def test_bad_incpopsize_rejected_before_evaluation(incpopsize, match):
    # The first restart is where the growth factor is used, so a value that
    # passed here would fail only after a whole run had been evaluated.
    calls = []

    def counted_sphere(x):
        calls.append(1)
        return sphere(x)

    with pytest.raises(ValueError, match=match):
        minimize(counted_sphere, np.ones(3), 0.5, seed=1, restarts=1, incpopsize=incpopsize, tol_x=1e-3)
    assert calls == []


def test_incpopsize_one_keeps_popsize():
    # incpopsize = 1 is the lower end of the valid range: every restart keeps
    # the default popsize 4 + floor(3 ln 3) = 7 of the 3-D problem.
    result = minimize(sphere, np.ones(3), 0.5, seed=1, restarts=2, incpopsize=1, tol_x=1e-3)
    assert [run["popsize"] for run in result.restarts] == [7, 7, 7]


@pytest.mark.parametrize("seed", ["a", 1.5, -1, True, [1, "b"]])
def test_bad_seed_named(seed):
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer.*got"):
        SpectralES(np.zeros(3), 1.0, seed=seed)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer.*got"):
        minimize(sphere, np.zeros(3), 1.0, seed=seed)


@pytest.mark.parametrize("seed", [0, 2**40, np.int64(5), [1, 2], np.random.SeedSequence(3)])
def test_valid_seeds_accepted(seed):
    es = SpectralES(np.zeros(3), 1.0, seed=seed)
    expected = seed.entropy if isinstance(seed, np.random.SeedSequence) else seed
    assert es.seed == expected


@pytest.mark.parametrize("values", [["a"] * 8, ["1.0"] * 8, [1.0] * 7 + [None], [1j] * 8])
def test_tell_rejects_non_numeric_values(asked, values):
    es, X = asked
    with pytest.raises(ValueError, match=r"tell\(\) got objective values f that are not an array of real numbers"):
        es.tell(X, values)
    es.tell(X, sphere(X))  # the rejected call left the population pending
    assert es.nit == 1


@pytest.mark.parametrize("value", ["1.0", b"1", 1 + 0j, [[1.0], [2.0, 3.0]]])
def test_minimize_rejects_non_numeric_objective(value):
    with pytest.raises(ValueError, match=r"must return a real number, got .* at x = \["):
        minimize(lambda x: value, np.zeros(3), 1.0, max_evals=100)


def test_count_options_reported_as_integers():
    # 3e2 arrives as a float (as from a command line); the stop reason is a count.
    es = SpectralES(np.ones(3), 1.0, seed=0, max_evals=3e2)
    while not es.stop():
        X = es.ask()
        es.tell(X, sphere(X))
    assert es.stop() == {"max_evals": 300}
    assert type(es.stop()["max_evals"]) is int
    assert es.result.message == "max_evals=300"
    result = minimize(sphere, np.ones(3), 1.0, seed=0, max_evals=3e2, restarts=1)
    assert result.message == "max_evals=300"


def test_minimize_rejects_uncallable_objective():
    with pytest.raises(TypeError, match="fun must be callable, got 'sphere'; pass the objective itself"):
        minimize("sphere", np.zeros(3), 1.0)


@pytest.mark.parametrize("callback", [3, "stop", [print]])
def test_uncallable_callback_rejected_before_evaluation(callback, tmp_path):
    calls = []

    def counted(x):
        calls.append(x)
        return sphere(x)

    message = rf"callback must be callable or None, got {re.escape(repr(callback))}; pass a function"
    with pytest.raises(TypeError, match=message):
        minimize(counted, np.zeros(3), 1.0, callback=callback)
    with pytest.raises(TypeError, match=message):
        optimize(SpectralES(np.zeros(3), 1.0), counted, callback=callback)
    with pytest.raises(TypeError, match=message):
        SpectralES(np.zeros(3), 1.0).optimize(counted, callback=callback)
    with pytest.raises(TypeError, match=message):
        resume(counted, tmp_path / "missing.npz", callback=callback)  # before the file is read
    assert calls == []


def test_minimize_names_unknown_option():
    with pytest.raises(TypeError, match="unexpected keyword argument 'popsze'; did you mean 'popsize'?"):
        minimize(sphere, np.zeros(3), 1.0, popsze=10)


@pytest.mark.parametrize(
    ("foreign", "ours"),
    [
        ("maxfevals", "max_evals"),
        ("maxfev", "max_evals"),
        ("ftarget", "f_target"),
        ("maxiter", "max_iter"),
        ("tolfun", "tol_f"),
        ("tolx", "tol_x"),
        ("CMA_diagonal", "diagonal"),
        ("CMA_active", "active"),
        ("noise_handler", "noise_handling"),
    ],
)
def test_pycma_and_scipy_names_hinted(foreign, ours):
    message = rf"unexpected keyword argument '{foreign}'; did you mean '{ours}', the name of .*'{foreign}' here\?"
    with pytest.raises(TypeError, match=r"SpectralES\(\) got an " + message):
        SpectralES(np.zeros(3), 1.0, **{foreign: 10})
    with pytest.raises(TypeError, match=r"minimize\(\) got an " + message):
        minimize(sphere, np.zeros(3), 1.0, **{foreign: 10})


def test_display_option_hinted():
    with pytest.raises(TypeError, match="'verb_disp'; did you mean 'disp', the name of pycma's 'verb_disp' here"):
        minimize(sphere, np.zeros(3), 1.0, verb_disp=10)
    with pytest.raises(TypeError, match="pycma's 'verb_disp' is the argument 'disp' of minimize and optimize;"):
        SpectralES(np.zeros(3), 1.0, verb_disp=10)
    with pytest.raises(TypeError, match=r"optimize\(\) got .* did you mean 'disp', the name of pycma's 'verb_disp'"):
        SpectralES(np.zeros(3), 1.0).optimize(sphere, verb_disp=10)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("maxfun", r"'max_evals' of SpectralES and minimize, and es.set_budget\(max_evals=...\)"),
        ("iterations", r"'max_iter' of SpectralES and minimize, and es.set_budget\(max_iter=...\)"),
        ("max_evals", r"option of SpectralES and minimize, and es.set_budget\(max_evals=...\)"),
        ("n_jobs", r"pass executor=concurrent.futures.ProcessPoolExecutor\(n_jobs\)"),
        ("parallel_objective", "with vectorized=True"),
    ],
)
def test_optimize_run_arguments_hinted(name, hint):
    # pycma's es.optimize takes a budget and parallelism arguments; here the
    # budget belongs to the strategy and parallelism to vectorized or executor.
    with pytest.raises(TypeError, match=rf"optimize\(\) got an unexpected keyword argument '{name}'; .*{hint}"):
        SpectralES(np.zeros(3), 1.0).optimize(sphere, **{name: 2})


def test_scipy_tol_not_matched_to_tol_x():
    # scipy's tol is a function tolerance for most methods, so the closest
    # spelling, tol_x, would mislead.
    with pytest.raises(TypeError, match="scipy's 'tol' has no single counterpart here: tol_f bounds") as caught:
        minimize(sphere, np.zeros(3), 1.0, tol=1e-6)
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("method", "spectral_es has one method, SpectralES, so drop it"),
        ("jac", "SpectralES uses only objective values, so drop it"),
        ("hess", "SpectralES uses only objective values, so drop it"),
        ("gradf", "SpectralES uses only objective values, so drop it"),
        ("constraints", r"pass a box as bounds=\(lower, upper\), and fold other constraints into the objective"),
    ],
)
def test_foreign_arguments_without_counterpart_hinted(name, hint):
    # scipy.optimize.minimize or pycma's fmin2 takes these; the error names
    # the fix instead of only listing the accepted options.
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{name}'; .*{hint}"):
        minimize(sphere, np.zeros(3), 1.0, **{name: None})
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{name}'; .*{hint}"):
        SpectralES(np.zeros(3), 1.0, **{name: None})


def test_options_dict_must_be_keywords():
    with pytest.raises(TypeError, match=re.escape("SpectralES(x0, sigma0, **options)")) as caught:
        SpectralES(np.zeros(3), 1.0, {"popsize": 20})
    assert "positional argument 3 is a dict" in str(caught.value)
    with pytest.raises(TypeError, match=re.escape("minimize(fun, x0, sigma0, **options)")) as caught:
        minimize(sphere, np.zeros(3), 1.0, {"popsize": 20})
    assert "positional argument 4 is a dict" in str(caught.value)
    with pytest.raises(TypeError, match="'inopts'; pass the options themselves as keyword arguments"):
        SpectralES(np.zeros(3), 1.0, inopts={"popsize": 20})
    with pytest.raises(TypeError, match="'options'; pass the options themselves as keyword arguments"):
        minimize(sphere, np.zeros(3), 1.0, options={"popsize": 20})


def test_hints_keep_signatures():
    # IDEs, help() and type checkers read the signature, which the hints must not hide.
    strategy = inspect.signature(SpectralES)
    assert list(strategy.parameters)[:3] == ["x0", "sigma0", "popsize"]
    assert strategy.parameters["popsize"].kind == inspect.Parameter.KEYWORD_ONLY
    assert all(p.kind != inspect.Parameter.VAR_KEYWORD for p in strategy.parameters.values())
    assert list(inspect.signature(minimize).parameters)[:4] == ["fun", "x0", "sigma0", "args"]
    # A missing argument stays Python's own error; an extra positional one
    # lists the positional parameters (test_porting.py).
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'sigma0'"):
        SpectralES(np.zeros(3))


def test_minimize_seed_differs_from_strategy_seed():
    # minimize() seeds each run with a child of SeedSequence(seed), so its
    # first population differs from SpectralES(seed=...)'s; both repeat.
    first = []
    minimize(sphere, np.zeros(3), 1.0, seed=2, max_evals=7, callback=lambda r: first.append(r.xbest.copy()) or True)
    again = []
    minimize(sphere, np.zeros(3), 1.0, seed=2, max_evals=7, callback=lambda r: again.append(r.xbest.copy()) or True)
    es = SpectralES(np.zeros(3), 1.0, seed=2)
    X = es.ask()
    es.tell(X, [sphere(x) for x in X])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], es.result.xbest)


def test_tell_accepts_iterators_of_values():
    # map(f, X), generators and Executor.map(f, X) yield the values once,
    # and tell must use them as it uses a list.
    reference = SpectralES(np.zeros(4), 1.0, seed=0)
    es = SpectralES(np.zeros(4), 1.0, seed=0)
    with ThreadPoolExecutor(2) as executor:
        sources = [
            lambda X: map(sphere, X),
            lambda X: (sphere(x) for x in X),
            lambda X: executor.map(sphere, X),
        ]
        for make_values in sources:
            X = es.ask()
            expected_X = reference.ask()
            es.tell(X, make_values(X))
            reference.tell(expected_X, sphere(expected_X))
            np.testing.assert_array_equal(es.mean, reference.mean)
    assert es.nit == 3


def test_endless_iterator_raises_shape_error(asked):
    es, X = asked
    reads = []

    def endless_values():
        # Stands in for itertools.repeat(1.0), with a stop so that a tell
        # that reads on fails here instead of filling the memory.
        while len(reads) < 1000:
            reads.append(1.0)
            yield 1.0
        raise AssertionError("tell read 1000 values from an iterator")

    with pytest.raises(ValueError, match=rf"shape \({len(X) + 1},\), expected \({len(X)},\)"):
        es.tell(X, endless_values())
    # One value past popsize shows that the iterator is too long.
    assert len(reads) == len(X) + 1


def test_failing_iterator_keeps_population_pending(asked):
    es, X = asked

    def values_then_failure():
        yield 1.0
        raise RuntimeError("simulation crashed")

    with pytest.raises(RuntimeError, match="simulation crashed"):
        es.tell(X, values_then_failure())
    es.tell(X, sphere(X))
    assert es.nit == 1


def test_scipy_xk_callback_rejected_before_evaluation(tmp_path):
    # scipy passes callback(xk) the current point; here a callback gets the ESResult, so a
    # function written for scipy would fail later with an unrelated TypeError.
    calls = []

    def counted(x):
        calls.append(x)
        return sphere(x)

    def scipy_callback(xk):
        return float(np.sum(xk - 1)) < 0

    message = r"callback 'scipy_callback' takes xk, scipy's current point.*lambda result: cb\(result.mean\)"
    with pytest.raises(TypeError, match=message):
        minimize(counted, np.zeros(3), 1.0, callback=scipy_callback)
    with pytest.raises(TypeError, match=message):
        SpectralES(np.zeros(3), 1.0).optimize(counted, callback=scipy_callback)
    with pytest.raises(TypeError, match=message):
        resume(counted, tmp_path / "missing.npz", callback=scipy_callback)
    assert calls == []

    # The documented wrapper, and other parameter names, run as before.
    points = []
    result = minimize(sphere, np.zeros(3), 1.0, seed=0, max_evals=60, callback=lambda r: points.append(r.mean))
    assert len(points) == result.nit
    stopped = minimize(sphere, np.zeros(3), 1.0, seed=0, callback=lambda x: True)  # only the name xk is scipy's
    assert stopped.stop == {"callback": True}
