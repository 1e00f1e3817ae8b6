"""Command line: ``spectral-es minimize FUNCTION --dim N``.

FUNCTION is a built-in test function (``spectral-es functions`` lists them)
or ``module:function`` naming any importable Python function of one point.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from spectral_es import __version__
from spectral_es.es import minimize
from spectral_es.functions import FUNCTIONS

# Built-in functions start at 3 in every coordinate: away from every optimum
# (0, or 1 for Rosenbrock), inside the usual [-5, 5] search box.
DEFAULT_START = 3.0


def load_function(spec: str) -> Callable:
    """Return the built-in function named ``spec`` or the ``module:function`` it names."""
    if spec in FUNCTIONS:
        return FUNCTIONS[spec]
    if ":" not in spec:
        raise ValueError(
            f"unknown function {spec!r}; use one of {', '.join(FUNCTIONS)} or module:function"
        )
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} of {spec!r}: {error}") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{spec!r}: module {module_name!r} has no function {attribute!r}")
    return function


def parse_x0(text: str | None, dim: int | None) -> np.ndarray:
    """Return the start point from ``--x0`` (one number or a comma list) and ``--dim``."""
    if text is None:
        if dim is None:
            raise ValueError("give --dim N (or --x0 with all coordinates)")
        return np.full(dim, DEFAULT_START)
    try:
        values = np.array([float(part) for part in text.split(",")])
    except ValueError as error:
        raise ValueError(f"--x0 must be a number or comma-separated numbers, got {text!r}") from error
    if values.size == 1 and dim is not None:
        return np.full(dim, values[0])
    if dim is not None and values.size != dim:
        raise ValueError(f"--x0 has {values.size} coordinates but --dim is {dim}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectral-es",
        description="Minimise a function with SpectralES, an evolution strategy with a spectrally factorised covariance.",
    )
    parser.add_argument("--version", action="version", version=f"spectral-es {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("minimize", help="minimise a function and print progress and the result")
    run.add_argument("function", help="built-in function name or module:function")
    run.add_argument("--dim", type=int, help="dimension n (number of variables)")
    run.add_argument("--x0", help=f"start point: one number for all coordinates or a comma list (default {DEFAULT_START})")
    run.add_argument("--sigma0", type=float, default=1.0, help="initial step size, the same in every coordinate (default 1)")
    run.add_argument("--seed", type=int, help="random seed (default: fresh entropy, printed)")
    run.add_argument("--popsize", type=int, help="samples per iteration (default 4 + floor(3 ln n))")
    run.add_argument("--max-evals", type=float, help="stop after this many function evaluations")
    run.add_argument("--f-target", type=float, default=1e-10, help="stop when f reaches this value (default 1e-10)")
    run.add_argument("--restarts", type=int, default=0, help="restarts with doubled population (IPOP) after a stall")
    run.add_argument("--diagonal", action="store_true", help="learn a diagonal covariance only (separable problems, large n)")
    run.add_argument("--preset", choices=["cma", "xnes"], default="cma", help="learning rates and step-size rule (default cma)")
    run.add_argument("--every", type=int, default=10, help="print a progress line every this many iterations (default 10)")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")

    commands.add_parser("functions", help="list the built-in test functions")
    return parser


def run_minimize(args: argparse.Namespace) -> int:
    function = load_function(args.function)
    x0 = parse_x0(args.x0, args.dim)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    print(f"minimizing {args.function} in {x0.size} dimensions, seed {seed}", flush=True)
    start = time.perf_counter()
    result = minimize(
        function,
        x0,
        args.sigma0,
        seed=seed,
        popsize=args.popsize,
        max_evals=args.max_evals,
        f_target=args.f_target,
        restarts=args.restarts,
        diagonal=args.diagonal,
        preset=args.preset,
        disp=False if args.quiet else args.every,
    )
    elapsed = time.perf_counter() - start
    with np.printoptions(precision=6, suppress=False, linewidth=100, threshold=20):
        print(
            f"\nbest f      {result.fbest:.6e}\n"
            f"best x      {result.xbest}\n"
            f"evaluations {result.nfev}\n"
            f"iterations  {result.nit}\n"
            f"stopped by  {result.message}\n"
            f"time        {elapsed:.2f} s"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "functions":
        for name, function in FUNCTIONS.items():
            print(f"{name:18} {function.__doc__.splitlines()[0]}")
        return 0
    try:
        return run_minimize(args)
    except ValueError as error:
        parser.error(str(error))
    return 2


if __name__ == "__main__":
    sys.exit(main())
