"""Compare NVIDIA GPU Feature Discovery's node labels with what NVML says. Pure.

Where the NVIDIA GPU Operator runs, GFD labels each GPU node (``nvidia.com/gpu.product``,
``nvidia.com/gpu.memory`` in MiB, ``nvidia.com/gpu.count``, ...) from its own NVML reading, at its
own pace. Schedulers and people select on them, so a disagreement with what the agent reads now
(a GPU swapped or lost since GFD ran, GFD pointed at other devices) is worth flagging: the agent
reports it, and changes nothing. With the MIG "single" strategy GFD describes the MIG devices
(product ``...-MIG-<profile>``, their memory and count), so only the product's GPU part is compared.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from egpu_api import keys
from egpu_node_agent.readings import GpuReading

#: The GFD labels the agent compares, in the order it reports them.
COMPARED = (keys.GFD_PRODUCT_LABEL, keys.GFD_MEMORY_MIB_LABEL, keys.GFD_COUNT_LABEL)


@dataclass(frozen=True)
class Disagreement:
    label: str
    gfd: str  # the label's value
    nvml: str  # what NVML says, in the label's spelling

    def sentence(self) -> str:
        return (
            f"GPU Feature Discovery's label {self.label}={self.gfd} disagrees with NVML ({self.nvml}); "
            "GFD relabels on its next run, or restart the gpu-feature-discovery pod on this node"
        )


def gfd_product(nvml_name: str) -> str:
    """A product name as GFD writes it in ``nvidia.com/gpu.product``."""
    return nvml_name.replace(" ", "-")


def compare(labels: Mapping[str, str], readings: Sequence[GpuReading]) -> list[Disagreement]:
    """The GFD labels among ``labels`` that disagree with ``readings``; none where GFD has not labelled."""
    found: list[Disagreement] = []
    products = sorted({gfd_product(reading.product) for reading in readings})
    product = labels.get(keys.GFD_PRODUCT_LABEL)
    mig_devices = product is not None and "-MIG-" in product
    if product is not None:
        gpu_part = product.split("-MIG-", 1)[0].removesuffix("-SHARED")
        if gpu_part not in products:
            found.append(Disagreement(keys.GFD_PRODUCT_LABEL, product, " or ".join(products) or "no GPU"))
    if mig_devices:
        return found  # memory and count describe MIG devices, which NVML's GPU readings do not list one by one
    memory = labels.get(keys.GFD_MEMORY_MIB_LABEL)
    sizes = sorted({reading.memory_mib for reading in readings})
    if memory is not None and (not memory.isdigit() or int(memory) not in sizes):
        found.append(Disagreement(keys.GFD_MEMORY_MIB_LABEL, memory, " or ".join(f"{size} MiB" for size in sizes) or "no GPU"))
    count = labels.get(keys.GFD_COUNT_LABEL)
    if count is not None and count != str(len(readings)):
        found.append(Disagreement(keys.GFD_COUNT_LABEL, count, f"{len(readings)} GPU(s)"))
    return found
