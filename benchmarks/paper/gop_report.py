"""Bookkeeping, figure and tables shared by the two gradient-outer-product experiments.

Each experiment runs several schemes on one gradient sequence and, at
log-spaced checkpoints, measures every estimate ``S`` against the fixed point
``Sigma`` and against the default scheme's iterate ``S_default``, by relative
Frobenius error and 2-Wasserstein distance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from paper_common import markdown_table, plot_band, relative_frobenius, save_figure, spd_sqrt, wasserstein2

METRICS = ("fixed_frobenius", "fixed_w2", "iterate_frobenius", "iterate_w2")
TITLES = {
    "fixed_frobenius": "fixed point: ‖S − Σ‖/‖Σ‖",
    "fixed_w2": "fixed point: W2(S, Σ)",
    "iterate_frobenius": "iterates: ‖S − S_default‖/‖S_default‖",
    "iterate_w2": "iterates: W2(S, S_default)",
}
STARTS = ("identity", "random")


def checkpoints(steps: int, points: int) -> np.ndarray:
    """Return about ``points`` log-spaced step numbers in [1, steps], unique and sorted."""
    return np.unique(np.geomspace(1, steps, points).astype(int))


def record(
    metrics: dict, estimates: dict[str, np.ndarray], Sigma: np.ndarray, sqrt_Sigma: np.ndarray, S_default: np.ndarray
) -> None:
    """Append the four metrics of every estimate to ``metrics[scheme][metric]``."""
    sqrt_default = spd_sqrt(S_default)
    for scheme, S in estimates.items():
        metrics[scheme]["fixed_frobenius"].append(relative_frobenius(S, Sigma))
        metrics[scheme]["fixed_w2"].append(wasserstein2(Sigma, S, sqrt_Sigma))
        metrics[scheme]["iterate_frobenius"].append(relative_frobenius(S, S_default))
        metrics[scheme]["iterate_w2"].append(wasserstein2(S_default, S, sqrt_default))


def empty_metrics(schemes: tuple[str, ...]) -> dict[str, dict[str, list]]:
    """Return ``{scheme: {metric: []}}`` for :func:`record` to fill."""
    return {scheme: {metric: [] for metric in METRICS} for scheme in schemes}


def collect(run_seed: Callable, args, schemes: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """Run ``run_seed(seed, args, start)`` for every seed and start.

    Returns the checkpoints and ``results[start][scheme][metric]``, arrays of
    shape (seeds, checkpoints).
    """
    results = {}
    for start in STARTS:
        runs = [run_seed(args.seed + k, args, start) for k in range(args.seeds)]
        results[start] = {
            scheme: {metric: np.array([run[1][scheme][metric] for run in runs]) for metric in METRICS}
            for scheme in schemes
        }
    return runs[0][0], results


def plot(
    steps: np.ndarray,
    results: dict,
    labels: dict[str, str],
    styles: dict[str, dict],
    title: str,
    name: str,
    root: Path,
) -> None:
    """Draw the 2 x 4 figure (rows: starts, columns: metrics) and save it as ``root/figures/<name>.png``.

    The default scheme is left out of the iterate panels, where it is the reference.
    """
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5), constrained_layout=True)
    for row, start in enumerate(STARTS):
        for col, metric in enumerate(METRICS):
            ax = axes[row, col]
            for scheme, label in labels.items():
                if metric.startswith("iterate") and scheme == "default":
                    continue
                plot_band(ax, steps, results[start][scheme][metric], label, **styles[scheme])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{TITLES[metric]}\nS_0 = {start}", fontsize=10)
            ax.set_xlabel("iteration")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, name, root)


def summarise(steps: np.ndarray, results: dict, labels: dict[str, str]) -> str:
    """Return markdown tables of the median relative Frobenius errors at a few checkpoints.

    The rows are the checkpoints nearest to steps 10, 100, 1000, ... and the
    last step, so with log-spaced checkpoints a row can read 94 or 1032.
    """
    targets = [10**k for k in range(1, int(np.log10(steps[-1])) + 1)] + [int(steps[-1])]
    picks = sorted({int(np.argmin(np.abs(steps - target))) for target in targets})
    body = ""
    for start in STARTS:
        for metric, quantity in (
            ("fixed_frobenius", "‖S − Σ‖/‖Σ‖"),
            ("iterate_frobenius", "‖S − S_default‖/‖S_default‖"),
        ):
            schemes = [s for s in labels if not (metric.startswith("iterate") and s == "default")]
            rows = [
                [str(steps[i])] + [f"{np.median(results[start][s][metric][:, i]):.4f}" for s in schemes] for i in picks
            ]
            header = ["iteration", *(labels[s] for s in schemes)]
            body += f"\nS_0 = {start}, median {quantity}:\n\n" + markdown_table(header, rows)
    return body
