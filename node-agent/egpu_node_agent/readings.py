"""What the agent read from one GPU: plain, immutable data with no behaviour beyond arithmetic.

Fields NVML could not report (NOT_SUPPORTED on this GPU or in this VM) are None, never a
guess; consumers decide what a missing value means.
"""

from dataclasses import dataclass, field
from typing import Literal

from egpu_api.pcie import LinkSpeed, bottleneck

Health = Literal["ok", "degraded", "lost"]
VirtualizationMode = Literal["none", "passthrough", "vgpu-guest", "vgpu-host"]


#: NVML's clock-event (throttle) reason bits, named as nvidia-smi names them.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clocks_setting",
}


def clock_event_names(mask: int) -> list[str]:
    """The names of the reasons set in an NVML clock-event bitmask, sorted."""
    return sorted(name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit)


@dataclass(frozen=True)
class LinkReading:
    """One PCIe link on the way from the GPU to the root port: a pair of ports, as sysfs reports them.

    ``device`` is the link's downstream end (the GPU, or a switch's upstream port) and ``port``
    its upstream end (a root port or a switch's downstream port; None when the device hangs
    directly off a host bridge). The trained state is the downstream end's
    ``current_link_*``; both ends' ``max_link_*`` bound what it can train at.
    """

    device: str
    current: LinkSpeed
    device_max: LinkSpeed
    port_max: LinkSpeed | None
    port: str | None = None

    @property
    def capability(self) -> LinkSpeed:
        """The fastest this link can train at: the lesser of both ends, per dimension."""
        if self.port_max is None:
            return self.device_max
        return LinkSpeed(
            min(self.device_max.generation, self.port_max.generation), min(self.device_max.width, self.port_max.width)
        )

    @property
    def degraded(self) -> bool:
        return self.current.bandwidth_mbps < self.capability.bandwidth_mbps


@dataclass(frozen=True)
class PowerReading:
    """Power-limit state in watts (NVML reports milliwatts; rounded down here)."""

    limit_watts: int
    default_limit_watts: int
    min_limit_watts: int
    max_limit_watts: int
    enforced_limit_watts: int | None = None
    usage_watts: float | None = None


@dataclass(frozen=True)
class MigInstance:
    profile: str
    memory_mib: int


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one poll."""

    index: int
    uuid: str
    product: str
    pci_bus_id: str
    memory_mib: int
    health: Health = "ok"
    health_reasons: tuple[str, ...] = ()
    # The GPU's own link as NVML reports it: trained speed, the system-limited max and the GPU's max.
    link_current: LinkSpeed | None = None
    link_max: LinkSpeed | None = None
    gpu_max_generation: int | None = None
    # The path from the GPU up to the root port, from sysfs; empty when sysfs could not be read.
    path: tuple[LinkReading, ...] = ()
    power: PowerReading | None = None
    virtualization_mode: VirtualizationMode = "none"
    mig_enabled: bool = False
    mig_pending: bool | None = None
    mig_instances: tuple[MigInstance, ...] = ()
    # NVML performance state, 0 (P0, busy) .. 15 (idle); idle GPUs drop their link generation to save power.
    performance_state: int | None = None
    temperature_c: int | None = None
    clock_event_reasons: int | None = None
    pcie_replay_count: int | None = None
    pcie_tx_kbps: int | None = None
    pcie_rx_kbps: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def bottleneck(self) -> LinkSpeed | None:
        """Slowest trained hop between host memory and the GPU, or None if nothing was readable."""
        hops = [hop.current for hop in self.path]
        if self.link_current is not None:
            hops.append(self.link_current)
        return bottleneck(hops) if hops else None

    @property
    def degraded_hops(self) -> tuple[LinkReading, ...]:
        return tuple(hop for hop in self.path if hop.degraded)
