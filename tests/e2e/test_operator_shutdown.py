"""SIGTERM stops the operator promptly, even while its API calls hang (etcd frozen), and a new
operator resumes from what the API server holds: nothing was left half-done."""

import signal
import time

import pytest

from egpu_localcluster import LocalCluster
from egpu_localcluster.kubectl import Kubectl
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import apply, deployment, ready_on, replica_pods
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e
#: The kubelet's default grace period is 30 s; a stop must fit well inside it.
STOP_DEADLINE_S = 10


def test_sigterm_while_etcd_is_frozen_stops_the_operator_and_a_restart_resumes(
    kube: Kubectl, local_cluster: LocalCluster | None, workspace: str, operator: OperatorProcess
) -> None:
    if local_cluster is None:
        pytest.skip("freezes a process of the local control plane")
    apply(kube, workspace, deployment("steady", "1G", 60, 2))
    wait_for(lambda: ready_on(kube, workspace, "steady", 2), 60, "steady: 2 replicas Ready")
    before = {pod["metadata"]["uid"] for pod in replica_pods(kube, workspace, "steady")}

    assert operator.process is not None
    local_cluster.kill_component("etcd", signal.SIGSTOP)  # every API call now hangs
    try:
        time.sleep(3)  # let its resync and probe calls block on the frozen store
        assert operator.process.poll() is None, "the operator had already exited"
        started = time.monotonic()
        operator.process.send_signal(signal.SIGTERM)
        code = operator.process.wait(timeout=STOP_DEADLINE_S)
        stopped_s = time.monotonic() - started
        operator.process = None
    finally:
        local_cluster.kill_component("etcd", signal.SIGCONT)
        if operator.process is None:
            operator.start()
    print(f"operator stopped {stopped_s:.1f} s after SIGTERM, exit code {code}")
    assert code == 0
    wait_for(lambda: ready_on(kube, workspace, "steady", 2), 60, "steady: 2 replicas Ready after the restart")
    assert {pod["metadata"]["uid"] for pod in replica_pods(kube, workspace, "steady")} == before
