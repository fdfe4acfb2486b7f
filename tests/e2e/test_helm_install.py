"""helm install on a real API server: every object is accepted, the pods pass Pod Security
"restricted", and the chart's ServiceAccounts can do nothing beyond what the code needs."""

import json
import os
from collections.abc import Iterator

import pytest

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.unit.chart.helm import AGENT_SA, NAMESPACE, OPERATOR_SA, RELEASE, helm, release_on_local_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with release_on_local_cluster() as cluster:
        yield cluster


def can(kube: Kubectl, service_account: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kube.run(
        "auth", "can-i", verb, resource, *scope, f"--as=system:serviceaccount:{NAMESPACE}:{service_account}", check=False
    )
    return result.stdout.strip() == "yes"


def test_release_is_deployed_with_every_workload_up(cluster: LocalCluster) -> None:
    status = json.loads(helm("status", RELEASE, "-n", NAMESPACE, "-o", "json", kubeconfig=cluster.kubeconfig).stdout)
    assert status["info"]["status"] == "deployed"
    kube = cluster.kubectl
    daemonset = kube.get_json("daemonset", "-n", NAMESPACE, f"{RELEASE}-node-agent")
    # Every fleet node carries the NFD label, so every one runs an agent.
    assert daemonset["status"]["numberReady"] == daemonset["status"]["desiredNumberScheduled"] == 8
    assert kube.get_json("deployment", "-n", NAMESPACE, RELEASE)["status"]["readyReplicas"] == 2
    for crd in ("inferencedeployments.egpu-operator.io", "gpumaintenances.egpu-operator.io"):
        assert kube.get_json("crd", crd)["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE


def test_admission_policy_compiles_without_warnings(cluster: LocalCluster) -> None:
    policy = cluster.kubectl.get_json("validatingadmissionpolicy", f"{RELEASE}-node-agent-own-node")
    assert policy["status"]["observedGeneration"] == policy["metadata"]["generation"]
    assert not policy["status"].get("typeChecking", {}).get("expressionWarnings")


@pytest.mark.parametrize(
    ("verb", "resource", "namespace"),
    [
        ("list", "nodes", None),
        ("patch", "nodes", None),
        ("create", "pods", "any-namespace"),
        ("delete", "pods", "any-namespace"),
        ("create", "pods/eviction", "any-namespace"),
        ("watch", "leases.coordination.k8s.io", NAMESPACE),  # the agents' heartbeats, in their namespace only
        ("patch", "inferencedeployments.egpu-operator.io/status", "any-namespace"),
        ("create", "poddisruptionbudgets.policy", "any-namespace"),
        ("patch", "gpumaintenances.egpu-operator.io/status", None),
        ("create", "events", "any-namespace"),
        ("update", f"leases.coordination.k8s.io/{RELEASE}", NAMESPACE),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io/inferencedeployments.egpu-operator.io", None),
        ("get", "customresourcedefinitions.apiextensions.k8s.io/gpumaintenances.egpu-operator.io", None),
        ("get", f"leases.coordination.k8s.io/{RELEASE}", "another-release"),  # the claiming release's Lease
    ],
)
def test_operator_may_do_what_its_code_does(cluster: LocalCluster, verb: str, resource: str, namespace: str | None) -> None:
    assert can(cluster.kubectl, OPERATOR_SA, verb, resource, namespace)


@pytest.mark.parametrize(
    ("verb", "resource", "namespace"),
    [
        ("get", "secrets", NAMESPACE),
        ("list", "secrets", None),
        ("delete", "nodes", None),
        ("update", "nodes", None),
        ("create", "deployments.apps", "any-namespace"),
        ("update", "pods", "any-namespace"),
        ("get", "configmaps", NAMESPACE),
        ("create", "leases.coordination.k8s.io", NAMESPACE),
        ("watch", "leases.coordination.k8s.io", "kube-node-lease"),  # the kubelets' Leases are never read
        ("get", "leases.coordination.k8s.io/some-node", "kube-node-lease"),
        ("list", "namespaces", None),
        ("update", "leases.coordination.k8s.io/egpu-node-agent-pi5-rtx4090", NAMESPACE),
        ("update", f"leases.coordination.k8s.io/{RELEASE}", "kube-system"),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io/gpumaintenances.egpu-operator.io", None),
        ("delete", "inferencedeployments.egpu-operator.io", "any-namespace"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("create", "serviceaccounts/token", NAMESPACE),
    ],
)
def test_operator_may_not_do_more(cluster: LocalCluster, verb: str, resource: str, namespace: str | None) -> None:
    assert not can(cluster.kubectl, OPERATOR_SA, verb, resource, namespace)


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "nodes", None, True),
        ("patch", "nodes/status", None, True),
        ("patch", "leases.coordination.k8s.io", NAMESPACE, True),
        ("create", "events", "default", True),
        ("get", "secrets", NAMESPACE, False),
        ("delete", "nodes", None, False),
        ("list", "pods", None, False),
        ("create", "pods", NAMESPACE, False),
        ("patch", "leases.coordination.k8s.io", "kube-node-lease", False),
        ("create", "events", NAMESPACE, False),
        ("list", "inferencedeployments.egpu-operator.io", None, False),
    ],
)
def test_node_agent_permissions(cluster: LocalCluster, verb: str, resource: str, namespace: str | None, allowed: bool) -> None:
    assert can(cluster.kubectl, AGENT_SA, verb, resource, namespace) is allowed
