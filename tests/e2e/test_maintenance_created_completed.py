"""State set when a GPUMaintenance is created cannot skip its drain: ``completed: true`` is
refused naming the field, and a status written at creation is dropped, so the drain runs."""

import json

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e import maintenances as gm
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
NODE = "laptop-rtx3060-tb"


def test_created_completed_is_refused_naming_the_field(kube: Kubectl, maintenances: None) -> None:
    body = {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "GPUMaintenance",
        "metadata": {"name": "born-completed"},
        "spec": {"nodeName": NODE, "reason": "test", "completed": True},
    }
    result = kube.run("create", "-f", "-", stdin=json.dumps(body), check=False)
    assert result.returncode != 0, "a maintenance born completed would never drain the node"
    assert (
        "spec.completed: Invalid value: spec.completed cannot be true when a GPUMaintenance is created: "
        "create it without completed, and set completed=true once the service is done" in result.stderr
    )
    assert kube.run("get", "gpumaint", "born-completed", check=False).returncode != 0, "nothing stored"


def test_a_status_written_at_creation_is_ignored_and_the_drain_runs(kube: Kubectl, workspace: str, maintenances: None) -> None:
    job = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-job"},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "job", "image": "registry.example/job:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }
    kube.run("apply", "-n", workspace, "-f", "-", stdin=json.dumps(job))
    forged = {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "GPUMaintenance",
        "metadata": {"name": "forged-status"},
        "spec": {"nodeName": NODE, "reason": "test"},
        "status": {
            "phase": "Ready",
            "startedAt": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Evacuated", "status": "True", "reason": "NoGPUWorkload", "message": "forged",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        },
    }  # fmt: skip
    kube.run("create", "-f", "-", stdin=json.dumps(forged))
    waiting = wait_for(
        lambda: m if (m := gm.get(kube, "forged-status")).get("status", {}).get("phase") == "Evacuating" else None,
        30, "the drain to start from Pending, the forged status dropped")  # fmt: skip
    evacuated = gm.condition(waiting, "Evacuated")
    assert (evacuated["status"], evacuated["reason"]) == ("False", "WaitingForPods")
    assert waiting["status"]["unmanagedGpuPods"] == [f"{workspace}/gpu-job"]
    assert waiting["status"]["startedAt"] != "2026-01-01T00:00:00Z"
    assert gm.node_spec(kube, NODE) == (True, "forged-status")
    kube.run("delete", "gpumaint", "forged-status", "--wait=true", "--timeout=30s")
    assert gm.node_spec(kube, NODE) == (False, None)
    kube.run("delete", "pod", "gpu-job", "-n", workspace, "--wait=true", "--timeout=30s")
