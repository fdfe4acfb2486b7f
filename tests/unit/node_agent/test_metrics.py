from collections.abc import Callable

from prometheus_client import generate_latest

from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend


def test_gpu_series_carry_node_gpu_and_uuid(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("x220-tesla-p4")
    metrics = AgentMetrics()
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()
    metrics.observe("x220-tesla-p4", readings, {readings[0].uuid: "ok"})
    text = generate_latest(metrics.registry).decode()
    series = f'node="x220-tesla-p4",uuid="{readings[0].uuid}"'
    assert f'egpu_gpu_power_limit_watts{{gpu="0",{series}}} 75.0' in text
    assert f'egpu_gpu_pcie_link_generation{{gpu="0",{series}}} 2.0' in text
    assert f'egpu_gpu_pcie_link_width{{gpu="0",{series}}} 1.0' in text
    assert f'egpu_gpu_temperature_celsius{{gpu="0",{series}}} 38.0' in text
    assert f'egpu_gpu_healthy{{gpu="0",{series}}} 1.0' in text
