"""Streaming change detectors behind one base class (``DriftDetector``): ADWIN and
Page-Hinkley on error streams, and sliding-window CVM / MMD detectors calibrated to an
expected run time between false alarms; ``streams`` feeds a monitor's rows to them."""

from detectors.drift.streaming.adwin import ADWIN
from detectors.drift.streaming.base import DriftDetector
from detectors.drift.streaming.online import OnlineCVM, OnlineMMD
from detectors.drift.streaming.page_hinkley import PageHinkley

__all__ = ["ADWIN", "DriftDetector", "OnlineCVM", "OnlineMMD", "PageHinkley"]
