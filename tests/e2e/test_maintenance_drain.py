"""GPU maintenance drains a node without dropping service; ``kubectl drain`` on the same setup does not."""

import json
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm
from tests.e2e.deployments import ReadyWatch, apply, deployment, ready_on, status
from tests.e2e.helpers import node, wait_for

pytestmark = pytest.mark.e2e


def test_maintenance_moves_the_replica_first_then_returns_the_node(kube: Kubectl, workspace: str, maintenances: None) -> None:
    apply(kube, workspace, deployment("served", "6G", 20, disruption={"minAvailable": 1}, power={"limitWatts": 150}))
    [source] = wait_for(lambda: ready_on(kube, workspace, "served", 1), 60, "served: 1 replica Ready")
    pdb = kube.get_json("pdb", "served", "-n", workspace)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["metadata"]["ownerReferences"][0]["kind"] == "InferenceDeployment"

    with ReadyWatch(kube.kubeconfig, workspace) as watch:
        wait_for(lambda: True if watch.ready("served") == 1 else None, 10, "the watch to see the Ready replica")
        watch.reset()
        gm.create(kube, "reseat-oculink", source, reason="reseat the OCuLink cable")
        done = gm.wait_phase(kube, "reseat-oculink", "Ready")
        [target] = wait_for(lambda: ready_on(kube, workspace, "served", 1), 30, "served: 1 replica Ready elsewhere")
        assert watch.minimum["served"] >= 1, "ready replicas fell below the disruption budget"

    assert target != source
    assert gm.node_spec(kube, source) == (True, "reseat-oculink")
    assert [(m["deployment"], m["toNode"]) for m in done["status"]["moved"]] == [(f"{workspace}/served", target)]
    assert done["status"]["nodeWasCordoned"] is False
    assert (gm.condition(done, "Evacuated")["status"], gm.condition(done, "Evacuated")["reason"]) == ("True", "NoGPUWorkload")
    # Nothing holding a GPU is left on the node.
    pods = kube.get_json("pods", "-A", "--field-selector", f"spec.nodeName={source}")["items"]
    assert [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")] == []
    events = kube.get_json("events", "-n", "default", "--field-selector", "involvedObject.name=reseat-oculink")["items"]
    assert {"ReplicaMoved", "Ready"} <= {event["reason"] for event in events}

    columns = kube.run("get", "gpumaint", "reseat-oculink").stdout.splitlines()[1].split()
    assert columns[:3] == ["reseat-oculink", source, "Ready"]

    # The power limit followed the replica: applied on its new GPU, released on the old node.
    def powered() -> dict[str, Any] | None:
        placement = (status(kube, workspace, "served").get("placements") or [{}])[0]
        return placement if (placement.get("power") or {}).get("appliedWatts") == 150 else None

    assert wait_for(powered, 30, "150 W applied on the new node")["node"] == target
    request = node(kube, source)["metadata"]["annotations"].get("egpu-operator.io/power-limit-request", "{}")
    assert json.loads(request) == {}

    finished = gm.complete(kube, "reseat-oculink")
    assert finished["status"]["completedAt"]
    assert gm.node_spec(kube, source) == (False, None)


def test_kubectl_drain_drops_the_replica_or_deadlocks_on_the_budget(kube: Kubectl, workspace: str) -> None:
    """The baseline: evict first, replace after. With a budget it cannot finish at all."""
    apply(kube, workspace, deployment("evicted", "6G", 20))
    [source] = wait_for(lambda: ready_on(kube, workspace, "evicted", 1), 60, "evicted: 1 replica Ready")
    try:
        with ReadyWatch(kube.kubeconfig, workspace) as watch:
            wait_for(lambda: True if watch.ready("evicted") == 1 else None, 10, "the watch to see the Ready replica")
            watch.reset()
            kube.run("drain", source, "--ignore-daemonsets", "--timeout=60s")
            wait_for(lambda: ready_on(kube, workspace, "evicted", 1), 30, "evicted: replaced after the drain")
            assert watch.minimum["evicted"] == 0, f"kubectl drain did not take the replica down: {watch.timeline}"
        kube.run("uncordon", source)

        # One replica with minAvailable 1: kubectl drain can never evict it (the classic drain deadlock).
        apply(kube, workspace, deployment("guarded", "6G", 20, disruption={"minAvailable": 1}))
        [guarded_node] = wait_for(lambda: ready_on(kube, workspace, "guarded", 1), 60, "guarded: 1 replica Ready")
        wait_for(lambda: True if kube.get_json("pdb", "guarded", "-n", workspace).get("status", {}).get("expectedPods") == 1
                 else None, 30, "the budget to count the replica")  # fmt: skip
        stuck = kube.run("drain", guarded_node, "--ignore-daemonsets", "--timeout=5s", "--pod-selector",
                         "egpu-operator.io/inference-deployment=guarded", check=False)  # fmt: skip
        assert stuck.returncode != 0
        assert "disruption budget" in stuck.stderr + stuck.stdout
        kube.run("uncordon", guarded_node)
    finally:
        kube.run("uncordon", source, check=False)
