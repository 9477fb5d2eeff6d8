"""Detectors: each turns stored records into Findings (see ``mlvigil.core.detector.Detector``)."""
