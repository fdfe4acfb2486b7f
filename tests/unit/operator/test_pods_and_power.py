"""The replica pod, power attribution and pod parsing: pure builders, asserted literally."""

import json
import re
from typing import Any

import pytest

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
    assert pod_name("llm", 0, "a") != pod_name("llm", 1, "a")
    assert pod_name("llm", 0, "pi5-rtx4090") == "llm-0-f9ae1"  # the form existing pods already carry


LONG = "a" * 62
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"


@pytest.mark.parametrize("deployment", ["x", "x" * 50, "x" * 56, "x" * 57, LONG + "b", "a-" * 31 + "a", "a." * 31 + "a"])
@pytest.mark.parametrize("replica", [0, 9, 10, 999, 1000])
def test_pod_names_fit_in_63_characters_and_stay_valid(deployment: str, replica: int) -> None:
    name = pod_name(deployment, replica, "node-with-a-rather-long-name.example.com")
    assert len(name) <= 63
    assert re.fullmatch(DNS_SUBDOMAIN, name), name  # a cut never leaves a "." or "-" before the suffix
    assert name == pod_name(deployment, replica, "node-with-a-rather-long-name.example.com")


def test_pod_names_keep_the_whole_deployment_name_when_it_fits() -> None:
    assert pod_name("x" * 55, 0, "n").startswith("x" * 55 + "-0-")  # 55 + 8 = 63
    assert pod_name("x" * 56, 0, "n").startswith("x" * 50 + "-0-")  # shortened: 50 + "-0-" + 10 hex digits = 63


def test_deployments_sharing_a_long_prefix_get_different_pod_names() -> None:
    for replica in (0, 7, 999, 1000):
        for node in ("a", "pi5-rtx4090"):
            assert pod_name(LONG + "b", replica, node) != pod_name(LONG + "c", replica, node)
            assert pod_name(LONG + "b", replica, node) != pod_name(LONG, replica, node)
    # A shortened name ends in 10 hex digits, a whole one in 5: the two forms never meet.
    shortened = pod_name("x" * 60, 0, "n")
    assert len(shortened.rsplit("-", 1)[1]) == 10
    assert all(len(pod_name(d, 0, "n").rsplit("-", 1)[1]) == 5 for d in ("x", "x" * 50, "x" * 55))


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
