"""``egpu_operator.explain``: each node's verdict for one InferenceDeployment, as tooling prints it."""

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from egpu_api import keys
from egpu_operator.explain import ExplainError, Requirement, explain, gpus_held
from tests.unit.operator.conftest import NOW

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"]["namespace"] = "ai"
    return body


def leases(names: list[str], renewed: datetime = NOW) -> list[dict[str, Any]]:
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [{"metadata": {"name": f"{keys.AGENT_LEASE_PREFIX}{name}"}, "spec": {"renewTime": stamp}} for name in names]


def gpu_pod(node: str, gpus: int, phase: str = "Running") -> dict[str, Any]:
    limits = {keys.GPU_RESOURCE: str(gpus)}
    return {
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": limits}}]},
        "status": {"phase": phase},
    }


def sentences(deployment: dict[str, Any], nodes: dict[str, Any], pods: list[dict[str, Any]] | None = None,
              renewed: datetime = NOW) -> dict[str, str]:  # fmt: skip
    explanation = explain(deployment, nodes.values(), leases(list(nodes), renewed), pods or [], NOW)
    return {verdict.node: verdict.sentence() for verdict in explanation.nodes}


def test_what_one_replica_needs_is_said_in_one_line(nodes: dict[str, Any]) -> None:
    explanation = explain(example("01-llm-18gb-30s-budget.yaml"), nodes.values(), [], [], NOW)
    assert explanation.requirement == Requirement(19215, 600, ("bare-metal", "passthrough"))
    assert explanation.requirement.sentence() == "needs 19215 MiB and >= 600 MB/s; modes bare-metal, passthrough"
    assert [verdict.node for verdict in explanation.nodes] == sorted(nodes), "one verdict per node, by name"


def test_a_model_that_fits_nowhere_is_refused_everywhere_for_its_vram(nodes: dict[str, Any]) -> None:
    verdicts = sentences(example("03-llm-140gb-fits-nowhere.yaml"), nodes)
    assert set(verdicts.values()) == {"VRAM < 141 GiB"}


def test_each_node_gets_the_reason_placement_gives(nodes: dict[str, Any]) -> None:
    verdicts = sentences(example("01-llm-18gb-30s-budget.yaml"), nodes)
    assert verdicts == {
        "laptop-rtx3060-tb": "VRAM < 18.8 GiB",
        "minipc-rtx4070ti": "VRAM < 18.8 GiB",
        "pi5-rtx4090": "adequate (21.5 s, PCIe link 856 MB/s), not needed: faster or spread choices won",
        "server-a100-mig": "mig not allowed",
        "switch-4x-a5000": "adequate (21.5 s, PCIe link 856 MB/s), not needed: faster or spread choices won",
        "vm-h100-passthrough": "adequate (0.8 s, PCIe link 54823 MB/s), not needed: faster or spread choices won",
        "vm-vgpu-a10": "vgpu not allowed",
        "x220-tesla-p4": "VRAM < 18.8 GiB",
    }


def test_chosen_nodes_name_their_replica_and_full_nodes_say_so(nodes: dict[str, Any]) -> None:
    deployment = example("01-llm-18gb-30s-budget.yaml")
    deployment["status"] = {"placements": [{"replica": 1, "node": "vm-h100-passthrough"}]}
    pods = [gpu_pod("pi5-rtx4090", 1), gpu_pod("switch-4x-a5000", 3), gpu_pod("switch-4x-a5000", 1, "Succeeded")]
    verdicts = sentences(deployment, nodes, pods)
    assert verdicts["vm-h100-passthrough"] == "chosen (replica 1), 0.8 s, PCIe link 54823 MB/s"
    assert verdicts["pi5-rtx4090"] == "adequate (21.5 s, PCIe link 856 MB/s), but every GPU is taken"
    assert verdicts["switch-4x-a5000"].endswith("not needed: faster or spread choices won"), "a finished pod holds no GPU"


@pytest.mark.parametrize(
    ("renewed", "verdict"),
    [
        (NOW - timedelta(seconds=30), "adequate (0.8 s, PCIe link 54823 MB/s), not needed: faster or spread choices won"),
        # One snapshot cannot prove an agent dead: a stale Lease is "not yet confirmed", never "dead".
        (NOW - timedelta(minutes=10), "node agent not yet confirmed alive"),
    ],
)
def test_a_stale_agent_lease_is_unknown_not_dead(nodes: dict[str, Any], renewed: datetime, verdict: str) -> None:
    verdicts = sentences(example("01-llm-18gb-30s-budget.yaml"), nodes, renewed=renewed)
    assert verdicts["vm-h100-passthrough"] == verdict


def test_gpus_held_counts_bound_unfinished_pods_only() -> None:
    pods = [gpu_pod("a", 2), gpu_pod("a", 1), gpu_pod("b", 1, "Failed"), {"spec": {"containers": []}, "status": {}}]
    assert gpus_held(pods) == {"a": 3}


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            lambda spec: spec["model"].pop("size"),
            "ai/llm-18gb: spec.model.size: Field required; fix it in the InferenceDeployment",
        ),
        (lambda spec: spec["model"].update(size="lots"), "ai/llm-18gb: 'lots' is not a quantity; write it like 16Gi"),
    ],
)
def test_a_spec_that_cannot_be_read_names_the_field(nodes: dict[str, Any], change: Any, sentence: str) -> None:
    deployment = copy.deepcopy(example("01-llm-18gb-30s-budget.yaml"))
    change(deployment["spec"])
    with pytest.raises(ExplainError) as raised:
        explain(deployment, nodes.values(), [], [], NOW)
    assert str(raised.value).startswith(sentence)
    assert "fix it in the InferenceDeployment" in str(raised.value)
