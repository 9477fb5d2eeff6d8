"""Configuration of the ``gpu`` section: the in-process agent and the GPU health rules.

Every default below is documented, with its reason, in docs/gpu_health.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mlvigil.core.config import Duration, Strict


class XidRule(Strict):
    enabled: bool = True
    # A finding stays firing this long after the last XID of its class.
    hold: Duration = 3600.0
    # Hardware or driver failures: the GPU needs a reset or service.
    fault: list[int] = Field(default_factory=lambda: [48, 61, 62, 64, 74, 79, 95, 109, 119, 120, 140])
    # The GPU still works but needs attention (reset to apply a retirement, rising SBE rate).
    degraded: list[int] = Field(default_factory=lambda: [63, 92, 94])
    # Raised by application bugs, not the GPU: no finding.
    ignore: list[int] = Field(default_factory=lambda: [13, 31, 43, 45, 68])
    # What an XID in none of the lists becomes.
    unknown: Literal["fault", "degraded", "ignore"] = "degraded"


class EccRule(Strict):
    enabled: bool = True
    # Increase of the aggregate uncorrected counter judged over this window (for GPUs
    # whose volatile counter is reset or unsupported).
    window: Duration = 3600.0


class MemoryRepairRule(Strict):
    enabled: bool = True
    # Retired pages (single + double bit) from which the GPU is due for replacement.
    retired_pages_limit: int = Field(default=60, ge=1)


class PcieReplayRule(Strict):
    enabled: bool = True
    window: Duration = 300.0
    # Replays per minute above which the link is degraded (DCGM's health-check limit).
    max_per_minute: float = Field(default=8.0, ge=0)


class NvlinkRule(Strict):
    enabled: bool = True
    window: Duration = 300.0
    # CRC (flit + data) and replay errors per link in the window above which it is degraded.
    max_errors: float = Field(default=100.0, ge=0)
    # Recovery errors per link in the window: a link retraining is never routine.
    max_recoveries: float = Field(default=0.0, ge=0)


class PcieLinkRule(Strict):
    enabled: bool = True
    window: Duration = 600.0
    # Only busy samples count: idle GPUs lower their PCIe generation to save power.
    busy_utilization: float = Field(default=0.5, ge=0, le=1)
    min_fraction: float = Field(default=0.9, gt=0, le=1)
    min_samples: int = Field(default=10, ge=1)


class SlowdownRule(Strict):
    enabled: bool = True
    window: Duration = 300.0
    # Reasons that mean the hardware protects itself; sw_power_cap is routine under load.
    reasons: list[str] = Field(
        default_factory=lambda: [
            "hw_slowdown",
            "hw_thermal_slowdown",
            "hw_power_brake_slowdown",
            "sw_thermal_slowdown",
        ]
    )
    min_fraction: float = Field(default=0.5, gt=0, le=1)
    min_samples: int = Field(default=10, ge=1)


class ClocksRule(Strict):
    enabled: bool = True
    window: Duration = 600.0
    busy_utilization: float = Field(default=0.8, ge=0, le=1)
    # SM clock under this fraction of its maximum while busy counts as held down.
    max_clock_ratio: float = Field(default=0.7, gt=0, le=1)
    min_fraction: float = Field(default=0.8, gt=0, le=1)
    min_samples: int = Field(default=10, ge=1)
    # Samples where one of these reasons is active are explained (power cap is routine;
    # the slowdown rule reports the others) and do not count.
    explained_by: list[str] = Field(
        default_factory=lambda: [
            "sw_power_cap",
            "hw_slowdown",
            "hw_thermal_slowdown",
            "hw_power_brake_slowdown",
            "sw_thermal_slowdown",
        ]
    )


class TemperatureRule(Strict):
    enabled: bool = True
    window: Duration = 300.0
    # GPU temperature limit = the GPU's own slowdown threshold minus this margin ...
    slowdown_margin: float = 5.0
    # ... or this absolute limit when the GPU does not report its threshold.
    gpu_limit: float = 85.0
    # HBM temperature limit (H100/A100 memory is specified to 95 C).
    memory_limit: float = 95.0
    min_fraction: float = Field(default=0.5, gt=0, le=1)
    min_samples: int = Field(default=5, ge=1)


class PowerRule(Strict):
    enabled: bool = True
    window: Duration = 300.0
    # Draw above the enforced limit by this factor means the limit is not being enforced.
    over_limit_ratio: float = Field(default=1.05, ge=1)
    min_fraction: float = Field(default=0.5, gt=0, le=1)
    min_samples: int = Field(default=5, ge=1)


class LostRule(Strict):
    enabled: bool = True
    # A GPU that stopped reporting for this long while its node still reports is lost.
    stale_after: Duration = 120.0
    # How far back a GPU is remembered.
    lookback: Duration = 3600.0


class GpuRules(Strict):
    xid: XidRule = Field(default_factory=XidRule)
    ecc: EccRule = Field(default_factory=EccRule)
    memory_repair: MemoryRepairRule = Field(default_factory=MemoryRepairRule)
    pcie_replay: PcieReplayRule = Field(default_factory=PcieReplayRule)
    nvlink: NvlinkRule = Field(default_factory=NvlinkRule)
    pcie_link: PcieLinkRule = Field(default_factory=PcieLinkRule)
    slowdown: SlowdownRule = Field(default_factory=SlowdownRule)
    clocks: ClocksRule = Field(default_factory=ClocksRule)
    temperature: TemperatureRule = Field(default_factory=TemperatureRule)
    power: PowerRule = Field(default_factory=PowerRule)
    lost: LostRule = Field(default_factory=LostRule)


class GpuConfig(Strict):
    # Run the sampling agent inside `mlvigil serve` (for a single GPU machine).
    enabled: bool = False
    backend: Literal["nvml", "fake"] = "nvml"
    # Scenario file for the fake backend (a path, or the name of a built-in scenario).
    scenario: str | None = None
    interval: Duration = 1.0
    # Serve the in-process agent's GPU metrics on the service's /metrics as well.
    prometheus: bool = True
    # The GPU health detector (reads any agent's points from the store).
    detector: bool = True
    # The detector runs as this many instances, gpu_health[i/N], each over the nodes (hosts)
    # that hash to it. On replicas sharing PostgreSQL each is a lease of its own, so the
    # nodes spread over the replicas (docs/scale-out.md); 1 on one node.
    shards: int = Field(default=1, ge=1, le=256)
    rules: GpuRules = Field(default_factory=GpuRules)

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value
