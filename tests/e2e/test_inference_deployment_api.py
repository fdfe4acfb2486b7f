"""The InferenceDeployment API as the real API server serves it: schema, CEL rules, explain, examples."""

import re
from pathlib import Path

import pytest
import yaml

from egpu_localcluster.kubectl import Kubectl
from tests.e2e.deployments import apply, deployment, ready_on, replica_pods, status
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_examples_are_accepted(kube: Kubectl, namespace: str) -> None:
    assert EXAMPLES, "examples/ holds the manifests users start from"
    for example in EXAMPLES:
        result = kube.run("apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False)
        assert result.returncode == 0, f"{example.name}: {result.stderr}"


@pytest.mark.parametrize("manifest", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_manifests_are_rejected_naming_the_field(kube: Kubectl, namespace: str, manifest: Path) -> None:
    expected = re.search(r"^# expect: (.+)$", manifest.read_text(), re.MULTILINE)
    assert expected is not None, f"{manifest.name} must say what error it expects"
    name = yaml.safe_load(manifest.read_text())["metadata"]["name"]
    result = kube.run("apply", "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode != 0, f"{manifest.name} was accepted"
    assert expected.group(1) in result.stderr
    assert f'The InferenceDeployment "{name}" is invalid: ' in result.stderr
    assert "should match" not in result.stderr, "a regular expression is no message for a person"


def test_kubectl_explain_reads_the_field_descriptions(kube: Kubectl) -> None:
    explained = " ".join(kube.run("explain", "inferencedeployments.spec.placement.maxLoadSeconds").stdout.split())
    assert "only nodes whose link moves model.size within this many seconds qualify" in explained
    assert "Load-time budget" in kube.run("explain", "idep.spec.placement").stdout


def test_short_name_printer_columns_and_scale_subresource(kube: Kubectl, namespace: str) -> None:
    kube.run("apply", "-n", namespace, "-f", str(REPO / "examples" / "03-llm-140gb-fits-nowhere.yaml"))
    header = kube.run("get", "idep", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "DESIRED", "MODEL", "SIZE", "WORST-LOAD-S", "PLACED", "AGE"]
    kube.run("scale", "idep/llm-140gb", "-n", namespace, "--replicas=3")
    assert kube.get_json("idep", "llm-140gb", "-n", namespace)["spec"]["replicas"] == 3


def test_scale_to_zero_whatever_the_budget_and_back(kube: Kubectl, workspace: str) -> None:
    # minAvailable above the replica count is refused, except at zero: a budget over no pods only
    # blocks evictions, and there is nothing to evict. The operator removes the pods, keeps the
    # budget, and places the replicas again when scaled back up.
    apply(kube, workspace, deployment("idle", "3G", 60, replicas=2, disruption={"minAvailable": 2}))
    wait_for(lambda: ready_on(kube, workspace, "idle", 2), 60, "idle: 2 replicas Ready")

    kube.run("scale", "idep/idle", "-n", workspace, "--replicas=0")
    assert kube.get_json("idep", "idle", "-n", workspace)["spec"]["replicas"] == 0

    def scaled_in() -> bool | None:
        pods_left, counted = replica_pods(kube, workspace, "idle"), status(kube, workspace, "idle").get("replicas", 0)
        return True if not pods_left and counted == 0 else None

    wait_for(scaled_in, 60, "idle: no replica pods left, status.replicas 0")
    assert kube.get_json("pdb", "idle", "-n", workspace)["spec"]["minAvailable"] == 2

    refused = kube.run("scale", "idep/idle", "-n", workspace, "--replicas=1", check=False)
    assert refused.returncode != 0
    assert "disruption.minAvailable cannot exceed replicas (except at 0 replicas)" in refused.stderr

    kube.run("scale", "idep/idle", "-n", workspace, "--replicas=2")
    wait_for(lambda: ready_on(kube, workspace, "idle", 2), 60, "idle: 2 replicas Ready again")
