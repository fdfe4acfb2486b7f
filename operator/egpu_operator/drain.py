"""One step of a GPUMaintenance: what to do to the node and its pods, and what to report. Pure.

The controller (``maintenance``) gathers a ``World`` — the node, the GPU pods on it, where
each InferenceDeployment replica's replacement stands — and ``decide`` returns the next phase,
the node changes and the evictions. After running them, ``status`` turns the decision and
the evictions the API server refused into the status and conditions users read.

Why surge-then-evict: ``kubectl drain`` evicts first and lets the workload find a home after;
a one-replica model on a slow link is then down for its whole load time. Here the replica's
own controller (``reconcile``) sees the cordon and starts a replacement on another adequate
node; only when that one is Ready is the old pod evicted — through the Eviction API, so any
PodDisruptionBudget still has the last word.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from egpu_api import keys
from egpu_api.inference import Condition
from egpu_api.maintenance import ACTIVE_PHASES, GPUMaintenanceSpec, GPUMaintenanceStatus, MovedReplica, Phase
from egpu_operator.status import condition, wire
from egpu_runtime import timestamps

#: Kept importable under these names (the chart's tests use them); defined in egpu_api.keys.
MAINTENANCE_LABEL = keys.MAINTENANCE_LABEL
FINALIZER = keys.MAINTENANCE_FINALIZER
#: A maintenance's name is a label value on its node.
MAINTENANCE_NAME_MAX = 63
#: Pods named in one status message before "and N more": a line a person reads, not a listing.
LISTED_PODS_MAX = 5


@dataclass(frozen=True)
class NodeState:
    exists: bool = True
    unschedulable: bool = False
    maintenance_label: str | None = None


@dataclass(frozen=True)
class GpuPod:
    """A pod on the node that holds GPUs (or a DaemonSet pod, which is left alone)."""

    namespace: str
    name: str
    deployment: str | None = None  # namespace/name of the InferenceDeployment it is a replica of
    replica: int | None = None
    terminating: bool = False
    daemonset: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Replacement:
    """The pod of the same deployment and replica on another node."""

    pod: str
    node: str
    ready: bool
    ready_by: datetime | None = None  # its creation time plus its load estimate, when both are known


@dataclass(frozen=True)
class World:
    node: NodeState
    pods: Sequence[GpuPod] = ()
    replacements: Mapping[tuple[str, int], Replacement] = field(default_factory=dict)
    placement_why: Mapping[str, str] = field(default_factory=dict)  # deployment -> its Placed=False message
    slot_wait: str | None = None  # why this maintenance may not start yet (parallel limit, node busy)
    # Pods on the node that hold no GPU (namespace/name; DaemonSet and static pods left out): the
    # drain does not move them, so "safe to service" must say they are still there.
    other_pods: Sequence[str] = ()


class Carried(TypedDict, total=False):
    """Status fields a decision sets once, carried into the new status (``GPUMaintenanceStatus`` names)."""

    node_was_cordoned: bool
    started_at: str
    ready_at: str
    completed_at: str
    planned_ready_at: str


@dataclass
class Decision:
    phase: Phase
    cordon: bool = False  # make sure the node is cordoned and labelled
    restore: bool = False  # give the node back: uncordon unless it was cordoned before, drop the label
    add_finalizer: bool = False
    evict: list[tuple[GpuPod, str]] = field(default_factory=list)  # pod, why (for events and logs)
    waiting: list[str] = field(default_factory=list)
    wait_reason: str = ""
    unmanaged: list[str] = field(default_factory=list)  # unmanaged GPU pods waited for (unmanagedGpuPods: Wait)
    other_pods: Sequence[str] = ()  # non-GPU pods left on a drained node, for the Ready message
    never_started: bool = False  # completed while Pending: the node was never cordoned or drained
    failure: tuple[str, str] | None = None  # reason, message
    status: Carried = field(default_factory=lambda: Carried())  # fields to carry into the new status


def decide(spec: GPUMaintenanceSpec, previous: GPUMaintenanceStatus, world: World, now: datetime) -> Decision:
    phase = previous.phase
    if phase == "Completed" or (phase == "Failed" and not spec.completed):
        return Decision(phase)
    if phase == "Failed" or (phase in ACTIVE_PHASES and spec.completed):
        # A maintenance that failed before cordoning (no node) has nothing to give back.
        touched = previous.started_at is not None
        return Decision(
            "Completed",
            restore=world.node.exists and touched,
            never_started=not touched,
            status={"completed_at": timestamps.rfc3339(now)},
        )
    if phase == "Pending":
        if spec.completed:
            # Completed before its turn came: nothing was drained, and the status must not say otherwise.
            return Decision("Completed", never_started=True, status={"completed_at": timestamps.rfc3339(now)})
        if not world.node.exists:
            return _failed("NodeNotFound", f"node {spec.node_name} does not exist")
        if world.slot_wait is not None:
            return Decision("Pending", waiting=[world.slot_wait], wait_reason="WaitingForSlot")
        # Remember an administrator's cordon before adding ours: it must outlive this maintenance.
        # The pods are looked at from the next step on, once the cordon keeps new ones away.
        carried = Carried(node_was_cordoned=world.node.unschedulable, started_at=timestamps.rfc3339(now))
        return Decision("Cordoned", cordon=True, add_finalizer=True, status=carried)
    if not world.node.exists:
        return _failed("NodeDeleted", f"node {spec.node_name} was deleted during the maintenance")

    decision = Decision(phase, cordon=True, add_finalizer=True)
    remaining = [pod for pod in world.pods if not pod.daemonset]
    if not remaining:
        decision.phase = "Ready"
        decision.status["ready_at"] = previous.ready_at or timestamps.rfc3339(now)
        decision.other_pods = world.other_pods
        return decision
    if world.node.unschedulable:
        decision.phase = "Evacuating"  # cordoned for sure: no new GPU pod can land while we move the others
    for pod in remaining:
        _plan_pod(pod, spec, world, decision)
    planned = [r.ready_by for r in world.replacements.values() if not r.ready and r.ready_by is not None]
    if planned:
        decision.status["planned_ready_at"] = timestamps.rfc3339(max(planned))
    timeout = spec.drain_timeout_seconds
    started = previous.started_at
    if started and (now - timestamps.parse(started)).total_seconds() > timeout:
        left = listed([pod.key for pod in remaining])
        return _failed(
            "DrainTimeout",
            f"node not drained within drainTimeoutSeconds ({timeout} s); still on it: {left}; node left cordoned: "
            "move or delete those pods, then set spec.completed=true (or delete this GPUMaintenance)",
        )
    return decision


def listed(names: Sequence[str], limit: int = LISTED_PODS_MAX) -> str:
    """``a, b, c and 4 more``: at most ``limit`` names, so one line stays one line."""
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _plan_pod(pod: GpuPod, spec: GPUMaintenanceSpec, world: World, decision: Decision) -> None:
    if decision.phase == "Cordoned":
        return  # wait for the cordon to show before moving anything, or a replacement could land here
    if pod.terminating:
        decision.waiting.append(f"{pod.key} is terminating")
        decision.wait_reason = decision.wait_reason or "WaitingForPods"
        return
    if pod.deployment is None:
        if spec.unmanaged_gpu_pods == "Evict":
            decision.evict.append((pod, "unmanaged GPU pod (unmanagedGpuPods: Evict)"))
        else:
            decision.unmanaged.append(pod.key)
            decision.wait_reason = decision.wait_reason or "WaitingForPods"
        return
    replica = f"{pod.deployment} replica {pod.replica}"
    replacement = world.replacements.get((pod.deployment, pod.replica or 0))
    if replacement is not None and replacement.ready:
        decision.evict.append((pod, f"replacement {replacement.pod} is Ready on {replacement.node}"))
    elif replacement is not None:
        by = f", Ready by {timestamps.rfc3339(replacement.ready_by)} as planned" if replacement.ready_by is not None else ""
        decision.waiting.append(f"{replica}: replacement {replacement.pod} on {replacement.node} is loading the model{by}")
        decision.wait_reason = "WaitingForReplacement"
    elif pod.deployment not in world.placement_why:
        # The deployment has not yet said it cannot place: its reconcile is about to surge a
        # replacement, so capacity is not reduced merely because the drain looked first.
        decision.waiting.append(f"{replica}: waiting for the operator to place a replacement")
        decision.wait_reason = "WaitingForReplacement"
    elif spec.capacity_policy == "AllowReducedCapacity":
        decision.evict.append((pod, "no other adequate node; capacityPolicy AllowReducedCapacity"))
    else:
        decision.waiting.append(f"{replica} has no other adequate node ({world.placement_why[pod.deployment]})")
        decision.wait_reason = "NoAdequateNode"


def _failed(reason: str, message: str) -> Decision:
    return Decision("Failed", failure=(reason, message))


def status(
    decision: Decision,
    previous: GPUMaintenanceStatus,
    previous_conditions: Sequence[Mapping[str, Any]],
    generation: int,
    refused: Mapping[str, str],  # pod key -> why the API server refused its eviction
    moved: Sequence[Mapping[str, Any]],
    evicted: Sequence[str],
    now: datetime,
) -> dict[str, Any]:
    """The status after a step: phase, one-line message, conditions per API conventions."""
    waiting = [*decision.waiting, *(f"eviction of {pod} refused: {why}" for pod, why in refused.items())]
    if decision.unmanaged:
        waiting.append(
            f"{listed(decision.unmanaged)} (GPU pods not managed by egpu-operator) to finish "
            "(unmanagedGpuPods: Wait; set it to Evict to evict them)"
        )
    message = _message(decision, waiting)

    def cond(kind: str, ok: bool, reason: str, text: str) -> Condition:
        return condition(previous_conditions, kind, ok, reason, text, generation, now)

    was_cordoned = decision.status.get("node_was_cordoned", previous.node_was_cordoned)
    written = GPUMaintenanceStatus(
        phase=decision.phase,
        message=message,
        moved=[MovedReplica.model_validate(entry) for entry in moved],
        evicted=list(evicted),
        unmanaged_gpu_pods=decision.unmanaged,
        observed_generation=generation,
        conditions=_conditions(decision, message, bool(refused), bool(was_cordoned), cond),
        **decision.status,
    )
    return wire(written)


def _message(decision: Decision, waiting: Sequence[str]) -> str:
    """The status's one line: what the maintenance is at, or waits for."""
    phase = decision.phase
    if decision.failure is not None:
        return decision.failure[1]
    if phase == "Pending":
        return f"waiting to start: {'; '.join(waiting)}" if waiting else "waiting to start"
    if phase == "Ready":
        message = "no GPU workload left on the node: safe to service the GPUs; set spec.completed=true when done"
        if decision.other_pods:
            count = len(decision.other_pods)
            message += (
                f"; {count} non-GPU pod(s) still run on the node and were not drained: {listed(decision.other_pods)}"
                " (drain them too before powering the node off)"
            )
        return message
    if phase == "Completed" and decision.never_started:
        return "completed before the drain started: the node was neither cordoned nor drained"
    if phase == "Completed":
        return "node returned to service"
    if phase == "Cordoned":
        return "node cordoned; waiting for the cordon to be seen before moving replicas"
    return f"waiting for: {'; '.join(waiting)}" if waiting else "evicting GPU pods"


def _conditions(
    decision: Decision, message: str, refused: bool, was_cordoned: bool, cond: Callable[[str, bool, str, str], Condition]
) -> list[Condition]:
    """Started, Cordoned, Evacuated and Failed as the phase has them (``refused``: an eviction was refused)."""
    phase = decision.phase
    started = phase != "Pending" and not decision.never_started
    not_started_reason = "NotStarted" if decision.never_started else "WaitingForSlot"
    conditions = [cond("Started", started, "Started" if started else not_started_reason, "drain started" if started else message)]
    if started and phase != "Completed":
        cordon_note = " (an administrator had cordoned it before; it stays cordoned afterwards)" if was_cordoned else ""
        conditions.append(cond("Cordoned", True, "Cordoned", f"node cordoned{cordon_note}"))
    elif phase == "Completed" and started:
        if was_cordoned:
            conditions.append(cond("Cordoned", True, "AdminCordon", "node stays cordoned: an administrator had cordoned it"))
        else:
            conditions.append(cond("Cordoned", False, "Uncordoned", "node returned to service"))
    if started:
        done = phase in ("Ready", "Completed")
        reason = "NoGPUWorkload" if done else ("DisruptionBudget" if refused else decision.wait_reason or "Evicting")
        if decision.failure is not None:
            reason = decision.failure[0]
        conditions.append(cond("Evacuated", done, reason, "no GPU workload on the node" if done else message))
    if decision.failure is not None:
        conditions.append(cond("Failed", True, decision.failure[0], decision.failure[1]))
    return conditions


def record_moves(previous: Sequence[Mapping[str, Any]], world: World) -> list[dict[str, Any]]:
    """The moved-replica list: every replica seen on the node, with its replacement once known."""
    moved = {entry["fromPod"]: dict(entry) for entry in previous}
    for pod in world.pods:
        if pod.deployment is not None and pod.key not in moved:
            moved[pod.key] = {"deployment": pod.deployment, "replica": pod.replica or 0, "fromPod": pod.key}
    for entry in moved.values():
        replacement = world.replacements.get((entry["deployment"], entry["replica"]))
        if replacement is not None and replacement.ready:
            entry["toPod"], entry["toNode"] = replacement.pod, replacement.node
    return sorted(moved.values(), key=lambda entry: entry["fromPod"])


def slot_wait(name: str, node: str, created: str, maintenances: Sequence[Mapping[str, Any]], limit: int) -> str | None:
    """Why a Pending maintenance may not start yet, or None. The oldest pending ones go first."""
    others = [m for m in maintenances if m["metadata"]["name"] != name]
    active = [m for m in others if ((m.get("status") or {}).get("phase") in ACTIVE_PHASES)]
    busy = [m["metadata"]["name"] for m in active if m["spec"].get("nodeName") == node]
    if busy:
        return f"node {node} is already in maintenance {', '.join(busy)}"
    ahead = [
        m["metadata"]["name"]
        for m in others
        if (m.get("status") or {}).get("phase", "Pending") == "Pending"
        and not m["spec"].get("completed")
        and not m["metadata"].get("deletionTimestamp")
        and (m["metadata"].get("creationTimestamp", ""), m["metadata"]["name"]) < (created, name)
    ]
    if len(active) + len(ahead) >= limit:
        holders = ", ".join(sorted(m["metadata"]["name"] for m in active)) or "none"
        queue = f"; queued behind {', '.join(ahead)}" if ahead else ""
        return f"{len(active)} of at most {limit} maintenance(s) in progress ({holders}){queue}"
    return None


def auto_maintenance(node: str, health: str, since: str, message: str) -> dict[str, Any]:
    """The GPUMaintenance the operator files itself for a lost GPU or a degraded link. Its name is
    derived from the node and when the problem began, so a restarted operator files it once."""
    stamp = "".join(ch for ch in since if ch.isdigit())[:14]
    suffix = f"-gpu-{health}-{stamp}"
    name = f"{node}{suffix}"
    if len(name) > MAINTENANCE_NAME_MAX:
        # The name becomes the node's maintenance label value (at most 63 characters, the CRD
        # refuses longer): cut the node name and keep it unique with a digest of the whole.
        node_digest = "-" + hashlib.sha256(node.encode()).hexdigest()[:8]
        name = node[: MAINTENANCE_NAME_MAX - len(node_digest) - len(suffix)].rstrip("-.") + node_digest + suffix
    return {
        "apiVersion": f"{keys.API_GROUP}/{keys.API_VERSION}",
        "kind": "GPUMaintenance",
        "metadata": {"name": name, "labels": {keys.AUTO_MAINTENANCE_LABEL: "true"}},
        "spec": {"nodeName": node, "reason": f"automatic: GPU {health}: {message}"[:1024]},
    }
