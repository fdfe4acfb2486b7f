"""A GPUMaintenance with nothing but a node and a reason: it waits for bare pods and Jobs (naming
them), its drain times out after an hour, and "safe to service" names the non-GPU pods left."""

import json
from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
NODE = "x220-tesla-p4"


def bare_pod(name: str, gpus: int) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "c", "image": "registry.example/job:1", "resources": {"limits": limits}}],
        },
    }


def test_a_bare_gpu_pod_is_waited_for_and_named_then_the_non_gpu_pods_are_listed(
    kube: Kubectl, workspace: str, maintenances: None
) -> None:
    for pod in (bare_pod("batch-job", 1), bare_pod("web-0", 0), bare_pod("web-1", 0)):
        kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(pod))

    gm.create(kube, "p4-defaults", NODE, reason="reseat the ExpressCard adapter")
    spec = gm.get(kube, "p4-defaults")["spec"]
    assert (spec["unmanagedGpuPods"], spec["drainTimeoutSeconds"]) == ("Wait", 3600), "the defaults, as stored"

    waiting = wait_for(
        lambda: m if (m := gm.get(kube, "p4-defaults")).get("status", {}).get("unmanagedGpuPods") else None,
        30, "the maintenance to name the bare pod it waits for")  # fmt: skip
    assert waiting["status"]["unmanagedGpuPods"] == [f"{workspace}/batch-job"]
    assert waiting["status"]["phase"] == "Evacuating"
    assert waiting["status"]["message"] == (
        f"waiting for: {workspace}/batch-job (GPU pods not managed by egpu-operator) to finish "
        "(unmanagedGpuPods: Wait; set it to Evict to evict them)"
    )
    assert gm.condition(waiting, "Evacuated")["reason"] == "WaitingForPods"
    # Still there a while later: waited for, never evicted.
    gm.wait_condition(kube, "p4-defaults", "Evacuated", "WaitingForPods")
    assert kube.get_json("pod", "batch-job", "-n", workspace)["metadata"].get("deletionTimestamp") is None

    kube.run("delete", "pod", "batch-job", "-n", workspace, "--wait=true", "--timeout=30s")  # the job finished
    ready = gm.wait_phase(kube, "p4-defaults", "Ready", timeout_s=30)
    assert ready["status"]["unmanagedGpuPods"] == []
    assert ready["status"]["evicted"] == []
    assert ready["status"]["message"] == (
        "no GPU workload left on the node: safe to service the GPUs; set spec.completed=true when done; "
        f"2 non-GPU pod(s) still run on the node and were not drained: {workspace}/web-0, {workspace}/web-1 "
        "(drain them too before powering the node off)"
    )
    gm.complete(kube, "p4-defaults")
    for name in ("web-0", "web-1"):
        kube.run("delete", "pod", name, "-n", workspace, "--wait=true", "--timeout=30s")
