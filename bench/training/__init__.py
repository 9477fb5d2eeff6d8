"""Benchmarks of the training-degradation detectors (``python -m bench.training``)."""
