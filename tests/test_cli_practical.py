"""Command line: bounds, integers, noise, workers, Dask, logs, plots, checkpoints, resume."""

from __future__ import annotations

import csv
import importlib
import re

import numpy as np
import pytest

from spectral_es import SpectralES
from spectral_es.cli import main
from spectral_es.es.minimize import read_plan

USER_MODULE = '''
import numpy as np

calls = 0
fail_at = None
noise = np.random.default_rng(0)


def objective(x):
    """Shifted sphere that raises on call number fail_at, like a crashing solver."""
    global calls
    calls += 1
    if calls == fail_at:
        raise RuntimeError("solver crashed")
    return float(((x - 1.5) ** 2).sum())


def corrected(x):
    """The same values as objective, without the crash."""
    return float(((x - 1.5) ** 2).sum())


def noisy(x):
    return float((x**2).sum() + 1e-2 * noise.standard_normal())
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "cli_user_objective.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("cli_user_objective")
    module.calls, module.fail_at = 0, None
    yield module
    del importlib.sys.modules["cli_user_objective"]


def summary(output):
    """The final summary lines that a deterministic run reproduces exactly."""
    return {key: re.search(rf"^{key}\s+(.+)$", output, re.M).group(1) for key in ("best f", "best x", "evaluations")}


def csv_rows_without_clock(path):
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    clock = [rows[0].index("time"), rows[0].index("iteration_time")]
    return [[value for k, value in enumerate(row) if k not in clock] for row in rows]


def test_bounded_integer_run_with_log_plot_checkpoint(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["minimize", "sphere", "--dim", "4", "--seed", "2", "--quiet", "--lower=-1,-1,0.5,-1", "--upper", "2"]
    argv += ["--integer", "3", "--log", str(tmp_path / "log.csv"), "--plot", str(tmp_path / "plot.png")]
    argv += ["--checkpoint", str(tmp_path / "state.npz")]
    assert main(argv) == 0
    output = capsys.readouterr().out
    best = np.array(re.search(r"best x\s+\[(.+)\]", output).group(1).split(), dtype=float)
    # The optimum in the box: 0 except x[2] on its lower bound 0.5.
    assert np.allclose(best, [0, 0, 0.5, 0], atol=1e-4)
    assert best[3] == 0.0  # integer variable, exactly whole
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = csv_rows_without_clock(tmp_path / "log.csv")
    # The box keeps f >= 0.25, so the default target 1e-10 is out of reach; the log gives only the stop reasons.
    stopped_by = re.search(r"stopped by\s+(.+)", output).group(1)
    assert stopped_by == f"{rows[-1][rows[0].index('stop')]} (f_target=1e-10 not reached)"
    saved = SpectralES.load(tmp_path / "state.npz")
    assert np.array_equal(saved.domain.integer, [3])


def test_failed_run_resumes_to_the_same_result(tmp_path, capsys, user_module):
    common = ["--dim", "3", "--seed", "4", "--quiet", "--max-evals", "3000"]
    assert main(["minimize", "cli_user_objective:objective", *common, "--log", str(tmp_path / "ref.csv")]) == 0
    reference = summary(capsys.readouterr().out)

    user_module.calls, user_module.fail_at = 0, 250  # the reference run needs about 500
    checkpoint = str(tmp_path / "state.npz")
    argv = ["minimize", "cli_user_objective:objective", *common, "--log", str(tmp_path / "run.csv")]
    assert main([*argv, "--checkpoint", checkpoint, "--checkpoint-every", "4"]) == 1
    error = capsys.readouterr().err
    assert "RuntimeError: solver crashed at x = [" in error
    assert f"continue with --resume {checkpoint}" in error

    resume = ["minimize", "cli_user_objective:objective", "--resume", checkpoint, "--quiet"]
    assert main([*resume, "--log", str(tmp_path / "run.csv")]) == 0
    assert summary(capsys.readouterr().out) == reference
    assert csv_rows_without_clock(tmp_path / "run.csv") == csv_rows_without_clock(tmp_path / "ref.csv")


def test_resume_with_changed_function(tmp_path, capsys, user_module):
    common = ["--dim", "3", "--seed", "4", "--quiet", "--max-evals", "3000"]
    assert main(["minimize", "cli_user_objective:objective", *common]) == 0
    reference = summary(capsys.readouterr().out)
    user_module.calls, user_module.fail_at = 0, 250
    checkpoint = str(tmp_path / "state.npz")
    assert main(["minimize", "cli_user_objective:objective", *common, "--checkpoint", checkpoint]) == 1
    capsys.readouterr()

    resume = ["minimize", "cli_user_objective:corrected", "--resume", checkpoint, "--quiet"]
    with pytest.raises(SystemExit):
        main(resume)
    error = capsys.readouterr().err
    assert "To continue this run with cli_user_objective:corrected, add --changed-function" in error
    # corrected gives objective's values, so the continued run ends where the uninterrupted one did.
    assert main([*resume, "--changed-function"]) == 0
    assert summary(capsys.readouterr().out) == reference


def test_changed_function_is_stored(tmp_path, capsys, user_module):
    checkpoint = str(tmp_path / "state.npz")
    first = ["minimize", "cli_user_objective:objective", "--dim", "3", "--seed", "4", "--quiet", "--max-evals", "100"]
    assert main([*first, "--checkpoint", checkpoint]) == 0
    changed = ["minimize", "cli_user_objective:corrected", "--resume", checkpoint, "--changed-function", "--quiet"]
    assert main([*changed, "--max-evals", "200"]) == 0
    capsys.readouterr()

    # The continued run evaluates corrected, so its checkpoint names corrected.
    assert read_plan(checkpoint)["function"] == "cli_user_objective:corrected"
    # A resume without FUNCTION imports that stored name.
    assert main(["minimize", "--resume", checkpoint, "--quiet", "--max-evals", "300"]) == 0
    assert "resuming cli_user_objective:corrected" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["sphere", "--dim", "3"], ["--resume", "state.npz"]])
def test_changed_function_needs_resume_and_function(argv, capsys):
    with pytest.raises(SystemExit):
        main(["minimize", *argv, "--changed-function"])
    assert "give --resume FILE and FUNCTION too" in capsys.readouterr().err


def test_resume_rejects_run_settings(tmp_path, capsys):
    (tmp_path / "x.npz").touch()  # the options are checked before the file is read
    with pytest.raises(SystemExit) as caught:
        main(["minimize", "sphere", "--resume", str(tmp_path / "x.npz"), "--dim", "3", "--sigma0", "2"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--dim, --sigma0 cannot change a resumed run" in err
    assert "remove --dim, --sigma0 from the command" in err


def test_workers_give_serial_result(capsys):
    argv = ["minimize", "rosenbrock", "--dim", "4", "--seed", "6", "--quiet", "--max-evals", "800"]
    assert main(argv) == 0
    serial = summary(capsys.readouterr().out)
    assert main([*argv, "--workers", "2"]) == 0
    assert summary(capsys.readouterr().out) == serial


def test_dask_scheduler_gives_serial_result(capsys):
    distributed = pytest.importorskip("distributed")
    argv = ["minimize", "sphere", "--dim", "3", "--seed", "7", "--quiet", "--max-evals", "120"]
    assert main(argv) == 0
    serial = summary(capsys.readouterr().out)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        assert main([*argv, "--dask", cluster.scheduler_address]) == 0
    assert summary(capsys.readouterr().out) == serial


def test_noise_flag_runs_the_budget(capsys, user_module):
    # Without --noise, a lucky negative value reaches the default f target
    # 1e-10 early; with it, there is no default target and no f-based stop.
    argv = ["minimize", "cli_user_objective:noisy", "--dim", "4", "--seed", "1", "--quiet", "--max-evals", "3000"]
    assert main(argv) == 0
    assert not re.search(r"stopped by\s+max_evals", capsys.readouterr().out)
    assert main([*argv, "--noise"]) == 0
    assert re.search(r"stopped by\s+max_evals=3000", capsys.readouterr().out)


def test_status_line_on_stderr(capsys):
    assert main(["minimize", "sphere", "--dim", "3", "--seed", "0", "--quiet", "--status"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("\riteration ")
    assert err.endswith("\n")
    assert "best f" in err
    assert "evaluations" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lower", "0,1"], "--lower has 2 entries; give one number or 3"),
        (["--upper", "a"], "--upper must be a number or comma-separated numbers"),
        (["--integer", "1.5"], "--integer must be comma-separated indices"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--workers", "2", "--dask", "tcp://127.0.0.1:1"], "give --workers or --dask, not both"),
        (["--x0", "5", "--upper", "1"], r"--x0\[0\] = 5.0 lies outside the bounds \[-inf, 1.0\]"),
    ],
)
def test_bad_practical_arguments(extra, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["minimize", "sphere", "--dim", "3", *extra])
    assert caught.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_start_outside_bounds_hint_uses_flags(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["minimize", "sphere", "--dim", "3", "--x0", "0,0,5", "--lower=-1", "--upper", "1,1,2"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--x0[2] = 5.0 lies outside the bounds [-1.0, 2.0] (1 coordinate(s) outside in all)" in err
    assert "move --x0 inside [--lower, --upper]" in err
    assert "np.clip" not in err
