"""Read a GPU's PCIe path from sysfs: every link from the GPU up to its root port.

``/sys/bus/pci/devices/<address>`` links to the device's folder, whose parents are the
bridges above it (``/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0``). A link is a pair
of ports, and Linux reports it at both ends: the downstream device (the GPU, or a switch's
upstream port) and the port above it (a root port, or a switch's downstream port) each show
the link's trained ``current_link_*`` and their own ``max_link_*``. So a switch's downstream
port describes the link *below* it, and the folders pair up: GPU and its port, switch
upstream port and the port above that, up to the root port, whose parent is the host bridge
(``pci0000:00``). The root is a parameter so the fake can build a tree in a temporary folder
and the same code reads it.
"""

import re
from pathlib import Path

from egpu_api.pcie import MAX_GENERATION, VALID_WIDTHS, LinkSpeed
from egpu_node_agent.readings import LinkReading

_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
# sysfs speeds ("8.0 GT/s PCIe"; older kernels "8 GT/s") by generation.
_GT_PER_S = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


class SysfsError(Exception):
    """The device is not in sysfs (e.g. sysfs is not mounted into the container)."""


def normalize_bus_id(bus_id: str) -> str:
    """NVML's ``00000000:01:00.0`` as sysfs spells it: ``0000:01:00.0``."""
    domain, rest = bus_id.lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def parse_speed(text: str) -> int | None:
    """Generation from a sysfs speed string, or None for 'Unknown' and other oddities."""
    match = re.match(r"^\s*([0-9.]+)\s*GT/s", text)
    if match is None:
        return None
    return _GT_PER_S.get(float(match.group(1)))


def read_path(bus_id: str, root: Path = Path("/sys")) -> tuple[LinkReading, ...]:
    """The links from the device at ``bus_id`` up to its root port, nearest first.

    Each link's state is its downstream end's ``current_link_*`` (the port's, where the device
    has none) and its capability the lesser of both ends' maxima. Links sysfs cannot describe
    (speed 'Unknown', width 0: common on emulated bridges in VMs) are left out, not guessed.
    """
    entry = root / "bus" / "pci" / "devices" / normalize_bus_id(bus_id)
    if not entry.exists():
        raise SysfsError(f"{entry} does not exist; mount the host's /sys into the agent")
    device = entry.resolve()
    links: list[LinkReading] = []
    while _ADDRESS.match(device.name):
        port = device.parent if _ADDRESS.match(device.parent.name) else None
        link = _pair(device, port)
        if link is not None:
            links.append(link)
        if port is None:
            break
        # The port's parent, if a PCI device, is a switch's upstream port: the next link's downstream end.
        device = port.parent
    return tuple(links)


def _pair(device: Path, port: Path | None) -> LinkReading | None:
    device_max = _link(device, "max")
    current = _link(device, "current") or (_link(port, "current") if port is not None else None)
    if current is None or device_max is None:
        return None
    port_max = _link(port, "max") if port is not None else None
    return LinkReading(device.name, current, device_max, port_max, port.name if port is not None else None)


def _link(device: Path, kind: str) -> LinkSpeed | None:
    try:
        generation = parse_speed((device / f"{kind}_link_speed").read_text())
        width = int((device / f"{kind}_link_width").read_text().strip())
    except (OSError, ValueError):
        return None
    if generation is None or not 1 <= generation <= MAX_GENERATION or width not in VALID_WIDTHS:
        return None
    return LinkSpeed(generation, width)
