"""Every way a GPU reaches a pod, as the NVIDIA GPU Operator's device plugin advertises it.

MIG with the "mixed" strategy advertises each slice profile as its own resource
(``nvidia.com/mig-3g.40gb: 2``, no ``nvidia.com/gpu``); time-slicing or MPS with
``renameByDefault`` advertises ``nvidia.com/gpu.shared``. Such nodes used to be "no free GPU",
and a drain saw no GPU workload on them. Now placement counts them, the replica pod asks for
the resource it was placed on, and a GPUMaintenance moves it."""

from typing import Any

import pytest

from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods
from tests.e2e.helpers import variant, wait_for

pytestmark = pytest.mark.e2e
MIXED, SHARED = "a100-mixed", "pi5-shared"


def limits(pod: dict[str, Any]) -> dict[str, str]:
    return dict(pod["spec"]["containers"][0]["resources"]["limits"])


def unplaced(kube: Kubectl, namespace: str, name: str, words: str) -> dict[str, Any] | None:
    condition = placed_condition(kube, namespace, name)
    return condition if condition and condition["status"] == "False" and words in condition["message"] else None


def test_mig_mixed_slices_are_placed_counted_and_asked_for(kube: Kubectl, workspace: str, fleet: FleetProfile) -> None:
    with variant(kube, fleet, "server-a100-mig", MIXED, migStrategy="mixed"):
        allocatable = kube.get_json("node", MIXED)["status"]["allocatable"]
        assert allocatable.get("nvidia.com/mig-3g.40gb") == "2"
        assert "nvidia.com/gpu" not in allocatable
        sliced = deployment("sliced", "6G", 60, 3, ("mig",))
        sliced["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/hostname": MIXED}
        apply(kube, workspace, sliced)
        assert wait_for(lambda: ready_on(kube, workspace, "sliced", 2), 60, "sliced: two replicas Ready") == [MIXED, MIXED]
        for pod in replica_pods(kube, workspace, "sliced"):
            assert limits(pod) == {"nvidia.com/mig-3g.40gb": "1"}, "the replica asks for the slice it was placed on"
        condition = wait_for(lambda: unplaced(kube, workspace, "sliced", "no free GPU"), 30, "the third replica: no free GPU")
        assert condition["message"].startswith("1 of 3 replica(s) cannot be placed")
        kube.run("delete", "idep", "sliced", "-n", workspace, "--wait=true", "--timeout=60s")


def test_a_maintenance_moves_a_replica_off_mig_mixed_slices(
    kube: Kubectl, workspace: str, fleet: FleetProfile, maintenances: None
) -> None:
    """Before, a drain counted nvidia.com/gpu only: it reported no GPU workload while this pod ran."""
    with variant(kube, fleet, "server-a100-mig", MIXED, migStrategy="mixed"):
        apply(kube, workspace, deployment("moved", "6G", 60, 1, ("mig",), disruption={"minAvailable": 1}))
        # Equal load times on both A100s; the name breaks the tie, so it starts on the mixed node.
        assert wait_for(lambda: ready_on(kube, workspace, "moved", 1), 60, "moved: 1 replica Ready") == [MIXED]
        gm.create(kube, "mixed-slices", MIXED, reason="replace the A100")
        done = gm.wait_phase(kube, "mixed-slices", "Ready", timeout_s=90)
        assert [(m["deployment"], m["toNode"]) for m in done["status"]["moved"]] == [(f"{workspace}/moved", "server-a100-mig")]
        assert wait_for(lambda: ready_on(kube, workspace, "moved", 1), 30, "moved: Ready elsewhere") == ["server-a100-mig"]
        (pod,) = replica_pods(kube, workspace, "moved")
        assert limits(pod) == {"nvidia.com/gpu": "1"}, "on the single-strategy A100 a slice is an nvidia.com/gpu"
        kube.run("delete", "idep", "moved", "-n", workspace, "--wait=true", "--timeout=60s")
        gm.complete(kube, "mixed-slices")


def test_renamed_shared_gpus_are_placed_by_memory_and_asked_for(kube: Kubectl, workspace: str, fleet: FleetProfile) -> None:
    # One 24 GB RTX 4090 time-sliced four ways, advertised as nvidia.com/gpu.shared: three 6 GB
    # replicas (7 GiB with overhead) fit in its memory, the fourth does not.
    with variant(kube, fleet, "pi5-rtx4090", SHARED, timeSlicingReplicas=4, renameByDefault=True):
        allocatable = kube.get_json("node", SHARED)["status"]["allocatable"]
        assert allocatable.get("nvidia.com/gpu.shared") == "4"
        assert "nvidia.com/gpu" not in allocatable
        shared = deployment("shared", "6G", 60, 4, ("bare-metal",))
        shared["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/hostname": SHARED}
        apply(kube, workspace, shared)
        assert wait_for(lambda: ready_on(kube, workspace, "shared", 3), 60, "shared: three replicas Ready") == [SHARED] * 3
        for pod in replica_pods(kube, workspace, "shared"):
            assert limits(pod) == {"nvidia.com/gpu.shared": "1"}
        wait_for(lambda: unplaced(kube, workspace, "shared", "no free GPU"), 30, "the fourth replica: no free GPU")
        kube.run("delete", "idep", "shared", "-n", workspace, "--wait=true", "--timeout=60s")
