"""Level shift from an "ideal" baseline: step-time regressions and throughput drops.

After a warm-up (compilation, cache fill, the first data-loader epochs) the baseline is the
median of the next ``baseline_samples`` values and its spread their MAD, on a log scale so
that shifts are ratios. Page's CUSUM on the standardised log values finds a sustained shift
and when it began; a rolling median over ``window`` values must confirm it before the
shift is reported, so a burst of outliers alone is never a regression.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from detectors.training.changepoint import PageCUSUM
from detectors.training.robust import RollingMedian, median_mad


@dataclass(frozen=True)
class Shift:
    """A shift holding now: ``ratio`` is current / baseline (1.15 = 15 % higher)."""

    ratio: float
    baseline: float
    current: float
    began_step: int | None
    began_ts: float | None
    cusum: float


class BaselineShift:
    """Detect a sustained shift of a positive series away from its post-warm-up baseline.

    Parameters
    ----------
    direction
        ``"increase"`` (step time regressions) or ``"decrease"`` (throughput drops).
    min_shift
        Smallest relative shift reported (0.10 = 10 %); also sets the CUSUM allowance.
    warmup
        Values skipped before the baseline starts.
    baseline_samples
        Values the baseline median and MAD are taken over.
    window
        Rolling-median window that must confirm a CUSUM alarm.
    h
        CUSUM threshold in robust standard deviations.
    min_scale
        Floor of the baseline's log-scale spread, so a perfectly steady warm-up does not
        make a 0.1 % wobble significant.

    Examples
    --------
    >>> det = BaselineShift(min_shift=0.10, warmup=2, baseline_samples=20, window=5)
    >>> for i in range(40):
    ...     _ = det.update(1.0 + 0.01 * (i % 3), step=i, ts=float(i))
    >>> det.active is None
    True
    >>> for i in range(40, 60):
    ...     shift = det.update(1.2, step=i, ts=float(i))
    >>> round(shift.ratio, 2), shift.began_step
    (1.19, 40)

    References
    ----------
    E. S. Page, "Continuous inspection schemes", Biometrika 41(1/2), 1954; the "ideal step
    time" baseline follows Google's ML Goodput and MegaScale (Jiang et al., NSDI 2024).
    """

    def __init__(
        self,
        *,
        direction: str = "increase",
        min_shift: float = 0.10,
        warmup: int = 20,
        baseline_samples: int = 50,
        window: int = 10,
        h: float = 5.0,
        min_scale: float = 0.01,
        max_marks: int = 10_000,
    ) -> None:
        if direction not in ("increase", "decrease"):
            raise ValueError("direction must be 'increase' or 'decrease'")
        self.sign = 1.0 if direction == "increase" else -1.0
        self.min_shift = min_shift
        self.warmup = warmup
        self.baseline_samples = baseline_samples
        self.min_scale = min_scale
        self.h = h
        self.recent = RollingMedian(window)
        self.n = 0
        self._warm: list[float] = []
        self.center: float | None = None  # log baseline
        self.scale = min_scale
        self.cusum: PageCUSUM | None = None
        # (observation index, step, ts) of recent observations, to date a change.
        self._marks: deque[tuple[int, int | None, float | None]] = deque(maxlen=max_marks)
        self.active: Shift | None = None

    @property
    def baseline(self) -> float | None:
        return math.exp(self.center) if self.center is not None else None

    def _ratio_of(self, value: float) -> float:
        assert self.center is not None
        return value / math.exp(self.center)

    def update(self, value: float, *, step: int | None = None, ts: float | None = None) -> Shift | None:
        """Add one value; returns the shift holding after it, or None."""
        if not value > 0.0 or math.isinf(value):
            return self.active
        self.n += 1
        if self.n <= self.warmup:
            return None
        lv = math.log(value)
        self.recent.update(value)
        if self.center is None:
            self._warm.append(lv)
            if len(self._warm) >= self.baseline_samples:
                self.center, spread = median_mad(self._warm)
                self.scale = max(spread, self.min_scale)
                delta = math.log1p(self.min_shift) / self.scale
                self.cusum = PageCUSUM(k=delta / 2.0, h=self.h)
                self._warm = []
            return None
        assert self.cusum is not None
        z = self.sign * (lv - self.center) / self.scale
        self._marks.append((self.cusum.n, step, ts))
        alarm = self.cusum.update(z)
        ratio = self._ratio_of(self.recent.value)
        shifted = ratio >= 1.0 + self.min_shift if self.sign > 0 else ratio <= 1.0 / (1.0 + self.min_shift)
        # Hysteresis: once reported, the shift holds until the rolling median is back within half of it.
        held = (
            ratio >= 1.0 + self.min_shift / 2 if self.sign > 0 else ratio <= 1.0 / (1.0 + self.min_shift / 2)
        )
        if self.active is None and alarm and shifted and self.recent.full:
            began = self._mark(self.cusum.change_index) or (step, ts)
            self.active = Shift(
                ratio, self.baseline or 0.0, self.recent.value, began[0], began[1], self.cusum.statistic
            )
        elif self.active is not None:
            if held:
                a = self.active
                self.active = Shift(
                    ratio, a.baseline, self.recent.value, a.began_step, a.began_ts, self.cusum.statistic
                )
            else:
                self.active = None
                self.cusum.reset()
        return self.active

    def _mark(self, index: int) -> tuple[int | None, float | None] | None:
        if not self._marks or index < self._marks[0][0]:
            return None
        _i, step, ts = self._marks[min(index - self._marks[0][0], len(self._marks) - 1)]
        return step, ts
