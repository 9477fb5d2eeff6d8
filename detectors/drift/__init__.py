"""Drift detection: data, prediction, performance and LLM traffic drift.

Layers, bottom up: ``stats`` (one two-sample test per module), ``profile`` (reference
statistics computed once), ``multiple`` (correction across features), ``compare`` (one
window against a profile), ``streaming`` (sequential detectors behind one base class, and
the streams a monitor feeds them), ``monitors`` (a monitor's parts: row sources per kind,
reference lifecycle, windowed / performance / streaming evaluators, the registry),
``monitor`` (a monitor as a Detector, assembling those parts), ``api``
(``/api/v1/monitors``) and ``cli`` (``mlvigil drift``).
Wiring: ``detectors.drift.plugin.PLUGIN`` (section ``detectors.drift``).
"""
