"""XID events: the driver's own report of a GPU error, classified by what it means.

New XIDs (an increase of ``mlvigil.gpu.xid.events{xid}``) fire a finding that stays
firing for ``hold`` after the last one, then resolves. Fault XIDs (double-bit ECC 48,
row-remap failure 64, NVLink 74, fallen off the bus 79, uncontained ECC 95, GSP
119/120, ...) become critical ``gpu_fault``; XIDs that ask for attention (63 retirement
recorded, 92 high single-bit rate, 94 contained ECC) become warning ``gpu_degraded``;
XIDs caused by application code (13, 31, 43, 45, 68) are ignored.

Parameters: ``XidRule`` (hold, fault, degraded, ignore, unknown).

Reference: NVIDIA, "XID Errors" (docs.nvidia.com/deploy/xid-errors), and the GPU
debug guidelines' table of XIDs that need a reset or RMA.

>>> from gpu_health.config import XidRule
>>> from gpu_health.rules.base import Gpu, Series
>>> series = {"mlvigil.gpu.xid.events": {'{"xid":"79"}': Series([100.0], [1.0])}}
>>> gpu = Gpu("GPU-1", "node-a", "0", series=series)
>>> [(f.kind, str(f.severity)) for f in XidEvents(XidRule()).check(gpu, now=130.0)]
[('gpu_fault', 'critical')]
>>> list(XidEvents(XidRule(hold=10)).check(gpu, now=130.0))
[]
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import XidRule
from gpu_health.rules.base import DEGRADED, FAULT, Gpu, Rule, increase, label
from mlvigil.core.findings import Finding, Severity

XID_MEANING = {
    13: "graphics engine exception (application)",
    31: "GPU memory page fault (application)",
    43: "GPU stopped processing (application)",
    45: "preemptive cleanup (application killed)",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failed",
    68: "video decoder exception",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    109: "context switch timeout",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}


class XidEvents(Rule):
    name = "xid"

    def __init__(self, cfg: XidRule) -> None:
        self.cfg = cfg
        self._fault, self._degraded, self._ignore = set(cfg.fault), set(cfg.degraded), set(cfg.ignore)

    def classify(self, xid: int) -> str:
        if xid in self._fault:
            return "fault"
        if xid in self._degraded:
            return "degraded"
        if xid in self._ignore:
            return "ignore"
        return self.cfg.unknown

    def windows(self) -> dict[str, float]:
        # Read past the hold so the counter's value before it is known: an XID older than
        # the hold is then seen as old, not as new in the window.
        lookback = 2 * self.cfg.hold + 60.0
        return {n.XID_EVENTS: lookback, n.INFO: self.cfg.hold}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.hold
        seen: dict[str, list[tuple[int, float, float]]] = {"fault": [], "degraded": []}
        for xid_text, series in gpu.by_attr(n.XID_EVENTS, "xid").items():
            try:
                xid = int(xid_text)
            except ValueError:
                continue
            cls = self.classify(xid)
            if cls == "ignore":
                continue
            # The agent's counter starts at zero when it starts, so the first point counts.
            count = increase(series, since, from_zero=True)
            if count > 0:
                seen_at, prev = series.ts[0], 0.0
                for t, v in zip(series.ts, series.values, strict=True):
                    if v > prev or v < prev:  # a rise, or a restarted agent's first count
                        seen_at = t
                    prev = v
                seen[cls].append((xid, count, seen_at))
        for cls, items in seen.items():
            if not items:
                continue
            items.sort()
            xids = [x for x, _, _ in items]
            what = "; ".join(f"XID {x} {XID_MEANING.get(x, '(unlisted)')} x{int(c)}" for x, c, _ in items)
            if cls == "fault":
                summary = f"{label(gpu)} reported {what}: drain the node and reset or replace the GPU."
                kind, severity = FAULT, Severity.CRITICAL
            else:
                summary = f"{label(gpu)} reported {what}: schedule a GPU reset and watch for repeats."
                kind, severity = DEGRADED, Severity.WARNING
            yield self.finding(
                gpu,
                kind,
                severity,
                summary,
                {
                    "xids": xids,
                    "counts": {str(x): c for x, c, _ in items},
                    "meanings": {str(x): XID_MEANING.get(x, "unlisted") for x in xids},
                    "last_seen": max(t for _, _, t in items),
                    "hold_s": self.cfg.hold,
                },
                detail=cls,
                window=(since, now),
            )
