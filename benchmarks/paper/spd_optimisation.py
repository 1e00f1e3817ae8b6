"""SPD matrix optimisation with indefinite curvature, n = 60.

Reproduces the SPD experiment of Lin et al. (2025), "Spectral-factorized
positive-definite curvature learning for NN training" (Sec. 4.2, Fig. 3 left):
metric nearness ``l(S) = (1/2N) sum_i ‖S Q x_i - x_i‖^2`` with mini-batches
and log-det ``l(S) = tr(S Q) - log det S``, both minimised at ``S* = Q^{-1}``.
Reported: ``l(S) - l(S*)`` against iterations for

* spectral: ``spectral_es.core.spectral_step`` with the curvature
  ``Q_c = -2 D B^T grad(S) B D`` and ``gamma = 0``, which is indefinite;
* RGD: Riemannian gradient descent with the exponential map, and with the
  second-order retraction of Manopt;
* Cholesky: natural-gradient descent on a Cholesky factor of ``S``.

All take the same step size and start and, for metric nearness, see the same
mini-batches. All follow the natural gradient ``-2 beta S grad S`` to first
order, so the claim to test is that their curves coincide. Two starts are
run: ``S_0 = I``, where all eigenvalues are equal and the spectral step is at
its degenerate case, and a random ``S_0`` whose eigenvalues are log-spaced
over the same range as those of ``S*``.

Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python benchmarks/paper/spd_optimisation.py

With every option at its default this rewrites the committed ``results/spd_optimisation.md``
and ``figures/spd_optimisation.png``. Any other setting writes them under the git-ignored
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
from paper_common import (
    add_output_option,
    check_at_least,
    check_positive,
    markdown_table,
    output_root,
    plot_band,
    random_spd,
    save_figure,
    write_report,
)
from spd_baselines import LogDet, MetricNearness, cholesky_ngd_step, riemannian_step

from spectral_es.core import matrix_power, spectral_step

METHODS = ("spectral", "rgd_exp", "rgd_second_order", "cholesky")
LABELS = {
    "spectral": "spectral (library)",
    "rgd_exp": "RGD, exponential map",
    "rgd_second_order": "RGD, 2nd-order retraction",
    "cholesky": "Cholesky-factor NGD",
}
STYLE = {
    "spectral": {"color": "C0", "linewidth": 2.0},
    "rgd_exp": {"color": "C1", "linestyle": "--"},
    "rgd_second_order": {"color": "C3", "linestyle": "-."},
    "cholesky": {"color": "C2", "linestyle": ":"},
}


def make_problem(name: str, rng: np.random.Generator, args: argparse.Namespace):
    """Return the problem with a random ``Q``, eigenvalues log-spaced with geometric mean 1.

    Centring the spectrum on 1 keeps the start ``S_0 = I`` at the scale of
    ``S* = Q^{-1}``, so the first natural-gradient steps are not far larger
    than the later ones.
    """
    half = np.log10(args.condition) / 2
    Q = random_spd(rng, np.logspace(-half, half, args.n))
    if name == "metric_nearness":
        return MetricNearness(Q, rng.standard_normal((args.points, args.n)), args.batch)
    return LogDet(Q)


def make_start(start: str, rng: np.random.Generator, args: argparse.Namespace) -> np.ndarray:
    """Return ``S_0``: the identity, or random with eigenvalues log-spaced like those of ``S*``."""
    if start == "identity":
        return np.eye(args.n)
    half = np.log10(args.condition) / 2
    return random_spd(rng, np.logspace(-half, half, args.n))


def run_method(problem, S0: np.ndarray, method: str, beta: float, iterations: int, seed: int) -> np.ndarray:
    """Return ``l(S_k) - l(S*)`` for k = 0..iterations; the mini-batch stream depends only on ``seed``."""
    rng = np.random.default_rng(seed)
    d, B = np.linalg.eigh(S0)  # spectral factors of S_0, computed once outside the scheme
    S = S0.copy()  # RGD state
    A = np.linalg.cholesky(S0)  # Cholesky factor, S = A A^T
    gaps = np.empty(iterations + 1)
    for k in range(iterations + 1):
        if method == "spectral":
            S = matrix_power(d, B)
        elif method == "cholesky":
            S = A @ A.T
        gaps[k] = problem.loss(S) - problem.optimal_loss
        if k == iterations or not np.isfinite(gaps[k]):
            gaps[k:] = gaps[k]
            break

        # One step of the method from the same (stochastic) gradient.
        if method == "spectral":
            gradient = problem.gradient(S, rng, S_inv=matrix_power(d, B, -1.0))
            curvature = -2 * d[:, None] * (B.T @ gradient @ B) * d[None, :]
            d, B = spectral_step(d, B, curvature, beta, 0.0)
        elif method == "cholesky":
            A = cholesky_ngd_step(A, problem.gradient(S, rng), beta)
        else:
            S = riemannian_step(S, problem.gradient(S, rng), beta, method.removeprefix("rgd_"))
    return gaps


# Gaps below this are rounding of l(S) itself (l(S*) is about 60 for log-det) and are drawn at it.
PLOT_FLOOR = 1e-13


def plot(curves: dict, args: argparse.Namespace) -> None:
    """Draw a panel per start (rows) and problem (columns): median gap over seeds, min-max band."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), constrained_layout=True)
    for ax, ((start, name), by_method) in zip(axes.ravel(), curves.items(), strict=True):
        for method in METHODS:
            runs = np.maximum(by_method[method], PLOT_FLOOR)
            plot_band(ax, np.arange(runs.shape[1]), runs, LABELS[method], **STYLE[method])
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("l(S) − l(S*)")
        beta = getattr(args, name + "_beta")
        ax.set_title(f"{name.replace('_', ' ')}, n = {args.n}, beta = {beta}, S_0 = {start}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"SPD matrix optimisation ({args.seeds} seeds: median, min-max band)")
    save_figure(fig, "spd_optimisation", args.out)


def summarise(curves: dict) -> str:
    """Return a markdown table of the median gap at a few iterations, per problem."""
    body = ""
    for (start, name), by_method in curves.items():
        length = next(iter(by_method.values())).shape[1]
        picks = sorted({0, length // 10, length // 4, length // 2, length - 1})
        rows = [[str(k)] + [f"{np.median(by_method[m][:, k]):.3e}" for m in METHODS] for k in picks]
        rows.append([f"iterations to gap ≤ {REACH:g}"] + [_median_reach(by_method[m]) for m in METHODS])
        body += f"\n{name.replace('_', ' ')}, S_0 = {start}, median l(S) − l(S*):\n\n"
        body += markdown_table(["iteration", *(LABELS[m] for m in METHODS)], rows)
    return body


REACH = 1e-6


def _median_reach(runs: np.ndarray) -> str:
    """Return the median first iteration with gap <= REACH over runs, or "not reached"."""
    below = runs <= REACH
    if not below.any(axis=1).all():
        return "not reached"
    return str(int(np.median(below.argmax(axis=1))))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="matrix size (default 60)")
    parser.add_argument("--condition", type=float, default=10.0, help="condition number of Q (default 10)")
    parser.add_argument("--points", type=int, default=1000, help="data points x_i for metric nearness (default 1000)")
    parser.add_argument("--batch", type=int, default=100, help="mini-batch size for metric nearness (default 100)")
    parser.add_argument(
        "--metric-nearness-beta",
        dest="metric_nearness_beta",
        type=float,
        default=0.02,
        help="step size on metric nearness (default 0.02)",
    )
    parser.add_argument(
        "--log-det-beta", dest="log_det_beta", type=float, default=0.02, help="step size on log-det (default 0.02)"
    )
    parser.add_argument("--iterations", type=int, default=500, help="iterations per run (default 500)")
    parser.add_argument("--seeds", type=int, default=3, help="independent problems per case (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    add_output_option(parser)
    args = parser.parse_args(argv)
    check_at_least(parser, args, n=1, condition=1, points=1, batch=1, iterations=1, seeds=1)
    check_positive(parser, args, "metric_nearness_beta", "log_det_beta")
    args.out = output_root(parser, args)
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    curves = {}
    for start_name in ("identity", "spread"):
        for name in ("metric_nearness", "log_det"):
            beta = getattr(args, name + "_beta")
            runs = {method: [] for method in METHODS}
            for seed in range(args.seed, args.seed + args.seeds):
                rng = np.random.default_rng(seed)
                problem = make_problem(name, rng, args)
                S0 = make_start(start_name, rng, args)
                for method in METHODS:
                    runs[method].append(run_method(problem, S0, method, beta, args.iterations, seed + 1000))
            curves[start_name, name] = {method: np.array(value) for method, value in runs.items()}
    plot(curves, args)
    body = (
        f"n = {args.n}, Q with condition number {args.condition:g}, {args.iterations} iterations, "
        f"{args.seeds} seeds; metric nearness with N = {args.points} points, mini-batches of {args.batch}, "
        f"beta = {args.metric_nearness_beta}; log-det with beta = {args.log_det_beta}.\n" + summarise(curves)
    )
    path = write_report("spd_optimisation", "SPD matrix optimisation", body, time.perf_counter() - start, args.out)
    print(path.read_text())


if __name__ == "__main__":
    main()
