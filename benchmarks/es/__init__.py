"""Benchmarks of SpectralES against pycma's CMA-ES and xNES; run ``python -m benchmarks.es.compare``."""
