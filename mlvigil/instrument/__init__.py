"""Optional producer helpers, built on the OpenTelemetry API/SDK alone.

Producers never need mlvigil: these helpers only spare them typing the ``mlvigil.*``
attribute names (docs/conventions.md). Copying them into a training script works as well.
"""
