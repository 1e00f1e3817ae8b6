"""Plots of a run's history with matplotlib, in the panels pycma users know.

:func:`plot` draws four panels against the number of evaluations:

* f values (log scale): ``|f_best|`` (best so far), ``f_best - min f_best``
  (useful when f can be negative), ``|f_median|`` of each iteration, the step
  size ``sigma`` and the axis ratio ``sqrt(max(d) / min(d))``;
* the coordinates of the mean;
* the eigenvalues ``sigma^2 / d`` of the covariance (log scale);
* the standard deviations of the coordinates (log scale).

Dashed vertical lines mark restarts. matplotlib is imported only when
:func:`plot` is called, so ``import spectral_es`` does not need it (install
the ``plot`` extra for it).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from spectral_es.es.history import History

__all__ = ["plot"]

# Lines per vector panel up to which each line gets a label.
_MAX_LABELLED = 10


def plot(source: Any, filename: str | os.PathLike | None = None, *, fig: Any = None, title: str | None = None) -> Any:
    """Draw the standard panels of a run and return the matplotlib figure.

    Args:
        source: A :class:`~spectral_es.es.history.History`, a
            :class:`~spectral_es.SpectralES`, an
            :class:`~spectral_es.ESResult` (from :func:`spectral_es.minimize`,
            restarts included) or the path of a CSV log written by
            ``minimize(..., log=...)`` or ``spectral-es minimize --log``.
        filename: Save the figure here; the format follows the extension
            (``.png``, ``.pdf``, ``.svg``). The figure is then created
            without pyplot, so no display is needed.
        fig: Draw into this figure instead of a new one; it is cleared.
        title: Title above the panels.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: if the source has no rows or cannot be read.
    """
    history = _as_history(source)
    if len(history) == 0:
        raise ValueError("the history is empty: run at least one iteration before plotting")
    if fig is None:
        fig = _new_figure(pyplot=filename is None)
    fig.clear()
    axes = fig.subplots(2, 2, sharex=True)
    evaluations = history["evaluations"]

    _draw_f_panel(axes[0, 0], history, evaluations)
    _draw_vectors(axes[0, 1], evaluations, history["mean"], "mean coordinates", log=False)
    _draw_vectors(axes[1, 0], evaluations, history["eigenvalue"], "eigenvalues of the covariance sigma^2 / d", log=True)
    _draw_vectors(axes[1, 1], evaluations, history["std"], "coordinate standard deviations", log=True)
    for ax in axes.flat:
        for boundary in _restart_evaluations(history):
            ax.axvline(boundary, color="0.6", linestyle="--", linewidth=0.8)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("evaluations")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if filename is not None:
        fig.savefig(filename, dpi=100)
    return fig


def _as_history(source: Any) -> History:
    if isinstance(source, History):
        return source
    if isinstance(source, (str, os.PathLike)):
        return History.from_csv(source)
    history = getattr(source, "history", None)
    if isinstance(history, History):
        return history
    raise ValueError(
        f"cannot plot a {type(source).__name__}; pass a History, a SpectralES, an ESResult or the path of a CSV log"
    )


def _new_figure(pyplot: bool) -> Any:
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=(11, 8))
    from matplotlib.figure import Figure

    return Figure(figsize=(11, 8))


def _draw_f_panel(ax: Any, history: History, evaluations: np.ndarray) -> None:
    f_best = history["f_best"]
    shifted = f_best - np.nanmin(np.where(np.isfinite(f_best), f_best, np.nan))
    ax.semilogy(evaluations, _positive(np.abs(f_best)), color="tab:blue", label="|f best|")
    ax.semilogy(evaluations, _positive(shifted), color="tab:cyan", label="f best - min f best")
    ax.semilogy(evaluations, _positive(np.abs(history["f_median"])), color="tab:blue", alpha=0.35, label="|f median|")
    ax.semilogy(evaluations, _positive(history["sigma"]), color="tab:green", label="sigma")
    ax.semilogy(evaluations, _positive(np.sqrt(history["condition"])), color="tab:red", label="axis ratio")
    ax.set_title("f values, sigma and axis ratio")
    ax.legend(loc="best", fontsize="small")


def _draw_vectors(ax: Any, evaluations: np.ndarray, values: np.ndarray, title: str, log: bool) -> None:
    values = _positive(values) if log else np.where(np.isfinite(values), values, np.nan)
    lines = ax.plot(evaluations, values, linewidth=0.9)
    if log:
        ax.set_yscale("log")
    if values.shape[1] <= _MAX_LABELLED:
        # Label each line at its last point, as pycma does.
        for index, line in enumerate(lines):
            last = values[-1, index]
            if np.isfinite(last):
                ax.annotate(str(index), (evaluations[-1], last), fontsize="x-small", color=line.get_color())
    ax.set_title(title)


def _restart_evaluations(history: History) -> list[float]:
    """Return the evaluation counts at which a new run starts."""
    runs, evaluations = history["run"], history["evaluations"]
    return [float(evaluations[k - 1]) for k in range(1, len(runs)) if runs[k] != runs[k - 1]]


def _positive(values: np.ndarray) -> np.ndarray:
    """Return values with non-positive and non-finite entries as NaN, which log axes leave out."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)
