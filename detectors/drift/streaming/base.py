"""The base class of the streaming drift detectors (river's ``river.drift.base.DriftDetector``).

One observation at a time goes in through ``update``; ``drift_detected`` says whether that
observation completed a change. A detector restarts by itself on the observation after an
alarm, and ``reset`` restarts it on demand. Monitors read every detector through this
interface only (``detectors.drift.streaming.streams``), so a new detector is one subclass.

Examples
--------
>>> class Threshold(DriftDetector):
...     '''Alarms when one observation exceeds a fixed level.'''
...     def __init__(self, level: float) -> None:
...         self.level = level
...         self.reset()
...     def reset(self) -> None:
...         self.drift_detected, self.statistic = False, 0.0
...     @property
...     def threshold(self) -> float:
...         return self.level
...     def update(self, x: float) -> bool:
...         self.statistic = x
...         self.drift_detected = x > self.level
...         return self.drift_detected
>>> Threshold(1.0).update_many([0.2, 0.5, 3.0, 0.1])
[2]

References
----------
J. Montiel et al., "River: machine learning for streaming data in Python", JMLR 22(110), 2021
(the ``update`` / ``drift_detected`` interface).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np


class DriftDetector(ABC):
    """A sequential change detector: ``update`` per observation, ``drift_detected`` after it.

    Subclasses set ``drift_detected`` in ``update`` and keep ``statistic`` and ``threshold``
    as of the latest step: the thresholded detectors alarm when ``statistic > threshold``;
    ADWIN, whose bound changes with every split, reports its window's mean and no
    threshold (NaN).
    """

    #: Whether the latest observation completed a change (False before any).
    drift_detected: bool = False
    #: The latest step's test statistic.
    statistic: float = 0.0
    #: The level the statistic must exceed to alarm, as of the latest step.
    threshold: float = float("inf")

    @abstractmethod
    def update(self, x: Any) -> bool:
        """Add one observation; True (and ``drift_detected``) when it completes a change."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the stream seen so far (calibrations made at construction stay)."""

    def update_many(self, xs: Iterable[Any]) -> list[int]:
        """Feed observations in order; the positions in ``xs`` where an alarm fired."""
        return [i for i, x in enumerate(xs) if self.update(x)]

    def feature_scores(self) -> np.ndarray | None:
        """The latest step's statistic per input feature, when the detector has one each
        (the monitor names the drifting features with it); None otherwise."""
        return None


__all__ = ["DriftDetector"]
