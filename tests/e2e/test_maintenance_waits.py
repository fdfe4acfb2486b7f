"""A maintenance that cannot proceed says exactly why, and proceeds once it can."""

import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from egpu_runtime.kube import api_client
from tests.e2e import maintenances as gm
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods
from tests.e2e.helpers import NAMESPACE, extra_node, wait_for

pytestmark = pytest.mark.e2e


def test_no_capacity_waits_then_completes_across_an_operator_restart(
    kube: Kubectl, workspace: str, maintenances: None, operator: OperatorProcess, fleet: FleetProfile
) -> None:
    # Only the A100's MIG slices are allowed: the fleet has exactly one such node.
    apply(kube, workspace, deployment("sliced", "6G", 20, modes=("mig",), disruption={"minAvailable": 1}))
    assert wait_for(lambda: ready_on(kube, workspace, "sliced", 1), 60, "sliced: Ready") == ["server-a100-mig"]

    gm.create(kube, "a100-firmware", "server-a100-mig", reason="flash A100 firmware")
    gm.wait_condition(kube, "a100-firmware", "Evacuated", "NoAdequateNode")
    # Once the deployment has judged the cordoned node, its verdicts are quoted.
    waiting = wait_for(
        lambda: c if "cordoned or in maintenance" in (c := gm.condition(gm.get(kube, "a100-firmware"), "Evacuated"))["message"]
        else None, 30, "the placement verdicts in the Evacuated condition")  # fmt: skip
    assert waiting["status"] == "False"
    assert (
        f"{workspace}/sliced replica 0 has no other adequate node (1 replica(s) run on nodes no longer adequate"
        in waiting["message"]
    )
    assert gm.get(kube, "a100-firmware")["status"]["phase"] == "Evacuating"
    assert ready_on(kube, workspace, "sliced", 1) == ["server-a100-mig"], "still serving while it waits"

    operator.stop(kill=True)  # killed mid-evacuation; capacity arrives while it is down
    try:
        extra = extra_node(kube, fleet, "server-a100-mig", "server-a100-mig-2")
        with tempfile.TemporaryDirectory() as sysfs:
            agents = FleetSimulator(extra, api_client(kube.kubeconfig), NAMESPACE, Path(sysfs), poll_interval_s=1.0)
            agents.start()
            try:
                operator.start()
                gm.wait_phase(kube, "a100-firmware", "Ready", timeout_s=90)
                assert ready_on(kube, workspace, "sliced", 1) == ["server-a100-mig-2"]
                replicas = Counter(
                    p["metadata"]["labels"]["egpu-operator.io/replica"] for p in replica_pods(kube, workspace, "sliced")
                )
                assert replicas == Counter({"0": 1}), "no duplicate replica after the restart"
                gm.complete(kube, "a100-firmware")
            finally:
                kube.run("delete", "idep", "sliced", "-n", workspace, "--wait=true", "--timeout=60s", check=False)
                # Pods left on a deleted KWOK node wait for the pod garbage collector (a minute): let them go first.
                # (The garbage collector notices a new CRD's kind within 30 s of its install: give it 90.)
                wait_for(lambda: True if not kube.get_json("pods", "-n", workspace)["items"] else None, 90, "sliced's pods to go")
                agents.stop()
                kube.run("delete", "node", "server-a100-mig-2", check=False)
    finally:
        if operator.process is None:
            operator.start()


def test_disruption_budget_blocks_an_eviction_until_it_allows_it(kube: Kubectl, workspace: str, maintenances: None) -> None:
    # A GPU pod egpu-operator does not manage, guarded by its owner's PodDisruptionBudget.
    batch = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "batch-job", "labels": {"app": "batch"}},
        "spec": {
            "nodeName": "x220-tesla-p4",
            "containers": [{"name": "job", "image": "registry.example/job:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "batch"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "batch"}}},
    }
    kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(batch))
    kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(budget))
    wait_for(lambda: True if kube.get_json("pdb", "batch", "-n", workspace).get("status", {}).get("currentHealthy") == 1
             else None, 30, "the budget to count the pod")  # fmt: skip

    gm.create(kube, "p4-dock", "x220-tesla-p4", reason="reseat the ExpressCard adapter", unmanagedGpuPods="Evict")
    blocked = gm.wait_condition(kube, "p4-dock", "Evacuated", "DisruptionBudget")
    assert f"eviction of {workspace}/batch-job refused" in blocked["message"]
    assert "disruption budget" in blocked["message"]
    assert kube.get_json("pod", "batch-job", "-n", workspace)["metadata"].get("deletionTimestamp") is None, "never forced"

    kube.run("delete", "pdb", "batch", "-n", workspace)  # the owner allows it
    done = gm.wait_phase(kube, "p4-dock", "Ready")
    assert done["status"]["evicted"] == [f"{workspace}/batch-job"]
    gm.complete(kube, "p4-dock")


def test_a_drain_timeout_fails_and_leaves_the_node_cordoned(kube: Kubectl, workspace: str, maintenances: None) -> None:
    job = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "long-job"},
        "spec": {
            "nodeName": "laptop-rtx3060-tb",
            "containers": [{"name": "job", "image": "registry.example/job:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }
    kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(job))
    gm.create(kube, "tb-firmware", "laptop-rtx3060-tb", reason="Thunderbolt firmware", unmanagedGpuPods="Wait",
              drainTimeoutSeconds=3)  # fmt: skip
    failed = gm.wait_phase(kube, "tb-firmware", "Failed", timeout_s=30)
    assert gm.condition(failed, "Failed")["reason"] == "DrainTimeout"
    assert failed["status"]["message"] == (
        f"node not drained within drainTimeoutSeconds (3 s); still on it: {workspace}/long-job; node left cordoned: "
        "move or delete those pods, then set spec.completed=true (or delete this GPUMaintenance)"
    )
    assert gm.node_spec(kube, "laptop-rtx3060-tb") == (True, "tb-firmware"), "left for a human"
    assert kube.get_json("pod", "long-job", "-n", workspace)["metadata"].get("deletionTimestamp") is None
    kube.run("delete", "gpumaint", "tb-firmware", "--wait=true", "--timeout=30s")
    assert gm.node_spec(kube, "laptop-rtx3060-tb") == (False, None), "deleting it hands the node back"
    kube.run("delete", "pod", "long-job", "-n", workspace, "--wait=true", "--timeout=30s")


def test_reduced_capacity_evicts_only_what_cannot_move_and_brings_it_back(
    kube: Kubectl, workspace: str, maintenances: None
) -> None:
    # Only the A100's MIG slices are allowed: no other node can take the replica.
    apply(kube, workspace, deployment("sliced", "6G", 20, modes=("mig",)))
    assert wait_for(lambda: ready_on(kube, workspace, "sliced", 1), 60, "sliced: Ready") == ["server-a100-mig"]
    [sliced_pod] = [pod["metadata"]["name"] for pod in replica_pods(kube, workspace, "sliced")]

    gm.create(kube, "a100-reduced", "server-a100-mig", reason="replace the A100's fan", capacityPolicy="AllowReducedCapacity")
    done = gm.wait_phase(kube, "a100-reduced", "Ready", timeout_s=60)
    assert done["status"]["evicted"] == [f"{workspace}/{sliced_pod}"]
    assert not replica_pods(kube, workspace, "sliced"), "no node can hold it: the replica waits, unplaced"
    unplaced = wait_for(lambda: c if (c := placed_condition(kube, workspace, "sliced")) and c["status"] == "False" else None,
                        30, "sliced: Placed=False")  # fmt: skip
    assert "0/" in unplaced["message"]

    gm.complete(kube, "a100-reduced")
    assert wait_for(lambda: ready_on(kube, workspace, "sliced", 1), 60, "sliced: back on the A100") == ["server-a100-mig"]
