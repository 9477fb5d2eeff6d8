"""Streaming change detectors: ADWIN and Page-Hinkley on error streams, and sliding-window
CVM / MMD detectors calibrated to an expected run time between false alarms."""

from detectors.drift.streaming.adwin import ADWIN
from detectors.drift.streaming.online import OnlineCVM, OnlineMMD
from detectors.drift.streaming.page_hinkley import PageHinkley

__all__ = ["ADWIN", "OnlineCVM", "OnlineMMD", "PageHinkley"]
