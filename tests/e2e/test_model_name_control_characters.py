"""Control characters in ``model.name`` (a ``kubectl get idep`` column) are refused by the CRD,
naming the field; printable names, in any script, are accepted."""

import json

import pytest

from egpu_localcluster.kubectl import Kubectl
from tests.e2e.deployments import deployment

pytestmark = pytest.mark.e2e
MESSAGE = (
    "model.name must not contain control characters (newlines, tabs, terminal escape sequences): kubectl get prints it "
    "as it is; use printable text"
)


@pytest.mark.parametrize(
    "name",
    ["llama\x1b[2J", "llama\nNAME   MODEL", "llama\ttab", "llama\r", "del\x7f", "c1\x9b31m"],
    ids=["escape", "newline", "tab", "carriage-return", "delete", "c1-csi"],
)
def test_control_characters_are_refused_naming_the_field(kube: Kubectl, namespace: str, name: str) -> None:
    manifest = deployment("hostile-name", "1Gi", 60)
    manifest["spec"]["model"]["name"] = name
    result = kube.run("create", "-n", namespace, "-f", "-", stdin=json.dumps(manifest), check=False)
    assert result.returncode != 0, f"{name!r} was accepted"
    assert "spec.model.name: Invalid value" in result.stderr
    assert MESSAGE in result.stderr
    assert kube.get_json("idep", "-n", namespace)["items"] == [], "nothing stored"


def test_printable_names_are_accepted(kube: Kubectl, namespace: str) -> None:
    manifest = deployment("printable-name", "1Gi", 60)
    manifest["spec"]["model"]["name"] = "Llama 3.1 8B Instruct (Q4_K_M) 模型"
    result = kube.run("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(manifest), check=False)
    assert result.returncode == 0, result.stderr
