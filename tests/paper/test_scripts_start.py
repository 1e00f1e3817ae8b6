"""Each paper script starts as a file, ``python benchmarks/paper/<name>.py``, the way run_all.sh runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["gop_full", "gop_kronecker", "spd_optimisation", "gradient_free", "cayley_training"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs_as_file(script):
    # Run from the repository root with the script's own folder first on
    # sys.path, as `python benchmarks/paper/<script>.py` does: an import that
    # only works under `python -m` fails here.
    pytest.importorskip("matplotlib")
    if script == "cayley_training":
        pytest.importorskip("torch")
    completed = subprocess.run(
        [sys.executable, f"benchmarks/paper/{script}.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout
