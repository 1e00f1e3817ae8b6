"""One implementation for numpy and torch: parity, dtypes and devices."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_es.core import (
    apply_inverse_root,
    orthogonality_defect,
    spectral_step,
)
from spectral_es.core._backend import add_product, is_narrow, namespace
from spectral_es.core.step import spectral_norm_estimate
from tests.conftest import random_orthogonal, random_symmetric, requires_cuda, requires_torch, torch


def numpy_problem(rng, n=16):
    d = np.exp(rng.uniform(-1, 1, n))
    B = random_orthogonal(rng, n)
    Q = B.T @ random_symmetric(rng, n) @ B
    return d, B, Q


@requires_torch
@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_numpy_torch_float64_parity(rng, method):
    d, B, Q = numpy_problem(rng)
    expected = spectral_step(d, B, Q, 0.05, 1.0, method=method)
    got = spectral_step(*(torch.from_numpy(a) for a in (d, B, Q)), 0.05, 1.0, method=method)
    # The same operations in the same order in float64; only the BLAS and
    # LAPACK kernels differ, so agreement is to a few n * eps.
    np.testing.assert_allclose(got[0].numpy(), expected[0], rtol=1e-13)
    np.testing.assert_allclose(got[1].numpy(), expected[1], atol=1e-13)


@requires_torch
@pytest.mark.parametrize(
    ("dtype", "method", "tolerance"),
    [
        # float32: one step's rounding, a few eps32 ~ 1e-7 times n.
        ("float32", "exact", 1e-5),
        ("float32", "truncated", 1e-5),
        # bfloat16 keeps 8 significant bits (eps 7.8e-3); products of n = 16
        # terms round to about sqrt(n) * eps = 0.03 (5e-3 with torch 2.13 on CPU).
        ("bfloat16", "truncated", 0.03),
    ],
)
def test_torch_low_precision_keeps_dtype(rng, dtype, method, tolerance):
    d, B, Q = numpy_problem(rng)
    expected_d, expected_B = spectral_step(d, B, Q, 0.05, 1.0, method=method)
    # The step moves d by up to 23% and B by up to 0.1 per entry here, so a
    # step that returned its input would miss the tolerance.
    assert np.max(np.abs(expected_d - d) / expected_d) > 3 * tolerance
    assert np.max(np.abs(expected_B - B)) > 3 * tolerance
    torch_dtype = getattr(torch, dtype)
    got_d, got_B = spectral_step(*(torch.from_numpy(a).to(torch_dtype) for a in (d, B, Q)), 0.05, 1.0, method=method)
    assert got_d.dtype == torch_dtype
    assert got_B.dtype == torch_dtype
    np.testing.assert_allclose(got_d.double().numpy(), expected_d, rtol=tolerance)
    np.testing.assert_allclose(got_B.double().numpy(), expected_B, atol=tolerance)
    root = apply_inverse_root(got_d, got_B, torch.ones(16, dtype=torch_dtype), 4)
    assert root.dtype == torch_dtype


@requires_torch
def test_float32_numpy_stays_float32(rng):
    d, B, Q = (a.astype(np.float32) for a in numpy_problem(rng))
    d_new, B_new = spectral_step(d, B, Q, 0.05)
    assert d_new.dtype == np.float32
    assert B_new.dtype == np.float32
    assert orthogonality_defect(B_new.astype(np.float64)) < 1e-5


@requires_torch
def test_mixing_numpy_and_torch_is_rejected():
    with pytest.raises(TypeError, match="both numpy arrays and torch tensors"):
        namespace(np.ones(2), torch.ones(2))


@requires_cuda
def test_cuda_step_stays_on_device(rng):
    d, B, Q = numpy_problem(rng)
    cuda = [torch.from_numpy(a).cuda() for a in (d, B, Q)]
    got_d, got_B = spectral_step(*cuda, 0.05, 1.0)
    assert got_d.is_cuda and got_B.is_cuda
    expected = spectral_step(d, B, Q, 0.05, 1.0)
    np.testing.assert_allclose(got_B.cpu().numpy(), expected[1], atol=1e-12)


@requires_cuda
def test_cuda_spectral_norm_stays_on_device(rng):
    A = rng.standard_normal((32, 32))
    N = A - A.T
    estimate = spectral_norm_estimate(torch.from_numpy(N).cuda())
    assert estimate.is_cuda
    # The start vector is computed on the device from the same formula, so
    # float64 on the GPU matches numpy up to rounding.
    assert float(estimate) == pytest.approx(float(spectral_norm_estimate(N)), rel=1e-12)


def test_narrow_dtypes_are_those_below_float32():
    # bfloat16's largest number, 3.39e38, sits just below float32's 3.40e38,
    # so a test on the largest numbers would also count it; the width decides.
    assert [is_narrow(np.zeros(1, dtype)) for dtype in (np.float16, np.float32, np.float64)] == [True, False, False]
    if torch is not None:
        dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        assert [is_narrow(torch.zeros(1, dtype=dtype)) for dtype in dtypes] == [True, True, False, False]


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=requires_torch)])
@pytest.mark.parametrize("shape", [(16, 16), (3, 8, 8)])
def test_add_product_equals_sum(rng, backend, shape):
    C, A, B = (rng.standard_normal(shape) for _ in range(3))
    if backend == "torch":
        C, A, B = (torch.from_numpy(x) for x in (C, A, B))
    got = add_product(C, A, B)
    # addmm and baddbmm add C inside the product, so the sums may be ordered
    # differently from C + A @ B: a few float64 roundings of entries near 10.
    np.testing.assert_allclose(np.asarray(got), np.asarray(C + A @ B), rtol=0, atol=1e-13)


@requires_torch
@pytest.mark.parametrize(
    ("shapes", "dtypes"),
    [
        # One matrix B broadcast over a stack A, which baddbmm rejects.
        (((3, 8, 8), (3, 8, 8), (1, 8, 8)), ("float64",) * 3),
        # A float32 C with bfloat16 factors, which addmm rejects.
        (((8, 8), (8, 8), (8, 8)), ("float32", "bfloat16", "bfloat16")),
        # A one-row product broadcast over the rows of C, which addmm and
        # baddbmm reject because they broadcast only C.
        (((4, 8), (1, 8), (8, 8)), ("float64",) * 3),
        (((3, 4, 8), (3, 1, 8), (3, 8, 8)), ("float64",) * 3),
    ],
)
def test_add_product_broadcasts_as_sum(rng, shapes, dtypes):
    C, A, B = (
        torch.from_numpy(rng.standard_normal(shape)).to(getattr(torch, dtype))
        for shape, dtype in zip(shapes, dtypes, strict=True)
    )
    expected = C + A @ B
    got = add_product(C, A, B)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


@requires_torch
@pytest.mark.parametrize("shape", [(64, 64), (3, 32, 32)])
def test_bfloat16_add_product_rounds_once(rng, shape):
    # The truncated Cayley map adds to bfloat16 matrices this way. The sum of
    # separately rounded terms matched the correctly rounded sum in about 92%
    # of entries here, the fused call in all of them. A rare difference may
    # come from the float32 sums inside the product, so 99% is required.
    C, A, B = (torch.from_numpy(rng.standard_normal(shape) * scale).bfloat16() for scale in (1.0, 0.1, 0.1))
    correctly_rounded = (C.double() + A.double() @ B.double()).bfloat16()
    got = add_product(C, A, B)
    assert got.dtype == torch.bfloat16
    assert (got == correctly_rounded).double().mean() >= 0.99
