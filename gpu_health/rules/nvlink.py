"""NVLink errors and link state.

- per link, CRC (flit + data) and replay errors rising above ``max_errors`` within
  ``window`` -> warning ``gpu_degraded``;
- per link, recovery errors above ``max_recoveries`` within ``window`` (the link had to
  retrain) -> warning ``gpu_degraded``;
- a link inactive while other links of the same GPU are active -> warning ``gpu_degraded``
  (NVLink boards train all their links; a partial set means a lane or switch fault).

Parameters: ``NvlinkRule`` (window, max_errors, max_recoveries).

Reference: DCGM health watches (``DCGM_HEALTH_WATCH_NVLINK``): CRC and replay rates and
any recovery error; NVIDIA XID 74 for fatal NVLink errors.

>>> from gpu_health.config import NvlinkRule
>>> from gpu_health.rules.base import Gpu, Series
>>> s = {"mlvigil.gpu.nvlink.errors": {'{"link":"3","type":"recovery"}': Series([0.0, 60.0], [0.0, 1.0])}}
>>> found = NvlinkErrors(NvlinkRule()).check(Gpu("GPU-1", "n", "0", series=s), now=60.0)
>>> [f.summary.split(":")[0] for f in found]
['GPU 0 (GPU-1) on n NVLink 3 recovered 1 time(s) in 300s']
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import NvlinkRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, increase, label
from mlvigil.core.findings import Finding, Severity


class NvlinkErrors(Rule):
    name = "nvlink"

    def __init__(self, cfg: NvlinkRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        return {n.NVLINK_ERRORS: self.cfg.window, n.NVLINK_STATE: 120.0}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.window
        errors: dict[str, dict[str, float]] = {}
        for attrs_json, series in gpu.series.get(n.NVLINK_ERRORS, {}).items():
            attrs = json.loads(attrs_json) if attrs_json else {}
            link, kind = str(attrs.get("link", "?")), str(attrs.get("type", "?"))
            errors.setdefault(link, {})[kind] = increase(series, since) if len(series.ts) > 1 else 0.0
        for link in sorted(errors, key=lambda x: (len(x), x)):
            counts = errors[link]
            crc = counts.get("crc_flit", 0.0) + counts.get("crc_data", 0.0) + counts.get("replay", 0.0)
            recoveries = counts.get("recovery", 0.0)
            if recoveries > self.cfg.max_recoveries:
                yield self.finding(
                    gpu,
                    DEGRADED,
                    Severity.WARNING,
                    f"{label(gpu)} NVLink {link} recovered {int(recoveries)} time(s) in {self.cfg.window:g}s:"
                    " the link is retraining; check the NVLink bridge or NVSwitch.",
                    {
                        "link": link,
                        "recoveries": recoveries,
                        "limit": self.cfg.max_recoveries,
                        "counts": counts,
                    },
                    detail=f"recovery:{link}",
                    window=(since, now),
                )
            if crc > self.cfg.max_errors:
                yield self.finding(
                    gpu,
                    DEGRADED,
                    Severity.WARNING,
                    f"{label(gpu)} NVLink {link} logged {int(crc)} CRC/replay errors in {self.cfg.window:g}s"
                    f" (limit {self.cfg.max_errors:g}): the link is marginal.",
                    {"link": link, "errors": crc, "limit": self.cfg.max_errors, "counts": counts},
                    detail=f"errors:{link}",
                    window=(since, now),
                )
        states = {link: s.last for link, s in gpu.by_attr(n.NVLINK_STATE, "link").items()}
        up = [k for k, v in states.items() if v]
        down = sorted((k for k, v in states.items() if not v), key=lambda x: (len(x), x))
        if up and down:
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} has NVLink link(s) {', '.join(down)} down while {len(up)} are up.",
                {"links_down": down, "links_up": len(up)},
                detail="links_down",
            )
