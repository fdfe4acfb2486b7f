"""helm upgrade changes the release's objects in place; helm uninstall leaves nothing behind but
the CRDs (kept by default, so InferenceDeployments survive), and those too with crds.keep=false;
an agent that set a power limit restores its default when the release is uninstalled, not before."""

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from egpu_api.fleet import load_fleet
from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent import cli
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher
from egpu_runtime.kube import api_client
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import (
    AGENT_SA,
    CHART,
    NAMESPACE,
    RELEASE,
    agent_pod_on,
    helm,
    install,
    release_on_local_cluster,
    set_args,
    token_kubeconfig,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
#: Power actuation, in a namespace of the agent's own (made by the test, not by the chart).
AGENTS = "egpu-agents"
POWER = {"agent.powerActuation.enabled": "true", "agent.namespace": AGENTS}
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


def test_power_actuation_needs_a_privileged_namespace_of_its_own(cluster: LocalCluster) -> None:
    """Not the release namespace (the chart refuses, naming agent.namespace); a namespace of its own that
    enforces "restricted" refuses the agent's pods (root with CAP_SYS_ADMIN); labelled "privileged", it runs
    them, and the release namespace stays "restricted"."""
    kube = cluster.kubectl
    refused = helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "agent.powerActuation.enabled=true",
                   kubeconfig=cluster.kubeconfig, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "set agent.namespace to a namespace of its own" in refused.stderr

    kube.run("create", "namespace", AGENTS)
    kube.run("label", "namespace", AGENTS, "pod-security.kubernetes.io/enforce=restricted")
    # Without --wait: the rollout cannot finish while the namespace refuses the new pods.
    helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *set_args(POWER), kubeconfig=cluster.kubeconfig)

    def refused_by_pod_security() -> str | None:
        events = kube.get_json("events", "-n", AGENTS, "--field-selector", "reason=FailedCreate")["items"]
        messages = [event["message"] for event in events if "violates PodSecurity" in event["message"]]
        return messages[0] if messages else None

    message = wait_for(refused_by_pod_security, timeout_s=20, what="the DaemonSet's pods to be refused by Pod Security")
    assert "SYS_ADMIN" in message
    kube.run("label", "namespace", AGENTS, "--overwrite", "pod-security.kubernetes.io/enforce=privileged")
    install(cluster, POWER, command="upgrade")
    pods = kube.get_json("pods", "-n", AGENTS, "-l", "app.kubernetes.io/component=node-agent")["items"]
    assert len(pods) == 8
    assert all("--read-only" not in pod["spec"]["containers"][0]["args"] for pod in pods)
    assert not kube.get_json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=node-agent")["items"]
    labels = kube.get_json("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_uninstall_restores_the_default_limits_the_agent_set(cluster: LocalCluster) -> None:
    """The agent's code with the chart's credentials (a token bound to its pod on the Tesla P4 node), power
    actuation on in the agent's namespace (the test before): it keeps its limit while the release stays and
    restores it once uninstalled."""
    kube, name = cluster.kubectl, "x220-tesla-p4"
    with tempfile.TemporaryDirectory(prefix="egpu-helm-restore-") as folder:
        pod = agent_pod_on(kube, name, namespace=AGENTS)
        config = token_kubeconfig(kube, AGENT_SA, Path(folder) / "agent.kubeconfig", bound_pod=pod, namespace=AGENTS)
        host = FakeGpuHost(load_fleet().node(name), Path(folder) / "sys")
        publisher = NodePublisher(api_client(config), name, AGENTS)
        agent = NodeAgent(AgentConfig(name), NvmlBackend(host.nvml, host.sysfs_root), publisher, AgentMetrics())
        args = argparse.Namespace(read_only=False, restore_power_on_exit="uninstall", daemonset_name=f"{RELEASE}-node-agent",
                                  node_name=name)  # fmt: skip
        try:
            agent.poll()
            uuid = host.nvml.gpus[0].uuid
            kube.run("annotate", "node", name, f"egpu-operator.io/power-limit-request={json.dumps({uuid: 70})}", "--overwrite")

            def applied() -> bool | None:
                agent.poll()
                return True if host.nvml.power_limit_sets == [(uuid, 70_000)] else None

            wait_for(applied, 15, "the agent to apply 70 W")
            wait_for(lambda: True if publisher.annotations().get("egpu-operator.io/power-limit-status", "").count(
                '"setByAgentWatts":70') else None, 15, "the agent to see its own status")  # fmt: skip

            cli.restore_on_exit(args, agent, publisher)  # a restart: the DaemonSet is there and readable
            assert host.nvml.power_limit_sets == [(uuid, 70_000)], "the cap must survive a restart"

            helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", kubeconfig=cluster.kubeconfig)
            cli.restore_on_exit(args, agent, publisher)  # SIGTERM after the uninstall
            assert host.nvml.power_limit_sets == [(uuid, 70_000), (uuid, 75_000)]
        finally:
            publisher.close()
            kube.run("annotate", "node", name, "egpu-operator.io/power-limit-request-", check=False)
    install(cluster, POWER)  # as the next test expects


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
