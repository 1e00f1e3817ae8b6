"""Command lines of the optimizer benchmark scripts: where they write, and the arguments they reject.

The heavy work (timing, training, long drift runs) is replaced by stubs, and
``report.RESULTS`` points into ``tmp_path``, so no test writes into the
committed ``benchmarks/optimizer/results/``.
"""

import json
import shlex
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from benchmarks.optimizer import (  # noqa: E402  (after the skips)
    digits,
    distributed,
    orthogonality,
    report,
    small_models,
    step_time,
)


@pytest.fixture
def results(tmp_path, monkeypatch):
    """Point the committed results folder into tmp_path and record calls of ``report.write_page``."""
    folder = tmp_path / "results"
    monkeypatch.setattr(report, "RESULTS", folder)
    pages = []
    monkeypatch.setattr(report, "write_page", lambda: pages.append("written"))
    for module in (digits, distributed, orthogonality, small_models, step_time):
        monkeypatch.setattr(module, "environment", lambda name: {"command": name})
    return folder, pages


def test_report_help_leaves_page(monkeypatch, capsys):
    pages = []
    monkeypatch.setattr(report, "write_page", lambda: pages.append("written"))
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert pages == []


def test_report_unknown_option_leaves_page(monkeypatch):
    pages = []
    monkeypatch.setattr(report, "write_page", lambda: pages.append("written"))
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--bogus"])
    assert exit_info.value.code == 2
    assert pages == []


# Orthogonality


@pytest.fixture
def cheap_drift(monkeypatch):
    monkeypatch.setattr(orthogonality, "rounding_floor", lambda n: 0.01)
    monkeypatch.setattr(orthogonality, "drift", lambda n, refreshes, every: [(k, 0.1) for k in range(1, refreshes + 1)])


def test_orthogonality_default_writes_quick(results, cheap_drift):
    folder, pages = results
    orthogonality.main(["--refreshes", "3"])
    record = json.loads((folder / "quick" / "orthogonality.json").read_text())
    assert [run["n"] for run in record["runs"]] == [64, 64, 256, 256]
    assert not (folder / "orthogonality.json").exists()
    assert pages == []


def test_orthogonality_full_writes_page(results, cheap_drift):
    folder, pages = results
    orthogonality.main(["--full"])
    record = json.loads((folder / "orthogonality.json").read_text())
    assert sorted({run["n"] for run in record["runs"]}) == [64, 256, 1024]
    assert len(record["runs"][0]["defects"]) == 1000
    assert pages == ["written"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--refreshes", "0"], "--refreshes must be >= 1, got 0"),
        (["--sizes", "0"], "--sizes must all be >= 2"),
        (["--full", "--sizes", "64"], "--full runs the page's sizes"),
        (["--full", "--refreshes", "20"], "--full runs the page's sizes"),
    ],
)
def test_orthogonality_rejects_arguments(results, cheap_drift, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        orthogonality.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_orthogonality_quick_rejects_committed_out(results, cheap_drift, capsys):
    folder, pages = results
    with pytest.raises(SystemExit):
        orthogonality.main(["--sizes", "8", "--out", str(folder)])
    assert "only --full writes there" in capsys.readouterr().err
    assert not folder.exists()


# Step time


def _row(shape, dtype, optimizer="AdamW"):
    return {"shape": list(shape), "dtype": dtype, "optimizer": optimizer, "median": 1.0}


def _record(rows, date="old", kept=None):
    record = {"environment": {"date": date, "command": f"run {date}"}, "steps": 20, "rows": rows}
    if kept is not None:
        record["kept"] = kept
    return record


def test_keep_rows_by_shape_and_dtype():
    rows = [_row(shape, dtype) for shape in step_time.SHAPES for dtype in ("float32", "bfloat16")]
    rerun = {(shape, "bfloat16") for shape in step_time.SHAPES}
    kept, source = step_time.rows_to_keep(_record(rows), rerun)
    assert [row["dtype"] for row in kept] == ["float32", "float32"]
    assert source == {"environment": {"date": "old", "command": "run old"}, "steps": 20}


def test_keep_rows_from_earlier_kept_run():
    # The record kept its float32 rows from an earlier run; keeping them again names that run.
    earlier = {"environment": {"date": "older", "command": "run older"}, "steps": 10}
    kept_labels = ["1024x1024 float32", "4096x1024 float32"]
    rows = [_row(shape, dtype) for shape in step_time.SHAPES for dtype in ("float32", "bfloat16")]
    record = _record(rows, kept={**earlier, "shapes": kept_labels})
    kept, source = step_time.rows_to_keep(record, {(shape, "bfloat16") for shape in step_time.SHAPES})
    assert len(kept) == 2
    assert source == earlier


def test_keep_rows_from_two_runs_rejected():
    earlier = {"environment": {"date": "older", "command": "run older"}, "steps": 10, "shapes": ["4096x1024"]}
    rows = [_row(shape, dtype) for shape in step_time.SHAPES for dtype in ("float32", "bfloat16")]
    with pytest.raises(ValueError, match="two earlier runs") as error:
        step_time.rows_to_keep(_record(rows, kept=earlier), {((1024, 1024), "float32")})
    # The fix names the command-line options that add the earlier rows to this run.
    assert str(error.value).endswith("add 4096x1024 to --shapes and bfloat16 float32 to --dtypes")


def test_step_time_full_dtype_subset_keeps_other_rows(results, monkeypatch):
    folder, pages = results
    folder.mkdir()
    rows = [_row(shape, dtype) for shape in step_time.SHAPES for dtype in ("float32", "bfloat16")]
    (folder / "step_time.json").write_text(json.dumps(_record(rows)))
    monkeypatch.setattr(step_time, "time_steps", lambda names, shape, dtype, steps: {"AdamW": {"median": 2.0}})

    step_time.main(["--full", "--dtypes", "bfloat16"])

    record = json.loads((folder / "step_time.json").read_text())
    cases = [(tuple(row["shape"]), row["dtype"], row["median"]) for row in record["rows"]]
    assert cases == [
        ((1024, 1024), "float32", 1.0),
        ((1024, 1024), "bfloat16", 2.0),
        ((4096, 1024), "float32", 1.0),
        ((4096, 1024), "bfloat16", 2.0),
    ]
    assert record["kept"]["shapes"] == ["1024x1024 float32", "4096x1024 float32"]
    assert record["kept"]["environment"]["date"] == "old"
    assert pages == ["written"]


def test_step_time_unmergeable_record_fails_before_timing(results, monkeypatch, capsys):
    folder, pages = results
    folder.mkdir()
    earlier = {"environment": {"date": "older", "command": "c"}, "steps": 10, "shapes": ["4096x1024"]}
    rows = [_row(shape, dtype) for shape in step_time.SHAPES for dtype in ("float32", "bfloat16")]
    (folder / "step_time.json").write_text(json.dumps(_record(rows, kept=earlier)))
    monkeypatch.setattr(step_time, "time_steps", lambda *args: pytest.fail("timed despite the bad record"))
    with pytest.raises(SystemExit):
        step_time.main(["--full", "--shapes", "1024x1024", "--dtypes", "float32"])
    assert "two earlier runs" in capsys.readouterr().err


def test_step_time_covers_spectralkron_cycle():
    # A refresh every 10 steps with a Björck step with every 10th refresh
    # repeats after 100 steps, so every kind of step falls inside the timed
    # steps only if 100 of them are taken. A peer
    # takes one step per round, and the default (T = 2) repeats after 20
    # steps: 4 per round.
    names = ["AdamW", "SpectralKron", "SpectralKron T=10"]
    summaries = step_time.time_steps(names, (4, 4), torch.float32, 5)
    assert [summaries[name]["steps"] for name in names] == [5, 20, 100]


def test_step_time_keeps_largest_state():
    # With T = 10 each refresh leaves a generator in the state until the next
    # step. 3 rounds of 34 steps end at step 103, two steps after the last
    # refresh, so only the largest state includes the generator: a 4 x 4
    # float32 matrix, 4 bytes per element of the 4 x 4 weight. The default
    # (T = 2) keeps no generator and the same other state.
    summaries = step_time.time_steps(["SpectralKron", "SpectralKron T=10"], (4, 4), torch.float32, 3)
    default, long_period = (summaries[name]["bytes_per_element"] for name in ("SpectralKron", "SpectralKron T=10"))
    assert long_period == default + 4


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_step_time_rejects_steps(results, capsys, steps):
    with pytest.raises(SystemExit) as exit_info:
        step_time.main(["--steps", steps])
    assert exit_info.value.code == 2
    assert f"--steps must be >= 1, got {steps}" in capsys.readouterr().err


def test_step_time_quick_rejects_committed_out(results, capsys):
    folder, _ = results
    with pytest.raises(SystemExit):
        step_time.main(["--out", str(folder)])
    assert "only --full writes there" in capsys.readouterr().err


# Digits


@pytest.fixture
def cheap_training(monkeypatch):
    monkeypatch.setattr(digits, "load_data", lambda: {})

    def run_case(kind, dtype_name, names, data, steps, learning_rates, seeds, sweep_seeds):
        return {name: {"sweep": [], "runs": [], "sweep_seeds": sweep_seeds} for name in names}

    monkeypatch.setattr(digits, "run_case", run_case)


def test_digits_quick_records_swept_rates(results, cheap_training):
    folder, pages = results
    digits.main(["--models", "mlp", "--dtypes", "float32", "--optimizers", "AdamW"])
    record = json.loads((folder / "quick" / "digits.json").read_text())
    assert record["learning_rates"] == list(digits.QUICK_LEARNING_RATES)
    # Quick runs one seed, so the sweep runs one seed too.
    assert record["cases"]["mlp/float32"]["AdamW"]["sweep_seeds"] == 1
    assert pages == []


def test_digits_full_subset_needs_record(results, cheap_training, capsys):
    folder, pages = results
    with pytest.raises(SystemExit) as exit_info:
        digits.main(["--full", "--models", "convnet"])
    assert exit_info.value.code == 2
    assert "add --record NAME" in capsys.readouterr().err
    assert not folder.exists()


@pytest.mark.parametrize(
    ("argv", "changed"),
    [
        (["--steps", "50"], "--steps"),
        (["--seeds", "1"], "--seeds, --sweep-seeds"),
        (["--sweep-seeds", "1"], "--sweep-seeds"),
        (["--seeds", "10"], "--seeds"),
    ],
)
def test_digits_full_other_settings_need_record(results, cheap_training, capsys, argv, changed):
    folder, pages = results
    with pytest.raises(SystemExit) as exit_info:
        digits.main(["--full", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"--full with other {changed} than the page's would replace digits.json" in error
    assert "add --record NAME" in error
    assert not folder.exists()
    assert pages == []


def test_digits_full_explicit_defaults_write_page(results, cheap_training):
    folder, pages = results
    digits.main(["--full", "--steps", "300", "--seeds", "3", "--sweep-seeds", "3"])
    record = json.loads((folder / "digits.json").read_text())
    assert (record["steps"], record["seeds"]) == (300, 3)
    assert pages == ["written"]


@pytest.mark.parametrize(
    ("record_name", "script"),
    [
        ("digits", digits),
        ("digits_seed_check", digits),
        ("digits_fast_check", digits),
        ("step_time", step_time),
        ("orthogonality", orthogonality),
        ("distributed", distributed),
    ],
)
def test_committed_record_commands_rerun(record_name, script):
    # The page states the command of each record. Rerunning that command must
    # pass the script's checks and write the same record, so that the page
    # can be reproduced.
    record = json.loads((report.RESULTS / f"{record_name}.json").read_text())
    command = shlex.split(record["environment"]["command"])
    assert command[:3] == ["python", "-m", script.__name__]
    args = script.parse_args(command[3:])
    assert args.out.resolve() == report.RESULTS
    if script is digits:
        assert args.record == record_name


def test_digits_full_other_steps_with_record(results, cheap_training):
    folder, pages = results
    digits.main(["--full", "--steps", "50", "--record", "short"])
    assert json.loads((folder / "short.json").read_text())["steps"] == 50
    assert not (folder / "digits.json").exists()


def test_digits_full_subset_with_record(results, cheap_training):
    folder, pages = results
    digits.main(["--full", "--models", "convnet", "--optimizers", "SOAP", "--record", "check"])
    record = json.loads((folder / "check.json").read_text())
    assert list(record["cases"]) == ["convnet/float32", "convnet/bfloat16"]
    assert record["learning_rates"] == list(digits.LEARNING_RATES)
    assert not (folder / "digits.json").exists()
    assert pages == ["written"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--seeds", "2", "--sweep-seeds", "3"], "--sweep-seeds must be between 1 and --seeds (2), got 3"),
        (["--sweep-seeds", "0"], "--sweep-seeds must be between 1 and --seeds (1), got 0"),
        (["--full", "--record", "step_time"], "would replace the record of benchmarks.optimizer.step_time"),
    ],
)
def test_digits_rejects_arguments(results, cheap_training, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        digits.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# Distributed refresh


def test_distributed_quick_run_writes_quick(results):
    folder, pages = results
    distributed.main(["--weights", "2"])

    record = json.loads((folder / "quick" / "distributed.json").read_text())
    assert pages == []
    (row,) = record["rows"]
    assert (row["size"], row["dtype"], row["weights"]) == (512, "float32", 2)
    assert row["equal"]
    for mode in distributed.MODES:
        assert len(row["times"][mode]) == record["steps"] == 10
        assert row["median"][mode] > 0


@pytest.mark.parametrize("saved", [True, False], ids=["rows saved", "no rows"])
def test_distributed_run_survives_teardown_abort(monkeypatch, tmp_path, saved):
    # A rank killed by a signal (as gloo's teardown abort kills it) after
    # rank 0 saved the rows leaves a complete run: it is kept with a
    # warning. Before the rows are saved, the error is raised again.
    def spawn(function, args, nprocs, join):
        folder = Path(args[-1])
        if saved:
            (folder / "rows.json").write_text("[]")
        raise torch.multiprocessing.ProcessExitedException(
            "process 0 terminated with signal SIGABRT", error_index=0, error_pid=1, exit_code=-6, signal_name="SIGABRT"
        )

    monkeypatch.setattr(torch.multiprocessing, "spawn", spawn)
    if saved:
        with pytest.warns(RuntimeWarning, match="SIGABRT after saving its results"):
            distributed.run_ranks(2, [], 1, str(tmp_path))
    else:
        with pytest.raises(torch.multiprocessing.ProcessExitedException):
            distributed.run_ranks(2, [], 1, str(tmp_path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--ranks", "1"], "--ranks must be >= 2"), (["--weights", "0"], "--weights must be >= 1")],
)
def test_distributed_rejects_arguments(results, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        distributed.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_distributed_quick_rejects_committed_out(results, capsys):
    folder, _ = results
    with pytest.raises(SystemExit):
        distributed.main(["--out", str(folder)])
    assert "only --full writes there" in capsys.readouterr().err


# Small models


def test_small_models_quick_run_writes_quick(results, monkeypatch):
    # SOAP comes from pytorch-optimizer, which the test extras leave out.
    monkeypatch.setattr(small_models, "OPTIMIZERS", ("AdamW", "Muon", "SpectralKron", "SpectralKron, unstacked"))
    folder, pages = results
    small_models.main(["--models", "mlp"])

    record = json.loads((folder / "quick" / "small_models.json").read_text())
    assert pages == []
    (row,) = record["rows"]
    assert row["model"] == "mlp"
    assert (row["weights"], row["shapes"]) == (7, 3)  # five 128 x 128 hidden layers, input and output layers
    assert set(row["median"]) == set(small_models.OPTIMIZERS)
    assert all(value > 0 for value in row["median"].values())
    assert [(row["side"], row["count"]) for row in record["stacks"]] == list(small_models.STACK_CASES)
    assert all(row["stacked"] > 0 and row["alone"] > 0 for row in record["stacks"])
    table = report.small_models_table(record)
    assert any(line.startswith("| mlp | 92170 | 7 (3) |") for line in table)
    assert any(line.startswith("| 20 x (64 x 64) |") for line in table)


def test_small_models_quick_rejects_committed_out(results, capsys):
    folder, _ = results
    with pytest.raises(SystemExit):
        small_models.main(["--out", str(folder)])
    assert "only --full writes there" in capsys.readouterr().err


def test_stacking_off_restores_the_limit():
    limit = small_models.optimizer_module._STACK_MAX_ELEMENTS
    with small_models.stacking_off():
        assert small_models.optimizer_module._STACK_MAX_ELEMENTS == 0
    assert small_models.optimizer_module._STACK_MAX_ELEMENTS == limit
