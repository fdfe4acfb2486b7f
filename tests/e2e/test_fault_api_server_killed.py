"""kube-apiserver killed (SIGKILL) for 30 s, then started again: no replica is deleted, none
drops below its budget. Before the fix, 6 of 9 replicas were deleted about 11 s after the API
server came back, their agents' Leases merely looking stale."""

import pytest

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.conftest import OperatorProcess
from tests.e2e.faults import assert_nothing_lost, survive

pytestmark = pytest.mark.e2e


def test_api_server_killed_for_30_s_loses_no_replica(
    kube: Kubectl, local_cluster: LocalCluster | None, workspace: str, operator: OperatorProcess
) -> None:
    if local_cluster is None:
        pytest.skip("kills a process of the local control plane")
    ledger = survive(
        kube, workspace, "kube-apiserver killed for 30 s",
        inject=lambda: local_cluster.kill_component("kube-apiserver"),
        recover=local_cluster.restart_stopped,
        length_s=30,
    )  # fmt: skip
    assert_nothing_lost(ledger)
    assert ledger.reconnects > 0, "the ledger never lost the API server: the fault was not injected"
