"""Shared fixtures: seeded generators and the array backends under test."""

from __future__ import annotations

import numpy as np
import pytest

try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261204)


def random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Haar-distributed orthogonal matrix."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def random_symmetric(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return (a + a.T) / 2


requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install 'spectral-es[torch]')")
requires_cuda = pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="needs a CUDA device")
