"""Input checks of the spectral core: libraries, dtypes, shapes and scalar options."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from spectral_es.core import (
    apply_inverse_root,
    apply_power,
    bjorck_orthogonalize,
    cayley,
    cayley_exact,
    cayley_truncated,
    eigenvalue_step,
    kron_curvature,
    kron_factor_step,
    kron_precondition,
    kron_rotate,
    kron_step,
    kron_unrotate,
    matrix_power,
    orthogonality_defect,
    rotate,
    rotation_generator,
    skew,
    spectral_step,
    squarings_needed,
)
from spectral_es.core.step import cap_generator_norm, generator_norm, spectral_norm_estimate
from tests.conftest import random_orthogonal, random_symmetric, requires_torch, torch


def problem(rng, n=6, dtype=np.float64):
    """Distinct eigenvalues, a random basis and a symmetric curvature in ``dtype``."""
    d = np.exp(rng.uniform(-1, 1, n))
    B = random_orthogonal(rng, n)
    Q = B.T @ random_symmetric(rng, n) @ B
    return d.astype(dtype), B.astype(dtype), Q.astype(dtype)


def generator(rng, n=6, norm=0.2):
    """A skew-symmetric generator with Frobenius norm ``norm``."""
    A = rng.standard_normal((n, n))
    N = A - A.T
    return N * (norm / np.linalg.norm(N))


# ---------------------------------------------------------------- scalar options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": -0.1}, "invalid beta -0.1"),
        ({"beta": 0.0}, "invalid beta 0.0"),
        ({"beta": float("nan")}, "invalid beta nan"),
        ({"beta": float("inf")}, "invalid beta inf"),
        ({"gamma": 5.0}, "invalid gamma 5.0"),
        ({"gamma": -1.0}, "invalid gamma -1.0"),
        ({"max_generator_norm": -1.0}, "invalid max_generator_norm -1.0"),
        ({"max_generator_norm": 0.0}, "invalid max_generator_norm 0.0"),
        ({"max_generator_norm": float("nan")}, "invalid max_generator_norm nan"),
        ({"max_log_step": 0.0}, "invalid max_log_step 0.0"),
        ({"method": "lu"}, "unknown Cayley method 'lu'"),
    ],
)
def test_spectral_step_rejects_options(rng, options, message):
    d, B, Q = problem(rng)
    arguments = {"beta": 0.1, "gamma": 0.0, **options}
    with pytest.raises(ValueError, match=message):
        spectral_step(d, B, Q, **arguments)


def test_negative_cap_is_rejected_not_reversed(rng):
    N = generator(rng, norm=2.0)
    with pytest.raises(ValueError, match="invalid max_norm -1.0.*reverse or drop the rotation"):
        cap_generator_norm(N, -1.0)
    # An infinite cap is no cap.
    np.testing.assert_array_equal(cap_generator_norm(N, float("inf")), N)


@pytest.mark.parametrize("function", [eigenvalue_step, rotation_generator])
def test_step_parts_reject_rates(rng, function):
    d, _, Q = problem(rng)
    curvature = np.diag(Q).copy() if function is eigenvalue_step else Q
    with pytest.raises(ValueError, match="invalid beta -1.0"):
        function(d, curvature, -1.0)
    with pytest.raises(ValueError, match=r"invalid gamma 2.0; use a number in \[0, 1\]"):
        function(d, curvature, 0.1, 2.0)
    with pytest.raises(TypeError, match="beta must be a real number, got str"):
        function(d, curvature, "0.1")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": -1.0}, "invalid alpha -1.0"),
        ({"alpha": 0.0}, "invalid alpha 0.0"),
        ({"beta": float("nan")}, "invalid beta nan"),
        ({"gamma": 1.5}, "invalid gamma 1.5"),
        ({"max_generator_norm": 0.0}, "invalid max_generator_norm 0.0"),
        ({"damping": -1e-3}, "invalid damping -0.001"),
        ({"max_log_step": -1.0}, "invalid max_log_step -1.0"),
        ({"max_squarings": -1}, "invalid max_squarings -1"),
        ({"cap_norm": "max"}, "invalid cap_norm 'max'"),
        ({"kappa": 0}, "invalid kappa 0"),
    ],
)
def test_kron_factor_step_rejects_options(rng, options, message):
    d, B, W = problem(rng)
    arguments = {"alpha": 1.0, "kappa": 3, "beta": 0.1, **options}
    with pytest.raises(ValueError, match=message):
        kron_factor_step(d, B, W, **arguments)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kappa": "4"}, "kappa must be an integer, got str '4'"),
        ({"kappa": 4.0}, "kappa must be an integer, got float 4.0"),
        ({"max_squarings": True}, "max_squarings must be an integer, got bool True"),
        ({"method": "truncated", "order": 8.0}, "order must be an integer, got float 8.0"),
        ({"beta": "0.1"}, "beta must be a real number, got str '0.1'"),
    ],
)
def test_kron_factor_step_rejects_option_types(rng, options, message):
    d, B, W = problem(rng)
    arguments = {"alpha": 1.0, "kappa": 3, "beta": 0.1, **options}
    with pytest.raises(TypeError, match=re.escape(f"kron_factor_step: {message}")):
        kron_factor_step(d, B, W, **arguments)


def test_kron_factor_step_names_caller_for_order(rng):
    d, B, W = problem(rng)
    with pytest.raises(ValueError, match="kron_factor_step: invalid order 3; use a power of two >= 2"):
        kron_factor_step(d, B, W, 1.0, 3, 0.1, method="truncated", order=3)
    # numpy integers pass, as for max_squarings.
    kron_factor_step(d, B, W, 1.0, np.int64(3), 0.1, method="truncated", order=np.int64(4))


def test_kron_step_rejects_alpha(rng):
    d_C, B_C, _ = problem(rng, 4)
    d_K, B_K, _ = problem(rng, 3)
    G = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="kron_step: invalid alpha -1"):
        kron_step(d_C, B_C, d_K, B_K, -1, G, 0.1)
    with pytest.raises(ValueError, match="kron_precondition: invalid p 0"):
        kron_precondition(d_C, B_C, d_K, B_K, 1.0, G, 0)
    with pytest.raises(ValueError, match="kron_precondition: invalid eps -1.0"):
        kron_precondition(d_C, B_C, d_K, B_K, 1.0, G, 2, -1.0)


def test_kron_step_checks_options_once(rng):
    d_C, B_C, _ = problem(rng, 4)
    d_K, B_K, _ = problem(rng, 3)
    G = rng.standard_normal((4, 3))
    # The options are checked by kron_step itself, so its name is in the message.
    with pytest.raises(ValueError, match=re.escape("kron_step: invalid damping -1.0")):
        kron_step(d_C, B_C, d_K, B_K, 1.0, G, 0.1, damping=-1.0)
    with pytest.raises(ValueError, match=re.escape("kron_step: invalid order 3")):
        kron_step(d_C, B_C, d_K, B_K, 1.0, G, 0.1, method="truncated", order=3)
    with pytest.raises(TypeError, match=re.escape("kron_step: unknown option 'methd'; the options are method, order")):
        kron_step(d_C, B_C, d_K, B_K, 1.0, G, 0.1, methd="truncated")


def test_kron_factor_step_numpy_kappa_keeps_float32(rng):
    # A numpy integer kappa times a Python float alpha is a numpy float64
    # scalar, which would turn the float32 curvature into float64 (NEP 50).
    d, B, W = problem(rng, 4, np.float32)
    result = kron_factor_step(d, B, W, 1.0, np.int64(3), 0.1)
    assert [x.dtype for x in result] == [np.float32] * 3


def test_roots_reject_zero_root(rng):
    d, B, _ = problem(rng)
    V = rng.standard_normal(6)
    with pytest.raises(ValueError, match="apply_inverse_root: invalid p 0; use a finite root > 0"):
        apply_inverse_root(d, B, V, 0)
    with pytest.raises(ValueError, match="apply_power: invalid exponent nan"):
        apply_power(d, B, V, float("nan"))


def test_squarings_needed_degenerate_inputs(rng):
    N = generator(rng)
    with pytest.raises(ValueError, match="invalid max_norm 0"):
        squarings_needed(N, 0, 4)
    with pytest.raises(ValueError, match="invalid max_squarings -1"):
        squarings_needed(N, 0.25, -1)
    with pytest.raises(TypeError, match="squarings_needed: max_squarings must be an integer, got float 4.0"):
        squarings_needed(N, 0.25, 4.0)
    with pytest.raises(ValueError, match="squarings_needed: invalid norm 'max'"):
        squarings_needed(N, 0.25, 4, "max")
    # An infinite norm takes every squaring allowed, and a NaN norm none.
    assert squarings_needed(np.full((2, 2), np.inf), 0.25, 4) == 4
    assert squarings_needed(np.full((2, 2), np.nan), 0.25, 4) == 0


@pytest.mark.parametrize("scalar", [np.float64(0.05), np.array(0.05), 1 / np.sqrt(np.float64(400))])
def test_numpy_float64_scalars_keep_float32(rng, scalar):
    # Under NEP 50 a numpy float64 scalar is not weak: d * np.float64(x) is
    # float64. The core converts scalar options to Python floats at entry.
    d, B, Q = problem(rng, dtype=np.float32)
    d_new, B_new = spectral_step(d, B, Q, scalar, np.float64(1.0), max_generator_norm=np.float64(0.5))
    assert d_new.dtype == np.float32
    assert B_new.dtype == np.float32
    assert eigenvalue_step(d, np.diag(Q).copy(), scalar).dtype == np.float32
    assert apply_power(d, B, np.ones(6, dtype=np.float32), np.float64(0.5)).dtype == np.float32


def test_kron_step_numpy_float64_alpha_keeps_float32(rng):
    d_C, B_C, _ = problem(rng, 4, np.float32)
    d_K, B_K, _ = problem(rng, 3, np.float32)
    G = rng.standard_normal((4, 3)).astype(np.float32)
    result = kron_step(d_C, B_C, d_K, B_K, np.float64(0.7), G, np.float64(0.1))
    assert [np.asarray(x).dtype for x in result] == [np.float32] * 5


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128])
@pytest.mark.parametrize(
    ("function", "argument"),
    [(cayley_exact, "N"), (cayley_truncated, "N"), (skew, "A"), (orthogonality_defect, "B")],
)
def test_non_floating_arrays_are_rejected(dtype, function, argument):
    N = np.array([[0, 1], [-1, 0]]).astype(dtype)
    message = f"{function.__name__}: {argument} has dtype {np.dtype(dtype)}, which is not real floating point"
    with pytest.raises(TypeError, match=re.escape(message)):
        function(N)


def test_numpy_dtype_hint_omits_bfloat16():
    # numpy has no bfloat16, so the hint for a numpy array names only its own dtypes.
    message = "N has dtype int64, which is not real floating point; cast it to float64, float32 or float16 first"
    with pytest.raises(TypeError, match=re.escape(message)):
        cayley_exact(np.zeros((2, 2), dtype=np.int64))


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 on this platform")
def test_numpy_longdouble_is_rejected(rng):
    d, B, Q = (a.astype(np.longdouble) for a in problem(rng))
    longdouble = np.dtype(np.longdouble)
    message = f"spectral_step: d has dtype {longdouble} (numpy.longdouble), which the spectral core does not support"
    with pytest.raises(TypeError, match=re.escape(message)):
        spectral_step(d, B, Q, 0.1, method="truncated")


def test_integer_eigenvalues_are_rejected(rng):
    _, B, Q = problem(rng, 3)
    with pytest.raises(TypeError, match="spectral_step: d has dtype int64"):
        spectral_step(np.array([1, 2, 3]), B, Q, 0.1)


def test_mixed_numpy_dtypes_are_rejected(rng):
    d, B, Q = problem(rng)
    with pytest.raises(TypeError, match="spectral_step: Q has dtype float32 but d has dtype float64"):
        spectral_step(d, B, Q.astype(np.float32), 0.1)
    with pytest.raises(TypeError, match="rotate: N has dtype float32 but B has dtype float64"):
        rotate(B, generator(rng).astype(np.float32))
    # numpy would promote a float32 V silently, and torch's product would
    # raise its own error, so the check names V for both.
    with pytest.raises(TypeError, match="apply_power: V has dtype float32 but d has dtype float64"):
        apply_power(d, B, np.ones(6, dtype=np.float32), 0.5)


def test_numpy_float16_exact_map_names_fix(rng):
    with pytest.raises(TypeError, match='float16, which has no dense solver.*method="truncated"'):
        cayley_exact(generator(rng).astype(np.float16))
    # The truncated map needs only products, which numpy has in float16.
    assert cayley_truncated(generator(rng).astype(np.float16)).dtype == np.float16


# ---------------------------------------------------------------- shapes


def test_one_dimensional_generator_is_rejected():
    with pytest.raises(ValueError, match=r"cayley_exact: N has shape \(3,\); expected a square matrix"):
        cayley_exact(np.ones(3))
    with pytest.raises(ValueError, match=r"cayley_truncated: N has shape \(3,\)"):
        cayley_truncated(np.ones(3))


def test_zero_dimensional_inputs_are_rejected(rng):
    _, B, Q = problem(rng)
    with pytest.raises(ValueError, match=r"spectral_step: d has shape \(\); expected a vector"):
        spectral_step(np.array(1.0), B, Q, 0.1)
    # cayley checks only the method and leaves the array to cayley_exact.
    with pytest.raises(ValueError, match=re.escape("cayley_exact: N has shape ()")):
        cayley(np.array(0.0))


def test_batched_inputs_name_the_limit(rng):
    d, B, Q = problem(rng, 4)
    with pytest.raises(ValueError, match=r"d has shape \(2, 4\).*batch dimensions are not supported"):
        spectral_step(np.stack([d, d]), B, Q, 0.1)
    with pytest.raises(ValueError, match=r"B has shape \(2, 4, 4\).*batch dimensions are not supported"):
        spectral_step(d, np.stack([B, B]), Q, 0.1)
    with pytest.raises(ValueError, match=r"V has shape \(4, 2, 2\)"):
        apply_power(d, B, np.ones((4, 2, 2)), 0.5)


def test_mismatched_sizes_are_rejected(rng):
    d, B, Q = problem(rng, 4)
    with pytest.raises(ValueError, match=r"Q has shape \(3, 3\), but d of shape \(4,\) requires \(4, 4\)"):
        spectral_step(d, B, Q[:3, :3], 0.1)
    # A short d is named as the source of n, so the message points at it too.
    with pytest.raises(ValueError, match=r"B has shape \(4, 4\), but d of shape \(3,\) requires \(3, 3\)"):
        spectral_step(d[:3], B, Q, 0.1)
    with pytest.raises(ValueError, match=r"B has shape \(4, 3\); expected a square matrix"):
        spectral_step(d, B[:, :3], Q, 0.1)
    with pytest.raises(ValueError, match=r"B_K has shape \(4, 4\), but V of shape \(4, 3\) requires \(3, 3\)"):
        kron_rotate(B, np.ones((4, 3)), B)
    # kron_step names its gradient G, as its signature does.
    with pytest.raises(ValueError, match=r"B_K has shape \(4, 4\), but G of shape \(4, 3\) requires \(3, 3\)"):
        kron_step(d, B, d, B, 1.0, np.ones((4, 3)), 0.1)
    with pytest.raises(ValueError, match=r"W has shape \(4, 4\); expected a vector"):
        kron_factor_step(d, None, Q, 1.0, 3, 0.1)
    # Without these checks the products would fail with the library's own
    # message (a RuntimeError in torch) instead of naming the argument.
    with pytest.raises(ValueError, match=r"apply_power: V has shape \(3, 2\); expected \(4,\) or \(4, k\)"):
        apply_power(d, B, np.ones((3, 2)), 0.5)
    with pytest.raises(ValueError, match=r"rotate: N has shape \(3, 3\), but B of shape \(4, 4\) requires \(4, 4\)"):
        rotate(B, generator(rng, 3))


# ---------------------------------------------------------------- libraries


def test_lists_are_rejected(rng):
    d, B, Q = problem(rng, 2)
    with pytest.raises(TypeError, match=r"spectral_step: d is a list; pass a numpy array or a torch tensor"):
        spectral_step([1.0, 2.0], B, Q, 0.1)
    with pytest.raises(TypeError, match=r"cayley_truncated: N is a list.*numpy.asarray\(N, dtype=float\)"):
        cayley_truncated([[0.0, 1.0], [-1.0, 0.0]])


# Every public entry point, the inputs it takes, and a call with them.
PUBLIC_CALLS = [
    ("spectral_step", "dBQ", lambda d, B, Q, N, V: spectral_step(d, B, Q, 0.1)),
    ("eigenvalue_step", "dV", lambda d, B, Q, N, V: eigenvalue_step(d, V, 0.1)),
    ("rotation_generator", "dQ", lambda d, B, Q, N, V: rotation_generator(d, Q, 0.1)),
    ("rotate", "BN", lambda d, B, Q, N, V: rotate(B, N)),
    ("rotate truncated", "BN", lambda d, B, Q, N, V: rotate(B, N, method="truncated")),
    ("apply_power", "dBV", lambda d, B, Q, N, V: apply_power(d, B, V, 0.5)),
    ("apply_inverse_root", "dBV", lambda d, B, Q, N, V: apply_inverse_root(d, B, V, 2)),
    ("matrix_power", "dB", lambda d, B, Q, N, V: matrix_power(d, B)),
    ("kron_rotate", "BQ", lambda d, B, Q, N, V: kron_rotate(B, Q, B)),
    ("kron_unrotate", "BQ", lambda d, B, Q, N, V: kron_unrotate(B, Q, B)),
    ("kron_curvature", "dQ", lambda d, B, Q, N, V: kron_curvature(Q, d)),
    ("kron_factor_step", "dBQ", lambda d, B, Q, N, V: kron_factor_step(d, B, Q, 1.0, 4, 0.1)),
    ("kron_step", "dBQ", lambda d, B, Q, N, V: kron_step(d, B, d, B, 1.0, Q, 0.1)),
    ("kron_precondition", "dBQ", lambda d, B, Q, N, V: kron_precondition(d, B, d, B, 1.0, Q, 2)),
]


MIXED_CASES = [(name, torch_input, call) for name, takes, call in PUBLIC_CALLS for torch_input in takes]


@requires_torch
@pytest.mark.parametrize(
    ("name", "torch_input", "call"), MIXED_CASES, ids=[f"{name}-{torch_input}" for name, torch_input, _ in MIXED_CASES]
)
def test_mixing_numpy_and_torch_has_one_message(rng, name, torch_input, call):
    d, B, Q = problem(rng, 4)
    inputs = {"d": d, "B": B, "Q": Q, "N": generator(rng, 4), "V": np.ones(4)}
    inputs[torch_input] = torch.from_numpy(inputs[torch_input])
    function = name.split()[0]
    with pytest.raises(TypeError, match=f"{function}: the spectral core got both numpy arrays and torch tensors"):
        call(**inputs)


@requires_torch
def test_generator_functions_reject_mixed_arguments(rng):
    N = torch.from_numpy(generator(rng, 4))
    with pytest.raises(TypeError, match="both numpy arrays and torch tensors"):
        rotate(np.eye(4), N, method="truncated")
    with pytest.raises(TypeError, match="both numpy arrays and torch tensors"):
        apply_power(np.ones(4), np.eye(4), torch.ones(4), 0.5)
    with pytest.raises(TypeError, match=r"generator_norm: N is a list"):
        generator_norm([[0.0]])
    with pytest.raises(ValueError, match=r"spectral_norm_estimate: N has shape \(4,\)"):
        spectral_norm_estimate(torch.ones(4))


# ---------------------------------------------------------------- torch dtypes


@requires_torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_exact_map_names_fix(rng, dtype):
    torch_dtype = getattr(torch, dtype)
    d, B, Q = (torch.from_numpy(a).to(torch_dtype) for a in problem(rng, 4))
    N = torch.from_numpy(generator(rng, 4)).to(torch_dtype)
    fix = 'no dense solver.*method="truncated"'
    with pytest.raises(TypeError, match=f"spectral_step: B has dtype torch.{dtype}, which has {fix}"):
        spectral_step(d, B, Q, 0.1)
    with pytest.raises(TypeError, match=f"cayley_exact: N has dtype torch.{dtype}, which has {fix}"):
        cayley_exact(N)
    with pytest.raises(TypeError, match=f"cayley_exact: N has dtype torch.{dtype}"):
        cayley(N)
    with pytest.raises(TypeError, match=f"rotate: B has dtype torch.{dtype}, which has {fix}"):
        rotate(B, N)
    with pytest.raises(TypeError, match=f"kron_factor_step: B has dtype torch.{dtype}, which has {fix}"):
        kron_factor_step(d.float(), B, Q, 1.0, 4, 0.1)
    with pytest.raises(TypeError, match=f"kron_step: B_C has dtype torch.{dtype}, which has {fix}"):
        kron_step(d.float(), B, d.float(), B, 1.0, Q, 0.1)
    # The truncated map runs in these dtypes and keeps them.
    d_new, B_new = spectral_step(d, B, Q, 0.1, method="truncated")
    assert d_new.dtype == torch_dtype
    assert B_new.dtype == torch_dtype


@requires_torch
def test_mixed_torch_dtypes_are_rejected(rng):
    d, B, Q = (torch.from_numpy(a) for a in problem(rng, 4))
    with pytest.raises(TypeError, match="B has dtype torch.float64 but d has dtype torch.float32"):
        spectral_step(d.float(), B, Q, 0.1)
    with pytest.raises(TypeError, match="B has dtype torch.float32 but d has dtype torch.float64"):
        spectral_step(d, B.float(), Q.float(), 0.1)
    N = torch.from_numpy(generator(rng, 4))
    with pytest.raises(TypeError, match="rotate: N has dtype torch.float32 but B has dtype torch.bfloat16"):
        rotate(B.bfloat16(), N.float(), method="truncated")
    torch_hint = "torch.int64, which is not real floating point; cast it to float64, float32, float16 or bfloat16 first"
    with pytest.raises(TypeError, match=re.escape(torch_hint)):
        cayley_exact(torch.tensor([[0, 1], [-1, 0]]))


@requires_torch
def test_tensor_scalar_options_are_checked(rng):
    d, B, Q = (torch.from_numpy(a) for a in problem(rng, 4))
    # One step size per eigenvalue would broadcast silently.
    per_eigenvalue = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    with pytest.raises(ValueError, match=re.escape("spectral_step: beta has shape (4,); expected a number or a 0-d")):
        spectral_step(d, B, Q, per_eigenvalue)
    with pytest.raises(TypeError, match=re.escape("spectral_step: gamma has dtype torch.complex128; expected a real")):
        spectral_step(d, B, Q, 0.1, torch.tensor(0.5, dtype=torch.complex128))
    with pytest.raises(TypeError, match=re.escape("kron_factor_step: damping has dtype torch.bool")):
        kron_factor_step(d, B, Q, 1.0, 4, 0.1, damping=torch.tensor(True))
    with pytest.raises(TypeError, match=re.escape("kron_step: alpha has dtype torch.complex64")):
        kron_step(d, B, d, B, torch.tensor(1.0, dtype=torch.complex64), Q, 0.1)


@requires_torch
def test_zero_d_tensor_options_pass(rng):
    d, B, Q = (torch.from_numpy(a) for a in problem(rng, 4))
    expected_d, expected_B = spectral_step(d, B, Q, 0.1, 1.0)
    # A floating point tensor of another dtype, and an integer tensor.
    for beta, gamma in [(torch.tensor(0.1, dtype=torch.float64), torch.tensor(1.0)), (0.1, torch.tensor(1))]:
        d_new, B_new = spectral_step(d, B, Q, beta, gamma)
        torch.testing.assert_close(d_new, expected_d)
        torch.testing.assert_close(B_new, expected_B)


@requires_torch
def test_kron_keeps_wide_eigenvalues_next_to_narrow_bases(rng):
    # The documented exception: d (float32) wider than B and G (bfloat16).
    d, B, W = problem(rng, 4)
    d32 = torch.from_numpy(d).float()
    B16 = torch.from_numpy(B).bfloat16()
    d_new, B_new, rate = kron_factor_step(
        d32, B16, torch.from_numpy(W).bfloat16(), torch.ones((), dtype=torch.float64), 4, 0.1, method="truncated"
    )
    assert d_new.dtype == torch.float32
    assert B_new.dtype == torch.bfloat16
    assert rate.dtype == torch.float32
    mixed = "kron_precondition: d_K has dtype torch.float64 but d_C has dtype torch.float32"
    with pytest.raises(TypeError, match=mixed):
        kron_precondition(d32, B16, d32.double(), B16, 1.0, B16, 2)


# ---------------------------------------------------------------- autograd


@requires_torch
@pytest.mark.parametrize("method", ["exact", "truncated"])
def test_requires_grad_forward_emits_no_warning(rng, method):
    d, B, Q = (torch.from_numpy(a).requires_grad_() for a in problem(rng, 4))
    # torch emits some warnings only once per process unless set_warn_always is on.
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            d_new, B_new = spectral_step(d, B, Q, 0.1, method=method)
            with torch.no_grad():
                no_grad_d, no_grad_B = spectral_step(d, B, Q, 0.1, method=method)
    finally:
        torch.set_warn_always(warn_always)
    # The functions are meant for values without autograd history; the
    # forward pass gives the same values either way.
    torch.testing.assert_close(d_new.detach(), no_grad_d, rtol=0, atol=0)
    torch.testing.assert_close(B_new.detach(), no_grad_B, rtol=0, atol=0)


# ---------------------------------------------------------------- diagnostics


@requires_torch
def test_low_precision_defect_uses_float32_gram(rng):
    B = torch.from_numpy(random_orthogonal(rng, 64)).bfloat16()
    # Against the float64 defect of the same bfloat16 matrix, whose entries
    # convert exactly. A product of two bfloat16 numbers (8-bit significands)
    # is exact in float32, so only the sums of 64 terms round: about
    # sqrt(64) * 2^-25 = 2.4e-7 per entry, 1.5e-5 over the 64 x 64 entries,
    # below 1e-3 of the defect (about 0.019). A bfloat16 Gram matrix rounds
    # its entries near 1 by up to 2^-9 and missed by 0.7% here.
    exact = orthogonality_defect(B.double())
    assert orthogonality_defect(B) == pytest.approx(exact, rel=1e-3)
    # float16 overflows above 65504: a Gram entry of 64 * 300^2 = 5.8e6 is
    # finite only if formed in float32.
    scaled = torch.full((64, 64), 300.0, dtype=torch.float16)
    assert np.isfinite(orthogonality_defect(scaled))
    assert bjorck_orthogonalize(B).dtype == torch.bfloat16
