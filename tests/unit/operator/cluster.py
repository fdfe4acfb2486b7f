"""A cluster for controller tests: ``FakeKube`` for writes, the operator's informers for reads.

Before each ``Cluster.reconcile`` and ``Cluster.step`` the fake's objects are fed into the
operator's own informers (``reads.build`` without a source) as full listings, and the controllers
get what the production gathers (``reads.fleet``, ``reads.inputs``, ``reads.replicas_snapshot``)
make of them; only the agents' verdicts are told (all alive unless ``liveness`` says otherwise).
``unseen`` plays informers that have not caught up with the operator's own writes: those pods
are in the fake but in no listing.
"""

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from egpu_api import keys
from egpu_operator import facts, maintenance, power, reads
from egpu_operator.cache import Cache
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.liveness import Liveness, Verdicts
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
        self.config = OperatorConfig(dra_drivers=DRA_DRIVERS)
        self.informers = reads.build(self.config, source=None)

    def restart(self) -> None:
        """The operator starts again: what it remembered is gone, the API server's objects stay."""
        self.cache = Cache(clock=self.clock)

    def reconcile(self, name: str = "llm", unseen: frozenset[str] = frozenset()) -> bool:
        self.feed(unseen)
        key = (NAMESPACE, name)
        body = self.informers[reads.DEPLOYMENTS].get(key)
        if body["metadata"].get("deletionTimestamp"):
            if POWER_FINALIZER in (body["metadata"].get("finalizers") or []):
                release_power(self.kube, body, power.owned_by(reads.nodes(self.informers), f"{NAMESPACE}/{name}"))
            return False
        pods, budget, current, claims = reads.inputs(self.informers, body, key)
        return reconcile(self.kube, self.cache, body, self._fleet(), pods, budget, current, claims)

    def feed(self, unseen: frozenset[str] = frozenset()) -> None:
        """The fake's objects, as full listings, into the informers (what each one's selector selects)."""
        pods = [pod for pod in self.kube.pods.values() if pod["metadata"]["name"] not in unseen]
        listings = {
            reads.DEPLOYMENTS: self.kube.deployments.values(),
            reads.REPLICA_PODS: [pod for pod in pods if keys.DEPLOYMENT_LABEL in (pod["metadata"].get("labels") or {})],
            reads.USAGE: [pod for pod in pods if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")],
            reads.NODES: self.kube.nodes.values(),
            reads.BUDGETS: self.kube.pdbs.values(),
            reads.SERVICES: self.kube.services.values(),
            reads.SLICES: self.resource_slices,
            reads.CLAIMS: self.kube.claims.values(),
        }
        for informer, objects in listings.items():
            self.informers[informer].replace(copy.deepcopy(list(objects)))

    def _fleet(self) -> Fleet:
        verdicts = Verdicts({node: self.liveness.get(node, Liveness.ALIVE) for node in self.kube.nodes}, False, 0)
        return reads.fleet(self.informers, self.cache, verdicts, self.config)

    def fleet(self, unseen: frozenset[str] = frozenset()) -> Fleet:
        self.feed(unseen)
        return self._fleet()

    def step(self, name: str, limit: int = 1, now: datetime | None = None) -> str | None:
        self.feed()
        deployments, replicas = reads.replicas_snapshot(self.informers)
        return maintenance.step(
            self.kube,
            self.cache,
            name,
            deployments,
            replicas,
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
