"""The InferenceDeployment controller against ``FakeKube``: what it writes, in which order, and what it leaves alone."""

from typing import Any

import pytest

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec
from egpu_operator import pods
from egpu_operator.controllers.inferencedeployment import pod_writes
from egpu_operator.liveness import Liveness
from egpu_operator.placement import Demand, plan
from egpu_operator.reconcile import POWER_FINALIZER
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment


@pytest.fixture
def cluster(nodes: dict[str, Any]) -> Cluster:
    return Cluster(nodes)


def only_node(nodes: dict[str, Any], name: str) -> dict[str, Any]:
    return {name: nodes[name]}


def test_a_new_deployment_gets_its_pods_an_event_each_and_a_status(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment(replicas=2))
    assert cluster.reconcile() is False
    assert len(cluster.pods_of()) == 2
    assert cluster.kube.reasons() == ["ReplicaPlaced", "ReplicaPlaced"]
    assert cluster.status()["replicas"] == 2
    assert cluster.condition("Placed")["status"] == "True"
    assert cluster.condition("Ready")["status"] == "False"

    cluster.kube.schedule()
    writes = len(cluster.kube.writes)
    cluster.reconcile()
    assert cluster.condition("Ready")["status"] == "True"
    assert cluster.kube.writes[writes:] == [("patch", f"inferencedeployment/{NAMESPACE}/llm/status")]
    cluster.reconcile()
    assert len(cluster.kube.writes) == writes + 1, "a reconcile of a settled deployment writes nothing"


def test_a_dead_agent_gets_a_surge_elsewhere_then_an_eviction_never_a_delete(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment())
    cluster.reconcile()
    cluster.kube.schedule()
    [(old, node)] = cluster.pods_of().items()
    cluster.liveness[node] = Liveness.DEAD

    cluster.reconcile()
    pods = cluster.pods_of()
    assert old in pods, "the old replica keeps serving until its replacement is Ready"
    [new] = set(pods) - {old}
    assert pods[new] != node

    cluster.reconcile()  # the replacement is still loading
    assert old in cluster.pods_of()
    cluster.kube.schedule()
    cluster.reconcile()
    assert set(cluster.pods_of()) == {new}
    assert ("evict", f"{NAMESPACE}/{old}") in cluster.kube.writes
    assert ("delete", f"{NAMESPACE}/{old}") not in cluster.kube.writes


def test_a_refused_eviction_is_asked_again_later(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment())
    cluster.reconcile()
    cluster.kube.schedule()
    [(old, node)] = cluster.pods_of().items()
    # Someone else's budget that no eviction of these pods can satisfy.
    cluster.kube.pdbs[(NAMESPACE, "strict")] = {
        "metadata": {"name": "strict", "namespace": NAMESPACE},
        "spec": {"minAvailable": 5, "selector": {"matchLabels": {keys.DEPLOYMENT_LABEL: "llm"}}},
    }
    cluster.liveness[node] = Liveness.DEAD
    cluster.reconcile()
    cluster.kube.schedule()

    assert cluster.reconcile() is True, "a refused eviction asks for a rate-limited retry"
    assert old in cluster.pods_of()
    assert not [write for write in cluster.kube.writes if write[0] in ("evict", "delete")]

    del cluster.kube.pdbs[(NAMESPACE, "strict")]
    assert cluster.reconcile() is True, "within the pod's eviction backoff: not asked again yet"
    assert old in cluster.pods_of()
    cluster.clock.now += 2  # the first refusal's backoff (egpu_operator.kube.Evictor)
    assert cluster.reconcile() is False
    assert old not in cluster.pods_of()


def test_scaling_down_deletes_the_highest_replica(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment(replicas=2))
    cluster.reconcile()
    cluster.kube.schedule()
    cluster.kube.deployments[(NAMESPACE, "llm")]["spec"]["replicas"] = 1
    cluster.reconcile()
    pods = cluster.pods_of()
    assert len(pods) == 1
    [name] = pods
    assert name.startswith("llm-0-")
    assert [verb for verb, _ in cluster.kube.writes].count("delete") == 1


def test_deletion_releases_the_power_limits_then_the_finalizer(nodes: dict[str, Any]) -> None:
    cluster = Cluster(only_node(nodes, "pi5-rtx4090"))
    cluster.kube.add_deployment(deployment(power={"limitWatts": 300}))
    cluster.reconcile()
    body = cluster.kube.deployments[(NAMESPACE, "llm")]
    assert body["metadata"]["finalizers"] == [POWER_FINALIZER]
    annotations = cluster.kube.nodes["pi5-rtx4090"]["metadata"]["annotations"]
    assert '":300' in annotations[keys.POWER_REQUEST_ANNOTATION]
    assert f'"{NAMESPACE}/llm"' in annotations[keys.POWER_OWNERS_ANNOTATION]

    body["metadata"]["deletionTimestamp"] = "2026-11-22T08:00:00Z"
    cluster.reconcile()
    assert annotations[keys.POWER_REQUEST_ANNOTATION] == "{}"
    assert annotations[keys.POWER_OWNERS_ANNOTATION] == "{}"
    assert (NAMESPACE, "llm") not in cluster.kube.deployments, "the last finalizer let it go"


def test_expectations_keep_a_lagging_index_from_creating_twice(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment())
    cluster.reconcile()
    writes = list(cluster.kube.writes)
    cluster.reconcile(unseen=frozenset(cluster.pods_of()))  # the pod event is still on its way
    assert cluster.kube.writes == writes


def test_a_restarted_operator_repeats_the_create_and_gets_no_duplicate(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment())
    cluster.reconcile()
    [created] = cluster.pods_of()
    cluster.restart()
    cluster.reconcile(unseen=frozenset({created}))  # killed before the create reached its index
    assert list(cluster.pods_of()) == [created], "same stable name: a conflict, not a second pod"
    assert cluster.kube.reasons() == ["ReplicaPlaced"]


def test_a_refused_pod_releases_its_gpu_and_says_why(nodes: dict[str, Any]) -> None:
    cluster = Cluster(only_node(nodes, "pi5-rtx4090"))
    cluster.kube.refuse_pods = lambda pod: "exceeded quota: gpu" if pod["metadata"]["name"].startswith("greedy") else None
    cluster.kube.add_deployment(deployment("greedy"))
    assert cluster.reconcile("greedy") is True, "a refusal is asked again with backoff"
    assert cluster.pods_of("greedy") == {}
    assert cluster.cache.reserved() == {}, "a refused pod holds no GPU"
    placed = cluster.condition("Placed", "greedy")
    assert (placed["status"], placed["reason"]) == ("False", "PodRejected")
    assert "exceeded quota: gpu" in placed["message"]
    assert cluster.kube.reasons() == ["PodRejected"]

    cluster.kube.add_deployment(deployment("modest"))
    cluster.reconcile("modest")
    assert list(cluster.pods_of("modest").values()) == ["pi5-rtx4090"], "the only GPU went to the next deployment"


def test_a_look_alike_pod_is_not_a_replica(cluster: Cluster) -> None:
    body = cluster.kube.add_deployment(deployment())
    look_alike = pods.replica_pod(body, 0, "pi5-rtx4090", 10.0)
    look_alike["metadata"]["name"] = "llm-0-lookalike"
    look_alike["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    cluster.kube.create_pod(look_alike)
    cluster.kube.schedule()
    cluster.reconcile()
    assert len(cluster.pods_of()) == 2, "the deployment made a replica of its own"
    assert cluster.status()["replicas"] == 1


def test_the_pod_writes_are_decided_before_any_is_made(cluster: Cluster) -> None:
    body = cluster.kube.add_deployment(deployment(replicas=2))
    fleet = cluster.fleet()
    demand = Demand.of_spec(InferenceDeploymentSpec.model_validate(body["spec"]))
    decided = plan(demand, 2, list(fleet.facts.values()), fleet.free, [])
    writes = pod_writes(body["metadata"], InferenceDeploymentSpec.model_validate(body["spec"]), decided)
    assert [made.manifest["metadata"]["labels"][keys.REPLICA_LABEL] for made in writes.creates] == ["0", "1"]
    assert (writes.deletes, writes.evictions) == ([], [])
    assert cluster.kube.writes == []
