"""The PCIe path model over sysfs layouts as Linux builds them: links as pairs of ports.

Each case is a fleet node written the way the hardware reports itself; the fake sysfs lays
it out as Linux does (root ports and switch downstream ports report the link below them)
and the agent's real reader and labeler run over it.
"""

from pathlib import Path
from typing import Any

import pytest

from egpu_api.fleet import parse_fleet
from egpu_api.pcie import LinkSpeed
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_status, gpu_statuses, node_labels
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.sysfs import read_path


def speed(generation: int, width: int) -> dict[str, int]:
    return {"generation": generation, "width": width}


def link(current: tuple[int, int], device: tuple[int, int], port: tuple[int, int], shared: str | None = None) -> dict[str, Any]:
    described: dict[str, Any] = {"current": speed(*current), "device": speed(*device), "port": speed(*port)}
    return described | ({"shared": shared} if shared else {})


def host_of(tmp_path: Path, links: list[dict[str, Any]], gpus: int = 1, busy: bool = False) -> FakeGpuHost:
    document = {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "FleetProfile",
        "metadata": {"name": "paths"},
        "nodes": [
            {
                "name": "node",
                "host": {"cpuCores": 8, "memoryMib": 32768},
                "gpus": [
                    {"product": "NVIDIA A2", "memoryMib": 15356, "links": links, "power": None, "busy": busy} for _ in range(gpus)
                ],
            }
        ],
    }
    return FakeGpuHost(parse_fleet(document).nodes[0], tmp_path / "sys")


CASES = {
    # A native x8 card (NVIDIA A2) in a switch's x16 slot: the link is x8 by design.
    "x8 card in an x16 switch slot": ([link((4, 8), (4, 8), (4, 16)), link((4, 16), (4, 16), (4, 16))], "ok", (4, 8)),
    "x8 card in an x16 root port": ([link((4, 8), (4, 8), (4, 16))], "ok", (4, 8)),
    # A Gen3 card (T4) behind a Gen4 switch trains Gen3: its own maximum, not downtraining.
    "Gen3 card behind a Gen4 switch": ([link((3, 16), (3, 16), (4, 16)), link((4, 16), (4, 16), (4, 16))], "ok", (3, 16)),
    # The switch's uplink trained x4 where both ends do x16: real downtraining.
    "trained-down uplink": ([link((4, 16), (4, 16), (4, 16)), link((4, 4), (4, 16), (4, 16))], "degraded", (4, 4)),
    "two stacked switches": (
        [link((4, 16), (4, 16), (4, 16)), link((4, 8), (4, 8), (4, 16)), link((3, 4), (4, 16), (3, 4))],
        "ok",
        (3, 4),
    ),
    "stacked switches, middle link down to x2": (
        [link((4, 16), (4, 16), (4, 16)), link((4, 2), (4, 8), (4, 16)), link((3, 4), (4, 16), (3, 4))],
        "degraded",
        (4, 2),
    ),
}


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_path_cases(case: str, busy: bool, tmp_path: Path) -> None:
    links, health, bottleneck = CASES[case]
    host = host_of(tmp_path, links, busy=busy)

    status = gpu_status(NvmlBackend(host.nvml, host.sysfs_root).read()[0])

    assert status.health == health, status.reasons
    assert status.link is not None
    assert (status.link.generation, status.link.width) == bottleneck
    assert len(status.path) == len(links)


def test_each_link_pairs_its_downstream_device_with_the_port_above(tmp_path: Path) -> None:
    host = host_of(tmp_path, [link((4, 8), (4, 8), (4, 16)), link((4, 16), (4, 16), (4, 16))])

    path = read_path("0000:01:00.0", host.sysfs_root)

    assert [hop.device for hop in path] == ["0000:01:00.0", "0000:80:00.0"]
    assert [hop.port for hop in path] == ["0000:81:00.0", "0000:00:01.0"]
    assert [str(hop.capability) for hop in path] == ["Gen4 x8", "Gen4 x16"]


def test_gpus_below_one_switch_share_its_uplink(tmp_path: Path) -> None:
    uplink = link((3, 1), (4, 16), (3, 1), shared="uplink")
    host = host_of(tmp_path, [link((4, 16), (4, 16), (4, 16)), uplink], gpus=4)

    statuses = gpu_statuses(NvmlBackend(host.nvml, host.sysfs_root).read())

    assert {status.path[1].device for status in statuses} == {"0000:80:00.0"}
    assert len({status.path[0].port for status in statuses}) == 4
    assert [status.path[1].shared_by for status in statuses] == [4, 4, 4, 4]
    assert [status.path[0].shared_by for status in statuses] == [1, 1, 1, 1]
    host.downtrain(0, LinkSpeed(2, 1), hop=1)
    for index in range(4):
        host.set_busy(index)
    after = gpu_statuses(NvmlBackend(host.nvml, host.sysfs_root).read())
    assert [status.health for status in after] == ["degraded"] * 4
    assert node_labels(after)["egpu-operator.io/pcie-gen"] == "2"


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n")


@pytest.mark.parametrize("root_port_reports_current", [True, False])
def test_root_ports_with_and_without_current_link_files(tmp_path: Path, root_port_reports_current: bool) -> None:
    port = tmp_path / "devices" / "pci0000:00" / "0000:00:01.0"
    write(port, max_link_speed="16.0 GT/s PCIe", max_link_width="16")
    if root_port_reports_current:
        write(port, current_link_speed="16.0 GT/s PCIe", current_link_width="8")
    write(port / "0000:01:00.0", max_link_speed="16.0 GT/s PCIe", max_link_width="8",
          current_link_speed="16.0 GT/s PCIe", current_link_width="8")  # fmt: skip
    (tmp_path / "bus" / "pci" / "devices").mkdir(parents=True)
    (tmp_path / "bus" / "pci" / "devices" / "0000:01:00.0").symlink_to(port / "0000:01:00.0")

    path = read_path("00000000:01:00.0", tmp_path)

    assert len(path) == 1
    assert (str(path[0].current), str(path[0].capability), path[0].degraded) == ("Gen4 x8", "Gen4 x8", False)


def test_a_device_without_current_files_takes_the_ports_reading(tmp_path: Path) -> None:
    port = tmp_path / "devices" / "pci0000:00" / "0000:00:01.0"
    write(port, max_link_speed="8.0 GT/s PCIe", max_link_width="4", current_link_speed="8.0 GT/s PCIe", current_link_width="2")
    write(port / "0000:01:00.0", max_link_speed="8.0 GT/s PCIe", max_link_width="4")
    (tmp_path / "bus" / "pci" / "devices").mkdir(parents=True)
    (tmp_path / "bus" / "pci" / "devices" / "0000:01:00.0").symlink_to(port / "0000:01:00.0")

    path = read_path("0000:01:00.0", tmp_path)

    assert (str(path[0].current), path[0].degraded) == ("Gen3 x2", True)


def test_emulated_bridges_without_link_figures_are_left_out(tmp_path: Path) -> None:
    bridge = tmp_path / "devices" / "pci0000:00" / "0000:00:02.0"
    write(bridge, current_link_speed="Unknown", current_link_width="0", max_link_speed="Unknown", max_link_width="0")
    write(bridge / "0000:01:00.0", max_link_speed="32.0 GT/s PCIe", max_link_width="16",
          current_link_speed="32.0 GT/s PCIe", current_link_width="16")  # fmt: skip
    (tmp_path / "bus" / "pci" / "devices").mkdir(parents=True)
    (tmp_path / "bus" / "pci" / "devices" / "0000:01:00.0").symlink_to(bridge / "0000:01:00.0")

    path = read_path("0000:01:00.0", tmp_path)

    assert [(hop.device, hop.port, str(hop.capability)) for hop in path] == [("0000:01:00.0", "0000:00:02.0", "Gen5 x16")]
