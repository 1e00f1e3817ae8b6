"""Shared helpers of the paper-reproduction scripts: metrics, machine record, reports.

Everything here is plain numpy. The distances between SPD matrices are
computed with ``numpy.linalg.eigh`` on purpose: they are the measuring stick,
so they must not depend on the spectral code under test.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "figures"
RESULTS = HERE / "results"


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


def write_report(name: str, title: str, body: str, seconds: float) -> Path:
    """Write ``results/<name>.md``: the title, command, machine, date, versions and ``body``."""
    RESULTS.mkdir(exist_ok=True)
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
    path = RESULTS / f"{name}.md"
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


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` at 120 dpi."""
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
