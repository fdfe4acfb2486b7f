"""The API server refusing a tenant's replica pods: the refusal reaches the tenant, and the GPUs
it would have used stay free for everyone else.

Before the fix a refused create kept its GPU reserved for 60 s and every retry reserved another,
so one namespace over quota made every deployment in the cluster report "no free GPU"."""

import json
from collections.abc import Iterator

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
MODES = ("bare-metal", "passthrough")


@pytest.fixture
def second_workspace(kube: Kubectl, operator: OperatorProcess) -> Iterator[str]:
    name = "idep-neighbour"
    kube.run("create", "namespace", name)
    kube.wait_default_service_account(name)
    yield name
    kube.run("delete", "inferencedeployments", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False)
    kube.run("delete", "namespace", name, "--wait=false", check=False)


def rejected(kube: Kubectl, namespace: str, name: str, words: str) -> dict[str, str] | None:
    condition = placed_condition(kube, namespace, name)
    if condition and condition["reason"] == "PodRejected" and words in condition["message"]:
        return condition
    return None


def test_a_namespace_over_quota_is_told_why_and_starves_no_one(kube: Kubectl, workspace: str, second_workspace: str) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-gpus"},
             "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}}  # fmt: skip
    kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(quota))
    wait_for(
        lambda: kube.get_json("resourcequota", "no-gpus", "-n", workspace).get("status", {}).get("hard"),
        30,
        "the quota controller to count the namespace",
    )  # until then admission refuses with another message
    # As many replicas as the fleet has whole GPUs: each refused create used to hold one.
    apply(kube, workspace, deployment("greedy", "1G", 60, 9, MODES))
    condition = wait_for(lambda: rejected(kube, workspace, "greedy", "exceeded quota"), 30, "greedy: PodRejected")
    assert condition["status"] == "False"
    assert "replica 0: " in condition["message"]
    events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=greedy")["items"]
    assert any(e["reason"] == "PodRejected" and "exceeded quota" in e["message"] for e in events)
    assert replica_pods(kube, workspace, "greedy") == []

    apply(kube, second_workspace, deployment("neighbour", "1G", 60, 5, MODES))
    nodes = wait_for(lambda: ready_on(kube, second_workspace, "neighbour", 5), 60, "neighbour: 5 replicas Ready")
    assert len(nodes) == 5
    assert placed_condition(kube, second_workspace, "neighbour")["reason"] == "Placed"


def test_the_tenant_namespaces_pod_security_level_applies_to_replica_pods(kube: Kubectl, workspace: str) -> None:
    kube.run("label", "namespace", workspace, "pod-security.kubernetes.io/enforce=restricted")
    apply(kube, workspace, deployment("loose", "1G", 60, 1, MODES))  # no securityContext: baseline, not restricted
    condition = wait_for(lambda: rejected(kube, workspace, "loose", "violates PodSecurity"), 30, "loose: PodRejected")
    assert '"restricted:latest"' in condition["message"]

    restricted = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                  "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    tight = deployment("tight", "1G", 60, 1, MODES)
    tight["spec"]["template"]["spec"]["containers"][0]["securityContext"] = restricted
    apply(kube, workspace, tight)
    wait_for(lambda: ready_on(kube, workspace, "tight", 1), 60, "tight: 1 replica Ready")
