"""helm upgrade changes the release's objects in place; helm uninstall leaves nothing behind but
the CRDs (kept by default, so InferenceDeployments survive), and those too with crds.keep=false."""

import os
from collections.abc import Iterator

import pytest

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import CHART, NAMESPACE, RELEASE, helm, install, release_on_local_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
CRDS = {"customresourcedefinition.apiextensions.k8s.io/gpumaintenances.egpu-operator.io",
        "customresourcedefinition.apiextensions.k8s.io/inferencedeployments.egpu-operator.io"}  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with release_on_local_cluster() as cluster:
        yield cluster


def release_objects(kube: Kubectl) -> set[str]:
    """Every object, of any listable kind in any namespace, labelled as part of the release."""
    kinds = kube.run("api-resources", "--verbs=list", "-o", "name").stdout.split()
    # Events carry no labels and are not the release's; skip the kinds the API server would refuse to list in one go.
    kinds = [kind for kind in kinds if kind not in ("events", "events.events.k8s.io", "componentstatuses")]
    found = kube.run(
        "get", ",".join(kinds), "--all-namespaces", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    ).stdout.split()
    return set(found)


def test_upgrade_changes_objects_in_place(cluster: LocalCluster) -> None:
    kube = cluster.kubectl
    before = kube.get_json("deployment", RELEASE, "-n", NAMESPACE)["metadata"]["uid"]
    install(cluster, {"operator.workers": "7", "agent.pollIntervalSeconds": "5"}, command="upgrade")
    deployment = kube.get_json("deployment", RELEASE, "-n", NAMESPACE)
    assert deployment["metadata"]["uid"] == before
    env = {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EGPU_OPERATOR_WORKERS"] == "7"
    agent = kube.get_json("daemonset", f"{RELEASE}-node-agent", "-n", NAMESPACE)
    assert "--poll-interval=5" in agent["spec"]["template"]["spec"]["containers"][0]["args"]
    assert agent["status"]["updatedNumberScheduled"] == agent["status"]["numberReady"] == 8


def test_power_actuation_needs_a_privileged_namespace(cluster: LocalCluster) -> None:
    """The namespace enforces "restricted": with CAP_SYS_ADMIN as root the agent's pods are refused."""
    kube = cluster.kubectl
    # Without --wait: the rollout cannot finish while the namespace refuses the new pods.
    helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "agent.powerActuation.enabled=true",
         kubeconfig=cluster.kubeconfig)  # fmt: skip

    def refused() -> str | None:
        events = kube.get_json("events", "-n", NAMESPACE, "--field-selector", "reason=FailedCreate")["items"]
        messages = [event["message"] for event in events if "violates PodSecurity" in event["message"]]
        return messages[0] if messages else None

    message = wait_for(refused, timeout_s=20, what="the DaemonSet's pods to be refused by Pod Security")
    assert "SYS_ADMIN" in message
    kube.run("label", "namespace", NAMESPACE, "--overwrite", "pod-security.kubernetes.io/enforce=privileged")
    install(cluster, {"agent.powerActuation.enabled": "true"}, command="upgrade")
    pods = kube.get_json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=node-agent")["items"]
    assert all("--read-only" not in pod["spec"]["containers"][0]["args"] for pod in pods)


def test_uninstall_leaves_only_the_kept_crds(cluster: LocalCluster) -> None:
    kube = cluster.kubectl
    assert len(release_objects(kube)) > len(CRDS)
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", kubeconfig=cluster.kubeconfig)
    left = wait_for(
        lambda: found if (found := release_objects(kube)) <= CRDS else None, timeout_s=30, what="the release's objects to go"
    )
    assert left == CRDS
    # Reinstalled with crds.keep=false, the release adopts the kept CRDs and this time takes them along.
    install(cluster, {"crds.keep": "false"})
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", kubeconfig=cluster.kubeconfig)
    wait_for(lambda: True if not release_objects(kube) else None, timeout_s=30, what="every object of the release to go")
