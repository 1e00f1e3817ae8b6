"""Time one optimizer step on a single large weight, for every peer optimizer.

For each shape (1024 x 1024 and 4096 x 1024) and dtype (float32, bfloat16;
parameters and optimizer state alike) every optimizer takes one untimed
step (state creation, first decompositions) and then ``--steps`` rounds of
timed steps on random gradients, the optimizers taking their rounds in
turn. A peer takes one step per round. A SpectralKron variant takes enough
steps per round to time its whole schedule once: ``T * orthogonalize_every``
steps, which contain every kind of refresh and the Björck steps that come
with every 10th (20 steps by default, 100 with ``T=10``). The median, the worst step
and the mean are reported as ratios to AdamW's median in the same run. The
mean is the cost amortised over whole refresh periods, because 20 steps are
2 periods of SOAP and Shampoo, and SpectralKron's steps cover its cycle.
The state size is the largest size of the state after any step, in bytes
per weight element: with ``T >= 4`` SpectralKron keeps a Cayley generator the
size of an eigenbasis from each refresh to the next step. One torch thread,
denormals flushed (they slowed some runs 4-100x).

Variants of SpectralKron (see ``peers.VARIANTS``): the default (each factor
refreshed every 2 steps, sides longer than 2048 diagonal), ``T=10`` (every
10 steps, precond_lr 0.3), ``adam graft`` (graft="adam": Adam's full
second moment instead of the factored one), ``bf16 state`` (float32 weights, bfloat16
momentum and eigenbases), ``bf16 state, T=10`` (both changes), ``bf16 state, T=4``
(bfloat16 state, every 4 steps, precond_lr 0.2) and ``full`` (a full 4096 x 4096 factor).

Run from the repository root (needs ``pip install -e ".[optim-bench]"``):

    python -m benchmarks.optimizer.step_time          # 10 rounds, main variants: a few minutes
    python -m benchmarks.optimizer.step_time --full   # 20 rounds, every variant, for RESULTS.md
    python -m benchmarks.optimizer.step_time --full --shapes 1024x1024   # rerun one shape

A full run restricted with ``--shapes`` or ``--dtypes`` keeps the rows of
the shape and dtype pairs it did not rerun from the record it replaces, and
the results page names their run. Only ``--full`` writes ``results/`` and the
page; every other run writes the git-ignored ``results/quick/`` (or
``--out``).

The full run takes about 10 minutes on 2 busy cores, most of it in SOAP and
the full 4096 x 4096 factor; the quick one writes ``results/quick/`` only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.optimizer import report
from benchmarks.optimizer.peers import PEERS, environment, make_optimizer, state_bytes
from spectral_es.optim import SpectralKron

HERE = Path(__file__).resolve().parent
SHAPES = ((1024, 1024), (4096, 1024))


def time_steps(names: list[str], shape: tuple[int, int], dtype: torch.dtype, steps: int) -> dict[str, dict]:
    """Return step times (seconds) and largest state size per optimizer, each on its own copy of one weight.

    The optimizers take their steps in rounds (one untimed step of each,
    then ``steps`` rounds), so a change of machine load during the run slows
    them alike and the ratios within a table stay comparable. In each round
    an optimizer takes as many steps as it needs to time its whole schedule
    cycle (see :func:`cycle_length`) over the run, and every optimizer sees the same
    gradients in the same order.

    NOTE: a SpectralKron mean covers whole cycles only where ``steps``
    divides the cycle or is a multiple of it, as 10 and 20 are for cycles
    of 20 and 100 steps. ``steps=30`` times 120 steps of ``T=10``, 1.2
    cycles of 100 steps.
    """
    generator = torch.Generator().manual_seed(0)
    start_weight = torch.randn(shape, generator=generator).to(dtype) * 0.02
    gradients = [torch.randn(shape, generator=generator).to(dtype) * 1e-3 for _ in range(steps + 1)]
    runs = {}
    for name in names:
        weight = torch.nn.Parameter(start_weight.clone())
        optimizer = make_optimizer(name, [weight], 1e-3)
        per_round = math.ceil(cycle_length(optimizer) / steps)
        runs[name] = {
            "weight": weight,
            "optimizer": optimizer,
            "per_round": per_round,
            "times": [],
            "taken": 0,
            "state_bytes": 0,
        }
    for round_ in range(steps + 1):
        for run in runs.values():
            for _ in range(1 if round_ == 0 else run["per_round"]):
                if "failure" in run:
                    break
                run["weight"].grad = gradients[run["taken"] % len(gradients)]
                run["taken"] += 1
                try:
                    start = time.perf_counter()
                    run["optimizer"].step()
                    run["times"].append(time.perf_counter() - start)
                    # The state can grow for a step (a pending generator), so its maximum is kept.
                    run["state_bytes"] = max(run["state_bytes"], state_bytes(run["optimizer"]))
                except (RuntimeError, ValueError, torch.linalg.LinAlgError) as error:
                    run["failure"] = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
    return {name: _summary(run) for name, run in runs.items()}


def cycle_length(optimizer: torch.optim.Optimizer) -> int:
    """Return the number of steps after which the optimizer's schedule repeats (1 for the peers).

    SpectralKron refreshes each factor every ``T`` steps and takes a Björck
    step with every ``orthogonalize_every``-th refresh, so its
    schedule repeats after ``T * orthogonalize_every`` steps: 20 by default,
    100 with ``T=10``. The peers' schedules (SOAP's and Shampoo's refresh every 10
    steps) repeat within the 20 steps of a full run.
    """
    if not isinstance(optimizer, SpectralKron):
        return 1
    group = optimizer.param_groups[0]
    return group["precondition_frequency"] * max(group["orthogonalize_every"], 1)


def _summary(run: dict) -> dict:
    """Return the median, worst and mean of the timed steps (the first, untimed step dropped), and their count."""
    if "failure" in run:
        return {"failure": run["failure"]}
    times = run["times"][1:]
    return {
        "median": statistics.median(times),
        "worst": max(times),
        "mean": statistics.fmean(times),
        "steps": len(times),
        "bytes_per_element": run["state_bytes"] / run["weight"].numel(),
        "finite": bool(torch.isfinite(run["weight"]).all()),
    }


def _label(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _case_label(row: dict) -> str:
    return f"{_label(tuple(row['shape']))} {row['dtype']}"


def rows_to_keep(previous: dict, rerun: set[tuple[tuple[int, int], str]]) -> tuple[list[dict], dict | None]:
    """Return the rows of ``previous`` whose (shape, dtype) is not in ``rerun``, and the run they come from.

    The run is the record's own (its environment and step count) or, for
    rows it kept itself, the earlier run it names under ``kept``. Raises
    ``ValueError`` when the rows would come from both, because the page can
    name only one earlier run.
    """
    kept = [row for row in previous["rows"] if (tuple(row["shape"]), row["dtype"]) not in rerun]
    if not kept:
        return [], None
    # Labels are "1024x1024 float32". Records written before dtypes were kept
    # apart label a whole shape ("4096x1024").
    earlier = set(previous.get("kept", {}).get("shapes", []))
    from_earlier = [row for row in kept if _case_label(row) in earlier or _label(tuple(row["shape"])) in earlier]
    if not from_earlier:
        return kept, {"environment": previous["environment"], "steps": previous["steps"]}
    if len(from_earlier) == len(kept):
        return kept, {key: value for key, value in previous["kept"].items() if key != "shapes"}
    shapes = [_label(shape) for shape in SHAPES if any(tuple(row["shape"]) == shape for row in from_earlier)]
    dtypes = sorted({row["dtype"] for row in from_earlier})
    raise ValueError(
        "the rows this run keeps would come from two earlier runs, "
        f"{previous['kept']['environment']['date']} and {previous['environment']['date']}, "
        "and the page can name only one. Rerun all shapes and dtypes, or add "
        f"{' '.join(shapes)} to --shapes and {' '.join(dtypes)} to --dtypes"
    )


def keep_rows_not_rerun(results: dict, kept: list[dict], source: dict | None) -> None:
    """Add the ``kept`` rows to ``results`` in the order of ``SHAPES`` and name their run."""
    if not kept:
        return
    results["rows"] += kept
    results["rows"].sort(key=lambda row: (SHAPES.index(tuple(row["shape"])), row["dtype"] != "float32"))
    results["kept"] = {**source, "shapes": sorted({_case_label(row) for row in kept})}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="20 rounds and every variant; writes RESULTS.md")
    parser.add_argument(
        "--steps",
        type=int,
        help="rounds of timed steps, >= 1 (default 10, full: 20). A peer takes one step per round, and a "
        "SpectralKron variant enough to time its T * orthogonalize_every steps once",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="dtypes to time (default: both); a full run keeps the earlier rows of the others",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[_label(shape) for shape in SHAPES],
        choices=[_label(shape) for shape in SHAPES],
        help="shapes to time (default: all); a full run keeps the earlier rows of the others",
    )
    parser.add_argument("--out", type=Path, help="folder for step_time.json (default results/quick/, full: results/)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.steps is None:
        args.steps = 20 if args.full else 10
    args.out = report.output_folder(parser, args.full, args.out)

    # Read the record this run replaces now, so that one that cannot be
    # merged stops the run before any timing.
    args.shapes = [shape for shape in SHAPES if _label(shape) in args.shapes]
    rerun = {(shape, dtype) for shape in args.shapes for dtype in args.dtypes}
    args.kept, args.kept_source = [], None
    path = args.out / "step_time.json"
    if path.exists():
        try:
            args.kept, args.kept_source = rows_to_keep(json.loads(path.read_text()), rerun)
        except ValueError as error:
            parser.error(f"cannot merge with {path}: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    warnings.simplefilter("ignore", UserWarning)
    rows = []
    for shape in args.shapes:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            names = [*PEERS, "SpectralKron T=10"]
            if args.full:
                names.append("SpectralKron adam graft")
            if args.full and dtype == torch.float32:
                names += ["SpectralKron bf16 state", "SpectralKron bf16 state, T=10", "SpectralKron bf16 state, T=4"]
            if args.full and max(shape) > 2048:
                names.append("SpectralKron full")
            for name, summary in time_steps(names, shape, dtype, args.steps).items():
                row = {"shape": list(shape), "dtype": dtype_name, "optimizer": name, **summary}
                rows.append(row)
                print(json.dumps(row), flush=True)
    results = {"environment": environment("benchmarks.optimizer.step_time"), "steps": args.steps, "rows": rows}
    keep_rows_not_rerun(results, args.kept, args.kept_source)
    report.save(results, args.out, "step_time")


if __name__ == "__main__":
    main()
