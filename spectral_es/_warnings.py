"""The ``stacklevel`` that points a warning at the user's code."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["outside_stacklevel"]


def outside_stacklevel(inner_modules: Sequence[str] = ("spectral_es.",)) -> int:
    """Return the ``stacklevel`` of the first frame outside ``inner_modules``, for the caller of ``warnings.warn``.

    A warning raised deep inside the package (``tell`` called by
    ``minimize``, or ``step`` called through torch.optim's wrappers) would
    otherwise point at a line of the package, whatever fixed level it
    chose. ``inner_modules`` are prefixes of module names (``__name__``).
    The outermost frame is returned if every frame is inside.
    """
    prefixes = tuple(inner_modules)
    level, frame = 2, sys._getframe(2)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(prefixes):
        level, frame = level + 1, frame.f_back
    return level
