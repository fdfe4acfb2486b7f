"""Node labels for every profile of the default fleet, keys and values spelled out literally."""

from collections.abc import Callable

import pytest

from egpu_api.pcie import LinkSpeed
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_status, gpu_statuses, label_value, node_labels
from egpu_node_agent.nvml import NvmlBackend


def labels_of(host: FakeGpuHost) -> dict[str, str]:
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    return node_labels(gpu_statuses(backend.read()))


def power(limit: int, default: int, low: int, high: int) -> dict[str, str]:
    return {
        "egpu-operator.io/power-limit-watts": str(limit),
        "egpu-operator.io/power-default-watts": str(default),
        "egpu-operator.io/power-min-watts": str(low),
        "egpu-operator.io/power-max-watts": str(high),
    }


def link(generation: int, width: int, mbps: int) -> dict[str, str]:
    return {
        "egpu-operator.io/pcie-gen": str(generation),
        "egpu-operator.io/pcie-width": str(width),
        "egpu-operator.io/pcie-bandwidth-mbps": str(mbps),
    }


def gpu(count: int, product: str, vram_mib: int, mode: str) -> dict[str, str]:
    return {
        "egpu-operator.io/label-schema": "v1",
        "egpu-operator.io/gpu-count": str(count),
        "egpu-operator.io/gpu-product": product,
        "egpu-operator.io/gpu-vram-mib": str(vram_mib),
        "egpu-operator.io/gpu-mode": mode,
        "egpu-operator.io/health": "ok",
    }


EXPECTED = {
    # Gen3 x1: 984 MB/s theoretical, 856 MB/s at the measured 0.87 copy efficiency.
    "pi5-rtx4090": {
        **gpu(1, "NVIDIA-GeForce-RTX-4090", 24564, "bare-metal"),
        **link(3, 1, 856),
        **power(450, 450, 150, 600),
    },
    # ExpressCard, PCIe 2.0 x1: 500 MB/s after 8b/10b, 435 MB/s effective.
    "x220-tesla-p4": {**gpu(1, "Tesla-P4", 7680, "bare-metal"), **link(2, 1, 435), **power(75, 75, 60, 75)},
    "minipc-rtx4070ti": {
        **gpu(1, "NVIDIA-GeForce-RTX-4070-Ti", 12282, "bare-metal"),
        **link(4, 4, 6852),
        **power(285, 285, 100, 320),
    },
    "laptop-rtx3060-tb": {
        **gpu(1, "NVIDIA-GeForce-RTX-3060", 12288, "bare-metal"),
        **link(3, 4, 3426),
        **power(170, 170, 100, 170),
    },
    # Each A5000 trained Gen4 x16 to the switch; the Gen3 x1 uplink is the bottleneck, and all
    # four share it: concurrent loads divide its 856 MB/s.
    "switch-4x-a5000": {
        **gpu(4, "NVIDIA-RTX-A5000", 24564, "bare-metal"),
        **link(3, 1, 856),
        "egpu-operator.io/pcie-shared-link-mbps": "856",
        "egpu-operator.io/pcie-shared-link-gpus": "4",
        **power(230, 230, 100, 230),
    },
    # Two 3g.40gb slices: two schedulable units of 40192 MiB each.
    "server-a100-mig": {
        **gpu(2, "NVIDIA-A100-80GB-PCIe", 40192, "mig"),
        "egpu-operator.io/mig-profiles": "3g.40gb",
        **link(4, 16, 27411),
        **power(300, 300, 150, 300),
    },
    "vm-h100-passthrough": {
        **gpu(1, "NVIDIA-H100-80GB-HBM3", 81559, "passthrough"),
        **link(5, 16, 54823),
        **power(700, 700, 200, 700),
    },
    # A vGPU guest cannot read power limits: no power labels at all rather than made-up ones.
    "vm-vgpu-a10": {**gpu(1, "NVIDIA-A10-12Q", 12288, "vgpu"), **link(4, 16, 27411)},
}


@pytest.mark.parametrize("node", sorted(EXPECTED))
def test_labels_for_every_default_fleet_node(node: str, fake_host: Callable[[str], FakeGpuHost]) -> None:
    assert labels_of(fake_host(node)) == EXPECTED[node]


def test_downtrained_width_degrades_health_and_lowers_the_bandwidth(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("minipc-rtx4070ti")
    host.downtrain(0, LinkSpeed(4, 1))

    labels = labels_of(host)
    assert labels["egpu-operator.io/pcie-width"] == "1"
    assert labels["egpu-operator.io/pcie-bandwidth-mbps"] == "1713"
    assert labels["egpu-operator.io/health"] == "degraded"


def test_idle_generation_drop_is_not_degradation(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("minipc-rtx4070ti")
    host.downtrain(0, LinkSpeed(1, 4))  # an idle consumer GPU parks its link at 2.5 GT/s

    assert labels_of(host) == EXPECTED["minipc-rtx4070ti"]


def test_busy_gpu_at_low_generation_is_degraded(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("minipc-rtx4070ti")
    host.downtrain(0, LinkSpeed(1, 4))
    host.set_busy(0)

    labels = labels_of(host)
    assert labels["egpu-operator.io/pcie-gen"] == "1"
    assert labels["egpu-operator.io/health"] == "degraded"


def test_switch_uplink_downtraining_is_found_beyond_the_gpu_link(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    host.downtrain(2, LinkSpeed(3, 1), hop=0)  # no change
    host.downtrain(1, LinkSpeed(2, 1), hop=1)  # the uplink above GPU 1 falls back to Gen2
    host.set_busy(1)

    backend = NvmlBackend(host.nvml, host.sysfs_root)
    statuses = [gpu_status(reading) for reading in backend.read()]
    assert statuses[1].health == "degraded"
    assert statuses[1].link is not None
    assert (statuses[1].link.generation, statuses[1].link.width) == (2, 1)
    assert any("capable of Gen3 x1" in reason for reason in statuses[1].reasons)
    assert node_labels(statuses)["egpu-operator.io/pcie-bandwidth-mbps"] == "435"


def test_lost_gpu_sets_health_lost_and_keeps_its_identity(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("pi5-rtx4090")
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    first = backend.read()[0]
    host.lose_gpu(0)

    lost = gpu_status(backend.read()[0])
    assert lost.health == "lost"
    assert lost.uuid == first.uuid
    assert "Xid 79" in lost.reasons[0]
    assert node_labels([lost])["egpu-operator.io/health"] == "lost"
    # NVML no longer answers for it: its last power limits would be stale, so none are published.
    assert not [key for key in node_labels([lost]) if key.startswith("egpu-operator.io/power-")]


def test_vanished_gpu_is_reported_lost_not_forgotten(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    backend.read()
    host.lose_gpu(3, vanish=True)

    readings = backend.read()
    assert [r.health for r in readings] == ["ok", "ok", "ok", "lost"]
    assert readings[3].health_reasons == ("device vanished from NVML",)

    host.recover_gpu(3)
    assert [r.health for r in backend.read()] == ["ok", "ok", "ok", "ok"]


def test_node_without_gpus_publishes_a_zero_count() -> None:
    assert node_labels([]) == {"egpu-operator.io/label-schema": "v1", "egpu-operator.io/gpu-count": "0"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("NVIDIA GeForce RTX 4090", "NVIDIA-GeForce-RTX-4090"),
        ("  Tesla P4  ", "Tesla-P4"),
        ("GRID A100D-4C (vGPU)", "GRID-A100D-4C-vGPU"),
        ("x" * 80, "x" * 63),
        ("Ünïcode GPU", "n-code-GPU"),
    ],
)
def test_label_values_are_always_valid(text: str, value: str) -> None:
    assert label_value(text) == value


def test_measured_bandwidth_is_published_beside_the_theoretical(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("vm-h100-passthrough")
    (reading,) = NvmlBackend(host.nvml, host.sysfs_root).read()
    # What the probe measured on the real H100 (pinned, pageable), see docs/measurements.md.
    labels = node_labels([gpu_status(reading, (54948, 7998))])
    assert labels["egpu-operator.io/pcie-bandwidth-mbps"] == "54823"
    assert labels["egpu-operator.io/pcie-measured-pinned-mbps"] == "54948"
    assert labels["egpu-operator.io/pcie-measured-pageable-mbps"] == "7998"


def test_measured_labels_need_every_gpu_measured(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()
    statuses = [gpu_status(r, (800, 700) if r.index == 0 else None) for r in readings]
    assert "egpu-operator.io/pcie-measured-pinned-mbps" not in node_labels(statuses)


def test_a_shared_uplink_and_the_model_cache_rate_are_published(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    statuses = gpu_statuses(NvmlBackend(host.nvml, host.sysfs_root).read())

    labels = node_labels(statuses, storage_mbps=420)

    assert labels["egpu-operator.io/pcie-shared-link-mbps"] == "856"
    assert labels["egpu-operator.io/pcie-shared-link-gpus"] == "4"
    assert labels["egpu-operator.io/storage-read-mbps"] == "420"
    assert "egpu-operator.io/pcie-shared-link-mbps" not in labels_of(fake_host("pi5-rtx4090"))


def test_a_lost_gpu_leaves_the_power_labels_to_the_others(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    host.nvml.gpus[0].power_mw = (120_000, 230_000, 100_000, 230_000)
    backend = NvmlBackend(host.nvml, host.sysfs_root)
    assert labels_of(host)["egpu-operator.io/power-limit-watts"] == "120"
    host.lose_gpu(0)
    assert node_labels(gpu_statuses(backend.read()))["egpu-operator.io/power-limit-watts"] == "230"
