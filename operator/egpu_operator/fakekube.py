"""``FakeKube``: the ``kube.Kube`` seam kept in memory, for tests (httpx's ``MockTransport`` pattern).

It holds pods, nodes, PodDisruptionBudgets, Services, InferenceDeployments, GPUMaintenances and Events
as plain dicts and answers as an API server would where the controllers care:

- a repeated create is a conflict (``create_pod`` returns False), a delete of a gone object is fine;
- an eviction that would take a PodDisruptionBudget's pods below ``minAvailable`` Ready ones is
  refused with the API server's sentence, and an evicted pod is gone;
- ``refuse_pods`` makes ``create_pod`` raise ``PodRefused`` (quota, Pod Security, ...);
  ``refuse_status`` makes ``patch_status`` raise ``StatusRefused`` (a value the schema cannot hold).

Nothing is scheduled by itself: ``schedule`` binds pods to the node their affinity names and
marks them Ready, as kube-scheduler and a kubelet would. ``writes`` lists every write in order.
"""

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from egpu_api import keys
from egpu_operator.kube import Kube, PodRefused, StatusRefused, eviction_refusal
from egpu_operator.leader import LeaseUnreadable
from egpu_runtime import events

#: What the API server says when an eviction would break a budget (HTTP 429).
BUDGET_REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget."
#: What ``ApiKube`` makes of the API server's 500 for a pod under two budgets.
TWO_BUDGETS_REFUSAL = eviction_refusal(
    500, "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
)

Key = tuple[str, str]


class FakeKube:
    def __init__(self, nodes: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.nodes: dict[str, dict[str, Any]] = {name: copy.deepcopy(dict(node)) for name, node in (nodes or {}).items()}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.pdbs: dict[Key, dict[str, Any]] = {}
        self.services: dict[Key, dict[str, Any]] = {}
        self.claims: dict[Key, dict[str, Any]] = {}
        self.deployments: dict[Key, dict[str, Any]] = {}
        self.maintenances: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str]] = []  # (verb, what) in order
        self.refused_evictions: list[str] = []  # namespace/name of each eviction refused, in order
        #: Given a pod manifest, why the API server refuses it (None: it is admitted).
        self.refuse_pods: Callable[[Mapping[str, Any]], str | None] = lambda _: None
        #: Given a status patch, why the API server refuses it (None: it is stored).
        self.refuse_status: Callable[[Mapping[str, Any]], str | None] = lambda _: None
        #: node -> annotations other writers land between a read and a write of ``update_node_annotations``.
        self.node_races: dict[str, list[Mapping[str, str]]] = {}
        self._versions = itertools.count(1)

    # -- test helpers --------------------------------------------------------------------------

    def add_deployment(self, deployment: Mapping[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(dict(deployment))
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{metadata['name']}")
        metadata.setdefault("generation", 1)
        self._touch(body)
        self.deployments[(metadata["namespace"], metadata["name"])] = body
        return body

    def add_maintenance(self, maintenance: Mapping[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(dict(maintenance))
        body["metadata"].setdefault("generation", 1)
        body["metadata"].setdefault("creationTimestamp", "2026-11-22T08:00:00Z")
        self._touch(body)
        self.maintenances[body["metadata"]["name"]] = body
        return body

    def schedule(self, ready: bool = True) -> list[str]:
        """Bind every unbound pod to the node its required affinity names, Running (and Ready)."""
        bound = []
        for pod in self.pods.values():
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                continue
            terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            spec["nodeName"] = terms[0]["matchFields"][0]["values"][0]
            pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
            self._allocate(pod)
            bound.append(pod["metadata"]["name"])
        return bound

    def _allocate(self, pod: Mapping[str, Any]) -> None:
        """As kube-scheduler's DRA plugin does on binding: each of the pod's claims gets the device its
        selector names (here: the operator's annotation) and the pod in ``reservedFor``."""
        namespace = pod["metadata"]["namespace"]
        for entry in pod["spec"].get("resourceClaims") or []:
            claim = self.claims.get((namespace, entry.get("resourceClaimName", "")))
            chosen = ((claim or {}).get("metadata", {}).get("annotations") or {}).get(keys.DRA_DEVICE_ANNOTATION)
            if claim is None or not chosen:
                continue
            driver, pool, device = chosen.split("/", 2)
            result = {"request": keys.DRA_POD_CLAIM_NAME, "driver": driver, "pool": pool, "device": device}
            claim["status"] = {
                "allocation": {"devices": {"results": [result]}},
                "reservedFor": [{"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"].get("uid", "")}],
            }

    def refuse_scheduling(self, message: str) -> list[str]:
        """kube-scheduler refuses every unbound pod: PodScheduled False, Unschedulable, ``message``."""
        refused = []
        for pod in self.pods.values():
            if not pod.setdefault("spec", {}).get("nodeName"):
                condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                pod["status"] = {"phase": "Pending", "conditions": [condition]}
                refused.append(pod["metadata"]["name"])
        return refused

    def set_ready(self, namespace: str, name: str, ready: bool = True) -> None:
        self.pods[(namespace, name)]["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]

    def reasons(self) -> list[str]:
        """The reasons of the Events recorded, in order."""
        return [event["reason"] for event in self.events]

    # -- pods ----------------------------------------------------------------------------------

    def evict_pod(self, namespace: str, name: str) -> str | None:
        pod = self.pods.get((namespace, name))
        if pod is None:
            return None
        budgets = [b for b in self.pdbs.values() if b["metadata"]["namespace"] == namespace and _selects(b, pod)]
        if len(budgets) > 1:  # the API server answers 500, whatever the budgets allow
            self.refused_evictions.append(f"{namespace}/{name}")
            return TWO_BUDGETS_REFUSAL
        for budget in budgets:
            healthy = [
                other
                for other in self.pods.values()
                if other["metadata"]["namespace"] == namespace and _selects(budget, other) and _ready(other)
            ]
            if len(healthy) - (1 if _ready(pod) else 0) < int(budget["spec"]["minAvailable"]):
                self.refused_evictions.append(f"{namespace}/{name}")
                return BUDGET_REFUSAL
        self.writes.append(("evict", f"{namespace}/{name}"))
        del self.pods[(namespace, name)]
        return None

    def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(pod) for pod in self.pods.values() if pod.get("spec", {}).get("nodeName") == node]

    def create_pod(self, manifest: Mapping[str, Any]) -> bool:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.pods:
            return False
        refusal = self.refuse_pods(manifest)
        if refusal is not None:
            raise PodRefused(refusal)
        self.writes.append(("create", f"{key[0]}/{key[1]}"))
        pod = copy.deepcopy(dict(manifest))
        pod.setdefault("status", {"phase": "Pending"})
        self._touch(pod)
        self.pods[key] = pod
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        if self.pods.pop((namespace, name), None) is not None:
            self.writes.append(("delete", f"{namespace}/{name}"))

    def create_resource_claim(self, manifest: Mapping[str, Any]) -> bool:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.claims:
            return False
        self.writes.append(("create-claim", f"{key[0]}/{key[1]}"))
        claim = copy.deepcopy(dict(manifest))
        self._touch(claim)
        self.claims[key] = claim
        return True

    def delete_resource_claim(self, namespace: str, name: str) -> None:
        if self.claims.pop((namespace, name), None) is not None:
            self.writes.append(("delete-claim", f"{namespace}/{name}"))

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        claim = self.claims.get((namespace, name))
        return copy.deepcopy(claim) if claim is not None else None

    # -- nodes ---------------------------------------------------------------------------------

    def get_node(self, node: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.nodes[node]) if node in self.nodes else None

    def patch_node(self, node: str, patch: Mapping[str, Any]) -> None:
        self.writes.append(("patch", f"node/{node}"))
        _merge(self.nodes[node], patch)
        self._touch(self.nodes[node])

    def update_node_annotations(self, node: str, change: Callable[[Mapping[str, str]], Mapping[str, str]]) -> dict[str, str]:
        annotations = self.nodes[node].setdefault("metadata", {}).setdefault("annotations", {})
        wanted = dict(change(dict(annotations)))
        while self.node_races.get(node):
            # Another writer got in between the read and the write: the write conflicts (409), and
            # the read-modify-write starts again from what that writer left, as ApiKube's does.
            annotations.update(self.node_races[node].pop(0))
            self.writes.append(("conflict", f"node/{node}"))
            wanted = dict(change(dict(annotations)))
        if any(annotations.get(key) != value for key, value in wanted.items()):
            self.writes.append(("patch", f"node/{node}"))
            annotations.update(wanted)
            self._touch(self.nodes[node])
        return wanted

    # -- GPUMaintenance ------------------------------------------------------------------------

    def list_maintenances(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(body) for body in self.maintenances.values()]

    def create_maintenance(self, body: Mapping[str, Any]) -> bool:
        if body["metadata"]["name"] in self.maintenances:
            return False
        self.writes.append(("create", f"gpumaintenance/{body['metadata']['name']}"))
        self.add_maintenance(body)
        return True

    def patch_maintenance_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.writes.append(("patch", f"gpumaintenance/{name}/status"))
        body = self.maintenances[name]
        body["status"] = _merge(body.get("status") or {}, status)
        self._touch(body)

    def set_maintenance_finalizers(self, name: str, resource_version: str, finalizers: list[str]) -> None:
        body = self.maintenances[name]
        if body["metadata"]["resourceVersion"] != resource_version:
            raise RuntimeError(f"conflict: gpumaintenance {name} changed since resourceVersion {resource_version}")
        self.writes.append(("patch", f"gpumaintenance/{name}/finalizers"))
        body["metadata"]["finalizers"] = list(finalizers)
        if not finalizers and body["metadata"].get("deletionTimestamp"):
            del self.maintenances[name]  # the last finalizer let it go
            return
        self._touch(body)

    def maintenance_event(self, maintenance: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self._event("default", maintenance, "GPUMaintenance", reason, message, warning)

    # -- PodDisruptionBudgets ------------------------------------------------------------------

    def apply_pdb(self, manifest: Mapping[str, Any]) -> None:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        self.writes.append(("apply", f"pdb/{key[0]}/{key[1]}"))
        self.pdbs[key] = copy.deepcopy(dict(manifest))

    def delete_pdb(self, namespace: str, name: str) -> None:
        if self.pdbs.pop((namespace, name), None) is not None:
            self.writes.append(("delete", f"pdb/{namespace}/{name}"))

    # -- Services ------------------------------------------------------------------------------

    def apply_service(self, manifest: Mapping[str, Any], exists: bool) -> str | None:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        current = self.services.get(key)
        if current is None:
            self.writes.append(("create", f"service/{key[0]}/{key[1]}"))
            self.services[key] = {
                **copy.deepcopy(dict(manifest)),
                "spec": {**copy.deepcopy(manifest["spec"]), "clusterIP": "10.0.0.1"},
            }
            self._touch(self.services[key])
            return None
        uid = manifest["metadata"]["ownerReferences"][0]["uid"]
        owners = [o for o in current["metadata"].get("ownerReferences") or [] if o.get("controller")]
        if not owners or owners[0]["uid"] != uid:
            return f"a Service named {key[1]} exists and is not this deployment's; delete or rename it"
        updated = copy.deepcopy(current)
        updated["metadata"]["labels"] = {**(current["metadata"].get("labels") or {}), **manifest["metadata"]["labels"]}
        updated["spec"].update({k: copy.deepcopy(manifest["spec"][k]) for k in ("type", "selector", "ports")})
        if updated != current:
            self.writes.append(("update", f"service/{key[0]}/{key[1]}"))
            self.services[key] = updated
            self._touch(updated)
        return None

    def delete_service(self, namespace: str, name: str) -> None:
        if self.services.pop((namespace, name), None) is not None:
            self.writes.append(("delete", f"service/{namespace}/{name}"))

    # -- InferenceDeployments ------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.writes.append(("patch", f"inferencedeployment/{namespace}/{name}/status"))
        refusal = self.refuse_status(status)
        if refusal is not None:
            raise StatusRefused(refusal)
        body = self.deployments[(namespace, name)]
        body["status"] = _merge(body.get("status") or {}, status)
        self._touch(body)

    def add_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        self.writes.append(("patch", f"inferencedeployment/{namespace}/{name}/finalizers"))
        body = self.deployments[(namespace, name)]
        body["metadata"]["finalizers"] = [*(body["metadata"].get("finalizers") or []), finalizer]
        self._touch(body)

    def remove_finalizer(self, namespace: str, name: str, finalizer: str, finalizers: list[str]) -> None:
        if finalizer not in finalizers:
            return
        body = self.deployments[(namespace, name)]
        current = body["metadata"].get("finalizers") or []
        index = finalizers.index(finalizer)
        if index >= len(current) or current[index] != finalizer:
            raise RuntimeError(f"conflict: the finalizers of {namespace}/{name} changed")
        self.writes.append(("patch", f"inferencedeployment/{namespace}/{name}/finalizers"))
        body["metadata"]["finalizers"] = current[:index] + current[index + 1 :]
        if not body["metadata"]["finalizers"] and body["metadata"].get("deletionTimestamp"):
            del self.deployments[(namespace, name)]
            return
        self._touch(body)

    def event(self, deployment: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self._event(deployment["metadata"]["namespace"], deployment, "InferenceDeployment", reason, message, warning)

    # -- internals -----------------------------------------------------------------------------

    def _event(self, namespace: str, subject: Mapping[str, Any], kind: str, reason: str, message: str, warning: bool) -> None:
        # The very body ApiKube would create.
        involved = events.involved(f"{keys.API_GROUP}/{keys.API_VERSION}", kind, subject["metadata"])
        self.events.append(events.event(namespace, involved, reason, message, warning, "egpu-operator"))

    def _touch(self, body: dict[str, Any]) -> None:
        body.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386): dicts merge, None deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _selects(budget: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    wanted = (budget["spec"].get("selector") or {}).get("matchLabels") or {}
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def _ready(pod: Mapping[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


if TYPE_CHECKING:
    _conforms: Kube = FakeKube()  # mypy checks the fake against the protocol


class FakeLeases:
    """``leader.LeaseApi`` in memory: Leases by (namespace, name) and the cluster claim, with
    resourceVersion preconditions as the API server checks them. ``fail`` makes every call raise
    (the API server away); ``crd_installed`` False makes the claim's CRD absent; a namespace in
    ``forbidden`` has Leases this replica may not read (RBAC), as another release's namespace."""

    def __init__(self) -> None:
        self.leases: dict[Key, dict[str, Any]] = {}
        self.claim: str | None = None
        self.crd_installed = True
        self.fail = False
        self.forbidden: set[str] = set()
        self.writes: list[tuple[str, str]] = []
        self._versions = itertools.count(1)
        self._claim_version = "0"

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        if namespace in self.forbidden:
            raise LeaseUnreadable(f"leases {name!r} is forbidden in the namespace {namespace!r}")
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease is not None else None

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> bool:
        self._check()
        if (namespace, name) in self.leases:
            return False
        self.put_lease(namespace, name, spec)
        self.writes.append(("create", f"{namespace}/{name}"))
        return True

    def update_lease(self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str) -> bool:
        self._check()
        lease = self.leases.get((namespace, name))
        if lease is None or lease["metadata"]["resourceVersion"] != resource_version:
            return False
        self.put_lease(namespace, name, spec)
        self.writes.append(("update", f"{namespace}/{name}"))
        return True

    def put_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        """Test helper: a Lease as another replica (or release) wrote it."""
        metadata = {"name": name, "namespace": namespace, "resourceVersion": str(next(self._versions))}
        self.leases[(namespace, name)] = {"metadata": metadata, "spec": copy.deepcopy(dict(spec))}

    def get_claim(self) -> tuple[str | None, str] | None:
        self._check()
        return (self.claim, self._claim_version) if self.crd_installed else None

    def set_claim(self, value: str, resource_version: str) -> bool:
        self._check()
        if not self.crd_installed or resource_version != self._claim_version:
            return False
        self.claim, self._claim_version = value, str(next(self._versions))
        self.writes.append(("claim", value))
        return True

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("the API server is away")
