"""kopf wiring: indexes that hold what placement needs, and one daemon per InferenceDeployment.

Memory: the node index keeps only labels, the agent's annotations, the cordon flag and GPU
capacity of each node, not whole Node objects. Pods and Leases are indexed the same way.

Triggers: each deployment has an async daemon that reconciles, then sleeps until something
it depends on changes: its spec (create/update/resume handlers), a node's placement facts
(node events, compared against the last seen facts, so heartbeats and status churn do not
wake anyone), one of its pods (pod events), or a resync tick (30 s) that notices agents whose
Lease went stale. The blocking reconcile runs in a worker thread; the event loop never blocks.
"""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kopf

from egpu_api import keys
from egpu_operator import facts
from egpu_operator.kube import GROUP, PLURAL, VERSION, Kube
from egpu_operator.reconcile import Fleet, forget_infeasible, reconcile, release_power

log = logging.getLogger("egpu_operator.handlers")
RESYNC_S = float(os.environ.get("EGPU_OPERATOR_RESYNC_SECONDS", "30"))
# How stale an agent Lease may be; agents renew every 10 s with a 40 s lease (benchmarks stretch it).
LEASE_TTL_S = int(os.environ.get("EGPU_OPERATOR_LEASE_TTL_SECONDS", "40"))
_KEPT_ANNOTATIONS = (keys.GPUS_ANNOTATION, keys.POWER_STATUS_ANNOTATION, "egpu-operator.io/power-limit-owners")

_wake: dict[str, asyncio.Event] = {}
_node_facts_seen: dict[str, int] = {}  # node -> hash of its slim facts: wake only on real change
_kube: Kube | None = None


def kube() -> Kube:
    if _kube is None:
        raise RuntimeError("the operator's API client is set at startup")
    return _kube


def set_kube(value: Kube) -> None:
    global _kube
    _kube = value


# -- indexes ---------------------------------------------------------------------------------------


def slim_node(name: str, labels: Mapping[str, str], annotations: Mapping[str, str], spec: Any, status: Any) -> dict[str, Any]:
    allocatable = (status or {}).get("allocatable") or {}
    return {
        "metadata": {
            "name": name,
            "labels": dict(labels),
            "annotations": {key: annotations[key] for key in _KEPT_ANNOTATIONS if key in annotations},
        },
        "spec": {"unschedulable": bool((spec or {}).get("unschedulable"))},
        "status": {"allocatable": {keys.GPU_RESOURCE: allocatable.get(keys.GPU_RESOURCE, "0")}},
    }


@kopf.index("nodes")
def nodes_index(name: str, labels: Mapping[str, str], annotations: Mapping[str, str], spec: Any, status: Any, **_: Any) -> Any:
    return {name: slim_node(name, labels, annotations, spec, status)}


@kopf.index("coordination.k8s.io", "v1", "leases", when=lambda name, **_: name.startswith(keys.AGENT_LEASE_PREFIX))
def heartbeats_index(name: str, spec: Any, **_: Any) -> Any:
    return {name.removeprefix(keys.AGENT_LEASE_PREFIX): facts.lease_time({"spec": dict(spec)})}


def _slim_pod(body: Any) -> dict[str, Any]:
    plain = _plain(body)
    return {
        "metadata": {key: plain["metadata"].get(key) for key in ("name", "namespace", "labels", "deletionTimestamp")},
        "spec": {key: plain.get("spec", {}).get(key) for key in ("nodeName", "affinity", "containers")},
        "status": {key: plain.get("status", {}).get(key) for key in ("phase", "conditions")},
    }


@kopf.index("pods", labels={facts.DEPLOYMENT_LABEL: kopf.PRESENT})
def replica_pods_index(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return {(namespace, labels[facts.DEPLOYMENT_LABEL]): _slim_pod(body)}


def _holds_gpu(body: Any, **_: Any) -> bool:
    phase = (body.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and facts.gpu_requests(_plain(body)) > 0


@kopf.index("pods", when=_holds_gpu)
def gpu_usage_index(name: str, body: Any, **_: Any) -> Any:
    pod = _slim_pod(body)
    node = pod["spec"].get("nodeName") or facts._affinity_node(pod)
    return {node: (name, facts.gpu_requests(pod))} if node else {}


# -- wake-ups --------------------------------------------------------------------------------------


def _wake_one(uid: str | None) -> None:
    if uid and uid in _wake:
        _wake[uid].set()


def _wake_all() -> None:
    for event in _wake.values():
        event.set()


@kopf.on.event("nodes")
async def node_changed(name: str, type: str, labels: Any, annotations: Any, spec: Any, status: Any, **_: Any) -> None:
    seen = 0 if type == "DELETED" else hash(json.dumps(slim_node(name, labels, annotations, spec, status), sort_keys=True))
    if _node_facts_seen.get(name) != seen:
        _node_facts_seen[name] = seen
        _wake_all()


@kopf.on.event("pods", labels={facts.DEPLOYMENT_LABEL: kopf.PRESENT})
async def replica_pod_changed(meta: Any, **_: Any) -> None:
    for owner in meta.get("ownerReferences") or []:
        _wake_one(owner.get("uid"))


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def spec_changed(uid: str, **_: Any) -> None:
    _wake_one(uid)


# -- the work --------------------------------------------------------------------------------------


def _fleet(nodes_index: Any, heartbeats_index: Any, gpu_usage_index: Any) -> Fleet:
    nodes = {name: next(iter(store)) for name, store in nodes_index.items()}
    heartbeats: dict[str, datetime] = {}
    for node, store in heartbeats_index.items():
        times = [value for value in store if value is not None]
        if times:
            heartbeats[node] = max(times)
    usage = {node: sum(gpus for _, gpus in store) for node, store in gpu_usage_index.items()}
    fleet = Fleet(nodes, heartbeats, usage, LEASE_TTL_S)
    fleet.gpu_pods = {pod for store in gpu_usage_index.values() for pod, _ in store}
    return fleet


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=2.0)
async def keep_placed(
    uid: str,
    name: str,
    namespace: str,
    body: Any,
    stopped: Any,
    nodes_index: Any,
    heartbeats_index: Any,
    replica_pods_index: Any,
    gpu_usage_index: Any,
    **_: Any,
) -> None:
    wake = _wake.setdefault(uid, asyncio.Event())
    try:
        while not stopped:
            wake.clear()
            deployment = _plain(body)
            if not deployment["metadata"].get("deletionTimestamp"):
                fleet = _fleet(nodes_index, heartbeats_index, gpu_usage_index)
                pods = [view for pod in replica_pods_index.get((namespace, name), []) if (view := facts.pod_view(pod))]
                try:
                    await asyncio.to_thread(reconcile, kube(), deployment, fleet, pods)
                except Exception as error:
                    from egpu_operator.metrics import ERRORS

                    ERRORS.labels(type(error).__name__).inc()
                    log.warning("reconcile failed", extra={"deployment": f"{namespace}/{name}", "error": str(error)})
                    await asyncio.sleep(1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=RESYNC_S)
    finally:
        _wake.pop(uid, None)
        forget_infeasible(f"{namespace}/{name}")


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def released(body: Any, nodes_index: Any, **_: Any) -> None:
    """Deleting: pods go by owner reference; power requests are node annotations, so we drop them."""
    deployment = _plain(body)
    if "egpu-operator.io/power-limits" not in (deployment["metadata"].get("finalizers") or []):
        return
    owner = f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}"
    nodes = [
        name
        for name, store in nodes_index.items()
        for node in store
        if owner in node["metadata"]["annotations"].get("egpu-operator.io/power-limit-owners", "")
    ]
    await asyncio.to_thread(release_power, kube(), deployment, nodes)


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists, safe to hand to another thread."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
