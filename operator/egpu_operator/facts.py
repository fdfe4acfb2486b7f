"""Turn Nodes, Leases and Pods (as plain dicts) into the facts placement needs. Pure.

Odd cluster state never raises: a node whose labels are missing or malformed gets a
``problem`` sentence that shows up in the Placed condition's counts and in the log.
"""

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from egpu_api import keys
from egpu_api.gpus import GpuMode
from egpu_api.quantity import parse_bytes
from egpu_operator import fit
from egpu_operator.liveness import Liveness
from egpu_operator.placement import Device, NodeFacts, PodView, Slice
from egpu_runtime import timestamps

_MODES = frozenset(GpuMode)
_HEALTH = {"ok", "degraded", "lost"}
# Stages of a load the agent publishes when it knows them; each must be a positive whole MB/s.
_OPTIONAL_RATES = (
    keys.STORAGE_READ_MBPS_LABEL,
    keys.PCIE_MEASURED_PAGEABLE_MBPS_LABEL,
    keys.PCIE_MEASURED_PINNED_MBPS_LABEL,
    keys.PCIE_SHARED_LINK_MBPS_LABEL,
)


def node_facts(
    node: Mapping[str, Any], liveness: Liveness = Liveness.ALIVE, shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES
) -> NodeFacts:
    """``liveness``: of the node's agent, as ``egpu_operator.liveness`` judged it from its Lease;
    ``shared``: the names time-sliced or MPS GPUs may be advertised under."""
    metadata = node.get("metadata", {})
    labels: Mapping[str, str] = metadata.get("labels") or {}
    common = _common(node, labels, liveness, shared)
    if labels.get(keys.LABEL_SCHEMA_LABEL) != keys.LABEL_SCHEMA:
        if keys.LABEL_SCHEMA_LABEL in labels:
            return NodeFacts(problem=f"label schema {labels[keys.LABEL_SCHEMA_LABEL]!r} not understood", **common)
        return NodeFacts(problem="no egpu-operator labels (node agent not running?)", **common)
    numbers = {
        key: _int(labels.get(key))
        for key in (keys.GPU_VRAM_MIB_LABEL, keys.PCIE_BANDWIDTH_MBPS_LABEL, keys.PCIE_GENERATION_LABEL, keys.PCIE_WIDTH_LABEL)
    }
    mode, health = labels.get(keys.GPU_MODE_LABEL, ""), labels.get(keys.HEALTH_LABEL, "")
    if health == "lost":
        # A lost GPU has no link to read, so its agent publishes no PCIe labels: that is the news
        # (GPU lost), not a malformed node.
        numbers = {key: 0 if value is None else value for key, value in numbers.items()}
    if any(value is None for value in numbers.values()) or mode not in _MODES or health not in _HEALTH:
        return NodeFacts(problem="malformed egpu-operator labels", **common)
    optional = {key: labels.get(key) for key in _OPTIONAL_RATES}
    rates = {key: _int(value) for key, value in optional.items() if value is not None}
    if any(value is None or value <= 0 for value in rates.values()):
        return NodeFacts(problem="malformed egpu-operator labels", **common)
    uuids, defaults = _gpus(metadata.get("annotations") or {})
    return NodeFacts(
        vram_mib=numbers[keys.GPU_VRAM_MIB_LABEL] or 0,
        bandwidth_mbps=numbers[keys.PCIE_BANDWIDTH_MBPS_LABEL] or 0,
        pcie_generation=numbers[keys.PCIE_GENERATION_LABEL] or 0,
        pcie_width=numbers[keys.PCIE_WIDTH_LABEL] or 0,
        storage_mbps=rates.get(keys.STORAGE_READ_MBPS_LABEL),
        pageable_mbps=rates.get(keys.PCIE_MEASURED_PAGEABLE_MBPS_LABEL),
        pinned_mbps=rates.get(keys.PCIE_MEASURED_PINNED_MBPS_LABEL),
        shared_link_mbps=rates.get(keys.PCIE_SHARED_LINK_MBPS_LABEL),
        mode=mode,
        health=health,
        gpu_uuids=uuids,
        power_defaults=defaults,
        **common,
    )


def _common(node: Mapping[str, Any], labels: Mapping[str, str], liveness: Liveness, shared: tuple[str, ...]) -> dict[str, Any]:
    """What every node has, agent or not: name, taints, cordon, resources."""
    spec = node.get("spec") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    taints = tuple(
        (str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", "")))
        for t in spec.get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )
    return {
        "name": node.get("metadata", {}).get("name", ""),
        "taints": taints,
        "labels": dict(labels),
        "unschedulable": bool(spec.get("unschedulable")),
        "maintenance": keys.MAINTENANCE_LABEL in labels,
        "liveness": liveness,
        "allocatable": resources(allocatable),
        **_gpu_resources(allocatable, labels, shared),
        "gpu_units": _int(labels.get(keys.GPU_COUNT_LABEL)) or 0,
    }


def _gpu_resources(allocatable: Mapping[str, Any], labels: Mapping[str, str], shared: tuple[str, ...]) -> dict[str, Any]:
    """How the node's GPUs reach pods: the whole-GPU resource (``nvidia.com/gpu``, or the renamed
    ``nvidia.com/gpu.shared`` of time-slicing and MPS, or another of ``shared``) and its count, and MIG
    "mixed" slices with the memory GPU Feature Discovery labels them with (else the profile's name
    says it: 3g.40gb, 40 GB)."""
    counts = {
        name: number for name, value in allocatable.items() if keys.is_gpu_resource(name, shared) and (number := _int(value))
    }
    renamed = [name for name in shared if counts.get(name)]
    whole = renamed[0] if renamed and not counts.get(keys.GPU_RESOURCE) else keys.GPU_RESOURCE
    slices = tuple(
        Slice(name, _slice_mib(name, labels), count)
        for name, count in sorted(counts.items())
        if name.startswith(keys.MIG_RESOURCE_PREFIX) and count > 0
    )
    return {"gpu_resource": whole, "gpu_allocatable": counts.get(whole, 0), "slices": slices}


def _slice_mib(resource: str, labels: Mapping[str, str]) -> int:
    labelled = _int(labels.get(f"{resource}{keys.GFD_MIG_MEMORY_SUFFIX}"))
    if labelled is not None and labelled > 0:
        return labelled
    match = _PROFILE_GB.search(resource)
    # "40gb" is the marketing size; the slice holds a little less (3g.40gb: 40192 MiB of 40 GB = 38147 MiB).
    return int(int(match.group(1)) * 1e9 / 2**20) if match else 0


_PROFILE_GB = re.compile(r"\.([0-9]+)gb")


def resources(quantities: Mapping[str, Any]) -> dict[str, int]:
    """A node's allocatable (or any resource list) as the scheduler counts it; an entry that does
    not parse is left out, as if the node did not offer it."""
    counted = {}
    for name, value in quantities.items():
        try:
            counted[str(name)] = fit.units(str(name), value)
        except ValueError:
            continue
    return counted


#: What one pod holds on its node: (pod name, GPUs, VRAM MiB it says it needs, its requests).
Usage = tuple[str, int, int | None, dict[str, int]]


def usage(pod: Mapping[str, Any], shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES) -> tuple[str, Usage] | None:
    """The node a pod holds resources on and what it holds there; None for a pod that holds none:
    finished, or not bound and either not pinned to a node or refused by the scheduler (the
    scheduler counts bound pods only; a replica pod pinned by the operator is counted as it binds)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node:
        view = pod_view(pod)
        if view is None or view.unschedulable or view.gated:
            return None
        node = _affinity_node(pod)
    if not node:
        return None
    try:
        requests = fit.pod_requests(spec)
    except ValueError:
        requests = {fit.PODS: 1}  # the API server accepted it, so this does not happen; count the pod at least
    name = str((pod.get("metadata") or {}).get("name", ""))
    return str(node), (name, gpu_requests(pod, shared) or dra_replica(pod), vram_annotation(pod), requests)


def lease_time(lease: Mapping[str, Any]) -> datetime | None:
    renew = (lease.get("spec") or {}).get("renewTime")
    if not isinstance(renew, str):
        return None
    try:
        return timestamps.parse(renew)
    except ValueError:
        return None


def pod_view(pod: Mapping[str, Any]) -> PodView | None:
    """A replica pod as placement sees it; None for a pod without a valid replica label."""
    metadata = pod.get("metadata", {})
    replica = _int((metadata.get("labels") or {}).get(keys.REPLICA_LABEL))
    if replica is None:
        return None
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    node = (pod.get("spec") or {}).get("nodeName") or _affinity_node(pod) or ""
    terminating = metadata.get("deletionTimestamp") is not None or status.get("phase") in ("Succeeded", "Failed")
    scheduled: Mapping[str, Any] = next(
        (c for c in conditions if c.get("type") == "PodScheduled" and c.get("status") == "False"), {}
    )
    return PodView(
        metadata.get("name", ""),
        replica,
        node,
        ready=ready,
        terminating=terminating,
        unschedulable=scheduled.get("reason") == "Unschedulable" and not (pod.get("spec") or {}).get("nodeName"),
        gated=bool((pod.get("spec") or {}).get("schedulingGates")) or scheduled.get("reason") == "SchedulingGated",
        scheduler_message=str(scheduled.get("message") or ""),
    )


def ready_by(pod: Mapping[str, Any]) -> datetime | None:
    """When a replica pod should be Ready: its creation time plus its load estimate; None if unknown."""
    metadata = pod.get("metadata") or {}
    created = metadata.get("creationTimestamp")
    estimate = (metadata.get("annotations") or {}).get(keys.ESTIMATED_LOAD_ANNOTATION)
    try:
        start = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        return start + timedelta(seconds=float(str(estimate)))
    except (TypeError, ValueError, OverflowError):
        return None


def vram_annotation(pod: Mapping[str, Any]) -> int | None:
    """The GPU memory a replica pod says it needs (MiB), or None."""
    value = _int(((pod.get("metadata") or {}).get("annotations") or {}).get(keys.VRAM_ANNOTATION))
    return value if value is not None and value > 0 else None


def vram_used_per_node(usage: Mapping[str, Iterable[Usage]], nodes: Mapping[str, NodeFacts]) -> dict[str, int]:
    """MiB held by each node's GPU pods: what a replica pod says, else a whole GPU per GPU it requests."""
    used: dict[str, int] = {}
    for node, store in usage.items():
        unit = nodes[node].vram_mib if node in nodes else 0
        used[node] = sum(vram if vram is not None else gpus * unit for _, gpus, vram, _ in store if gpus)
    return used


def requested_per_node(usage: Mapping[str, Iterable[Usage]]) -> dict[str, dict[str, int]]:
    """What the pods on each node request, summed per resource, as kube-scheduler's NodeInfo holds it."""
    totals: dict[str, dict[str, int]] = {}
    for node, store in usage.items():
        total = totals.setdefault(node, {})
        for _, _, _, requests in store:
            for resource, amount in requests.items():
                total[resource] = total.get(resource, 0) + amount
    return totals


def loading_per_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Replica pods still loading their model (bound or pinned to a node, not Ready, not going), per node."""
    counts: dict[str, int] = {}
    for pod in pods:
        view = pod_view(pod)
        if view is not None and view.node and not view.ready and not view.terminating:
            counts[view.node] = counts.get(view.node, 0) + 1
    return counts


def controlled_replicas(deployment: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[PodView]:
    """The replica pods ``deployment`` controls (its uid in their controller owner reference), as
    placement sees them: a look-alike pod someone else made, labels and all, is never counted as
    a replica, moved, or given a power limit."""
    uid = (deployment.get("metadata") or {}).get("uid")
    return [view for pod in pods if controller_uid(pod) == uid and (view := pod_view(pod))]


def controller_uid(pod: Mapping[str, Any]) -> str | None:
    """UID of the object that controls the pod (its controller owner reference), if any."""
    for reference in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("uid") or "") or None
    return None


def gpu_requests(pod: Mapping[str, Any], shared: tuple[str, ...] = keys.SHARED_GPU_RESOURCES) -> int:
    """GPUs (or slices, or shares of one) a pod holds on its node, in every form the device plugin
    advertises (limits, as the device plugin counts them); ``shared``: the shared GPUs' names."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += sum(_int(value) or 0 for name, value in limits.items() if keys.is_gpu_resource(name, shared))
    return total


def slice_devices(resource_slice: Mapping[str, Any], drivers: Iterable[str]) -> tuple[str, list[Device]]:
    """The node a ResourceSlice belongs to and the GPUs it publishes, for the DRA ``drivers`` the
    operator places on; ("", []) for any other slice. A device without a uuid or a readable memory
    capacity is left out: no claim could select it by uuid, or placement could not size it."""
    spec = resource_slice.get("spec") or {}
    driver, node = str(spec.get("driver") or ""), str(spec.get("nodeName") or "")
    if driver not in drivers or not node:
        return "", []
    pool = str((spec.get("pool") or {}).get("name") or node)
    devices = []
    for device in spec.get("devices") or []:
        attributes = device.get("attributes") or {}
        named = attributes.get(keys.DRA_UUID_ATTRIBUTE) or attributes.get(f"{driver}/{keys.DRA_UUID_ATTRIBUTE}") or {}
        uuid = named.get("string")
        memory = ((device.get("capacity") or {}).get("memory") or {}).get("value")
        try:
            vram_mib = parse_bytes(str(memory)) // 2**20
        except ValueError:
            continue
        if uuid and device.get("name"):
            devices.append(Device(driver, pool, str(device["name"]), str(uuid), vram_mib))
    return node, devices


def claim_holds(claim: Mapping[str, Any], drivers: Iterable[str]) -> list[str]:
    """``Device.path`` of every GPU the ResourceClaim holds: what its allocation names or, not yet
    allocated, the device a replica's claim was made for (the operator's annotation)."""
    drivers = set(drivers)
    results = (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or []
    held = [f"{r.get('driver')}/{r.get('pool')}/{r.get('device')}" for r in results if r.get("driver") in drivers]
    if held or results:
        return held
    chosen = ((claim.get("metadata") or {}).get("annotations") or {}).get(keys.DRA_DEVICE_ANNOTATION)
    return [chosen] if isinstance(chosen, str) and chosen.split("/", 1)[0] in drivers else []


def dra_replica(pod: Mapping[str, Any]) -> int:
    """1 for a replica pod that holds its GPU through the operator's ResourceClaim, else 0."""
    if keys.REPLICA_LABEL not in ((pod.get("metadata") or {}).get("labels") or {}):
        return 0
    return int(any(entry.get("name") == keys.DRA_POD_CLAIM_NAME for entry in (pod.get("spec") or {}).get("resourceClaims") or []))


def pod_claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The ResourceClaims a pod uses, by name: named ones, and those made from a template as the pod's
    status reports them."""
    made = {
        entry.get("name"): entry.get("resourceClaimName")
        for entry in (pod.get("status") or {}).get("resourceClaimStatuses") or []
    }
    names = []
    for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
        name = entry.get("resourceClaimName") or made.get(entry.get("name"))
        if name:
            names.append(str(name))
    return names


def _affinity_node(pod: Mapping[str, Any]) -> str | None:
    """The node a not-yet-bound replica pod is pinned to by its required node affinity."""
    terms = (
        (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    for term in terms:
        for expression in term.get("matchFields") or []:
            if expression.get("key") == "metadata.name" and expression.get("values"):
                return str(expression["values"][0])
    return None


def _gpus(annotations: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    try:
        gpus = json.loads(annotations.get(keys.GPUS_ANNOTATION, "[]"))
        uuids = tuple(str(gpu["uuid"]) for gpu in gpus)
        defaults = tuple(int((gpu.get("power") or {}).get("defaultWatts") or 0) for gpu in gpus)
    except (ValueError, TypeError, KeyError):
        return (), ()
    return uuids, defaults


#: Numbers in labels above this are malformed: no GPU has that much of anything, and the status
#: schema (int32 fields) could not hold them, so every status write would be refused.
LABEL_NUMBER_MAX = 2**31 - 1


def _int(value: Any) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if abs(number) <= LABEL_NUMBER_MAX else None
