"""Command line: inputs and outputs checked before the run, summaries, module lookup."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

import spectral_es
from spectral_es import cli
from spectral_es.cli import in_command_line_terms, main
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


fail_at = None


def none_on_call(x):
    """Shifted sphere that returns None on call number fail_at, like a function with a missing return."""
    global calls
    calls += 1
    if calls == fail_at:
        return None
    return float(((x - 1.5) ** 2).sum())


def interrupted_on_call(x):
    """Shifted sphere that raises KeyboardInterrupt on call number fail_at, as Ctrl-C there would."""
    global calls
    calls += 1
    if calls == fail_at:
        raise KeyboardInterrupt
    return float(((x - 1.5) ** 2).sum())


def rows(X):
    """Shifted sphere of each row of the population; raises on call number fail_at."""
    global calls
    calls += 1
    if calls == fail_at:
        raise RuntimeError("solver crashed")
    return ((X - 1.5) ** 2).sum(axis=1)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "cli_checks_objective.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("cli_checks_objective")
    module.calls, module.fail_at = 0, None
    yield module
    del sys.modules["cli_checks_objective"]


def exit_code_and_stderr(argv, capsys):
    """Run ``main(argv)``, which must exit with an error; return its status and stderr."""
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


def test_module_in_current_directory_found_without_safe_path(tmp_path, capsys, monkeypatch):
    # Python 3.10, which the package supports, has no -P option and no sys.flags.safe_path.
    flags = {name: getattr(sys.flags, name) for name in dir(sys.flags) if not name.startswith("_")}
    flags.pop("safe_path", None)
    monkeypatch.setattr(sys, "flags", types.SimpleNamespace(**flags))
    (tmp_path / "cwd_objective.py").write_text("def loss(x):\n    return float(((x - 2.0) ** 2).sum())\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", str(tmp_path))])
    try:
        assert main(["minimize", "cwd_objective:loss", "--dim", "2", "--seed", "0", "--quiet"]) == 0
    finally:
        sys.modules.pop("cwd_objective", None)
    assert float(stdout_lines(capsys.readouterr().out, "best f")) <= 1e-10


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
    # Nothing was evaluated before the crash, so there is no best point to show.
    assert "best f of the failed run" not in err


def test_failure_without_checkpoint_prints_best(capsys, user_module):
    # 50 evaluations in, the run has a best point, and without a checkpoint
    # the output is all that is left of it.
    user_module.fail_at = 50
    argv = ["minimize", "cli_checks_objective:none_on_call", "--dim", "3", "--seed", "0", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "nothing was saved" in err
    best = re.search(r"best f of the failed run (\S+) at x = \[", err)
    assert best is not None, err
    assert math.isfinite(float(best.group(1)))


def test_invalid_value_mid_run_resumable(tmp_path, capsys, user_module):
    checkpoint = str(tmp_path / "run.npz")
    user_module.fail_at = 50
    argv = ["minimize", "cli_checks_objective:none_on_call", "--dim", "3", "--seed", "0", "--quiet"]
    assert main([*argv, "--checkpoint", checkpoint, "--checkpoint-every", "2"]) == 1
    err = capsys.readouterr().err
    assert "error: the objective must return a real number, got None (type NoneType) at x = [" in err
    assert f"continue with --resume {checkpoint}" in err
    assert main(["minimize", "--resume", checkpoint, "--quiet"]) == 0  # the call counter has passed 50


@pytest.mark.parametrize(("objective", "status"), [("interrupted_on_call", 130), ("none_on_call", 1)])
def test_continue_hint_names_log(objective, status, tmp_path, capsys, user_module):
    # Without --log the continued run would write no log, so the printed
    # command that continues the run names the log too. The space and the
    # quote in the paths need shell quoting.
    checkpoint, log = str(tmp_path / "run 1.npz"), str(tmp_path / "it's run.csv")
    user_module.fail_at = 50
    argv = ["minimize", f"cli_checks_objective:{objective}", "--dim", "3", "--seed", "0", "--quiet"]
    assert main([*argv, "--checkpoint", checkpoint, "--checkpoint-every", "2", "--log", log]) == status
    err = capsys.readouterr().err
    hint = re.search(r"continue with (--resume .+)$", err, re.MULTILINE)
    assert hint is not None, err
    assert shlex.split(hint.group(1)) == ["--resume", checkpoint, "--log", log]

    # The command as printed continues the log to the row with the stop reason,
    # without the note about a saved log that the continued run drops.
    assert main(["minimize", *shlex.split(hint.group(1)), "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().err
    header, *_, last_row = Path(log).read_text().splitlines()
    assert last_row.split(",")[header.split(",").index("stop")] != ""


def test_interrupt_before_first_checkpoint_gives_no_hint(tmp_path, capsys, monkeypatch):
    # Ctrl-C before the run's first checkpoint leaves no file, so a hint to
    # --resume it would name a missing file.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "minimize", interrupted)
    checkpoint = tmp_path / "run.npz"
    assert main(["minimize", "sphere", "--dim", "2", "--quiet", "--checkpoint", str(checkpoint)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted"
    assert not checkpoint.exists()


def test_stop_reasons_print_counts_as_integers(capsys):
    argv = ["minimize", "rastrigin", "--dim", "3", "--seed", "0", "--quiet", "--restarts", "3", "--max-evals", "1e3"]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert stdout_lines(output, "stopped by") == "max_evals=1000 (f_target=1e-10 not reached)"
    table = output[output.index("stopped by\n") :].splitlines()[1:]
    assert table
    assert table[-1].endswith("max_evals=1000")  # the whole budget, not the last run's share of it
    totals = [int(line.split()[6]) for line in table]
    assert totals[-1] == int(stdout_lines(output, "evaluations"))
    assert not re.search(r"max_evals=\d+\.0\b", output)


def test_missed_default_target_shown(capsys):
    # Built-in functions get the target 1e-10; this run ends in a local minimum.
    assert main(["minimize", "rastrigin", "--dim", "4", "--seed", "0", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert stdout_lines(output, "stopped by") == "tol_f=1e-11 (f_target=1e-10 not reached)"


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
    # the checkpoint fixes them all, so giving them is an error. The options
    # are checked before the file is read, so any existing file will do.
    (tmp_path / "run.npz").touch()
    code, err = exit_code_and_stderr(["minimize", "--resume", str(tmp_path / "run.npz"), *given], capsys)
    assert code == 2
    assert f"{given[0]} cannot change a resumed run" in err
    assert f"remove {given[0]} from the command, or start a new run without --resume" in err


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
        (["--max-evals", "0"], "--max-evals must be a positive finite number, got 0"),
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
    # Nothing ran before the check: the error is the only output, one line.
    assert err.startswith("spectral-es minimize: error: ")
    assert err.count("\n") == 1
    assert "minimizing" not in capsys.readouterr().out
    assert user_module.calls == 0


def test_checkpoint_every_needs_checkpoint(capsys, user_module):
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "5", "--checkpoint-every", "5"]
    code, err = exit_code_and_stderr(argv, capsys)
    assert code == 2
    assert "nothing is saved without --checkpoint FILE; give --checkpoint FILE too" in err
    assert user_module.calls == 0


def test_resume_checks_checkpoint_every_by_flag(tmp_path, capsys):
    # The check runs before the file is read, so any existing file will do.
    (tmp_path / "run.npz").touch()
    code, err = exit_code_and_stderr(
        ["minimize", "--resume", str(tmp_path / "run.npz"), "--checkpoint-every", "0"], capsys
    )
    assert code == 2
    assert "--checkpoint-every must be an integer >= 1, got 0" in err
    assert "resuming" not in capsys.readouterr().out


def test_resume_of_missing_file(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    code, err = exit_code_and_stderr(["minimize", "--resume", str(missing)], capsys)
    assert code == 2
    assert f"checkpoint '{missing}' not found; check the path" in err

    # A missing file is named before any option it would make invalid.
    code, err = exit_code_and_stderr(["minimize", "--resume", str(missing), "--dim", "3"], capsys)
    assert code == 2
    assert f"checkpoint '{missing}' not found; check the path" in err

    # A folder exists, so "not found" would mislead.
    code, err = exit_code_and_stderr(["minimize", "--resume", str(tmp_path)], capsys)
    assert code == 2
    assert f"checkpoint '{tmp_path}' is a folder; give the file that --checkpoint wrote" in err


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["--log", "same.x", "--checkpoint", "same.x"], "--log and --checkpoint name the same file 'same.x'"),
        (["--log", "same.png", "--plot", "same.png"], "--log and --plot name the same file 'same.png'"),
        (["--plot", "same.svg", "--checkpoint", "./same.svg"], "--plot and --checkpoint name the same file"),
    ],
)
def test_one_path_for_two_outputs_rejected(outputs, message, tmp_path, capsys, monkeypatch, user_module):
    monkeypatch.chdir(tmp_path)
    code, err = exit_code_and_stderr(["minimize", "cli_checks_objective:counted", "--dim", "2", *outputs], capsys)
    assert code == 2
    assert message in err
    assert user_module.calls == 0
    assert not list(tmp_path.glob("same.*"))


@pytest.mark.parametrize("option", ["--log", "--plot"])
def test_output_on_resumed_file_rejected(option, tmp_path, capsys, user_module):
    checkpoint = tmp_path / "f2.npz"
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "2", "--seed", "0", "--quiet", "--max-evals", "60"]
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 0
    before = checkpoint.read_bytes()
    code, err = exit_code_and_stderr(["minimize", "--resume", str(checkpoint), option, str(checkpoint)], capsys)
    assert code == 2
    assert f"{option} and --resume name the same file '{checkpoint}'" in err
    assert checkpoint.read_bytes() == before


def test_unfinished_checkpoint_kept_by_new_run(tmp_path, capsys, user_module):
    checkpoint = tmp_path / "run.npz"
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "2", "--seed", "0", "--quiet"]
    user_module.fail_at = 20
    assert (
        main(["minimize", "cli_checks_objective:rows", *argv[2:], "--vectorized", "--checkpoint", str(checkpoint)]) == 1
    )
    capsys.readouterr()
    before, calls = checkpoint.read_bytes(), user_module.calls

    code, err = exit_code_and_stderr([*argv, "--checkpoint", str(checkpoint)], capsys)
    assert code == 2
    assert f"--checkpoint '{checkpoint}' is the checkpoint of an unfinished run of cli_checks_objective:rows" in err
    assert f"continue it with --resume {checkpoint}, pass another path, or delete the file" in err
    assert checkpoint.read_bytes() == before
    assert user_module.calls == calls


def test_file_that_is_no_log_kept(tmp_path, capsys, user_module):
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "2", "--log", str(notes)]
    code, err = exit_code_and_stderr(argv, capsys)
    assert code == 2
    assert f"--log '{notes}' exists and is not a spectral_es CSV log" in err
    assert notes.read_text() == "a,b\n1,2\n"
    assert user_module.calls == 0


def test_resume_takes_vectorized_from_checkpoint(tmp_path, capsys, user_module):
    argv = ["minimize", "cli_checks_objective:rows", "--dim", "3", "--seed", "2", "--quiet", "--vectorized"]
    assert main(argv) == 0
    reference = stdout_lines(capsys.readouterr().out, "best f")

    checkpoint = str(tmp_path / "run.npz")
    user_module.calls, user_module.fail_at = 0, 30
    assert main([*argv, "--checkpoint", checkpoint]) == 1
    capsys.readouterr()
    assert read_plan(checkpoint)["vectorized"] is True
    # No --vectorized: the checkpoint's setting; rows() raises on a single point.
    assert main(["minimize", "--resume", checkpoint, "--quiet"]) == 0
    assert stdout_lines(capsys.readouterr().out, "best f") == reference


def test_vectorized_hint_names_the_flag(capsys, user_module):
    # An invalid return value is a failed evaluation (status 1), also in the first population.
    argv = ["minimize", "cli_checks_objective:counted", "--dim", "2", "--seed", "0", "--vectorized"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "a vectorized objective must return one value per row" in err
    assert "drop --vectorized for a function of one point" in err
    assert "vectorized=False" not in err


def test_unreachable_dask_scheduler_named(capsys, monkeypatch):
    # A stand-in for distributed whose Client fails as the real one does on a
    # closed port; no connection is attempted.
    def unreachable_client(address):
        raise OSError(f"Timed out trying to connect to {address} after 30 s")

    monkeypatch.setitem(sys.modules, "distributed", types.SimpleNamespace(Client=unreachable_client))
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "3", "--dask", "tcp://127.0.0.1:1"], capsys)
    assert code == 2
    assert (
        "could not connect to the Dask scheduler at tcp://127.0.0.1:1 "
        "(Timed out trying to connect to tcp://127.0.0.1:1 after 30 s); check the address"
    ) in err
    assert "Traceback" not in err


def test_vectorized_hint_on_resume():
    # Without --vectorized, a resumed run is vectorized because the saved run was.
    message = "got shape (); pass vectorized=False for a function of one point"
    resumed = in_command_line_terms(message, argparse.Namespace(vectorized=None))
    assert resumed.endswith("pass --no-vectorized (the saved run was vectorized) for a function of one point")
    flagged = in_command_line_terms(message, argparse.Namespace(vectorized=True))
    assert flagged.endswith("drop --vectorized for a function of one point")
    wrong_way = "pass vectorized=True if it takes the whole population at once"
    assert in_command_line_terms(wrong_way, argparse.Namespace(vectorized=False)).startswith("add --vectorized")


def test_unknown_option_shows_minimize_usage(capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--maxfevals", "3"], capsys)
    assert code == 2
    assert "spectral-es minimize: error: unrecognized arguments: --maxfevals 3" in err


def captured_minimize_arguments(argv, monkeypatch):
    """Return the keyword arguments that ``main(argv)`` passes to ``minimize``, which then stops the run."""
    received = {}

    def fake_minimize(function, **options):
        received.update(options)
        raise KeyboardInterrupt

    monkeypatch.setattr("spectral_es.cli.minimize", fake_minimize)
    assert main(argv) == 130
    return received


@pytest.mark.filterwarnings("ignore:sigma0=.* exceeds the width of the bounds:UserWarning")
def test_default_sigma0_scales_with_box(monkeypatch, capsys):
    # 0.3 times the narrowest finite width here is 0.003; a fixed 1 stalled
    # in such boxes. Without a finite width the default stays 1.
    box = ["--lower", "0", "--upper", "0.01,0.02,inf"]
    narrow = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", *box, "--quiet"], monkeypatch)
    open_box = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", "--lower", "0", "--quiet"], monkeypatch)
    given = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", *box, "--sigma0", "0.5"], monkeypatch)

    assert narrow["sigma0"] == pytest.approx(0.3 * 0.01)
    assert open_box["sigma0"] == 1.0
    assert given["sigma0"] == 0.5


def test_warnings_use_option_names(capsys):
    argv = ["minimize", "sphere", "--dim", "2", "--lower", "0", "--upper", "1", "--sigma0", "5", "--max-evals", "20"]
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    # One line in the command's own terms, not Python's "file:line: UserWarning" with a source line.
    assert err.startswith("spectral-es minimize: warning: --sigma0=5 exceeds the width of the bounds")
    assert "UserWarning" not in err


def test_repeated_integer_index_rejected(capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "3", "--integer", "2,0,2"], capsys)

    assert code == 2
    assert "--integer 2,0,2 lists the index 2 more than once; list each index once" in err
    # A boolean mask is a library option that the command line has no way to pass.
    assert "mask" not in err


def test_noise_evaluations_need_noise(capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--noise-max-evaluations", "5"], capsys)

    assert code == 2
    assert "give --noise too" in err


def test_plot_name_without_suffix_gets_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "run"

    assert main(["minimize", "sphere", "--dim", "2", "--seed", "1", "--quiet", "--plot", str(target)]) == 0

    assert (tmp_path / "run.png").is_file()
    assert not target.exists()
    assert f"plot        {target}.png" in capsys.readouterr().out


def test_closed_stdout_ends_quietly():
    # One progress line per iteration of a 20-D Rosenbrock run fills a pipe
    # buffer (64 KiB on Linux) long before the end, so closing the reading
    # side after one line makes the next write fail with a broken pipe.
    command = [sys.executable, "-m", "spectral_es", "minimize", "rosenbrock", "--dim", "20", "--every", "1"]
    process = subprocess.Popen(
        [*command, "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True
    )
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=120)

    assert process.returncode == 1
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


def test_default_target_only_for_builtins(monkeypatch, user_module):
    # Built-in functions have their minimum at 0; a user's function may go
    # below any fixed target and would stop there at once.
    builtin = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", "--quiet"], monkeypatch)
    own = captured_minimize_arguments(
        ["minimize", "cli_checks_objective:counted", "--dim", "3", "--quiet"], monkeypatch
    )

    assert builtin["f_target"] == 1e-10
    assert own["f_target"] is None


def test_default_start_is_box_centre(monkeypatch, user_module):
    box = ["--lower", "0,-inf,-1,0", "--upper", "1,inf,2,3", "--integer", "3", "--quiet"]
    own = captured_minimize_arguments(["minimize", "cli_checks_objective:counted", "--dim", "4", *box], monkeypatch)
    builtin = captured_minimize_arguments(["minimize", "sphere", "--dim", "4", *box], monkeypatch)

    # Finite sides: the centre, for an integer variable the whole number above
    # a tie; an open coordinate keeps the default 3.
    assert own["x0"].tolist() == [0.5, 3.0, 0.5, 2.0]
    # The centre of a symmetric box is a built-in function's optimum.
    assert builtin["x0"].tolist() == [1.0, 3.0, 2.0, 3.0]


@pytest.mark.parametrize(("option", "value"), [("--upper", "nan"), ("--lower", "inf")])
def test_bad_bound_named_before_start(option, value, capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "3", option, value], capsys)

    assert code == 2
    assert option in err
    assert "--x0" not in err


def test_banner_states_settings(capsys):
    assert main(["minimize", "sphere", "--dim", "4", "--seed", "2", "--quiet", "--sigma0", "0.5"]) == 0
    first = capsys.readouterr().out.splitlines()[0]

    assert first == (
        "minimizing sphere in 4 dimensions from x0 = 3 in every coordinate, sigma0 0.5, popsize 8, "
        "target f <= 1e-10, seed 2"
    )


def test_no_finite_value_exits_nonzero(tmp_path, capsys, monkeypatch):
    (tmp_path / "nan_objective.py").write_text("def f(x):\n    return float('nan')\n")
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["minimize", "nan_objective:f", "--dim", "2", "--seed", "1", "--quiet"])
    finally:
        sys.modules.pop("nan_objective", None)

    assert code == 1
    err = capsys.readouterr().err
    assert "spectral-es minimize: warning: 6 objective value(s) in iteration 1 are NaN or infinite" in err
    assert "no finite value" in err


def test_noise_without_budget_noted(monkeypatch, capsys):
    captured_minimize_arguments(["minimize", "sphere", "--dim", "2", "--noise", "--quiet"], monkeypatch)
    assert "give --max-evals N" in capsys.readouterr().err

    captured_minimize_arguments(["minimize", "sphere", "--dim", "2", "--noise", "--max-evals", "100"], monkeypatch)
    assert "give --max-evals N" not in capsys.readouterr().err
    captured_minimize_arguments(["minimize", "sphere", "--dim", "2", "--noise", "--max-iter", "50"], monkeypatch)
    assert "give --max-evals N" not in capsys.readouterr().err


def test_max_iter_limits_each_run(monkeypatch, capsys):
    limited = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", "--max-iter", "7"], monkeypatch)
    default = captured_minimize_arguments(["minimize", "sphere", "--dim", "3"], monkeypatch)
    assert limited["max_iter"] == 7
    # None leaves SpectralES's default, which grows with n.
    assert default["max_iter"] is None


def test_stds_reach_minimize(monkeypatch, capsys):
    listed = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", "--stds", "1,10,0.1"], monkeypatch)
    single = captured_minimize_arguments(["minimize", "sphere", "--dim", "3", "--stds", "2"], monkeypatch)
    assert listed["stds"].tolist() == [1.0, 10.0, 0.1]
    # One number stands for every coordinate, as with --lower and --upper.
    assert single["stds"] == 2.0
    assert "sigma0 1 times stds 2, popsize" in capsys.readouterr().out

    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "3", "--stds", "1,10"], capsys)
    assert code == 2
    assert "--stds has shape (2,), but the problem has 3 variables" in err


def test_max_iter_ends_each_run(capsys):
    argv = ["minimize", "sphere", "--dim", "3", "--max-iter", "7", "--restarts", "1", "--seed", "1", "--quiet"]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert re.search(r"^iterations\s+14$", output, re.M)

    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "3", "--max-iter", "0"], capsys)
    assert code == 2
    assert "--max-iter must be an integer >= 1, got 0" in err


def test_resume_of_drawn_starts_points_to_python(tmp_path, capsys):
    from spectral_es import minimize
    from spectral_es.functions import rastrigin

    path = tmp_path / "run.npz"
    minimize(rastrigin, lambda rng: rng.uniform(-1, 1, 3), 2.0, seed=0, restarts=1, max_iter=3, checkpoint=path)

    code, err = exit_code_and_stderr(["minimize", "--resume", str(path)], capsys)

    assert code == 2
    assert "which the command line cannot pass" in err
    assert "spectral_es.resume(fun" in err


def test_max_evals_must_be_whole(capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--max-evals", "1.5"], capsys)

    assert code == 2
    assert "expected a whole number of evaluations" in err


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_bad_max_evals_named_plainly(value, capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--max-evals", value], capsys)

    assert code == 2
    assert f"argument --max-evals: invalid value {value!r}, expected a whole number of evaluations" in err
    assert "evaluation_count" not in err


# argparse of Python 3.14 and later reads "-1,2,3" and "-1e-3" as values, but
# "-inf" as an option in every version.
BEFORE_PYTHON_3_14 = pytest.mark.skipif(sys.version_info >= (3, 14), reason="argparse reads it as a value")


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        pytest.param(["--x0", "-1,2,3"], "--x0=-1,2,3", marks=BEFORE_PYTHON_3_14),
        pytest.param(["--f-target", "-1e-3"], "--f-target=-1e3", marks=BEFORE_PYTHON_3_14),
        (["--x0", "-inf"], "--x0=-1,2,3"),
        (["--lower", "-inf"], "--lower=-5,0"),
        (["--upper", "-inf"], "--upper=-1,2"),
        (["--f-target", "-inf"], "--f-target=-1e3"),
    ],
)
def test_negative_value_needs_equals(argv, fix, capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "3", *argv], capsys)

    assert code == 2
    assert f"expected one argument; for a value that starts with '-', join it with '=', as in {fix}" in err


def test_negative_values_joined_accepted(capsys):
    argv = ["minimize", "sphere", "--dim", "3", "--x0=-1,2,3", "--lower=-inf", "--upper=-1,inf,inf"]
    assert main([*argv, "--f-target=-1e-3", "--seed", "0", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "from x0 = [-1.  2.  3.]" in output
    assert "target f <= -0.001" in output
    assert stdout_lines(output, "best x").startswith("[-1.000000e+00 ")  # on the upper bound -1


def test_quiet_with_every_rejected(capsys):
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2", "--quiet", "--every", "5"], capsys)

    assert code == 2
    assert "--quiet prints no progress lines, so --every 5 would have no effect; drop one of them" in err


def test_other_broken_pipe_reported(monkeypatch, capsys):
    # Only a closed stdout ends quietly; a broken pipe elsewhere (a Dask
    # connection, a FIFO given as the log) is an error with a message.
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("spectral_es.cli.run_minimize", broken)
    code, err = exit_code_and_stderr(["minimize", "sphere", "--dim", "2"], capsys)

    assert code == 1
    assert "error: [Errno 32] Broken pipe" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["minimize", "sphere", "--dim", "abc"], "argument --dim: invalid int value: 'abc'"),
        (["minimize", "sphere", "--dim", "2", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argument_errors_one_line(argv, message, capsys):
    code, err = exit_code_and_stderr(argv, capsys)

    assert code == 2
    assert err == f"spectral-es minimize: error: {message}; see spectral-es minimize --help\n"


def test_bad_workers_rejected_before_banner(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["minimize", "sphere", "--dim", "2", "--workers", "0"])
    captured = capsys.readouterr()

    assert caught.value.code == 2
    assert "--workers must be >= 1, got 0" in captured.err
    assert captured.out == ""


def test_name_that_is_no_function(tmp_path, capsys, monkeypatch):
    (tmp_path / "constants_module.py").write_text("NOTCALL = 3\n")
    monkeypatch.chdir(tmp_path)
    try:
        code, err = exit_code_and_stderr(["minimize", "constants_module:NOTCALL", "--dim", "2"], capsys)
    finally:
        sys.modules.pop("constants_module", None)

    assert code == 2
    assert "'NOTCALL' in module 'constants_module' is not callable (its type is int)" in err


def test_resume_of_finished_run_says_so(tmp_path, capsys):
    path = tmp_path / "run.npz"
    assert main(["minimize", "sphere", "--dim", "2", "--seed", "1", "--quiet", "--checkpoint", str(path)]) == 0
    capsys.readouterr()

    assert main(["minimize", "--resume", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "the saved run had already finished" in err
    assert "--max-evals" not in err

    # A run that its budget stopped gets a note on how to continue, and a larger
    # budget continues it: no note then.
    argv = ["minimize", "sphere", "--dim", "2", "--seed", "1", "--quiet", "--max-evals", "30"]
    assert main([*argv, "--checkpoint", str(tmp_path / "short.npz")]) == 0
    capsys.readouterr()
    assert main(["minimize", "--resume", str(tmp_path / "short.npz"), "--quiet"]) == 0
    assert "stopped at its budget, so give a larger --max-evals to continue it" in capsys.readouterr().err
    assert main(["minimize", "--resume", str(tmp_path / "short.npz"), "--quiet", "--max-evals", "60"]) == 0
    assert "already finished" not in capsys.readouterr().err


def test_resume_without_log_names_saved_log(tmp_path, capsys):
    # Without the note a resume without --log silently wrote no log, and the
    # checkpoint it left no longer named the saved run's log.
    path, log = tmp_path / "run.npz", tmp_path / "run.csv"
    argv = ["minimize", "sphere", "--dim", "2", "--seed", "1", "--quiet", "--max-evals", "30"]
    assert main([*argv, "--checkpoint", str(path), "--log", str(log)]) == 0
    capsys.readouterr()
    assert main(["minimize", "--resume", str(path), "--quiet", "--max-evals", "60", "--log", str(log)]) == 0
    assert "without --log" not in capsys.readouterr().err
    assert main(["minimize", "--resume", str(path), "--quiet", "--max-evals", "90"]) == 0
    err = capsys.readouterr().err
    assert f"pass --log {log} to continue that log" in err
    assert "warning" not in err  # the note replaces the library's warning


def test_noisy_restarts_note_iteration_limit(capsys, user_module):
    # A noisy run has no f-based stops. Without this note a user saw one run
    # spend the whole budget while --restarts did nothing.
    argv = ["minimize", "cli_checks_objective:noisy", "--dim", "3", "--seed", "1", "--quiet", "--noise"]
    assert main([*argv, "--restarts", "2", "--max-evals", "300"]) == 0
    captured = capsys.readouterr()
    # 100 + 150 (3 + 3)^2 / sqrt(7) for the default popsize 4 + floor(3 ln 3) = 7.
    assert "iteration limit (2141 for the first run)" in captured.err
    assert "give --max-iter N for shorter runs" in captured.err
    assert "last mean" in captured.out
    assert "after restarts it is the last run's" in captured.out

    assert main([*argv, "--restarts", "2", "--max-evals", "300", "--max-iter", "20"]) == 0
    assert "iteration limit" not in capsys.readouterr().err
