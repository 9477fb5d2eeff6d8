"""Detectors: each turns stored records into Findings (see ``detectors.base.Detector``)."""
