"""Benchmarks of SpectralKron against AdamW, Muon, SOAP and Shampoo; results in RESULTS.md."""
