"""Per-GPU detail the node agent publishes in the ``egpu-operator.io/gpus`` node annotation.

Node labels summarise the worst GPU; this JSON lists each one so the operator can place a
replica on a specific GPU and report its link. Only values that change with the hardware's
state are here (no temperature or power draw), so a steady node produces no patches.
"""

import json
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator
from pydantic.alias_generators import to_camel


class GpuMode(StrEnum):
    """How a GPU is exposed: each GPU's ``mode`` here, and the ``egpu-operator.io/gpu-mode`` node
    label (which is ``mixed`` when a node's GPUs are not all in one mode). The one list of modes."""

    BARE_METAL = "bare-metal"  # the host owns the whole GPU
    PASSTHROUGH = "passthrough"  # a VM owns the whole GPU (PCI passthrough)
    VGPU = "vgpu"  # a VM holds a vGPU slice of it
    VGPU_HOST = "vgpu-host"  # the host that slices it into vGPUs
    MIG = "mig"  # split into MIG slices
    MIXED = "mixed"  # node label only: the node's GPUs are in different modes


#: Modes in which a replica has a physical GPU to itself.
WHOLE_GPU_MODES = frozenset({GpuMode.BARE_METAL, GpuMode.PASSTHROUGH})

Health = Literal["ok", "degraded", "lost"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)


class MigSlice(_Model):
    profile: str
    vram_mib: int


class LinkStatus(_Model):
    """The bottleneck hop between host memory and the GPU."""

    generation: int
    width: int
    theoretical_mbps: int
    effective_mbps: int
    # From the opt-in probe: what pinned and pageable host-to-device copies achieved.
    measured_pinned_mbps: int | None = None
    measured_pageable_mbps: int | None = None


class HopStatus(_Model):
    """One PCIe link on the GPU's path, GPU first: ``device`` is its downstream end (the GPU or a
    switch's upstream port), ``port`` the port above it (None below a host bridge)."""

    device: str
    port: str | None = None
    current: str  # as trained now ("Gen4 x8"); an idle GPU may park its link at Gen1
    capable: str  # the lesser of both ends' maxima
    degraded: bool  # trained below what both ends support (generation only while the GPU is busy)
    # What a pinned copy over this link achieves when it has it to itself, in MB/s (10^6 bytes/s).
    effective_mbps: int | None = None
    # How many of the node's GPUs sit below this link (a switch uplink: all GPUs behind the switch).
    shared_by: int = 1


class PowerStatus(_Model):
    limit_watts: int
    default_watts: int
    min_watts: int
    max_watts: int


class GpuStatus(_Model):
    index: int
    uuid: str
    product: str
    pci_bus_id: str
    vram_mib: int
    mode: GpuMode
    mig: list[MigSlice] = []
    link: LinkStatus | None = None
    path: list[HopStatus] = []
    power: PowerStatus | None = None
    health: Health
    reasons: list[str] = []

    @field_validator("mode")
    @classmethod
    def _one_mode(cls, mode: GpuMode) -> GpuMode:
        if mode is GpuMode.MIXED:
            raise ValueError("mixed is a node's label value when its GPUs differ, not the mode of one GPU")
        return mode


_LIST = TypeAdapter(list[GpuStatus])


def dump_gpus(gpus: list[GpuStatus]) -> str:
    """Canonical JSON: the same GPUs always give the same string, so comparing strings finds changes."""
    return json.dumps([gpu.model_dump(by_alias=True) for gpu in gpus], sort_keys=True, separators=(",", ":"))


def load_gpus(text: str) -> list[GpuStatus]:
    """Parse the annotation; raises ``pydantic.ValidationError`` on a malformed value."""
    return _LIST.validate_json(text)


__all__ = [
    "WHOLE_GPU_MODES",
    "GpuMode",
    "GpuStatus",
    "Health",
    "HopStatus",
    "LinkStatus",
    "MigSlice",
    "PowerStatus",
    "dump_gpus",
    "load_gpus",
]
