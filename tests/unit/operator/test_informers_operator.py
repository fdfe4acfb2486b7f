"""The operator's informers: what each asks the API server for, and which changes reach the queues."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from egpu_api import keys
from egpu_operator import reads
from egpu_operator.config import OperatorConfig
from egpu_operator.fakekube import FakeKube
from egpu_operator.informers import FakeSource
from egpu_operator.runtime import Operator
from tests.unit.operator import cluster


def test_each_informer_asks_for_the_narrowest_set() -> None:
    specs = {spec.name: spec for spec in reads.specs(OperatorConfig(agent_namespace="agents"))}
    asked = {name: (spec.path, spec.label_selector, spec.field_selector) for name, spec in specs.items()}
    assert asked == {
        "deployments": ("/apis/egpu-operator.io/v1alpha1/inferencedeployments", "", ""),
        "replica-pods": ("/api/v1/pods", keys.DEPLOYMENT_LABEL, ""),
        "pods-on-nodes": ("/api/v1/pods", "", "status.phase!=Succeeded,status.phase!=Failed"),
        "nodes": ("/api/v1/nodes", "", ""),
        "agent-pods": ("/api/v1/namespaces/agents/pods", "app.kubernetes.io/component=node-agent", ""),
        "agent-leases": ("/apis/coordination.k8s.io/v1/namespaces/agents/leases", "", ""),  # never kube-node-lease
        "budgets": ("/apis/policy/v1/poddisruptionbudgets", keys.DEPLOYMENT_LABEL, ""),
        "services": ("/api/v1/services", keys.DEPLOYMENT_LABEL, ""),
        "resourceslices": ("/apis/resource.k8s.io/v1/resourceslices", "", ""),
        "resourceclaims": ("/apis/resource.k8s.io/v1/resourceclaims", "", ""),
    }
    assert [name for name, spec in specs.items() if spec.optional] == ["resourceslices", "resourceclaims"]


def test_without_dra_drivers_resource_k8s_io_is_not_watched() -> None:
    names = {spec.name for spec in reads.specs(OperatorConfig(dra_drivers=()))}
    assert not names & {"resourceslices", "resourceclaims"}


def operator() -> Operator:
    return Operator(OperatorConfig(), FakeKube(), watch_client=None)


def queued(running: Operator) -> list[Any]:
    found = []
    while not running.queue._queue.empty():
        found.append(running.queue._queue.get_nowait())
    running.queue._dirty.clear()
    return found


def deployment(generation: int, observed: int | None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "llm", "namespace": "ml", "generation": generation}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    return {"metadata": metadata, "spec": {}, "status": {"observedGeneration": observed, "kopf": {"progress": {}}}}


def test_a_deployment_is_queued_when_new_changed_deleting_or_gone_not_for_its_own_status() -> None:
    running = operator()
    informer = running.informers[reads.DEPLOYMENTS]
    informer.apply("ADDED", deployment(1, None))
    assert queued(running) == [("ml", "llm")]
    assert "kopf" not in informer.get(("ml", "llm"))["status"]
    informer.apply("MODIFIED", deployment(1, 1))  # the operator's own status write
    assert queued(running) == []
    informer.apply("MODIFIED", deployment(2, 1))
    assert queued(running) == [("ml", "llm")]
    informer.apply("MODIFIED", deployment(2, 2, deleting=True))
    assert queued(running) == [("ml", "llm")]
    informer.apply("DELETED", deployment(2, 2, deleting=True))
    assert queued(running) == [("ml", "llm")]


def test_a_replica_pod_or_service_change_queues_its_deployment() -> None:
    running = operator()
    labels = {keys.DEPLOYMENT_LABEL: "llm"}
    replica = {"metadata": {"name": "llm-0", "namespace": "ml", "labels": labels}, "status": {"phase": "Pending"}}
    running.informers[reads.REPLICA_PODS].apply("ADDED", replica)
    running.informers[reads.SERVICES].apply("ADDED", {"metadata": {"name": "llm", "namespace": "ml", "labels": labels}})
    assert queued(running) == [("ml", "llm")]  # one key, however many triggers
    running.informers[reads.REPLICA_PODS].apply("DELETED", replica)
    assert queued(running) == [("ml", "llm")]


def test_agent_leases_are_heartbeats_and_the_leader_lease_is_not_kept() -> None:
    running = operator()
    leases = running.informers[reads.AGENT_LEASES]
    renewed = "2026-12-04T10:00:00.000000Z"
    for name in ("egpu-node-agent-n0", "egpu-operator"):
        leases.apply("ADDED", {"metadata": {"name": name, "namespace": "egpu-system"}, "spec": {"renewTime": renewed}})
    assert list(reads.lease_nodes(running.informers)) == ["n0"]
    assert reads.judged(running.informers, {"n0": {"metadata": {"labels": {}}}, "cpu": {"metadata": {"labels": {}}}}) == ["n0"]
    assert running.cache.heartbeats._seen["n0"].renew is not None


def test_the_running_operator_places_from_what_its_informers_list(nodes: dict[str, Any]) -> None:
    """The whole read path in one process: informer threads over a fake source, the first-listing
    gate, the deployment trigger, a worker, the gathers and a reconcile writing to FakeKube."""
    source, kube = FakeSource(), FakeKube(nodes)
    config = OperatorConfig(dra_drivers=(), workers=1)
    group = reads.build(config, source)
    for informer in group.by_name.values():
        informer.first_backoff_s = 0.01
    source.objects["/api/v1/nodes"] = list(nodes.values())
    kube.add_deployment(cluster.deployment())
    source.objects["/apis/egpu-operator.io/v1alpha1/inferencedeployments"] = list(kube.deployments.values())
    running = Operator(config, kube, watch_client=None, informers=group)
    now, wall = time.monotonic(), datetime.now(UTC)
    for ago in range(100, -1, -2):  # the API server seen for 100 s, every agent renewing meanwhile
        running.cache.visibility.probe_succeeded(now - ago)
    for node in nodes:
        running.cache.heartbeats.observe(node, wall - timedelta(seconds=100), now - 100)
        running.cache.heartbeats.observe(node, wall, now - 1)

    async def scenario() -> None:
        group.start()
        try:
            await running.start()
            deadline = time.monotonic() + 20
            while not kube.pods and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            running.stop()
            group.stop()

    asyncio.run(scenario())
    assert running.readiness_problem() is None
    assert len(kube.pods) == 1
    pod = next(iter(kube.pods.values()))
    assert pod["metadata"]["labels"][keys.DEPLOYMENT_LABEL] == "llm"
