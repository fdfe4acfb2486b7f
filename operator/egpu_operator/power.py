"""Which GPU's power limit each replica asks for, and the node annotations that say so. Pure.

The device plugin, not the operator, decides which GPU a pod gets. The node agent asks the
kubelet (its PodResources API; simulated on KWOK nodes) and publishes the answer in
``egpu-operator.io/gpu-assignments``; where a node has it, each replica's limit goes to exactly
the GPU(s) its pod got, and a replica the agent has not reported yet gets none until it is.
Where a node does not have it (an agent that may not read the kubelet's socket, an older agent),
the operator attributes limits by count: a deployment with k replicas on a node owns the limits
of k GPUs there, lowest index first among GPUs no other deployment owns. On single-GPU nodes
(most edge hosts) both are exact.
Ownership is kept on the node in ``egpu-operator.io/power-limit-owners`` so two deployments
sharing a node never overwrite each other's limits. An owners value that does not parse is
ignored (and rewritten), never trusted and never a reason to fail.

Limits are requested only for GPUs a replica has whole: a power limit is per physical GPU, so
on a MIG slice, a vGPU or a time-sliced share it would cap every other tenant on that GPU.
"""

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from egpu_api import keys
from egpu_api.assignments import parse_assignments, pod_key
from egpu_api.gpus import WHOLE_GPU_MODES
from egpu_api.power import PowerContractError, parse_request, parse_status

#: Kept importable under this name (tests use it); defined in egpu_api.keys.
OWNERS_ANNOTATION = keys.POWER_OWNERS_ANNOTATION


def whole_gpus(mode: str, gpu_allocatable: int, gpu_count: int) -> bool:
    """Whether each ``nvidia.com/gpu`` of the node is one whole physical GPU: not MIG, not vGPU,
    and not more units than GPUs (the device plugin's time-slicing advertises replicas)."""
    return mode in WHOLE_GPU_MODES and 0 < gpu_allocatable <= gpu_count


def parse_owners(text: str | None) -> tuple[dict[str, str], str | None]:
    """The owners annotation as {gpu uuid: owner}, and why it was ignored if it does not parse."""
    if not text:
        return {}, None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {}, f"{OWNERS_ANNOTATION} is not a JSON object of GPU UUID to owner: {text[:80]!r}"
    return dict(value), None


def request_problem(annotations: Mapping[str, str]) -> str | None:
    """Why the node's power request cannot be read (the contract's sentence), or None."""
    try:
        parse_request(annotations.get(keys.POWER_REQUEST_ANNOTATION))
    except PowerContractError as error:
        return str(error)
    return None


def _last_requested(annotations: Mapping[str, str], owners: Mapping[str, str]) -> dict[str, int]:
    """For an unreadable request: each owned GPU's watts as the agent last saw them requested, so
    rewriting the request keeps the other owners' limits instead of dropping them to the default."""
    try:
        status = parse_status(annotations.get(keys.POWER_STATUS_ANNOTATION))
    except PowerContractError:
        return {}
    return {
        uuid: entry.requested_watts
        for uuid, entry in status.items()
        if uuid in owners and entry.requested_watts is not None and entry.requested_watts > 0
    }


def owned_by(nodes: Mapping[str, Mapping[str, Any]], owner: str) -> list[str]:
    """The nodes where ``owner`` (namespace/name) holds a GPU's power limit."""
    return [
        name
        for name, node in nodes.items()
        if owner in parse_owners(((node.get("metadata") or {}).get("annotations") or {}).get(OWNERS_ANNOTATION))[0].values()
    ]


def assigned_gpus(
    annotations: Mapping[str, str], namespace: str, pods: Sequence[str], gpu_uuids: Sequence[str]
) -> dict[str, tuple[str, ...]] | None:
    """Each of ``pods`` (names in ``namespace``) with the node's GPUs its agent says it got, lowest
    index first; () for a pod not reported yet. None when the node does not say: count instead."""
    assignments = parse_assignments(annotations.get(keys.GPU_ASSIGNMENTS_ANNOTATION))
    if assignments is None:
        return None
    return {pod: tuple(uuid for uuid in gpu_uuids if uuid in assignments.get(pod_key(namespace, pod), ())) for pod in pods}


def pod_limits(
    pods: Sequence[str], shares: Mapping[str, int], gpu_uuids: Sequence[str], assigned: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, int]]:
    """The GPU whose limit each pod's status reports, and its watts: the pod's own GPU where the
    node says which it got; by count otherwise (lowest replica to lowest GPU index)."""
    if assigned is not None:
        return {
            pod: (uuid, shares[uuid]) for pod in pods if (uuid := next((u for u in assigned.get(pod, ()) if u in shares), None))
        }
    ordered = sorted(shares.items(), key=lambda item: gpu_uuids.index(item[0]))
    return {pod: share for pod, share in zip(pods, ordered, strict=False)}


def target_watts(limit_watts: int | None, fraction: float | None, default_watts: int) -> int | None:
    if limit_watts is not None:
        return limit_watts
    if fraction is not None and default_watts > 0:
        return max(1, math.floor(default_watts * fraction))
    return None


def desired_annotations(
    annotations: Mapping[str, str],
    owner: str,
    replicas_here: int,
    gpu_uuids: tuple[str, ...],
    power_defaults: tuple[int, ...],
    limit_watts: int | None,
    fraction: float | None,
    assigned: Collection[str] | None = None,
) -> tuple[dict[str, str], dict[str, int]]:
    """New (request, owners) annotation values for ``owner`` on one node, and its GPU -> watts share.

    ``assigned``: the GPUs its pods got, where the node says (see ``assigned_gpus``); those are
    the owner's, whoever the owners annotation named before (a count made before the agent said).
    None: the first ``replicas_here`` GPUs it owns or no one does."""
    owners, _ = parse_owners(annotations.get(OWNERS_ANNOTATION))
    try:
        request = parse_request(annotations.get(keys.POWER_REQUEST_ANNOTATION))
    except PowerContractError:
        request = _last_requested(annotations, owners)
    if assigned is not None:
        wanted = [uuid for uuid in gpu_uuids if uuid in assigned]
    else:
        mine = [uuid for uuid in gpu_uuids if owners.get(uuid) == owner]
        free = [uuid for uuid in gpu_uuids if uuid not in owners]
        wanted = (mine + free)[: max(0, replicas_here)]
    if not (limit_watts or fraction):
        wanted = []
    shares: dict[str, int] = {}
    for uuid in list(owners):
        if owners[uuid] == owner and uuid not in wanted:
            del owners[uuid]
            request.pop(uuid, None)
    for uuid in wanted:
        default = power_defaults[gpu_uuids.index(uuid)] if gpu_uuids.index(uuid) < len(power_defaults) else 0
        watts = target_watts(limit_watts, fraction, default)
        if watts is None:
            continue
        owners[uuid] = owner
        request[uuid] = watts
        shares[uuid] = watts
    values = {
        keys.POWER_REQUEST_ANNOTATION: json.dumps(request, sort_keys=True, separators=(",", ":")),
        OWNERS_ANNOTATION: json.dumps(owners, sort_keys=True, separators=(",", ":")),
    }
    return values, shares


@dataclass(frozen=True)
class PowerWant:
    """What one deployment (``owner``) wants of one node's power limits: its replicas there, the limit.

    The controller decides this; ``node_decision`` merges it with the node's annotations as they
    are when written (other owners write the same annotations, so the merge is redone on each
    read of a read-modify-write, never against a view that may be a moment old)."""

    node: str
    owner: str  # namespace/name
    namespace: str
    pods: tuple[str, ...]  # the replicas on the node, lowest replica first
    whole: bool  # each GPU unit is one whole physical GPU (see ``whole_gpus``); else no limit by count
    gpu_uuids: tuple[str, ...]
    power_defaults: tuple[int, ...]
    limit_watts: int | None
    fraction: float | None


@dataclass(frozen=True)
class PowerDecision:
    """A ``PowerWant`` merged with a node's annotations: the values to write, this owner's GPU -> watts,
    which GPU each pod got where the node says (None: by count), and annotations that were unreadable."""

    values: dict[str, str]
    shares: dict[str, int]
    assigned: dict[str, tuple[str, ...]] | None
    problems: tuple[str, ...]

    def pod_limits(self, want: PowerWant) -> dict[str, tuple[str, int]]:
        return pod_limits(want.pods, self.shares, want.gpu_uuids, self.assigned)

    def waiting(self, want: PowerWant) -> set[str]:
        """Pods with a limit to get whose GPU the agent has not reported yet."""
        if self.assigned is None or not want.whole or not (want.limit_watts or want.fraction):
            return set()
        return {pod for pod, gpus in self.assigned.items() if not gpus}


def node_decision(want: PowerWant, annotations: Mapping[str, str]) -> PowerDecision:
    """The annotations ``want`` leads to on a node that holds ``annotations`` now."""
    problems = (parse_owners(annotations.get(OWNERS_ANNOTATION))[1], request_problem(annotations))
    assigned = assigned_gpus(annotations, want.namespace, want.pods, want.gpu_uuids)
    exact = None if assigned is None else {uuid for gpus in assigned.values() for uuid in gpus} if want.whole else set()
    count = len(want.pods) if want.whole else 0
    values, shares = desired_annotations(
        annotations, want.owner, count, want.gpu_uuids, want.power_defaults, want.limit_watts, want.fraction, exact
    )
    return PowerDecision(values, shares, assigned, tuple(problem for problem in problems if problem))


def release(owner: str, annotations: Mapping[str, str]) -> dict[str, str]:
    """The annotations with every limit ``owner`` requested dropped (its deployment is being deleted)."""
    values, _ = desired_annotations(annotations, owner, 0, (), (), None, None)
    return values
