"""IPOP and BIPOP restart schedules: the rules of each run and their use by ``minimize``."""

import math
import re
import warnings

import numpy as np
import pytest

from spectral_es import NonFiniteObjectiveWarning, minimize
from spectral_es.es import EvaluationError, resume
from spectral_es.es import checkpoint as checkpoints
from spectral_es.es.restarts import is_last_run, next_run
from spectral_es.es.strategy import SpectralES
from spectral_es.functions import rastrigin, sphere
from tests.es.test_checkpoint import crash_after


def make_plan(bipop=True, restarts=5, sigma0=2.0, seed=7, options=None):
    return {"sigma0": sigma0, "seed": seed, "options": options or {}, "bipop": bipop, "restarts": restarts}


def summary(run, regime, popsize, nfev):
    return {"run": run, "regime": regime, "popsize": popsize, "nfev": nfev}


def test_first_run_takes_the_given_settings():
    settings = next_run(make_plan(options={"max_iter": 50}), {"run": 0, "popsize": None, "summaries": []})
    assert (settings.regime, settings.popsize, settings.sigma0, settings.max_iter) == ("default", None, 2.0, 50)


@pytest.mark.parametrize("bipop", [False, True])
def test_second_run_is_large(bipop):
    # The first run counts as small, and no large run has spent anything yet.
    progress = {"run": 1, "popsize": 20, "summaries": [summary(0, "default", 10, 500)]}
    settings = next_run(make_plan(bipop=bipop), progress)
    assert (settings.regime, settings.popsize, settings.sigma0, settings.max_iter) == ("large", 20, 2.0, None)


def test_small_run_draws_within_its_ranges():
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000), summary(2, "large", 40, 9000)]
    draws = []
    for run in range(3, 203):
        settings = next_run(make_plan(), {"run": run, "popsize": 80, "summaries": summaries})
        assert settings.regime == "small"
        # popsize = floor(10 * 4^(U2^2)) lies in [10, 40]: from the first
        # run's size to the latest large run's.
        assert 10 <= settings.popsize <= 40
        # sigma0 = 2 * 10^(-2 U1) lies in [0.02, 2].
        assert 0.02 <= settings.sigma0 <= 2.0
        # Half the large runs' 12000 evaluations, in iterations of this size.
        assert settings.max_iter == math.floor(12000 / (2 * settings.popsize))
        draws.append((settings.popsize, settings.sigma0))
    # The draws differ from run to run and spread over their ranges: with
    # 200 draws, U1 outside [0.05, 0.95] at both ends has chance about 2^-190.
    sigmas = np.array([sigma for _, sigma in draws])
    assert sigmas.min() < 2.0 * 10**-1.8
    assert sigmas.max() > 2.0 * 10**-0.2
    assert len({popsize for popsize, _ in draws}) > 10


def test_small_run_draws_repeat():
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000)]
    progress = {"run": 2, "popsize": 40, "summaries": summaries}
    assert next_run(make_plan(), progress) == next_run(make_plan(), dict(progress))
    assert next_run(make_plan(), progress) != next_run(make_plan(seed=8), progress)


def test_small_runs_respect_the_user_iteration_limit():
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000)]
    settings = next_run(make_plan(options={"max_iter": 3}), {"run": 2, "popsize": 40, "summaries": summaries})
    assert settings.regime == "small"
    assert settings.max_iter == 3


def test_regimes_alternate_by_spent_evaluations():
    # Small runs (with the first) spent 500 + 2000 = 2500 < 3000 of the
    # large run: small again; one more small run of 600 makes it 3100.
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000), summary(2, "small", 12, 2000)]
    assert next_run(make_plan(), {"run": 3, "popsize": 40, "summaries": summaries}).regime == "small"
    summaries.append(summary(3, "small", 11, 600))
    assert next_run(make_plan(), {"run": 4, "popsize": 40, "summaries": summaries}).regime == "large"


def test_regimes_tie_goes_to_large():
    # The next run is small only while the small runs have spent fewer
    # evaluations than the large ones: 500 + 2500 = 3000 of each is a tie.
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000), summary(2, "small", 12, 2500)]
    assert next_run(make_plan(), {"run": 3, "popsize": 40, "summaries": summaries}).regime == "large"


def test_small_run_popsize_exponent_is_squared():
    # popsize = floor(10 * 4^(U2^2)) is at most 14 when 4^(U2^2) < 1.5, that
    # is U2 < sqrt(log(1.5) / log(4)) = 0.541. With U2 in place of U2^2 the
    # chance would be log(1.5) / log(4) = 0.292. Over 400 draws the standard
    # deviation of the fraction is at most 0.025, so [0.45, 0.63] lies more
    # than 3.5 deviations from 0.541 and 6 from 0.292.
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000), summary(2, "large", 40, 9000)]
    sizes = [
        next_run(make_plan(), {"run": run, "popsize": 80, "summaries": summaries}).popsize for run in range(3, 403)
    ]
    fraction = np.mean(np.array(sizes) <= 14)
    assert 0.45 < fraction < 0.63


def test_only_large_runs_count_as_restarts_with_bipop():
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000), summary(2, "small", 12, 900)]
    assert not is_last_run(make_plan(restarts=2), summaries)
    assert is_last_run(make_plan(restarts=2, bipop=False), summaries)
    assert is_last_run(make_plan(restarts=1), summaries)


def test_summaries_without_regime_are_ipop_runs():
    # Summaries written before BIPOP existed have no regime: run 0 is the
    # default run, the others large.
    old = [{"run": 0, "popsize": 10, "nfev": 500}, {"run": 1, "popsize": 20, "nfev": 3000}]
    assert next_run(make_plan(), {"run": 2, "popsize": 40, "summaries": old}).regime == "small"
    assert is_last_run(make_plan(restarts=1), old)


def bipop_run(fun=rastrigin, **extra):
    settings = {"seed": 3, "restarts": 3, "bipop": True, "tol_x": 1e-4, "max_evals": 60_000}
    return minimize(fun, np.full(5, 3.0), 2.0, **{**settings, **extra})


def test_minimize_follows_the_bipop_schedule():
    result = bipop_run()
    runs = result.restarts
    regimes = [run["regime"] for run in runs]
    assert regimes[0] == "default"
    assert "small" in regimes
    assert regimes.count("large") == 3
    assert regimes[-1] == "large"
    for k in range(1, len(runs)):
        small = sum(run["nfev"] for run in runs[:k] if run["regime"] != "large")
        large = sum(run["nfev"] for run in runs[:k] if run["regime"] == "large")
        assert runs[k]["regime"] == ("small" if small < max(1, large) else "large")
    # The default popsize in 5-D is 4 + floor(3 ln 5) = 8, doubled per large run.
    large_sizes = [run["popsize"] for run in runs if run["regime"] != "small"]
    assert large_sizes == [8 * 2**k for k in range(4)]
    for k, run in enumerate(runs):
        if run["regime"] == "small":
            latest_large = [r["popsize"] for r in runs[:k] if r["regime"] != "small"][-1]
            assert 8 <= run["popsize"] <= latest_large
            assert 0.02 <= run["sigma0"] <= 2.0
            large = sum(r["nfev"] for r in runs[:k] if r["regime"] == "large")
            assert run["nit"] <= large // (2 * run["popsize"])
        else:
            assert run["sigma0"] == 2.0
    assert result.nfev == sum(run["nfev"] for run in runs)


def test_minimize_rejects_bipop_without_restarts():
    with pytest.raises(ValueError, match="bipop=True interleaves small runs with restarts, but restarts=0"):
        minimize(sphere, np.zeros(3), 1.0, bipop=True)
    with pytest.raises(ValueError, match="bipop must be True or False, got 'yes'"):
        minimize(sphere, np.zeros(3), 1.0, restarts=2, bipop="yes")


def test_bipop_resume_matches_uninterrupted_run(tmp_path, capsys):
    reference = bipop_run()
    # Fail in the first small run, between two checkpoints, and continue from the file.
    first_small = next(run["run"] for run in reference.restarts if run["regime"] == "small")
    calls = sum(run["nfev"] for run in reference.restarts[:first_small]) + 37
    with pytest.raises(EvaluationError, match="worker lost"):
        bipop_run(fun=crash_after(calls, rastrigin), checkpoint=tmp_path / "run.npz", checkpoint_every=3)
    resumed = resume(rastrigin, tmp_path / "run.npz", check_function=False, disp=1)
    assert resumed.restarts == reference.restarts
    # The continued run's table starts with its own line, as a new run's does.
    first_line = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(
        rf"run {first_small} \(small\), popsize \d+, sigma0 \S+, resumed after \d+ evaluations", first_line
    )
    assert resumed.fbest == reference.fbest
    assert resumed.nfev == reference.nfev


def older_checkpoint(path, edit):
    """Return an IPOP run on the sphere, and its checkpoint in its second run edited as an older version wrote it.

    ``edit(extra)`` removes from the checkpoint's ``extra`` what that version lacked.
    """
    settings = {"seed": 4, "restarts": 2, "tol_x": 1e-3}
    reference = minimize(sphere, np.ones(4), 1.0, **settings)
    calls = reference.restarts[0]["nfev"] + 45
    with pytest.raises(EvaluationError, match="worker lost"):
        minimize(crash_after(calls, sphere), np.ones(4), 1.0, checkpoint=path, **settings)
    es, extra = checkpoints.load(SpectralES, path)
    edit(extra)
    checkpoints.save(es, path, extra=extra)
    return reference


def test_resume_of_a_checkpoint_written_before_bipop(tmp_path):
    # Such a checkpoint lacks the plan's "bipop", the progress's "current"
    # run and the summaries' regime and sigma0. Its IPOP run must go on unchanged.
    def edit(extra):
        del extra["minimize"]["plan"]["bipop"], extra["minimize"]["progress"]["current"]
        for run in extra["minimize"]["progress"]["summaries"]:
            del run["regime"], run["sigma0"]

    reference = older_checkpoint(tmp_path / "a.npz", edit)
    resumed = resume(sphere, tmp_path / "a.npz", check_function=False)
    assert resumed.nfev == reference.nfev
    assert resumed.fbest == reference.fbest
    assert [run["popsize"] for run in resumed.restarts] == [run["popsize"] for run in reference.restarts]
    # Every summary, also those of runs before the checkpoint, has the new entries.
    assert resumed.restarts == reference.restarts


def test_small_run_sigma0_is_a_float():
    summaries = [summary(0, "default", 10, 500), summary(1, "large", 20, 3000)]
    settings = next_run(make_plan(), {"run": 2, "popsize": 40, "summaries": summaries})
    assert type(settings.sigma0) is float


class RecordingStart:
    """A start function that draws uniformly in [-4, 4]^5 and records its draws."""

    def __init__(self):
        self.starts = []

    def __call__(self, rng):
        self.starts.append(rng.uniform(-4, 4, 5))
        return self.starts[-1]


def random_start_run(x0, **extra):
    settings = {"seed": 2, "restarts": 3, "bipop": True, "tol_x": 1e-4, "max_evals": 40_000}
    return minimize(rastrigin, x0, 2.0, **{**settings, **extra})


def test_function_x0_draws_every_run_reproducibly():
    first, second = RecordingStart(), RecordingStart()
    result = random_start_run(first)
    again = random_start_run(second)
    # One draw per run, each its own point, the same for the same seed.
    assert len(first.starts) == len(result.restarts) > 2
    assert len({tuple(start) for start in first.starts}) == len(first.starts)
    assert all(np.array_equal(a, b) for a, b in zip(first.starts, second.starts, strict=True))
    assert again.restarts == result.restarts


def test_function_x0_without_arguments_is_called_bare():
    calls = []

    def pycma_style():
        calls.append(1)
        return np.full(5, 3.0)

    result = random_start_run(pycma_style, bipop=False)
    assert len(calls) == len(result.restarts)


def test_resume_draws_starts_with_the_given_function(tmp_path):
    reference = random_start_run(RecordingStart())
    calls = reference.restarts[0]["nfev"] + 37
    with pytest.raises(EvaluationError, match="worker lost"):
        minimize(
            crash_after(calls, rastrigin),
            RecordingStart(),
            2.0,
            seed=2,
            restarts=3,
            bipop=True,
            tol_x=1e-4,
            max_evals=40_000,
            checkpoint=tmp_path / "run.npz",
            checkpoint_every=3,
        )
    with pytest.raises(ValueError, match="draws each run's start with .*RecordingStart; pass that function as x0"):
        resume(rastrigin, tmp_path / "run.npz", check_function=False)
    resumed = resume(rastrigin, tmp_path / "run.npz", check_function=False, x0=RecordingStart())
    assert resumed.restarts == reference.restarts


def test_resume_rejects_other_x0_function(tmp_path):
    def other_start(rng):
        return rng.uniform(-1, 1, 5)

    minimize(rastrigin, RecordingStart(), 2.0, seed=0, restarts=2, max_iter=5, checkpoint=tmp_path / "run.npz")

    with pytest.raises(ValueError, match="draws each run's start with .*RecordingStart, not .*other_start"):
        resume(rastrigin, tmp_path / "run.npz", x0=other_start)
    resume(rastrigin, tmp_path / "run.npz", x0=other_start, check_function=False)  # an explicit opt-out
    resume(rastrigin, tmp_path / "run.npz", x0=RecordingStart())


def test_resume_rejects_x0_for_fixed_starts(tmp_path):
    minimize(sphere, np.ones(3), 1.0, seed=0, max_iter=5, checkpoint=tmp_path / "run.npz")
    with pytest.raises(ValueError, match="starts every run at its stored x0; drop the x0 argument"):
        resume(sphere, tmp_path / "run.npz", x0=RecordingStart())


@pytest.mark.parametrize(
    ("draws", "message"),
    [
        ([np.zeros(5), np.zeros(4)], r"x0 drew a start of length 4 for run 1, but the first run's has 5"),
        ([["a"] * 5], r"the start that x0 drew for run 0 is invalid: x0 must be a 1-D array of numbers"),
    ],
)
def test_invalid_drawn_start_named(draws, message):
    queue = list(draws)
    with pytest.raises(ValueError, match=message):
        random_start_run(lambda rng: queue.pop(0), bipop=False, tol_x=1e-1)


def test_summary_keeps_run_final_mean():
    # Each IPOP run ends converged in a local minimum of rastrigin, so the value at
    # its final mean equals its best value within 1e-6, far above tol_f = tol_x = 1e-11.
    result = minimize(rastrigin, np.full(4, 3.0), 2.0, restarts=2, seed=2, max_evals=20_000)
    assert len(result.restarts) == 3
    assert len({round(run["fbest"], 6) for run in result.restarts}) > 1
    for run in result.restarts:
        assert abs(rastrigin(np.array(run["mean"])) - run["fbest"]) < 1e-6
    assert result.restarts[-1]["mean"] == result.mean.tolist()


def test_resume_of_summaries_without_mean(tmp_path):
    # A checkpoint written before the summaries kept each run's final mean:
    # its finished runs get None, and the runs after the resume their means.
    def edit(extra):
        for run in extra["minimize"]["progress"]["summaries"]:
            del run["mean"]

    reference = older_checkpoint(tmp_path / "a.npz", edit)
    resumed = resume(sphere, tmp_path / "a.npz", check_function=False)
    assert resumed.restarts[0]["mean"] is None
    assert [run["mean"] for run in resumed.restarts[1:]] == [run["mean"] for run in reference.restarts[1:]]


def test_nonfinite_count_spans_restarts():
    # result.n_nonfinite counts the non-finite values of all runs. The
    # objective is inf for x[0] > 0.5, so samples from x0 = 0 with
    # sigma0 = 1 often return inf, in the later runs too (checked below).
    values = []

    def sphere_with_wall(x):
        value = np.inf if x[0] > 0.5 else float(np.sum(x**2))
        values.append(value)
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteObjectiveWarning)
        result = minimize(sphere_with_wall, np.zeros(2), 1.0, seed=0, restarts=2, tol_x=1e-3)
    assert len(result.restarts) == 3
    assert result.n_nonfinite == int(np.sum(np.isinf(values)))
    first_run = result.restarts[0]["nfev"]
    assert np.any(np.isinf(values[first_run:]))  # later runs add to the count
