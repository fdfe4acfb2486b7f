"""The InferenceDeployment API as the real API server serves it: schema, CEL rules, explain, examples."""

import re
from pathlib import Path

import pytest
import yaml

from egpu_localcluster.kubectl import Kubectl

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
