"""The spectral_es commit that a benchmark ran, for the results pages."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
