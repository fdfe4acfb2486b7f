"""``egpu-node-agent check`` against an nvidia-smi report: stable fields must match, volatile ones may move."""

import xml.etree.ElementTree as ElementTree
from collections.abc import Callable

from egpu_node_agent.check import report
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.nvml import NvmlBackend


def smi_report(product: str, performance_state: str, idle: str) -> ElementTree.Element:
    """What ``nvidia-smi -q -x`` says about the pi5 node's GPU, a moment after the agent read it."""
    return ElementTree.fromstring(f"""
    <nvidia_smi_log><gpu id="00000000:01:00.0">
      <product_name>{product}</product_name>
      <pci><pci_bus_id>00000000:01:00.0</pci_bus_id></pci>
      <performance_state>{performance_state}</performance_state>
      <clocks_event_reasons><clocks_event_reason_gpu_idle>{idle}</clocks_event_reason_gpu_idle></clocks_event_reasons>
    </gpu></nvidia_smi_log>""")


def test_volatile_fields_that_moved_between_reads_do_not_fail_the_check(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("pi5-rtx4090")
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()
    # The agent read gpu_idle at P8; nvidia-smi, a moment later, saw the GPU busy.
    text, _ = report(readings, smi_report("NVIDIA GeForce RTX 4090", "P0", "Not Active"), {})

    lines = [line for line in text.splitlines() if "clock event reasons" in line or "performance state" in line]
    assert len(lines) == 2
    assert all("(volatile, not compared)" in line for line in lines)
    assert "DIFFERS" not in "\n".join(lines)


def test_a_stable_field_that_differs_fails_the_check(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("pi5-rtx4090")
    readings = NvmlBackend(host.nvml, host.sysfs_root).read()

    text, ok = report(readings, smi_report("NVIDIA GeForce RTX 4080", "P8", "Active"), {})

    assert not ok
    assert any("product" in line and "DIFFERS" in line for line in text.splitlines())


def test_the_path_is_printed_link_by_link(fake_host: Callable[[str], FakeGpuHost]) -> None:
    host = fake_host("switch-4x-a5000")
    text, _ = report(NvmlBackend(host.nvml, host.sysfs_root).read(), None, {})

    assert "0000:03:00.0 <- 0000:81:00.0: trained Gen4 x16, capable Gen4 x16" in text
    assert "0000:80:00.0 <- 0000:00:01.0: trained Gen3 x1, capable Gen3 x1" in text
