"""The chart's RBAC runs the product: the operator with its ServiceAccount's token and one node
agent per fleet node with a token bound to the DaemonSet's pod on that node place an example
InferenceDeployment, report a lost GPU, and are refused nothing."""

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from egpu_api.fleet import load_fleet
from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.agent import AgentConfig, NodeAgent
from egpu_node_agent.fake_nvml import FakeGpuHost
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher
from egpu_runtime.kube import api_client
from tests.e2e.conftest import e2e_operator
from tests.e2e.helpers import wait_for
from tests.unit.chart.helm import AGENT_SA, NAMESPACE, OPERATOR_SA, REPO, agent_pod_on, release_on_local_cluster, token_kubeconfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="installs the chart on a local cluster of its own"),
]
EXAMPLE = REPO / "examples" / "01-llm-18gb-30s-budget.yaml"


def maintenance_phase(kube: Kubectl, name: str) -> str | None:
    return (kube.get_json("gpumaint", name).get("status") or {}).get("phase")


class BoundAgents:
    """The real agent code, one per fleet node, each with its own pod-bound token (as in the DaemonSet)."""

    def __init__(self, cluster: LocalCluster, folder: Path) -> None:
        self.metrics = AgentMetrics()
        self.hosts: dict[str, FakeGpuHost] = {}
        self.agents: list[NodeAgent] = []
        self.stop = threading.Event()
        for node in load_fleet().nodes:
            kubeconfig = token_kubeconfig(
                cluster.kubectl, AGENT_SA, folder / f"{node.name}.kubeconfig", bound_pod=agent_pod_on(cluster.kubectl, node.name)
            )
            host = self.hosts[node.name] = FakeGpuHost(node, folder / "sysfs" / node.name)
            publisher = NodePublisher(api_client(kubeconfig), node.name, NAMESPACE)
            config = AgentConfig(node.name, poll_interval_s=1.0)
            self.agents.append(NodeAgent(config, NvmlBackend(host.nvml, host.sysfs_root), publisher, self.metrics))
        self.threads = [threading.Thread(target=agent.run, args=(self.stop,), daemon=True) for agent in self.agents]

    def errors(self) -> float:
        return sum(
            sample.value
            for family in self.metrics.registry.collect()
            if family.name == "egpu_node_agent_errors"
            for sample in family.samples
            if sample.name.endswith("_total")
        )

    def __enter__(self) -> "BoundAgents":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for agent in self.agents:
            agent.publisher.changed.set()
            agent.publisher.close()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with release_on_local_cluster() as cluster:
        yield cluster


def test_operator_and_agents_with_chart_credentials_place_a_model(
    cluster: LocalCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kube = cluster.kubectl
    operator = e2e_operator(token_kubeconfig(kube, OPERATOR_SA, tmp_path / "operator.kubeconfig"), tmp_path / "operator.log")
    kube.run("create", "namespace", "models")
    with tempfile.TemporaryDirectory(prefix="egpu-helm-agents-") as folder, BoundAgents(cluster, Path(folder)) as agents:
        caplog.set_level(logging.WARNING, logger="egpu_node_agent")
        operator.start("--auto-maintenance")
        try:
            kube.run("apply", "-n", "models", "-f", str(EXAMPLE))
            # The example wants two replicas on bare-metal or passthrough GPUs that load 18 GB in 30 s.
            wait_for(
                lambda: (
                    True
                    if (kube.get_json("idep", "llm-18gb", "-n", "models").get("status") or {}).get("readyReplicas") == 2
                    else None
                ),
                timeout_s=40,
                what="both replicas of the example to be placed and Ready",
            )
            # The example's spec.service: the operator made its Service with the chart's credentials.
            wait_for(
                lambda: True if kube.run("get", "service", "llm-18gb", "-n", "models", check=False).returncode == 0 else None,
                timeout_s=30,
                what="the Service of the example",
            )
            # A GPU maintenance moves a replica (cordon, surge, eviction, status) with the same credentials.
            node = kube.get_json("idep", "llm-18gb", "-n", "models")["status"]["placements"][0]["node"]
            maintenance = {"apiVersion": "egpu-operator.io/v1alpha1", "kind": "GPUMaintenance",
                           "metadata": {"name": "rbac-check"}, "spec": {"nodeName": node, "reason": "RBAC check"}}  # fmt: skip
            kube.run("create", "-f", "-", stdin=json.dumps(maintenance))
            wait_for(lambda: True if maintenance_phase(kube, "rbac-check") == "Ready" else None, 60, "the maintenance Ready")
            kube.run("patch", "gpumaint", "rbac-check", "--type=merge", "-p", '{"spec": {"completed": true}}')
            wait_for(lambda: True if maintenance_phase(kube, "rbac-check") == "Completed" else None, 30, "the maintenance done")

            # A GPU falls off the bus: the agent records an Event (namespace "default") and the condition,
            # and the operator (--auto-maintenance) files a GPUMaintenance for the node.
            agents.hosts["x220-tesla-p4"].lose_gpu(0)
            wait_for(
                lambda: (
                    True
                    if any(
                        event["reason"] == "GPULost" and event["involvedObject"]["name"] == "x220-tesla-p4"
                        for event in kube.get_json("events", "-n", "default")["items"]
                    )
                    else None
                ),
                timeout_s=15,
                what="the GPULost Event of x220-tesla-p4",
            )
            healthy = next(c for c in kube.get_json("node", "x220-tesla-p4")["status"]["conditions"] if c["type"] == "GPUHealthy")
            assert healthy["status"] == "False"
            wait_for(
                lambda: True if kube.get_json("gpumaint", "-l", "egpu-operator.io/auto-maintenance=true")["items"] else None,
                timeout_s=30,
                what="the automatic GPUMaintenance of x220-tesla-p4",
            )
        finally:
            operator.stop()
        assert agents.errors() == 0
    log = operator.log.read_text()
    assert "replica placed" in log
    refused = [line for line in log.splitlines() if "Forbidden" in line or " 403" in line]
    assert refused == [], "the operator was refused:\n" + "\n".join(refused)
    agent_warnings = [record.getMessage() for record in caplog.records if "status" in record.__dict__]
    assert agent_warnings == [], f"the agents were refused: {agent_warnings}"
    leases = kube.get_json("leases", "-n", NAMESPACE)["items"]
    assert {lease["metadata"]["name"] for lease in leases} >= {f"egpu-node-agent-{node.name}" for node in load_fleet().nodes}
