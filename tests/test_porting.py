"""The pycma and scipy.optimize translations in docs/porting.md, row by row.

Each test runs the spectral_es side of some rows and, where the page states
something about pycma (4.5) or scipy (1.17), that side too. The test extras
install both.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from spectral_es import Bounds, NonFiniteObjectiveWarning, SpectralES, minimize
from spectral_es.functions import rosenbrock, sphere

cma = pytest.importorskip("cma")
scipy_optimize = pytest.importorskip("scipy.optimize")

X0 = [1.0, 2.0, 3.0]

# (pycma option, scipy option or None, spectral_es option, value, where spectral_es keeps it)
OPTION_ROWS = [
    ("maxfevals", "maxfev", "max_evals", 500, lambda es: es.options["max_evals"]),
    ("maxiter", "maxiter", "max_iter", 50, lambda es: es.options["max_iter"]),
    ("ftarget", None, "f_target", 1e-8, lambda es: es.options["f_target"]),
    ("tolfun", None, "tol_f", 1e-9, lambda es: es.options["tol_f"]),
    ("tolx", None, "tol_x", 1e-9, lambda es: es.options["tol_x"]),
    ("tolconditioncov", None, "tol_condition", 1e10, lambda es: es.options["tol_condition"]),
    ("tolupsigma", None, "tol_up_sigma", 1e10, lambda es: es.options["tol_up_sigma"]),
    ("tolflatfitness", None, "tol_flat", 5, lambda es: es.options["tol_flat"]),
    ("tolstagnation", None, "tol_stagnation", 300, lambda es: es.options["tol_stagnation"]),
    ("popsize", None, "popsize", 12, lambda es: es.popsize),
    ("seed", None, "seed", 7, lambda es: es.seed),
    ("CMA_diagonal", None, "diagonal", True, lambda es: es.diagonal),
    ("integer_variables", None, "integer_variables", [1], lambda es: es.domain.integer.tolist()),
    ("CMA_stds", None, "stds", [1.0, 10.0, 0.1], lambda es: es._scaling.tolist()),
]


@pytest.mark.parametrize(("pycma_name", "scipy_name", "name", "value", "stored"), OPTION_ROWS)
def test_option_rows(pycma_name, scipy_name, name, value, stored):
    assert pycma_name in cma.CMAOptions()
    es = SpectralES(X0, 0.5, **{name: value})
    assert stored(es) == value
    if pycma_name != name:
        with pytest.raises(TypeError, match=f"did you mean '{name}'"):
            SpectralES(X0, 0.5, **{pycma_name: value})
    if scipy_name is not None and scipy_name != name:
        with pytest.raises(TypeError, match=f"did you mean '{name}'"):
            minimize(sphere, X0, 0.5, **{scipy_name: value})


def test_stds_row_matches_pycma_deviations():
    stds = [1.0, 10.0, 0.1]
    theirs = cma.CMAEvolutionStrategy(X0, 0.5, {"CMA_stds": stds, "verbose": -9})
    ours = SpectralES(X0, 0.5, stds=stds)
    # pycma reports its deviations through its own covariance bookkeeping, a
    # few 1e-5 relative from sigma0 * stds; ours are that product exactly.
    np.testing.assert_allclose(ours.coordinate_std(), theirs.stds, rtol=1e-4)


def test_active_and_noise_rows():
    assert "CMA_active" in cma.CMAOptions()
    assert SpectralES(X0, 0.5, active=False).params.shape_weights.min() >= 0  # no negative weights
    assert SpectralES(X0, 0.5).params.shape_weights.min() < 0
    assert SpectralES(X0, 0.5, noise_handling=True).noise is not None
    assert "noise_handler" in cma.fmin2.__code__.co_varnames


def test_options_dict_row():
    options = {"popsize": 12, "max_evals": 500}
    es = SpectralES(X0, 0.5, **options)
    assert es.popsize == 12
    with pytest.raises(TypeError, match=re.escape("pass them with **, as in SpectralES(x0, sigma0, **options)")):
        SpectralES(X0, 0.5, options)
    result = minimize(sphere, X0, 0.5, seed=1, **options)
    assert result.stop == {"max_evals": 500}


def test_bounds_rows():
    box = ([0, 0, 0], [5, 5, 5])
    pairs = [(0, 5)] * 3
    for bounds in (box, Bounds(*box), Bounds.from_pairs(pairs), scipy_optimize.Bounds(*box)):
        es = SpectralES(X0, 0.5, bounds=bounds)
        assert es.domain.box.lower.tolist() == box[0]
        assert es.domain.box.upper.tolist() == box[1]
    with pytest.raises(ValueError, match="one \\(low, high\\) pair per variable"):
        SpectralES(X0, 0.5, bounds=pairs)
    # pycma's bounds option is [lower, upper], as here.
    assert cma.CMAEvolutionStrategy(X0, 0.5, {"bounds": list(box), "verbose": -9}).boundary_handler.has_bounds()


def test_ask_tell_stop_optimize_rows():
    pycma_es = cma.CMAEvolutionStrategy(X0, 0.5, {"verbose": -9, "seed": 1, "maxfevals": 300})
    assert pycma_es.optimize(rosenbrock) is pycma_es
    assert pycma_es.stop() == {"maxfevals": 300}

    es = SpectralES(X0, 0.5, seed=1, max_evals=300)
    assert es.stop() == {}
    X = es.ask()
    assert X.shape == (es.popsize, 3)  # one array, where pycma's ask returns a list of arrays
    es.tell(X, rosenbrock(X))
    assert es.optimize(rosenbrock) is es
    assert es.stop() == {"max_evals": 300}


def test_minus_infinity_row():
    pycma_es = cma.CMAEvolutionStrategy(X0, 0.5, {"verbose": -9, "seed": 1})
    solutions = pycma_es.ask()
    values = [float(sphere(x)) for x in solutions]
    values[3] = -np.inf
    pycma_es.tell(solutions, values)
    assert pycma_es.result.fbest == -np.inf
    assert np.array_equal(pycma_es.result.xbest, solutions[3])

    es = SpectralES(X0, 0.5, seed=1)
    X = es.ask()
    f = sphere(X)
    f[3] = -np.inf
    with pytest.warns(NonFiniteObjectiveWarning, match="NaN or infinite; they rank as worst"):
        es.tell(X, f)
    assert es.result.fbest == np.delete(f, 3).min()
    assert not np.array_equal(es.result.xbest, X[3])


def test_second_ask_replaces_population_row():
    pycma_es = cma.CMAEvolutionStrategy(X0, 0.5, {"verbose": -9, "seed": 1})
    first = pycma_es.ask()
    pycma_es.ask()
    pycma_es.tell(first, [float(rosenbrock(x)) for x in first])
    assert pycma_es.countiter == 1

    es = SpectralES(X0, 0.5, seed=1)
    first = es.ask()
    second = es.ask()
    with pytest.raises(ValueError, match=r"an ask\(\) before the tell\(\) of the previous one replaces"):
        es.tell(first, rosenbrock(first))
    es.tell(second, rosenbrock(second))
    assert es.nit == 1


def test_optimize_budget_row():
    pycma_es = cma.CMAEvolutionStrategy(X0, 0.5, {"verbose": -9, "seed": 1})
    pycma_es.optimize(rosenbrock, iterations=5)
    assert pycma_es.countiter == 5

    # As pycma's iterations=5 twice: 5 iterations, then 5 more.
    es = SpectralES(X0, 0.5, seed=1)
    for total in (5, 10):
        es.set_budget(max_iter=es.nit + 5, max_evals=10_000)
        es.optimize(rosenbrock)
        assert es.nit == total
        assert es.stop() == {"max_iter": total}
    with pytest.raises(TypeError, match="es.set_budget"):
        es.optimize(rosenbrock, iterations=5)

    # pycma's maxfun counts the evaluations of this call, as does nfev + m here.
    pycma_evaluations = pycma_es.countevals
    pycma_es.optimize(rosenbrock, maxfun=30)
    assert 30 <= pycma_es.countevals - pycma_evaluations < 30 + pycma_es.popsize
    evaluations = es.nfev
    es.set_budget(max_evals=es.nfev + 30, max_iter=10_000)
    es.optimize(rosenbrock)
    assert 30 <= es.nfev - evaluations < 30 + es.popsize
    assert "max_evals" in es.stop()


def test_result_rows():
    pycma_result = cma.CMAEvolutionStrategy(X0, 0.5, {"verbose": -9, "seed": 1}).optimize(sphere).result
    for field in ("xbest", "fbest", "evaluations", "iterations", "xfavorite", "stds", "stop"):
        assert hasattr(pycma_result, field)
    assert pycma_result[0] is pycma_result.xbest

    es = SpectralES(X0, 0.5, seed=1).optimize(sphere)
    result = es.result
    assert result.x is result.xbest
    assert result.fun == result.fbest == sphere(result.xbest)
    assert result.nfev == es.nfev
    assert result.nit == es.nit
    assert np.array_equal(result.mean, es.feasible_mean)
    assert np.array_equal(result.history["std"][-1], es.coordinate_std())
    assert result.stop == es.stop()

    # pycma's result is a named tuple: here a position raises, and so does unpacking.
    with pytest.raises(TypeError, match=r"result\['x'\] \(pycma's result\[0\]\)"):
        result[0]
    with pytest.raises(TypeError, match=r"x, f = result.xbest, result.fbest"):
        x, f = result


def test_result_keys_row():
    # scipy's OptimizeResult is a dict: result["x"] reads a field, and an unknown key raises KeyError.
    reference = scipy_optimize.minimize(sphere, X0, method="Nelder-Mead", options={"maxfev": 50})
    assert reference["x"] is reference.x

    result = minimize(sphere, X0, 0.5, seed=0, max_evals=50)
    for key in ("x", "fun", "success", "message", "nfev", "nit", "xbest", "history"):
        assert result[key] is getattr(result, key) or result[key] == getattr(result, key)
    with pytest.raises(KeyError, match="'status'; scipy's status: success says"):
        result["status"]
    with pytest.raises(KeyError, match="'evals'; the names are xbest, fbest, mean"):
        result["evals"]
    with pytest.raises(KeyError, match="no field '__class__'"):
        result["__class__"]


def test_fmin2_row():
    x, pycma_es = cma.fmin2(sphere, X0, 0.5, {"verbose": -9, "seed": 2, "ftarget": 1e-8}, restarts=2, bipop=True)
    assert pycma_es.result.fbest <= 1e-8
    assert np.array_equal(x, pycma_es.result.xbest)

    result = minimize(sphere, X0, 0.5, seed=2, f_target=1e-8, restarts=2, bipop=True)
    assert result.fbest <= 1e-8
    assert result.success


def test_scipy_minimize_row():
    reference = scipy_optimize.minimize(rosenbrock, X0, method="Nelder-Mead", options={"maxfev": 200})
    assert 200 <= reference.nfev <= 200 + len(X0) + 1  # scipy may finish the simplex step it is in
    assert not reference.success

    result = minimize(rosenbrock, X0, 0.5, seed=0, max_evals=200)
    assert result.stop == {"max_evals": 200}
    assert 200 <= result.nfev < 200 + 7  # the last population of 7 completes
    assert not result.success
    assert result.message == "max_evals=200"


def test_callback_rows(capsys):
    # scipy calls callback(intermediate_result) and stops on StopIteration.
    calls = []

    def scipy_style(intermediate_result):
        calls.append(intermediate_result.x.copy())
        if len(calls) == 3:
            raise StopIteration

    scipy_optimize.minimize(rosenbrock, X0, method="Nelder-Mead", callback=scipy_style)
    assert len(calls) == 3

    # pycma's optimize calls callback(es) and ignores what it returns.
    strategies = []
    options = {"verbose": -9, "seed": 1, "maxfevals": 100}
    cma.CMAEvolutionStrategy(X0, 0.5, options).optimize(rosenbrock, callback=lambda es: strategies.append(es) or True)
    assert isinstance(strategies[0], cma.CMAEvolutionStrategy)
    assert strategies[-1].stop() == {"maxfevals": 100}
    assert len(strategies) > 1

    # Here callback(result) gets the ESResult; True or StopIteration stops.
    seen = []
    result = minimize(rosenbrock, X0, 0.5, seed=0, callback=lambda r: seen.append(r.mean) or len(seen) == 3)
    assert result.stop == {"callback": True}
    assert result.nit == 3

    # A callback(xk) of the current point, adapted.
    points = []

    def legacy(xk):
        points.append(xk)

    minimize(rosenbrock, X0, 0.5, seed=0, max_iter=4, callback=lambda r: legacy(r.mean))
    assert len(points) == 4

    # pycma's verb_disp is disp here.
    minimize(sphere, X0, 0.5, seed=0, max_iter=20, disp=10)
    assert len(re.findall(r"^\s+(10|20)\s", capsys.readouterr().out, re.M)) == 2


def test_args_and_parallel_rows():
    def shifted(x, shift, scale=1.0):
        return scale * float(((x - shift) ** 2).sum())

    assert minimize(shifted, X0, 0.5, seed=0, args=(1.0, 2.0), f_target=1e-8).success
    assert minimize(shifted, X0, 0.5, seed=0, args=1.0, f_target=1e-8).success  # one argument
    serial = minimize(sphere, X0, 0.5, seed=0, max_evals=200)
    with ThreadPoolExecutor(2) as pool:
        threaded = minimize(sphere, X0, 0.5, seed=0, max_evals=200, executor=pool)
    rows = minimize(sphere, X0, 0.5, seed=0, max_evals=200, vectorized=True)
    assert threaded.fbest == serial.fbest == rows.fbest


def test_disp_row(capsys):
    es = SpectralES(X0, 0.5, seed=0)
    for _ in range(3):
        X = es.ask()
        es.tell(X, sphere(X))
        es.disp(1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["iter", "evals", "f"]
    assert len(lines) == 4


def test_disp_zero_prints_nothing(capsys):
    # pycma's es.disp(0) prints nothing, as disp=0 does in minimize. The run stops on
    # max_iter, so the last call also covers the final line of a stopped run.
    theirs = cma.CMAEvolutionStrategy(X0, 0.5, {"seed": 1, "verbose": -9, "verb_disp": 0})
    es = SpectralES(X0, 0.5, seed=0, max_iter=3)
    while not es.stop():
        X = es.ask()
        es.tell(X, sphere(X))
        es.disp(0)
        es.disp(False)
        solutions = theirs.ask()
        theirs.tell(solutions, [float(sphere(x)) for x in solutions])
        theirs.disp(0)
    assert capsys.readouterr().out == ""


def test_disp_true_prints_every_ten(capsys):
    es = SpectralES(X0, 0.5, seed=0)
    for _ in range(20):
        X = es.ask()
        es.tell(X, sphere(X))
        es.disp(True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["iter", "10", "20"]
    with pytest.raises(ValueError, match="every must be True, False or an integer >= 0"):
        es.disp(-1)


@pytest.mark.parametrize(
    ("option", "value"),
    [("CMA_elitist", True), ("tolfunhist", 1e-12), ("tolfacupx", 1e3), ("eval_initial_x", True)],
)
def test_options_without_equivalent(option, value):
    assert option in cma.CMAOptions() or option in cma.fmin2.__code__.co_varnames
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{option}'"):
        minimize(sphere, X0, 0.5, **{option: value})


# pycma options whose closest spectral_es name by spelling is a wrong fix
# (fixed_variables and integer_variables), or that pycma scripts pass by
# habit, with part of the hint that their TypeError gives instead.
PYCMA_OPTION_HINTS = [
    ("fixed_variables", {0: 1.0}, "pycma's 'fixed_variables' has no counterpart here: optimise the free variables"),
    ("scaling_of_variables", [1.0, 10.0, 0.1], "did you mean 'stds', the name of pycma's 'scaling_of_variables'"),
    ("minstd", 0.1, "pycma's 'minstd' has no counterpart here"),
    ("maxstd", 1.0, "pycma's 'maxstd' has no counterpart here"),
    ("verbose", -9, "pycma's 'verbose' has no counterpart here: nothing is printed unless disp is given"),
    ("verb_log", 0, "in place of pycma's 'verb_log', pass log='run.csv' to minimize"),
    ("verb_filenameprefix", "outcmaes/", "in place of pycma's 'verb_filenameprefix', pass log='run.csv'"),
]


@pytest.mark.parametrize(("option", "value", "hint"), PYCMA_OPTION_HINTS)
def test_pycma_option_hints(option, value, hint):
    assert option in cma.CMAOptions()
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{option}'; ") as strategy_error:
        SpectralES(X0, 0.5, **{option: value})
    assert hint in str(strategy_error.value)
    assert "integer_variables'?" not in str(strategy_error.value)
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{option}'; ") as minimize_error:
        minimize(sphere, X0, 0.5, **{option: value})
    assert hint in str(minimize_error.value)


def test_counters_and_ask_rows():
    es, theirs = SpectralES(X0, 0.5, seed=1), cma.CMAEvolutionStrategy(X0, 0.5, {"seed": 1, "verbose": -9})
    for _ in range(3):
        X = es.ask()
        es.tell(X, sphere(X))
        solutions = theirs.ask()
        theirs.tell(solutions, [float(sphere(x)) for x in solutions])
    assert (es.nit, es.nfev) == (theirs.countiter, theirs.countevals)
    assert len(theirs.ask(2)) == 2
    # SpectralES.ask takes no sample count, so Python raises its own TypeError.
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        es.ask(2)


def test_diagonal_is_true_or_false():
    with pytest.raises(ValueError, match="diagonal must be True or False, got 5"):
        SpectralES(X0, 0.5, diagonal=5)  # pycma's CMA_diagonal=5: the first 5 iterations
    assert not hasattr(SpectralES(X0, 0.5).result, "evals_best")


@pytest.mark.parametrize(
    ("owner", "theirs", "fix"),
    [
        ("strategy", "countiter", lambda es, result: es.nit),
        ("strategy", "countevals", lambda es, result: es.nfev),
        ("strategy", "N", lambda es, result: es.n),
        ("strategy", "opts", lambda es, result: es.options),
        ("strategy", "C", lambda es, result: es.covariance() / es.sigma**2),
        ("result", "evaluations", lambda es, result: result.nfev),
        ("result", "iterations", lambda es, result: result.nit),
        ("result", "xfavorite", lambda es, result: result.mean),
        ("result", "stds", lambda es, result: es.coordinate_std()),
    ],
)
def test_pycma_attribute_names_point_at_ours(owner, theirs, fix):
    pycma_es = cma.CMAEvolutionStrategy(X0, 0.5, {"verbose": -9, "seed": 1})
    pycma_es.optimize(sphere, iterations=3)
    assert hasattr(pycma_es if owner == "strategy" else pycma_es.result, theirs)

    es = SpectralES(X0, 0.5, seed=1, max_iter=3).optimize(sphere)
    result = es.result
    with pytest.raises(AttributeError, match=f"has no attribute '{theirs}'; pycma's {theirs} "):
        getattr(es if owner == "strategy" else result, theirs)
    assert np.size(fix(es, result)) > 0  # the advised attribute exists


def test_unknown_attribute_keeps_python_suggestions():
    # The error keeps name and obj, from which Python suggests a close name.
    es = SpectralES(X0, 0.5, seed=1)
    with pytest.raises(AttributeError) as error:
        es.nfevs  # noqa: B018
    assert str(error.value) == "'SpectralES' object has no attribute 'nfevs'"
    assert (error.value.name, error.value.obj) == ("nfevs", es)
    with pytest.raises(AttributeError, match="scipy's status: success says"):
        es.result.status  # noqa: B018


def test_property_error_names_missing_attribute():
    # Python calls __getattr__ also when a property's getter raises AttributeError, so the
    # error must name the attribute that the getter lacks (as an old pickle may), not the property.
    es = SpectralES(X0, 0.5, seed=1)
    result = es.result
    del es.domain
    with pytest.raises(AttributeError, match="has no attribute 'domain'$") as strategy_error:
        es.result  # noqa: B018
    assert strategy_error.value.name == "domain"

    object.__delattr__(result, "xbest")
    with pytest.raises(AttributeError, match="has no attribute 'xbest'$") as result_error:
        result.x  # noqa: B018
    assert result_error.value.name == "xbest"


def test_extra_positional_lists_parameters():
    # pycma users may pass popsize after sigma0, and Python's own TypeError names no fix.
    with pytest.raises(TypeError, match=r"SpectralES\(\) takes at most 2 positional arguments \(x0, sigma0\) but 3"):
        SpectralES(X0, 0.5, 10)
    with pytest.raises(TypeError, match=r"pass the others by keyword \(name=value\)"):
        minimize(sphere, X0, 0.5, 10)


def test_covariance_hint_holds_only_unscaled():
    # pycma 4.5.0 keeps CMA_stds out of C (in sigma_vec), while covariance()
    # includes them, so covariance() / sigma**2 is pycma's C only without stds.
    stds = [1.0, 10.0, 100.0]
    theirs = cma.CMAEvolutionStrategy(X0, 0.5, {"CMA_stds": stds, "verbose": -9, "seed": 1})
    es = SpectralES(X0, 0.5, stds=stds, seed=1)
    # pycma's fresh C has diagonal entries within 1e-4 of one, so 1e-3 separates it from stds**2.
    # covariance() multiplies by stds exactly, so only rounding (1e-12) separates it from stds**2.
    np.testing.assert_allclose(np.diag(theirs.C), np.ones(3), rtol=1e-3)
    np.testing.assert_allclose(np.diag(es.covariance() / es.sigma**2), np.square(stds), rtol=1e-12)

    with pytest.raises(AttributeError, match="unless stds or integer variables scale the coordinates"):
        es.C  # noqa: B018
