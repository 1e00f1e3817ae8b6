"""The methods compared by the benchmarks, each a runner ``(problem, objective) -> stop``.

Every runner starts at ``problem.x0`` with ``problem.sigma0``, seeds its
random generator with ``problem.seed``, passes ``problem.f_target`` and
``problem.budget`` to the method's own stop criteria, and evaluates only
through ``objective``, which enforces the same budget for all of them.
Restarting methods use IPOP (Auger and Hansen 2005): at most 9 restarts from
``x0``, each with twice the population of the one before. The BIPOP variants
(Hansen 2009) add short runs of smaller population and step size in between,
which do not count among the 9. The ``-random`` variants start their first
run at ``problem.x0`` as well, and each later run at a point drawn uniformly
from the box that ``x0`` was drawn from.
"""

from __future__ import annotations

import functools
import warnings

import cma
import numpy as np

import spectral_es
from benchmarks.es import xnes_reference
from benchmarks.es.harness import Objective, Problem, Runner, start_bound
from spectral_es.es.parameters import default_popsize

__all__ = [
    "DESCRIPTIONS",
    "METHODS",
    "RestartStarts",
    "run_pycma",
    "run_pycma_ipop",
    "run_spectral",
    "run_spectral_large_population",
    "run_xnes",
]

IPOP_RESTARTS = 9
IPOP_INCPOPSIZE = 2
# Population factor of the single large-population run.
LARGE_POPULATION = 3


class RestartStarts:
    """Start of each run of a restarting method: ``problem.x0`` first, then uniform draws.

    Called with a ``numpy.random.Generator``, as :func:`spectral_es.minimize`
    calls it, it draws from that generator. Called bare, as pycma's ``fmin2``
    calls it, it draws from a generator derived from ``problem.seed``.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.bound = start_bound(problem.function)
        self.calls = 0
        # A child stream: the problem drew x0 from default_rng(seed) itself.
        self.generator = np.random.default_rng(np.random.SeedSequence(problem.seed, spawn_key=(1,)))

    def __call__(self, generator: np.random.Generator | None = None) -> np.ndarray:
        self.calls += 1
        if self.calls == 1:
            return self.problem.x0.copy()
        generator = self.generator if generator is None else generator
        return generator.uniform(-self.bound, self.bound, self.problem.n)


def run_spectral(
    problem: Problem, objective: Objective, *, restarts: int = 0, random_starts: bool = False, **options
) -> str:
    """Run :func:`spectral_es.minimize` with ``options`` (``preset``, ``active``, ...)."""
    result = spectral_es.minimize(
        objective,
        RestartStarts(problem) if random_starts else problem.x0,
        problem.sigma0,
        seed=problem.seed,
        vectorized=True,
        restarts=restarts,
        incpopsize=IPOP_INCPOPSIZE,
        max_evals=problem.budget,
        f_target=problem.f_target,
        **options,
    )
    return ",".join(result.stop)


def run_spectral_large_population(problem: Problem, objective: Objective) -> str:
    """Run SpectralES once with ``LARGE_POPULATION`` times the default population size."""
    popsize = LARGE_POPULATION * default_popsize(problem.n)
    return run_spectral(problem, objective, popsize=popsize)


def _pycma_options(problem: Problem, **options) -> dict:
    return {
        "seed": problem.seed,
        "ftarget": problem.f_target,
        "maxfevals": problem.budget,
        "verbose": -9,
        **options,
    }


def run_pycma(problem: Problem, objective: Objective, **options) -> str:
    """Run pycma's ``CMAEvolutionStrategy`` through ask/tell, without restarts."""
    with warnings.catch_warnings():
        # pycma warns, for example, when the step size becomes tiny; the
        # stop reason carries the same information.
        warnings.simplefilter("ignore")
        es = cma.CMAEvolutionStrategy(problem.x0, problem.sigma0, _pycma_options(problem, **options))
        while not es.stop():
            X = es.ask()
            es.tell(X, objective(np.asarray(X)).tolist())
    return ",".join(es.stop())


def run_pycma_ipop(problem: Problem, objective: Objective, bipop: bool = False, random_starts: bool = False) -> str:
    """Run ``cma.fmin2`` with IPOP (or BIPOP) restarts, evaluating a generation per call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, es = cma.fmin2(
            None,
            RestartStarts(problem) if random_starts else problem.x0,
            problem.sigma0,
            _pycma_options(problem),
            restarts=IPOP_RESTARTS,
            incpopsize=IPOP_INCPOPSIZE,
            bipop=bipop,
            parallel_objective=lambda X: objective(np.asarray(X)).tolist(),
        )
    return ",".join(es.stop())


def run_xnes(problem: Problem, objective: Objective) -> str:
    """Run the reference xNES of :mod:`benchmarks.es.xnes_reference`."""
    result = xnes_reference.minimize(
        objective,
        problem.x0,
        problem.sigma0,
        seed=problem.seed,
        max_evals=problem.budget,
        f_target=problem.f_target,
    )
    return result["stop"]


METHODS: dict[str, Runner] = {
    "spectral": run_spectral,
    "spectral-diagonal": functools.partial(run_spectral, diagonal=True),
    "spectral-xnes": functools.partial(run_spectral, preset="xnes"),
    "spectral-passive": functools.partial(run_spectral, active=False),
    "spectral-truncated": functools.partial(run_spectral, cayley="truncated"),
    "spectral-eager": functools.partial(run_spectral, rotation_interval=1),
    "spectral-large": run_spectral_large_population,
    "spectral-ipop": functools.partial(run_spectral, restarts=IPOP_RESTARTS),
    "spectral-ipop-passive": functools.partial(run_spectral, restarts=IPOP_RESTARTS, active=False),
    "spectral-bipop": functools.partial(run_spectral, restarts=IPOP_RESTARTS, bipop=True),
    "spectral-bipop-random": functools.partial(run_spectral, restarts=IPOP_RESTARTS, bipop=True, random_starts=True),
    "pycma": run_pycma,
    "pycma-diagonal": functools.partial(run_pycma, CMA_diagonal=True),
    "pycma-ipop": run_pycma_ipop,
    "pycma-bipop": functools.partial(run_pycma_ipop, bipop=True),
    "pycma-bipop-random": functools.partial(run_pycma_ipop, bipop=True, random_starts=True),
    "xnes": run_xnes,
}
"""Runners by name, as the command line and the result tables use them."""

DESCRIPTIONS: dict[str, str] = {
    "spectral": "SpectralES defaults: `preset='cma'`, `active=True`, full `B`, exact Cayley map",
    "spectral-diagonal": "SpectralES with `diagonal=True` (`B = I`, only `d` learns)",
    "spectral-xnes": "SpectralES with `preset='xnes'` (xNES utilities, learning rates and step size)",
    "spectral-passive": "SpectralES with `active=False` (no negative weights)",
    "spectral-truncated": "SpectralES with `cayley='truncated'` (matrix products only)",
    "spectral-eager": "SpectralES with `rotation_interval=1` (a Cayley rotation every generation)",
    "spectral-large": f"SpectralES with {LARGE_POPULATION} times the default `popsize` (4 + floor(3 ln n)), one run",
    "spectral-ipop": f"`spectral_es.minimize(restarts={IPOP_RESTARTS}, incpopsize={IPOP_INCPOPSIZE})`",
    "spectral-ipop-passive": "as spectral-ipop, with `active=False`",
    "spectral-bipop": "as spectral-ipop, with `bipop=True`",
    "spectral-bipop-random": "as spectral-bipop, each run after the first from a random start in the start box",
    "pycma": f"pycma {cma.__version__} `CMAEvolutionStrategy`, defaults",
    "pycma-diagonal": "pycma with `CMA_diagonal=True` (sep-CMA-ES)",
    "pycma-ipop": f"pycma `fmin2(restarts={IPOP_RESTARTS}, incpopsize={IPOP_INCPOPSIZE})`",
    "pycma-bipop": "as pycma-ipop, with `bipop=True`",
    "pycma-bipop-random": "as pycma-bipop, each run after the first from a random start in the start box",
    "xnes": "xNES of Glasmachers et al. (2010), reference implementation in `xnes_reference.py`",
}
"""One line per method for the results page."""
