"""Build a sysfs tree for a fleet-profile node, so ``sysfs.read_path`` reads it like the real one.

Each GPU gets a chain of bridge folders under ``devices/pci0000:XX``: for every link of the
profile (GPU first), the device below the link carries the link's ``current`` speed and the
``device`` maximum, and its parent port the ``port`` maximum, as Linux lays it out.
"""

from pathlib import Path

from egpu_api.fleet import FleetNode, LinkCapability
from egpu_api.pcie import LinkSpeed

_SPEED_TEXT = {1: "2.5 GT/s PCIe", 2: "5.0 GT/s PCIe", 3: "8.0 GT/s PCIe", 4: "16.0 GT/s PCIe", 5: "32.0 GT/s PCIe"}
_SPEED_TEXT[6] = "64.0 GT/s PCIe"


def build_tree(node: FleetNode, root: Path) -> None:
    """Write ``root/bus/pci/devices/<address>`` links and ``root/devices/...`` folders for every GPU."""
    (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
    for index, gpu in enumerate(node.gpus):
        address = node.gpu_pci_bus_id(index)
        domain = address.split(":")[0]
        hops = len(gpu.links)
        # Ports from the top: a root port per GPU, then an upstream+downstream port pair per extra
        # hop, on bus numbers of their own (0x80 + 0x10 per GPU) so chains never collide.
        folder = root / "devices" / f"pci{domain}:00" / f"{domain}:00:{index + 1:02x}.0"
        _write_max(folder, gpu.links[-1].port)
        for depth, link in enumerate(reversed(gpu.links[1:]), start=1):
            upstream = folder / f"{domain}:{0x80 + 0x10 * index + 2 * depth - 1:02x}:00.0"
            _write_link(upstream, link.current.speed, link.device)
            downstream = upstream / f"{domain}:{0x80 + 0x10 * index + 2 * depth:02x}:00.0"
            _write_link(downstream, gpu.links[hops - 1 - depth].current.speed, gpu.links[hops - 1 - depth].port)
            folder = downstream
        device = folder / address
        _write_link(device, gpu.links[0].current.speed, gpu.links[0].device)
        entry = root / "bus" / "pci" / "devices" / address
        entry.unlink(missing_ok=True)
        entry.symlink_to(device)


def set_current(root: Path, address: str, hop: int, speed: LinkSpeed) -> None:
    """Change the trained speed of hop ``hop`` (0 = the GPU's own link) above device ``address``."""
    device = (root / "bus" / "pci" / "devices" / address).resolve()
    # Hop n is reported by the device 2n folders up the chain, and again by the downstream port
    # just above it (a downstream port reports the link below it), unless that is the root port.
    for _ in range(2 * hop):
        device = device.parent
    _write_current(device, speed)
    if not device.parent.parent.name.startswith("pci"):
        _write_current(device.parent, speed)


def _write_link(folder: Path, current: LinkSpeed, maximum: LinkCapability) -> None:
    _write_current(folder, current)
    _write_max(folder, maximum)


def _write_current(folder: Path, speed: LinkSpeed) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "current_link_speed").write_text(_SPEED_TEXT[speed.generation] + "\n")
    (folder / "current_link_width").write_text(f"{speed.width}\n")


def _write_max(folder: Path, maximum: LinkCapability) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "max_link_speed").write_text(_SPEED_TEXT[maximum.generation] + "\n")
    (folder / "max_link_width").write_text(f"{maximum.width}\n")
