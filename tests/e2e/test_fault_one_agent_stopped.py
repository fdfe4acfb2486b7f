"""One node agent stopped: its node may still serve, so its replica is replaced by surging a new
pod elsewhere first; the old pod is evicted (through the Eviction API, under the deployment's
PodDisruptionBudget) only once the new one is Ready. Before the fix it was deleted at once."""

import time

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_localcluster.ledger import PodLedger
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e.conftest import OperatorProcess
from tests.e2e.deployments import ready_on, replica_pods
from tests.e2e.faults import SERVICE, report, start_service
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_one_stopped_agent_gets_its_replica_surged_away_then_evicted(
    kube: Kubectl, workspace: str, operator: OperatorProcess, simulator: FleetSimulator
) -> None:
    nodes = start_service(kube, workspace)
    victim = nodes["chat"][0]
    [old] = [pod["metadata"]["name"] for pod in replica_pods(kube, workspace, "chat") if pod["spec"]["nodeName"] == victim]
    try:
        with PodLedger(kube.kubeconfig, workspace, SERVICE) as ledger:
            before = set(ledger.pods)
            stopped = time.monotonic()
            simulator.stop_agents([victim])
            # Dead after TTL + grace (60 s) of clear sight without a renewal; then the surge loads.
            after = wait_for(
                lambda: (found if victim not in (found := ready_on(kube, workspace, "chat", 3) or [victim]) else None),
                150, f"chat's replica on {victim} to be replaced and the old pod gone",
            )  # fmt: skip
            moved_s = time.monotonic() - stopped
        print(report(f"node agent on {victim} stopped", ledger, moved_s))
    finally:
        simulator.start_agents([victim])
    assert victim not in after
    assert [name for _, name, _ in ledger.deleted] == [old], "only the replaced replica's pod may go"
    assert ledger.minimum["chat"] == SERVICE["chat"][0], "a replica was removed before its replacement was Ready"
    [new] = set(ledger.pods) - before
    assert ledger.deleted[0][0] >= ledger.ready_at[new], "the old pod went before its replacement was Ready"
    assert "replica evicted" in operator.log.read_text()
