"""Page-Hinkley test for an increase in the mean of a stream (error rates, latencies)."""

from __future__ import annotations

from detectors.drift.streaming.base import DriftDetector


class PageHinkley(DriftDetector):
    """Cumulative deviation from the running mean, alarmed when it rises ``threshold`` above its minimum.

    Parameters
    ----------
    delta
        Magnitude of change tolerated (allowance), in the stream's units.
    threshold
        Alarm threshold (lambda) on the cumulative statistic.
    min_instances
        Observations before an alarm may be raised.
    alpha
        Forgetting factor of the cumulative sum (1.0: none).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> ph = PageHinkley(delta=0.005, threshold=5.0)
    >>> stream = [rng.gauss(0.1, 0.05) for _ in range(500)] + [rng.gauss(0.4, 0.05) for _ in range(100)]
    >>> first = next(i for i, x in enumerate(stream) if ph.update(x))
    >>> 500 <= first < 530
    True

    References
    ----------
    E. S. Page, "Continuous inspection schemes", Biometrika 41(1/2), 1954.
    """

    def __init__(
        self, delta: float = 0.005, threshold: float = 50.0, min_instances: int = 30, alpha: float = 1.0
    ) -> None:
        self.delta, self.threshold, self.min_instances, self.alpha = delta, threshold, min_instances, alpha
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.cumulative = 0.0
        self.minimum = 0.0
        self.drift_detected = False
        #: The cumulative deviation above its minimum (``cumulative - minimum``).
        self.statistic = 0.0

    def update(self, x: float) -> bool:
        """Add one observation; True when a change is detected (the detector then resets)."""
        if self.drift_detected:
            self.reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.cumulative = self.alpha * self.cumulative + (x - self.mean - self.delta)
        self.minimum = min(self.minimum, self.cumulative)
        self.statistic = self.cumulative - self.minimum
        self.drift_detected = self.n >= self.min_instances and self.statistic > self.threshold
        return self.drift_detected
