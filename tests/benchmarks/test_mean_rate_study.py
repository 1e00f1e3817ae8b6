"""The learning-rate study's strategy: the mean rate scales the step and adapts as LRA-CMA-ES does."""

import numpy as np

from benchmarks.es.mean_rate_study import StudyES
from spectral_es import SpectralES
from spectral_es.functions import FUNCTIONS


def one_step(es):
    X = es.ask()
    start = es.mean.copy()
    es.tell(X, FUNCTIONS["sphere"](X))
    return es.mean - start


def test_fixed_mean_rate_scales_the_step():
    # Same seed, so the same samples and ranking: the mean moves by exactly
    # mean_rate times the default move (up to rounding of the subtraction).
    x0 = np.full(6, 2.0)
    default = one_step(SpectralES(x0, 0.5, seed=3))
    scaled = one_step(StudyES(x0, 0.5, seed=3, mean_rate=0.25))
    np.testing.assert_allclose(scaled, 0.25 * default, rtol=1e-12, atol=1e-15)


def test_adaptive_rate_noise_against_slope():
    # Random objective values carry no signal, so the SNR estimate is about
    # 0 and the rate keeps falling (by at most a factor exp(-0.1 rate) per
    # step). On a linear function the steps share a direction, and the
    # rate settles where SNR = 1.4 rate: about mu_eff / (1.4 n) = 0.3 here.
    rng = np.random.default_rng(0)
    noise = StudyES(np.zeros(8), 1.0, seed=1, snr_target=1.4)
    slope = StudyES(np.zeros(8), 1.0, seed=1, snr_target=1.4)
    for _ in range(100):
        X = noise.ask()
        noise.tell(X, rng.standard_normal(len(X)))
        X = slope.ask()
        slope.tell(X, X.sum(axis=1))
        assert 0 < noise.mean_rate <= 1
        assert 0 < slope.mean_rate <= 1
    assert noise.mean_rate < 0.15
    assert slope.mean_rate > 0.25
