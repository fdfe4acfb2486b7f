"""GPU Feature Discovery's labels on a node are compared with NVML: a disagreement is flagged, never fixed."""

from typing import Any

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e.helpers import labels, wait_for

pytestmark = pytest.mark.e2e
NODE = "x220-tesla-p4"  # one Tesla P4, 7680 MiB
GFD = {"nvidia.com/gpu.product": "Tesla-P4", "nvidia.com/gpu.memory": "7680", "nvidia.com/gpu.count": "1",
       "nvidia.com/gpu.family": "pascal", "nvidia.com/mig.strategy": "none"}  # fmt: skip


def events(kube: Kubectl) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={NODE},reason=GFDLabelsDisagree"
    items: list[dict[str, Any]] = kube.get_json("events", "-n", "default", "--field-selector", selector)["items"]
    return items


def gauge(simulator: FleetSimulator, label: str) -> float | None:
    return simulator.metrics.registry.get_sample_value("egpu_node_agent_gfd_label_disagreement", {"node": NODE, "label": label})


def test_gfd_labels_that_disagree_with_nvml_are_flagged_and_left(kube: Kubectl, simulator: FleetSimulator) -> None:
    kube.run("label", "node", NODE, *(f"{key}={value}" for key, value in GFD.items()), "--overwrite")
    try:
        wait_for(lambda: True if gauge(simulator, "nvidia.com/gpu.count") == 0.0 else None, 15, "the labels compared")
        assert gauge(simulator, "nvidia.com/gpu.product") == 0.0
        assert gauge(simulator, "nvidia.com/gpu.memory") == 0.0
        assert events(kube) == [], "labels GFD wrote as NVML reads them are not flagged"

        kube.run("label", "node", NODE, "nvidia.com/gpu.count=2", "--overwrite")  # GFD saw two GPUs
        [event] = wait_for(lambda: events(kube) or None, 15, "a GFDLabelsDisagree Event")
        assert event["type"] == "Warning"
        assert event["message"].startswith("GPU Feature Discovery's label nvidia.com/gpu.count=2 disagrees with NVML (1 GPU(s))")
        assert gauge(simulator, "nvidia.com/gpu.count") == 1.0
        assert labels(kube, NODE)["nvidia.com/gpu.count"] == "2", "GFD's label is GFD's: the agent never writes it"
    finally:
        kube.run("label", "node", NODE, *(f"{key}-" for key in GFD), check=False)
    wait_for(lambda: True if gauge(simulator, "nvidia.com/gpu.count") is None else None, 15, "the series gone with the label")
