"""A cluster for controller tests: ``FakeKube`` plus the views the operator gathers from its indexes.

``Cluster.reconcile`` and ``Cluster.step`` hand the controllers what ``runtime.Operator`` would
(the deployment, its controlled replica pods, GPU usage, its budget, all agents alive unless
told otherwise), read from the fake's objects instead of kopf's indexes. ``unseen`` plays
indexes that have not caught up with the operator's own writes: those pods are in the fake
but in none of the views.
"""

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from egpu_api import keys
from egpu_operator import facts, maintenance, power, service
from egpu_operator.cache import Cache
from egpu_operator.fakekube import FakeKube
from egpu_operator.liveness import Liveness, Verdicts
from egpu_operator.placement import Device
from egpu_operator.reconcile import POWER_FINALIZER, Fleet, reconcile, release_power

NAMESPACE = "ml"
DRA_DRIVERS = (keys.DRA_GPU_DRIVER,)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deployment(name: str = "llm", replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """An InferenceDeployment of a 6 GB model that loads within 60 s on most of the default fleet."""
    return {
        "apiVersion": f"{keys.API_GROUP}/{keys.API_VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "model": {"name": "llama", "size": "6G", "vramOverhead": "1Gi"},
            "placement": {"maxLoadSeconds": 60, "allowedModes": ["bare-metal", "passthrough"]},
            "template": {"spec": {"containers": [{"name": "server", "image": "example/llm:1"}]}},
            **spec,
        },
    }


class Cluster:
    def __init__(self, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        self.kube = FakeKube(nodes)
        self.clock = Clock()
        self.cache = Cache(clock=self.clock)
        self.liveness: dict[str, Liveness] = {}  # node -> verdict; every other node is alive
        self.resource_slices: list[dict[str, Any]] = []  # what DRA drivers publish (the fake keeps the claims)

    def restart(self) -> None:
        """The operator starts again: what it remembered is gone, the API server's objects stay."""
        self.cache = Cache(clock=self.clock)

    def reconcile(self, name: str = "llm", unseen: frozenset[str] = frozenset()) -> bool:
        body = copy.deepcopy(self.kube.deployments[(NAMESPACE, name)])
        if body["metadata"].get("deletionTimestamp"):
            if POWER_FINALIZER in (body["metadata"].get("finalizers") or []):
                release_power(self.kube, body, power.owned_by(self.kube.nodes, f"{NAMESPACE}/{name}"))
            return False
        labelled = [
            pod for pod in self._indexed(unseen) if (pod["metadata"].get("labels") or {}).get(keys.DEPLOYMENT_LABEL) == name
        ]
        pods = facts.controlled_replicas(body, labelled)
        budget = self.kube.pdbs.get((NAMESPACE, name))
        minimum = budget["spec"]["minAvailable"] if budget else None
        current = self.kube.services.get((NAMESPACE, name))
        claims = [
            claim for (namespace, claim), made in self.kube.claims.items()
            if namespace == NAMESPACE and made["metadata"]["labels"].get(keys.DEPLOYMENT_LABEL) == name
        ]  # fmt: skip
        return reconcile(
            self.kube, self.cache, body, self.fleet(unseen), pods, minimum, current and service.view(current), claims
        )

    def _indexed(self, unseen: frozenset[str]) -> list[dict[str, Any]]:
        return [pod for pod in self.kube.pods.values() if pod["metadata"]["name"] not in unseen]

    def fleet(self, unseen: frozenset[str] = frozenset()) -> Fleet:
        index: dict[str, list[facts.Usage]] = {}
        for pod in self._indexed(unseen):
            found = facts.usage(pod)
            if found is not None:
                index.setdefault(found[0], []).append(found[1])
        verdicts = Verdicts({node: self.liveness.get(node, Liveness.ALIVE) for node in self.kube.nodes}, False, 0)
        # Copies, as the node watch hands out: a node is replaced on a change, never changed in place.
        fleet = Fleet(self.cache, copy.deepcopy(self.kube.nodes), verdicts, facts.requested_per_node(index))
        fleet.gpu_pods = {name for store in index.values() for name, gpus, _, _ in store if gpus}
        fleet.vram_used = facts.vram_used_per_node(index, fleet.facts)
        fleet.loading = facts.loading_per_node(self._indexed(unseen))
        published: dict[str, list[tuple[Device, ...]]] = {}
        for resource_slice in self.resource_slices:
            node, devices = facts.slice_devices(resource_slice, DRA_DRIVERS)
            if devices:
                published.setdefault(node, []).append(tuple(devices))
        held = {path for claim in self.kube.claims.values() for path in facts.claim_holds(claim, DRA_DRIVERS)}
        fleet.add_devices(published, held)
        return fleet

    def step(self, name: str, limit: int = 1, now: datetime | None = None) -> str | None:
        deployments = {key: copy.deepcopy(body) for key, body in self.kube.deployments.items()}
        by_deployment: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pod in self.kube.pods.values():
            label = (pod["metadata"].get("labels") or {}).get(keys.DEPLOYMENT_LABEL)
            if label:
                by_deployment.setdefault((pod["metadata"]["namespace"], label), []).append(copy.deepcopy(pod))
        return maintenance.step(
            self.kube,
            self.cache,
            name,
            deployments.get,
            lambda key: by_deployment.get(key, []),
            limit,
            now or datetime(2026, 11, 22, 8, 0, tzinfo=UTC),
        )

    def pods_of(self, name: str = "llm") -> dict[str, str]:
        """pod name -> node of the deployment's pods."""
        return {
            pod["metadata"]["name"]: pod.get("spec", {}).get("nodeName") or facts._affinity_node(pod) or ""
            for pod in self.kube.pods.values()
            if (pod["metadata"].get("labels") or {}).get(keys.DEPLOYMENT_LABEL) == name
        }

    def status(self, name: str = "llm") -> dict[str, Any]:
        status: dict[str, Any] = self.kube.deployments[(NAMESPACE, name)].get("status") or {}
        return status

    def condition(self, kind: str, name: str = "llm") -> dict[str, Any]:
        return next(c for c in self.status(name)["conditions"] if c["type"] == kind)
