"""Time per generation of ask + tell against the dimension, as ratios to pycma.

For each dimension ``n`` every method is built once on the sphere and
warmed up for two generations; then blocks of generations, each lasting at
least ``min_block_seconds`` (0.2 s by default), are timed in turn,
method after method, ``repeats`` times, so that all methods share the load of
the machine at the time. A block's time is the sum of the ``ask`` and
``tell`` calls only (the objective is excluded) divided by its generations,
and a method's time is the median over its blocks.

pycma runs its eigendecomposition only every ``ceil(1 / (10 n (c1 + c_mu)))``
generations, and SpectralES rotates its basis every ``rotation_interval``
generations. A method's blocks are therefore two such periods long (at
least ``min_generations``) and each contains exactly two of these O(n^3)
updates, so its time per generation is the amortised cost.

Run ``python -m benchmarks.es.timing --dims 10 100 500`` for a table alone.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cma
import numpy as np

from benchmarks.es.xnes_reference import XNES
from spectral_es import SpectralES
from spectral_es.functions import sphere

__all__ = ["TIMED_METHODS", "TimingRow", "time_generations", "time_methods"]


class _Stepper:
    """One ES behind a uniform ``step() -> seconds of ask + tell`` interface.

    ``period`` is the number of generations between two of the method's
    O(n^3) updates (eigendecomposition or rotation), 1 if it runs one in
    every generation.
    """

    def __init__(
        self, ask: Callable[[], np.ndarray], tell: Callable[[np.ndarray, np.ndarray], None], period: int = 1
    ) -> None:
        self.ask, self.tell, self.period = ask, tell, period

    def step(self) -> float:
        start = time.perf_counter()
        X = self.ask()
        sampled = time.perf_counter()
        f = sphere(np.asarray(X))
        evaluated = time.perf_counter()
        self.tell(X, f)
        return (sampled - start) + (time.perf_counter() - evaluated)


def _spectral(x0: np.ndarray, seed: int, **options) -> _Stepper:
    # Every stop criterion is switched off: the run only has to keep going.
    es = SpectralES(x0, 1.0, seed=seed, tol_f=0, tol_x=0, tol_condition=math.inf, **options)
    return _Stepper(es.ask, es.tell, getattr(es, "rotation_interval", 1))


def _pycma(x0: np.ndarray, seed: int) -> _Stepper:
    options = {"seed": seed, "verbose": -9, "tolfun": 0, "tolx": 0, "tolfunhist": 0, "tolstagnation": math.inf}
    es = cma.CMAEvolutionStrategy(x0, 1.0, options)
    return _Stepper(es.ask, lambda X, f: es.tell(X, f.tolist()), max(1, math.ceil(es.sm.lazy_update_gap)))


def _xnes(x0: np.ndarray, seed: int) -> _Stepper:
    es = XNES(x0, 1.0, seed=seed)
    return _Stepper(es.ask, lambda X, f: es.tell(f))


TIMED_METHODS: dict[str, Callable[[np.ndarray, int], _Stepper]] = {
    "pycma": _pycma,
    "spectral": _spectral,
    "spectral-truncated": lambda x0, seed: _spectral(x0, seed, cayley="truncated"),
    "spectral-diagonal": lambda x0, seed: _spectral(x0, seed, diagonal=True),
    "spectral-eager": lambda x0, seed: _spectral(x0, seed, rotation_interval=1),
    "xnes": _xnes,
}
"""Methods whose time per generation is measured; ``pycma`` is the reference."""


@dataclass(frozen=True)
class TimingRow:
    """Median seconds per generation of each method in one dimension.

    Attributes:
        n: Dimension.
        popsize: Default population size in this dimension (the same for all).
        seconds: Method name -> median seconds of ask + tell per generation.
        generations: Method name -> generations per timed block.
    """

    n: int
    popsize: int
    seconds: dict[str, float]
    generations: dict[str, int]

    def ratio(self, method: str, reference: str = "pycma") -> float:
        """Return ``seconds[method] / seconds[reference]``."""
        return self.seconds[method] / self.seconds[reference]


def time_generations(stepper: _Stepper, generations: int) -> float:
    """Return the mean seconds of ask + tell over ``generations`` generations."""
    return sum(stepper.step() for _ in range(generations)) / generations


def time_methods(
    dims: Sequence[int],
    methods: Sequence[str],
    *,
    repeats: int = 3,
    min_generations: int = 3,
    min_block_seconds: float = 0.2,
    seed: int = 1,
) -> list[TimingRow]:
    """Time ``methods`` in each dimension of ``dims``; see the module docstring."""
    rows = []
    for n in dims:
        x0 = np.random.default_rng(seed).uniform(-3, 3, n)
        steppers = {name: TIMED_METHODS[name](x0, seed) for name in methods}
        generations = {}
        for name, stepper in steppers.items():
            # The warm-up estimates the time per generation, so that a block
            # lasts at least min_block_seconds and the scheduler's noise
            # averages out at small n.
            warm_up = time_generations(stepper, 2)
            enough = math.ceil(min_block_seconds / max(warm_up, 1e-9))
            generations[name] = max(min_generations, 2 * stepper.period, min(enough, 2000))
        samples: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(repeats):
            for name, stepper in steppers.items():
                samples[name].append(time_generations(stepper, generations[name]))
        rows.append(
            TimingRow(
                n=n,
                popsize=4 + int(3 * math.log(n)),
                seconds={name: float(np.median(values)) for name, values in samples.items()},
                generations=generations,
            )
        )
    return rows


def format_table(rows: Sequence[TimingRow], methods: Sequence[str]) -> str:
    """Return a markdown table: ms per generation of pycma, then each method's ratio to it."""
    others = [name for name in methods if name != "pycma"]
    header = "| n | popsize | pycma ms/gen | " + " | ".join(f"{name} / pycma" for name in others) + " |"
    lines = [header, "|" + "---|" * (3 + len(others))]
    for row in rows:
        ratios = " | ".join(f"{row.ratio(name):.2f}" for name in others)
        lines.append(f"| {row.n} | {row.popsize} | {1000 * row.seconds['pycma']:.3g} | {ratios} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 100, 500], help="dimensions to time, >= 2")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(TIMED_METHODS),
        choices=list(TIMED_METHODS),
        help="methods to time, pycma among them (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per method and dimension, >= 1")
    args = parser.parse_args(argv)
    if min(args.dims) < 2:
        parser.error(f"--dims must all be >= 2, got {args.dims}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if "pycma" not in args.methods:
        parser.error("--methods must include pycma, the reference of the ratios")
    rows = time_methods(args.dims, args.methods, repeats=args.repeats)
    print(format_table(rows, args.methods))


if __name__ == "__main__":
    main()
