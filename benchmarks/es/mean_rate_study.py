"""Study: which learning rate gives single SpectralES runs the robustness of xNES?

Single runs of the default stop in local minima of Griewank, Bohachevsky and
Schaffer more often than xNES, whose learning rates are small. This script reruns
the benchmark's problems (same seeds, starts, budgets and targets) with
learning rates that the library does not offer as options, through a
subclass of :class:`spectral_es.SpectralES`:

* ``mean c``: the mean moves by ``c`` times its usual step (CMA-ES's
  ``c_m``), starting from ``sigma0 / c``: on convex quadratics the best
  step size scales as ``1 / c_m``, as the LRA-CMA-ES paper below recalls.
* ``mean adaptive (alpha)``: ``c_m`` adapted so that the signal-to-noise
  ratio of the whitened mean steps stays at ``alpha c_m``, with ``sigma``
  rescaled by ``c_old / c_new``. This is the mean part of LRA-CMA-ES
  (Nomura, Akimoto and Ono, 2024, "CMA-ES with Learning Rate Adaptation",
  Algorithm 1, with their beta_m = 0.1 and gamma = 0.1).
* ``shape c``: the shape's learning rates and the step-size change
  multiplied by ``c``.

    python -m benchmarks.es.mean_rate_study --dims 10

prints one markdown table: successes out of the seeds and the median
evaluations of the successful runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import warnings
from collections.abc import Sequence

import numpy as np

from benchmarks.es.harness import Objective, Problem, make_problem, run
from spectral_es import SpectralES

FUNCTIONS = ("sphere", "ellipsoid", "rosenbrock", "bohachevsky", "griewank", "schaffer")

# LRA-CMA-ES's averaging rate and damping for the mean's learning rate.
SNR_AVERAGING = 0.1
SNR_DAMPING = 0.1


class StudyES(SpectralES):
    """SpectralES with a mean learning rate (fixed or adapted) and scaled shape rates."""

    def __init__(
        self, *args, mean_rate: float = 1.0, snr_target: float | None = None, shape_rate: float = 1.0, **options
    ):
        super().__init__(*args, **options)
        params = self.params
        self.params = dataclasses.replace(
            params,
            shape_weights=params.shape_weights * shape_rate,
            c1=params.c1 * shape_rate,
            d_sigma=params.d_sigma / shape_rate,
        )
        self.mean_rate = mean_rate
        self.snr_target = snr_target
        self.average_step = np.zeros(self.n)
        self.average_square = 0.0

    def tell(self, X, f) -> None:
        """Take the usual step, then scale the mean's move by ``mean_rate`` (adapted first with ``snr_target``)."""
        mean, d, B = self.mean.copy(), self.d.copy(), None if self.B is None else self.B.copy()
        sigma = self.sigma
        super().tell(X, f)
        step = self.mean - mean
        if self.snr_target is not None:
            self._adapt_mean_rate(step / sigma, d, B)
        self.mean = mean + self.mean_rate * step

    def _adapt_mean_rate(self, step: np.ndarray, d: np.ndarray, B: np.ndarray | None) -> None:
        """Move ``mean_rate`` towards ``SNR / snr_target`` from the whitened step ``Sigma^{-1/2} step``."""
        whitened = np.sqrt(d) * (step if B is None else B.T @ step)
        whitened = whitened if B is None else B @ whitened
        beta = SNR_AVERAGING
        self.average_step = (1 - beta) * self.average_step + beta * whitened
        self.average_square = (1 - beta) * self.average_square + beta * float(whitened @ whitened)
        signal = float(self.average_step @ self.average_step)
        # The floor keeps identical steps (zero noise) from dividing by zero.
        snr = (signal - beta / (2 - beta) * self.average_square) / max(self.average_square - signal, 1e-300)

        old = self.mean_rate
        change = min(SNR_DAMPING * old, beta) * float(np.clip(snr / (self.snr_target * old) - 1, -1, 1))
        self.mean_rate = min(old * math.exp(change), 1.0)
        self.sigma *= old / self.mean_rate


def run_study(problem: Problem, objective: Objective, **options) -> str:
    """Run one :class:`StudyES` on ``problem`` by ask and tell; return its stop reasons."""
    # The seed of minimize()'s first run, so that the default variant
    # samples the same points as the benchmark's "spectral".
    seed = np.random.SeedSequence(problem.seed).spawn(1)[0]
    sigma0 = problem.sigma0 / options.get("mean_rate", 1.0)
    es = StudyES(problem.x0, sigma0, seed=seed, max_evals=problem.budget, f_target=problem.f_target, **options)
    while not es.stop():
        X = es.ask()
        es.tell(X, objective(X))
    return ",".join(es.stop())


VARIANTS = {
    "default": {},
    "mean 0.3": {"mean_rate": 0.3},
    "mean 0.2": {"mean_rate": 0.2},
    "mean 0.1": {"mean_rate": 0.1},
    "mean adaptive (1.4)": {"snr_target": 1.4},
    "mean adaptive (0.2)": {"snr_target": 0.2},
    "shape 0.25": {"shape_rate": 0.25},
    "shape 0.1": {"shape_rate": 0.1},
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[10], help="dimensions n, >= 2 (default 10)")
    parser.add_argument(
        "--functions", nargs="+", default=list(FUNCTIONS), choices=FUNCTIONS, help="functions to run (default: all)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="learning-rate variants to run, one table row per variant and dimension (default: all)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="run seeds 1 to SEEDS (default 10, as in the benchmark)")
    args = parser.parse_args(argv)
    if min(args.dims) < 2:
        parser.error(f"--dims must all be >= 2, got {args.dims}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    warnings.simplefilter("ignore")

    print("| variant | n | " + " | ".join(args.functions) + " |")
    print("|---|---|" + "---|" * len(args.functions))
    for name in args.variants:
        runner = functools.partial(run_study, **VARIANTS[name])
        for n in args.dims:
            cells = []
            for function in args.functions:
                records = [run(name, runner, make_problem(function, n, seed)) for seed in range(1, args.seeds + 1)]
                evals = [record.evals for record in records if record.success]
                median = f"{statistics.median(evals):.0f}" if evals else "-"
                cells.append(median if len(evals) == len(records) else f"{median} ({len(evals)}/{len(records)})")
            print(f"| {name} | {n} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
