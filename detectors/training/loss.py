"""Loss and gradient anomalies: non-finite values, spikes, divergence and plateaus."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from detectors.training.robust import RollingMedian, median_mad


@dataclass(frozen=True)
class LossAnomaly:
    """One anomaly holding now. ``kind``: non_finite, loss_spike, grad_spike, divergence, plateau."""

    kind: str
    step: int | None
    ts: float | None
    value: float
    baseline: float
    score: float
    threshold: float


class LossMonitor:
    """Anomalies in one run's loss and gradient-norm series.

    - *non_finite*: a NaN or infinite loss or gradient norm, reported at the step it appears;
    - *loss_spike* / *grad_spike*: a value at least ``spike_ratio`` times the rolling median
      of the last ``window`` values and ``spike_z`` robust standard deviations above it;
    - *divergence*: the rolling median of the last ``smooth`` losses is ``divergence_ratio``
      times the best (lowest) rolling median seen so far;
    - *plateau*: the rolling median improved by less than ``plateau_tolerance`` (relative)
      over the last ``plateau_steps`` steps (0 disables it).

    Point anomalies (non-finite, spikes) keep holding for ``hold`` steps after their last
    occurrence so that a periodic evaluation sees them; a non-finite value is held until
    ``hold`` finite steps followed it.

    Parameters
    ----------
    window, spike_ratio, spike_z, smooth, divergence_ratio, plateau_steps, plateau_tolerance,
    hold, warmup
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
    ['non_finite', 'loss_spike']

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
        hold: int = 20,
        warmup: int = 20,
    ) -> None:
        self.window = window
        self.spike_ratio = spike_ratio
        self.spike_z = spike_z
        self.divergence_ratio = divergence_ratio
        self.plateau_steps = plateau_steps
        self.plateau_tolerance = plateau_tolerance
        self.hold = hold
        self.warmup = warmup
        self.n = 0
        self._loss: deque[float] = deque(maxlen=window)
        self._grad: deque[float] = deque(maxlen=window)
        self._smooth = RollingMedian(smooth)
        self._best = math.inf
        self._plateau: deque[float] = deque(maxlen=plateau_steps + 1 if plateau_steps else 1)
        self._held: dict[str, tuple[int, LossAnomaly]] = {}

    def _spike(self, kind: str, hist: deque[float], value: float, step: int | None, ts: float | None) -> None:
        if len(hist) < self.window // 2 or self.n <= self.warmup:
            return
        m, s = median_mad(hist)
        if m <= 0:
            return
        z = (value - m) / max(s, 1e-12 * m)
        if value >= self.spike_ratio * m and z >= self.spike_z:
            self._held[kind] = (self.n, LossAnomaly(kind, step, ts, value, m, z, self.spike_z))

    def update(
        self,
        step: int | None,
        *,
        loss: float | None = None,
        grad_norm: float | None = None,
        ts: float | None = None,
    ) -> list[LossAnomaly]:
        """Add one step's loss and gradient norm; returns the anomalies holding now."""
        self.n += 1
        bad = [
            (name, v)
            for name, v in (("loss", loss), ("grad_norm", grad_norm))
            if v is not None and not math.isfinite(v)
        ]
        if bad:
            _name, v = bad[0]
            self._held["non_finite"] = (
                self.n,
                LossAnomaly("non_finite", step, ts, v, math.nan, math.inf, 0.0),
            )
        if loss is not None and math.isfinite(loss):
            self._spike("loss_spike", self._loss, loss, step, ts)
            self._loss.append(loss)
            self._trend(step, ts, self._smooth.update(loss))
        if grad_norm is not None and math.isfinite(grad_norm):
            self._spike("grad_spike", self._grad, grad_norm, step, ts)
            self._grad.append(grad_norm)
        return self.current()

    def _trend(self, step: int | None, ts: float | None, smoothed: float) -> None:
        if self.n <= self.warmup or not self._smooth.full:
            return
        if 0 < smoothed < self._best:
            self._best = smoothed
        if 0 < self._best < math.inf and smoothed >= self.divergence_ratio * self._best:
            self._held["divergence"] = (
                self.n,
                LossAnomaly(
                    "divergence", step, ts, smoothed, self._best, smoothed / self._best, self.divergence_ratio
                ),
            )
        else:
            self._held.pop("divergence", None)
        if self.plateau_steps:
            self._plateau.append(smoothed)
            if len(self._plateau) > self.plateau_steps:
                first = self._plateau[0]
                gain = (first - smoothed) / abs(first) if first else 0.0
                if gain < self.plateau_tolerance:
                    self._held["plateau"] = (
                        self.n,
                        LossAnomaly("plateau", step, ts, smoothed, first, gain, self.plateau_tolerance),
                    )
                else:
                    self._held.pop("plateau", None)

    def current(self) -> list[LossAnomaly]:
        out = []
        for kind, (seen, anomaly) in list(self._held.items()):
            # Point anomalies expire ``hold`` steps after their last occurrence; trends are
            # re-evaluated every step above.
            if kind in ("non_finite", "loss_spike", "grad_spike") and self.n - seen >= self.hold:
                del self._held[kind]
                continue
            out.append(anomaly)
        order = ("non_finite", "loss_spike", "grad_spike", "divergence", "plateau")
        return sorted(out, key=lambda a: order.index(a.kind))
