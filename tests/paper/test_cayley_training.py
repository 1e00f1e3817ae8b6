"""The rotation timing of cayley_training.py uses the generator norm that the training run caps at."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("matplotlib")
torch = pytest.importorskip("torch")

import cayley_training  # noqa: E402  (after the skips)
import paper_common  # noqa: E402


def test_rotation_inputs_have_requested_norm():
    inputs = cayley_training.rotation_inputs(16, 0.1)
    assert set(inputs) == set(cayley_training.CONFIGS)
    for config, (B, N) in inputs.items():
        B64, N64 = B.double(), N.double()
        # Casting rounds each entry by up to 2^-9 (bfloat16) or 2^-24 (float32) relative,
        # so the norm moves by less than 1e-2 or 1e-6. The cast basis' defect
        # ‖BᵀB − I‖_F sums such errors over 16 x 16 entries, about sqrt(16 * 16) times
        # one rounding (0.03 and 1e-6). Measured: 1.1e-2 and 9.5e-7.
        bfloat16 = B.dtype == torch.bfloat16
        norm_tolerance, defect_bound = (1e-2, 0.1) if bfloat16 else (1e-6, 1e-5)
        defect = torch.linalg.norm(B64.T @ B64 - torch.eye(16, dtype=torch.float64)).item()
        assert torch.linalg.norm(N64).item() == pytest.approx(0.1, rel=norm_tolerance), config
        assert torch.equal(N64, -N64.T), config
        assert defect < defect_bound, config


def test_rotation_timing_follows_generator_cap(tmp_path, monkeypatch):
    # A tiny run: the training settings only need to be valid, and the spy
    # replaces the timing, so the test checks which cap main() passes on.
    monkeypatch.setattr(paper_common, "HERE", tmp_path / "committed")
    monkeypatch.setattr(paper_common, "QUICK", tmp_path / "quick")
    caps = []

    def spy(n, repeats, generator_norm):
        caps.append(generator_norm)
        return {config: 1e-3 for config in cayley_training.CONFIGS}

    monkeypatch.setattr(cayley_training, "time_rotations", spy)
    argv = ["--width", "4", "--steps", "2", "--points", "16", "--test-points", "16", "--seeds", "1"]
    argv += ["--repeats", "1", "--rotation-sizes", "8", "--max-generator-norm", "0.1"]
    monkeypatch.setattr(sys, "argv", ["cayley_training.py", *argv])

    cayley_training.main()

    assert caps == [0.1]
    assert not (tmp_path / "committed").exists()
