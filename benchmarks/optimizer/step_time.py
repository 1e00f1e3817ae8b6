"""Time one optimizer step on a single large weight, for every peer optimizer.

For each shape (1024 x 1024 and 4096 x 1024) and dtype (float32, bfloat16;
parameters and optimizer state alike) every optimizer takes one untimed
step (state creation, first decompositions) and then ``--steps`` timed steps
on fresh random gradients, the optimizers taking their steps in turn. The median, the worst step and the mean are
reported as ratios to AdamW's median in the same run. The mean is the cost
amortised over whole refresh periods, because 20 steps are 2 periods of SOAP
and Shampoo and 10 of SpectralKron. The state size is given in bytes per
weight element. One torch
thread, denormals flushed (they slowed some runs 4-100x).

Variants of SpectralKron (see ``peers.VARIANTS``): the default (each factor
refreshed every 2 steps, sides longer than 2048 diagonal), ``T=10`` (every
10 steps, precond_lr 0.3), ``adam graft`` (graft="adam": Adam's full
second moment instead of the factored one), ``bf16 state`` (float32 weights, bfloat16
momentum and eigenbases) and ``full`` (a full 4096 x 4096 factor).

Run from the repository root (needs ``pip install -e ".[optim-bench]"``):

    python -m benchmarks.optimizer.step_time          # 10 steps, main variants: a few minutes
    python -m benchmarks.optimizer.step_time --full   # 20 steps, every variant, for RESULTS.md
    python -m benchmarks.optimizer.step_time --full --shapes 1024x1024   # rerun one shape

A run restricted with ``--shapes`` keeps the other shapes' rows of the
record it replaces and names their run on the results page.

The full run takes about 10 minutes on 2 busy cores, most of it in SOAP and
the full 4096 x 4096 factor; the quick one writes ``results/quick/`` only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from benchmarks.optimizer import report
from benchmarks.optimizer.peers import PEERS, environment, make_optimizer, state_bytes

HERE = Path(__file__).resolve().parent
SHAPES = ((1024, 1024), (4096, 1024))


def time_steps(names: list[str], shape: tuple[int, int], dtype: torch.dtype, steps: int) -> dict[str, dict]:
    """Return step times (seconds) and state size per optimizer, each on its own copy of one weight.

    The optimizers take their steps in turn (step 1 of each, then step 2 of
    each, ...) on the same gradients, so a change of machine load during the
    run slows them alike and the ratios within a table stay comparable.
    """
    generator = torch.Generator().manual_seed(0)
    start_weight = torch.randn(shape, generator=generator).to(dtype) * 0.02
    gradients = [torch.randn(shape, generator=generator).to(dtype) * 1e-3 for _ in range(steps + 1)]
    runs = {}
    for name in names:
        weight = torch.nn.Parameter(start_weight.clone())
        runs[name] = {"weight": weight, "optimizer": make_optimizer(name, [weight], 1e-3), "times": []}
    for gradient in gradients:
        for run in runs.values():
            if "failure" in run:
                continue
            run["weight"].grad = gradient
            try:
                start = time.perf_counter()
                run["optimizer"].step()
                run["times"].append(time.perf_counter() - start)
            except (RuntimeError, ValueError, torch.linalg.LinAlgError) as error:
                run["failure"] = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
    return {name: _summary(run) for name, run in runs.items()}


def _summary(run: dict) -> dict:
    """Median, worst and mean of the timed steps (the first, untimed step dropped)."""
    if "failure" in run:
        return {"failure": run["failure"]}
    times = run["times"][1:]
    return {
        "median": statistics.median(times),
        "worst": max(times),
        "mean": statistics.fmean(times),
        "bytes_per_element": state_bytes(run["optimizer"]) / run["weight"].numel(),
        "finite": bool(torch.isfinite(run["weight"]).all()),
    }


def _label(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _keep_other_shapes(results: dict, path: Path, shapes: list[tuple[int, int]]) -> None:
    """Add the rows of shapes not rerun from the record at ``path``, with that record's run."""
    if len(shapes) == len(SHAPES) or not path.exists():
        return
    previous = json.loads(path.read_text())
    kept = [row for row in previous["rows"] if tuple(row["shape"]) not in shapes]
    if not kept:
        return
    source = previous.get("kept") or {"environment": previous["environment"], "steps": previous["steps"]}
    results["rows"] += kept
    results["rows"].sort(key=lambda row: SHAPES.index(tuple(row["shape"])))
    results["kept"] = {**source, "shapes": sorted({_label(tuple(row["shape"])) for row in kept})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="20 steps and every variant; writes RESULTS.md")
    parser.add_argument("--steps", type=int, help="timed steps per optimizer (default 10, full: 20)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[_label(shape) for shape in SHAPES],
        choices=[_label(shape) for shape in SHAPES],
        help="shapes to time (default: all); a full run keeps the other shapes' earlier rows",
    )
    parser.add_argument("--out", type=Path, help="folder for step_time.json (default results/, quick: results/quick/)")
    args = parser.parse_args()
    steps = args.steps or (20 if args.full else 10)
    out = args.out or (report.RESULTS if args.full else report.RESULTS / "quick")

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    warnings.simplefilter("ignore", UserWarning)
    rows = []
    shapes = [shape for shape in SHAPES if _label(shape) in args.shapes]
    for shape in shapes:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            names = [*PEERS, "SpectralKron T=10"]
            if args.full:
                names.append("SpectralKron adam graft")
            if args.full and dtype == torch.float32:
                names.append("SpectralKron bf16 state")
            if args.full and max(shape) > 2048:
                names.append("SpectralKron full")
            for name, summary in time_steps(names, shape, dtype, steps).items():
                row = {"shape": list(shape), "dtype": dtype_name, "optimizer": name, **summary}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    results = {"environment": environment("benchmarks.optimizer.step_time"), "steps": steps, "rows": rows}
    _keep_other_shapes(results, out / "step_time.json", shapes)
    (out / "step_time.json").write_text(json.dumps(results, indent=1))
    if out == report.RESULTS:
        report.main()


if __name__ == "__main__":
    main()
