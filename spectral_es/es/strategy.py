"""SpectralES: an ask/tell evolution strategy over a spectrally factorised Gaussian.

The search distribution is ``N(m, sigma^2 S^{-1})`` with the precision shape
kept only as its factors ``S = B diag(d) B^T``. A sample is

    x_k = m + sigma * B (z_k / sqrt(d)),    z_k ~ N(0, I),

so the whitened coordinates of a sample in the eigenbasis are ``z_k`` itself.
After ranking, the strategy estimates the change of the covariance in those
coordinates,

    G = c1 (p p^T - I) + sum_k c_mu w_k (z_k z_k^T - I),    p = D^{1/2} B^T p_c,

(rank-based REINFORCE curvature with fitness shaping, plus an optional
rank-one term from the evolution path ``p_c`` in the same coordinates, with
``D = diag(d)``) and hands the precision
curvature ``Q = -D^{1/2} G D^{1/2}`` to the spectral step of
:mod:`spectral_es.core`, which moves ``d`` and ``B`` without any
eigendecomposition. The mean moves by the weighted whitened steps and the
global scale ``sigma`` by cumulative step-size adaptation, as in CMA-ES, or by
the natural gradient, as in xNES.

Read :meth:`SpectralES.tell` first: it is the algorithm.
"""

from __future__ import annotations

import itertools
import math
import reprlib
import time
import warnings
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from spectral_es._keywords import handle_missing_attribute
from spectral_es._warnings import outside_stacklevel
from spectral_es.core import bjorck_orthogonalize, eigenvalue_step, rotate, rotation_generator, squarings_needed
from spectral_es.core.step import cap_frobenius_norm
from spectral_es.es import checkpoint as checkpoints
from spectral_es.es.bounds import Domain, integer_min_std
from spectral_es.es.history import History
from spectral_es.es.noise import UncertaintyHandler
from spectral_es.es.options import (
    display_interval,
    hint_misused_options,
    numeric_values,
    stop_options,
    validate_bool,
    validate_integer,
    validate_positive,
    validate_seed,
    validate_sigma0,
    validate_stds,
    validate_x0,
    whole_number_as_int,
)
from spectral_es.es.parameters import Parameters, default_popsize
from spectral_es.es.result import ESResult, NonFiniteObjectiveWarning, target_of
from spectral_es.es.stopping import check_stop

__all__ = ["ESResult", "NonFiniteObjectiveWarning", "SpectralES"]

# Cap on the Cayley generator for the truncated map: its orthogonality
# defect before the Björck step is at most 2^-2.5 * 0.25^8 = 2.7e-6 in
# Frobenius norm, and each squaring at most doubles that bound. A longer
# generator is first halved (and the map squared) up to 4 times, so the cap
# only cuts generators longer than 0.25 * 2^4 = 4.
TRUNCATED_GENERATOR_NORM = 0.25
TRUNCATED_MAX_SQUARINGS = 4


# pycma's names of attributes that have other names here, with the fix.
_FOREIGN_ATTRIBUTES = {
    "countiter": "pycma's countiter is nit here",
    "countevals": "pycma's countevals is nfev here",
    "N": "pycma's N is n here",
    "opts": "pycma's opts are options here (the stopping thresholds); the other settings are attributes",
    "sm": "pycma's sampler holds C; es.covariance() is the covariance here",
    "C": (
        "pycma's C is es.covariance() / es.sigma**2 here unless stds or integer variables scale the coordinates, "
        "because covariance() includes sigma^2 and that scaling, which pycma keeps out of C (in sigma_vec)"
    ),
}


class SpectralES:
    """Ask/tell evolution strategy with a spectrally factorised covariance.

    Args:
        x0: Initial mean, shape (n,), finite.
        sigma0: Initial step size, > 0: the standard deviation of every
            coordinate at the start.
        popsize: Samples per iteration (``lam``), >= 2. Default
            ``4 + floor(3 ln n)``.
        seed: Seed (an int or a ``numpy.random.SeedSequence``) of the
            private ``numpy.random.Generator``; 0 is a valid seed and ``None``
            draws fresh entropy (kept in :attr:`seed`). The global numpy
            random state is never used.
        diagonal: Keep ``B`` fixed to the identity and learn only ``d``
            (a separable model, O(lam n) per iteration instead of O(n^3)).
        preset: ``"cma"`` (default): CMA-ES weights, cumulative step-size
            adaptation and a rank-one evolution path fed to the spectral step.
            ``"xnes"``: the utilities, natural-gradient step size and learning
            rates of xNES (SNES when ``diagonal``), for comparison.
        active: With ``preset="cma"``, let the worst half of the samples
            shrink the covariance along their directions (negative weights).
        max_evals: Stop once this many evaluations are spent. The population
            that reaches the limit is completed first, as in pycma, so
            ``nfev`` may exceed it by less than that population's evaluations
            (several per point with ``noise_handling``). Default: no limit.
        max_iter: Stop after this many iterations. Default
            ``100 + 150 (n + 3)^2 / sqrt(popsize)``, as in pycma.
        f_target: Stop once an objective value is at or below this. NaN
            is rejected; ``-inf``, like the default ``None``, never stops.
        tol_f: Stop when the objective values of the last generation and
            the best values of the recent ``10 + 30 n / popsize`` generations
            all lie within this range. Default 1e-11, and off with
            ``noise_handling``.
        tol_x: Stop when every coordinate standard deviation
            (:meth:`coordinate_std`, which includes ``stds``) is below this.
            Default 1e-11.
        tol_condition: Stop when the condition number ``max(d) / min(d)`` of
            the shape exceeds this. Default 1e14.
        tol_up_sigma: Stop when ``sigma`` has grown more than this times
            ``sigma0`` times the largest standard deviation of the shape,
            ``1 / sqrt(min(d))``, as pycma's ``tolupsigma`` does: the search
            is diverging, as on a function without a lower bound. Default
            1e20.
        tol_flat: Stop after this many consecutive iterations in which all
            ``popsize`` objective values are equal. Default 3, and off with
            ``noise_handling``.
        tol_stagnation: Stop when, after this many iterations, the medians of
            the recent best and median objective values no longer improve on
            those this many iterations earlier. Default
            ``100 + 100 n^1.5 / popsize``, as in pycma, and off with
            ``noise_handling``.
        cayley: ``"exact"`` or ``"truncated"`` Cayley map for the rotation.
        rotation_interval: Rotate ``B`` every this many iterations, applying
            the off-diagonal curvature gathered since the last rotation (``d``
            moves every iteration). Default
            ``floor(1 / (10 n (c1 + c_mu))) + 1``, the iterations pycma waits
            between eigendecompositions: 1 up to n = 87, 8 at n = 1000.
        stds: Factors of the initial standard deviations, shape (n,) or one
            number, each > 0, as pycma's ``CMA_stds``: coordinate ``i``
            starts with deviation ``sigma0 * stds[i]``. They scale the
            coordinates for the whole run, and the covariance is learned in
            the scaled coordinates, so give them for variables whose ranges
            differ by orders of magnitude. As in pycma, the eigenvalues,
            the axis ratio and ``tol_condition`` describe the shape in
            those coordinates. Default: all ones.
        bounds: ``(lower, upper)``, each a scalar or shape (n,), or an
            object with ``lb`` and ``ub`` such as ``scipy.optimize.Bounds``.
            Infinite and ``None`` entries leave a side open, see
            :func:`~spectral_es.es.bounds.parse_bounds`. Every sample is
            mapped into the box by the smooth periodic map of
            :class:`~spectral_es.es.bounds.BoxBounds`, so :meth:`ask`
            returns only feasible points; ``x0`` must lie inside. An initial
            deviation (``sigma0`` times ``stds``) wider than the box in some
            variable warns, as in pycma: about 0.3 times the width suits most
            boxes.
        integer_variables: Indices (ints from 0 to n - 1) of the variables
            that take whole numbers, or a boolean mask of length n.
            :meth:`ask` rounds them. Their standard deviation is kept at or
            above :attr:`integer_min_std`, so the search keeps trying
            neighbouring values, and ``tol_x`` looks at the other variables.
        noise_handling: For noisy objectives: switch off ``tol_f``,
            ``tol_flat`` and ``tol_stagnation``, which noise triggers, unless
            they are given, and attach an :class:`~spectral_es.es.noise.UncertaintyHandler` as
            :attr:`noise`, which :func:`spectral_es.minimize` uses to
            re-evaluate points and average repeated evaluations.
        noise_max_evaluations: With ``noise_handling``, the most evaluations
            averaged per point. Default 20.

    Attributes:
        seed: The entropy of the seed sequence (an int). ``seed=es.seed``
            reproduces a strategy created with an int or ``None`` seed. The
            runs of :func:`spectral_es.minimize` use child sequences of the
            run's seed, so reproduce those with the seed given to ``minimize``.
        params: The constants of the run, a :class:`Parameters`.
        mean: Mean of the search distribution in the unbounded coordinates
            of the strategy; :attr:`feasible_mean` is its image in the domain.
        domain: The bounds and integer variables, a
            :class:`~spectral_es.es.bounds.Domain`.
        noise: The :class:`~spectral_es.es.noise.UncertaintyHandler`, or
            ``None`` without ``noise_handling``.
        history: The :class:`~spectral_es.es.history.History`, one row per
            iteration.
    """

    @hint_misused_options
    def __init__(
        self,
        x0: Any,
        sigma0: float,
        *,
        popsize: int | None = None,
        seed: int | np.random.SeedSequence | None = None,
        diagonal: bool = False,
        preset: str = "cma",
        active: bool = True,
        max_evals: float | None = None,
        max_iter: float | None = None,
        f_target: float | None = None,
        tol_f: float | None = None,
        tol_x: float = 1e-11,
        tol_condition: float = 1e14,
        tol_up_sigma: float = 1e20,
        tol_flat: int | None = None,
        tol_stagnation: int | None = None,
        cayley: str = "exact",
        rotation_interval: int | None = None,
        stds: Any = None,
        bounds: Any = None,
        integer_variables: Any = None,
        noise_handling: bool = False,
        noise_max_evaluations: int = 20,
    ) -> None:
        x0 = validate_x0(x0)
        sigma0 = validate_sigma0(sigma0)
        n = x0.size
        stds = validate_stds(stds, n)
        if popsize is None:
            popsize = default_popsize(n)
        popsize = validate_integer("popsize", popsize, 2, f"omit it for the default {default_popsize(n)}")
        if preset not in ("cma", "xnes"):
            raise ValueError(f"unknown preset {preset!r}; use 'cma' or 'xnes'")
        if cayley not in ("exact", "truncated"):
            raise ValueError(f"unknown cayley {cayley!r}; use 'exact' or 'truncated'")
        diagonal = validate_bool("diagonal", diagonal)
        active = validate_bool("active", active)
        noise_handling = validate_bool("noise_handling", noise_handling)
        noise_max_evaluations = validate_integer(
            "noise_max_evaluations", noise_max_evaluations, 1, "omit it for the default 20"
        )

        if preset == "cma":
            self.params = Parameters.cma(n, popsize, diagonal=diagonal, active=active)
        else:
            self.params = Parameters.xnes(n, popsize, diagonal=diagonal)
        self.diagonal = diagonal
        if rotation_interval is None:
            learning_rate = self.params.c1 + self.params.shape_weights[self.params.shape_weights > 0].sum()
            rotation_interval = int(1 / (10 * n * learning_rate)) + 1
        self.rotation_interval = validate_integer("rotation_interval", rotation_interval, 1, "omit it for the default")
        self.preset = preset
        self.cayley = cayley
        self.options = stop_options(
            n,
            popsize,
            max_evals=max_evals,
            max_iter=max_iter,
            f_target=f_target,
            tol_f=tol_f,
            tol_x=tol_x,
            tol_condition=tol_condition,
            tol_up_sigma=tol_up_sigma,
            tol_flat=tol_flat,
            tol_stagnation=tol_stagnation,
            noisy=noise_handling,
        )
        self.noise = UncertaintyHandler(n, popsize, noise_max_evaluations) if noise_handling else None

        # Domain: the mean starts at the preimage of x0. The coordinates are
        # scaled by stds, and integer variables get a larger scaling where
        # that keeps their deviation up.
        self.domain = Domain(n, bounds, integer_variables)
        start = self.domain.start(x0)
        if self.domain.box is not None:
            _warn_wide_sigma0(sigma0, stds, self.domain.box.upper - self.domain.box.lower)
        self.integer_min_std = integer_min_std(n, self.domain.integer.size, self.params.mueff)
        if stds is None and self.domain.integer.size:
            stds = np.ones(n)
        self._scaling = stds

        # Random state: a private Generator, never numpy's global one.
        sequence = validate_seed(seed)
        self.seed = sequence.entropy
        self._rng = np.random.default_rng(sequence)

        # Distribution: mean, scale and the factors of the precision shape.
        self.mean = start
        self.sigma0 = float(sigma0)
        self.sigma = self.sigma0
        self.d = np.ones(n)
        self.B = None if self.diagonal else np.eye(n)
        self.p_sigma = np.zeros(n)  # step-size path, in whitened coordinates
        self.p_c = np.zeros(n)  # evolution path, in search-space coordinates / sigma
        self._pending_curvature: np.ndarray | None = None  # off-diagonal Q not yet rotated in

        # Bookkeeping.
        self.nit = 0
        self.nfev = 0
        self.n_nonfinite = 0
        self.xbest = x0.copy()
        self.fbest = math.inf
        self._z: np.ndarray | None = None
        self._X: np.ndarray | None = None
        self._flat_iterations = 0
        self._best_history: deque[float] = deque(maxlen=10 + math.ceil(30 * n / popsize))
        window = int(self.options["tol_stagnation"]) + 20 if math.isfinite(self.options["tol_stagnation"]) else 0
        self._stagnation_best: deque[float] = deque(maxlen=window)
        self._stagnation_median: deque[float] = deque(maxlen=window)
        self._last_f = np.full(popsize, math.inf)
        self._stop: dict[str, Any] = {}
        self._start_time = time.perf_counter()
        self._warned_nonfinite = False
        self._disp_lines = 0
        self.history = History(n)

    if not TYPE_CHECKING:  # a __getattr__ that type checkers see would let them accept any attribute

        def __getattr__(self, name: str) -> Any:
            return handle_missing_attribute(self, name, _FOREIGN_ATTRIBUTES)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickles written before tol_up_sigma existed have neither the option nor
        # sigma0, so they get the values that load_state_dict gives such states.
        # copy.copy passes the original's __dict__, so it is not changed here.
        self.__dict__.update(state)
        self.options = checkpoints.with_later_options(state["options"])
        self._disp_lines = 0  # the next progress line comes with a header
        if "sigma0" not in state:
            self.sigma0 = state["sigma"]

    def __repr__(self) -> str:
        stop = f", stop={self._stop}" if self._stop else ""
        return (
            f"SpectralES(n={self.n}, popsize={self.popsize}, nit={self.nit}, nfev={self.nfev}, "
            f"sigma={self.sigma:.3g}, fbest={self.fbest:.6g}{stop})"
        )

    # ------------------------------------------------------------------ ask/tell

    @property
    def n(self) -> int:
        """Dimension of the search space."""
        return self.params.n

    @property
    def popsize(self) -> int:
        """Samples per iteration."""
        return self.params.lam

    def ask(self) -> np.ndarray:
        """Sample ``popsize`` candidate solutions, one per row, shape (popsize, n).

        Calling ``ask`` again before :meth:`tell` discards the pending samples.
        The returned array is a copy; evaluate it and pass it back unchanged.
        """
        z = self._rng.standard_normal((self.params.lam, self.n))
        steps = z / np.sqrt(self.d)
        if self.B is not None:
            steps = steps @ self.B.T
        if self._scaling is not None:
            steps *= self._scaling
        self._z = z
        self._X = self.domain.feasible(self.mean + self.sigma * steps)
        return self._X.copy()

    def tell(self, X: Any, f: Any) -> None:
        """Update the distribution from the objective values of the last ``ask``.

        Args:
            X: The array returned by the last :meth:`ask`, unchanged.
            f: Objective values of its rows, shape (popsize,), or an
                iterator over them such as ``map(fun, X)``. NaN and infinity
                are allowed and rank as worst.

        Raises:
            ValueError: if there was no ``ask`` since the last ``tell``, if
                ``X`` is not the last ``ask``'s array, or ``f`` has the wrong
                shape.
        """
        f = self._check_tell(X, f)
        # ask() sets _z together with _X, which _check_tell found set.
        z, X = cast(np.ndarray, self._z), self._X
        self._z = self._X = None
        p = self.params

        # Evaluation bookkeeping; non-finite values rank as worst.
        self.nfev += p.lam if self.noise is None else self.noise.take_evaluation_count(p.lam)
        self.nit += 1
        finite = np.isfinite(f)
        self._count_nonfinite(int(p.lam - finite.sum()))
        ranked_f = np.where(finite, f, np.inf)
        order = np.argsort(ranked_f, kind="stable")
        if finite.any() and ranked_f[order[0]] < self.fbest:
            self.fbest = float(ranked_f[order[0]])
            self.xbest = X[order[0]].copy()
        self._record_history(ranked_f[order])
        if not finite.any():
            # Nothing to learn from: keep the distribution as it was.
            self._finish_iteration()
            return

        # Weights of the ranks, averaged over ties so that equal values get
        # equal weight and a flat objective moves nothing systematically.
        mean_weights = _tie_averaged(p.mean_weights, ranked_f[order])
        shape_weights = _tie_averaged(p.shape_weights, ranked_f[order])
        z = z[order]

        # Mean: m += sigma * B (z_w / sqrt(d)), z_w = sum_k w_k z_k.
        z_w = mean_weights @ z
        step = z_w / np.sqrt(self.d)
        if self.B is not None:
            step = self.B @ step
        new_mean = self.mean + self.sigma * (step if self._scaling is None else self._scaling * step)

        # Evolution paths (CMA): the step-size path in whitened coordinates,
        # whose length is chi_n on average under random selection.
        h_sigma = 1.0
        if p.c_sigma > 0:
            whitened = z_w if self.B is None else self.B @ z_w
            p_sigma = (1 - p.c_sigma) * self.p_sigma + math.sqrt(p.c_sigma * (2 - p.c_sigma) * p.mueff) * whitened
            length = np.linalg.norm(p_sigma) / math.sqrt(1 - (1 - p.c_sigma) ** (2 * self.nit))
            h_sigma = float(length < (1.4 + 2 / (p.n + 1)) * p.chi_n)
        else:
            p_sigma = self.p_sigma
        p_c = (1 - p.c_c) * self.p_c + h_sigma * math.sqrt(p.c_c * (2 - p.c_c) * p.mueff) * step

        # Covariance change in whitened eigen-coordinates (REINFORCE with
        # rank-based weights), plus the rank-one evolution path term. Samples
        # with negative weight are rescaled to length sqrt(n), as in active
        # CMA-ES, so a long unlucky sample cannot shrink the shape too much.
        z_shape = z
        if p.rescale_negative and np.any(shape_weights < 0):
            negative = shape_weights < 0
            z_shape = z.copy()
            z_shape[negative] *= math.sqrt(p.n) / np.linalg.norm(z[negative], axis=1, keepdims=True)
        p_tilde = np.sqrt(self.d) * (p_c if self.B is None else self.B.T @ p_c)
        identity_weight = shape_weights.sum() + p.c1 - p.c1 * (1 - h_sigma) * p.c_c * (2 - p.c_c)

        # Step size: cumulative (CMA) or natural gradient of log sigma (xNES).
        if p.c_sigma > 0:
            new_sigma = self.sigma * _exp(p.c_sigma / p.d_sigma * (np.linalg.norm(p_sigma) / p.chi_n - 1))
            trace_shift = 0.0
        else:
            # xNES: the trace of the utility-weighted G moves log sigma, and
            # the shape keeps only the trace-free part of G.
            excess = (z**2).sum(axis=1) - p.n
            new_sigma = self.sigma * _exp(0.5 * p.eta_sigma * (mean_weights @ excess) / p.n)
            trace_shift = (shape_weights @ excess) / p.n

        # Shape: the precision curvature in the eigenbasis is
        # Q = -D^{1/2} G D^{1/2} (spectral step with beta = 1, gamma = 0; the
        # learning rates are inside G). Its diagonal moves d every iteration.
        if self.B is None:
            g_diag = (shape_weights @ z_shape**2) + p.c1 * p_tilde**2 - identity_weight - trace_shift
            new_d = eigenvalue_step(self.d, -self.d * g_diag, 1.0)
            new_B, pending = None, None
        else:
            # Q = -sum_k w_k y_k y_k^T - c1 y_p y_p^T + (identity weight) D with
            # y = D^{1/2} z: one product, with the path as an extra weighted row.
            sqrt_d = np.sqrt(self.d)
            rows = np.vstack([z_shape, p_tilde]) * sqrt_d
            Q = -((rows.T * np.append(shape_weights, p.c1)) @ rows)
            Q[np.diag_indices_from(Q)] += (identity_weight + trace_shift) * self.d
            new_d = eigenvalue_step(self.d, np.diag(Q), 1.0)
            new_B, pending = self._rotate(self.B, new_d, Q)

        self._commit(new_mean, new_sigma, new_d, new_B, p_sigma, p_c)
        if self.d is new_d:
            self._pending_curvature = pending
        self._finish_iteration()

    def _rotate(self, B: np.ndarray, new_d: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the new basis and the off-diagonal curvature still to apply.

        ``B`` is the current basis :attr:`B`, which the full model has. All
        curvature is expressed in this basis, which stays fixed between
        rotations, so the off-diagonal parts of several iterations add up.
        Every ``rotation_interval`` iterations one Cayley rotation applies
        their sum, which to first order equals one rotation per iteration.
        This amortises the O(n^3) Cayley solve as pycma's lazy
        eigendecomposition does.
        """
        pending = Q if self._pending_curvature is None else self._pending_curvature + Q
        np.fill_diagonal(pending, 0.0)  # the diagonal already moved d
        if self.nit % self.rotation_interval:
            return B, pending
        N = rotation_generator(new_d, pending, 1.0)
        if self.cayley == "exact":
            return rotate(B, N), None
        # The truncated series needs a short generator: halve it up to
        # TRUNCATED_MAX_SQUARINGS times (squaring the map as often), cap what
        # is still too long (a shorter step in the same direction), and
        # remove the truncation's orthogonality drift with one Björck step.
        squarings = squarings_needed(N, TRUNCATED_GENERATOR_NORM, TRUNCATED_MAX_SQUARINGS)
        N = cap_frobenius_norm(N, TRUNCATED_GENERATOR_NORM * 2**squarings)
        return bjorck_orthogonalize(rotate(B, N, method="truncated", squarings=squarings)), None

    # ------------------------------------------------------------------ stop

    def stop(self) -> dict[str, Any]:
        """Return the triggered termination criteria, empty while running.

        Keys are option names (``"max_evals"``, ``"tol_x"``, ...) or one of
        ``"non_finite_state"``, ``"non_finite_objective"`` (``tol_flat``
        iterations in which every value was NaN or infinite) and
        ``"callback"``. Values are the thresholds.
        """
        return dict(self._stop)

    @property
    def result(self) -> ESResult:
        """The current :class:`ESResult`."""
        return ESResult(
            xbest=self.xbest.copy(),
            fbest=self.fbest,
            mean=self.feasible_mean,
            sigma=self.sigma,
            nfev=self.nfev,
            nit=self.nit,
            stop=self.stop(),
            n_nonfinite=self.n_nonfinite,
            history=self.history,
            f_target=target_of(self.options),
        )

    @property
    def pending(self) -> np.ndarray | None:
        """The population of the last :meth:`ask` not yet passed to :meth:`tell` (a copy), or ``None``."""
        return None if self._X is None else self._X.copy()

    @property
    def elapsed(self) -> float:
        """Seconds since the strategy was created, including time before a checkpoint it was restored from."""
        return time.perf_counter() - self._start_time

    @property
    def feasible_mean(self) -> np.ndarray:
        """The mean mapped into the bounds and rounded like a sample, shape (n,); a copy."""
        return self.domain.feasible(self.mean.copy())

    @property
    def condition_number(self) -> float:
        """Condition number ``max(d) / min(d)`` of the covariance shape."""
        return float(self.d.max() / self.d.min())

    def coordinate_std(self) -> np.ndarray:
        """Standard deviations ``sigma * s * sqrt(diag(B diag(1/d) B^T))``, shape (n,).

        ``s`` is the per-coordinate scaling: ``stds``, raised for integer
        variables whose deviation would fall below :attr:`integer_min_std`
        (all ones without either). With bounds these are deviations of the
        unbounded samples, before the map into the box.
        """
        if self.B is None:
            std = self.sigma / np.sqrt(self.d)
        else:
            std = self.sigma * np.sqrt((self.B**2) @ (1.0 / self.d))
        return std if self._scaling is None else std * self._scaling

    def covariance(self) -> np.ndarray:
        """Dense covariance ``sigma^2 diag(s) B diag(1/d) B^T diag(s)``, shape (n, n); O(n^3).

        ``s`` is the coordinate scaling of :meth:`coordinate_std` (all ones without ``stds`` or integers).
        """
        if self.B is None:
            C = np.diag(self.sigma**2 / self.d)
        else:
            C = (self.B * (self.sigma**2 / self.d)) @ self.B.T
        return C if self._scaling is None else self._scaling[:, None] * C * self._scaling[None, :]

    def request_stop(self, reason: str = "callback", value: Any = True) -> None:
        """Add ``reason`` to the stop dictionary, so :meth:`stop` is non-empty."""
        self._stop[reason] = value

    def optimize(self, fun: Any, **options: Any) -> SpectralES:
        """Evaluate ``fun`` and tell the values until a stop criterion fires; return this strategy.

        The method form of :func:`spectral_es.optimize`, whose keyword
        arguments (``args``, ``vectorized``, ``executor``, ``callback``,
        ``disp``) it takes, as pycma's ``CMAEvolutionStrategy.optimize``
        returns the strategy for ``es.optimize(fun).result``.
        """
        from spectral_es.es.minimize import optimize  # minimize imports this module

        optimize(self, fun, **options)
        return self

    def set_budget(self, max_evals: float | None = None, max_iter: float | None = None) -> None:
        """Raise (or lower) the evaluation or iteration limit; ``None`` keeps a limit.

        A run that stopped only because it spent its budget goes on after a
        larger one: the stop for a limit that the run is now below is
        withdrawn, and the other stop reasons stay. Nothing else changes, so
        the run continues as if it had had the new limit from the start.

        Raises:
            ValueError: for a limit that is not a positive number, or one at
                or below what the run has already used.
        """
        for name, limit, used in (("max_evals", max_evals, self.nfev), ("max_iter", max_iter, self.nit)):
            if limit is None:
                continue
            number = validate_positive(name, limit, f"pass {name} > 0")
            if not number > used:
                raise ValueError(
                    f"{name}={limit!r} is not above the {used} the run has used; pass a larger {name} to continue it"
                )
            self.options[name] = whole_number_as_int(number)
            self._stop.pop(name, None)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Return the complete state as a nested dictionary of arrays and plain values.

        It includes the random generator's state, so a strategy restored with
        :meth:`load_state_dict` or :meth:`from_state_dict` continues bit for
        bit as this one would. See :mod:`spectral_es.es.checkpoint`.
        """
        return checkpoints.state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict` of a strategy with the same n, popsize, preset and model."""
        checkpoints.load_state_dict(self, state)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SpectralES:
        """Return a new strategy with the settings and state of :meth:`state_dict`'s output."""
        return checkpoints.from_state_dict(cls, state)

    def save(self, path: Any) -> None:
        """Write the state to ``path`` (an ``.npz`` archive with JSON metadata, no pickle), atomically."""
        checkpoints.save(self, path)

    @classmethod
    def load(cls, path: Any) -> SpectralES:
        """Return the strategy saved in ``path`` by :meth:`save`."""
        return checkpoints.load(cls, path)[0]

    # ------------------------------------------------------------------ display

    def disp(self, every: bool | int = 1) -> None:
        """Print one progress line if the iteration count is a multiple of ``every``.

        ``every`` takes the values of the ``disp`` argument of
        :func:`spectral_es.minimize`: ``True`` means 10, and ``False`` or 0
        print nothing, as pycma's ``es.disp(0)`` does. A header is printed
        before the first line, every 20 lines, and before the first line
        after :meth:`load` or unpickling. The final iteration is
        always printed once the run has stopped, unless ``every`` is 0.

        Raises:
            ValueError: if ``every`` is negative or not an integer.
        """
        interval = display_interval(every, "every")
        if interval == 0 or (self.nit % interval and not self._stop):
            return
        median = float(np.median(self._last_f)) if self.nit else math.nan
        seconds = time.perf_counter() - self._start_time
        print_progress(
            self._disp_lines, self.nit, self.nfev, self.fbest, median, self.sigma, self.condition_number, seconds
        )
        self._disp_lines += 1

    # ------------------------------------------------------------------ internals

    def _check_tell(self, X: Any, f: Any) -> np.ndarray:
        if self._X is None:
            raise ValueError(
                "tell() needs the solutions of a preceding ask(); call ask() first (each ask() takes one tell())"
            )
        X = np.asarray(X, dtype=float)
        if X.shape != self._X.shape:
            raise ValueError(
                f"tell() got solutions of shape {X.shape}, but the last ask() returned shape {self._X.shape}; "
                "pass the array returned by ask() unchanged"
            )
        if not np.array_equal(X, self._X):
            raise ValueError(
                "tell() got solutions that differ from those of the last ask(); "
                "pass the array returned by ask() unchanged and in the same order "
                "(an ask() before the tell() of the previous one replaces that population)"
            )
        if isinstance(f, Iterator):
            # An iterator (map, Executor.map) is read once, and one value past popsize lets the shape
            # check reject a longer or endless one. An exception while reading leaves the population pending.
            f = list(itertools.islice(f, self.params.lam + 1))
        values = numeric_values(f)
        if values is None:
            raise ValueError(
                f"tell() got objective values f that are not an array of real numbers: {reprlib.repr(f)}; "
                "pass one float per row of the solutions"
            )
        f = values
        if f.ndim == 2 and f.shape[1] == 1:
            f = f[:, 0]
        if f.shape != (self.params.lam,):
            raise ValueError(
                f"tell() got objective values of shape {f.shape}, expected ({self.params.lam},): "
                "one value per row of the solutions"
            )
        return f

    def _count_nonfinite(self, count: int) -> None:
        if not count:
            return
        self.n_nonfinite += count
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"{count} objective value(s) in iteration {self.nit} are NaN or infinite; they rank as worst. "
                "Further occurrences are counted in result.n_nonfinite without a warning.",
                NonFiniteObjectiveWarning,
                stacklevel=outside_stacklevel(),
            )

    def _record_history(self, sorted_f: np.ndarray) -> None:
        self._last_f = sorted_f
        self._best_history.append(float(sorted_f[0]))
        self._stagnation_best.append(float(sorted_f[0]))
        self._stagnation_median.append(float(sorted_f[len(sorted_f) // 2]))
        if np.all(sorted_f == sorted_f[0]):
            self._flat_iterations += 1
        else:
            self._flat_iterations = 0

    def _finish_iteration(self) -> None:
        """Keep integer variables searching, check the stop criteria and record the history."""
        if self._scaling is not None:
            self._raise_integer_std(self._scaling)
        check_stop(self)
        self.history.record(self, time.perf_counter() - self._start_time)

    def _raise_integer_std(self, scaling: np.ndarray) -> None:
        """Scale up integer coordinates whose deviation fell below :attr:`integer_min_std`.

        Rounded values that no longer change give selection nothing to act
        on, so those coordinates would freeze wherever they are. pycma keeps
        the same lower bound through its ``minstd`` option. ``scaling`` is
        the coordinate scaling :attr:`_scaling`, changed in place.
        """
        index = self.domain.integer
        if self.B is None:
            variance = 1.0 / self.d[index]
        else:
            variance = self.B[index] ** 2 @ (1.0 / self.d)
        std = self.sigma * scaling[index] * np.sqrt(variance)
        low = std < self.integer_min_std
        scaling[index[low]] *= self.integer_min_std / std[low]

    def _commit(self, mean, sigma, d, B, p_sigma, p_c) -> None:
        """Adopt the new state, unless it is not finite (then stop and keep the old one)."""
        parts = [mean, np.atleast_1d(sigma), d, p_sigma, p_c] + ([] if B is None else [B])
        if not all(np.all(np.isfinite(part)) for part in parts) or not np.all(d > 0) or not sigma > 0:
            self._stop["non_finite_state"] = True
            warnings.warn(
                f"the update in iteration {self.nit} produced a non-finite or non-positive state; "
                "the run stops and keeps the last valid distribution",
                RuntimeWarning,
                stacklevel=outside_stacklevel(),
            )
            return
        self.mean, self.sigma, self.d, self.B, self.p_sigma, self.p_c = mean, sigma, d, B, p_sigma, p_c


def _warn_wide_sigma0(sigma0: float, stds: np.ndarray | None, widths: np.ndarray) -> None:
    """Warn when the initial deviation ``sigma0`` (times ``stds``) exceeds the box's width somewhere, as pycma does.

    The periodic map then folds samples across the whole interval, so they
    carry no information about the step, and the run tends to stall before
    the step size has shrunk to the box.
    """
    initial = sigma0 * (np.ones_like(widths) if stds is None else stds)
    wide = np.flatnonzero(initial > widths)
    if not wide.size:
        return
    i = int(wide[np.argmin(widths[wide])])
    if stds is None:
        message = (
            f"sigma0={sigma0:g} exceeds the width of the bounds in {wide.size} variable(s) (narrowest width "
            f"{widths[i]:g}, variable {i}), so samples spread over the whole box and the run may stall; pass sigma0 "
            f"of about 0.3 times the width, e.g. {0.3 * widths[i]:g}, or give stds where the widths differ much"
        )
    else:
        message = (
            f"sigma0 * stds exceeds the width of the bounds in {wide.size} variable(s) (variable {i}: "
            f"{initial[i]:g} against a width of {widths[i]:g}), so samples spread over the whole box and the run "
            "may stall; pass stds of about 0.3 times each width divided by sigma0"
        )
    warnings.warn(message, UserWarning, stacklevel=outside_stacklevel())


def print_progress(
    line: int, nit: int, nfev: int, f_best: float, f_median: float, sigma: float, condition: float, seconds: float
) -> None:
    """Print one progress line of a run, after the column header when ``line`` is a multiple of 20.

    ``line`` counts the lines printed so far, so the header also comes
    first. The axis ratio column is the square root of ``condition``, the
    condition number of the covariance.
    """
    if line % 20 == 0:
        columns = ("iter", 7), ("evals", 8), ("f best", 12), ("f median", 12), ("sigma", 10), ("axis ratio", 10)
        print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'time s':>8}")
    print(
        f"{nit:>7} {nfev:>8} {f_best:>12.5e} {f_median:>12.5e} "
        f"{sigma:>10.3e} {math.sqrt(condition):>10.3e} {seconds:>8.2f}",
        flush=True,
    )


def _tie_averaged(weights: np.ndarray, sorted_f: np.ndarray) -> np.ndarray:
    """Return ``weights`` with each run of equal sorted values given their mean weight."""
    if np.all(sorted_f[1:] != sorted_f[:-1]):
        return weights
    result = weights.copy()
    start = 0
    for end in range(1, len(sorted_f) + 1):
        if end == len(sorted_f) or sorted_f[end] != sorted_f[start]:
            result[start:end] = weights[start:end].mean()
            start = end
    return result


def _exp(x: float | np.floating) -> float:
    """Return ``math.exp(x)``, or infinity where it overflows (the commit check then stops the run)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
