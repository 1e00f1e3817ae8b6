"""The command line: the main job, user functions and input errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from spectral_es.cli import main


def test_rosenbrock_main_job(capsys):
    assert main(["minimize", "rosenbrock", "--dim", "10", "--seed", "1"]) == 0
    output = capsys.readouterr().out
    assert "seed 1" in output
    progress = [line for line in output.splitlines() if re.match(r"\s+\d+\s+\d+\s+\S+e", line)]
    assert len(progress) > 10  # a line every 10 iterations
    best = float(re.search(r"best f\s+(\S+)", output).group(1))
    assert best <= 1e-8
    assert re.search(r"stopped by\s+f_target", output)


def test_user_function_by_module_path(capsys, tmp_path, monkeypatch):
    (tmp_path / "user_objective.py").write_text("def shifted(x):\n    return float(((x - 2.0) ** 2).sum())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["minimize", "user_objective:shifted", "--dim", "3", "--seed", "0", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert float(re.search(r"best f\s+(\S+)", output).group(1)) <= 1e-10
    assert "f median" not in output  # --quiet prints no progress table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["minimize", "nosuch", "--dim", "3"], "unknown function 'nosuch'"),
        (["minimize", "sphere"], "give --dim"),
        (["minimize", "sphere", "--dim", "3", "--x0", "1,2"], "--x0 has 2 coordinates but --dim is 3"),
        (["minimize", "sphere", "--dim", "3", "--sigma0", "-1"], "--sigma0 must be a positive finite number"),
        (["minimize", "no_such_module_xyz:f", "--dim", "2"], "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_arguments_exit_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_functions_listing(capsys):
    assert main(["functions"]) == 0
    assert "rosenbrock" in capsys.readouterr().out


def test_functions_listing_without_docstrings():
    # python -OO strips the docstrings that the listing takes its summaries from.
    completed = subprocess.run(
        [sys.executable, "-OO", "-m", "spectral_es", "functions"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert "rosenbrock" in completed.stdout


def test_console_script_runs_as_module():
    completed = subprocess.run(
        [sys.executable, "-m", "spectral_es.cli", "minimize", "sphere", "--dim", "2", "--seed", "0", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "best f" in completed.stdout


def test_import_without_torch():
    # The ES and the core must not import torch (an optional extra).
    code = (
        "import sys, spectral_es; "
        "spectral_es.minimize(spectral_es.functions.sphere, [1.0], 1.0, max_evals=50); "
        "print('torch' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
