"""Command line: inputs and outputs checked before the run, summaries, module lookup."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import spectral_es
from spectral_es.cli import main
from spectral_es.es.minimize import read_plan

# The repository root, so that subprocesses started elsewhere import this spectral_es.
ROOT = str(Path(spectral_es.__file__).resolve().parents[1])

USER_MODULE = '''
import numpy as np

calls = 0


def counted(x):
    """Shifted sphere that counts its calls."""
    global calls
    calls += 1
    return float(((x - 1.5) ** 2).sum())


def crashes(x):
    raise RuntimeError("solver crashed")


def noisy(x, noise=np.random.default_rng(0)):
    return float((x**2).sum() + 1e-2 * noise.standard_normal())
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "cli_checks_objective.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("cli_checks_objective")
    module.calls = 0
    yield module
    del sys.modules["cli_checks_objective"]


def exit_code_and_stderr(argv, capsys):
    """Run ``main(argv)``, which must stop through ``parser.error``; return its status and stderr."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    return caught.value.code, capsys.readouterr().err


def stdout_lines(output, key):
    return re.search(rf"^{key}\s+(.+)$", output, re.M).group(1)


@pytest.mark.parametrize("option", ["--checkpoint", "--log", "--plot"])
def test_bad_output_path_fails_before_run(option, tmp_path, capsys, user_module):
    if option == "--plot":
        pytest.importorskip("matplotlib")
    missing = tmp_path / "no such dir" / "out.png"
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "2", "--seed", "0", option, str(missing)]
    code, err = exit_code_and_stderr(argv, capsys)
    assert code == 2
    assert f"{option} '{missing}': the directory '{missing.parent}' does not exist" in err
    assert "Traceback" not in err
    assert user_module.calls == 0


def test_resume_with_other_function_is_rejected(tmp_path, capsys, user_module):
    checkpoint = tmp_path / "run.npz"
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "2", "--seed", "0", "--quiet"]
    assert main([*argv, "--max-evals", "60", "--checkpoint", str(checkpoint)]) == 0
    capsys.readouterr()
    before = checkpoint.read_bytes()

    code, err = exit_code_and_stderr(["minimize", "sphere", "--resume", str(checkpoint)], capsys)
    assert code == 2
    assert "written for the objective cli_checks_objective:counted, not spectral_es.functions:sphere" in err
    assert "omit FUNCTION to resume with the stored one, or pass cli_checks_objective:counted" in err
    assert checkpoint.read_bytes() == before

    # Without FUNCTION, the stored one is imported and the finished run is returned.
    calls = user_module.calls
    assert main(["minimize", "--resume", str(checkpoint), "--quiet"]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"resuming cli_checks_objective:counted from {checkpoint}")
    assert stdout_lines(output, "stopped by") == "max_evals=60"
    assert user_module.calls == calls  # the run had ended; nothing is evaluated again


def test_function_required_without_resume(capsys):
    code, err = exit_code_and_stderr(["minimize", "--dim", "2"], capsys)
    assert code == 2
    assert "give the function to minimize" in err


def test_plot_without_matplotlib_fails_before_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2
    assert 'pip install "spectral-es[plot]"' in err
    assert "minimizing" not in capsys.readouterr().out


def test_plot_format_checked_before_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "out.jpgx"
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--plot", str(target)], capsys)
    assert code == 2
    assert "matplotlib cannot write the format 'jpgx'" in err
    assert ".png" in err
    assert not target.exists()


def test_noise_summary_names_the_estimate(capsys, user_module):
    argv = ["minimize", "cli_checks_objective:noisy", "--dim", "3", "--seed", "1", "--quiet", "--noise"]
    assert main([*argv, "--max-evals", "2000"]) == 0
    output = capsys.readouterr().out
    mean = [float(value) for value in stdout_lines(output, "mean").strip("[]").split()]
    assert len(mean) == 3
    assert max(abs(value) for value in mean) < 0.5  # the run moved the mean from 3 towards 0
    assert "use the mean as the estimate" in output


def test_module_in_current_directory_found(tmp_path, capsys, monkeypatch):
    (tmp_path / "cwd_objective.py").write_text("def loss(x):\n    return float(((x - 2.0) ** 2).sum())\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", str(tmp_path))])
    path_before = list(sys.path)
    try:
        assert main(["minimize", "cwd_objective:loss", "--dim", "2", "--seed", "0", "--quiet"]) == 0
    finally:
        sys.modules.pop("cwd_objective", None)
    assert float(stdout_lines(capsys.readouterr().out, "best f")) <= 1e-10
    assert sys.path == path_before  # the current directory is on sys.path only during the run


def run_in(directory, command):
    """Run ``command`` in ``directory`` with this repository importable; return the completed process."""
    environment = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(command, cwd=directory, env=environment, capture_output=True, text=True, timeout=120)


def test_console_script_finds_module_in_current_directory(tmp_path):
    # An installed console script runs from the venv's bin directory, not the
    # current one; this script does what pip's generated wrapper does.
    work, scripts = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    scripts.mkdir()
    (work / "myobj.py").write_text("def loss(x):\n    return float((x**2).sum())\n")
    (scripts / "spectral-es").write_text("import sys\nfrom spectral_es.cli import main\nsys.exit(main())\n")
    argv = ["minimize", "myobj:loss", "--dim", "2", "--seed", "0", "--quiet"]
    completed = run_in(work, [sys.executable, str(scripts / "spectral-es"), *argv])
    assert completed.returncode == 0, completed.stderr
    assert "best f" in completed.stdout


def test_python_dash_m_spectral_es(tmp_path):
    completed = run_in(tmp_path, [sys.executable, "-m", "spectral_es", "minimize", "sphere", "--dim", "2", "--quiet"])
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"^stopped by\s+f_target=1e-10$", completed.stdout, re.M)
    listing = run_in(tmp_path, [sys.executable, "-m", "spectral_es", "functions"])
    assert "rosenbrock" in listing.stdout


def test_resume_of_non_checkpoint_files(tmp_path, capsys):
    log, checkpoint = tmp_path / "run.csv", tmp_path / "run.npz"
    argv = ["minimize", "sphere", "--dim", "2", "--seed", "0", "--quiet", "--max-evals", "60"]
    assert main([*argv, "--log", str(log), "--checkpoint", str(checkpoint)]) == 0
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(checkpoint.read_bytes()[:-100])
    for path in (log, truncated):
        code, err = exit_code_and_stderr(["minimize", "--resume", str(path)], capsys)
        assert code == 2
        assert f"{path} is not a spectral_es checkpoint (not an .npz archive, or a truncated one)" in err
        assert "allow_pickle" not in err


@pytest.mark.parametrize("dim", ["-3", "0"])
def test_dimension_must_be_positive(dim, capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", dim], capsys)
    assert code == 2
    assert f"--dim must be >= 1, got {dim}" in err
    assert "minimizing" not in capsys.readouterr().out


def test_failure_without_checkpoint_suggests_one(capsys, user_module):
    argv = ["minimize", "cli_checks_objective:crashes", "--dim", "2", "--seed", "0", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: the objective raised RuntimeError: solver crashed at x = [" in err
    assert "nothing was saved; rerun with --checkpoint FILE" in err
    assert "can be saved or continued" not in err


def test_stop_reasons_print_counts_as_integers(capsys):
    argv = ["minimize", "rastrigin", "--dim", "3", "--seed", "0", "--quiet", "--restarts", "3", "--max-evals", "1e3"]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert stdout_lines(output, "stopped by") == "max_evals=1000"
    table = output[output.index("stopped by\n") :].splitlines()[1:]
    assert table
    assert table[-1].endswith("max_evals=1000")  # the whole budget, not the last run's share of it
    totals = [int(line.split()[6]) for line in table]
    assert totals[-1] == int(stdout_lines(output, "evaluations"))
    assert not re.search(r"max_evals=\d+\.0\b", output)


@pytest.mark.parametrize(
    "given",
    [
        ["--seed", "0"],
        ["--f-target", "0"],
        ["--restarts", "0"],
        ["--popsize", "0"],
        ["--sigma0", "0"],
        ["--noise-max-evaluations", "20"],
        ["--diagonal"],
    ],
)
def test_resume_rejects_zero_valued_settings(given, tmp_path, capsys):
    # 0 is a value like any other, and 20 is the default of --noise-max-evaluations:
    # the checkpoint fixes them all, so giving them is an error.
    code, err = exit_code_and_stderr(["minimize", "--resume", str(tmp_path / "run.npz"), *given], capsys)
    assert code == 2
    assert f"{given[0]} cannot change a resumed run" in err


@pytest.mark.parametrize(("given", "stored"), [([], 20), (["--noise-max-evaluations", "5"], 5)])
def test_noise_max_evaluations_default(given, stored, tmp_path, capsys):
    checkpoint = tmp_path / "run.npz"
    argv = ["minimize", "sphere", "--dim", "2", "--seed", "1", "--quiet", "--noise", "--max-evals", "40"]
    assert main([*argv, *given, "--checkpoint", str(checkpoint)]) == 0
    assert read_plan(checkpoint)["options"]["noise_max_evaluations"] == stored


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sigma0", "-1"], "--sigma0 must be a positive finite number, got -1.0"),
        (["--max-evals", "0"], "--max-evals must be a positive finite number, got 0.0"),
        (["--popsize", "1"], "--popsize must be an integer >= 2, got 1"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--restarts", "-2"], "--restarts must be an integer >= 0, got -2"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1, got 0"),
        (["--integer", "7"], "--integer [7] has the index 7 outside 0..4"),
        (["--lower=1", "--upper=0"], "--lower < --upper in every coordinate"),
    ],
)
def test_bad_setting_named_by_flag_before_output(arguments, message, capsys, user_module):
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "5", *arguments]
    code, err = exit_code_and_stderr(argv, capsys)
    assert code == 2
    assert message in err
    assert err.startswith("usage: spectral-es minimize ")
    assert "minimizing" not in capsys.readouterr().out
    assert user_module.calls == 0


def test_resume_of_missing_file(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    code, err = exit_code_and_stderr(["minimize", "--resume", str(missing)], capsys)
    assert code == 2
    assert f"checkpoint '{missing}' not found; check the path" in err
