"""Placement the scheduler agrees with: the whole replica pod, not only its GPU.

The Pi 5 has 8Gi of allocatable memory. A llama.cpp-style server asking 12Gi used to be
"placed" there, refused by kube-scheduler ("Insufficient memory"), deleted and created again
every 30-60 s, forever, under Placed=True. Now placement checks what the scheduler's
NodeResourcesFit checks, names what is missing, and creates nothing it knows will be refused;
requests no node can hold end in Placed=False with the pods created counted (none)."""

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
MODES = ("bare-metal", "passthrough")
PI = "pi5-rtx4090"
#: How long the tests watch a refused deployment for pods it should not create.
OBSERVE_S = 15


def server(name: str, **resources: Any) -> dict[str, Any]:
    manifest = deployment(name, "1G", 60, 1, MODES)
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = resources
    return manifest


def placed(kube: Kubectl, namespace: str, name: str, status: str, words: str) -> dict[str, Any] | None:
    condition = placed_condition(kube, namespace, name)
    if condition and condition["status"] == status and words in condition["message"]:
        return condition
    return None


def created(ledger: PodLedger) -> int:
    """Replica pods made so far: those there now and every deletion (a name made again counts again)."""
    return len(ledger.pods) + len(ledger.deleted)


@pytest.fixture
def ledger(kube: Kubectl, workspace: str) -> Iterator[PodLedger]:
    """Every replica pod the namespace ever had: how many pods a refusal cost."""
    with PodLedger(kube.kubeconfig, workspace, []) as pods:
        yield pods


def test_the_pi_refuses_a_12gi_server_naming_memory_and_creates_no_pod(kube: Kubectl, workspace: str, ledger: PodLedger) -> None:
    pinned = server("pinned", requests={"memory": "12Gi"})
    pinned["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/hostname": PI}
    apply(kube, workspace, pinned)
    condition = wait_for(lambda: placed(kube, workspace, "pinned", "False", "memory: needs 12Gi"), 30, "pinned: Placed=False")
    assert condition["reason"] == "NoAdequateNode"
    assert "1 memory: needs 12Gi, 8Gi free" in condition["message"]
    events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=pinned")["items"]
    assert [e["reason"] for e in events if "memory: needs 12Gi" in e["message"]] == ["FailedPlacement"]
    time.sleep(OBSERVE_S)  # a window for a loop to show itself; the assertion is a count, not a time
    print(f"pods created for the pinned 12Gi server: {created(ledger)}")
    assert created(ledger) == 0


def test_without_the_pin_the_12gi_server_runs_where_the_memory_is(kube: Kubectl, workspace: str) -> None:
    apply(kube, workspace, server("roomy", requests={"memory": "12Gi"}))
    (node,) = wait_for(lambda: ready_on(kube, workspace, "roomy", 1), 60, "roomy: 1 replica Ready")
    assert node != PI
    assert placed_condition(kube, workspace, "roomy")["reason"] == "Placed"


#: The chart's tenant policy refuses extended resources in a template at admission, for everyone
#: (tests/e2e/test_tenant_gpu_accounting.py); without it placement is what says no.
POLICY_REFUSES_GPUS = pytest.mark.skipif(
    os.environ.get("EGPU_E2E_OPERATOR") == "chart", reason="the chart's tenant policy refuses GPU limits in templates"
)


@pytest.mark.parametrize(
    ("resources", "cause"),
    [({"requests": {"cpu": "1000"}}, "cpu: needs 1000"),
     pytest.param({"limits": {"nvidia.com/gpu": "8"}}, "nvidia.com/gpu: needs 8", marks=POLICY_REFUSES_GPUS)],
    ids=["cpu 1000", "8 GPUs"],
)  # fmt: skip
def test_requests_no_node_holds_end_in_placed_false(
    kube: Kubectl, workspace: str, ledger: PodLedger, resources: dict[str, Any], cause: str
) -> None:
    apply(kube, workspace, server("huge", **resources))
    condition = wait_for(lambda: placed(kube, workspace, "huge", "False", cause), 30, f"huge: Placed=False naming {cause}")
    assert condition["reason"] == "NoAdequateNode"
    time.sleep(OBSERVE_S)
    print(f"pods created asking {resources}: {created(ledger)}")
    assert created(ledger) == 0


def test_a_missing_claim_is_the_schedulers_refusal_and_costs_a_few_pods(kube: Kubectl, workspace: str, ledger: PodLedger) -> None:
    """Placement cannot see a missing PersistentVolumeClaim; the scheduler can. Its words reach
    the status, each refusing node is left alone with backoff, and the pods created stay few."""
    manifest = server("claims")
    manifest["spec"]["template"]["spec"]["volumes"] = [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    apply(kube, workspace, manifest)
    words = 'persistentvolumeclaim "models" not found'
    condition = wait_for(lambda: placed(kube, workspace, "claims", "False", words), 60, "claims: Placed=False, Unschedulable")
    assert condition["reason"] == "Unschedulable"
    time.sleep(OBSERVE_S)
    print(f"pods created for a template with a missing claim: {created(ledger)}")
    assert 1 <= created(ledger) <= 3
    assert len(replica_pods(kube, workspace, "claims")) == 1, "one pending pod waits for the claim"

    # The claim appears: the pending pod is bound where it waits, and the status says so.
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                      "storageClassName": ""}}  # fmt: skip
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{workspace}-models"},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                       "hostPath": {"path": "/tmp/models"}, "claimRef": {"namespace": workspace, "name": "models"}}}  # fmt: skip
    apply(kube, workspace, volume)
    apply(kube, workspace, claim)
    try:
        wait_for(lambda: ready_on(kube, workspace, "claims", 1), 90, "claims: 1 replica Ready once the claim exists")
        wait_for(lambda: placed(kube, workspace, "claims", "True", "placed"), 30, "claims: Placed=True")
    finally:
        kube.run("delete", "inferencedeployments", "claims", "-n", workspace, "--wait=true", "--timeout=60s", check=False)
        kube.run("delete", "pvc", "models", "-n", workspace, "--wait=false", check=False)
        kube.run("delete", "pv", f"{workspace}-models", "--wait=false", check=False)


def test_pod_anti_affinity_placement_cannot_see_ends_in_unschedulable(kube: Kubectl, workspace: str, ledger: PodLedger) -> None:
    """Two replicas that refuse to share an operating system: the second can run nowhere. Placement
    does not model pod anti-affinity, so kube-scheduler says no; its message reaches the status
    and the second replica costs at most three pods, not a loop."""
    manifest = deployment("lonely", "1G", 60, 2, MODES)
    template = manifest["spec"]["template"]
    template["metadata"] = {"labels": {"app": "lonely"}}
    template["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "lonely"}}, "topologyKey": "kubernetes.io/os"}]}}  # fmt: skip
    apply(kube, workspace, manifest)
    words = "anti-affinity"
    condition = wait_for(lambda: placed(kube, workspace, "lonely", "False", words), 60, "lonely: Placed=False, Unschedulable")
    assert condition["reason"] == "Unschedulable"
    assert "replica 1: 0/" in condition["message"], "the scheduler's own sentence"
    time.sleep(OBSERVE_S)
    print(f"pods created for two replicas, one impossible: {created(ledger)}")
    assert 2 <= created(ledger) <= 4
    events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=lonely")["items"]
    assert sum(1 for e in events if e["reason"] == "FailedPlacement") <= 4
