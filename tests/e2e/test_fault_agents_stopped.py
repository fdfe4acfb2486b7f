"""Every node agent stopped for 120 s (twice the time after which one silent agent counts as
dead): most of the fleet looking dead at once is a control-plane or network problem, so the
operator removes nothing. Before the fix every replica in the fleet was deleted."""

import pytest

from egpu_localcluster.kubectl import Kubectl
from egpu_node_agent.simulator import FleetSimulator
from tests.e2e.conftest import OperatorProcess
from tests.e2e.faults import assert_nothing_lost, survive

pytestmark = pytest.mark.e2e


def test_every_agent_stopped_for_120_s_loses_no_replica(
    kube: Kubectl, workspace: str, operator: OperatorProcess, simulator: FleetSimulator
) -> None:
    everyone = list(simulator.agents)
    try:
        ledger = survive(
            kube, workspace, "every node agent stopped for 120 s",
            inject=lambda: simulator.stop_agents(everyone),
            recover=lambda: simulator.start_agents(everyone),
            length_s=120,
        )  # fmt: skip
    finally:
        simulator.start_agents(everyone)
    assert_nothing_lost(ledger)
    assert "removing nothing" in operator.log.read_text(), "the operator never declared a full disruption"
