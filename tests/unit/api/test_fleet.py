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
        ("nodes.1.gpus.0.uuid", "GPU-6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10", None),  # one explicit uuid alone is fine
        (
            "nodes.1.gpus.0.uuid",
            "GPU-same",
            "nodes[1] (x220-tesla-p4).gpus[0].uuid: 'GPU-same' is not a GPU uuid as NVML reports it; "
            "use the form 'GPU-6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10' (lower-case hex), or leave it out to derive one",
        ),
        ("nodes.1.gpus.0.uuid", "6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10", "gpus[0].uuid: '6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10'"),
        ("nodes.1.gpus.0.uuid", "GPU-6F1F9A52-3C1E-4C43-9E52-0D7C2B1E9A10", "is not a GPU uuid as NVML reports it"),
        ("nodes.1.gpus.0.uuid", "MIG-6f1f9a52-3c1e-4c43-9e52-0d7c2b1e9a10", "is not a GPU uuid as NVML reports it"),
        (
            "nodes.0.gpus.0.mig",
            {"enabled": True, "devices": [{"profile": "1g.10gb", "memoryMib": 9984}]},
            "nodes[0] (pi5-rtx4090).gpus[0].mig: 'NVIDIA GeForce RTX 4090' does not support MIG (A100, A30, H100, "
            "H200, B200 and their variants do); remove `mig` or correct `product`",
        ),
        ("nodes.0.gpus.0.mig", {"enabled": True}, "'NVIDIA GeForce RTX 4090' does not support MIG"),
        ("nodes.0.gpus.0.mig", {"enabled": False}, None),  # NVML reports MIG mode disabled; no slices
        ("nodes.4.gpus.0.mig", {"enabled": True}, "'NVIDIA RTX A5000' does not support MIG"),  # not an A30
        (
            "nodes.5.gpus.0.mig.devices",
            [{"profile": "7g.80gb", "memoryMib": 90000}],
            "nodes[5] (server-a100-mig).gpus[0].mig: devices[0] (7g.80gb) has memoryMib 90000, more than the GPU's "
            "memoryMib 81920; a slice is a part of the GPU",
        ),
        (
            "nodes.4.gpus.2.pciBusId",
            "0000:03:00.0",
            "nodes[4] (switch-4x-a5000).gpus: gpus[0] and gpus[2] are both at pciBusId 0000:03:00.0; "
            "give every GPU of a node its own bus id",
        ),
        # Bus ids repeat across nodes (each host has its own PCI domain); only one node counts.
        ("nodes.1.gpus.0.pciBusId", "0000:03:00.0", None),
        (
            "nodes.0.gpus.0.memoryMib",
            True,
            "nodes[0] (pi5-rtx4090).gpus[0].memoryMib: true is a boolean, not a number; write a whole number",
        ),
        ("nodes.0.host.cpuCores", False, "host.cpuCores: false is a boolean, not a number"),
        ("nodes.0.gpus.0.links.0.current.width", True, "current.width: true is a boolean, not a number"),
        ("nodes.1.gpus.0.power.limitWatts", True, "power.limitWatts: true is a boolean, not a number"),
        ("nodes.5.gpus.0.mig.devices.0.count", True, "devices[0].count: true is a boolean, not a number"),
        ("nodes.0.gpus.0.memoryMib", "24564", "memoryMib: '24564' is not a whole number; write one without quotes"),
        ("nodes.0.gpus.0.memoryMib", 24564.5, "memoryMib: 24564.5 is not a whole number"),
        (
            "nodes.0.gpus.0.memoryMib",
            25757220864,  # bytes, not MiB
            "gpus[0].memoryMib: input should be less than or equal to 1048576 (the value is in MiB)",
        ),
        ("nodes.5.gpus.0.mig.devices.0.memoryMib", 2**21, "devices[0].memoryMib: input should be less than or equal to 1048576"),
        ("nodes.0.host.memoryMib", 2**40, "host.memoryMib: input should be less than or equal to 67108864 (the value is in MiB)"),
        ("nodes.0.host.cpuCores", 100_000, "host.cpuCores: input should be less than or equal to 4096"),
        ("nodes.0.host.gpuPowerBudgetWatts", 10**6, "host.gpuPowerBudgetWatts: input should be less than or equal to 100000"),
        ("nodes.0.gpus.0.power.maxLimitWatts", 60_000, "power.maxLimitWatts: input should be less than or equal to 2000"),
        ("nodes.0.gpus", [{}] * 65, "nodes[0] (pi5-rtx4090).gpus: list should have at most 64 items"),
        ("nodes", [], "nodes: list should have at least 1 item"),
        ("nodes.0.gpus.0.links.0.shared", "Uplink_0", "links[0].shared: 'Uplink_0' is not a link name; use lower-case"),
        (
            "nodes.4.gpus.1.links",
            [
                {
                    "current": {"generation": 4, "width": 16},
                    "device": {"generation": 4, "width": 16},
                    "port": {"generation": 4, "width": 16},
                },
                {
                    "current": {"generation": 2, "width": 1},
                    "device": {"generation": 4, "width": 16},
                    "port": {"generation": 3, "width": 1},
                    "shared": "switch-uplink",
                },
            ],
            "gpus: gpus[1].links[1] and gpus[0].links[1] are both shared link 'switch-uplink' but differ",
        ),
        ("nodes.3.gpus.0.links.0.shared", "tb", "gpus[0].links[0] is shared (tb) but a link above it is not"),
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
    document["nodes"][0]["gpus"][0]["uuid"] = "GPU-00000000-0000-4000-8000-000000000001"
    document["nodes"][1]["gpus"][0]["uuid"] = "GPU-00000000-0000-4000-8000-000000000001"
    with pytest.raises(FleetProfileError, match="GPU uuid GPU-00000000-0000-4000-8000-000000000001 appears twice"):
        parse_fleet(document)


def test_every_problem_is_reported_at_once() -> None:
    document = default_document()
    del document["nodes"][0]["host"]["cpuCores"]
    document["nodes"][1]["gpus"][0]["memoryMib"] = -1
    with pytest.raises(FleetProfileError) as raised:
        parse_fleet(document)
    assert str(raised.value).splitlines() == [
        "fleet profile: nodes[0] (pi5-rtx4090).host.cpuCores: is required; add it",
        "fleet profile: nodes[1] (x220-tesla-p4).gpus[0].memoryMib: input should be greater than 0",
    ]


@pytest.mark.parametrize(
    "product",
    [
        "NVIDIA A100 80GB PCIe",
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA A30",
        "NVIDIA H100 80GB HBM3",
        "NVIDIA H100 NVL",
        "NVIDIA H200",
        "NVIDIA H20",
        "NVIDIA GH200 480GB",
        "NVIDIA B200",
        "NVIDIA RTX PRO 6000 Blackwell Server Edition",
    ],
)
def test_mig_capable_products_may_have_slices(product: str) -> None:
    document = mutate("nodes.5.gpus.0.product", product)
    assert parse_fleet(document).nodes[5].gpus[0].schedulable_units == 2


@pytest.mark.parametrize("product", ["NVIDIA A10", "NVIDIA RTX A3000", "NVIDIA L40S", "Tesla T4", "NVIDIA GeForce RTX 5090"])
def test_other_products_may_not(product: str) -> None:
    with pytest.raises(FleetProfileError, match=f"'{product}' does not support MIG"):
        parse_fleet(mutate("nodes.5.gpus.0.product", product))


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
