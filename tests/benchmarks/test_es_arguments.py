"""Command lines of the ES benchmark scripts: methods run, output folders and rejected arguments."""

import dataclasses
import json

import pytest

pytest.importorskip("cma")
pytest.importorskip("matplotlib")

from benchmarks.es import compare, mean_rate_study, timing  # noqa: E402  (after the skips)
from benchmarks.es.page import MULTIMODAL_METHODS  # noqa: E402


def _rejects(parse, argv, capsys) -> str:
    """Return the error output of ``parse(argv)``, which must exit with argparse's status 2."""
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_methods_outside_quick_list_run():
    # xnes and spectral-bipop are not among the quick mode's multimodal methods, but the table shows them.
    _, config = compare.parse_args(["--quick", "--functions", "ackley", "--methods", "xnes", "spectral-bipop"])
    assert config.multimodal_methods == ("spectral-bipop", "xnes")
    assert config.unimodal_methods == ("xnes",)


def test_methods_follow_tables_in_full_mode():
    _, config = compare.parse_args(["--full", "--methods", "spectral-truncated", "pycma-ipop", "--output", "x"])
    assert config.unimodal_methods == ("spectral-truncated",)
    assert config.multimodal_methods == ("pycma-ipop",)


def test_methods_keep_timing_sweep():
    _, config = compare.parse_args(["--quick", "--methods", "spectral"])
    assert config.timing_methods == compare.QUICK.timing_methods


def test_method_no_table_shows_rejected(monkeypatch, capsys):
    # Every method of METHODS is on a table today, so take one off.
    reduced = tuple(m for m in compare.FULL.unimodal_methods if m != "pycma-diagonal")
    monkeypatch.setattr(compare, "FULL", dataclasses.replace(compare.FULL, unimodal_methods=reduced))
    assert "pycma-diagonal" not in MULTIMODAL_METHODS
    error = _rejects(compare.parse_args, ["--quick", "--methods", "spectral", "pycma-diagonal"], capsys)
    assert "no table of the page shows pycma-diagonal" in error


@pytest.mark.parametrize("dims", [["1"], ["10", "0"]])
def test_timing_dims_checked_up_front(capsys, dims):
    error = _rejects(compare.parse_args, ["--quick", "--timing-dims", *dims], capsys)
    assert "--timing-dims must all be >= 2" in error


def test_empty_timing_dims_skip_timing():
    _, config = compare.parse_args(["--quick", "--timing-dims"])
    assert config.timing_dims == ()


def test_from_json_missing_file(tmp_path, capsys):
    missing = tmp_path / "none.json"
    error = _rejects(compare.parse_args, ["--from-json", str(missing), "--output", str(tmp_path)], capsys)
    assert f"file not found: {missing}" in error


def test_from_json_needs_output(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text("{}")
    error = _rejects(compare.parse_args, ["--from-json", str(path)], capsys)
    assert "--from-json needs --output" in error


def test_from_json_writes_output_only(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"records": []}))
    monkeypatch.setattr(compare, "load_results", lambda paths: (compare.QUICK, [], [], {}))
    written = []
    monkeypatch.setattr(compare, "write_page", lambda *args: written.append(args[-1]))
    compare.main(["--from-json", str(path), "--output", str(tmp_path / "page")])
    assert written == [tmp_path / "page"]


def test_partial_full_run_needs_output(capsys):
    error = _rejects(compare.parse_args, ["--full", "--methods", "spectral"], capsys)
    assert "give --output FOLDER" in error


@pytest.mark.parametrize("mode", [["--quick"], ["--full", "--seeds", "2"]])
def test_partial_run_not_into_page_folder(capsys, mode):
    error = _rejects(compare.parse_args, [*mode, "--output", str(compare.HERE)], capsys)
    assert "would replace the committed page with part of it" in error


def test_plain_full_run_writes_page():
    args, config = compare.parse_args(["--full"])
    assert args.output == compare.HERE
    assert config == compare.FULL


def test_quick_run_writes_quick_folder():
    args, _ = compare.parse_args(["--quick", "--seeds", "1"])
    assert args.output == compare.HERE / "quick"


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--dims", "1"], "--dims must all be >= 2, got [1]"), (["--repeats", "0"], "--repeats must be >= 1, got 0")],
)
def test_timing_rejects_arguments(capsys, argv, message):
    assert message in _rejects(timing.main, argv, capsys)


def test_timing_methods_have_help(capsys):
    with pytest.raises(SystemExit):
        timing.main(["--help"])
    assert "methods to time, pycma among them" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--dims", "1"], "--dims must all be >= 2, got [1]"), (["--seeds", "0"], "--seeds must be >= 1, got 0")],
)
def test_mean_rate_study_rejects_arguments(capsys, argv, message):
    assert message in _rejects(mean_rate_study.main, argv, capsys)


def test_mean_rate_study_options_have_help(capsys):
    with pytest.raises(SystemExit):
        mean_rate_study.main(["--help"])
    out = capsys.readouterr().out
    assert "dimensions n, >= 2" in out
    assert "functions to run" in out
    assert "learning-rate variants to run" in out
