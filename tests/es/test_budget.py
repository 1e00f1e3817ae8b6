"""A larger budget for a run that spent its own: SpectralES.set_budget and resume(max_evals=...)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spectral_es import SpectralES, minimize
from spectral_es.cli import main
from spectral_es.es import resume
from spectral_es.es.history import History
from spectral_es.functions import rastrigin, rosenbrock, sphere


def run_to_stop(es):
    while not es.stop():
        X = es.ask()
        es.tell(X, rosenbrock(X))
    return es


def test_set_budget_matches_longer_run():
    reference = run_to_stop(SpectralES(np.zeros(5), 0.5, seed=4, max_evals=3000, f_target=1e-10))
    es = run_to_stop(SpectralES(np.zeros(5), 0.5, seed=4, max_evals=600, f_target=1e-10))
    assert es.stop() == {"max_evals": 600}
    es.set_budget(max_evals=3000)
    assert es.stop() == {}
    run_to_stop(es)
    assert es.stop() == reference.stop()
    assert es.nfev == reference.nfev
    assert np.array_equal(es.xbest, reference.xbest)


def test_set_budget_keeps_other_stop_reasons():
    es = run_to_stop(SpectralES(np.zeros(3), 0.5, seed=1, max_iter=5))
    es.request_stop("callback")
    es.set_budget(max_iter=50)
    assert es.stop() == {"callback": True}


@pytest.mark.parametrize(
    ("name", "limit", "message"),
    [
        ("max_evals", "used", r"max_evals=(\d+) is not above the \1 the run has used"),
        ("max_iter", 3, r"max_iter=3 is not above the 5 the run has used"),
        ("max_evals", -1, r"max_evals must be"),
        ("max_iter", "9", r"max_iter must be a number"),
    ],
)
def test_set_budget_rejects_limits_already_reached(name, limit, message):
    es = run_to_stop(SpectralES(np.zeros(3), 0.5, seed=1, max_iter=5))
    with pytest.raises(ValueError, match=message):
        es.set_budget(**{name: es.nfev if limit == "used" else limit})
    assert es.stop() == {"max_iter": 5}


@pytest.mark.parametrize("function", ["rosenbrock", "rastrigin"])
def test_resume_with_larger_budget_matches_one_long_run(tmp_path, function):
    # Rosenbrock reaches the target in its first run. On Rastrigin the old
    # budget ends in the second run, so the restarts after it need the new one.
    objective = {"rosenbrock": rosenbrock, "rastrigin": rastrigin}[function]
    settings = {"seed": 3, "restarts": 3, "f_target": 1e-10, "tol_x": 1e-4}
    reference = minimize(objective, np.full(6, 2.0), 0.5, max_evals=20_000, **settings)
    assert len(reference.restarts) > 2 or function == "rosenbrock"
    path, log = tmp_path / "run.npz", tmp_path / "run.csv"
    old_budget = reference.restarts[0]["nfev"] + 50 if function == "rastrigin" else 700
    short = minimize(objective, np.full(6, 2.0), 0.5, max_evals=old_budget, checkpoint=path, log=log, **settings)
    assert "max_evals" in short.stop

    longer = resume(objective, path, max_evals=20_000, log=log)
    assert longer.stop == reference.stop
    assert longer.nfev == reference.nfev
    assert longer.fbest == reference.fbest
    assert longer.restarts == reference.restarts
    # The log has every row once, and each run's stop reason is its final one.
    logged = History.from_csv(log)
    assert np.array_equal(logged["f_best"], reference.history["f_best"])
    assert logged.stops == reference.history.stops


def test_resume_rejects_budget_already_spent(tmp_path):
    path = tmp_path / "run.npz"
    minimize(rosenbrock, np.zeros(4), 0.5, seed=1, max_evals=300, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"max_evals=200 is not above the 30\d evaluations already done"):
        resume(rosenbrock, path, max_evals=200)
    assert path.read_bytes() == before


def test_resume_rejects_budget_equal_to_spent(tmp_path):
    path = tmp_path / "run.npz"
    spent = minimize(rosenbrock, np.zeros(4), 0.5, seed=1, max_evals=300, checkpoint=path).nfev
    with pytest.raises(ValueError, match=rf"max_evals={spent} is not above the {spent} evaluations already done"):
        resume(rosenbrock, path, max_evals=spent)


def test_resume_budget_counts_earlier_runs(tmp_path):
    # The old budget ends the second run, 50 evaluations after the first
    # ended. The new budget covers all runs, so the second run may spend only
    # what the first left of it, as in one run with the new budget from the start.
    settings = {"seed": 2, "restarts": 2, "tol_x": 1e-8}
    first = minimize(sphere, np.ones(4), 1.0, **settings).restarts[0]["nfev"]
    path = tmp_path / "run.npz"
    short = minimize(sphere, np.ones(4), 1.0, max_evals=first + 50, checkpoint=path, **settings)
    assert short.stop == {"max_evals": first + 50}
    assert len(short.restarts) == 2

    budget = first + 150
    reference = minimize(sphere, np.ones(4), 1.0, max_evals=budget, **settings)
    longer = resume(sphere, path, max_evals=budget)
    assert longer.stop == {"max_evals": budget}
    assert longer.nfev == reference.nfev
    assert longer.restarts == reference.restarts


def test_command_line_resume_takes_new_budget(tmp_path, capsys):
    path = str(tmp_path / "run.npz")
    assert (
        main(
            [
                "minimize",
                "rosenbrock",
                "--dim",
                "4",
                "--seed",
                "1",
                "--quiet",
                "--max-evals",
                "300",
                "--checkpoint",
                path,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["minimize", "--resume", path, "--quiet", "--max-evals", "20000"]) == 0
    output = capsys.readouterr().out
    # The run went on past its first budget and stopped for another reason.
    assert int(re.search(r"^evaluations (\d+)$", output, re.M).group(1)) > 300
    assert "stopped by  max_evals" not in output
    with pytest.raises(SystemExit):
        main(["minimize", "--resume", path, "--max-evals", "10"])
    assert "--max-evals 10 is not above the" in capsys.readouterr().err
