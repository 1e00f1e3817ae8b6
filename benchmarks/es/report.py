"""Tables and figures of the results page, computed from :class:`RunRecord` lists.

Conventions of every table: a cell is the median of the evaluations to
target over the successful runs, followed by ``successes/runs`` when not all
runs succeeded ("-" when none did); a ratio compares two such medians and is
marked "*" when either method failed in some run.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from benchmarks.es.harness import RunRecord  # noqa: E402
from benchmarks.es.timing import TimingRow  # noqa: E402

__all__ = [
    "Cell",
    "group",
    "markdown_table",
    "plot_convergence",
    "plot_timing",
]


class Cell:
    """The runs of one method on one ``(function, n)``.

    Attributes:
        runs: Number of runs.
        successes: Runs that reached the target.
        median: Median evaluations of the successful runs (NaN if none).
    """

    def __init__(self, records: Sequence[RunRecord]) -> None:
        self.records = list(records)
        self.runs = len(self.records)
        solved = [record.evals for record in self.records if record.success]
        self.successes = len(solved)
        self.median = float(np.median(solved)) if solved else math.nan

    @property
    def average_runtime(self) -> float:
        """Return COCO's average runtime: the evaluations of all runs over the successes (inf if none).

        A successful run counts its evaluations to target, a failed one all
        its evaluations, up to its own stop or the budget. This is the
        expected cost of reaching the target by restarting the method
        independently until one run succeeds (Hansen et al. 2016, "COCO:
        Performance Assessment").
        """
        if self.successes == 0:
            return math.inf
        return sum(record.evals for record in self.records) / self.successes

    @property
    def all_solved(self) -> bool:
        """Whether every run reached the target."""
        return self.runs > 0 and self.successes == self.runs

    def __str__(self) -> str:
        if self.successes == 0:
            return f"- (0/{self.runs})"
        text = f"{self.median:.0f}"
        return text if self.all_solved else f"{text} ({self.successes}/{self.runs})"


Groups = dict[tuple[str, str, int], Cell]
"""Cells by ``(method, function, n)``."""


def group(records: Iterable[RunRecord]) -> Groups:
    """Return the records gathered into cells by ``(method, function, n)``."""
    buckets: dict[tuple[str, str, int], list[RunRecord]] = defaultdict(list)
    for record in records:
        buckets[(record.method, record.function, record.n)].append(record)
    return {key: Cell(value) for key, value in buckets.items()}


def ratio(cells: Groups, method: str, reference: str, function: str, n: int) -> float:
    """Return the ratio of the medians of ``method`` and ``reference``, NaN unless both solved some run."""
    a, b = cells.get((method, function, n)), cells.get((reference, function, n))
    if a is None or b is None or not (a.successes and b.successes):
        return math.nan
    return a.median / b.median


def format_ratio(cells: Groups, method: str, reference: str, function: str, n: int) -> str:
    """Return the ratio with two decimals, a "*" when a run of either failed, or "-"."""
    value = ratio(cells, method, reference, function, n)
    if math.isnan(value):
        return "-"
    complete = cells[(method, function, n)].all_solved and cells[(reference, function, n)].all_solved
    return f"{value:.2f}" if complete else f"{value:.2f}*"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Return a markdown table with ``header`` and ``rows`` (cells formatted by ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def best_so_far(trace: Sequence[tuple[int, float]], grid: np.ndarray) -> np.ndarray:
    """Return the best value at each evaluation count of ``grid`` (NaN before the first call)."""
    if not trace:
        return np.full(grid.shape, np.nan)
    nfev, fbest = np.asarray(trace, dtype=float).T
    index = np.searchsorted(nfev, grid, side="right") - 1
    return np.where(index >= 0, fbest[np.maximum(index, 0)], np.nan)


def plot_convergence(
    cells: Groups, function: str, dims: Sequence[int], methods: Sequence[str], f_target: float, path: Path
) -> None:
    """Plot best f against evaluations, median and 25-75 % band over seeds, one panel per n."""
    figure, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False)
    # One colour per method in every panel, and one legend for all panels.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {method: palette[i % len(palette)] for i, method in enumerate(methods)}
    handles = {}
    for axis, n in zip(axes[0], dims, strict=True):
        for method in methods:
            cell = cells.get((method, function, n))
            if cell is None:
                continue
            end = max(record.trace[-1][0] if record.trace else 1 for record in cell.records)
            grid = np.unique(np.geomspace(1, end, 200).round())
            # Values below the target are clipped to it: the runs stop there.
            values = np.array([best_so_far(record.trace, grid) for record in cell.records])
            values = np.maximum(values, f_target)
            with warnings.catch_warnings():
                # Grid points before a run's first call are NaN in every run.
                warnings.simplefilter("ignore", RuntimeWarning)
                low, median, high = np.nanpercentile(values, [25, 50, 75], axis=0)
            (handles[method],) = axis.plot(grid, median, color=colors[method], label=method)
            axis.fill_between(grid, low, high, color=colors[method], alpha=0.2)
        axis.axhline(f_target, color="grey", linewidth=0.8, linestyle=":")
        axis.set(xscale="log", yscale="log", title=f"{function}, n = {n}", xlabel="evaluations")
    axes[0][0].set_ylabel("best f (median, 25-75 %)")
    figure.tight_layout()
    if handles:
        ordered = [method for method in methods if method in handles]
        figure.legend([handles[m] for m in ordered], ordered, loc="outside right center", fontsize="small")
        figure.subplots_adjust(right=1 - 1.6 / figure.get_figwidth())
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_timing(rows: Sequence[TimingRow], methods: Sequence[str], path: Path) -> None:
    """Plot seconds per generation and its ratio to pycma against n."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    dims = [row.n for row in rows]
    for method in methods:
        left.plot(dims, [row.seconds[method] for row in rows], marker="o", label=method)
        right.plot(dims, [row.ratio(method) for row in rows], marker="o", label=method)
    left.set(xscale="log", yscale="log", xlabel="n", ylabel="ask + tell seconds per generation")
    right.set(xscale="log", yscale="log", xlabel="n", ylabel="ratio to pycma (same run)")
    right.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    left.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
