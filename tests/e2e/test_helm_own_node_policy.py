"""The chart's admission policy: the node agent's token, bound to its pod on node A, may change
egpu-operator.io/ labels and annotations and the GPUHealthy condition of A, and nothing else."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.kube import api_client
from tests.unit.chart.helm import AGENT_SA, agent_pod_on, release_on_local_cluster, token_kubeconfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
OWN, OTHER = "pi5-rtx4090", "x220-tesla-p4"
MERGE, STRATEGIC = "application/merge-patch+json", "application/strategic-merge-patch+json"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with release_on_local_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def agent(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """CoreV1Api as the node agent on OWN: a token bound to the DaemonSet's pod there."""
    path = tmp_path_factory.mktemp("agent") / "kubeconfig"
    token_kubeconfig(cluster.kubectl, AGENT_SA, path, bound_pod=agent_pod_on(cluster.kubectl, OWN))
    return client.CoreV1Api(api_client(path))


def refusal(call: Any) -> str:
    """The API server's message for a refused call (fails if the call went through)."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403
    message: str = json.loads(refused.value.body)["message"]
    return message


def labels(cluster: LocalCluster, node: str) -> dict[str, str]:
    found: dict[str, str] = cluster.kubectl.get_json("node", node)["metadata"]["labels"]
    return found


def condition(cluster: LocalCluster, node: str, kind: str) -> dict[str, Any] | None:
    conditions = cluster.kubectl.get_json("node", node)["status"]["conditions"]
    return next((c for c in conditions if c["type"] == kind), None)


def test_token_carries_the_node_of_its_pod(cluster: LocalCluster, tmp_path: Path) -> None:
    path = token_kubeconfig(cluster.kubectl, AGENT_SA, tmp_path / "kubeconfig", bound_pod=agent_pod_on(cluster.kubectl, OWN))
    review = json.loads(Kubectl(cluster.kubectl.binary, path).run("auth", "whoami", "-o", "json").stdout)
    assert review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] == [OWN]


def test_agent_may_set_project_labels_and_annotations_on_its_own_node(cluster: LocalCluster, agent: Any) -> None:
    body = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}, "annotations": {"egpu-operator.io/note": "x"}}}
    agent.patch_node(OWN, body, _content_type=MERGE)
    assert labels(cluster, OWN)["egpu-operator.io/policy-test"] == "yes"
    agent.patch_node(OWN, {"metadata": {"labels": {"egpu-operator.io/policy-test": None}}}, _content_type=MERGE)
    assert "egpu-operator.io/policy-test" not in labels(cluster, OWN)


def test_agent_may_not_label_another_node(cluster: LocalCluster, agent: Any) -> None:
    body = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}}}
    message = refusal(lambda: agent.patch_node(OTHER, body, _content_type=MERGE))
    assert f"the egpu-operator node agent on {OWN} may not change node {OTHER}" in message
    assert "egpu-operator.io/policy-test" not in labels(cluster, OTHER)


def test_agent_may_not_touch_other_labels_or_annotations_on_its_own_node(cluster: LocalCluster, agent: Any) -> None:
    message = refusal(lambda: agent.patch_node(OWN, {"metadata": {"labels": {"team": "ml"}}}, _content_type=MERGE))
    assert "may change only egpu-operator.io/ labels, not team" in message
    message = refusal(lambda: agent.patch_node(OWN, {"metadata": {"labels": {"kubernetes.io/os": None}}}, _content_type=MERGE))
    assert "not kubernetes.io/os" in message
    message = refusal(
        lambda: agent.patch_node(OWN, {"metadata": {"annotations": {"kwok.x-k8s.io/node": "real"}}}, _content_type=MERGE)
    )
    assert "may change only egpu-operator.io/ annotations, not kwok.x-k8s.io/node" in message
    assert labels(cluster, OWN)["kubernetes.io/os"] == "linux"


def test_agent_may_not_cordon_or_taint_its_node(cluster: LocalCluster, agent: Any) -> None:
    message = refusal(lambda: agent.patch_node(OWN, {"spec": {"unschedulable": True}}, _content_type=MERGE))
    assert "may not change a node's spec" in message
    taint = {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}
    assert "may not change a node's spec" in refusal(lambda: agent.patch_node(OWN, taint, _content_type=MERGE))


def condition_patch(kind: str) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    entry = {
        "type": kind,
        "status": "False",
        "reason": "Test",
        "message": "t",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {"status": {"conditions": [entry]}}


def test_agent_may_change_only_the_gpuhealthy_condition_of_its_node(cluster: LocalCluster, agent: Any) -> None:
    agent.patch_node_status(OWN, condition_patch("GPUHealthy"), _content_type=STRATEGIC)
    assert condition(cluster, OWN, "GPUHealthy")["reason"] == "Test"  # type: ignore[index]
    message = refusal(lambda: agent.patch_node_status(OWN, condition_patch("Ready"), _content_type=STRATEGIC))
    assert "may change only the GPUHealthy condition" in message
    assert condition(cluster, OWN, "Ready")["status"] == "True"  # type: ignore[index]
    capacity = {"status": {"capacity": {"nvidia.com/gpu": "64"}}}
    assert "only the GPUHealthy condition" in refusal(lambda: agent.patch_node_status(OWN, capacity, _content_type=STRATEGIC))
    # Labels through the status subresource are held to the same rule.
    sneaky = {"metadata": {"labels": {"team": "ml"}}}
    assert "not team" in refusal(lambda: agent.patch_node_status(OWN, sneaky, _content_type=STRATEGIC))
    other = refusal(lambda: agent.patch_node_status(OTHER, condition_patch("GPUHealthy"), _content_type=STRATEGIC))
    assert f"may not change node {OTHER}" in other


def test_unbound_token_of_the_agent_may_change_no_node(cluster: LocalCluster, tmp_path: Path) -> None:
    path = token_kubeconfig(cluster.kubectl, AGENT_SA, tmp_path / "kubeconfig")
    unbound = client.CoreV1Api(api_client(path))
    body = {"metadata": {"labels": {"egpu-operator.io/policy-test": "yes"}}}
    assert "only with a token bound to a pod on that node" in refusal(lambda: unbound.patch_node(OWN, body, _content_type=MERGE))


def test_other_users_are_not_affected(cluster: LocalCluster) -> None:
    cluster.kubectl.run("label", "node", OWN, "team=ml")
    cluster.kubectl.run("label", "node", OWN, "team-")
