"""Numbers that the guides and the optimizer's comments quote from the optimizer benchmark records."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "benchmarks" / "optimizer" / "results"


def stack_ratios() -> list[str]:
    """Return the stacked / one-by-one step times of small_models.json, as the results page rounds them."""
    record = json.loads((RECORDS / "small_models.json").read_text(encoding="utf-8"))
    return [f"{row['stacked'] / row['alone']:.2f}" for row in record["stacks"]]


def quoted_ratios(text: str, anchor: str) -> list[str]:
    """Return the two-decimal numbers of the paragraph of ``text`` that contains ``anchor``."""
    (paragraph,) = [block for block in re.split(r"\n\s*\n", text) if anchor in block]
    return re.findall(r"\b\d\.\d\d\b", paragraph)


def test_stacking_ratios_match_record():
    # Both texts justify the 128 x 128 stacking limit with the measured
    # ratios, so a rerun of small_models.py must update them.
    expected = stack_ratios()
    algorithm = (ROOT / "docs" / "algorithm.md").read_text(encoding="utf-8")
    optimizer = (ROOT / "spectral_es" / "optim" / "optimizer.py").read_text(encoding="utf-8")

    assert quoted_ratios(algorithm, "step of 20 weights of 64") == expected
    assert quoted_ratios(optimizer, "_STACK_MAX_ELEMENTS = ") == expected
