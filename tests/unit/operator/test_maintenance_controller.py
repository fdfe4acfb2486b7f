"""The GPUMaintenance controller against ``FakeKube``: cordon, surge, evict, give the node back."""

from typing import Any

import pytest

from egpu_operator import drain
from egpu_operator.fakekube import TWO_BUDGETS_REFUSAL
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment

NODE = "pi5-rtx4090"


@pytest.fixture
def cluster(nodes: dict[str, Any]) -> Cluster:
    # Two adequate single-GPU nodes: the replica starts on one and moves to the other.
    return Cluster({name: nodes[name] for name in (NODE, "minipc-rtx4070ti")})


def maintenance(name: str = "reseat", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeName": NODE, "reason": "reseat the dock", **spec}}


def replica_on_node(cluster: Cluster, **spec: Any) -> str:
    """A one-replica deployment, Ready, on NODE."""
    other = "minipc-rtx4070ti"
    cluster.kube.nodes[other]["spec"]["unschedulable"] = True  # keep it off the other node for now
    cluster.kube.add_deployment(deployment(**spec))
    cluster.reconcile()
    cluster.kube.schedule()
    cluster.kube.nodes[other]["spec"]["unschedulable"] = False
    [(pod, node)] = cluster.pods_of().items()
    assert node == NODE
    return pod


def test_a_maintenance_cordons_surges_evicts_and_gives_the_node_back(cluster: Cluster) -> None:
    old = replica_on_node(cluster)
    cluster.kube.add_maintenance(maintenance())
    phases = [cluster.step("reseat")]
    node = cluster.kube.nodes[NODE]
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["labels"][drain.MAINTENANCE_LABEL] == "reseat"
    assert cluster.kube.maintenances["reseat"]["status"]["nodeWasCordoned"] is False

    cluster.reconcile()  # the deployment sees its node cordoned: a replacement elsewhere
    [new] = set(cluster.pods_of()) - {old}
    phases.append(cluster.step("reseat"))
    assert old in cluster.pods_of(), "not evicted before the replacement is Ready"

    cluster.kube.schedule()
    phases.append(cluster.step("reseat"))
    assert set(cluster.pods_of()) == {new}
    assert ("evict", f"{NAMESPACE}/{old}") in cluster.kube.writes
    phases.append(cluster.step("reseat"))
    assert phases[0] == "Cordoned"
    assert phases[-1] == "Ready"
    status = cluster.kube.maintenances["reseat"]["status"]
    assert [(m["fromPod"], m["toPod"]) for m in status["moved"]] == [(f"{NAMESPACE}/{old}", new)]

    cluster.kube.maintenances["reseat"]["spec"]["completed"] = True
    assert cluster.step("reseat") == "Completed"
    assert not node["spec"].get("unschedulable")
    assert drain.MAINTENANCE_LABEL not in node["metadata"]["labels"]
    assert {"Cordoned", "Evicted", "ReplicaMoved", "Ready", "Completed"} <= set(cluster.kube.reasons())


def test_a_refused_eviction_is_asked_again_after_a_backoff(cluster: Cluster) -> None:
    batch = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "batch", "namespace": NAMESPACE, "labels": {"app": "batch"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "job", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    cluster.kube.create_pod(batch)
    cluster.kube.apply_pdb(
        {
            "metadata": {"name": "batch", "namespace": NAMESPACE},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "batch"}}},
        }
    )
    cluster.kube.add_maintenance(maintenance(unmanagedGpuPods="Evict"))
    cluster.step("reseat")
    cluster.step("reseat")
    assert cluster.kube.refused_evictions == [f"{NAMESPACE}/batch"]
    status = cluster.kube.maintenances["reseat"]["status"]
    assert "disruption budget" in status["message"]

    cluster.step("reseat")  # within the backoff: not asked again
    assert cluster.kube.refused_evictions == [f"{NAMESPACE}/batch"]
    cluster.clock.now += 2.5
    cluster.step("reseat")
    assert cluster.kube.refused_evictions == [f"{NAMESPACE}/batch"] * 2

    cluster.kube.delete_pdb(NAMESPACE, "batch")
    cluster.clock.now += 4.5
    cluster.step("reseat")
    assert (NAMESPACE, "batch") not in cluster.kube.pods
    assert cluster.step("reseat") == "Ready"


def test_a_restarted_operator_resumes_without_a_second_replacement(cluster: Cluster) -> None:
    old = replica_on_node(cluster, disruption={"minAvailable": 1})
    cluster.kube.add_maintenance(maintenance())
    cluster.step("reseat")
    cluster.reconcile()
    [new] = set(cluster.pods_of()) - {old}

    cluster.restart()  # killed while the replacement loads its model
    cluster.reconcile()
    cluster.step("reseat")
    assert set(cluster.pods_of()) == {old, new}, "one replacement, and the old pod still serves"
    cluster.kube.schedule()
    cluster.step("reseat")
    assert set(cluster.pods_of()) == {new}


def test_deleting_a_maintenance_returns_the_node_first(cluster: Cluster) -> None:
    cluster.kube.add_maintenance(maintenance())
    cluster.step("reseat")
    assert cluster.kube.nodes[NODE]["spec"]["unschedulable"] is True
    body = cluster.kube.maintenances["reseat"]
    assert drain.FINALIZER in body["metadata"]["finalizers"]
    body["metadata"]["deletionTimestamp"] = "2026-11-22T08:05:00Z"
    assert cluster.step("reseat") is None
    assert not cluster.kube.nodes[NODE]["spec"].get("unschedulable")
    assert "reseat" not in cluster.kube.maintenances


def test_a_move_is_recorded_even_when_the_deployment_evicts_first(cluster: Cluster) -> None:
    """Killed right after the cordon, a restarted operator may let the deployment's own reconcile
    evict the old pod (its replacement is Ready) before the maintenance looks at the node again."""
    old = replica_on_node(cluster)
    cluster.kube.add_maintenance(maintenance())
    assert cluster.step("reseat") == "Cordoned"
    cluster.reconcile()
    [new] = set(cluster.pods_of()) - {old}
    cluster.restart()
    cluster.kube.schedule()
    cluster.reconcile()  # the replacement is Ready: the deployment evicts the old pod itself
    assert set(cluster.pods_of()) == {new}
    assert cluster.step("reseat") == "Ready"
    moved = cluster.kube.maintenances["reseat"]["status"]["moved"]
    assert [(m["fromPod"], m["toPod"]) for m in moved] == [(f"{NAMESPACE}/{old}", new)]


def test_a_spec_stored_under_an_older_schema_fails_in_one_sentence(cluster: Cluster) -> None:
    cluster.kube.add_maintenance({"metadata": {"name": "old"}, "spec": {"nodeName": NODE}})  # no reason: refused today
    assert cluster.step("old") == "Failed"
    status = cluster.kube.maintenances["old"]["status"]
    assert set(status) == {"phase", "message"}
    assert status["message"].startswith("spec cannot be used: 1 validation error for GPUMaintenanceSpec")
    assert "\n" not in status["message"]


def plain_pod(name: str, gpus: int = 0, phase: str = "Running", **metadata: Any) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, **metadata},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "resources": {"limits": limits}}]},
        "status": {"phase": phase},
    }


def test_ready_names_the_non_gpu_pods_a_drain_would_still_move(cluster: Cluster) -> None:
    daemon = [{"kind": "DaemonSet", "name": "node-exporter", "controller": True, "apiVersion": "apps/v1", "uid": "1"}]
    for pod in (
        plain_pod("web-1"),
        plain_pod("web-0"),
        plain_pod("done", phase="Succeeded"),
        plain_pod("node-exporter-x", ownerReferences=daemon),
        plain_pod("kube-proxy-static", annotations={"kubernetes.io/config.mirror": "abc"}),
    ):
        cluster.kube.create_pod(pod)
    cluster.kube.add_maintenance(maintenance())
    cluster.step("reseat")
    assert cluster.step("reseat") == "Ready"
    assert cluster.kube.maintenances["reseat"]["status"]["message"] == (
        "no GPU workload left on the node: safe to service the GPUs; set spec.completed=true when done; "
        f"2 non-GPU pod(s) still run on the node and were not drained: {NAMESPACE}/web-0, {NAMESPACE}/web-1 "
        "(drain them too before powering the node off)"
    )


def test_a_bare_gpu_pod_is_waited_for_by_default_never_evicted(cluster: Cluster) -> None:
    cluster.kube.create_pod(plain_pod("batch", gpus=1))
    cluster.kube.add_maintenance(maintenance())
    for _ in range(3):
        assert cluster.step("reseat") in ("Cordoned", "Evacuating")
    assert (NAMESPACE, "batch") in cluster.kube.pods
    assert not [write for write in cluster.kube.writes if write[0] == "evict"]
    assert cluster.kube.maintenances["reseat"]["status"]["unmanagedGpuPods"] == [f"{NAMESPACE}/batch"]
    cluster.kube.delete_pod(NAMESPACE, "batch")  # the job finished
    assert cluster.step("reseat") == "Ready"
    assert cluster.kube.maintenances["reseat"]["status"]["unmanagedGpuPods"] == []


def test_two_budgets_over_a_pod_are_named_in_status_and_asked_at_the_backoff_pace(cluster: Cluster) -> None:
    cluster.kube.create_pod(plain_pod("batch", gpus=1, labels={"app": "batch"}))
    for name in ("batch", "batch-too"):
        cluster.kube.apply_pdb({"metadata": {"name": name, "namespace": NAMESPACE},
                                "spec": {"minAvailable": 0, "selector": {"matchLabels": {"app": "batch"}}}})  # fmt: skip
    cluster.kube.add_maintenance(maintenance(unmanagedGpuPods="Evict"))
    cluster.step("reseat")
    for _ in range(20):  # ten seconds of steps twice a second
        cluster.step("reseat")
        cluster.clock.now += 0.5
    assert cluster.kube.refused_evictions == [f"{NAMESPACE}/batch"] * 3, "at 0, 2 and 6 s"
    status = cluster.kube.maintenances["reseat"]["status"]
    assert status["message"] == f"waiting for: eviction of {NAMESPACE}/batch refused: {TWO_BUDGETS_REFUSAL}"
    assert "This pod has more than one PodDisruptionBudget" in status["message"]
    assert next(c for c in status["conditions"] if c["type"] == "Evacuated")["reason"] == "DisruptionBudget"
