"""The node agent on the simulated fleet: labels, link downtraining, GPU loss, restarts, power limits."""

import json
from typing import Any

import pytest

from egpu_api.fleet import FleetProfile
from egpu_api.pcie import LinkSpeed
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.agent import NodeAgent
from egpu_node_agent.metrics import AgentMetrics
from egpu_node_agent.nvml import NvmlBackend
from egpu_node_agent.publisher import NodePublisher
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e.helpers import NAMESPACE, P, condition, labels, node, wait_for, wait_label

pytestmark = pytest.mark.e2e


def test_every_node_is_labelled_from_its_gpus(kube: Kubectl, fleet: FleetProfile, simulator: FleetSimulator) -> None:
    for entry in fleet.nodes:
        wait_label(kube, entry.name, "label-schema", "v1")
    pi = labels(kube, "pi5-rtx4090")
    assert pi[P + "gpu-vram-mib"] == "24564"
    assert (pi[P + "pcie-gen"], pi[P + "pcie-width"], pi[P + "pcie-bandwidth-mbps"]) == ("3", "1", "856")
    switch = labels(kube, "switch-4x-a5000")
    assert (switch[P + "gpu-count"], switch[P + "pcie-gen"], switch[P + "pcie-width"]) == ("4", "3", "1")
    assert labels(kube, "x220-tesla-p4")[P + "pcie-bandwidth-mbps"] == "435"
    assert labels(kube, "server-a100-mig")[P + "gpu-mode"] == "mig"
    assert P + "power-limit-watts" not in labels(kube, "vm-vgpu-a10")
    # The label count matches the capacity the device plugin (here: the fleet fixture) advertises.
    for entry in fleet.nodes:
        assert labels(kube, entry.name)[P + "gpu-count"] == node(kube, entry.name)["status"]["capacity"]["nvidia.com/gpu"]
    gpus = json.loads(node(kube, "switch-4x-a5000")["metadata"]["annotations"][P + "gpus"])
    assert [gpu["path"][-1]["current"] for gpu in gpus] == ["Gen3 x1"] * 4
    assert condition(kube, "pi5-rtx4090")["status"] == "True"


def test_nodes_select_on_integer_labels(kube: Kubectl, simulator: FleetSimulator) -> None:
    wait_label(kube, "vm-h100-passthrough", "label-schema", "v1")
    # A 30 GB model with a 20 s budget needs >= 1500 MB/s and > 30000 MiB of VRAM.
    selector = f"{P}pcie-bandwidth-mbps>1500,{P}gpu-vram-mib>30000"
    found = kube.run("get", "nodes", "-l", selector, "-o", "name").stdout.split()
    assert sorted(found) == ["node/server-a100-mig", "node/vm-h100-passthrough"]


def test_link_downtraining_changes_labels_and_condition(kube: Kubectl, simulator: FleetSimulator) -> None:
    host = simulator.hosts["minipc-rtx4070ti"]
    wait_label(kube, "minipc-rtx4070ti", "health", "ok")
    host.downtrain(0, LinkSpeed(4, 1))  # the OCuLink cable trains one lane instead of four
    try:
        wait_label(kube, "minipc-rtx4070ti", "pcie-width", "1", timeout_s=10)
        assert labels(kube, "minipc-rtx4070ti")[P + "health"] == "degraded"
        cond = wait_for(
            lambda: c if (c := condition(kube, "minipc-rtx4070ti")) and c["status"] == "False" else None, 10, "condition"
        )
        assert cond["reason"] == "PCIeLinkDegraded"
        assert "trained Gen4 x1, capable of Gen4 x4" in cond["message"]
    finally:
        host.downtrain(0, LinkSpeed(4, 4))
    wait_label(kube, "minipc-rtx4070ti", "pcie-width", "4")
    wait_label(kube, "minipc-rtx4070ti", "health", "ok")


def test_gpu_lost_sets_health_condition_and_event(kube: Kubectl, simulator: FleetSimulator) -> None:
    host = simulator.hosts["pi5-rtx4090"]
    wait_label(kube, "pi5-rtx4090", "health", "ok")
    host.lose_gpu(0)  # the dock's power fails: Xid 79
    try:
        wait_label(kube, "pi5-rtx4090", "health", "lost")
        cond = wait_for(lambda: c if (c := condition(kube, "pi5-rtx4090"))["status"] == "False" else None, 10, "cond")
        assert cond["reason"] == "GPULost"
        events = kube.get_json("events", "-n", "default", "--field-selector", "involvedObject.name=pi5-rtx4090")
        assert "GPULost" in {event["reason"] for event in events["items"]}
    finally:
        host.recover_gpu(0)
    wait_label(kube, "pi5-rtx4090", "health", "ok")
    wait_for(lambda: True if condition(kube, "pi5-rtx4090")["status"] == "True" else None, 10, "condition True again")


def test_steady_state_sends_no_patches_and_a_restart_causes_no_churn(kube: Kubectl, simulator: FleetSimulator) -> None:
    name = "laptop-rtx3060-tb"
    agent = simulator.agents[name]
    wait_label(kube, name, "health", "ok")
    for _ in range(3):
        agent.poll()
    before = agent.publisher.patches
    for _ in range(3):
        agent.poll()
    assert agent.publisher.patches == before, "a steady node must not be patched"

    # A second agent for the same node, as after a restart, finds nothing to change.
    host = simulator.hosts[name]
    fresh = NodePublisher(api_client(kube.kubeconfig), name, NAMESPACE)
    try:
        # Configured as the running one: the same settings and the same source of GPU assignments.
        restarted = NodeAgent(
            agent.config, NvmlBackend(host.nvml, host.sysfs_root), fresh, AgentMetrics(), assignments=agent.assignments
        )
        restarted.poll()
        assert fresh.patches == 0
    finally:
        fresh.close()


def test_heartbeat_lease_is_renewed(kube: Kubectl, simulator: FleetSimulator) -> None:
    def lease() -> dict[str, Any] | None:
        result = kube.run("get", "lease", "egpu-node-agent-x220-tesla-p4", "-n", NAMESPACE, "-o", "json", check=False)
        return json.loads(result.stdout)["spec"] if result.returncode == 0 else None

    spec = wait_for(lease, 10, "the agent's Lease")
    assert spec["holderIdentity"] == "x220-tesla-p4"
    assert spec["leaseDurationSeconds"] == 40
    assert spec["renewTime"].endswith("Z")
