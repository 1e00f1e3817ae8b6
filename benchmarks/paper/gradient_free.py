"""Gradient-free optimisation: SpectralES against two NES baselines written in numpy.

Reproduces the gradient-free experiment of Lin et al. (2025), "Spectral-factorized
positive-definite curvature learning for NN training" (Sec. 4.3, Fig. 3 right
and Fig. 7) on the Ackley, Rosenbrock, Griewank, Bohachevsky and Schaffer
functions of its appendix B. Methods, all with the default population
``4 + floor(3 ln n)`` and, except where stated, no restarts:

* SpectralES, default preset (CMA-style weights, cumulative step size and an
  evolution path fed to the spectral step), once as a single run;
* the same through ``spectral_es.minimize`` with IPOP restarts within the
  same budget. The population doubles after each stop that is not final;
* SpectralES, ``preset="xnes"``: xNES written in spectral coordinates, the
  scheme the paper itself runs;
* NES on the plain covariance (Wierstra et al. 2008) and NES on a Cholesky
  factor (Glasmachers et al. 2010; Fukushima et al. 2011), from
  :mod:`nes_baselines`, with the xNES utilities and learning rates.

Per seed all methods start from the same random ``x0`` (uniform in the box
``[-box, box]^n``) with the same ``sigma0``. Reported: the best objective
value found against evaluations (median over seeds), the median final best
value with the number of runs that reached ``--f-target``, and the median
evaluations those runs needed.

Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python benchmarks/paper/gradient_free.py

With every option at its default this rewrites the committed ``results/gradient_free.md``
and ``figures/gradient_free.png``. Any other setting writes them under the git-ignored
``quick/`` folder instead, or under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from nes_baselines import CholeskyNES, FullCovarianceNES
from paper_common import (
    add_output_option,
    check_at_least,
    check_positive,
    markdown_table,
    output_root,
    plot_band,
    save_figure,
    write_report,
)

from spectral_es import SpectralES, minimize
from spectral_es.functions import ackley, bohachevsky, griewank, rosenbrock, schaffer

FUNCTIONS = {
    "ackley": ackley,
    "rosenbrock": rosenbrock,
    "griewank": griewank,
    "bohachevsky": bohachevsky,
    "schaffer": schaffer,
}
METHODS = ("spectral_es", "spectral_ipop", "spectral_xnes", "nes_full", "nes_cholesky")
LABELS = {
    "spectral_es": "SpectralES (default)",
    "spectral_ipop": "minimize, IPOP restarts",
    "spectral_xnes": "SpectralES, preset='xnes'",
    "nes_full": "NES, full covariance",
    "nes_cholesky": "NES, Cholesky factor",
}
STYLE = {
    "spectral_es": {"color": "C0", "linewidth": 2.0},
    "spectral_ipop": {"color": "C9", "linewidth": 1.5, "linestyle": (0, (5, 1))},
    "spectral_xnes": {"color": "C4", "linewidth": 1.5},
    "nes_full": {"color": "C1", "linestyle": "--"},
    "nes_cholesky": {"color": "C2", "linestyle": ":"},
}


def run_spectral(fun, x0: np.ndarray, sigma0: float, preset: str, seed: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Run SpectralES by ask/tell; return evaluations and best f after each iteration."""
    es = SpectralES(x0, sigma0, seed=seed, preset=preset, max_evals=args.max_evals, f_target=args.f_target)
    evals, best = [], []
    while not es.stop():
        X = es.ask()
        es.tell(X, fun(X))
        evals.append(es.nfev)
        best.append(es.fbest)
    return np.array(evals), np.array(best)


class BestRecorder:
    """Vectorized objective wrapper that records the best value after every call."""

    def __init__(self, fun) -> None:
        self.fun = fun
        self.nfev = 0
        self.best = np.inf
        self.evals: list[int] = []
        self.history: list[float] = []

    def __call__(self, X: np.ndarray) -> np.ndarray:
        values = self.fun(X)
        self.nfev += len(X)
        self.best = min(self.best, float(np.min(values)))
        self.evals.append(self.nfev)
        self.history.append(self.best)
        return values


def run_ipop(fun, x0: np.ndarray, sigma0: float, seed: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Run ``spectral_es.minimize`` with up to 9 IPOP restarts; return evaluations and best f per generation."""
    recorder = BestRecorder(fun)
    minimize(
        recorder, x0, sigma0, vectorized=True, restarts=9, seed=seed, max_evals=args.max_evals, f_target=args.f_target
    )
    return np.array(recorder.evals), np.array(recorder.history)


def run_method(method: str, fun, x0: np.ndarray, sigma0: float, seed: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Run one method from ``x0``; return evaluations and best f after each iteration."""
    if method == "spectral_es":
        return run_spectral(fun, x0, sigma0, "cma", seed, args)
    if method == "spectral_ipop":
        return run_ipop(fun, x0, sigma0, seed, args)
    if method == "spectral_xnes":
        return run_spectral(fun, x0, sigma0, "xnes", seed, args)
    strategy = {"nes_full": FullCovarianceNES, "nes_cholesky": CholeskyNES}[method]
    return strategy(x0, sigma0, seed=seed).run(fun, args.max_evals, args.f_target)


def on_grid(evals: np.ndarray, best: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Return the best f reached by each evaluation count of ``grid`` (carried forward after a stop)."""
    index = np.searchsorted(evals, grid, side="right") - 1
    values = np.where(index >= 0, best[np.clip(index, 0, None)], np.inf)
    return np.maximum(values, PLOT_FLOOR)


# Values below this are drawn at it, so that an exact 0 stays visible on a log axis.
PLOT_FLOOR = 1e-12


def plot(grid: np.ndarray, curves: dict, args: argparse.Namespace) -> None:
    """Draw one panel per function (two rows of three) and the legend in the last cell."""
    columns = 3
    rows = -(-(len(args.functions) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(14, 4.2 * rows), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes.ravel(), args.functions, strict=False):
        for method in METHODS:
            plot_band(ax, grid, np.array(curves[name][method]), LABELS[method], **STYLE[method])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{name}, n = {args.n}")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best f so far")
        ax.grid(True, which="both", alpha=0.3)
    legend_ax = axes.ravel()[len(args.functions)]
    legend_ax.legend(*axes[0, 0].get_legend_handles_labels(), loc="center")
    for ax in axes.ravel()[len(args.functions) :]:
        ax.axis("off")
    fig.suptitle(f"Gradient-free optimisation, {args.seeds} seeds (median, min-max band)")
    save_figure(fig, "gradient_free", args.out)


def summarise(curves: dict, reached: dict, args: argparse.Namespace) -> str:
    """Return markdown tables: median final best f, and median evaluations to f_target."""
    final_rows, reach_rows = [], []
    for name in args.functions:
        final, reach = [name], [name]
        for method in METHODS:
            last = np.array(curves[name][method])[:, -1]
            final.append(f"{np.median(last):.2e} ({len(reached[name][method])}/{last.size})")
            counts = reached[name][method]
            reach.append(f"{int(np.median(counts))}" if counts else "–")
        final_rows.append(final)
        reach_rows.append(reach)
    header = ["function", *(LABELS[m] for m in METHODS)]
    return (
        "\nMedian best f after the budget (runs that reached f_target):\n\n"
        + markdown_table(header, final_rows)
        + "\nMedian evaluations to f_target, over the runs that reached it:\n\n"
        + markdown_table(header, reach_rows)
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="dimension (default 10)")
    parser.add_argument(
        "--max-evals", dest="max_evals", type=int, default=20000, help="evaluations per run (default 20000)"
    )
    parser.add_argument(
        "--f-target",
        dest="f_target",
        type=float,
        default=1e-10,
        help="stop once the best value is at or below this (default 1e-10)",
    )
    parser.add_argument("--box", type=float, default=3.0, help="x0 is uniform in [-box, box]^n (default 3)")
    parser.add_argument("--sigma0", type=float, default=1.0, help="initial step size (default 1)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per function and method (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--functions",
        nargs="+",
        default=list(FUNCTIONS),
        choices=list(FUNCTIONS),
        help="functions to run (default: all five)",
    )
    add_output_option(parser)
    args = parser.parse_args(argv)
    # The evaluation grid of the figure and tables starts at 10 evaluations.
    check_at_least(parser, args, n=1, max_evals=10, seeds=1)
    check_positive(parser, args, "box", "sigma0")
    args.out = output_root(parser, args)
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    grid = np.unique(np.geomspace(10, args.max_evals, 200).astype(int))
    curves = {name: {method: [] for method in METHODS} for name in args.functions}
    reached = {name: {method: [] for method in METHODS} for name in args.functions}
    for name in args.functions:
        for seed in range(args.seed, args.seed + args.seeds):
            x0 = np.random.default_rng(seed).uniform(-args.box, args.box, args.n)
            for method in METHODS:
                evals, best = run_method(method, FUNCTIONS[name], x0, args.sigma0, seed, args)
                curves[name][method].append(on_grid(evals, best, grid))
                hits = np.flatnonzero(best <= args.f_target)
                if hits.size:
                    reached[name][method].append(int(evals[hits[0]]))

    plot(grid, curves, args)
    body = (
        f"n = {args.n}, {args.max_evals} evaluations per run, f_target = {args.f_target:g}, "
        f"x0 uniform in [-{args.box:g}, {args.box:g}]^n, sigma0 = {args.sigma0:g}, {args.seeds} seeds.\n"
        + summarise(curves, reached, args)
    )
    path = write_report("gradient_free", "Gradient-free optimisation", body, time.perf_counter() - start, args.out)
    print(path.read_text())


if __name__ == "__main__":
    main()
