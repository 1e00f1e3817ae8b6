"""Make the paper-reproduction baselines under ``benchmarks/paper`` importable."""

import sys
from pathlib import Path

BASELINES = Path(__file__).resolve().parents[2] / "benchmarks" / "paper"
if str(BASELINES) not in sys.path:
    sys.path.insert(0, str(BASELINES))
