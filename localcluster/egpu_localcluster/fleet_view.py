"""The fleet as a person wants to see it: one row per GPU, with the link a model load will see."""

from typing import Any

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import is_ready
from egpu_localcluster.table import render

HEADERS = ("NODE", "HOST", "GPU", "VRAM", "BOTTLENECK", "MB/s", "POWER W (MIN-MAX)", "MODE")
CLUSTER_HEADERS = (*HEADERS, "nvidia.com/gpu", "READY")


def gpu_rows(fleet: FleetProfile) -> list[list[object]]:
    rows: list[list[object]] = []
    for node in fleet.nodes:
        for gpu in node.gpus:
            power = gpu.power
            mode: str = gpu.virtualization_mode
            if gpu.mig is not None and gpu.mig.enabled:
                mode = f"mig {'+'.join(f'{d.count}x{d.profile}' for d in gpu.mig.devices)}"
            rows.append(
                [
                    node.name,
                    f"{node.host.kind}/{node.host.arch}",
                    gpu.product,
                    f"{gpu.memory_mib} MiB",
                    f"{gpu.bottleneck} ({len(gpu.links)} hop{'s' if len(gpu.links) > 1 else ''})",
                    gpu.bottleneck.bandwidth_mbps,
                    f"{power.limit_watts} ({power.min_limit_watts}-{power.max_limit_watts})" if power else "n/a",
                    mode,
                ]
            )
    return rows


def fleet_table(fleet: FleetProfile) -> str:
    """The profile alone, without a cluster."""
    return render(HEADERS, gpu_rows(fleet))


def cluster_table(fleet: FleetProfile, nodes: list[dict[str, Any]]) -> str:
    """The profile joined with what the API server says of each node: GPU capacity and readiness."""
    by_name = {node["metadata"]["name"]: node for node in nodes}
    rows = []
    for row in gpu_rows(fleet):
        node = by_name.get(str(row[0]))
        capacity = node["status"].get("capacity", {}).get("nvidia.com/gpu", "0") if node else "missing"
        ready = ("yes" if is_ready(node) else "no") if node else "missing"
        rows.append([*row, capacity, ready])
    return render(CLUSTER_HEADERS, rows)
