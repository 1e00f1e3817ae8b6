"""spectral_es: spectral-factorised curvature learning.

An SPD matrix is kept only as its factors ``S = B diag(d) B^T`` and the
factors move directly, so roots of ``S`` are elementwise and no
eigendecomposition is run. The package provides

* :class:`SpectralES` and :func:`minimize`: an ask/tell evolution strategy
  for black-box minimisation (numpy only);
* :mod:`spectral_es.core`: the spectral step, Cayley maps and roots, on numpy
  arrays and torch tensors;
* :mod:`spectral_es.functions`: standard test functions;
* :mod:`spectral_es.plot`: the standard panels of a run (needs matplotlib);
* :mod:`spectral_es.optim`: ``SpectralKron``, a Kronecker spectral torch
  optimizer (needs torch).

torch and matplotlib are optional: nothing imported here needs them.
"""

import logging

from spectral_es import core, functions
from spectral_es.es import (
    Bounds,
    ESResult,
    EvaluationError,
    NonFiniteObjectiveWarning,
    ObjectiveValueError,
    SpectralES,
    minimize,
    optimize,
    resume,
)

__version__ = "0.1.0"

__all__ = [
    "Bounds",
    "ESResult",
    "EvaluationError",
    "NonFiniteObjectiveWarning",
    "ObjectiveValueError",
    "SpectralES",
    "__version__",
    "core",
    "functions",
    "minimize",
    "optimize",
    "resume",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
