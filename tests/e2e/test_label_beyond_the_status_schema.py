"""A node label no status can hold: a 62-digit ``pcie-bandwidth-mbps``.

The operator used to copy it into ``status.placements[].bandwidthMBps``, so every status patch
failed with 422, was retried about twice a second, and the status went stale. Now such a number
makes the node's labels malformed (the node is not judged), and the deployment's status stays
current and says why."""

import json
from typing import Any

import pytest

from egpu_api import keys
from egpu_api.fleet import FleetProfile
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.deployments import apply, deployment, placed_condition, status
from tests.e2e.helpers import extra_node, wait_for

pytestmark = pytest.mark.e2e
NODE = "pi5-huge-number"


def malformed(kube: Kubectl, namespace: str) -> dict[str, Any] | None:
    condition = placed_condition(kube, namespace, "huge")
    return condition if condition and "malformed egpu-operator labels" in condition["message"] else None


def test_a_label_beyond_any_status_leaves_the_status_current(kube: Kubectl, workspace: str, fleet: FleetProfile) -> None:
    extra_node(kube, fleet, "pi5-rtx4090", NODE)  # no agent: the test writes its labels
    try:
        labels = {
            k: v for k, v in kube.get_json("node", "pi5-rtx4090")["metadata"]["labels"].items() if k.startswith(keys.PREFIX)
        }
        labels[keys.PCIE_BANDWIDTH_MBPS_LABEL] = "9" * 62
        kube.run("label", "node", NODE, "--overwrite", *[f"{key}={value}" for key, value in labels.items()])
        pinned = deployment("huge", "1G", 60, 1, ("bare-metal",))
        pinned["spec"]["placement"]["nodeSelector"] = {"kubernetes.io/hostname": NODE}
        apply(kube, workspace, pinned)
        condition = wait_for(lambda: malformed(kube, workspace), 30, "huge: Placed=False naming the malformed labels")
        assert condition["status"] == "False"
        generation = kube.get_json("idep", "huge", "-n", workspace)["metadata"]["generation"]
        assert status(kube, workspace, "huge")["observedGeneration"] == generation
        kube.run("patch", "idep", "huge", "-n", workspace, "--type=merge", "-p", json.dumps({"spec": {"replicas": 2}}))
        wait_for(
            lambda: True if status(kube, workspace, "huge").get("observedGeneration") == generation + 1 else None,
            30,
            "the status to follow the next generation",
        )
        events = kube.get_json("events", "-n", workspace, "--field-selector", "involvedObject.name=huge")["items"]
        assert not [e for e in events if e["reason"] == "StatusRefused"]
    finally:
        kube.run("delete", "node", NODE, check=False)
