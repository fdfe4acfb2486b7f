"""The simulated edge fleet is real to the API server and the scheduler."""

import json
from typing import Any

import pytest

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def gpu_pod(name: str, gpus: int, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)}
    spec: dict[str, Any] = {
        "containers": [{"name": "serve", "image": "registry.example/serve:1", "resources": {"limits": limits}}]
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def apply_in(kube: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kube.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def test_every_fleet_node_exists_with_its_gpu_capacity(kube: Kubectl, fleet: FleetProfile) -> None:
    nodes = {n["metadata"]["name"]: n for n in kube.get_json("nodes")["items"]}

    for entry in fleet.nodes:
        node = nodes[entry.name]
        assert node["status"]["capacity"]["nvidia.com/gpu"] == str(entry.gpu_units), entry.name
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(entry.gpu_units), entry.name
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == entry.host.arch
        assert node["metadata"]["labels"]["egpu-operator.io/fleet-node"] == entry.name
    # The switch host carries four A5000s and the MIG server two slices.
    assert nodes["switch-4x-a5000"]["status"]["capacity"]["nvidia.com/gpu"] == "4"
    assert nodes["server-a100-mig"]["status"]["capacity"]["nvidia.com/gpu"] == "2"


def test_gpu_pod_is_scheduled_onto_a_fake_gpu_node_and_runs(kube: Kubectl, namespace: str) -> None:
    # The Pi 5 is the fleet's only arm64 node: selecting on arch pins the pod to it.
    apply_in(kube, namespace, gpu_pod("llm", gpus=1, node_selector={"kubernetes.io/arch": "arm64"}))

    def running() -> dict[str, Any] | None:
        pod = kube.get_json("pod", "llm", "-n", namespace)
        return pod if pod["status"].get("phase") == "Running" else None

    pod = wait_for(running, timeout_s=60, what="pod llm to be Running")
    assert pod["spec"]["nodeName"] == "pi5-rtx4090"


def test_pod_asking_for_more_gpus_than_any_node_has_stays_pending(kube: Kubectl, namespace: str) -> None:
    apply_in(kube, namespace, gpu_pod("greedy", gpus=5))

    def unschedulable() -> dict[str, Any] | None:
        pod = kube.get_json("pod", "greedy", "-n", namespace)
        scheduled = [c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"]
        return scheduled[0] if scheduled and scheduled[0].get("reason") == "Unschedulable" else None

    condition = wait_for(unschedulable, timeout_s=60, what="the scheduler to reject pod greedy")
    assert "Insufficient nvidia.com/gpu" in condition["message"]
    assert "nodeName" not in kube.get_json("pod", "greedy", "-n", namespace)["spec"]
