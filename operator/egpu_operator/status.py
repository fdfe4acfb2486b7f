"""The InferenceDeployment status: replicas, placements and conditions per API conventions. Pure.

Statuses are built from the contract's models and written as ``wire``: a field the model does
not have cannot be written, where a misspelt key in a plain dict would be pruned by the API
server without a word.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from egpu_api import keys
from egpu_api.inference import (
    ApiModel,
    Condition,
    InferenceDeploymentSpec,
    InferenceDeploymentStatus,
    PowerStatus,
    ReplicaPlacement,
)
from egpu_api.power import PowerLimitStatus
from egpu_operator.placement import Demand, NodeFacts, Plan, PodView
from egpu_operator.power import whole_gpus
from egpu_runtime import conditions, timestamps


def wire(model: ApiModel) -> dict[str, Any]:
    """A status (or a part of one) as its merge patch: camelCase keys, only the fields set, no nulls."""
    return model.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)


def condition(
    previous: Sequence[Mapping[str, Any]], kind: str, ok: bool, reason: str, message: str, generation: int, now: datetime
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status does."""
    status: Literal["True", "False"] = "True" if ok else "False"
    since = conditions.transition_time(conditions.find(previous, kind), status, timestamps.rfc3339(now))
    return Condition(
        type=kind, status=status, reason=reason, message=message, last_transition_time=since, observed_generation=generation
    )


def build(
    metadata: Mapping[str, Any],
    current: Mapping[str, Any],  # the status as it stands
    spec: InferenceDeploymentSpec,
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
    previous = current.get("conditions") or []
    generation = int(metadata.get("generation", 0))
    desired = spec.replicas
    live = sorted((pod for pod in pods if not pod.terminating), key=lambda pod: (pod.replica, pod.name))

    wants_power = spec.power is not None
    placements = [
        _placement(pod, nodes.get(pod.node), demand, wants_power, power, power_status, pod.name in power_waiting) for pod in live
    ]
    ready = sum(1 for pod in live if pod.ready and pod.replica < desired)
    loads = [p.estimated_load_seconds for p in placements if p.estimated_load_seconds is not None]
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
    written = InferenceDeploymentStatus(
        observed_generation=generation,
        replicas=len({pod.replica for pod in live}),
        ready_replicas=ready,
        selector=f"{keys.DEPLOYMENT_LABEL}={metadata['name']}",
        worst_load_seconds=max(loads) if loads else None,
        placements=placements,
        conditions=[placed, ready_condition],
    )
    # A merge patch keeps what it leaves out: null clears a load estimate no replica has any more.
    return {**wire(written), "worstLoadSeconds": written.worst_load_seconds}


def _placement(
    pod: PodView,
    node: NodeFacts | None,
    demand: Demand,
    wants_power: bool,
    power: Mapping[str, tuple[str, int]],
    power_status: Mapping[str, Mapping[str, PowerLimitStatus]],
    waiting: bool = False,
) -> ReplicaPlacement:
    """One replica's entry in status.placements: where it runs, its link and load time, its power limit."""
    entry = ReplicaPlacement(replica=pod.replica, pod=pod.name, node=pod.node, ready=pod.ready)
    if node is not None and node.problem is None:
        entry.link_generation = node.pcie_generation
        entry.link_width = node.pcie_width
        entry.bandwidth_m_bps = node.bandwidth_mbps
        load = demand.estimate(node)  # as a load there costs with the node to itself
        if load.bottleneck is not None:
            entry.estimated_load_seconds = round(load.seconds, 1)
            entry.load_bottleneck = str(load.bottleneck)
    if pod.name not in power and wants_power:
        shared = node is not None and not whole_gpus(node.mode, node.gpu_allocatable, len(node.gpu_uuids))
        if shared:
            message = "not applied: the GPU is shared (MIG, vGPU or time-slicing), and its limit would cap every tenant on it"
        elif waiting:
            message = "waiting for the node agent to report which GPU the pod got"
        else:
            message = "every GPU power limit on this node is owned by another deployment"
        entry.power = PowerStatus(message=message)
    if pod.name in power:
        uuid, watts = power[pod.name]
        reported = power_status.get(pod.node, {}).get(uuid)
        entry.gpu = uuid
        entry.power = PowerStatus(
            requested_watts=watts,
            applied_watts=reported.applied_watts if reported else None,
            # An error, or why the limit is not the agent's (someone else set it: state ExternallyManaged).
            message=((reported.error or reported.message) if reported else "waiting for the node agent") or None,
        )
    return entry


def _placed(
    previous: Sequence[Mapping[str, Any]], result: Plan, refusals: Sequence[str], desired: int, generation: int, now: datetime
) -> Condition:
    """The Placed condition: refused pods first, then placed, unplaced or stranded replicas."""
    if refusals:
        message = f"{len(refusals)} replica pod(s) refused by the API server: " + "; ".join(refusals)
        return condition(previous, "Placed", False, "PodRejected", message[:2048], generation, now)
    if result.unschedulable:
        # The scheduler's own words: placement found the node adequate, the scheduler did not.
        message = f"{len(result.unschedulable)} of {desired} replica(s) refused by kube-scheduler: " + "; ".join(
            result.unschedulable
        )
        return condition(previous, "Placed", False, "Unschedulable", f"{message}; {result.summary}"[:2048], generation, now)
    if result.gated:
        message = f"{result.gated} of {desired} replica(s) held by the template's schedulingGates; {result.summary}"
        return condition(previous, "Placed", False, "SchedulingGated", message, generation, now)
    if result.unplaced == 0 and result.stranded == 0:
        return condition(previous, "Placed", True, "Placed", f"{desired} replica(s) placed; {result.summary}", generation, now)
    if result.unplaced:
        message = f"{result.unplaced} of {desired} replica(s) cannot be placed: {result.summary}"
        return condition(previous, "Placed", False, "NoAdequateNode", message, generation, now)
    message = f"{result.stranded} replica(s) run on nodes no longer adequate and have nowhere to move: {result.summary}"
    return condition(previous, "Placed", False, "Stranded", message, generation, now)
