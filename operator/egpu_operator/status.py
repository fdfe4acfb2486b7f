"""The InferenceDeployment status: replicas, placements and conditions per API conventions. Pure."""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from egpu_api import keys
from egpu_api.power import PowerLimitStatus
from egpu_operator.placement import Demand, NodeFacts, Plan, PodView
from egpu_operator.power import whole_gpus


def condition(
    previous: Sequence[Mapping[str, Any]], kind: str, ok: bool, reason: str, message: str, generation: int, now: datetime
) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status does."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == status else now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def build(
    deployment: Mapping[str, Any],
    demand: Demand,
    result: Plan,
    pods: Sequence[PodView],
    nodes: Mapping[str, NodeFacts],
    power: Mapping[str, tuple[str, int]],  # pod name -> (gpu uuid, requested watts)
    power_status: Mapping[str, Mapping[str, PowerLimitStatus]],  # node -> gpu uuid -> what the agent reports
    now: datetime,
    refusals: Sequence[str] = (),  # the API server's reasons for replica pods it refused just now
    power_waiting: Collection[str] = (),  # pods whose GPU the node agent has not reported yet
) -> dict[str, Any]:
    metadata, spec = deployment["metadata"], deployment["spec"]
    previous = (deployment.get("status") or {}).get("conditions") or []
    generation = int(metadata.get("generation", 0))
    desired = int(spec.get("replicas", 1))
    live = sorted((pod for pod in pods if not pod.terminating), key=lambda pod: (pod.replica, pod.name))

    wants_power = (spec.get("power") or None) is not None
    placements = [
        _placement(pod, nodes.get(pod.node), demand, wants_power, power, power_status, pod.name in power_waiting) for pod in live
    ]
    ready = sum(1 for pod in live if pod.ready and pod.replica < desired)
    loads = [p["estimatedLoadSeconds"] for p in placements if "estimatedLoadSeconds" in p]
    placed = _placed(previous, result, refusals, desired, generation, now)
    ready_condition = condition(
        previous,
        "Ready",
        ready >= desired,
        "AllReplicasReady" if ready >= desired else "ReplicasNotReady",
        f"{ready}/{desired} replicas ready",
        generation,
        now,
    )
    return {
        "observedGeneration": generation,
        "replicas": len({pod.replica for pod in live}),
        "readyReplicas": ready,
        "selector": f"{keys.DEPLOYMENT_LABEL}={metadata['name']}",
        "worstLoadSeconds": max(loads) if loads else None,
        "placements": placements,
        "conditions": [placed, ready_condition],
    }


def _placement(
    pod: PodView,
    node: NodeFacts | None,
    demand: Demand,
    wants_power: bool,
    power: Mapping[str, tuple[str, int]],
    power_status: Mapping[str, Mapping[str, PowerLimitStatus]],
    waiting: bool = False,
) -> dict[str, Any]:
    """One replica's entry in status.placements: where it runs, its link and load time, its power limit."""
    entry: dict[str, Any] = {"replica": pod.replica, "pod": pod.name, "node": pod.node, "ready": pod.ready}
    if node is not None and node.problem is None:
        entry |= {"linkGeneration": node.pcie_generation, "linkWidth": node.pcie_width, "bandwidthMBps": node.bandwidth_mbps}
        load = demand.estimate(node)  # as a load there costs with the node to itself
        if load.bottleneck is not None:
            entry |= {"estimatedLoadSeconds": round(load.seconds, 1), "loadBottleneck": str(load.bottleneck)}
    if pod.name not in power and wants_power:
        shared = node is not None and not whole_gpus(node.mode, node.gpu_allocatable, len(node.gpu_uuids))
        if shared:
            message = "not applied: the GPU is shared (MIG, vGPU or time-slicing), and its limit would cap every tenant on it"
        elif waiting:
            message = "waiting for the node agent to report which GPU the pod got"
        else:
            message = "every GPU power limit on this node is owned by another deployment"
        entry["power"] = {"message": message}
    if pod.name in power:
        uuid, watts = power[pod.name]
        reported = power_status.get(pod.node, {}).get(uuid)
        entry["gpu"] = uuid
        entry["power"] = {
            "requestedWatts": watts,
            "appliedWatts": reported.applied_watts if reported else None,
            "message": (reported.error if reported else "waiting for the node agent") or None,
        }
    return entry


def _placed(
    previous: Sequence[Mapping[str, Any]], result: Plan, refusals: Sequence[str], desired: int, generation: int, now: datetime
) -> dict[str, Any]:
    """The Placed condition: refused pods first, then placed, unplaced or stranded replicas."""
    if refusals:
        message = f"{len(refusals)} replica pod(s) refused by the API server: " + "; ".join(refusals)
        return condition(previous, "Placed", False, "PodRejected", message[:2048], generation, now)
    if result.unplaced == 0 and result.stranded == 0:
        return condition(previous, "Placed", True, "Placed", f"{desired} replica(s) placed; {result.summary}", generation, now)
    if result.unplaced:
        message = f"{result.unplaced} of {desired} replica(s) cannot be placed: {result.summary}"
        return condition(previous, "Placed", False, "NoAdequateNode", message, generation, now)
    message = f"{result.stranded} replica(s) run on nodes no longer adequate and have nowhere to move: {result.summary}"
    return condition(previous, "Placed", False, "Stranded", message, generation, now)
