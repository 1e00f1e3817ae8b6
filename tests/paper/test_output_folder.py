"""Paper scripts write the committed pages only with the pages' settings, and reject bad arguments."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest

pytest.importorskip("matplotlib")

import paper_common  # noqa: E402  (after the skip)

SCRIPTS = ["gop_full", "gop_kronecker", "spd_optimisation", "gradient_free", "cayley_training"]


def _script(name: str):
    if name == "cayley_training":
        pytest.importorskip("torch")
    return importlib.import_module(name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    paper_common.add_output_option(parser)
    return parser


def _root(argv: list[str]):
    parser = _parser()
    return paper_common.output_root(parser, parser.parse_args(argv))


def test_default_settings_write_committed_folder():
    assert _root([]) == paper_common.HERE
    assert _root(["--seeds", "3"]) == paper_common.HERE


def test_other_settings_write_quick_folder():
    assert _root(["--seeds", "1"]) == paper_common.QUICK


def test_out_names_the_folder(tmp_path):
    assert _root(["--seeds", "1", "--out", str(tmp_path)]) == tmp_path


def test_out_committed_folder_needs_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _root(["--seeds", "1", "--out", str(paper_common.HERE)])
    assert exit_info.value.code == 2
    assert "only a run with the default settings writes there" in capsys.readouterr().err


def test_report_and_figure_go_under_root(tmp_path):
    import matplotlib.pyplot as plt

    page = paper_common.write_report("example", "Example", "body", 1.0, tmp_path)
    figure = plt.figure()
    image = paper_common.save_figure(figure, "example", tmp_path)
    plt.close(figure)
    assert page == tmp_path / "results" / "example.md"
    assert image == tmp_path / "figures" / "example.png"
    # The page's figure link is relative to results/, so it must reach the figure saved beside it.
    assert "(../figures/example.png)" in page.read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_defaults_write_committed_folder(script):
    assert _script(script).parse_args([]).out == paper_common.HERE


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_reduced_run_writes_quick_folder(script):
    assert _script(script).parse_args(["--seeds", "1"]).out == paper_common.QUICK


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_rejects_zero_seeds(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script(script).parse_args(["--seeds", "0"])
    assert exit_info.value.code == 2
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("gradient_free", ["--max-evals", "0"], "--max-evals must be >= 10, got 0"),
        ("gradient_free", ["--n", "0"], "--n must be >= 1, got 0"),
        ("gradient_free", ["--sigma0", "0"], "--sigma0 must be a finite number > 0, got 0.0"),
        ("gradient_free", ["--sigma0", "inf"], "--sigma0 must be a finite number > 0, got inf"),
        ("gradient_free", ["--box", "nan"], "--box must be a finite number > 0, got nan"),
        ("gop_full", ["--beta", "2"], "--beta must be in (0, 1), got 2.0"),
        ("gop_full", ["--steps", "0"], "--steps must be >= 1, got 0"),
        ("gop_full", ["--condition", "nan"], "--condition must be a finite number, got nan"),
        ("gop_full", ["--condition", "inf"], "--condition must be a finite number, got inf"),
        ("gop_kronecker", ["--condition", "0.5"], "--condition must be >= 1, got 0.5"),
        ("gop_kronecker", ["--rows", "0"], "--rows must be >= 1, got 0"),
        ("spd_optimisation", ["--iterations", "0"], "--iterations must be >= 1, got 0"),
        ("spd_optimisation", ["--log-det-beta", "-1"], "--log-det-beta must be a finite number > 0, got -1.0"),
        ("spd_optimisation", ["--condition", "nan"], "--condition must be a finite number, got nan"),
        ("cayley_training", ["--steps", "0"], "--steps must be >= 1, got 0"),
        ("cayley_training", ["--rotation-sizes", "64", "1"], "--rotation-sizes must be >= 2, got [64, 1]"),
        ("cayley_training", ["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    ],
)
def test_script_rejects_argument(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script(script).parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("values", [[2.0, float("nan")], [float("-inf")]])
def test_check_at_least_rejects_non_finite_list(values, capsys):
    # NaN compares False with every minimum, so a "value < minimum" test alone would pass it.
    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit) as exit_info:
        paper_common.check_at_least(parser, argparse.Namespace(sizes=values), sizes=1)
    assert exit_info.value.code == 2
    assert f"--sizes must be a finite number, got {values}" in capsys.readouterr().err


def test_reduced_gradient_free_run_writes_quick(tmp_path, monkeypatch):
    # Both folders point into tmp_path, so the test cannot touch the committed pages.
    gradient_free = _script("gradient_free")
    monkeypatch.setattr(paper_common, "HERE", tmp_path / "committed")
    monkeypatch.setattr(paper_common, "QUICK", tmp_path / "quick")
    argv = ["--n", "2", "--seeds", "1", "--max-evals", "40", "--functions", "ackley"]
    monkeypatch.setattr(sys, "argv", ["gradient_free.py", *argv])

    gradient_free.main()

    assert (tmp_path / "quick" / "results" / "gradient_free.md").exists()
    assert (tmp_path / "quick" / "figures" / "gradient_free.png").exists()
    assert not (tmp_path / "committed").exists()
