"""The spectral factors replace every matrix decomposition: none runs, and the matmul-only paths solve nothing.

A spy wraps the decompositions and solvers of ``numpy.linalg`` and
``torch.linalg`` (and torch's tensor methods of the same kind) and records
each call. The library looks them up at call time on the array's module
(``namespace(x).linalg``), so the exact Cayley map's ``solve`` shows up in
the record: the spy would see a decomposition too.
"""

from __future__ import annotations

import numpy as np
import pytest

from spectral_es import SpectralES
from spectral_es.core._backend import namespace
from spectral_es.functions import ellipsoid, rosenbrock
from tests.conftest import requires_torch, torch

DECOMPOSITIONS = ("eig", "eigh", "eigvals", "eigvalsh", "svd", "svdvals", "qr", "cholesky", "cholesky_ex")
SOLVERS = (
    "solve",
    "solve_ex",
    "solve_triangular",
    "inv",
    "inv_ex",
    "inverse",
    "pinv",
    "lstsq",
    "lu",
    "lu_factor",
    "lu_factor_ex",
    "lu_solve",
    "matrix_exp",
    "tensorsolve",
    "tensorinv",
)


@pytest.fixture
def linalg_calls(monkeypatch):
    """Record the names of the decompositions and solvers called while the test runs."""
    calls: list[str] = []

    def spy(owner, name):
        original = getattr(owner, name)

        def recorded(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, recorded)

    owners = [np.linalg]
    if torch is not None:
        owners += [torch.linalg, torch, torch.Tensor]
    for owner in owners:
        for name in DECOMPOSITIONS + SOLVERS:
            if hasattr(owner, name):
                spy(owner, name)
    return calls


def run_es(steps, **options):
    es = SpectralES(np.linspace(-1, 1, 8), 0.5, seed=0, **options)
    for _ in range(steps):
        X = es.ask()
        es.tell(X, rosenbrock(X) + ellipsoid(X))
    return es


def test_spy_sees_a_decomposition(linalg_calls):
    # The control: a call made as the library makes it is recorded.
    matrix = np.eye(3)
    namespace(matrix).linalg.eigh(matrix)
    assert linalg_calls == ["eigh"]


def test_es_exact_map_only_solves(linalg_calls):
    es = run_es(40, rotation_interval=1)
    assert es.B is not None
    assert "solve" in linalg_calls  # the exact Cayley map, once per rotation
    assert set(linalg_calls) == {"solve"}


@pytest.mark.parametrize("options", [{"cayley": "truncated", "rotation_interval": 1}, {"diagonal": True}])
def test_es_matmul_only_paths_call_nothing(linalg_calls, options):
    run_es(40, **options)
    assert linalg_calls == []


@requires_torch
def test_kron_float32_exact_map_only_solves(linalg_calls):
    from spectral_es.optim import SpectralKron

    W = torch.nn.Parameter(torch.randn(6, 5))
    optimizer = SpectralKron([W], precondition_frequency=1)
    for seed in range(6):
        W.grad = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed))
        optimizer.step()
    # solve_ex: the solve without the singularity check that waits for a GPU.
    assert "solve_ex" in linalg_calls
    assert set(linalg_calls) == {"solve_ex"}


@requires_torch
@pytest.mark.parametrize(
    ("dtype", "options"),
    [("bfloat16", {}), ("float32", {"cayley": "truncated"}), ("float32", {"state_dtype": "bfloat16"})],
)
def test_kron_matmul_only_paths_call_nothing(linalg_calls, dtype, options):
    from spectral_es.optim import SpectralKron

    W = torch.nn.Parameter(torch.randn(6, 5, dtype=getattr(torch, dtype)))
    optimizer = SpectralKron([W], precondition_frequency=1, orthogonalize_every=2, **options)
    for seed in range(6):
        W.grad = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed)).to(W.dtype)
        optimizer.step()
    assert linalg_calls == []
