"""The agent's exposition, asserted literally: names, label names as dcgm-exporter spells them, values."""

import dataclasses
from collections.abc import Callable

from prometheus_client import generate_latest

from egpu_api.pcie import LinkSpeed
from egpu_api.power import PowerLimitStatus
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.labels import gpu_status, gpu_statuses
from egpu_node_agent.metrics import AgentMetrics, nvml_bus_id
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.readings import GpuReading


def exposition(host: FakeGpuHost, health: str = "ok", version: str = "1.2.3", **changes: object) -> tuple[str, GpuReading]:
    metrics = AgentMetrics(version=version)
    readings = [dataclasses.replace(reading, **changes) for reading in NvmlBackend(host.nvml, host.sysfs_root).read()]
    metrics.observe("x220-tesla-p4", readings, {readings[0].uuid: health})
    return generate_latest(metrics.registry).decode(), readings[0]


def test_gpu_series_carry_dcgm_exporter_labels(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("x220-tesla-p4")
    host.downtrain(0, LinkSpeed(1, 1))  # trained at Gen1 x1 where Gen2 x1 is possible
    text, reading = exposition(host)
    assert reading.uuid == "GPU-b66a24a7-f2dc-5f08-9bd1-2cb9d553ee60"
    series = (
        'Hostname="x220-tesla-p4",UUID="GPU-b66a24a7-f2dc-5f08-9bd1-2cb9d553ee60",gpu="0",modelName="Tesla P4",'
        'node="x220-tesla-p4",pci_bus_id="00000000:01:00.0"'
    )
    assert f"egpu_gpu_power_limit_watts{{{series}}} 75.0" in text
    assert f"egpu_gpu_pcie_link_generation{{{series}}} 1.0" in text
    assert f"egpu_gpu_pcie_link_width{{{series}}} 1.0" in text
    assert f"egpu_gpu_pcie_link_capable_generation{{{series}}} 2.0" in text
    assert f"egpu_gpu_pcie_link_capable_width{{{series}}} 1.0" in text
    assert f"egpu_gpu_temperature_celsius{{{series}}} 38.0" in text
    assert f"egpu_gpu_healthy{{{series}}} 1.0" in text
    assert f'egpu_gpu_health{{{series},state="ok"}} 1.0' in text
    assert f'egpu_gpu_health{{{series},state="lost"}} 0.0' in text
    assert f"egpu_gpu_pcie_replay_count{{{series}}} 0.0" in text
    assert f'egpu_gpu_clock_event_reason{{{series},reason="gpu_idle"}} 1.0' in text
    assert f'egpu_gpu_clock_event_reason{{{series},reason="sw_power_cap"}} 0.0' in text


def test_pci_bus_id_is_spelled_as_nvml_and_dcgm_exporter_spell_it() -> None:
    assert nvml_bus_id("0000:3b:00.0") == "00000000:3B:00.0"
    assert nvml_bus_id("0001:01:00.0") == "00000001:01:00.0"


def test_degraded_and_lost_are_told_apart(fake_host: Callable[[str], FakeGpuHost]) -> None:
    for health in ("degraded", "lost"):
        text, _ = exposition(fake_host("x220-tesla-p4"), health)
        states = {line.rsplit("state=", 1)[1] for line in text.splitlines() if line.startswith("egpu_gpu_health{")}
        assert states == {f'"{s}"}} {1.0 if s == health else 0.0}' for s in ("ok", "degraded", "lost")}
        [healthy] = [line for line in text.splitlines() if line.startswith("egpu_gpu_healthy{")]
        assert healthy.endswith(" 0.0")


def test_replays_and_clock_events_as_nvml_reports_them(fake_host: Callable[[str], FakeGpuHost]) -> None:
    text, _ = exposition(fake_host("x220-tesla-p4"), pcie_replay_count=17, clock_event_reasons=0x4 | 0x40)
    assert any(line.startswith("egpu_gpu_pcie_replay_count{") and line.endswith(" 17.0") for line in text.splitlines())
    active = sorted(line.split('reason="')[1].split('"')[0] for line in text.splitlines()
                    if line.startswith("egpu_gpu_clock_event_reason{") and line.endswith(" 1.0"))  # fmt: skip
    assert active == ["hw_thermal_slowdown", "sw_power_cap"]


def test_build_info_process_metrics_and_no_created_series(fake_host: Callable[[str], FakeGpuHost]) -> None:
    text, _ = exposition(fake_host("x220-tesla-p4"), version="1.2.3")
    assert 'egpu_node_agent_build_info{version="1.2.3"} 1.0' in text
    assert "process_resident_memory_bytes " in text
    assert "process_cpu_seconds_total " in text
    assert "_created" not in text


def test_a_power_limit_not_applied_reads_0_and_a_withdrawn_request_has_no_series(
    fake_host: Callable[[str], FakeGpuHost],
) -> None:
    host = fake_host("x220-tesla-p4")
    metrics = AgentMetrics()
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()
    uuid = readings[0].uuid

    def lines(prefix: str) -> list[str]:
        return [line for line in generate_latest(metrics.registry).decode().splitlines() if line.startswith(prefix)]

    applied = PowerLimitStatus(requested_watts=60, target_watts=60, applied_watts=60)
    metrics.observe("x220-tesla-p4", readings, {uuid: "ok"}, power={uuid: applied})
    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_applied{")] == ["1.0"]
    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_target_watts{")] == ["60.0"]

    failed = applied.model_copy(update={"applied_watts": 75, "error": "Insufficient Permissions"})
    metrics.observe("x220-tesla-p4", readings, {uuid: "ok"}, power={uuid: failed})
    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_applied{")] == ["0.0"]
    dry = applied.model_copy(update={"applied_watts": 75, "dry_run": True})
    metrics.observe("x220-tesla-p4", readings, {uuid: "ok"}, power={uuid: dry})
    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_applied{")] == ["0.0"]

    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_external{")] == ["0.0"]
    external = applied.model_copy(update={"applied_watts": 70, "state": "ExternallyManaged"})
    metrics.observe("x220-tesla-p4", readings, {uuid: "ok"}, power={uuid: external})
    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_external{")] == ["1.0"]
    assert [line.rsplit(" ", 1)[1] for line in lines("egpu_gpu_power_limit_applied{")] == ["0.0"]

    metrics.observe("x220-tesla-p4", readings, {uuid: "ok"}, power={})
    assert lines("egpu_gpu_power_limit_applied{") == []
    assert lines("egpu_gpu_power_limit_target_watts{") == []
    assert lines("egpu_gpu_power_limit_external{") == []


def test_the_bottleneck_hop_and_its_effective_bandwidth_as_published(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    metrics = AgentMetrics()
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()
    gpus = [gpu_status(reading) for reading in readings]
    links = {gpu.uuid: gpu.link for gpu in gpus if gpu.link is not None}
    metrics.observe("switch-4x-a5000", readings, {gpu.uuid: gpu.health for gpu in gpus}, links=links)
    text = generate_latest(metrics.registry).decode()
    first = gpus[0].link
    assert first is not None
    [bandwidth] = [
        line for line in text.splitlines() if line.startswith("egpu_gpu_pcie_effective_bandwidth_mbps{") and 'gpu="0"' in line
    ]
    assert bandwidth.endswith(f" {float(first.effective_mbps)}")
    [width] = [line for line in text.splitlines() if line.startswith("egpu_gpu_pcie_bottleneck_width{") and 'gpu="0"' in line]
    assert width.endswith(" 1.0"), "the switch's x1 uplink, not the GPU's own x16 link"


def test_gpus_sharing_a_switch_uplink_form_one_group(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    metrics = AgentMetrics()
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()
    gpus = gpu_statuses(readings)
    metrics.observe("switch-4x-a5000", readings, {gpu.uuid: gpu.health for gpu in gpus}, paths={g.uuid: g.path for g in gpus})
    text = generate_latest(metrics.registry).decode().splitlines()

    groups = [line for line in text if line.startswith("egpu_gpu_pcie_shared_link_gpus{")]
    assert len(groups) == 4
    assert all('link="0000:80:00.0"' in line and line.endswith(" 4.0") for line in groups)
    rates = [line for line in text if line.startswith("egpu_gpu_pcie_shared_link_bandwidth_mbps{")]
    assert all(line.endswith(" 856.0") for line in rates)

    alone = AgentMetrics()
    pi = NvmlBackend(fake_host("pi5-rtx4090").nvml, fake_host("pi5-rtx4090").sysfs_root).read()
    alone.observe("pi5", pi, {pi[0].uuid: "ok"}, paths={g.uuid: g.path for g in gpu_statuses(pi)})
    assert "egpu_gpu_pcie_shared_link_gpus{" not in generate_latest(alone.registry).decode()


def test_a_gfd_label_that_disagrees_reads_1_and_one_gfd_removed_has_no_series() -> None:
    metrics = AgentMetrics()

    def values() -> dict[str, str]:
        lines = generate_latest(metrics.registry).decode().splitlines()
        return {
            line.split('label="')[1].split('"')[0]: line.rsplit(" ", 1)[1]
            for line in lines
            if line.startswith("egpu_node_agent_gfd_label_disagreement{")
        }

    metrics.observe_gfd("n1", ["nvidia.com/gpu.product", "nvidia.com/gpu.count"], ["nvidia.com/gpu.count"])
    assert values() == {"nvidia.com/gpu.product": "0.0", "nvidia.com/gpu.count": "1.0"}
    metrics.observe_gfd("n1", ["nvidia.com/gpu.product"], [])
    assert values() == {"nvidia.com/gpu.product": "0.0"}
