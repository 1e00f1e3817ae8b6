"""Full-matrix curvature learning from gradient outer products (n = 100, gamma = 1).

Reproduces the full-matrix experiment of Lin et al. (2025), "Spectral-factorized
positive-definite curvature learning for NN training" (Sec. 4.1, Fig. 2 left
and Fig. 5). Gradients ``g_k ~ N(0, Sigma)`` are drawn once per seed and fed,
in the same order, to three schemes that all start from the same ``S_0``:

* spectral: ``S = B diag(d) B^T`` moved by ``spectral_es.core.spectral_step``
  with ``Q = (B^T g)(B^T g)^T`` and ``gamma = 1``;
* default: ``S <- (1 - beta) S + beta g g^T``;
* Cholesky: the inverse-free update of a lower-triangular factor ``C`` of
  ``S^{-1} = C C^T`` (Lin et al. 2024).

Fixed-point matching measures the distance of each estimate to
``Sigma = E[g g^T]``, the fixed point of the default update; iterate matching
measures the distance to the default scheme's own iterate at the same step.
Both use the relative Frobenius error and the 2-Wasserstein distance. Two
starts are run: ``S_0 = I`` (all eigenvalues equal, so the spectral step
starts at its degenerate case) and a random SPD ``S_0`` with distinct
eigenvalues in [0.5, 2].

Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python benchmarks/paper/gop_full.py
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from gop_baselines import cholesky_factor_of_inverse, cholesky_matrix, cholesky_step, default_step
from paper_common import (
    markdown_table,
    plot_band,
    random_spd,
    relative_frobenius,
    save_figure,
    spd_sqrt,
    wasserstein2,
    write_report,
)

from spectral_es.core import matrix_power, spectral_step

SCHEMES = ("spectral", "default", "cholesky")
METRICS = ("fixed_frobenius", "fixed_w2", "iterate_frobenius", "iterate_w2")
STYLE = {
    "spectral": {"color": "C0", "linewidth": 2.0},
    "default": {"color": "C1", "linestyle": "--"},
    "cholesky": {"color": "C2", "linestyle": ":"},
}


def make_target(rng: np.random.Generator, n: int, condition: float) -> np.ndarray:
    """Return ``Sigma = U diag(lambda) U^T``, eigenvalues log-spaced from 1 down to 1/condition."""
    return random_spd(rng, np.logspace(0, -np.log10(condition), n))


def make_start(rng: np.random.Generator, n: int, init: str) -> np.ndarray:
    """Return ``S_0``: the identity, or a random SPD matrix with eigenvalues spread over [0.5, 2]."""
    if init == "identity":
        return np.eye(n)
    return random_spd(rng, np.linspace(0.5, 2.0, n))


def run_seed(seed: int, args: argparse.Namespace, init: str) -> tuple[np.ndarray, dict[str, dict[str, list]]]:
    """Run all schemes on one gradient sequence and return the checkpoints and metrics."""
    rng = np.random.default_rng(seed)
    Sigma = make_target(rng, args.n, args.condition)
    sqrt_Sigma = spd_sqrt(Sigma)
    root = np.linalg.cholesky(Sigma)
    S0 = make_start(rng, args.n, init)

    # Same start for every scheme; the spectral factors of S_0 come from eigh
    # once, outside the scheme under test.
    S_default = S0.copy()
    d, B = np.linalg.eigh(S0)
    C = cholesky_factor_of_inverse(S0)

    checkpoints = np.unique(np.geomspace(1, args.steps, args.points).astype(int))
    metrics = {scheme: {metric: [] for metric in METRICS} for scheme in SCHEMES}
    for step in range(1, args.steps + 1):
        g = root @ rng.standard_normal(args.n)
        S_default = default_step(S_default, g, args.beta, 1.0)
        b = B.T @ g
        d, B = spectral_step(d, B, np.outer(b, b), args.beta, 1.0)
        C = cholesky_step(C, g, args.beta, 1.0)
        if step not in checkpoints:
            continue
        estimates = {"spectral": matrix_power(d, B), "default": S_default, "cholesky": cholesky_matrix(C)}
        sqrt_default = spd_sqrt(S_default)
        for scheme, S in estimates.items():
            metrics[scheme]["fixed_frobenius"].append(relative_frobenius(S, Sigma))
            metrics[scheme]["fixed_w2"].append(wasserstein2(Sigma, S, sqrt_Sigma))
            metrics[scheme]["iterate_frobenius"].append(relative_frobenius(S, S_default))
            metrics[scheme]["iterate_w2"].append(wasserstein2(S_default, S, sqrt_default))
    return checkpoints, metrics


def collect(args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """Run every seed for both starts; return checkpoints and arrays [init][scheme][metric] (seeds, points)."""
    results = {}
    for init in ("identity", "random"):
        runs = [run_seed(args.seed + k, args, init) for k in range(args.seeds)]
        checkpoints = runs[0][0]
        results[init] = {
            scheme: {metric: np.array([run[1][scheme][metric] for run in runs]) for metric in METRICS}
            for scheme in SCHEMES
        }
    return checkpoints, results


def plot(checkpoints: np.ndarray, results: dict, args: argparse.Namespace) -> None:
    """Draw the 2 x 4 figure: rows are the starts, columns the four metrics."""
    titles = {
        "fixed_frobenius": "fixed point: ‖S − Σ‖/‖Σ‖",
        "fixed_w2": "fixed point: W2(S, Σ)",
        "iterate_frobenius": "iterates: ‖S − S_default‖/‖S_default‖",
        "iterate_w2": "iterates: W2(S, S_default)",
    }
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5), constrained_layout=True)
    for row, init in enumerate(("identity", "random")):
        for col, metric in enumerate(METRICS):
            ax = axes[row, col]
            for scheme in SCHEMES:
                if metric.startswith("iterate") and scheme == "default":
                    continue
                plot_band(ax, checkpoints, results[init][scheme][metric], scheme, **STYLE[scheme])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{titles[metric]}\nS_0 = {init}", fontsize=10)
            ax.set_xlabel("iteration")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        f"Full-matrix GOP curvature learning, n = {args.n}, beta = {args.beta}, gamma = 1, "
        f"{args.seeds} seeds (median, min-max band)"
    )
    save_figure(fig, "gop_full")


def summarise(checkpoints: np.ndarray, results: dict) -> str:
    """Return markdown tables of the median metrics at a few checkpoints."""
    picks = [i for i, k in enumerate(checkpoints) if k in _round_checkpoints(checkpoints)]
    body = ""
    for init in ("identity", "random"):
        for metric, label in (("fixed_frobenius", "‖S − Σ‖/‖Σ‖"), ("iterate_frobenius", "‖S − S_default‖/‖S_default‖")):
            schemes = [s for s in SCHEMES if not (metric.startswith("iterate") and s == "default")]
            rows = [
                [str(checkpoints[i])] + [f"{np.median(results[init][s][metric][:, i]):.4f}" for s in schemes]
                for i in picks
            ]
            body += f"\nS_0 = {init}, median {label}:\n\n" + markdown_table(["iteration", *schemes], rows)
    return body


def _round_checkpoints(checkpoints: np.ndarray) -> set[int]:
    """Return the checkpoints nearest to 10, 100, 1000, ... and the last one."""
    targets = [10**k for k in range(1, int(np.log10(checkpoints[-1])) + 1)] + [int(checkpoints[-1])]
    return {int(checkpoints[np.argmin(np.abs(checkpoints - t))]) for t in targets}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="matrix size (default 100)")
    parser.add_argument("--beta", type=float, default=1e-3, help="step size of every scheme (default 1e-3)")
    parser.add_argument("--steps", type=int, default=8000, help="gradients per run (default 8000)")
    parser.add_argument("--seeds", type=int, default=3, help="independent runs per start (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--condition", type=float, default=100.0, help="condition number of Sigma (default 100)")
    parser.add_argument("--points", type=int, default=80, help="log-spaced checkpoints per run (default 80)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    checkpoints, results = collect(args)
    plot(checkpoints, results, args)
    seconds = time.perf_counter() - start
    body = (
        f"n = {args.n}, beta = {args.beta}, gamma = 1, {args.steps} steps, {args.seeds} seeds per start, "
        f"Sigma with condition number {args.condition:g}.\n" + summarise(checkpoints, results)
    )
    path = write_report("gop_full", "Full-matrix curvature learning from gradient outer products", body, seconds)
    print(path.read_text())


if __name__ == "__main__":
    main()
