"""Two local clusters created at the same moment both come up: ports never collide."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from egpu_api.fleet import load_fleet
from egpu_localcluster import LocalCluster, ensure_tools

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(os.environ.get("EGPU_E2E_KUBECONFIG")), reason="tests the local control plane, not an external cluster"
    ),
]


def test_clusters_started_together_each_get_their_own_ports() -> None:
    tools = ensure_tools()
    clusters = [LocalCluster(tools), LocalCluster(tools)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda cluster: cluster.start(), clusters))
        one_node = load_fleet().model_copy(update={"nodes": load_fleet().nodes[:1]})
        for cluster in clusters:
            assert cluster.kubectl.run("get", "--raw", "/readyz").stdout == "ok"
            # A port clash used to kill kwok-controller; only a live one makes a fake node Ready.
            cluster.kubectl.apply_fleet(one_node)
            cluster.kubectl.wait_nodes_ready([one_node.nodes[0].name], timeout_s=30)
    finally:
        for cluster in clusters:
            cluster.stop()
    assert all(cluster.processes() == [] for cluster in clusters)
