"""The operator placing InferenceDeployments on the simulated edge fleet, end to end."""

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from egpu_api.fleet import FleetProfile
from egpu_api.pcie import LinkSpeed
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods, status
from tests.e2e.helpers import NAMESPACE, extra_node, node, non_fleet_nodes, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_examples_are_placed_where_they_load_in_budget(kube: Kubectl, fleet: FleetProfile, workspace: str) -> None:
    kube.run("apply", "-n", workspace, "-f", str(REPO / "examples"))

    nodes = wait_for(lambda: ready_on(kube, workspace, "llm-18gb", 2), 60, "llm-18gb: 2 replicas Ready")
    # Only nodes with >= 20 GiB and >= 600 MB/s qualify; which two depends on what llm-6gb took first.
    assert set(nodes) <= {"pi5-rtx4090", "switch-4x-a5000", "vm-h100-passthrough"}
    assert len(set(nodes)) == 2, "replicas spread over nodes"
    placements = status(kube, workspace, "llm-18gb")["placements"]
    x1 = next(p for p in placements if p["node"] in ("pi5-rtx4090", "switch-4x-a5000"))
    # 18 GB over Gen3 x1 (856 MB/s) is 21.0 s, plus the 0.5 s start-up term.
    assert (x1["linkGeneration"], x1["linkWidth"], x1["estimatedLoadSeconds"]) == (3, 1, 21.5)
    assert x1["loadBottleneck"] == "PCIe link 856 MB/s"
    pod = next(p for p in replica_pods(kube, workspace, "llm-18gb") if p["metadata"]["name"] == x1["pod"])
    # startupProbe budget: 2 x 21 s + 60 s over a 5 s period.
    assert pod["spec"]["containers"][0]["startupProbe"]["failureThreshold"] == 21
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "InferenceDeployment"

    wait_for(lambda: ready_on(kube, workspace, "llm-6gb", 1), 60, "llm-6gb: 1 replica Ready")

    condition = wait_for(lambda: c if (c := placed_condition(kube, workspace, "llm-140gb")) else None, 30, "llm-140gb")
    assert (condition["status"], condition["reason"]) == ("False", "NoAdequateNode")
    others = non_fleet_nodes(kube, fleet)
    prefix = f"1 of 1 replica(s) cannot be placed: 0/{8 + len(others)} nodes adequate: "
    assert condition["message"].startswith(prefix + "8 VRAM < 141 GiB")
    # On kind its own nodes are rejected too: without labels, or (the GPU worker) by its taint.
    parts = (part.split(" ", 1) for part in condition["message"][len(prefix) :].split(", "))
    counts = {reason: int(count) for count, reason in parts}
    assert sum(counts.values()) == 8 + len(others), condition["message"]
    kind_reasons = {"no egpu-operator labels (node agent not running?)", "untolerated taint nvidia.com/gpu"}
    assert counts.pop("VRAM < 141 GiB") == 8
    assert set(counts) <= kind_reasons, condition["message"]
    events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=llm-140gb")["items"]
    assert "FailedPlacement" in {event["reason"] for event in events}
    assert replica_pods(kube, workspace, "llm-140gb") == []
    columns = kube.run("get", "idep", "llm-18gb", "-n", workspace).stdout.splitlines()[1].split()
    assert columns[1:3] == ["2", "2"]
    assert columns[6] == "True"
    assert float(columns[5]) == max(p["estimatedLoadSeconds"] for p in placements)


def test_power_limit_is_requested_applied_and_released(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, deployment("powered", "6G", 20, modes=("passthrough",), power={"fractionOfDefault": 0.5}))
    wait_for(lambda: ready_on(kube, workspace, "powered", 1), 60, "powered: Ready on the H100")

    def applied() -> dict[str, Any] | None:
        placement = (status(kube, workspace, "powered").get("placements") or [{}])[0]
        return placement if (placement.get("power") or {}).get("appliedWatts") == 350 else None

    placement = wait_for(applied, 30, "350 W (half of the H100's 700 W default) applied")
    assert placement["power"]["requestedWatts"] == 350
    annotations = node(kube, "vm-h100-passthrough")["metadata"]["annotations"]
    assert json.loads(annotations["egpu-operator.io/power-limit-request"]) == {placement["gpu"]: 350}

    kube.run("delete", "idep", "powered", "-n", workspace, "--wait=true", "--timeout=60s")

    def released() -> bool | None:
        labels = node(kube, "vm-h100-passthrough")["metadata"]["labels"]
        request = node(kube, "vm-h100-passthrough")["metadata"]["annotations"].get("egpu-operator.io/power-limit-request")
        return True if labels["egpu-operator.io/power-limit-watts"] == "700" and request == "{}" else None

    wait_for(released, 30, "the H100 back at its 700 W default")


def test_infeasible_becomes_feasible_when_an_adequate_node_appears(
    kube: Kubectl, workspace: str, fleet: FleetProfile, tmp_path: Path
) -> None:
    # 90 GiB: nothing in the default fleet holds it.
    apply(kube, workspace, deployment("big", "90Gi", 120, modes=("passthrough",)))
    wait_for(lambda: c if (c := placed_condition(kube, workspace, "big")) and c["status"] == "False" else None, 30, "unplaced")

    document: dict[str, Any] = fleet.model_dump(by_alias=True, exclude_none=True)
    h200 = next(n for n in document["nodes"] if n["name"] == "vm-h100-passthrough")
    h200["gpus"][0] |= {"product": "NVIDIA H200", "memoryMib": 143771}
    h200["gpus"][0].pop("uuid", None)
    bigger = FleetProfile.model_validate({**document, "nodes": [h200]})
    extra = extra_node(kube, bigger, "vm-h100-passthrough", "vm-h200-passthrough")
    with tempfile.TemporaryDirectory() as sysfs:
        agents = FleetSimulator(extra, api_client(kube.kubeconfig), NAMESPACE, Path(sysfs), poll_interval_s=1.0)
        agents.start()
        try:
            nodes = wait_for(lambda: ready_on(kube, workspace, "big", 1), 60, "big: placed on the new H200 node")
            assert nodes == ["vm-h200-passthrough"]
            assert placed_condition(kube, workspace, "big")["status"] == "True"
        finally:
            kube.run("delete", "idep", "big", "-n", workspace, "--wait=true", "--timeout=60s", check=False)
            agents.stop()
            kube.run("delete", "node", "vm-h200-passthrough", check=False)


def test_replica_moves_off_a_node_whose_link_degrades(kube: Kubectl, workspace: str, simulator: FleetSimulator) -> None:
    # 6 GB in 20 s on bare metal: the fastest node is the mini-PC's OCuLink (Gen4 x4).
    apply(kube, workspace, deployment("mover", "6G", 20))
    assert wait_for(lambda: ready_on(kube, workspace, "mover", 1), 60, "mover placed") == ["minipc-rtx4070ti"]

    host = simulator.hosts["minipc-rtx4070ti"]
    host.downtrain(0, LinkSpeed(1, 1))  # the OCuLink cable works loose: 2.5 GT/s x1 under load
    host.set_busy(0)
    try:
        # 217 MB/s is below the 300 MB/s the budget needs: a replacement is surged, then the old pod goes.
        wait_for(
            lambda: True if ready_on(kube, workspace, "mover", 1) == ["laptop-rtx3060-tb"] else None,
            60,
            "mover on the laptop's Thunderbolt link (3426 MB/s), the old pod gone",
        )
    finally:
        host.downtrain(0, LinkSpeed(4, 4))
        host.set_busy(0, busy=False)


def test_kubectl_scale_adds_and_removes_replicas(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, deployment("scaled", "6G", 20, modes=("bare-metal", "passthrough", "vgpu")))
    wait_for(lambda: ready_on(kube, workspace, "scaled", 1), 60, "1 replica")
    kube.run("scale", "idep/scaled", "-n", workspace, "--replicas=3")
    nodes = wait_for(lambda: ready_on(kube, workspace, "scaled", 3), 60, "3 replicas")
    assert len(set(nodes)) == 3, "replicas spread over nodes"
    kube.run("scale", "idep/scaled", "-n", workspace, "--replicas=1")
    wait_for(lambda: ready_on(kube, workspace, "scaled", 1), 60, "back to 1 replica")
    assert [p["metadata"]["labels"]["egpu-operator.io/replica"] for p in replica_pods(kube, workspace, "scaled")] == ["0"]


def test_deleting_removes_every_replica(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, deployment("doomed", "6G", 20, replicas=2, modes=("bare-metal", "passthrough", "vgpu")))
    wait_for(lambda: ready_on(kube, workspace, "doomed", 2), 60, "2 replicas")
    kube.run("delete", "idep", "doomed", "-n", workspace, "--wait=true", "--timeout=60s")
    wait_for(lambda: True if not replica_pods(kube, workspace, "doomed") else None, 60, "pods garbage-collected")


def test_operator_killed_midway_converges_without_duplicates(kube: Kubectl, workspace: str, operator: OperatorProcess) -> None:
    apply(kube, workspace, deployment("sturdy", "6G", 20, replicas=2, modes=("bare-metal", "passthrough", "vgpu")))
    wait_for(lambda: ready_on(kube, workspace, "sturdy", 2), 60, "2 replicas")
    operator.stop(kill=True)
    try:
        kube.run("scale", "idep/sturdy", "-n", workspace, "--replicas=4")
        assert len(replica_pods(kube, workspace, "sturdy")) == 2  # nobody acts while it is down
    finally:
        operator.start()
    wait_for(lambda: ready_on(kube, workspace, "sturdy", 4), 90, "4 replicas after the restart")
    operator.stop(kill=True)
    operator.start()  # and once more: a fresh operator finds nothing to do
    wait_for(lambda: ready_on(kube, workspace, "sturdy", 4), 30, "still 4")
    replicas = Counter(p["metadata"]["labels"]["egpu-operator.io/replica"] for p in replica_pods(kube, workspace, "sturdy"))
    assert replicas == Counter({"0": 1, "1": 1, "2": 1, "3": 1})
