"""GPU Feature Discovery's labels against NVML: label keys asserted literally, cases as GFD writes them."""

from dataclasses import replace

import pytest

from egpu_node_agent.gfd import Disagreement, compare
from egpu_node_agent.readings import GpuReading

A100 = GpuReading(index=0, uuid="GPU-a", product="NVIDIA A100 80GB PCIe", pci_bus_id="0000:01:00.0", memory_mib=81920)
P4 = replace(A100, uuid="GPU-p4", product="Tesla P4", memory_mib=7680)


@pytest.mark.parametrize(
    ("labels", "readings", "expected"),
    [
        pytest.param({}, [A100], [], id="no GFD on this node: nothing to compare"),
        pytest.param({"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe", "nvidia.com/gpu.memory": "81920",
                      "nvidia.com/gpu.count": "1", "nvidia.com/gpu.family": "ampere"}, [A100], [], id="agree"),
        pytest.param({"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe-SHARED"}, [A100], [],
                     id="time-slicing's -SHARED suffix"),
        pytest.param({"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe-MIG-3g.40gb", "nvidia.com/gpu.memory": "40192",
                      "nvidia.com/gpu.count": "2", "nvidia.com/mig.strategy": "single"}, [A100], [],
                     id="MIG single: memory and count are the slices'"),
        pytest.param({"nvidia.com/gpu.product": "Tesla-P4"}, [A100],
                     [Disagreement("nvidia.com/gpu.product", "Tesla-P4", "NVIDIA-A100-80GB-PCIe")], id="GPU swapped"),
        pytest.param({"nvidia.com/gpu.count": "2"}, [A100], [Disagreement("nvidia.com/gpu.count", "2", "1 GPU(s)")],
                     id="a GPU gone since GFD ran"),
        pytest.param({"nvidia.com/gpu.memory": "40960"}, [A100],
                     [Disagreement("nvidia.com/gpu.memory", "40960", "81920 MiB")], id="memory"),
        pytest.param({"nvidia.com/gpu.memory": "lots"}, [A100], [Disagreement("nvidia.com/gpu.memory", "lots", "81920 MiB")],
                     id="memory not a number"),
        pytest.param({"nvidia.com/gpu.product": "Tesla-P4", "nvidia.com/gpu.memory": "7680", "nvidia.com/gpu.count": "2"},
                     [A100, P4], [], id="mixed GPUs: GFD's product and memory are one of them"),
        pytest.param({"nvidia.com/gpu.product": "Tesla-P4", "nvidia.com/gpu.count": "1"}, [],
                     [Disagreement("nvidia.com/gpu.product", "Tesla-P4", "no GPU"),
                      Disagreement("nvidia.com/gpu.count", "1", "0 GPU(s)")], id="NVML sees no GPU"),
    ],
)  # fmt: skip
def test_compare(labels: dict[str, str], readings: list[GpuReading], expected: list[Disagreement]) -> None:
    assert compare(labels, readings) == expected


def test_the_sentence_names_the_label_both_values_and_the_fix() -> None:
    sentence = Disagreement("nvidia.com/gpu.count", "2", "1 GPU(s)").sentence()
    assert sentence.startswith("GPU Feature Discovery's label nvidia.com/gpu.count=2 disagrees with NVML (1 GPU(s))")
    assert "restart the gpu-feature-discovery pod" in sentence
