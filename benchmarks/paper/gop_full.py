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

With every option at its default this rewrites the committed ``results/gop_full.md``
and ``figures/gop_full.png``. Any other setting writes them under the git-ignored
``quick/`` folder instead, or under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
from gop_baselines import cholesky_factor_of_inverse, cholesky_matrix, cholesky_step, default_step
from gop_report import checkpoints, collect, empty_metrics, plot, record, summarise
from paper_common import add_output_option, check_at_least, output_root, random_spd, spd_sqrt, write_report

from spectral_es.core import matrix_power, spectral_step

LABELS = {"spectral": "spectral (library)", "default": "default", "cholesky": "Cholesky (inverse-free)"}
STYLES = {
    "spectral": {"color": "C0", "linewidth": 2.0},
    "default": {"color": "C1", "linestyle": "--"},
    "cholesky": {"color": "C2", "linestyle": ":"},
}


def make_target(rng: np.random.Generator, n: int, condition: float) -> np.ndarray:
    """Return ``Sigma = U diag(lambda) U^T``, eigenvalues log-spaced from 1 down to 1/condition."""
    return random_spd(rng, np.logspace(0, -np.log10(condition), n))


def make_start(rng: np.random.Generator, n: int, start: str) -> np.ndarray:
    """Return ``S_0``: the identity, or a random SPD matrix with eigenvalues spread over [0.5, 2]."""
    if start == "identity":
        return np.eye(n)
    return random_spd(rng, np.linspace(0.5, 2.0, n))


def run_seed(seed: int, args: argparse.Namespace, start: str) -> tuple[np.ndarray, dict[str, dict[str, list]]]:
    """Run all schemes on one gradient sequence; return the checkpoints and their metrics."""
    rng = np.random.default_rng(seed)
    Sigma = make_target(rng, args.n, args.condition)
    sqrt_Sigma = spd_sqrt(Sigma)
    root = np.linalg.cholesky(Sigma)
    S0 = make_start(rng, args.n, start)

    # Same start for every scheme; the spectral factors of S_0 come from eigh
    # once, outside the scheme under test.
    S_default = S0.copy()
    d, B = np.linalg.eigh(S0)
    C = cholesky_factor_of_inverse(S0)

    steps = checkpoints(args.steps, args.points)
    metrics = empty_metrics(tuple(LABELS))
    for step in range(1, args.steps + 1):
        g = root @ rng.standard_normal(args.n)
        S_default = default_step(S_default, g, args.beta, 1.0)
        b = B.T @ g
        d, B = spectral_step(d, B, np.outer(b, b), args.beta, 1.0)
        C = cholesky_step(C, g, args.beta, 1.0)
        if step in steps:
            estimates = {"spectral": matrix_power(d, B), "default": S_default, "cholesky": cholesky_matrix(C)}
            record(metrics, estimates, Sigma, sqrt_Sigma, S_default)
    return steps, metrics


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="matrix size (default 100)")
    parser.add_argument("--beta", type=float, default=1e-3, help="step size of every scheme (default 1e-3)")
    parser.add_argument("--steps", type=int, default=8000, help="gradients per run (default 8000)")
    parser.add_argument("--seeds", type=int, default=3, help="independent runs per start (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--condition", type=float, default=100.0, help="condition number of Sigma (default 100)")
    parser.add_argument("--points", type=int, default=80, help="log-spaced checkpoints per run (default 80)")
    add_output_option(parser)
    args = parser.parse_args(argv)
    check_at_least(parser, args, n=1, steps=1, seeds=1, points=1, condition=1)
    # The default update S <- (1 - beta) S + beta g g^T stays positive definite only for beta < 1.
    if not 0 < args.beta < 1:
        parser.error(f"--beta must be in (0, 1), got {args.beta}")
    args.out = output_root(parser, args)
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    steps, results = collect(run_seed, args, tuple(LABELS))
    title = (
        f"Full-matrix GOP curvature learning, n = {args.n}, beta = {args.beta}, gamma = 1, "
        f"{args.seeds} seeds (median, min-max band)"
    )
    plot(steps, results, LABELS, STYLES, title, "gop_full", args.out)
    body = (
        f"n = {args.n}, beta = {args.beta}, gamma = 1, {args.steps} steps, {args.seeds} seeds per start, "
        f"Sigma with condition number {args.condition:g}.\n" + summarise(steps, results, LABELS)
    )
    path = write_report(
        "gop_full",
        "Full-matrix curvature learning from gradient outer products",
        body,
        time.perf_counter() - start,
        args.out,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
