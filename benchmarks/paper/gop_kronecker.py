"""Kronecker-structured curvature learning from gradient outer products (9 x 11 weight, gamma = 1).

Reproduces the Kronecker experiment of Lin et al. (2025), "Spectral-factorized
positive-definite curvature learning for NN training" (Sec. 4.1, Fig. 2 right
and Fig. 6). Gradients ``g_k ~ N(0, Sigma)`` of a 9 x 11 weight, with an
unstructured 99 x 99 ``Sigma``, are fed in the same order to

* spectral: ``S = alpha (S_C ⊗ S_K)``, factors ``B_l diag(d_l) B_l^T``, moved by
  ``spectral_es.core.kron.kron_step`` with ``gamma = 1``;
* Cholesky: the structured inverse-free update of ``S^{-1} = (K_C K_C^T) ⊗ (K_K K_K^T)``;
* projection: the nearest Kronecker product of the full default update at
  every step (Van Loan and Pitsianis 1993), which stores a 99 x 99 matrix;
* default: the unstructured ``S <- (1 - beta) S + beta g g^T``, the reference.

All start from the same Kronecker-structured ``S_0``: the identity, or
``S_C0 ⊗ S_K0`` with random factors whose eigenvalues spread over [0.7, 1.4].
Fixed-point matching compares each estimate with ``Sigma`` and iterate
matching with the default scheme's iterate. A Kronecker product can reach
neither, so every structured scheme levels off at the structural gap.

Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python benchmarks/paper/gop_kronecker.py

With every option at its default this rewrites the committed ``results/gop_kronecker.md``
and ``figures/gop_kronecker.png``. Any other setting writes them under the git-ignored
``quick/`` folder instead, or under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
from gop_baselines import default_step
from gop_report import checkpoints, collect, empty_metrics, plot, record, summarise
from kron_baselines import kron_cholesky_matrix, kron_cholesky_step, projection_step
from paper_common import add_output_option, check_at_least, output_root, random_spd, spd_sqrt, write_report

from spectral_es.core import matrix_power
from spectral_es.core.kron import kron_step

LABELS = {
    "spectral": "spectral Kronecker (library)",
    "cholesky": "Kronecker Cholesky",
    "projection": "projection (nearest Kronecker)",
    "default": "default, unstructured",
}
STYLES = {
    "spectral": {"color": "C0", "linewidth": 2.0},
    "cholesky": {"color": "C2", "linestyle": ":"},
    "projection": {"color": "C3", "linestyle": "-."},
    "default": {"color": "C1", "linestyle": "--"},
}


def make_start(rng: np.random.Generator, n: int, m: int, start: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the factors ``(S_C0, S_K0)`` of the structured start."""
    if start == "identity":
        return np.eye(n), np.eye(m)
    spread = np.sqrt(2.0)
    return (random_spd(rng, np.geomspace(1 / spread, spread, n)), random_spd(rng, np.geomspace(1 / spread, spread, m)))


def spectral_state(S_C: np.ndarray, S_K: np.ndarray) -> list:
    """Return ``[d_C, B_C, d_K, B_K, alpha]`` with ``prod(d_l) = 1``, by ``eigh`` once at the start."""
    d_C, B_C = np.linalg.eigh(S_C)
    d_K, B_K = np.linalg.eigh(S_K)
    scale_C, scale_K = np.exp(np.mean(np.log(d_C))), np.exp(np.mean(np.log(d_K)))
    return [d_C / scale_C, B_C, d_K / scale_K, B_K, scale_C * scale_K]


def run_seed(seed: int, args: argparse.Namespace, start: str) -> tuple[np.ndarray, dict[str, dict[str, list]]]:
    """Run all schemes on one gradient sequence; return the checkpoints and their metrics."""
    rng = np.random.default_rng(seed)
    n, m = args.rows, args.columns
    Sigma = random_spd(rng, np.logspace(0, -np.log10(args.condition), n * m))
    sqrt_Sigma = spd_sqrt(Sigma)
    root = np.linalg.cholesky(Sigma)
    S_C0, S_K0 = make_start(rng, n, m, start)

    # Same structured start for every scheme.
    S_default = np.kron(S_C0, S_K0)
    state = spectral_state(S_C0, S_K0)
    K_C = np.linalg.cholesky(np.linalg.inv(S_C0))
    K_K = np.linalg.cholesky(np.linalg.inv(S_K0))
    P_C, P_K = S_C0.copy(), S_K0.copy()

    steps = checkpoints(args.steps, args.points)
    metrics = empty_metrics(tuple(LABELS))
    for step in range(1, args.steps + 1):
        g = root @ rng.standard_normal(n * m)
        G = g.reshape(n, m)
        S_default = default_step(S_default, g, args.beta, 1.0)
        state = list(kron_step(*state, G, args.beta, 1.0))
        K_C, K_K = kron_cholesky_step(K_C, K_K, G, args.beta, 1.0)
        P_C, P_K = projection_step(P_C, P_K, G, args.beta, 1.0)
        if step in steps:
            d_C, B_C, d_K, B_K, alpha = state
            estimates = {
                "spectral": alpha * np.kron(matrix_power(d_C, B_C), matrix_power(d_K, B_K)),
                "cholesky": kron_cholesky_matrix(K_C, K_K),
                "projection": np.kron(P_C, P_K),
                "default": S_default,
            }
            record(metrics, estimates, Sigma, sqrt_Sigma, S_default)
    return steps, metrics


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=9, help="rows n of the weight, size of S_C (default 9)")
    parser.add_argument("--columns", type=int, default=11, help="columns m of the weight, size of S_K (default 11)")
    parser.add_argument("--beta", type=float, default=1e-3, help="step size of every scheme (default 1e-3)")
    parser.add_argument("--steps", type=int, default=8000, help="gradients per run (default 8000)")
    parser.add_argument("--seeds", type=int, default=3, help="independent runs per start (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--condition", type=float, default=100.0, help="condition number of Sigma (default 100)")
    parser.add_argument("--points", type=int, default=80, help="log-spaced checkpoints per run (default 80)")
    add_output_option(parser)
    args = parser.parse_args(argv)
    check_at_least(parser, args, rows=1, columns=1, steps=1, seeds=1, points=1, condition=1)
    # The default update S <- (1 - beta) S + beta g g^T stays positive definite only for beta < 1.
    if not 0 < args.beta < 1:
        parser.error(f"--beta must be in (0, 1), got {args.beta}")
    args.out = output_root(parser, args)
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    steps, results = collect(run_seed, args, tuple(LABELS))
    size = args.rows * args.columns
    title = (
        f"Kronecker GOP curvature learning, S_C {args.rows}x{args.rows}, S_K {args.columns}x{args.columns} "
        f"against an unstructured {size}x{size} Sigma, beta = {args.beta}, gamma = 1, {args.seeds} seeds"
    )
    plot(steps, results, LABELS, STYLES, title, "gop_kronecker", args.out)
    body = (
        f"S_C {args.rows}x{args.rows}, S_K {args.columns}x{args.columns}, unstructured Sigma with condition number "
        f"{args.condition:g}, beta = {args.beta}, gamma = 1, {args.steps} steps, {args.seeds} seeds per start.\n"
        + summarise(steps, results, LABELS)
    )
    path = write_report(
        "gop_kronecker",
        "Kronecker curvature learning from gradient outer products",
        body,
        time.perf_counter() - start,
        args.out,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
