"""The GPUMaintenance controller's decisions: from what was read, every write as data. Pure.

``maintenance.step`` reads (the maintenance, its node, the pods there and their replicas
elsewhere), builds the ``drain.World`` with ``world``, asks ``drain.decide``, and then goes in two
rounds, because the second depends on what the API server made of the first:

1. ``decide``: the finalizer, the record of an administrator's cordon (written before our
   cordon, so a restart between the two never mistakes ours for theirs), the cordon or the node
   given back, and the evictions;
2. ``decide_report``: Events for replicas moved and a phase changed, and the status, which names
   the evictions a PodDisruptionBudget refused.

``applier.apply_maintenance`` performs each ``Writes``.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from egpu_api import keys
from egpu_api.maintenance import ACTIVE_PHASES, GPUMaintenanceSpec, GPUMaintenanceStatus
from egpu_operator import drain, facts
from egpu_operator.status import wire

DeploymentKey = tuple[str, str]


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class FinalizerWrite:
    """The maintenance's finalizers as they should be, guarded by the resourceVersion they were read at."""

    resource_version: str
    finalizers: list[str]


@dataclass(frozen=True)
class Eviction:
    pod: drain.GpuPod
    why: str
    replaced: bool  # its replacement runs elsewhere (else it is recorded in status.evicted)


@dataclass
class Writes:
    """Every write one round intends, applied in field order."""

    name: str
    subject: Mapping[str, Any]  # the maintenance, for Events
    add_finalizer: FinalizerWrite | None = None
    cordon_record: dict[str, Any] | None = None  # a status patch written before the cordon
    node: str = ""
    node_patch: dict[str, Any] | None = None  # the cordon, or the node given back
    evictions: list[Eviction] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] | None = None
    release_finalizer: FinalizerWrite | None = None  # last: the object may go with it
    phase: str = ""  # the phase the status says after these writes (written or not)


@dataclass
class Outcome:
    refused: dict[str, str] = field(default_factory=dict)  # pod key -> why the API server refused its eviction
    evicted: list[str] = field(default_factory=list)  # pods evicted with no replacement, in order


@dataclass(frozen=True)
class View:
    """One maintenance as read, typed."""

    maintenance: Mapping[str, Any]
    spec: GPUMaintenanceSpec
    previous: GPUMaintenanceStatus
    node: drain.NodeState
    now: datetime

    @property
    def name(self) -> str:
        return str(self.maintenance["metadata"]["name"])


def parse(maintenance: Mapping[str, Any], now: datetime) -> View | Writes:
    """The typed view, or (a spec stored under an older schema) the Failed status that says why."""
    previous = GPUMaintenanceStatus.model_validate(maintenance.get("status") or {})
    name = maintenance["metadata"]["name"]
    try:
        spec = GPUMaintenanceSpec.model_validate(maintenance["spec"])
    except ValidationError as error:
        failed = GPUMaintenanceStatus(phase="Failed", message=f"spec cannot be used: {error}".splitlines()[0])
        return Writes(name, maintenance, status=wire(failed))
    return View(maintenance, spec, previous, drain.NodeState(), now)


def node_state(node: Mapping[str, Any] | None) -> drain.NodeState:
    if node is None:
        return drain.NodeState(exists=False)
    return drain.NodeState(
        unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        maintenance_label=(node["metadata"].get("labels") or {}).get(drain.MAINTENANCE_LABEL),
    )


def moved_before(maintenance: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The replicas this maintenance recorded as on its node, by (deployment, replica)."""
    return [(entry["deployment"], int(entry["replica"])) for entry in (maintenance.get("status") or {}).get("moved") or []]


def world(
    node: str,
    state: drain.NodeState,
    pods_here: Iterable[tuple[Mapping[str, Any], int]],
    deployments: Callable[[DeploymentKey], Mapping[str, Any] | None],
    replica_pods: Callable[[DeploymentKey], Iterable[Mapping[str, Any]]],
    moved: Iterable[tuple[str, int]],
    shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES,
) -> drain.World:
    """The node's GPU pods (``pods_here``: each pod on it with the GPUs its DRA claims hold), and for each
    replica that is (or was) on it, its pod elsewhere and why its deployment cannot place it."""
    everything = list(pods_here)
    pods = [view for pod, dra in everything if (view := gpu_pod(pod, dra, shared)) is not None]
    gpu_keys = {(view.namespace, view.name) for view in pods}
    other_pods = sorted(
        key for pod, _ in everything
        if (pod["metadata"]["namespace"], pod["metadata"]["name"]) not in gpu_keys and (key := other_pod(pod)) is not None
    )  # fmt: skip
    replicas = {(pod.deployment, pod.replica or 0) for pod in pods if pod.deployment is not None} | set(moved)
    replacements: dict[tuple[str, int], drain.Replacement] = {}
    placement_why: dict[str, str] = {}
    for deployment_name, replica in replicas:
        namespace, name = deployment_name.split("/", 1)
        found = _replacement(node, replica, replica_pods((namespace, name)))
        if found is not None:
            replacements[(deployment_name, replica)] = found
        why = _unplaced(deployments((namespace, name)) or {})
        if why is not None:
            placement_why[deployment_name] = why
    return drain.World(node=state, pods=pods, replacements=replacements, placement_why=placement_why, other_pods=other_pods)


def _replacement(node: str, replica: int, candidates: Iterable[Mapping[str, Any]]) -> drain.Replacement | None:
    found = None
    for other in candidates:
        elsewhere = facts.pod_view(other)
        if elsewhere and elsewhere.replica == replica and elsewhere.node != node and not elsewhere.terminating:
            found = drain.Replacement(elsewhere.name, elsewhere.node, elsewhere.ready, facts.ready_by(other))
    return found


def _unplaced(deployment: Mapping[str, Any]) -> str | None:
    """Why the deployment cannot place replicas (its Placed condition's message), or None."""
    why = None
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Placed" and condition.get("status") == "False":
            why = condition.get("message", "")
    return why


def gpu_pod(
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


def other_pod(pod: Mapping[str, Any]) -> str | None:
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


# -- round 1: node, finalizer, evictions ----------------------------------------------------------


def decide(view: View, decision: drain.Decision, seen: drain.World) -> Writes:
    """The finalizer, the record of an administrator's cordon, our cordon and label or the node given
    back, and the evictions ``decision`` asks for. Pure."""
    metadata, name = view.maintenance["metadata"], view.name
    writes = Writes(name, view.maintenance, node=view.spec.node_name)
    finalizers = list(metadata.get("finalizers") or [])
    if decision.add_finalizer and drain.FINALIZER not in finalizers:
        writes.add_finalizer = FinalizerWrite(metadata["resourceVersion"], [*finalizers, drain.FINALIZER])
    if "node_was_cordoned" in decision.status and view.previous.node_was_cordoned is None:
        writes.cordon_record = wire(GPUMaintenanceStatus(phase="Cordoned", **decision.status))
    if decision.cordon and (not view.node.unschedulable or view.node.maintenance_label != name):
        writes.node_patch = {"spec": {"unschedulable": True}, "metadata": {"labels": {keys.MAINTENANCE_LABEL: name}}}
    if decision.restore:
        writes.node_patch = restore_patch(name, bool(view.previous.node_was_cordoned), view.node)
    writes.evictions = [
        Eviction(pod, why, pod.deployment is not None and (pod.deployment, pod.replica or 0) in seen.replacements)
        for pod, why in decision.evict
    ]
    return writes


def restore_patch(name: str, was_cordoned: bool, state: drain.NodeState) -> dict[str, Any] | None:
    """Give the node back: our label off, and uncordoned unless an administrator had cordoned it."""
    patch: dict[str, Any] = {}
    if state.maintenance_label == name:
        patch["metadata"] = {"labels": {drain.MAINTENANCE_LABEL: None}}
    if not was_cordoned and state.unschedulable:
        patch["spec"] = {"unschedulable": None}
    return patch or None


# -- round 2: the report --------------------------------------------------------------------------


def decide_report(view: View, decision: drain.Decision, seen: drain.World, outcome: Outcome) -> Writes:
    """Events for replicas moved and a phase changed, and the status if it changed. Pure."""
    metadata, previous_raw = view.maintenance["metadata"], view.maintenance.get("status") or {}
    moved = drain.record_moves(previous_raw.get("moved") or [], seen)
    known = {entry["fromPod"] for entry in previous_raw.get("moved") or [] if entry.get("toPod")}
    events = [
        Event("ReplicaMoved", f"{entry['deployment']} replica {entry['replica']}: {entry['fromPod']} -> {entry['toPod']} "
              f"on {entry['toNode']}")
        for entry in moved
        if entry.get("toPod") and entry["fromPod"] not in known
    ]  # fmt: skip
    evicted = list(view.previous.evicted)
    evicted += [pod for pod in outcome.evicted if pod not in evicted]
    generation = int(metadata.get("generation", 0))
    conditions = previous_raw.get("conditions") or []
    new_status = drain.status(decision, view.previous, conditions, generation, outcome.refused, moved, evicted, view.now)
    if new_status["phase"] != view.previous.phase:
        events.append(Event(new_status["phase"], new_status["message"], new_status["phase"] == "Failed"))
    changed = any(previous_raw.get(key) != value for key, value in new_status.items())
    return Writes(view.name, view.maintenance, events=events, status=new_status if changed else None, phase=new_status["phase"])


# -- deletion ---------------------------------------------------------------------------------------


def decide_deletion(view: View) -> Writes:
    """Deleting a maintenance that touched the node returns the node first, then lets the object go. Pure."""
    metadata = view.maintenance["metadata"]
    finalizers = list(metadata.get("finalizers") or [])
    writes = Writes(view.name, view.maintenance, node=view.spec.node_name)
    if drain.FINALIZER not in finalizers:
        return writes
    if view.previous.phase in (*ACTIVE_PHASES, "Failed") and view.node.exists:
        writes.node_patch = restore_patch(view.name, bool(view.previous.node_was_cordoned), view.node)
        writes.events = [Event("Completed", "maintenance deleted: node returned to service")]
    writes.release_finalizer = FinalizerWrite(metadata["resourceVersion"], [f for f in finalizers if f != drain.FINALIZER])
    return writes


def moves_to_record(view: View, decision: drain.Decision) -> bool:
    """Whether the replicas on the node must be noted now, as it is cordoned, before their surge starts:
    should this operator restart, a deployment's own reconcile may evict one (its replacement Ready)
    before this controller looks at the node again, and the move would go unrecorded."""
    return view.previous.phase == "Pending" and decision.cordon and view.node.exists


def phases(everything: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many maintenances are in each phase (the gauge)."""
    counts: dict[str, int] = {}
    for body in everything:
        phase = (body.get("status") or {}).get("phase", "Pending")
        counts[phase] = counts.get(phase, 0) + 1
    return counts
