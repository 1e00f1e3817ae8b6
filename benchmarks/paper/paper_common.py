"""Shared helpers of the paper-reproduction scripts: metrics, machine record, reports, output folder.

Everything here is plain numpy. The distances between SPD matrices are
computed with ``numpy.linalg.eigh`` on purpose: they are the measuring stick,
so they must not depend on the spectral code under test.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Git-ignored folder for every run whose settings differ from the committed pages'.
QUICK = HERE / "quick"


def relative_frobenius(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Return ``‖estimate - reference‖_F / ‖reference‖_F``."""
    return float(np.linalg.norm(estimate - reference) / np.linalg.norm(reference))


def spd_sqrt(A: np.ndarray) -> np.ndarray:
    """Return the symmetric square root of a symmetric PSD matrix, by ``eigh``."""
    w, V = np.linalg.eigh((A + A.T) / 2)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def wasserstein2(A: np.ndarray, B: np.ndarray, sqrt_A: np.ndarray | None = None) -> float:
    """Return the 2-Wasserstein (Bures) distance between ``N(0, A)`` and ``N(0, B)``.

    ``W2(A, B)^2 = tr A + tr B - 2 tr (A^{1/2} B A^{1/2})^{1/2}``. Pass
    ``sqrt_A`` when ``A`` is fixed over many calls, to skip one ``eigh``.
    """
    if sqrt_A is None:
        sqrt_A = spd_sqrt(A)
    middle = sqrt_A @ B @ sqrt_A
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    return float(np.sqrt(max(np.trace(A) + np.trace(B) - 2 * cross, 0.0)))


def random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return a Haar-distributed n x n orthogonal matrix (QR with sign fix)."""
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))


def random_spd(rng: np.random.Generator, eigenvalues: np.ndarray) -> np.ndarray:
    """Return ``U diag(eigenvalues) U^T`` with a Haar-random orthogonal ``U``."""
    U = random_orthogonal(rng, eigenvalues.size)
    return (U * eigenvalues) @ U.T


def machine_description() -> dict[str, str]:
    """Return the CPU model, core count, date and library versions of this run."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for name in ("scipy", "matplotlib", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            versions.append(f"{name} {module.__version__}")
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    return {
        "machine": f"{model}, {os.cpu_count()} cores (OPENBLAS_NUM_THREADS={threads})",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": ", ".join(versions),
        "commit": library_commit(),
    }


def library_commit() -> str:
    """Return the short commit of the checkout ``spectral_es`` is imported from, marked if it has local changes."""
    import spectral_es

    root = Path(spectral_es.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "spectral_es"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (spectral_es modified)" if changes else commit


def command_line() -> str:
    """Return the command that started this script, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(HERE.parent.parent)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def add_output_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--out``, the folder that gets ``results/<name>.md`` and ``figures/<name>.png``."""
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for results/<name>.md and figures/<name>.png (default: benchmarks/paper, the committed "
        "page, when every other option has its default, else the git-ignored benchmarks/paper/quick)",
    )


def output_root(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """Return the folder a run writes to: the committed pages only for the page's own settings.

    The committed ``results/<name>.md`` and ``figures/<name>.png`` come from
    a run with every option at its default, so any other run writes the
    git-ignored ``quick/`` folder unless ``--out`` names one. ``--out``
    naming this folder for a run with other settings is an error.
    """
    settings = {key: value for key, value in vars(args).items() if key != "out"}
    defaults = {key: value for key, value in vars(parser.parse_args([])).items() if key != "out"}
    page_run = settings == defaults
    if args.out is not None:
        if args.out.resolve() == HERE and not page_run:
            parser.error(
                f"--out {args.out} holds the committed pages; only a run with the default settings writes there"
            )
        return args.out
    if page_run:
        return HERE
    print(f"settings differ from the committed page's: writing to {QUICK}", flush=True)
    return QUICK


def check_at_least(parser: argparse.ArgumentParser, args: argparse.Namespace, **minimums: float) -> None:
    """Exit through ``parser.error`` unless an option (or every value of a list option) is finite and >= its minimum."""
    for dest, minimum in minimums.items():
        value = getattr(args, dest)
        values = value if isinstance(value, list) else [value]
        option = f"--{dest.replace('_', '-')}"
        if not all(math.isfinite(v) for v in values):
            parser.error(f"{option} must be a finite number, got {value}")
        if not all(v >= minimum for v in values):
            parser.error(f"{option} must be >= {minimum}, got {value}")


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *dests: str) -> None:
    """Exit through ``parser.error`` unless an option is finite and > 0."""
    for dest in dests:
        value = getattr(args, dest)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{dest.replace('_', '-')} must be a finite number > 0, got {value}")


def write_report(name: str, title: str, body: str, seconds: float, root: Path) -> Path:
    """Write ``root/results/<name>.md``: the title, command, machine, date, versions and ``body``."""
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    info = machine_description()
    header = (
        f"# {title}\n\n"
        f"- Command: `{command_line()}`\n"
        f"- Machine: {info['machine']}\n"
        f"- Date: {info['date']}\n"
        f"- Versions: {info['versions']}\n"
        f"- Library commit: {info['commit']}\n"
        f"- Wall time: {seconds:.0f} s\n"
        f"- Figure: [../figures/{name}.png](../figures/{name}.png)\n\n"
    )
    path = results / f"{name}.md"
    path.write_text(header + body.rstrip() + "\n")
    return path


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Return a GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_band(ax, x: np.ndarray, runs: np.ndarray, label: str, **style) -> None:
    """Plot the median over runs (rows of ``runs``) with a min-max band."""
    line = ax.plot(x, np.median(runs, axis=0), label=label, **style)[0]
    if runs.shape[0] > 1:
        ax.fill_between(x, runs.min(axis=0), runs.max(axis=0), color=line.get_color(), alpha=0.15, linewidth=0)


def save_figure(fig, name: str, root: Path) -> Path:
    """Save ``fig`` as ``root/figures/<name>.png`` at 120 dpi."""
    figures = root / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
