"""etcd killed (SIGKILL) for 60 s, then started again on its data: the API server stays up but
can neither read nor write. No replica is deleted; before the fix all 9 were."""

import pytest

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.conftest import OperatorProcess
from tests.e2e.faults import assert_nothing_lost, survive

pytestmark = pytest.mark.e2e


def test_etcd_killed_for_60_s_loses_no_replica(
    kube: Kubectl, local_cluster: LocalCluster | None, workspace: str, operator: OperatorProcess
) -> None:
    if local_cluster is None:
        pytest.skip("kills a process of the local control plane")
    ledger = survive(
        kube, workspace, "etcd killed for 60 s",
        inject=lambda: local_cluster.kill_component("etcd"),
        recover=local_cluster.restart_stopped,
        length_s=60,
    )  # fmt: skip
    assert_nothing_lost(ledger)
