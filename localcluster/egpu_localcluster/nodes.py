"""Fake node manifests from a fleet profile: what the device plugin and NFD would advertise.

Pure: fleet profile in, Node objects (plain dicts) out. GPU facts beyond the device count
are deliberately absent: publishing them is the node agent's job, and a second writer
would hide bugs in it.
"""

from typing import Any

from egpu_api import keys
from egpu_api.fleet import FleetNode, FleetProfile

#: Pods per node, as a kubelet's default ``--max-pods``.
MAX_PODS = 110


def node_manifest(node: FleetNode) -> dict[str, Any]:
    """A KWOK-managed Node for one fleet entry, with CPU, memory and the GPU resources of ``FleetNode.advertised``."""
    capacity = {
        "cpu": str(node.host.cpu_cores),
        "memory": f"{node.host.memory_mib}Mi",
        "pods": str(MAX_PODS),
    }
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": node.host.arch,
        "type": "kwok",
        keys.FLEET_NODE_LABEL: node.name,
    }
    if node.gpus:
        capacity |= {name: str(count) for name, count in node.advertised().items()}
        labels[keys.NFD_NVIDIA_PCI_LABEL] = "true"
        if node.mig_profiles():
            # As GPU Feature Discovery labels a MIG node: the strategy and, under "mixed", each profile's memory.
            labels[keys.GFD_MIG_STRATEGY_LABEL] = node.mig_strategy
            if node.mig_strategy == "mixed":
                labels |= {
                    f"{keys.MIG_RESOURCE_PREFIX}{profile}{keys.GFD_MIG_MEMORY_SUFFIX}": str(memory_mib)
                    for profile, memory_mib in node.mig_profiles().items()
                }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {keys.KWOK_NODE_ANNOTATION: keys.KWOK_NODE_ANNOTATION_VALUE},
        },
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
        },
    }


def resource_slice(node: FleetNode) -> dict[str, Any]:
    """What the NVIDIA DRA driver's kubelet plugin publishes for a ``dra`` node: one ResourceSlice,
    its pool named after the node, holding every GPU (``FleetNode.dra_devices``)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node.name}-{keys.DRA_GPU_DRIVER}", "labels": {keys.FLEET_NODE_LABEL: node.name}},
        "spec": {
            "driver": keys.DRA_GPU_DRIVER,
            "nodeName": node.name,
            "pool": {"name": node.name, "generation": 1, "resourceSliceCount": 1},
            "devices": node.dra_devices(),
        },
    }


def device_class() -> dict[str, Any]:
    """The DeviceClass the DRA driver's chart installs: every GPU device of its driver."""
    driver = keys.DRA_GPU_DRIVER
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": keys.DRA_GPU_DEVICE_CLASS},
        "spec": {
            "selectors": [{"cel": {"expression": f"device.driver == '{driver}' && device.attributes['{driver}'].type == 'gpu'"}}]
        },
    }


def fleet_manifests(fleet: FleetProfile) -> dict[str, Any]:
    """All nodes of a fleet as one ``v1/List``, ready for ``kubectl apply -f -``; with DRA nodes, their
    ResourceSlices and the driver's DeviceClass too."""
    dra = [node for node in fleet.nodes if node.dra and node.gpus]
    items = [node_manifest(node) for node in fleet.nodes] + [resource_slice(node) for node in dra]
    return {"apiVersion": "v1", "kind": "List", "items": items + ([device_class()] if dra else [])}
