"""GPUs through Dynamic Resource Allocation (resource.k8s.io/v1), as the NVIDIA DRA driver publishes them.

A ``dra`` node advertises no ``nvidia.com/gpu``: its GPUs are devices of the ``gpu.nvidia.com``
driver in a ResourceSlice, with the DeviceClass of the same name. A deployment with
``gpuAllocation: DRA`` is placed on them; each replica gets a ResourceClaim whose selector names
the uuid of the device placement chose, and the real kube-scheduler allocates exactly that device.
A GPUMaintenance waits for a pod that holds a GPU through a claim, where it used to report "no
GPU workload" while the pod ran."""

import json
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm
from tests.e2e.deployments import apply, deployment, placed_condition, ready_on, replica_pods
from tests.e2e.helpers import variant, wait_for

pytestmark = pytest.mark.e2e
DRA_NODE = "switch-dra"


def allocated(kube: Kubectl, namespace: str, claim: str) -> str | None:
    """``driver/pool/device`` the scheduler allocated the claim, or None while it has not."""
    results = ((kube.get_json("resourceclaim", claim, "-n", namespace).get("status") or {}).get("allocation") or {}).get(
        "devices", {}
    ).get("results") or []
    return "/".join(results[0][key] for key in ("driver", "pool", "device")) if results else None


def test_dra_replicas_get_the_device_placement_chose(kube: Kubectl, workspace: str, fleet: FleetProfile) -> None:
    with variant(kube, fleet, "switch-4x-a5000", DRA_NODE, dra=True):
        node = kube.get_json("node", DRA_NODE)
        assert "nvidia.com/gpu" not in node["status"]["allocatable"]
        (published,) = kube.get_json("resourceslices", "-l", f"{keys.FLEET_NODE_LABEL}={DRA_NODE}")["items"]
        assert [device["name"] for device in published["spec"]["devices"]] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]

        claimed = deployment("claimed", "6G", 60, 5)
        claimed["spec"]["placement"] |= {"gpuAllocation": "DRA", "nodeSelector": {"kubernetes.io/hostname": DRA_NODE}}
        apply(kube, workspace, claimed)
        assert wait_for(lambda: ready_on(kube, workspace, "claimed", 4), 90, "claimed: four replicas Ready") == [DRA_NODE] * 4
        devices = []
        for pod in replica_pods(kube, workspace, "claimed"):
            name = pod["metadata"]["name"]
            assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimName": name}]
            assert "limits" not in pod["spec"]["containers"][0]["resources"]
            claim = kube.get_json("resourceclaim", name, "-n", workspace)
            chosen = claim["metadata"]["annotations"][keys.DRA_DEVICE_ANNOTATION]
            assert allocated(kube, workspace, name) == chosen, "kube-scheduler allocated the device its selector names"
            devices.append(chosen)
        assert len(set(devices)) == 4
        condition = wait_for(
            lambda: c if (c := placed_condition(kube, workspace, "claimed")) and c["status"] == "False" else None,
            30, "the fifth replica: no device left",
        )  # fmt: skip
        assert condition["message"].startswith("1 of 5 replica(s) cannot be placed"), condition["message"]
        assert "no free GPU" in condition["message"]

        # Scale down: the pod goes, then its claim, and the device is placed again.
        kube.run("patch", "idep", "claimed", "-n", workspace, "--type=merge", "-p", '{"spec": {"replicas": 3}}')
        wait_for(
            lambda: len(kube.get_json("resourceclaims", "-n", workspace)["items"]) == 3 or None, 60, "claims of gone pods removed"
        )
        kube.run("delete", "idep", "claimed", "-n", workspace, "--wait=true", "--timeout=60s")


def test_a_maintenance_waits_for_a_pod_holding_a_gpu_through_a_claim(
    kube: Kubectl, workspace: str, fleet: FleetProfile, maintenances: None
) -> None:
    """A Job-like pod of someone else, its GPU from a ResourceClaimTemplate (no nvidia.com/gpu anywhere)."""
    with variant(kube, fleet, "switch-4x-a5000", DRA_NODE, dra=True):
        one_gpu = {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}
        template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "one-gpu"},
                    "spec": {"spec": {"devices": one_gpu}}}  # fmt: skip
        pod: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer"},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": DRA_NODE},
                     "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
                     "containers": [{"name": "train", "image": "registry.example/train:1",
                                     "resources": {"claims": [{"name": "gpu"}]}}]},
        }  # fmt: skip
        for manifest in (template, pod):
            kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(manifest))
        wait_for(
            lambda: kube.get_json("pod", "trainer", "-n", workspace).get("status", {}).get("phase") == "Running" or None,
            60, "trainer Running with its claim allocated",
        )  # fmt: skip
        gm.create(kube, "dra-node", DRA_NODE, reason="replace the riser", unmanagedGpuPods="Wait")
        waiting = gm.wait_condition(kube, "dra-node", "Evacuated", "WaitingForPods", timeout_s=60)
        assert f"{workspace}/trainer" in waiting["message"], waiting["message"]
        assert gm.get(kube, "dra-node")["status"]["phase"] != "Ready"
        kube.run("delete", "pod", "trainer", "-n", workspace, "--wait=true", "--timeout=60s")
        done = gm.wait_phase(kube, "dra-node", "Ready", timeout_s=60)
        assert gm.condition(done, "Evacuated")["message"] == "no GPU workload on the node"
        gm.complete(kube, "dra-node")
