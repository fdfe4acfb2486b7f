"""How long a model takes to load: its bytes over the slowest stage of the way to the GPU.

A load streams the weights through stages in turn: the model's storage (the node's cache,
or a remote source), the host's copy into the GPU (pageable or pinned memory), and every
PCIe link from the root port down to the GPU. They overlap, so the slowest one sets the
pace. A stage several loads use at once (the node's disk, a switch uplink several GPUs sit
below) gives each of them an equal share. A fixed start-up term covers what is not a
transfer (opening the file, allocating on the GPU).

Pure and shared: the operator places and sizes startupProbes with it, the KWOK simulation
delays Ready by it, and ``bench/real_load.py`` compares it with real loads.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: Seconds a load costs beyond moving bytes: process start, file open, CUDA context, allocation.
STARTUP_SECONDS: Final = 0.5


@dataclass(frozen=True)
class Stage:
    """One stage a load passes through: its name, its rate alone, and how many loads share it."""

    name: str  # "storage", "host copy (pageable)", "PCIe link", "shared PCIe link"
    mbps: float  # MB/s (10^6 bytes/s) with the stage to itself
    sharers: int = 1  # loads using the stage at once, this one included

    @property
    def share_mbps(self) -> float:
        return self.mbps / max(1, self.sharers)

    def __str__(self) -> str:
        shared = f" shared by {self.sharers} loads" if self.sharers > 1 else ""
        return f"{self.name} {self.share_mbps:.0f} MB/s{shared}"


@dataclass(frozen=True)
class LoadEstimate:
    seconds: float
    bottleneck: Stage | None  # None when no stage is known: the load cannot be estimated

    def explain(self) -> str:
        """'storage 90 MB/s is the bottleneck: 204 s'."""
        if self.bottleneck is None:
            return "no stage of the load is known"
        return f"{self.bottleneck} is the bottleneck: {self.seconds:.0f} s"


def estimate(model_bytes: int, stages: Sequence[Stage], startup_seconds: float = STARTUP_SECONDS) -> LoadEstimate:
    """``model_bytes`` over the slowest stage's share, plus the start-up term; infinite with no stage."""
    known = [stage for stage in stages if stage.mbps > 0]
    if not known:
        return LoadEstimate(float("inf"), None)
    slowest = min(known, key=lambda stage: stage.share_mbps)
    return LoadEstimate(startup_seconds + model_bytes / (slowest.share_mbps * 1e6), slowest)


def stages(
    link_mbps: int,
    *,
    storage_mbps: int | None = None,
    copy_mbps: int | None = None,
    copy_kind: str = "pageable",
    shared_link_mbps: int | None = None,
    concurrent: int = 0,
    storage_name: str = "storage",
) -> list[Stage]:
    """The stages of one load onto a node, with ``concurrent`` other loads under way there.

    The storage and a shared link are divided among all loads on the node; the GPU's own
    link and the host copy into it are its own. Unknown stages (None) are left out."""
    sharers = concurrent + 1
    result = [Stage("PCIe link", link_mbps)]
    if storage_mbps is not None:
        result.append(Stage(storage_name, storage_mbps, sharers))
    if copy_mbps is not None:
        result.append(Stage(f"host copy ({copy_kind})", copy_mbps))
    if shared_link_mbps is not None:
        result.append(Stage("shared PCIe link", shared_link_mbps, sharers))
    return result
