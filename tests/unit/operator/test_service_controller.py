"""spec.service: the operator creates, corrects and deletes the deployment's Service, and only its own."""

from typing import Any

import pytest

from egpu_api import keys
from egpu_api.inference import InferenceDeploymentSpec
from egpu_operator import service
from tests.unit.operator.cluster import NAMESPACE, Cluster, deployment

HTTP = {"ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9400}]}


@pytest.fixture
def cluster(nodes: dict[str, Any]) -> Cluster:
    return Cluster(nodes)


def test_the_service_selects_exactly_the_replicas_and_is_owned_by_the_deployment(cluster: Cluster) -> None:
    body = cluster.kube.add_deployment(deployment(replicas=2, service=HTTP))
    cluster.reconcile()
    made = cluster.kube.services[(NAMESPACE, "llm")]
    assert made["spec"]["selector"] == {"egpu-operator.io/inference-deployment": "llm"}
    assert made["spec"]["type"] == "ClusterIP"
    assert made["spec"]["ports"] == [
        {"port": 80, "targetPort": "http", "protocol": "TCP", "name": "http"},
        {"port": 9400, "targetPort": 9400, "protocol": "TCP", "name": "metrics"},
    ]
    [owner] = made["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceDeployment", body["metadata"]["uid"], True)
    # Both replica pods carry the label the selector asks for.
    assert len(cluster.pods_of("llm")) == 2


def test_a_settled_service_is_not_written_again(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment(service=HTTP))
    cluster.reconcile()
    cluster.reconcile()
    assert [w for w in cluster.kube.writes if w[1].startswith("service/")] == [("create", f"service/{NAMESPACE}/llm")]


def test_a_user_edited_selector_and_ports_are_put_back_and_the_cluster_ip_kept(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment(service=HTTP))
    cluster.reconcile()
    made = cluster.kube.services[(NAMESPACE, "llm")]
    made["spec"]["selector"] = {"app": "something-else"}
    made["spec"]["ports"] = [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]
    made["metadata"]["labels"]["team"] = "ml"
    cluster.reconcile()
    fixed = cluster.kube.services[(NAMESPACE, "llm")]
    assert fixed["spec"]["selector"] == {"egpu-operator.io/inference-deployment": "llm"}
    assert [port["port"] for port in fixed["spec"]["ports"]] == [80, 9400]
    assert fixed["spec"]["clusterIP"] == "10.0.0.1"
    assert fixed["metadata"]["labels"]["team"] == "ml", "labels the operator does not decide are kept"


def test_removing_spec_service_deletes_the_service(cluster: Cluster) -> None:
    cluster.kube.add_deployment(deployment(service=HTTP))
    cluster.reconcile()
    del cluster.kube.deployments[(NAMESPACE, "llm")]["spec"]["service"]
    cluster.reconcile()
    assert (NAMESPACE, "llm") not in cluster.kube.services
    assert ("delete", f"service/{NAMESPACE}/llm") in cluster.kube.writes


def test_a_service_of_someone_else_is_neither_taken_over_nor_deleted(cluster: Cluster) -> None:
    foreign = {
        "metadata": {
            "name": "llm",
            "namespace": NAMESPACE,
            "labels": {keys.DEPLOYMENT_LABEL: "llm"},
            "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "uid-web", "controller": True}],
        },
        "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    cluster.kube.services[(NAMESPACE, "llm")] = foreign
    cluster.kube.add_deployment(deployment(service=HTTP))
    cluster.reconcile()
    cluster.reconcile()
    assert cluster.kube.services[(NAMESPACE, "llm")]["spec"]["selector"] == {"app": "web"}
    conflicts = [e for e in cluster.kube.events if e["reason"] == "ServiceConflict"]
    assert len(conflicts) == 1, "reported once, not on every reconcile"
    assert "delete or rename" in conflicts[0]["message"]

    del cluster.kube.deployments[(NAMESPACE, "llm")]["spec"]["service"]
    cluster.reconcile()
    assert (NAMESPACE, "llm") in cluster.kube.services, "a Service the deployment does not control is never deleted"


def test_the_wanted_service_compares_equal_to_what_the_api_server_stores() -> None:
    spec = InferenceDeploymentSpec.model_validate(deployment(service={"ports": [{"port": 8000}]})["spec"])
    assert spec.service is not None
    wanted = service.manifest({"metadata": {"name": "llm", "namespace": NAMESPACE, "uid": "u1"}}, spec.service)
    stored = {
        "metadata": {**wanted["metadata"], "resourceVersion": "7", "annotations": {"a": "b"}},
        "spec": {**wanted["spec"], "clusterIP": "10.96.0.9", "sessionAffinity": "None",
                 "ports": [{"port": 8000, "targetPort": 8000, "protocol": "TCP"}]},
    }  # fmt: skip
    assert service.in_step(wanted, service.view(stored))
    assert not service.in_step(wanted, None)
