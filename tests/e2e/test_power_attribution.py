"""On a multi-GPU host each replica's power limit lands on the GPU its pod got, as the node agent
reports it (egpu-operator.io/gpu-assignments), not on the lowest free index a count would pick."""

import json
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e.deployments import apply, deployment, replica_pods, status
from tests.e2e.helpers import node, wait_for

pytestmark = pytest.mark.e2e
SWITCH = "switch-4x-a5000"
ASSIGNMENTS, REQUEST = "egpu-operator.io/gpu-assignments", "egpu-operator.io/power-limit-request"


def assignments(kube: Kubectl) -> dict[str, list[str]]:
    return json.loads(node(kube, SWITCH)["metadata"].get("annotations", {}).get(ASSIGNMENTS, "{}"))


def assigned(kube: Kubectl, pod: str) -> list[str] | None:
    return assignments(kube).get(pod) or None


def on_switch(name: str, watts: int) -> dict[str, Any]:
    manifest = deployment(name, "1G", 60, power={"limitWatts": watts})
    manifest["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/hostname": SWITCH}
    return manifest


def trainer(namespace: str) -> dict[str, Any]:
    """A GPU pod that is no replica of ours, bound straight to the switch host."""
    container = {"name": "train", "image": "registry.example/train:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trainer", "namespace": namespace},
        "spec": {"nodeName": SWITCH, "containers": [container]},
    }


def test_two_limits_land_on_the_gpus_the_pods_were_assigned(kube: Kubectl, workspace: str, simulator: FleetSimulator) -> None:
    gpus = [gpu["uuid"] for gpu in json.loads(node(kube, SWITCH)["metadata"]["annotations"]["egpu-operator.io/gpus"])]
    kube.run("apply", "-f", "-", stdin=json.dumps(trainer(workspace)))
    try:
        # The trainer came first, so the (simulated) device plugin gave it GPU 0: the GPU a count
        # of free GPUs would have capped for the first deployment below.
        assert wait_for(lambda: assigned(kube, f"{workspace}/trainer"), 20, "the trainer's GPU") == [gpus[0]]

        limits = {"low": 150, "high": 200}
        got: dict[str, str] = {}
        for name, watts in limits.items():  # one after the other, so the plugin's choice is known
            apply(kube, workspace, on_switch(name, watts))
            pod = wait_for(lambda name=name: (replica_pods(kube, workspace, name) or [None])[0], 30, f"{name}'s pod")
            [got[name]] = wait_for(lambda pod=pod: assigned(kube, f"{workspace}/{pod['metadata']['name']}"), 30,
                                   f"{name}'s GPU in the annotation")  # fmt: skip
        assert got == {"low": gpus[1], "high": gpus[2]}

        def applied(name: str) -> dict[str, Any] | None:
            placement = (status(kube, workspace, name).get("placements") or [{}])[0]
            return placement if (placement.get("power") or {}).get("appliedWatts") == limits[name] else None

        for name, watts in limits.items():
            placement = wait_for(lambda name=name: applied(name), 30, f"{watts} W applied for {name}")
            assert (placement["node"], placement["gpu"]) == (SWITCH, got[name])
        request = json.loads(node(kube, SWITCH)["metadata"]["annotations"][REQUEST])
        assert request == {got["low"]: 150, got["high"]: 200}
        # And on the (simulated) hardware: each limit on its pod's GPU, the trainer's GPU untouched.
        host = simulator.hosts[SWITCH].nvml
        assert [gpu.power_mw[0] if gpu.power_mw else None for gpu in host.gpus] == [230_000, 150_000, 200_000, 230_000]
    finally:
        kube.run("delete", "pod", "trainer", "-n", workspace, "--wait=true", "--timeout=60s", check=False)
