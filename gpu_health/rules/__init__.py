"""GPU health rules: one concept per module, each a ``Rule`` judged per GPU by ``GpuHealthDetector``."""

from __future__ import annotations

from gpu_health.config import GpuRules
from gpu_health.rules.base import Rule
from gpu_health.rules.clocks import ClocksHeldDown
from gpu_health.rules.ecc import UncorrectedEcc
from gpu_health.rules.lost import GpuLost
from gpu_health.rules.memory_repair import MemoryRepair
from gpu_health.rules.nvlink import NvlinkErrors
from gpu_health.rules.pcie_link import PcieLinkDowntrained
from gpu_health.rules.pcie_replay import PcieReplays
from gpu_health.rules.power import PowerOverLimit
from gpu_health.rules.slowdown import SustainedSlowdown
from gpu_health.rules.temperature import OverTemperature
from gpu_health.rules.xid import XidEvents


def build_rules(cfg: GpuRules) -> list[Rule]:
    """The enabled rules of ``cfg``."""
    candidates: list[tuple[bool, Rule]] = [
        (cfg.xid.enabled, XidEvents(cfg.xid)),
        (cfg.ecc.enabled, UncorrectedEcc(cfg.ecc)),
        (cfg.memory_repair.enabled, MemoryRepair(cfg.memory_repair)),
        (cfg.pcie_replay.enabled, PcieReplays(cfg.pcie_replay)),
        (cfg.nvlink.enabled, NvlinkErrors(cfg.nvlink)),
        (cfg.pcie_link.enabled, PcieLinkDowntrained(cfg.pcie_link)),
        (cfg.slowdown.enabled, SustainedSlowdown(cfg.slowdown)),
        (cfg.clocks.enabled, ClocksHeldDown(cfg.clocks)),
        (cfg.temperature.enabled, OverTemperature(cfg.temperature)),
        (cfg.power.enabled, PowerOverLimit(cfg.power)),
        (cfg.lost.enabled, GpuLost(cfg.lost)),
    ]
    return [rule for enabled, rule in candidates if enabled]


__all__ = ["Rule", "build_rules"]
