"""Streaming evaluation: every new row through a sequential detector, alarms as episodes.

Each evaluation reads the rows that arrived since the previous one (up to ``lag`` seconds
ago, so late exports are not skipped; at most ``MAX_STREAM_BACKLOG`` after a long pause)
and feeds them in time order to the monitor's stream (``detectors.drift.streaming.streams``).
An alarm opens the monitor's Finding; it stays open while the stream says so (``hold``
rows without another alarm, or, for error streams, while errors stay worse than the
reference by ``max_drop``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from detectors.drift.monitors.context import MonitorContext
from detectors.drift.monitors.findings import distribution_finding
from detectors.drift.monitors.windowed import compare_options
from detectors.drift.profile import ReferenceProfile
from detectors.drift.streaming.streams import (
    Alarm,
    DistributionStream,
    ErrorStream,
    MonitorStream,
    error_stream,
)
from mlvigil.core.findings import Finding
from mlvigil.core.store import Store

#: Most rows one streaming evaluation reads (after a long pause, the older ones are skipped).
MAX_STREAM_BACKLOG = 200_000


class StreamingEvaluator(ABC):
    """The streaming state of one monitor: its stream, how far it was fed, the open alarm."""

    def __init__(self, ctx: MonitorContext) -> None:
        assert ctx.config.streaming is not None
        self.ctx = ctx
        self.streaming = ctx.config.streaming
        self._stream: MonitorStream | None = None
        self._built_for: float | None = None
        self._until: float | None = None
        self._rows = 0
        self._alarm_finding: Finding | None = None
        self._rows_since_alarm = 0
        self._episode = (0.0, 0)  # first alarm's time and alarms so far while the Finding is open

    @abstractmethod
    def make_stream(self) -> MonitorStream:
        """The stream on the current reference (ValueError when it cannot be calibrated)."""

    @abstractmethod
    def finding(self, alarm: Alarm, episode: tuple[float, int], subject: dict[str, str]) -> Finding:
        """The open Finding after ``alarm`` (the latest of its episode)."""

    def stream_evidence(self, alarm: Alarm, episode: tuple[float, int]) -> dict[str, object]:
        s = self.streaming
        assert self._stream is not None
        return {
            "detector": self._stream.detector_name,
            "statistic": alarm.statistic,
            "threshold": alarm.threshold,
            "first_alarm_ts": episode[0],
            "alarm_ts": alarm.ts,
            "alarms": episode[1],
            "ert_rows": s.ert,
            "window_size": s.window_size,
            "stride": s.stride,
            "feature_statistics": alarm.feature_statistics,
        }

    def evaluate(self, store: Store, now: float) -> list[Finding]:
        ctx, c, s = self.ctx, self.ctx.config, self.streaming
        if self._stream is None or self._built_for != ctx.reference.built_at:
            try:
                self._stream = self.make_stream()
            except ValueError as exc:
                self._stream = None
                ctx.error(f"streaming detector: {exc}", now)
                return []
            self._built_for = ctx.reference.built_at
        source = ctx.source
        until = now - s.lag - (c.label_delay if source.waits_for_labels else 0.0)
        if self._until is None:
            # First evaluation: start with the latest window of rows, then follow the stream.
            rows = source.rows(store, until=until, last=s.window_size)
        else:
            if until <= self._until:
                return [self._alarm_finding] if self._alarm_finding else []
            rows = source.rows(store, since=self._until, until=until, last=MAX_STREAM_BACKLOG)
        self._until = until
        cols = source.columns(rows, store)
        ts = source.timestamps(rows, cols)
        stream = self._stream
        alarms = stream.feed(cols, ts)
        self._rows += len(ts)
        was_reported = self._alarm_finding is not None
        if alarms:
            last = alarms[-1]
            if self._alarm_finding is None:
                self._episode = (alarms[0].ts, 0)
            first_ts, count = self._episode
            self._episode = (first_ts, count + len(alarms))
            self._rows_since_alarm = sum(1 for t in ts if t > last.ts)
            self._alarm_finding = self.finding(last, self._episode, ctx.subject(rows))
        else:
            self._rows_since_alarm += len(ts)
        # Event semantics: an episode that began in this batch is reported by this evaluation
        # even when it already ended inside the batch (hold rows passed, or the error stream
        # recovered), so a short episode is never lost between two evaluations; it resolves
        # at the next one. An episode reported before resolves as soon as it ends.
        reported = self._alarm_finding
        if self._alarm_finding is not None and not stream.still_open(
            self._rows_since_alarm, s.hold_rows, c.max_drop
        ):
            self._alarm_finding = None
            if was_reported or not alarms:
                reported = None
        active = reported is not None
        feature_stats = stream.feature_statistics()
        if ctx.metrics:
            ctx.metrics.publish(
                c.name,
                active,
                ctx.reference.rows,
                s.window_size,
                [
                    {"feature": f, "test": stream.detector_name, "distance": v, "drifted": False}
                    for f, v in feature_stats.items()
                ],
            )
        ctx.last = {
            "status": "drift" if active else "ok",
            "mode": "streaming",
            "detector": stream.detector_name,
            "at": now,
            "rows_streamed": self._rows,
            "streamed_until": until,
            "statistic": stream.statistic,
            "threshold": stream.threshold,
            "rows_since_alarm": self._rows_since_alarm if active else None,
            "feature_statistics": feature_stats,
            "finding": reported.evidence if reported else None,
        }
        return [reported] if reported else []


class DistributionStreaming(StreamingEvaluator):
    """Data, prediction and LLM rows through OnlineCVM / OnlineMMD (or alibi-detect's)."""

    _stream: DistributionStream | None

    def make_stream(self) -> DistributionStream:
        ref = self.ctx.reference
        assert ref.columns is not None and isinstance(ref.model, ReferenceProfile)
        return DistributionStream(self.streaming, ref.model, ref.columns, self.ctx.config.backend)

    def finding(self, alarm: Alarm, episode: tuple[float, int], subject: dict[str, str]) -> Finding:
        assert self._stream is not None
        name = self._stream.detector_name
        report = self._stream.explain(alarm, compare_options(self.ctx))
        # The statistic is the largest per-feature one, so the features that caused the alarm
        # are those above the threshold on their own; the others moved negligibly.
        stats = alarm.feature_statistics
        order = sorted(report.features, key=lambda f: -stats.get(f.feature, -1.0))
        causes = [f for f in order if stats.get(f.feature, -1.0) > alarm.threshold]
        detail = (
            f"the {self.ctx.source.moved} distribution moved away from the reference (streaming {name}"
            f" alarm: statistic {alarm.statistic:.3g}, alarm threshold {alarm.threshold:.3g})"
        )
        ts = alarm.window.get("ts") or [None]
        return distribution_finding(
            self.ctx,
            report,
            subject,
            ts[0],
            alarm.ts,
            detail=detail,
            top=(causes or order)[:5] if stats else report.top(5),
            extra={"streaming": self.stream_evidence(alarm, episode)},
        )


class ErrorStreaming(StreamingEvaluator):
    """A performance monitor's labelled rows through ADWIN or Page-Hinkley."""

    _stream: ErrorStream | None

    def make_stream(self) -> ErrorStream:
        return error_stream(self.streaming, self.ctx.reference.model, self.ctx.config.metrics)

    def finding(self, alarm: Alarm, episode: tuple[float, int], subject: dict[str, str]) -> Finding:
        c, stream = self.ctx.config, self._stream
        assert stream is not None
        detail = (
            f"streaming {stream.detector_name} alarm "
            f"(statistic {alarm.statistic:.3g} > threshold {alarm.threshold:.3g})"
        )
        level, ref = stream.level, stream.reference_error
        return Finding(
            kind=c.finding_kind,
            severity=self.ctx.severity,
            subject=subject,
            summary=(
                f"Performance drift on {self.ctx.source.target(subject)} (monitor {c.name}): "
                f"{stream.what} {ref:.3g} → {level:.3g}, {detail}"
            ),
            evidence={
                "monitor": c.name,
                "streaming": self.stream_evidence(alarm, episode),
                "reference_error": ref,
                "current_error": level,
                "drifted_features": [stream.what.replace(" ", "_")],
            },
            window_start=None,
            window_end=alarm.ts,
            key=c.name,
        )


__all__ = ["MAX_STREAM_BACKLOG", "DistributionStreaming", "ErrorStreaming", "StreamingEvaluator"]
