"""SpectralES, the ask/tell evolution strategy, and ``minimize`` (numpy only)."""

from spectral_es.es.minimize import evaluate, minimize, optimize
from spectral_es.es.parameters import Parameters, default_popsize, xnes_utilities
from spectral_es.es.strategy import ESResult, NonFiniteObjectiveWarning, SpectralES

__all__ = [
    "ESResult",
    "NonFiniteObjectiveWarning",
    "Parameters",
    "SpectralES",
    "default_popsize",
    "evaluate",
    "minimize",
    "optimize",
    "xnes_utilities",
]
