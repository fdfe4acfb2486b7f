import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from egpu_api.fleet import DEFAULT_FLEET, FleetProfileError, load_fleet, parse_fleet
from egpu_api.pcie import LinkSpeed


def default_document() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_FLEET.read_text())


def test_default_fleet_holds_the_edge_hardware_the_project_is_for() -> None:
    fleet = load_fleet()
    by_name = {node.name: node for node in fleet.nodes}

    pi = by_name["pi5-rtx4090"]
    assert pi.host.arch == "arm64"
    assert pi.gpus[0].memory_mib == 24564
    assert pi.gpus[0].bottleneck == LinkSpeed(3, 1)

    assert by_name["x220-tesla-p4"].gpus[0].bottleneck == LinkSpeed(2, 1)
    assert by_name["x220-tesla-p4"].gpus[0].power is not None
    assert by_name["x220-tesla-p4"].gpus[0].power.max_limit_watts == 75
    assert by_name["minipc-rtx4070ti"].gpus[0].bottleneck == LinkSpeed(4, 4)
    assert by_name["laptop-rtx3060-tb"].gpus[0].bottleneck == LinkSpeed(3, 4)

    switch = by_name["switch-4x-a5000"]
    assert len(switch.gpus) == 4
    # Each A5000 trained Gen4 x16 to the switch; the x1 uplink is what a load sees.
    assert all(gpu.links[0].current.speed == LinkSpeed(4, 16) for gpu in switch.gpus)
    assert all(gpu.bottleneck == LinkSpeed(3, 1) for gpu in switch.gpus)
    assert len({switch.gpu_pci_bus_id(i) for i in range(4)}) == 4

    mig = by_name["server-a100-mig"].gpus[0]
    assert mig.mig is not None
    assert mig.mig.enabled
    assert mig.schedulable_units == 2

    assert by_name["vm-h100-passthrough"].gpus[0].virtualization_mode == "passthrough"
    assert by_name["vm-h100-passthrough"].gpus[0].bottleneck == LinkSpeed(5, 16)
    assert by_name["vm-vgpu-a10"].gpus[0].virtualization_mode == "vgpu-guest"
    assert by_name["vm-vgpu-a10"].gpus[0].power is None


def test_omitted_uuids_are_stable_and_distinct() -> None:
    first, second = load_fleet(), load_fleet()
    uuids = [node.gpu_uuid(i) for node in first.nodes for i in range(len(node.gpus))]
    assert uuids == [node.gpu_uuid(i) for node in second.nodes for i in range(len(node.gpus))]
    assert len(set(uuids)) == len(uuids)
    assert all(u.startswith("GPU-") for u in uuids)


def test_downtrained_link_is_valid_and_marked_degraded() -> None:
    document = default_document()
    document["nodes"][2]["gpus"][0]["links"][0]["current"] = {"generation": 1, "width": 4}
    gpu = parse_fleet(document).nodes[2].gpus[0]
    assert gpu.links[0].degraded
    assert not load_fleet().nodes[2].gpus[0].links[0].degraded


def mutate(path: str, value: Any) -> dict[str, Any]:
    """The default document with the value at a dotted path (list indices as numbers) replaced or deleted."""
    document = copy.deepcopy(default_document())
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = document
    for step in parents:
        target = target[step]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return document


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("kind", "Fleet", "kind: must be 'FleetProfile'"),
        ("nodes.0.name", "Pi_5", "nodes[0] (Pi_5).name: 'Pi_5' is not a valid node name; use lower-case"),
        ("nodes.0.gpus.0.memoryMib", DELETE, "nodes[0] (pi5-rtx4090).gpus[0].memoryMib: is required; add it"),
        ("nodes.0.gpus.0.vramGb", 24, "nodes[0] (pi5-rtx4090).gpus[0].vramGb: is not a known field; remove it"),
        (
            "nodes.0.gpus.0.links.0.current.generation",
            7,
            "nodes[0] (pi5-rtx4090).gpus[0].links[0].current.generation: input should be less than or equal to 6",
        ),
        ("nodes.0.gpus.0.links.0.current.width", 3, "current.width: must be one of 1, 2, 4, 8, 12, 16, 32 lanes"),
        (
            "nodes.0.gpus.0.links.0.current",
            {"generation": 4, "width": 1},
            "links[0]: current link Gen4 x1 is faster than both ends allow (Gen3 x1)",
        ),
        ("nodes.0.gpus.0.links", [], "gpus[0].links: list should have at least 1 item"),
        ("nodes.1.gpus.0.power.limitWatts", 90, "power: limitWatts (90) must lie within minLimitWatts..maxLimitWatts"),
        ("nodes.1.gpus.0.power.minLimitWatts", 80, "power: minLimitWatts (80) is above maxLimitWatts (75); swap them"),
        ("nodes.1.gpus.0.pciBusId", "01:00.0", "pciBusId: '01:00.0' is not a PCI bus id; use the form '0000:01:00.0'"),
        ("nodes.1.gpus.0.virtualizationMode", "sriov", "virtualizationMode: must be 'none', 'passthrough'"),
        ("nodes.5.gpus.0.mig.devices.0.profile", "3g-40gb", "'3g-40gb' is not a MIG profile name; use the form"),
        ("nodes.5.gpus.0.mig.devices.0.count", 3, "MIG devices use 120576 MiB but the GPU has 81920 MiB"),
        ("nodes.5.gpus.0.mig.enabled", False, "devices are listed but MIG is not enabled; set enabled: true"),
        ("nodes.1.name", "pi5-rtx4090", "node name 'pi5-rtx4090' appears twice"),
        ("nodes.1.gpus.0.uuid", "GPU-same", None),  # one explicit uuid alone is fine
        ("nodes", [], "nodes: list should have at least 1 item"),
    ],
)
def test_invalid_profiles_name_the_field_and_the_fix(path: str, value: Any, expected: str | None) -> None:
    document = mutate(path, value)
    if expected is None:
        parse_fleet(document)
        return
    with pytest.raises(FleetProfileError) as raised:
        parse_fleet(document, "fleet profile test.yaml")
    message = str(raised.value)
    assert message.startswith("fleet profile test.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_duplicate_explicit_uuids_are_rejected() -> None:
    document = default_document()
    document["nodes"][0]["gpus"][0]["uuid"] = "GPU-dup"
    document["nodes"][1]["gpus"][0]["uuid"] = "GPU-dup"
    with pytest.raises(FleetProfileError, match="GPU uuid GPU-dup appears twice"):
        parse_fleet(document)


def test_every_problem_is_reported_at_once() -> None:
    document = default_document()
    del document["nodes"][0]["host"]["cpuCores"]
    document["nodes"][1]["gpus"][0]["memoryMib"] = -1
    with pytest.raises(FleetProfileError) as raised:
        parse_fleet(document)
    message = str(raised.value)
    assert "nodes[0] (pi5-rtx4090).host.cpuCores: is required" in message
    assert "nodes[1] (x220-tesla-p4).gpus[0].memoryMib: input should be greater than 0" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes: [\n", "not valid YAML at line 2"),
        ("- a\n- b\n", "expected a mapping with apiVersion, kind, metadata and nodes, got list"),
        ("", "expected a mapping with apiVersion, kind, metadata and nodes, got NoneType"),
    ],
)
def test_unreadable_files_get_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetProfileError, match=expected):
        load_fleet(path)


def test_missing_file_says_to_check_the_path(tmp_path: Path) -> None:
    with pytest.raises(FleetProfileError, match=r"cannot read it \(No such file or directory\); check the path"):
        load_fleet(tmp_path / "absent.yaml")
