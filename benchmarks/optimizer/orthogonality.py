"""Measure how far bfloat16 eigenbases drift from orthogonal over long runs.

SpectralKron keeps ``B_C`` and ``B_K`` in bfloat16 and rotates them with the
truncated Cayley map; rounding then moves ``B^T B`` away from ``I`` a little
at every refresh. This script runs 1,000 refreshes of one bfloat16 weight
(n x n for n = 64, 256 and 1024, about 10 minutes on one core; gradients
with a fixed Kronecker-structured covariance, so the bases
keep turning) with a Björck step every 10 refreshes (the default) and with
none, and records the defect ``||B^T B - I||_F`` after every refresh next to
the floor: the defect of an exactly orthogonal matrix rounded to bfloat16.
The defect falls at each Björck step and rises between them, so the page
reports both the value right after a step and the mean and maximum over the
last 100 refreshes.

Run from the repository root:

    python -m benchmarks.optimizer.orthogonality          # n = 64 and 256, 1000 refreshes: under a minute
    python -m benchmarks.optimizer.orthogonality --full   # n = 64, 256 and 1024, for RESULTS.md

Only ``--full`` writes ``results/orthogonality.json`` and rewrites the page,
and it always runs the page's sizes and 1000 refreshes, because the page
shows one record. Every other run writes the git-ignored
``results/quick/`` (or ``--out``) and leaves the page alone.
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.optimizer import report
from benchmarks.optimizer.peers import environment
from spectral_es.core import orthogonality_defect
from spectral_es.optim import SpectralKron

REFRESHES = 1000
FULL_SIZES = (64, 256, 1024)
QUICK_SIZES = (64, 256)


def rounding_floor(n: int, samples: int = 5) -> float:
    """Median defect of a random orthogonal n x n matrix rounded to bfloat16."""
    generator = torch.Generator().manual_seed(1)
    defects = []
    for _ in range(samples):
        Q = torch.linalg.qr(torch.randn(n, n, generator=generator))[0]
        defects.append(orthogonality_defect(Q.to(torch.bfloat16).float()))
    return statistics.median(defects)


def drift(n: int, refreshes: int, orthogonalize_every: int) -> list[tuple[int, float]]:
    """Return (refresh, defect of B_C) pairs after every refresh of a bfloat16 weight."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(n, n, generator=generator) * torch.logspace(0, -1, n)
    right = torch.randn(n, n, generator=generator) * torch.logspace(0, -1, n)
    weight = torch.nn.Parameter(torch.zeros(n, n, dtype=torch.bfloat16))
    optimizer = SpectralKron([weight], precondition_frequency=1, orthogonalize_every=orthogonalize_every)
    record = []
    for refresh in range(1, refreshes + 1):
        weight.grad = (left @ torch.randn(n, n, generator=generator) @ right).to(torch.bfloat16)
        optimizer.step()
        record.append((refresh, orthogonality_defect(optimizer.state[weight]["B_C"].float())))
    return record


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line, rejecting bad values and a reduced run aimed at the committed record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"run the page's sizes {' '.join(map(str, FULL_SIZES))} with {REFRESHES} refreshes and rewrite RESULTS.md",
    )
    parser.add_argument("--refreshes", type=int, help=f"refreshes per run (default {REFRESHES})")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help=f"matrix sizes n (default {' '.join(map(str, QUICK_SIZES))}, full: {' '.join(map(str, FULL_SIZES))})",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for orthogonality.json (default results/quick/, full: results/)"
    )
    args = parser.parse_args(argv)

    if args.refreshes is not None and args.refreshes < 1:
        parser.error(f"--refreshes must be >= 1, got {args.refreshes}")
    if args.sizes is not None and min(args.sizes) < 2:
        parser.error(f"--sizes must all be >= 2, got {args.sizes}")
    if args.full and (args.refreshes not in (None, REFRESHES) or args.sizes not in (None, list(FULL_SIZES))):
        parser.error(
            f"--full runs the page's sizes {' '.join(map(str, FULL_SIZES))} with {REFRESHES} refreshes; "
            "leave out --sizes and --refreshes, or leave out --full to write results/quick/"
        )

    args.refreshes = args.refreshes or REFRESHES
    args.sizes = args.sizes or list(FULL_SIZES if args.full else QUICK_SIZES)
    args.out = report.output_folder(parser, args.full, args.out)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    warnings.simplefilter("ignore", UserWarning)
    runs = []
    for n in args.sizes:
        floor = rounding_floor(n)
        for every in (10, 0):
            record = drift(n, args.refreshes, every)
            runs.append({"n": n, "orthogonalize_every": every, "floor": floor, "defects": record})
            print(f"n {n:4d}  Björck every {every:2d}: defect {record[-1][1]:.3g} (floor {floor:.3g})", flush=True)
    results = {"environment": environment("benchmarks.optimizer.orthogonality"), "runs": runs}
    report.save(results, args.out, "orthogonality")


if __name__ == "__main__":
    main()
