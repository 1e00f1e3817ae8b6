"""Standard test functions for black-box minimisation.

Each function takes one point, shape (n,), and returns a float, or a batch of
points as rows, shape (k, n), and returns an array of shape (k,). All have
their global minimum value 0; :data:`OPTIMA` gives where it lies.

The multimodal ones follow the formulas used by Lin et al. (2025),
"Spectral-factorized positive-definite curvature learning for NN training",
appendix B; Bohachevsky and Schaffer sum over neighbouring coordinate pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "FUNCTIONS",
    "OPTIMA",
    "ackley",
    "bohachevsky",
    "ellipsoid",
    "griewank",
    "rastrigin",
    "rosenbrock",
    "rotated_ellipsoid",
    "rotation",
    "schaffer",
    "sphere",
]


def _batch(function: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """Let a row-wise function take one point or a batch of points."""

    def wrapper(x):
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            return float(function(x[None, :])[0])
        if x.ndim != 2:
            raise ValueError(f"expected one point (n,) or points as rows (k, n), got shape {x.shape}")
        return function(x)

    wrapper.__name__ = function.__name__
    wrapper.__qualname__ = function.__qualname__
    wrapper.__doc__ = function.__doc__
    return wrapper


@_batch
def sphere(x):
    """Sum of squares, ``sum x_i^2``."""
    return np.sum(x**2, axis=1)


def _ellipsoid_weights(n: int) -> np.ndarray:
    if n == 1:
        return np.ones(1)
    return 1e6 ** (np.arange(n) / (n - 1))


@_batch
def ellipsoid(x):
    """Axis-parallel ellipsoid ``sum 1e6^((i-1)/(n-1)) x_i^2``, condition 1e6."""
    return (x**2) @ _ellipsoid_weights(x.shape[1])


def rotation(n: int, seed: int = 0) -> np.ndarray:
    """Return a random orthogonal n x n matrix, fixed by ``seed``.

    The QR factor of a Gaussian matrix with the signs of the diagonal of R
    moved into Q, which makes it uniformly (Haar) distributed.
    """
    gaussian = np.random.default_rng(seed).standard_normal((n, n))
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))


_ROTATIONS: dict[int, np.ndarray] = {}


@_batch
def rotated_ellipsoid(x):
    """The ellipsoid in coordinates rotated by ``rotation(n, seed=0)``."""
    n = x.shape[1]
    if n not in _ROTATIONS:
        _ROTATIONS[n] = rotation(n, seed=0)
    return ((x @ _ROTATIONS[n].T) ** 2) @ _ellipsoid_weights(n)


@_batch
def rosenbrock(x):
    """Rosenbrock's valley ``sum 100 (x_{i+1} - x_i^2)^2 + (x_i - 1)^2``; 0 at all ones."""
    if x.shape[1] < 2:
        return (x[:, 0] - 1) ** 2
    return np.sum(100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (x[:, :-1] - 1) ** 2, axis=1)


@_batch
def ackley(x):
    """Ackley ``20 - 20 exp(-0.2 sqrt(mean x^2)) + e - exp(mean cos(2 pi x))``."""
    return (
        20
        - 20 * np.exp(-0.2 * np.sqrt(np.mean(x**2, axis=1)))
        + math.e
        - np.exp(np.mean(np.cos(2 * math.pi * x), axis=1))
    )


@_batch
def griewank(x):
    """Griewank ``sum x_i^2 / 4000 - prod cos(x_i / sqrt(i)) + 1``."""
    i = np.arange(1, x.shape[1] + 1)
    return np.sum(x**2, axis=1) / 4000 - np.prod(np.cos(x / np.sqrt(i)), axis=1) + 1


@_batch
def rastrigin(x):
    """Rastrigin ``10 n + sum x_i^2 - 10 cos(2 pi x_i)``."""
    return 10 * x.shape[1] + np.sum(x**2 - 10 * np.cos(2 * math.pi * x), axis=1)


@_batch
def bohachevsky(x):
    """Bohachevsky ``sum x_i^2 + 2 x_{i+1}^2 - 0.3 cos(3 pi x_i) - 0.4 cos(4 pi x_{i+1}) + 0.7``."""
    a, b = _pairs(x)
    return np.sum(a**2 + 2 * b**2 - 0.3 * np.cos(3 * math.pi * a) - 0.4 * np.cos(4 * math.pi * b) + 0.7, axis=1)


@_batch
def schaffer(x):
    """Schaffer ``sum (x_i^2 + x_{i+1}^2)^0.25 (sin^2(50 (x_i^2 + x_{i+1}^2)^0.1) + 1)``."""
    a, b = _pairs(x)
    r2 = a**2 + b**2
    return np.sum(r2**0.25 * (np.sin(50 * r2**0.1) ** 2 + 1), axis=1)


def _pairs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring pairs (x_i, x_{i+1}); for n = 1, the pair (x_1, 0)."""
    if x.shape[1] < 2:
        return x, np.zeros_like(x)
    return x[:, :-1], x[:, 1:]


FUNCTIONS: dict[str, Callable] = {
    "sphere": sphere,
    "ellipsoid": ellipsoid,
    "rotated_ellipsoid": rotated_ellipsoid,
    "rosenbrock": rosenbrock,
    "ackley": ackley,
    "griewank": griewank,
    "rastrigin": rastrigin,
    "bohachevsky": bohachevsky,
    "schaffer": schaffer,
}
"""The built-in functions by name, as the command line accepts them."""

OPTIMA: dict[str, float] = {name: 0.0 for name in FUNCTIONS}
OPTIMA["rosenbrock"] = 1.0
"""Coordinate value shared by all entries of each function's minimiser."""
