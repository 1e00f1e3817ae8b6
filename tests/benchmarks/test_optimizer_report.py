"""The target verdicts of the optimizer benchmark page, on hand-made records."""

import pytest

pytest.importorskip("matplotlib")

from benchmarks.optimizer import report  # noqa: E402  (after the skip)


def _runs(*test_losses):
    return {"runs": [{"test_loss": loss} for loss in test_losses]}


def _digits(seeds, ours, soap):
    return {"seeds": seeds, "cases": {"convnet/float32": {"SpectralKron": ours, "SOAP": soap}}}


def _row(lines, case):
    (row,) = [line for line in lines if line.startswith(f"| {case} |")]
    return row


def test_convnet_loss_verdict_compares_medians():
    # Medians 0.03 and 0.02: ratio 1.5, above the limit of 1.
    lines = report.targets_section(None, _digits(3, _runs(0.01, 0.03, 0.05), _runs(0.02, 0.02, 0.9)))
    assert _row(lines, "convnet/float32").endswith("| 1.50 (no) |")


def test_seed_check_row_has_own_verdict():
    main = _digits(3, _runs(0.04, 0.04, 0.04), _runs(0.03, 0.03, 0.03))
    check = _digits(10, _runs(*[0.02] * 10), _runs(*[0.025] * 10))
    lines = report.targets_section(None, main, check)
    assert _row(lines, "convnet/float32").endswith("| 1.33 (no) |")
    assert _row(lines, "convnet/float32 (10 seeds)").endswith("| 0.80 (yes) |")


def test_fast_check_row_compares_variant():
    # The fast check's rows compare each of its variants, not the default, with
    # the SOAP of the same record: medians 0.03 and 0.02 give 1.50, 0.018 and 0.02 give 0.90.
    main = _digits(3, _runs(0.02, 0.02, 0.02), _runs(0.04, 0.04, 0.04))
    slow_period, fast_period = report.FAST_VARIANTS
    fast = {
        "seeds": 3,
        "cases": {
            "convnet/float32": {
                slow_period: _runs(0.03, 0.03, 0.03),
                fast_period: _runs(0.018, 0.018, 0.018),
                "SOAP": _runs(0.02, 0.02, 0.02),
            }
        },
    }
    lines = report.targets_section(None, main, None, fast)
    assert _row(lines, "convnet/float32").endswith("| 0.50 (yes) |")
    assert _row(lines, "convnet/float32 (bf16 state, T=10)").endswith("| 1.50 (no) |")
    assert _row(lines, "convnet/float32 (bf16 state, T=4)").endswith("| 0.90 (yes) |")


def test_fast_check_without_a_variant_has_no_row():
    # A fast check run without one of the variants lists only those it ran.
    main = _digits(3, _runs(0.02, 0.02, 0.02), _runs(0.04, 0.04, 0.04))
    fast = {
        "seeds": 3,
        "cases": {
            "convnet/float32": {report.FAST_VARIANTS[0]: _runs(0.03, 0.03, 0.03), "SOAP": _runs(0.02, 0.02, 0.02)}
        },
    }
    lines = report.targets_section(None, main, None, fast)
    assert _row(lines, "convnet/float32 (bf16 state, T=10)").endswith("| 1.50 (no) |")
    assert not [line for line in lines if "T=4" in line]


def test_failed_run_drops_the_ratio():
    ours = {"runs": [{"test_loss": 0.02}, {"test_loss": float("nan"), "failure": "loss became nan at step 3"}]}
    lines = report.targets_section(None, _digits(2, ours, _runs(0.03, 0.03)))
    assert _row(lines, "convnet/float32") == "| convnet/float32 | no | yes |  |"


def test_digits_section_states_the_seed_count():
    record = {
        "environment": {"command": "c", "cpu": "m", "date": "d", "versions": "v"},
        "steps": 300,
        "learning_rates": [0.001, 0.01],
        "seeds": 10,
        "cases": {},
    }
    text = "\n".join(report.digits_section(record))
    assert "run on 10 seeds" in text


@pytest.mark.parametrize(
    ("value", "text"), [(12.02, "0.501 (no)"), (11.98, "0.499 (yes)"), (12.0, "0.50 (yes)"), (13.0, "0.54 (no)")]
)
def test_ratio_near_limit_third_decimal(value, text):
    # 12.02 / 24 = 0.5008 prints as 0.50 with two decimals, which reads as the limit.
    assert report._ratio(value, 24.0, 0.5) == text


def test_digits_section_names_sweep_seeds():
    sweep = [{"lr": lr, "seed": seed, "val_loss": 0.1} for lr in (0.001, 0.01) for seed in (0, 1)]
    run = {"lr": 0.01, "train_loss": 0.01, "test_loss": 0.03, "test_accuracy": 0.99, "seconds": 4.0}
    record = {
        "environment": {"command": "c", "cpu": "m", "date": "d", "versions": "v"},
        "steps": 300,
        "learning_rates": [0.001, 0.01],
        "seeds": 10,
        "cases": {"convnet/float32": {"SOAP": {"sweep": sweep, "runs": [run]}}},
    }
    text = " ".join(report.digits_section(record))
    assert "on seeds 0, 1 and picked by their mean validation loss" in text


def test_distributed_table_ratios():
    record = {
        "ranks": 2,
        "steps": 3,
        "rows": [
            {
                "size": 8,
                "dtype": "float32",
                "weights": 4,
                "equal": True,
                "median": {"every rank refreshes": 0.2, "distributed_refresh": 0.15},
                "mean": {"every rank refreshes": 0.4, "distributed_refresh": 0.1},
            }
        ],
    }
    lines = report.distributed_table(record)
    assert lines[0].startswith("2 gloo processes of one torch thread each")
    assert "| 4 x (8 x 8) | float32 | 200.0 | 150.0 | 0.75 | 0.25 | yes |" in lines
