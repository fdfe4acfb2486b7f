"""The local control plane starts at the pinned version, stays isolated and leaves nothing behind."""

import json
import os
from pathlib import Path

import pytest

from egpu_localcluster import LocalCluster, ensure_tools

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="tests the local control plane, not an external cluster"
    ),
]


def test_cluster_reports_pinned_version_and_stops_without_leftovers() -> None:
    cluster = LocalCluster(ensure_tools())
    cluster.start()
    try:
        versions = json.loads(cluster.kubectl.run("version", "-o", "json").stdout)
        assert versions["serverVersion"]["gitVersion"] == "v1.35.4"
        assert versions["clientVersion"]["gitVersion"] == "v1.35.4"
        assert cluster.processes(), "a running cluster has processes"
        assert cluster.kubeconfig.is_file()
        assert str(Path.home() / ".kube") not in str(cluster.kubeconfig)
    finally:
        cluster.stop()

    assert cluster.processes() == []
    assert not cluster.workdir.exists()
