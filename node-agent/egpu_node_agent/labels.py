"""Readings in, node labels and per-GPU status out. Pure: no I/O, no clock, no Kubernetes.

Node labels describe the node's worst schedulable unit (a GPU, or a MIG slice): the device
plugin hands a pod any free unit, so a label may not promise more than the weakest one
delivers. Each feature is one small labeler; ``node_labels`` merges them.

Idle GPUs drop their link generation to save power, so a reading of "Gen1" from an idle GPU
says nothing about the link. A hop counts at its capable generation while the GPU idles,
and at its current one while the GPU is busy (performance state P0-P2), when a low
generation is real downtraining. Width never drops at idle: a narrower link is always real.
"""

from collections.abc import Callable, Mapping, Sequence

from egpu_api import keys
from egpu_api.gpus import GpuMode, GpuStatus, Health, HopStatus, LinkStatus, MigSlice, PowerStatus
from egpu_api.pcie import LinkSpeed, bottleneck, effective_bandwidth_mbps
from egpu_node_agent.readings import GpuReading, LinkReading

Labels = dict[str, str]
Measured = tuple[int, int]  # (pinned, pageable) MB/s from the probe
_BUSY_PERFORMANCE_STATE = 2  # P0..P2: clocks up, a trained link runs at full generation
_HEALTH_ORDER: dict[Health, int] = {"ok": 0, "degraded": 1, "lost": 2}


# -- per GPU -----------------------------------------------------------------------------------


_MODES: dict[str, GpuMode] = {
    "none": GpuMode.BARE_METAL,
    "passthrough": GpuMode.PASSTHROUGH,
    "vgpu-guest": GpuMode.VGPU,
    "vgpu-host": GpuMode.VGPU_HOST,
}


def gpu_mode(reading: GpuReading) -> GpuMode:
    return GpuMode.MIG if reading.mig_enabled else _MODES[reading.virtualization_mode]


def hops(reading: GpuReading) -> list[tuple[str, LinkSpeed, LinkSpeed]]:
    """(device, current, capable) for the GPU's own link (NVML) and every sysfs hop."""
    result = []
    if reading.link_current is not None:
        capable = reading.link_max or reading.link_current
        result.append((reading.pci_bus_id, reading.link_current, capable))
    for hop in reading.path:
        result.append((hop.device, hop.current, hop.capability))
    return result


def counted_speed(current: LinkSpeed, capable: LinkSpeed, busy: bool) -> LinkSpeed:
    """The speed a hop is credited with (see the module docstring on idle downclocking)."""
    return LinkSpeed(current.generation if busy else capable.generation, current.width)


def is_busy(reading: GpuReading) -> bool:
    return reading.performance_state is not None and reading.performance_state <= _BUSY_PERFORMANCE_STATE


def link_status(reading: GpuReading, measured: "Measured | None" = None) -> LinkStatus | None:
    busy = is_busy(reading)
    speeds = [counted_speed(current, capable, busy) for _, current, capable in hops(reading)]
    if not speeds:
        return None
    slowest = bottleneck(speeds)
    return LinkStatus(
        generation=slowest.generation,
        width=slowest.width,
        theoretical_mbps=slowest.bandwidth_mbps,
        effective_mbps=effective_bandwidth_mbps(slowest),
        measured_pinned_mbps=measured[0] if measured else None,
        measured_pageable_mbps=measured[1] if measured else None,
    )


def degradation(reading: GpuReading) -> list[str]:
    """A sentence per hop that trained below what both its ends support."""
    busy = is_busy(reading)
    reasons = []
    for device, current, capable in hops(reading):
        counted = counted_speed(current, capable, busy)
        if counted.bandwidth_mbps < capable.bandwidth_mbps:
            reasons.append(f"PCIe link at {device} trained {counted}, capable of {capable}")
    return sorted(set(reasons))


def link_sharing(readings: Sequence[GpuReading]) -> dict[str, int]:
    """How many of the node's GPUs sit below each link, keyed by the link's downstream device.

    A PCIe switch's uplink appears in the path of every GPU behind the switch; loads onto
    those GPUs divide its bandwidth."""
    counts: dict[str, int] = {}
    for reading in readings:
        for device in {hop.device for hop in reading.path}:
            counts[device] = counts.get(device, 0) + 1
    return counts


def gpu_statuses(readings: Sequence[GpuReading], measured: "Mapping[str, Measured] | None" = None) -> list[GpuStatus]:
    """Every GPU of the node, with the links they share counted; ``measured`` by PCI bus id."""
    sharing = link_sharing(readings)
    return [gpu_status(reading, (measured or {}).get(reading.pci_bus_id), sharing) for reading in readings]


def gpu_status(reading: GpuReading, measured: "Measured | None" = None, sharing: "Mapping[str, int] | None" = None) -> GpuStatus:
    """The published view of one GPU; ``measured`` is the probe's (pinned, pageable) MB/s, if it ran,
    and ``sharing`` how many GPUs sit below each link (``link_sharing``; one each when left out)."""
    power = reading.power
    if reading.health == "lost":
        health: Health = "lost"
        reasons = list(reading.health_reasons)
    else:
        reasons = degradation(reading)
        health = "degraded" if reasons else reading.health
    return GpuStatus(
        index=reading.index,
        uuid=reading.uuid,
        product=reading.product,
        pci_bus_id=reading.pci_bus_id,
        vram_mib=reading.memory_mib,
        mode=gpu_mode(reading),
        mig=[MigSlice(profile=m.profile, vram_mib=m.memory_mib) for m in reading.mig_instances],
        link=link_status(reading, measured),
        path=[_hop_status(hop, is_busy(reading), (sharing or {}).get(hop.device, 1)) for hop in reading.path],
        power=None
        if power is None
        else PowerStatus(
            limit_watts=power.limit_watts,
            default_watts=power.default_limit_watts,
            min_watts=power.min_limit_watts,
            max_watts=power.max_limit_watts,
        ),
        health=health,
        reasons=reasons,
    )


def _hop_status(hop: LinkReading, busy: bool, shared_by: int) -> HopStatus:
    counted = counted_speed(hop.current, hop.capability, busy)
    return HopStatus(
        device=hop.device,
        port=hop.port,
        current=str(hop.current),
        capable=str(hop.capability),
        degraded=counted.bandwidth_mbps < hop.capability.bandwidth_mbps,
        effective_mbps=effective_bandwidth_mbps(counted),
        shared_by=shared_by,
    )


# -- node labels, one feature each --------------------------------------------------------------


def _units_vram(gpu: GpuStatus) -> list[int]:
    return [mig.vram_mib for mig in gpu.mig] if gpu.mode is GpuMode.MIG and gpu.mig else [gpu.vram_mib]


def count_labels(gpus: Sequence[GpuStatus]) -> Labels:
    units = sum(len(_units_vram(gpu)) for gpu in gpus)
    return {keys.GPU_COUNT_LABEL: str(units)}


def product_labels(gpus: Sequence[GpuStatus]) -> Labels:
    products = {gpu.product for gpu in gpus if gpu.health != "lost" or len(gpus) == 1}
    value = label_value(products.pop()) if len(products) == 1 else "mixed"
    return {keys.GPU_PRODUCT_LABEL: value}


def memory_labels(gpus: Sequence[GpuStatus]) -> Labels:
    return {keys.GPU_VRAM_MIB_LABEL: str(min(vram for gpu in gpus for vram in _units_vram(gpu)))}


def mode_labels(gpus: Sequence[GpuStatus]) -> Labels:
    modes = {gpu.mode for gpu in gpus}
    labels: Labels = {keys.GPU_MODE_LABEL: str(modes.pop() if len(modes) == 1 else GpuMode.MIXED)}
    profiles = sorted({mig.profile for gpu in gpus for mig in gpu.mig})
    if profiles:
        # '+' (as in 1g.10gb+me) is not allowed in a label value.
        labels[keys.MIG_PROFILES_LABEL] = label_value("_".join(profiles).replace("+", "-"))
    return labels


def link_labels(gpus: Sequence[GpuStatus]) -> Labels:
    links = [gpu.link for gpu in gpus if gpu.link is not None and gpu.health != "lost"]
    if not links:
        return {}
    worst = min(links, key=lambda link: link.effective_mbps)
    labels = {
        keys.PCIE_GENERATION_LABEL: str(worst.generation),
        keys.PCIE_WIDTH_LABEL: str(worst.width),
        keys.PCIE_BANDWIDTH_MBPS_LABEL: str(worst.effective_mbps),
    }
    # Measured figures only when every GPU was measured: a partial minimum would overstate the node.
    pinned = [link.measured_pinned_mbps for link in links]
    pageable = [link.measured_pageable_mbps for link in links]
    if all(value is not None for value in pinned):
        labels[keys.PCIE_MEASURED_PINNED_MBPS_LABEL] = str(min(v for v in pinned if v is not None))
    if all(value is not None for value in pageable):
        labels[keys.PCIE_MEASURED_PAGEABLE_MBPS_LABEL] = str(min(v for v in pageable if v is not None))
    return labels


def shared_link_labels(gpus: Sequence[GpuStatus]) -> Labels:
    """The slowest link several GPUs sit below (a switch uplink) and how many share it."""
    shared = [hop for gpu in gpus if gpu.health != "lost" for hop in gpu.path if hop.shared_by > 1 and hop.effective_mbps]
    if not shared:
        return {}
    slowest = min(shared, key=lambda hop: (hop.effective_mbps or 0, -hop.shared_by))
    return {
        keys.PCIE_SHARED_LINK_MBPS_LABEL: str(slowest.effective_mbps),
        keys.PCIE_SHARED_LINK_GPUS_LABEL: str(slowest.shared_by),
    }


def power_labels(gpus: Sequence[GpuStatus]) -> Labels:
    # A lost GPU's last known limits are stale: NVML no longer answers for it.
    powers = [gpu.power for gpu in gpus if gpu.power is not None and gpu.health != "lost"]
    if not powers:
        return {}
    return {
        keys.POWER_LIMIT_WATTS_LABEL: str(min(p.limit_watts for p in powers)),
        keys.POWER_DEFAULT_WATTS_LABEL: str(min(p.default_watts for p in powers)),
        keys.POWER_MIN_WATTS_LABEL: str(min(p.min_watts for p in powers)),
        keys.POWER_MAX_WATTS_LABEL: str(min(p.max_watts for p in powers)),
    }


def health_labels(gpus: Sequence[GpuStatus]) -> Labels:
    return {keys.HEALTH_LABEL: max((gpu.health for gpu in gpus), key=_HEALTH_ORDER.__getitem__)}


LABELERS: tuple[Callable[[Sequence[GpuStatus]], Labels], ...] = (
    count_labels,
    product_labels,
    memory_labels,
    mode_labels,
    link_labels,
    shared_link_labels,
    power_labels,
    health_labels,
)


def node_labels(gpus: Sequence[GpuStatus], storage_mbps: int | None = None) -> Labels:
    """Every node label the agent owns, for these GPUs and the model cache's read rate (measured or
    declared, if known); no GPU at all gives just the schema and a zero count."""
    labels: Labels = {keys.LABEL_SCHEMA_LABEL: keys.LABEL_SCHEMA}
    if not gpus:
        labels[keys.GPU_COUNT_LABEL] = "0"
        return labels
    for labeler in LABELERS:
        labels.update(labeler(gpus))
    if storage_mbps is not None:
        labels[keys.STORAGE_READ_MBPS_LABEL] = str(storage_mbps)
    return labels


def label_value(text: str) -> str:
    """``text`` as a valid label value: [A-Za-z0-9._-], at most 63 characters, alphanumeric at both ends."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text.strip())
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned[:63].strip("._-")
