"""SpectralES, the ask/tell evolution strategy, ``minimize`` and their practical tools (numpy only)."""

from spectral_es.es.bounds import Bounds, BoxBounds, Domain
from spectral_es.es.evaluation import EvaluationError, ObjectiveValueError, evaluate
from spectral_es.es.history import History
from spectral_es.es.minimize import minimize, optimize, resume
from spectral_es.es.noise import UncertaintyHandler
from spectral_es.es.parameters import Parameters, default_popsize, xnes_utilities
from spectral_es.es.result import ESResult, NonFiniteObjectiveWarning
from spectral_es.es.strategy import SpectralES

__all__ = [
    "Bounds",
    "BoxBounds",
    "Domain",
    "ESResult",
    "EvaluationError",
    "History",
    "NonFiniteObjectiveWarning",
    "ObjectiveValueError",
    "Parameters",
    "SpectralES",
    "UncertaintyHandler",
    "default_popsize",
    "evaluate",
    "minimize",
    "optimize",
    "resume",
    "xnes_utilities",
]
