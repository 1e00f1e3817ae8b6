"""Command line: ``spectral-es minimize FUNCTION --dim N`` (or ``python -m spectral_es``).

FUNCTION is a built-in test function (``spectral-es functions`` lists them)
or ``module:function`` naming any importable Python function of one point.
Modules in the current directory are found, as with ``python -m``.
Options add bounds, integer variables, noise handling, parallel (``--workers``)
or Dask (``--dask``) evaluation, a CSV log, a plot, checkpoints and
``--resume``. Output paths, the plot format and the checkpoint's objective
are checked before the first evaluation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import os
import re
import select
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from spectral_es import __version__
from spectral_es.es import ESResult, EvaluationError, SpectralES, minimize, resume
from spectral_es.es.bounds import Bounds, BoxBounds
from spectral_es.es.checkpoint import check_distinct, check_writable, read_state, same_file
from spectral_es.es.driver import stored_run
from spectral_es.es.history import check_new_log
from spectral_es.es.minimize import SAVED_LOG_WARNING, check_new_checkpoint, objective_name, read_plan
from spectral_es.es.options import default_max_iter
from spectral_es.es.parameters import default_popsize
from spectral_es.functions import FUNCTIONS

# Built-in functions start at 3 in every coordinate: away from every optimum
# (0, or 1 for Rosenbrock), inside the usual [-5, 5] search box. In a box they
# keep it (moved inside), because the centre of a symmetric box is their optimum.
DEFAULT_START = 3.0
# The default --sigma0 as a fraction of the narrowest finite box width.
BOX_SIGMA_FRACTION = 0.3
# Iterations between progress lines without --every.
DEFAULT_EVERY = 10
# Iterations between checkpoints without --checkpoint-every.
DEFAULT_CHECKPOINT_EVERY = 10


def load_function(spec: str) -> Callable:
    """Return the built-in function named ``spec`` or the ``module:function`` it names.

    ``function`` may be a dotted qualified name such as ``Problem.evaluate``.
    """
    if spec in FUNCTIONS:
        return FUNCTIONS[spec]
    if ":" not in spec:
        raise ValueError(f"unknown function {spec!r}; use one of {', '.join(FUNCTIONS)} or module:function")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import module {module_name!r} of {spec!r}: {error}; run from the directory that contains "
            "it or add that directory to PYTHONPATH"
        ) from error
    function: Any = module
    for name in attribute.split("."):
        function = getattr(function, name, None)
    if function is None:
        raise ValueError(f"{spec!r}: module {module_name!r} has no function {attribute!r}")
    if not callable(function):
        raise ValueError(
            f"{spec!r}: {attribute!r} in module {module_name!r} is not callable (its type is "
            f"{type(function).__name__}); name the function to minimize"
        )
    return function


@contextlib.contextmanager
def command_line_warnings(prog: str) -> Iterator[None]:
    """Print warnings as ``PROG: warning: message`` with command-line option names, while the command runs.

    Python's own format would name the console script's line and the
    library's argument names (``sigma0`` for ``--sigma0``). The filters
    still apply, so ``-W ignore`` and ``PYTHONWARNINGS`` work as usual.
    """

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"{prog}: warning: {with_option_names(str(message))}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def current_directory_importable() -> Iterator[None]:
    """Put the current directory first on ``sys.path`` while the command runs, as ``python -m`` does.

    An installed console script starts with its own ``bin`` directory
    there instead, so ``mymodule:f`` next to the user would not be found.
    Python's ``-P`` option (``sys.flags.safe_path``) turns this off.
    """
    directory = os.getcwd()
    safe_path = getattr(sys.flags, "safe_path", False)  # -P and sys.flags.safe_path are new in Python 3.11
    if safe_path or directory in sys.path or "" in sys.path:
        yield
        return
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)


def parse_x0(text: str | None, dim: int | None) -> np.ndarray:
    """Return the start point from ``--x0`` (one number or a comma list) and ``--dim``."""
    if dim is not None and dim < 1:
        raise ValueError(f"--dim must be >= 1, got {dim}")
    if text is None:
        if dim is None:
            raise ValueError("give --dim N (or --x0 with all coordinates)")
        return np.full(dim, DEFAULT_START)
    values = parse_numbers("--x0", text)
    if values.size == 1 and dim is not None:
        return np.full(dim, values[0])
    if dim is not None and values.size != dim:
        raise ValueError(f"--x0 has {values.size} coordinates but --dim is {dim}")
    return values


def evaluation_count(text: str) -> int | float:
    """Parse ``--max-evals``: a whole number, also written as ``1e5``; ``inf`` for no limit."""
    fix = f"invalid value {text!r}, expected a whole number of evaluations such as 20000 or 2e4, or inf for no limit"
    try:
        value = float(text)
    except ValueError:
        # argparse would name this function in "invalid evaluation_count value".
        raise argparse.ArgumentTypeError(fix) from None
    if value.is_integer():
        return int(value)
    if math.isinf(value) and value > 0:
        return value
    raise argparse.ArgumentTypeError(fix)


def parse_numbers(option: str, text: str) -> np.ndarray:
    """Return the numbers of a comma list such as ``-5,5,inf``."""
    try:
        return np.array([float(part) for part in text.split(",")])
    except ValueError as error:
        raise ValueError(f"{option} must be a number or comma-separated numbers, got {text!r}") from error


def parse_stds(text: str | None) -> float | np.ndarray | None:
    """Return the factors of ``--stds``: one number for every coordinate, or the array of a comma list."""
    if text is None:
        return None
    values = parse_numbers("--stds", text)
    return float(values[0]) if values.size == 1 else values


def parse_bounds(lower: str | None, upper: str | None, n: int) -> Bounds | None:
    """Return the bounds of ``--lower`` and ``--upper``; a missing side is unbounded."""
    if lower is None and upper is None:
        return None
    sides = []
    for option, text, default in (("--lower", lower, -np.inf), ("--upper", upper, np.inf)):
        values = np.full(n, default) if text is None else parse_numbers(option, text)
        if values.size not in (1, n):
            raise ValueError(f"{option} has {values.size} entries; give one number or {n}, one per coordinate")
        sides.append(np.broadcast_to(values, (n,)).copy())
    return Bounds(sides[0], sides[1])


def parse_indices(text: str | None) -> list[int]:
    """Return the integer-variable indices of ``--integer`` (a comma list such as ``0,3,4``)."""
    if text is None:
        return []
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise ValueError(f"--integer must be comma-separated indices such as 0,3,4, got {text!r}") from error
    # The library's message for a repeated index also suggests a boolean mask, which the command line cannot take.
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f"--integer {text} lists the index {repeated[0]} more than once; list each index once")
    return indices


# Options whose value may start with '-', with an example. argparse reads
# such a value as another option unless it looks like a negative number:
# up to Python 3.13 only -1 or -0.5, from 3.14 on anything that starts with
# '-' and a digit, but never -inf. So "--x0 -1,2" needs "--x0=-1,2" there.
NEGATIVE_VALUE_EXAMPLES = {"--x0": "-1,2,3", "--lower": "-5,0", "--upper": "-1,2", "--f-target": "-1e3"}


class OneLineErrorParser(argparse.ArgumentParser):
    """Argument parser whose errors are one line, like the command's own checks, with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        missing = re.fullmatch(r"argument (--[\w-]+): expected one argument", message)
        if missing and missing.group(1) in NEGATIVE_VALUE_EXAMPLES:
            option = missing.group(1)
            message += (
                f"; for a value that starts with '-', join it with '=', "
                f"as in {option}={NEGATIVE_VALUE_EXAMPLES[option]}"
            )
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="spectral-es",
        description="Minimise a function with SpectralES, an evolution strategy with spectrally factorised covariance.",
    )
    parser.add_argument("--version", action="version", version=f"spectral-es {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("minimize", help="minimise a function and print progress and the result")
    run.add_argument(
        "function",
        nargs="?",
        help="built-in function name or module:function (a module in the current directory is found); "
        "with --resume, default: the function stored in the checkpoint",
    )
    run.add_argument(
        "--dim", type=int, help="dimension n (number of variables); required unless --x0 lists every coordinate"
    )
    run.add_argument(
        "--x0",
        help=f"start point: one number or a comma list (default {DEFAULT_START} moved into the bounds; for your own "
        "functions the centre of each finite interval of --lower and --upper; write --x0=-1,2 for a value that "
        "starts with a minus sign)",
    )
    run.add_argument(
        "--sigma0",
        type=float,
        help=f"initial step size, the same in every coordinate (default {BOX_SIGMA_FRACTION} times the narrowest "
        "width of the box of --lower and --upper where that is finite, else 1)",
    )
    run.add_argument(
        "--stds",
        help="factors of --sigma0 per coordinate: one number or a comma list, so that coordinate i starts with "
        "deviation sigma0 * stds[i] (pycma's CMA_stds); for variables whose ranges differ by orders of magnitude",
    )
    run.add_argument("--seed", type=int, help="random seed (default: fresh entropy, printed)")
    run.add_argument("--popsize", type=int, help="samples per iteration (default 4 + floor(3 ln n))")
    run.add_argument(
        "--max-evals",
        type=evaluation_count,
        help="stop once this many function evaluations are spent (the last population completes, so a run may "
        "overshoot by less than one population's evaluations); with --resume, a new budget for a run that spent "
        "its own",
    )
    run.add_argument(
        "--max-iter",
        type=int,
        help="stop each run after this many iterations (default 100 + 150 (n + 3)^2 / sqrt(popsize)); the limit "
        "that ends a noisy run without --max-evals",
    )
    run.add_argument(
        "--f-target",
        type=float,
        help="stop when f reaches this value (default 1e-10 for the built-in functions, whose minimum is 0; "
        "none for your own functions and with --noise; write --f-target=-1e3 for a value in exponent notation "
        "that starts with a minus sign)",
    )
    run.add_argument("--restarts", type=int, help="restarts with doubled population (IPOP) after a stall (default 0)")
    run.add_argument(
        "--bipop",
        action="store_true",
        help="with --restarts: add short runs of small population and step size between them (BIPOP)",
    )
    run.add_argument(
        "--diagonal", action="store_true", help="learn a diagonal covariance only (separable problems, large n)"
    )
    run.add_argument("--preset", choices=["cma", "xnes"], help="learning rates and step-size rule (default cma)")
    run.add_argument(
        "--every", type=int, help=f"print a progress line every this many iterations (default {DEFAULT_EVERY})"
    )
    run.add_argument(
        "--quiet", action="store_true", help="print only the first line and the final summary (not with --every)"
    )
    run.add_argument("--status", action="store_true", help="keep one status line on stderr, updated twice a second")

    domain = run.add_argument_group("bounds, integers and noise")
    domain.add_argument(
        "--lower",
        help="lower bounds: one number or a comma list; -inf for none (write --lower=-5,0 or --lower=-inf for a "
        "value that starts with a minus sign)",
    )
    domain.add_argument(
        "--upper",
        help="upper bounds: one number or a comma list; inf for none (write --upper=-1,2 for a value that starts "
        "with a minus sign)",
    )
    domain.add_argument("--integer", help="indices of integer variables, comma-separated (e.g. 0,3)")
    domain.add_argument("--noise", action="store_true", help="noisy objective: re-evaluate points, no f-based stops")
    domain.add_argument(
        "--noise-max-evaluations", type=int, help="with --noise: maximum evaluations averaged per point (default 20)"
    )

    evaluation = run.add_argument_group("evaluation")
    evaluation.add_argument(
        "--vectorized",
        action=argparse.BooleanOptionalAction,
        help="call the function once per population, on its rows (default: no; with --resume, as the saved run)",
    )
    evaluation.add_argument("--workers", type=int, help="evaluate in this many local processes")
    evaluation.add_argument(
        "--dask", metavar="ADDRESS", help="evaluate on the Dask scheduler at ADDRESS (tcp://host:port)"
    )

    output = run.add_argument_group("logs, plots and checkpoints")
    output.add_argument("--log", metavar="FILE", help="write one CSV row per iteration to FILE")
    output.add_argument(
        "--plot", metavar="FILE", help="save the standard plots to FILE (.png, .pdf, .svg, ...) at the end (matplotlib)"
    )
    output.add_argument("--checkpoint", metavar="FILE", help="save the complete state to FILE (.npz) as the run goes")
    output.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="K",
        help=f"iterations between checkpoints of --checkpoint or --resume (default {DEFAULT_CHECKPOINT_EVERY})",
    )
    output.add_argument(
        "--resume",
        metavar="FILE",
        help="continue the run saved in FILE; run settings come from FILE, and the continued run saves into FILE "
        "unless --checkpoint names another file",
    )
    output.add_argument(
        "--changed-function",
        action="store_true",
        help="with --resume: continue the saved run with FUNCTION although FILE names another objective, "
        "e.g. a corrected copy (the values before and after the change then share one run)",
    )

    run.set_defaults(command_parser=run)
    commands.add_parser(
        "functions", help="list the built-in test functions", description="List the built-in test functions."
    )
    return parser


# Options that define a run; a resumed run takes them from its checkpoint.
RUN_OPTIONS = {
    "dim": "--dim", "x0": "--x0", "sigma0": "--sigma0", "stds": "--stds", "seed": "--seed", "popsize": "--popsize",
    "max_evals": "--max-evals", "max_iter": "--max-iter", "f_target": "--f-target", "restarts": "--restarts",
    "bipop": "--bipop", "diagonal": "--diagonal", "preset": "--preset", "lower": "--lower", "upper": "--upper",
    "integer": "--integer", "noise": "--noise", "noise_max_evaluations": "--noise-max-evaluations",
}  # fmt: skip
# The store_true options among them; every other one is given when it is not None.
RUN_FLAGS = frozenset({"bipop", "diagonal", "noise"})


def run_minimize(args: argparse.Namespace) -> int:
    """Run ``spectral-es minimize`` after checking every input and output; return the exit status."""
    if args.quiet and args.every is not None:
        raise ValueError(
            f"--quiet prints no progress lines, so --every {args.every} would have no effect; drop one of them"
        )
    every = DEFAULT_EVERY if args.every is None else args.every
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}; use --quiet for no progress lines")
    checkpoint_every = checked_checkpoint_every(args)
    if args.resume:
        plan = read_plan(args.resume)
        if plan.get("x0_function") is not None:
            raise ValueError(
                f"{args.resume} draws each run's start with the function {plan['x0_function']}, which the command "
                f"line cannot pass; continue it in Python: spectral_es.resume(fun, {args.resume!r}, x0=that function)"
            )
        function = resumed_function(args.function, plan["function"], args.resume, changed=args.changed_function)
        saved_evaluations, saved_log = saved_progress(args.resume)
        if args.log is None and saved_log is not None:
            print(
                f"note: the saved run logged to {saved_log}, and without --log this run writes no log; "
                f"pass --log {shlex.quote(saved_log)} to continue that log",
                file=sys.stderr,
            )
        noisy = bool(plan["options"].get("noise_handling"))
        banner = f"resuming {objective_name(function)} from {args.resume}"
    else:
        if args.function is None:
            raise ValueError("give the function to minimize: a built-in name or module:function")
        function = load_function(args.function)
        saved_evaluations = None
        settings = new_run_settings(args)
        check_run_settings(settings)
        noisy = bool(args.noise)
        banner = describe_run(args.function, settings)
    check_outputs(args)
    check_executor_options(args.workers, args.dask)

    io_options = {
        # None lets resume() take the saved run's setting.
        "vectorized": args.vectorized if args.resume else bool(args.vectorized),
        "disp": False if args.quiet else every,
        "log": args.log,
        "checkpoint": args.checkpoint,
        "checkpoint_every": checkpoint_every,
    }
    status = StatusLine() if args.status else None
    io_options["callback"] = status
    print(banner, flush=True)
    if noisy and not args.resume and args.max_evals is None and args.max_iter is None:
        print(
            "note: a noisy run has no f-based stops, so without --max-evals it can run for very long (up to the "
            "iteration limit); give --max-evals N or --max-iter N to bound it",
            file=sys.stderr,
        )
    if noisy and not args.resume and settings["restarts"] and args.max_iter is None:
        n = settings["x0"].size
        limit = default_max_iter(n, settings["popsize"] or default_popsize(n))
        print(
            f"note: a noisy run has no f-based stops, so each run lasts up to the iteration limit ({limit} for the "
            "first run) unless its steps shrink below tol_x, and --restarts may never start a second run within "
            "the budget; give --max-iter N for shorter runs",
            file=sys.stderr,
        )
    start = time.perf_counter()
    try:
        with open_executor(args.workers, args.dask) as executor:
            if args.resume:
                with warnings.catch_warnings():
                    # The note above gives this warning in the command line's terms.
                    warnings.filterwarnings("ignore", message=SAVED_LOG_WARNING, category=UserWarning)
                    result = resume(
                        function,
                        args.resume,
                        executor=executor,
                        max_evals=args.max_evals,
                        check_function=not args.changed_function,
                        **io_options,
                    )
            else:
                result = minimize(function, executor=executor, **io_options, **settings)
    except EvaluationError as error:
        # This comes before the ValueError handler because an ObjectiveValueError
        # (an invalid return value) is a ValueError too, yet a failed evaluation.
        saved = args.checkpoint or args.resume
        if saved:
            hint = f"the state before it is saved in {saved}; fix the cause, then continue with {resume_options(args)}"
        else:
            hint = "nothing was saved; rerun with --checkpoint FILE to be able to continue after a failure"
        message = in_command_line_terms(error.message, args) if isinstance(error, ValueError) else error.message
        print(f"\nerror: {message}\n{hint}", file=sys.stderr)
        if not saved and error.strategy is not None and math.isfinite(error.strategy.result.fbest):
            # Without a checkpoint this is all that is left of the run.
            best = error.strategy.result
            with np.printoptions(precision=6, suppress=False, linewidth=100, threshold=20):
                print(f"best f of the failed run {best.fbest:.6e} at x = {best.xbest}", file=sys.stderr)
        return 1
    except ValueError as error:
        raise ValueError(in_command_line_terms(str(error), args)) from error
    finally:
        if status is not None:
            status.close()
    print_result(result, time.perf_counter() - start, noisy, resumed=bool(args.resume))
    if result.nfev == saved_evaluations:
        note = "note: the saved run had already finished, so nothing was evaluated"
        if "max_evals" in result.stop:
            note += "; it stopped at its budget, so give a larger --max-evals to continue it"
        print(note, file=sys.stderr)
    if not math.isfinite(result.fbest):
        print("\nerror: the objective returned no finite value; check it at the start point", file=sys.stderr)
        return 1
    if args.plot:
        save_plot(result, args.plot, objective_name(function) if args.resume else args.function)
    return 0


def resume_options(args: argparse.Namespace) -> str:
    """Return the ``--resume`` options that continue this run, with ``--log`` if it wrote one.

    Without ``--log`` the continued run would write no log, so the log is
    named too.
    """
    options = f"--resume {shlex.quote(args.checkpoint or args.resume)}"
    if args.log is not None:
        options += f" --log {shlex.quote(args.log)}"
    return options


def saved_progress(path: str) -> tuple[int, str | None]:
    """Return the evaluations of all runs saved in the ``minimize`` checkpoint ``path``, and its log's path.

    The log's path is ``None`` when the saved run wrote no log.
    """
    tree = read_state(path)
    _, progress = stored_run(tree["extra"], path)
    return progress["nfev"] + int(tree["state"]["nfev"]), progress.get("log_path")


def resumed_function(spec: str | None, stored: str, path: str, *, changed: bool = False) -> Callable:
    """Return the objective of a resumed run: ``spec`` if it is the ``stored`` one, the stored one if omitted.

    With ``changed`` (``--changed-function``), ``spec`` may name another
    function, such as a corrected copy of the stored one.

    Raises:
        ValueError: if ``spec`` names another function without ``changed``:
            its values would mix with the stored run's and overwrite its
            checkpoint.
    """
    if spec is None:
        try:
            return load_function(stored)
        except ValueError as error:
            raise ValueError(
                f"{path} was written for the objective {stored}, which cannot be loaded ({error}); "
                "give FUNCTION as module:function"
            ) from error
    function = load_function(spec)
    if objective_name(function) != stored and not changed:
        raise ValueError(
            f"{path} was written for the objective {stored}, not {objective_name(function)} (from {spec!r}); "
            f"omit FUNCTION to resume with the stored one, or pass {stored}. "
            f"To continue this run with {spec}, add --changed-function; "
            f"to minimize {spec} from scratch, start a new run without --resume"
        )
    return function


def in_command_line_terms(message: str, args: argparse.Namespace) -> str:
    """Return a message of ``minimize`` or ``resume`` with the hints about ``vectorized`` given as flags."""
    # Without --vectorized, a resumed run is vectorized only because the saved run was.
    drop = "drop --vectorized" if args.vectorized else "pass --no-vectorized (the saved run was vectorized)"
    message = message.replace("pass vectorized=False", drop).replace("pass vectorized=True", "add --vectorized")
    return re.sub(r"\bmax_evals=", "--max-evals ", message)


def check_outputs(args: argparse.Namespace) -> None:
    """Check ``--log``, ``--checkpoint`` (on resume, by default the resumed file) and ``--plot`` before the run.

    Each must be writable and differ from the others and from the resumed
    file, which only ``--checkpoint`` may name. An existing ``--log`` must
    be empty or a spectral_es log, and an existing ``--checkpoint`` other
    than the resumed file must be empty or the checkpoint of a finished run.
    """
    check_distinct({"--log": args.log, "--plot": args.plot, "--resume": args.resume})
    check_distinct({"--log": args.log, "--plot": args.plot, "--checkpoint": args.checkpoint})
    if args.log is not None:
        check_writable(args.log, "--log")
        check_new_log(args.log, "--log")
    if args.checkpoint is not None:
        check_writable(args.checkpoint, "--checkpoint")
        if not (args.resume and same_file(args.checkpoint, args.resume)):
            check_new_checkpoint(args.checkpoint, "--checkpoint", f"--resume {args.checkpoint}")
    elif args.resume:
        check_writable(args.resume, "--resume (also the checkpoint of the continued run)")
    if args.plot is not None:
        check_plot_file(args.plot)


def check_plot_file(filename: str) -> None:
    """Raise ValueError unless matplotlib imports and can write ``filename`` in its format."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as error:
        raise ValueError(f'--plot needs matplotlib ({error}); pip install "spectral-es[plot]"') from error
    suffix = Path(filename).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise ValueError(
            f"--plot {filename}: matplotlib cannot write the format {suffix!r}; end the file name with one of "
            f"{', '.join('.' + name for name in sorted(formats))}"
        )
    check_writable(filename, "--plot")


def new_run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return the ``minimize`` arguments that define a new run, with the defaults of the options."""
    x0 = parse_x0(args.x0, args.dim)
    bounds = parse_bounds(args.lower, args.upper, x0.size)
    integer_variables = parse_indices(args.integer)
    if args.x0 is None and bounds is not None:
        try:
            x0 = default_start(x0, bounds, centre=args.function not in FUNCTIONS, integers=integer_variables)
        except ValueError as error:
            raise ValueError(with_option_names(str(error))) from error
    # numpy types entropy as optional, but a SeedSequence made without a seed draws an int.
    seed = args.seed if args.seed is not None else int(cast(int, np.random.SeedSequence().entropy) % 2**32)
    settings = {
        "x0": x0,
        "sigma0": default_sigma0(bounds) if args.sigma0 is None else args.sigma0,
        "stds": parse_stds(args.stds),
        "seed": seed,
        "popsize": args.popsize,
        "max_evals": args.max_evals,
        "max_iter": args.max_iter,
        "f_target": args.f_target,
        "restarts": args.restarts or 0,
        "bipop": bool(args.bipop),
        "diagonal": bool(args.diagonal),
        "preset": args.preset or "cma",
        "bounds": bounds,
        "integer_variables": integer_variables,
    }
    if args.f_target is None and not args.noise and args.function in FUNCTIONS:
        # The built-in functions have their minimum 0. A user's function may go below any
        # fixed target, and a noisy value can undercut one by chance, so those get none.
        settings["f_target"] = 1e-10
    if args.noise:
        maximum = 20 if args.noise_max_evaluations is None else args.noise_max_evaluations
        settings.update(noise_handling=True, noise_max_evaluations=maximum)
    elif args.noise_max_evaluations is not None:
        raise ValueError("--noise-max-evaluations sets how often --noise re-evaluates a point; give --noise too")
    return settings


def default_start(x0: np.ndarray, bounds: Bounds, *, centre: bool, integers: list[int]) -> np.ndarray:
    """Return the default start in a box: ``x0`` moved inside, or with ``centre`` the centre of each finite interval.

    Integer variables at a centre start at the whole number nearest to it
    (the upper one at a tie), not on a rounding tie.

    Raises:
        ValueError: for bounds with NaN or ``lower >= upper``, before the
            start is computed from them.
    """
    box = BoxBounds(bounds.lb, bounds.ub, x0.size)
    start = np.clip(x0, box.lower, box.upper)
    if centre:
        finite = box.has_lower & box.has_upper
        middle = (np.where(finite, box.lower, 0.0) + np.where(finite, box.upper, 0.0)) / 2
        start = np.where(finite, middle, start)
        whole = np.floor(start + 0.5)
        inside = (whole >= box.lower) & (whole <= box.upper)
        rounded = np.zeros(x0.size, dtype=bool)
        rounded[[i for i in integers if 0 <= i < x0.size]] = True
        start = np.where(rounded & inside, whole, start)
    return start


def describe_run(function: str, settings: dict[str, Any]) -> str:
    """Return the first output line of a new run: function, dimension, start, step size, population, target, seed."""
    x0 = settings["x0"]
    start = f"{x0[0]:g} in every coordinate" if np.all(x0 == x0[0]) else np.array2string(x0, precision=4, threshold=6)
    popsize = settings["popsize"] or default_popsize(x0.size)
    target = "none" if settings["f_target"] is None else f"f <= {settings['f_target']:g}"
    stds = settings.get("stds")
    if stds is None:
        scaled = ""
    elif np.ndim(stds) == 0:
        scaled = f" times stds {stds:g}"
    else:
        scaled = f" times stds {np.array2string(np.asarray(stds), precision=4, threshold=6)}"
    return (
        f"minimizing {function} in {x0.size} dimensions from x0 = {start}, sigma0 {settings['sigma0']:g}{scaled}, "
        f"popsize {popsize}, target {target}, seed {settings['seed']}"
    )


def default_sigma0(bounds: Bounds | None) -> float:
    """Return the default ``--sigma0``: a fraction of the narrowest finite box width, else 1.

    A step size of a quarter to a third of the search interval is the usual
    advice for CMA-ES. A fixed 1 stalls in boxes much narrower than that.
    """
    if bounds is None:
        return 1.0
    widths = np.asarray(bounds.ub, dtype=float) - np.asarray(bounds.lb, dtype=float)
    finite = widths[np.isfinite(widths) & (widths > 0)]  # an empty box is reported by the bounds check
    return float(BOX_SIGMA_FRACTION * finite.min()) if finite.size else 1.0


def checked_checkpoint_every(args: argparse.Namespace) -> int:
    """Return the iterations between checkpoints, or raise ValueError if --checkpoint-every is < 1 or saves nothing."""
    if args.checkpoint_every is None:
        return DEFAULT_CHECKPOINT_EVERY
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be an integer >= 1, got {args.checkpoint_every}")
    if args.checkpoint is None and not args.resume:
        raise ValueError(
            f"--checkpoint-every {args.checkpoint_every} sets how often the run is saved, but nothing is saved "
            "without --checkpoint FILE; give --checkpoint FILE too"
        )
    return int(args.checkpoint_every)


def check_run_settings(settings: dict[str, Any]) -> None:
    """Raise ValueError, in the command line's option names, for settings that ``minimize`` rejects.

    Runs before the first line of output. A strategy built from the settings
    (no evaluation) checks the rest, such as bounds and integer indices.
    """
    counts = [
        ("--seed", settings["seed"], 0),
        ("--popsize", settings["popsize"], 2),
        ("--max-iter", settings["max_iter"], 1),
        ("--restarts", settings["restarts"], 0),
        ("--noise-max-evaluations", settings.get("noise_max_evaluations"), 1),
    ]
    for flag, value, minimum in counts:
        if value is not None and value < minimum:
            raise ValueError(f"{flag} must be an integer >= {minimum}, got {value}")
    for flag, value in (("--sigma0", settings["sigma0"]), ("--max-evals", settings["max_evals"])):
        if value is not None and not 0 < value < math.inf:
            raise ValueError(f"{flag} must be a positive finite number, got {value}")
    if settings["bipop"] and not settings["restarts"]:
        raise ValueError("--bipop interleaves small runs with restarts; give --restarts K with K >= 1 too")

    check_start(settings["x0"], settings["bounds"])
    options = {name: value for name, value in settings.items() if name not in ("x0", "sigma0", "restarts", "bipop")}
    try:
        SpectralES(settings["x0"], settings["sigma0"], **options)
    except ValueError as error:
        raise ValueError(with_option_names(str(error))) from error


def with_option_names(message: str) -> str:
    """Return ``message`` with the ``minimize`` argument names replaced by their command-line options."""
    for name, flag in {**RUN_OPTIONS, "integer_variables": "--integer"}.items():
        message = re.sub(rf"\b{name}\b", flag, message)
    return message


def check_start(x0: np.ndarray, bounds: Bounds | None) -> None:
    """Raise ValueError, in the command line's terms, if ``--x0`` lies outside the box of ``--lower`` and ``--upper``.

    A box with ``lower >= upper`` somewhere is left to ``SpectralES``, whose
    message covers it.
    """
    if bounds is None or not np.all(bounds.lb < bounds.ub):
        return
    outside = np.flatnonzero((x0 < bounds.lb) | (x0 > bounds.ub))
    if outside.size:
        i = int(outside[0])
        raise ValueError(
            f"--x0[{i}] = {x0[i]} lies outside the bounds [{bounds.lb[i]}, {bounds.ub[i]}] "
            f"({outside.size} coordinate(s) outside in all); move --x0 inside [--lower, --upper]"
        )


def check_resume_arguments(args: argparse.Namespace) -> None:
    """Reject run-defining options next to ``--resume``: the checkpoint fixes them.

    ``--max-evals`` is the exception: it gives the resumed run a new budget.
    """
    # A value of 0 is given too (--seed 0), so values are compared with None, not by truth.
    given = [
        flag
        for name, flag in RUN_OPTIONS.items()
        if name != "max_evals"
        and (getattr(args, name) is True if name in RUN_FLAGS else getattr(args, name) is not None)
    ]
    if given:
        options = ", ".join(given)
        raise ValueError(
            f"{options} cannot change a resumed run, whose settings are in {args.resume}; "
            f"remove {options} from the command, or start a new run without --resume"
        )


def check_executor_options(workers: int | None, dask_address: str | None) -> None:
    """Raise ValueError for ``--workers`` below 1 or given together with ``--dask``."""
    if workers is not None and dask_address is not None:
        raise ValueError("give --workers or --dask, not both")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")


@contextlib.contextmanager
def open_executor(workers: int | None, dask_address: str | None) -> Iterator[Any]:
    """Yield the executor that ``--workers`` or ``--dask`` ask for (``None``: evaluate here)."""
    check_executor_options(workers, dask_address)
    if workers is not None:
        with ProcessPoolExecutor(max_workers=workers) as executor:
            yield executor
        return
    if dask_address is not None:
        try:
            from distributed import Client
        except ImportError as error:
            raise ValueError("--dask needs Dask: pip install 'spectral-es[distributed]'") from error
        try:
            client = Client(dask_address)
        except (OSError, asyncio.TimeoutError) as error:  # the latter is an OSError only from Python 3.11 on
            raise ValueError(
                f"could not connect to the Dask scheduler at {dask_address} ({error}); check the address"
            ) from error
        with client:
            yield client
        return
    yield None


def print_result(result: ESResult, elapsed: float, noisy: bool = False, resumed: bool = False) -> None:
    """Print the summary, with one line per run after restarts.

    With noise, ``best f`` is the luckiest draw and biased low, so the
    summary adds a line that names the mean as the estimate. ``elapsed`` is
    this process's time; after ``--resume`` the progress table's time
    column also counts the earlier processes.
    """
    with np.printoptions(precision=6, suppress=False, linewidth=100, threshold=20):
        print(
            f"\nbest f      {result.fbest:.6e}\n"
            f"best x      {result.xbest}\n"
            f"{'last mean' if result.restarts else 'mean':<12}{result.mean}\n"
            f"evaluations {result.nfev}\n"
            f"iterations  {result.nit}\n"
            f"stopped by  {result.message}\n"
            f"time        {elapsed:.2f} s{' in this process' if resumed else ''}"
        )
    if noisy:
        print(
            "noise       best f and best x are the luckiest noisy draw; use the mean as the estimate "
            "(evaluate it again if you need its value)"
            + (
                "; after restarts it is the last run's, which may have been cut short by the budget"
                if result.restarts
                else ""
            )
        )
    if result.restarts:
        columns = ("run", 4), ("regime", 8), ("popsize", 8), ("sigma0", 10), ("f best", 12), ("evals", 8), ("total", 8)
        print("\n" + " ".join(f"{name:>{width}}" for name, width in columns), " stopped by")
        total = 0
        for run in result.restarts:
            total += run["nfev"]
            reasons = ", ".join(f"{key}={value}" for key, value in run["stop"].items())
            print(
                f"{run['run']:>4} {run['regime']:>8} {run['popsize']:>8} {run['sigma0']:>10.3e} {run['fbest']:>12.5e} "
                f"{run['nfev']:>8} {total:>8}  {reasons}"
            )


def save_plot(result: ESResult, filename: str, title: str) -> None:
    """Save the standard panels of the run's history to ``filename`` (checked by :func:`check_plot_file`)."""
    from spectral_es.plot import plot

    plot(result, filename, title=title)
    print(f"plot        {filename}")


class StatusLine:
    """One status line on stderr, rewritten in place at most twice a second.

    It is the ``callback`` of the run and never requests a stop.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.start = time.perf_counter()
        self.last = -interval
        self.width = 0

    def __call__(self, result: ESResult) -> None:
        now = time.perf_counter() - self.start
        if now - self.last < self.interval and not result.stop:
            return
        self.last = now
        rate = result.nfev / now if now > 0 else 0.0
        line = (
            f"iteration {result.nit}  evaluations {result.nfev} ({rate:.0f}/s)  "
            f"best f {result.fbest:.4e}  sigma {result.sigma:.2e}  {now:.0f} s"
        )
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.width = len(line)

    def close(self) -> None:
        """End the status line."""
        if self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The usage of the subcommand whose options were misspelt, not the top level's.
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "functions":
        for name, function in FUNCTIONS.items():
            # python -OO strips docstrings, so a function may have none.
            summary = function.__doc__.splitlines()[0].replace("``", "") if function.__doc__ else ""
            print(f"{name:18} {summary}")
        return 0
    if args.plot and not Path(args.plot).suffix:
        args.plot += ".png"  # what matplotlib writes for a name without a suffix
    try:
        if args.changed_function and (not args.resume or args.function is None):
            raise ValueError(
                "--changed-function continues a saved run with another objective; give --resume FILE and FUNCTION too"
            )
        if args.resume:
            if Path(args.resume).is_dir():
                raise IsADirectoryError(
                    f"checkpoint {args.resume!r} is a folder; give the file that --checkpoint wrote"
                )
            if not Path(args.resume).is_file():
                raise FileNotFoundError(f"checkpoint {args.resume!r} not found; check the path")
            check_resume_arguments(args)
        with current_directory_importable(), command_line_warnings(args.command_parser.prog):
            return run_minimize(args)
    except (ValueError, FileNotFoundError, IsADirectoryError) as error:
        # One line that names the option, with argparse's status 2, as the
        # parser's own errors give.
        args.command_parser.exit(2, f"{args.command_parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        # Before its first checkpoint a new run has nothing to continue from.
        saved = args.checkpoint or args.resume
        message = "\ninterrupted"
        if saved is not None and os.path.isfile(saved):
            message += f"; continue with {resume_options(args)}"
        print(message, file=sys.stderr)
        return 130
    except BrokenPipeError as error:
        if not stdout_closed():
            args.command_parser.exit(1, f"{args.command_parser.prog}: error: {error}\n")
        # The reader of stdout has gone (as with `| head`): stop quietly, as
        # Python's documentation recommends, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 2


def stdout_closed() -> bool:
    """Return whether stdout is a pipe whose reading end has closed (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return bool(poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll on this platform, or no file behind stdout
        return False


if __name__ == "__main__":
    sys.exit(main())
