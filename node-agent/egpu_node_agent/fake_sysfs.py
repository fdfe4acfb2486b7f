"""Build a sysfs tree for a fleet-profile node, so ``sysfs.read_path`` reads it like the real one.

Every link of the profile (GPU first) becomes a pair of folders as Linux lays it out: the
downstream end (the GPU, or a switch's upstream port) and the port above it (a root port or
a switch's downstream port), both carrying the link's trained ``current_link_*`` and each its
own ``max_link_*``. Links that share a ``shared`` name are one physical link: built once, with
the GPUs below it in their own downstream ports, as a PCIe switch looks in sysfs.
"""

from dataclasses import dataclass, field
from pathlib import Path

from egpu_api.fleet import FleetNode, LinkCapability, PcieLink
from egpu_api.pcie import LinkSpeed

_SPEED_TEXT = {1: "2.5 GT/s PCIe", 2: "5.0 GT/s PCIe", 3: "8.0 GT/s PCIe", 4: "16.0 GT/s PCIe", 5: "32.0 GT/s PCIe"}
_SPEED_TEXT[6] = "64.0 GT/s PCIe"


@dataclass
class _Layout:
    """Folders built so far, by key, and the next free bus and root-port numbers."""

    root: Path
    domain: str
    folders: dict[tuple[str, ...], Path] = field(default_factory=dict)
    next_bus: int = 0x80
    next_root_port: int = 1

    def port(self, key: tuple[str, ...], parent: Path | None) -> Path:
        """A root port (``parent`` None) or a switch downstream port under ``parent``."""
        if key not in self.folders:
            if parent is None:
                host_bridge = self.root / "devices" / f"pci{self.domain}:00"
                self.folders[key] = host_bridge / f"{self.domain}:00:{self.next_root_port:02x}.0"
                self.next_root_port += 1
            else:
                self.folders[key] = parent / self._address()
        return self.folders[key]

    def upstream_port(self, key: tuple[str, ...], parent: Path) -> Path:
        if key not in self.folders:
            self.folders[key] = parent / self._address()
        return self.folders[key]

    def _address(self) -> str:
        address = f"{self.domain}:{self.next_bus:02x}:00.0"
        self.next_bus += 1
        return address


def build_tree(node: FleetNode, root: Path) -> None:
    """Write ``root/bus/pci/devices/<address>`` links and ``root/devices/...`` folders for every GPU."""
    (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
    layout = _Layout(root, node.gpu_pci_bus_id(0).split(":")[0] if node.gpus else "0000")
    for index, gpu in enumerate(node.gpus):
        address = node.gpu_pci_bus_id(index)
        top_first = list(reversed(gpu.links))
        keys = [_key(link, index, depth) for depth, link in enumerate(top_first)]
        folder = layout.port(("port", *keys[0]), None)
        _write_link(folder, top_first[0].current.speed, top_first[0].port)
        for depth, link in enumerate(top_first[:-1]):
            # This link's downstream end is a switch's upstream port; the next link hangs off one of its
            # downstream ports.
            upstream = layout.upstream_port(("device", *keys[depth]), folder)
            _write_link(upstream, link.current.speed, link.device)
            below = top_first[depth + 1]
            folder = layout.port(("port", *keys[depth + 1]), upstream)
            _write_link(folder, below.current.speed, below.port)
        device = folder / address
        _write_link(device, gpu.links[0].current.speed, gpu.links[0].device)
        entry = root / "bus" / "pci" / "devices" / address
        entry.unlink(missing_ok=True)
        entry.symlink_to(device)


def _key(link: PcieLink, gpu: int, depth: int) -> tuple[str, ...]:
    """One key per physical link: its shared name, or the GPU and depth for a link of its own."""
    return ("shared", link.shared) if link.shared else ("gpu", str(gpu), str(depth))


def set_current(root: Path, address: str, hop: int, speed: LinkSpeed) -> None:
    """Change the trained speed of link ``hop`` (0 = the GPU's own link) above device ``address``.

    Both ends report a link, so both are written; a shared link changes for every GPU below it."""
    device = (root / "bus" / "pci" / "devices" / address).resolve()
    # Link n's downstream end is 2n folders up the chain; its port is the folder above that.
    for _ in range(2 * hop):
        device = device.parent
    _write_current(device, speed)
    if not device.parent.name.startswith("pci"):
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
