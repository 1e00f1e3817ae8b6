"""The comparison harness gives every method the same start, seed and budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.es import compare, methods, page, report
from benchmarks.es.harness import BudgetExceededError, Objective, make_problem, run, thin_trace
from spectral_es.functions import sphere

ALL_METHODS = sorted(methods.METHODS)


def test_problem_start_and_budget():
    unimodal = make_problem("rosenbrock", 5, seed=7)
    multimodal = make_problem("schaffer", 5, seed=7)
    assert unimodal.sigma0 == 1.0
    assert np.all(np.abs(unimodal.x0) <= 3)
    assert multimodal.sigma0 == 2.0
    assert np.all(np.abs(multimodal.x0) <= 5)
    assert (unimodal.f_target, multimodal.f_target) == (1e-8, 1e-4)
    assert (unimodal.budget, multimodal.budget) == (50_000, 500_000)
    # The start depends on the seed and n only.
    np.testing.assert_array_equal(unimodal.x0, make_problem("sphere", 5, seed=7).x0)


def test_problem_rejects_seed_zero():
    with pytest.raises(ValueError, match="seed must be >= 1"):
        make_problem("sphere", 5, seed=0)


def test_objective_counts_and_enforces_budget():
    objective = Objective(sphere, budget=5, f_target=0.5)
    values = objective(np.array([[1.0, 1.0], [0.5, 0.0], [2.0, 0.0]]))
    np.testing.assert_allclose(values, [2.0, 0.25, 4.0])
    assert objective.nfev == 3
    assert objective.nfev_to_target == 3  # the end of the call that reached 0.25
    assert objective(np.array([0.1, 0.0])) == pytest.approx(0.01)
    assert objective.trace == [(3, 0.25), (4, pytest.approx(0.01))]
    with pytest.raises(BudgetExceededError):
        objective(np.zeros((2, 2)))  # 4 + 2 > 5: nothing is evaluated
    assert objective.nfev == 4


def test_run_all_hands_identical_problems_to_methods(monkeypatch):
    received: dict[str, list] = {}

    def spy(name):
        def runner(problem, objective):
            received.setdefault(name, []).append((problem, objective.budget, objective.f_target))
            objective(problem.x0)
            return "spy"

        return runner

    monkeypatch.setitem(methods.METHODS, "spectral", spy("spectral"))
    monkeypatch.setitem(methods.METHODS, "pycma", spy("pycma"))
    monkeypatch.setattr(compare, "METHODS", methods.METHODS)
    config = dataclasses.replace(
        compare.QUICK,
        seeds=2,
        dims=(3,),
        multimodal_dims=(4,),
        unimodal_methods=("spectral", "pycma"),
        multimodal_methods=("pycma", "spectral"),
        functions=("sphere", "rastrigin"),
    )
    records = compare.run_all(config, log=lambda line: None)

    assert len(records) == 2 * 2 * 2
    assert len(received["spectral"]) == len(received["pycma"]) == 4
    for (p, budget, target), (q, budget_q, target_q) in zip(received["spectral"], received["pycma"], strict=True):
        assert (p.function, p.n, p.seed, p.sigma0) == (q.function, q.n, q.seed, q.sigma0)
        np.testing.assert_array_equal(p.x0, q.x0)
        assert budget == budget_q == p.budget
        assert target == target_q == p.f_target


@pytest.mark.parametrize("name", ALL_METHODS)
def test_method_samples_around_start_with_sigma0(name):
    # Every method starts from N(x0, sigma0^2 I). The first generation has at
    # least 9 x 6 standardised coordinates (x - x0) / sigma0, whose mean has a
    # standard error <= 1 / sqrt(54) = 0.14 and whose std one of <= 0.1. A
    # method that ignored x0 (3 away from the origin) would shift the mean by
    # 1.5, one that ignored sigma0 = 2 would halve the std.
    problem = dataclasses.replace(make_problem("sphere", 6, seed=1), x0=np.full(6, 3.0), sigma0=2.0)
    first = []

    def runner(problem, objective):
        def capture(X):
            if not first:
                first.append(np.array(X, dtype=float))
            return objective(X)

        return methods.METHODS[name](problem, capture)

    run(name, runner, dataclasses.replace(problem, budget=200))
    standardised = (first[0] - problem.x0) / problem.sigma0
    assert abs(standardised.mean()) < 0.7
    assert 0.7 < standardised.std() < 1.3


@pytest.mark.parametrize("name", ALL_METHODS)
def test_method_respects_budget_and_seed(name):
    problem = dataclasses.replace(make_problem("rastrigin", 4, seed=2), budget=300)
    first = run(name, methods.METHODS[name], problem)
    again = run(name, methods.METHODS[name], problem)
    other = run(name, methods.METHODS[name], dataclasses.replace(problem, seed=3))

    assert first.evals <= problem.budget
    assert not first.success
    assert first.trace == again.trace  # the seed fixes the run
    assert first.trace != other.trace


def test_cell_and_ratio_mark_failed_runs():
    def record(method, success, evals):
        return dataclasses.replace(_RECORD, method=method, success=success, evals=evals)

    cells = report.group(
        [record("spectral", True, 100), record("spectral", True, 300), record("pycma", True, 100)]
        + [record("pycma", True, 200), record("xnes", True, 100), record("xnes", False, 900)]
        + [record("snes", False, 900)]
    )
    assert str(cells[("spectral", "sphere", 2)]) == "200"
    assert str(cells[("xnes", "sphere", 2)]) == "100 (1/2)"
    assert report.format_ratio(cells, "spectral", "pycma", "sphere", 2) == "1.33"
    # Medians over the successful runs; "*" since one xNES run failed.
    assert report.format_ratio(cells, "xnes", "pycma", "sphere", 2) == "0.67*"
    assert report.format_ratio(cells, "snes", "pycma", "sphere", 2) == "-"


def test_method_exception_is_recorded_as_failure():
    def runner(problem, objective):
        objective(problem.x0)
        raise OverflowError("math range error")

    record = run("crashing", runner, make_problem("sphere", 2, seed=1))
    assert record.stop == "error: OverflowError: math range error"
    assert not record.success
    assert record.evals == 1


def test_budget_error_is_found_behind_a_wrapping_exception():
    def runner(problem, objective):
        try:
            objective(np.zeros((problem.budget + 1, problem.n)))
        except BudgetExceededError as error:
            raise RuntimeError("the method's own wrapper") from error

    record = run("wrapping", runner, make_problem("sphere", 2, seed=1))
    assert record.stop == "budget"
    assert record.evals == 0


def test_best_so_far_is_a_step_function():
    trace = [(10, 5.0), (20, 1.0), (40, 0.5)]
    values = report.best_so_far(trace, np.array([1, 10, 15, 20, 39, 40, 100]))
    np.testing.assert_array_equal(values, [np.nan, 5.0, 5.0, 1.0, 1.0, 0.5, 0.5])


def test_thin_trace_keeps_one_percent_falls():
    # A best value that halves every 1000 evaluations, one point per evaluation,
    # with a final value of 0 and a flat start. It falls by 1% about every 15
    # points, so about 200 of the 3000 points remain. 1% of a value is far
    # above the rounding of these floats.
    values = [1.0, 1.0 - 1e-4, 1.0 - 2e-4] + [0.5 ** (k / 1000) for k in range(1, 3000)] + [0.0]
    trace = [(k + 1, value) for k, value in enumerate(values)]
    thinned = thin_trace(trace)

    assert thinned[0] == trace[0]
    assert thinned[-1] == trace[-1]
    assert set(thinned) <= set(trace)
    assert 150 < len(thinned) < 250
    # Each kept point (but the last) is at least 1% below the one before it ...
    for (_, before), (_, after) in zip(thinned[:-2], thinned[1:-1], strict=True):
        assert after <= 0.99 * before
    # ... and the best value it shows differs from the full trace's by less
    # than 1% at every evaluation count.
    grid = np.arange(1, len(trace) + 1)
    full, thin = report.best_so_far(trace, grid), report.best_so_far(thinned, grid)
    assert np.all((thin >= full) & (thin - full <= 0.01 * thin))


def test_thin_trace_after_infinite_start():
    trace = [(1, np.inf), (2, 5.0), (3, 4.999), (4, 1.0), (5, 0.5)]
    assert thin_trace(trace) == [(1, np.inf), (2, 5.0), (4, 1.0), (5, 0.5)]


def test_saved_traces_are_thinned(tmp_path):
    trace = [(k, 1.0 / k) for k in range(1, 2001)]
    record = dataclasses.replace(_RECORD, trace=trace)
    header = compare.describe_run("run", 1.0)
    compare.save_results(tmp_path / "run.json", compare.QUICK, [record], [], header)
    _, (loaded,), _, _ = compare.load_results([tmp_path / "run.json"])
    assert loaded.trace == thin_trace(trace)
    assert len(loaded.trace) < len(trace) // 4


_RECORD = run("spy", lambda problem, objective: "spy", make_problem("sphere", 2, seed=1))


def test_target_checks_report_each_miss():
    def records(method, function, evals, successes=10):
        base = dataclasses.replace(_RECORD, method=method, function=function, n=10)
        return [dataclasses.replace(base, success=k < successes, evals=evals) for k in range(10)]

    cells = report.group(
        records("spectral", "sphere", 1600)
        + records("pycma", "sphere", 1000)
        + records("xnes", "sphere", 1500)
        + records("spectral-ipop", "rastrigin", 900, successes=9)
        + records("pycma-ipop", "rastrigin", 1000)
        + records("xnes", "rastrigin", 500, successes=4)
    )
    verdicts = dict(page.target_checks(cells, timing_rows=[]))
    unimodal, xnes, multimodal_xnes, ipop_xnes, runtime_xnes, multimodal, timing = verdicts.values()
    assert unimodal == "not met: sphere n=10: 1.60 (only 1 of 8 cases run)"
    assert xnes == "not met: sphere n=10: 1600 vs 1500"
    assert multimodal_xnes == "not measured"  # no single spectral run on rastrigin
    # More successes than xNES outweigh a larger median.
    assert ipop_xnes == "met"
    assert runtime_xnes == "not measured"
    assert multimodal == "not met: rastrigin n=10: 9/10 solved (only 1 of 5 cases run)"
    assert timing == "not measured"


def test_xnes_comparison_breaks_ties_by_median():
    def records(method, evals, successes):
        base = dataclasses.replace(_RECORD, method=method, function="griewank", n=10)
        return [dataclasses.replace(base, success=k < successes, evals=evals) for k in range(10)]

    goal = "spectral never worse than xNES, multimodal functions (successes, then median)"
    slower = report.group(records("spectral", 900, 6) + records("xnes", 800, 6))
    assert dict(page.target_checks(slower, timing_rows=[]))[goal] == "not met: griewank n=10: 900 (6/10) vs 800 (6/10)"
    fewer = report.group(records("spectral", 100, 5) + records("xnes", 800, 6))
    assert dict(page.target_checks(fewer, timing_rows=[]))[goal] == "not met: griewank n=10: 100 (5/10) vs 800 (6/10)"
    faster = report.group(records("spectral", 700, 6) + records("xnes", 800, 6))
    assert dict(page.target_checks(faster, timing_rows=[]))[goal] == "met"


def test_average_runtime_counts_failed_runs():
    base = dataclasses.replace(_RECORD, method="spectral", function="griewank", n=10)
    runs = [(True, 100), (False, 300), (True, 200)]
    cell = report.Cell([dataclasses.replace(base, success=success, evals=evals) for success, evals in runs])
    # All 600 evaluations, over the 2 successes.
    assert cell.average_runtime == 300
    unsolved = report.Cell([dataclasses.replace(base, success=False, evals=evals) for evals in (10, 20)])
    assert unsolved.average_runtime == np.inf


def test_runtime_check_weighs_successes_by_cost():
    def records(method, successes, solved_evals, failed_evals):
        base = dataclasses.replace(_RECORD, method=method, function="schaffer", n=10)
        return [
            dataclasses.replace(base, success=k < successes, evals=solved_evals if k < successes else failed_evals)
            for k in range(10)
        ]

    goal = "spectral never worse than xNES, multimodal functions (average runtime)"
    # Fewer successes, but cheap failures: 3 x 1000 + 7 x 2000 = 17000 over 3,
    # against 4 x 20000 + 6 x 10^6 = 6080000 over 4.
    cheap = report.group(records("spectral", 3, 1000, 2000) + records("xnes", 4, 20000, 10**6))
    assert dict(page.target_checks(cheap, timing_rows=[]))[goal] == "met"
    unsolved = report.group(records("spectral", 0, 0, 2000) + records("xnes", 4, 20000, 10**6))
    assert dict(page.target_checks(unsolved, timing_rows=[]))[goal] == "not met: schaffer n=10: - vs 1520000"
    table = page.runtime_table(cheap)
    assert "| schaffer | 10 | 5667 | 1520000 | 0.0037 |" in table


def test_merge_prefers_later_file(tmp_path):
    def save(name, evals, methods_run, timing):
        records = [
            dataclasses.replace(_RECORD, method=method, function="sphere", n=10, seed=seed, evals=evals)
            for method in methods_run
            for seed in (1, 2)
        ]
        rows = []
        if timing:
            rows = [compare.TimingRow(n=10, popsize=10, seconds={"pycma": 1e-3}, generations={"pycma": 5})]
        header = compare.describe_run(f"run {name}", 60.0)
        config = dataclasses.replace(compare.QUICK, timing_dims=(10,) if timing else ())
        compare.save_results(tmp_path / f"{name}.json", config, records, rows, header)
        return tmp_path / f"{name}.json"

    old = save("old", 100, ["spectral", "pycma"], timing=True)
    new = save("new", 50, ["spectral"], timing=False)
    _, records, timing_rows, header = compare.load_results([old, new])

    evals = {(r.method, r.evals) for r in records}
    assert evals == {("spectral", 50), ("pycma", 100)}
    assert len(records) == 4
    assert len(timing_rows) == 1
    used = {source["command"]: source["used"] for source in header["sources"]}
    assert used == {"run old": ["pycma (n = 10)", "time per generation"], "run new": ["spectral (n = 10)"]}
    assert header["seconds"] == 120.0


@pytest.mark.parametrize("generator", [None, np.random.default_rng(7)], ids=["bare", "generator"])
def test_restart_starts_begin_at_x0_then_draw(generator):
    # pycma's fmin2 calls x0 bare and spectral_es.minimize with a generator;
    # both must start at the problem's x0 and restart inside its start box.
    problem = make_problem("rastrigin", 5, seed=3)
    starts = methods.RestartStarts(problem)
    points = [starts() if generator is None else starts(generator) for _ in range(4)]

    np.testing.assert_array_equal(points[0], problem.x0)
    bound = 5.0  # multimodal problems draw x0 from U[-5, 5]^n
    for point in points[1:]:
        assert point.shape == (5,)
        assert np.all(np.abs(point) <= bound)
        assert not np.array_equal(point, problem.x0)
    assert len({tuple(point) for point in points}) == 4


def test_restart_starts_repeat_with_seed():
    problem = make_problem("griewank", 3, seed=4)
    first, again = methods.RestartStarts(problem), methods.RestartStarts(problem)

    for _ in range(3):
        np.testing.assert_array_equal(first(), again())


def test_page_leaves_out_unmeasured_sections():
    # A run of restarting methods on one multimodal function has no unimodal
    # cells, no options table, no reference medians and one target only.
    base = dataclasses.replace(_RECORD, function="griewank", n=40)
    records = [
        dataclasses.replace(base, method=method, seed=seed)
        for method in ("spectral-ipop", "pycma-ipop", "xnes")
        for seed in (1, 2)
    ]
    header = compare.describe_run("run", 60.0)
    text = page.render_page(compare.QUICK, report.group(records), [], header, methods.DESCRIPTIONS)

    assert text.startswith("# SpectralES against pycma's CMA-ES and xNES\n")
    assert "## Multimodal functions: evaluations to target" in text
    assert "## Targets" in text
    assert "not measured" not in text
    assert "## Unimodal functions" not in text
    assert "## Effect of the SpectralES options" not in text
    assert "## Check of the harness" not in text
    assert "## Beyond the targets" not in text  # no single spectral run
    # spectral-ipop and pycma-ipop are in the average runtime table.
    assert "## Multimodal functions: average runtime" in text

    bipop = [dataclasses.replace(record, method=record.method.replace("ipop", "bipop")) for record in records[:4]]
    text = page.render_page(compare.QUICK, report.group(bipop), [], header, methods.DESCRIPTIONS)
    # None of its methods is: the section is left out, not drawn without method columns.
    assert "## Multimodal functions: average runtime" not in text


def test_page_separates_single_run_checks():
    # The targets take the multimodal functions with restarts. Single runs against
    # xNES are a stricter check, so their misses stay out of the targets table.
    base = dataclasses.replace(_RECORD, function="griewank", n=10)
    records = [
        dataclasses.replace(base, method=method, seed=seed, success=method == "xnes")
        for method in ("spectral", "xnes", "spectral-ipop")
        for seed in (1, 2)
    ]
    header = compare.describe_run("run", 60.0)
    text = page.render_page(compare.QUICK, report.group(records), [], header, methods.DESCRIPTIONS)

    targets, beyond = text.split("## Targets", 1)[1].split("## Beyond the targets", 1)
    beyond = beyond.split("\n## ", 1)[0]
    assert "spectral-ipop never worse than xNES without restarts (successes, then median) | not met" in targets
    assert "multimodal functions (successes, then median) | not met: griewank n=10" in beyond
    assert "multimodal functions (average runtime) | not met: griewank n=10" in beyond
    assert "spectral never worse than xNES, multimodal" not in targets
    assert "at several times pycma's evaluations" in beyond  # no unimodal cells of both

    unimodal = [
        dataclasses.replace(_RECORD, method=method, function=function, n=10, evals=evals, seed=seed, success=True)
        for method, function, evals in [
            ("xnes", "sphere", 1500),
            ("pycma", "sphere", 1000),
            ("xnes", "ellipsoid", 9000),
        ]
        + [("pycma", "ellipsoid", 300)]
        for seed in (1, 2)
    ]
    text = page.render_page(compare.QUICK, report.group(records + unimodal), [], header, methods.DESCRIPTIONS)
    assert "at 1.5 to 30 times pycma's evaluations on the unimodal functions" in text


def test_eager_dimension_matches_strategy():
    # The page states that spectral-eager equals the defaults up to EAGER_DIM.
    from spectral_es import SpectralES

    assert SpectralES(np.zeros(page.EAGER_DIM), 1.0).rotation_interval == 1
    assert SpectralES(np.zeros(page.EAGER_DIM + 1), 1.0).rotation_interval > 1


def test_page_title_names_xnes_only_when_run():
    records = [dataclasses.replace(_RECORD, method="spectral-bipop", function="ackley", n=10)]
    header = compare.describe_run("run", 60.0)
    text = page.render_page(compare.QUICK, report.group(records), [], header, methods.DESCRIPTIONS)

    assert text.startswith("# SpectralES against pycma's CMA-ES\n")
