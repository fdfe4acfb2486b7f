"""The GPUMaintenance controller: gather the world of one maintenance, ask ``drain``, act, report.

Every step starts from what the API server holds (the maintenance's status, the node, the
pods on it), so an operator killed in any phase resumes where it was: replacement pods have
stable names (a repeated create is a 409), evictions of gone pods are 404s, and the
administrator's cordon is written to status before the operator cordons the node.

The replicas themselves move through their InferenceDeployment's reconcile: a cordoned node
is no longer adequate, so a replacement is placed elsewhere, and the old pod is evicted once
the replacement is Ready (by that reconcile or by this controller, whichever comes first).
"""

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from egpu_api import keys
from egpu_api.maintenance import ACTIVE_PHASES, PHASES, TERMINAL_PHASES, GPUMaintenanceSpec, GPUMaintenanceStatus
from egpu_operator import drain, facts
from egpu_operator.cache import Cache
from egpu_operator.kube import Kube
from egpu_operator.metrics import MAINTENANCES
from egpu_operator.status import wire

log = logging.getLogger("egpu_operator.maintenance")

DeploymentKey = tuple[str, str]


def step(
    kube: Kube,
    cache: Cache,
    name: str,
    deployments: Callable[[DeploymentKey], Mapping[str, Any] | None],
    replica_pods: Callable[[DeploymentKey], Iterable[Mapping[str, Any]]],
    limit: int,
    now: datetime | None = None,
    dra_drivers: Sequence[str] = (keys.DRA_GPU_DRIVER,),
    shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES,
) -> str | None:
    """Move one maintenance forward; returns its phase afterwards (None once it is gone).

    Gather (the maintenance, its node, the world of its pods), decide (``drain.decide``), act
    (finalizer, cordon, evictions, the node given back), report (Events and status)."""
    now = now or datetime.now(UTC)
    everything = kube.list_maintenances()
    for phase in PHASES:
        MAINTENANCES.labels(phase).set(sum(1 for m in everything if (m.get("status") or {}).get("phase", "Pending") == phase))
    maintenance = next((m for m in everything if m["metadata"]["name"] == name), None)
    if maintenance is None:
        return None
    previous = GPUMaintenanceStatus.model_validate(maintenance.get("status") or {})
    try:
        spec = GPUMaintenanceSpec.model_validate(maintenance["spec"])
    except ValidationError as error:
        # The API server validates specs; this guards objects stored under an older schema.
        return _report_unusable(kube, name, error)

    deleting = bool(maintenance["metadata"].get("deletionTimestamp"))
    if previous.phase == "Completed":  # the node was returned already: nothing to read
        if deleting:
            _finish_deletion(kube, maintenance, spec, previous, drain.NodeState())
        return None if deleting else previous.phase
    node = kube.get_node(spec.node_name)
    node_state = _node_state(node)
    if deleting:
        _finish_deletion(kube, maintenance, spec, previous, node_state)
        return None
    if previous.phase == "Failed" and not spec.completed:
        return previous.phase  # left for a human: set spec.completed or delete it

    world = drain.World(node=node_state)
    if previous.phase == "Pending":
        created = maintenance["metadata"].get("creationTimestamp", "")
        world = drain.World(node=node_state, slot_wait=drain.slot_wait(name, spec.node_name, created, everything, limit))
    elif previous.phase in ACTIVE_PHASES and node is not None:
        moved_before = [
            (entry["deployment"], int(entry["replica"])) for entry in (maintenance.get("status") or {}).get("moved") or []
        ]
        world = _gather(kube, spec.node_name, node_state, deployments, replica_pods, moved_before, dra_drivers, shared)
    decision = drain.decide(spec, previous, world, now)
    if previous.phase == "Pending" and decision.cordon and node is not None:
        # Note the replicas on the node as it is cordoned, before their surge starts: should this
        # operator restart, a deployment's own reconcile may evict one (its replacement Ready)
        # before this controller looks at the node again, and the move would go unrecorded.
        world = _gather(kube, spec.node_name, node_state, deployments, replica_pods, [], dra_drivers, shared)
    _change_node(kube, maintenance, spec, previous, decision, node_state)
    refused, evicted = _evict_pods(kube, cache, maintenance, decision, previous, world)
    return _report(kube, maintenance, spec, previous, decision, world, refused, evicted, now)


def _report_unusable(kube: Kube, name: str, error: ValidationError) -> str:
    failed = GPUMaintenanceStatus(phase="Failed", message=f"spec cannot be used: {error}".splitlines()[0])
    kube.patch_maintenance_status(name, wire(failed))
    return failed.phase


def _change_node(
    kube: Kube,
    maintenance: Mapping[str, Any],
    spec: GPUMaintenanceSpec,
    previous: GPUMaintenanceStatus,
    decision: drain.Decision,
    node_state: drain.NodeState,
) -> None:
    """The finalizer, the record of an administrator's cordon, our cordon and label, or the node given back."""
    metadata = maintenance["metadata"]
    name = metadata["name"]
    if decision.add_finalizer and drain.FINALIZER not in (metadata.get("finalizers") or []):
        kube.set_maintenance_finalizers(name, metadata["resourceVersion"], [*(metadata.get("finalizers") or []), drain.FINALIZER])
    if "node_was_cordoned" in decision.status and previous.node_was_cordoned is None:
        # Written before the cordon: a restart between the two must not mistake our cordon for an admin's.
        kube.patch_maintenance_status(name, wire(GPUMaintenanceStatus(phase="Cordoned", **decision.status)))
    if decision.cordon and (not node_state.unschedulable or node_state.maintenance_label != name):
        kube.patch_node(spec.node_name, {"spec": {"unschedulable": True}, "metadata": {"labels": {keys.MAINTENANCE_LABEL: name}}})
    if decision.restore:
        _restore(kube, name, spec.node_name, bool(previous.node_was_cordoned), node_state)


def _evict_pods(
    kube: Kube,
    cache: Cache,
    maintenance: Mapping[str, Any],
    decision: drain.Decision,
    previous: GPUMaintenanceStatus,
    world: drain.World,
) -> tuple[dict[str, str], list[str]]:
    """The evictions decided; returns those refused (pod -> why) and the pods evicted without a replacement."""
    name = maintenance["metadata"]["name"]
    refused: dict[str, str] = {}
    evicted = list(previous.evicted)
    for pod, why in decision.evict:
        refusal = cache.evictions.evict(kube, pod.namespace, pod.name, "maintenance")
        if refusal is not None:
            refused[pod.key] = refusal
            continue
        log.info("pod evicted", extra={"maintenance": name, "pod": pod.key, "why": why})
        kube.maintenance_event(maintenance, "Evicted", f"evicted {pod.key}: {why}")
        replaced = pod.deployment is not None and (pod.deployment, pod.replica or 0) in world.replacements
        if not replaced and pod.key not in evicted:
            evicted.append(pod.key)  # unmanaged, or a replica dropped under AllowReducedCapacity
    return refused, evicted


def _report(
    kube: Kube,
    maintenance: Mapping[str, Any],
    spec: GPUMaintenanceSpec,
    previous: GPUMaintenanceStatus,
    decision: drain.Decision,
    world: drain.World,
    refused: Mapping[str, str],
    evicted: list[str],
    now: datetime,
) -> str:
    """Events for replicas moved and a phase changed, and the status if it changed; returns the phase."""
    metadata, previous_raw = maintenance["metadata"], maintenance.get("status") or {}
    moved = drain.record_moves(previous_raw.get("moved") or [], world)
    known = {entry["fromPod"] for entry in previous_raw.get("moved") or [] if entry.get("toPod")}
    for entry in moved:
        if entry.get("toPod") and entry["fromPod"] not in known:
            kube.maintenance_event(maintenance, "ReplicaMoved", f"{entry['deployment']} replica {entry['replica']}: "
                                   f"{entry['fromPod']} -> {entry['toPod']} on {entry['toNode']}")  # fmt: skip
    generation = int(metadata.get("generation", 0))
    new_status = drain.status(decision, previous, previous_raw.get("conditions") or [], generation, refused, moved, evicted, now)
    if new_status["phase"] != previous.phase:
        warning = new_status["phase"] == "Failed"
        kube.maintenance_event(maintenance, new_status["phase"], new_status["message"], warning=warning)
        log.info("maintenance phase", extra={"maintenance": metadata["name"], "node": spec.node_name,
                                             "phase": new_status["phase"], "why": new_status["message"]})  # fmt: skip
    if any(previous_raw.get(key) != value for key, value in new_status.items()):
        kube.patch_maintenance_status(metadata["name"], new_status)
    return str(new_status["phase"])


def _node_state(node: Mapping[str, Any] | None) -> drain.NodeState:
    if node is None:
        return drain.NodeState(exists=False)
    return drain.NodeState(
        unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        maintenance_label=(node["metadata"].get("labels") or {}).get(drain.MAINTENANCE_LABEL),
    )


def _gather(
    kube: Kube,
    node: str,
    node_state: drain.NodeState,
    deployments: Callable[[DeploymentKey], Mapping[str, Any] | None],
    replica_pods: Callable[[DeploymentKey], Iterable[Mapping[str, Any]]],
    moved_before: Iterable[tuple[str, int]],
    dra_drivers: Sequence[str] = (keys.DRA_GPU_DRIVER,),
    shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES,
) -> drain.World:
    """The node's GPU pods, and for each replica that is (or was) on it, its pod elsewhere."""
    everything_here = kube.pods_on_node(node)
    pods = [view for pod in everything_here if (view := _gpu_pod(pod, _dra_gpus(kube, pod, dra_drivers), shared)) is not None]
    gpu_pods = {(view.namespace, view.name) for view in pods}
    other_pods = sorted(
        key for pod in everything_here
        if (pod["metadata"]["namespace"], pod["metadata"]["name"]) not in gpu_pods and (key := _other_pod(pod)) is not None
    )  # fmt: skip
    replicas = {(pod.deployment, pod.replica or 0) for pod in pods if pod.deployment is not None} | set(moved_before)
    replacements: dict[tuple[str, int], drain.Replacement] = {}
    placement_why: dict[str, str] = {}
    for deployment_name, replica in replicas:
        namespace, name = deployment_name.split("/", 1)
        for other in replica_pods((namespace, name)):
            elsewhere = facts.pod_view(other)
            if elsewhere and elsewhere.replica == replica and elsewhere.node != node and not elsewhere.terminating:
                replacements[(deployment_name, replica)] = drain.Replacement(
                    elsewhere.name, elsewhere.node, elsewhere.ready, facts.ready_by(other)
                )
        deployment = deployments((namespace, name)) or {}
        for condition in (deployment.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Placed" and condition.get("status") == "False":
                placement_why[deployment_name] = condition.get("message", "")
    return drain.World(node=node_state, pods=pods, replacements=replacements, placement_why=placement_why, other_pods=other_pods)


def _dra_gpus(kube: Kube, pod: Mapping[str, Any], drivers: Sequence[str]) -> int:
    """GPUs the pod holds through DRA: devices of ``drivers`` its ResourceClaims were allocated."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    namespace = pod["metadata"]["namespace"]
    claims = (kube.get_resource_claim(namespace, name) for name in facts.pod_claim_names(pod))
    return sum(len(facts.claim_holds(claim, drivers)) for claim in claims if claim is not None)


def _gpu_pod(
    pod: Mapping[str, Any], dra_gpus: int = 0, shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES
) -> drain.GpuPod | None:
    """The pod as a drain sees it; None for pods that hold no GPU (as a resource or, ``dra_gpus``,
    through DRA) or have finished."""
    metadata, status = pod["metadata"], pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or facts.gpu_requests(pod, shared) + dra_gpus <= 0:
        return None
    owners = metadata.get("ownerReferences") or []
    daemonset = any(owner.get("kind") == "DaemonSet" and owner.get("controller") for owner in owners)
    labels = metadata.get("labels") or {}
    managed = any(owner.get("kind") == "InferenceDeployment" and owner.get("controller") for owner in owners)
    replica = labels.get(keys.REPLICA_LABEL)
    deployment = labels.get(keys.DEPLOYMENT_LABEL)
    is_replica = managed and deployment is not None and replica is not None and replica.isdigit()
    return drain.GpuPod(
        namespace=metadata["namespace"],
        name=metadata["name"],
        deployment=f"{metadata['namespace']}/{deployment}" if is_replica else None,
        replica=int(replica) if is_replica and replica is not None else None,
        terminating=metadata.get("deletionTimestamp") is not None,
        daemonset=daemonset,
    )


def _other_pod(pod: Mapping[str, Any]) -> str | None:
    """namespace/name of a running pod that holds no GPU and that a drain of the node would move;
    None for GPU pods, finished pods, DaemonSet pods and static pods (they stay on every node)."""
    metadata, status = pod["metadata"], pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or facts.gpu_requests(pod) > 0:
        return None
    owners = metadata.get("ownerReferences") or []
    if any(owner.get("kind") == "DaemonSet" and owner.get("controller") for owner in owners):
        return None
    if "kubernetes.io/config.mirror" in (metadata.get("annotations") or {}):
        return None
    return f"{metadata['namespace']}/{metadata['name']}"


def _restore(kube: Kube, name: str, node: str, was_cordoned: bool, state: drain.NodeState) -> None:
    """Give the node back: our label off, and uncordoned unless an administrator had cordoned it."""
    patch: dict[str, Any] = {}
    if state.maintenance_label == name:
        patch["metadata"] = {"labels": {drain.MAINTENANCE_LABEL: None}}
    if not was_cordoned and state.unschedulable:
        patch["spec"] = {"unschedulable": None}
    if patch:
        kube.patch_node(node, patch)


def _finish_deletion(
    kube: Kube, maintenance: Mapping[str, Any], spec: GPUMaintenanceSpec, previous: GPUMaintenanceStatus, node: drain.NodeState
) -> None:
    """Deleting a maintenance that touched the node returns the node first, then lets the object go."""
    metadata = maintenance["metadata"]
    finalizers = list(metadata.get("finalizers") or [])
    if drain.FINALIZER not in finalizers:
        return
    if previous.phase in (*ACTIVE_PHASES, "Failed") and node.exists:
        _restore(kube, metadata["name"], spec.node_name, bool(previous.node_was_cordoned), node)
        kube.maintenance_event(maintenance, "Completed", "maintenance deleted: node returned to service")
    kube.set_maintenance_finalizers(
        metadata["name"], metadata["resourceVersion"], [f for f in finalizers if f != drain.FINALIZER]
    )


def file_automatic(kube: Kube, cache: Cache, troubled: Mapping[str, str]) -> list[str]:
    """For nodes whose agent reports a lost GPU or a degraded link (node -> health), file a
    GPUMaintenance unless one is already open for the node. Returns the names created."""
    open_nodes = {
        m["spec"].get("nodeName")
        for m in kube.list_maintenances()
        if (m.get("status") or {}).get("phase", "Pending") not in TERMINAL_PHASES
    }
    created = []
    for node_name, health in sorted(troubled.items()):
        if node_name in open_nodes:
            continue
        node = kube.get_node(node_name)
        if node is None:
            continue
        condition = next(
            (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == keys.GPU_HEALTHY_CONDITION),
            None,
        )
        if condition is None or condition.get("status") != "False":
            continue
        body = drain.auto_maintenance(node_name, health, condition.get("lastTransitionTime", ""), condition.get("message", ""))
        if not cache.first_filing(body["metadata"]["name"]):
            continue  # filed for this very problem already (perhaps completed while the GPU is still lost)
        if kube.create_maintenance(body):
            created.append(body["metadata"]["name"])
            log.warning("maintenance filed", extra={"node": node_name, "maintenance": body["metadata"]["name"],
                                                    "why": body["spec"]["reason"]})  # fmt: skip
    return created
