"""``egpu-node-agent check``: what the agent reads, side by side with ``nvidia-smi -q``. Read-only.

For each GPU, every field the agent reads through NVML is compared with nvidia-smi's XML
report; the sysfs path, the labels the node would get, and (with ``--probe``) measured
copy bandwidth are printed too. Power limits are exercised as a dry run only: the planned
action is printed, never applied. Exit status 1 if any compared field differs.
"""

import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

from egpu_api.pcie import effective_bandwidth_mbps
from egpu_node_agent.labels import gpu_status, gpu_statuses, node_labels
from egpu_node_agent.power import plan_power
from egpu_node_agent.readings import GpuReading, clock_event_names
from egpu_node_agent.sysfs import normalize_bus_id

_VIRTUALIZATION = {"none": "None", "passthrough": "Pass-Through", "vgpu-guest": "VGPU", "vgpu-host": "Host VGPU"}


@dataclass(frozen=True)
class Row:
    field: str
    agent: str
    nvidia_smi: str
    compared: bool = True

    @property
    def matches(self) -> bool:
        return not self.compared or self.agent == self.nvidia_smi


def nvidia_smi_xml() -> ElementTree.Element | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    result = subprocess.run([binary, "-q", "-x"], capture_output=True, text=True, check=False)
    return ElementTree.fromstring(result.stdout) if result.returncode == 0 else None


def compare(reading: GpuReading, smi: ElementTree.Element) -> list[Row]:
    """Rows for one GPU; ``smi`` is nvidia-smi's ``<gpu>`` element."""

    def text(*paths: str) -> str:
        for path in paths:
            value = smi.findtext(path)
            if value is not None:
                return value.strip()
        return "(absent)"

    def number(*paths: str) -> str:
        value = text(*paths)
        try:
            return str(int(float(value.split()[0].rstrip("x"))))
        except (ValueError, IndexError):
            return value

    power = reading.power
    rows = [
        Row("product", reading.product, text("product_name")),
        Row("uuid", reading.uuid, text("uuid")),
        Row("pci bus id", reading.pci_bus_id, _bus_id(text("pci/pci_bus_id"))),
        Row("memory MiB", str(reading.memory_mib), number("fb_memory_usage/total")),
        Row("link gen (current)", _gen(reading.link_current), number("pci/pci_gpu_link_info/pcie_gen/current_link_gen")),
        Row("link width (current)", _width(reading.link_current), number("pci/pci_gpu_link_info/link_widths/current_link_width")),
        Row("link gen (max, system)", _gen(reading.link_max), number("pci/pci_gpu_link_info/pcie_gen/max_link_gen")),
        Row("link width (max)", _width(reading.link_max), number("pci/pci_gpu_link_info/link_widths/max_link_width")),
        Row(
            "link gen (max, GPU)",
            str(reading.gpu_max_generation),
            number("pci/pci_gpu_link_info/pcie_gen/max_device_link_gen"),
        ),
        Row(
            "power limit W",
            str(power.limit_watts) if power else "n/a",
            number("gpu_power_readings/current_power_limit", "power_readings/power_limit"),
        ),
        Row(
            "power default W",
            str(power.default_limit_watts) if power else "n/a",
            number("gpu_power_readings/default_power_limit", "power_readings/default_power_limit"),
        ),
        Row(
            "power min W",
            str(power.min_limit_watts) if power else "n/a",
            number("gpu_power_readings/min_power_limit", "power_readings/min_power_limit"),
        ),
        Row(
            "power max W",
            str(power.max_limit_watts) if power else "n/a",
            number("gpu_power_readings/max_power_limit", "power_readings/max_power_limit"),
        ),
        Row("MIG current", "Enabled" if reading.mig_enabled else "Disabled", _mig(text("mig_mode/current_mig"))),
        Row("MIG pending", "Enabled" if reading.mig_pending else "Disabled", _mig(text("mig_mode/pending_mig"))),
        Row(
            "virtualization",
            _VIRTUALIZATION[reading.virtualization_mode],
            text("gpu_virtualization_mode/virtualization_mode"),
        ),
        Row("PCIe replays", str(reading.pcie_replay_count), number("pci/replay_counter", "pci/replays_since_reset")),
        # Volatile readings: shown, not compared (they move between the two reads: a GPU idles,
        # clocks down and parks its link between the agent's read and nvidia-smi's).
        Row("performance state", f"P{reading.performance_state}", text("performance_state"), compared=False),
        Row(
            "clock event reasons",
            ",".join(clock_event_names(reading.clock_event_reasons or 0)) or "none",
            ",".join(_active_reasons(smi)) or "none",
            compared=False,
        ),
        Row("temperature C", str(reading.temperature_c), number("temperature/gpu_temp"), compared=False),
        Row(
            "power draw W",
            f"{power.usage_watts:.1f}" if power and power.usage_watts else "n/a",
            text("gpu_power_readings/instant_power_draw", "gpu_power_readings/power_draw"),
            compared=False,
        ),
        Row("PCIe TX KB/s", str(reading.pcie_tx_kbps), text("pci/tx_util"), compared=False),
        Row("PCIe RX KB/s", str(reading.pcie_rx_kbps), text("pci/rx_util"), compared=False),
    ]
    return rows


def _bus_id(text: str) -> str:
    return normalize_bus_id(text) if ":" in text else text


def report(readings: list[GpuReading], smi: ElementTree.Element | None, probes: dict[str, Any]) -> tuple[str, bool]:
    """The printed report and whether every compared field matched."""
    lines: list[str] = []
    ok = True
    by_bus = {normalize_bus_id(gpu.get("id", "0:0")): gpu for gpu in (smi.findall("gpu") if smi is not None else [])}
    for reading in readings:
        lines.append(f"== GPU {reading.index}: {reading.product} ({reading.pci_bus_id}) health={reading.health}")
        element = by_bus.get(reading.pci_bus_id)
        if element is None:
            lines.append("   nvidia-smi: not available for this GPU; nothing compared")
        else:
            rows = compare(reading, element)
            width = max(len(row.field) for row in rows)
            for row in rows:
                mark = "ok" if row.agent == row.nvidia_smi else ("DIFFERS" if row.compared else "(volatile, not compared)")
                lines.append(f"   {row.field:<{width}}  agent={row.agent:<28} nvidia-smi={row.nvidia_smi:<28} {mark}")
                ok &= row.matches
        lines.append("   sysfs path, link by link from the GPU (downstream device <- port above it):")
        for hop in reading.path or ():
            lines.append(
                f"     {hop.device} <- {hop.port or '(host bridge)'}: trained {hop.current}, capable {hop.capability} "
                f"(device max {hop.device_max}, port max {hop.port_max or 'n/a'}){'  BELOW CAPABILITY' if hop.degraded else ''}"
            )
        if not reading.path:
            lines.append(f"     (none: {reading.extra.get('sysfs', 'no readable hop')})")
        status = gpu_status(reading)
        if status.link is not None:
            lines.append(
                f"   bottleneck: Gen{status.link.generation} x{status.link.width}, "
                f"{status.link.theoretical_mbps} MB/s theoretical, {status.link.effective_mbps} MB/s expected"
            )
        probe = probes.get(reading.pci_bus_id)
        if isinstance(probe, str):
            lines.append(f"   probe: {probe}")
        elif probe is not None:
            expected = effective_bandwidth_mbps(reading.bottleneck) if reading.bottleneck else 0
            lines.append(
                f"   probe: pinned {probe.pinned_mbps} MB/s, pageable {probe.pageable_mbps} MB/s "
                f"({probe.repeats} x {probe.size_mib} MiB); label promises {expected} MB/s"
            )
        if reading.power is not None:
            request = {reading.uuid: max(reading.power.min_limit_watts, reading.power.limit_watts - 50)}
            actions = plan_power(request, {}, [reading], read_only=True).actions
            planned = ", ".join(f"set {a.watts} W ({a.why})" for a in actions) or "nothing"
            lines.append(f"   power dry run: request {request[reading.uuid]} W -> would {planned}; NVML not called")
    labels = node_labels(gpu_statuses(readings))
    lines.append("== node labels")
    lines.extend(f"   {key}={value}" for key, value in labels.items())
    return "\n".join(lines), ok


def _active_reasons(smi: ElementTree.Element) -> list[str]:
    reasons = smi.find("clocks_event_reasons")
    if reasons is None:
        reasons = smi.find("clocks_throttle_reasons")  # drivers before 535
    if reasons is None:
        return []
    prefix = ("clocks_event_reason_", "clocks_throttle_reason_")
    names = []
    for child in reasons:
        if (child.text or "").strip() == "Active":
            name = child.tag
            for p in prefix:
                name = name.removeprefix(p)
            names.append(name)
    return sorted(names)


def _gen(speed: Any) -> str:
    return str(speed.generation) if speed is not None else "n/a"


def _width(speed: Any) -> str:
    return str(speed.width) if speed is not None else "n/a"


def _mig(value: str) -> str:
    return "Disabled" if value in ("N/A", "(absent)") else value
