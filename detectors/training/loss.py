"""Loss and gradient anomalies: non-finite values, spikes, divergence and plateaus."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from detectors.training.robust import RollingMedian, median_mad


@dataclass(frozen=True)
class LossAnomaly:
    """One anomaly observed at one step. ``kind``: non_finite, loss_spike, grad_spike,
    divergence, plateau."""

    kind: str
    step: int | None
    ts: float | None
    value: float
    baseline: float
    score: float
    threshold: float


POINT_KINDS = ("non_finite", "loss_spike", "grad_spike")
TREND_KINDS = ("divergence", "plateau")


class LossMonitor:
    """Anomalies in one run's loss and gradient-norm series, step by step.

    - *non_finite*: a NaN or infinite loss or gradient norm, at the step it appears;
    - *loss_spike* / *grad_spike*: a value at least ``spike_ratio`` times the rolling median
      of the last ``window`` values and ``spike_z`` robust standard deviations above it;
    - *divergence*: the rolling median of the last ``smooth`` losses is ``divergence_ratio``
      times the best (lowest) rolling median seen so far;
    - *plateau*: the rolling median improved by less than ``plateau_tolerance`` (relative)
      over the last ``plateau_steps`` steps (0 disables it).

    ``update`` returns what it observed at that step: point anomalies (non-finite, spikes)
    at the step they occur, trends (divergence, plateau) at every step they hold. Keeping
    them until they are reported is the caller's job (``episodes.EpisodeLog``), so nothing
    depends on how often anyone looks.

    Parameters
    ----------
    window, spike_ratio, spike_z, smooth, divergence_ratio, plateau_steps, plateau_tolerance,
    warmup
        As described above; ``warmup`` steps are ignored for spikes, divergence and plateaus
        (the loss falls steeply at first), never for non-finite values.

    Examples
    --------
    >>> mon = LossMonitor(window=20, warmup=0)
    >>> for step in range(50):
    ...     found = mon.update(step, loss=2.0 - 0.01 * step + 0.01 * (step % 3))
    >>> found
    []
    >>> [a.kind for a in mon.update(50, loss=float("nan"))]
    ['non_finite']
    >>> [a.kind for a in mon.update(51, loss=9.0)]
    ['loss_spike']
    >>> mon.update(52, loss=1.5)
    []

    References
    ----------
    Chowdhery et al., "PaLM" (loss spikes and restarts), 2022; Takase et al., "Spike No
    More: Stabilizing the Pre-training of Large Language Models", 2023.
    """

    def __init__(
        self,
        *,
        window: int = 50,
        spike_ratio: float = 1.5,
        spike_z: float = 6.0,
        smooth: int = 20,
        divergence_ratio: float = 1.5,
        plateau_steps: int = 0,
        plateau_tolerance: float = 0.001,
        warmup: int = 20,
    ) -> None:
        self.window = window
        self.spike_ratio = spike_ratio
        self.spike_z = spike_z
        self.divergence_ratio = divergence_ratio
        self.plateau_steps = plateau_steps
        self.plateau_tolerance = plateau_tolerance
        self.warmup = warmup
        self.n = 0
        self._loss: deque[float] = deque(maxlen=window)
        self._grad: deque[float] = deque(maxlen=window)
        self._smooth = RollingMedian(smooth)
        self._best = math.inf
        self._plateau: deque[float] = deque(maxlen=plateau_steps + 1 if plateau_steps else 1)

    def _spike(
        self, kind: str, hist: deque[float], value: float, step: int | None, ts: float | None
    ) -> LossAnomaly | None:
        if len(hist) < self.window // 2 or self.n <= self.warmup:
            return None
        m, s = median_mad(hist)
        if m <= 0:
            return None
        z = (value - m) / max(s, 1e-12 * m)
        if value >= self.spike_ratio * m and z >= self.spike_z:
            return LossAnomaly(kind, step, ts, value, m, z, self.spike_z)
        return None

    def update(
        self,
        step: int | None,
        *,
        loss: float | None = None,
        grad_norm: float | None = None,
        ts: float | None = None,
    ) -> list[LossAnomaly]:
        """Add one step's loss and gradient norm; returns the anomalies observed at it."""
        self.n += 1
        out: list[LossAnomaly] = []
        bad = [v for v in (loss, grad_norm) if v is not None and not math.isfinite(v)]
        if bad:
            out.append(LossAnomaly("non_finite", step, ts, bad[0], math.nan, math.inf, 0.0))
        if loss is not None and math.isfinite(loss):
            spike = self._spike("loss_spike", self._loss, loss, step, ts)
            if spike is not None:
                out.append(spike)
            self._loss.append(loss)
            out.extend(self._trend(step, ts, self._smooth.update(loss)))
        if grad_norm is not None and math.isfinite(grad_norm):
            spike = self._spike("grad_spike", self._grad, grad_norm, step, ts)
            if spike is not None:
                out.append(spike)
            self._grad.append(grad_norm)
        return out

    def _trend(self, step: int | None, ts: float | None, smoothed: float) -> list[LossAnomaly]:
        if self.n <= self.warmup or not self._smooth.full:
            return []
        out = []
        if 0 < smoothed < self._best:
            self._best = smoothed
        if 0 < self._best < math.inf and smoothed >= self.divergence_ratio * self._best:
            out.append(
                LossAnomaly(
                    "divergence", step, ts, smoothed, self._best, smoothed / self._best, self.divergence_ratio
                )
            )
        if self.plateau_steps:
            self._plateau.append(smoothed)
            if len(self._plateau) > self.plateau_steps:
                first = self._plateau[0]
                gain = (first - smoothed) / abs(first) if first else 0.0
                if gain < self.plateau_tolerance:
                    out.append(
                        LossAnomaly("plateau", step, ts, smoothed, first, gain, self.plateau_tolerance)
                    )
        return out

    @property
    def trends_evaluated(self) -> bool:
        """Whether the last update evaluated divergence and plateau (past warm-up, window full)."""
        return self.n > self.warmup and self._smooth.full
