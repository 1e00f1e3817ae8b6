"""Torch optimizer with Kronecker spectral preconditioning (needs torch).

:class:`SpectralKron` keeps each weight's gradient curvature as
``alpha (S_C kron S_K)`` with spectral factors ``S_l = B_l diag(d_l) B_l^T``
that move by an exponential and a Cayley map, so any inverse root is
elementwise and bfloat16 state works without decompositions.
:mod:`spectral_es.optim.functional` holds the per-tensor arithmetic.
"""

from spectral_es.optim import functional
from spectral_es.optim.optimizer import PreconditionerWarning, SpectralKron

__all__ = ["PreconditionerWarning", "SpectralKron", "functional"]
