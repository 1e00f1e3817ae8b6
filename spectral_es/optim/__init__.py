"""Torch optimizer with Kronecker spectral preconditioning (needs torch).

:class:`SpectralKron` keeps each weight's gradient curvature as
``alpha (S_C kron S_K)`` with spectral factors ``S_l = B_l diag(d_l) B_l^T``
that move by an exponential and a Cayley map, so any inverse root is
elementwise and bfloat16 state works without decompositions.
:mod:`spectral_es.optim.functional` holds the per-tensor arithmetic.
"""

try:
    import torch  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != "torch":
        raise  # torch is there but one of its own imports failed
    raise ImportError(
        "spectral_es.optim needs torch, an optional extra: pip install torch==2.13.0 (on a machine without a "
        "GPU, add --index-url https://download.pytorch.org/whl/cpu for the CPU build), or "
        'pip install "spectral-es[torch]"'
    ) from error

from spectral_es.optim import functional  # noqa: E402  (after the torch check)
from spectral_es.optim.optimizer import PreconditionerWarning, SpectralKron  # noqa: E402

__all__ = ["PreconditionerWarning", "SpectralKron", "functional"]
