"""The GPUMaintenance API as the real API server serves it: schema, immutability, explain, columns."""

import json
import re
from pathlib import Path

import pytest

from egpu_localcluster.kubectl import Kubectl

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
INVALID = sorted((Path(__file__).parent / "invalid-maintenance").glob("*.yaml"))


def test_the_example_is_accepted(kube: Kubectl) -> None:
    for example in sorted((REPO / "examples" / "maintenance").glob("*.yaml")):
        result = kube.run("apply", "--dry-run=server", "-f", str(example), check=False)
        assert result.returncode == 0, f"{example.name}: {result.stderr}"


@pytest.mark.parametrize("manifest", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_manifests_are_rejected_naming_the_field(kube: Kubectl, manifest: Path) -> None:
    expected = re.search(r"^# expect: (.+)$", manifest.read_text(), re.MULTILINE)
    assert expected is not None, f"{manifest.name} must say what error it expects"
    result = kube.run("apply", "-f", str(manifest), check=False)
    assert result.returncode != 0, f"{manifest.name} was accepted"
    assert expected.group(1) in result.stderr


def test_the_node_cannot_be_changed(kube: Kubectl) -> None:
    body = {
        "apiVersion": "egpu-operator.io/v1alpha1",
        "kind": "GPUMaintenance",
        # A node that does not exist: the operator, if running, touches none.
        "metadata": {"name": "immutable"},
        "spec": {"nodeName": "no-such-node", "reason": "test"},
    }
    kube.run("create", "-f", "-", stdin=json.dumps(body))
    try:
        result = kube.run("patch", "gpumaint", "immutable", "--type=merge", "-p", '{"spec": {"nodeName": "x220-tesla-p4"}}',
                          check=False)  # fmt: skip
        assert result.returncode != 0
        assert "nodeName is immutable; create another GPUMaintenance for another node" in result.stderr
        header = kube.run("get", "gpumaint").stdout.splitlines()[0].split()
        assert header == ["NAME", "NODE", "PHASE", "REASON", "AGE"]
        assert "this many seconds after the drain starts" in " ".join(
            kube.run("explain", "gpumaintenance.spec.drainTimeoutSeconds").stdout.split()
        )
    finally:
        kube.run("delete", "gpumaint", "immutable", "--wait=true", "--timeout=30s", check=False)
