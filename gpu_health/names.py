"""The metric names the agent ships (OTLP) and serves (Prometheus), and their DCGM counterparts.

OTLP names follow OpenTelemetry's hardware conventions (``hw.gpu.*``, ``hw.power``,
``hw.energy``) where they exist and ``mlvigil.gpu.*`` elsewhere; they are a contract that
other detectors read (docs/gpu_health.md). Prometheus names use the ``mlvigil_`` prefix and
base units (Hz, bytes, seconds, joules); ``dcgm`` names the dcgm-exporter field a user may know.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    unit: str
    kind: str  # "gauge" | "sum" (cumulative, monotonic)
    prom: str  # Prometheus family name (counters without the _total suffix)
    help: str
    dcgm: str = ""  # nearest dcgm-exporter field(s)
    scale: float = 1.0  # OTLP value * scale = Prometheus value (MHz -> Hz)


INFO = "mlvigil.gpu.info"
UTILIZATION = "hw.gpu.utilization"
MEMORY_UTILIZATION = "mlvigil.gpu.memory.utilization"
MEMORY_USAGE = "hw.gpu.memory.usage"
MEMORY_LIMIT = "hw.gpu.memory.limit"
CLOCK_SM = "mlvigil.gpu.clock.sm"
CLOCK_SM_MAX = "mlvigil.gpu.clock.sm.max"
CLOCK_MEM = "mlvigil.gpu.clock.mem"
CLOCK_MEM_MAX = "mlvigil.gpu.clock.mem.max"
POWER = "hw.power"
POWER_LIMIT = "mlvigil.gpu.power.limit"
ENERGY = "hw.energy"
TEMPERATURE = "mlvigil.gpu.temperature"
TEMPERATURE_MEMORY = "mlvigil.gpu.temperature.memory"
TEMPERATURE_SLOWDOWN = "mlvigil.gpu.temperature.slowdown"
TEMPERATURE_SHUTDOWN = "mlvigil.gpu.temperature.shutdown"
CLOCK_EVENT = "mlvigil.gpu.clock_event.active"
VIOLATION_TIME = "mlvigil.gpu.clock_event.violation.time"
ECC_ERRORS = "mlvigil.gpu.ecc.errors"
RETIRED_PAGES = "mlvigil.gpu.retired_pages"
RETIRED_PAGES_PENDING = "mlvigil.gpu.retired_pages.pending"
REMAPPED_ROWS = "mlvigil.gpu.remapped_rows"
REMAPPED_ROWS_PENDING = "mlvigil.gpu.remapped_rows.pending"
REMAPPED_ROWS_FAILURE = "mlvigil.gpu.remapped_rows.failure"
PCIE_GEN = "mlvigil.gpu.pcie.link.generation"
PCIE_GEN_MAX = "mlvigil.gpu.pcie.link.generation.max"
PCIE_WIDTH = "mlvigil.gpu.pcie.link.width"
PCIE_WIDTH_MAX = "mlvigil.gpu.pcie.link.width.max"
PCIE_REPLAY = "mlvigil.gpu.pcie.replay"
NVLINK_STATE = "mlvigil.gpu.nvlink.state"
NVLINK_ERRORS = "mlvigil.gpu.nvlink.errors"
XID_EVENTS = "mlvigil.gpu.xid.events"
LOST = "mlvigil.gpu.lost"
PROCESS_MEMORY = "mlvigil.gpu.process.memory.usage"

METRICS: dict[str, MetricSpec] = {
    INFO: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_info",
        "GPU identity (value 1): index, name, PCI bus id, versions.",
        "labels gpu, UUID, modelName, pci_bus_id, DCGM_FI_DRIVER_VERSION",
    ),
    UTILIZATION: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_utilization_ratio",
        "Fraction of time one or more kernels ran.",
        "DCGM_FI_DEV_GPU_UTIL (percent)",
    ),
    MEMORY_UTILIZATION: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_memory_utilization_ratio",
        "Fraction of time device memory was read or written.",
        "DCGM_FI_DEV_MEM_COPY_UTIL (percent)",
    ),
    MEMORY_USAGE: MetricSpec(
        "By", "gauge", "mlvigil_gpu_memory_used_bytes", "Device memory in use.", "DCGM_FI_DEV_FB_USED (MiB)"
    ),
    MEMORY_LIMIT: MetricSpec(
        "By",
        "gauge",
        "mlvigil_gpu_memory_total_bytes",
        "Device memory in total.",
        "DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE (MiB)",
    ),
    CLOCK_SM: MetricSpec(
        "MHz", "gauge", "mlvigil_gpu_sm_clock_hertz", "SM clock.", "DCGM_FI_DEV_SM_CLOCK (MHz)", 1e6
    ),
    CLOCK_SM_MAX: MetricSpec(
        "MHz",
        "gauge",
        "mlvigil_gpu_sm_clock_max_hertz",
        "Maximum SM clock.",
        "DCGM_FI_DEV_MAX_SM_CLOCK (MHz)",
        1e6,
    ),
    CLOCK_MEM: MetricSpec(
        "MHz", "gauge", "mlvigil_gpu_memory_clock_hertz", "Memory clock.", "DCGM_FI_DEV_MEM_CLOCK (MHz)", 1e6
    ),
    CLOCK_MEM_MAX: MetricSpec(
        "MHz",
        "gauge",
        "mlvigil_gpu_memory_clock_max_hertz",
        "Maximum memory clock.",
        "DCGM_FI_DEV_MAX_MEM_CLOCK (MHz)",
        1e6,
    ),
    POWER: MetricSpec("W", "gauge", "mlvigil_gpu_power_watts", "Power draw.", "DCGM_FI_DEV_POWER_USAGE"),
    POWER_LIMIT: MetricSpec(
        "W",
        "gauge",
        "mlvigil_gpu_power_limit_watts",
        "Enforced power limit.",
        "DCGM_FI_DEV_ENFORCED_POWER_LIMIT",
    ),
    ENERGY: MetricSpec(
        "J",
        "sum",
        "mlvigil_gpu_energy_joules",
        "Energy used since the driver loaded.",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ)",
    ),
    TEMPERATURE: MetricSpec(
        "Cel", "gauge", "mlvigil_gpu_temperature_celsius", "GPU die temperature.", "DCGM_FI_DEV_GPU_TEMP"
    ),
    TEMPERATURE_MEMORY: MetricSpec(
        "Cel",
        "gauge",
        "mlvigil_gpu_memory_temperature_celsius",
        "Memory (HBM) temperature.",
        "DCGM_FI_DEV_MEMORY_TEMP",
    ),
    TEMPERATURE_SLOWDOWN: MetricSpec(
        "Cel",
        "gauge",
        "mlvigil_gpu_slowdown_temperature_celsius",
        "Temperature at which the GPU slows itself down.",
        "DCGM_FI_DEV_SLOWDOWN_TEMP",
    ),
    TEMPERATURE_SHUTDOWN: MetricSpec(
        "Cel",
        "gauge",
        "mlvigil_gpu_shutdown_temperature_celsius",
        "Temperature at which the GPU shuts down.",
        "DCGM_FI_DEV_SHUTDOWN_TEMP",
    ),
    CLOCK_EVENT: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_clock_event_active",
        "1 while a clock-event (throttle) reason holds clocks down.",
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS / DCGM_FI_DEV_CLOCK_THROTTLE_REASONS (bitmask)",
    ),
    VIOLATION_TIME: MetricSpec(
        "s",
        "sum",
        "mlvigil_gpu_clock_event_violation_seconds",
        "Time clocks were held under target, by policy.",
        "DCGM_FI_DEV_POWER_VIOLATION, _THERMAL_, _SYNC_BOOST_, _BOARD_LIMIT_, _LOW_UTIL_,"
        " _RELIABILITY_VIOLATION (us)",
    ),
    ECC_ERRORS: MetricSpec(
        "1",
        "sum",
        "mlvigil_gpu_ecc_errors",
        "ECC errors by type and counter.",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL, _DBE_VOL_TOTAL, _SBE_AGG_TOTAL, _DBE_AGG_TOTAL",
    ),
    RETIRED_PAGES: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_retired_pages",
        "Retired memory pages by cause.",
        "DCGM_FI_DEV_RETIRED_SBE, DCGM_FI_DEV_RETIRED_DBE",
    ),
    RETIRED_PAGES_PENDING: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_retired_pages_pending",
        "1 while a page retirement waits for a GPU reset.",
        "DCGM_FI_DEV_RETIRED_PENDING",
    ),
    REMAPPED_ROWS: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_remapped_rows",
        "Remapped memory rows by type.",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS, DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    ),
    REMAPPED_ROWS_PENDING: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_remapped_rows_pending",
        "1 while a row remap waits for a GPU reset.",
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
    ),
    REMAPPED_ROWS_FAILURE: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_remapped_rows_failure",
        "1 once a row remap failed.",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    ),
    PCIE_GEN: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_pcie_link_generation",
        "PCIe link generation now.",
        "DCGM_FI_DEV_PCIE_LINK_GEN",
    ),
    PCIE_GEN_MAX: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_pcie_link_generation_max",
        "Highest PCIe generation.",
        "DCGM_FI_DEV_PCIE_MAX_LINK_GEN",
    ),
    PCIE_WIDTH: MetricSpec(
        "1", "gauge", "mlvigil_gpu_pcie_link_width", "PCIe lanes now.", "DCGM_FI_DEV_PCIE_LINK_WIDTH"
    ),
    PCIE_WIDTH_MAX: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_pcie_link_width_max",
        "Widest PCIe link.",
        "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH",
    ),
    PCIE_REPLAY: MetricSpec(
        "1",
        "sum",
        "mlvigil_gpu_pcie_replays",
        "PCIe replays since the driver loaded.",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    ),
    NVLINK_STATE: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_nvlink_up",
        "1 while an NVLink link is active.",
        "DCGM_FI_DEV_NVLINK_LINK_STATUS",
    ),
    NVLINK_ERRORS: MetricSpec(
        "1",
        "sum",
        "mlvigil_gpu_nvlink_errors",
        "NVLink errors by link and type.",
        "DCGM_FI_DEV_NVLINK_{CRC_FLIT,CRC_DATA,REPLAY,RECOVERY}_ERROR_COUNT_L<n>",
    ),
    XID_EVENTS: MetricSpec(
        "1",
        "sum",
        "mlvigil_gpu_xid_events",
        "XID events seen by this agent, by XID.",
        "DCGM_FI_DEV_XID_ERRORS (last XID, a gauge)",
    ),
    LOST: MetricSpec(
        "1",
        "gauge",
        "mlvigil_gpu_lost",
        "1 while NVML reports the GPU lost (GpuIsLost).",
        "none: dcgm-exporter stops reporting the GPU",
    ),
    PROCESS_MEMORY: MetricSpec(
        "By",
        "gauge",
        "mlvigil_gpu_process_memory_used_bytes",
        "Device memory used by one process (pod/container from its cgroup).",
        "dcgm-exporter pod, namespace, container labels (Kubernetes mapping)",
    ),
}

# Point attributes that become Prometheus labels, renamed (the rest stay as they are).
PROM_LABELS = {
    "gpu.index": "gpu",
    "gpu.name": "model_name",
    "gpu.pci_bus_id": "pci_bus_id",
    "gpu.driver_version": "driver_version",
    "gpu.cuda_version": "cuda_version",
    "process.pid": "pid",
    "k8s.pod.name": "pod",
    "k8s.namespace.name": "namespace",
    "container.id": "container",
    "hw.type": "",  # dropped: every series here is a GPU
}
