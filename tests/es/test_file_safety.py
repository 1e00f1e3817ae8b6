"""Files given to minimize and resume: what a run may replace, shared paths, damaged checkpoints."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from spectral_es import SpectralES, minimize, optimize
from spectral_es.es import EvaluationError, checkpoint, resume
from spectral_es.es.history import check_new_log
from spectral_es.es.minimize import check_new_checkpoint, read_plan
from spectral_es.functions import ellipsoid, sphere
from tests.es.test_checkpoint import crash_after, read_plan_progress, read_rows


def counting(function):
    """Return ``function`` that counts its calls in ``.calls``."""

    def objective(x, *args):
        objective.calls += 1
        return function(x, *args)

    objective.calls = 0
    return objective


def rows(X):
    """Sphere of each row of ``X``, shape (popsize, n) -> (popsize,); rejects a single point."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise TypeError(f"rows() takes the population, got shape {X.shape}")
    return np.sum(X**2, axis=1)


def scaled_sphere(x, scale):
    return scale * sphere(x)


def unfinished_checkpoint(path, **options):
    """Write the checkpoint of a run that failed at its 30th evaluation to ``path``; return the evaluations done."""
    with pytest.raises(EvaluationError, match="worker lost"):
        minimize(crash_after(30, ellipsoid), np.ones(3), 1.0, seed=0, checkpoint=path, checkpoint_every=2, **options)
    return 29 // 7 * 7  # popsize 7 for n = 3; the failing population is not counted


# --------------------------------------------------------------------------- checkpoints a new run may replace


def test_new_run_keeps_unfinished_checkpoint(tmp_path):
    path = tmp_path / "run.npz"
    done = unfinished_checkpoint(path)
    before = path.read_bytes()
    objective = counting(ellipsoid)
    message = (
        f"checkpoint '{path}' is the checkpoint of an unfinished run of tests.es.test_checkpoint:crash_after.<locals>."
        f"objective after {done} evaluations, which a new run would overwrite; continue it with "
        f"resume(fun, '{path}'), pass another path, or delete the file"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        minimize(objective, np.ones(3), 1.0, seed=0, checkpoint=path)
    assert objective.calls == 0
    assert path.read_bytes() == before

    # The run it kept continues.
    result = resume(ellipsoid, path, check_function=False)
    assert result.nfev > done


def test_new_run_replaces_finished_checkpoint(tmp_path):
    # Rerunning a script that wrote a checkpoint starts afresh and repeats the result.
    path = tmp_path / "run.npz"
    settings = {"seed": 3, "max_evals": 200, "restarts": 1, "checkpoint": path}
    first = minimize(ellipsoid, np.ones(3), 1.0, **settings)
    again = minimize(ellipsoid, np.ones(3), 1.0, **settings)
    assert first.stop == again.stop == {"max_evals": 200}
    assert again.fbest == first.fbest
    check_new_checkpoint(path)  # the new run's checkpoint is finished too


def test_new_run_keeps_newer_version_checkpoint(tmp_path):
    # A finished run's checkpoint of a later state version may contain data that
    # this version cannot read, so a new run must not replace it.
    path = tmp_path / "run.npz"
    minimize(ellipsoid, np.ones(3), 1.0, seed=3, max_evals=200, checkpoint=path)
    tree = checkpoint.read(path)
    tree["version"] = 2
    checkpoint.write(path, tree)
    before = path.read_bytes()
    objective = counting(ellipsoid)

    with pytest.raises(ValueError, match="is an existing file that is not a readable spectral_es checkpoint"):
        minimize(objective, np.ones(3), 1.0, seed=3, max_evals=200, checkpoint=path)
    assert objective.calls == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize(("restarts", "finished"), [(0, True), (1, False)])
def test_checkpoint_between_runs(tmp_path, restarts, finished):
    # A copy of the checkpoint taken between two runs, as a process killed
    # there leaves it: run 0 has stopped (tol_x), and whether the
    # minimisation has ended depends on the restarts left.
    path, between = tmp_path / "run.npz", tmp_path / "between.npz"
    first_run = minimize(sphere, np.ones(3), 1.0, seed=0, tol_x=1e-2).nfev

    def objective(x):
        objective.calls += 1
        if objective.calls == first_run + 1:
            shutil.copy(path, between)
        return sphere(x)

    objective.calls = 0
    minimize(objective, np.ones(3), 1.0, seed=0, tol_x=1e-2, restarts=restarts, checkpoint=path)
    if restarts == 0:
        shutil.copy(path, between)  # no second run: the final checkpoint
    assert checkpoint.read_state(between)["state"]["stop"].keys() == {"tol_x"}
    if finished:
        check_new_checkpoint(between)
    else:
        with pytest.raises(ValueError, match=f"unfinished run of .* after {first_run} evaluations"):
            check_new_checkpoint(between)


@pytest.mark.parametrize("content", ["other file", "strategy", "empty"])
def test_new_run_and_other_checkpoint_files(tmp_path, content):
    path = tmp_path / "state.npz"
    if content == "other file":
        path.write_text("results of last week\n")
    elif content == "strategy":
        SpectralES(np.ones(3), 1.0).save(path)
    else:
        path.touch()
    objective = counting(ellipsoid)
    if content == "empty":
        # Nothing to lose, and tempfile.NamedTemporaryFile gives such paths.
        minimize(objective, np.ones(3), 1.0, seed=0, max_evals=50, checkpoint=path)
        assert read_plan(path)["function"].endswith("counting.<locals>.objective")
        return
    before = path.read_bytes()
    kinds = {"other file": "an existing file that is not a readable spectral_es", "strategy": "a strategy saved by"}
    message = f"checkpoint '{re.escape(str(path))}' is .*{kinds[content]}.*delete the file"
    with pytest.raises(ValueError, match=message):
        minimize(objective, np.ones(3), 1.0, seed=0, checkpoint=path)
    assert objective.calls == 0
    assert path.read_bytes() == before


def test_resume_into_other_unfinished_checkpoint_rejected(tmp_path):
    source, other = tmp_path / "source.npz", tmp_path / "other.npz"
    unfinished_checkpoint(source)
    unfinished_checkpoint(other, max_iter=50)
    before = other.read_bytes()
    with pytest.raises(ValueError, match=re.escape(f"checkpoint '{other}' is the checkpoint of an unfinished run")):
        resume(ellipsoid, source, checkpoint=other, check_function=False)
    assert other.read_bytes() == before
    # Its own checkpoint, given or by default, is written as before.
    result = resume(ellipsoid, source, checkpoint=source, check_function=False)
    check_new_checkpoint(source)  # now finished
    assert result.stop


# --------------------------------------------------------------------------- logs


def test_new_run_keeps_file_that_is_no_log(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("run,iteration\n0,1\n")  # a CSV file, but not a spectral_es log
    objective = counting(ellipsoid)
    message = f"log '{notes}' exists and is not a spectral_es CSV log"
    with pytest.raises(ValueError, match=re.escape(message) + ".*pass another path, or delete the file"):
        minimize(objective, np.ones(3), 1.0, seed=0, log=notes)
    assert objective.calls == 0
    assert notes.read_text() == "run,iteration\n0,1\n"


def test_new_run_replaces_log(tmp_path):
    # A spectral_es log of any dimension, and an empty file, may be replaced.
    log = tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(5), 1.0, seed=0, max_iter=3, log=log)
    minimize(ellipsoid, np.ones(2), 1.0, seed=0, max_iter=4, log=log)
    lines = log.read_text().splitlines()
    assert lines[0].endswith(",std_0,std_1")
    assert len(lines) == 1 + 4
    log.write_text("")
    check_new_log(log)


def test_log_header_check_reads_binary_files(tmp_path):
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ValueError, match="not a spectral_es CSV log"):
        check_new_log(path)


def test_resume_into_file_that_is_no_log(tmp_path):
    path = tmp_path / "run.npz"
    unfinished_checkpoint(path, max_iter=30)
    notes = tmp_path / "notes.txt"
    notes.write_text("notes that are no log\n")
    objective = counting(ellipsoid)
    with pytest.raises(ValueError, match="not a spectral_es CSV log"):
        resume(objective, path, log=notes, check_function=False)
    assert objective.calls == 0
    assert notes.read_text() == "notes that are no log\n"


@pytest.mark.parametrize(
    ("dim", "max_iter", "message"),
    [
        # A shorter run of another (or the same) dimension: cutting the log
        # back would pad it with zero bytes.
        (5, 1, "changed since the checkpoint was written"),
        (3, 1, "changed since the checkpoint was written"),
        # A longer run of the same dimension, so the size and the header fit:
        # cutting it back would splice that run's rows with this one's, most
        # likely in the middle of a row. The digest of the last rows differs.
        (3, 20, "another run has replaced it, or it was edited, since the checkpoint was written"),
    ],
)
def test_resume_into_replaced_log_rejected(tmp_path, dim, max_iter, message):
    path, log = tmp_path / "run.npz", tmp_path / "run.csv"
    unfinished_checkpoint(path, max_iter=30, log=log)
    offset = read_plan_progress(path)["log_offset"]
    minimize(ellipsoid, np.ones(dim), 1.0, seed=1, max_iter=max_iter, log=log)
    replaced = log.read_bytes()
    assert (len(replaced) > offset) == (max_iter > 1)
    objective = counting(ellipsoid)
    with pytest.raises(ValueError, match=message):
        resume(objective, path, log=log, check_function=False)
    assert objective.calls == 0
    assert log.read_bytes() == replaced


def test_resume_of_resumed_run_continues_log(tmp_path):
    # The checkpoints of a resumed run describe the log as the resumed run
    # left it, so a second resume cuts back and continues the same file.
    reference, path, log = tmp_path / "reference.csv", tmp_path / "run.npz", tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_iter=30, log=reference)
    unfinished_checkpoint(path, max_iter=30, log=log)
    with pytest.raises(EvaluationError, match="worker lost"):
        resume(crash_after(60, ellipsoid), path, log=log, check_function=False, checkpoint_every=3)
    resume(ellipsoid, path, log=log, check_function=False)
    assert read_rows(log) == read_rows(reference)


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_resume_continues_moved_log(tmp_path, how):
    # The checkpoint's digest of the log's last rows finds the saved run's
    # log at a new path, so it is cut back and continued, not overwritten.
    reference, path, log = tmp_path / "reference.csv", tmp_path / "run.npz", tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_iter=30, log=reference)
    unfinished_checkpoint(path, max_iter=30, log=log)
    elsewhere = tmp_path / "moved" / "run.csv"
    elsewhere.parent.mkdir()
    (shutil.move if how == "moved" else shutil.copy)(log, elsewhere)
    resume(ellipsoid, path, log=elsewhere, check_function=False)
    assert read_rows(elsewhere) == read_rows(reference)


def test_log_moved_during_run(tmp_path):
    # The log's digest is read through the open file, not its path. So a log
    # moved away while the run goes on does not make the next checkpoint
    # raise FileNotFoundError, and resume continues it at its new path.
    reference, path, log = tmp_path / "reference.csv", tmp_path / "run.npz", tmp_path / "run.csv"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_iter=30, log=reference)
    elsewhere = tmp_path / "elsewhere.csv"
    moved_at = {}

    def move_log(result):
        if result.nit == 2:
            moved_at["size"] = log.stat().st_size
            os.replace(log, elsewhere)

    with pytest.raises(EvaluationError, match="worker lost"):
        minimize(
            crash_after(60, ellipsoid),
            np.ones(3),
            1.0,
            seed=0,
            max_iter=30,
            checkpoint=path,
            checkpoint_every=2,
            log=log,
            callback=move_log,
        )
    assert not log.exists()
    assert read_plan_progress(path)["log_offset"] > moved_at["size"]  # a checkpoint came after the move
    resume(ellipsoid, path, log=elsewhere, check_function=False)
    assert read_rows(elsewhere) == read_rows(reference)


def test_resume_of_finished_run_keeps_other_log(tmp_path):
    path, log = tmp_path / "run.npz", tmp_path / "other.csv"
    minimize(ellipsoid, np.ones(3), 1.0, seed=0, max_iter=5, checkpoint=path)
    minimize(ellipsoid, np.ones(3), 1.0, seed=2, max_iter=4, log=log)
    before = log.read_bytes()
    resume(ellipsoid, path, log=log)  # nothing is evaluated, so nothing is logged
    assert log.read_bytes() == before


# --------------------------------------------------------------------------- one path for two files


def test_log_and_checkpoint_on_one_path_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    objective = counting(ellipsoid)
    # The same file, spelt differently and not there yet.
    with pytest.raises(ValueError, match="log and checkpoint name the same file 'same.x'"):
        minimize(objective, np.ones(3), 1.0, log="same.x", checkpoint=tmp_path / "sub" / ".." / "same.x")
    assert objective.calls == 0
    assert not (tmp_path / "same.x").exists()


def test_resume_log_on_checkpoint_path_rejected(tmp_path):
    path, other = tmp_path / "run.npz", tmp_path / "other.npz"
    unfinished_checkpoint(path, max_iter=30)
    before = path.read_bytes()
    objective = counting(ellipsoid)
    with pytest.raises(ValueError, match="log and path name the same file"):
        resume(objective, path, log=path, check_function=False)
    with pytest.raises(ValueError, match="log and checkpoint name the same file"):
        resume(objective, path, log=other, checkpoint=other, check_function=False)
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    with pytest.raises(ValueError, match="log and path name the same file"):
        resume(objective, path, log=link, check_function=False)
    assert objective.calls == 0
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- vectorized is part of the plan


def test_resume_keeps_vectorized(tmp_path):
    path = tmp_path / "run.npz"
    reference = minimize(rows, np.ones(4), 1.0, seed=2, vectorized=True, max_evals=600)

    def failing(X):
        failing.calls += 1
        if failing.calls == 20:
            raise RuntimeError("worker lost")
        return rows(X)

    failing.calls = 0
    with pytest.raises(EvaluationError):
        minimize(failing, np.ones(4), 1.0, seed=2, vectorized=True, max_evals=600, checkpoint=path)
    assert read_plan(path)["vectorized"] is True
    result = resume(rows, path, check_function=False)
    assert result.fbest == reference.fbest
    assert result.nfev == reference.nfev


def test_resume_vectorized_given_or_unknown(tmp_path):
    path = tmp_path / "run.npz"
    with pytest.raises(EvaluationError):
        minimize(crash_after(3, rows), np.ones(4), 1.0, seed=2, vectorized=True, max_evals=200, checkpoint=path)
    # An explicit value wins over the stored one (each point evaluated alone).
    one_point = resume(sphere, path, vectorized=False, check_function=False)
    assert one_point.stop == {"max_evals": 200}

    # Checkpoints written before the plan stored vectorized: unknown, and resumed one point at a time.
    old = tmp_path / "old.npz"
    with pytest.raises(EvaluationError):
        minimize(crash_after(3, rows), np.ones(4), 1.0, seed=2, vectorized=True, max_evals=200, checkpoint=path)
    tree = checkpoint.read(path)
    del tree["extra"]["minimize"]["plan"]["vectorized"]
    checkpoint.write(old, tree)
    assert read_plan(old)["vectorized"] is None
    assert resume(sphere, old, check_function=False).fbest == one_point.fbest


# --------------------------------------------------------------------------- args and disp as in scipy


def test_single_argument_becomes_tuple(tmp_path):
    expected = minimize(scaled_sphere, np.ones(2), 1.0, args=(2.0,), seed=0, max_evals=80)
    assert minimize(scaled_sphere, np.ones(2), 1.0, args=2.0, seed=0, max_evals=80).fbest == expected.fbest
    pair = [SpectralES(np.ones(2), 1.0, seed=0, max_evals=80) for _ in range(2)]
    assert optimize(pair[0], scaled_sphere, args=2.0).fbest == optimize(pair[1], scaled_sphere, args=(2.0,)).fbest

    path = tmp_path / "run.npz"
    with pytest.raises(EvaluationError):
        minimize(crash_after(9, sphere), np.ones(2), 1.0, seed=0, max_evals=80, checkpoint=path)
    resumed = resume(scaled_sphere, path, args=1.0, check_function=False)
    assert resumed.stop == {"max_evals": 80}


@pytest.mark.parametrize("disp", [-1, 2.5, None, "10"])
def test_invalid_disp_rejected(disp):
    objective = counting(sphere)
    message = re.escape(
        f"disp must be True, False or an integer >= 0 (iterations between progress lines), got {disp!r}"
    )
    with pytest.raises(ValueError, match=message):
        minimize(objective, np.ones(2), 1.0, disp=disp)
    with pytest.raises(ValueError, match=message):
        optimize(SpectralES(np.ones(2), 1.0), objective, disp=disp)
    assert objective.calls == 0


# --------------------------------------------------------------------------- damaged checkpoints


def damaged_copy(tmp_path, keys, shape):
    """Save a strategy of n = 4 (popsize 8) and return a copy whose array at ``keys`` has ``shape``."""
    es = SpectralES(np.ones(4), 1.0, seed=0)
    X = es.ask()
    es.tell(X, sphere(X))
    es.ask()  # a pending population: z and X are saved
    es.save(tmp_path / "good.npz")
    tree = checkpoint.read(tmp_path / "good.npz")
    node = tree
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = np.zeros(shape)
    path = tmp_path / "damaged.npz"
    checkpoint.write(path, tree)
    return path, tree


@pytest.mark.parametrize(
    ("keys", "shape", "expected"),
    [
        (("state", "xbest"), (5,), "(4,)"),
        (("state", "B"), (4, 5), "(4, 4)"),
        (("state", "X"), (7, 4), "(8, 4)"),
        (("history", "vectors"), (3, 1, 5), "(3, rows, 4)"),
    ],
)
def test_damaged_checkpoint_named(tmp_path, keys, shape, expected):
    path, tree = damaged_copy(tmp_path, keys, shape)
    name = "/".join(keys)
    detail = f"its array {name} has shape {shape}, but its settings say n = 4 and popsize = 8, which need the shape"
    with pytest.raises(ValueError, match=re.escape(f"{path} is damaged: {detail} {expected}; load an undamaged")):
        SpectralES.load(path)
    with pytest.raises(ValueError, match=re.escape(f"the state dictionary is damaged: {detail} {expected}")):
        SpectralES.from_state_dict(tree)
    with pytest.raises(ValueError, match=re.escape(f"the state dictionary is damaged: {detail}")):
        SpectralES(np.ones(4), 1.0).load_state_dict(tree)


def test_resume_of_damaged_checkpoint(tmp_path):
    path = tmp_path / "run.npz"
    unfinished_checkpoint(path)
    tree = checkpoint.read(path)
    tree["state"]["mean"] = np.zeros(5)
    checkpoint.write(path, tree)
    with pytest.raises(ValueError, match=re.escape(f"{path} is damaged: its array state/mean has shape (5,)")):
        resume(ellipsoid, path, check_function=False)

    tree["state"]["mean"] = np.zeros(3)
    tree["extra"]["minimize"]["plan"]["x0"] = np.zeros(5)
    checkpoint.write(path, tree)
    with pytest.raises(ValueError, match=re.escape(f"{path} is damaged: its plan's x0 has 5 coordinates")):
        resume(ellipsoid, path, check_function=False)


def test_other_strategy_message_kept():
    # An intact state of another strategy: the message compares the two strategies.
    state = SpectralES(np.ones(4), 1.0).state_dict()
    with pytest.raises(ValueError, match=r"the state is of a strategy with .* = \(4, 8, 'cma', False\), this one has"):
        SpectralES(np.ones(5), 1.0).load_state_dict(state)


def test_check_distinct_compares_files(tmp_path):
    first = tmp_path / "a.csv"
    first.write_text("x")
    os.link(first, tmp_path / "hard.csv")
    with pytest.raises(ValueError, match="log and checkpoint name the same file"):
        checkpoint.check_distinct({"log": first, "checkpoint": tmp_path / "hard.csv"})
    checkpoint.check_distinct({"log": first, "checkpoint": tmp_path / "b.csv", "plot": None})
