"""spectral_es: spectral-factorised curvature learning.

An SPD matrix is kept only as its factors ``S = B diag(d) B^T`` and the
factors move directly, so roots of ``S`` are elementwise and no
eigendecomposition is run. The package provides

* :class:`SpectralES` and :func:`minimize`: an ask/tell evolution strategy
  for black-box minimisation (numpy only);
* :mod:`spectral_es.core`: the spectral step, Cayley maps and roots, on numpy
  arrays and torch tensors;
* :mod:`spectral_es.functions`: standard test functions.

torch is optional: nothing imported here needs it.
"""

import logging

from spectral_es import core, functions
from spectral_es.es import ESResult, NonFiniteObjectiveWarning, SpectralES, minimize, optimize

__version__ = "0.1.0"

__all__ = [
    "ESResult",
    "NonFiniteObjectiveWarning",
    "SpectralES",
    "__version__",
    "core",
    "functions",
    "minimize",
    "optimize",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
