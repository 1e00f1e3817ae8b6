"""Checkpoints: complete state, bit-identical continuation, safe and atomic files."""

from __future__ import annotations

import csv
import os
import pickle
import re
import sys
from fractions import Fraction

import numpy as np
import pytest

from spectral_es import SpectralES, minimize
from spectral_es.es import EvaluationError, checkpoint, resume
from spectral_es.es.history import SCALAR_COLUMNS
from spectral_es.es.minimize import objective_name, read_plan
from spectral_es.functions import ellipsoid, rastrigin, rosenbrock, sphere

# Wall-clock entries differ between two runs of the same computation.
CLOCK_KEYS = {"elapsed", "previous_time", "time_offset"}
CLOCK_COLUMNS = [SCALAR_COLUMNS.index("time"), SCALAR_COLUMNS.index("iteration_time")]

VARIANTS = {
    "default": {},
    "lazy rotation": {"rotation_interval": 3},
    "diagonal": {"diagonal": True},
    "xnes": {"preset": "xnes"},
    "passive": {"active": False},
    "bounds and integers": {"bounds": (-2.0, [2.0] * 9 + [np.inf]), "integer_variables": [0, 4]},
    "noise handling": {"noise_handling": True},
    "stds": {"stds": np.geomspace(0.1, 10.0, 10)},
}


def assert_same_tree(first, second, path="state"):
    """Assert two state dictionaries are equal, bit for bit, apart from wall-clock times."""
    if isinstance(first, dict):
        assert set(first) == set(second), path
        for key in first:
            if key not in CLOCK_KEYS:
                assert_same_tree(first[key], second[key], f"{path}/{key}")
    elif isinstance(first, np.ndarray):
        if path.endswith("history/scalars"):
            first, second = np.delete(first, CLOCK_COLUMNS, axis=1), np.delete(second, CLOCK_COLUMNS, axis=1)
        assert np.array_equal(first, second, equal_nan=True), path
    else:
        assert first == second or (first != first and second != second), path


def iterate(es, count):
    """Run ``count`` iterations of ask/tell on the ellipsoid and return the asked populations."""
    populations = []
    for _ in range(count):
        X = es.ask()
        populations.append(X)
        es.tell(X, ellipsoid(X))
    return populations


def make(**options):
    return SpectralES(np.full(10, 1.0), 0.5, seed=11, **options)


def test_state_dict_covers_every_attribute():
    # A new attribute of SpectralES must be saved (or listed as covered).
    for options in VARIANTS.values():
        es = make(**options)
        iterate(es, 2)
        assert set(vars(es)) == checkpoint.COVERED_ATTRIBUTES


@pytest.mark.parametrize("variant", VARIANTS)
def test_resume_is_bit_identical(variant, tmp_path):
    original = make(**VARIANTS[variant])
    iterate(original, 13)  # not a multiple of 3: the lazy rotation has curvature pending
    original.save(tmp_path / "state.npz")
    restored = [
        SpectralES.load(tmp_path / "state.npz"),
        SpectralES.from_state_dict(original.state_dict()),
    ]
    loaded_into = make(**VARIANTS[variant])
    loaded_into.load_state_dict(original.state_dict())
    restored.append(loaded_into)

    expected = iterate(original, 25)
    for es in restored:
        assert all(np.array_equal(a, b) for a, b in zip(expected, iterate(es, 25), strict=True))
        assert_same_tree(original.state_dict(), es.state_dict())


def test_pending_population_survives_checkpoint(tmp_path):
    es = make()
    iterate(es, 3)
    X = es.ask()
    es.save(tmp_path / "pending.npz")
    restored = SpectralES.load(tmp_path / "pending.npz")
    assert np.array_equal(restored.pending, X)
    es.tell(X, ellipsoid(X))
    restored.tell(X, ellipsoid(X))
    assert_same_tree(es.state_dict(), restored.state_dict())


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    es = make()
    es.save(path)
    before = path.read_bytes()
    iterate(es, 2)

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        es.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]  # no temporary file left


def test_file_holding_pickled_object_is_rejected(tmp_path):
    path = tmp_path / "hostile.npz"
    np.savez(path, __json__=np.array("{}"), payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="hostile.npz is not a spectral_es checkpoint .*without pickle"):
        SpectralES.load(path)


def test_non_checkpoint_inputs_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a spectral_es checkpoint"):
        SpectralES.load(path)
    with pytest.raises(ValueError, match="not a SpectralES state dictionary"):
        make().load_state_dict({"mean": np.zeros(10)})
    state = make().state_dict()
    state["version"] = 99
    with pytest.raises(ValueError, match="version 99 is not supported"):
        SpectralES.from_state_dict(state)


def test_newer_version_file_named(tmp_path):
    # A checkpoint of a later state version must name the file and what to do,
    # because resume and the command line show only this message.
    path = tmp_path / "future.npz"
    make().save(path)
    tree = checkpoint.read(path)
    tree["version"] = 2
    checkpoint.write(path, tree)
    expected = re.escape(f"{path}: SpectralES state version 2 is not supported by spectral_es ")

    with pytest.raises(ValueError, match=expected + ".*upgrade spectral_es to load it"):
        SpectralES.load(path)
    with pytest.raises(ValueError, match=expected):
        checkpoint.read_extra(path)


@pytest.mark.parametrize("version", ["1", True, 1.0, 0])
def test_invalid_version_called_damaged(version):
    # spectral_es writes whole numbers from 1 on: a string, a bool or a float
    # equal to 1 is no version it wrote.
    state = make().state_dict()
    state["version"] = version

    with pytest.raises(ValueError, match=r"is not supported.*so the state is damaged"):
        SpectralES.from_state_dict(state)


def test_numpy_integer_version_read_as_version():
    original = make()
    state = original.state_dict()
    state["version"] = np.int64(2)
    with pytest.raises(ValueError, match="saved by a newer spectral_es, so upgrade"):
        SpectralES.from_state_dict(state)
    state["version"] = np.int64(1)
    assert SpectralES.from_state_dict(state).nfev == original.nfev


def test_load_into_different_strategy_rejected():
    state = make().state_dict()
    other = SpectralES(np.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"\(n, popsize, preset, diagonal\) = \(10, 10, 'cma', False\)"):
        other.load_state_dict(state)


def test_state_before_tol_up_sigma_loads():
    # States saved before tol_up_sigma existed have neither sigma0 nor the
    # option: the load takes pycma's default 1e20, measured from the saved sigma.
    es = make()
    iterate(es, 3)
    state = es.state_dict()
    del state["config"]["sigma0"]
    del state["config"]["options"]["tol_up_sigma"]

    loaded = SpectralES.from_state_dict(state)

    assert loaded.options["tol_up_sigma"] == 1e20
    assert loaded.sigma0 == es.sigma != 0.5
    X = loaded.ask()
    loaded.tell(X, ellipsoid(X))
    assert loaded.nit == es.nit + 1


def test_pickle_before_tol_up_sigma_continues():
    # A pickle stores the instance's __dict__, and one written before
    # tol_up_sigma existed has neither sigma0 nor the option. Unpickling gives
    # them the values that a checkpoint of that age gets, and the run goes on
    # bit for bit, because tol_up_sigma only adds a stop test.
    es = make()
    iterate(es, 3)
    old = object.__new__(SpectralES)  # no __setstate__, so the attributes stay as given
    old.__dict__.update({name: value for name, value in vars(es).items() if name != "sigma0"})
    old.options = {name: value for name, value in es.options.items() if name != "tol_up_sigma"}

    loaded = pickle.loads(pickle.dumps(old))

    assert loaded.options["tol_up_sigma"] == 1e20
    assert loaded.sigma0 == es.sigma != 0.5
    for X in iterate(es, 3):
        assert np.array_equal(loaded.ask(), X)
        loaded.tell(X, ellipsoid(X))
    assert np.array_equal(loaded.mean, es.mean)
    assert loaded.sigma == es.sigma


def crash_after(calls, function):
    """Return ``function`` that raises on its ``calls``-th call, like a run killed midway."""
    count = {"calls": 0}

    def objective(x):
        count["calls"] += 1
        if count["calls"] == calls:
            raise RuntimeError("worker lost")
        return function(x)

    return objective


def read_rows(path):
    """CSV rows without the wall-clock columns."""
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    clock = [rows[0].index("time"), rows[0].index("iteration_time")]
    return [[value for k, value in enumerate(row) if k not in clock] for row in rows]


def test_minimize_resume_matches_uninterrupted_run(tmp_path):
    settings = {"seed": 5, "restarts": 2, "tol_x": 1e-4, "max_evals": 4000}
    reference = minimize(rosenbrock, np.zeros(4), 0.5, log=tmp_path / "reference.csv", **settings)

    # Crash in the second run, between two checkpoints (every 3 iterations).
    with pytest.raises(EvaluationError, match="worker lost"):
        minimize(
            crash_after(1237, rosenbrock),
            np.zeros(4),
            0.5,
            log=tmp_path / "resumed.csv",
            checkpoint=tmp_path / "run.npz",
            checkpoint_every=3,
            **settings,
        )
    # The crashing wrapper has another name than rosenbrock, so the check is off.
    resumed = resume(rosenbrock, tmp_path / "run.npz", log=tmp_path / "resumed.csv", check_function=False)

    assert resumed.fbest == reference.fbest
    assert np.array_equal(resumed.xbest, reference.xbest)
    assert resumed.nfev == reference.nfev
    assert resumed.restarts == reference.restarts
    assert np.array_equal(resumed.history["f_best"], reference.history["f_best"])
    assert np.array_equal(resumed.history["eigenvalue"], reference.history["eigenvalue"])
    # The log lost the rows after the checkpoint and wrote them again.
    assert read_rows(tmp_path / "resumed.csv") == read_rows(tmp_path / "reference.csv")


def test_interrupt_saves_checkpoint(tmp_path):
    # Ctrl-C during an evaluation raises KeyboardInterrupt there. The
    # checkpoint then contains the population being evaluated, not only the
    # last periodic save, which checkpoint_every=1000 rules out here.
    settings = {"seed": 3, "max_evals": 600}
    reference = minimize(rosenbrock, np.zeros(4), 0.5, **settings)
    calls = {"count": 0}

    def interrupted(x):
        calls["count"] += 1
        if calls["count"] == 300:
            raise KeyboardInterrupt
        return rosenbrock(x)

    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt) as interrupt:
        minimize(interrupted, np.zeros(4), 0.5, checkpoint=path, checkpoint_every=1000, **settings)
    if sys.version_info >= (3, 11):  # exception notes are new in Python 3.11
        assert interrupt.value.__notes__ == [
            f"the run is saved in {path}; spectral_es.resume(fun, {str(path)!r}) continues it"
        ]
    saved = SpectralES.load(path)
    assert saved.pending is not None
    assert saved.nfev == 299 - 299 % saved.popsize  # the complete populations before the interrupted one

    resumed = resume(rosenbrock, path, check_function=False)
    assert resumed.fbest == reference.fbest
    assert resumed.nfev == reference.nfev


def test_resume_of_finished_run_returns_its_result(tmp_path):
    finished = minimize(rosenbrock, np.zeros(3), 0.5, seed=1, f_target=1e-8, checkpoint=tmp_path / "done.npz")
    again = resume(rosenbrock, tmp_path / "done.npz")
    assert again.fbest == finished.fbest
    assert again.nfev == finished.nfev
    assert again.stop == finished.stop


def test_restored_result_keeps_target(tmp_path):
    settings = {"seed": 0, "restarts": 2, "f_target": 1e-8, "checkpoint": tmp_path / "run.npz"}
    finished = minimize(rastrigin, [3.0] * 4, 2.0, **settings)
    again = resume(rastrigin, tmp_path / "run.npz")
    assert not finished.success
    assert again.f_target == 1e-8
    assert not again.success
    assert again.message == finished.message

    es = SpectralES(np.ones(3), 1.0, seed=0, f_target=-1.0).optimize(sphere)
    es.save(tmp_path / "es.npz")
    loaded = SpectralES.load(tmp_path / "es.npz").result
    assert loaded.f_target == -1.0
    assert not loaded.success


def test_resume_needs_minimize_checkpoint(tmp_path):
    make().save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="saved by SpectralES.save, not minimize"):
        resume(ellipsoid, tmp_path / "plain.npz")


def test_checkpoint_every_validated(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1, got 0"):
        minimize(ellipsoid, np.zeros(3), 1.0, checkpoint=tmp_path / "c.npz", checkpoint_every=0)


def counting(function):
    """Return ``function`` that counts its calls in ``.calls``."""

    def objective(x):
        objective.calls += 1
        return function(x)

    objective.calls = 0
    return objective


def test_non_checkpoint_files_named(tmp_path):
    log = tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_evals=60, log=log, checkpoint=tmp_path / "run.npz")
    whole = (tmp_path / "run.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole[: len(whole) // 2])
    for path in (log, truncated):
        message = re.escape(f"{path} is not a spectral_es checkpoint (not an .npz archive, or a truncated one)")
        with pytest.raises(ValueError, match=message):
            resume(ellipsoid, path)
        with pytest.raises(ValueError, match=message):
            SpectralES.load(path)
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.npz' not found"):
        resume(ellipsoid, tmp_path / "missing.npz")

    # A folder exists, so "not found" would mislead, and it is not truncated either.
    message = re.escape(f"{tmp_path} is not a spectral_es checkpoint (a folder, not a file)")
    with pytest.raises(ValueError, match=message):
        resume(ellipsoid, tmp_path)
    with pytest.raises(ValueError, match=message):
        SpectralES.load(tmp_path)


def test_resume_with_other_function_rejected(tmp_path):
    path = tmp_path / "run.npz"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_evals=60, checkpoint=path)
    before = path.read_bytes()
    other = counting(rosenbrock)
    with pytest.raises(
        ValueError,
        match=r"written for the objective spectral_es.functions:ellipsoid, not tests.es.test_checkpoint:.*objective",
    ):
        resume(other, path)
    assert other.calls == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize("option", ["log", "checkpoint"])
def test_unwritable_paths_rejected_before_first_evaluation(tmp_path, option):
    objective = counting(ellipsoid)
    missing = tmp_path / "no such dir" / "out.file"
    message = re.escape(f"{option} '{missing}': the directory '{missing.parent}' does not exist")
    with pytest.raises(ValueError, match=message):
        minimize(objective, np.ones(3), 1.0, max_evals=60, **{option: missing})
    with pytest.raises(ValueError, match=re.escape(f"{option} '{tmp_path}' is a directory")):
        minimize(objective, np.ones(3), 1.0, max_evals=60, **{option: tmp_path})
    assert objective.calls == 0

    saved = tmp_path / "saved.npz"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_evals=60, checkpoint=saved)
    with pytest.raises(ValueError, match="does not exist"):
        resume(objective, saved, **{option: missing}, check_function=False)
    assert objective.calls == 0


def test_save_to_missing_directory_named(tmp_path):
    target = tmp_path / "missing" / "es.npz"
    with pytest.raises(
        ValueError, match=re.escape(f"checkpoint '{target}': the directory '{target.parent}' does not exist")
    ):
        make().save(target)


def test_integer_variables_range_stored(tmp_path):
    # A range and an integer array mean the same indices as a list; the plan
    # stores them as a list of ints, which JSON can hold.
    path = tmp_path / "run.npz"
    for indices in (range(2), np.array([1, 0])):
        result = minimize(ellipsoid, [1.5, 2.5, 0.2], 1.0, seed=1, integer_variables=indices, checkpoint=path)
        assert read_plan(path)["options"]["integer_variables"] == [0, 1]
        assert resume(ellipsoid, path).fbest == result.fbest


def test_unstorable_option_rejected_before_run(tmp_path):
    objective = counting(ellipsoid)
    path = tmp_path / "run.npz"
    # SpectralES accepts a Fraction for f_target, but JSON cannot store it.
    with pytest.raises(ValueError, match=r"option f_target=Fraction\(1, 2\) cannot be stored in a checkpoint"):
        minimize(objective, np.ones(3), 1.0, f_target=Fraction(1, 2), checkpoint=path)
    assert objective.calls == 0
    assert not path.exists()


def test_invalid_option_leaves_existing_log_intact(tmp_path):
    log = tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(2), 0.5, seed=1, max_iter=5, log=log)
    before = log.read_bytes()
    with pytest.raises(ValueError, match="popsize must be an integer >= 2, got 1"):
        minimize(ellipsoid, np.ones(2), 0.5, seed=1, popsize=1, log=log)
    assert log.read_bytes() == before


def read_plan_progress(path):
    """Return the progress over restarts that a minimize checkpoint stores."""
    return checkpoint.read_extra(path)["minimize"]["progress"]


def test_resume_without_log_warns_of_saved_log(tmp_path, recwarn):
    # Without log the continued rows are never logged, and a later resume
    # into the saved log starts it afresh. The warning is the only sign of it.
    path, log = tmp_path / "run.npz", tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(2), 0.5, seed=1, max_evals=30, log=log, checkpoint=path)
    resume(ellipsoid, path, log=log, max_evals=60)
    assert not [warning for warning in recwarn if issubclass(warning.category, UserWarning)]
    message = f"the saved run logged to {re.escape(str(log))}, but this run was given no log"
    with pytest.warns(UserWarning, match=message):
        resume(ellipsoid, path, max_evals=90)


def test_resume_into_other_log_starts_afresh(tmp_path):
    settings = {"seed": 2, "max_iter": 40}
    reference = tmp_path / "reference.csv"
    minimize(ellipsoid, np.ones(3), 0.5, log=reference, **settings)
    with pytest.raises(EvaluationError, match="worker lost"):
        minimize(
            crash_after(200, ellipsoid),
            np.ones(3),
            0.5,
            log=tmp_path / "a.csv",
            checkpoint=tmp_path / "run.npz",
            checkpoint_every=7,
            **settings,
        )
    # b.csv, the short log of another run, ends before the offset saved for
    # a.csv: that offset means nothing there, so no cut and no padding.
    other = tmp_path / "b.csv"
    minimize(ellipsoid, np.ones(2), 0.5, seed=0, max_iter=2, log=other)
    assert other.stat().st_size < read_plan_progress(tmp_path / "run.npz")["log_offset"]

    resume(ellipsoid, tmp_path / "run.npz", log=other, check_function=False)
    assert b"\0" not in other.read_bytes()
    rows, expected = read_rows(other), read_rows(reference)
    assert rows[0] == expected[0]
    assert 1 < len(rows) < len(expected)
    assert rows[1:] == expected[len(expected) - len(rows) + 1 :]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_checkpoint_file_mode_follows_umask_and_target(tmp_path):
    es = SpectralES(np.ones(3), 1.0, seed=0)
    path = tmp_path / "state.npz"
    umask = os.umask(0o027)
    try:
        es.save(path)
    finally:
        os.umask(umask)
    # A new file gets 0666 less the umask, as open() would give it, not mkstemp's 0600.
    assert path.stat().st_mode & 0o777 == 0o640
    # An existing file keeps its permissions when it is replaced.
    path.chmod(0o604)
    es.save(path)
    assert path.stat().st_mode & 0o777 == 0o604


def test_write_read_round_trips_plain_values(tmp_path):
    # numpy scalars become JSON numbers and tuples lists, arrays inside a
    # tuple stay arrays, and a dictionary whose keys include "__array__"
    # next to others is data, not an array reference.
    path = tmp_path / "tree.npz"
    tree = {
        "count": np.int64(3),
        "flag": np.bool_(True),
        "pair": (np.arange(2.0), 1),
        "user": {"__array__": "x", "other": 1},
    }
    checkpoint.write(path, tree)
    restored = checkpoint.read(path)
    assert restored["count"] == 3
    assert restored["flag"] is True
    np.testing.assert_array_equal(restored["pair"][0], np.arange(2.0))
    assert restored["pair"][1] == 1
    assert restored["user"] == {"__array__": "x", "other": 1}


def test_resume_stores_new_function_and_vectorized(tmp_path):
    # The continued run's checkpoints name the objective it now uses and
    # whether it is vectorised, so that a later resume takes those by default.
    def renamed_sphere(X):
        return sphere(X)

    path = tmp_path / "run.npz"
    minimize(rosenbrock, np.zeros(3), 0.5, seed=1, max_evals=100, checkpoint=path)
    assert read_plan(path)["vectorized"] is False

    resume(renamed_sphere, path, check_function=False, vectorized=True, max_evals=200)
    plan = read_plan(path)
    assert plan["function"] == objective_name(renamed_sphere)
    assert plan["vectorized"] is True
