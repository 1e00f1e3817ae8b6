"""Compare SpectralES with pycma's CMA-ES and xNES; write a results page and figures.

    python -m benchmarks.es.compare --quick    # 3 seeds, n <= 40, about 5 minutes
    python -m benchmarks.es.compare --full     # 10 seeds, n up to 100 and 2000 for timing

Run it from the repository root. Every method gets the same problems (see
:func:`benchmarks.es.harness.make_problem`): for each seed the same start,
``sigma0``, target and evaluation budget. The page (``RESULTS.md``), the PNG
figures and the raw records (``results.json``) go to ``--output``, by
default ``benchmarks/es`` (the committed page) for a plain ``--full`` and
the git-ignored ``benchmarks/es/quick`` for ``--quick``. ``--seeds``,
``--dims`` and the other options override the mode's choices; the page
records the exact command. A ``--full`` run with such an option covers only
part of the page, so it needs ``--output``. Merge its ``results.json`` into
the page with ``--from-json``. Give such runs a folder inside the repository,
such as ``benchmarks/es/runs/NAME``, and commit its ``results.json`` with the
page: a page drawn from files outside the repository cannot be redrawn later
without rerunning every cell.

``--methods`` runs each named method on the functions whose table shows it
(the unimodal methods of :data:`FULL` and the multimodal ones of
:data:`benchmarks.es.page.MULTIMODAL_METHODS`), in either mode. It does not
change the methods of the timing sweep.

``--from-json FILE ... --output FOLDER`` redraws the page and figures from
saved ``results.json`` files without running. ``--output benchmarks/es``
rewrites the committed page. Where several files have the same cell, the
last one wins, and the page lists which methods it took from which file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cma
import matplotlib
import numpy as np
import scipy

from benchmarks.es import report
from benchmarks.es.harness import MULTIMODAL, UNIMODAL, RunRecord, make_problem, run, thin_trace
from benchmarks.es.methods import DESCRIPTIONS, METHODS
from benchmarks.es.page import MULTIMODAL_METHODS, render_page
from benchmarks.es.timing import TimingRow, format_table, time_methods
from benchmarks.paper.paper_common import library_commit

__all__ = ["FULL", "QUICK", "Config", "main"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    """Settings of one comparison run: seeds, dimensions, methods and timing sweep.

    Attributes:
        seeds: Number of seeds (1..seeds) per problem.
        dims: Dimensions of the unimodal functions.
        multimodal_dims: Dimensions of the multimodal functions.
        unimodal_methods: Methods run on the unimodal functions.
        multimodal_methods: Methods run on the multimodal functions.
        timing_dims: Dimensions of the timing sweep (empty: no timing).
        timing_methods: Methods timed; must include ``pycma``.
        timing_repeats: Timed blocks per method and dimension.
        functions: Functions run, a subset of unimodal and multimodal ones.
    """

    seeds: int
    dims: tuple[int, ...]
    multimodal_dims: tuple[int, ...]
    unimodal_methods: tuple[str, ...]
    multimodal_methods: tuple[str, ...]
    timing_dims: tuple[int, ...]
    timing_methods: tuple[str, ...]
    timing_repeats: int
    functions: tuple[str, ...] = UNIMODAL + MULTIMODAL


QUICK = Config(
    seeds=3,
    dims=(2, 10, 40),
    multimodal_dims=(2, 10),
    unimodal_methods=("spectral", "spectral-diagonal", "spectral-xnes", "spectral-passive", "pycma", "xnes"),
    multimodal_methods=("spectral-ipop", "pycma-ipop", "spectral", "pycma"),
    timing_dims=(10, 50, 200, 500),
    timing_methods=("pycma", "spectral", "spectral-eager", "spectral-diagonal", "xnes"),
    timing_repeats=2,
)

FULL = Config(
    seeds=10,
    dims=(2, 10, 40, 100),
    multimodal_dims=(2, 10, 40, 100),
    unimodal_methods=(
        "spectral",
        "spectral-diagonal",
        "spectral-xnes",
        "spectral-passive",
        "spectral-truncated",
        "spectral-eager",
        "spectral-large",
        "pycma",
        "pycma-diagonal",
        "xnes",
    ),
    multimodal_methods=MULTIMODAL_METHODS,
    timing_dims=(10, 20, 50, 100, 200, 500, 1000, 2000),
    timing_methods=("pycma", "spectral", "spectral-eager", "spectral-diagonal", "xnes"),
    timing_repeats=3,
)


def run_all(config: Config, *, log=print) -> list[RunRecord]:
    """Run every method of ``config`` on every problem; one log line per cell."""
    records = []
    for function in config.functions:
        multimodal = function in MULTIMODAL
        dims = config.multimodal_dims if multimodal else config.dims
        methods = config.multimodal_methods if multimodal else config.unimodal_methods
        for n in dims:
            problems = [make_problem(function, n, seed) for seed in range(1, config.seeds + 1)]
            for method in methods:
                start = time.perf_counter()
                cell = [run(method, METHODS[method], problem) for problem in problems]
                records += cell
                seconds = time.perf_counter() - start
                for record in cell:
                    if record.stop.startswith("error"):
                        log(f"{method} failed on {function} n={n} seed {record.seed}: {record.stop}")
                log(f"{function:>17} n={n:<4} {method:<22} {report.Cell(cell)!s:>14}  {seconds:7.1f} s")
    return records


def machine_description() -> str:
    """Return the CPU model and core count, from ``lscpu`` where available."""
    model = platform.processor() or platform.machine()
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    return f"{model}, {os.cpu_count()} logical cores (shared with other jobs), OPENBLAS_NUM_THREADS={threads}"


def describe_run(command: str, seconds: float) -> dict:
    """Return the command, date, machine and versions of this run, for the page header."""
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "versions": (
            f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"cma {cma.__version__}, matplotlib {matplotlib.__version__}, spectral_es {library_commit()}"
        ),
        "seconds": seconds,
    }


def save_results(path: Path, config: Config, records: list[RunRecord], timing_rows, header: dict) -> None:
    """Write everything the page is made from to ``path`` as JSON, with traces thinned by :func:`thin_trace`."""
    raw = {
        "header": header,
        "config": dataclasses.asdict(config),
        "records": [{**dataclasses.asdict(record), "trace": thin_trace(record.trace)} for record in records],
        "timing": [dataclasses.asdict(row) for row in timing_rows],
    }
    path.write_text(json.dumps(raw, indent=1))


def load_results(paths: Sequence[Path]) -> tuple[Config, list[RunRecord], list[TimingRow], dict]:
    """Read and merge files written by :func:`save_results`; where they overlap, the later file wins.

    A cell (method, function, n) comes whole from the last file that has it,
    and the timing rows from the last file that has any, so a rerun of some
    methods replaces their old runs. The config is the first file's, with
    the functions, dimensions and methods of all files. The header's
    ``sources`` list each file's command, date, versions and the methods the
    page takes from it.
    """
    raws = [json.loads(path.read_text()) for path in paths]
    owner: dict[tuple, int] = {}
    for index, raw in enumerate(raws):
        for record in raw["records"]:
            owner[(record["method"], record["function"], record["n"])] = index
    timing_index = max((i for i, raw in enumerate(raws) if raw["timing"]), default=None)

    configs, records, timing_rows, sources = [], [], [], []
    for index, (path, raw) in enumerate(zip(paths, raws, strict=True)):
        configs.append(Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["config"].items()}))
        owned = [r for r in raw["records"] if owner[(r["method"], r["function"], r["n"])] == index]
        records += [RunRecord(**{**r, "trace": [tuple(pair) for pair in r["trace"]]}) for r in owned]
        dims: dict[str, set[int]] = {}
        for record in owned:
            dims.setdefault(record["method"], set()).add(record["n"])
        used = [f"{method} (n = {', '.join(map(str, sorted(ns)))})" for method, ns in dims.items()]
        if index == timing_index:
            timing_rows = [TimingRow(**row) for row in raw["timing"]]
            used.append("time per generation")
        if used:
            sources.append({**raw["header"], "file": str(path), "used": used})
    config = dataclasses.replace(configs[0], **{field: _union(configs, field) for field in _MERGED_FIELDS})
    if timing_index is not None:
        config = dataclasses.replace(config, timing_methods=configs[timing_index].timing_methods)
    header = {
        "command": "",
        "date": max(source["date"] for source in sources),
        "machine": sources[0]["machine"],
        "versions": "see the sources",
        "seconds": sum(source["seconds"] for source in sources),
        "sources": sources,
    }
    return config, records, timing_rows, header


_MERGED_FIELDS = ("functions", "dims", "multimodal_dims", "unimodal_methods", "multimodal_methods", "timing_dims")


def _union(configs: Sequence[Config], field: str) -> tuple:
    """Return the values of ``field`` over ``configs``, in order of first appearance."""
    values = [value for config in configs for value in getattr(config, field)]
    merged = tuple(dict.fromkeys(values))
    return tuple(sorted(merged)) if field.endswith("dims") else merged


def write_page(config: Config, records: list[RunRecord], timing_rows, header: dict, output: Path) -> None:
    """Write the figures and ``RESULTS.md`` into ``output``."""
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    cells = report.group(records)
    for function in config.functions:
        multimodal = function in MULTIMODAL
        dims = config.multimodal_dims if multimodal else config.dims
        methods = config.multimodal_methods if multimodal else config.unimodal_methods
        target = make_problem(function, 2, 1).f_target
        report.plot_convergence(cells, function, dims, methods, target, figures / f"convergence_{function}.png")
    if timing_rows:
        report.plot_timing(timing_rows, config.timing_methods, figures / "timing.png")
    (output / "RESULTS.md").write_text(render_page(config, cells, timing_rows, header, DESCRIPTIONS))


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    """Parse the command line and return it with the effective :class:`Config`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--quick", action="store_true", help="3 seeds, n = 2, 10, 40 (multimodal functions: 2, 10); about 5 minutes"
    )
    mode.add_argument("--full", action="store_true", help="10 seeds, n = 2, 10, 40, 100; hours")
    mode.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="only redraw the page from results.json files; a later file replaces the cells it shares",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds per problem")
    parser.add_argument("--dims", type=int, nargs="+", help="dimensions of all functions")
    parser.add_argument(
        "--functions", nargs="*", choices=UNIMODAL + MULTIMODAL, help="functions to run; none for the timing alone"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        help="run only these methods, each on the functions whose table shows it; the timing sweep is unchanged",
    )
    parser.add_argument(
        "--timing-dims", type=int, nargs="*", help="dimensions of the timing sweep, >= 2; none to skip it"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="folder of RESULTS.md, figures/ and results.json (default: benchmarks/es for a plain --full, "
        "benchmarks/es/quick for --quick; required with --from-json)",
    )
    args = parser.parse_args(argv)

    if args.from_json is not None:
        missing = [str(path) for path in args.from_json if not path.is_file()]
        if missing:
            parser.error(f"--from-json: file not found: {', '.join(missing)}")
        if args.output is None:
            parser.error("--from-json needs --output; give benchmarks/es to rewrite the committed page")

    config = QUICK if args.quick else FULL
    changes = {}
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"--seeds must be >= 1, got {args.seeds}")
        changes["seeds"] = args.seeds
    if args.dims is not None:
        if min(args.dims) < 2:
            parser.error(f"--dims must all be >= 2, got {args.dims}")
        changes["dims"] = changes["multimodal_dims"] = tuple(args.dims)
    if args.functions is not None:
        changes["functions"] = tuple(args.functions)
    if args.methods is not None:
        # The page's tables decide where a named method runs, not the mode,
        # because the quick mode's lists leave out methods that a user may name.
        unshown = [m for m in args.methods if m not in FULL.unimodal_methods + MULTIMODAL_METHODS]
        if unshown:
            parser.error(f"--methods: no table of the page shows {', '.join(unshown)}; leave them out")
        changes["unimodal_methods"] = tuple(m for m in FULL.unimodal_methods if m in args.methods)
        changes["multimodal_methods"] = tuple(m for m in MULTIMODAL_METHODS if m in args.methods)
    if args.timing_dims is not None:
        if args.timing_dims and min(args.timing_dims) < 2:
            parser.error(f"--timing-dims must all be >= 2, got {args.timing_dims}")
        changes["timing_dims"] = tuple(args.timing_dims)
    partial = args.quick or (args.full and changes)
    if args.output is None:
        if partial and args.full:
            parser.error(
                "--full with --seeds, --dims, --functions, --methods or --timing-dims covers only part of the "
                "page; give --output FOLDER, then merge its results.json into the page with --from-json"
            )
        args.output = HERE / "quick" if args.quick else HERE
    elif partial and args.output.resolve() == HERE:
        parser.error(
            f"--output {args.output}: a --quick run or a narrowed --full run would replace the committed page with "
            "part of it; write to another folder and merge its results.json with --from-json"
        )
    return args, dataclasses.replace(config, **changes)


def main(argv: Sequence[str] | None = None) -> None:
    args, config = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        config, records, timing_rows, header = load_results(args.from_json)
        arguments = sys.argv[1:] if argv is None else argv
        header["command"] = "python -m benchmarks.es.compare " + " ".join(shlex.quote(arg) for arg in arguments)
        write_page(config, records, timing_rows, header, args.output)
        print(f"wrote {args.output / 'RESULTS.md'} from {', '.join(map(str, args.from_json))}")
        return

    arguments = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.es.compare " + " ".join(shlex.quote(arg) for arg in arguments)
    # Versions and date at the start: the sources may change while the run goes on.
    header = describe_run(command, 0.0)
    start = time.perf_counter()
    records = run_all(config, log=lambda line: print(line, flush=True))
    header["seconds"] = time.perf_counter() - start
    save_results(args.output / "results.json", config, records, [], header)
    timing_rows = []
    if config.timing_dims:
        timing_rows = time_methods(config.timing_dims, config.timing_methods, repeats=config.timing_repeats)
        print(format_table(timing_rows, config.timing_methods), flush=True)
    header["seconds"] = time.perf_counter() - start
    save_results(args.output / "results.json", config, records, timing_rows, header)
    write_page(config, records, timing_rows, header, args.output)
    print(f"wrote {args.output / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
