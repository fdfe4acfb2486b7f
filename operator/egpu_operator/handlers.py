"""kopf wiring: indexes that hold what placement needs, and triggers onto the operator's queues.

``register`` puts every handler into one registry, bound to one ``runtime.Operator``; nothing
is registered at import and no setting is read here. Every handler has an explicit ``id``: kopf
hands each index to handlers as a keyword argument of that name (``Operator.capture``), and a
nested function's default id would carry its enclosing function's name.

Memory: the indexes keep slim views of pods (replicas, agents), agent Leases, PodDisruptionBudgets and
deployments, not whole objects. Nodes are not a kopf index: ``nodewatch`` keeps slim copies
from a plain watch thread, because kopf's per-event machinery for 1,000 busy Nodes cost more
CPU than placement (docs/measurements.md).
"""

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from egpu_api import keys
from egpu_operator import agentpods, facts, metrics, service
from egpu_operator.kube import GROUP, MAINTENANCES, PLURAL, VERSION
from egpu_operator.runtime import Operator


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Every kopf handler of the operator, into ``registry``."""
    _settings(registry)
    _indexes(registry, operator)
    if operator.config.dra_drivers:
        _dra_indexes(registry, operator)
    _triggers(registry, operator)

    @kopf.on.startup(registry=registry, id="start_workers")
    async def start_workers(**_: Any) -> None:
        await operator.start()

    @kopf.on.cleanup(registry=registry, id="stop_threads")
    async def stop_threads(**_: Any) -> None:
        operator.stop()


def _settings(registry: kopf.OperatorRegistry) -> None:
    # A registry of our own has none of the default registry's login handlers: log in the way it
    # would, through the kubernetes client that ``cli`` configured.
    @kopf.on.login(registry=registry, id="login", errors=kopf.ErrorsMode.IGNORED)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        # Progress and diff-base live in status, not in annotations users see and edit.
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
        settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's are noise
        settings.watching.server_timeout = 300
        # No CRD scanning: it would need list and watch of every CRD in the cluster, and it cannot stop
        # a watch before it fails on a deleted CRD's 404 anyway. ``supervisor`` reads our two CRDs by
        # name and restarts this whole kopf core when one is reinstalled.
        settings.scanning.disabled = True
        # kopf's last resort SIGKILLs its thread, that is the whole process, 10 min after an exit that
        # was not asked through its stop flag; ``supervisor`` owns the exit deadline (seconds, not minutes).
        settings.process.ultimate_exiting_timeout = None
        # kopf gives up on a watch after its retries (54 s by default) and the operator would then
        # stop seeing Pods or Leases; an edge control plane can be away longer (an etcd restart on
        # an SD card). Keep retrying, 30 s apart, for about ten minutes.
        settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21, *[30] * 18)
        # kopf starts a worker per object and ends it after this much idleness; each start and end
        # wakes every waiter on its indexing toggles. Nodes send events all the time (heartbeats), so
        # at 1,000 nodes the default 5 s cost more CPU than placement itself (docs/measurements.md).
        settings.batching.idle_timeout = 600


def _indexes(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    agent_namespace = operator.config.agent_namespace

    # Only Leases in the agents' namespace: a tenant allowed to write Leases in its own namespace could
    # otherwise keep a dead node looking alive by forging egpu-node-agent-<node> there.
    @kopf.index(
        "coordination.k8s.io", "v1", "leases", registry=registry, id="heartbeats_index",
        when=lambda name, namespace, **_: namespace == agent_namespace and name.startswith(keys.AGENT_LEASE_PREFIX),
    )  # fmt: skip
    async def heartbeats_index(name: str, spec: Any, **_: Any) -> Any:
        node, renewed = name.removeprefix(keys.AGENT_LEASE_PREFIX), facts.lease_time({"spec": dict(spec)})
        operator.cache.heartbeats.observe(node, renewed, time.monotonic())  # when the operator saw it, not when the agent says
        return {node: renewed}

    # The agent's own pods, to tell an agent being restarted (a DaemonSet rollout) from a dead one.
    # The same namespace rule as for Leases: elsewhere anyone may create pods with these labels.
    @kopf.index(
        "pods", labels={keys.COMPONENT_LABEL: keys.AGENT_COMPONENT}, registry=registry, id="agent_pods_index",
        when=lambda namespace, **_: namespace == agent_namespace,
    )  # fmt: skip
    async def agent_pods_index(name: str, body: Any, **_: Any) -> Any:
        return {name: agentpods.agent_pod(_plain(body))}

    @kopf.index("pods", labels={keys.DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="replica_pods_index")
    async def replica_pods_index(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
        return {(namespace, labels[keys.DEPLOYMENT_LABEL]): _slim_pod(body)}

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id="deployments_index")
    async def deployments_index(namespace: str, name: str, body: Any, **_: Any) -> Any:
        deployment = _plain(body)
        (deployment.get("status") or {}).pop("kopf", None)
        return {(namespace, name): deployment}

    # Every pod that holds resources on a node, not only GPU pods: whole-pod fit counts the CPU,
    # memory and pod slots of ordinary pods too. One small tuple a pod (``facts.Usage``).
    @kopf.index("pods", when=_on_node, registry=registry, id="gpu_usage_index")
    async def gpu_usage_index(body: Any, **_: Any) -> Any:
        found = facts.usage(_plain(body), operator.config.shared_gpu_resources)
        return dict([found]) if found else {}

    @kopf.index(
        "policy",
        "v1",
        "poddisruptionbudgets",
        labels={keys.DEPLOYMENT_LABEL: kopf.PRESENT},
        registry=registry,
        id="budgets_index",
    )
    async def budgets_index(namespace: str, labels: Mapping[str, str], spec: Any, **_: Any) -> Any:
        return {(namespace, labels[keys.DEPLOYMENT_LABEL]): spec.get("minAvailable")}

    @kopf.index("services", labels={keys.DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="services_index")
    async def services_index(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
        return {(namespace, labels[keys.DEPLOYMENT_LABEL]): service.view(_plain(body))}


def _dra_indexes(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """GPUs that reach pods through Dynamic Resource Allocation: the devices the DRA drivers publish
    per node, which of them claims hold, and the ResourceClaims the operator made for replicas.
    Registered only when DRA drivers are configured: a cluster without resource.k8s.io/v1 has none."""
    drivers = operator.config.dra_drivers

    @kopf.index("resource.k8s.io", "v1", "resourceslices", registry=registry, id="dra_devices_index")
    async def dra_devices_index(body: Any, **_: Any) -> Any:
        node, devices = facts.slice_devices(_plain(body), drivers)
        return {node: tuple(devices)} if devices else {}

    @kopf.index("resource.k8s.io", "v1", "resourceclaims", registry=registry, id="dra_held_index")
    async def dra_held_index(namespace: str, name: str, body: Any, **_: Any) -> Any:
        return dict.fromkeys(facts.claim_holds(_plain(body), drivers), f"{namespace}/{name}")

    @kopf.index(
        "resource.k8s.io", "v1", "resourceclaims", labels={keys.DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry,
        id="replica_claims_index",
    )  # fmt: skip
    async def replica_claims_index(namespace: str, name: str, labels: Mapping[str, str], **_: Any) -> Any:
        return {(namespace, labels[keys.DEPLOYMENT_LABEL]): name}


def _triggers(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    @kopf.on.event("pods", labels={keys.DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="replica_pod_changed")
    async def replica_pod_changed(namespace: str, labels: Any, **kwargs: Any) -> None:
        operator.capture(kwargs)
        operator.enqueue((namespace, labels[keys.DEPLOYMENT_LABEL]), "pod")

    # A Service edited or deleted by someone else is put back.
    @kopf.on.event("services", labels={keys.DEPLOYMENT_LABEL: kopf.PRESENT}, registry=registry, id="service_changed")
    async def service_changed(namespace: str, labels: Any, **kwargs: Any) -> None:
        operator.capture(kwargs)
        operator.enqueue((namespace, labels[keys.DEPLOYMENT_LABEL]), "service")

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="deployment_changed")
    async def deployment_changed(namespace: str, name: str, type: str, meta: Any, status: Any, **kwargs: Any) -> None:
        operator.capture(kwargs)
        fresh = meta.get("generation") != (status or {}).get("observedGeneration")
        if type in (None, "ADDED") or fresh or meta.get("deletionTimestamp"):
            operator.enqueue((namespace, name), "deployment")
        if type == "DELETED":
            operator.cache.infeasible(f"{namespace}/{name}", False)
            metrics.forget_deployment(namespace, name)

    # kopf calls no resource handler before every index holds its first listing, and the namespace
    # "default" always exists: this call proves the listings are in on an otherwise empty cluster
    # too, where no pod, deployment or maintenance would ever call a handler (/readyz, the workers).
    @kopf.on.event("namespaces", when=lambda name, **_: name == "default", registry=registry, id="first_listing")
    async def first_listing(**kwargs: Any) -> None:
        operator.capture(kwargs)

    @kopf.on.event(GROUP, VERSION, MAINTENANCES, registry=registry, id="maintenance_changed")
    async def maintenance_changed(name: str, type: str, body: Any, **kwargs: Any) -> None:
        operator.capture(kwargs)
        operator.enqueue_maintenance(name)
        # The per-maintenance series follow the stored object, so they say what `kubectl get` says.
        if type == "DELETED":
            metrics.forget_maintenance(name, str((body.get("spec") or {}).get("nodeName", "")))
        else:
            metrics.observe_maintenance(_plain(body))


def _slim_pod(body: Any) -> dict[str, Any]:
    plain = _plain(body)
    metadata = plain["metadata"]
    keep = ("name", "namespace", "labels", "deletionTimestamp", "ownerReferences", "creationTimestamp")
    estimate = (metadata.get("annotations") or {}).get(keys.ESTIMATED_LOAD_ANNOTATION)
    return {
        "metadata": {key: metadata.get(key) for key in keep}
        | ({"annotations": {keys.ESTIMATED_LOAD_ANNOTATION: estimate}} if estimate is not None else {}),
        "spec": {key: plain.get("spec", {}).get(key) for key in ("nodeName", "affinity", "containers")},
        "status": {key: plain.get("status", {}).get(key) for key in ("phase", "conditions")},
    }


def _on_node(body: Any, **_: Any) -> bool:
    """Whether the pod can hold resources on a node: not finished, and bound or pinned to one."""
    phase = (body.get("status") or {}).get("phase")
    spec = body.get("spec") or {}
    return phase not in ("Succeeded", "Failed") and bool(spec.get("nodeName") or spec.get("affinity"))


def _plain(value: Any) -> Any:
    """kopf's live views as plain dicts and lists, safe to hand to another thread."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
