"""The COCO/BBOB example runs SpectralES on the suite and writes observer data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("cocoex", reason="needs coco-experiment (pip install coco-experiment)")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "coco_bbob.py"


def test_example_solves_sphere_and_writes_data(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("coco_bbob", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.chdir(tmp_path)  # COCO writes under exdata/ in the working directory

    # The bbob sphere (f1) in 2-D takes a few hundred evaluations of 2000.
    example.main(["--dims", "2", "--functions", "1", "--instances", "1-2", "--budget", "1000"])

    output = capsys.readouterr().out
    assert "2 of 2 problems solved" in output
    assert list((tmp_path / "exdata").rglob("*.info")), "the COCO observer wrote no .info file"
