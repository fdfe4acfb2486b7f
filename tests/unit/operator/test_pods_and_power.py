"""The replica pod, power attribution and pod parsing: pure builders, asserted literally."""

import json
from typing import Any

from egpu_operator.facts import pod_view
from egpu_operator.pods import pod_name, replica_pod, startup_failure_threshold
from egpu_operator.power import desired_annotations

DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "llm", "namespace": "ai", "uid": "u-1"},
    "spec": {
        "placement": {"tolerations": [{"key": "egpu", "operator": "Exists"}]},
        "template": {
            "metadata": {"labels": {"app": "llm"}},
            "spec": {"containers": [{"name": "server", "image": "x", "startupProbe": {"periodSeconds": 5}}]},
        },
    },
}


def test_replica_pod_is_pinned_owned_and_asks_for_one_gpu() -> None:
    pod = replica_pod(DEPLOYMENT, 1, "pi5-rtx4090", 21.0)
    assert pod["metadata"]["name"] == pod_name("llm", 1, "pi5-rtx4090")
    assert pod["metadata"]["labels"] == {
        "app": "llm",
        "egpu-operator.io/inference-deployment": "llm",
        "egpu-operator.io/replica": "1",
    }
    assert pod["metadata"]["annotations"] == {"egpu-operator.io/estimated-load-seconds": "21.0"}
    assert pod["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "egpu-operator.io/v1alpha1", "kind": "InferenceDeployment", "name": "llm", "uid": "u-1",
        "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["pi5-rtx4090"]}]}]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["startupProbe"]["failureThreshold"] == 21  # (2 x 21 + 60) / 5
    assert pod["spec"]["tolerations"] == [{"key": "egpu", "operator": "Exists"}]
    assert "affinity" not in DEPLOYMENT["spec"]["template"]["spec"], "the template is not modified"


def test_pod_names_are_stable_per_replica_and_node() -> None:
    assert pod_name("llm", 0, "a") == pod_name("llm", 0, "a")
    assert pod_name("llm", 0, "a") != pod_name("llm", 0, "b")
    assert len(pod_name("x" * 80, 999, "n")) <= 63


def test_startup_budget_never_below_three_probes() -> None:
    assert startup_failure_threshold(0.1, 60) == 3
    assert startup_failure_threshold(300, 10) == 66


def test_power_attribution_keeps_deployments_apart() -> None:
    uuids, defaults = ("GPU-a", "GPU-b", "GPU-c"), (230, 230, 230)
    first, shares = desired_annotations({}, "ai/one", 2, uuids, defaults, None, 0.5)
    assert shares == {"GPU-a": 115, "GPU-b": 115}
    second, shares = desired_annotations(first, "ai/two", 2, uuids, defaults, 200, None)
    assert shares == {"GPU-c": 200}  # only one GPU left unowned
    assert json.loads(second["egpu-operator.io/power-limit-request"]) == {"GPU-a": 115, "GPU-b": 115, "GPU-c": 200}
    released, _ = desired_annotations(second, "ai/one", 0, uuids, defaults, None, None)
    assert json.loads(released["egpu-operator.io/power-limit-request"]) == {"GPU-c": 200}
    assert json.loads(released["egpu-operator.io/power-limit-owners"]) == {"GPU-c": "ai/two"}


def test_pod_view_reads_readiness_binding_and_refusal() -> None:
    pod = {
        "metadata": {"name": "llm-0-x", "labels": {"egpu-operator.io/replica": "0"}},
        "spec": {"affinity": replica_pod(DEPLOYMENT, 0, "n1", 1.0)["spec"]["affinity"]},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
    }
    view = pod_view(pod)
    assert view is not None
    assert (view.node, view.ready, view.unschedulable) == ("n1", False, True)
    assert pod_view({"metadata": {"name": "stray", "labels": {}}}) is None
