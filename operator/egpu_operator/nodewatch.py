"""The operator's view of Nodes: the slim copy its node informer keeps, and what wakes placement.

Nodes change all the time (kubelet or KWOK status, controllers' labels and taints). The node
informer (``reads``) keeps ``slim`` copies, so status churn and heartbeats leave the stored copy
as it was (one JSON parse and a comparison an event) and the facts cache in ``reconcile`` keeps
hitting; ``runtime`` wakes placement only when ``placement_hash`` changed.
"""

import json
from collections.abc import Mapping
from typing import Any

from egpu_api import keys

# The GPU assignments are kept so that a pod's GPU, once reported, brings its power limit at once.
KEPT_ANNOTATIONS = (
    keys.GPUS_ANNOTATION,
    keys.POWER_STATUS_ANNOTATION,
    keys.POWER_OWNERS_ANNOTATION,
    keys.GPU_ASSIGNMENTS_ANNOTATION,
)


def slim(node: Mapping[str, Any]) -> dict[str, Any]:
    """What placement needs of a Node: labels, the agent's annotations, cordon, taints, allocatable resources."""
    metadata, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    annotations = metadata.get("annotations") or {}
    allocatable = status.get("allocatable") or {}
    return {
        "metadata": {
            "name": metadata.get("name", ""),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": {key: annotations[key] for key in KEPT_ANNOTATIONS if key in annotations},
        },
        "spec": {
            "unschedulable": bool(spec.get("unschedulable")),
            "taints": [
                {key: taint.get(key) for key in ("key", "value", "effect")}
                for taint in spec.get("taints") or []
                if taint.get("effect") in ("NoSchedule", "NoExecute")
            ],
        },
        # The whole allocatable: whole-pod fit weighs CPU, memory, pods and every extended resource.
        "status": {"allocatable": dict(allocatable)},
    }


def placement_hash(node: Mapping[str, Any]) -> int:
    """What placement reads of a slim node, without its other labels. Controllers label nodes all
    the time (kube-controller-manager adds beta.kubernetes.io/* to every new node, rate-limited: at
    1,000 nodes that went on for a minute and re-queued every deployment each second). A change
    in other labels matters only to a nodeSelector and is picked up by the resync."""
    metadata = node["metadata"]
    ours = {key: value for key, value in metadata["labels"].items() if key.startswith(keys.PREFIX)}
    return hash(json.dumps([ours, metadata["annotations"], node["spec"], node["status"]], sort_keys=True))
