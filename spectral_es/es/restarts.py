"""Restart schedules of :func:`spectral_es.minimize`: IPOP and BIPOP.

A run that stops for a reason a restart can help with (a stall, not the
target, the budget or a callback) is followed by another run from ``x0``.
This module decides what that run gets: its population size, initial step
size and iteration limit, from the plan of the whole minimisation and the
summaries of the runs so far.

IPOP (Auger and Hansen 2005) multiplies the population size by
``incpopsize`` at every restart and keeps ``sigma0``. A large population
averages over local structure, so IPOP solves functions whose many local
optima sit on a global trend (Rastrigin, Griewank).

BIPOP (Hansen 2009) runs the same sequence of large populations, the
*large* regime, and in between short runs of the *small* regime, for
functions without such a trend. With ``U1, U2 ~ U[0, 1]`` drawn anew for
each small run, ``lam_0`` the first run's population size and ``lam_L``
the latest large run's,

    popsize  = floor(lam_0 (lam_L / lam_0)^(U2²))
    sigma0   = sigma0 · 10^(-2 U1)
    max_iter = floor(E_large / (2 popsize))

where ``E_large`` is the number of evaluations of all large runs so far,
so a small run uses at most about half of them (more with noise handling,
which evaluates some points twice). The next run is small while the small
runs (with the first run counted among them) have used fewer evaluations
than the large ones, so both regimes get about the same budget. Only large
runs count as restarts.

With a fixed ``x0`` every run starts there, so the small runs search near
it, with step sizes down to ``sigma0 / 100``. A function passed as ``x0``
to :func:`spectral_es.minimize` draws each run's start instead, which
suits BIPOP better.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["RunSettings", "is_last_run", "next_run"]


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Settings of one run of a restart schedule.

    Attributes:
        regime: ``"default"`` for the first run, then ``"large"`` (IPOP, and
            BIPOP's large regime) or ``"small"`` (BIPOP's small regime).
        popsize: Population size; ``None`` for the strategy's default.
        sigma0: Initial step size.
        max_iter: Iteration limit of this run; ``None`` for none beyond
            the user's ``max_iter`` option.
    """

    regime: str
    popsize: int | None
    sigma0: float
    max_iter: int | None


def next_run(plan: dict[str, Any], progress: dict[str, Any]) -> RunSettings:
    """Return the settings of run number ``progress["run"]``.

    ``plan`` contains ``sigma0``, ``seed`` (an int), ``options`` and
    ``bipop``. ``progress`` contains ``run``, ``popsize`` (the next large
    population size, ``None`` before the first run for the default) and
    ``summaries``, one per finished run with its ``regime``, ``popsize``
    and ``nfev``. The small regime's draws come from the run's own seed,
    so the same plan gives the same schedule, also after a resume.
    """
    run, summaries = progress["run"], progress["summaries"]
    user_max_iter = plan["options"].get("max_iter")
    if run == 0:
        return RunSettings("default", progress["popsize"], plan["sigma0"], user_max_iter)
    small_evals = sum(entry["nfev"] for entry in summaries if _regime(entry) != "large")
    large_evals = sum(entry["nfev"] for entry in summaries if _regime(entry) == "large")
    if not plan.get("bipop") or small_evals >= max(1, large_evals):
        return RunSettings("large", progress["popsize"], plan["sigma0"], user_max_iter)

    # A small run: the draws use a child of the run's seed sequence, which
    # the strategy itself (seeded with the parent) never spawns.
    draws = np.random.default_rng(np.random.SeedSequence(plan["seed"], spawn_key=(run, 0)))
    u1, u2 = draws.random(2)
    first = summaries[0]["popsize"]
    latest_large = [entry["popsize"] for entry in summaries if _regime(entry) != "small"][-1]
    popsize = max(2, math.floor(first * (latest_large / first) ** (u2**2)))
    max_iter = max(1, math.floor(large_evals / (2 * popsize)))
    if user_max_iter is not None:
        max_iter = min(max_iter, int(user_max_iter))
    return RunSettings("small", popsize, float(plan["sigma0"] * 10 ** (-2 * u1)), max_iter)


def is_last_run(plan: dict[str, Any], summaries: list[dict[str, Any]]) -> bool:
    """Return whether the restarts are spent once the runs in ``summaries`` have finished.

    ``plan["restarts"]`` counts the runs after the first one; with BIPOP
    it counts only the large ones, and small runs come on top.
    """
    counted = [entry for entry in summaries[1:] if not plan.get("bipop") or _regime(entry) == "large"]
    return len(counted) >= plan["restarts"]


def _regime(summary: dict[str, Any]) -> str:
    """Return a run summary's regime; summaries written before BIPOP existed are IPOP runs."""
    return summary.get("regime", "default" if summary["run"] == 0 else "large")
