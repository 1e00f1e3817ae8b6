"""Truncated against exact Cayley map in the torch optimizer: one small training run, loss against steps and time.

Reproduces the comparison of Lin et al. (2025), "Spectral-factorized
positive-definite curvature learning for NN training" (Sec. 3.4 and Fig. 8):
the Kronecker scheme with ``p = 2`` trained with the exact Cayley map
``(I + N)(I - N)^{-1}`` and with the truncated, matmul-only map
``(I + N)^2 (I + N^2)(I + N^4)``, all other hyperparameters equal (both with
the generator capped at Frobenius norm ``--max-generator-norm``). The paper
claims both maps train equally well per iteration and that the exact one is
much slower in wall time.

The task is synthetic so the script needs no download: a 3-layer MLP
(64 -> width -> width -> 10, ReLU) learns the labels of a random teacher
network on anisotropic Gaussian inputs, mini-batches of 128, cross-entropy.
Three configurations of ``spectral_es.optim.SpectralKron``:

* exact map, float32 state (the exact map needs a dense solver, so no bfloat16);
* truncated map, float32 state: the same arithmetic precision, so any time
  difference is the map's;
* truncated map, bfloat16 state: what the truncated map is for.

Every seed draws a new data set and initialisation, shared by the three
configurations, which run one after the other on one thread. Reported: the
training loss (mean over a sliding window) against steps and against wall
time, the held-out loss, the wall time per step as a ratio to the exact map
(median over seeds), and the orthogonality defect ``‖B^T B - I‖_F`` of the
eigenbases at the end. Because wall time on a shared machine is noisy, one
rotation ``B <- B Cayley(N)`` is also timed alone, at the sizes
``--rotation-sizes``, the configurations alternating.

Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python benchmarks/paper/cayley_training.py

With every option at its default this rewrites the committed ``results/cayley_training.md``
and ``figures/cayley_training.png``. Any other setting writes them under the git-ignored
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
import torch
from paper_common import (
    add_output_option,
    check_at_least,
    check_positive,
    markdown_table,
    output_root,
    save_figure,
    write_report,
)

from spectral_es.core import orthogonality_defect, rotate
from spectral_es.optim import SpectralKron

CONFIGS = {
    "exact_fp32": {"cayley": "exact", "state_dtype": "float32"},
    "truncated_fp32": {"cayley": "truncated", "state_dtype": "float32"},
    "truncated_bf16": {"cayley": "truncated", "state_dtype": "bfloat16"},
}
LABELS = {
    "exact_fp32": "exact Cayley, float32",
    "truncated_fp32": "truncated Cayley, float32",
    "truncated_bf16": "truncated Cayley, bfloat16",
}
STYLES = {
    "exact_fp32": {"color": "C1", "linestyle": "--"},
    "truncated_fp32": {"color": "C0", "linewidth": 2.0},
    "truncated_bf16": {"color": "C2", "linestyle": ":", "linewidth": 2.0},
}
INPUTS, CLASSES, BATCH = 64, 10, 128


def make_data(seed: int, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return inputs (points, 64) with a rotated, 100:1 spread of scales, and the labels of a random teacher."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -2, INPUTS)
    rotation, _ = torch.linalg.qr(torch.randn(INPUTS, INPUTS, generator=generator))
    X = (torch.randn(points, INPUTS, generator=generator) * scales) @ rotation.T
    # The teacher reads the whitened inputs, so every direction matters to the labels.
    hidden = torch.tanh(X @ rotation @ torch.diag(1 / scales) @ torch.randn(INPUTS, 128, generator=generator) / 8)
    y = (hidden @ torch.randn(128, CLASSES, generator=generator)).argmax(dim=1)
    return X, y


def make_model(seed: int, width: int) -> torch.nn.Module:
    """Return the student MLP, initialised from ``seed``."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(INPUTS, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, CLASSES),
    )


def train(config: str, seed: int, data: tuple, args: argparse.Namespace) -> dict:
    """Train one configuration; return per-step losses and elapsed times, held-out loss and basis defect."""
    X, y = data
    X_train, y_train, X_test, y_test = X[: args.points], y[: args.points], X[args.points :], y[args.points :]
    model = make_model(seed, args.width)
    optimizer = SpectralKron(
        model.parameters(),
        lr=args.lr,
        max_generator_norm=args.max_generator_norm,
        # The same generator for both maps: the Frobenius cap for every state dtype (a bfloat16
        # state would cap the spectral norm by default), and no squarings, which would let only
        # the truncated map exceed the cap.
        generator_norm="frobenius",
        max_cayley_squarings=0,
        **CONFIGS[config],
    )

    # The mini-batch stream depends only on the seed, so every configuration sees the same batches.
    batches = torch.Generator().manual_seed(seed + 1)
    losses, elapsed = np.empty(args.steps), np.empty(args.steps)
    start = time.perf_counter()
    for step in range(args.steps):
        index = torch.randint(0, args.points, (BATCH,), generator=batches)
        loss = torch.nn.functional.cross_entropy(model(X_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[step] = loss.item()
        elapsed[step] = time.perf_counter() - start

    # Held-out loss, and the worst orthogonality defect over all eigenbases.
    with torch.no_grad():
        test_loss = torch.nn.functional.cross_entropy(model(X_test), y_test).item()
    defects = [
        orthogonality_defect(value.double())
        for state in optimizer.state.values()
        for key, value in state.items()
        if key in ("B_C", "B_K") and value is not None
    ]
    return {"losses": losses, "elapsed": elapsed, "test_loss": test_loss, "defect": max(defects, default=np.nan)}


def rotation_inputs(n: int, generator_norm: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return an orthogonal ``B`` and a skew ``N`` with Frobenius norm ``generator_norm``, per configuration.

    Every configuration gets the same matrices, cast to its state dtype.
    """
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator))
    lower = torch.tril(torch.randn(n, n, generator=generator), -1)
    skew = lower - lower.T
    generator_matrix = skew * (generator_norm / torch.linalg.norm(skew))
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    return {
        config: (basis.to(dtypes[options["state_dtype"]]), generator_matrix.to(dtypes[options["state_dtype"]]))
        for config, options in CONFIGS.items()
    }


def time_rotations(n: int, repeats: int, generator_norm: float) -> dict[str, float]:
    """Return the median seconds of one ``B <- B Cayley(N)`` per configuration, at size n x n.

    The configurations are timed in turn, ``repeats`` rounds, so that a load
    change on a shared machine affects them alike. ``N`` has the Frobenius
    norm ``generator_norm``, the cap used in training.
    """
    inputs = rotation_inputs(n, generator_norm)
    samples = {config: [] for config in CONFIGS}
    for _ in range(repeats):
        for config, (B, N) in inputs.items():
            start = time.perf_counter()
            rotate(B, N, method=CONFIGS[config]["cayley"])
            samples[config].append(time.perf_counter() - start)
    return {config: float(np.median(values)) for config, values in samples.items()}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Return the mean over a trailing window of ``window`` values (fewer at the start)."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, values.size + 1)
    begin = np.maximum(end - window, 0)
    return (cumulative[end] - cumulative[begin]) / (end - begin)


def plot(runs: dict, args: argparse.Namespace) -> None:
    """Draw smoothed training loss against steps and against wall time (median over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    steps = np.arange(1, args.steps + 1)
    for config, label in LABELS.items():
        losses = np.median([smooth(run["losses"], args.window) for run in runs[config]], axis=0)
        seconds = np.median([run["elapsed"] for run in runs[config]], axis=0)
        axes[0].plot(steps, losses, label=label, **STYLES[config])
        axes[1].plot(seconds, losses, label=label, **STYLES[config])
    for ax, xlabel in zip(axes, ("step", "wall time (s), one thread"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"training loss (mean of last {args.window} steps)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"SpectralKron, MLP {INPUTS}-{args.width}-{args.width}-{CLASSES}, p = 2, lr = {args.lr}, "
        f"generator cap {args.max_generator_norm}, {args.seeds} seeds (median)"
    )
    save_figure(fig, "cayley_training", args.out)


def summarise(runs: dict, args: argparse.Namespace) -> str:
    """Return a markdown table: final losses, time per step and its ratio to the exact map, basis defect."""
    rows = []
    exact_times = np.array([run["elapsed"][-1] for run in runs["exact_fp32"]])
    for config, label in LABELS.items():
        times = np.array([run["elapsed"][-1] for run in runs[config]])
        final = [smooth(run["losses"], args.window)[-1] for run in runs[config]]
        rows.append(
            [
                label,
                f"{np.median(final):.4f}",
                f"{np.median([run['test_loss'] for run in runs[config]]):.4f}",
                f"{1e3 * np.median(times) / args.steps:.1f}",
                f"{np.median(times / exact_times):.2f}",
                f"{np.median([run['defect'] for run in runs[config]]):.1e}",
            ]
        )
    header = [
        "configuration",
        f"training loss (last {args.window} steps)",
        "held-out loss",
        "ms per step",
        "time / exact (same seed)",
        "max ‖BᵀB − I‖_F at the end",
    ]
    return "\nTraining, medians over seeds:\n\n" + markdown_table(header, rows)


def summarise_rotations(timings: dict[int, dict[str, float]], repeats: int) -> str:
    """Return a markdown table of the rotation timings and their ratios to the exact float32 map."""
    rows = []
    for n, by_config in timings.items():
        for config, seconds in by_config.items():
            rows.append([str(n), LABELS[config], f"{1e6 * seconds:.0f}", f"{seconds / by_config['exact_fp32']:.2f}"])
    return (
        f"\nOne rotation ``B <- B Cayley(N)`` alone (``spectral_es.core.rotate``), median of {repeats} "
        "alternating repetitions, one thread:\n\n"
        + markdown_table(["n", "configuration", "µs", "time / exact float32"], rows)
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256, help="hidden width of the MLP (default 256)")
    parser.add_argument("--steps", type=int, default=600, help="training steps per run (default 600)")
    parser.add_argument("--points", type=int, default=8192, help="training points (default 8192)")
    parser.add_argument(
        "--test-points", dest="test_points", type=int, default=4096, help="held-out points (default 4096)"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    parser.add_argument(
        "--max-generator-norm",
        dest="max_generator_norm",
        type=float,
        default=0.25,
        help="cap on the Cayley generator's Frobenius norm, for both maps (default 0.25)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="independent runs (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--repeats", type=int, default=50, help="repetitions of the rotation timing per size (default 50)"
    )
    parser.add_argument(
        "--rotation-sizes",
        dest="rotation_sizes",
        type=int,
        nargs="+",
        default=[64, 256, 512],
        help="matrix sizes n for the rotation timing (default 64 256 512)",
    )
    parser.add_argument("--window", type=int, default=25, help="steps in the loss smoothing window (default 25)")
    add_output_option(parser)
    args = parser.parse_args(argv)
    check_at_least(
        parser, args, width=1, steps=1, points=1, test_points=1, seeds=1, repeats=1, rotation_sizes=2, window=1
    )
    check_positive(parser, args, "lr", "max_generator_norm")
    args.out = output_root(parser, args)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    runs = {config: [] for config in CONFIGS}
    for seed in range(args.seed, args.seed + args.seeds):
        data = make_data(seed, args.points + args.test_points)
        for config in CONFIGS:
            runs[config].append(train(config, seed, data, args))
    plot(runs, args)
    timings = {n: time_rotations(n, args.repeats, args.max_generator_norm) for n in sorted(set(args.rotation_sizes))}
    body = (
        f"MLP {INPUTS}-{args.width}-{args.width}-{CLASSES} on {args.points} synthetic points, batch {BATCH}, "
        f"{args.steps} steps, SpectralKron defaults except lr = {args.lr}, max_generator_norm = "
        f"{args.max_generator_norm}, generator_norm = 'frobenius', max_cayley_squarings = 0, cayley and "
        "state_dtype as listed; one thread; "
        f"{args.seeds} seeds.\n" + summarise(runs, args) + summarise_rotations(timings, args.repeats)
    )
    path = write_report(
        "cayley_training",
        "Truncated against exact Cayley map in SpectralKron",
        body,
        time.perf_counter() - start,
        args.out,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
