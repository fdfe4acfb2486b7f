"""``kubectl egpu`` against a cluster read from memory: what each command prints, and a bad object
answered in one sentence with exit status 1, never a traceback."""

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from egpu_api import keys
from egpu_localcluster import plugin
from egpu_localcluster.kubectl import KubectlError
from tests.unit.operator.conftest import NODES

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class FakeKubectl:
    """``Kubectl.get_json`` answered from objects in memory, by the arguments the plugin passes."""

    def __init__(self, objects: dict[tuple[str, ...], Any]) -> None:
        self.objects = objects
        self.asked: list[tuple[str, ...]] = []

    def get_json(self, *args: str) -> Any:
        self.asked.append(args)
        if args not in self.objects:
            raise KubectlError(f"kubectl get {' '.join(args)} failed: Error from server (NotFound)")
        return self.objects[args]


def cluster(deployment: dict[str, Any]) -> FakeKubectl:
    renew = {"renewTime": "2999-01-01T00:00:00.000000Z"}  # fresh whenever the test runs
    lease_items = [{"metadata": {"name": f"{keys.AGENT_LEASE_PREFIX}{name}"}, "spec": renew} for name in NODES]
    return FakeKubectl({
        ("inferencedeployment", "llm-140gb", "-n", "ai"): deployment,
        ("nodes",): {"items": list(NODES.values())},
        ("leases", "-n", "egpu-system"): {"items": lease_items},
        ("pods", "--all-namespaces"): {"items": []},
    })  # fmt: skip


def deployment_140gb() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / "03-llm-140gb-fits-nowhere.yaml").read_text())
    body["metadata"]["namespace"] = "ai"
    placed = {"type": "Placed", "status": "False", "reason": "NoAdequateNode", "message": "0/8 nodes adequate"}
    body["status"] = {"conditions": [placed]}
    return body


def why_args(name: str = "llm-140gb") -> argparse.Namespace:
    return argparse.Namespace(name=name, namespace="ai", agent_namespace="egpu-system")


def test_why_prints_the_condition_the_requirement_and_each_nodes_verdict() -> None:
    lines = plugin.why(cluster(deployment_140gb()), why_args()).splitlines()
    assert lines[0] == "ai/llm-140gb: Placed=False NoAdequateNode: 0/8 nodes adequate"
    assert lines[1] == "needs 144384 MiB and >= 251 MB/s; modes bare-metal, mig, passthrough, vgpu"
    assert lines[2].split() == ["NODE", "VRAM", "LINK", "VERDICT"]
    verdicts = lines[3:]
    assert [line.split()[0] for line in verdicts] == sorted(NODES)
    assert all(line.endswith("VRAM < 141 GiB") for line in verdicts)


@pytest.fixture
def run_plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``plugin.main`` with its kubectl answered by ``FakeKubectl``."""

    def run(kubectl: FakeKubectl, *argv: str) -> int:
        monkeypatch.setattr(plugin, "Kubectl", lambda binary, kubeconfig: kubectl)
        return plugin.main(["--kubectl", "python3", "--kubeconfig", "/nonexistent", *argv])

    return run


def test_an_unreadable_spec_is_one_sentence_and_exit_1(run_plugin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    broken = deployment_140gb()
    del broken["spec"]["model"]["size"]
    assert run_plugin(cluster(broken), "why", "llm-140gb", "-n", "ai") == 1
    err = capsys.readouterr().err
    assert err == "kubectl egpu: ai/llm-140gb: spec.model.size: Field required; fix it in the InferenceDeployment\n"


def test_a_missing_deployment_is_kubectls_sentence_and_exit_1(run_plugin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_plugin(cluster(deployment_140gb()), "why", "no-such", "-n", "ai") == 1
    assert capsys.readouterr().err.startswith("kubectl egpu: kubectl get inferencedeployment no-such -n ai failed")


def test_fleet_lists_only_labelled_nodes(run_plugin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    plain = {"metadata": {"name": "control-plane", "labels": {}}}
    kubectl = FakeKubectl({("nodes",): {"items": [*NODES.values(), plain]}})
    assert run_plugin(kubectl, "fleet") == 0
    out = capsys.readouterr().out
    assert "switch-4x-a5000" in out
    assert "control-plane" not in out
