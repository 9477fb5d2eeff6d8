"""Drift detection: data, prediction, performance and LLM traffic drift.

Layers, bottom up: ``stats`` (one two-sample test per module), ``profile`` (reference
statistics computed once), ``multiple`` (correction across features), ``compare`` (one
window against a profile), ``streaming`` (sequential detectors), ``monitor`` (a monitor
as a Detector over the store), ``api`` (``/api/v1/monitors``) and ``cli`` (``mlvigil drift``).
Wiring: ``detectors.drift.plugin.PLUGIN`` (section ``detectors.drift``).
"""
