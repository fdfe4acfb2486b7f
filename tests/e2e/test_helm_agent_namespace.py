"""The power-actuating node agent in a namespace of its own, the release namespace at Pod Security
"restricted": the operator runs there, the agent (root, CAP_SYS_ADMIN only, no privilege escalation)
runs in a namespace the chart creates at "privileged", and everything that names the agent's
namespace followed it: its Lease, its RBAC, its admission policy, the operator's setting."""

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.unit.chart.helm import AGENT_SA, NAMESPACE, RELEASE, agent_pod_on, release_on_local_cluster, token_kubeconfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
AGENTS = "egpu-agents"
VALUES = {"agent.powerActuation.enabled": "true", "agent.namespace": AGENTS, "agent.createNamespace": "true"}
NODE = "x220-tesla-p4"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # release_on_local_cluster labels the release namespace enforce=restricted before installing with --wait.
    with release_on_local_cluster(VALUES) as cluster:
        yield cluster


def labels(kube: Kubectl, namespace: str) -> dict[str, str]:
    found: dict[str, str] = kube.get_json("namespace", namespace)["metadata"]["labels"]
    return found


def test_the_operator_runs_in_a_restricted_namespace_and_the_power_agent_beside_it(cluster: LocalCluster) -> None:
    kube = cluster.kubectl
    assert labels(kube, NAMESPACE)["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels(kube, AGENTS)["pod-security.kubernetes.io/enforce"] == "privileged"
    assert kube.get_json("deployment", "-n", NAMESPACE, RELEASE)["status"]["readyReplicas"] == 2  # the chart runs two
    assert not kube.get_json("daemonsets", "-n", NAMESPACE)["items"]
    daemonset = kube.get_json("daemonset", "-n", AGENTS, AGENT_SA)
    assert daemonset["status"]["numberReady"] == daemonset["status"]["desiredNumberScheduled"] == 8
    # The API server admitted the agent's pods as the chart wrote them.
    pod = kube.get_json("pod", "-n", AGENTS, agent_pod_on(kube, NODE, namespace=AGENTS))
    context = pod["spec"]["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert "--read-only" not in pod["spec"]["containers"][0]["args"]
    env = {item["name"]: item.get("value") for item in kube.get_json("deployment", "-n", NAMESPACE, RELEASE)["spec"]["template"]
           ["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["EGPU_OPERATOR_AGENT_NAMESPACE"] == AGENTS


def test_the_release_namespace_would_refuse_the_power_agent(cluster: LocalCluster) -> None:
    """The same pod, submitted to the release namespace (server-side dry run), fails "restricted"."""
    kube = cluster.kubectl
    pod = kube.get_json("pod", "-n", AGENTS, agent_pod_on(kube, NODE, namespace=AGENTS))
    spec = {key: value for key, value in pod["spec"].items() if key not in ("serviceAccountName", "serviceAccount")}
    copy = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "power-agent-copy", "namespace": NAMESPACE}, "spec": spec}
    result = kube.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(copy), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "SYS_ADMIN" in result.stderr


def test_the_agents_token_writes_its_lease_in_its_own_namespace_only(cluster: LocalCluster) -> None:
    kube = cluster.kubectl
    with tempfile.TemporaryDirectory(prefix="egpu-helm-agent-ns-") as folder:
        config = token_kubeconfig(
            kube, AGENT_SA, Path(folder) / "agent.kubeconfig", bound_pod=agent_pod_on(kube, NODE, namespace=AGENTS),
            namespace=AGENTS,
        )  # fmt: skip
        agent = Kubectl(kube.binary, config)

        def create_lease(namespace: str, node: str) -> subprocess.CompletedProcess[str]:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": f"egpu-node-agent-{node}", "namespace": namespace},
                "spec": {"holderIdentity": NODE},
            }
            return agent.run("create", "-f", "-", stdin=json.dumps(lease), check=False)

        created = create_lease(AGENTS, NODE)
        assert created.returncode == 0, created.stderr
        refused = create_lease(NAMESPACE, NODE)  # RBAC: the agent's Role is in its own namespace only
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower()
        # The own-Lease policy matches the agent's user name, which holds its namespace: it still applies.
        forged = create_lease(AGENTS, "someone-else")
        assert forged.returncode != 0
        assert "may write only the Lease" in forged.stderr
