"""What importing the package loads, and what a missing optional extra reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import spectral_es

ROOT = str(Path(spectral_es.__file__).resolve().parents[1])


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_package_import_loads_no_extras():
    # The ES works with numpy alone: torch, matplotlib, scipy and Dask are optional.
    code = (
        "import sys, spectral_es, spectral_es.core, spectral_es.functions\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'scipy', 'distributed') if m in sys.modules))"
    )
    completed = run_python(code)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_optim_without_torch_names_extra():
    code = "import sys\nsys.modules['torch'] = None\nimport spectral_es.optim"
    completed = run_python(code)

    assert completed.returncode != 0
    assert "spectral_es.optim needs torch" in completed.stderr
    assert "spectral-es[torch]" in completed.stderr
