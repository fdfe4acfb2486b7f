"""The chart's CRD templates are crds/ (every file), gated by crds.enabled and kept with crds.keep."""

import subprocess
import sys
from pathlib import Path

import yaml

from tests.unit.chart.helm import REPO, render

KEEP = "helm.sh/resource-policy"


def committed_crds() -> dict[str, dict[str, object]]:
    documents = (yaml.safe_load(path.read_text()) for path in sorted((REPO / "crds").glob("*.yaml")))
    return {document["metadata"]["name"]: document for document in documents}


def test_templates_are_in_sync_with_crds_folder() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "sync-chart-crds.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_rendered_crds_equal_the_committed_ones_but_for_labels_and_annotations() -> None:
    rendered = {crd["metadata"]["name"]: crd for crd in render() if crd["kind"] == "CustomResourceDefinition"}
    committed = committed_crds()
    assert sorted(rendered) == sorted(committed)
    for name, crd in rendered.items():
        assert {k: v for k, v in crd.items() if k != "metadata"} == {k: v for k, v in committed[name].items() if k != "metadata"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/component"] == "crds"


def test_check_notices_a_hand_edit(tmp_path: Path) -> None:
    # The drift check must be able to fail: run it on a copy of the repository's two folders with one edit.
    script = (REPO / "hack" / "sync-chart-crds.py").read_text()
    (tmp_path / "hack").mkdir()
    (tmp_path / "hack" / "sync-chart-crds.py").write_text(script)
    (tmp_path / "crds").mkdir()
    for path in (REPO / "crds").glob("*.yaml"):
        (tmp_path / "crds" / path.name).write_text(path.read_text())
    sync = [sys.executable, str(tmp_path / "hack" / "sync-chart-crds.py")]
    subprocess.run(sync, check=True, capture_output=True)
    assert subprocess.run([*sync, "--check"], capture_output=True, check=False).returncode == 0
    edited = next((tmp_path / "crds").glob("*.yaml"))
    edited.write_text(edited.read_text().replace("served: true", "served: false", 1))
    drift = subprocess.run([*sync, "--check"], capture_output=True, text=True, check=False)
    assert drift.returncode == 1
    assert edited.name in drift.stderr


def test_disabled_renders_no_crd() -> None:
    assert [o for o in render({"crds.enabled": "false"}) if o["kind"] == "CustomResourceDefinition"] == []


def test_keep_annotates_every_crd_and_can_be_switched_off() -> None:
    kept = [o for o in render() if o["kind"] == "CustomResourceDefinition"]
    assert kept
    assert all(crd["metadata"]["annotations"][KEEP] == "keep" for crd in kept)
    released = [o for o in render({"crds.keep": "false"}) if o["kind"] == "CustomResourceDefinition"]
    assert all(KEEP not in (crd["metadata"].get("annotations") or {}) for crd in released)
