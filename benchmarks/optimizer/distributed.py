"""Time SpectralKron with the refreshes split across ranks against every rank refreshing.

Spawns ``--ranks`` gloo processes on the loopback interface, one torch
thread each. Every rank has the same ``--weights`` square weights and
gets the same random gradients, as ``DistributedDataParallel`` leaves them.
Two optimizers take their steps in turn on separate copies of the weights:
the default, where every rank runs every refresh, and
``distributed_refresh=True``, where each refresh runs on one rank and is
broadcast. A barrier starts each timed step on all ranks together, and a
step's time is the slowest rank's. The run checks that both copies end
bitwise equal. Denormals are flushed (they slowed some runs 4-100x).

Run from the repository root (needs ``pip install -e ".[optim-bench]"``):

    python -m benchmarks.optimizer.distributed          # 10 steps, 512 x 512, float32: under a minute
    python -m benchmarks.optimizer.distributed --full   # 20 steps, 512 and 1024, both dtypes, for RESULTS.md

Only ``--full`` writes ``results/`` and the page; the quick run writes the
git-ignored ``results/quick/``. The ranks share the machine's cores, so on
a 2-core machine two ranks leave nothing to other jobs. The full run took
a few minutes there, with another job running beside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.optimizer import report
from benchmarks.optimizer.peers import environment
from spectral_es.optim import SpectralKron

MODES = {"every rank refreshes": {}, "distributed_refresh": {"distributed_refresh": True}}


def time_rank(rank: int, world_size: int, cases: list[dict], steps: int, folder: str) -> None:
    """Time both modes on this rank; rank 0 saves the slowest rank's step times per case."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    # The ranks meet through a file in the run's own folder, which needs no free port.
    store = (Path(folder) / "rendezvous").as_uri()
    torch.distributed.init_process_group("gloo", init_method=store, rank=rank, world_size=world_size)
    try:
        rows = [time_case(case, steps) for case in cases]
        if rank == 0:
            (Path(folder) / "rows.json").write_text(json.dumps(rows))
        gc.collect()  # no object that refers to the group outlives it
        torch.distributed.barrier()  # no rank tears the group down while another still uses it
    finally:
        torch.distributed.destroy_process_group()


def time_case(case: dict, steps: int) -> dict:
    """Return the step times of both modes for one size and dtype, and whether they ended equal."""
    dtype = getattr(torch, case["dtype"])
    generator = torch.Generator().manual_seed(0)
    shape = (case["size"], case["size"])
    start = [torch.randn(shape, generator=generator).to(dtype) for _ in range(case["weights"])]
    copies, optimizers = {}, {}
    for mode, options in MODES.items():
        copies[mode] = [torch.nn.Parameter(value.clone()) for value in start]
        optimizers[mode] = SpectralKron(copies[mode], lr=1e-3, **options)

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for step in range(steps + 1):
        gradients = [torch.randn(shape, generator=generator).to(dtype) for _ in start]
        for mode in MODES:
            for param, gradient in zip(copies[mode], gradients, strict=True):
                param.grad = gradient
            torch.distributed.barrier()
            began = time.perf_counter()
            optimizers[mode].step()
            elapsed = torch.tensor(time.perf_counter() - began, dtype=torch.float64)
            torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
            if step > 0:  # the first step creates the state and initialises the factors
                times[mode].append(elapsed.item())

    equal = all(torch.equal(first, second) for first, second in zip(*(copies[mode] for mode in MODES), strict=True))
    return {**case, "times": times, "equal": equal}


def run_ranks(ranks: int, cases: list[dict], steps: int, folder: str) -> None:
    """Spawn the ranks and wait for them. Rank 0 writes the rows to ``folder``.

    NOTE: a gloo rank now and then aborts while the group is torn down
    ("terminate called without an active exception"), about 1 quick run in
    25 on a busy 2-core machine. Rank 0 saves the rows only after every
    case has run on every rank, so a rank that dies by a signal after that
    leaves complete rows, which are kept with a warning. Without rows the
    error is raised.
    """
    try:
        torch.multiprocessing.spawn(time_rank, args=(ranks, cases, steps, folder), nprocs=ranks, join=True)
    except torch.multiprocessing.ProcessExitedException as error:
        if error.signal_name is None or not (Path(folder) / "rows.json").exists():
            raise
        warnings.warn(f"{error} after saving its results; the results are kept", RuntimeWarning, stacklevel=2)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Add the median and mean of each mode's step times to each row."""
    for row in rows:
        row["median"] = {mode: statistics.median(times) for mode, times in row["times"].items()}
        row["mean"] = {mode: statistics.mean(times) for mode, times in row["times"].items()}
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="20 steps, 512 and 1024, both dtypes; writes RESULTS.md")
    parser.add_argument("--ranks", type=int, default=2, help="gloo processes, >= 2 (default 2)")
    parser.add_argument("--weights", type=int, default=4, help="square weights per rank, >= 1 (default 4)")
    parser.add_argument("--out", type=Path, help="folder for distributed.json (default results/quick/, full: results/)")
    args = parser.parse_args(argv)
    if args.ranks < 2:
        parser.error(f"--ranks must be >= 2 to split the refreshes, got {args.ranks}")
    if args.weights < 1:
        parser.error(f"--weights must be >= 1, got {args.weights}")
    args.out = report.output_folder(parser, args.full, args.out)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes, dtypes, steps = ((512, 1024), ("float32", "bfloat16"), 20) if args.full else ((512,), ("float32",), 10)
    cases = [{"size": size, "dtype": dtype, "weights": args.weights} for size in sizes for dtype in dtypes]
    with tempfile.TemporaryDirectory() as folder:
        run_ranks(args.ranks, cases, steps, folder)
        rows = summary_rows(json.loads((Path(folder) / "rows.json").read_text()))

    torch.set_num_threads(1)  # as in each rank, for the Machine line of the record
    record = {
        "environment": environment("benchmarks.optimizer.distributed"),
        "ranks": args.ranks,
        "steps": steps,
        "rows": rows,
    }
    print("\n".join(report.distributed_table(record)))
    report.save(record, args.out, "distributed")


if __name__ == "__main__":
    main()
