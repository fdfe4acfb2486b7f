"""What the operator reads, and how: its informers (``specs``) and the gathers over their stores.

Each informer asks for the narrowest set the API allows (docs/measurements.md):

- replica pods, PodDisruptionBudgets and Services by the ``keys.DEPLOYMENT_LABEL`` selector;
- agent pods by the component label, and agent Leases, in the agents' namespace only: elsewhere
  anyone may create pods with those labels or forge ``egpu-node-agent-<node>`` Leases, and the
  kubelets' Leases (``kube-node-lease``, one per node every 10 s) are never watched;
- every pod that holds resources on a node, for whole-pod fit, with the field selector
  ``status.phase!=Succeeded,status.phase!=Failed``, kept as one ``facts.usage`` tuple;
- Nodes as ``nodewatch.slim`` copies; InferenceDeployments whole (there are few, and the
  deployment trigger must see the object it enqueues: ``runtime``);
- ResourceSlices and ResourceClaims only when DRA drivers are configured.

The gathers (``fleet``, ``inputs``, ``replicas_snapshot``) are what ``runtime.Operator`` and the
controller tests (``tests/unit/operator/cluster.py``) both call: no test copies them.
"""

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from egpu_api import keys
from egpu_operator import agentpods, facts, nodewatch, service
from egpu_operator.cache import Cache
from egpu_operator.config import OperatorConfig
from egpu_operator.informers import Informer, Informers, Key, Source, Spec
from egpu_operator.kube import GROUP, PLURAL, VERSION
from egpu_operator.liveness import Verdicts
from egpu_operator.placement import Device, PodView
from egpu_operator.reconcile import Fleet

DEPLOYMENTS, REPLICA_PODS, USAGE, NODES = "deployments", "replica-pods", "pods-on-nodes", "nodes"
AGENT_PODS, AGENT_LEASES, BUDGETS, SERVICES = "agent-pods", "agent-leases", "budgets", "services"
SLICES, CLAIMS = "resourceslices", "resourceclaims"
BY_DEPLOYMENT, BY_NODE = "deployment", "node"
ON_NODE_PHASES = "status.phase!=Succeeded,status.phase!=Failed"


def specs(config: OperatorConfig) -> list[Spec]:
    """Every informer the operator runs under ``config``."""
    agents = config.agent_namespace
    labelled = keys.DEPLOYMENT_LABEL  # the label exists
    found = [
        Spec(DEPLOYMENTS, f"/apis/{GROUP}/{VERSION}/{PLURAL}", _deployment),
        Spec(REPLICA_PODS, "/api/v1/pods", slim_pod, label_selector=labelled, indexes={BY_DEPLOYMENT: _labelled_key}),
        Spec(
            USAGE,
            "/api/v1/pods",
            _usage(config.shared_gpu_resources),
            field_selector=ON_NODE_PHASES,
            indexes={BY_NODE: lambda view: (view[0],)},
        ),
        Spec(NODES, "/api/v1/nodes", nodewatch.slim),
        Spec(
            AGENT_PODS,
            f"/api/v1/namespaces/{agents}/pods",
            agentpods.agent_pod,
            label_selector=f"{keys.COMPONENT_LABEL}={keys.AGENT_COMPONENT}",
        ),
        Spec(AGENT_LEASES, f"/apis/coordination.k8s.io/v1/namespaces/{agents}/leases", _heartbeat),
        Spec(
            BUDGETS,
            "/apis/policy/v1/poddisruptionbudgets",
            _budget,
            label_selector=labelled,
            indexes={BY_DEPLOYMENT: lambda view: (view[0],)},
        ),
        Spec(SERVICES, "/api/v1/services", _service, label_selector=labelled, indexes={BY_DEPLOYMENT: lambda view: (view[0],)}),
    ]
    if config.dra_drivers:
        drivers = config.dra_drivers
        found += [
            Spec(
                SLICES,
                "/apis/resource.k8s.io/v1/resourceslices",
                _slice(drivers),
                indexes={BY_NODE: lambda v: (v[0],)},
                optional=True,
            ),
            Spec(
                CLAIMS,
                "/apis/resource.k8s.io/v1/resourceclaims",
                _claim(drivers),
                indexes={BY_DEPLOYMENT: _claimed_for},
                optional=True,
            ),
        ]
    return found


def build(config: OperatorConfig, source: Source | None) -> Informers:
    """The operator's informers over ``source`` (None: fed by hand, as in the controller tests)."""
    return Informers(Informer(spec, source) for spec in specs(config))


# -- transforms: the slim view kept of each object ---------------------------------------------


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What placement, status and drains read of a replica pod."""
    metadata = pod.get("metadata") or {}
    keep = ("name", "namespace", "labels", "deletionTimestamp", "ownerReferences", "creationTimestamp")
    estimate = (metadata.get("annotations") or {}).get(keys.ESTIMATED_LOAD_ANNOTATION)
    return {
        "metadata": {key: metadata.get(key) for key in keep}
        | ({"annotations": {keys.ESTIMATED_LOAD_ANNOTATION: estimate}} if estimate is not None else {}),
        # schedulingGates: a gated replica is reported as held, not as refused (``facts.pod_view``).
        "spec": {key: (pod.get("spec") or {}).get(key) for key in ("nodeName", "affinity", "containers", "schedulingGates")},
        "status": {key: (pod.get("status") or {}).get(key) for key in ("phase", "conditions")},
    }


def _labelled_key(view: Mapping[str, Any]) -> tuple[Hashable, ...]:
    metadata = view["metadata"]
    label = (metadata.get("labels") or {}).get(keys.DEPLOYMENT_LABEL)
    return ((metadata.get("namespace") or "", label),) if label else ()


def _claimed_for(view: Mapping[str, Any]) -> tuple[Hashable, ...]:
    return (view["deployment"],) if view["deployment"] else ()


def _deployment_of(item: Mapping[str, Any]) -> Key:
    metadata = item.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str((metadata.get("labels") or {}).get(keys.DEPLOYMENT_LABEL) or "")


def _deployment(item: dict[str, Any]) -> dict[str, Any]:
    # kopf once kept its progress in status.kopf: not the operator's to read.
    status = {key: value for key, value in (item.get("status") or {}).items() if key != "kopf"}
    return item | {"status": status} if "status" in item else item


def _usage(shared: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[str, facts.Usage] | None]:
    return lambda pod: facts.usage(pod, shared)


def _heartbeat(lease: dict[str, Any]) -> tuple[str, Any] | None:
    name = str((lease.get("metadata") or {}).get("name") or "")
    if not name.startswith(keys.AGENT_LEASE_PREFIX):
        return None  # the operator's own leader Lease lives here too
    return name.removeprefix(keys.AGENT_LEASE_PREFIX), facts.lease_time(lease)


def _budget(budget: dict[str, Any]) -> tuple[Key, Any]:
    return _deployment_of(budget), (budget.get("spec") or {}).get("minAvailable")


def _service(found: dict[str, Any]) -> tuple[Key, dict[str, Any]]:
    return _deployment_of(found), service.view(found)


def _slice(drivers: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[str, tuple[Device, ...]] | None]:
    def transform(resource_slice: dict[str, Any]) -> tuple[str, tuple[Device, ...]] | None:
        node, devices = facts.slice_devices(resource_slice, drivers)
        return (node, tuple(devices)) if devices else None

    return transform


def _claim(drivers: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def transform(claim: dict[str, Any]) -> dict[str, Any]:
        labelled = _deployment_of(claim)
        return {
            "name": str((claim.get("metadata") or {}).get("name") or ""),
            "holds": tuple(facts.claim_holds(claim, drivers)),
            "deployment": labelled if labelled[1] else None,
        }

    return transform


# -- gathers -----------------------------------------------------------------------------------


def nodes(informers: Informers) -> dict[str, dict[str, Any]]:
    """name -> slim node; the dicts are never changed in place (a change replaces them)."""
    return {name: node for (_, name), node in informers[NODES].items().items()}


def lease_nodes(informers: Informers) -> dict[str, Any]:
    """node -> the renew time its agent's Lease says."""
    return dict(informers[AGENT_LEASES].values())


def agent_pods(informers: Informers) -> list[agentpods.AgentPod]:
    return list(informers[AGENT_PODS].values())


def fleet(informers: Informers, cache: Cache, verdicts: Verdicts, config: OperatorConfig) -> Fleet:
    """The fleet as placement sees it now: node facts, what pods hold, loading replicas, DRA devices."""
    usage: dict[str, list[facts.Usage]] = {}
    for node, held in informers[USAGE].values():
        usage.setdefault(node, []).append(held)
    found = Fleet(cache, nodes(informers), verdicts, facts.requested_per_node(usage))
    found.gpu_pods = {pod for store in usage.values() for pod, gpus, _, _ in store if gpus}
    found.vram_used = facts.vram_used_per_node(usage, found.facts)
    found.loading = facts.loading_per_node(informers[REPLICA_PODS].values())
    found.dra_device_class = config.dra_device_class
    if SLICES in informers:
        published: dict[str, list[tuple[Device, ...]]] = {}
        for node, devices in informers[SLICES].values():
            published.setdefault(node, []).append(devices)
        held = {path for claim in informers[CLAIMS].values() for path in claim["holds"]}
        found.add_devices(published, held)
    return found


def inputs(informers: Informers, deployment: Mapping[str, Any], key: Key) -> tuple[list[PodView], Any, Any, list[str]]:
    """A deployment's controlled replicas, its budget's minAvailable, its Service view and its claims."""
    pods = facts.controlled_replicas(deployment, informers[REPLICA_PODS].by(BY_DEPLOYMENT, key))
    budget = next((minimum for _, minimum in informers[BUDGETS].by(BY_DEPLOYMENT, key)), None)
    current = next((view for _, view in informers[SERVICES].by(BY_DEPLOYMENT, key)), None)
    claims = [claim["name"] for claim in informers[CLAIMS].by(BY_DEPLOYMENT, key)] if CLAIMS in informers else []
    return pods, budget, current, claims


def replicas_snapshot(
    informers: Informers,
) -> tuple[Callable[[Key], Mapping[str, Any] | None], Callable[[Key], list[Any]]]:
    """Lookups of deployments and their replica pods as they are now, for a maintenance step."""
    deployments = {key: body for key, body in informers[DEPLOYMENTS].items().items()}
    replicas = {key: pods for key, pods in informers[REPLICA_PODS].grouped(BY_DEPLOYMENT).items()}
    return deployments.get, lambda key: replicas.get(key, [])


def deployment_keys(informers: Informers) -> list[Key]:
    return list(informers[DEPLOYMENTS].items())


def judged(informers: Informers, nodes_now: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every node that runs (or ran) an agent: it labelled the node, or it has a Lease. Nodes that
    never had one (control plane, CPU nodes) would otherwise count as dead ones."""
    leases = lease_nodes(informers)
    return [name for name, node in nodes_now.items() if keys.LABEL_SCHEMA_LABEL in node["metadata"]["labels"] or name in leases]
